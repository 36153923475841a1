/*
 * conv.c: conv1d and conv2d (cross-correlation, PyTorch's layout); conv1d
 * is conv2d with a height of 1. This file validates, records and picks a
 * backend; the arithmetic is in conv_portable.c (im2col + gemm) and
 * conv_dnnl.c (oneDNN), behind conv_impl.h.
 *
 * Shapes: x (N, C, H, W), w (K, Cg, R, S) with Cg = C / G, y (N, K, OH, OW),
 * OH = floor((H + 2 ph - dh (R - 1) - 1) / sh) + 1 (OW likewise).
 *   y[n, k]  = sum over c, i, j of w[k, c, i, j] x[n, g Cg + c, oy sh - ph + i dh, ox sw - pw + j dw] + b[k]
 *   dx       = full convolution of dy with the kernel rotated 180 degrees
 *   dw[k]    = dy[:, k] correlated with x,   db[k] = dy[:, k] summed (in double)
 *
 * Sizes come from the caller, so every one is computed with overflow checks.
 * As in PyTorch, an input without elements is taken only when its batch is
 * empty (N = 0): the output is then (0, K, OH, OW) and nothing is computed.
 * The vjp reads x and w, never the bias or the output.
 *
 * Backend choice (tg__conv_pick): one input channel at stride 1 with few
 * taps in all (B1's first layer) runs the direct kernels. Otherwise float64 runs portable, and
 * float32 runs oneDNN when the library is built with it (TG_DNNL, and not
 * TG_PORTABLE_CONV). TAPEGRAD_CONV=portable|dnnl|direct in the environment
 * (read once) or a test's tg__conv_force says otherwise.
 */
#include "conv_impl.h"

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct geom {
    int64_t n, c, h, w;        /* input */
    int64_t k, r, s;           /* kernel */
    int64_t oh, ow;            /* output */
    int64_t sh, sw, ph, pw, dh, dw, g;
    int64_t cg, kg, crs, ohw;  /* per group: channels, filters, col rows; output pixels */
} geom;

static bool is_1d(const tg_node *node) { return node->op == &tg__op_conv1d; }

static void read_geometry(const tg_node *node, geom *q)
{
    const tg_conv_attrs *a = node->attrs;
    const tg_tensor *x = node->in[0], *w = node->in[1];
    bool one = is_1d(node);
    int nd = one ? 3 : 4;
    memset(q, 0, sizeof *q);
    q->n = x->shape[0];
    q->c = x->shape[1];
    q->h = one ? 1 : x->shape[2];
    q->w = x->shape[nd - 1];
    q->k = w->shape[0];
    q->r = one ? 1 : w->shape[2];
    q->s = w->shape[nd - 1];
    q->sh = one ? 1 : a->stride[0];
    q->sw = one ? a->stride[0] : a->stride[1];
    q->ph = one ? 0 : a->padding[0];
    q->pw = one ? a->padding[0] : a->padding[1];
    q->dh = one ? 1 : a->dilation[0];
    q->dw = one ? a->dilation[0] : a->dilation[1];
    q->g = a->groups;
}

static tg_status check_attrs(tg_ctx *ctx, const char *who, const geom *q)
{
    if (q->sh < 1 || q->sw < 1)
        return TG_ERROR(ctx, TG_EINVAL, "%s: stride %" PRId64 "; it must be >= 1", who,
                        q->sh < 1 ? q->sh : q->sw);
    if (q->dh < 1 || q->dw < 1)
        return TG_ERROR(ctx, TG_EINVAL, "%s: dilation %" PRId64 "; it must be >= 1", who,
                        q->dh < 1 ? q->dh : q->dw);
    if (q->ph < 0 || q->pw < 0)
        return TG_ERROR(ctx, TG_EINVAL, "%s: padding %" PRId64 "; it must be >= 0", who,
                        q->ph < 0 ? q->ph : q->pw);
    if (q->g < 1)
        return TG_ERROR(ctx, TG_EINVAL, "%s: groups = %" PRId64 "; it must be >= 1", who, q->g);
    return TG_OK;
}

