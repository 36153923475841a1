/*
 * optim.c: SGD, Adam and AdamW, learning-rate schedules and gradient
 * clipping (see tapegrad/optim.h for the formulas and the state names).
 *
 * An optimiser is one tg_malloc block: the struct, the parameter list, one
 * slot of state tensors per parameter and the (name, tensor) items of the
 * state. The state tensors are context buffers created with the optimiser,
 * so a step allocates nothing and a checkpoint can be loaded before it.
 *
 * A step first checks everything (learning rate, step counts, gradients'
 * dtypes and shapes, and with refuse_nonfinite their values), then updates
 * each parameter in one pass over its contiguous memory, in its own dtype,
 * with PyTorch 1.13's order of operations (each scalar converted to the
 * dtype first, as a Python scalar meeting a tensor is). The pass is a
 * vectorised loop over pieces of the parameter, run in parallel for large
 * ones (a model's parameter block is one parameter: one pass in all).
 */
#include <math.h>
#include <string.h>

#include "tapegrad.h"

#define PREFIX_MAX 128
#define NAME_MAX_LEN (PREFIX_MAX + 64)
#define SLOT_TENSORS 3

typedef enum optim_kind { KIND_SGD, KIND_ADAM, KIND_ADAMW } optim_kind;

/* A parameter's state: its step count and up to three buffers of its
 * shape (SGD: momentum_buffer; Adam: exp_avg, exp_avg_sq, max_exp_avg_sq). */
typedef struct optim_slot {
    tg_tensor *step;
    tg_tensor *buf[SLOT_TENSORS];
} optim_slot;

struct tg_optim {
    tg_ctx *ctx;
    optim_kind kind;
    tg_sgd_opts sgd;
    tg_adam_opts adam;
    bool refuse_nonfinite;
    size_t n;
    tg_tensor **params;       /* n */
    optim_slot *slots;        /* n */
    tg_tensor *lr, *initial_lr, *last_epoch;
    tg_st_item *items;        /* n_items, the state in save order */
    size_t n_items;
    bool scheduled;
    tg_lr_schedule sched;
    size_t block;             /* bytes of this allocation */
};

static const char *const SGD_NAMES[SLOT_TENSORS] = {"momentum_buffer", NULL, NULL};
static const char *const ADAM_NAMES[SLOT_TENSORS] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};

static const char *kind_name(optim_kind k)
{
    return k == KIND_SGD ? "sgd" : k == KIND_ADAM ? "adam" : "adamw";
}

/* How many per-parameter buffers the configuration keeps. */
static int slot_count(const tg_optim *o)
{
    if (o->kind == KIND_SGD)
        return o->sgd.momentum != 0 ? 1 : 0;
    return o->adam.amsgrad ? 3 : 2;
}

static const char *slot_name(const tg_optim *o, int j)
{
    return o->kind == KIND_SGD ? SGD_NAMES[j] : ADAM_NAMES[j];
}

static const char *param_name(const tg_tensor *p) { return p->name ? p->name : "(unnamed)"; }

/* ---------------------------------------------------------------- validation */

static int bad_value(tg_ctx *ctx, const char *fn, const char *what, double v, const char *rule)
{
    return TG_ERROR(ctx, TG_EINVAL, "%s: %s = %g; it must be %s", fn, what, v, rule);
}

static int check_nonneg(tg_ctx *ctx, const char *fn, const char *what, double v)
{
    return v >= 0 ? TG_OK : bad_value(ctx, fn, what, v, ">= 0");
}

static int check_sgd(tg_ctx *ctx, const tg_sgd_opts *o)
{
    const char *fn = "optim_sgd";
    if (check_nonneg(ctx, fn, "lr", o->lr) || check_nonneg(ctx, fn, "momentum", o->momentum) ||
        check_nonneg(ctx, fn, "weight_decay", o->weight_decay))
        return TG_EINVAL;
    if (!isfinite(o->dampening))
        return bad_value(ctx, fn, "dampening", o->dampening, "finite");
    if (o->nesterov && (o->momentum <= 0 || o->dampening != 0))
        return TG_ERROR(ctx, TG_EINVAL, "%s: nesterov needs momentum > 0 and dampening 0 "
                        "(momentum = %g, dampening = %g)", fn, o->momentum, o->dampening);
    return TG_OK;
}

static int check_beta(tg_ctx *ctx, const char *fn, const char *what, double b)
{
    return b >= 0 && b < 1 ? TG_OK : bad_value(ctx, fn, what, b, "in [0, 1)");
}

