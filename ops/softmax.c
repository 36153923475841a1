/*
 * softmax.c: softmax and log_softmax along one axis.
 *
 * x is viewed as (outer, n, inner) around the axis; each of the outer x
 * inner lines of n values is normalised on its own:
 *   softmax:     y = e^(x - m) / s,  m = max x, s = sum e^(x - m)
 *                dx += y * (g - sum(g * y))
 *   log_softmax: y = x - m - log s
 *                dx += g - e^y * sum(g)
 * Subtracting the max keeps every exponent <= 0, so logits of 1e4 cannot
 * overflow, and softmax(z + c) = softmax(z) whenever z + c is exact. The
 * sums over a line run in double for float32 too. Lines are independent,
 * so large inputs are split over threads by line; the vjp writes a
 * gradient's first contribution (TG_OP_VJP_WRITES). A NaN or an infinity in
 * a line makes the whole line NaN, as in PyTorch. An empty input gives an
 * empty output; a shape whose outer x inner count overflows is TG_ESHAPE.
 */
#include "ops_impl.h"

#include <tgmath.h>

typedef struct line { int64_t outer, n, inner; } line;

/* The (outer, n, inner) view of x around axis; TG_ESHAPE when outer x
 * inner overflows (possible only beside a dimension of 0). */
static tg_status line_of(tg_ctx *ctx, const char *who, const tg_tensor *x, int axis, line *l)
{
    *l = (line){1, x->shape[axis], 1};
    bool over = false;
    for (int d = 0; d < axis; d++)
        over |= __builtin_mul_overflow(l->outer, x->shape[d], &l->outer);
    for (int d = axis + 1; d < x->ndim; d++)
        over |= __builtin_mul_overflow(l->inner, x->shape[d], &l->inner);
    int64_t lines;
    if (over || __builtin_mul_overflow(l->outer, l->inner, &lines))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: input %s along axis %d has more lines (outer x inner "
                        "dimensions) than can be addressed", who, tg__shape_s(x), axis);
    return TG_OK;
}

/* Runs LINE(q) for q < lines, split over threads when total (elements)
 * reaches the grain; below it the loop stays out of OpenMP, whose entry
 * costs more than a small batch of lines. */
#define PAR_LINES(total, lines, LINE)                                                  \
    do {                                                                               \
        if ((total) >= TG__PAR_GRAIN) {                                                \
            _Pragma("omp parallel for schedule(static)")                               \
            for (int64_t q = 0; q < (lines); q++)                                      \
                LINE(q);                                                               \
        } else {                                                                       \
            for (int64_t q = 0; q < (lines); q++)                                      \
                LINE(q);                                                               \
        }                                                                              \
    } while (0)

static bool is_log(const tg_node *node) { return node->op == &tg__op_log_softmax; }

/* Normalises the line starting at x + base with element stride `inner`;
 * the sum of exponentials runs in double. */
#define SOFTMAX_LINE(T, xs, o, base, l, logp)                                        \
    do {                                                                             \
        T m = xs[base];                                                              \
        for (int64_t j = 1; j < (l).n; j++)                                          \
            if (xs[(base) + j * (l).inner] > m)                                      \
                m = xs[(base) + j * (l).inner];                                      \
        double s = 0;                                                                \
        for (int64_t j = 0; j < (l).n; j++)                                          \
            s += (double)exp(xs[(base) + j * (l).inner] - m);                        \
        double ls = log(s);                                                          \
        for (int64_t j = 0; j < (l).n; j++) {                                        \
            T z = xs[(base) + j * (l).inner] - m;                                    \
            o[(base) + j * (l).inner] = (T)((logp) ? (double)z - ls : (double)exp(z) / s); \
        }                                                                            \
    } while (0)

/* Line q of tg__softmax_lines */
#define FORWARD_LINE(q) SOFTMAX_LINE(T, xs, o, (q) / l.inner * l.n * l.inner + (q) % l.inner, l, logp)

void tg__softmax_lines(tg_dtype dt, const void *x, void *y, int64_t outer, int64_t n,
                       int64_t inner, bool logp)
{
    line l = {outer, n, inner};
    if (n == 0 || outer == 0 || inner == 0)
        return;
    int64_t lines = outer * inner, total = lines * n;
    /* s >= 1 in SOFTMAX_LINE (the maximum's own term is exp(0)), so its log is finite */
    // cppcheck-suppress invalidFunctionArg
    TG__DISPATCH(dt, T, {
        const T *xs = x;
        T *o = y;
        PAR_LINES(total, lines, FORWARD_LINE);
    });
}

