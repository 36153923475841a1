/*
 * gradcheck.c: analytic gradients against central finite differences.
 *
 * For a function y = f(x_1..x_n) and a fixed random v of y's shape, the
 * scalar L = sum(v * y) has dL/dx_i = v^T J_i, which tg_backward_ex
 * computes with gout = v; numerically, dL/dx_i[j] ~ (L(x + eps e_j) -
 * L(x - eps e_j)) / (2 eps). Every evaluation rewinds the RNG to the same
 * state (so dropout repeats its mask) and the arena and tape to a mark (so
 * a check of any size runs in the memory of one evaluation).
 */
#include "impl.h"

#include <math.h>

typedef struct check {
    tg_ctx *ctx;
    tg_fn fn;
    void *ud;
    tg_tensor *const *in;
    int n;
    double eps, atol, rtol;
    tg_rng_state rng;
    double *v;          /* the projection, one entry per output element */
    int64_t out_numel;
} check;

/* A fixed pseudo-random sequence in [-1, 1), independent of the context RNG. */
static double proj(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*s >> 11) * 0x1.0p-52 - 1.0;
}

static tg_tensor *run(check *c)
{
    tg_rng_set(c->ctx, c->rng);
    tg_tensor *y = c->fn(c->ctx, c->in, c->n, c->ud);
    if (!y && !tg_errcode(c->ctx))
        TG_ERROR(c->ctx, TG_EINVAL, "gradcheck: the function returned NULL without an error");
    if (y && y->dtype != TG_F64) {
        TG_ERROR(c->ctx, TG_EDTYPE, "gradcheck: the output is %s; gradcheck needs float64",
                 tg_dtype_name(y->dtype));
        return NULL;
    }
    return y;
}

/* L = sum(v * f(x)) with nothing recorded; the arena is rewound after. */
static tg_status eval_L(check *c, double *L)
{
    tg__mark m = tg__mark_get(c->ctx);
    bool prev = tg_set_grad_enabled(c->ctx, false);
    tg_tensor *y = run(c);
    tg_set_grad_enabled(c->ctx, prev);
    if (y && y->numel != c->out_numel) {
        TG_ERROR(c->ctx, TG_ESHAPE, "gradcheck: the output changed size between evaluations");
        y = NULL;
    }
    if (y) {
        double acc = 0;
        for (int64_t i = 0; i < y->numel; i++)
            acc += c->v[i] * tg_get(y, i);
        *L = acc;
    }
    tg__mark_rewind(c->ctx, m);
    return tg_errcode(c->ctx);
}

static int64_t checked_numel(const check *c)
{
    int64_t total = 0;
    for (int i = 0; i < c->n; i++)
        if (c->in[i]->requires_grad)
            total += c->in[i]->numel;
    return total;
}

/* Runs f once with grad on, backpropagates v, and copies the input
 * gradients into analytic (concatenated); inputs' gradients are restored. */