static int check_adam(tg_ctx *ctx, const char *fn, const tg_adam_opts *o)
{
    if (check_nonneg(ctx, fn, "lr", o->lr) || check_beta(ctx, fn, "beta1", o->beta1) ||
        check_beta(ctx, fn, "beta2", o->beta2) || check_nonneg(ctx, fn, "eps", o->eps) ||
        check_nonneg(ctx, fn, "weight_decay", o->weight_decay))
        return TG_EINVAL;
    return TG_OK;
}

static int check_param(tg_ctx *ctx, const char *fn, tg_tensor *const *params, size_t i)
{
    const tg_tensor *p = params[i];
    if (!p)
        return TG_ERROR(ctx, TG_EINVAL, "%s: parameter %zu is NULL", fn, i);
    if (p->ctx != ctx)
        return TG_ERROR(ctx, TG_EINVAL, "%s: parameter %zu ('%s') belongs to another context",
                        fn, i, param_name(p));
    if (!p->requires_grad)
        return TG_ERROR(ctx, TG_EINVAL, "%s: parameter %zu ('%s') does not require grad", fn, i,
                        param_name(p));
    for (size_t j = 0; j < i; j++)
        if (params[j] == p)
            return TG_ERROR(ctx, TG_EINVAL, "%s: parameter %zu ('%s') is also parameter %zu",
                            fn, i, param_name(p), j);
    return TG_OK;
}

static int check_params(tg_ctx *ctx, const char *fn, tg_tensor *const *params, size_t n)
{
    if (!params || n == 0)
        return TG_ERROR(ctx, TG_EINVAL, "%s: %s", fn,
                        !params ? "params is NULL" : "the parameter list is empty");
    for (size_t i = 0; i < n; i++)
        if (check_param(ctx, fn, params, i))
            return TG_EINVAL;
    return TG_OK;
}

static int check_prefix(tg_ctx *ctx, const char *fn, const char *prefix)
{
    if (strlen(prefix) > PREFIX_MAX)
        return TG_ERROR(ctx, TG_EINVAL, "%s: the prefix is %zu bytes long; at most %d", fn,
                        strlen(prefix), PREFIX_MAX);
    return TG_OK;
}

/* ---------------------------------------------------------------- creation */

static tg_tensor *scalar_state(tg_ctx *ctx, const char *prefix, const char *what, tg_dtype dt)
{
    char name[NAME_MAX_LEN];
    snprintf(name, sizeof name, "%s.%s", prefix, what);
    return tg_buffer(ctx, dt, 0, NULL, name);
}

static tg_tensor *param_state(tg_ctx *ctx, const char *prefix, size_t i, const char *what,
                              const tg_tensor *like, tg_dtype dt)
{
    char name[NAME_MAX_LEN];
    snprintf(name, sizeof name, "%s.state.%zu.%s", prefix, i, what);
    return like ? tg_buffer(ctx, dt, like->ndim, like->shape, name)
                : tg_buffer(ctx, dt, 0, NULL, name);
}

static void free_state(tg_ctx *ctx, tg_optim *o)
{
    for (size_t k = 0; k < o->n_items; k++)
        tg_buffer_free(ctx, o->items[k].tensor);
}

static int add_item(tg_optim *o, tg_tensor *t)
{
    if (!t)
        return TG_ENOMEM;
    o->items[o->n_items++] = (tg_st_item){t->name, t};
    return TG_OK;
}

/* Creates every state tensor, recording each in o->items as it is made. */
static int make_state(tg_ctx *ctx, tg_optim *o, const char *prefix, double lr)
{
    if (add_item(o, o->lr = scalar_state(ctx, prefix, "lr", TG_F64)) ||
        add_item(o, o->initial_lr = scalar_state(ctx, prefix, "initial_lr", TG_F64)) ||
        add_item(o, o->last_epoch = scalar_state(ctx, prefix, "last_epoch", TG_I64)))
        return TG_ENOMEM;
    *(double *)o->lr->data = lr;
    *(double *)o->initial_lr->data = lr;
    for (size_t i = 0; i < o->n; i++) {
        const tg_tensor *p = o->params[i];
        optim_slot *s = &o->slots[i];
        if (add_item(o, s->step = param_state(ctx, prefix, i, "step", NULL, TG_I64)))
            return TG_ENOMEM;
        for (int j = 0; j < slot_count(o); j++)
            if (add_item(o, s->buf[j] = param_state(ctx, prefix, i, slot_name(o, j), p, p->dtype)))
                return TG_ENOMEM;
    }
    return TG_OK;
}

