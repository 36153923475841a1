/*
 * pool.c: max and average pooling (1-D and 2-D), global average pooling.
 *
 * x is (N, C, H, W) (1-D: H = 1); each of the N C planes is pooled alone:
 *   out[oy][ox] over the window rows oy sh - ph .. + kh - 1, cols ox sw - pw .. + kw - 1,
 *   OH = floor((H + 2 ph - kh) / sh) + 1 (OW likewise), with ph <= kh / 2
 *   max: the largest in-bounds value (padding is -inf); the flat index of the
 *        maximum is saved, and dx[argmax] += g. Ties go to the first, a NaN
 *        beats every number and a later NaN beats an earlier one, as in
 *        PyTorch's max_pool2d_with_indices, so a window with a NaN gives NaN
 *        and sends its gradient to its last NaN
 *   avg: the sum of in-bounds values / (kh kw) (padding counts as zeros),
 *        summed in double; dx += g / (kh kw) over the window
 *   global_avg_pool: (N, C, ...) -> (N, C), the mean of each plane (summed in
 *        double; NaN for an empty plane, as torch.mean)
 * No vjp reads an input or output value (max pooling reads its saved
 * indices). As in PyTorch, only the batch of a pooled input may be empty.
 */
#include "ops_impl.h"

#include <inttypes.h>
#include <math.h>

typedef struct pgeom {
    int64_t planes, h, w, oh, ow;
    int64_t kh, kw, sh, sw, ph, pw;
    double area; /* kh kw, which may exceed int64 */
} pgeom;

static bool pool_1d(const tg_node *node)
{
    return node->op == &tg__op_max_pool1d || node->op == &tg__op_avg_pool1d;
}

static bool pool_max(const tg_node *node)
{
    return node->op == &tg__op_max_pool1d || node->op == &tg__op_max_pool2d;
}

/* A pair of sizes as messages give it: "h x w" in 2-D, "w" in 1-D. */
static const char *pair(char *buf, size_t size, bool one, int64_t h, int64_t w)
{
    if (one)
        snprintf(buf, size, "%" PRId64, w);
    else
        snprintf(buf, size, "%" PRId64 " x %" PRId64, h, w);
    return buf;
}

static void read_pool_geometry(const tg_node *node, pgeom *q)
{
    const tg_pool_attrs *a = node->attrs;
    const tg_tensor *x = node->in[0];
    bool one = pool_1d(node);
    memset(q, 0, sizeof *q);
    q->h = one ? 1 : x->shape[2];
    q->w = x->shape[x->ndim - 1];
    q->kh = one ? 1 : a->kernel[0];
    q->kw = one ? a->kernel[0] : a->kernel[1];
    q->sh = one ? 1 : a->stride[0];
    q->sw = one ? a->stride[0] : a->stride[1];
    q->ph = one ? 0 : a->padding[0];
    q->pw = one ? a->padding[0] : a->padding[1];
}

static tg_status check_pool_attrs(tg_ctx *ctx, const char *who, const pgeom *q)
{
    if (q->kh < 1 || q->kw < 1)
        return TG_ERROR(ctx, TG_EINVAL, "%s: kernel size %" PRId64 "; it must be >= 1", who,
                        q->kh < 1 ? q->kh : q->kw);
    if (q->sh < 1 || q->sw < 1)
        return TG_ERROR(ctx, TG_EINVAL, "%s: stride %" PRId64 "; it must be >= 1", who,
                        q->sh < 1 ? q->sh : q->sw);
    bool bad_h = q->ph < 0 || q->ph > q->kh / 2;
    if (bad_h || q->pw < 0 || q->pw > q->kw / 2)
        return TG_ERROR(ctx, TG_EINVAL, "%s: padding %" PRId64 " must be between 0 and half the "
                        "kernel size %" PRId64, who, bad_h ? q->ph : q->pw, bad_h ? q->kh : q->kw);
    return TG_OK;
}

/* q->oh and q->ow, or an error naming input, kernel and padding. */
static tg_status pool_output_size(tg_ctx *ctx, const char *who, bool one, pgeom *q)
{
    char in[48], k[48], p[48], pd[48];
    int64_t padded_h, padded_w; /* 2 p <= k, so 2 p cannot overflow */
    pair(in, sizeof in, one, q->h, q->w);
    pair(p, sizeof p, one, q->ph, q->pw);
    if (__builtin_add_overflow(q->h, 2 * q->ph, &padded_h) ||
        __builtin_add_overflow(q->w, 2 * q->pw, &padded_w))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: input %s with padding %s on each side is larger "
                        "than can be addressed", who, in, p);
    if (q->kh > padded_h || q->kw > padded_w)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: kernel %s is larger than the padded input %s "
                        "(input %s, padding %s): the output would be empty", who,
                        pair(k, sizeof k, one, q->kh, q->kw),
                        pair(pd, sizeof pd, one, padded_h, padded_w), in, p);
    q->oh = (padded_h - q->kh) / q->sh + 1;
    q->ow = (padded_w - q->kw) / q->sw + 1;
    return TG_OK;
}