static tg_status analytic_grads(check *c, double *analytic)
{
    tg_ctx *ctx = c->ctx;
    tg_tensor *saved[TG_SAMPLE_MAX_IN] = {NULL};
    double *kept = NULL;
    int64_t total = checked_numel(c);
    if (c->n > TG_SAMPLE_MAX_IN)
        return TG_ERROR(ctx, TG_EINVAL, "gradcheck: %d inputs; at most %d", c->n, TG_SAMPLE_MAX_IN);
    /* park the inputs' gradients: step tensors lose the pointer for a while,
     * parameters have their values copied out and zeroed */
    if (!(kept = tg__malloc(ctx, (size_t)(total ? total : 1) * sizeof *kept)))
        return ctx->errcode;
    for (int i = 0, at = 0; i < c->n; i++) {
        tg_tensor *x = c->in[i];
        saved[i] = x->grad;
        if (!x->requires_grad)
            continue;
        if (x->persistent && x->grad) {
            for (int64_t j = 0; j < x->numel; j++)
                kept[at + j] = tg_get(x->grad, j);
            tg_tensor_zero_grad(x);
        } else {
            x->grad = NULL;
        }
        at += (int)x->numel;
    }

    tg__mark m = tg__mark_get(ctx);
    bool prev = tg_set_grad_enabled(ctx, true);
    tg_tensor *y = run(c);
    tg_tensor *v = NULL;
    if (y) {
        c->out_numel = y->numel;
        if (!(c->v = tg__malloc(ctx, (size_t)(y->numel ? y->numel : 1) * sizeof *c->v)))
            y = NULL;
    }
    if (y) {
        uint64_t s = 0x5eedULL;
        for (int64_t i = 0; i < y->numel; i++)
            c->v[i] = proj(&s);
        v = tg_from_data(ctx, TG_F64, y->ndim, y->shape, c->v);
    }
    if (v && y->requires_grad)
        tg_backward_ex(ctx, y, v, 0);
    tg_set_grad_enabled(ctx, prev);

    int64_t at = 0;
    for (int i = 0; i < c->n; i++) {
        tg_tensor *x = c->in[i];
        if (!x->requires_grad)
            continue;
        for (int64_t j = 0; j < x->numel; j++)
            analytic[at + j] = x->grad ? tg_get(x->grad, j) : 0.0;
        if (x->persistent && x->grad) {
            for (int64_t j = 0; j < x->numel; j++)
                tg_set(x->grad, j, saved[i] ? kept[at + j] : 0.0);
        } else {
            x->grad = saved[i];
        }
        at += x->numel;
    }
    tg__mark_rewind(ctx, m);
    tg__free(ctx, kept, (size_t)(total ? total : 1) * sizeof *kept);
    return ctx->errcode;
}

static void compare(check *c, int case_no, int input, int64_t j, double a, double num,
                    tg_gradcheck_result *res, const char *desc)
{
    double abs_err = fabs(a - num);
    double rel_err = abs_err / fmax(fabs(num), 1e-12);
    res->checked++;
    if (abs_err > res->max_abs_err)
        res->max_abs_err = abs_err;
    if (rel_err > res->max_rel_err)
        res->max_rel_err = rel_err;
    bool ok = abs_err <= c->atol + c->rtol * fabs(num); /* false for NaN */
    if (ok || !res->passed)
        return;
    res->passed = false;
    res->fail_case = case_no;
    res->fail_input = input;
    res->fail_index = j;
    res->analytic = a;
    res->numeric = num;
    snprintf(res->msg, sizeof res->msg,
             "case %d%s%s%s, input %d, element %lld: analytic %.10g vs numeric %.10g "
             "(abs err %.3g)", case_no, desc ? " (" : "", desc ? desc : "", desc ? ")" : "",
             input, (long long)j, a, num, abs_err);
}

static tg_status check_fn(check *c, int case_no, const char *desc, tg_gradcheck_result *res)
{
    tg_ctx *ctx = c->ctx;
    for (int i = 0; i < c->n; i++) {
        char what[32];
        snprintf(what, sizeof what, "input %d", i);
        if (tg__check_tensor(ctx, "gradcheck", what, c->in[i]))
            return ctx->errcode;
        if (c->in[i]->requires_grad && c->in[i]->dtype != TG_F64)
            return TG_ERROR(ctx, TG_EDTYPE, "gradcheck: input %d is %s; gradcheck needs float64",
                            i, tg_dtype_name(c->in[i]->dtype));
    }
    int64_t total = checked_numel(c);
    size_t bytes = (size_t)(total ? total : 1) * sizeof(double);
    double *analytic = tg__malloc(ctx, bytes);
    if (!analytic)
        return ctx->errcode;
    c->rng = tg_rng_get(ctx);
    c->v = NULL;
    tg_status st = analytic_grads(c, analytic);
    int64_t at = 0;
    for (int i = 0; st == TG_OK && i < c->n; i++) {
        tg_tensor *x = c->in[i];
        if (!x->requires_grad)
            continue;
        for (int64_t j = 0; st == TG_OK && j < x->numel; j++) {
            double orig = tg_get(x, j), lp = 0, lm = 0;
            tg_set(x, j, orig + c->eps);
            st = eval_L(c, &lp);
            tg_set(x, j, orig - c->eps);
            if (st == TG_OK)
                st = eval_L(c, &lm);
            tg_set(x, j, orig);
            if (st == TG_OK)
                compare(c, case_no, i, j, analytic[at + j], (lp - lm) / (2 * c->eps), res, desc);
        }
        at += x->numel;
    }
    tg_rng_set(ctx, c->rng);
    if (c->v)
        tg__free(ctx, c->v, (size_t)(c->out_numel ? c->out_numel : 1) * sizeof *c->v);
    tg__free(ctx, analytic, bytes);
    return st;
}