/* The struct and its arrays in one block; NULL on out-of-memory. */
static tg_optim *optim_alloc(tg_ctx *ctx, size_t n)
{
    const size_t per_param =
        sizeof(tg_tensor *) + sizeof(optim_slot) + (1 + SLOT_TENSORS) * sizeof(tg_st_item);
    size_t bytes;
    if (__builtin_mul_overflow(n, per_param, &bytes) ||
        __builtin_add_overflow(bytes, sizeof(tg_optim) + 3 * sizeof(tg_st_item), &bytes)) {
        TG_ERROR(ctx, TG_ENOMEM, "optim: %zu parameters are too many", n);
        return NULL;
    }
    tg_optim *o = tg_malloc(ctx, bytes);
    if (!o)
        return NULL;
    memset(o, 0, bytes);
    o->block = bytes;
    o->params = (tg_tensor **)(o + 1);
    o->slots = (optim_slot *)(o->params + n);
    o->items = (tg_st_item *)(o->slots + n);
    return o;
}

static tg_optim *optim_new(tg_ctx *ctx, optim_kind kind, tg_tensor *const *params, size_t n)
{
    tg_optim *o = optim_alloc(ctx, n);
    if (!o)
        return NULL;
    o->ctx = ctx;
    o->kind = kind;
    o->n = n;
    memcpy(o->params, params, n * sizeof *params);
    return o;
}

/* Shared tail of the constructors: o's options are set; make its state. */
static tg_optim *optim_finish(tg_ctx *ctx, tg_optim *o, const char *prefix, double lr)
{
    if (make_state(ctx, o, prefix, lr) == TG_OK)
        return o;
    tg_optim_free(ctx, o);
    return NULL;
}

static bool creation_ok(tg_ctx *ctx, const char *fn, tg_tensor *const *params, size_t n,
                        const void *opts, bool opts_optional)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return false;
    if (!opts && !opts_optional) {
        TG_ERROR(ctx, TG_EINVAL, "%s: opts is NULL", fn);
        return false;
    }
    return check_params(ctx, fn, params, n) == TG_OK;
}

tg_optim *tg_optim_sgd(tg_ctx *ctx, tg_tensor *const *params, size_t n, const tg_sgd_opts *opts)
{
    if (!creation_ok(ctx, "optim_sgd", params, n, opts, false) || check_sgd(ctx, opts))
        return NULL;
    const char *prefix = opts->prefix ? opts->prefix : "optimizer";
    if (check_prefix(ctx, "optim_sgd", prefix))
        return NULL;
    tg_optim *o = optim_new(ctx, KIND_SGD, params, n);
    if (!o)
        return NULL;
    o->sgd = *opts;
    o->sgd.prefix = NULL;
    o->refuse_nonfinite = opts->refuse_nonfinite;
    return optim_finish(ctx, o, prefix, opts->lr);
}

