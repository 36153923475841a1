/*
 * tensor.c: creating, filling, converting and printing tensors; parameters
 * and buffers.
 *
 * A step tensor is a header and its data, both in the step arena, stamped
 * with its context and step. A parameter or buffer is one allocator block:
 * header, name and data, linked into the context's list of its kind; a
 * parameter's gradient is a second block of the same kind, owned by the
 * parameter's record. Those lists are the only records of what is live:
 * nothing is freed on the word of a field in the public struct.
 */
#include "impl.h"

#include <inttypes.h>
#include <math.h>

const char *tg_dtype_name(tg_dtype dtype)
{
    switch (dtype) {
    case TG_F32: return "float32";
    case TG_F64: return "float64";
    case TG_I64: return "int64";
    default: return "?";
    }
}

size_t tg_dtype_size(tg_dtype dtype)
{
    switch (dtype) {
    case TG_F32: return 4;
    case TG_F64: return 8;
    case TG_I64: return 8;
    default: return 0;
    }
}

bool tg_dtype_is_float(tg_dtype dtype) { return dtype == TG_F32 || dtype == TG_F64; }

int tg__shape_fmt(char *buf, size_t size, int ndim, const int64_t *shape)
{
    int n = snprintf(buf, size, "(");
    for (int i = 0; i < ndim; i++) {
        size_t at = (size_t)n < size ? (size_t)n : size;
        n += snprintf(buf + at, size - at, i ? ", %" PRId64 : "%" PRId64, shape[i]);
    }
    size_t at = (size_t)n < size ? (size_t)n : size;
    n += snprintf(buf + at, size - at, ")");
    return n;
}

int tg_shape_str(const tg_tensor *t, char *buf, size_t size)
{
    if (!t)
        return snprintf(buf, size, "(null)");
    return tg__shape_fmt(buf, size, t->ndim, t->shape);
}

const char *tg__shape_s(const tg_tensor *t)
{
    static _Thread_local char bufs[4][96];
    static _Thread_local int next;
    char *b = bufs[next++ & 3];
    tg_shape_str(t, b, sizeof bufs[0]);
    return b;
}

bool tg_same_shape(const tg_tensor *a, const tg_tensor *b)
{
    if (!a || !b || a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

int64_t tg__numel(int ndim, const int64_t *shape)
{
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        if (shape[i] == 0)
            return 0; /* empty wherever the 0 stands */
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, shape[i], &n))
            return -1;
    return n;
}

tg_status tg__check_shape(tg_ctx *ctx, const char *who, tg_dtype dtype, int ndim,
                          const int64_t *shape, int64_t *numel)
{
    if (tg_dtype_size(dtype) == 0)
        return TG_ERROR(ctx, TG_EDTYPE, "%s: unknown dtype %d", who, (int)dtype);
    if (ndim < 0 || ndim > TG_MAX_DIMS)
        return TG_ERROR(ctx, TG_EINVAL, "%s: %d dimensions; tensors have 0 to %d", who, ndim,
                        TG_MAX_DIMS);
    if (ndim > 0 && !shape)
        return TG_ERROR(ctx, TG_EINVAL, "%s: shape is NULL", who);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return TG_ERROR(ctx, TG_EINVAL, "%s: dimension %d is %" PRId64 "; must be >= 0", who,
                            i, shape[i]);
    int64_t n = tg__numel(ndim, shape);
    /* the byte count must fit in size_t and int64 too */
    if (n < 0 || n > INT64_MAX / 8) {
        char buf[160];
        tg__shape_fmt(buf, sizeof buf, ndim, shape);
        return TG_ERROR(ctx, TG_ESHAPE, "%s: shape %s has more elements than can be addressed",
                        who, buf);
    }
    *numel = n;
    return TG_OK;
}

const char *tg__tensor_s(const tg_tensor *t)
{
    static _Thread_local char bufs[4][200];
    static _Thread_local int next;
    char *b = bufs[next++ & 3];
    char shape[96];
    tg_shape_str(t, shape, sizeof shape);
    if (t && t->name)
        snprintf(b, sizeof bufs[0], "'%.60s' %s %s", t->name, shape, tg_dtype_name(t->dtype));
    else
        snprintf(b, sizeof bufs[0], "%s %s", shape, t ? tg_dtype_name(t->dtype) : "");
    return b;
}

