/*
 * batchnorm.c: batch normalisation over (N, C, S), S the product of the
 * spatial dimensions (1 for (N, C)); statistics per channel over M = N S
 * values.
 *
 *   batch statistics: mu = mean x, var = mean (x - mu)^2 (biased), r = 1 / sqrt(var + eps)
 *   running statistics (eval mode): mu = running_mean, r = 1 / sqrt(running_var + eps)
 *   xh = (x - mu) r;  y = w xh + b
 *   vjp, batch statistics: d = g w;  dx += r / M (M d - sum d - xh sum d xh)
 *   vjp, running statistics: dx += g w r
 *   both: dw += sum g xh, db += sum g
 * In training mode the running statistics move towards the batch's with
 * the unbiased variance: run = (1 - momentum) run + momentum stat.
 * Forward saves mu and r (C) and whether the batch's were used. Every sum
 * (the statistics and the vjp's per-channel sums) runs in double, over
 * lanes in an order fixed by the shape; channels run in parallel, each on
 * one thread, so the thread count changes nothing. The vjp writes first
 * contributions (TG_OP_VJP_WRITES); it reads a channel's g whole before
 * writing that channel's dx, so dx may reuse g's buffer (TG_OP_VJP_INPLACE). The
 * running statistics are written in place and marked dirty; the vjp reads
 * them only in eval mode (through mu and r), so in training mode their
 * later updates (a second forward) do not block backward, as in PyTorch.
 * Degenerate attributes are TG_EINVAL: eps <= 0, infinite or NaN; momentum
 * outside [0, 1] or NaN. Batch statistics need more than one value per
 * channel (N = 0 included); an input without channels gives an empty output.
 */
#include "ops_impl.h"

#include <math.h>

typedef struct bn {
    tg_tensor *x, *w, *b, *rm, *rv;
    int64_t n, c, s;
    int64_t m; /* values per channel, n s; saturated at INT64_MAX (possible only when c = 0) */
} bn;

static void unpack(const tg_node *node, bn *v)
{
    const tg_batch_norm_attrs *a = node->attrs;
    int k = 1;
    memset(v, 0, sizeof *v);
    v->x = node->in[0];
    if (a->has & TG_BN_WEIGHT)
        v->w = node->in[k++];
    if (a->has & TG_BN_BIAS)
        v->b = node->in[k++];
    if (a->has & TG_BN_RUNNING) {
        v->rm = node->in[k++];
        v->rv = node->in[k++];
    }
    v->n = v->x->shape[0];
    v->c = v->x->ndim > 1 ? v->x->shape[1] : 0;
    v->s = 1;
    bool over = false;
    for (int d = 2; d < v->x->ndim; d++)
        over |= __builtin_mul_overflow(v->s, v->x->shape[d], &v->s);
    if (over || __builtin_mul_overflow(v->n, v->s, &v->m))
        v->m = INT64_MAX;
}

static tg_status check_attrs(tg_ctx *ctx, const tg_batch_norm_attrs *a)
{
    if (!(a->eps > 0 && isfinite(a->eps)))
        return TG_ERROR(ctx, TG_EINVAL, "batch_norm: eps = %s; it must be positive and finite",
                        tg__num(a->eps));
    if (!(a->momentum >= 0 && a->momentum <= 1))
        return TG_ERROR(ctx, TG_EINVAL, "batch_norm: momentum = %s is outside [0, 1]",
                        tg__num(a->momentum));
    return TG_OK;
}