/* Filters, channels, kernel and bias against the input and the groups. */
static tg_status check_weight(tg_ctx *ctx, const char *who, bool one, geom *q,
                              const tg_tensor *w, const tg_tensor *b)
{
    char rs[48];
    if (q->k == 0)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: weight %s has no filters", who, tg__shape_s(w));
    if (q->c % q->g || q->k % q->g)
        return TG_ERROR(ctx, TG_EINVAL, "%s: groups = %" PRId64 " must divide both the %" PRId64
                        " input channels and the %" PRId64 " filters", who, q->g, q->c, q->k);
    q->cg = q->c / q->g;
    q->kg = q->k / q->g;
    if (w->shape[1] != q->cg)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: input has %" PRId64 " channels but weight %s "
                        "expects %" PRId64 " (x %" PRId64 " groups)", who, q->c, tg__shape_s(w),
                        w->shape[1], q->g);
    if (b && (b->ndim != 1 || b->shape[0] != q->k))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: bias %s should be (%" PRId64 ")", who,
                        tg__shape_s(b), q->k);
    if (q->r < 1 || q->s < 1)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: weight %s has a kernel of size %s; it must be at "
                        "least 1", who, tg__shape_s(w), tg__size_pair(rs, sizeof rs, one, q->r, q->s));
    return TG_OK;
}

/* One spatial axis: input size, kernel size, stride, padding, dilation. */
typedef struct axis { int64_t n, k, s, p, d; } axis;
enum { AXIS_FITS, AXIS_PAD_OVERFLOW, AXIS_SPAN_OVERFLOW, AXIS_TOO_SMALL };

/* The padded input, the kernel's span and the output length along one axis. */
static int axis_len(const axis *a, int64_t *padded, int64_t *span, int64_t *out)
{
    if (__builtin_mul_overflow(a->p, 2, padded) || __builtin_add_overflow(*padded, a->n, padded))
        return AXIS_PAD_OVERFLOW;
    if (__builtin_mul_overflow(a->d, a->k - 1, span) || __builtin_add_overflow(*span, 1, span))
        return AXIS_SPAN_OVERFLOW;
    if (*span > *padded)
        return AXIS_TOO_SMALL;
    *out = (*padded - *span) / a->s + 1;
    return AXIS_FITS;
}

/* q->oh and q->ow, or an error naming input, kernel, padding and dilation. */
static tg_status output_size(tg_ctx *ctx, const char *who, bool one, geom *q)
{
    const axis ax[2] = {{q->h, q->r, q->sh, q->ph, q->dh}, {q->w, q->s, q->sw, q->pw, q->dw}};
    int64_t padded[2], span[2], out[2] = {0, 0};
    int why[2];
    char in[48], k[48], p[48], d[48], sp[48], pd[48];
    for (int i = 0; i < 2; i++)
        why[i] = axis_len(&ax[i], &padded[i], &span[i], &out[i]);
    tg__size_pair(in, sizeof in, one, q->h, q->w);
    tg__size_pair(k, sizeof k, one, q->r, q->s);
    tg__size_pair(p, sizeof p, one, q->ph, q->pw);
    tg__size_pair(d, sizeof d, one, q->dh, q->dw);
    for (int i = 0; i < 2; i++) {
        if (why[i] == AXIS_PAD_OVERFLOW)
            return TG_ERROR(ctx, TG_ESHAPE, "%s: input %s with padding %s on each side is larger "
                            "than can be addressed", who, in, p);
        if (why[i] == AXIS_SPAN_OVERFLOW)
            return TG_ERROR(ctx, TG_ESHAPE, "%s: kernel %s with dilation %s spans more than can "
                            "be addressed", who, k, d);
    }
    if (why[0] == AXIS_TOO_SMALL || why[1] == AXIS_TOO_SMALL)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: the kernel spans %s but the padded input is only "
                        "%s%s (input %s, kernel %s, padding %s, dilation %s): the output would be "
                        "empty", who, tg__size_pair(sp, sizeof sp, one, span[0], span[1]),
                        tg__size_pair(pd, sizeof pd, one, padded[0], padded[1]), one ? " long" : "", in, k,
                        p, d);
    q->oh = out[0];
    q->ow = out[1];
    return TG_OK;
}

/* The sizes the kernels use, within BLAS's int and the address space. */
static tg_status work_sizes(tg_ctx *ctx, const char *who, bool one, geom *q, size_t es)
{
    char o[48];
    q->crs = q->cg * q->r * q->s; /* at most the weight's element count */
    if (__builtin_mul_overflow(q->oh, q->ow, &q->ohw))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: an output of %s per channel is more than can be "
                        "addressed", who, tg__size_pair(o, sizeof o, one, q->oh, q->ow));
    const char *what = q->kg > INT_MAX ? "filters per group"
                       : q->crs > INT_MAX ? "im2col rows (C / groups x kernel size)"
                       : q->ohw > INT_MAX ? "output positions per channel" : NULL;
    if (what)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: %s = %" PRId64 " exceeds the BLAS limit %d", who,
                        what, q->kg > INT_MAX ? q->kg : q->crs > INT_MAX ? q->crs : q->ohw,
                        INT_MAX);
    /* the portable kernels' columns of one image, every group's */
    int64_t rows, elems, bytes;
    if (__builtin_mul_overflow(q->crs, q->g, &rows) || __builtin_mul_overflow(rows, q->ohw, &elems) ||
        __builtin_mul_overflow(elems, (int64_t)es, &bytes))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: an im2col buffer of %" PRId64 " x %" PRId64
                        " elements is more than can be addressed", who, rows, q->ohw);
    return TG_OK;
}

