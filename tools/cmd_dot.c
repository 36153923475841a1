/*
 * cmd_dot.c: `tapegrad dot`: builds a model file's network, runs one
 * forward and backward pass on random input (and random targets for its
 * loss), and draws the graph through the library's renderer (libgvc).
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char dot_usage[] =
    "usage: tapegrad dot MODEL [options]\n"
    "\n"
    "Runs one forward and backward pass of the model file's network on random\n"
    "input and draws its graph, one cluster per layer.\n"
    "\n"
    "  -o FILE, --output FILE  .svg, .png, .pdf or .dot (default graph.svg)\n"
    "  --view VIEW             forward (default), backward, both or collapsed\n"
    "  --collapse              draw each layer as one box (--view collapsed)\n"
    "  --stats                 tensor statistics (min, max, mean, L2, NaN/Inf,\n"
    "                          first values) in the tooltips\n"
    "  --profile               time and bytes of every op's forward and vjp, as\n"
    "                          labels and colours, and a table on stdout\n"
    "  --batch N               batch size of the random input (default 4)\n"
    "  --train                 run in training mode (dropout, batch statistics)\n";

static bool parse_view(const char *s, tg_dot_view *v)
{
    static const char *const names[] = {"forward", "backward", "both", "collapsed"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *v = (tg_dot_view)i;
            return true;
        }
    fprintf(stderr, "tapegrad dot: --view '%s' is not forward, backward, both or collapsed\n", s);
    return false;
}

/* Random targets that fit the model's loss and output. */
static tg_tensor *random_target(tg_ctx *ctx, const tg_model *m, const tg_tensor *out)
{
    tg_loss_kind k = tg_model_loss_spec(m)->kind;
    if (k != TG_LOSS_CROSS_ENTROPY && k != TG_LOSS_NLL)
        return tg_rand(ctx, out->dtype, out->ndim, out->shape, 0, 1);
    int64_t shape[TG_MAX_DIMS], classes = out->shape[1];
    int nd = 0;
    for (int d = 0; d < out->ndim; d++)
        if (d != 1)
            shape[nd++] = out->shape[d];
    tg_tensor *y = tg_zeros(ctx, TG_I64, nd, shape);
    for (int64_t i = 0; y && i < y->numel; i++)
        ((int64_t *)y->data)[i] = (int64_t)(tg_rand_uniform(ctx) * (double)classes);
    return y;
}

/* One pass; returns what to draw from (the loss, or the output). */
static tg_tensor *one_pass(tg_ctx *ctx, tg_model *m, long long batch)
{
    int64_t one[TG_MAX_DIMS], shape[TG_MAX_DIMS + 1] = {batch};
    int nd = tg_model_shape(m, -1, one);
    memcpy(shape + 1, one, (size_t)nd * sizeof *one);
    nd++;
    tg_tensor *x = tg_set_name(ctx, tg_randn(ctx, tg_model_dtype(m), nd, shape, 0, 1), "input");
    tg_set_requires_grad(ctx, x, true);
    tg_tensor *out = tg_model_forward(ctx, m, x);
    if (!out)
        return NULL;
    tg_tensor *top = out;
    if (tg_model_loss_spec(m)->kind != TG_LOSS_NONE) {
        tg_scope_push(ctx, "loss");
        top = tg_model_loss(ctx, m, out, random_target(ctx, m, out));
        if (top && top->numel != 1)
            top = tg_sum(ctx, top);
        tg_scope_pop(ctx);
    } else {
        top = tg_sum(ctx, out);
    }
    return top && tg_backward(ctx, top) == TG_OK ? top : NULL;
}

int cmd_dot(int argc, char **argv)
{
    const char *out = "graph.svg", *view = "forward", *batch_s = "4", *pos[1];
    bool collapse = false, stats = false, profile = false, train = false;
    cli_opt opts[] = {{"output", &out, NULL, 'o'}, {"view", &view, NULL, 0},
                      {"collapse", NULL, &collapse, 0}, {"stats", NULL, &stats, 0},
                      {"profile", NULL, &profile, 0},   {"batch", &batch_s, NULL, 0},
                      {"train", NULL, &train, 0},       {NULL, NULL, NULL, 0}};
    int n, rc = cli_parse("dot", dot_usage, argc, argv, opts, pos, 1, 1, &n);
    if (rc != CLI_OK)
        return rc == CLI_HELP ? CLI_OK : rc;
    long long batch;
    tg_dot_opts o = {.show_grad_norm = true, .stats = stats};
    if (!cli_int("dot", "batch", batch_s, 1, 1 << 16, &batch) || !parse_view(view, &o.view))
        return CLI_USAGE;
    if (collapse)
        o.view = TG_VIEW_COLLAPSED;
    tg_ctx *ctx = tg_ctx_new(1);
    tg_model *m = ctx ? tg_model_load(ctx, pos[0], TG_F32) : NULL;
    tg_set_profile(ctx, profile);
    tg_set_training(ctx, train);
    tg_tensor *top = m ? one_pass(ctx, m, batch) : NULL;
    if (top && tg_dot_render(ctx, top, out, &o) == TG_OK) {
        printf("wrote %s\n", out);
        if (profile)
            tg_profile_print(ctx, stdout);
        rc = CLI_OK;
    } else {
        rc = cli_fail("dot", ctx);
    }
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
    return rc;
}
