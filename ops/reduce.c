/*
 * reduce.c: sum and mean, over all elements or one axis.
 *
 * x is viewed as (outer, n, inner) around the reduced axis (all elements:
 * outer = inner = 1). Forward: out[o, i] = sum_j x[o, j, i] (divided by n
 * for mean), accumulated in double; a full sum adds fixed blocks, so its
 * value does not depend on the thread count. Vjp: dx[o, j, i] += g[o, i]
 * (/ n), written for a gradient's first contribution (TG_OP_VJP_WRITES).
 * As PyTorch, the sum of no elements is 0 and their mean NaN. An empty x
 * takes neither loop (its outer or inner size may be huge beside the 0).
 */
#include "ops_impl.h"

#include <math.h>

typedef struct span { int64_t outer, n, inner; } span;

static span span_of(const tg_tensor *x, const tg_reduce_attrs *a, int axis)
{
    span s = {1, x->numel, 1};
    if (a->all)
        return s;
    s.n = x->shape[axis];
    s.outer = 1;
    for (int d = 0; d < axis; d++)
        s.outer *= x->shape[d];
    s.inner = 1;
    for (int d = axis + 1; d < x->ndim; d++)
        s.inner *= x->shape[d];
    return s;
}

static bool is_mean(const tg_node *node) { return node->op == &tg__op_mean; }

/* What each sum is multiplied by: 1, or 1 / n for mean, which is NaN when
 * n = 0 (PyTorch's mean of nothing; its gradient reaches no element). */
static double scale_of(const tg_node *node, span s)
{
    if (!is_mean(node))
        return 1.0;
    return s.n ? 1.0 / (double)s.n : NAN;
}

/* One parallel, vectorised loop over n elements (a pragma that can stand
 * inside the dispatch macro's argument). */
#define PAR_SIMD(...) TG__PAR_FOR_SIMD(n >= TG__PAR_GRAIN, __VA_ARGS__)

/* Elements per block of a full sum: blocks are summed on their own, then
 * their sums in order, so the result is the same at any thread count. */
#define SUM_BLOCK 4096

/* out = scale * the sum of every element of x (not empty), in double. */
static tg_status sum_all(tg_ctx *ctx, const tg_tensor *x, double scale, tg_tensor *out)
{
    int64_t n = x->numel, blocks = (n + SUM_BLOCK - 1) / SUM_BLOCK;
    double *part = tg_scratch(ctx, (size_t)blocks * sizeof *part, false);
    if (!part)
        return tg_errcode(ctx);
    TG__DISPATCH(x->dtype, T, {
        const T *xs = x->data;
        TG__PAR_FOR(n >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
        for (int64_t blk = 0; blk < blocks; blk++) {
            int64_t lo = blk * SUM_BLOCK, hi = lo + SUM_BLOCK < n ? lo + SUM_BLOCK : n;
            double acc = 0;
            _Pragma("omp simd reduction(+ : acc)")
            for (int64_t i = lo; i < hi; i++)
                acc += (double)xs[i];
            part[blk] = acc;
        });
        double total = 0;
        for (int64_t blk = 0; blk < blocks; blk++)
            total += part[blk];
        *(T *)out->data = (T)(total * scale);
    });
    return TG_OK;
}

static tg_tensor *reduce_forward(tg_ctx *ctx, tg_node *node)
{
    const tg_reduce_attrs *a = node->attrs;
    tg_tensor *x = node->in[0];
    int axis = 0;
    if (!a->all && (axis = tg__axis(ctx, node->op->name, a->axis, x->ndim)) < 0)
        return NULL;
    int64_t shape[TG_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < x->ndim; d++) {
        bool reduced = a->all || d == axis;
        if (!reduced)
            shape[nd++] = x->shape[d];
        else if (a->keepdim)
            shape[nd++] = 1;
    }
    tg_tensor *out = tg_empty(ctx, x->dtype, nd, shape);
    if (!out)
        return NULL;
    tg_node_value_unused(node, 0); /* the vjp reads only the gradient */
    tg_node_value_unused(node, -1);
    if (x->numel == 0)
        return tg_fill(ctx, out, is_mean(node) ? NAN : 0.0) == TG_OK ? out : NULL;
    span s = span_of(x, a, axis);
    double scale = scale_of(node, s);
    if (a->all)
        return sum_all(ctx, x, scale, out) == TG_OK ? out : NULL;
    int64_t lines = s.outer * s.inner;
    TG__DISPATCH(x->dtype, T, {
        const T *xs = x->data;
        T *o = out->data;
        TG__PAR_FOR(x->numel >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
        for (int64_t q = 0; q < lines; q++) {
            int64_t p = q / s.inner, i = q % s.inner;
            double acc = 0;
            for (int64_t j = 0; j < s.n; j++)
                acc += xs[(p * s.n + j) * s.inner + i];
            o[q] = (T)(acc * scale);
        });
    });
    return out;
}

