/*
 * cmd_model.c: the commands that look at one model without training it:
 * summary (its layers and sizes) and grad (one forward and backward pass
 * from safetensors files to a safetensors file, so anyone can check a
 * model against PyTorch from outside).
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char summary_usage[] =
    "usage: tapegrad summary MODEL [--dtype f32|f64]\n"
    "\n"
    "Prints, for each layer of the model file, its output shape for one example,\n"
    "its parameter count and its activation memory per example, then the totals.\n";

int cmd_summary(int argc, char **argv)
{
    const char *dtype_s = "f32", *pos[1];
    cli_opt opts[] = {{"dtype", &dtype_s, NULL, 0}, {NULL, NULL, NULL, 0}};
    int n, rc = cli_parse("summary", summary_usage, argc, argv, opts, pos, 1, 1, &n);
    if (rc != CLI_OK)
        return rc == CLI_HELP ? CLI_OK : rc;
    tg_dtype dtype;
    if (!cli_dtype("summary", dtype_s, &dtype))
        return CLI_USAGE;
    tg_ctx *ctx = tg_ctx_new(0);
    tg_model *m = ctx ? tg_model_load(ctx, pos[0], dtype) : NULL;
    rc = m && tg_model_summary(ctx, m, stdout) == TG_OK ? CLI_OK : cli_fail("summary", ctx);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
    return rc;
}

static const char grad_usage[] =
    "usage: tapegrad grad MODEL --params P.safetensors --input X.safetensors\n"
    "                     [--target Y.safetensors] --out G.safetensors [--dtype f32|f64] [--train]\n"
    "\n"
    "One forward and backward pass of the model file's network (eval mode unless\n"
    "--train), with its parameters and buffers loaded from P by their state_dict keys\n"
    "(every one must be there; other keys, such as an optimiser's, are ignored).\n"
    "X holds one tensor named 'input' (batch included); Y one named 'target' (int64\n"
    "class indices for cross_entropy and nll, else floats). G receives 'loss' (with a\n"
    "target), 'output', 'input.grad' and '<param>.grad' for every parameter. Without a\n"
    "target the backward pass starts from sum(output).\n";

/* The tensor `name` of the file at path, converted to dtype unless int64. */
static tg_tensor *read_one(tg_ctx *ctx, const char *path, const char *name, tg_dtype dtype)
{
    tg_st *f = tg_st_open(ctx, path);
    tg_tensor *t = f ? tg_st_read(ctx, f, name) : NULL;
    tg_st_close(ctx, f);
    if (t && t->dtype != TG_I64 && t->dtype != dtype)
        t = tg_to_dtype(ctx, t, dtype);
    return t;
}

/* Writes loss, output, input.grad and every parameter's grad to path. */
static tg_status write_grads(tg_ctx *ctx, const tg_model *m, const char *path, tg_tensor *loss,
                             tg_tensor *out, tg_tensor *x)
{
    int n = tg_model_state_count(m);
    tg_st_item *items = tg_malloc(ctx, (size_t)(n + 3) * sizeof *items);
    char *names = tg_malloc(ctx, (size_t)(n + 3) * 128);
    size_t k = 0;
    if (items && names) {
        if (loss)
            items[k++] = (tg_st_item){"loss", loss};
        items[k++] = (tg_st_item){"output", out};
        items[k++] = (tg_st_item){"input.grad", x->grad};
        for (int i = 0; i < n; i++) {
            tg_tensor *p = tg_model_state(m, i);
            if (!tg_model_state_is_param(m, i) || !p->grad)
                continue;
            char *nm = names + 128 * k;
            snprintf(nm, 128, "%s.grad", p->name);
            items[k++] = (tg_st_item){nm, p->grad};
        }
        tg_st_save(ctx, path, items, k, NULL, 0);
    }
    tg_free(ctx, names, (size_t)(n + 3) * 128);
    tg_free(ctx, items, (size_t)(n + 3) * sizeof *items);
    return tg_errcode(ctx);
}

int cmd_grad(int argc, char **argv)
{
    const char *params = NULL, *input = NULL, *target = NULL, *out_path = NULL, *dtype_s = "f32";
    bool train = false;
    const char *pos[1];
    cli_opt opts[] = {{"params", &params, NULL, 0}, {"input", &input, NULL, 0},
                      {"target", &target, NULL, 0}, {"out", &out_path, NULL, 0},
                      {"dtype", &dtype_s, NULL, 0}, {"train", NULL, &train, 0},
                      {NULL, NULL, NULL, 0}};
    int n, rc = cli_parse("grad", grad_usage, argc, argv, opts, pos, 1, 1, &n);
    if (rc != CLI_OK)
        return rc == CLI_HELP ? CLI_OK : rc;
    tg_dtype dtype;
    if (!cli_dtype("grad", dtype_s, &dtype))
        return CLI_USAGE;
    if (!params || !input || !out_path) {
        fprintf(stderr, "tapegrad grad: --params, --input and --out are required\n%s", grad_usage);
        return CLI_USAGE;
    }
    tg_ctx *ctx = tg_ctx_new(0);
    tg_model *m = ctx ? tg_model_load(ctx, pos[0], dtype) : NULL;
    if (m)
        tg_model_load_state(ctx, m, params, false);
    tg_set_training(ctx, train);
    tg_tensor *x = read_one(ctx, input, "input", dtype);
    tg_tensor *y = target ? read_one(ctx, target, "target", dtype) : NULL;
    tg_set_requires_grad(ctx, x, true);
    tg_tensor *out = tg_model_forward(ctx, m, x);
    tg_tensor *loss = y ? tg_model_loss(ctx, m, out, y) : NULL;
    tg_backward(ctx, loss ? loss : tg_sum(ctx, out));
    bool ok = tg_errcode(ctx) == TG_OK && x && out;
    rc = ok && write_grads(ctx, m, out_path, loss, out, x) == TG_OK
             ? CLI_OK
             : cli_fail("grad", ctx);
    if (rc == CLI_OK && loss)
        printf("loss %.17g\n", tg_get(loss, 0));
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
    return rc;
}
