/*
 * fuzz_idx.c: libFuzzer harness for the IDX reader (nn/idx.c).
 *
 * Each input is one IDX file, plain or gzip, read from memory. A read must
 * either fail with an error in the context or give a consistent tg_idx
 * whose every byte can be touched. An input that reads as ubyte images
 * (N, H, W) also becomes a data set (with labels i % 10 made here), is
 * shuffled and walked in batches of 7. Nothing is kept between inputs.
 */
#include <stdlib.h>
#include <string.h>

#include "tapegrad.h"

/* Traps on a broken promise of the reader (libFuzzer reports the crash). */
static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

static void check_idx(const tg_idx *x)
{
    int64_t count = 1;
    require(x->ndim >= 1 && x->ndim <= TG_IDX_MAX_DIMS && x->data != NULL);
    for (int i = 0; i < x->ndim; i++) {
        require(x->dims[i] >= 1);
        count *= x->dims[i];
    }
    require(count == x->count && (size_t)count * x->elem_size == x->bytes);
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < x->bytes; i++)
        sink ^= ((const uint8_t *)x->data)[i];
    (void)sink;
}

/* Labels i % 10 for n examples, as an IDX buffer the caller frees. */
static uint8_t *make_labels(int64_t n, size_t *size)
{
    *size = 8 + (size_t)n;
    uint8_t *b = malloc(*size);
    require(b != NULL);
    const uint8_t head[8] = {0, 0, 0x08, 1, (uint8_t)(n >> 24), (uint8_t)(n >> 16),
                             (uint8_t)(n >> 8), (uint8_t)n};
    memcpy(b, head, 8);
    for (int64_t i = 0; i < n; i++)
        b[8 + i] = (uint8_t)(i % 10);
    return b;
}

static void walk_dataset(tg_ctx *ctx, const uint8_t *data, size_t size, int64_t n)
{
    size_t lsize;
    uint8_t *labels = make_labels(n, &lsize);
    tg_dataset *ds = tg_dataset_from_mem(ctx, data, size, labels, lsize, 10);
    free(labels);
    require(ds != NULL && ds->n == n);
    require(tg_dataset_shuffle(ctx, ds) == TG_OK);
    for (int64_t i = 0; i < ds->n; i += 7) {
        tg_tensor *x, *y;
        require(tg_dataset_batch(ctx, ds, i, 7, TG_F32, TG_LAYOUT_FLAT, &x, &y) == TG_OK);
        require(x->shape[0] == y->shape[0] && x->shape[1] == ds->height * ds->width);
        tg_reset(ctx);
    }
    tg_dataset_free(ctx, ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tg_ctx *ctx = tg_ctx_new(1);
    if (!ctx)
        return 0;
    tg_idx x;
    if (tg_idx_read_mem(ctx, data, size, "fuzz", &x) == TG_OK) {
        check_idx(&x);
        int images = x.type == TG_IDX_U8 && x.ndim == 3;
        int64_t n = x.dims[0];
        tg_idx_free(ctx, &x);
        if (images)
            walk_dataset(ctx, data, size, n);
    } else {
        require(tg_errcode(ctx) != TG_OK && x.data == NULL && tg_errmsg(ctx)[0] != '\0');
    }
    tg_ctx_free(ctx);
    return 0;
}