static tg_status pool_geometry(tg_ctx *ctx, const tg_node *node, pgeom *q)
{
    const char *who = node->op->name;
    const tg_tensor *x = node->in[0];
    bool one = pool_1d(node);
    if (x->ndim != (one ? 3 : 4))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: input %s should be %s", who, tg__shape_s(x),
                        one ? "(N, C, L)" : "(N, C, H, W)");
    read_pool_geometry(node, q);
    if (check_pool_attrs(ctx, who, q))
        return tg_errcode(ctx);
    if (x->shape[1] == 0 || q->h == 0 || q->w == 0)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: input %s is empty outside its batch dimension; as "
                        "in PyTorch, only N may be 0", who, tg__shape_s(x));
    if (pool_output_size(ctx, who, one, q))
        return tg_errcode(ctx);
    q->planes = x->shape[0] * x->shape[1]; /* no more than x's element count, or 0 */
    q->area = (double)q->kh * (double)q->kw;
    return TG_OK;
}

/* The in-bounds part of output (oy, ox)'s window: rows [y0, y1), cols [x0, x1).
 * Never empty, as padding is at most half the kernel. */
static void window(const pgeom *q, int64_t oy, int64_t ox, int64_t *y0, int64_t *y1, int64_t *x0,
                   int64_t *x1)
{
    int64_t top = oy * q->sh - q->ph, left = ox * q->sw - q->pw;
    *y0 = top > 0 ? top : 0;
    *y1 = top + q->kh < q->h ? top + q->kh : q->h;
    *x0 = left > 0 ? left : 0;
    *x1 = left + q->kw < q->w ? left + q->kw : q->w;
}

/* y = each window's maximum; arg (when not NULL) its flat index in the plane. */
static void max_forward(const pgeom *q, const tg_tensor *x, tg_tensor *y, int64_t *arg)
{
    TG__DISPATCH(x->dtype, T, {
        const T *xs = x->data;
        T *o = y->data;
        for (int64_t p = 0; p < q->planes; p++)
            for (int64_t oy = 0; oy < q->oh; oy++)
                for (int64_t ox = 0; ox < q->ow; ox++) {
                    int64_t at = (p * q->oh + oy) * q->ow + ox, best = -1, y0, y1, x0, x1;
                    T top = 0;
                    window(q, oy, ox, &y0, &y1, &x0, &x1);
                    for (int64_t yy = y0; yy < y1; yy++)
                        for (int64_t xx = x0; xx < x1; xx++) {
                            T v = xs[(p * q->h + yy) * q->w + xx];
                            if (best < 0 || v > top || isnan(v)) {
                                top = v;
                                best = yy * q->w + xx;
                            }
                        }
                    o[at] = top;
                    if (arg)
                        arg[at] = best;
                }
    });
}

/* y = each window's sum (in double) over the kernel's area. */
static void avg_forward(const pgeom *q, const tg_tensor *x, tg_tensor *y)
{
    TG__DISPATCH(x->dtype, T, {
        const T *xs = x->data;
        T *o = y->data;
        for (int64_t p = 0; p < q->planes; p++)
            for (int64_t oy = 0; oy < q->oh; oy++)
                for (int64_t ox = 0; ox < q->ow; ox++) {
                    int64_t y0, y1, x0, x1;
                    double acc = 0;
                    window(q, oy, ox, &y0, &y1, &x0, &x1);
                    for (int64_t yy = y0; yy < y1; yy++)
                        for (int64_t xx = x0; xx < x1; xx++)
                            acc += xs[(p * q->h + yy) * q->w + xx];
                    o[(p * q->oh + oy) * q->ow + ox] = (T)(acc / q->area);
                }
    });
}

