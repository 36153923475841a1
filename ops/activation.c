/*
 * activation.c: relu, leaky_relu, sigmoid, tanh.
 *
 *   relu:       y = x <= 0 ? 0 : x         dx += y <= 0 ? 0 : g      (reads the output)
 *   leaky_relu: y = x > 0 ? x : a x        dx += g * (x > 0 ? 1 : a) (reads the input)
 *   sigmoid:    y = 1 / (1 + e^-x)         dx += g * y (1 - y)       (reads the output)
 *   tanh:       y = tanh(x)                dx += g * (1 - y^2)       (reads the output)
 * NaN propagates as in PyTorch: relu(NaN) and leaky_relu(NaN) are NaN, and
 * their gradients there are g and a g (the comparisons are written so that
 * NaN takes PyTorch's branch). Any slope a is accepted, NaN included.
 * sigmoid never evaluates e^x for a large positive x: with e = e^-|x| it is
 * 1 / (1 + e) for x >= 0 and e / (1 + e) below, so +-1000 give exactly 1
 * and 0 with finite gradients. The vjps write the first contribution to a
 * gradient (TG_OP_VJP_WRITES) and add later ones, element by element, so
 * the input's gradient may reuse the output's (TG_OP_VJP_INPLACE).
 */
#include "ops_impl.h"

#include <tgmath.h>

enum { RELU, LEAKY, SIGMOID, TANH };
static const int kinds[] = {RELU, LEAKY, SIGMOID, TANH};

static int kind_of(const tg_node *node) { return *(const int *)node->op->impl; }

static double slope_of(const tg_node *node)
{
    return kind_of(node) == LEAKY ? ((const tg_scalar_attrs *)node->attrs)->c : 0.0;
}

/* One parallel, vectorised pass over n elements: the loop's body is a
 * select the compiler turns into SIMD compares and blends (no branch). */
#define ACT_LOOP(...) TG__PAR_FOR_SIMD(n >= TG__PAR_GRAIN, __VA_ARGS__)

/* Writes (add false) or adds (add true) EXPR to d[0..n-1]. EXPR reads
 * the element's values only through the locals LOAD declares, and selects
 * between constants, never between two loads or two float results: with
 * trapping math the compiler if-converts only such selects (x * (x > 0 ?
 * 1 : a) is a x or x exactly, as x > 0 ? x : a x is). */
#define ACT_STORE(add, d, LOAD, EXPR)                                                   \
    do {                                                                                \
        if (add) {                                                                      \
            ACT_LOOP(for (int64_t i = 0; i < n; i++) { LOAD; d[i] += (EXPR); });          \
        } else {                                                                        \
            ACT_LOOP(for (int64_t i = 0; i < n; i++) { LOAD; d[i] = (EXPR); });           \
        }                                                                               \
    } while (0)

/* 1, in a variable the compiler cannot see through: with a literal 1 it
 * would turn x * (x > 0 ? 1 : a) back into a branch */
static volatile double opaque_one = 1;

TG__HOT static tg_tensor *act_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *x = node->in[0];
    tg_tensor *y = tg_empty(ctx, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    int kind = kind_of(node);
    double a = slope_of(node);
    TG__DISPATCH(x->dtype, T, {
        const T *restrict xs = x->data;
        T *restrict o = y->data;
        T ta = (T)a, one = opaque_one;
        int64_t n = x->numel;
        switch (kind) {
        case RELU: ACT_STORE(false, o, T v = xs[i], v <= 0 ? 0 : v); break;
        case LEAKY: ACT_STORE(false, o, T v = xs[i], v * (v > 0 ? one : ta)); break;
        case SIGMOID: /* e = e^-|x| <= 1; the numerator picks 1 or e */
            ACT_STORE(false, o, T v = xs[i]; T e = exp(-fabs(v)), (v >= 0 ? 1 : e) / (1 + e));
            break;
        default: ACT_STORE(false, o, T v = xs[i], tanh(v)); break;
        }
    });
    /* the vjp reads the input of leaky_relu and the output of the others */
    tg_node_value_unused(node, kind == LEAKY ? -1 : 0);
    return y;
}