/* A tensor is alive when it is persistent or was made in the current step. */
static bool alive(const tg_ctx *ctx, const tg_tensor *t)
{
    return t->ctx == ctx && (t->persistent || t->step == ctx->step);
}

tg_status tg__check_tensor(tg_ctx *ctx, const char *who, const char *what, const tg_tensor *t)
{
    if (!t)
        return TG_ERROR(ctx, TG_EINVAL, "%s: %s is NULL", who, what);
    if (t->ctx != ctx)
        return TG_ERROR(ctx, TG_EINVAL, "%s: %s belongs to another context", who, what);
    if (tg_dtype_size(t->dtype) == 0)
        return TG_ERROR(ctx, TG_EDTYPE, "%s: %s has an unknown dtype %d", who, what,
                        (int)t->dtype);
    if (!t->persistent && t->step != ctx->step)
        return TG_ERROR(ctx, TG_ESTATE,
                        "%s: %s %s is from an ended step (made in step %llu, this is step %llu; "
                        "tg_reset ended it)",
                        who, what, tg__tensor_s(t), (unsigned long long)t->step,
                        (unsigned long long)ctx->step);
    return TG_OK;
}

tg_status tg__check_inputs(tg_ctx *ctx, const char *who, tg_tensor *const *in, int n)
{
    for (int i = 0; i < n; i++) {
        if (in[i] && tg_dtype_size(in[i]->dtype) && alive(ctx, in[i]))
            continue; /* the common case: no message to format, no list to walk */
        char what[32];
        snprintf(what, sizeof what, "input %d", i);
        return tg__check_tensor(ctx, who, what, in[i]);
    }
    return TG_OK;
}

tg_status tg__same_dtype(tg_ctx *ctx, const char *who, const tg_tensor *a, const tg_tensor *b)
{
    if (a->dtype != b->dtype)
        return TG_ERROR(ctx, TG_EDTYPE, "%s: inputs are %s and %s; convert one with tg_to_dtype",
                        who, tg_dtype_name(a->dtype), tg_dtype_name(b->dtype));
    return TG_OK;
}

int tg__axis(tg_ctx *ctx, const char *who, int axis, int ndim)
{
    int a = axis < 0 ? axis + ndim : axis;
    if (a < 0 || a >= ndim) {
        TG_ERROR(ctx, TG_EINVAL, "%s: axis %d is out of range for %d dimensions", who, axis, ndim);
        return -1;
    }
    return a;
}

/* Copying this clears a header with a few vector stores; gcc makes a
 * memset of the same size a `rep stos`, whose start-up cost was the largest
 * single item of a small network's step. */
static const tg_tensor blank_tensor;

static void set_shape(tg_ctx *ctx, tg_tensor *t, tg_dtype dtype, int ndim, const int64_t *shape,
                      int64_t numel)
{
    *t = blank_tensor;
    t->ctx = ctx;
    t->step = ctx->step;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < TG_MAX_DIMS; i++)
        t->shape[i] = i < ndim ? shape[i] : 1;
    t->numel = numel;
}

tg_tensor *tg__tensor_new(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                          bool with_data)
{
    int64_t numel;
    if (tg__check_shape(ctx, ctx->cur_op ? ctx->cur_op : "tensor", dtype, ndim, shape, &numel))
        return NULL;
    size_t head = TG__ROUND_UP(sizeof(tg_tensor), TG__ALIGN);
    size_t bytes = with_data ? (size_t)numel * tg_dtype_size(dtype) : 0;
    unsigned char *p = tg__arena_alloc(ctx, head + bytes);
    if (!p)
        return NULL;
    tg_tensor *t = (tg_tensor *)p;
    set_shape(ctx, t, dtype, ndim, shape, numel);
    t->data = with_data ? p + head : NULL;
    return t;
}

tg_tensor *tg_empty(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape)
{
    TG__GUARD(ctx, NULL);
    return tg__tensor_new(ctx, dtype, ndim, shape, true);
}

