/*
 * userops.c: a user's op library, as `tapegrad gradcheck --load` takes it
 * (built as a loadable module by tests/CMakeLists.txt; test_cli runs the
 * command on it). Written only against the public API, it adds one op:
 *
 *   softplus: y = log(1 + e^x)     dx += g * sigmoid(x)     (reads the input)
 *
 * computed as max(x, 0) + log1p(e^-|x|), so a large |x| never overflows e^x
 * (softplus(1000) is 1000, softplus(-1000) is e^-1000 = 0), and the
 * sigmoid of the vjp as 1 / (1 + e^-x) or e^x / (1 + e^x), whichever keeps
 * the exponent negative.
 *
 * The module resolves the tapegrad symbols against the program that loads
 * it, so it shares that program's op registry.
 */
#include <math.h>
#include <stdio.h>

#include "tapegrad.h"

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
            double v = (double)xs[i];
            ys[i] = (T)(fmax(v, 0.0) + log1p(exp(-fabs(v))));
        }
    });
    tg_node_value_unused(node, -1); /* the vjp reads x, not y */
    return y;
}

static double sigmoid(double v)
{
    if (v >= 0)
        return 1 / (1 + exp(-v));
    double e = exp(v);
    return e / (1 + e);
}

static tg_status softplus_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                              tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *x = node->in[0];
    TG_DISPATCH_FLOAT(x->dtype, T, {
        const T *xs = x->data, *g = gout->data;
        T *gx = gin[0]->data;
        for (int64_t i = 0; i < x->numel; i++)
            gx[i] += g[i] * (T)sigmoid((double)xs[i]);
    });
    return TG_OK;
}

/* Three cases: a matrix around 0, a 3-D tensor reaching into both tails,
 * one element. */
static int softplus_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const int64_t shapes[][3] = {{3, 4}, {2, 3, 2}, {1}};
    static const int ndims[] = {2, 3, 1};
    static const double spans[] = {3, 12, 1};
    static const char *const desc[] = {"matrix", "3-D, both tails", "single element"};
    if (index >= 3)
        return 0;
    tg_tensor *x = tg_rand(ctx, TG_F64, ndims[index], shapes[index], -spans[index],
                           spans[index]);
    if (!x || tg_set_requires_grad(ctx, x, true) != TG_OK)
        return tg_errcode(ctx);
    s->n_in = 1;
    s->in[0] = x;
    snprintf(s->desc, sizeof s->desc, "%s", desc[index]);
    return 1;
}

static const char *const softplus_inputs[] = {"x", NULL};

static const tg_op softplus_op = {.name = "softplus", .min_in = 1, .max_in = 1,
                                  .forward = softplus_forward, .vjp = softplus_vjp,
                                  .sample = softplus_sample, .input_names = softplus_inputs};

TG_API tg_status tg_register_ops(tg_ctx *ctx);

TG_API tg_status tg_register_ops(tg_ctx *ctx) { return tg_op_register(ctx, &softplus_op); }
