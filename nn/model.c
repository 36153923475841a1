/*
 * model.c: sequential models (tapegrad/nn.h): layers and their shape
 * inference, building the parameters and buffers as nn.Sequential names
 * them, the forward pass, the loss, the summary and checkpoints.
 * Built only on the public API.
 */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "tapegrad.h"

/* A layer as the model keeps it: its arguments (pooling strides resolved),
 * the shape of one example after it, and its tensors once built. */
typedef struct mlayer {
    tg_layer spec;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int64_t numel;   /* elements of one example after the layer */
    int64_t params;  /* parameter elements */
    tg_tensor *weight, *bias, *running_mean, *running_var, *tracked;
    char scope[48];  /* its scope in forward: state_dict prefix and kind ("3.conv2d") */
} mlayer;

struct tg_model {
    tg_dtype dtype;
    int in_ndim;
    int64_t in_shape[TG_MAX_DIMS];
    int64_t in_numel;
    int n, cap;
    mlayer *layers;
    tg_loss_spec loss;
    bool built;
    tg_tensor *block;
    int n_state;
    tg_tensor **state;
    bool *state_param;
    tg_batch_norm_fn bn_fn; /* tg_model_set_batch_norm, or NULL */
    void *bn_ud;
};

#define MAX_LAYERS (1 << 20) /* so the state dict (5 entries a layer at most) fits an int */

/* Model-file names, indexed by tg_layer_kind. */
static const char *const LAYER_NAMES[TG_LAYER_COUNT] = {
    "conv1d", "conv2d", "linear", "relu", "sigmoid", "tanh", "leaky_relu", "max_pool1d",
    "max_pool2d", "avg_pool1d", "avg_pool2d", "global_avg_pool", "pad1d", "pad2d", "flatten",
    "dropout", "batch_norm1d", "batch_norm2d", "softmax", "log_softmax"};

static const char *const LOSS_NAMES[] = {"none", "cross_entropy", "nll", "mse", "bce",
                                         "bce_with_logits"};

tg_layer tg_layer_defaults(tg_layer_kind kind)
{
    tg_layer l;
    memset(&l, 0, sizeof l);
    l.kind = kind;
    bool pool = kind >= TG_LAYER_MAX_POOL1D && kind <= TG_LAYER_AVG_POOL2D;
    for (int i = 0; i < 2; i++) {
        l.stride[i] = pool ? 0 : 1; /* 0: the kernel, as PyTorch's stride=None */
        l.dilation[i] = 1;
    }
    l.groups = 1;
    l.bias = true;
    l.count_include_pad = true;
    l.p = kind == TG_LAYER_LEAKY_RELU ? TG_LEAKY_RELU_SLOPE : 0.5;
    l.eps = TG_BN_EPS;
    l.momentum = TG_BN_MOMENTUM;
    l.dim = 1;
    return l;
}

const char *tg_layer_name(tg_layer_kind kind)
{
    return (unsigned)kind < TG_LAYER_COUNT ? LAYER_NAMES[kind] : "?";
}

tg_loss_spec tg_loss_defaults(tg_loss_kind kind)
{
    tg_loss_spec s = {kind, TG_MEAN, TG_IGNORE_INDEX, 0.0};
    return s;
}

const char *tg_loss_name(tg_loss_kind kind)
{
    return kind > TG_LOSS_NONE && kind <= TG_LOSS_BCE_WITH_LOGITS ? LOSS_NAMES[kind] : "?";
}

/* ---------------------------------------------------------------- creation */

static int shape_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
    int n = snprintf(buf, size, "(");
    for (int i = 0; i < ndim && n >= 0 && (size_t)n < size; i++)
        n += snprintf(buf + n, size - (size_t)n, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, ")");
    return n;
}

/* Product of the dims, or -1 when it overflows int64. */
static int64_t shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, shape[i], &n))
            return -1;
    return n;
}

tg_model *tg_model_new(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *input_shape)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return NULL;
    if (dtype != TG_F32 && dtype != TG_F64) {
        TG_ERROR(ctx, TG_EDTYPE, "model_new: dtype %s; models are float32 or float64",
                 tg_dtype_name(dtype));
        return NULL;
    }
    if (ndim < 1 || ndim >= TG_MAX_DIMS || !input_shape) {
        TG_ERROR(ctx, TG_EINVAL, "model_new: an example has %d dimensions; 1 to %d (the batch "
                 "makes one more)", ndim, TG_MAX_DIMS - 1);
        return NULL;
    }
    for (int i = 0; i < ndim; i++)
        if (input_shape[i] < 1) {
            TG_ERROR(ctx, TG_ESHAPE, "model_new: input dimension %d is %" PRId64 "; must be >= 1",
                     i, input_shape[i]);
            return NULL;
        }
    int64_t numel = shape_numel(ndim, input_shape);
    if (numel < 0 || numel > INT64_MAX / 8) {
        TG_ERROR(ctx, TG_ESHAPE, "model_new: the input shape has too many elements");
        return NULL;
    }
    tg_model *m = tg_malloc(ctx, sizeof *m);
    if (!m)
        return NULL;
    memset(m, 0, sizeof *m);
    m->dtype = dtype;
    m->in_ndim = ndim;
    memcpy(m->in_shape, input_shape, (size_t)ndim * sizeof *input_shape);
    m->in_numel = numel;
    m->loss = tg_loss_defaults(TG_LOSS_NONE);
    return m;
}

/* ---------------------------------------------------------------- shape inference */

