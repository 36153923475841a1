/*
 * conv_bench.c: float32 conv2d training steps (forward, data gradient,
 * weight gradient, bias gradient) on the workloads' shapes; prints the
 * median step time and GFLOP/s (3 x 2 N K C R S OH OW per step).
 *
 *   conv_bench [threads [steps]]     (default 1 thread, 20 steps)
 *   TAPEGRAD_CONV=portable|dnnl conv_bench ...   to pick a backend
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tapegrad.h"

typedef struct shape {
    const char *name;
    int64_t n, c, h, w, k, r, s, pad;
} shape;

static const shape shapes[] = {
    {"B4 16x64x32x32 -> 64, 3x3 pad 1", 16, 64, 32, 32, 64, 3, 3, 1},
    {"B3 64x1x28x28 -> 6, 5x5 pad 2", 64, 1, 28, 28, 6, 5, 5, 2},
    {"B3 64x6x14x14 -> 16, 5x5", 64, 6, 14, 14, 16, 5, 5, 0},
    {"B5 64x1x28x28 -> 32, 3x3 pad 1", 64, 1, 28, 28, 32, 3, 3, 1},
    {"B5 64x32x14x14 -> 64, 3x3 pad 1", 64, 32, 14, 14, 64, 3, 3, 1},
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int bench(const shape *sh, int steps)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const int64_t oh = sh->h + 2 * sh->pad - sh->r + 1, ow = sh->w + 2 * sh->pad - sh->s + 1;
    tg_tensor *x = tg_param(ctx, TG_F32, TG_SHAPE(sh->n, sh->c, sh->h, sh->w), "x");
    tg_tensor *w = tg_param(ctx, TG_F32, TG_SHAPE(sh->k, sh->c, sh->r, sh->s), "w");
    tg_tensor *b = tg_param(ctx, TG_F32, TG_SHAPE(sh->k), "b");
    tg_tensor *dy = tg_buffer(ctx, TG_F32, TG_SHAPE(sh->n, sh->k, oh, ow), "dy");
    tg_fill(ctx, x, 0.5);
    tg_fill(ctx, w, 0.01);
    tg_fill(ctx, b, 0.1);
    tg_fill(ctx, dy, 1.0);
    double *t = calloc((size_t)steps, sizeof *t);
    for (int i = -3; i < steps && t; i++) { /* three warm-up steps */
        double t0 = now();
        tg_zero_grad_ex(ctx, TG_SET_TO_NONE);
        tg_tensor *y = tg_conv2d(ctx, x, w, b, 1, sh->pad, 1, 1);
        tg_backward_ex(ctx, y, dy, 0);
        tg_reset(ctx);
        if (i >= 0)
            t[i] = now() - t0;
    }
    int rc = tg_errcode(ctx) != TG_OK || !t;
    if (!rc) {
        qsort(t, (size_t)steps, sizeof *t, by_value);
        double med = t[steps / 2];
        double flop = 3.0 * 2 * (double)(sh->n * sh->k * sh->c * sh->r * sh->s * oh * ow);
        printf("%-36s %8.3f ms  %7.1f GFLOP/s\n", sh->name, 1e3 * med, flop / med * 1e-9);
    } else {
        fprintf(stderr, "conv_bench: %s\n", t ? tg_errmsg(ctx) : "out of memory");
    }
    free(t);
    tg_ctx_free(ctx);
    return rc;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 1, steps = argc > 2 ? atoi(argv[2]) : 20;
    if (threads < 1 || steps < 1) {
        fprintf(stderr, "usage: conv_bench [threads [steps]]\n");
        return 2;
    }
    tg_set_num_threads(threads);
    const char *be = getenv("TAPEGRAD_CONV");
    printf("conv_bench: %d thread(s), %d steps, median; TAPEGRAD_CONV=%s\n", threads, steps,
           be ? be : "(default)");
    int rc = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        rc |= bench(&shapes[i], steps);
    return rc;
}
