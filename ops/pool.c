/*
 * pool.c: max and average pooling (1-D and 2-D), global average pooling.
 *
 * x is (N, C, H, W) (1-D: H = 1); each of the N C planes is pooled alone:
 *   out[oy][ox] over the window rows oy sh - ph + i dh (0 <= i < kh), cols
 *   likewise, with ph <= kh / 2 and, as PyTorch's pooling_output_shape,
 *   OH = floor((H + 2 ph - dh (kh - 1) - 1 [+ sh - 1 in ceil mode]) / sh) + 1,
 *   less one in ceil mode when (OH - 1) sh >= H + ph (the last window would
 *   start in the right padding); OH < 1 is an error (OW likewise)
 *   max: the largest in-bounds value (padding is -inf); the maximum's tap
 *        in its window is saved (a byte per output for kernels of up to 255
 *        taps), and dx[argmax] += g. Ties go to the first, a NaN
 *        beats every number and a later NaN beats an earlier one, as in
 *        PyTorch's max_pool2d_with_indices, so a window with a NaN gives NaN
 *        and sends its gradient to its last NaN. A window without an
 *        in-bounds element (dilation over padding) gives -inf and no gradient
 *        (PyTorch gives -inf with a stray index)
 *   avg (dilation 1): the sum of in-bounds values / D, summed in double;
 *        dx += g / D over the window. D is the window clipped to the padded
 *        input, (min(top + kh, H + ph) - top) (likewise for columns)
 *        (count_include_pad), or the in-bounds count with exclude_pad
 *   global_avg_pool: (N, C, ...) -> (N, C), or (N, C, 1, ...) with keepdim,
 *        the mean of each plane (summed in double; NaN for an empty plane,
 *        as torch.mean)
 * No vjp reads an input or output value (max pooling reads its saved
 * taps). As in PyTorch, only the batch of a pooled input may be empty.
 * Planes are computed in parallel (each alone, so the thread count changes
 * nothing). Every vjp writes its first contribution (TG_OP_VJP_WRITES):
 * zeros where no window reaches, in the same pass over each plane.
 */
#include "ops_impl.h"

#include <float.h>

#include <inttypes.h>
#include <math.h>

typedef struct pgeom {
    int64_t planes, h, w, oh, ow;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    bool ceil, exclude_pad;
} pgeom;

static bool pool_1d(const tg_node *node)
{
    return node->op == &tg__op_max_pool1d || node->op == &tg__op_avg_pool1d;
}

static bool pool_max(const tg_node *node)
{
    return node->op == &tg__op_max_pool1d || node->op == &tg__op_max_pool2d;
}

static void read_pool_geometry(const tg_node *node, pgeom *q)
{
    const tg_pool_attrs *a = node->attrs;
    const tg_tensor *x = node->in[0];
    bool one = pool_1d(node);
    memset(q, 0, sizeof *q);
    q->h = one ? 1 : x->shape[2];
    q->w = x->shape[x->ndim - 1];
    q->kh = one ? 1 : a->kernel[0];
    q->kw = one ? a->kernel[0] : a->kernel[1];
    q->sh = one ? 1 : a->stride[0];
    q->sw = one ? a->stride[0] : a->stride[1];
    q->ph = one ? 0 : a->padding[0];
    q->pw = one ? a->padding[0] : a->padding[1];
    q->dh = one ? 1 : a->dilation[0];
    q->dw = one ? a->dilation[0] : a->dilation[1];
    q->ceil = a->ceil_mode;
    q->exclude_pad = a->exclude_pad;
}

static tg_status check_pool_attrs(tg_ctx *ctx, const char *who, bool max, const pgeom *q)
{
    if (q->dh < 1 || q->dw < 1)
        return TG_ERROR(ctx, TG_EINVAL, "%s: dilation %" PRId64 "; it must be >= 1", who,
                        q->dh < 1 ? q->dh : q->dw);
    if (!max && (q->dh != 1 || q->dw != 1))
        return TG_ERROR(ctx, TG_EINVAL, "%s: dilation %" PRId64 "; average pooling has none, so "
                        "it must be 1", who, q->dh != 1 ? q->dh : q->dw);
    if (max && q->exclude_pad)
        return TG_ERROR(ctx, TG_EINVAL, "%s: exclude_pad applies to average pooling only", who);
    if (q->kh < 1 || q->kw < 1)
        return TG_ERROR(ctx, TG_EINVAL, "%s: kernel size %" PRId64 "; it must be >= 1", who,
                        q->kh < 1 ? q->kh : q->kw);
    if (q->sh < 1 || q->sw < 1)
        return TG_ERROR(ctx, TG_EINVAL, "%s: stride %" PRId64 "; it must be >= 1", who,
                        q->sh < 1 ? q->sh : q->sw);
    bool bad_h = q->ph < 0 || q->ph > q->kh / 2;
    if (bad_h || q->pw < 0 || q->pw > q->kw / 2)
        return TG_ERROR(ctx, TG_EINVAL, "%s: padding %" PRId64 " must be between 0 and half the "
                        "kernel size %" PRId64, who, bad_h ? q->ph : q->pw, bad_h ? q->kh : q->kw);
    return TG_OK;
}

/* floor(a / b) for b > 0, as PyTorch's div_rtn */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* One output size into *o (below 1 when no window fits): n the input
 * size, padded the input with both paddings, span the dilated kernel
 * d (k - 1) + 1. False when span or the count overflows. */
static bool out_size(int64_t n, int64_t padded, int64_t k, int64_t s, int64_t p, int64_t d,
                     bool ceil, int64_t *span, int64_t *o)
{
    int64_t num, starts; /* starts: ceil((n + p) / s), the windows starting before n + p */
    if (__builtin_mul_overflow(d, k - 1, span) || __builtin_add_overflow(*span, 1, span))
        return false;
    num = padded - *span; /* both >= 0: cannot overflow */
    if (ceil && __builtin_add_overflow(num, s - 1, &num))
        return false;
    *o = floor_div(num, s) + 1;
    starts = (n + p) / s + ((n + p) % s != 0);
    if (ceil && *o - 1 >= starts) /* (o - 1) s >= n + p: the last would start in the padding */
        (*o)--;
    return true;
}