/* Fills q from the node and validates it; every message names the op. */
static tg_status geometry(tg_ctx *ctx, const tg_node *node, geom *q)
{
    const char *who = node->op->name;
    const tg_tensor *x = node->in[0], *w = node->in[1], *b = node->n_in > 2 ? node->in[2] : NULL;
    bool one = is_1d(node);
    int nd = one ? 3 : 4;
    if (tg__same_dtype(ctx, who, x, w) || (b && tg__same_dtype(ctx, who, x, b)))
        return tg_errcode(ctx);
    if (x->ndim != nd || w->ndim != nd)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: input %s and weight %s must both have %d dimensions "
                        "(%s)", who, tg__shape_s(x), tg__shape_s(w), nd,
                        one ? "N, C, L and K, C/groups, R" : "N, C, H, W and K, C/groups, R, S");
    read_geometry(node, q);
    if (check_attrs(ctx, who, q) || check_weight(ctx, who, one, q, w, b) ||
        output_size(ctx, who, one, q))
        return tg_errcode(ctx);
    if (q->n > 0 && x->numel == 0)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: input %s has no elements but a batch of %" PRId64
                        "; as in PyTorch, an empty input is taken only when its batch is empty",
                        who, tg__shape_s(x), q->n);
    return q->n > 0 ? work_sizes(ctx, who, one, q, tg_dtype_size(x->dtype)) : TG_OK;
}

/* ---------------------------------------------------------------- backend choice */

enum { PICK_AUTO, PICK_PORTABLE, PICK_DNNL, PICK_DIRECT };
static atomic_int forced = PICK_AUTO; /* tg__conv_force */
static int from_env = PICK_AUTO;      /* TAPEGRAD_CONV */
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static int pick_named(const char *name)
{
    if (!name)
        return PICK_AUTO;
    if (!strcmp(name, "portable"))
        return PICK_PORTABLE;
    if (!strcmp(name, "direct"))
        return PICK_DIRECT;
#ifdef TG_HAVE_DNNL
    if (!strcmp(name, "dnnl"))
        return PICK_DNNL;
#endif
    return -1;
}

static void read_env(void)
{
    int p = pick_named(getenv("TAPEGRAD_CONV"));
    from_env = p < 0 ? PICK_AUTO : p; /* unknown or unavailable: the default */
}

tg_status tg__conv_force(const char *name)
{
    int p = pick_named(name);
    if (p < 0)
        return TG_ENOTFOUND;
    atomic_store(&forced, p);
    return TG_OK;
}

const tg__conv_impl *tg__conv_pick(const tg__conv_desc *d)
{
    pthread_once(&env_once, read_env);
    int p = atomic_load(&forced);
    if (p == PICK_AUTO)
        p = from_env;
    /* Few taps in all: one row pass per tap and filter beats a gemm of inner
     * size R S (B1's 1 x 2 kernel: 7x oneDNN); with more (LeNet's 6 filters
     * of 5 x 5 on rows of 28) the passes' overhead loses to oneDNN. */
    bool few_taps = d->k * d->r * d->s <= 16;
    if ((p == PICK_DIRECT || (p == PICK_AUTO && few_taps)) && tg__conv_direct_fits(d))
        return &tg__conv_direct;
#ifdef TG_HAVE_DNNL
    if (d->dtype == TG_F32 && p != PICK_PORTABLE)
        return &tg__conv_dnnl;
#endif
    return &tg__conv_portable;
}

/* ---------------------------------------------------------------- the op */

/* The kernels' view of a validated geometry. */
static tg__conv_desc desc_of(const geom *q, tg_dtype dt)
{
    tg__conv_desc d = {dt, q->n, q->c, q->h, q->w, q->k, q->r, q->s, q->oh, q->ow,
                       q->sh, q->sw, q->ph, q->pw, q->dh, q->dw, q->g};
    return d;
}

