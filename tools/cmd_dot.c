/*
 * cmd_dot.c: `tapegrad dot`: builds a model, runs one forward and backward
 * pass on random input and draws it (tg_dot_render). Self-contained on the
 * public API; the lead wires cmd_dot into the program's command table.
 *
 * Until tg_model_load (tapegrad/nn.h) is implemented, MODEL names a
 * built-in example: "seed1d", the course notes' 1-D network
 * (examples/seed1d_net.h), one scope per layer. With the model-file API,
 * build_model below becomes tg_model_load(ctx, MODEL) and a forward through
 * the model, whose layers push their scopes ("0.conv1d", "1.relu", ...).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad.h"
#include "../examples/seed1d_net.h"

int cmd_dot(int argc, char **argv);

static void dot_usage(FILE *f)
{
    fprintf(f,
            "usage: tapegrad dot MODEL [options]\n"
            "Runs one forward and backward pass of MODEL on random input and draws its graph.\n"
            "MODEL: a built-in example (seed1d) until model files are supported.\n"
            "  -o, --output FILE   where to write: .svg, .png, .pdf or .dot (default graph.svg)\n"
            "  --view VIEW         forward (default), backward, both or collapsed\n"
            "  --collapse          draw each top-level scope (layer) as one box\n"
            "  --stats             tensor statistics (min, max, mean, L2, NaN/Inf, values) in tooltips\n"
            "  --profile           time and bytes of every op's forward and vjp, as labels and\n"
            "                      colours, and a table on stdout\n"
            "  --batch N           batch size of the random input (default 4)\n"
            "  -h, --help          this text\n");
}

/* The notes' 1-D network with one scope per layer; returns the loss. */
static tg_tensor *build_seed1d(tg_ctx *ctx, int64_t n)
{
    seed1d m;
    if (seed1d_init(ctx, &m, TG_F32) != TG_OK)
        return NULL;
    tg_tensor *x = tg_set_name(ctx, tg_randn(ctx, TG_F32, TG_SHAPE(n, 1, 785), 0, 1), "x");
    tg_tensor *y = tg_set_name(ctx, tg_rand(ctx, TG_F32, TG_SHAPE(n, 1), 0, 1), "label");
    tg_scope_push(ctx, "0.pad");
    tg_tensor *h = tg_pad1d(ctx, x, 1, 1);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "1.conv1d");
    h = tg_conv1d(ctx, h, m.conv_w, m.conv_b, 1, 0, 1, 1);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "2.relu");
    h = tg_relu(ctx, h);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "3.avg_pool1d");
    h = tg_avg_pool1d(ctx, h, 2);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "4.flatten");
    h = tg_flatten(ctx, h, 1, -1);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "5.linear");
    h = tg_linear(ctx, h, m.fc1_w, m.fc1_b);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "6.relu");
    h = tg_relu(ctx, h);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "7.linear");
    h = tg_linear(ctx, h, m.fc2_w, m.fc2_b);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "8.sigmoid");
    h = tg_sigmoid(ctx, h);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "loss");
    tg_tensor *loss = tg_bce(ctx, h, y, TG_MEAN);
    tg_scope_pop(ctx);
    return loss;
}

/* Where tg_model_load will plug in: MODEL a file -> load it and run it. */
static tg_tensor *build_model(tg_ctx *ctx, const char *model, int64_t batch)
{
    if (strcmp(model, "seed1d") == 0)
        return build_seed1d(ctx, batch);
    fprintf(stderr, "tapegrad dot: unknown model '%s' (built-in: seed1d)\n", model);
    return NULL;
}

static int parse_view(const char *s, tg_dot_view *v)
{
    static const char *const names[] = {"forward", "backward", "both", "collapsed"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *v = (tg_dot_view)i;
            return 0;
        }
    return -1;
}

int cmd_dot(int argc, char **argv)
{
    const char *model = NULL, *out = "graph.svg";
    tg_dot_opts o = {.show_grad_norm = true};
    bool profile = false;
    long batch = 4;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            dot_usage(stdout);
            return 0;
        } else if ((strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) && more) {
            out = argv[++i];
        } else if (strcmp(a, "--view") == 0 && more) {
            if (parse_view(argv[++i], &o.view)) {
                fprintf(stderr, "tapegrad dot: --view '%s': use forward, backward, both or collapsed\n",
                        argv[i]);
                return 2;
            }
        } else if (strcmp(a, "--collapse") == 0) {
            o.view = TG_VIEW_COLLAPSED;
        } else if (strcmp(a, "--stats") == 0) {
            o.stats = true;
        } else if (strcmp(a, "--profile") == 0) {
            profile = true;
        } else if (strcmp(a, "--batch") == 0 && more) {
            char *end;
            batch = strtol(argv[++i], &end, 10);
            if (*end || batch < 1 || batch > 1 << 20) {
                fprintf(stderr, "tapegrad dot: --batch '%s': a whole number from 1\n", argv[i]);
                return 2;
            }
        } else if (a[0] == '-' || model) {
            fprintf(stderr, "tapegrad dot: unexpected argument '%s' (see tapegrad dot --help)\n", a);
            return 2;
        } else {
            model = a;
        }
    }
    if (!model) {
        dot_usage(stderr);
        return 2;
    }
    tg_ctx *ctx = tg_ctx_new(1);
    if (!ctx) {
        fprintf(stderr, "tapegrad dot: out of memory\n");
        return 1;
    }
    tg_set_profile(ctx, profile);
    tg_tensor *loss = build_model(ctx, model, batch);
    if (!loss && !tg_errcode(ctx)) {
        tg_ctx_free(ctx);
        return 2;
    }
    int rc = 0;
    if (!loss || tg_backward(ctx, loss) != TG_OK || tg_dot_render(ctx, loss, out, &o) != TG_OK) {
        fprintf(stderr, "tapegrad dot: %s\n", tg_errmsg(ctx));
        rc = 1;
    } else {
        printf("wrote %s\n", out);
        if (profile)
            tg_profile_print(ctx, stdout);
    }
    tg_ctx_free(ctx);
    return rc;
}
