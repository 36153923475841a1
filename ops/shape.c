/*
 * shape.c: reshape (and flatten), permute (and transpose), concat, slice
 * and zero padding.
 *
 * reshape shares its input's data. The others move elements, and each
 * move is one strided copy: walk a domain shape, read src at base + the
 * dot product of the index with src strides, write dst likewise. The vjp
 * is the same walk with source and destination swapped:
 *   permute: dx[perm view] (+)= g     slice: dx[start::step] (+)= g, 0 elsewhere
 *   pad:     dx (+)= g[interior]      concat: dx_i (+)= g[piece i]
 * Each writes its input's first gradient whole (TG_OP_VJP_WRITES) and adds
 * later ones; slice writes the zeros around the slice itself, and so does
 * pad around what a negative padding cropped away.
 * None of the vjps reads a value of the inputs or the output. Every size
 * computed from an attribute is overflow-checked, and an empty copy
 * computes no offsets (those of an empty shape need not fit in int64).
 */
#include "ops_impl.h"

#include <inttypes.h>

typedef struct view {
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int64_t dst[TG_MAX_DIMS], src[TG_MAX_DIMS]; /* element strides */
    int64_t dst0, src0;                         /* base offsets */
} view;

typedef struct copy_args {
    tg_dtype dt;
    void *dst;
    const void *src;
    bool accumulate;
} copy_args;

static void copy_row(void *ud, int64_t n, const int64_t off[3], const int64_t inc[3])
{
    const copy_args *u = ud;
    TG__DISPATCH(u->dt, T, {
        T *d = (T *)u->dst + off[0];
        const T *s = (const T *)u->src + off[1];
        if (u->accumulate)
            for (int64_t i = 0; i < n; i++) d[i * inc[0]] += s[i * inc[1]];
        else
            for (int64_t i = 0; i < n; i++) d[i * inc[0]] = s[i * inc[1]];
    });
}

/* dst[dst0 + idx . v->dst] (+)= src[src0 + idx . v->src] over the domain;
 * reverse swaps the roles (the vjp direction); accumulate adds. */
static bool view_empty(const view *v)
{
    for (int d = 0; d < v->ndim; d++)
        if (v->shape[d] == 0)
            return true;
    return false;
}

static void view_copy(const view *v, tg_dtype dt, void *dst, const void *src, bool reverse,
                      bool accumulate)
{
    if (view_empty(v))
        return;
    tg__bcast it;
    memset(&it, 0, sizeof it);
    it.ndim = v->ndim;
    it.numel = 1;
    for (int d = 0; d < v->ndim; d++) {
        it.shape[d] = v->shape[d];
        it.stride[0][d] = reverse ? v->src[d] : v->dst[d];
        it.stride[1][d] = reverse ? v->dst[d] : v->src[d];
        it.numel *= v->shape[d];
    }
    size_t es = tg_dtype_size(dt);
    copy_args u = {dt, (char *)dst + (size_t)(reverse ? v->src0 : v->dst0) * es,
                   (const char *)src + (size_t)(reverse ? v->dst0 : v->src0) * es, accumulate};
    tg__bcast_rows(&it, copy_row, &u);
}

static void contiguous_strides(const tg_tensor *t, int64_t *stride)
{
    int64_t s = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        stride[d] = s;
        s *= t->shape[d];
    }
}

static void copy_sample_desc(tg_sample *s, const char *desc)
{
    snprintf(s->desc, sizeof s->desc, "%s", desc);
}

/* Every vjp of this file reads only the gradient. */
static void mark_all_unread(tg_node *node)
{
    for (int i = -1; i < node->n_in; i++)
        tg_node_value_unused(node, i);
}

/* ---------------------------------------------------------------- reshape */

static tg_tensor *reshape_refuse(tg_ctx *ctx, const tg_tensor *x, const tg_reshape_attrs *a,
                                 const char *why)
{
    char want[160];
    tg__shape_fmt(want, sizeof want, a->ndim, a->shape);
    TG_ERROR(ctx, TG_ESHAPE, "reshape: cannot view %s (%" PRId64 " elements) as %s%s",
             tg__shape_s(x), x->numel, want, why);
    return NULL;
}

