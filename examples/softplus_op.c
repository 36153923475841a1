/*
 * softplus_op.c: a new op defined outside the library, registered through
 * the same call the built-in ops use, gradient-checked, then trained with.
 *
 *   softplus(x) = log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|) so
 *                 that e^x never overflows (softplus(1000) = 1000);
 *   its vjp:      dL/dx = dL/dy * sigmoid(x).
 *
 * Each kernel is written once, for float32 and float64, with
 * TG_DISPATCH_FLOAT. A sample generator gives gradcheck its inputs.
 *
 *   softplus_op [--steps N]   registers the op, prints its gradcheck row,
 *                             then fits x^2 - 1 on [-2, 2] with
 *                             linear(1 -> 16) -> softplus -> linear(16 -> 1),
 *                             Adam, N steps (default 300); exits 1 on an
 *                             error, a failed gradcheck or a loss that did
 *                             not fall
 *
 * Built with -DTG_AS_PLUGIN, the file is a plugin instead: no main, and
 * tg_register_ops exported, so the command line checks the op:
 *
 *   tapegrad gradcheck --load build/examples/libsoftplus_op.so
 */
#include <math.h>
#include <stdio.h>

#include "tapegrad.h"

/* ---------------------------------------------------------------- the op */

/* The output, a new tensor of x's shape and dtype. */
static tg_tensor *softplus_forward(tg_ctx *ctx, tg_node *node)
{
    const tg_tensor *x = node->in[0];
    tg_tensor *y = tg_empty(ctx, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    TG_DISPATCH_FLOAT(x->dtype, T, {
        const T *xs = x->data;
        T *ys = y->data;
        for (int64_t i = 0; i < x->numel; i++) {
            double v = xs[i];
            ys[i] = (T)(fmax(v, 0) + log1p(exp(-fabs(v))));
        }
    });
    tg_node_value_unused(node, -1); /* the vjp reads x, never y */
    return y;
}

/* 1 / (1 + e^-v) without overflow for either sign of v. */
static double sigmoid(double v)
{
    if (v >= 0)
        return 1 / (1 + exp(-v));
    double e = exp(v);
    return e / (1 + e);
}

/* Accumulates gout * sigmoid(x) into the input's gradient. */
static tg_status softplus_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                              tg_tensor *const *gin)
{
    const tg_tensor *x = node->in[0];
    TG_DISPATCH_FLOAT(x->dtype, T, {
        const T *xs = x->data, *g = gout->data;
        T *gx = gin[0]->data;
        for (int64_t i = 0; i < x->numel; i++)
            gx[i] += (T)(g[i] * sigmoid(xs[i]));
    });
    return TG_OK;
}

/* Gradcheck inputs (float64, requiring grad): case 0 a random matrix,
 * case 1 values from -40 to 40, where the naive formula would lose digits. */
static int softplus_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const double wide[] = {-40, -10, -1, -1e-3, 0, 1e-3, 1, 10, 40};
    if (index == 0) {
        s->in[0] = tg_randn(ctx, TG_F64, TG_SHAPE(3, 4), 0, 2);
        snprintf(s->desc, sizeof s->desc, "3x4 normal");
    } else if (index == 1) {
        s->in[0] = tg_from_f64(ctx, TG_F64, TG_SHAPE(9), wide);
        snprintf(s->desc, sizeof s->desc, "-40 .. 40");
    } else {
        return 0;
    }
    s->n_in = 1;
    tg_status st = tg_set_requires_grad(ctx, s->in[0], true);
    return st == TG_OK ? 1 : st;
}

static const char *const softplus_inputs[] = {"x", NULL};

static const tg_op softplus_op = {
    .name = "softplus",
    .min_in = 1,
    .max_in = 1,
    .forward = softplus_forward,
    .vjp = softplus_vjp,
    .sample = softplus_sample,
    .input_names = softplus_inputs,
};

#ifdef TG_AS_PLUGIN

/* ---------------------------------------------------------------- the plugin */

/* What `tapegrad gradcheck --load` calls. */
TG_API tg_status tg_register_ops(tg_ctx *ctx);

tg_status tg_register_ops(tg_ctx *ctx)
{
    return tg_op_register(ctx, &softplus_op);
}

#else

/* ---------------------------------------------------------------- the program */

#include <stdlib.h>
#include <string.h>

#define HIDDEN 16
#define POINTS 64

/* The op's builder, as the library's own: softplus(ctx, x). */
static tg_tensor *softplus(tg_ctx *ctx, tg_tensor *x)
{
    return tg_apply(ctx, &softplus_op, &x, 1, NULL);
}

/* Checks the op's vjp against finite differences; prints the row and
 * returns whether it passed (false on an error too). */
