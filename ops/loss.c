/*
 * loss.c: mse, bce, bce_with_logits, cross_entropy and nll_loss. Each
 * returns a scalar; s below is 1/M for the mean over M terms and 1 for the
 * sum. The mean over no terms is NaN and the sum 0, as in PyTorch.
 *
 *   mse:  L = s sum (x - y)^2                  dx += 2 s g (x - y),  dy -= the same
 *   bce:  L = -s sum y lp + (1 - y) lq, lp = max(log p, -100), lq = max(log(1 - p), -100)
 *         dp += s g (p - y) / max(p (1 - p), 1e-12)    dy += s g (lq - lp)   (PyTorch's)
 *   bce_with_logits, in PyTorch 1.13's form with m = max(-x, 0):
 *         L = s sum (1 - y) x + m + log(e^-m + e^(-x - m))
 *         dx += s g (sigmoid(x) - y)           dy -= s g x
 *         For finite x the log term is computed as log1p(e^-|x|), its exact
 *         equal; at x = +-inf the literal form gives PyTorch's values (NaN
 *         for x = -inf, and for x = +inf with y = 1).
 *   cross_entropy over classes (axis 1), target t one-hot of int64 class
 *         indices or probabilities of the logits' shape:
 *         L = -s sum_samples sum_c t_c log softmax(z)_c
 *         dz += g (softmax(z) - t) / M         dt -= s g log softmax(z)  (probability targets)
 *   nll_loss on log-probabilities lp (N, C, ...) and int64 class indices k:
 *         L = -s sum_samples lp[k]             dlp[k] -= s g
 * Every sum runs in double, for float32 too. Forward saves what the vjps
 * need (softmax - t, a copy of the indices), so none of them reads an
 * input's values after forward except mse, bce and bce_with_logits, which
 * read both of theirs.
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

/* s: the factor of each term; NaN for the mean over no terms */
static double scale_of(const tg_node *node, int64_t terms)
{
    tg_reduction r = ((const tg_loss_attrs *)node->attrs)->reduction;
    if (r == TG_SUM)
        return 1.0;
    return terms > 0 ? 1.0 / (double)terms : NAN;
}

static tg_tensor *scalar_out(tg_ctx *ctx, tg_dtype dt, double value)
{
    tg_tensor *out = tg_empty(ctx, dt, 0, NULL);
    if (out)
        tg_set(out, 0, value);
    return out;
}

/* The loss of a sum acc over `terms` terms: s acc, except that the sum of
 * nothing is 0 and the mean of nothing NaN (never 0 times NaN). */
static tg_tensor *loss_out(tg_ctx *ctx, const tg_node *node, tg_dtype dt, double acc,
                           int64_t terms)
{
    double s = scale_of(node, terms);
    return scalar_out(ctx, dt, terms > 0 ? acc * s : s == 1.0 ? 0.0 : NAN);
}

static int loss_print(const tg_node *node, char *buf, size_t size)
{
    return snprintf(buf, size, "%s", reduction_name(((const tg_loss_attrs *)node->attrs)->reduction));
}

/* ---------------------------------------------------------------- mse, bce, bce_with_logits */

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

/* bce's inputs and targets must lie in [0, 1] (NaN does not), as in
 * PyTorch; the first one that does not is named. */
static tg_status check_bce_range(tg_ctx *ctx, const tg_tensor *x, const tg_tensor *y)
{
    const tg_tensor *ts[2] = {x, y};
    for (int k = 0; k < 2; k++) {
        int64_t bad = -1;
        TG__DISPATCH(ts[k]->dtype, T, {
            const T *v = ts[k]->data;
            for (int64_t i = 0; i < ts[k]->numel && bad < 0; i++)
                if (!(v[i] >= 0 && v[i] <= 1))
                    bad = i;
        });
        if (bad >= 0 && k == 0)
            return TG_ERROR(ctx, TG_EINVAL, "bce: input[%lld] = %s is not a probability in [0, 1] "
                            "(use bce_with_logits on logits)", (long long)bad,
                            tg__num(tg_get(x, bad)));
        if (bad >= 0)
            return TG_ERROR(ctx, TG_EINVAL, "bce: target[%lld] = %s is outside [0, 1]",
                            (long long)bad, tg__num(tg_get(y, bad)));
    }
    return TG_OK;
}

enum { MSE, BCE, BCE_LOGITS };
static const int kinds[] = {MSE, BCE, BCE_LOGITS};

static int kind_of(const tg_node *node) { return *(const int *)node->op->impl; }

