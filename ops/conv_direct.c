/*
 * conv_direct.c: convolutions of one input channel, computed directly.
 *
 * A network's first layer usually reads one channel (a grey image, a
 * signal), and there both im2col + gemm and oneDNN do badly: the product
 * has an inner size of only R S, and oneDNN pads the channel to a SIMD
 * width. Computed straight from the definition, every step is a row
 * operation over contiguous output pixels the compiler vectorises:
 *   forward     y[n, k, oy, :]   += w[k, i, j] x[n, oy - ph + i, : + j - pw]
 *   data grad   dx[n, iy, : + j - pw] += w[k, i, j] dy[n, k, iy + ph - i, :]
 *   weight grad dw[k, i, j]      += dy[n, k, oy, :] . x[n, oy - ph + i, : + j - pw]
 * with each row's valid range (the columns inside the image) computed once
 * per kernel column. Stride and dilation 1, one group, C = 1
 * (tg__conv_direct_fits); tg__conv_pick chooses it only for few taps in all. Each output element is summed by one
 * thread in a fixed order, so results do not depend on the thread count;
 * a weight-gradient element sums float rows into a double.
 */
#include "conv_impl.h"

/* At most this many taps: forward adds them all in one pass. */
enum { FUSE_TAPS = 16 };

bool tg__conv_direct_fits(const tg__conv_desc *d)
{
    return d->c == 1 && d->g == 1 && d->sh == 1 && d->sw == 1 && d->dh == 1 && d->dw == 1 &&
           d->s <= 64;
}

/* For kernel column j: the outputs ox with input column ox - pw + j inside
 * the row, [lo[j], hi[j]). */
static void col_spans(const tg__conv_desc *d, int64_t *lo, int64_t *hi)
{
    for (int64_t j = 0; j < d->s; j++) {
        int64_t a = d->pw - j, b = d->w + d->pw - j; /* ox range before clipping */
        a = a < 0 ? 0 : a;
        b = b > d->ow ? d->ow : b;
        lo[j] = a;
        hi[j] = b > a ? b : a;
    }
}

/* Runs BODY for every output row oy, kernel row i whose input row iy is
 * inside the image, and kernel column j: one row operation each. */
#define EACH_TAP_ROW(d, BODY)                                                                  \
    for (int64_t oy = 0; oy < (d)->oh; oy++)                                                   \
        for (int64_t i = 0; i < (d)->r; i++) {                                                 \
            const int64_t iy = oy - (d)->ph + i;                                               \
            if (iy < 0 || iy >= (d)->h)                                                        \
                continue;                                                                      \
            for (int64_t j = 0; j < (d)->s; j++)                                               \
                BODY                                                                           \
        }

