/*
 * loss.c: mse, bce, bce_with_logits, cross_entropy and nll_loss. With
 * reduction mean or sum each returns a scalar; s below is 1/M for the mean
 * over M terms (a weighted mean divides by the weights instead) and 1 for
 * the sum. The mean over no terms is NaN and the sum 0, as in PyTorch.
 * Reduction none returns the terms themselves (s = 1, and g below is the
 * gradient of each term): the input's shape for the elementwise losses,
 * one per sample for the class losses.
 *
 *   mse:  L = s sum (x - y)^2                  dx += 2 s g (x - y),  dy -= the same
 *   bce:  L = -s sum y lp + (1 - y) lq, lp = max(log p, -100), lq = max(log(1 - p), -100)
 *         dp += s g (p - y) / max(p (1 - p), 1e-12)    dy += s g (lq - lp)   (PyTorch's)
 *   bce_with_logits, in PyTorch 1.13's form with m = max(-x, 0), sp = softplus(-x):
 *         L = s sum (1 - y) x + m + log(e^-m + e^(-x - m))
 *         dx += s g (sigmoid(x) - y)           dy -= s g x
 *         For finite x the log term is computed as log1p(e^-|x|), its exact
 *         equal; at x = +-inf the literal form gives PyTorch's values (NaN
 *         for x = -inf, and for x = +inf with y = 1).
 *         With pos_weight pw (broadcast to x; not differentiable, as PyTorch)
 *         and lw = 1 + (pw - 1) y:
 *         L = s sum (1 - y) x + lw sp      dx += s g (lw sigmoid(x) - pw y)
 *         dy += s g (pw sp - softplus(x))
 *   cross_entropy over classes (axis 1), with class weights w (1 without),
 *         label smoothing e and C classes. Each sample has a vector q:
 *         class indices k: q = (1 - e) w_k onehot(k) + (e / C) w, and q = 0
 *           for a target equal to ignore_index; the mean divides by the sum
 *           of w_k over the samples not ignored (their count without w)
 *         probabilities t: q = w (1 - e) t + w e / C; the mean divides by
 *           the sample count
 *         L = -s sum_samples sum_c q_c log softmax(z)_c
 *         dz += s g (Q softmax(z) - q), Q = sum_c q_c
 *         dt -= s g (1 - e) w log softmax(z)           (probability targets)
 *         dw -= s g sum_samples t'_c log softmax(z)_c   (probability targets,
 *           t' = (1 - e) t + e / C; with indices w is not differentiable,
 *           as in PyTorch)
 *   nll_loss on log-probabilities lp (N, C, ...), int64 class indices k and
 *         weights w: L = -s sum_samples w_k lp[k]   dlp[k] -= s g w_k
 *         (ignored samples count for nothing, in the mean's divisor too)
 * Every sum runs in double, for float32 too. Forward saves what the vjps
 * need (Q softmax - q and the divisor, copies of the indices and weights,
 * the broadcast pos_weight), so none of them reads an input's values after
 * forward except mse, bce and bce_with_logits, which read x and y. The
 * vjps write a gradient's first contribution (TG_OP_VJP_WRITES) and add
 * later ones.
 */
#include "ops_impl.h"

#include <tgmath.h>

/* Runs ROW(i) for i < rows, split over threads when total (elements)
 * reaches the grain; below it the loop stays out of OpenMP, whose entry
 * costs more than a small batch. */
#define PAR_ROWS(total, rows, ROW)                                                     \
    do {                                                                               \
        if ((total) >= TG__PAR_GRAIN) {                                                \
            _Pragma("omp parallel for schedule(static)")                               \
            for (int64_t i = 0; i < (rows); i++) {                                     \
                ROW(i);                                                                \
            }                                                                          \
        } else {                                                                       \
            for (int64_t i = 0; i < (rows); i++) {                                     \
                ROW(i);                                                                \
            }                                                                          \
        }                                                                              \
    } while (0)

static const char *reduction_name(tg_reduction r)
{
    return r == TG_SUM ? "sum" : r == TG_NONE ? "none" : "mean";
}

/* Every loss's attribute struct starts with its reduction. */
static tg_reduction reduction_of(const tg_node *node)
{
    return *(const tg_reduction *)node->attrs;
}

static tg_status check_reduction(tg_ctx *ctx, const tg_node *node)
{
    tg_reduction r = reduction_of(node);
    if (r != TG_MEAN && r != TG_SUM && r != TG_NONE)
        return TG_ERROR(ctx, TG_EINVAL, "%s: reduction %d is not TG_MEAN, TG_SUM or TG_NONE",
                        node->op->name, (int)r);
    return TG_OK;
}

