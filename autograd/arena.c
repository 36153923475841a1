/*
 * arena.c: the step arena, a list of chunks filled front to back.
 *
 * A new chunk is at least as large as all the others together (unless the
 * context asked for fixed chunks), so a step that outgrows the arena takes
 * a few chunks, not one per large block with a tail left over in each.
 *
 * Invariants:
 *   - chunks before and including cur hold this step's data; the chunks
 *     after cur are free, and are reused in list order before any new
 *     chunk is allocated, so a step that repeats the previous one's
 *     allocations takes nothing from the allocator;
 *   - a rewind to a mark only moves cur, and so does a reset but for the
 *     merge below: O(1);
 *   - every block is TG__ALIGN-aligned.
 * Released gradient buffers go on a free list (kept inside the buffers)
 * and are handed out again by tg__grad_buffer; the list is emptied with
 * the step.
 *
 * A step that needed more than one chunk is followed by a merge: the reset
 * frees every chunk and the next step's first allocation takes one chunk
 * as large as the most the arena has handed out at once. Steps of a
 * repeating shape then run in a single chunk with no tail left unused
 * between blocks (large blocks and scratch given back by kernels would
 * otherwise scatter a step over many chunks, which the process touches),
 * and a smaller step (a short last batch, evaluation) fits in it too.
 *
 * In checked mode a reset moves every chunk to a quarantine that holds the
 * last TG_CHECKED_STEPS steps' chunks, so no address is handed out again
 * until they leave it; stale tensors keep their headers (and their step
 * number) meanwhile, and are reported. Outside checked mode, builds with
 * AddressSanitizer poison the whole arena at a reset and unpoison each
 * block as it is handed out, so a stale use is caught where it happens.
 */
#include "impl.h"

#if defined(__SANITIZE_ADDRESS__)
#define TG__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TG__ASAN 1
#endif
#endif
#ifdef TG__ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

static tg__chunk *chunk_new(tg_ctx *ctx, size_t need)
{
    /* at least as large as all the others together: a step that outgrows
     * the arena takes few chunks, so few tails are left unused */
    size_t cap = need > ctx->chunk_size ? need : ctx->chunk_size;
    if (cap < ctx->chunk_want)
        cap = ctx->chunk_want;
    ctx->chunk_want = 0;
    size_t total = 0;
    for (const tg__chunk *c = ctx->chunks; c && !ctx->arena_fixed; c = c->next)
        total += c->cap;
    if (cap < total)
        cap = total;
    size_t head = TG__ROUND_UP(sizeof(tg__chunk), TG__ALIGN);
    size_t block = head + cap + TG__ALIGN; /* slack to align the base */
    unsigned char *raw = tg__malloc(ctx, block);
    if (!raw)
        return NULL;
    tg__chunk *c = (tg__chunk *)raw;
    uintptr_t base = ((uintptr_t)(raw + head) + TG__ALIGN - 1) & ~(uintptr_t)(TG__ALIGN - 1);
    c->base = (unsigned char *)base;
    c->cap = cap;
    c->used = 0;
    c->block = block;
    c->next = NULL;
    return c;
}

/* Moves to a free chunk that can hold need bytes, or allocates one, and
 * links it right after cur so that the order of use stays the order of the list. */
static tg__chunk *next_chunk(tg_ctx *ctx, size_t need)
{
    tg__chunk **link = ctx->cur ? &ctx->cur->next : &ctx->chunks;
    tg__chunk *c = *link;
    tg__chunk **pick = link;
    while (c && c->cap < need) {
        pick = &c->next;
        c = c->next;
    }
    if (c) {
        *pick = c->next; /* unlink, then relink right after cur */
    } else if (!(c = chunk_new(ctx, need))) {
        return NULL;
    }
    c->next = *link;
    *link = c;
    c->used = 0;
    ctx->cur = c;
    return c;
}

void *tg__arena_alloc(tg_ctx *ctx, size_t bytes)
{
    size_t need = TG__ROUND_UP(bytes ? bytes : 1, TG__ALIGN);
    if (need < bytes) { /* the rounding overflowed */
        tg__oom(ctx, bytes);
        return NULL;
    }
    tg__chunk *c = ctx->cur;
    if (!c || c->cap - c->used < need) {
        c = next_chunk(ctx, need);
        if (!c)
            return NULL;
    }
    void *p = c->base + c->used;
    UNPOISON(p, need);
    c->used += need;
    ctx->arena_used += need;
    if (ctx->arena_used > ctx->arena_peak)
        ctx->arena_peak = ctx->arena_used;
    if (ctx->arena_used > ctx->arena_peak)
        ctx->arena_peak = ctx->arena_used;
    return p;
}