static void init(check *c, tg_ctx *ctx, const tg_gradcheck_opts *opts, tg_gradcheck_result *res)
{
    memset(c, 0, sizeof *c);
    c->ctx = ctx;
    c->eps = opts && opts->eps > 0 ? opts->eps : 1e-6;
    c->atol = opts && opts->atol > 0 ? opts->atol : 1e-5;
    c->rtol = opts && opts->rtol > 0 ? opts->rtol : 1e-3;
    memset(res, 0, sizeof *res);
    res->passed = true;
}

tg_status tg_gradcheck(tg_ctx *ctx, tg_fn fn, void *ud, tg_tensor *const *in, int n,
                       const tg_gradcheck_opts *opts, tg_gradcheck_result *res)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (!fn || !res || (n > 0 && !in) || n < 0)
        return TG_ERROR(ctx, TG_EINVAL, "gradcheck: fn, res or the inputs are missing");
    check c;
    init(&c, ctx, opts, res);
    c.fn = fn;
    c.ud = ud;
    c.in = in;
    c.n = n;
    res->cases = 1;
    return check_fn(&c, 0, NULL, res);
}

typedef struct op_call { const tg_op *op; const void *attrs; } op_call;

static tg_tensor *apply_op(tg_ctx *ctx, tg_tensor *const *in, int n, void *ud)
{
    const op_call *call = ud;
    return tg_apply(ctx, call->op, in, n, call->attrs);
}

tg_status tg_gradcheck_op(tg_ctx *ctx, const tg_op *op, const tg_gradcheck_opts *opts,
                          tg_gradcheck_result *res)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (!op || !res)
        return TG_ERROR(ctx, TG_EINVAL, "gradcheck_op: op or res is NULL");
    if (!op->sample || !op->vjp)
        return TG_ERROR(ctx, TG_EINVAL, "gradcheck_op: %s has no %s", op->name,
                        op->vjp ? "sample generator" : "vjp");
    check c;
    init(&c, ctx, opts, res);
    bool training = tg_training(ctx);
    tg_status st = TG_OK;
    for (int k = 0; st == TG_OK; k++) {
        tg__mark m = tg__mark_get(ctx);
        tg_sample s;
        memset(&s, 0, sizeof s);
        s.training = training;
        int got = op->sample(ctx, k, &s);
        if (got < 0 || ctx->errcode) {
            st = ctx->errcode ? ctx->errcode
                              : TG_ERROR(ctx, got, "gradcheck_op: %s: sample %d failed", op->name, k);
        } else if (got > 0) {
            op_call call = {op, s.attrs};
            c.fn = apply_op;
            c.ud = &call;
            c.in = s.in;
            c.n = s.n_in;
            tg_set_training(ctx, s.training);
            st = check_fn(&c, k, s.desc, res);
            res->cases++;
        }
        tg__mark_rewind(ctx, m);
        if (got == 0)
            break;
    }
    tg_set_training(ctx, training);
    return st;
}