/* What tg_model_add is looking at: the layer so far and where it goes. */
typedef struct adding {
    tg_ctx *ctx;
    int index;
    const tg_layer *l;
    int in_ndim;
    const int64_t *in;
    mlayer *out;
} adding;

/* Raises code with "model_add: layer I (KIND): <what>; its input is (..)". */
static tg_status add_fail(const adding *a, tg_status code, const char *what)
{
    char in[160];
    shape_str(in, sizeof in, a->in_ndim, a->in);
    return TG_ERROR(a->ctx, code, "model_add: layer %d (%s): %s; its input is %s", a->index,
                    tg_layer_name(a->l->kind), what, in);
}

static tg_status want_ndim(const adding *a, int lo, int hi, const char *form)
{
    if (a->in_ndim >= lo && a->in_ndim <= hi)
        return TG_OK;
    char what[96];
    snprintf(what, sizeof what, "expects examples of shape %s", form);
    return add_fail(a, TG_ESHAPE, what);
}

static tg_status want(const adding *a, bool ok, const char *what)
{
    return ok ? TG_OK : add_fail(a, TG_EINVAL, what);
}

/* a / b rounded up, for a >= 0 and b >= 1, without overflow. */
static int64_t ceil_div(int64_t a, int64_t b)
{
    return a / b + (a % b != 0);
}

/* Output size of a window: floor((n + 2p - d (k - 1) - 1) / s) + 1, or with
 * ceil (pooling's ceil_mode) the quotient rounded up, less one when the last
 * window would start at or beyond n + p (in the right padding), as PyTorch. */
static tg_status window(const adding *a, int64_t n, int axis, bool ceil, int64_t *out)
{
    const tg_layer *l = a->l;
    int64_t k = l->kernel[axis], s = l->stride[axis], p = l->padding[axis], d = l->dilation[axis];
    int64_t span, len;
    if (__builtin_mul_overflow(d, k - 1, &span) || __builtin_add_overflow(span, 1, &span) ||
        __builtin_mul_overflow(p, 2, &len) || __builtin_add_overflow(len, n, &len))
        return add_fail(a, TG_EINVAL, "kernel, dilation or padding too large");
    if (len < span) {
        char what[160];
        snprintf(what, sizeof what, "a window of %" PRId64 " does not fit in %" PRId64
                 " (%" PRId64 " padded)", span, n, len);
        return add_fail(a, TG_ESHAPE, what);
    }
    if (!ceil) {
        *out = (len - span) / s + 1;
        return TG_OK;
    }
    int64_t last = ceil_div(len - span, s); /* the last window's start over s */
    if (last >= ceil_div(n + p, s))         /* last * s >= n + p; n + p <= len */
        last--;
    *out = last + 1;
    return TG_OK;
}

static tg_status check_window_args(const adding *a, int axes, bool conv)
{
    const tg_layer *l = a->l;
    for (int i = 0; i < axes; i++) {
        tg_status st = want(a, l->kernel[i] >= 1, "kernel must be >= 1");
        if (!st)
            st = want(a, l->stride[i] >= 1, "stride must be >= 1");
        if (!st)
            st = want(a, l->padding[i] >= 0, "padding must be >= 0");
        if (!st)
            st = want(a, l->dilation[i] >= 1, "dilation must be >= 1");
        if (!st && !conv)
            st = want(a, l->padding[i] <= l->kernel[i] / 2,
                      "padding must be at most half the kernel");
        if (st)
            return st;
    }
    return TG_OK;
}

static tg_status infer_conv(const adding *a, int axes)
{
    const tg_layer *l = a->l;
    mlayer *o = a->out;
    tg_status st = want_ndim(a, axes + 1, axes + 1, axes == 1 ? "(C, L)" : "(C, H, W)");
    if (!st)
        st = want(a, l->in >= 1 && l->out >= 1, "in and out channels must be >= 1");
    if (!st)
        st = want(a, l->groups >= 1 && l->in % l->groups == 0 && l->out % l->groups == 0,
                  "groups must be >= 1 and divide in and out");
    if (!st)
        st = check_window_args(a, axes, true);
    if (st)
        return st;
    if (a->in[0] != l->in) {
        char what[96];
        snprintf(what, sizeof what, "expects %" PRId64 " input channels", l->in);
        return add_fail(a, TG_ESHAPE, what);
    }
    o->ndim = axes + 1;
    o->shape[0] = l->out;
    for (int i = 0; i < axes; i++)
        if ((st = window(a, a->in[1 + i], i, false, &o->shape[1 + i])))
            return st;
    int64_t w = l->out;
    for (int i = 0; i < axes; i++)
        if (__builtin_mul_overflow(w, l->kernel[i], &w))
            return add_fail(a, TG_EINVAL, "the weight has too many elements");
    if (__builtin_mul_overflow(w, l->in / l->groups, &w) ||
        __builtin_add_overflow(w, l->bias ? l->out : 0, &o->params))
        return add_fail(a, TG_EINVAL, "the weight has too many elements");
    return TG_OK;
}