/* q->oh and q->ow, or an error naming input, kernel and padding. */
static tg_status pool_output_size(tg_ctx *ctx, const char *who, bool one, pgeom *q)
{
    char in[48], k[48], p[48], pd[48];
    int64_t padded_h, padded_w, span_h, span_w; /* 2 p <= k, so 2 p cannot overflow */
    tg__size_pair(in, sizeof in, one, q->h, q->w);
    tg__size_pair(p, sizeof p, one, q->ph, q->pw);
    if (__builtin_add_overflow(q->h, 2 * q->ph, &padded_h) ||
        __builtin_add_overflow(q->w, 2 * q->pw, &padded_w))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: input %s with padding %s on each side is larger "
                        "than can be addressed", who, in, p);
    if (!out_size(q->h, padded_h, q->kh, q->sh, q->ph, q->dh, q->ceil, &span_h, &q->oh) ||
        !out_size(q->w, padded_w, q->kw, q->sw, q->pw, q->dw, q->ceil, &span_w, &q->ow))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: kernel %s with dilation %s and stride %s spans more "
                        "than can be addressed", who, tg__size_pair(k, sizeof k, one, q->kh, q->kw),
                        tg__size_pair(pd, sizeof pd, one, q->dh, q->dw),
                        tg__size_pair(in, sizeof in, one, q->sh, q->sw));
    if (q->oh < 1 || q->ow < 1)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: kernel %s is larger than the padded input %s "
                        "(input %s, padding %s): the output would be empty", who,
                        tg__size_pair(k, sizeof k, one, span_h, span_w),
                        tg__size_pair(pd, sizeof pd, one, padded_h, padded_w), in, p);
    return TG_OK;
}

static tg_status pool_geometry(tg_ctx *ctx, const tg_node *node, pgeom *q)
{
    const char *who = node->op->name;
    const tg_tensor *x = node->in[0];
    bool one = pool_1d(node);
    if (x->ndim != (one ? 3 : 4))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: input %s should be %s", who, tg__shape_s(x),
                        one ? "(N, C, L)" : "(N, C, H, W)");
    read_pool_geometry(node, q);
    if (check_pool_attrs(ctx, who, pool_max(node), q))
        return tg_errcode(ctx);
    if (x->shape[1] == 0 || q->h == 0 || q->w == 0)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: input %s is empty outside its batch dimension; as "
                        "in PyTorch, only N may be 0", who, tg__shape_s(x));
    if (pool_output_size(ctx, who, one, q))
        return tg_errcode(ctx);
    q->planes = x->shape[0] * x->shape[1]; /* no more than x's element count, or 0 */
    return TG_OK;
}

/* The in-bounds part of a window starting at `start` along one axis with
 * k taps d apart over n elements: taps [*i0, *i1) (empty when *i0 >= *i1). */
static void taps(int64_t start, int64_t k, int64_t d, int64_t n, int64_t *i0, int64_t *i1)
{
    int64_t first = start < 0 ? (-start + d - 1) / d : 0; /* the first tap at >= 0 */
    int64_t past = n - start; /* taps at start + i d < n: i < past / d (rounded up) */
    int64_t last = past <= 0 ? 0 : (past - 1) / d + 1;
    *i0 = first;
    *i1 = last < k ? last : k;
}

/* Loops over the planes run in parallel when the input is large enough. */
#define PAR_PLANES(q) ((q)->planes * (q)->h * (q)->w >= TG__PAR_GRAIN)

/* Max pooling saves each window's arg-max as its tap within the window,
 * i kw + j for row i and column j of the kernel (dilation and padding
 * included, so the vjp finds the input element from the window's origin
 * alone): one byte when the kernel has at most 255 taps, NO_TAP for a
 * window that reaches no input element; else an int64, -1 for none. */
#define NO_TAP 255

static bool small_kernel(const pgeom *q)
{
    return q->kh <= NO_TAP / q->kw;
}

/* The common case of max pooling (kernel 2, stride 2, no padding, no
 * dilation, every window inside the input) has its own kernel, whose
 * arg-max is the tap 0 to 3. */
static bool max_2x2(const pgeom *q)
{
    return q->kh == 2 && q->kw == 2 && q->sh == 2 && q->sw == 2 && q->ph == 0 && q->pw == 0 &&
           q->dh == 1 && q->dw == 1 && 2 * q->oh <= q->h && 2 * q->ow <= q->w;
}

/* One output row of the 2x2 case from input rows r0 and r1, its taps into
 * ix: the general kernel's comparisons in the same order (a later element
 * wins when larger or NaN), written with the quiet comparisons and selects
 * so that the loop vectorises; one body for float and double. The taps are
 * int32, as wide as a float, so that the loop takes four windows at a time
 * (byte taps would make it take sixteen, more than most rows have, and
 * leave short rows to the scalar remainder). */
#define MAX2_ROW(NAME, T)                                                                  \
    static void NAME(const T *restrict r0, const T *restrict r1, T *restrict o,            \
                     int32_t *restrict ix, int64_t ow)                                     \
    {                                                                                      \
        _Pragma("omp simd")                                                                \
        for (int64_t ox = 0; ox < ow; ox++) {                                              \
            T v0 = r0[2 * ox], v1 = r0[2 * ox + 1], v2 = r1[2 * ox], v3 = r1[2 * ox + 1];  \
            int t1 = isgreater(v1, v0) | isunordered(v1, v1);                              \
            T h1 = t1 ? v1 : v0;                                                           \
            int t2 = isgreater(v2, h1) | isunordered(v2, v2);                              \
            T h2 = t2 ? v2 : h1;                                                           \
            int t3 = isgreater(v3, h2) | isunordered(v3, v3);                              \
            o[ox] = t3 ? v3 : h2;                                                          \
            int k = t1;                                                                    \
            k = t2 ? 2 : k;                                                                \
            ix[ox] = t3 ? 3 : k;                                                           \
        }                                                                                  \
    }