/* s: the factor of each term; NaN for the mean over no terms */
static double scale_of(const tg_node *node, int64_t terms)
{
    if (reduction_of(node) != TG_MEAN)
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
    return snprintf(buf, size, "%s", reduction_name(reduction_of(node)));
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

/* pos_weight: x's dtype, broadcastable to x's shape without growing it,
 * and not requiring grad where a gradient would be recorded (PyTorch:
 * "not differentiable with respect to argument 'pos_weight'"). */
static tg_status check_pos_weight(tg_ctx *ctx, const tg_node *node, const tg_tensor *pw)
{
    const tg_tensor *x = node->in[0];
    int nd;
    int64_t shape[TG_MAX_DIMS];
    if (tg__same_dtype(ctx, "bce_with_logits", x, pw) ||
        tg__bcast_shape(ctx, "bce_with_logits", x, pw, &nd, shape))
        return tg_errcode(ctx);
    if (nd != x->ndim || memcmp(shape, x->shape, (size_t)nd * sizeof *shape) != 0)
        return TG_ERROR(ctx, TG_ESHAPE, "bce_with_logits: pos_weight %s broadcast with input %s "
                        "gives a larger shape than the input's", tg__shape_s(pw), tg__shape_s(x));
    if (pw->requires_grad && node->recording)
        return TG_ERROR(ctx, TG_EINVAL, "bce_with_logits: pos_weight %s requires grad, but it is "
                        "not differentiable (as in PyTorch); pass a tensor that does not",
                        tg__tensor_s(pw));
    return TG_OK;
}

typedef struct expand_ud { tg_tensor *dst; const tg_tensor *src; } expand_ud;

static void expand_row(void *ud, int64_t n, const int64_t off[3], const int64_t inc[3])
{
    const expand_ud *e = ud;
    TG__DISPATCH(e->dst->dtype, T, {
        T *d = (T *)e->dst->data + off[0];
        const T *v = (const T *)e->src->data + off[1];
        for (int64_t i = 0; i < n; i++)
            d[i * inc[0]] = v[i * inc[1]];
    });
}

/* A copy of pw broadcast to x's shape. */
static tg_tensor *expand_like(tg_ctx *ctx, const tg_tensor *pw, const tg_tensor *x)
{
    tg_tensor *out = tg_empty(ctx, x->dtype, x->ndim, x->shape);
    if (!out)
        return NULL;
    tg__bcast it;
    expand_ud ud = {out, pw};
    tg__bcast_init(&it, out, pw, NULL);
    tg__bcast_rows(&it, expand_row, &ud);
    return out;
}

enum { MSE, BCE, BCE_LOGITS };
static const int kinds[] = {MSE, BCE, BCE_LOGITS};

static int kind_of(const tg_node *node) { return *(const int *)node->op->impl; }

/* softplus(-a) = log(1 + e^-a), PyTorch's literal form at a = +-inf */
static double softplus_neg(double a)
{
    double m = -a > 0 ? -a : 0; /* max(-x, 0) */
    return m + (isinf(a) ? log(exp(-m) + exp(-a - m)) : log1p(exp(-fabs(a))));
}

/* One term of each loss, in double; pw the pos_weight or NULL. */
static double pair_term(int kind, double a, double t, const double *pw)
{
    if (kind == MSE)
        return (a - t) * (a - t);
    if (kind == BCE)
        return -(t * fmax(log(a), -100.0) + (1 - t) * fmax(log(1 - a), -100.0));
    if (pw)
        return (1 - t) * a + (1 + (*pw - 1) * t) * softplus_neg(a);
    double m = -a > 0 ? -a : 0; /* max(-x, 0) */
    double lg = isinf(a) ? log(exp(-m) + exp(-a - m)) : log1p(exp(-fabs(a)));
    return (1 - t) * a + m + lg;
}

static tg_tensor *pair_forward(tg_ctx *ctx, tg_node *node)
{
    const tg_tensor *x = node->in[0], *y = node->in[1];
    const tg_tensor *pw = node->n_in > 2 ? node->in[2] : NULL;
    int kind = kind_of(node);
    bool none = false;
    if (check_pair(ctx, node) || (kind == BCE && check_bce_range(ctx, x, y)) ||
        (pw && check_pos_weight(ctx, node, pw)))
        return NULL;
    none = reduction_of(node) == TG_NONE;
    tg_tensor *lw = pw ? expand_like(ctx, pw, x) : NULL;
    tg_tensor *out = none ? tg_empty(ctx, x->dtype, x->ndim, x->shape) : NULL;
    if ((pw && !lw) || (none && !out))
        return NULL;
    double acc = 0;
    TG__DISPATCH(x->dtype, T, {
        const T *xs = x->data, *ys = y->data, *ws = lw ? lw->data : NULL;
        T *o = out ? out->data : NULL;
        for (int64_t i = 0; i < x->numel; i++) {
            double w = ws ? (double)ws[i] : 0;
            double v = pair_term(kind, (double)xs[i], (double)ys[i], ws ? &w : NULL);
            if (o)
                o[i] = (T)v;
            else
                acc += v;
        }
    });
    if (pw) { /* the vjp reads its broadcast copy */
        tg_node_value_unused(node, 2);
        if (node->recording && !tg_node_save(ctx, node, lw))
            return NULL;
    }
    tg_node_value_unused(node, -1);
    return none ? out : loss_out(ctx, node, x->dtype, acc, x->numel);
}

static tg_status pair_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *x = node->in[0], *y = node->in[1];
    const tg_tensor *lw = node->n_in > 2 ? node->saved[0] : NULL;
    int kind = kind_of(node);
    bool none = reduction_of(node) == TG_NONE;
    if (x->numel == 0)
        return TG_OK;
    double gs = none ? 0 : tg_get(gout, 0) * scale_of(node, x->numel);
    bool add_x = tg_vjp_adds(node, 0), add_y = tg_vjp_adds(node, 1);
    int64_t n = x->numel;
    TG__DISPATCH(x->dtype, T, {
        const T *xs = x->data, *ys = y->data, *g = gout->data, *pws = lw ? lw->data : NULL;
        T *gx = gin[0] ? gin[0]->data : NULL, *gy = gin[1] ? gin[1]->data : NULL;
        TG__PAR_FOR(n >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
        for (int64_t i = 0; i < n; i++) {
            T s = none ? g[i] : (T)gs, a = xs[i], t = ys[i], dx, dy;
            if (kind == MSE) {
                dx = 2 * s * (a - t);
                dy = -dx;
            } else if (kind == BCE) {
                dx = s * (a - t) / fmax((1 - a) * a, (T)1e-12);
                dy = s * (fmax(log(1 - a), (T)-100) - fmax(log(a), (T)-100));
            } else {
                T sig = a >= 0 ? 1 / (1 + exp(-a)) : exp(a) / (1 + exp(a));
                if (pws) {
                    T p = pws[i];
                    dx = s * ((1 + (p - 1) * t) * sig - p * t);
                    dy = s * (p * (T)softplus_neg(a) - (T)softplus_neg(-a));
                } else {
                    dx = s * (sig - t);
                    dy = -s * a;
                }
            }
            if (gx)
                gx[i] = add_x ? gx[i] + dx : dx;
            if (gy)
                gy[i] = add_y ? gy[i] + dy : dy;
        });
    });
    return TG_OK;
}