static tg_status infer_linear(const adding *a)
{
    const tg_layer *l = a->l;
    mlayer *o = a->out;
    tg_status st = want(a, l->in >= 1 && l->out >= 1, "in and out features must be >= 1");
    if (st)
        return st;
    if (a->in[a->in_ndim - 1] != l->in) {
        char what[160];
        int64_t all = shape_numel(a->in_ndim, a->in);
        snprintf(what, sizeof what, "expects %" PRId64 " input features in the last dimension%s",
                 l->in, a->in_ndim > 1 && all == l->in ? " (a flatten before it would give them)"
                                                       : "");
        return add_fail(a, TG_ESHAPE, what);
    }
    o->ndim = a->in_ndim;
    memcpy(o->shape, a->in, (size_t)a->in_ndim * sizeof *a->in);
    o->shape[o->ndim - 1] = l->out;
    int64_t w;
    if (__builtin_mul_overflow(l->in, l->out, &w) ||
        __builtin_add_overflow(w, l->bias ? l->out : 0, &o->params))
        return add_fail(a, TG_EINVAL, "the weight has too many elements");
    return TG_OK;
}

static tg_status infer_pool(const adding *a, int axes, bool max)
{
    const tg_layer *l = a->l;
    mlayer *o = a->out;
    tg_status st = want_ndim(a, axes + 1, axes + 1, axes == 1 ? "(C, L)" : "(C, H, W)");
    if (!st)
        st = check_window_args(a, axes, false);
    if (!st && !max)
        st = want(a, l->dilation[0] == 1 && (axes == 1 || l->dilation[1] == 1),
                  "average pooling has no dilation (it must be 1)");
    if (!st && max)
        st = want(a, l->count_include_pad, "count_include_pad=false applies to average pooling "
                  "only");
    if (st)
        return st;
    o->ndim = a->in_ndim;
    o->shape[0] = a->in[0];
    for (int i = 0; i < axes; i++)
        if ((st = window(a, a->in[1 + i], i, l->ceil_mode, &o->shape[1 + i])))
            return st;
    return TG_OK;
}

static tg_status infer_pad(const adding *a, int axes)
{
    const tg_layer *l = a->l;
    mlayer *o = a->out;
    tg_status st = want_ndim(a, axes, TG_MAX_DIMS - 1, axes == 1 ? "(..., L)" : "(..., H, W)");
    if (!st)
        st = want(a, l->padding[0] >= 0 && (axes == 1 || l->padding[1] >= 0),
                  "padding must be >= 0");
    if (st)
        return st;
    o->ndim = a->in_ndim;
    memcpy(o->shape, a->in, (size_t)a->in_ndim * sizeof *a->in);
    for (int i = 0; i < axes; i++) {
        int64_t *d = &o->shape[o->ndim - axes + i], p2;
        if (__builtin_mul_overflow(l->padding[axes == 1 ? 0 : i], 2, &p2) ||
            __builtin_add_overflow(*d, p2, d))
            return add_fail(a, TG_EINVAL, "padding too large");
    }
    return TG_OK;
}

static tg_status infer_batch_norm(const adding *a, bool two)
{
    const tg_layer *l = a->l;
    tg_status st = two ? want_ndim(a, 3, 3, "(C, H, W)") : want_ndim(a, 1, 2, "(C) or (C, L)");
    if (!st)
        st = want(a, l->in >= 1, "num_features must be >= 1");
    if (!st)
        st = want(a, isfinite(l->eps) && l->eps > 0, "eps must be > 0 and finite");
    if (!st)
        st = want(a, l->momentum >= 0 && l->momentum <= 1, "momentum must be in [0, 1]");
    if (st)
        return st;
    if (a->in[0] != l->in) {
        char what[96];
        snprintf(what, sizeof what, "expects %" PRId64 " channels", l->in);
        return add_fail(a, TG_ESHAPE, what);
    }
    a->out->params = 2 * l->in;
    return TG_OK;
}

/* Shape of one example after the layer, and its parameter count. */
static tg_status infer(const adding *a)
{
    const tg_layer *l = a->l;
    mlayer *o = a->out;
    o->ndim = a->in_ndim;
    memcpy(o->shape, a->in, (size_t)a->in_ndim * sizeof *a->in);
    switch (l->kind) {
    case TG_LAYER_CONV1D: return infer_conv(a, 1);
    case TG_LAYER_CONV2D: return infer_conv(a, 2);
    case TG_LAYER_LINEAR: return infer_linear(a);
    case TG_LAYER_RELU: case TG_LAYER_SIGMOID: case TG_LAYER_TANH: return TG_OK;
    case TG_LAYER_LEAKY_RELU: return want(a, isfinite(l->p), "the negative slope must be finite");
    case TG_LAYER_MAX_POOL1D: return infer_pool(a, 1, true);
    case TG_LAYER_MAX_POOL2D: return infer_pool(a, 2, true);
    case TG_LAYER_AVG_POOL1D: return infer_pool(a, 1, false);
    case TG_LAYER_AVG_POOL2D: return infer_pool(a, 2, false);
    case TG_LAYER_GLOBAL_AVG_POOL:
        for (int i = 1; i < o->ndim; i++)
            o->shape[i] = 1;
        return want_ndim(a, 2, TG_MAX_DIMS - 1, "(C, ...)");
    case TG_LAYER_PAD1D: return infer_pad(a, 1);
    case TG_LAYER_PAD2D: return infer_pad(a, 2);
    case TG_LAYER_FLATTEN:
        o->ndim = 1;
        o->shape[0] = shape_numel(a->in_ndim, a->in);
        return TG_OK;
    case TG_LAYER_DROPOUT: return want(a, l->p >= 0 && l->p <= 1, "p must be in [0, 1]");
    case TG_LAYER_BATCH_NORM1D: return infer_batch_norm(a, false);
    case TG_LAYER_BATCH_NORM2D: return infer_batch_norm(a, true);
    case TG_LAYER_SOFTMAX: case TG_LAYER_LOG_SOFTMAX:
        return want(a, l->dim >= -(a->in_ndim + 1) && l->dim <= a->in_ndim,
                    "dim is outside the batched input's dimensions");
    default: return add_fail(a, TG_EINVAL, "unknown layer kind");
    }
}