tg_adam_opts tg_adam_defaults(void)
{
    return (tg_adam_opts){.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

static tg_optim *adam_new(tg_ctx *ctx, optim_kind kind, tg_tensor *const *params, size_t n,
                          const tg_adam_opts *opts)
{
    const char *fn = kind == KIND_ADAM ? "optim_adam" : "optim_adamw";
    if (!creation_ok(ctx, fn, params, n, opts, true))
        return NULL;
    tg_adam_opts defaults = tg_adam_defaults();
    if (kind == KIND_ADAMW)
        defaults.weight_decay = 1e-2;
    const tg_adam_opts *a = opts ? opts : &defaults;
    const char *prefix = a->prefix ? a->prefix : "optimizer";
    if (check_adam(ctx, fn, a) || check_prefix(ctx, fn, prefix))
        return NULL;
    tg_optim *o = optim_new(ctx, kind, params, n);
    if (!o)
        return NULL;
    o->adam = *a;
    o->adam.prefix = NULL;
    o->refuse_nonfinite = a->refuse_nonfinite;
    return optim_finish(ctx, o, prefix, a->lr);
}

tg_optim *tg_optim_adam(tg_ctx *ctx, tg_tensor *const *params, size_t n, const tg_adam_opts *opts)
{
    return adam_new(ctx, KIND_ADAM, params, n, opts);
}

tg_optim *tg_optim_adamw(tg_ctx *ctx, tg_tensor *const *params, size_t n,
                         const tg_adam_opts *opts)
{
    return adam_new(ctx, KIND_ADAMW, params, n, opts);
}

void tg_optim_free(tg_ctx *ctx, tg_optim *opt)
{
    if (!opt || !ctx)
        return;
    if (opt->ctx != ctx) {
        TG_ERROR(ctx, TG_EINVAL, "optim_free: the %s optimiser belongs to another context",
                 kind_name(opt->kind));
        return;
    }
    free_state(ctx, opt);
    tg_free(ctx, opt, opt->block);
}

/* ---------------------------------------------------------------- checks before a step */

static int check_handle(tg_ctx *ctx, const char *fn, const tg_optim *o)
{
    if (!ctx)
        return TG_EINVAL;
    if (tg_errcode(ctx) != TG_OK)
        return tg_errcode(ctx);
    if (!o)
        return TG_ERROR(ctx, TG_EINVAL, "%s: the optimiser is NULL", fn);
    if (o->ctx != ctx)
        return TG_ERROR(ctx, TG_EINVAL, "%s: the %s optimiser belongs to another context", fn,
                        kind_name(o->kind));
    return TG_OK;
}

static int check_grad(tg_ctx *ctx, const tg_tensor *p, size_t i)
{
    const tg_tensor *g = p->grad;
    if (g->dtype != p->dtype)
        return TG_ERROR(ctx, TG_EDTYPE, "optim_step: parameter %zu ('%s') is %s but its gradient "
                        "is %s", i, param_name(p), tg_dtype_name(p->dtype),
                        tg_dtype_name(g->dtype));
    if (!tg_same_shape(g, p)) {
        char ps[96], gs[96];
        tg_shape_str(p, ps, sizeof ps);
        tg_shape_str(g, gs, sizeof gs);
        return TG_ERROR(ctx, TG_ESHAPE, "optim_step: parameter %zu ('%s') has shape %s but its "
                        "gradient %s", i, param_name(p), ps, gs);
    }
    return TG_OK;
}

/* Elements per piece of an optimiser's pass; pieces run in parallel when
 * a tensor has at least PAR_GRAIN elements (every element is updated alone,
 * so the thread count changes nothing). */
#define PIECE 8192
#define PAR_GRAIN 32768
/* The loop on the OpenMP threads when cond holds, else on this thread: the
 * choice is made before the construct, because libgomp builds a thread
 * team even for a region whose `if` clause is false (ops/ops_impl.h's
 * TG__PAR_FOR; this layer sees only the public headers). */
#define PAR_FOR(cond, pragma, ...)                                                          \
    do {                                                                                    \
        if (cond) {                                                                         \
            _Pragma(pragma) __VA_ARGS__                                                     \
        } else {                                                                            \
            __VA_ARGS__                                                                     \
        }                                                                                   \
    } while (0)

/* Whether x[0..n) holds a NaN or an Inf: the sum of x - x is 0 for finite
 * values and NaN otherwise, a reduction the compiler may vectorise. */
#define ALL_FINITE(NAME, T)                                        \
    static bool NAME(const T *x, int64_t n)                        \
    {                                                              \
        T acc = 0;                                                 \
        _Pragma("omp simd reduction(+ : acc)")                     \
        for (int64_t k = 0; k < n; k++)                            \
            acc += x[k] - x[k];                                    \
        return acc == 0;                                           \
    }
ALL_FINITE(all_finite_f32, float)
ALL_FINITE(all_finite_f64, double)

static bool piece_finite(const tg_tensor *g, int64_t k0, int64_t k1)
{
    if (g->dtype == TG_F32)
        return all_finite_f32((const float *)g->data + k0, k1 - k0);
    return all_finite_f64((const double *)g->data + k0, k1 - k0);
}

/* The flat index of the first NaN or Inf in g, or -1: a vectorised scan in
 * parallel pieces, then a scalar search only when one was seen. */
static int64_t first_nonfinite(const tg_tensor *g)
{
    const int64_t n = g->numel, pieces = (n + PIECE - 1) / PIECE;
    bool bad = false;
    PAR_FOR(n >= PAR_GRAIN, "omp parallel for schedule(static) reduction(|| : bad)",
    for (int64_t c = 0; c < pieces; c++)
        bad = bad || !piece_finite(g, c * PIECE, c * PIECE + PIECE < n ? c * PIECE + PIECE : n););
    if (!bad)
        return -1;
    TG_DISPATCH_FLOAT(g->dtype, T, {
        const T *x = g->data;
        for (int64_t k = 0; k < n; k++)
            if (!isfinite(x[k]))
                return k;
    });
    return -1;
}

static int check_finite(tg_ctx *ctx, const tg_tensor *p, size_t i)
{
    int64_t k = first_nonfinite(p->grad);
    if (k < 0)
        return TG_OK;
    return TG_ERROR(ctx, TG_ENONFINITE, "optim_step: the gradient of parameter %zu ('%s') holds "
                    "%g at element %lld (of %lld); no parameter or state was changed", i,
                    param_name(p), tg_get(p->grad, k), (long long)k, (long long)p->grad->numel);
}

/* A counter that can still be incremented (a file may have set it). */
static int check_counter(tg_ctx *ctx, const char *fn, const tg_tensor *t)
{
    int64_t c = *(const int64_t *)t->data;
    if (c >= 0 && c < INT64_MAX)
        return TG_OK;
    return TG_ERROR(ctx, TG_EINVAL, "%s: %s = %lld; a counter must be in [0, %lld)", fn, t->name,
                    (long long)c, (long long)INT64_MAX);
}

static int check_lr(tg_ctx *ctx, const char *fn, const tg_tensor *lr)
{
    double v = *(const double *)lr->data;
    return v >= 0 ? TG_OK : bad_value(ctx, fn, lr->name, v, ">= 0");
}

static int check_step(tg_ctx *ctx, const tg_optim *o)
{
    if (check_lr(ctx, "optim_step", o->lr))
        return TG_EINVAL;
    for (size_t i = 0; i < o->n; i++) {
        const tg_tensor *p = o->params[i];
        if (!p->grad)
            continue;
        int rc = check_grad(ctx, p, i);
        if (!rc)
            rc = check_counter(ctx, "optim_step", o->slots[i].step);
        if (!rc && o->refuse_nonfinite)
            rc = check_finite(ctx, p, i);
        if (rc)
            return rc;
    }
    return TG_OK;
}

/* ---------------------------------------------------------------- kernels */

/* The scalars of an update, converted once to the parameter's dtype. */
typedef struct sgd_k {
    double wd, mom, keep, neg_lr;
    bool decay, nesterov, first;
} sgd_k;

typedef struct adam_k {
    double b1, c1, b2, c2, wd, shrink, sqrt_corr2, eps, neg_step;
    bool decoupled, l2;
} adam_k;

/*
 * torch.optim.SGD over elements [0, n) of one parameter, w its values, g
 * its gradient and b its momentum buffer (NULL without momentum; first:
 * not set yet). The loop body is inlined once per combination of the
 * options, each a constant there, so that every version vectorises; one
 * body for float and double.
 */
#define SGD_RANGE(NAME, T)                                                                    \
    static inline __attribute__((always_inline)) void NAME##_loop(                            \
        const sgd_k *h, T *restrict w, const T *restrict g, T *restrict b, int64_t n,         \
        bool decay, bool momentum, bool nesterov, bool first)                                 \
    {                                                                                         \
        const T wd = (T)h->wd, mom = (T)h->mom, keep = (T)h->keep, neg_lr = (T)h->neg_lr;     \
        _Pragma("omp simd")                                                                   \
        for (int64_t k = 0; k < n; k++) {                                                     \
            T d = g[k];                                                                       \
            if (decay)                                                                        \
                d = d + wd * w[k];                                                            \
            if (momentum && b) { /* b is set whenever momentum is (for the analyzer) */  \
                T bk = first ? d : b[k] * mom + keep * d;                                     \
                b[k] = bk;                                                                    \
                d = nesterov ? d + mom * bk : bk;                                             \
            }                                                                                 \
            w[k] = w[k] + neg_lr * d;                                                         \
        }                                                                                     \
    }                                                                                         \
    static void NAME(const sgd_k *h, T *restrict w, const T *restrict g, T *restrict b,       \
                     int64_t n)                                                               \
    {                                                                                         \
        switch ((h->decay ? 8 : 0) | (b ? 4 : 0) | (h->nesterov ? 2 : 0) | (h->first ? 1 : 0)) { \
        case 0: case 2: case 1: case 3: NAME##_loop(h, w, g, b, n, 0, 0, 0, 0); break;        \
        case 8: case 10: case 9: case 11: NAME##_loop(h, w, g, b, n, 1, 0, 0, 0); break;      \
        case 4: NAME##_loop(h, w, g, b, n, 0, 1, 0, 0); break;                                \
        case 5: NAME##_loop(h, w, g, b, n, 0, 1, 0, 1); break;                                \
        case 6: NAME##_loop(h, w, g, b, n, 0, 1, 1, 0); break;                                \
        case 7: NAME##_loop(h, w, g, b, n, 0, 1, 1, 1); break;                                \
        case 12: NAME##_loop(h, w, g, b, n, 1, 1, 0, 0); break;                               \
        case 13: NAME##_loop(h, w, g, b, n, 1, 1, 0, 1); break;                               \
        case 14: NAME##_loop(h, w, g, b, n, 1, 1, 1, 0); break;                               \
        default: NAME##_loop(h, w, g, b, n, 1, 1, 1, 1); break;                               \
        }                                                                                     \
    }
SGD_RANGE(sgd_range_f32, float)
SGD_RANGE(sgd_range_f64, double)

/*
 * torch.optim.Adam (decoupled false) or AdamW (true) over elements [0, n)
 * of one parameter: w, g, the moments m and v, and vmax (NULL without
 * amsgrad). As in SGD_RANGE, one inlined loop per combination of options.
 */
#define ADAM_RANGE(NAME, T)                                                                   \
    static inline __attribute__((always_inline)) void NAME##_loop(                            \
        const adam_k *h, T *restrict w, const T *restrict g, T *restrict m, T *restrict v,    \
        T *restrict vmax, int64_t n, bool decoupled, bool l2, bool ams)                       \
    {                                                                                         \
        const T b1 = (T)h->b1, c1 = (T)h->c1, b2 = (T)h->b2, c2 = (T)h->c2;                   \
        const T wd = (T)h->wd, shrink = (T)h->shrink, sqrt_corr2 = (T)h->sqrt_corr2;          \
        const T eps = (T)h->eps, neg_step = (T)h->neg_step;                                   \
        _Pragma("omp simd")                                                                   \
        for (int64_t k = 0; k < n; k++) {                                                     \
            T gk = g[k], wk = w[k];                                                           \
            if (decoupled)                                                                    \
                wk = wk * shrink;                                                             \
            else if (l2)                                                                      \
                gk = gk + wd * wk;                                                            \
            T mk = m[k] * b1 + c1 * gk;                                                       \
            T second = v[k] * b2 + c2 * gk * gk;                                              \
            m[k] = mk;                                                                        \
            v[k] = second;                                                                    \
            if (ams) {                                                                        \
                second = isgreaterequal(vmax[k], second) ? vmax[k] : second;                  \
                vmax[k] = second;                                                             \
            }                                                                                 \
            const T denom = (T)sqrt(second) / sqrt_corr2 + eps;                               \
            w[k] = wk + neg_step * mk / denom;                                                \
        }                                                                                     \
    }                                                                                         \
    static void NAME(const adam_k *h, T *restrict w, const T *restrict g, T *restrict m,      \
                     T *restrict v, T *restrict vmax, int64_t n)                              \
    {                                                                                         \
        switch ((h->decoupled ? 4 : h->l2 ? 2 : 0) | (vmax ? 1 : 0)) {                        \
        case 0: NAME##_loop(h, w, g, m, v, vmax, n, 0, 0, 0); break;                          \
        case 1: NAME##_loop(h, w, g, m, v, vmax, n, 0, 0, 1); break;                          \
        case 2: NAME##_loop(h, w, g, m, v, vmax, n, 0, 1, 0); break;                          \
        case 3: NAME##_loop(h, w, g, m, v, vmax, n, 0, 1, 1); break;                          \
        case 4: NAME##_loop(h, w, g, m, v, vmax, n, 1, 0, 0); break;                          \
        default: NAME##_loop(h, w, g, m, v, vmax, n, 1, 0, 1); break;                         \
        }                                                                                     \
    }