/* One term of each loss, in double. */
static double pair_term(int kind, double a, double t)
{
    if (kind == MSE)
        return (a - t) * (a - t);
    if (kind == BCE)
        return -(t * fmax(log(a), -100.0) + (1 - t) * fmax(log(1 - a), -100.0));
    double m = -a > 0 ? -a : 0; /* max(-x, 0) */
    double lg = isinf(a) ? log(exp(-m) + exp(-a - m)) : log1p(exp(-fabs(a)));
    return (1 - t) * a + m + lg;
}

static tg_tensor *pair_forward(tg_ctx *ctx, tg_node *node)
{
    const tg_tensor *x = node->in[0], *y = node->in[1];
    int kind = kind_of(node);
    if (check_pair(ctx, node) || (kind == BCE && check_bce_range(ctx, x, y)))
        return NULL;
    double acc = 0;
    TG__DISPATCH(x->dtype, T, {
        const T *xs = x->data, *ys = y->data;
        for (int64_t i = 0; i < x->numel; i++)
            acc += pair_term(kind, (double)xs[i], (double)ys[i]);
    });
    tg_node_value_unused(node, -1);
    return loss_out(ctx, node, x->dtype, acc, x->numel);
}

static tg_status pair_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *x = node->in[0], *y = node->in[1];
    int kind = kind_of(node);
    if (x->numel == 0)
        return TG_OK;
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

/* ---------------------------------------------------------------- class losses */

/* Logits or log-probabilities as (n, c, inner); m = n inner samples. */
typedef struct cls_view { int64_t n, c, inner, m; } cls_view;

/* Checks that z is a float (N, C, d...) tensor and reads its view; the
 * sample count can overflow only beside a class dimension of 0. */
static tg_status cls_view_of(tg_ctx *ctx, const char *who, const char *what, const tg_tensor *z,
                             cls_view *v)
{
    if (!tg_dtype_is_float(z->dtype))
        return TG_ERROR(ctx, TG_EDTYPE, "%s: %s are %s; they must be float32 or float64", who,
                        what, tg__tensor_s(z));
    if (z->ndim < 2)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: %s %s need a batch and a class dimension (N, C, ...)",
                        who, what, tg__shape_s(z));
    *v = (cls_view){z->shape[0], z->shape[1], 1, 0};
    bool over = false;
    for (int d = 2; d < z->ndim; d++)
        over |= __builtin_mul_overflow(v->inner, z->shape[d], &v->inner);
    if (over || __builtin_mul_overflow(v->n, v->inner, &v->m))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: %s %s hold more samples than can be addressed", who,
                        what, tg__shape_s(z));
    return TG_OK;
}

/* True when t has the shape of class indices for z: (N, d1, ...). */
static bool index_shape(const tg_tensor *z, const tg_tensor *t)
{
    if (t->ndim != z->ndim - 1 || t->shape[0] != z->shape[0])
        return false;
    for (int d = 2; d < z->ndim; d++)
        if (t->shape[d - 1] != z->shape[d])
            return false;
    return true;
}

/* "[1]" or "[0, 2]": the multi-index of flat element i of t. */
static void position(const tg_tensor *t, int64_t i, char *buf, size_t size)
{
    int64_t idx[TG_MAX_DIMS] = {0};
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = i % t->shape[d];
        i /= t->shape[d];
    }
    size_t len = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < t->ndim && len < size; d++)
        len += (size_t)snprintf(buf + len, size - len, "%s%lld", d ? ", " : "", (long long)idx[d]);
    if (len < size)
        snprintf(buf + len, size - len, "]");
}

/* An int64 target of class indices for z: its shape, then every index in [0, C). */
static tg_status check_indices(tg_ctx *ctx, const char *who, const tg_tensor *z,
                               const tg_tensor *t, const cls_view *v)
{
    if (!index_shape(z, t))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: int64 target %s does not fit %s as class indices; "
                        "they need the shape (N, d1, ...) of the input without its class "
                        "dimension", who, tg__shape_s(t), tg__shape_s(z));
    const int64_t *k = t->data;
    for (int64_t i = 0; i < t->numel; i++)
        if (k[i] < 0 || k[i] >= v->c) {
            char at[24 * TG_MAX_DIMS];
            position(t, i, at, sizeof at);
            return TG_ERROR(ctx, TG_EINVAL, "%s: target%s = %lld is not a class index in [0, %lld)",
                            who, at, (long long)k[i], (long long)v->c);
        }
    return TG_OK;
}

/* Sum of -lp at each sample's class, in double. */
static double picked_sum(const tg_tensor *lp, const int64_t *k, const cls_view *v)
{
    double acc = 0;
    TG__DISPATCH(lp->dtype, T, {
        const T *l = lp->data;
        for (int64_t i = 0; i < v->n; i++)
            for (int64_t j = 0; j < v->inner; j++)
                acc -= (double)l[(i * v->c + k[i * v->inner + j]) * v->inner + j];
    });
    return acc;
}

/* ---------------------------------------------------------------- cross_entropy */

