/*
 * loss.c: mse, bce, bce_with_logits and cross_entropy. Each returns a
 * scalar; s below is 1/M for the mean over M terms and 1 for the sum.
 *
 *   mse:  L = s sum (x - y)^2                  dx += 2 s g (x - y),  dy -= the same
 *   bce:  L = -s sum y lp + (1 - y) lq, lp = max(log p, -100), lq = max(log(1 - p), -100)
 *         dp += s g (p - y) / max(p (1 - p), 1e-12)    dy += s g (lq - lp)   (PyTorch's)
 *   bce_with_logits: L = s sum max(x, 0) - x y + log(1 + e^-|x|)
 *         dx += s g (sigmoid(x) - y)           dy -= s g x
 *   cross_entropy over classes (axis 1): L = -s sum_samples sum_c t_c log softmax(z)_c
 *         dz += g (softmax(z) - t) / M         dt -= s g log softmax(z)  (probability targets)
 * Sums run in double. Class-index targets become one-hot t.
 */
#include "ops_impl.h"

#include <tgmath.h>

static const char *reduction_name(tg_reduction r) { return r == TG_SUM ? "sum" : "mean"; }

static tg_status check_reduction(tg_ctx *ctx, const tg_node *node)
{
    tg_reduction r = ((const tg_loss_attrs *)node->attrs)->reduction;
    if (r != TG_MEAN && r != TG_SUM)
        return TG_ERROR(ctx, TG_EINVAL, "%s: reduction %d is neither TG_MEAN nor TG_SUM",
                        node->op->name, (int)r);
    return TG_OK;
}

/* s: the factor of each term */
static double scale_of(const tg_node *node, int64_t terms)
{
    tg_reduction r = ((const tg_loss_attrs *)node->attrs)->reduction;
    return r == TG_SUM ? 1.0 : 1.0 / (double)terms;
}

/* The pair (input, target) of an elementwise loss: same dtype and shape. */
static tg_status check_pair(tg_ctx *ctx, const tg_node *node)
{
    const tg_tensor *x = node->in[0], *y = node->in[1];
    if (check_reduction(ctx, node) || tg__same_dtype(ctx, node->op->name, x, y))
        return tg_errcode(ctx);
    if (!tg_same_shape(x, y))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: input is %s but target is %s; they must match",
                        node->op->name, tg__shape_s(x), tg__shape_s(y));
    return TG_OK;
}

static tg_tensor *scalar_out(tg_ctx *ctx, tg_dtype dt, double value)
{
    tg_tensor *out = tg_empty(ctx, dt, 0, NULL);
    if (out)
        tg_set(out, 0, value);
    return out;
}

static int loss_print(const tg_node *node, char *buf, size_t size)
{
    return snprintf(buf, size, "%s", reduction_name(((const tg_loss_attrs *)node->attrs)->reduction));
}

/* ---------------------------------------------------------------- mse, bce, bce_with_logits */

enum { MSE, BCE, BCE_LOGITS };
static const int kinds[] = {MSE, BCE, BCE_LOGITS};

static int kind_of(const tg_node *node) { return *(const int *)node->op->impl; }

static tg_tensor *pair_forward(tg_ctx *ctx, tg_node *node)
{
    const tg_tensor *x = node->in[0], *y = node->in[1];
    if (check_pair(ctx, node))
        return NULL;
    int kind = kind_of(node);
    double acc = 0;
    int64_t bad = -1;
    TG__DISPATCH(x->dtype, T, {
        const T *xs = x->data, *ys = y->data;
        for (int64_t i = 0; i < x->numel; i++) {
            T a = xs[i], t = ys[i];
            if (kind == MSE) {
                acc += (double)((a - t) * (a - t));
            } else if (kind == BCE) {
                if (!(a >= 0 && a <= 1)) { /* NaN too */
                    bad = i;
                    break;
                }
                T lp = fmax(log(a), (T)-100), lq = fmax(log(1 - a), (T)-100);
                acc -= (double)(t * lp + (1 - t) * lq);
            } else {
                acc += (double)(fmax(a, (T)0) - a * t + log1p(exp(-fabs(a))));
            }
        }
    });
    if (bad >= 0) {
        TG_ERROR(ctx, TG_EINVAL, "bce: input[%lld] = %g is not a probability in [0, 1] (use "
                 "bce_with_logits on logits)", (long long)bad, tg_get(x, bad));
        return NULL;
    }
    return scalar_out(ctx, x->dtype, acc * scale_of(node, x->numel));
}