tg_status tg_model_add(tg_ctx *ctx, tg_model *m, const tg_layer *layer)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return ctx ? (tg_status)tg_errcode(ctx) : TG_EINVAL;
    if (!m || !layer)
        return TG_ERROR(ctx, TG_EINVAL, "model_add: model or layer NULL");
    if (m->built)
        return TG_ERROR(ctx, TG_ESTATE, "model_add: the model is built; layers come before "
                        "tg_model_build");
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 8;
        if (m->n >= MAX_LAYERS)
            return TG_ERROR(ctx, TG_EINVAL, "model_add: more than %d layers", MAX_LAYERS);
        mlayer *ls = tg_realloc(ctx, m->layers, (size_t)m->cap * sizeof *ls,
                                (size_t)cap * sizeof *ls);
        if (!ls)
            return TG_ENOMEM;
        m->layers = ls;
        m->cap = cap;
    }
    mlayer o;
    memset(&o, 0, sizeof o);
    o.spec = *layer;
    bool pool = layer->kind >= TG_LAYER_MAX_POOL1D && layer->kind <= TG_LAYER_AVG_POOL2D;
    for (int i = 0; pool && i < 2; i++)
        if (o.spec.stride[i] == 0)
            o.spec.stride[i] = o.spec.kernel[i];
    const mlayer *prev = m->n ? &m->layers[m->n - 1] : NULL;
    adding a = {ctx, m->n, &o.spec, prev ? prev->ndim : m->in_ndim,
                prev ? prev->shape : m->in_shape, &o};
    tg_status st = infer(&a);
    if (st)
        return st;
    o.numel = shape_numel(o.ndim, o.shape);
    if (o.numel < 0 || o.numel > INT64_MAX / 8)
        return add_fail(&a, TG_ESHAPE, "its output has too many elements");
    snprintf(o.scope, sizeof o.scope, "%d.%s", m->n, tg_layer_name(o.spec.kind));
    m->layers[m->n++] = o;
    return TG_OK;
}

tg_status tg_model_set_loss(tg_ctx *ctx, tg_model *m, const tg_loss_spec *loss)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return ctx ? (tg_status)tg_errcode(ctx) : TG_EINVAL;
    if (!m || !loss)
        return TG_ERROR(ctx, TG_EINVAL, "model_set_loss: model or loss NULL");
    if (loss->kind < TG_LOSS_NONE || loss->kind > TG_LOSS_BCE_WITH_LOGITS)
        return TG_ERROR(ctx, TG_EINVAL, "model_set_loss: unknown loss kind %d", (int)loss->kind);
    const char *name = tg_loss_name(loss->kind);
    if (loss->reduction != TG_MEAN && loss->reduction != TG_SUM && loss->reduction != TG_NONE)
        return TG_ERROR(ctx, TG_EINVAL, "model_set_loss: %s: reduction %d is not mean, sum or "
                        "none", name, (int)loss->reduction);
    bool classes = loss->kind == TG_LOSS_CROSS_ENTROPY || loss->kind == TG_LOSS_NLL;
    if (!classes && loss->ignore_index != TG_IGNORE_INDEX)
        return TG_ERROR(ctx, TG_EINVAL, "model_set_loss: %s: ignore_index=%" PRId64 "; it applies "
                        "to cross_entropy and nll only (leave it at -100)", name,
                        loss->ignore_index);
    if (loss->kind != TG_LOSS_CROSS_ENTROPY && loss->label_smoothing != 0)
        return TG_ERROR(ctx, TG_EINVAL, "model_set_loss: %s: label_smoothing=%g; it applies to "
                        "cross_entropy only", name, loss->label_smoothing);
    if (!(loss->label_smoothing >= 0 && loss->label_smoothing <= 1))
        return TG_ERROR(ctx, TG_EINVAL, "model_set_loss: %s: label_smoothing=%g is outside "
                        "[0, 1]", name, loss->label_smoothing);
    m->loss = *loss;
    return TG_OK;
}

/* ---------------------------------------------------------------- building */

#define NAME_MAX_LEN 40 /* "2147483647.num_batches_tracked" fits */

/* Counts the parameters and buffers the layers need. */
static void count_state(const tg_model *m, int *n_params, int *n_buffers)
{
    *n_params = *n_buffers = 0;
    for (int i = 0; i < m->n; i++) {
        const tg_layer *l = &m->layers[i].spec;
        switch (l->kind) {
        case TG_LAYER_CONV1D: case TG_LAYER_CONV2D: case TG_LAYER_LINEAR:
            *n_params += l->bias ? 2 : 1;
            break;
        case TG_LAYER_BATCH_NORM1D: case TG_LAYER_BATCH_NORM2D:
            *n_params += 2;
            *n_buffers += 3;
            break;
        default: break;
        }
    }
}

static void spec_set(tg_param_spec *s, char *name, int index, const char *what, int ndim,
                     const int64_t *shape)
{
    snprintf(name, NAME_MAX_LEN, "%d.%s", index, what);
    s->name = name;
    s->ndim = ndim;
    memcpy(s->shape, shape, (size_t)ndim * sizeof *shape);
}