TG__HOT static tg_status act_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *x = node->in[0], *y = node->out;
    int kind = kind_of(node);
    double a = slope_of(node);
    bool add = tg_vjp_adds(node, 0);
    TG__DISPATCH(x->dtype, T, {
        /* g and gx may be one buffer (TG_OP_VJP_INPLACE): not restrict */
        const T *restrict xs = x->data, *restrict ys = y->data, *g = gout->data;
        T *gx = gin[0]->data;
        T ta = (T)a, one = opaque_one;
        int64_t n = x->numel;
        switch (kind) {
        case RELU: ACT_STORE(add, gx, T v = ys[i]; T gv = g[i], v <= 0 ? 0 : gv); break;
        case LEAKY: ACT_STORE(add, gx, T v = xs[i]; T gv = g[i], gv * (v > 0 ? one : ta)); break;
        case SIGMOID: ACT_STORE(add, gx, T v = ys[i], g[i] * v * (1 - v)); break;
        default: ACT_STORE(add, gx, T v = ys[i], g[i] * (1 - v * v)); break;
        }
    });
    return TG_OK;
}

static int leaky_print(const tg_node *node, char *buf, size_t size)
{
    return snprintf(buf, size, "negative_slope=%s", tg__num(slope_of(node)));
}

/* Values stay at least 0.1 away from 0, where relu and leaky_relu have
 * their kink, so central differences see one side only. */
static int act_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const int64_t shapes[][4] = {{3, 4}, {2, 3, 1, 2}, {1, 1}};
    static const int ndims[] = {2, 4, 2};
    static const double slopes[] = {0.01, 0.2, 1.5};
    static const char *desc[] = {"matrix", "4-D with size-1 dim", "single element"};
    if (index >= 3)
        return 0;
    tg_tensor *x = tg__sample_rand(ctx, ndims[index], shapes[index], -3, 3, true);
    if (!x)
        return tg_errcode(ctx);
    for (int64_t i = 0; i < x->numel; i++) {
        double v = tg_get(x, i);
        if (fabs(v) < 0.1)
            tg_set(x, i, v < 0 ? v - 0.2 : v + 0.2);
    }
    s->n_in = 1;
    s->in[0] = x;
    tg_scalar_attrs a = {slopes[index]};
    memcpy(s->attrs, &a, sizeof a);
    snprintf(s->desc, sizeof s->desc, "%s", desc[index]);
    return 1;
}

#define ACT_OP(NAME, KIND)                                                               \
    const tg_op tg__op_##NAME = {.name = #NAME, .min_in = 1, .max_in = 1,                \
                                 .forward = act_forward, .vjp = act_vjp,                 \
                                 .sample = act_sample, .impl = &kinds[KIND],             \
                                 .flags = TG_OP_VJP_WRITES | TG_OP_VJP_INPLACE};                             \
    tg_tensor *tg_##NAME(tg_ctx *ctx, tg_tensor *x)                                      \
    {                                                                                    \
        return tg_apply(ctx, &tg__op_##NAME, &x, 1, NULL);                               \
    }

ACT_OP(relu, RELU)
ACT_OP(sigmoid, SIGMOID)
ACT_OP(tanh, TANH)

const tg_op tg__op_leaky_relu = {.name = "leaky_relu", .min_in = 1, .max_in = 1,
                                 .attr_size = sizeof(tg_scalar_attrs), .forward = act_forward,
                                 .vjp = act_vjp, .print_attrs = leaky_print,
                                 .sample = act_sample, .impl = &kinds[LEAKY],
                                 .flags = TG_OP_VJP_WRITES | TG_OP_VJP_INPLACE};

tg_tensor *tg_leaky_relu(tg_ctx *ctx, tg_tensor *x, double negative_slope)
{
    tg_scalar_attrs a = {negative_slope};
    return tg_apply(ctx, &tg__op_leaky_relu, &x, 1, &a);
}
