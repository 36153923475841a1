/*
 * conv_kernels.h: the portable convolution's type-generic loops, included
 * by conv_portable.c once per element type with T (float or double) and
 * SFX (the name suffix) defined.
 *
 * A chunk of nb images [n0, n0 + nb) has its columns in one matrix of
 * C R S rows and ld = nb OH OW columns:
 *   col[(c R + i) S + j][m OH OW + oy OW + ox] = x[n0 + m, c, oy sh - ph + i dh, ox sw - pw + j dw]
 * (zero outside the image). Along a row of the output the valid ox form
 * one range [lo, hi), found once per kernel column j, so the inner loops
 * run over contiguous outputs without a bounds test.
 */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)

/* im2col of channel c of image m of the chunk (back: col2im, +=). */
static void CAT(channel_cols, SFX)(const tg__conv_desc *d, const cspan *sp, T *plane, T *col,
                                   int64_t ld, int64_t m, int64_t c, bool back)
{
    for (int64_t i = 0; i < d->r; i++)
        for (int64_t j = 0; j < d->s; j++) {
            const int64_t x0 = j * d->dw - d->pw, lo = sp->lo[j], hi = sp->hi[j];
            T *row = col + ((c * d->r + i) * d->s + j) * ld + m * d->oh * d->ow;
            for (int64_t oy = 0; oy < d->oh; oy++) {
                const int64_t y = oy * d->sh - d->ph + i * d->dh;
                T *o = row + oy * d->ow;
                if (y < 0 || y >= d->h) {
                    if (!back)
                        memset(o, 0, (size_t)d->ow * sizeof(T));
                    continue;
                }
                T *in = plane + y * d->w; /* in[ox sw + x0] is valid for lo <= ox < hi */
                if (back) {
                    if (d->sw == 1)
                        for (int64_t ox = lo; ox < hi; ox++)
                            in[ox + x0] += o[ox];
                    else
                        for (int64_t ox = lo; ox < hi; ox++)
                            in[ox * d->sw + x0] += o[ox];
                    continue;
                }
                for (int64_t ox = 0; ox < lo; ox++)
                    o[ox] = 0;
                if (d->sw == 1 && hi > lo)
                    memcpy(o + lo, in + lo + x0, (size_t)(hi - lo) * sizeof(T));
                else if (d->sw != 1)
                    for (int64_t ox = lo; ox < hi; ox++)
                        o[ox] = in[ox * d->sw + x0];
                for (int64_t ox = hi; ox < d->ow; ox++)
                    o[ox] = 0;
            }
        }
}

/* Columns of images [n0, n0 + nb) of x into col (back: col2im of col into
 * dx, which is first zeroed when zero). One task per image and channel:
 * col2im's tasks write disjoint planes. */
static void CAT(cols, SFX)(const tg__conv_desc *d, const cspan *sp, T *x, int64_t n0, int64_t nb,
                           T *col, bool back, bool zero)
{
    const int64_t hw = d->h * d->w, tasks = nb * d->c, ld = nb * d->oh * d->ow;
    TG__PAR_FOR(tasks * d->r * d->s * d->oh * d->ow >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t m = t / d->c, c = t % d->c;
        T *plane = x + ((n0 + m) * d->c + c) * hw;
        if (zero)
            memset(plane, 0, (size_t)hw * sizeof(T));
        CAT(channel_cols, SFX)(d, sp, plane, col, ld, m, c, back);
    });
}

/* y[n0 + m, k, :] = out[k, m, :] (+ b[k]); out is (K, nb OH OW). */
static void CAT(unchunk, SFX)(const tg__conv_desc *d, const T *out, int64_t n0, int64_t nb,
                              const T *b, T *y)
{
    const int64_t ohw = d->oh * d->ow, tasks = nb * d->k;
    TG__PAR_FOR(tasks * ohw >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t m = t / d->k, k = t % d->k;
        const T *src = out + (k * nb + m) * ohw;
        T *dst = y + ((n0 + m) * d->k + k) * ohw;
        if (b) {
            const T bk = b[k];
            for (int64_t p = 0; p < ohw; p++)
                dst[p] = src[p] + bk;
        } else {
            memcpy(dst, src, (size_t)ohw * sizeof(T));
        }
    });
}

/* out[k, m, :] = dy[n0 + m, k, :]: the chunk's output gradient as (K, nb OH OW). */
static void CAT(chunk, SFX)(const tg__conv_desc *d, const T *dy, int64_t n0, int64_t nb, T *out)
{
    const int64_t ohw = d->oh * d->ow, tasks = nb * d->k;
    TG__PAR_FOR(tasks * ohw >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t m = t / d->k, k = t % d->k;
        memcpy(out + (k * nb + m) * ohw, dy + ((n0 + m) * d->k + k) * ohw, (size_t)ohw * sizeof(T));
    });
}

/* y[n, k, :] += b[k] */
static void CAT(add_bias, SFX)(const tg__conv_desc *d, const T *b, T *y)
{
    const int64_t ohw = d->oh * d->ow, tasks = d->n * d->k;
    TG__PAR_FOR(tasks * ohw >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
    for (int64_t t = 0; t < tasks; t++) {
        const T bk = b[t % d->k];
        T *o = y + t * ohw;
        for (int64_t p = 0; p < ohw; p++)
            o[p] += bk;
    });
}

/* db[k] (=, +=) the sum of dy[:, k, :], accumulated in double; one task per filter. */
TG__HOT static void CAT(bias_grad, SFX)(const tg__conv_desc *d, const T *dy, T *db, bool add)
{
    const int64_t ohw = d->oh * d->ow;
    TG__PAR_FOR(d->n * d->k * ohw >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
    for (int64_t k = 0; k < d->k; k++) {
        /* four quarters of each plane, each its own vector of double sums:
         * one chain of dependent adds would wait an add's latency per vector
         * (float sums would halve the work but drift: 2^20 values of 0.1f
         * come out 2e-6 off) */
        double s = 0;
        for (int64_t n = 0; n < d->n; n++) {
            const T *r0 = dy + (n * d->k + k) * ohw;
            const int64_t q = ohw / 4;
            const T *r1 = r0 + q, *r2 = r0 + 2 * q, *r3 = r0 + 3 * q;
            double p0 = 0, p1 = 0, p2 = 0, p3 = 0;
            _Pragma("omp simd reduction(+ : p0, p1, p2, p3)")
            for (int64_t p = 0; p < q; p++) {
                p0 += (double)r0[p];
                p1 += (double)r1[p];
                p2 += (double)r2[p];
                p3 += (double)r3[p];
            }
            s += (p0 + p1) + (p2 + p3);
            for (int64_t p = 4 * q; p < ohw; p++)
                s += (double)r0[p];
        }
        db[k] = add ? (T)((double)db[k] + s) : (T)s;
    });
}

#undef CAT
#undef CAT_