static tg_status check(tg_ctx *ctx, const tg_node *node, const bn *v)
{
    const tg_batch_norm_attrs *a = node->attrs;
    int want = 1 + !!(a->has & TG_BN_WEIGHT) + !!(a->has & TG_BN_BIAS) +
               2 * !!(a->has & TG_BN_RUNNING);
    if (node->n_in != want || (a->has & ~(TG_BN_WEIGHT | TG_BN_BIAS | TG_BN_RUNNING)))
        return TG_ERROR(ctx, TG_EINVAL, "batch_norm: %d inputs do not match the flags %d",
                        node->n_in, a->has);
    if (v->x->ndim < 2 || v->x->ndim > 4)
        return TG_ERROR(ctx, TG_ESHAPE, "batch_norm: input %s should be (N, C), (N, C, L) or "
                        "(N, C, H, W)", tg__shape_s(v->x));
    if (check_attrs(ctx, a))
        return tg_errcode(ctx);
    const tg_tensor *per_c[4] = {v->w, v->b, v->rm, v->rv};
    static const char *names[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++) {
        if (!per_c[i])
            continue;
        if (tg__same_dtype(ctx, "batch_norm", v->x, per_c[i]))
            return tg_errcode(ctx);
        if (per_c[i]->ndim != 1 || per_c[i]->shape[0] != v->c)
            return TG_ERROR(ctx, TG_ESHAPE, "batch_norm: %s is %s but the input has %lld channels",
                            names[i], tg__shape_s(per_c[i]), (long long)v->c);
    }
    if (v->rm && (v->rm->requires_grad || v->rv->requires_grad))
        return TG_ERROR(ctx, TG_EINVAL, "batch_norm: running statistics cannot require grad");
    return TG_OK;
}

/* Accumulators per lane: eight independent double sums let the compiler
 * vectorise and pipeline a channel's reductions (the order of summation
 * depends on the shape only, never on the thread count). */
#define LANES 8

/* The elementwise rows of a channel, one body for float and double, with
 * restrict pointers so that they vectorise: y = w ((x - mu) r) + b (w
 * NULL: (x - mu) r + b), and dx = r (g w - mean_d - xh mean_dxh) with batch
 * statistics or g w r with running ones, written or added. (omp simd: at
 * -O2 the compiler vectorises only loops it is told to.) */
#define BN_ROWS(SUF, T)                                                                      \
    static void norm_row_##SUF(const T *restrict x, T *restrict y, int64_t n, T mc, T rc,    \
                               const T *w, T bc)                                             \
    {                                                                                        \
        if (w) {                                                                             \
            const T wc = *w;                                                                 \
            _Pragma("omp simd")                                                              \
            for (int64_t k = 0; k < n; k++)                                                  \
                y[k] = wc * ((x[k] - mc) * rc) + bc;                                         \
        } else {                                                                             \
            _Pragma("omp simd")                                                              \
            for (int64_t k = 0; k < n; k++)                                                  \
                y[k] = (x[k] - mc) * rc + bc;                                                \
        }                                                                                    \
    }                                                                                        \
    static void dx_row_##SUF(const T *restrict x, const T *g, T *dx, /* g, dx: may alias */  \
                             int64_t n, const T *coef, bool batch, bool add)                 \
    {                                                                                        \
        const T mc = coef[0], rc = coef[1], wc = coef[2], md = coef[3], mdxh = coef[4];      \
        if (batch && add)                                                                    \
            _Pragma("omp simd")                                                              \
            for (int64_t k = 0; k < n; k++)                                                  \
                dx[k] += rc * (g[k] * wc - md - ((x[k] - mc) * rc) * mdxh);                  \
        else if (batch)                                                                      \
            _Pragma("omp simd")                                                              \
            for (int64_t k = 0; k < n; k++)                                                  \
                dx[k] = rc * (g[k] * wc - md - ((x[k] - mc) * rc) * mdxh);                   \
        else if (add)                                                                        \
            _Pragma("omp simd")                                                              \
            for (int64_t k = 0; k < n; k++)                                                  \
                dx[k] += g[k] * wc * rc;                                                     \
        else                                                                                 \
            _Pragma("omp simd")                                                              \
            for (int64_t k = 0; k < n; k++)                                                  \
                dx[k] = g[k] * wc * rc;                                                      \
    }
BN_ROWS(f32, float)
BN_ROWS(f64, double)
#define norm_row(T) _Generic((T)0, float: norm_row_f32, double: norm_row_f64)
#define dx_row(T) _Generic((T)0, float: dx_row_f32, double: dx_row_f64)

/*
 * Channel c: its statistics, then y over the channel while it is still in
 * cache. With batch statistics the mean and the centred sum of squares
 * come from one pass of sums of x - k in double, k the channel's first
 * value (0 when not finite): with k inside the data the shifted sums do
 * not cancel as raw sums of squares would. With running statistics in
 * training mode (update), they also move.
 */