tg_tensor *tg_zeros(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape)
{
    tg_tensor *t = tg_empty(ctx, dtype, ndim, shape);
    if (t)
        memset(t->data, 0, (size_t)t->numel * tg_dtype_size(dtype));
    return t;
}

tg_tensor *tg_full(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape, double value)
{
    tg_tensor *t = tg_empty(ctx, dtype, ndim, shape);
    if (t)
        tg_fill(ctx, t, value);
    return t;
}

tg_tensor *tg_ones(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape)
{
    return tg_full(ctx, dtype, ndim, shape, 1.0);
}

tg_tensor *tg_from_data(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                        const void *data)
{
    TG__GUARD(ctx, NULL);
    if (!data) {
        TG_ERROR(ctx, TG_EINVAL, "from_data: data is NULL");
        return NULL;
    }
    tg_tensor *t = tg_empty(ctx, dtype, ndim, shape);
    if (t)
        memcpy(t->data, data, (size_t)t->numel * tg_dtype_size(dtype));
    return t;
}

tg_tensor *tg_from_f64(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                       const double *values)
{
    TG__GUARD(ctx, NULL);
    if (!values) {
        TG_ERROR(ctx, TG_EINVAL, "from_f64: values is NULL");
        return NULL;
    }
    tg_tensor *t = tg_empty(ctx, dtype, ndim, shape);
    if (t)
        tg_assign_f64(ctx, t, values);
    return t;
}

static tg_status check_random(tg_ctx *ctx, const char *who, tg_dtype dtype, double a, double b,
                               const char *an, const char *bn, bool ordered)
{
    if (!tg_dtype_is_float(dtype))
        return TG_ERROR(ctx, TG_EDTYPE, "%s: dtype %s; random tensors are float32 or float64", who,
                        tg_dtype_name(dtype));
    if (!isfinite(a) || !isfinite(b))
        return TG_ERROR(ctx, TG_EINVAL, "%s: %s = %s and %s = %s must be finite", who, an,
                        tg__num(a), bn, tg__num(b));
    if (ordered ? a > b : b < 0)
        return TG_ERROR(ctx, TG_EINVAL, ordered ? "%s: %s = %s is above %s = %s"
                                                : "%s: %s = %s, %s = %s is negative",
                        who, an, tg__num(a), bn, tg__num(b));
    return TG_OK;
}

tg_tensor *tg_rand(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape, double lo,
                   double hi)
{
    TG__GUARD(ctx, NULL);
    if (check_random(ctx, "rand", dtype, lo, hi, "lo", "hi", true))
        return NULL;
    tg_tensor *t = tg_empty(ctx, dtype, ndim, shape);
    if (t)
        TG__DISPATCH(dtype, T, {
            T *d = t->data;
            for (int64_t i = 0; i < t->numel; i++)
                d[i] = (T)(lo + (hi - lo) * tg_rand_uniform(ctx));
        });
    return t;
}

tg_tensor *tg_randn(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape, double mean,
                    double std)
{
    TG__GUARD(ctx, NULL);
    if (check_random(ctx, "randn", dtype, mean, std, "mean", "std", false))
        return NULL;
    tg_tensor *t = tg_empty(ctx, dtype, ndim, shape);
    if (t)
        TG__DISPATCH(dtype, T, {
            T *d = t->data;
            for (int64_t i = 0; i < t->numel; i++)
                d[i] = (T)(mean + std * tg_rand_normal(ctx));
        });
    return t;
}

tg_tensor *tg_to_dtype(tg_ctx *ctx, const tg_tensor *src, tg_dtype dtype)
{
    TG__GUARD(ctx, NULL);
    if (tg__check_tensor(ctx, "to_dtype", "src", src))
        return NULL;
    tg_tensor *t = tg_empty(ctx, dtype, src->ndim, src->shape);
    if (t && tg_assign(ctx, t, src) != TG_OK)
        return NULL;
    return t;
}