MAX2_ROW(max2_row_f32, float)
MAX2_ROW(max2_row_f64, double)

/* The 2x2 kernel's int32 taps wait in a buffer of MAX2_BUF and go to the
 * saved bytes in one vectorised pass: n of them from k to d (k has room
 * for a whole vector past n). */
#define MAX2_BUF 1024

static void narrow_taps(uint8_t *restrict d, int32_t *restrict k, int64_t n)
{
    if (n <= 0)
        return;
    uint8_t b[MAX2_BUF + 16];
    int64_t whole = (n + 15) & ~(int64_t)15;
    memset(k + n, 0, (size_t)(whole - n) * sizeof *k);
    for (int64_t i = 0; i < whole; i++)
        b[i] = (uint8_t)k[i];
    /* n > 0, so whole >= 16 and the loop above wrote b[0, n) */
    // cppcheck-suppress uninitvar
    memcpy(d, b, (size_t)n);
}

/* Planes [p0, p1) of the 2x2 case; arg receives each window's tap. The
 * planes' outputs (and taps) follow one another, so one buffer serves them
 * all: small planes make short narrowing passes otherwise. */
static void max2_planes(const pgeom *q, const tg_tensor *x, tg_tensor *y, uint8_t *arg,
                        int64_t p0, int64_t p1)
{
    int32_t k[MAX2_BUF + 16];
    const int64_t w = q->w, ow = q->ow;
    int64_t done = p0 * q->oh * ow, filled = 0; /* taps [done, done + filled) are in k */
    for (int64_t p = p0; p < p1; p++)
        for (int64_t oy = 0; oy < q->oh; oy++)
            for (int64_t ox0 = 0; ox0 < ow; ox0 += MAX2_BUF) {
                const int64_t n = ow - ox0 < MAX2_BUF ? ow - ox0 : MAX2_BUF;
                const int64_t in = p * q->h * w + 2 * oy * w + 2 * ox0;
                const int64_t out = (p * q->oh + oy) * ow + ox0;
                if (filled + n > MAX2_BUF) {
                    narrow_taps(arg + done, k, filled);
                    done += filled;
                    filled = 0;
                }
                if (x->dtype == TG_F32)
                    max2_row_f32((const float *)x->data + in, (const float *)x->data + in + w,
                                 (float *)y->data + out, k + filled, n);
                else
                    max2_row_f64((const double *)x->data + in, (const double *)x->data + in + w,
                                 (double *)y->data + out, k + filled, n);
                filled += n;
            }
    narrow_taps(arg + done, k, filled);
}

/* Plane p of y = each window's maximum (-inf for a window that reaches no
 * input element); arg (when not NULL) its tap, a byte with small_kernel,
 * else an int64. A window's rows are found once per output row. */
static void max_plane(const pgeom *q, const tg_tensor *x, tg_tensor *y, void *arg, int64_t p)
{
    const bool small = small_kernel(q);
    uint8_t *arg8 = arg;
    int64_t *arg64 = arg;
    TG__DISPATCH(x->dtype, T, {
        const T *xs = (const T *)x->data + p * q->h * q->w;
        T *o = (T *)y->data + p * q->oh * q->ow;
        for (int64_t oy = 0; oy < q->oh; oy++) {
            int64_t top = oy * q->sh - q->ph, i0, i1;
            taps(top, q->kh, q->dh, q->h, &i0, &i1);
            for (int64_t ox = 0; ox < q->ow; ox++) {
                int64_t at = oy * q->ow + ox, best = -1, j0, j1, left = ox * q->sw - q->pw;
                T high = (T)-INFINITY;
                taps(left, q->kw, q->dw, q->w, &j0, &j1);
                for (int64_t i = i0; i < i1; i++) {
                    const int64_t row = (top + i * q->dh) * q->w + left;
                    for (int64_t j = j0; j < j1; j++) {
                        T v = xs[row + j * q->dw];
                        if (best < 0 || v > high || isnan(v)) {
                            high = v;
                            best = i * q->kw + j;
                        }
                    }
                }
                o[at] = high;
                if (arg && small)
                    arg8[p * q->oh * q->ow + at] = best < 0 ? NO_TAP : (uint8_t)best;
                else if (arg)
                    arg64[p * q->oh * q->ow + at] = best;
            }
        }
    });
}

/* The in-bounds rows [y0, y1) of average window row oy (never empty, as
 * padding is at most half the kernel and every window starts inside the
 * input or its left padding), and its number of rows for the divisor. */
static void avg_rows(const pgeom *q, int64_t oy, int64_t *y0, int64_t *y1, double *rows)
{
    int64_t top = oy * q->sh - q->ph, bottom = top + q->kh;
    *y0 = top > 0 ? top : 0;
    *y1 = bottom < q->h ? bottom : q->h;
    *rows = q->exclude_pad ? (double)(*y1 - *y0)
                           : (double)((bottom < q->h + q->ph ? bottom : q->h + q->ph) - top);
}

/* The same for the columns of window column ox. */
static void avg_cols(const pgeom *q, int64_t ox, int64_t *x0, int64_t *x1, double *cols)
{
    int64_t left = ox * q->sw - q->pw, right = left + q->kw;
    *x0 = left > 0 ? left : 0;
    *x1 = right < q->w ? right : q->w;
    *cols = q->exclude_pad ? (double)(*x1 - *x0)
                           : (double)((right < q->w + q->pw ? right : q->w + q->pw) - left);
}