static void bn_channel(const bn *v, const tg_batch_norm_attrs *a, bool batch, bool update,
                       tg_tensor *mu, tg_tensor *r, tg_tensor *y, int64_t c)
{
    const int64_t nc = v->c, ns = v->s, nn = v->n;
    const double dm = (double)v->m;
    TG__DISPATCH(v->x->dtype, T, {
        const T *xs = v->x->data;
        const T *w = v->w ? v->w->data : NULL, *b = v->b ? v->b->data : NULL;
        T *mus = mu->data, *rs = r->data, *o = y->data;
        T *rm = v->rm ? v->rm->data : NULL, *rv = v->rv ? v->rv->data : NULL;
        if (batch) {
            double k0 = (double)xs[c * ns], s1[LANES] = {0}, s2[LANES] = {0};
            if (!isfinite(k0))
                k0 = 0;
            for (int64_t i = 0; i < nn; i++) {
                const T *row = xs + (i * nc + c) * ns;
                int64_t k = 0;
                for (; k + LANES <= ns; k += LANES)
                    for (int l = 0; l < LANES; l++) {
                        double d = (double)row[k + l] - k0;
                        s1[l] += d;
                        s2[l] += d * d;
                    }
                for (; k < ns; k++) {
                    double d = (double)row[k] - k0;
                    s1[0] += d;
                    s2[0] += d * d;
                }
            }
            for (int l = 1; l < LANES; l++) {
                s1[0] += s1[l];
                s2[0] += s2[l];
            }
            double shift = s1[0] / dm, mean = k0 + shift;
            double sq = s2[0] - s1[0] * shift; /* sum (x - mean)^2 */
            if (sq < 0) /* rounding, when every value is about the same */
                sq = 0;
            mus[c] = (T)mean;
            rs[c] = (T)(1.0 / sqrt(sq / dm + a->eps));
            if (update) {
                rm[c] = (T)((1 - a->momentum) * (double)rm[c] + a->momentum * mean);
                rv[c] = (T)((1 - a->momentum) * (double)rv[c] + a->momentum * sq / (dm - 1));
            }
        } else {
            mus[c] = rm[c];
            rs[c] = (T)(1.0 / sqrt((double)rv[c] + a->eps));
        }
        const T bc = b ? b[c] : 0;
        for (int64_t i = 0; i < nn; i++)
            norm_row(T)(xs + (i * nc + c) * ns, o + (i * nc + c) * ns, ns, mus[c], rs[c],
                        w ? w + c : NULL, bc);
    });
}

static void bn_kernel(const bn *v, const tg_batch_norm_attrs *a, bool batch, tg_tensor *mu,
                      tg_tensor *r, tg_tensor *y)
{
    bool update = batch && v->rm;
    TG__PAR_FOR(v->x->numel >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
    for (int64_t c = 0; c < v->c; c++)
        bn_channel(v, a, batch, update, mu, r, y, c););
    if (update) {
        tg_mark_dirty(v->rm);
        tg_mark_dirty(v->rv);
    }
}

/* Which inputs the vjp never reads: the bias, the output, and the running
 * statistics when batch statistics were used (it reads the saved ones). */
static void mark_unused(tg_node *node, const bn *v, bool batch)
{
    int k = 1 + !!v->w;
    tg_node_value_unused(node, -1);
    if (v->b)
        tg_node_value_unused(node, k++);
    if (v->rm && batch) {
        tg_node_value_unused(node, k);
        tg_node_value_unused(node, k + 1);
    }
}

static tg_tensor *bn_forward(tg_ctx *ctx, tg_node *node)
{
    const tg_batch_norm_attrs *a = node->attrs;
    bn v;
    unpack(node, &v);
    if (check(ctx, node, &v))
        return NULL;
    bool batch = tg_training(ctx) || !v.rm;
    if (batch && v.m <= 1) {
        TG_ERROR(ctx, TG_EINVAL, "batch_norm: expected more than 1 value per channel when "
                 "training, got input of size %s", tg__shape_s(v.x));
        return NULL;
    }
    tg_tensor *y = tg_empty(ctx, v.x->dtype, v.x->ndim, v.x->shape);
    tg_tensor *mu = tg_empty(ctx, v.x->dtype, TG_SHAPE(v.c));
    tg_tensor *r = tg_empty(ctx, v.x->dtype, TG_SHAPE(v.c));
    bool *mode = tg_scratch(ctx, sizeof(bool), false);
    if (!y || !mu || !r || !mode)
        return NULL;
    *mode = batch;
    node->aux = mode;
    mark_unused(node, &v, batch);
    if (v.x->numel == 0) /* no channels, or no values in eval mode: nothing to do */
        return y;
    bn_kernel(&v, a, batch, mu, r, y);
    if (node->recording && (!tg_node_save(ctx, node, mu) || !tg_node_save(ctx, node, r)))
        return NULL;
    return y;
}

