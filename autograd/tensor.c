/*
 * tensor.c: creating, filling, converting and printing tensors; parameters.
 *
 * A step tensor is a header and its data, both in the step arena. A
 * parameter is one allocator block: header, name and data, linked into the
 * context's parameter list; its gradient is a second block of the same kind.
 */
#include "impl.h"

#include <inttypes.h>

const char *tg_dtype_name(tg_dtype dtype)
{
    switch (dtype) {
    case TG_F32: return "float32";
    case TG_F64: return "float64";
    default: return "?";
    }
}

size_t tg_dtype_size(tg_dtype dtype)
{
    switch (dtype) {
    case TG_F32: return 4;
    case TG_F64: return 8;
    default: return 0;
    }
}

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
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return TG_ERROR(ctx, TG_EINVAL, "%s: dimension %d is %" PRId64 "; must be >= 0", who,
                            i, shape[i]);
        if (shape[i] > 0 && n > (INT64_MAX / 8) / shape[i])
            return TG_ERROR(ctx, TG_ENOMEM, "%s: %s elements overflow", who, "the shape's");
        n *= shape[i];
    }
    *numel = n;
    return TG_OK;
}

tg_status tg__check_tensor(tg_ctx *ctx, const char *who, const char *what, const tg_tensor *t)
{
    if (!t)
        return TG_ERROR(ctx, TG_EINVAL, "%s: %s is NULL", who, what);
    if (tg_dtype_size(t->dtype) == 0)
        return TG_ERROR(ctx, TG_EDTYPE, "%s: %s has an unknown dtype %d", who, what,
                        (int)t->dtype);
    return TG_OK;
}

tg_status tg__check_inputs(tg_ctx *ctx, const char *who, tg_tensor *const *in, int n)
{
    for (int i = 0; i < n; i++) {
        if (in[i] && tg_dtype_size(in[i]->dtype))
            continue; /* the common case: no message to format */
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

static void set_shape(tg_tensor *t, tg_dtype dtype, int ndim, const int64_t *shape, int64_t numel)
{
    memset(t, 0, sizeof *t);
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
    set_shape(t, dtype, ndim, shape, numel);
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

tg_tensor *tg_rand(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape, double lo,
                   double hi)
{
    tg_tensor *t = tg_empty(ctx, dtype, ndim, shape);
    if (t)
        for (int64_t i = 0; i < t->numel; i++)
            tg_set(t, i, lo + (hi - lo) * tg_rand_uniform(ctx));
    return t;
}

tg_tensor *tg_randn(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape, double mean,
                    double std)
{
    tg_tensor *t = tg_empty(ctx, dtype, ndim, shape);
    if (t)
        for (int64_t i = 0; i < t->numel; i++)
            tg_set(t, i, mean + std * tg_rand_normal(ctx));
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
    return TG_OK;
}

tg_status tg_fill(tg_ctx *ctx, tg_tensor *t, double value)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (tg__check_tensor(ctx, "fill", "t", t))
        return ctx->errcode;
    TG__DISPATCH(t->dtype, T, {
        T *d = t->data;
        for (int64_t i = 0; i < t->numel; i++)
            d[i] = (T)value;
    });
    return TG_OK;
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
    t->requires_grad = requires_grad;
    return TG_OK;
}

static tg__ptensor *as_param(tg_tensor *t) { return (tg__ptensor *)t; }

tg_tensor *tg_set_name(tg_ctx *ctx, tg_tensor *t, const char *name)
{
    TG__GUARD(ctx, NULL);
    if (tg__check_tensor(ctx, "set_name", "t", t))
        return NULL;
    if (!name) {
        t->name = NULL;
        return t;
    }
    size_t len = strlen(name) + 1;
    char *copy;
    if (t->persistent) {
        /* a renamed parameter keeps its name in a block of its own */
        copy = tg__malloc(ctx, len);
        if (!copy)
            return NULL;
        tg__ptensor *p = as_param(t);
        if (t->name && (const unsigned char *)t->name != (const unsigned char *)(p + 1))
            tg__free(ctx, (void *)t->name, strlen(t->name) + 1);
    } else if (!(copy = tg__arena_alloc(ctx, len))) {
        return NULL;
    }
    memcpy(copy, name, len);
    t->name = copy;
    return t;
}

tg__ptensor *tg__ptensor_new(tg_ctx *ctx, const char *who, tg_dtype dtype, int ndim,
                             const int64_t *shape, const char *name)
{
    int64_t numel;
    if (tg__check_shape(ctx, who, dtype, ndim, shape, &numel))
        return NULL;
    size_t name_len = name ? strlen(name) + 1 : 0;
    size_t head = sizeof(tg__ptensor) + name_len;
    size_t bytes = (size_t)numel * tg_dtype_size(dtype);
    size_t block = head + TG__ALIGN + bytes;
    unsigned char *raw = tg__malloc(ctx, block);
    if (!raw)
        return NULL;
    tg__ptensor *p = (tg__ptensor *)raw;
    memset(p, 0, sizeof *p);
    set_shape(&p->t, dtype, ndim, shape, numel);
    p->block = block;
    if (name) {
        memcpy(p + 1, name, name_len);
        p->t.name = (const char *)(p + 1);
    }
    uintptr_t data = ((uintptr_t)(raw + head) + TG__ALIGN - 1) & ~(uintptr_t)(TG__ALIGN - 1);
    p->t.data = (void *)data;
    memset(p->t.data, 0, bytes);
    p->t.persistent = true;
    return p;
}

tg_tensor *tg_param(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape, const char *name)
{
    TG__GUARD(ctx, NULL);
    tg__ptensor *p = tg__ptensor_new(ctx, "param", dtype, ndim, shape, name);
    if (!p)
        return NULL;
    p->t.requires_grad = true;
    p->prev = ctx->params_last;
    if (ctx->params_last)
        ctx->params_last->next = p;
    else
        ctx->params = p;
    ctx->params_last = p;
    ctx->n_params++;
    return &p->t;
}

static void ptensor_free(tg_ctx *ctx, tg__ptensor *p)
{
    if (p->t.name && (const unsigned char *)p->t.name != (const unsigned char *)(p + 1))
        tg__free(ctx, (void *)p->t.name, strlen(p->t.name) + 1);
    tg__free(ctx, p, p->block);
}

void tg_param_free(tg_ctx *ctx, tg_tensor *param)
{
    if (!ctx || !param || !param->persistent)
        return;
    tg__ptensor *p = as_param(param);
    if (p->prev)
        p->prev->next = p->next;
    else
        ctx->params = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        ctx->params_last = p->prev;
    ctx->n_params--;
    if (p->grad_block)
        ptensor_free(ctx, p->grad_block);
    ptensor_free(ctx, p);
}

tg_tensor *tg_param_next(const tg_ctx *ctx, const tg_tensor *prev)
{
    if (!ctx)
        return NULL;
    tg__ptensor *p = prev ? as_param((tg_tensor *)prev)->next : ctx->params;
    return p ? &p->t : NULL;
}

double tg_get(const tg_tensor *t, int64_t index)
{
    return t->dtype == TG_F32 ? (double)((const float *)t->data)[index]
                              : ((const double *)t->data)[index];
}

void tg_set(tg_tensor *t, int64_t index, double value)
{
    if (t->dtype == TG_F32)
        ((float *)t->data)[index] = (float)value;
    else
        ((double *)t->data)[index] = value;
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
    for (int64_t i = 0; i < n; i++)
        fprintf(f, i ? ", %.10g" : "%.10g", tg_get(t, i));
    fprintf(f, "%s]\n", n < t->numel ? ", ..." : "");
}