/* The parameter specs, in state-dict order; returns how many. */
static int fill_specs(const tg_model *m, tg_param_spec *specs, char (*names)[NAME_MAX_LEN])
{
    int k = 0;
    for (int i = 0; i < m->n; i++) {
        const tg_layer *l = &m->layers[i].spec;
        int64_t w[4] = {l->out, l->in / l->groups, l->kernel[0], l->kernel[1]};
        int wdim = l->kind == TG_LAYER_CONV1D ? 3 : l->kind == TG_LAYER_CONV2D ? 4 : 2;
        bool bn = l->kind == TG_LAYER_BATCH_NORM1D || l->kind == TG_LAYER_BATCH_NORM2D;
        if (l->kind == TG_LAYER_LINEAR)
            w[1] = l->in;
        if (bn || l->kind == TG_LAYER_CONV1D || l->kind == TG_LAYER_CONV2D ||
            l->kind == TG_LAYER_LINEAR) {
            spec_set(&specs[k], names[k], i, "weight", bn ? 1 : wdim, bn ? &l->in : w);
            k++;
            if (bn || l->bias) {
                spec_set(&specs[k], names[k], i, "bias", 1, bn ? &l->in : &l->out);
                k++;
            }
        }
    }
    return k;
}

static tg_tensor *make_buffer(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, int index,
                              const char *what)
{
    char name[NAME_MAX_LEN];
    snprintf(name, sizeof name, "%d.%s", index, what);
    return tg_buffer(ctx, dt, ndim, shape, name);
}

/* Hands the block's members to the layers, makes the buffers, lists the
 * state dict in PyTorch's order (each layer's parameters, then its
 * buffers). */
static tg_status attach_state(tg_ctx *ctx, tg_model *m, tg_tensor **params)
{
    int p = 0, s = 0;
    for (int i = 0; i < m->n; i++) {
        mlayer *L = &m->layers[i];
        const tg_layer *l = &L->spec;
        bool bn = l->kind == TG_LAYER_BATCH_NORM1D || l->kind == TG_LAYER_BATCH_NORM2D;
        if (L->params) {
            m->state_param[s] = true;
            m->state[s++] = L->weight = params[p++];
            if (bn || l->bias) {
                m->state_param[s] = true;
                m->state[s++] = L->bias = params[p++];
            }
        }
        if (!bn)
            continue;
        L->running_mean = make_buffer(ctx, m->dtype, 1, &l->in, i, "running_mean");
        m->state[s++] = L->running_mean;
        L->running_var = L->running_mean ? make_buffer(ctx, m->dtype, 1, &l->in, i, "running_var")
                                         : NULL;
        m->state[s++] = L->running_var;
        L->tracked = L->running_var ? make_buffer(ctx, TG_I64, 0, NULL, i, "num_batches_tracked")
                                    : NULL;
        m->state[s++] = L->tracked;
        if (!L->tracked || tg_fill(ctx, L->running_var, 1.0) != TG_OK)
            return (tg_status)tg_errcode(ctx);
    }
    return TG_OK;
}

/* PyTorch's reset_parameters, module by module, so the RNG stream is used
 * in one fixed order. */
static tg_status init_layers(tg_ctx *ctx, tg_model *m)
{
    for (int i = 0; i < m->n && tg_errcode(ctx) == TG_OK; i++) {
        mlayer *L = &m->layers[i];
        switch (L->spec.kind) {
        case TG_LAYER_CONV1D: case TG_LAYER_CONV2D: case TG_LAYER_LINEAR:
            tg_init_default(ctx, L->weight, L->bias);
            break;
        case TG_LAYER_BATCH_NORM1D: case TG_LAYER_BATCH_NORM2D:
            tg_fill(ctx, L->weight, 1.0); /* the bias stays 0 */
            break;
        default: break;
        }
    }
    return (tg_status)tg_errcode(ctx);
}

static tg_status check_loss_fits(tg_ctx *ctx, const tg_model *m)
{
    int ndim = m->n ? m->layers[m->n - 1].ndim : m->in_ndim;
    if ((m->loss.kind == TG_LOSS_CROSS_ENTROPY || m->loss.kind == TG_LOSS_NLL) && ndim < 1)
        return TG_ERROR(ctx, TG_ESHAPE, "model_build: %s needs class scores per example",
                        tg_loss_name(m->loss.kind));
    return TG_OK;
}

/* The state-dict list of n entries, all NULL; tg_model_free frees it. */
static tg_status alloc_state(tg_ctx *ctx, tg_model *m, int n)
{
    size_t k = n ? (size_t)n : 1;
    tg_tensor **state = tg_malloc(ctx, k * sizeof *state);
    bool *is_param = state ? tg_malloc(ctx, k * sizeof *is_param) : NULL;
    if (!is_param) {
        tg_free(ctx, state, k * sizeof *state);
        return TG_ENOMEM;
    }
    memset(state, 0, k * sizeof *state);
    memset(is_param, 0, k * sizeof *is_param);
    m->state = state;
    m->state_param = is_param;
    m->n_state = n;
    return TG_OK;
}