/* Probabilities stay inside (0.05, 0.95) and targets inside [0, 1], so the
 * clamps and the max(p (1 - p), 1e-12) floor never act. */
static int pair_sample(tg_ctx *ctx, int index, tg_sample *s, double lo, double hi)
{
    static const int64_t shapes[][3] = {{3, 4}, {5}, {2, 1, 3}};
    static const int ndims[] = {2, 1, 3};
    if (index >= 5)
        return 0;
    int k = index % 3;
    s->n_in = 2;
    s->in[0] = tg__sample_rand(ctx, ndims[k], shapes[k], lo, hi, true);
    s->in[1] = tg__sample_rand(ctx, ndims[k], shapes[k], 0, 1, index != 2);
    tg_loss_attrs a = {index == 1 ? TG_SUM : index == 4 ? TG_NONE : TG_MEAN};
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

/* The pair cases, then pos_weight of a row (broadcast) and of the full
 * shape, mean and none. */
static int logits_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const int64_t row[] = {4}, full[] = {3, 4};
    if (index < 5)
        return pair_sample(ctx, index, s, -2, 2);
    if (index >= 7)
        return 0;
    s->n_in = 3;
    s->in[0] = tg__sample_rand(ctx, 2, full, -2, 2, true);
    s->in[1] = tg__sample_rand(ctx, 2, full, 0, 1, true);
    s->in[2] = index == 5 ? tg__sample_rand(ctx, 1, row, 0.2, 3, false)
                          : tg__sample_rand(ctx, 2, full, 0.2, 3, false);
    tg_loss_attrs a = {index == 5 ? TG_MEAN : TG_NONE};
    memcpy(s->attrs, &a, sizeof a);
    snprintf(s->desc, sizeof s->desc, "%s", index == 5 ? "pos_weight row, mean"
                                                       : "full pos_weight, none");
    return s->in[2] ? 1 : tg_errcode(ctx);
}

/* graph edge labels; the third input is the weight or pos_weight */
static const char *const pair_names[] = {"input", "target", "pos_weight", NULL};
static const char *const class_names[] = {"input", "target", "weight", NULL};

#define PAIR_OP(NAME, KIND, SAMPLE, MAX_IN)                                              \
    const tg_op tg__op_##NAME = {.name = #NAME, .min_in = 2, .max_in = MAX_IN,           \
                                 .attr_size = sizeof(tg_loss_attrs),                     \
                                 .forward = pair_forward, .vjp = pair_vjp,               \
                                 .print_attrs = loss_print, .sample = SAMPLE,            \
                                 .impl = &kinds[KIND], .input_names = pair_names,        \
                                 .flags = TG_OP_VJP_WRITES};                             \
    tg_tensor *tg_##NAME(tg_ctx *ctx, tg_tensor *x, tg_tensor *y, tg_reduction reduction) \
    {                                                                                    \
        tg_loss_attrs a = {reduction};                                                   \
        tg_tensor *in[2] = {x, y};                                                       \
        return tg_apply(ctx, &tg__op_##NAME, in, 2, &a);                                 \
    }

PAIR_OP(mse, MSE, mse_sample, 2)
PAIR_OP(bce, BCE, bce_sample, 2)
PAIR_OP(bce_with_logits, BCE_LOGITS, logits_sample, 3)

tg_tensor *tg_bce_with_logits_ex(tg_ctx *ctx, tg_tensor *x, tg_tensor *y, tg_tensor *pos_weight,
                                 tg_reduction reduction)
{
    tg_loss_attrs a = {reduction};
    tg_tensor *in[3] = {x, y, pos_weight};
    return tg_apply(ctx, &tg__op_bce_with_logits, in, pos_weight ? 3 : 2, &a);
}

/* ---------------------------------------------------------------- class losses */

/* Logits or log-probabilities as (n, c, inner); m = n inner samples. */
typedef struct cls_view { int64_t n, c, inner, m; } cls_view;

/* A class loss's inputs, checked: z (N, C, ...), target t, weight w or NULL. */
typedef struct cls_args {
    const tg_tensor *z, *t, *w;
    tg_ce_attrs a;
    cls_view v;
} cls_args;

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

/* An int64 target of class indices for z: its shape, then every index in
 * [0, C) or equal to ignore_index. */
static tg_status check_indices(tg_ctx *ctx, const char *who, const cls_args *c)
{
    const tg_tensor *z = c->z, *t = c->t;
    if (!index_shape(z, t))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: int64 target %s does not fit %s as class indices; "
                        "they need the shape (N, d1, ...) of the input without its class "
                        "dimension", who, tg__shape_s(t), tg__shape_s(z));
    const int64_t *k = t->data;
    for (int64_t i = 0; i < t->numel; i++)
        if ((k[i] < 0 || k[i] >= c->v.c) && k[i] != c->a.ignore_index) {
            char at[24 * TG_MAX_DIMS];
            position(t, i, at, sizeof at);
            return TG_ERROR(ctx, TG_EINVAL, "%s: target%s = %lld is not a class index in [0, %lld) "
                            "nor the ignore_index %lld", who, at, (long long)k[i],
                            (long long)c->v.c, (long long)c->a.ignore_index);
        }
    return TG_OK;
}