static tg_tensor *reshape_forward(tg_ctx *ctx, tg_node *node)
{
    const tg_reshape_attrs *a = node->attrs;
    tg_tensor *x = node->in[0];
    if (a->ndim < 0 || a->ndim > TG_MAX_DIMS) {
        TG_ERROR(ctx, TG_EINVAL, "reshape: %d dimensions; tensors have 0 to %d", a->ndim,
                 TG_MAX_DIMS);
        return NULL;
    }
    int64_t shape[TG_MAX_DIMS], known = 1;
    int infer = -1;
    for (int d = 0; d < a->ndim; d++) {
        shape[d] = a->shape[d];
        if (shape[d] == -1 && infer < 0) {
            infer = d;
        } else if (shape[d] < 0) {
            TG_ERROR(ctx, TG_EINVAL, "reshape: dimension %d is %" PRId64
                     " (only one -1 is allowed)", d, shape[d]);
            return NULL;
        } else if (__builtin_mul_overflow(known, shape[d], &known)) {
            return reshape_refuse(ctx, x, a, ": that shape has more elements than can be addressed");
        }
    }
    if (infer >= 0) {
        if (known == 0)
            return reshape_refuse(ctx, x, a, ": the -1 could be any size");
        if (x->numel % known)
            return reshape_refuse(ctx, x, a, "");
        shape[infer] = x->numel / known;
        known *= shape[infer];
    }
    if (known != x->numel)
        return reshape_refuse(ctx, x, a, "");
    tg_tensor *out = tg__tensor_new(ctx, x->dtype, a->ndim, shape, false);
    if (!out)
        return NULL;
    out->data = x->data;
    out->base = x->base ? x->base : x; /* a view: writes to either are seen through both */
    mark_all_unread(node);
    return out;
}

static tg_status reshape_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                             tg_tensor *const *gin)
{
    (void)ctx;
    if (!tg_vjp_adds(node, 0)) {
        /* an empty tensor's data may be NULL; a handed-over buffer
         * (TG_OP_VJP_INPLACE) already holds the gradient */
        if (gout->numel > 0 && gin[0]->data != gout->data)
            memcpy(gin[0]->data, gout->data, (size_t)gout->numel * tg_dtype_size(gout->dtype));
        return TG_OK;
    }
    TG__DISPATCH(gout->dtype, T, {
        const T *g = gout->data;
        T *gx = gin[0]->data;
        for (int64_t i = 0; i < gout->numel; i++)
            gx[i] += g[i];
    });
    return TG_OK;
}

static int reshape_print(const tg_node *node, char *buf, size_t size)
{
    const tg_reshape_attrs *a = node->attrs;
    return tg__shape_fmt(buf, size, a->ndim, a->shape);
}

static int reshape_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const tg_reshape_attrs attrs[] = {{2, {4, 3}}, {1, {-1}}, {3, {2, -1, 1}}};
    if (index >= 3)
        return 0;
    s->n_in = 1;
    s->in[0] = tg__sample_rand(ctx, TG_SHAPE(3, 4), -1, 1, true);
    memcpy(s->attrs, &attrs[index], sizeof attrs[index]);
    copy_sample_desc(s, index == 0 ? "2-D" : index == 1 ? "flatten" : "inferred with size 1");
    return s->in[0] ? 1 : tg_errcode(ctx);
}

const tg_op tg__op_reshape = {.name = "reshape", .min_in = 1, .max_in = 1,
                              .attr_size = sizeof(tg_reshape_attrs), .forward = reshape_forward,
                              .vjp = reshape_vjp, .print_attrs = reshape_print,
                              .sample = reshape_sample,
                              .flags = TG_OP_VJP_WRITES | TG_OP_VJP_INPLACE};

tg_tensor *tg_reshape(tg_ctx *ctx, tg_tensor *x, int ndim, const int64_t *shape)
{
    TG__GUARD(ctx, NULL);
    tg_reshape_attrs a;
    memset(&a, 0, sizeof a);
    if (ndim < 0 || ndim > TG_MAX_DIMS || (ndim > 0 && !shape)) {
        TG_ERROR(ctx, TG_EINVAL, "reshape: %d dimensions%s; tensors have 0 to %d", ndim,
                 shape ? "" : " and no shape", TG_MAX_DIMS);
        return NULL;
    }
    a.ndim = ndim;
    for (int d = 0; d < ndim; d++)
        a.shape[d] = shape[d];
    return tg_apply(ctx, &tg__op_reshape, &x, 1, &a);
}