static tg_tensor *conv_forward(tg_ctx *ctx, tg_node *node)
{
    geom q;
    if (geometry(ctx, node, &q))
        return NULL;
    tg_tensor *x = node->in[0], *w = node->in[1], *b = node->n_in > 2 ? node->in[2] : NULL;
    tg_node_value_unused(node, -1);
    if (b)
        tg_node_value_unused(node, 2);
    tg_tensor *y = is_1d(node) ? tg_empty(ctx, x->dtype, TG_SHAPE(q.n, q.k, q.ow))
                               : tg_empty(ctx, x->dtype, TG_SHAPE(q.n, q.k, q.oh, q.ow));
    if (!y || q.n == 0)
        return y;
    tg__conv_desc d = desc_of(&q, x->dtype);
    /* the columns may outlive forward only when the vjp will want dw */
    void **keep = node->recording && w->requires_grad ? &node->aux : NULL;
    /* the backend's temporaries (oneDNN's reorders, columns not kept) go
     * back to the arena at once: they would otherwise stay until tg_reset,
     * through the whole backward sweep */
    tg__mark m = tg__mark_get(ctx);
    if (tg__conv_pick(&d)->fwd(ctx, &d, x->data, w->data, b ? b->data : NULL, y->data, keep))
        return NULL;
    if (!node->aux)
        tg__scratch_release(ctx, m);
    return y;
}

/* gin[i] = 0 when the vjp writes it (an empty sum); nothing when it adds. */
static void zero_written(const tg_node *node, tg_tensor *const *gin)
{
    for (int i = 0; i < node->n_in; i++)
        if (gin[i] && !tg_vjp_adds(node, i))
            memset(gin[i]->data, 0, (size_t)gin[i]->numel * tg_dtype_size(gin[i]->dtype));
}

static tg_status conv_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    geom q;
    if (geometry(ctx, node, &q))
        return tg_errcode(ctx);
    tg_tensor *gx = gin[0], *gw = gin[1], *gb = node->n_in > 2 ? gin[2] : NULL;
    if (q.n == 0) { /* every sum is empty */
        zero_written(node, gin);
        return TG_OK;
    }
    tg__conv_desc d = desc_of(&q, gout->dtype);
    const tg__conv_impl *impl = tg__conv_pick(&d);
    /* each kernel's temporaries go back to the arena as soon as it returns,
     * so a step's peak holds one convolution's scratch, not all of them */
    tg__mark m = tg__mark_get(ctx);
    tg_status st = TG_OK;
    if (gx)
        st = impl->bwd_data(ctx, &d, gout->data, node->in[1]->data, gx->data,
                            tg_vjp_adds(node, 0));
    tg__scratch_release(ctx, m);
    if (!st && (gw || gb))
        st = impl->bwd_weight(ctx, &d, gout->data, node->in[0]->data, gw ? gw->data : NULL,
                              tg_vjp_adds(node, 1), gb ? gb->data : NULL, tg_vjp_adds(node, 2),
                              node->aux);
    tg__scratch_release(ctx, m);
    return st ? tg_errcode(ctx) : TG_OK;
}

static int conv_print(const tg_node *node, char *buf, size_t size)
{
    const tg_conv_attrs *a = node->attrs;
    if (is_1d(node))
        return snprintf(buf, size, "stride=%" PRId64 " pad=%" PRId64 " dilation=%" PRId64
                        " groups=%" PRId64, a->stride[0], a->padding[0], a->dilation[0], a->groups);
    if (a->stride[0] == a->stride[1] && a->padding[0] == a->padding[1] &&
        a->dilation[0] == a->dilation[1])
        return snprintf(buf, size, "stride=%" PRId64 " pad=%" PRId64 " dilation=%" PRId64
                        " groups=%" PRId64, a->stride[0], a->padding[0], a->dilation[0], a->groups);
    return snprintf(buf, size, "stride=(%" PRId64 ", %" PRId64 ") pad=(%" PRId64 ", %" PRId64
                    ") dilation=(%" PRId64 ", %" PRId64 ") groups=%" PRId64, a->stride[0],
                    a->stride[1], a->padding[0], a->padding[1], a->dilation[0], a->dilation[1],
                    a->groups);
}

typedef struct conv_case {
    int64_t x[4], w[4];
    tg_conv_attrs a;
    bool bias;
    const char *desc;
} conv_case;