/* The class weights: (C) of z's dtype, and, with class indices, not
 * requiring grad where a gradient would be recorded (PyTorch: "not
 * differentiable with respect to argument 'weight'"). */
static tg_status check_weight(tg_ctx *ctx, const tg_node *node, const cls_args *c)
{
    const char *who = node->op->name;
    const tg_tensor *w = c->w;
    if (w->dtype != c->z->dtype)
        return TG_ERROR(ctx, TG_EDTYPE, "%s: weight is %s but the input is %s; they must share a "
                        "dtype", who, tg__tensor_s(w), tg__tensor_s(c->z));
    if (w->ndim != 1 || w->shape[0] != c->v.c)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: weight is %s; it needs one entry per class, (%lld)",
                        who, tg__shape_s(w), (long long)c->v.c);
    if (c->t->dtype == TG_I64 && w->requires_grad && node->recording)
        return TG_ERROR(ctx, TG_EINVAL, "%s: weight %s requires grad, but with class indices it is "
                        "not differentiable (as in PyTorch); pass a tensor that does not", who,
                        tg__tensor_s(w));
    return TG_OK;
}

static tg_status check_smoothing(tg_ctx *ctx, const char *who, double e, bool allowed)
{
    if (!allowed && e != 0)
        return TG_ERROR(ctx, TG_EINVAL, "%s: label_smoothing = %s; nll_loss has none, so it must "
                        "be 0", who, tg__num(e));
    if (!(e >= 0 && e <= 1))
        return TG_ERROR(ctx, TG_EINVAL, "%s: label_smoothing = %s is outside [0, 1]", who,
                        tg__num(e));
    return TG_OK;
}