tg_tensor *tg_flatten(tg_ctx *ctx, tg_tensor *x, int start, int end)
{
    TG__GUARD(ctx, NULL);
    if (tg__check_tensor(ctx, "flatten", "x", x))
        return NULL;
    if (x->ndim == 0)
        return tg_reshape(ctx, x, TG_SHAPE(1));
    int s = tg__axis(ctx, "flatten", start, x->ndim), e = s < 0 ? -1 : tg__axis(ctx, "flatten", end, x->ndim);
    if (s < 0 || e < 0)
        return NULL;
    if (s > e) {
        TG_ERROR(ctx, TG_EINVAL, "flatten: start dimension %d comes after end dimension %d", start, end);
        return NULL;
    }
    int64_t shape[TG_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (d <= s || d > e) {
            shape[nd++] = x->shape[d];
        } else if (__builtin_mul_overflow(shape[nd - 1], x->shape[d], &shape[nd - 1])) {
            TG_ERROR(ctx, TG_ESHAPE, "flatten: dimensions %d to %d of %s multiply to more "
                     "elements than can be addressed", s, e, tg__shape_s(x));
            return NULL;
        }
    }
    return tg_reshape(ctx, x, nd, shape);
}

/* ---------------------------------------------------------------- permute */

/* The axes of a->perm, negative ones counted from the end as PyTorch does,
 * into perm; false with an error unless they are a permutation of x's. */
static bool check_perm(tg_ctx *ctx, const tg_tensor *x, const tg_permute_attrs *a, int *perm)
{
    if (a->ndim != x->ndim) {
        TG_ERROR(ctx, TG_EINVAL, "permute: %d axes given for a %d-dimensional tensor", a->ndim, x->ndim);
        return false;
    }
    char list[160];
    int64_t given[TG_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++)
        given[d] = a->perm[d];
    tg__shape_fmt(list, sizeof list, a->ndim, given);
    bool seen[TG_MAX_DIMS] = {false};
    for (int d = 0; d < a->ndim; d++) {
        int p = a->perm[d];
        if (p < -x->ndim || p >= x->ndim) {
            TG_ERROR(ctx, TG_EINVAL, "permute: %s is not a permutation: entry %d is %d, out of "
                     "range for %s (axes -%d to %d)", list, d, p, tg__shape_s(x), x->ndim,
                     x->ndim - 1);
            return false;
        }
        perm[d] = p < 0 ? p + x->ndim : p;
        if (seen[perm[d]]) {
            TG_ERROR(ctx, TG_EINVAL, "permute: %s is not a permutation: axis %d appears twice",
                     list, perm[d]);
            return false;
        }
        seen[perm[d]] = true;
    }
    return true;
}

static void permute_view(const tg_tensor *x, const int *perm, const tg_tensor *out, view *v)
{
    memset(v, 0, sizeof *v);
    v->ndim = out->ndim;
    for (int d = 0; d < out->ndim; d++)
        v->shape[d] = out->shape[d];
    if (view_empty(v))
        return;
    int64_t xs[TG_MAX_DIMS];
    contiguous_strides(x, xs);
    contiguous_strides(out, v->dst);
    for (int d = 0; d < out->ndim; d++)
        v->src[d] = xs[perm[d]];
}

static tg_tensor *permute_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *x = node->in[0];
    int perm[TG_MAX_DIMS];
    if (!check_perm(ctx, x, node->attrs, perm))
        return NULL;
    int64_t shape[TG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        shape[d] = x->shape[perm[d]];
    tg_tensor *out = tg_empty(ctx, x->dtype, x->ndim, shape);
    if (!out)
        return NULL;
    view v;
    permute_view(x, perm, out, &v);
    view_copy(&v, x->dtype, out->data, x->data, false, false);
    mark_all_unread(node);
    return out;
}

static tg_status permute_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                             tg_tensor *const *gin)
{
    int perm[TG_MAX_DIMS];
    if (!check_perm(ctx, node->in[0], node->attrs, perm))
        return tg_errcode(ctx);
    view v;
    permute_view(node->in[0], perm, gout, &v);
    view_copy(&v, gout->dtype, gin[0]->data, gout->data, true, tg_vjp_adds(node, 0));
    return TG_OK;
}