/* What the vjp of one channel needs besides the node. */
typedef struct bn_grads {
    const tg_tensor *g;
    tg_tensor *gx, *gw, *gb;
    bool batch, add_x, add_w, add_b;
} bn_grads;

/*
 * Channel c: sum g and sum g xh in one pass (double lanes), then dx in a
 * second. Eval mode without dw and db needs no sums.
 */
static void bn_vjp_channel(const bn *v, const tg_node *node, const bn_grads *q, int64_t c)
{
    const int64_t nc = v->c, ns = v->s, nn = v->n;
    const double m = (double)v->m;
    const bool batch = q->batch;
    TG__DISPATCH(v->x->dtype, T, {
        const T *xs = v->x->data, *g = q->g->data;
        const T *mus = node->saved[0]->data, *rs = node->saved[1]->data;
        const T mc = mus[c], rc = rs[c], wc = v->w ? ((const T *)v->w->data)[c] : 1;
        double sum_g = 0, sum_gxh = 0; /* sums of g and g xh over the channel */
        if (batch || q->gw || q->gb) {
            double s1[LANES] = {0}, s2[LANES] = {0};
            for (int64_t i = 0; i < nn; i++) {
                const T *xr = xs + (i * nc + c) * ns, *gr = g + (i * nc + c) * ns;
                int64_t j = 0;
                for (; j + LANES <= ns; j += LANES)
                    for (int l = 0; l < LANES; l++) {
                        s1[l] += (double)gr[j + l];
                        s2[l] += (double)gr[j + l] * (double)((xr[j + l] - mc) * rc);
                    }
                for (; j < ns; j++) {
                    s1[0] += (double)gr[j];
                    s2[0] += (double)gr[j] * (double)((xr[j] - mc) * rc);
                }
            }
            for (int l = 0; l < LANES; l++) {
                sum_g += s1[l];
                sum_gxh += s2[l];
            }
        }
        if (q->gw) {
            T *dw = q->gw->data;
            dw[c] = q->add_w ? dw[c] + (T)sum_gxh : (T)sum_gxh;
        }
        if (q->gb) {
            T *db = q->gb->data;
            db[c] = q->add_b ? db[c] + (T)sum_g : (T)sum_g;
        }
        if (q->gx) {
            /* with d = g w: sum d = w sum_g and sum d xh = w sum_gxh */
            const T coef[5] = {mc, rc, wc, (T)(wc * sum_g / m), (T)(wc * sum_gxh / m)};
            for (int64_t i = 0; i < nn; i++) {
                int64_t at = (i * nc + c) * ns;
                dx_row(T)(xs + at, g + at, (T *)q->gx->data + at, ns, coef, batch, q->add_x);
            }
        }
    });
}

static tg_status bn_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    (void)ctx;
    bn v;
    unpack(node, &v);
    int k = 1, iw = 0, ib = 0;
    bn_grads q = {.g = gout, .gx = gin[0], .batch = *(const bool *)node->aux};
    if (v.w)
        q.gw = gin[iw = k++];
    if (v.b)
        q.gb = gin[ib = k++];
    q.add_x = q.gx && tg_vjp_adds(node, 0);
    q.add_w = q.gw && tg_vjp_adds(node, iw);
    q.add_b = q.gb && tg_vjp_adds(node, ib);
    if (v.x->numel == 0) { /* channels but no values: dw and db are sums over nothing */
        if (q.gw && !q.add_w)
            memset(q.gw->data, 0, (size_t)q.gw->numel * tg_dtype_size(q.gw->dtype));
        if (q.gb && !q.add_b)
            memset(q.gb->data, 0, (size_t)q.gb->numel * tg_dtype_size(q.gb->dtype));
        return TG_OK;
    }
    TG__PAR_FOR(v.x->numel >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
    for (int64_t c = 0; c < v.c; c++)
        bn_vjp_channel(&v, node, &q, c););
    return TG_OK;
}