/* The target of cross_entropy: int64 indices or probabilities of z's shape and dtype. */
static tg_status check_ce_target(tg_ctx *ctx, const cls_args *c)
{
    const tg_tensor *z = c->z, *t = c->t;
    if (t->dtype == TG_I64)
        return check_indices(ctx, "cross_entropy", c);
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

/* Reads and checks a class loss's node; ce selects cross_entropy's rules. */
static tg_status cls_check(tg_ctx *ctx, const tg_node *node, bool ce, cls_args *c)
{
    const char *who = node->op->name;
    c->z = node->in[0];
    c->t = node->in[1];
    c->w = node->n_in > 2 ? node->in[2] : NULL;
    memcpy(&c->a, node->attrs, sizeof c->a);
    if (check_reduction(ctx, node) || check_smoothing(ctx, who, c->a.label_smoothing, ce) ||
        cls_view_of(ctx, who, ce ? "logits" : "log-probabilities", c->z, &c->v))
        return tg_errcode(ctx);
    if (ce && check_ce_target(ctx, c))
        return tg_errcode(ctx);
    if (!ce && c->t->dtype != TG_I64)
        return TG_ERROR(ctx, TG_EDTYPE, "nll_loss: target is %s; pass class indices as an int64 "
                        "tensor", tg__tensor_s(c->t));
    if (!ce && check_indices(ctx, who, c))
        return tg_errcode(ctx);
    return c->w ? check_weight(ctx, node, c) : TG_OK;
}

/* The per-sample output of reduction none: (N, d1, ...). */
static tg_tensor *per_sample_out(tg_ctx *ctx, const tg_tensor *z)
{
    int64_t shape[TG_MAX_DIMS] = {z->shape[0]};
    for (int d = 2; d < z->ndim; d++)
        shape[d - 1] = z->shape[d];
    return tg_zeros(ctx, z->dtype, z->ndim - 1, shape);
}

/* The reduced loss: the sum of the terms, or their sum over the divisor
 * (NaN for no terms). */
static tg_tensor *reduced_out(tg_ctx *ctx, const tg_node *node, tg_dtype dt, double acc,
                              double divisor)
{
    if (reduction_of(node) == TG_SUM)
        return scalar_out(ctx, dt, acc);
    return scalar_out(ctx, dt, acc / divisor);
}

/* Keeps the divisor of the mean (1 for sum and none) for the vjp. */
static tg_status save_divisor(tg_ctx *ctx, tg_node *node, double divisor)
{
    double *d = tg_scratch(ctx, sizeof *d, false);
    if (!d)
        return tg_errcode(ctx);
    *d = reduction_of(node) == TG_MEAN ? divisor : 1.0;
    node->aux = d;
    return TG_OK;
}

/* ---------------------------------------------------------------- cross_entropy */

/* What cross_entropy's forward computes besides its loss: delta = Q p - q
 * (of z's shape), and for probability targets dt = -(1 - e) w logp and
 * dw = -t' logp (each only when wanted). */
typedef struct ce_work {
    tg_tensor *delta, *logp, *dt, *dw, *out; /* out: the per-sample losses (none) */
    double acc, divisor;
} ce_work;

/* One sample of class-index cross_entropy: fills delta's column, returns the loss. */
#define CE_INDEX_SAMPLE(T)                                                                    \
    do {                                                                                      \
        int64_t k = ks[i * v.inner + j];                                                      \
        double wk = k == c->a.ignore_index ? 0 : w ? (double)w[k] : 1.0, term = 0;            \
        double near = (1 - e) * wk, q_all = e / (double)v.c, big_q = near + q_all * wsum;      \
        if (k != c->a.ignore_index)                                                           \
            div += wk;                                                                        \
        for (int64_t cl = 0; cl < v.c; cl++) {                                                \
            int64_t at = (i * v.c + cl) * v.inner + j;                                        \
            double qc = k == c->a.ignore_index ? 0 : q_all * (w ? (double)w[cl] : 1.0);       \
            if (cl == k)                                                                      \
                qc += near;                                                                   \
            d[at] = k == c->a.ignore_index ? 0 : (T)(big_q * (double)d[at] - qc);             \
            if (e > 0 && k != c->a.ignore_index)                                              \
                term -= qc * (double)lp[at];                                                  \
        }                                                                                     \
        if (e == 0 && k != c->a.ignore_index)                                                 \
            term = -wk * (double)lp[(i * v.c + k) * v.inner + j];                             \
        loss = term;                                                                          \
    } while (0)

/* Class indices: delta (holding softmax) becomes Q p - q; the losses go to
 * out or into acc. */
static void ce_indices(const cls_args *c, ce_work *work)
{
    cls_view v = c->v;
    double e = c->a.label_smoothing, div = 0, acc = 0;
    TG__DISPATCH(c->z->dtype, T, {
        const int64_t *ks = c->t->data;
        const T *lp = work->logp->data, *w = c->w ? c->w->data : NULL;
        T *d = work->delta->data, *o = work->out ? work->out->data : NULL;
        double wsum = 0;
        for (int64_t cl = 0; cl < v.c; cl++)
            wsum += w ? (double)w[cl] : 1.0;
        for (int64_t i = 0; i < v.n; i++)
            for (int64_t j = 0; j < v.inner; j++) {
                double loss;
                CE_INDEX_SAMPLE(T);
                if (o)
                    o[i * v.inner + j] = (T)loss;
                else
                    acc += loss;
            }
    });
    work->acc = acc;
    work->divisor = div;
}

/* Probabilities: q = w t', t' = (1 - e) t + e / C; delta (holding softmax)
 * becomes Q p - q, and dt, dw (when present) their factors. */
static void ce_probs(const cls_args *c, ce_work *work)
{
    cls_view v = c->v;
    double e = c->a.label_smoothing, acc = 0;
    TG__DISPATCH(c->z->dtype, T, {
        const T *ts = c->t->data, *lp = work->logp->data, *w = c->w ? c->w->data : NULL;
        T *d = work->delta->data, *o = work->out ? work->out->data : NULL;
        T *dt = work->dt ? work->dt->data : NULL, *dw = work->dw ? work->dw->data : NULL;
        for (int64_t i = 0; i < v.n; i++)
            for (int64_t j = 0; j < v.inner; j++) {
                double big_q = 0, loss = 0;
                for (int64_t cl = 0; cl < v.c; cl++) {
                    int64_t at = (i * v.c + cl) * v.inner + j;
                    double tp = e > 0 ? (1 - e) * (double)ts[at] + e / (double)v.c : (double)ts[at];
                    double wc = w ? (double)w[cl] : 1.0;
                    big_q += wc * tp;
                    loss -= wc * tp * (double)lp[at];
                    if (dt)
                        dt[at] = (T)(-(1 - e) * wc * (double)lp[at]);
                    if (dw)
                        dw[at] = (T)(-tp * (double)lp[at]);
                }
                for (int64_t cl = 0; cl < v.c; cl++) {
                    int64_t at = (i * v.c + cl) * v.inner + j;
                    double tp = e > 0 ? (1 - e) * (double)ts[at] + e / (double)v.c : (double)ts[at];
                    d[at] = (T)(big_q * (double)d[at] - (w ? (double)w[cl] : 1.0) * tp);
                }
                if (o)
                    o[i * v.inner + j] = (T)loss;
                else
                    acc += loss;
            }
    });
    work->acc = acc;
    work->divisor = (double)v.m;
}

/* The tensors of a cross_entropy forward: softmax (becoming delta), log
 * softmax, the per-sample output and the probability targets' factors. */
static tg_status ce_alloc(tg_ctx *ctx, const tg_node *node, const cls_args *c, ce_work *work)
{
    const tg_tensor *z = c->z;
    bool probs = c->t->dtype != TG_I64, rec = node->recording;
    memset(work, 0, sizeof *work);
    work->delta = tg_empty(ctx, z->dtype, z->ndim, z->shape);
    work->logp = tg_empty(ctx, z->dtype, z->ndim, z->shape);
    if (reduction_of(node) == TG_NONE)
        work->out = per_sample_out(ctx, z);
    if (probs && rec && c->t->requires_grad)
        work->dt = tg_empty(ctx, z->dtype, z->ndim, z->shape);
    if (probs && rec && c->w && c->w->requires_grad)
        work->dw = tg_empty(ctx, z->dtype, z->ndim, z->shape);
    return tg_errcode(ctx);
}

static tg_tensor *ce_forward(tg_ctx *ctx, tg_node *node)
{
    cls_args c;
    ce_work work;
    if (cls_check(ctx, node, true, &c) || ce_alloc(ctx, node, &c, &work))
        return NULL;
    const tg_tensor *z = c.z;
    tg__softmax_lines(z->dtype, z->data, work.delta->data, c.v.n, c.v.c, c.v.inner, false);
    tg__softmax_lines(z->dtype, z->data, work.logp->data, c.v.n, c.v.c, c.v.inner, true);
    if (z->numel == 0) /* nothing to walk, however many samples (the per-sample losses are 0) */
        work.divisor = 0;
    else if (c.t->dtype == TG_I64)
        ce_indices(&c, &work);
    else
        ce_probs(&c, &work);
    if (node->recording && (!tg_node_save(ctx, node, work.delta) ||
                            (work.dt && !tg_node_save(ctx, node, work.dt)) ||
                            (work.dw && !tg_node_save(ctx, node, work.dw)) ||
                            save_divisor(ctx, node, work.divisor)))
        return NULL;
    for (int i = -1; i < node->n_in; i++) /* the vjp reads only what was saved */
        tg_node_value_unused(node, i);
    if (work.out)
        return work.out;
    /* an empty batch, spatial size or class count: mean NaN, sum 0 (PyTorch) */
    if (z->numel == 0)
        return loss_out(ctx, node, z->dtype, 0, 0);
    return reduced_out(ctx, node, z->dtype, work.acc, work.divisor);
}

/* g of sample (i, j): gout's entry (none) or its one value. */
#define SAMPLE_G(T) (none ? (T)g[i * inner + j] : (T)g0)

/* The gradients of sample row i (in ce_vjp) */
#define CE_VJP_ROW(i)                                                                  \
    for (int64_t cl = 0; cl < c; cl++)                                                 \
        for (int64_t j = 0; j < inner; j++) {                                          \
            int64_t at = ((i) * c + cl) * inner + j;                                   \
            if (gz) { /* the division last, so g = 1 is exact */                       \
                T v = SAMPLE_G(T) * d[at] / tm;                                        \
                gz[at] = add_z ? gz[at] + v : v;                                       \
            }                                                                          \
            if (gt && ts) { /* both or neither: gin[1] decides */                      \
                T v = SAMPLE_G(T) * ts[at] / tm;                                       \
                gt[at] = add_t ? gt[at] + v : v;                                       \
            }                                                                          \
        }

static tg_status ce_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *z = node->in[0], *delta = node->saved[0];
    if (z->numel == 0) { /* no sample: the weights' gradient is 0 */
        if (node->n_in > 2 && gin[2] && !tg_vjp_adds(node, 2))
            memset(gin[2]->data, 0, (size_t)gin[2]->numel * tg_dtype_size(gin[2]->dtype));
        return TG_OK;
    }
    int next = 1;
    const tg_tensor *dt = gin[1] ? node->saved[next++] : NULL;
    const tg_tensor *dw = node->n_in > 2 && gin[2] ? node->saved[next] : NULL;
    bool none = reduction_of(node) == TG_NONE;
    int64_t n = z->shape[0], c = z->shape[1], inner = z->numel / (n * c);
    double g0 = none ? 0 : tg_get(gout, 0), div = *(const double *)node->aux;
    bool add_z = tg_vjp_adds(node, 0), add_t = tg_vjp_adds(node, 1), add_w = tg_vjp_adds(node, 2);
    TG__DISPATCH(z->dtype, T, {
        const T *d = delta->data, *g = gout->data, *ts = dt ? dt->data : NULL;
        const T *ws = dw ? dw->data : NULL;
        T *gz = gin[0] ? gin[0]->data : NULL, *gt = gin[1] ? gin[1]->data : NULL;
        T tm = (T)div;
        PAR_ROWS(z->numel, n, CE_VJP_ROW);
        for (int64_t cl = 0; ws && cl < c; cl++) {
            double acc = 0;
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < inner; j++)
                    acc += (double)SAMPLE_G(T) * (double)ws[(i * c + cl) * inner + j];
            T *gw = gin[2]->data;
            gw[cl] = add_w ? gw[cl] + (T)(acc / div) : (T)(acc / div);
        }
    });
    return TG_OK;
}