static tg_status pair_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *x = node->in[0], *y = node->in[1];
    int kind = kind_of(node);
    double gs = tg_get(gout, 0) * scale_of(node, x->numel);
    TG__DISPATCH(x->dtype, T, {
        const T *xs = x->data, *ys = y->data;
        T *gx = gin[0] ? gin[0]->data : NULL, *gy = gin[1] ? gin[1]->data : NULL;
        T s = (T)gs;
        for (int64_t i = 0; i < x->numel; i++) {
            T a = xs[i], t = ys[i], dx, dy;
            if (kind == MSE) {
                dx = 2 * s * (a - t);
                dy = -dx;
            } else if (kind == BCE) {
                dx = s * (a - t) / fmax((1 - a) * a, (T)1e-12);
                dy = s * (fmax(log(1 - a), (T)-100) - fmax(log(a), (T)-100));
            } else {
                T sig = a >= 0 ? 1 / (1 + exp(-a)) : exp(a) / (1 + exp(a));
                dx = s * (sig - t);
                dy = -s * a;
            }
            if (gx)
                gx[i] += dx;
            if (gy)
                gy[i] += dy;
        }
    });
    return TG_OK;
}

/* Probabilities stay inside (0.05, 0.95) and targets inside [0, 1], so the
 * clamps and the max(p (1 - p), 1e-12) floor never act. */
static int pair_sample(tg_ctx *ctx, int index, tg_sample *s, double lo, double hi)
{
    static const int64_t shapes[][3] = {{3, 4}, {5}, {2, 1, 3}};
    static const int ndims[] = {2, 1, 3};
    if (index >= 4)
        return 0;
    int k = index % 3;
    s->n_in = 2;
    s->in[0] = tg__sample_rand(ctx, ndims[k], shapes[k], lo, hi, true);
    s->in[1] = tg__sample_rand(ctx, ndims[k], shapes[k], 0, 1, index != 2);
    tg_loss_attrs a = {index == 1 ? TG_SUM : TG_MEAN};
    memcpy(s->attrs, &a, sizeof a);
    snprintf(s->desc, sizeof s->desc, "%s, %s%s", k == 0 ? "matrix" : k == 1 ? "vector" : "3-D",
             reduction_name(a.reduction), index == 2 ? ", constant target" : "");
    return s->in[1] ? 1 : tg_errcode(ctx);
}

static int mse_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    return pair_sample(ctx, index, s, -2, 2);
}

static int bce_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    return pair_sample(ctx, index, s, 0.05, 0.95);
}