/* Average pooling whose windows tile the input without overlap or padding
 * (kernel = stride, every window inside: B1's avg_pool1d(2, 2)): the
 * divisor is the kernel's size and each output row is one pass over whole
 * input rows, which the compiler vectorises. */
static bool avg_tiled(const pgeom *q)
{
    return q->kh == q->sh && q->kw == q->sw && q->ph == 0 && q->pw == 0 && q->dh == 1 && q->dw == 1 &&
           q->oh * q->kh <= q->h && q->ow * q->kw <= q->w;
}

/* 1 / div when that is exact (div a power of two), else 0: multiplying by
 * it then gives the same numbers as dividing, at a fraction of the cost. */
static double exact_reciprocal(double div)
{
    int e;
    return frexp(div, &e) == 0.5 ? 1.0 / div : 0.0;
}

#define AVG_TILED(NAME, T)                                                                 \
    TG__HOT static void NAME##_fwd(const pgeom *q, const T *restrict xs, T *restrict o)   \
    {                                                                                      \
        const int64_t kh = q->kh, kw = q->kw, w = q->w;                                    \
        const double div = (double)(kh * kw), inv = exact_reciprocal(div);                 \
        if (kh == 1 && kw == 2) { /* pairs along a row (B1), in one pass */                 \
            /* (a + b) / 2 rounded once, in T's vector width: a sum small enough to     \
             * lose bits when halved is exact, and a larger one halves exactly; a sum   \
             * that overflows is taken as a/2 + b/2 (exact halves); NaN and infinity    \
             * pass through either way */                                                \
            const T half = (T)0.5, top = sizeof(T) == sizeof(float) ? FLT_MAX : DBL_MAX;   \
            for (int64_t oy = 0; oy < q->oh; oy++) {                                       \
                const T *restrict r = xs + oy * w;                                         \
                T *restrict orow = o + oy * q->ow;                                         \
                _Pragma("omp simd")                                                        \
                for (int64_t i = 0; i < q->ow; i++) {                                      \
                    const T a = r[2 * i], b = r[2 * i + 1], sum = a + b;                   \
                    orow[i] = sum <= top && sum >= -top ? sum * half : a * half + b * half; \
                }                                                                          \
            }                                                                              \
            return;                                                                        \
        }                                                                                  \
        for (int64_t oy = 0; oy < q->oh; oy++)                                             \
            for (int64_t ox0 = 0; ox0 < q->ow; ox0 += 256) {                               \
                const int64_t n = q->ow - ox0 < 256 ? q->ow - ox0 : 256;                   \
                const T *r = xs + oy * kh * w + ox0 * kw;                                  \
                double acc[256];                                                           \
                for (int64_t i = 0; i < n; i++)                                            \
                    acc[i] = 0;                                                            \
                for (int64_t yy = 0; yy < kh; yy++)                                        \
                    for (int64_t xx = 0; xx < kw; xx++) {                                  \
                        const T *restrict tap = r + yy * w + xx;                           \
                        _Pragma("omp simd")                                                \
                        for (int64_t i = 0; i < n; i++)                                    \
                            acc[i] += tap[i * kw];                                         \
                    }                                                                      \
                T *restrict orow = o + oy * q->ow + ox0;                                   \
                if (inv != 0) {                                                            \
                    _Pragma("omp simd")                                                    \
                    for (int64_t i = 0; i < n; i++)                                        \
                        orow[i] = (T)(acc[i] * inv);                                       \
                } else {                                                                   \
                    _Pragma("omp simd")                                                    \
                    for (int64_t i = 0; i < n; i++)                                        \
                        orow[i] = (T)(acc[i] / div);                                       \
                }                                                                          \
            }                                                                              \
    }                                                                                      \
    TG__HOT static void NAME##_bwd(const pgeom *q, const T *restrict g, T *restrict d,    \
                                   bool add)                                               \
    {                                                                                      \
        const int64_t kh = q->kh, kw = q->kw, w = q->w;                                    \
        const double div = (double)(kh * kw), inv = exact_reciprocal(div);                 \
        if (!add && (q->oh * kh < q->h || q->ow * kw < w)) /* rows, columns no window has */ \
            memset(d, 0, (size_t)(q->h * w) * sizeof(T));                                  \
        if (kh == 1 && kw == 2) {                                                          \
            for (int64_t oy = 0; oy < q->oh; oy++) {                                       \
                const T *restrict grow = g + oy * q->ow;                                   \
                T *restrict r = d + oy * w;                                                \
                if (add) {                                                                 \
                    _Pragma("omp simd")                                                    \
                    for (int64_t i = 0; i < q->ow; i++) {                                  \
                        const T share = grow[i] * (T)0.5; /* exact but for subnormals */   \
                        r[2 * i] += share;                                                 \
                        r[2 * i + 1] += share;                                             \
                    }                                                                      \
                } else {                                                                   \
                    _Pragma("omp simd")                                                    \
                    for (int64_t i = 0; i < q->ow; i++) {                                  \
                        const T share = grow[i] * (T)0.5;                                  \
                        r[2 * i] = share;                                                  \
                        r[2 * i + 1] = share;                                              \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
            return;                                                                        \
        }                                                                                  \
        for (int64_t oy = 0; oy < q->oh; oy++)                                             \
            for (int64_t ox0 = 0; ox0 < q->ow; ox0 += 256) {                               \
                const int64_t n = q->ow - ox0 < 256 ? q->ow - ox0 : 256;                   \
                const T *restrict grow = g + oy * q->ow + ox0;                             \
                T share[256]; /* each window's gradient over its divisor, once */          \
                if (inv != 0) {                                                            \
                    _Pragma("omp simd")                                                    \
                    for (int64_t i = 0; i < n; i++)                                        \
                        share[i] = (T)((double)grow[i] * inv);                             \
                } else {                                                                   \
                    _Pragma("omp simd")                                                    \
                    for (int64_t i = 0; i < n; i++)                                        \
                        share[i] = (T)((double)grow[i] / div);                             \
                }                                                                          \
                T *r = d + oy * kh * w + ox0 * kw;                                         \
                for (int64_t yy = 0; yy < kh; yy++)                                        \
                    for (int64_t xx = 0; xx < kw; xx++) {                                  \
                        T *restrict dr = r + yy * w + xx;                                  \
                        if (add) {                                                         \
                            _Pragma("omp simd")                                            \
                            for (int64_t i = 0; i < n; i++)                                \
                                dr[i * kw] += share[i];                                    \
                        } else {                                                           \
                            _Pragma("omp simd")                                            \
                            for (int64_t i = 0; i < n; i++)                                \
                                dr[i * kw] = share[i];                                     \
                        }                                                                  \
                    }                                                                      \
            }                                                                              \
    }
AVG_TILED(avg_tiled_f32, float)
AVG_TILED(avg_tiled_f64, double)

/* Plane p of y = each window's sum (in double) over its divisor. */
static void avg_plane(const pgeom *q, const tg_tensor *x, tg_tensor *y, int64_t p)
{
    if (avg_tiled(q)) {
        const int64_t in = p * q->h * q->w, out = p * q->oh * q->ow;
        if (x->dtype == TG_F32)
            avg_tiled_f32_fwd(q, (const float *)x->data + in, (float *)y->data + out);
        else
            avg_tiled_f64_fwd(q, (const double *)x->data + in, (double *)y->data + out);
        return;
    }
    TG__DISPATCH(x->dtype, T, {
        const T *xs = (const T *)x->data + p * q->h * q->w;
        T *o = (T *)y->data + p * q->oh * q->ow;
        for (int64_t oy = 0; oy < q->oh; oy++) {
            int64_t y0, y1, x0, x1;
            double rows, cols;
            avg_rows(q, oy, &y0, &y1, &rows);
            for (int64_t ox = 0; ox < q->ow; ox++) {
                avg_cols(q, ox, &x0, &x1, &cols);
                double acc = 0;
                for (int64_t yy = y0; yy < y1; yy++)
                    for (int64_t xx = x0; xx < x1; xx++)
                        acc += xs[yy * q->w + xx];
                o[oy * q->ow + ox] = (T)(acc / (rows * cols));
            }
        }
    });
}

static tg_tensor *pool_forward(tg_ctx *ctx, tg_node *node)
{
    pgeom q;
    if (pool_geometry(ctx, node, &q))
        return NULL;
    tg_tensor *x = node->in[0];
    tg_node_value_unused(node, 0);
    tg_node_value_unused(node, -1);
    int64_t shape[4] = {x->shape[0], x->shape[1], q.oh, q.ow};
    if (pool_1d(node))
        shape[2] = q.ow;
    tg_tensor *y = tg_empty(ctx, x->dtype, x->ndim, shape);
    if (!y)
        return NULL;
    if (!pool_max(node)) {
        TG__PAR_FOR(PAR_PLANES(&q), "omp parallel for schedule(static)",
        for (int64_t p = 0; p < q.planes; p++)
            avg_plane(&q, x, y, p););
        return y;
    }
    /* the arg-max taps, one byte or one int64 each (y's element count is
     * at most INT64_MAX / 8) */
    bool fast = max_2x2(&q);
    size_t each = small_kernel(&q) ? sizeof(uint8_t) : sizeof(int64_t);
    void *arg = NULL; /* the 2x2 kernel always writes them: they cost as much as y */
    if ((node->recording || fast) && !(arg = tg_scratch(ctx, (size_t)y->numel * each, false)))
        return NULL;
    if (fast) {
        /* blocks of planes that fill the 2x2 kernel's buffer */
        const int64_t per = q.oh * q.ow < MAX2_BUF ? MAX2_BUF / (q.oh * q.ow) : 1;
        const int64_t blocks = (q.planes + per - 1) / per;
        TG__PAR_FOR(PAR_PLANES(&q), "omp parallel for schedule(static)",
        for (int64_t b = 0; b < blocks; b++)
            max2_planes(&q, x, y, arg, b * per, b + 1 < blocks ? (b + 1) * per : q.planes););
        node->aux = node->recording ? arg : NULL;
        return y;
    }
    TG__PAR_FOR(PAR_PLANES(&q), "omp parallel for schedule(static)",
    for (int64_t p = 0; p < q.planes; p++)
        max_plane(&q, x, y, arg, p););
    node->aux = node->recording ? arg : NULL;
    return y;
}

/* Plane p of the 2x2 case: each window of dx gets g at its arg-max and,
 * when writing, 0 elsewhere (rows and columns outside every window too). */
static void max2_backward(const pgeom *q, const uint8_t *arg, const tg_tensor *gout,
                          tg_tensor *gx, bool add, int64_t p)
{
    const int64_t w = q->w, ow = q->ow;
    TG__DISPATCH(gout->dtype, T, {
        const T *g = (const T *)gout->data + p * q->oh * ow;
        const uint8_t *ix = arg + p * q->oh * ow;
        T *d = (T *)gx->data + p * q->h * w;
        for (int64_t oy = 0; oy < q->oh; oy++, g += ow, ix += ow) {
            T *r0 = d + 2 * oy * w; /* the window rows r0 and r0 + w */
            if (add) {
                for (int64_t ox = 0; ox < ow; ox++)
                    r0[(ix[ox] >> 1) * w + 2 * ox + (ix[ox] & 1)] += g[ox];
                continue;
            }
            /* zero both rows (a vectorised fill), then one store per window:
             * a quarter of the stores of writing every element by selects */
            memset(r0, 0, (size_t)(2 * w) * sizeof(T));
            for (int64_t ox = 0; ox < ow; ox++)
                r0[(ix[ox] >> 1) * w + 2 * ox + (ix[ox] & 1)] = g[ox];
        }
        if (!add)
            memset(d + 2 * q->oh * w, 0, (size_t)((q->h - 2 * q->oh) * w) * sizeof(T));
    });
}

/* Where each tap of a small kernel lies from its window's origin (the
 * top row's left column, padding included) in a plane. */
static void tap_offsets(const pgeom *q, int64_t *off)
{
    for (int64_t i = 0; i < q->kh; i++)
        for (int64_t j = 0; j < q->kw; j++)
            off[i * q->kw + j] = i * q->dh * q->w + j * q->dw;
}

/* Plane p: dx[argmax] += g for the windows that have an argmax (dx's plane
 * zeroed first when writing); off holds tap_offsets for a small kernel,
 * whose taps are bytes, and is NULL for int64 taps. */
static void max_backward(const pgeom *q, const void *arg, const int64_t *off,
                         const tg_tensor *gout, tg_tensor *gx, bool add, int64_t p)
{
    const int64_t n = q->oh * q->ow, w = q->w;
    const uint8_t *arg8 = off ? (const uint8_t *)arg + p * n : NULL;
    const int64_t *arg64 = off ? NULL : (const int64_t *)arg + p * n;
    TG__DISPATCH(gout->dtype, T, {
        const T *g = (const T *)gout->data + p * n;
        T *d = (T *)gx->data + p * q->h * w;
        if (!add)
            memset(d, 0, (size_t)(q->h * w) * sizeof(T));
        for (int64_t oy = 0; oy < q->oh; oy++) {
            const int64_t top = oy * q->sh - q->ph;
            for (int64_t ox = 0; ox < q->ow; ox++) {
                const int64_t at = oy * q->ow + ox, origin = top * w + ox * q->sw - q->pw;
                if (arg8 && arg8[at] != NO_TAP)
                    d[origin + off[arg8[at]]] += g[at];
                else if (arg64 && arg64[at] >= 0)
                    d[origin + arg64[at] / q->kw * q->dh * w + arg64[at] % q->kw * q->dw] += g[at];
            }
        }
    });
}

/* Plane p: dx += g / divisor over each window (dx's plane zeroed first
 * when writing). */
static void avg_backward(const pgeom *q, const tg_tensor *gout, tg_tensor *gx, bool add, int64_t p)
{
    if (avg_tiled(q)) {
        const int64_t in = p * q->h * q->w, out = p * q->oh * q->ow;
        if (gout->dtype == TG_F32)
            avg_tiled_f32_bwd(q, (const float *)gout->data + out, (float *)gx->data + in, add);
        else
            avg_tiled_f64_bwd(q, (const double *)gout->data + out, (double *)gx->data + in, add);
        return;
    }
    TG__DISPATCH(gout->dtype, T, {
        const T *g = (const T *)gout->data + p * q->oh * q->ow;
        T *d = (T *)gx->data + p * q->h * q->w;
        if (!add)
            memset(d, 0, (size_t)(q->h * q->w) * sizeof(T));
        for (int64_t oy = 0; oy < q->oh; oy++) {
            int64_t y0, y1, x0, x1;
            double rows, cols;
            avg_rows(q, oy, &y0, &y1, &rows);
            for (int64_t ox = 0; ox < q->ow; ox++) {
                avg_cols(q, ox, &x0, &x1, &cols);
                T share = (T)((double)g[oy * q->ow + ox] / (rows * cols));
                for (int64_t yy = y0; yy < y1; yy++)
                    for (int64_t xx = x0; xx < x1; xx++)
                        d[yy * q->w + xx] += share;
            }
        }
    });
}

static tg_status pool_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    pgeom q;
    if (pool_geometry(ctx, node, &q))
        return tg_errcode(ctx);
    const bool add = tg_vjp_adds(node, 0), max = pool_max(node), fast = max && max_2x2(&q);
    if (max && !node->aux)
        return TG_ERROR(ctx, TG_EINTERNAL, "%s: the arg-max taps were not saved",
                        node->op->name);
    int64_t off[NO_TAP];
    const int64_t *offp = NULL; /* the general kernel's taps are bytes */
    if (max && !fast && small_kernel(&q)) {
        tap_offsets(&q, off);
        offp = off;
    }
    TG__PAR_FOR(PAR_PLANES(&q), "omp parallel for schedule(static)",
    for (int64_t p = 0; p < q.planes; p++) {
        if (fast)
            max2_backward(&q, node->aux, gout, gin[0], add, p);
        else if (max)
            max_backward(&q, node->aux, offp, gout, gin[0], add, p);
        else
            avg_backward(&q, gout, gin[0], add, p);
    });
    return TG_OK;
}

/* "3" in 1-D or when both entries agree, else "(3, 2)" */
static const char *entry(char *buf, size_t size, bool one, const int64_t *v)
{
    if (one || v[0] == v[1])
        snprintf(buf, size, "%" PRId64, v[0]);
    else
        snprintf(buf, size, "(%" PRId64 ", %" PRId64 ")", v[0], v[1]);
    return buf;
}

static int pool_print(const tg_node *node, char *buf, size_t size)
{
    const tg_pool_attrs *a = node->attrs;
    bool one = pool_1d(node);
    char k[48], s[48], p[48], d[48];
    int n = snprintf(buf, size, "kernel=%s stride=%s pad=%s", entry(k, sizeof k, one, a->kernel),
                     entry(s, sizeof s, one, a->stride), entry(p, sizeof p, one, a->padding));
    size_t used = n > 0 && (size_t)n < size ? (size_t)n : size;
    if (a->dilation[0] != 1 || (!one && a->dilation[1] != 1))
        n += snprintf(buf + used, size - used, " dilation=%s", entry(d, sizeof d, one, a->dilation));
    used = n > 0 && (size_t)n < size ? (size_t)n : size;
    if (a->ceil_mode)
        n += snprintf(buf + used, size - used, " ceil_mode");
    used = n > 0 && (size_t)n < size ? (size_t)n : size;
    if (a->exclude_pad)
        n += snprintf(buf + used, size - used, " exclude_pad");
    return n;
}

/* Distinct values, far apart next to eps, so no window has a tie and no
 * difference quotient crosses from one maximum to another. */
static tg_tensor *distinct(tg_ctx *ctx, int ndim, const int64_t *shape)
{
    tg_tensor *t = tg__sample_rand(ctx, ndim, shape, 0, 1, true);
    for (int64_t i = 0; t && i < t->numel; i++)
        tg_set(t, i, (double)((i * 7919 + 13) % t->numel) * 0.05 - 1.0);
    return t;
}

typedef struct pool_case { int64_t x[4]; tg_pool_attrs a; const char *desc; } pool_case;

static int pool_sample_from(tg_ctx *ctx, const pool_case *cs, int ncases, int nd, int index,
                            tg_sample *s)
{
    if (index >= ncases)
        return 0;
    s->n_in = 1;
    s->in[0] = distinct(ctx, nd, cs[index].x);
    memcpy(s->attrs, &cs[index].a, sizeof cs[index].a);
    snprintf(s->desc, sizeof s->desc, "%s", cs[index].desc);
    return s->in[0] ? 1 : tg_errcode(ctx);
}

#define P2(k0, k1, s0, s1, p0, p1) {k0, k1}, {s0, s1}, {p0, p1}
#define P1(k, s, p) {k, 0}, {s, 0}, {p, 0}

static int maxpool2d_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const pool_case cases[] = {
        {{2, 2, 4, 4}, {P2(2, 2, 2, 2, 0, 0), {1, 1}, false, false}, "2x2 stride 2"},
        {{1, 3, 5, 5}, {P2(3, 3, 2, 2, 1, 1), {1, 1}, false, false}, "3x3 stride 2 pad 1"},
        {{1, 1, 5, 6}, {P2(2, 3, 1, 2, 1, 0), {1, 1}, false, false}, "uneven kernel, overlapping"},
        {{1, 2, 5, 6}, {P2(2, 3, 2, 2, 0, 1), {1, 1}, true, false}, "ceil mode"},
        {{1, 2, 7, 6}, {P2(2, 3, 2, 1, 1, 1), {2, 2}, false, false}, "dilation 2"},
        {{1, 1, 6, 7}, {P2(3, 2, 2, 2, 1, 1), {2, 3}, true, false}, "dilation, ceil mode"},
    };
    return pool_sample_from(ctx, cases, 6, 4, index, s);
}

static int avgpool2d_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const pool_case cases[] = {
        {{2, 2, 4, 4}, {P2(2, 2, 2, 2, 0, 0), {1, 1}, false, false}, "2x2 stride 2"},
        {{1, 3, 5, 5}, {P2(3, 3, 2, 2, 1, 1), {1, 1}, false, false}, "3x3 stride 2 pad 1"},
        {{1, 1, 5, 6}, {P2(2, 3, 1, 2, 1, 0), {1, 1}, false, false}, "uneven kernel, overlapping"},
        {{1, 2, 6, 6}, {P2(3, 3, 2, 2, 1, 1), {1, 1}, true, false}, "ceil mode, clipped window"},
        {{1, 2, 5, 5}, {P2(3, 3, 2, 2, 1, 1), {1, 1}, false, true}, "exclude_pad"},
        {{1, 1, 6, 7}, {P2(3, 2, 2, 2, 1, 1), {1, 1}, true, true}, "ceil mode, exclude_pad"},
    };
    return pool_sample_from(ctx, cases, 6, 4, index, s);
}