#define DIRECT_KERNELS(T, SFX)                                                                  \
    /* a . b over n elements, in blocks of up to 1024 and each block in four                 \
     * quarters with a vector of T sums apiece (one chain of dependent adds                    \
     * would wait an add's latency per vector; a lane sums at most 64                          \
     * products), the blocks' sums added in double */                                         \
    TG__HOT static double dot_##SFX(const T *restrict a, const T *restrict b, int64_t n)       \
    {                                                                                          \
        double s = 0;                                                                          \
        for (int64_t at = 0; at < n; at += 1024) {                                             \
            const int64_t len = n - at < 1024 ? n - at : 1024, q = len / 4;                    \
            const T *a0 = a + at, *a1 = a0 + q, *a2 = a0 + 2 * q, *a3 = a0 + 3 * q;            \
            const T *b0 = b + at, *b1 = b0 + q, *b2 = b0 + 2 * q, *b3 = b0 + 3 * q;            \
            T p0 = 0, p1 = 0, p2 = 0, p3 = 0;                                                  \
            _Pragma("omp simd reduction(+ : p0, p1, p2, p3)")                                  \
            for (int64_t i = 0; i < q; i++) {                                                  \
                p0 += a0[i] * b0[i];                                                           \
                p1 += a1[i] * b1[i];                                                           \
                p2 += a2[i] * b2[i];                                                           \
                p3 += a3[i] * b3[i];                                                           \
            }                                                                                  \
            s += ((double)p0 + (double)p1) + ((double)p2 + (double)p3);                        \
            for (int64_t i = 4 * q; i < len; i++)                                              \
                s += (double)(a0[i] * b0[i]);                                                  \
        }                                                                                      \
        return s;                                                                              \
    }                                                                                          \
                                                                                               \
    /* Output row oy of one image and filter: with few taps (FUSE_TAPS), one                   \
     * pass adds every tap to each output in the order the unfused passes                      \
     * would (bias, then (i, j) in order), so the sums are the same; the                       \
     * columns at the ends, where some taps fall outside the row, come first                   \
     * and last, tap by tap. */                                                                \
    TG__HOT static void fwd_row_##SFX(const tg__conv_desc *d, const int64_t *lo,               \
                                      const int64_t *hi,                                       \
                                      const T *xp, const T *wk, T bias, T *restrict yr,        \
                                      int64_t oy)                                              \
    {                                                                                          \
        const T *src[FUSE_TAPS];                                                               \
        T wt[FUSE_TAPS];                                                                       \
        int64_t col[FUSE_TAPS]; /* each tap's kernel column */                                 \
        int64_t nt = 0, a = 0, e = d->ow; /* [a, e): every tap inside */                       \
        for (int64_t i = 0; i < d->r; i++) {                                                   \
            const int64_t iy = oy - d->ph + i;                                                 \
            if (iy < 0 || iy >= d->h)                                                          \
                continue;                                                                      \
            for (int64_t j = 0; j < d->s; j++) {                                               \
                src[nt] = xp + iy * d->w + j - d->pw;                                          \
                col[nt] = j;                                                                   \
                wt[nt++] = wk[i * d->s + j];                                                   \
                a = lo[j] > a ? lo[j] : a;                                                     \
                e = hi[j] < e ? hi[j] : e;                                                     \
            }                                                                                  \
        }                                                                                      \
        if (e < a)                                                                             \
            e = a;                                                                             \
        for (int64_t ox = 0; ox < d->ow; ox++) {                                               \
            if (ox == a)                                                                       \
                ox = e; /* the middle is below */                                              \
            if (ox >= d->ow)                                                                   \
                break;                                                                         \
            T v = bias;                                                                        \
            for (int64_t t = 0; t < nt; t++)                                                   \
                if (ox >= lo[col[t]] && ox < hi[col[t]])                                       \
                    v += wt[t] * src[t][ox];                                                   \
            yr[ox] = v;                                                                        \
        }                                                                                      \
        if (nt == 2) { /* B1's kernel of 2 */                                                  \
            const T w0 = wt[0], w1 = wt[1], *s0 = src[0], *s1 = src[1];                        \
            _Pragma("omp simd")                                                                \
            for (int64_t ox = a; ox < e; ox++)                                                 \
                yr[ox] = bias + w0 * s0[ox] + w1 * s1[ox];                                     \
            return;                                                                            \
        }                                                                                      \
        _Pragma("omp simd")                                                                    \
        for (int64_t ox = a; ox < e; ox++) {                                                   \
            T v = bias;                                                                        \
            for (int64_t t = 0; t < nt; t++)                                                   \
                v += wt[t] * src[t][ox];                                                       \
            yr[ox] = v;                                                                        \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    static void fwd_##SFX(const tg__conv_desc *d, const T *x, const T *w, const T *b, T *y)    \
    {                                                                                          \
        int64_t lo[64], hi[64];                                                                \
        col_spans(d, lo, hi);                                                                  \
        const int64_t ohw = d->oh * d->ow, hw = d->h * d->w, rs = d->r * d->s;                 \
        const bool fused = rs <= FUSE_TAPS;                                                    \
        TG__PAR_FOR(d->n * d->k * ohw * rs >= TG__PAR_GRAIN, "omp parallel for collapse(2)", \
        for (int64_t n = 0; n < d->n; n++)                                                     \
            for (int64_t k = 0; k < d->k; k++) {                                               \
                T *restrict yp = y + (n * d->k + k) * ohw;                                     \
                const T *xp = x + n * hw, *wk = w + k * rs;                                    \
                const T bias = b ? b[k] : (T)0;                                                \
                if (fused) {                                                                   \
                    for (int64_t oy = 0; oy < d->oh; oy++)                                     \
                        fwd_row_##SFX(d, lo, hi, xp, wk, bias, yp + oy * d->ow, oy);           \
                    continue;                                                                  \
                }                                                                              \
                _Pragma("omp simd")                                                            \
                for (int64_t i = 0; i < ohw; i++)                                              \
                    yp[i] = bias;                                                              \
                EACH_TAP_ROW(d, {                                                              \
                    T *restrict yr = yp + oy * d->ow;                                          \
                    const T *restrict xr = xp + iy * d->w;                                     \
                    const T wv = wk[i * d->s + j];                                             \
                    _Pragma("omp simd")                                                        \
                    for (int64_t ox = lo[j]; ox < hi[j]; ox++)                                 \
                        yr[ox] += wv * xr[ox + j - d->pw];                                     \
                });                                                                            \
            });                                                                                  \
    }                                                                                          \
                                                                                               \
    static void bwd_data_##SFX(const tg__conv_desc *d, const T *dy, const T *w, T *dx,         \
                               bool add)                                                       \
    {                                                                                          \
        int64_t lo[64], hi[64];                                                                \
        col_spans(d, lo, hi);                                                                  \
        const int64_t ohw = d->oh * d->ow, hw = d->h * d->w, rs = d->r * d->s;                 \
        TG__PAR_FOR(d->n * d->k * ohw * rs >= TG__PAR_GRAIN, "omp parallel for", \
        for (int64_t n = 0; n < d->n; n++) {                                                   \
            T *restrict xp = dx + n * hw;                                                      \
            if (!add)                                                                          \
                for (int64_t i = 0; i < hw; i++)                                               \
                    xp[i] = 0;                                                                 \
            for (int64_t k = 0; k < d->k; k++) {                                               \
                const T *gp = dy + (n * d->k + k) * ohw, *wk = w + k * rs;                     \
                EACH_TAP_ROW(d, {                                                              \
                    const T *restrict gr = gp + oy * d->ow;                                    \
                    T *restrict xr = xp + iy * d->w;                                           \
                    const T wv = wk[i * d->s + j];                                             \
                    _Pragma("omp simd")                                                        \
                    for (int64_t ox = lo[j]; ox < hi[j]; ox++)                                 \
                        xr[ox + j - d->pw] += wv * gr[ox];                                     \
                });                                                                            \
            }                                                                                  \
        });                                                                                      \
    }                                                                                          \
                                                                                               \
    static void bwd_weight_##SFX(const tg__conv_desc *d, const T *dy, const T *x, T *dw,       \
                                 bool add)                                                     \
    {                                                                                          \
        int64_t lo[64], hi[64];                                                                \
        col_spans(d, lo, hi);                                                                  \
        const int64_t ohw = d->oh * d->ow, hw = d->h * d->w, rs = d->r * d->s;                 \
        TG__PAR_FOR(d->n * d->k * ohw * rs >= TG__PAR_GRAIN, "omp parallel for", \
        for (int64_t kij = 0; kij < d->k * rs; kij++) {                                        \
            const int64_t k = kij / rs, i = kij % rs / d->s, j = kij % d->s;                   \
            double acc = 0;                                                                    \
            for (int64_t n = 0; n < d->n; n++) {                                               \
                const T *gp = dy + (n * d->k + k) * ohw, *xp = x + n * hw;                     \
                for (int64_t oy = 0; oy < d->oh; oy++) {                                       \
                    const int64_t iy = oy - d->ph + i;                                         \
                    if (iy < 0 || iy >= d->h)                                                  \
                        continue;                                                              \
                    const T *restrict gr = gp + oy * d->ow;                                    \
                    const T *restrict xr = xp + iy * d->w;                                     \
                    const int64_t off = j - d->pw;                                             \
                    acc += dot_##SFX(gr + lo[j], xr + lo[j] + off, hi[j] - lo[j]);             \
                }                                                                              \
            }                                                                                  \
            dw[kij] = add ? (T)((double)dw[kij] + acc) : (T)acc;                               \
        });                                                                                      \
    }