static tg_tensor *softmax_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *x = node->in[0];
    int axis = tg__axis(ctx, node->op->name, ((const tg_axis_attrs *)node->attrs)->axis,
                        x->ndim);
    line l;
    if (axis < 0 || line_of(ctx, node->op->name, x, axis, &l))
        return NULL;
    tg_tensor *y = tg_empty(ctx, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    tg__softmax_lines(x->dtype, x->data, y->data, l.outer, l.n, l.inner, is_log(node));
    tg_node_value_unused(node, 0); /* the vjp reads the output only */
    return y;
}

/* The gradient of line q (in softmax_vjp) */
#define VJP_LINE(q)                                                                \
    do {                                                                           \
        int64_t base = (q) / l.inner * l.n * l.inner + (q) % l.inner;              \
        double dot = 0;                                                            \
        for (int64_t j = 0; j < l.n; j++) {                                        \
            int64_t k = base + j * l.inner;                                        \
            dot += logp ? (double)g[k] : (double)g[k] * (double)ys[k];             \
        }                                                                          \
        T d = (T)dot;                                                              \
        for (int64_t j = 0; j < l.n; j++) {                                        \
            int64_t k = base + j * l.inner;                                        \
            T v = logp ? g[k] - exp(ys[k]) * d : ys[k] * (g[k] - d);               \
            gx[k] = add ? gx[k] + v : v;                                           \
        }                                                                          \
    } while (0)

static tg_status softmax_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                             tg_tensor *const *gin)
{
    const tg_tensor *x = node->in[0], *y = node->out;
    int axis = ((const tg_axis_attrs *)node->attrs)->axis;
    line l;
    if (line_of(ctx, node->op->name, x, axis < 0 ? axis + x->ndim : axis, &l))
        return tg_errcode(ctx);
    if (x->numel == 0)
        return TG_OK;
    bool logp = is_log(node), add = tg_vjp_adds(node, 0);
    int64_t lines = l.outer * l.inner, total = x->numel;
    TG__DISPATCH(x->dtype, T, {
        const T *ys = y->data, *g = gout->data;
        T *gx = gin[0]->data;
        PAR_LINES(total, lines, VJP_LINE);
    });
    return TG_OK;
}

static int axis_print(const tg_node *node, char *buf, size_t size)
{
    return snprintf(buf, size, "axis=%d", ((const tg_axis_attrs *)node->attrs)->axis);
}

static int softmax_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const tg_axis_attrs axes[] = {{1}, {0}, {-1}, {1}};
    static const int64_t shapes[][3] = {{3, 4}, {3, 4}, {2, 3, 4}, {2, 1, 3}};
    static const int ndims[] = {2, 2, 3, 3};
    static const char *desc[] = {"rows", "columns", "last axis of 3-D", "size-1 axis"};
    if (index >= 4)
        return 0;
    s->n_in = 1;
    s->in[0] = tg__sample_rand(ctx, ndims[index], shapes[index], -3, 3, true);
    memcpy(s->attrs, &axes[index], sizeof axes[index]);
    snprintf(s->desc, sizeof s->desc, "%s", desc[index]);
    return s->in[0] ? 1 : tg_errcode(ctx);
}

const tg_op tg__op_softmax = {.name = "softmax", .min_in = 1, .max_in = 1,
                              .attr_size = sizeof(tg_axis_attrs), .forward = softmax_forward,
                              .vjp = softmax_vjp, .print_attrs = axis_print,
                              .sample = softmax_sample, .flags = TG_OP_VJP_WRITES};
const tg_op tg__op_log_softmax = {.name = "log_softmax", .min_in = 1, .max_in = 1,
                                  .attr_size = sizeof(tg_axis_attrs), .forward = softmax_forward,
                                  .vjp = softmax_vjp, .print_attrs = axis_print,
                                  .sample = softmax_sample, .flags = TG_OP_VJP_WRITES};

tg_tensor *tg_softmax(tg_ctx *ctx, tg_tensor *x, int axis)
{
    tg_axis_attrs a = {axis};
    return tg_apply(ctx, &tg__op_softmax, &x, 1, &a);
}

tg_tensor *tg_log_softmax(tg_ctx *ctx, tg_tensor *x, int axis)
{
    tg_axis_attrs a = {axis};
    return tg_apply(ctx, &tg__op_log_softmax, &x, 1, &a);
}