static int permute_print(const tg_node *node, char *buf, size_t size)
{
    const tg_permute_attrs *a = node->attrs;
    int64_t p[TG_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++)
        p[d] = a->perm[d];
    return tg__shape_fmt(buf, size, a->ndim, p);
}

static int permute_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const tg_permute_attrs attrs[] = {{2, {1, 0}}, {3, {2, 0, 1}}, {4, {0, 2, 1, 3}}};
    static const int64_t shapes[][4] = {{3, 4}, {2, 3, 4}, {2, 1, 3, 2}};
    if (index >= 3)
        return 0;
    s->n_in = 1;
    s->in[0] = tg__sample_rand(ctx, attrs[index].ndim, shapes[index], -1, 1, true);
    memcpy(s->attrs, &attrs[index], sizeof attrs[index]);
    copy_sample_desc(s, index == 0 ? "transpose" : index == 1 ? "rotate axes" : "size-1 dim");
    return s->in[0] ? 1 : tg_errcode(ctx);
}

const tg_op tg__op_permute = {.name = "permute", .min_in = 1, .max_in = 1,
                              .attr_size = sizeof(tg_permute_attrs), .forward = permute_forward,
                              .vjp = permute_vjp, .print_attrs = permute_print,
                              .sample = permute_sample,
                              .flags = TG_OP_VJP_WRITES};

tg_tensor *tg_permute(tg_ctx *ctx, tg_tensor *x, const int *perm)
{
    TG__GUARD(ctx, NULL);
    if (tg__check_tensor(ctx, "permute", "x", x))
        return NULL;
    if (!perm && x->ndim > 0) {
        TG_ERROR(ctx, TG_EINVAL, "permute: perm is NULL");
        return NULL;
    }
    tg_permute_attrs a;
    memset(&a, 0, sizeof a);
    a.ndim = x->ndim;
    for (int d = 0; d < x->ndim; d++)
        a.perm[d] = perm[d];
    return tg_apply(ctx, &tg__op_permute, &x, 1, &a);
}

