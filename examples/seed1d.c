/*
 * seed1d.c: the course notes' 1-D network, trained for a few steps on
 * synthetic data: a sequence is labelled 1 when its first half has the
 * larger sum. Prints the loss as it falls and writes the graph.
 *
 *   seed1d [OUTDIR]     writes OUTDIR/seed1d.dot and, rendered by the library,
 *                       OUTDIR/seed1d.svg (forward), seed1d_backward.svg and
 *                       seed1d_collapsed.svg
 */
#include <stdio.h>

#include "seed1d_net.h"

/* A batch of n sequences and their labels, from the context RNG. */
static void make_batch(tg_ctx *ctx, int64_t n, tg_tensor **x, tg_tensor **y)
{
    *x = tg_set_name(ctx, tg_randn(ctx, TG_F32, TG_SHAPE(n, 1, 785), 0, 1), "x");
    *y = tg_set_name(ctx, tg_zeros(ctx, TG_F32, TG_SHAPE(n, 1)), "label");
    for (int64_t i = 0; *x && *y && i < n; i++) {
        double first = 0, second = 0;
        for (int64_t k = 0; k < 785; k++)
            *(k < 392 ? &first : &second) += tg_get(*x, i * 785 + k);
        tg_set(*y, i, first > second ? 1 : 0);
    }
}

int main(int argc, char **argv)
{
    const char *outdir = argc > 1 ? argv[1] : ".";
    tg_ctx *ctx = tg_ctx_new(1);
    seed1d m;
    if (!ctx || seed1d_init(ctx, &m, TG_F32) != TG_OK) {
        fprintf(stderr, "seed1d: %s\n", ctx ? tg_errmsg(ctx) : "out of memory");
        return 1;
    }
    tg_tensor *loss = NULL;
    for (int step = 0; step < 300; step++) {
        tg_reset(ctx);
        tg_tensor *x, *y;
        make_batch(ctx, 64, &x, &y);
        loss = tg_bce(ctx, seed1d_forward(ctx, &m, x), y, TG_MEAN);
        tg_zero_grad(ctx);
        if (tg_backward(ctx, loss) != TG_OK) {
            fprintf(stderr, "seed1d: %s\n", tg_errmsg(ctx));
            return 1;
        }
        for (tg_tensor *p = tg_param_next(ctx, NULL); p; p = tg_param_next(ctx, p))
            for (int64_t i = 0; i < p->numel; i++) /* SGD, lr 0.1 */
                tg_set(p, i, tg_get(p, i) - 0.1 * tg_get(p->grad, i));
        if (step % 50 == 0 || step == 299)
            printf("step %2d  BCE %.4f\n", step, tg_get(loss, 0));
    }
    /* accuracy on a fresh batch, in eval mode and without recording */
    tg_reset(ctx);
    tg_set_training(ctx, false);
    int correct = 0;
    TG_NO_GRAD(ctx) {
        tg_tensor *x, *y;
        make_batch(ctx, 1000, &x, &y);
        tg_tensor *p = seed1d_forward(ctx, &m, x);
        for (int64_t i = 0; p && i < 1000; i++)
            correct += (tg_get(p, i) > 0.5) == (tg_get(y, i) > 0.5);
    }
    printf("accuracy on 1000 new sequences: %.1f%%\n", correct / 10.0);

    /* the graph of one training step */
    tg_reset(ctx);
    tg_set_training(ctx, true);
    tg_tensor *x, *y;
    make_batch(ctx, 4, &x, &y);
    tg_scope_push(ctx, "model");
    tg_tensor *prob = seed1d_forward(ctx, &m, x);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "loss");
    loss = tg_bce(ctx, prob, y, TG_MEAN);
    tg_scope_pop(ctx);
    tg_backward(ctx, loss);
    static const char *const files[] = {"seed1d.dot", "seed1d.svg", "seed1d_backward.svg",
                                        "seed1d_collapsed.svg"};
    static const tg_dot_view views[] = {TG_VIEW_FORWARD, TG_VIEW_FORWARD, TG_VIEW_BACKWARD,
                                        TG_VIEW_COLLAPSED};
    for (int i = 0; i < 4; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", outdir, files[i]);
        tg_dot_opts o = {.title = "the notes' 1-D network (batch of 4)", .show_grad_norm = true,
                         .view = views[i], .stats = true};
        if (tg_dot_render(ctx, loss, path, &o) != TG_OK) {
            fprintf(stderr, "seed1d: cannot write the graph: %s\n", tg_errmsg(ctx));
            return 1;
        }
        printf("wrote %s\n", path);
    }
    tg_ctx_free(ctx);
    return 0;
}
