/*
 * seed1d_net.h: the 1-D network of the course notes, as a user would write
 * it with tapegrad:
 *
 *   x (N, 1, 785) -> zero-pad 1 -> conv1d(1 -> 1, kernel 2) -> relu
 *     -> avg_pool1d(2) -> flatten (N, 393) -> linear(393 -> 32) -> relu
 *     -> linear(32 -> 1) -> sigmoid -> probability (N, 1)
 *
 * Weights start as PyTorch's layers do: uniform in +-1/sqrt(fan_in).
 */
#ifndef SEED1D_NET_H
#define SEED1D_NET_H

#include <math.h>

#include "tapegrad.h"

typedef struct seed1d {
    tg_tensor *conv_w, *conv_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} seed1d;

/* A parameter of the given shape, uniform in +-1/sqrt(fan_in). The random
 * values pass through a step tensor, which dies at the caller's next reset. */
static inline tg_tensor *seed1d_param(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape,
                                      const char *name, double fan_in)
{
    tg_tensor *p = tg_param(ctx, dt, ndim, shape, name);
    double bound = 1 / sqrt(fan_in);
    if (p)
        tg_assign(ctx, p, tg_rand(ctx, dt, ndim, shape, -bound, bound));
    return p;
}

/* Creates the six parameters; TG_OK or the context's error. */
static inline tg_status seed1d_init(tg_ctx *ctx, seed1d *m, tg_dtype dt)
{
    m->conv_w = seed1d_param(ctx, dt, TG_SHAPE(1, 1, 2), "conv.weight", 2);
    m->conv_b = seed1d_param(ctx, dt, TG_SHAPE(1), "conv.bias", 2);
    m->fc1_w = seed1d_param(ctx, dt, TG_SHAPE(32, 393), "fc1.weight", 393);
    m->fc1_b = seed1d_param(ctx, dt, TG_SHAPE(32), "fc1.bias", 393);
    m->fc2_w = seed1d_param(ctx, dt, TG_SHAPE(1, 32), "fc2.weight", 32);
    m->fc2_b = seed1d_param(ctx, dt, TG_SHAPE(1), "fc2.bias", 32);
    return (tg_status)tg_errcode(ctx);
}

/* x (N, 1, 785) -> probabilities (N, 1). */
static inline tg_tensor *seed1d_forward(tg_ctx *ctx, const seed1d *m, tg_tensor *x)
{
    tg_tensor *h = tg_pad1d(ctx, x, 1, 1);                               /* (N, 1, 787) */
    h = tg_relu(ctx, tg_conv1d(ctx, h, m->conv_w, m->conv_b, 1, 0, 1, 1)); /* (N, 1, 786) */
    h = tg_flatten(ctx, tg_avg_pool1d(ctx, h, 2), 1, -1);                 /* (N, 393) */
    h = tg_relu(ctx, tg_linear(ctx, h, m->fc1_w, m->fc1_b));              /* (N, 32) */
    return tg_sigmoid(ctx, tg_linear(ctx, h, m->fc2_w, m->fc2_b));        /* (N, 1) */
}

#endif
