/*
 * conv_portable.c: the convolution backend that needs only BLAS.
 *
 * Images go in chunks: one buffer holds the columns of nb images (see
 * conv_kernels.h), and each group's product is ONE gemm over all of them:
 *   out_g (Kg, nb OH OW)     = w_g (Kg, Cg R S) col_g
 *   dcol_g (Cg R S, nb OH OW) = w_g^T dy_g,   then col2im into dx
 *   dw_g (Kg, Cg R S)       (=, +=) dy_g col_g^T
 * where dy_g is the chunk's output gradient gathered as (Kg, nb OH OW).
 * Chunks are bounded (CHUNK_BYTES) so memory stays modest for big
 * batches. When forward may keep its columns (KEEP_BYTES at most) it
 * does, and the weight gradient reuses them instead of a second im2col.
 * A 1x1 kernel with stride 1 and no padding uses x itself as the columns,
 * one image at a time.
 */
#include "conv_impl.h"

#include <stdint.h>

enum {
    CHUNK_BYTES = 16 << 20, /* columns (or gathered gradient) of one chunk */
    KEEP_BYTES = 64 << 20   /* columns forward keeps for the weight gradient */
};

/* For each kernel column j, the outputs ox whose input column
 * ox sw - pw + j dw lies inside the image: [lo[j], hi[j]). */
typedef struct cspan { int64_t *lo, *hi; } cspan;

#define T float
#define SFX f32
#include "conv_kernels.h"
#undef T
#undef SFX
#define T double
#define SFX f64
#include "conv_kernels.h"
#undef T
#undef SFX

static bool direct(const tg__conv_desc *d)
{
    return d->r == 1 && d->s == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 && d->pw == 0;
}

static tg_status spans(tg_ctx *ctx, const tg__conv_desc *d, cspan *sp)
{
    sp->lo = tg_scratch(ctx, 2 * (size_t)d->s * sizeof(int64_t), false);
    if (!sp->lo)
        return tg_errcode(ctx);
    sp->hi = sp->lo + d->s;
    for (int64_t j = 0; j < d->s; j++) {
        const int64_t x0 = j * d->dw - d->pw;
        int64_t lo = x0 < 0 ? (-x0 + d->sw - 1) / d->sw : 0;
        int64_t hi = d->w - x0 <= 0 ? 0 : (d->w - x0 + d->sw - 1) / d->sw;
        lo = lo < d->ow ? lo : d->ow;
        hi = hi < d->ow ? hi : d->ow;
        sp->lo[j] = lo;
        sp->hi[j] = hi > lo ? hi : lo;
    }
    return TG_OK;
}

/* Images per chunk, so that its columns and its (K, nb OH OW) matrices fit in budget. */
static int64_t chunk_images(const tg__conv_desc *d, size_t budget)
{
    size_t es = tg_dtype_size(d->dtype);
    int64_t rows = d->c * d->r * d->s > d->k ? d->c * d->r * d->s : d->k;
    size_t per = (size_t)rows * (size_t)(d->oh * d->ow) * es;
    int64_t nb = per ? (int64_t)(budget / per) : d->n;
    return nb < 1 ? 1 : nb > d->n ? d->n : nb;
}

static void im2col(const tg__conv_desc *d, const cspan *sp, const void *x, int64_t n0, int64_t nb,
                   void *col)
{
    if (d->dtype == TG_F32)
        cols_f32(d, sp, (float *)x, n0, nb, col, false, false);
    else
        cols_f64(d, sp, (double *)x, n0, nb, col, false, false);
}

static void col2im(const tg__conv_desc *d, const cspan *sp, void *dx, int64_t n0, int64_t nb,
                   void *col, bool zero)
{
    if (d->dtype == TG_F32)
        cols_f32(d, sp, dx, n0, nb, col, true, zero);
    else
        cols_f64(d, sp, dx, n0, nb, col, true, zero);
}