ADAM_RANGE(adam_range_f32, float)
ADAM_RANGE(adam_range_f64, double)

/* Piece [k0, k1) of one parameter's SGD step. */
static void sgd_piece(const sgd_k *h, tg_tensor *p, tg_tensor *buf, int64_t k0, int64_t k1)
{
    if (p->dtype == TG_F32)
        sgd_range_f32(h, (float *)p->data + k0, (const float *)p->grad->data + k0,
                      buf ? (float *)buf->data + k0 : NULL, k1 - k0);
    else
        sgd_range_f64(h, (double *)p->data + k0, (const double *)p->grad->data + k0,
                      buf ? (double *)buf->data + k0 : NULL, k1 - k0);
}

/* Piece [k0, k1) of one parameter's Adam step. */
static void adam_piece(const adam_k *h, tg_tensor *p, const optim_slot *s, bool ams, int64_t k0,
                       int64_t k1)
{
    if (p->dtype == TG_F32)
        adam_range_f32(h, (float *)p->data + k0, (const float *)p->grad->data + k0,
                       (float *)s->buf[0]->data + k0, (float *)s->buf[1]->data + k0,
                       ams ? (float *)s->buf[2]->data + k0 : NULL, k1 - k0);
    else
        adam_range_f64(h, (double *)p->data + k0, (const double *)p->grad->data + k0,
                       (double *)s->buf[0]->data + k0, (double *)s->buf[1]->data + k0,
                       ams ? (double *)s->buf[2]->data + k0 : NULL, k1 - k0);
}