tg_tensor *tg_copy(tg_ctx *ctx, const tg_tensor *src)
{
    TG__GUARD(ctx, NULL);
    if (tg__check_tensor(ctx, "copy", "src", src))
        return NULL;
    return tg_to_dtype(ctx, src, src->dtype);
}

tg_status tg_assign(tg_ctx *ctx, tg_tensor *dst, const tg_tensor *src)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (tg__check_tensor(ctx, "assign", "dst", dst) || tg__check_tensor(ctx, "assign", "src", src))
        return ctx->errcode;
    if (dst->numel != src->numel || !tg_same_shape(dst, src))
        return TG_ERROR(ctx, TG_ESHAPE, "assign: dst is %s but src is %s", tg__shape_s(dst),
                        tg__shape_s(src));
    tg__bump(dst);
    if (dst->data == src->data)
        return TG_OK;
    if (dst->dtype == src->dtype) {
        memmove(dst->data, src->data, (size_t)src->numel * tg_dtype_size(src->dtype));
        return TG_OK;
    }
    for (int64_t i = 0; i < src->numel; i++)
        tg_set(dst, i, tg_get(src, i));
    return TG_OK;
}

tg_status tg_assign_f64(tg_ctx *ctx, tg_tensor *t, const double *values)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (tg__check_tensor(ctx, "assign_f64", "t", t))
        return ctx->errcode;
    if (!values)
        return TG_ERROR(ctx, TG_EINVAL, "assign_f64: values is NULL");
    for (int64_t i = 0; i < t->numel; i++)
        tg_set(t, i, values[i]);
    tg__bump(t);
    return TG_OK;
}

/* double to int64, truncated toward zero, saturated, NaN to 0: never UB */
static int64_t to_i64(double v)
{
    if (v != v)
        return 0;
    if (v >= 0x1p63)
        return INT64_MAX;
    if (v < -0x1p63)
        return INT64_MIN;
    return (int64_t)v;
}

tg_status tg_fill(tg_ctx *ctx, tg_tensor *t, double value)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (tg__check_tensor(ctx, "fill", "t", t))
        return ctx->errcode;
    if (t->dtype == TG_I64) {
        int64_t v = to_i64(value), *d = t->data;
        for (int64_t i = 0; i < t->numel; i++)
            d[i] = v;
    } else {
        TG__DISPATCH(t->dtype, T, {
            T *d = t->data;
            for (int64_t i = 0; i < t->numel; i++)
                d[i] = (T)value;
        });
    }
    tg__bump(t);
    return TG_OK;
}

void tg_mark_dirty(tg_tensor *t)
{
    if (t)
        tg__bump(t);
}

uint64_t tg_tensor_version(const tg_tensor *t)
{
    return t ? (t->base ? t->base : t)->version : 0;
}

tg_status tg_set_requires_grad(tg_ctx *ctx, tg_tensor *t, bool requires_grad)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (tg__check_tensor(ctx, "set_requires_grad", "t", t))
        return ctx->errcode;
    if (t->node)
        return TG_ERROR(ctx, TG_EINVAL,
                        "set_requires_grad: the tensor was made by a recorded %s; only leaves "
                        "can be marked", t->node->op->name);
    if (requires_grad && !tg_dtype_is_float(t->dtype))
        return TG_ERROR(ctx, TG_EDTYPE,
                        "set_requires_grad: %s is int64; only float tensors have gradients",
                        tg__tensor_s(t));
    if (t->kind == TG_KIND_BUFFER || t->kind == TG_KIND_GRAD || (t->kind == TG_KIND_PARAM && !requires_grad))
        return TG_ERROR(ctx, TG_EINVAL, "set_requires_grad: %s is a %s; its flag is fixed",
                        tg__tensor_s(t), t->kind == TG_KIND_BUFFER ? "buffer"
                                         : t->kind == TG_KIND_GRAD ? "gradient" : "parameter");
    t->requires_grad = requires_grad;
    return TG_OK;
}