/* int64 class indices (N) or (N, d) for the logits z: (i * 7 + 1) mod C,
 * with every third one `ignored` when that is not -100. */
static tg_tensor *sample_indices(tg_ctx *ctx, const tg_tensor *z, int64_t ignored)
{
    int64_t shape[TG_MAX_DIMS] = {z->shape[0], z->ndim > 2 ? z->shape[2] : 0};
    tg_tensor *t = tg_zeros(ctx, TG_I64, z->ndim - 1, shape);
    for (int64_t i = 0; t && i < t->numel; i++)
        ((int64_t *)t->data)[i] = ignored != TG_IGNORE_INDEX && i % 3 == 2 ? ignored
                                                                         : (i * 7 + 1) % z->shape[1];
    return t;
}

/* Class probabilities of z's shape (N, C), each row summing to 1 (or to
 * about 1.6 when `loose`, as soft targets need not be normalised). */
static tg_tensor *sample_probs(tg_ctx *ctx, const tg_tensor *z, bool requires_grad, bool loose)
{
    tg_tensor *t = tg__sample_rand(ctx, z->ndim, z->shape, 0.1, 1, requires_grad);
    for (int64_t i = 0; t && i < z->shape[0]; i++) {
        double *row = (double *)t->data + i * z->shape[1], sum = 0;
        for (int64_t c = 0; c < z->shape[1]; c++)
            sum += row[c];
        for (int64_t c = 0; c < z->shape[1]; c++)
            row[c] = row[c] / sum * (loose ? 1.6 : 1.0);
    }
    return t;
}