/* torch.optim.SGD on one parameter; buf is NULL without momentum, and
 * first says that it has not been set yet. One pass over its memory. */
static void sgd_update(const tg_sgd_opts *o, tg_tensor *p, tg_tensor *buf, bool first, double lr)
{
    const sgd_k h = {o->weight_decay, o->momentum, 1 - o->dampening, -lr,
                     o->weight_decay != 0, o->nesterov, first};
    const int64_t n = p->numel, pieces = (n + PIECE - 1) / PIECE;
    PAR_FOR(n >= PAR_GRAIN, "omp parallel for schedule(static)",
    for (int64_t c = 0; c < pieces; c++)
        sgd_piece(&h, p, buf, c * PIECE, c * PIECE + PIECE < n ? c * PIECE + PIECE : n););
}

/* torch.optim.Adam (decoupled false) or AdamW (true) on one parameter, at
 * step number `step` (counted from 1). One pass over its memory. */
static void adam_update(const tg_adam_opts *o, bool decoupled, tg_tensor *p, const optim_slot *s,
                        int64_t step, double lr)
{
    const double corr1 = 1 - pow(o->beta1, (double)step);
    const double corr2 = 1 - pow(o->beta2, (double)step);
    const adam_k h = {o->beta1, 1 - o->beta1, o->beta2, 1 - o->beta2, o->weight_decay,
                      1 - lr * o->weight_decay, sqrt(corr2), o->eps, -(lr / corr1),
                      decoupled, !decoupled && o->weight_decay != 0};
    const int64_t n = p->numel, pieces = (n + PIECE - 1) / PIECE;
    PAR_FOR(n >= PAR_GRAIN, "omp parallel for schedule(static)",
    for (int64_t c = 0; c < pieces; c++)
        adam_piece(&h, p, s, o->amsgrad, c * PIECE, c * PIECE + PIECE < n ? c * PIECE + PIECE : n););
}

