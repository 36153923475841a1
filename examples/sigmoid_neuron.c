/*
 * sigmoid_neuron.c: y = sigmoid(W x + b) for a batch of inputs, a squared
 * error, backward, a few SGD steps, and the graph rendered with Graphviz.
 *
 *   sigmoid_neuron [OUTDIR]     writes OUTDIR/neuron.dot and OUTDIR/neuron.svg
 */
#include <stdio.h>
#include <string.h>

#include "tapegrad.h"

/* sigmoid from the basic ops: (1 + exp(-z))^-1 */
static tg_tensor *sigmoid(tg_ctx *ctx, tg_tensor *z)
{
    return tg_pow(ctx, tg_add_scalar(ctx, tg_exp(ctx, tg_neg(ctx, z)), 1), -1);
}

/* One step: forward, loss = mean((y - t)^2), backward. Returns the loss. */
static tg_tensor *step(tg_ctx *ctx, tg_tensor *w, tg_tensor *b, tg_tensor *x, tg_tensor *t)
{
    tg_tensor *y = tg_set_name(ctx, sigmoid(ctx, tg_linear(ctx, x, w, b)), "y");
    tg_tensor *d = tg_sub(ctx, y, t);
    tg_tensor *loss = tg_mean(ctx, tg_mul(ctx, d, d));
    tg_backward(ctx, loss);
    return loss;
}

int main(int argc, char **argv)
{
    const char *outdir = argc > 1 ? argv[1] : ".";
    tg_ctx *ctx = tg_ctx_new(42);
    if (!ctx)
        return 1;
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2, 3), "W");
    tg_tensor *b = tg_param(ctx, TG_F64, TG_SHAPE(2), "b");
    tg_assign(ctx, w, tg_randn(ctx, TG_F64, TG_SHAPE(2, 3), 0, 0.5));

    tg_tensor *loss = NULL;
    for (int i = 0; i < 20; i++) {
        tg_reset(ctx); /* step tensors die here; the parameters live on */
        tg_seed(ctx, 7); /* the same batch every step */
        tg_tensor *x = tg_set_name(ctx, tg_randn(ctx, TG_F64, TG_SHAPE(8, 3), 0, 1), "x");
        tg_tensor *t = tg_set_name(ctx, tg_rand(ctx, TG_F64, TG_SHAPE(8, 2), 0, 1), "target");
        tg_zero_grad(ctx);
        loss = step(ctx, w, b, x, t);
        if (tg_errcode(ctx)) {
            fprintf(stderr, "error: %s\n", tg_errmsg(ctx));
            return 1;
        }
        if (i % 5 == 0 || i == 19)
            printf("step %2d  loss %.6f\n", i, tg_get(loss, 0));
        for (tg_tensor *p = tg_param_next(ctx, NULL); p; p = tg_param_next(ctx, p))
            for (int64_t k = 0; k < p->numel; k++)
                tg_set(p, k, tg_get(p, k) - 1.0 * tg_get(p->grad, k));
    }
    printf("dloss/dW of the last step:\n");
    tg_print(stdout, w->grad, 6);

    char dot_path[1024], svg_path[1024];
    snprintf(dot_path, sizeof dot_path, "%s/neuron.dot", outdir);
    snprintf(svg_path, sizeof svg_path, "%s/neuron.svg", outdir);
    tg_dot_opts o = {.title = "y = sigmoid(W x + b), loss = mean((y - t)^2)", .show_grad_norm = true};
    if (tg_dot_render(ctx, loss, dot_path, &o) != TG_OK ||
        tg_dot_render(ctx, loss, svg_path, &o) != TG_OK) {
        fprintf(stderr, "error: %s\n", tg_errmsg(ctx));
        return 1;
    }
    printf("wrote %s and %s\n", dot_path, svg_path);
    tg_ctx_free(ctx);
    return 0;
}