static bool check_op(tg_ctx *ctx)
{
    tg_gradcheck_result r;
    if (tg_gradcheck_op(ctx, &softplus_op, NULL, &r) != TG_OK)
        return false;
    printf("%-10s %5s %8s %12s %12s  %s\n", "op", "cases", "entries", "max abs err",
           "max rel err", "result");
    printf("%-10s %5d %8lld %12.3e %12.3e  %s%s\n", softplus_op.name, r.cases,
           (long long)r.checked, r.max_abs_err, r.max_rel_err, r.passed ? "pass" : "FAIL: ",
           r.passed ? "" : r.msg);
    tg_reset(ctx);
    return r.passed;
}

typedef struct net {
    tg_tensor *w1, *b1, *w2, *b2;
} net;

/* x (N, 1) -> linear -> softplus -> linear -> (N, 1). */
static tg_tensor *forward(tg_ctx *ctx, const net *m, tg_tensor *x)
{
    tg_tensor *h = softplus(ctx, tg_linear(ctx, x, m->w1, m->b1));
    return tg_linear(ctx, h, m->w2, m->b2);
}

/* The training data: x evenly spaced on [-2, 2], target x^2 - 1. */
static void make_data(tg_ctx *ctx, tg_tensor **x, tg_tensor **t)
{
    *x = tg_set_name(ctx, tg_empty(ctx, TG_F32, TG_SHAPE(POINTS, 1)), "x");
    for (int64_t i = 0; *x && i < POINTS; i++)
        tg_set(*x, i, -2 + 4.0 * (double)i / (POINTS - 1));
    /* x does not require grad, so these ops are not recorded */
    *t = tg_set_name(ctx, tg_sub_scalar(ctx, tg_mul(ctx, *x, *x), 1), "target");
}

/* Trains `steps` Adam steps; *first and *last get the first and last losses. */
static tg_status train(tg_ctx *ctx, long steps, double *first, double *last)
{
    net m = {tg_param(ctx, TG_F32, TG_SHAPE(HIDDEN, 1), "fc1.weight"),
             tg_param(ctx, TG_F32, TG_SHAPE(HIDDEN), "fc1.bias"),
             tg_param(ctx, TG_F32, TG_SHAPE(1, HIDDEN), "fc2.weight"),
             tg_param(ctx, TG_F32, TG_SHAPE(1), "fc2.bias")};
    tg_init_default(ctx, m.w1, m.b1);
    tg_init_default(ctx, m.w2, m.b2);
    tg_tensor *params[] = {m.w1, m.b1, m.w2, m.b2};
    tg_adam_opts o = tg_adam_defaults();
    o.lr = 0.05;
    tg_optim *adam = tg_optim_adam(ctx, params, 4, &o);
    long every = steps >= 10 ? steps / 10 : 1;
    for (long step = 1; step <= steps && tg_errcode(ctx) == TG_OK; step++) {
        tg_tensor *x, *t;
        make_data(ctx, &x, &t);
        tg_tensor *loss = tg_mse(ctx, forward(ctx, &m, x), t, TG_MEAN);
        tg_optim_zero_grad(ctx, adam);
        tg_backward(ctx, loss);
        tg_optim_step(ctx, adam);
        if (tg_errcode(ctx) == TG_OK) {
            *last = tg_get(loss, 0);
            if (step == 1)
                *first = *last;
            if (step == 1 || step % every == 0)
                printf("step %4ld  MSE %.5f\n", step, *last);
        }
        tg_reset(ctx);
    }
    tg_optim_free(ctx, adam);
    return (tg_status)tg_errcode(ctx);
}

int main(int argc, char **argv)
{
    long steps = 300;
    char *end = NULL;
    if (argc == 3 && !strcmp(argv[1], "--steps"))
        steps = strtol(argv[2], &end, 10);
    if (argc != 1 && (argc != 3 || !end || *end || steps < 1)) {
        fprintf(stderr, "usage: softplus_op [--steps N]\n");
        return 2;
    }
    tg_ctx *ctx = tg_ctx_new(3);
    if (!ctx) {
        fprintf(stderr, "softplus_op: cannot create a context\n");
        return 1;
    }
    double first = NAN, last = NAN;
    bool passed = tg_op_register(ctx, &softplus_op) == TG_OK && check_op(ctx);
    if (passed && train(ctx, steps, &first, &last) == TG_OK)
        printf("the loss fell from %.5f to %.5f\n", first, last);
    int rc = tg_errcode(ctx) != TG_OK || !passed || !(last < first);
    if (tg_errcode(ctx) != TG_OK)
        fprintf(stderr, "softplus_op: %s\n", tg_errmsg(ctx));
    else if (rc)
        fprintf(stderr, "softplus_op: %s\n", passed ? "the loss did not fall" : "gradcheck failed");
    tg_ctx_free(ctx);
    return rc;
}

#endif