typedef struct cls_case {
    int64_t shape[3];
    int nd;
    bool probs, target_grad, weight, weight_grad, loose;
    tg_ce_attrs a;
    const char *desc;
} cls_case;

static int cls_sample_from(tg_ctx *ctx, const cls_case *k, bool log_probs, tg_sample *s)
{
    tg_tensor *z = log_probs ? tg__sample_rand(ctx, k->nd, k->shape, -3, 0, true)
                             : tg__sample_rand(ctx, k->nd, k->shape, -2, 2, true);
    tg_tensor *t = !z ? NULL : k->probs ? sample_probs(ctx, z, k->target_grad, k->loose)
                                        : sample_indices(ctx, z, k->a.ignore_index);
    int64_t ws[1] = {k->shape[1]};
    tg_tensor *w = t && k->weight ? tg__sample_rand(ctx, 1, ws, 0.3, 2, k->weight_grad) : NULL;
    if (!t || (k->weight && !w))
        return tg_errcode(ctx);
    s->n_in = k->weight ? 3 : 2;
    s->in[0] = z;
    s->in[1] = t;
    s->in[2] = w;
    memcpy(s->attrs, &k->a, sizeof k->a);
    snprintf(s->desc, sizeof s->desc, "%s", k->desc);
    return 1;
}

#define CE(r, ig, e) {r, ig, e}

static int ce_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const cls_case cases[] = {
        {{4, 3}, 2, false, false, false, false, false, CE(TG_MEAN, -100, 0), "class indices, mean"},
        {{2, 5}, 2, true, true, false, false, false, CE(TG_SUM, -100, 0), "probabilities, sum"},
        {{2, 3, 2}, 3, false, false, false, false, false, CE(TG_MEAN, -100, 0),
         "indices over a spatial dim"},
        {{1, 4}, 2, true, false, false, false, false, CE(TG_MEAN, -100, 0),
         "batch of one, probabilities"},
        {{6, 4}, 2, false, false, true, false, false, CE(TG_MEAN, 0, 0),
         "weights, ignore_index 0, mean"},
        {{5, 3}, 2, false, false, true, false, false, CE(TG_MEAN, 2, 0.2),
         "weights, smoothing, ignore_index"},
        {{2, 3, 3}, 3, false, false, false, false, false, CE(TG_NONE, 1, 0.3),
         "spatial, smoothing, none"},
        {{3, 4}, 2, true, true, true, true, true, CE(TG_MEAN, -100, 0.25),
         "probabilities, weights with grad, smoothing"},
        {{3, 4}, 2, true, true, false, false, true, CE(TG_NONE, -100, 0),
         "unnormalised probabilities, none"},
    };
    if (index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    return cls_sample_from(ctx, &cases[index], false, s);
}

static int ce_print(const tg_node *node, char *buf, size_t size)
{
    const tg_ce_attrs *a = node->attrs;
    int n = snprintf(buf, size, "%s", reduction_name(a->reduction));
    size_t used = n > 0 && (size_t)n < size ? (size_t)n : size;
    if (a->ignore_index != TG_IGNORE_INDEX)
        n += snprintf(buf + used, size - used, " ignore_index=%lld", (long long)a->ignore_index);
    used = n > 0 && (size_t)n < size ? (size_t)n : size;
    if (a->label_smoothing != 0)
        n += snprintf(buf + used, size - used, " label_smoothing=%s", tg__num(a->label_smoothing));
    return n;
}

const tg_op tg__op_cross_entropy = {.name = "cross_entropy", .min_in = 2, .max_in = 3,
                                    .attr_size = sizeof(tg_ce_attrs), .forward = ce_forward,
                                    .vjp = ce_vjp, .print_attrs = ce_print,
                                    .sample = ce_sample,
                                    .flags = TG_OP_INT64_INPUTS | TG_OP_VJP_WRITES,
                                    .input_names = class_names};

tg_tensor *tg_cross_entropy_ex(tg_ctx *ctx, tg_tensor *logits, tg_tensor *target,
                               tg_tensor *weight, const tg_ce_attrs *attrs)
{
    tg_tensor *in[3] = {logits, target, weight};
    return tg_apply(ctx, &tg__op_cross_entropy, in, weight ? 3 : 2, attrs);
}

tg_tensor *tg_cross_entropy(tg_ctx *ctx, tg_tensor *logits, tg_tensor *target,
                            tg_reduction reduction)
{
    tg_ce_attrs a = {reduction, TG_IGNORE_INDEX, 0.0};
    return tg_cross_entropy_ex(ctx, logits, target, NULL, &a);
}

/* ---------------------------------------------------------------- nll_loss */

/* -sum w_k lp[k] into acc (or each into out), and the sum of w_k into *div,
 * over the samples not ignored. */