static tg_tensor *pool_forward(tg_ctx *ctx, tg_node *node)
{
    pgeom q;
    if (pool_geometry(ctx, node, &q))
        return NULL;
    tg_tensor *x = node->in[0];
    tg_node_value_unused(node, 0);
    tg_node_value_unused(node, -1);
    int64_t shape[4] = {x->shape[0], x->shape[1], q.oh, q.ow};
    if (pool_1d(node))
        shape[2] = q.ow;
    tg_tensor *y = tg_empty(ctx, x->dtype, x->ndim, shape);
    if (!y)
        return NULL;
    if (!pool_max(node)) {
        avg_forward(&q, x, y);
        return y;
    }
    int64_t *arg = NULL; /* y's element count is at most INT64_MAX / 8 */
    if (node->recording && !(arg = tg_scratch(ctx, (size_t)y->numel * sizeof *arg, false)))
        return NULL;
    max_forward(&q, x, y, arg);
    node->aux = arg;
    return y;
}

/* dx[argmax] += g */
static void max_backward(const pgeom *q, const int64_t *arg, const tg_tensor *gout, tg_tensor *gx)
{
    TG__DISPATCH(gout->dtype, T, {
        const T *g = gout->data;
        T *d = gx->data;
        for (int64_t p = 0; p < q->planes; p++)
            for (int64_t i = 0; i < q->oh * q->ow; i++)
                d[p * q->h * q->w + arg[p * q->oh * q->ow + i]] += g[p * q->oh * q->ow + i];
    });
}

/* dx += g / (kh kw) over each window */
static void avg_backward(const pgeom *q, const tg_tensor *gout, tg_tensor *gx)
{
    TG__DISPATCH(gout->dtype, T, {
        const T *g = gout->data;
        T *d = gx->data;
        for (int64_t p = 0; p < q->planes; p++)
            for (int64_t oy = 0; oy < q->oh; oy++)
                for (int64_t ox = 0; ox < q->ow; ox++) {
                    int64_t y0, y1, x0, x1;
                    T share = (T)((double)g[(p * q->oh + oy) * q->ow + ox] / q->area);
                    window(q, oy, ox, &y0, &y1, &x0, &x1);
                    for (int64_t yy = y0; yy < y1; yy++)
                        for (int64_t xx = x0; xx < x1; xx++)
                            d[(p * q->h + yy) * q->w + xx] += share;
                }
    });
}

static tg_status pool_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    pgeom q;
    if (pool_geometry(ctx, node, &q))
        return tg_errcode(ctx);
    if (!pool_max(node)) {
        avg_backward(&q, gout, gin[0]);
        return TG_OK;
    }
    if (!node->aux)
        return TG_ERROR(ctx, TG_EINTERNAL, "%s: the arg-max indices were not saved",
                        node->op->name);
    max_backward(&q, node->aux, gout, gin[0]);
    return TG_OK;
}

static int pool_print(const tg_node *node, char *buf, size_t size)
{
    const tg_pool_attrs *a = node->attrs;
    if (pool_1d(node) || (a->kernel[0] == a->kernel[1] && a->stride[0] == a->stride[1] &&
                          a->padding[0] == a->padding[1]))
        return snprintf(buf, size, "kernel=%" PRId64 " stride=%" PRId64 " pad=%" PRId64,
                        a->kernel[0], a->stride[0], a->padding[0]);
    return snprintf(buf, size, "kernel=(%" PRId64 ", %" PRId64 ") stride=(%" PRId64 ", %" PRId64
                    ") pad=(%" PRId64 ", %" PRId64 ")", a->kernel[0], a->kernel[1], a->stride[0],
                    a->stride[1], a->padding[0], a->padding[1]);
}

/* Distinct values, far apart next to eps, so no window has a tie and no
 * difference quotient crosses from one maximum to another. */
static tg_tensor *distinct(tg_ctx *ctx, int ndim, const int64_t *shape)
{
    tg_tensor *t = tg__sample_rand(ctx, ndim, shape, 0, 1, true);
    for (int64_t i = 0; t && i < t->numel; i++)
        tg_set(t, i, (double)((i * 7919 + 13) % t->numel) * 0.05 - 1.0);
    return t;
}

typedef struct pool_case { int64_t x[4]; tg_pool_attrs a; const char *desc; } pool_case;

static int pool_sample_from(tg_ctx *ctx, const pool_case *cs, int ncases, int nd, int index,
                            tg_sample *s)
{
    if (index >= ncases)
        return 0;
    s->n_in = 1;
    s->in[0] = distinct(ctx, nd, cs[index].x);
    memcpy(s->attrs, &cs[index].a, sizeof cs[index].a);
    snprintf(s->desc, sizeof s->desc, "%s", cs[index].desc);
    return s->in[0] ? 1 : tg_errcode(ctx);
}