tg_tensor *tg_set_name(tg_ctx *ctx, tg_tensor *t, const char *name)
{
    TG__GUARD(ctx, NULL);
    if (tg__check_tensor(ctx, "set_name", "t", t))
        return NULL;
    tg__ptensor *p = t->persistent ? tg__param_record(ctx, t) : NULL;
    if (t->persistent && !p) {
        TG_ERROR(ctx, TG_EINVAL, "set_name: a gradient takes its parameter's name");
        return NULL;
    }
    char *copy = NULL;
    if (name) {
        /* copied before the old name is released: name may be t->name itself */
        size_t len = strlen(name) + 1;
        copy = p ? tg__malloc(ctx, len) : tg__arena_alloc(ctx, len);
        if (!copy)
            return NULL;
        memcpy(copy, name, len);
    }
    if (p && p->renamed)
        tg__free(ctx, p->renamed, strlen(p->renamed) + 1);
    if (p)
        p->renamed = copy;
    t->name = copy;
    return t;
}

tg__ptensor *tg__ptensor_new(tg_ctx *ctx, const char *who, tg_kind kind, tg_dtype dtype,
                             int ndim, const int64_t *shape, const char *name, bool with_data)
{
    int64_t numel;
    if (tg__check_shape(ctx, who, dtype, ndim, shape, &numel))
        return NULL;
    size_t name_len = name ? strlen(name) + 1 : 0;
    size_t head = sizeof(tg__ptensor) + name_len;
    size_t bytes = with_data ? (size_t)numel * tg_dtype_size(dtype) : 0;
    size_t block = head + TG__ALIGN + bytes;
    unsigned char *raw = tg__malloc(ctx, block);
    if (!raw)
        return NULL;
    tg__ptensor *p = (tg__ptensor *)raw;
    memset(p, 0, sizeof *p);
    set_shape(ctx, &p->t, dtype, ndim, shape, numel);
    p->block = block;
    if (name) {
        memcpy(p + 1, name, name_len);
        p->t.name = (const char *)(p + 1);
    }
    uintptr_t data = ((uintptr_t)(raw + head) + TG__ALIGN - 1) & ~(uintptr_t)(TG__ALIGN - 1);
    p->t.data = with_data ? (void *)data : NULL;
    if (with_data)
        memset(p->t.data, 0, bytes);
    p->t.persistent = true;
    p->t.kind = kind;
    p->t.step = 0;
    return p;
}

static tg_tensor *plist_add(tg_ctx *ctx, tg__plist *l, tg__ptensor *p)
{
    p->prev = l->last;
    if (l->last)
        l->last->next = p;
    else
        l->first = p;
    l->last = p;
    l->n++;
    return &p->t;
}

static tg__ptensor *plist_find(const tg__plist *l, const tg_tensor *t)
{
    for (tg__ptensor *p = l->first; p; p = p->next)
        if (&p->t == t)
            return p;
    return NULL;
}

tg__ptensor *tg__param_record(const tg_ctx *ctx, const tg_tensor *t)
{
    if (!ctx || !t)
        return NULL;
    tg__ptensor *p = plist_find(&ctx->params, t);
    if (!p)
        p = plist_find(&ctx->buffers, t);
    return p ? p : plist_find(&ctx->blocks, t);
}

tg_tensor *tg_param(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape, const char *name)
{
    TG__GUARD(ctx, NULL);
    if (!tg_dtype_is_float(dtype)) {
        TG_ERROR(ctx, TG_EDTYPE, "param: dtype %s; parameters are float32 or float64 (an int64 "
                                 "counter is a buffer)", tg_dtype_name(dtype));
        return NULL;
    }
    tg__ptensor *p = tg__ptensor_new(ctx, "param", TG_KIND_PARAM, dtype, ndim, shape, name, true);
    if (!p)
        return NULL;
    p->t.requires_grad = true;
    return plist_add(ctx, &ctx->params, p);
}

tg_tensor *tg_buffer(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape, const char *name)
{
    TG__GUARD(ctx, NULL);
    tg__ptensor *p = tg__ptensor_new(ctx, "buffer", TG_KIND_BUFFER, dtype, ndim, shape, name, true);
    return p ? plist_add(ctx, &ctx->buffers, p) : NULL;
}