DIRECT_KERNELS(float, f32)
DIRECT_KERNELS(double, f64)

static tg_status direct_fwd(tg_ctx *ctx, const tg__conv_desc *d, const void *x, const void *w,
                            const void *b, void *y, void **keep)
{
    (void)ctx;
    (void)keep;
    if (d->dtype == TG_F32)
        fwd_f32(d, x, w, b, y);
    else
        fwd_f64(d, x, w, b, y);
    return TG_OK;
}

static tg_status direct_bwd_data(tg_ctx *ctx, const tg__conv_desc *d, const void *dy,
                                 const void *w, void *dx, bool add)
{
    (void)ctx;
    if (d->dtype == TG_F32)
        bwd_data_f32(d, dy, w, dx, add);
    else
        bwd_data_f64(d, dy, w, dx, add);
    return TG_OK;
}

static tg_status direct_bwd_weight(tg_ctx *ctx, const tg__conv_desc *d, const void *dy,
                                   const void *x, void *dw, bool add_w, void *db, bool add_b,
                                   void *kept)
{
    (void)ctx;
    (void)kept;
    if (db)
        tg__conv_bias_grad(d, dy, db, add_b);
    if (!dw)
        return TG_OK;
    if (d->dtype == TG_F32)
        bwd_weight_f32(d, dy, x, dw, add_w);
    else
        bwd_weight_f64(d, dy, x, dw, add_w);
    return TG_OK;
}

const tg__conv_impl tg__conv_direct = {"direct", direct_fwd, direct_bwd_data, direct_bwd_weight};