static int maxpool1d_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const pool_case cases[] = {
        {{2, 1, 8}, {P1(2, 2, 0), {1, 1}, false, false}, "k 2 stride 2"},
        {{1, 3, 7}, {P1(3, 2, 1), {1, 1}, false, false}, "k 3 stride 2 pad 1, odd length"},
        {{1, 2, 5}, {P1(2, 1, 1), {1, 1}, false, false}, "overlapping windows"},
        {{1, 2, 8}, {P1(3, 2, 1), {1, 1}, true, false}, "ceil mode"},
        {{2, 1, 9}, {P1(3, 2, 1), {3, 1}, true, false}, "dilation 3, ceil mode"},
    };
    return pool_sample_from(ctx, cases, 5, 3, index, s);
}

static int avgpool1d_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const pool_case cases[] = {
        {{2, 1, 8}, {P1(2, 2, 0), {1, 1}, false, false}, "k 2 stride 2"},
        {{1, 3, 7}, {P1(3, 2, 1), {1, 1}, false, false}, "k 3 stride 2 pad 1, odd length"},
        {{1, 2, 5}, {P1(2, 1, 1), {1, 1}, false, false}, "overlapping windows"},
        {{1, 2, 8}, {P1(3, 2, 1), {1, 1}, true, false}, "ceil mode"},
        {{2, 1, 8}, {P1(3, 2, 1), {1, 1}, true, true}, "ceil mode, exclude_pad"},
    };
    return pool_sample_from(ctx, cases, 5, 3, index, s);
}