/* ---------------------------------------------------------------- the step */

static void update_param(tg_optim *o, size_t i, double lr)
{
    tg_tensor *p = o->params[i];
    optim_slot *s = &o->slots[i];
    int64_t *count = s->step->data;
    if (o->kind == KIND_SGD)
        sgd_update(&o->sgd, p, s->buf[0], *count == 0, lr);
    else
        adam_update(&o->adam, o->kind == KIND_ADAMW, p, s, *count + 1, lr);
    *count += 1;
    tg_mark_dirty(p);
    tg_mark_dirty(s->step);
    for (int j = 0; j < slot_count(o); j++)
        tg_mark_dirty(s->buf[j]);
}

tg_status tg_optim_step(tg_ctx *ctx, tg_optim *opt)
{
    int rc = check_handle(ctx, "optim_step", opt);
    if (!rc)
        rc = check_step(ctx, opt);
    if (rc)
        return rc;
    const double lr = *(const double *)opt->lr->data;
    for (size_t i = 0; i < opt->n; i++)
        if (opt->params[i]->grad)
            update_param(opt, i, lr);
    return TG_OK;
}

tg_status tg_optim_zero_grad(tg_ctx *ctx, tg_optim *opt)
{
    int rc = check_handle(ctx, "optim_zero_grad", opt);
    if (rc)
        return rc;
    for (size_t i = 0; i < opt->n; i++)
        tg_tensor_zero_grad_ex(opt->params[i], TG_SET_TO_NONE);
    return TG_OK;
}

static void set_f64(tg_tensor *t, double v)
{
    *(double *)t->data = v;
    tg_mark_dirty(t);
}

tg_status tg_optim_set_lr(tg_ctx *ctx, tg_optim *opt, double lr)
{
    int rc = check_handle(ctx, "optim_set_lr", opt);
    if (!rc)
        rc = check_nonneg(ctx, "optim_set_lr", "lr", lr);
    if (rc)
        return rc;
    set_f64(opt->lr, lr);
    return TG_OK;
}

double tg_optim_lr(const tg_optim *opt) { return opt ? *(const double *)opt->lr->data : NAN; }

const tg_st_item *tg_optim_state(const tg_optim *opt, size_t *n)
{
    if (n)
        *n = opt ? opt->n_items : 0;
    return opt ? opt->items : NULL;
}

/* ---------------------------------------------------------------- schedules */

static const double PI = 3.14159265358979323846;

static int check_schedule(tg_ctx *ctx, const tg_lr_schedule *s)
{
    const char *fn = "optim_set_schedule";
    switch (s->kind) {
    case TG_LR_STEP:
        if (s->step_size <= 0)
            return TG_ERROR(ctx, TG_EINVAL, "%s: step_size = %lld; it must be > 0", fn,
                            (long long)s->step_size);
        return s->gamma >= 0 && isfinite(s->gamma)
                   ? TG_OK : bad_value(ctx, fn, "gamma", s->gamma, ">= 0 and finite");
    case TG_LR_COSINE:
        if (s->t_max <= 0 || s->t_max > INT64_MAX / 2)
            return TG_ERROR(ctx, TG_EINVAL, "%s: t_max = %lld; it must be in [1, %lld]", fn,
                            (long long)s->t_max, (long long)(INT64_MAX / 2));
        return s->eta_min >= 0 && isfinite(s->eta_min)
                   ? TG_OK : bad_value(ctx, fn, "eta_min", s->eta_min, ">= 0 and finite");
    default:
        return TG_ERROR(ctx, TG_EINVAL, "%s: kind = %d; it must be TG_LR_STEP or TG_LR_COSINE",
                        fn, (int)s->kind);
    }
}

