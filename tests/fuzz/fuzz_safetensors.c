/*
 * fuzz_safetensors.c: libFuzzer harness for the safetensors reader.
 * Opens the input with tg_st_open_buffer, reads every entry into a step
 * tensor, then loads the whole file as a strict state dict into buffers of
 * the listed shapes and dtypes (this exercises validation, lookups,
 * staging and copying). A fresh context per input, freed at the end; the
 * counting hook checks that every byte taken was given back.
 */
#include <stdlib.h>

#include "tapegrad.h"

typedef struct { size_t live; } fuzz_alloc;

static void *fuzz_alloc_fn(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    fuzz_alloc *a = ud;
    if (new_size == 0) {
        free(ptr);
        a->live -= old_size;
        return NULL;
    }
    void *p = realloc(ptr, new_size);
    if (p)
        a->live += new_size - old_size;
    return p;
}

/* Loads every entry of f into a new buffer of its shape, strictly. */
static void load_all(tg_ctx *ctx, tg_st *f)
{
    size_t n = tg_st_count(f);
    tg_st_item *items = tg_malloc(ctx, (n ? n : 1) * sizeof *items);
    if (!items)
        return;
    for (size_t i = 0; i < n; i++) {
        const tg_st_entry *e = tg_st_entry_at(f, i);
        items[i].name = e->name;
        items[i].tensor = tg_empty(ctx, e->dtype, e->ndim, e->shape);
        if (!items[i].tensor)
            break;
    }
    tg_st_load(ctx, f, items, n, true);
    tg_free(ctx, items, (n ? n : 1) * sizeof *items);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_alloc a = {0};
    tg_ctx_opts o = {0};
    o.alloc = fuzz_alloc_fn;
    o.alloc_ud = &a;
    tg_ctx *ctx = tg_ctx_new_opts(&o);
    if (!ctx)
        return 0;
    tg_st *f = tg_st_open_buffer(ctx, data, size);
    for (size_t i = 0; f && i < tg_st_count(f) && tg_errcode(ctx) == TG_OK; i++) {
        const tg_st_entry *e = tg_st_entry_at(f, i);
        tg_tensor *t = tg_st_read(ctx, f, e->name);
        if (t && (t->numel != e->numel || t->dtype != e->dtype || tg_st_find(f, e->name) != e))
            abort();
    }
    for (size_t i = 0; f && i < tg_st_metadata_count(f); i++)
        if (tg_st_metadata(f, tg_st_metadata_at(f, i)->key) == NULL)
            abort();
    if (f && tg_errcode(ctx) == TG_OK) {
        tg_reset(ctx);
        load_all(ctx, f);
    }
    tg_st_close(ctx, f);
    tg_ctx_free(ctx);
    if (a.live != 0)
        abort();
    return 0;
}