static void ptensor_free(tg_ctx *ctx, tg__ptensor *p)
{
    if (p->grad_block)
        ptensor_free(ctx, p->grad_block);
    if (p->renamed)
        tg__free(ctx, p->renamed, strlen(p->renamed) + 1);
    tg__free(ctx, p, p->block);
}

static void plist_remove(tg_ctx *ctx, tg__plist *l, tg__ptensor *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        l->first = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        l->last = p->prev;
    l->n--;
    ptensor_free(ctx, p);
}

/* Frees a parameter block with its members. */
static void block_free(tg_ctx *ctx, tg__ptensor *b)
{
    tg__ptensor *p = ctx->params.first;
    while (p) {
        tg__ptensor *next = p->next;
        if (p->owner == b)
            plist_remove(ctx, &ctx->params, p);
        p = next;
    }
    plist_remove(ctx, &ctx->blocks, b);
}

static tg_status persistent_free(tg_ctx *ctx, tg_kind which, tg_tensor *t, const char *who,
                                 const char *kind)
{
    if (!ctx)
        return TG_EINVAL;
    tg__plist *l = which == TG_KIND_PARAM ? &ctx->params : &ctx->buffers;
    tg__ptensor *p = t ? plist_find(l, t) : NULL;
    tg__ptensor *b = t && which == TG_KIND_PARAM ? plist_find(&ctx->blocks, t) : NULL;
    if (b) {
        block_free(ctx, b);
        return TG_OK;
    }
    if (p && p->owner)
        return TG_ERROR(ctx, TG_EINVAL, "%s: %s belongs to a parameter block; free the block",
                        who, tg__tensor_s(t));
    if (!p)
        return TG_ERROR(ctx, TG_EINVAL, "%s: the tensor is not a live %s of this context%s", who,
                        kind, !t ? " (NULL)"
                                 : tg__param_record(ctx, t) ? " (it is one of the other kind)"
                                                            : "");
    plist_remove(ctx, l, p);
    return TG_OK;
}

tg_status tg_param_free(tg_ctx *ctx, tg_tensor *param)
{
    return persistent_free(ctx, TG_KIND_PARAM, param, "param_free", "parameter");
}

/* A member of block b: a header whose data (and gradient's data) lie at
 * element offset `at` of the block's. */
static tg__ptensor *block_member(tg_ctx *ctx, tg__ptensor *b, const tg_param_spec *spec,
                                 int64_t at)
{
    size_t es = tg_dtype_size(b->t.dtype);
    tg__ptensor *p = tg__ptensor_new(ctx, "param_block", TG_KIND_PARAM, b->t.dtype, spec->ndim,
                                     spec->shape, spec->name, false);
    tg__ptensor *g = p ? tg__ptensor_new(ctx, "param_block", TG_KIND_GRAD, b->t.dtype, spec->ndim,
                                         spec->shape, NULL, false)
                       : NULL;
    if (!g) {
        if (p)
            ptensor_free(ctx, p);
        return NULL;
    }
    p->t.data = (unsigned char *)b->t.data + (size_t)at * es;
    p->t.base = &b->t;
    p->t.requires_grad = true;
    g->t.data = (unsigned char *)b->t.grad->data + (size_t)at * es;
    g->t.base = b->t.grad;
    p->grad_block = g;
    p->t.grad = &g->t;
    p->owner = b;
    return p;
}