tg_status tg_optim_set_schedule(tg_ctx *ctx, tg_optim *opt, const tg_lr_schedule *s)
{
    int rc = check_handle(ctx, "optim_set_schedule", opt);
    if (!rc && s)
        rc = check_schedule(ctx, s);
    if (rc)
        return rc;
    opt->scheduled = s != NULL;
    if (!s)
        return TG_OK;
    opt->sched = *s;
    set_f64(opt->initial_lr, *(const double *)opt->lr->data);
    *(int64_t *)opt->last_epoch->data = 0;
    tg_mark_dirty(opt->last_epoch);
    return TG_OK;
}

/* The learning rate of epoch e from that of epoch e - 1 (PyTorch's
 * recursive forms; base is initial_lr). */
static double next_lr(const tg_lr_schedule *s, double lr, double base, int64_t e)
{
    if (s->kind == TG_LR_STEP)
        return e % s->step_size == 0 ? lr * s->gamma : lr;
    const int64_t t = s->t_max;
    if ((e - 1 - t) % (2 * t) == 0)
        return lr + (base - s->eta_min) * (1 - cos(PI / (double)t)) / 2;
    return (1 + cos(PI * (double)e / (double)t)) / (1 + cos(PI * (double)(e - 1) / (double)t)) *
               (lr - s->eta_min) + s->eta_min;
}

tg_status tg_optim_schedule_step(tg_ctx *ctx, tg_optim *opt)
{
    const char *fn = "optim_schedule_step";
    int rc = check_handle(ctx, fn, opt);
    if (!rc && !opt->scheduled)
        rc = TG_ERROR(ctx, TG_ESTATE, "%s: the %s optimiser has no schedule "
                      "(tg_optim_set_schedule)", fn, kind_name(opt->kind));
    if (!rc)
        rc = check_counter(ctx, fn, opt->last_epoch);
    if (rc)
        return rc;
    int64_t *e = opt->last_epoch->data;
    *e += 1;
    tg_mark_dirty(opt->last_epoch);
    set_f64(opt->lr, next_lr(&opt->sched, *(const double *)opt->lr->data,
                             *(const double *)opt->initial_lr->data, *e));
    return TG_OK;
}

/* ---------------------------------------------------------------- clipping */

static double sum_squares(const tg_tensor *g)
{
    double acc = 0;
    TG_DISPATCH_FLOAT(g->dtype, T, {
        const T *x = g->data;
        for (int64_t k = 0; k < g->numel; k++)
            acc += (double)x[k] * (double)x[k];
    });
    return acc;
}

static void scale(tg_tensor *g, double coef)
{
    TG_DISPATCH_FLOAT(g->dtype, T, {
        T *x = g->data;
        const T c = (T)coef;
        for (int64_t k = 0; k < g->numel; k++)
            x[k] = x[k] * c;
    });
    tg_mark_dirty(g);
}

static int check_clip_args(tg_ctx *ctx, tg_tensor *const *params, size_t n, double max_norm)
{
    const char *fn = "clip_grad_norm";
    if (!params && n > 0)
        return TG_ERROR(ctx, TG_EINVAL, "%s: params is NULL (n = %zu)", fn, n);
    for (size_t i = 0; i < n; i++) {
        if (!params[i])
            return TG_ERROR(ctx, TG_EINVAL, "%s: parameter %zu is NULL", fn, i);
        if (params[i]->ctx != ctx)
            return TG_ERROR(ctx, TG_EINVAL, "%s: parameter %zu ('%s') belongs to another context",
                            fn, i, param_name(params[i]));
    }
    return max_norm >= 0 ? TG_OK : bad_value(ctx, fn, "max_norm", max_norm, ">= 0");
}

tg_status tg_clip_grad_norm(tg_ctx *ctx, tg_tensor *const *params, size_t n, double max_norm,
                            bool error_if_nonfinite, double *total_norm)
{
    if (!ctx)
        return TG_EINVAL;
    if (tg_errcode(ctx) != TG_OK)
        return tg_errcode(ctx);
    if (check_clip_args(ctx, params, n, max_norm))
        return TG_EINVAL;
    double sq = 0;
    for (size_t i = 0; i < n; i++)
        if (params[i]->grad)
            sq += sum_squares(params[i]->grad);
    const double total = sqrt(sq);
    if (total_norm)
        *total_norm = total;
    if (error_if_nonfinite && !isfinite(total))
        return TG_ERROR(ctx, TG_ENONFINITE, "clip_grad_norm: the total norm of the gradients of "
                        "%zu parameters is %g; nothing was clipped", n, total);
    const double coef = max_norm / (total + 1e-6);
    if (coef < 1)
        for (size_t i = 0; i < n; i++)
            if (params[i]->grad)
                scale(params[i]->grad, coef);
    return TG_OK;
}