static double nll_sum(const cls_args *c, tg_tensor *out, double *div)
{
    cls_view v = c->v;
    double acc = 0, wsum = 0;
    TG__DISPATCH(c->z->dtype, T, {
        const int64_t *ks = c->t->data;
        const T *l = c->z->data, *w = c->w ? c->w->data : NULL;
        T *o = out ? out->data : NULL;
        for (int64_t i = 0; i < v.n; i++)
            for (int64_t j = 0; j < v.inner; j++) {
                int64_t k = ks[i * v.inner + j];
                double term = 0;
                if (k != c->a.ignore_index) {
                    double wk = w ? (double)w[k] : 1.0;
                    term = -wk * (double)l[(i * v.c + k) * v.inner + j];
                    wsum += wk;
                }
                if (o)
                    o[i * v.inner + j] = (T)term;
                else
                    acc += term;
            }
    });
    *div = wsum;
    return acc;
}

static tg_tensor *nll_forward(tg_ctx *ctx, tg_node *node)
{
    cls_args c;
    if (cls_check(ctx, node, false, &c))
        return NULL;
    tg_tensor *out = reduction_of(node) == TG_NONE ? per_sample_out(ctx, c.z) : NULL;
    if (reduction_of(node) == TG_NONE && !out)
        return NULL;
    double div = 0, acc = c.z->numel ? nll_sum(&c, out, &div) : 0;
    if (node->recording && (!tg_node_save(ctx, node, tg_copy(ctx, c.t)) ||
                            (c.w && !tg_node_save(ctx, node, tg_copy(ctx, c.w))) ||
                            save_divisor(ctx, node, div)))
        return NULL;
    for (int i = -1; i < node->n_in; i++) /* the vjp reads only its copies */
        tg_node_value_unused(node, i);
    if (out)
        return out;
    if (c.z->numel == 0)
        return loss_out(ctx, node, c.z->dtype, 0, 0);
    return reduced_out(ctx, node, c.z->dtype, acc, div);
}

static tg_status nll_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *lp = node->in[0], *wt = node->n_in > 2 ? node->saved[1] : NULL;
    if (lp->numel == 0)
        return TG_OK;
    int64_t n = lp->shape[0], c = lp->shape[1], inner = lp->numel / (n * c);
    int64_t ignore = ((const tg_ce_attrs *)node->attrs)->ignore_index;
    bool none = reduction_of(node) == TG_NONE;
    double g0 = none ? 0 : tg_get(gout, 0), div = *(const double *)node->aux;
    const int64_t *ks = node->saved[0]->data;
    if (!tg_vjp_adds(node, 0)) /* a scatter: every other element of a first contribution is 0 */
        memset(gin[0]->data, 0, (size_t)lp->numel * tg_dtype_size(lp->dtype));
    TG__DISPATCH(lp->dtype, T, {
        const T *g = gout->data, *w = wt ? wt->data : NULL;
        T *gl = gin[0]->data;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < inner; j++) {
                int64_t k = ks[i * inner + j];
                if (k == ignore)
                    continue;
                double gi = none ? (double)g[i * inner + j] : g0;
                gl[(i * c + k) * inner + j] -= (T)(gi * (w ? (double)w[k] : 1.0) / div);
            }
    });
    return TG_OK;
}

static int nll_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const cls_case cases[] = {
        {{4, 3}, 2, false, false, false, false, false, CE(TG_MEAN, -100, 0), "(N, C), mean"},
        {{2, 5}, 2, false, false, false, false, false, CE(TG_SUM, -100, 0), "(N, C), sum"},
        {{2, 3, 2}, 3, false, false, false, false, false, CE(TG_MEAN, -100, 0),
         "spatial dim, mean"},
        {{1, 4}, 2, false, false, false, false, false, CE(TG_SUM, -100, 0), "batch of one, sum"},
        {{6, 3}, 2, false, false, true, false, false, CE(TG_MEAN, 1, 0),
         "weights, ignore_index 1, mean"},
        {{2, 4, 3}, 3, false, false, true, false, false, CE(TG_NONE, 0, 0),
         "spatial, weights, ignore_index 0, none"},
    };
    if (index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    return cls_sample_from(ctx, &cases[index], true, s);
}

static int nll_print(const tg_node *node, char *buf, size_t size)
{
    return ce_print(node, buf, size);
}

const tg_op tg__op_nll_loss = {.name = "nll_loss", .min_in = 2, .max_in = 3,
                               .attr_size = sizeof(tg_ce_attrs), .forward = nll_forward,
                               .vjp = nll_vjp, .print_attrs = nll_print, .sample = nll_sample,
                               .flags = TG_OP_INT64_INPUTS | TG_OP_VJP_WRITES,
                               .input_names = class_names};

tg_tensor *tg_nll_loss_ex(tg_ctx *ctx, tg_tensor *logp, tg_tensor *target, tg_tensor *weight,
                          tg_reduction reduction, int64_t ignore_index)
{
    tg_ce_attrs a = {reduction, ignore_index, 0.0};
    tg_tensor *in[3] = {logp, target, weight};
    return tg_apply(ctx, &tg__op_nll_loss, in, weight ? 3 : 2, &a);
}

tg_tensor *tg_nll_loss(tg_ctx *ctx, tg_tensor *logp, tg_tensor *target, tg_reduction reduction)
{
    return tg_nll_loss_ex(ctx, logp, target, NULL, reduction, TG_IGNORE_INDEX);
}