tg_tensor *tg_transpose(tg_ctx *ctx, tg_tensor *x, int dim0, int dim1)
{
    TG__GUARD(ctx, NULL);
    if (tg__check_tensor(ctx, "transpose", "x", x))
        return NULL;
    int a = tg__axis(ctx, "transpose", dim0, x->ndim), b = a < 0 ? -1 : tg__axis(ctx, "transpose", dim1, x->ndim);
    if (a < 0 || b < 0)
        return NULL;
    int perm[TG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        perm[d] = d;
    perm[a] = b;
    perm[b] = a;
    return tg_permute(ctx, x, perm);
}

/* ---------------------------------------------------------------- slice */

/* Python's clamping of start and end for a positive step. */
static int64_t clamp_index(int64_t i, int64_t n)
{
    if (i < 0)
        i += n;
    return i < 0 ? 0 : i > n ? n : i;
}

/* The elements kept: len of them from lo, step apart (Python's rules;
 * no step ever added past the end, so INT64_MAX is a valid step). */
static int64_t slice_len(int64_t lo, int64_t hi, int64_t step)
{
    return hi > lo ? (hi - lo - 1) / step + 1 : 0;
}

static void slice_view(const tg_tensor *x, const tg_slice_attrs *a, int axis, const tg_tensor *out,
                       view *v)
{
    memset(v, 0, sizeof *v);
    v->ndim = out->ndim;
    for (int d = 0; d < out->ndim; d++)
        v->shape[d] = out->shape[d];
    if (view_empty(v))
        return;
    int64_t xs[TG_MAX_DIMS] = {0};
    contiguous_strides(x, xs);
    contiguous_strides(out, v->dst);
    for (int d = 0; d < out->ndim; d++) /* with two or more kept, step < the axis size */
        v->src[d] = d == axis && out->shape[d] > 1 ? xs[d] * a->step : xs[d];
    v->src0 = clamp_index(a->start, x->shape[axis]) * xs[axis];
}

static tg_tensor *slice_forward(tg_ctx *ctx, tg_node *node)
{
    const tg_slice_attrs *a = node->attrs;
    tg_tensor *x = node->in[0];
    int axis = tg__axis(ctx, "slice", a->axis, x->ndim);
    if (axis < 0)
        return NULL;
    if (a->step < 1) {
        TG_ERROR(ctx, TG_EINVAL, "slice: step is %" PRId64 "; it must be >= 1", a->step);
        return NULL;
    }
    int64_t n = x->shape[axis];
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[axis] = slice_len(clamp_index(a->start, n), clamp_index(a->end, n), a->step);
    tg_tensor *out = tg_empty(ctx, x->dtype, x->ndim, shape);
    if (!out)
        return NULL;
    view v;
    slice_view(x, a, axis, out, &v);
    view_copy(&v, x->dtype, out->data, x->data, false, false);
    mark_all_unread(node);
    return out;
}

/*
 * dx (+)= g placed along the axis: x as (outer, n, inner), g as (outer,
 * len, inner), g's block j going to x's block lo + j step. Written, the
 * blocks between are zeros. One pass over dx per outer index, spread over
 * threads; a step of 1 makes g's blocks one run.
 */
static void slice_grad(const tg_tensor *x, int axis, int64_t lo, int64_t step,
                       const tg_tensor *gout, tg_tensor *gx, bool add)
{
    if (x->numel == 0)
        return;
    int64_t outer = 1, inner = 1, n = x->shape[axis], len = gout->shape[axis];
    for (int d = 0; d < axis; d++)
        outer *= x->shape[d];
    for (int d = axis + 1; d < x->ndim; d++)
        inner *= x->shape[d];
    /* runs of run elements, one per kept block (or one for all when step is 1) */
    int64_t runs = step == 1 && len > 0 ? 1 : len, run = step == 1 ? len * inner : inner;
    int64_t gap = len > 1 ? (step - 1) * inner : 0; /* with two kept blocks, step < n */
    TG__DISPATCH(x->dtype, T, {
        const T *g = gout->data;
        T *d = gx->data;
        TG__PAR_FOR(outer > 1 && x->numel >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
        for (int64_t o = 0; o < outer; o++) {
            T *dst = d + (o * n + lo) * inner;
            if (!add && lo > 0)
                memset(d + o * n * inner, 0, (size_t)(lo * inner) * sizeof(T));
            for (int64_t r = 0; r < runs; r++) {
                const T *src = g + (o * len * inner + r * run);
                T *to = dst + r * (run + gap);
                if (add) {
                    _Pragma("omp simd")
                    for (int64_t i = 0; i < run; i++)
                        to[i] += src[i];
                } else {
                    _Pragma("omp simd")
                    for (int64_t i = 0; i < run; i++)
                        to[i] = src[i];
                    if (r + 1 < runs) /* the blocks up to the next kept one */
                        for (int64_t i = run; i < run + gap; i++)
                            to[i] = 0;
                }
            }
            int64_t end = runs ? lo + (len - 1) * step + 1 : lo; /* past the last kept block */
            if (!add && end < n)
                memset(d + (o * n + end) * inner, 0, (size_t)((n - end) * inner) * sizeof(T));
        });
    });
}

static tg_status slice_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                           tg_tensor *const *gin)
{
    (void)ctx;
    const tg_slice_attrs *a = node->attrs;
    tg_tensor *x = node->in[0];
    int axis = a->axis < 0 ? a->axis + x->ndim : a->axis;
    slice_grad(x, axis, clamp_index(a->start, x->shape[axis]), a->step, gout, gin[0],
               tg_vjp_adds(node, 0));
    return TG_OK;
}

static int slice_print(const tg_node *node, char *buf, size_t size)
{
    const tg_slice_attrs *a = node->attrs;
    return snprintf(buf, size, "axis=%d %" PRId64 ":%" PRId64 ":%" PRId64, a->axis, a->start,
                    a->end, a->step);
}

static int slice_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const tg_slice_attrs attrs[] = {{0, 1, 3, 1}, {1, 0, 5, 2}, {-1, -3, 100, 1}};
    if (index >= 3)
        return 0;
    s->n_in = 1;
    s->in[0] = tg__sample_rand(ctx, TG_SHAPE(4, 5), -1, 1, true);
    memcpy(s->attrs, &attrs[index], sizeof attrs[index]);
    copy_sample_desc(s, index == 0 ? "rows" : index == 1 ? "step 2" : "negative start, clamped end");
    return s->in[0] ? 1 : tg_errcode(ctx);
}