static int conv_sample_from(tg_ctx *ctx, const conv_case *cs, int ncases, int nd, int index,
                            tg_sample *s)
{
    if (index >= ncases)
        return 0;
    const conv_case *c = &cs[index];
    s->n_in = 0;
    s->in[s->n_in++] = tg__sample_rand(ctx, nd, c->x, -1, 1, true);
    s->in[s->n_in++] = tg__sample_rand(ctx, nd, c->w, -1, 1, true);
    if (c->bias)
        s->in[s->n_in++] = tg__sample_rand(ctx, TG_SHAPE(c->w[0]), -1, 1, true);
    memcpy(s->attrs, &c->a, sizeof c->a);
    snprintf(s->desc, sizeof s->desc, "%s", c->desc);
    return s->in[s->n_in - 1] ? 1 : tg_errcode(ctx);
}

static int conv2d_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const conv_case cases[] = {
        {{2, 2, 5, 5}, {3, 2, 3, 3}, {{1, 1}, {0, 0}, {1, 1}, 1}, true, "3x3, bias"},
        {{1, 4, 7, 6}, {4, 2, 3, 2}, {{2, 2}, {1, 1}, {2, 2}, 2}, true, "stride 2 pad 1 dilation 2 groups 2"},
        {{2, 3, 4, 4}, {2, 3, 1, 1}, {{1, 1}, {0, 0}, {1, 1}, 1}, false, "1x1, no bias"},
        {{1, 1, 5, 4}, {2, 1, 2, 3}, {{1, 2}, {2, 1}, {1, 1}, 1}, true, "odd sizes, uneven stride and pad"},
        {{1, 3, 3, 3}, {3, 1, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, 3}, false, "depthwise, batch of 1"},
    };
    return conv_sample_from(ctx, cases, 5, 4, index, s);
}

static int conv1d_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const conv_case cases[] = {
        {{2, 1, 9}, {1, 1, 2}, {{1}, {1}, {1}, 1}, true, "the notes' conv: k 2 pad 1"},
        {{1, 4, 11}, {4, 2, 3}, {{2}, {2}, {2}, 2}, true, "stride 2 pad 2 dilation 2 groups 2"},
        {{3, 2, 5}, {3, 2, 1}, {{1}, {0}, {1}, 1}, false, "k 1, no bias"},
    };
    return conv_sample_from(ctx, cases, 3, 3, index, s);
}

static const char *const conv_names[] = {"x", "weight", "bias", NULL}; /* graph edge labels */

const tg_op tg__op_conv1d = {.name = "conv1d", .min_in = 2, .max_in = 3,
                             .attr_size = sizeof(tg_conv_attrs), .forward = conv_forward,
                             .vjp = conv_vjp, .print_attrs = conv_print, .sample = conv1d_sample,
                             .flags = TG_OP_VJP_WRITES, .input_names = conv_names};
const tg_op tg__op_conv2d = {.name = "conv2d", .min_in = 2, .max_in = 3,
                             .attr_size = sizeof(tg_conv_attrs), .forward = conv_forward,
                             .vjp = conv_vjp, .print_attrs = conv_print, .sample = conv2d_sample,
                             .flags = TG_OP_VJP_WRITES, .input_names = conv_names};

static tg_tensor *conv(tg_ctx *ctx, const tg_op *op, tg_tensor *x, tg_tensor *w, tg_tensor *b,
                       const tg_conv_attrs *a)
{
    tg_tensor *in[3] = {x, w, b};
    return tg_apply(ctx, op, in, b ? 3 : 2, a);
}

tg_tensor *tg_conv1d(tg_ctx *ctx, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                     int64_t stride, int64_t padding, int64_t dilation, int64_t groups)
{
    tg_conv_attrs a = {{stride, 1}, {padding, 0}, {dilation, 1}, groups};
    return conv(ctx, &tg__op_conv1d, x, weight, bias, &a);
}

tg_tensor *tg_conv2d(tg_ctx *ctx, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                     int64_t stride, int64_t padding, int64_t dilation, int64_t groups)
{
    tg_conv_attrs a = {{stride, stride}, {padding, padding}, {dilation, dilation}, groups};
    return conv(ctx, &tg__op_conv2d, x, weight, bias, &a);
}

tg_tensor *tg_conv2d_ex(tg_ctx *ctx, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                        const tg_conv_attrs *attrs)
{
    TG__GUARD(ctx, NULL);
    if (!attrs) {
        TG_ERROR(ctx, TG_EINVAL, "conv2d: attrs is NULL");
        return NULL;
    }
    return conv(ctx, &tg__op_conv2d, x, weight, bias, attrs);
}