static tg_status reduce_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                            tg_tensor *const *gin)
{
    (void)ctx;
    const tg_reduce_attrs *a = node->attrs;
    tg_tensor *x = node->in[0];
    int axis = a->all ? 0 : (a->axis < 0 ? a->axis + x->ndim : a->axis);
    if (x->numel == 0)
        return TG_OK; /* no element to receive a gradient */
    span s = span_of(x, a, axis);
    double scale = scale_of(node, s);
    int64_t rows = s.outer * s.n, n = s.n;
    bool add = tg_vjp_adds(node, 0);
    TG__DISPATCH(x->dtype, T, {
        const T *restrict g = gout->data;
        T *restrict gx = gin[0]->data;
        T sc = (T)scale;
        if (s.inner == 1) { /* each output's gradient fills a contiguous run of n */
            for (int64_t p = 0; p < s.outer; p++) {
                T v = g[p] * sc;
                T *dr = gx + p * n;
                if (add) {
                    PAR_SIMD(for (int64_t j = 0; j < n; j++) dr[j] += v;);
                } else {
                    PAR_SIMD(for (int64_t j = 0; j < n; j++) dr[j] = v;);
                }
            }
        } else { /* each row of inner gradients repeats one row of g */
            TG__PAR_FOR(x->numel >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
            for (int64_t r = 0; r < rows; r++) {
                const T *gr = g + r / s.n * s.inner;
                T *dr = gx + r * s.inner;
                if (add) {
                    _Pragma("omp simd")
                    for (int64_t i = 0; i < s.inner; i++)
                        dr[i] += gr[i] * sc;
                } else {
                    _Pragma("omp simd")
                    for (int64_t i = 0; i < s.inner; i++)
                        dr[i] = gr[i] * sc;
                }
            });
        }
    });
    return TG_OK;
}

static int reduce_print(const tg_node *node, char *buf, size_t size)
{
    const tg_reduce_attrs *a = node->attrs;
    if (a->all)
        return snprintf(buf, size, "all%s", a->keepdim ? " keepdim" : "");
    return snprintf(buf, size, "axis=%d%s", a->axis, a->keepdim ? " keepdim" : "");
}

static int reduce_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const tg_reduce_attrs attrs[] = {
        {0, true, false}, {0, false, false}, {-1, false, true}, {1, false, false}, {0, true, true}};
    static const int64_t shapes[][3] = {{3, 4, 0}, {3, 4, 0}, {2, 3, 4}, {2, 1, 3}, {1, 5, 0}};
    static const int ndims[] = {2, 2, 3, 3, 2};
    static const char *desc[] = {"all", "axis 0", "last axis keepdim", "size-1 axis", "all keepdim"};
    if (index >= 5)
        return 0;
    s->n_in = 1;
    s->in[0] = tg__sample_rand(ctx, ndims[index], shapes[index], -1, 1, true);
    memcpy(s->attrs, &attrs[index], sizeof attrs[index]);
    snprintf(s->desc, sizeof s->desc, "%s", desc[index]);
    return s->in[0] ? 1 : tg_errcode(ctx);
}

const tg_op tg__op_sum = {.name = "sum", .min_in = 1, .max_in = 1,
                          .attr_size = sizeof(tg_reduce_attrs), .forward = reduce_forward,
                          .vjp = reduce_vjp, .print_attrs = reduce_print,
                          .sample = reduce_sample, .flags = TG_OP_VJP_WRITES};
const tg_op tg__op_mean = {.name = "mean", .min_in = 1, .max_in = 1,
                           .attr_size = sizeof(tg_reduce_attrs), .forward = reduce_forward,
                           .vjp = reduce_vjp, .print_attrs = reduce_print,
                           .sample = reduce_sample, .flags = TG_OP_VJP_WRITES};

static tg_tensor *reduce(tg_ctx *ctx, const tg_op *op, tg_tensor *x, int axis, bool all,
                         bool keepdim)
{
    tg_reduce_attrs a = {axis, all, keepdim};
    return tg_apply(ctx, op, &x, 1, &a);
}

tg_tensor *tg_sum(tg_ctx *ctx, tg_tensor *x) { return reduce(ctx, &tg__op_sum, x, 0, true, false); }
tg_tensor *tg_mean(tg_ctx *ctx, tg_tensor *x) { return reduce(ctx, &tg__op_mean, x, 0, true, false); }

tg_tensor *tg_sum_axis(tg_ctx *ctx, tg_tensor *x, int axis, bool keepdim)
{
    return reduce(ctx, &tg__op_sum, x, axis, false, keepdim);
}

tg_tensor *tg_mean_axis(tg_ctx *ctx, tg_tensor *x, int axis, bool keepdim)
{
    return reduce(ctx, &tg__op_mean, x, axis, false, keepdim);
}