tg_status tg_model_build(tg_ctx *ctx, tg_model *m)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return ctx ? (tg_status)tg_errcode(ctx) : TG_EINVAL;
    if (!m)
        return TG_ERROR(ctx, TG_EINVAL, "model_build: model NULL");
    if (m->built || m->state)
        return TG_ERROR(ctx, TG_ESTATE, "model_build: the model is already built%s",
                        m->built ? "" : " (and failed: free it)");
    tg_status st = check_loss_fits(ctx, m);
    if (st)
        return st;
    int np, nb;
    count_state(m, &np, &nb);
    if ((st = alloc_state(ctx, m, np + nb)))
        return st;
    tg_param_spec *specs = tg_malloc(ctx, (np ? np : 1) * sizeof *specs);
    char (*names)[NAME_MAX_LEN] = specs ? tg_malloc(ctx, (np ? np : 1) * sizeof *names) : NULL;
    tg_tensor **params = names ? tg_malloc(ctx, (np ? np : 1) * sizeof *params) : NULL;
    if (params) {
        fill_specs(m, specs, names);
        if (np)
            tg_param_block(ctx, m->dtype, np, specs, params, &m->block);
        if (tg_errcode(ctx) == TG_OK && attach_state(ctx, m, params) == TG_OK)
            init_layers(ctx, m);
    }
    tg_free(ctx, params, (np ? np : 1) * sizeof *params);
    tg_free(ctx, names, (np ? np : 1) * sizeof *names);
    tg_free(ctx, specs, (np ? np : 1) * sizeof *specs);
    st = (tg_status)tg_errcode(ctx);
    m->built = st == TG_OK;
    return st;
}

void tg_model_free(tg_ctx *ctx, tg_model *m)
{
    if (!ctx || !m)
        return;
    for (int i = 0; i < m->n_state; i++)
        if (m->state[i] && !m->state_param[i])
            tg_buffer_free(ctx, m->state[i]);
    if (m->block)
        tg_param_free(ctx, m->block);
    size_t n = m->n_state ? (size_t)m->n_state : 1;
    if (m->state)
        tg_free(ctx, m->state, n * sizeof *m->state);
    if (m->state_param)
        tg_free(ctx, m->state_param, n * sizeof *m->state_param);
    tg_free(ctx, m->layers, (size_t)m->cap * sizeof *m->layers);
    tg_free(ctx, m, sizeof *m);
}

/* ---------------------------------------------------------------- running */

tg_status tg_model_set_batch_norm(tg_ctx *ctx, tg_model *m, tg_batch_norm_fn fn, void *ud)
{
    if (!m)
        return TG_ERROR(ctx, TG_EINVAL, "model_set_batch_norm: model NULL");
    m->bn_fn = fn;
    m->bn_ud = fn ? ud : NULL;
    return TG_OK;
}

static tg_tensor *forward_bn(tg_ctx *ctx, const tg_model *m, const mlayer *L, tg_tensor *h)
{
    tg_tensor *y = m->bn_fn ? m->bn_fn(ctx, h, L->weight, L->bias, L->running_mean,
                                       L->running_var, L->spec.momentum, L->spec.eps, m->bn_ud)
                            : tg_batch_norm(ctx, h, L->weight, L->bias, L->running_mean,
                                            L->running_var, L->spec.momentum, L->spec.eps);
    if (y && tg_training(ctx))
        tg_set(L->tracked, 0, tg_get(L->tracked, 0) + 1);
    return y;
}

static tg_tensor *forward_pool(tg_ctx *ctx, const tg_layer *l, tg_tensor *h)
{
    tg_pool_attrs p = {{l->kernel[0], l->kernel[1]}, {l->stride[0], l->stride[1]},
                       {l->padding[0], l->padding[1]}, {l->dilation[0], l->dilation[1]},
                       l->ceil_mode, !l->count_include_pad};
    switch (l->kind) {
    case TG_LAYER_MAX_POOL1D: return tg_max_pool1d_opts(ctx, h, &p);
    case TG_LAYER_MAX_POOL2D: return tg_max_pool2d_opts(ctx, h, &p);
    case TG_LAYER_AVG_POOL1D: return tg_avg_pool1d_opts(ctx, h, &p);
    default: return tg_avg_pool2d_opts(ctx, h, &p);
    }
}

static tg_tensor *forward_layer(tg_ctx *ctx, const tg_model *m, const mlayer *L, tg_tensor *h)
{
    const tg_layer *l = &L->spec;
    switch (l->kind) {
    case TG_LAYER_CONV1D:
        return tg_conv1d(ctx, h, L->weight, L->bias, l->stride[0], l->padding[0],
                         l->dilation[0], l->groups);
    case TG_LAYER_CONV2D: {
        tg_conv_attrs c = {{l->stride[0], l->stride[1]}, {l->padding[0], l->padding[1]},
                           {l->dilation[0], l->dilation[1]}, l->groups};
        return tg_conv2d_ex(ctx, h, L->weight, L->bias, &c);
    }
    case TG_LAYER_LINEAR: return tg_linear(ctx, h, L->weight, L->bias);
    case TG_LAYER_RELU: return tg_relu(ctx, h);
    case TG_LAYER_SIGMOID: return tg_sigmoid(ctx, h);
    case TG_LAYER_TANH: return tg_tanh(ctx, h);
    case TG_LAYER_LEAKY_RELU: return tg_leaky_relu(ctx, h, l->p);
    case TG_LAYER_MAX_POOL1D: case TG_LAYER_MAX_POOL2D:
    case TG_LAYER_AVG_POOL1D: case TG_LAYER_AVG_POOL2D: return forward_pool(ctx, l, h);
    case TG_LAYER_GLOBAL_AVG_POOL: return tg_global_avg_pool_ex(ctx, h, true);
    case TG_LAYER_PAD1D: return tg_pad1d(ctx, h, l->padding[0], l->padding[0]);
    case TG_LAYER_PAD2D:
        return tg_pad2d(ctx, h, l->padding[1], l->padding[1], l->padding[0], l->padding[0]);
    case TG_LAYER_FLATTEN: return tg_flatten(ctx, h, 1, -1);
    case TG_LAYER_DROPOUT: return tg_dropout(ctx, h, l->p);
    case TG_LAYER_BATCH_NORM1D: case TG_LAYER_BATCH_NORM2D: return forward_bn(ctx, m, L, h);
    case TG_LAYER_SOFTMAX: return tg_softmax(ctx, h, l->dim);
    case TG_LAYER_LOG_SOFTMAX: return tg_log_softmax(ctx, h, l->dim);
    default: break;
    }
    TG_ERROR(ctx, TG_EINTERNAL, "model_forward: layer kind %d", (int)l->kind);
    return NULL;
}