#define PAIR_OP(NAME, KIND, SAMPLE)                                                      \
    const tg_op tg__op_##NAME = {.name = #NAME, .min_in = 2, .max_in = 2,                \
                                 .attr_size = sizeof(tg_loss_attrs),                     \
                                 .forward = pair_forward, .vjp = pair_vjp,               \
                                 .print_attrs = loss_print, .sample = SAMPLE,            \
                                 .impl = &kinds[KIND]};                                  \
    tg_tensor *tg_##NAME(tg_ctx *ctx, tg_tensor *x, tg_tensor *y, tg_reduction reduction) \
    {                                                                                    \
        tg_loss_attrs a = {reduction};                                                   \
        tg_tensor *in[2] = {x, y};                                                       \
        return tg_apply(ctx, &tg__op_##NAME, in, 2, &a);                                 \
    }

PAIR_OP(mse, MSE, mse_sample)
PAIR_OP(bce, BCE, bce_sample)
PAIR_OP(bce_with_logits, BCE_LOGITS, mse_sample)

/* ---------------------------------------------------------------- cross_entropy */

typedef struct ce_view {
    int64_t n, c, inner; /* logits as (n, c, inner) */
    bool indices;        /* target holds class indices (n, inner) */
} ce_view;

/* Reads the layout; false when the target fits neither way. */
static bool ce_view_of(const tg_tensor *z, const tg_tensor *t, ce_view *v)
{
    v->n = z->shape[0];
    v->c = z->shape[1];
    v->inner = 1;
    for (int d = 2; d < z->ndim; d++)
        v->inner *= z->shape[d];
    bool idx = t->ndim == z->ndim - 1 && t->shape[0] == z->shape[0];
    for (int d = 2; idx && d < z->ndim; d++)
        idx = t->shape[d - 1] == z->shape[d];
    v->indices = !tg_same_shape(z, t);
    return idx || !v->indices;
}

static tg_status ce_check(tg_ctx *ctx, const tg_node *node, ce_view *v)
{
    const tg_tensor *z = node->in[0], *t = node->in[1];
    if (check_reduction(ctx, node) || tg__same_dtype(ctx, "cross_entropy", z, t))
        return tg_errcode(ctx);
    if (z->ndim < 2)
        return TG_ERROR(ctx, TG_ESHAPE, "cross_entropy: logits %s need a batch and a class "
                        "dimension (N, C, ...)", tg__shape_s(z));
    if (!ce_view_of(z, t, v))
        return TG_ERROR(ctx, TG_ESHAPE, "cross_entropy: target %s fits logits %s neither as class "
                        "indices (N, ...) nor as probabilities (N, C, ...)", tg__shape_s(t),
                        tg__shape_s(z));
    if (v->indices) {
        for (int64_t i = 0; i < t->numel; i++) {
            double k = tg_get(t, i);
            if (!(k >= 0 && k < (double)v->c && k == floor(k)))
                return TG_ERROR(ctx, TG_EINVAL, "cross_entropy: target[%lld] = %g is not a "
                                "class index in [0, %lld)", (long long)i, k, (long long)v->c);
        }
        if (node->recording && t->requires_grad)
            return TG_ERROR(ctx, TG_EINVAL, "cross_entropy: class-index targets cannot require "
                            "grad");
    }
    return TG_OK;
}

/* The target's weight for class c of sample (i, k): one-hot or a probability. */
static double target_at(const tg_tensor *t, const ce_view *v, int64_t i, int64_t c, int64_t k)
{
    if (v->indices)
        return (int64_t)tg_get(t, i * v->inner + k) == c ? 1.0 : 0.0;
    return tg_get(t, (i * v->c + c) * v->inner + k);
}

static tg_tensor *ce_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *z = node->in[0], *t = node->in[1];
    ce_view v;
    if (ce_check(ctx, node, &v))
        return NULL;
    tg_tensor *prob = tg_empty(ctx, z->dtype, z->ndim, z->shape);
    tg_tensor *logp = tg_empty(ctx, z->dtype, z->ndim, z->shape);
    if (!prob || !logp)
        return NULL;
    tg__softmax_lines(z->dtype, z->data, prob->data, v.n, v.c, v.inner, false);
    tg__softmax_lines(z->dtype, z->data, logp->data, v.n, v.c, v.inner, true);
    double acc = 0;
    for (int64_t i = 0; i < v.n; i++)
        for (int64_t k = 0; k < v.inner; k++) {
            if (v.indices) {
                int64_t c = (int64_t)tg_get(t, i * v.inner + k);
                acc -= tg_get(logp, (i * v.c + c) * v.inner + k);
                continue;
            }
            for (int64_t c = 0; c < v.c; c++)
                acc -= target_at(t, &v, i, c, k) * tg_get(logp, (i * v.c + c) * v.inner + k);
        }
    if (node->recording && (!tg_node_save(ctx, node, prob) || !tg_node_save(ctx, node, logp)))
        return NULL;
    return scalar_out(ctx, z->dtype, acc * scale_of(node, v.n * v.inner));
}