static int bn_print(const tg_node *node, char *buf, size_t size)
{
    const tg_batch_norm_attrs *a = node->attrs;
    return snprintf(buf, size, "momentum=%s eps=%s%s%s", tg__num(a->momentum), tg__num(a->eps),
                    a->has & TG_BN_WEIGHT ? " affine" : "",
                    node->aux && !*(const bool *)node->aux ? " running stats" : "");
}

static int bn_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const struct { int nd; int64_t x[4]; int has; bool training; const char *desc; } cases[] = {
        {2, {4, 3}, TG_BN_WEIGHT | TG_BN_BIAS | TG_BN_RUNNING, true, "(N, C) training, affine"},
        {3, {2, 3, 4}, 0, true, "(N, C, L) training, plain"},
        {4, {2, 2, 3, 2}, TG_BN_WEIGHT | TG_BN_BIAS, true, "(N, C, H, W) training, affine"},
        {2, {4, 3}, TG_BN_WEIGHT | TG_BN_BIAS | TG_BN_RUNNING, false, "(N, C) eval, affine"},
        {4, {1, 2, 2, 2}, TG_BN_RUNNING | TG_BN_WEIGHT, false, "(N, C, H, W) eval, batch of 1"},
        {4, {1, 2, 2, 2}, TG_BN_BIAS, true, "batch of 1, several pixels"},
    };
    if (index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    int64_t c = cases[index].x[1];
    int has = cases[index].has;
    s->n_in = 0;
    s->in[s->n_in++] = tg__sample_rand(ctx, cases[index].nd, cases[index].x, -2, 2, true);
    if (has & TG_BN_WEIGHT)
        s->in[s->n_in++] = tg__sample_rand(ctx, TG_SHAPE(c), 0.5, 1.5, true);
    if (has & TG_BN_BIAS)
        s->in[s->n_in++] = tg__sample_rand(ctx, TG_SHAPE(c), -1, 1, true);
    if (has & TG_BN_RUNNING) {
        s->in[s->n_in++] = tg__sample_rand(ctx, TG_SHAPE(c), -0.5, 0.5, false);
        s->in[s->n_in++] = tg__sample_rand(ctx, TG_SHAPE(c), 0.5, 2, false);
    }
    tg_batch_norm_attrs a = {0.1, 1e-5, has};
    memcpy(s->attrs, &a, sizeof a);
    s->training = cases[index].training;
    snprintf(s->desc, sizeof s->desc, "%s", cases[index].desc);
    return s->in[s->n_in - 1] ? 1 : tg_errcode(ctx);
}

const tg_op tg__op_batch_norm = {.name = "batch_norm", .min_in = 1, .max_in = 5,
                                 .attr_size = sizeof(tg_batch_norm_attrs), .forward = bn_forward,
                                 .vjp = bn_vjp, .print_attrs = bn_print, .sample = bn_sample,
                                 .flags = TG_OP_VJP_WRITES | TG_OP_VJP_INPLACE};

tg_tensor *tg_batch_norm(tg_ctx *ctx, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                         tg_tensor *running_mean, tg_tensor *running_var, double momentum,
                         double eps)
{
    TG__GUARD(ctx, NULL);
    if (!running_mean != !running_var) {
        TG_ERROR(ctx, TG_EINVAL, "batch_norm: give both running_mean and running_var, or neither");
        return NULL;
    }
    tg_batch_norm_attrs a = {momentum, eps, 0};
    tg_tensor *in[5] = {x};
    int n = 1;
    if (weight) {
        a.has |= TG_BN_WEIGHT;
        in[n++] = weight;
    }
    if (bias) {
        a.has |= TG_BN_BIAS;
        in[n++] = bias;
    }
    if (running_mean) {
        a.has |= TG_BN_RUNNING;
        in[n++] = running_mean;
        in[n++] = running_var;
    }
    return tg_apply(ctx, &tg__op_batch_norm, in, n, &a);
}