static bool input_fits(const tg_model *m, const tg_tensor *x)
{
    if (x->ndim != m->in_ndim + 1)
        return false;
    for (int i = 0; i < m->in_ndim; i++)
        if (x->shape[i + 1] != m->in_shape[i])
            return false;
    return true;
}

tg_tensor *tg_model_forward(tg_ctx *ctx, tg_model *m, tg_tensor *x)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return NULL;
    if (!m || !x) {
        TG_ERROR(ctx, TG_EINVAL, "model_forward: model or input NULL");
        return NULL;
    }
    if (!m->built) {
        TG_ERROR(ctx, TG_ESTATE, "model_forward: the model is not built (tg_model_build)");
        return NULL;
    }
    if (x->dtype != m->dtype) {
        TG_ERROR(ctx, TG_EDTYPE, "model_forward: input is %s, the model %s",
                 tg_dtype_name(x->dtype), tg_dtype_name(m->dtype));
        return NULL;
    }
    if (!input_fits(m, x)) {
        char got[160], want[160];
        tg_shape_str(x, got, sizeof got);
        shape_str(want, sizeof want, m->in_ndim, m->in_shape);
        TG_ERROR(ctx, TG_ESHAPE, "model_forward: input %s; the model takes (N, %s", got,
                 want + 1);
        return NULL;
    }
    /* one scope per layer, named as its state_dict prefix and kind ("3.conv2d") */
    tg_tensor *h = x;
    for (int i = 0; i < m->n && h; i++) {
        tg_scope_push(ctx, m->layers[i].scope);
        h = forward_layer(ctx, m, &m->layers[i], h);
        tg_scope_pop(ctx);
    }
    return h;
}

tg_tensor *tg_model_loss(tg_ctx *ctx, const tg_model *m, tg_tensor *out, tg_tensor *target)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return NULL;
    if (!m) {
        TG_ERROR(ctx, TG_EINVAL, "model_loss: model NULL");
        return NULL;
    }
    const tg_loss_spec *s = &m->loss;
    tg_ce_attrs ce = {s->reduction, s->ignore_index, s->label_smoothing};
    switch (s->kind) {
    case TG_LOSS_CROSS_ENTROPY: return tg_cross_entropy_ex(ctx, out, target, NULL, &ce);
    case TG_LOSS_NLL: return tg_nll_loss_ex(ctx, out, target, NULL, s->reduction, s->ignore_index);
    case TG_LOSS_MSE: return tg_mse(ctx, out, target, s->reduction);
    case TG_LOSS_BCE: return tg_bce(ctx, out, target, s->reduction);
    case TG_LOSS_BCE_WITH_LOGITS:
        return tg_bce_with_logits_ex(ctx, out, target, NULL, s->reduction);
    default: break;
    }
    TG_ERROR(ctx, TG_ESTATE, "model_loss: the model has no loss (tg_model_set_loss)");
    return NULL;
}

/* ---------------------------------------------------------------- inspection */

tg_dtype tg_model_dtype(const tg_model *m) { return m->dtype; }
int tg_model_layer_count(const tg_model *m) { return m ? m->n : 0; }

const tg_layer *tg_model_layer(const tg_model *m, int i)
{
    return m && i >= 0 && i < m->n ? &m->layers[i].spec : NULL;
}

const tg_loss_spec *tg_model_loss_spec(const tg_model *m) { return m ? &m->loss : NULL; }

int tg_model_shape(const tg_model *m, int i, int64_t shape[TG_MAX_DIMS])
{
    if (!m || i < -1 || i >= m->n)
        return -1;
    int ndim = i < 0 ? m->in_ndim : m->layers[i].ndim;
    memcpy(shape, i < 0 ? m->in_shape : m->layers[i].shape, (size_t)ndim * sizeof *shape);
    return ndim;
}

int64_t tg_model_param_count(const tg_model *m, int i)
{
    if (!m || i < -1 || i >= m->n)
        return -1;
    if (i >= 0)
        return m->layers[i].params;
    int64_t sum = 0;
    for (int k = 0; k < m->n; k++)
        if (__builtin_add_overflow(sum, m->layers[k].params, &sum))
            return INT64_MAX;
    return sum;
}

int64_t tg_model_activation_bytes(const tg_model *m, int i)
{
    if (!m || i < -1 || i >= m->n)
        return -1;
    int64_t es = (int64_t)tg_dtype_size(m->dtype);
    if (i >= 0)
        return m->layers[i].numel * es; /* numel <= INT64_MAX / 8 */
    int64_t sum = 0, b;
    for (int k = 0; k < m->n; k++)
        if (__builtin_mul_overflow(m->layers[k].numel, es, &b) ||
            __builtin_add_overflow(sum, b, &sum))
            return INT64_MAX;
    return sum;
}