const tg_op tg__op_slice = {.name = "slice", .min_in = 1, .max_in = 1,
                            .attr_size = sizeof(tg_slice_attrs), .forward = slice_forward,
                            .vjp = slice_vjp, .print_attrs = slice_print, .sample = slice_sample,
                            .flags = TG_OP_VJP_WRITES};

tg_tensor *tg_slice(tg_ctx *ctx, tg_tensor *x, int axis, int64_t start, int64_t end, int64_t step)
{
    tg_slice_attrs a = {axis, start, end, step};
    return tg_apply(ctx, &tg__op_slice, &x, 1, &a);
}

/* ---------------------------------------------------------------- pad */

/* Negative padding crops, as torch.nn.functional.pad: along dimension d
 * the kept part of x starts at max(-before, 0) and lands at max(before, 0). */
static int64_t kept_len(int64_t n, const int64_t p[2])
{
    return n + (p[0] < 0 ? p[0] : 0) + (p[1] < 0 ? p[1] : 0);
}

static void pad_view(const tg_tensor *x, const tg_pad_attrs *a, const tg_tensor *out, view *v)
{
    memset(v, 0, sizeof *v);
    v->ndim = x->ndim;
    for (int d = 0; d < x->ndim; d++)
        v->shape[d] = kept_len(x->shape[d], a->pad[d]);
    if (view_empty(v))
        return;
    contiguous_strides(x, v->src);
    contiguous_strides(out, v->dst);
    for (int d = 0; d < x->ndim; d++) {
        int64_t before = a->pad[d][0];
        if (before < 0)
            v->src0 += -before * v->src[d];
        else
            v->dst0 += before * v->dst[d];
    }
}

/* The padded size of dimension d, or -1 with an error. */
static int64_t padded_size(tg_ctx *ctx, const tg_tensor *x, const tg_pad_attrs *a, int d)
{
    const int64_t *p = a->pad[d];
    int64_t n = x->shape[d], size;
    /* tested in this order, nothing overflows: each negative term is >= -n */
    if (p[0] < -n || p[1] < -n || kept_len(n, p) < 0) {
        TG_ERROR(ctx, TG_ESHAPE, "pad: negative padding (%" PRId64 ", %" PRId64 ") of dimension "
                 "%d of %s removes more than its %" PRId64 " elements", p[0], p[1], d,
                 tg__shape_s(x), n);
        return -1;
    }
    if (__builtin_add_overflow(n, p[0], &size) || __builtin_add_overflow(size, p[1], &size)) {
        TG_ERROR(ctx, TG_ESHAPE, "pad: size %" PRId64 " of dimension %d of %s plus padding (%"
                 PRId64 ", %" PRId64 ") overflows int64", n, d, tg__shape_s(x), p[0], p[1]);
        return -1;
    }
    return size;
}

static tg_tensor *pad_forward(tg_ctx *ctx, tg_node *node)
{
    const tg_pad_attrs *a = node->attrs;
    tg_tensor *x = node->in[0];
    if (a->ndim != x->ndim) {
        TG_ERROR(ctx, TG_EINVAL, "pad: padding given for %d dimensions of a %d-dimensional tensor %s",
                 a->ndim, x->ndim, tg__shape_s(x));
        return NULL;
    }
    int64_t shape[TG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        if ((shape[d] = padded_size(ctx, x, a, d)) < 0)
            return NULL;
    tg_tensor *out = tg_zeros(ctx, x->dtype, x->ndim, shape);
    if (!out)
        return NULL;
    view v;
    pad_view(x, a, out, &v);
    view_copy(&v, x->dtype, out->data, x->data, false, false);
    mark_all_unread(node);
    return out;
}

/* dx (+)= the interior of g. Negative padding crops: the elements of x it
 * removed get zeros when dx is written. */
static tg_status pad_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    (void)ctx;
    const tg_pad_attrs *a = node->attrs;
    tg_tensor *x = node->in[0];
    bool add = tg_vjp_adds(node, 0), crops = false;
    for (int d = 0; d < x->ndim; d++)
        crops |= kept_len(x->shape[d], a->pad[d]) < x->shape[d];
    if (!add && crops && x->numel > 0)
        memset(gin[0]->data, 0, (size_t)x->numel * tg_dtype_size(x->dtype));
    view v;
    pad_view(x, a, gout, &v);
    view_copy(&v, gout->dtype, gin[0]->data, gout->data, true, add);
    return TG_OK;
}