static tg_status ce_check(tg_ctx *ctx, const tg_node *node, cls_view *v)
{
    const tg_tensor *z = node->in[0], *t = node->in[1];
    if (check_reduction(ctx, node) || cls_view_of(ctx, "cross_entropy", "logits", z, v))
        return tg_errcode(ctx);
    if (t->dtype == TG_I64)
        return check_indices(ctx, "cross_entropy", z, t, v);
    if (index_shape(z, t))
        return TG_ERROR(ctx, TG_EDTYPE, "cross_entropy: target %s has the shape of class "
                        "indices; pass the indices as an int64 tensor (probabilities need the "
                        "logits' shape %s)", tg__tensor_s(t), tg__shape_s(z));
    if (!tg_same_shape(z, t))
        return TG_ERROR(ctx, TG_ESHAPE, "cross_entropy: target %s fits logits %s neither as class "
                        "indices (N, ...) nor as probabilities (N, C, ...)", tg__shape_s(t),
                        tg__shape_s(z));
    return tg__same_dtype(ctx, "cross_entropy", z, t);
}

/* prob becomes prob - t (t one-hot for indices); returns -sum t logp in double. */
static double ce_delta(const tg_tensor *t, tg_tensor *prob, const tg_tensor *logp,
                       const cls_view *v)
{
    if (t->dtype == TG_I64) {
        const int64_t *k = t->data;
        TG__DISPATCH(prob->dtype, T, {
            T *p = prob->data;
            for (int64_t i = 0; i < v->n; i++)
                for (int64_t j = 0; j < v->inner; j++)
                    p[(i * v->c + k[i * v->inner + j]) * v->inner + j] -= 1;
        });
        return picked_sum(logp, k, v);
    }
    double acc = 0;
    TG__DISPATCH(prob->dtype, T, {
        T *p = prob->data;
        const T *ts = t->data, *lp = logp->data;
        for (int64_t i = 0; i < prob->numel; i++) {
            acc -= (double)ts[i] * (double)lp[i];
            p[i] -= ts[i];
        }
    });
    return acc;
}

static tg_tensor *ce_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *z = node->in[0], *t = node->in[1];
    cls_view v;
    if (ce_check(ctx, node, &v))
        return NULL;
    tg_tensor *delta = tg_empty(ctx, z->dtype, z->ndim, z->shape);
    tg_tensor *logp = tg_empty(ctx, z->dtype, z->ndim, z->shape);
    if (!delta || !logp)
        return NULL;
    tg__softmax_lines(z->dtype, z->data, delta->data, v.n, v.c, v.inner, false);
    tg__softmax_lines(z->dtype, z->data, logp->data, v.n, v.c, v.inner, true);
    double acc = z->numel ? ce_delta(t, delta, logp, &v) : 0;
    if (node->recording && (!tg_node_save(ctx, node, delta) ||
                            (t->requires_grad && !tg_node_save(ctx, node, logp))))
        return NULL;
    for (int i = -1; i < 2; i++) /* the vjp reads only what was saved */
        tg_node_value_unused(node, i);
    /* an empty batch, spatial size or class count: mean NaN, sum 0 (PyTorch) */
    return loss_out(ctx, node, z->dtype, acc, z->numel ? v.m : 0);
}

static tg_status ce_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *z = node->in[0], *delta = node->saved[0];
    int64_t m = z->numel / (z->shape[1] ? z->shape[1] : 1);
    if (z->numel == 0)
        return TG_OK;
    bool mean = ((const tg_loss_attrs *)node->attrs)->reduction == TG_MEAN;
    double dm = mean ? (double)m : 1.0, g = tg_get(gout, 0);
    TG__DISPATCH(z->dtype, T, {
        const T *d = delta->data, *lp = gin[1] ? node->saved[1]->data : NULL;
        T *gz = gin[0] ? gin[0]->data : NULL, *gt = gin[1] ? gin[1]->data : NULL;
        T tg = (T)g, tm = (T)dm;
        for (int64_t i = 0; i < z->numel; i++) {
            if (gz) /* (softmax - t) / M: the division last, so g = 1 is exact */
                gz[i] += tg * d[i] / tm;
            if (gt)
                gt[i] -= tg * lp[i] / tm;
        }
    });
    return TG_OK;
}

/* int64 class indices (N) or (N, d) for the logits z: (i * 7 + 1) mod C. */
static tg_tensor *sample_indices(tg_ctx *ctx, const tg_tensor *z)
{
    int64_t shape[TG_MAX_DIMS] = {z->shape[0], z->ndim > 2 ? z->shape[2] : 0};
    tg_tensor *t = tg_zeros(ctx, TG_I64, z->ndim - 1, shape);
    for (int64_t i = 0; t && i < t->numel; i++)
        ((int64_t *)t->data)[i] = (i * 7 + 1) % z->shape[1];
    return t;
}

