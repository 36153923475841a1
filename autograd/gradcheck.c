/*
 * gradcheck.c: analytic gradients against central finite differences.
 *
 * For y = f(x_1..x_n), the analytic Jacobian row k is what tg_backward_ex
 * gives with gout = e_k (one backward per output element, the graph
 * retained); the numeric column j is (y(x + eps e_j) - y(x - eps e_j)) /
 * (2 eps). Every entry is compared, as PyTorch's gradcheck does. When the
 * Jacobian would exceed MAX_JACOBIAN entries, both sides are projected on a
 * fixed random v instead (one row, v^T J). Every evaluation rewinds the RNG
 * to the same state (so dropout repeats its mask) and the arena and tape to
 * a mark (so a check of any size runs in the memory of one evaluation).
 */
#include "impl.h"

#include <math.h>

#define MAX_JACOBIAN ((int64_t)1 << 22)

typedef struct check {
    tg_ctx *ctx;
    tg_fn fn;
    void *ud;
    tg_tensor *const *in;
    int n;
    double eps, atol, rtol;
    tg_rng_state rng;
    int64_t out_numel, in_total;
    int64_t rows;     /* out_numel for the whole Jacobian, 1 for a projection */
    double *block;    /* one allocation holding the arrays below */
    size_t block_bytes;
    double *jac;      /* rows x in_total: the analytic side */
    double *v;        /* the projection, out_numel entries (rows == 1) */
    double *yp, *ym;  /* outputs at x + eps and x - eps */
    double *kept;     /* parameters' gradients, parked during the check */
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

/* y = f(x) into out with nothing recorded; the arena is rewound after. */
static tg_status eval_y(check *c, double *out)
{
    tg__mark m = tg__mark_get(c->ctx);
    bool prev = tg_set_grad_enabled(c->ctx, false);
    tg_tensor *y = run(c);
    tg_set_grad_enabled(c->ctx, prev);
    if (y && y->numel != c->out_numel)
        TG_ERROR(c->ctx, TG_ESHAPE, "gradcheck: the output changed size between evaluations");
    else if (y)
        for (int64_t i = 0; i < y->numel; i++)
            out[i] = tg_get(y, i);
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

/* Parks the inputs' gradients: step tensors lose the pointer for a while,
 * parameters have their values copied out (into c->kept) and zeroed. */
static void park_grads(check *c, tg_tensor **saved)
{
    int64_t at = 0;
    for (int i = 0; i < c->n; i++) {
        tg_tensor *x = c->in[i];
        saved[i] = x->grad;
        if (!x->requires_grad)
            continue;
        if (x->persistent && x->grad) {
            for (int64_t j = 0; j < x->numel; j++)
                c->kept[at + j] = tg_get(x->grad, j);
            tg_tensor_zero_grad(x);
        } else {
            x->grad = NULL;
        }
        at += x->numel;
    }
}

static void restore_grads(check *c, tg_tensor *const *saved)
{
    int64_t at = 0;
    for (int i = 0; i < c->n; i++) {
        tg_tensor *x = c->in[i];
        if (!x->requires_grad)
            continue;
        if (x->persistent && x->grad) {
            for (int64_t j = 0; j < x->numel; j++)
                tg_set(x->grad, j, saved[i] ? c->kept[at + j] : 0.0);
        } else {
            x->grad = saved[i];
        }
        at += x->numel;
    }
}

/* One analytic row: backpropagate cot through y and copy the input gradients. */
static tg_status analytic_row(check *c, tg_tensor *y, const tg_tensor *cot, double *row)
{
    for (int i = 0; i < c->n; i++)
        if (c->in[i]->requires_grad)
            tg_tensor_zero_grad(c->in[i]);
    /* an element a first-write vjp leaves unwritten shows up as NaN */
    c->ctx->poison_grads++;
    tg_status st = y->requires_grad ? tg_backward_ex(c->ctx, y, cot, TG_RETAIN_GRAPH) : TG_OK;
    c->ctx->poison_grads--;
    if (st != TG_OK)
        return tg_errcode(c->ctx);
    int64_t at = 0;
    for (int i = 0; i < c->n; i++) {
        const tg_tensor *x = c->in[i];
        if (!x->requires_grad)
            continue;
        for (int64_t j = 0; j < x->numel; j++)
            row[at + j] = x->grad ? tg_get(x->grad, j) : 0.0;
        at += x->numel;
    }
    return TG_OK;
}

static tg_status alloc_arrays(check *c)
{
    int64_t cells = c->rows * c->in_total + 3 * c->out_numel + c->in_total + 1;
    c->block_bytes = (size_t)cells * sizeof(double);
    if (!(c->block = tg__malloc(c->ctx, c->block_bytes)))
        return TG_ENOMEM;
    c->jac = c->block;
    c->v = c->jac + c->rows * c->in_total;
    c->yp = c->v + c->out_numel;
    c->ym = c->yp + c->out_numel;
    c->kept = c->ym + c->out_numel;
    uint64_t s = 0x5eedULL;
    for (int64_t i = 0; i < c->out_numel; i++)
        c->v[i] = proj(&s);
    return TG_OK;
}

/* Runs f once with grad on and fills c->jac, one backward per row. */
static tg_status analytic(check *c)
{
    tg_ctx *ctx = c->ctx;
    tg_tensor *saved[TG_SAMPLE_MAX_IN] = {NULL};
    tg__mark m = tg__mark_get(ctx);
    bool prev = tg_set_grad_enabled(ctx, true);
    tg_tensor *y = run(c); /* NULL only with an error held */
    tg_status st = TG_ENOMEM;
    if (y) {
        c->out_numel = y->numel;
        c->rows = y->numel * (c->in_total ? c->in_total : 1) <= MAX_JACOBIAN ? y->numel : 1;
        st = alloc_arrays(c);
    }
    if (y && st == TG_OK) {
        park_grads(c, saved);
        for (int64_t r = 0; st == TG_OK && r < c->rows; r++) {
            tg_tensor *cot = tg_zeros(ctx, TG_F64, y->ndim, y->shape);
            if (!cot)
                break;
            if (c->rows == c->out_numel)
                tg_set(cot, r, 1.0);
            else
                memcpy(cot->data, c->v, (size_t)c->out_numel * sizeof(double));
            st = analytic_row(c, y, cot, c->jac + r * c->in_total);
        }
        restore_grads(c, saved);
    }
    tg_set_grad_enabled(ctx, prev);
    tg__mark_rewind(ctx, m);
    int err = tg_errcode(ctx);
    if (!y || st != TG_OK)
        return err ? err : TG_EINTERNAL;
    return err;
}

static void compare(check *c, int case_no, const char *desc, int input, int64_t j, int64_t out,
                    double a, double num, tg_gradcheck_result *res)
{
    double abs_err = fabs(a - num);
    double rel_err = abs_err / fmax(fabs(num), 1e-6);
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
    res->fail_output = out;
    res->analytic = a;
    res->numeric = num;
    char where[48] = "";
    if (out >= 0)
        snprintf(where, sizeof where, ", output %lld", (long long)out);
    snprintf(res->msg, sizeof res->msg,
             "case %d%s%s%s, input %d, element %lld%s: analytic %.10g vs numeric %.10g "
             "(abs err %.3g)", case_no, desc ? " (" : "", desc ? desc : "", desc ? ")" : "",
             input, (long long)j, where, a, num, abs_err);
}

/* Perturbs each checked element both ways and compares its Jacobian column. */
static tg_status numeric(check *c, int case_no, const char *desc, tg_gradcheck_result *res)
{
    int64_t at = 0;
    for (int i = 0; i < c->n; i++) {
        tg_tensor *x = c->in[i];
        if (!x->requires_grad)
            continue;
        /* the values come back exactly, and so do the counters */
        uint64_t version = x->version, base_version = x->base ? x->base->version : 0;
        for (int64_t j = 0; j < x->numel; j++) {
            double orig = tg_get(x, j);
            tg_set(x, j, orig + c->eps);
            tg_status st = eval_y(c, c->yp);
            tg_set(x, j, orig - c->eps);
            if (st == TG_OK)
                st = eval_y(c, c->ym);
            tg_set(x, j, orig);
            x->version = version;
            if (x->base)
                x->base->version = base_version;
            if (st != TG_OK)
                return st;
            if (c->rows == c->out_numel) {
                for (int64_t r = 0; r < c->rows; r++)
                    compare(c, case_no, desc, i, j, r, c->jac[r * c->in_total + at + j],
                            (c->yp[r] - c->ym[r]) / (2 * c->eps), res);
            } else {
                double d = 0;
                for (int64_t r = 0; r < c->out_numel; r++)
                    d += c->v[r] * (c->yp[r] - c->ym[r]);
                compare(c, case_no, desc, i, j, -1, c->jac[at + j], d / (2 * c->eps), res);
            }
        }
        at += x->numel;
    }
    return TG_OK;
}

static tg_status check_fn(check *c, int case_no, const char *desc, tg_gradcheck_result *res)
{
    tg_ctx *ctx = c->ctx;
    if (c->n > TG_SAMPLE_MAX_IN)
        return TG_ERROR(ctx, TG_EINVAL, "gradcheck: %d inputs; at most %d", c->n, TG_SAMPLE_MAX_IN);
    if (tg__check_inputs(ctx, "gradcheck", c->in, c->n))
        return ctx->errcode;
    for (int i = 0; i < c->n; i++) {
        if (c->in[i]->requires_grad && c->in[i]->dtype != TG_F64)
            return TG_ERROR(ctx, TG_EDTYPE, "gradcheck: input %d is %s; gradcheck needs float64",
                            i, tg_dtype_name(c->in[i]->dtype));
    }
    c->in_total = checked_numel(c);
    c->rng = tg_rng_get(ctx);
    c->block = NULL;
    tg_status st = analytic(c);
    if (st == TG_OK)
        st = numeric(c, case_no, desc, res);
    tg_rng_set(ctx, c->rng);
    if (c->block)
        tg__free(ctx, c->block, c->block_bytes);
    c->block = NULL;
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