#define POOL_OP(NAME, SAMPLE)                                                            \
    const tg_op tg__op_##NAME = {.name = #NAME, .min_in = 1, .max_in = 1,                \
                                 .attr_size = sizeof(tg_pool_attrs),                     \
                                 .forward = pool_forward, .vjp = pool_vjp,               \
                                 .print_attrs = pool_print, .sample = SAMPLE,            \
                                 .flags = TG_OP_VJP_WRITES};                             \
    tg_tensor *tg_##NAME##_opts(tg_ctx *ctx, tg_tensor *x, const tg_pool_attrs *a)       \
    {                                                                                    \
        if (ctx && !ctx->errcode && !a) {                                                \
            TG_ERROR(ctx, TG_EINVAL, #NAME ": attributes are NULL");                    \
            return NULL;                                                                 \
        }                                                                                \
        return tg_apply(ctx, &tg__op_##NAME, &x, 1, a);                                  \
    }                                                                                    \
    tg_tensor *tg_##NAME##_ex(tg_ctx *ctx, tg_tensor *x, int64_t kernel, int64_t stride, \
                              int64_t padding)                                           \
    {                                                                                    \
        tg_pool_attrs a = {{kernel, kernel}, {stride, stride}, {padding, padding},       \
                           {1, 1}, false, false};                                        \
        return tg_apply(ctx, &tg__op_##NAME, &x, 1, &a);                                 \
    }                                                                                    \
    tg_tensor *tg_##NAME(tg_ctx *ctx, tg_tensor *x, int64_t kernel)                      \
    {                                                                                    \
        return tg_##NAME##_ex(ctx, x, kernel, kernel, 0);                                \
    }

POOL_OP(max_pool1d, maxpool1d_sample)
POOL_OP(max_pool2d, maxpool2d_sample)
POOL_OP(avg_pool1d, avgpool1d_sample)
POOL_OP(avg_pool2d, avgpool2d_sample)

/* ---------------------------------------------------------------- global_avg_pool */

/* Plane p of s values: its mean, summed in double. */
static void gap_plane(const tg_tensor *x, tg_tensor *y, int64_t s, int64_t p)
{
    TG__DISPATCH(x->dtype, T, {
        const T *xs = (const T *)x->data + p * s;
        double acc = 0;
        for (int64_t k = 0; k < s; k++)
            acc += xs[k];
        ((T *)y->data)[p] = s ? (T)(acc / (double)s) : (T)NAN;
    });
}

static tg_tensor *gap_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *x = node->in[0];
    if (x->ndim < 3) {
        TG_ERROR(ctx, TG_ESHAPE, "global_avg_pool: input %s should be (N, C, ...) with at least "
                 "one spatial dimension", tg__shape_s(x));
        return NULL;
    }
    tg_node_value_unused(node, 0);
    tg_node_value_unused(node, -1);
    int64_t shape[TG_MAX_DIMS] = {x->shape[0], x->shape[1]};
    bool keep = ((const tg_gap_attrs *)node->attrs)->keepdim;
    for (int d = 2; d < x->ndim; d++)
        shape[d] = 1;
    tg_tensor *y = tg_empty(ctx, x->dtype, keep ? x->ndim : 2, shape);
    if (!y)
        return NULL;
    int64_t planes = y->numel, s = planes ? x->numel / planes : 0;
    TG__PAR_FOR(x->numel >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
    for (int64_t p = 0; p < planes; p++)
        gap_plane(x, y, s, p););
    return y;
}

/* Plane p: dx = g / s over the plane (added or written). */
static void gap_vjp_plane(const tg_tensor *gout, tg_tensor *gx, int64_t s, bool add, int64_t p)
{
    TG__DISPATCH(gout->dtype, T, {
        const T share = (T)((double)((const T *)gout->data)[p] / (double)s);
        T *d = (T *)gx->data + p * s;
        if (add)
            for (int64_t k = 0; k < s; k++)
                d[k] += share;
        else
            for (int64_t k = 0; k < s; k++)
                d[k] = share;
    });
}

static tg_status gap_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *x = node->in[0];
    int64_t planes = gout->numel, s = planes ? x->numel / planes : 0;
    const bool add = tg_vjp_adds(node, 0);
    if (s == 0)
        return TG_OK;
    TG__PAR_FOR(x->numel >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
    for (int64_t p = 0; p < planes; p++)
        gap_vjp_plane(gout, gin[0], s, add, p););
    return TG_OK;
}