/* Class probabilities of z's shape (N, C), each row summing to 1. */
static tg_tensor *sample_probs(tg_ctx *ctx, const tg_tensor *z, bool requires_grad)
{
    tg_tensor *t = tg__sample_rand(ctx, z->ndim, z->shape, 0.1, 1, requires_grad);
    for (int64_t i = 0; t && i < z->shape[0]; i++) {
        double *row = (double *)t->data + i * z->shape[1], sum = 0;
        for (int64_t c = 0; c < z->shape[1]; c++)
            sum += row[c];
        for (int64_t c = 0; c < z->shape[1]; c++)
            row[c] /= sum;
    }
    return t;
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
    bool probs = index == 1 || index == 3;
    tg_tensor *t = !z ? NULL : probs ? sample_probs(ctx, z, index == 1) : sample_indices(ctx, z);
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
                                    .sample = ce_sample, .flags = TG_OP_INT64_INPUTS};

tg_tensor *tg_cross_entropy(tg_ctx *ctx, tg_tensor *logits, tg_tensor *target,
                            tg_reduction reduction)
{
    tg_loss_attrs a = {reduction};
    tg_tensor *in[2] = {logits, target};
    return tg_apply(ctx, &tg__op_cross_entropy, in, 2, &a);
}

/* ---------------------------------------------------------------- nll_loss */

static tg_tensor *nll_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *lp = node->in[0], *t = node->in[1];
    cls_view v;
    if (check_reduction(ctx, node) || cls_view_of(ctx, "nll_loss", "log-probabilities", lp, &v))
        return NULL;
    if (t->dtype != TG_I64) {
        TG_ERROR(ctx, TG_EDTYPE, "nll_loss: target is %s; pass class indices as an int64 tensor",
                 tg__tensor_s(t));
        return NULL;
    }
    if (check_indices(ctx, "nll_loss", lp, t, &v))
        return NULL;
    double acc = lp->numel ? picked_sum(lp, t->data, &v) : 0;
    if (node->recording && !tg_node_save(ctx, node, tg_copy(ctx, t)))
        return NULL;
    for (int i = -1; i < 2; i++) /* the vjp reads only its copy of the indices */
        tg_node_value_unused(node, i);
    return loss_out(ctx, node, lp->dtype, acc, lp->numel ? v.m : 0);
}

static tg_status nll_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *lp = node->in[0];
    cls_view v = {lp->shape[0], lp->shape[1], 1, 0};
    if (lp->numel == 0)
        return TG_OK;
    v.inner = lp->numel / (v.n * v.c);
    double s = tg_get(gout, 0) * scale_of(node, v.n * v.inner);
    const int64_t *k = node->saved[0]->data;
    TG__DISPATCH(lp->dtype, T, {
        T *gl = gin[0]->data;
        for (int64_t i = 0; i < v.n; i++)
            for (int64_t j = 0; j < v.inner; j++)
                gl[(i * v.c + k[i * v.inner + j]) * v.inner + j] -= (T)s;
    });
    return TG_OK;
}

static int nll_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const int64_t shapes[][3] = {{4, 3}, {2, 5}, {2, 3, 2}, {1, 4}};
    static const int nd[] = {2, 2, 3, 2};
    static const char *desc[] = {"(N, C), mean", "(N, C), sum", "spatial dim, mean",
                                 "batch of one, sum"};
    if (index >= 4)
        return 0;
    tg_tensor *lp = tg__sample_rand(ctx, nd[index], shapes[index], -3, 0, true);
    tg_tensor *t = lp ? sample_indices(ctx, lp) : NULL;
    if (!t)
        return tg_errcode(ctx);
    s->n_in = 2;
    s->in[0] = lp;
    s->in[1] = t;
    tg_loss_attrs a = {index % 2 ? TG_SUM : TG_MEAN};
    memcpy(s->attrs, &a, sizeof a);
    snprintf(s->desc, sizeof s->desc, "%s", desc[index]);
    return 1;
}

const tg_op tg__op_nll_loss = {.name = "nll_loss", .min_in = 2, .max_in = 2,
                               .attr_size = sizeof(tg_loss_attrs), .forward = nll_forward,
                               .vjp = nll_vjp, .print_attrs = loss_print, .sample = nll_sample,
                               .flags = TG_OP_INT64_INPUTS};

tg_tensor *tg_nll_loss(tg_ctx *ctx, tg_tensor *logp, tg_tensor *target, tg_reduction reduction)
{
    tg_loss_attrs a = {reduction};
    tg_tensor *in[2] = {logp, target};
    return tg_apply(ctx, &tg__op_nll_loss, in, 2, &a);
}
