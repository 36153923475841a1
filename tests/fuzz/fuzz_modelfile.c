/*
 * fuzz_modelfile.c: libFuzzer harness for the model file reader
 * (nn/modelfile.c) and the models it builds (nn/model.c).
 *
 * Each input is the text of a model file, parsed in float32. A parse must
 * either fail with TG_EFORMAT or TG_ENOMEM and a message, or give a built
 * model whose parameter block holds all its parameters. A small model
 * (its work estimated below) then runs one forward, loss and backward on a
 * batch of 2 random examples with valid targets (a loss with reduction
 * none is summed first), in training mode when the
 * input's size is odd; any error there must be a proper one. The context's
 * allocator refuses blocks above 64 MiB, so a file describing a huge model
 * ends in TG_ENOMEM instead of exhausting the fuzzer's memory. Nothing is
 * kept between inputs.
 */
#include <stdlib.h>

#include "tapegrad.h"

#define MAX_BLOCK (64u << 20)
#define MAX_WORK 4e6 /* output elements times (parameters + 1), summed over the layers */

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

static void *capped_alloc(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    (void)ud;
    (void)old_size;
    if (new_size == 0) {
        free(ptr);
        return NULL;
    }
    return new_size > MAX_BLOCK ? NULL : realloc(ptr, new_size);
}

static void check_model(const tg_model *m)
{
    int64_t params = tg_model_param_count(m, -1);
    const tg_tensor *block = tg_model_params(m);
    require(params == (block ? block->numel : 0));
    int64_t sum = 0, shape[TG_MAX_DIMS];
    for (int i = 0; i < tg_model_state_count(m); i++) {
        const tg_tensor *t = tg_model_state(m, i);
        require(t != NULL && t->name != NULL);
        if (tg_model_state_is_param(m, i)) {
            require((const char *)t->data ==
                    (const char *)block->data + sum * (int64_t)tg_dtype_size(t->dtype));
            sum += t->numel;
        }
    }
    require(sum == params);
    for (int i = -1; i < tg_model_layer_count(m); i++) {
        int nd = tg_model_shape(m, i, shape);
        require(nd >= 1 && nd < TG_MAX_DIMS);
        for (int d = 0; d < nd; d++)
            require(shape[d] >= 1);
    }
}

/* Whether one forward and backward of 2 examples is cheap enough to run. */
static int small(const tg_model *m)
{
    int64_t shape[TG_MAX_DIMS];
    int nd = tg_model_shape(m, -1, shape);
    double work = 1;
    for (int d = 0; d < nd; d++)
        work *= (double)shape[d];
    for (int i = 0; i < tg_model_layer_count(m); i++)
        work += (double)tg_model_activation_bytes(m, i) / 4 *
                ((double)tg_model_param_count(m, i) + 1);
    return work <= MAX_WORK;
}

/* Targets for out: class indices i % C for cross_entropy and nll, values in [0, 1) otherwise. */
static tg_tensor *targets(tg_ctx *ctx, const tg_model *m, const tg_tensor *out)
{
    tg_loss_kind k = tg_model_loss_spec(m)->kind;
    if (k != TG_LOSS_CROSS_ENTROPY && k != TG_LOSS_NLL)
        return tg_rand(ctx, TG_F32, out->ndim, out->shape, 0, 1);
    int64_t shape[TG_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < out->ndim; d++)
        if (d != 1)
            shape[nd++] = out->shape[d];
    tg_tensor *t = tg_zeros(ctx, TG_I64, nd, shape);
    for (int64_t i = 0; t && i < t->numel; i++)
        tg_set(t, i, (double)(i % out->shape[1]));
    return t;
}

static void run(tg_ctx *ctx, tg_model *m, int training)
{
    int64_t shape[TG_MAX_DIMS + 1];
    shape[0] = 2;
    int nd = tg_model_shape(m, -1, shape + 1);
    tg_set_training(ctx, training);
    tg_tensor *x = tg_randn(ctx, TG_F32, nd + 1, shape, 0, 1);
    tg_tensor *out = tg_model_forward(ctx, m, x);
    if (out && out->ndim >= 2 && tg_model_loss_spec(m)->kind != TG_LOSS_NONE) {
        tg_tensor *loss = tg_model_loss(ctx, m, out, targets(ctx, m, out));
        if (loss && loss->ndim > 0) /* reduction=none: one loss per sample or element */
            loss = tg_sum(ctx, loss);
        if (loss)
            tg_backward(ctx, loss);
    } else if (out) {
        tg_backward(ctx, tg_sum(ctx, out));
    }
    int code = tg_errcode(ctx);
    require(code != TG_EINTERNAL && (code == TG_OK || tg_errmsg(ctx)[0] != '\0'));
    tg_clear_error(ctx);
    tg_reset(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tg_ctx_opts o = {0};
    o.alloc = capped_alloc;
    o.seed = 1;
    tg_ctx *ctx = tg_ctx_new_opts(&o);
    if (!ctx)
        return 0;
    tg_model *m = tg_model_parse(ctx, (const char *)data, size, "fuzz.tgm", TG_F32);
    if (m) {
        require(tg_errcode(ctx) == TG_OK);
        check_model(m);
        if (small(m))
            run(ctx, m, (int)(size & 1));
        tg_model_free(ctx, m);
    } else {
        int code = tg_errcode(ctx);
        require((code == TG_EFORMAT || code == TG_ENOMEM) && tg_errmsg(ctx)[0] != '\0');
    }
    tg_ctx_free(ctx);
    return 0;
}