/* The chunk's dy as (K, nb OH OW): dy itself for one image. */
static const void *gather_dy(const tg__conv_desc *d, const void *dy, int64_t n0, int64_t nb,
                             void *buf)
{
    size_t es = tg_dtype_size(d->dtype);
    if (nb == 1)
        return (const char *)dy + (size_t)(n0 * d->k * d->oh * d->ow) * es;
    if (d->dtype == TG_F32)
        chunk_f32(d, dy, n0, nb, buf);
    else
        chunk_f64(d, dy, n0, nb, buf);
    return buf;
}

void tg__conv_bias_grad(const tg__conv_desc *d, const void *dy, void *db, bool add)
{
    if (d->dtype == TG_F32)
        bias_grad_f32(d, dy, db, add);
    else
        bias_grad_f64(d, dy, db, add);
}

/* Per image and group, with x as the columns (direct()). */
static void fwd_direct(const tg__conv_desc *d, const char *x, const char *w, char *y)
{
    size_t es = tg_dtype_size(d->dtype);
    const int64_t cg = d->c / d->g, kg = d->k / d->g, ohw = d->oh * d->ow;
    for (int64_t n = 0; n < d->n; n++)
        for (int64_t g = 0; g < d->g; g++)
            tg__gemm(d->dtype, false, false, kg, ohw, cg, w + (size_t)(g * kg * cg) * es, cg,
                     x + (size_t)((n * d->c + g * cg) * ohw) * es, ohw, false,
                     y + (size_t)((n * d->k + g * kg) * ohw) * es, ohw);
}

static tg_status portable_fwd(tg_ctx *ctx, const tg__conv_desc *d, const void *x, const void *w,
                              const void *b, void *y, void **keep)
{
    size_t es = tg_dtype_size(d->dtype);
    const int64_t crs = d->c / d->g * d->r * d->s, kg = d->k / d->g, ohw = d->oh * d->ow;
    int64_t nb = chunk_images(d, CHUNK_BYTES);
    if (direct(d)) {
        fwd_direct(d, x, w, y);
    } else {
        cspan sp;
        if (spans(ctx, d, &sp))
            return tg_errcode(ctx);
        bool kept = keep && chunk_images(d, KEEP_BYTES) == d->n;
        if (kept)
            nb = d->n;
        char *col = tg_scratch(ctx, (size_t)(d->c * d->r * d->s * nb * ohw) * es, false);
        char *out = nb > 1 ? tg_scratch(ctx, (size_t)(d->k * nb * ohw) * es, false) : NULL;
        if (!col || (nb > 1 && !out))
            return tg_errcode(ctx);
        for (int64_t n0 = 0; n0 < d->n; n0 += nb) {
            const int64_t m = nb < d->n - n0 ? nb : d->n - n0, ld = m * ohw;
            char *o = nb > 1 ? out : (char *)y + (size_t)(n0 * d->k * ohw) * es;
            im2col(d, &sp, x, n0, m, col);
            for (int64_t g = 0; g < d->g; g++)
                tg__gemm(d->dtype, false, false, kg, ld, crs, (const char *)w + (size_t)(g * kg * crs) * es,
                         crs, col + (size_t)(g * crs * ld) * es, ld, false,
                         o + (size_t)(g * kg * ld) * es, ld);
            /* out is scratch memory of the chunk's dtype, held as bytes */
            if (nb > 1 && d->dtype == TG_F32)
                unchunk_f32(d, (float *)(void *)out, n0, m, b, y);
            else if (nb > 1)
                unchunk_f64(d, (double *)(void *)out, n0, m, b, y);
        }
        if (kept)
            *keep = col;
        if (nb > 1)
            return TG_OK; /* unchunk added the bias */
    }
    if (b && d->dtype == TG_F32)
        add_bias_f32(d, b, y);
    else if (b)
        add_bias_f64(d, b, y);
    return TG_OK;
}