void *tg_scratch(tg_ctx *ctx, size_t bytes, bool zero)
{
    TG__GUARD(ctx, NULL);
    void *p = tg__arena_alloc(ctx, bytes);
    if (p && zero)
        memset(p, 0, bytes);
    return p;
}

static void free_chunks(tg_ctx *ctx, tg__chunk *c)
{
    while (c) {
        tg__chunk *next = c->next;
        UNPOISON(c->base, c->cap);
        tg__free(ctx, c, c->block);
        c = next;
    }
}

void tg__arena_reset(tg_ctx *ctx)
{
    if (ctx->checked) {
        /* the oldest quarantined step leaves; this one's chunks go in */
        free_chunks(ctx, ctx->quarantine[TG_CHECKED_STEPS - 1]);
        memmove(ctx->quarantine + 1, ctx->quarantine,
                (TG_CHECKED_STEPS - 1) * sizeof ctx->quarantine[0]);
        ctx->quarantine[0] = ctx->chunks;
        ctx->chunks = NULL;
    } else if (ctx->chunks && ctx->chunks->next && !ctx->arena_fixed) {
        free_chunks(ctx, ctx->chunks); /* merged: see the top of the file */
        ctx->chunks = NULL;
        ctx->chunk_want = ctx->arena_peak;
    } else {
        for (tg__chunk *c = ctx->chunks; c; c = c->next)
            POISON(c->base, c->cap);
    }
    ctx->cur = NULL;
    ctx->arena_used = 0;
    ctx->freebufs = NULL;
}

void tg__arena_free_all(tg_ctx *ctx)
{
    free_chunks(ctx, ctx->chunks);
    for (int i = 0; i < TG_CHECKED_STEPS; i++) {
        free_chunks(ctx, ctx->quarantine[i]);
        ctx->quarantine[i] = NULL;
    }
    ctx->chunks = ctx->cur = NULL;
    ctx->arena_used = 0;
    ctx->freebufs = NULL;
}

tg__mark tg__mark_get(const tg_ctx *ctx)
{
    tg__mark m;
    m.chunk = ctx->cur;
    m.chunk_used = ctx->cur ? ctx->cur->used : 0;
    m.arena_used = ctx->arena_used;
    m.tape_len = ctx->tape_len;
    return m;
}

/* The arena's fill back where m found it. */
static void rewind_fill(tg_ctx *ctx, tg__mark m)
{
    ctx->cur = m.chunk;
    if (m.chunk)
        m.chunk->used = m.chunk_used;
    ctx->arena_used = m.arena_used;
}

void tg__mark_rewind(tg_ctx *ctx, tg__mark m)
{
    rewind_fill(ctx, m);
    if (m.tape_len < ctx->tape_len)
        ctx->tape_len = m.tape_len;
    ctx->freebufs = NULL; /* some may lie past the mark */
}

void tg__scratch_release(tg_ctx *ctx, tg__mark m)
{
    if (ctx->arena_used < m.arena_used || (ctx->cur == NULL) != (m.chunk == NULL))
        return; /* reset since: nothing of the mark's is left to release */
    rewind_fill(ctx, m);
}

void *tg__grad_buffer(tg_ctx *ctx, size_t bytes)
{
    size_t need = TG__ROUND_UP(bytes ? bytes : 1, TG__ALIGN);
    for (tg__freebuf **link = &ctx->freebufs; *link; link = &(*link)->next) {
        tg__freebuf *f = *link;
        if (f->bytes >= need && f->bytes <= 2 * need) {
            *link = f->next;
            return f;
        }
    }
    return tg__arena_alloc(ctx, need);
}

void tg__grad_release(tg_ctx *ctx, void *buf, size_t bytes)
{
    size_t have = TG__ROUND_UP(bytes ? bytes : 1, TG__ALIGN);
    tg__freebuf *f = buf;
    f->bytes = have;
    f->next = ctx->freebufs;
    ctx->freebufs = f;
}
