/*
 * conv_impl.h: the convolution kernels' internal interface (ops/conv*.c).
 *
 * ops/conv.c validates and records conv1d/conv2d; the arithmetic goes
 * through one of the backends below, chosen per call by tg__conv_pick:
 *   portable (ops/conv_portable.c): batched im2col + one gemm per chunk,
 *            float32 and float64;
 *   dnnl     (ops/conv_dnnl.c, when built with oneDNN): float32 only;
 *   direct   (ops/conv_direct.c): one input channel, stride 1, both dtypes.
 * A 1-D convolution arrives as a 2-D one with H = R = 1.
 *
 * Every buffer is contiguous: x (N, C, H, W), w (K, C / G, R, S), b (K),
 * y and dy (N, K, OH, OW). A gradient is written (BLAS's beta = 0) when
 * its `add` is false and accumulated into (beta = 1) when true.
 */
#ifndef TAPEGRAD_CONV_IMPL_H
#define TAPEGRAD_CONV_IMPL_H

#include "ops_impl.h"

typedef struct tg__conv_desc {
    tg_dtype dtype;
    int64_t n, c, h, w;        /* input */
    int64_t k, r, s;           /* weight: filters, kernel height and width */
    int64_t oh, ow;            /* output */
    int64_t sh, sw, ph, pw, dh, dw, g;
} tg__conv_desc;

typedef struct tg__conv_impl {
    const char *name;
    /* y = conv(x, w) (+ b[k] on every pixel when b). keep: where forward
     * may leave data for bwd_weight (node->aux of a recorded node whose
     * weight needs a gradient), NULL otherwise. */
    tg_status (*fwd)(tg_ctx *ctx, const tg__conv_desc *d, const void *x, const void *w,
                     const void *b, void *y, void **keep);
    /* dx (=, +=) full convolution of dy with the kernel rotated 180 degrees */
    tg_status (*bwd_data)(tg_ctx *ctx, const tg__conv_desc *d, const void *dy, const void *w,
                          void *dx, bool add);
    /* dw (=, +=) dy correlated with x; db (=, +=) dy summed over images and
     * pixels (db may be NULL). kept: what fwd left in keep, or NULL. */
    tg_status (*bwd_weight)(tg_ctx *ctx, const tg__conv_desc *d, const void *dy, const void *x,
                            void *dw, bool add_w, void *db, bool add_b, void *kept);
} tg__conv_impl;

extern const tg__conv_impl tg__conv_portable;
extern const tg__conv_impl tg__conv_direct; /* ops/conv_direct.c: C = 1, stride 1 */
/* Whether the direct kernels take d (one input channel, one group, stride
 * and dilation 1). */
bool tg__conv_direct_fits(const tg__conv_desc *d);
#ifdef TG_HAVE_DNNL
extern const tg__conv_impl tg__conv_dnnl;
#endif

/* The backend for d: forced by tg__conv_force or TAPEGRAD_CONV=portable|dnnl|
 * direct (read once; direct only where it fits), else the faster one for
 * the shape: direct where it fits with few taps (K R S <= 16), oneDNN for
 * other float32, portable for other float64. */
const tg__conv_impl *tg__conv_pick(const tg__conv_desc *d);
/* Forces a backend by name ("portable", "dnnl", "direct"), or lifts the force (NULL);
 * for tests. TG_ENOTFOUND when that backend is not built in. */
tg_status tg__conv_force(const char *name);

/* db (=, +=) dy summed per filter over images and pixels, in double. */
void tg__conv_bias_grad(const tg__conv_desc *d, const void *dy, void *db, bool add);

#endif