tg_status tg_param_block(tg_ctx *ctx, tg_dtype dtype, int n, const tg_param_spec *specs,
                         tg_tensor **params, tg_tensor **block)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (n < 0 || (n > 0 && (!specs || !params)) || !block)
        return TG_ERROR(ctx, TG_EINVAL, "param_block: %d specs, specs, params or block NULL", n);
    if (!tg_dtype_is_float(dtype))
        return TG_ERROR(ctx, TG_EDTYPE, "param_block: dtype %s; parameters are float32 or float64",
                        tg_dtype_name(dtype));
    int64_t total = 0, numel;
    for (int i = 0; i < n; i++) {
        if (tg__check_shape(ctx, "param_block", dtype, specs[i].ndim, specs[i].shape, &numel))
            return ctx->errcode;
        if (__builtin_add_overflow(total, numel, &total) || total > INT64_MAX / 8)
            return TG_ERROR(ctx, TG_ESHAPE, "param_block: %d parameters have more elements than "
                                            "can be addressed", n);
    }
    tg__ptensor *b = tg__ptensor_new(ctx, "param_block", TG_KIND_PARAM, dtype, 1, &total, NULL,
                                     true);
    tg__ptensor *g = b ? tg__ptensor_new(ctx, "param_block", TG_KIND_GRAD, dtype, 1, &total, NULL,
                                         true)
                       : NULL;
    if (!g) {
        if (b)
            ptensor_free(ctx, b);
        return ctx->errcode;
    }
    b->grad_block = g;
    b->is_block = true;
    b->t.grad = &g->t;
    b->t.requires_grad = true;
    plist_add(ctx, &ctx->blocks, b);
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        tg__ptensor *p = block_member(ctx, b, &specs[i], at);
        if (!p) {
            block_free(ctx, b);
            return ctx->errcode;
        }
        params[i] = plist_add(ctx, &ctx->params, p);
        at += p->t.numel;
    }
    *block = &b->t;
    return TG_OK;
}

tg_status tg_buffer_free(tg_ctx *ctx, tg_tensor *buffer)
{
    return persistent_free(ctx, TG_KIND_BUFFER, buffer, "buffer_free", "buffer");
}

void tg__params_free_all(tg_ctx *ctx)
{
    while (ctx->params.first)
        plist_remove(ctx, &ctx->params, ctx->params.first);
    while (ctx->blocks.first)
        plist_remove(ctx, &ctx->blocks, ctx->blocks.first);
    while (ctx->buffers.first)
        plist_remove(ctx, &ctx->buffers, ctx->buffers.first);
}

static tg_tensor *plist_next(const tg__plist *l, const tg_tensor *prev)
{
    if (!prev)
        return l->first ? &l->first->t : NULL;
    tg__ptensor *p = plist_find(l, prev);
    return p && p->next ? &p->next->t : NULL;
}

tg_tensor *tg_param_next(const tg_ctx *ctx, const tg_tensor *prev)
{
    return ctx ? plist_next(&ctx->params, prev) : NULL;
}

tg_tensor *tg_buffer_next(const tg_ctx *ctx, const tg_tensor *prev)
{
    return ctx ? plist_next(&ctx->buffers, prev) : NULL;
}

double tg_get(const tg_tensor *t, int64_t index)
{
    switch (t->dtype) {
    case TG_F32: return (double)((const float *)t->data)[index];
    case TG_F64: return ((const double *)t->data)[index];
    case TG_I64: return (double)((const int64_t *)t->data)[index];
    default: return NAN;
    }
}

void tg_set(tg_tensor *t, int64_t index, double value)
{
    switch (t->dtype) {
    case TG_F32: ((float *)t->data)[index] = (float)value; break;
    case TG_F64: ((double *)t->data)[index] = value; break;
    case TG_I64: ((int64_t *)t->data)[index] = to_i64(value); break;
    default: return;
    }
    tg__bump(t);
}

int64_t tg_offset(const tg_tensor *t, const int64_t *idx)
{
    if (!t || (!idx && t->ndim > 0))
        return -1;
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (idx[i] < 0 || idx[i] >= t->shape[i])
            return -1;
        off = off * t->shape[i] + idx[i];
    }
    return off;
}

void tg_print(FILE *f, const tg_tensor *t, int64_t max_items)
{
    if (!f)
        return;
    if (!t) {
        fprintf(f, "tensor(NULL)\n");
        return;
    }
    fprintf(f, "tensor%s%s%s %s %s [", t->name ? " '" : "", t->name ? t->name : "",
            t->name ? "'" : "", tg_dtype_name(t->dtype), tg__shape_s(t));
    int64_t n = t->numel < max_items ? t->numel : max_items;
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == TG_I64)
            fprintf(f, i ? ", %" PRId64 : "%" PRId64, ((const int64_t *)t->data)[i]);
        else
            fprintf(f, i ? ", %.10g" : "%.10g", tg_get(t, i));
    }
    fprintf(f, "%s]\n", n < t->numel ? ", ..." : "");
}