/* n with a comma every three digits ("42,968,388"). */
static void grouped(char *buf, size_t size, int64_t n)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%" PRId64, n);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < size; i++) {
        buf[o++] = digits[i];
        int left = len - 1 - i;
        if (left > 0 && left % 3 == 0 && digits[i] != '-')
            buf[o++] = ',';
    }
    buf[o] = '\0';
}

/* "loss: cross_entropy (mean, ignore_index=1, label_smoothing=0.1)": the
 * settings other than PyTorch's defaults. Returns whether writing worked. */
static bool print_loss(FILE *f, const tg_loss_spec *s)
{
    static const char *const reductions[] = {"mean", "sum", "none"};
    bool ok = fprintf(f, "loss: %s (%s", tg_loss_name(s->kind), reductions[s->reduction]) >= 0;
    if (s->ignore_index != TG_IGNORE_INDEX)
        ok &= fprintf(f, ", ignore_index=%" PRId64, s->ignore_index) >= 0;
    if (s->label_smoothing != 0)
        ok &= fprintf(f, ", label_smoothing=%g", s->label_smoothing) >= 0;
    return ok && fprintf(f, ")\n") >= 0;
}

tg_status tg_model_summary(tg_ctx *ctx, const tg_model *m, FILE *f)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return ctx ? (tg_status)tg_errcode(ctx) : TG_EINVAL;
    if (!m || !f)
        return TG_ERROR(ctx, TG_EINVAL, "model_summary: model or file NULL");
    char shape[160], params[32], bytes[32];
    int ok = fprintf(f, "%5s  %-16s %-24s %14s %18s\n", "index", "layer", "output shape",
                     "params", "activation bytes") >= 0;
    shape_str(shape, sizeof shape, m->in_ndim, m->in_shape);
    ok &= fprintf(f, "%5s  %-16s %s\n", "", "input", shape) >= 0;
    for (int i = 0; i < m->n; i++) {
        shape_str(shape, sizeof shape, m->layers[i].ndim, m->layers[i].shape);
        grouped(params, sizeof params, m->layers[i].params);
        grouped(bytes, sizeof bytes, tg_model_activation_bytes(m, i));
        ok &= fprintf(f, "%5d  %-16s %-24s %14s %18s\n", i, tg_layer_name(m->layers[i].spec.kind),
                      shape, params, bytes) >= 0;
    }
    grouped(params, sizeof params, tg_model_param_count(m, -1));
    grouped(bytes, sizeof bytes, tg_model_activation_bytes(m, -1));
    ok &= fprintf(f, "total params: %s\ntotal activation bytes per example: %s (%s)\n", params,
                  bytes, tg_dtype_name(m->dtype)) >= 0;
    if (m->loss.kind != TG_LOSS_NONE)
        ok &= print_loss(f, &m->loss);
    return ok ? TG_OK : TG_ERROR(ctx, TG_EIO, "model_summary: writing the table failed");
}

tg_tensor *tg_model_params(const tg_model *m) { return m ? m->block : NULL; }
int tg_model_state_count(const tg_model *m) { return m ? m->n_state : 0; }

tg_tensor *tg_model_state(const tg_model *m, int i)
{
    return m && i >= 0 && i < m->n_state ? m->state[i] : NULL;
}

bool tg_model_state_is_param(const tg_model *m, int i)
{
    return m && i >= 0 && i < m->n_state && m->state_param[i];
}

/* ---------------------------------------------------------------- checkpoints */

/* The state dict as safetensors items (the tensors' own names); the
 * caller frees n_state of them. */
static tg_st_item *state_items(tg_ctx *ctx, const tg_model *m, const char *who)
{
    if (!m->built) {
        TG_ERROR(ctx, TG_ESTATE, "%s: the model is not built (tg_model_build)", who);
        return NULL;
    }
    size_t n = m->n_state ? (size_t)m->n_state : 1;
    tg_st_item *items = tg_malloc(ctx, n * sizeof *items);
    for (int i = 0; items && i < m->n_state; i++) {
        items[i].name = NULL;
        items[i].tensor = m->state[i];
    }
    return items;
}

tg_status tg_model_save(tg_ctx *ctx, const tg_model *m, const char *path)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return ctx ? (tg_status)tg_errcode(ctx) : TG_EINVAL;
    if (!m || !path)
        return TG_ERROR(ctx, TG_EINVAL, "model_save: model or path NULL");
    tg_st_item *items = state_items(ctx, m, "model_save");
    if (!items)
        return (tg_status)tg_errcode(ctx);
    tg_st_save(ctx, path, items, (size_t)m->n_state, NULL, 0);
    tg_free(ctx, items, (m->n_state ? (size_t)m->n_state : 1) * sizeof *items);
    return (tg_status)tg_errcode(ctx);
}

tg_status tg_model_load_state(tg_ctx *ctx, tg_model *m, const char *path, bool strict)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return ctx ? (tg_status)tg_errcode(ctx) : TG_EINVAL;
    if (!m || !path)
        return TG_ERROR(ctx, TG_EINVAL, "model_load_state: model or path NULL");
    tg_st_item *items = state_items(ctx, m, "model_load_state");
    if (!items)
        return (tg_status)tg_errcode(ctx);
    tg_st_load_file(ctx, path, items, (size_t)m->n_state, strict);
    tg_free(ctx, items, (m->n_state ? (size_t)m->n_state : 1) * sizeof *items);
    return (tg_status)tg_errcode(ctx);
}