static int gap_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const int64_t shapes[][4] = {{2, 3, 4, 4}, {1, 2, 5}, {2, 1, 1, 3}, {2, 2, 3, 2}, {1, 3, 4}};
    static const int nd[] = {4, 3, 4, 4, 3};
    static const char *const desc[] = {"2-D", "1-D", "size-1 dims", "2-D, keepdim", "1-D, keepdim"};
    if (index >= 5)
        return 0;
    s->n_in = 1;
    s->in[0] = tg__sample_rand(ctx, nd[index], shapes[index], -1, 1, true);
    tg_gap_attrs a = {index >= 3};
    memcpy(s->attrs, &a, sizeof a);
    snprintf(s->desc, sizeof s->desc, "%s", desc[index]);
    return s->in[0] ? 1 : tg_errcode(ctx);
}

static int gap_print(const tg_node *node, char *buf, size_t size)
{
    return snprintf(buf, size, "%s", ((const tg_gap_attrs *)node->attrs)->keepdim ? "keepdim" : "");
}

const tg_op tg__op_global_avg_pool = {.name = "global_avg_pool", .min_in = 1, .max_in = 1,
                                      .attr_size = sizeof(tg_gap_attrs), .forward = gap_forward,
                                      .vjp = gap_vjp, .print_attrs = gap_print,
                                      .sample = gap_sample, .flags = TG_OP_VJP_WRITES};

tg_tensor *tg_global_avg_pool_ex(tg_ctx *ctx, tg_tensor *x, bool keepdim)
{
    tg_gap_attrs a = {keepdim};
    return tg_apply(ctx, &tg__op_global_avg_pool, &x, 1, &a);
}

tg_tensor *tg_global_avg_pool(tg_ctx *ctx, tg_tensor *x)
{
    return tg_global_avg_pool_ex(ctx, x, false);
}
