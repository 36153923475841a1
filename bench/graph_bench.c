/*
 * graph_bench.c: what the graph features cost.
 *   1. libgvc laying out (and rendering to SVG) the collapsed 10,000-op graph;
 *   2. LeNet-5's step (batch 32) with the profile on: the per-node forward
 *      and vjp times against the step's wall time;
 *   3. the step with profiling compiled in but off against on.
 * Not a test: it prints figures. graph_bench [OUTDIR]
 */
#define _POSIX_C_SOURCE 200809L
#include <graphviz/gvc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tapegrad.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static tg_tensor *param(tg_ctx *ctx, int ndim, const int64_t *shape, const char *name, double fan_in)
{
    tg_tensor *p = tg_param(ctx, TG_F32, ndim, shape, name);
    double b = 1 / sqrt(fan_in);
    tg_assign(ctx, p, tg_rand(ctx, TG_F32, ndim, shape, -b, b));
    return p;
}

static tg_tensor *lenet_step(tg_ctx *ctx, tg_tensor **p, int64_t n)
{
    tg_tensor *x = tg_randn(ctx, TG_F32, TG_SHAPE(n, 1, 28, 28), 0, 1);
    tg_tensor *t = tg_zeros(ctx, TG_I64, TG_SHAPE(n));
    tg_tensor *h = tg_max_pool2d(ctx, tg_relu(ctx, tg_conv2d(ctx, x, p[0], p[1], 1, 2, 1, 1)), 2);
    h = tg_max_pool2d(ctx, tg_relu(ctx, tg_conv2d(ctx, h, p[2], p[3], 1, 0, 1, 1)), 2);
    h = tg_flatten(ctx, h, 1, -1);
    h = tg_relu(ctx, tg_linear(ctx, h, p[4], p[5]));
    h = tg_relu(ctx, tg_linear(ctx, h, p[6], p[7]));
    h = tg_linear(ctx, h, p[8], p[9]);
    tg_tensor *loss = tg_cross_entropy(ctx, h, t, TG_MEAN);
    tg_backward(ctx, loss);
    return loss;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median step time over reps steps. */
static double median_step(tg_ctx *ctx, tg_tensor **p, int reps)
{
    double *t = malloc((size_t)reps * sizeof *t);
    for (int i = 0; i < reps; i++) {
        tg_reset(ctx);
        double t0 = now();
        lenet_step(ctx, p, 32);
        t[i] = now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp);
    double m = t[reps / 2];
    free(t);
    return m;
}

int main(int argc, char **argv)
{
    const char *outdir = argc > 1 ? argv[1] : ".";
    tg_ctx *ctx = tg_ctx_new(1);
    /* 1. the collapsed 10,000-op chain */
    tg_tensor *y = tg_param(ctx, TG_F32, TG_SHAPE(4), "w");
    for (int i = 0; i < 10000; i++) {
        if (i % 100 == 0) {
            char name[32];
            snprintf(name, sizeof name, "block%d", i / 100);
            tg_scope_push(ctx, name);
        }
        y = i % 2 ? tg_mul_scalar(ctx, y, 1.0) : tg_add_scalar(ctx, y, 0.0);
        if (i % 100 == 99)
            tg_scope_pop(ctx);
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/chain10k.svg", outdir);
    double t0 = now();
    if (tg_dot_render(ctx, y, path, NULL) != TG_OK) {
        fprintf(stderr, "graph_bench: %s\n", tg_errmsg(ctx));
        return 1;
    }
    double render = now() - t0;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    t0 = now();
    tg_dot_write(ctx, y, f, NULL);
    fclose(f);
    double write = now() - t0;
    GVC_t *gvc = gvContext();
    Agraph_t *g = agmemread(text);
    t0 = now();
    gvLayout(gvc, g, "dot");
    double layout = now() - t0;
    printf("collapsed 10,000-op chain: %d nodes; dot text %.1f ms, libgvc layout %.1f ms, "
           "tg_dot_render to SVG %.1f ms\n", agnnodes(g), write * 1e3, layout * 1e3, render * 1e3);
    gvFreeLayout(gvc, g);
    agclose(g);
    gvFreeContext(gvc);
    free(text);
    tg_reset(ctx);

    /* 2. LeNet-5: per-node times against the step's wall time */
    tg_tensor *p[10] = {
        param(ctx, TG_SHAPE(6, 1, 5, 5), "conv1.weight", 25), param(ctx, TG_SHAPE(6), "conv1.bias", 25),
        param(ctx, TG_SHAPE(16, 6, 5, 5), "conv2.weight", 150), param(ctx, TG_SHAPE(16), "conv2.bias", 150),
        param(ctx, TG_SHAPE(120, 400), "fc1.weight", 400), param(ctx, TG_SHAPE(120), "fc1.bias", 400),
        param(ctx, TG_SHAPE(84, 120), "fc2.weight", 120), param(ctx, TG_SHAPE(84), "fc2.bias", 120),
        param(ctx, TG_SHAPE(10, 84), "fc3.weight", 84), param(ctx, TG_SHAPE(10), "fc3.bias", 84)};
    median_step(ctx, p, 5); /* warm up */
    tg_set_profile(ctx, true);
    double walls = 0, nodes_sum = 0;
    int reps = 50;
    for (int r = 0; r < reps; r++) {
        tg_reset(ctx);
        double ts = now();
        tg_tensor *loss = lenet_step(ctx, p, 32);
        walls += now() - ts;
        tg_node *todo[64], *seen[64];
        int n_todo = 0, n_seen = 0;
        todo[n_todo++] = loss->node;
        while (n_todo) {
            tg_node *n = todo[--n_todo];
            bool dup = false;
            for (int i2 = 0; i2 < n_seen; i2++)
                dup |= seen[i2] == n;
            if (dup)
                continue;
            seen[n_seen++] = n;
            nodes_sum += (double)(n->fwd_ns + n->vjp_ns) * 1e-9;
            for (int k = 0; k < n->n_in; k++)
                if (n->in[k]->node)
                    todo[n_todo++] = n->in[k]->node;
        }
    }
    printf("LeNet-5 step (batch 32, profile on): wall %.3f ms, per-node forward + vjp %.3f ms "
           "(%.1f%% of the wall time)\n", walls / reps * 1e3, nodes_sum / reps * 1e3,
           100 * nodes_sum / walls);
    printf("profile table of the last %d steps:\n", reps);
    tg_reset(ctx);
    tg_profile_reset(ctx);
    lenet_step(ctx, p, 32);
    tg_profile_print(ctx, stdout);

    /* 3. profiling compiled in: off against on, alternating blocks */
    double off = 0, on = 0;
    for (int b = 0; b < 10; b++) {
        tg_set_profile(ctx, false);
        off += median_step(ctx, p, 21);
        tg_set_profile(ctx, true);
        on += median_step(ctx, p, 21);
    }
    printf("LeNet-5 step, median of 21 x 10 blocks: profile off %.3f ms, on %.3f ms (%+.2f%%)\n",
           off / 10 * 1e3, on / 10 * 1e3, 100 * (on - off) / off);
    tg_ctx_free(ctx);
    return 0;
}