static tg_status portable_bwd_data(tg_ctx *ctx, const tg__conv_desc *d, const void *dy,
                                   const void *w, void *dx, bool add)
{
    size_t es = tg_dtype_size(d->dtype);
    const int64_t crs = d->c / d->g * d->r * d->s, kg = d->k / d->g, ohw = d->oh * d->ow;
    if (direct(d)) {
        const int64_t cg = d->c / d->g;
        for (int64_t n = 0; n < d->n; n++)
            for (int64_t g = 0; g < d->g; g++)
                tg__gemm(d->dtype, true, false, cg, ohw, kg, (const char *)w + (size_t)(g * kg * cg) * es,
                         cg, (const char *)dy + (size_t)((n * d->k + g * kg) * ohw) * es, ohw, add,
                         (char *)dx + (size_t)((n * d->c + g * cg) * ohw) * es, ohw);
        return TG_OK;
    }
    cspan sp;
    if (spans(ctx, d, &sp))
        return tg_errcode(ctx);
    const int64_t nb = chunk_images(d, CHUNK_BYTES);
    char *dcol = tg_scratch(ctx, (size_t)(d->c * d->r * d->s * nb * ohw) * es, false);
    char *buf = nb > 1 ? tg_scratch(ctx, (size_t)(d->k * nb * ohw) * es, false) : NULL;
    if (!dcol || (nb > 1 && !buf))
        return tg_errcode(ctx);
    for (int64_t n0 = 0; n0 < d->n; n0 += nb) {
        const int64_t m = nb < d->n - n0 ? nb : d->n - n0, ld = m * ohw;
        const char *g_dy = gather_dy(d, dy, n0, m, buf);
        for (int64_t g = 0; g < d->g; g++)
            tg__gemm(d->dtype, true, false, crs, ld, kg, (const char *)w + (size_t)(g * kg * crs) * es,
                     crs, g_dy + (size_t)(g * kg * ld) * es, ld, false,
                     dcol + (size_t)(g * crs * ld) * es, ld);
        col2im(d, &sp, dx, n0, m, dcol, !add);
    }
    return TG_OK;
}

static tg_status portable_bwd_weight(tg_ctx *ctx, const tg__conv_desc *d, const void *dy,
                                     const void *x, void *dw, bool add_w, void *db, bool add_b,
                                     void *kept)
{
    size_t es = tg_dtype_size(d->dtype);
    const int64_t crs = d->c / d->g * d->r * d->s, kg = d->k / d->g, ohw = d->oh * d->ow;
    if (db)
        tg__conv_bias_grad(d, dy, db, add_b);
    if (!dw)
        return TG_OK;
    if (direct(d)) {
        const int64_t cg = d->c / d->g;
        for (int64_t n = 0; n < d->n; n++)
            for (int64_t g = 0; g < d->g; g++)
                tg__gemm(d->dtype, false, true, kg, cg, ohw,
                         (const char *)dy + (size_t)((n * d->k + g * kg) * ohw) * es, ohw,
                         (const char *)x + (size_t)((n * d->c + g * cg) * ohw) * es, ohw,
                         add_w || n > 0, (char *)dw + (size_t)(g * kg * cg) * es, cg);
        return TG_OK;
    }
    cspan sp;
    if (!kept && spans(ctx, d, &sp))
        return tg_errcode(ctx);
    const int64_t nb = kept ? d->n : chunk_images(d, CHUNK_BYTES);
    char *col = kept ? kept : tg_scratch(ctx, (size_t)(d->c * d->r * d->s * nb * ohw) * es, false);
    char *buf = nb > 1 ? tg_scratch(ctx, (size_t)(d->k * nb * ohw) * es, false) : NULL;
    if (!col || (nb > 1 && !buf))
        return tg_errcode(ctx);
    for (int64_t n0 = 0; n0 < d->n; n0 += nb) {
        const int64_t m = nb < d->n - n0 ? nb : d->n - n0, ld = m * ohw;
        if (!kept)
            im2col(d, &sp, x, n0, m, col);
        const char *g_dy = gather_dy(d, dy, n0, m, buf);
        for (int64_t g = 0; g < d->g; g++)
            tg__gemm(d->dtype, false, true, kg, crs, ld, g_dy + (size_t)(g * kg * ld) * es, ld,
                     col + (size_t)(g * crs * ld) * es, ld, add_w || n0 > 0,
                     (char *)dw + (size_t)(g * kg * crs) * es, crs);
    }
    return TG_OK;
}

const tg__conv_impl tg__conv_portable = {"portable", portable_fwd, portable_bwd_data,
                                         portable_bwd_weight};