static int pool2d_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const pool_case cases[] = {
        {{2, 2, 4, 4}, {{2, 2}, {2, 2}, {0, 0}}, "2x2 stride 2"},
        {{1, 3, 5, 5}, {{3, 3}, {2, 2}, {1, 1}}, "3x3 stride 2 pad 1"},
        {{1, 1, 5, 6}, {{2, 3}, {1, 2}, {1, 0}}, "uneven kernel, overlapping"},
    };
    return pool_sample_from(ctx, cases, 3, 4, index, s);
}

static int pool1d_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const pool_case cases[] = {
        {{2, 1, 8}, {{2}, {2}, {0}}, "k 2 stride 2"},
        {{1, 3, 7}, {{3}, {2}, {1}}, "k 3 stride 2 pad 1, odd length"},
        {{1, 2, 5}, {{2}, {1}, {1}}, "overlapping windows"},
    };
    return pool_sample_from(ctx, cases, 3, 3, index, s);
}

#define POOL_OP(NAME, SAMPLE)                                                            \
    const tg_op tg__op_##NAME = {.name = #NAME, .min_in = 1, .max_in = 1,                \
                                 .attr_size = sizeof(tg_pool_attrs),                     \
                                 .forward = pool_forward, .vjp = pool_vjp,               \
                                 .print_attrs = pool_print, .sample = SAMPLE};           \
    tg_tensor *tg_##NAME##_ex(tg_ctx *ctx, tg_tensor *x, int64_t kernel, int64_t stride, \
                              int64_t padding)                                           \
    {                                                                                    \
        tg_pool_attrs a = {{kernel, kernel}, {stride, stride}, {padding, padding}};      \
        return tg_apply(ctx, &tg__op_##NAME, &x, 1, &a);                                 \
    }                                                                                    \
    tg_tensor *tg_##NAME(tg_ctx *ctx, tg_tensor *x, int64_t kernel)                      \
    {                                                                                    \
        return tg_##NAME##_ex(ctx, x, kernel, kernel, 0);                                \
    }

POOL_OP(max_pool1d, pool1d_sample)
POOL_OP(max_pool2d, pool2d_sample)
POOL_OP(avg_pool1d, pool1d_sample)
POOL_OP(avg_pool2d, pool2d_sample)

/* ---------------------------------------------------------------- global_avg_pool */

static tg_tensor *gap_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *x = node->in[0];
    if (x->ndim < 3) {
        TG_ERROR(ctx, TG_ESHAPE, "global_avg_pool: input %s should be (N, C, ...) with at least "
                 "one spatial dimension", tg__shape_s(x));
        return NULL;
    }
    tg_node_value_unused(node, 0);
    tg_node_value_unused(node, -1);
    tg_tensor *y = tg_empty(ctx, x->dtype, TG_SHAPE(x->shape[0], x->shape[1]));
    if (!y)
        return NULL;
    int64_t planes = y->numel, s = planes ? x->numel / planes : 0;
    TG__DISPATCH(x->dtype, T, {
        const T *xs = x->data;
        T *o = y->data;
        for (int64_t p = 0; p < planes; p++) {
            double acc = 0;
            for (int64_t k = 0; k < s; k++)
                acc += xs[p * s + k];
            o[p] = s ? (T)(acc / (double)s) : (T)NAN;
        }
    });
    return y;
}

static tg_status gap_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *x = node->in[0];
    int64_t planes = gout->numel, s = planes ? x->numel / planes : 0;
    TG__DISPATCH(x->dtype, T, {
        const T *g = gout->data;
        T *gx = gin[0]->data;
        for (int64_t p = 0; p < planes && s > 0; p++) {
            T share = (T)((double)g[p] / (double)s);
            for (int64_t k = 0; k < s; k++)
                gx[p * s + k] += share;
        }
    });
    return TG_OK;
}

static int gap_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const int64_t shapes[][4] = {{2, 3, 4, 4}, {1, 2, 5}, {2, 1, 1, 3}};
    static const int nd[] = {4, 3, 4};
    if (index >= 3)
        return 0;
    s->n_in = 1;
    s->in[0] = tg__sample_rand(ctx, nd[index], shapes[index], -1, 1, true);
    snprintf(s->desc, sizeof s->desc, "%s", index == 0 ? "2-D" : index == 1 ? "1-D" : "size-1 dims");
    return s->in[0] ? 1 : tg_errcode(ctx);
}

const tg_op tg__op_global_avg_pool = {.name = "global_avg_pool", .min_in = 1, .max_in = 1,
                                      .forward = gap_forward, .vjp = gap_vjp,
                                      .sample = gap_sample};

tg_tensor *tg_global_avg_pool(tg_ctx *ctx, tg_tensor *x)
{
    return tg_apply(ctx, &tg__op_global_avg_pool, &x, 1, NULL);
}