static int pad_print(const tg_node *node, char *buf, size_t size)
{
    const tg_pad_attrs *a = node->attrs;
    int n = 0;
    for (int d = 0; d < a->ndim; d++) {
        size_t at = (size_t)n < size ? (size_t)n : size;
        n += snprintf(buf + at, size - at, "(%" PRId64 ", %" PRId64 ")", a->pad[d][0], a->pad[d][1]);
    }
    return n;
}

static int pad_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const tg_pad_attrs attrs[] = {
        {3, {{0, 0}, {0, 0}, {1, 1}}},
        {4, {{0, 0}, {0, 0}, {1, 2}, {0, 1}}},
        {3, {{0, 0}, {0, 0}, {0, 0}}},
        {4, {{0, 0}, {0, 0}, {-1, 2}, {1, -2}}},
    };
    static const int64_t shapes[][4] = {{2, 1, 5}, {1, 2, 3, 3}, {2, 1, 3}, {1, 1, 3, 4}};
    static const char *desc[] = {"1-D both sides", "2-D uneven", "no padding", "negative crops"};
    if (index >= 4)
        return 0;
    s->n_in = 1;
    s->in[0] = tg__sample_rand(ctx, attrs[index].ndim, shapes[index], -1, 1, true);
    memcpy(s->attrs, &attrs[index], sizeof attrs[index]);
    copy_sample_desc(s, desc[index]);
    return s->in[0] ? 1 : tg_errcode(ctx);
}

const tg_op tg__op_pad = {.name = "pad", .min_in = 1, .max_in = 1,
                          .attr_size = sizeof(tg_pad_attrs), .forward = pad_forward,
                          .vjp = pad_vjp, .print_attrs = pad_print, .sample = pad_sample,
                          .flags = TG_OP_VJP_WRITES};

static tg_tensor *pad_last(tg_ctx *ctx, tg_tensor *x, int dims, const int64_t *pads)
{
    TG__GUARD(ctx, NULL);
    if (tg__check_tensor(ctx, "pad", "x", x))
        return NULL;
    if (x->ndim < dims) {
        TG_ERROR(ctx, TG_ESHAPE, "pad: %dd padding needs at least %d dimensions; x is %s", dims,
                 dims, tg__shape_s(x));
        return NULL;
    }
    tg_pad_attrs a;
    memset(&a, 0, sizeof a);
    a.ndim = x->ndim;
    for (int i = 0; i < dims; i++) { /* pads: (before, after) of the last, then the one before */
        a.pad[x->ndim - 1 - i][0] = pads[2 * i];
        a.pad[x->ndim - 1 - i][1] = pads[2 * i + 1];
    }
    return tg_apply(ctx, &tg__op_pad, &x, 1, &a);
}

tg_tensor *tg_pad1d(tg_ctx *ctx, tg_tensor *x, int64_t left, int64_t right)
{
    const int64_t p[2] = {left, right};
    return pad_last(ctx, x, 1, p);
}

tg_tensor *tg_pad2d(tg_ctx *ctx, tg_tensor *x, int64_t left, int64_t right, int64_t top,
                    int64_t bottom)
{
    const int64_t p[4] = {left, right, top, bottom};
    return pad_last(ctx, x, 2, p);
}

/* ---------------------------------------------------------------- concat */

/* input i's place in out: the domain is x_i, offset by the sizes before it */
static void concat_view(const tg_tensor *out, const tg_tensor *x, int axis, int64_t before, view *v)
{
    memset(v, 0, sizeof *v);
    v->ndim = x->ndim;
    for (int d = 0; d < x->ndim; d++)
        v->shape[d] = x->shape[d];
    if (view_empty(v))
        return;
    contiguous_strides(x, v->src);
    contiguous_strides(out, v->dst);
    v->dst0 = before * v->dst[axis];
}