static tg_status ce_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    const tg_tensor *z = node->in[0], *t = node->in[1];
    const tg_tensor *prob = node->saved[0], *logp = node->saved[1];
    (void)ctx;
    ce_view v;
    ce_view_of(z, t, &v);
    bool mean = ((const tg_loss_attrs *)node->attrs)->reduction == TG_MEAN;
    double m = mean ? (double)(v.n * v.inner) : 1.0, g = tg_get(gout, 0);
    TG__DISPATCH(z->dtype, T, {
        const T *p = prob->data, *lp = logp->data;
        T *gz = gin[0] ? gin[0]->data : NULL, *gt = gin[1] ? gin[1]->data : NULL;
        T tg = (T)g, tm = (T)m;
        for (int64_t i = 0; i < v.n; i++)
            for (int64_t c = 0; c < v.c; c++)
                for (int64_t k = 0; k < v.inner; k++) {
                    int64_t at = (i * v.c + c) * v.inner + k;
                    if (gz) /* (softmax - t) / M: the division last, so g = 1 is exact */
                        gz[at] += tg * (p[at] - (T)target_at(t, &v, i, c, k)) / tm;
                    if (gt)
                        gt[at] -= tg * lp[at] / tm;
                }
    });
    return TG_OK;
}

static int ce_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const int64_t logits[][3] = {{4, 3}, {2, 5}, {2, 3, 2}, {1, 4}};
    static const int nd[] = {2, 2, 3, 2};
    static const char *desc[] = {"class indices, mean", "probabilities, sum",
                                 "indices over a spatial dim", "batch of one, probabilities"};
    if (index >= 4)
        return 0;
    tg_tensor *z = tg__sample_rand(ctx, nd[index], logits[index], -2, 2, true);
    tg_tensor *t = NULL;
    bool probs = index == 1 || index == 3;
    if (z && probs) {
        t = tg__sample_rand(ctx, nd[index], logits[index], 0.1, 1, index == 1);
        for (int64_t i = 0; t && i < z->shape[0]; i++) { /* rows sum to 1 */
            double sum = 0;
            for (int64_t c = 0; c < z->shape[1]; c++)
                sum += tg_get(t, i * z->shape[1] + c);
            for (int64_t c = 0; c < z->shape[1]; c++)
                tg_set(t, i * z->shape[1] + c, tg_get(t, i * z->shape[1] + c) / sum);
        }
    } else if (z) {
        int64_t shape[TG_MAX_DIMS] = {z->shape[0], z->ndim > 2 ? z->shape[2] : 0};
        t = tg_zeros(ctx, TG_F64, z->ndim - 1, shape);
        for (int64_t i = 0; t && i < t->numel; i++)
            tg_set(t, i, (double)((i * 7 + 1) % z->shape[1]));
    }
    if (!t)
        return tg_errcode(ctx);
    s->n_in = 2;
    s->in[0] = z;
    s->in[1] = t;
    tg_loss_attrs a = {index == 1 ? TG_SUM : TG_MEAN};
    memcpy(s->attrs, &a, sizeof a);
    snprintf(s->desc, sizeof s->desc, "%s", desc[index]);
    return 1;
}

const tg_op tg__op_cross_entropy = {.name = "cross_entropy", .min_in = 2, .max_in = 2,
                                    .attr_size = sizeof(tg_loss_attrs), .forward = ce_forward,
                                    .vjp = ce_vjp, .print_attrs = loss_print,
                                    .sample = ce_sample};

tg_tensor *tg_cross_entropy(tg_ctx *ctx, tg_tensor *logits, tg_tensor *target,
                            tg_reduction reduction)
{
    tg_loss_attrs a = {reduction};
    tg_tensor *in[2] = {logits, target};
    return tg_apply(ctx, &tg__op_cross_entropy, in, 2, &a);
}