static tg_tensor *concat_forward(tg_ctx *ctx, tg_node *node)
{
    const tg_concat_attrs *a = node->attrs;
    tg_tensor *x0 = node->in[0];
    int axis = tg__axis(ctx, "concat", a->axis, x0->ndim);
    if (axis < 0)
        return NULL;
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof shape);
    shape[axis] = 0;
    for (int i = 0; i < node->n_in; i++) {
        tg_tensor *x = node->in[i];
        if (tg__same_dtype(ctx, "concat", x0, x))
            return NULL;
        bool fits = x->ndim == x0->ndim;
        for (int d = 0; fits && d < x->ndim; d++)
            fits = d == axis || x->shape[d] == x0->shape[d];
        if (!fits) {
            TG_ERROR(ctx, TG_ESHAPE, "concat: input %d is %s but input 0 is %s; only axis %d may differ",
                     i, tg__shape_s(x), tg__shape_s(x0), axis);
            return NULL;
        }
        if (__builtin_add_overflow(shape[axis], x->shape[axis], &shape[axis])) {
            TG_ERROR(ctx, TG_ESHAPE, "concat: the sizes along axis %d add up to more than %"
                     PRId64 " at input %d, %s", axis, INT64_MAX, i, tg__shape_s(x));
            return NULL;
        }
    }
    tg_tensor *out = tg_empty(ctx, x0->dtype, x0->ndim, shape);
    if (!out)
        return NULL;
    int64_t before = 0;
    for (int i = 0; i < node->n_in; i++) {
        view v;
        concat_view(out, node->in[i], axis, before, &v);
        view_copy(&v, out->dtype, out->data, node->in[i]->data, false, false);
        before += node->in[i]->shape[axis];
    }
    mark_all_unread(node);
    return out;
}

static tg_status concat_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                            tg_tensor *const *gin)
{
    (void)ctx;
    const tg_concat_attrs *a = node->attrs;
    int axis = a->axis < 0 ? a->axis + gout->ndim : a->axis;
    int64_t before = 0;
    for (int i = 0; i < node->n_in; i++) {
        if (gin[i]) {
            view v;
            concat_view(gout, node->in[i], axis, before, &v);
            view_copy(&v, gout->dtype, gin[i]->data, gout->data, true, tg_vjp_adds(node, i));
        }
        before += node->in[i]->shape[axis];
    }
    return TG_OK;
}

static int concat_print(const tg_node *node, char *buf, size_t size)
{
    return snprintf(buf, size, "axis=%d", ((const tg_concat_attrs *)node->attrs)->axis);
}

static int concat_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    if (index >= 2)
        return 0;
    tg_concat_attrs a = {index == 0 ? 1 : 0};
    s->n_in = 3;
    s->in[0] = tg__sample_rand(ctx, TG_SHAPE(2, 3), -1, 1, true);
    s->in[1] = tg__sample_rand(ctx, index == 0 ? 2 : 2, index == 0 ? (const int64_t[]){2, 1}
                                                                  : (const int64_t[]){1, 3},
                               -1, 1, true);
    s->in[2] = tg__sample_rand(ctx, TG_SHAPE(2, 3), -1, 1, index == 0);
    memcpy(s->attrs, &a, sizeof a);
    copy_sample_desc(s, index == 0 ? "columns, one input constant" : "rows");
    return s->in[2] ? 1 : tg_errcode(ctx);
}

const tg_op tg__op_concat = {.name = "concat", .min_in = 1, .max_in = -1,
                             .attr_size = sizeof(tg_concat_attrs), .forward = concat_forward,
                             .vjp = concat_vjp, .print_attrs = concat_print,
                             .sample = concat_sample,
                             .flags = TG_OP_VJP_WRITES};

tg_tensor *tg_concat(tg_ctx *ctx, tg_tensor *const *xs, int n, int axis)
{
    TG__GUARD(ctx, NULL);
    if (n < 1) {
        TG_ERROR(ctx, TG_EINVAL, "concat: needs at least 1 tensor to join, got %d", n);
        return NULL;
    }
    tg_concat_attrs a = {axis};
    return tg_apply(ctx, &tg__op_concat, xs, n, &a);
}
