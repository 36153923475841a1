/*
 * impl.h: the engine's private header (autograd/). Internal cross-file
 * helpers are named tg__*; everything else inside a .c file is static.
 * The engine knows nothing of the ops: ops/ops_impl.h builds on this
 * header, never the other way round.
 */
#ifndef TAPEGRAD_IMPL_H
#define TAPEGRAD_IMPL_H

#include "tapegrad.h"

#include <string.h>

/* Arena chunks hand out 64-byte aligned blocks. */
#define TG__ALIGN 64
#define TG__ROUND_UP(n, a) (((n) + (a) - 1) / (a) * (a))

typedef struct tg__chunk {
    struct tg__chunk *next;
    size_t cap;       /* usable bytes starting at base */
    size_t used;      /* meaningful only for chunks up to the arena's current one */
    size_t block;     /* bytes taken from the allocator */
    unsigned char *base;
} tg__chunk;

/* A released gradient buffer, kept inside the buffer itself for reuse. */
typedef struct tg__freebuf {
    struct tg__freebuf *next;
    size_t bytes;
} tg__freebuf;

/* A parameter, a buffer or a parameter's gradient: one allocator block.
 * Parameters and buffers are linked into the context's two lists, which
 * are the records that decide what is live. */
typedef struct tg__ptensor {
    tg_tensor t;
    struct tg__ptensor *prev, *next; /* the context's list of this kind */
    struct tg__ptensor *grad_block;  /* its gradient's block, if any */
    size_t block;                    /* bytes of this block */
    char *renamed;                   /* a name set after creation, in its own block */
    struct tg__ptensor *owner;       /* a member's parameter block (tg_param_block), or NULL */
    int64_t hook_at;                 /* backward: the tape index after which its gradient is done
                                        (a block: where it is read whole, or -1) */
    bool is_block;                   /* a parameter block (tg_param_block) */
} tg__ptensor;

/* One of the context's two lists of persistent tensors. */
typedef struct tg__plist {
    tg__ptensor *first, *last;
    size_t n;
} tg__plist;

/* Where the arena and tape stood, to come back to (gradcheck uses it). */
typedef struct tg__mark {
    tg__chunk *chunk;
    size_t chunk_used;
    size_t arena_used;
    size_t tape_len;
} tg__mark;

#define TG__SITES 64 /* call sites a nest of builder calls can hold */

/* The profile's totals for one op name (as called), or for one entry of
 * tg_profile_record (other: its name copied into label, its totals in
 * calls, fwd_ns and fwd_bytes). */
#define TG__PROF_LABEL 48
typedef struct tg__prof {
    const char *name;
    uint64_t calls, vjp_calls;
    uint64_t fwd_ns, vjp_ns;
    uint64_t fwd_bytes, vjp_bytes;
    bool other;
    char label[TG__PROF_LABEL];
} tg__prof;

struct tg_ctx {
    tg_alloc_fn alloc;
    void *alloc_ud;
    uint64_t alloc_calls;
    size_t bytes_live, bytes_peak;

    tg__chunk *chunks;     /* all chunks; those after cur are free */
    tg__chunk *cur;        /* the chunk being filled; NULL right after a reset */
    size_t chunk_size;
    bool arena_fixed;      /* tg_ctx_opts.arena_fixed: no growth, no merge */
    size_t chunk_want;     /* the next new chunk's least size (the arena's peak after a merge) */
    size_t arena_used;
    size_t arena_peak;     /* the most arena_used has been, over every step */
    tg__freebuf *freebufs; /* released gradient buffers of this step */
    uint64_t step;         /* bumped by every tg_reset; step tensors carry theirs */
    bool checked;          /* checked mode: chunks of ended steps are quarantined */
    tg__chunk *quarantine[TG_CHECKED_STEPS]; /* checked mode: the last steps' chunk lists */

    tg_node **tape;
    size_t tape_len, tape_cap;

    int errcode;
    int errline;
    const char *errfile;
    char errmsg[512];
    const char *cur_op;    /* the op whose forward or vjp is running, for messages */
    const char *cur_phase; /* "" in forward, "backward of " in a vjp */

    uint64_t rng[4];
    bool grad_enabled;
    bool training;
    bool anomaly;

    /* callers' positions from tg_at / tg_at_op, popped by each tg_apply */
    struct { const char *file, *name; int line; } sites[TG__SITES];
    int n_sites;

    tg_scope *scope;       /* the innermost open scope (step arena), or NULL */
    int scope_next;        /* the id the next scope gets */

    bool profile;          /* tg_set_profile */
    tg__prof *prof;        /* per-op totals, n_prof of them (allocator block of cap_prof) */
    size_t n_prof, cap_prof;

    tg__plist params, buffers;
    tg__plist blocks;      /* parameter blocks; their members are in params */

    int poison_grads;      /* > 0: fresh gradient buffers are NaN-filled (gradcheck) */
    tg_grad_hook grad_hook;
    void *grad_hook_ud;
};

/* Fails fast when the context is NULL or already holds an error. */
#define TG__GUARD(ctx, ret)                       \
    do {                                          \
        if (!(ctx) || (ctx)->errcode != TG_OK)    \
            return ret;                           \
    } while (0)

/* The library's kernels use the public dispatch (tapegrad/op.h). */
#define TG__DISPATCH TG_DISPATCH_FLOAT

/* ---- context.c: the allocator hook, with accounting and error reporting */
void *tg__malloc(tg_ctx *ctx, size_t bytes);
void *tg__realloc(tg_ctx *ctx, void *ptr, size_t old_size, size_t new_size);
void tg__free(tg_ctx *ctx, void *ptr, size_t size);
int tg__oom(tg_ctx *ctx, size_t bytes);

/* ---- arena.c */
void *tg__arena_alloc(tg_ctx *ctx, size_t bytes);
void tg__arena_reset(tg_ctx *ctx);
void tg__arena_free_all(tg_ctx *ctx);
tg__mark tg__mark_get(const tg_ctx *ctx);
void tg__mark_rewind(tg_ctx *ctx, tg__mark m);
/* Gives back the arena allocated since m, when all of it was a kernel's
 * scratch: unlike tg__mark_rewind it keeps the tape and the free gradient
 * buffers (a kernel adds to neither), so an op can release its temporaries
 * as soon as it returns instead of holding them until tg_reset. */
void tg__scratch_release(tg_ctx *ctx, tg__mark m);
/* A buffer for a gradient (values undefined), reusing released ones first. */
void *tg__grad_buffer(tg_ctx *ctx, size_t bytes);
void tg__grad_release(tg_ctx *ctx, void *buf, size_t bytes);

/* Counts a write to t (on its base too, when t is a view). */
static inline void tg__bump(tg_tensor *t)
{
    t->version++;
    if (t->base)
        t->base->version++;
}

/* ---- context.c */
/* A number for a message, so that different numbers look different: the
 * shortest text that reads back as the same double ("1.0000001", "0.1").
 * Rotates over eight thread-local buffers. */
const char *tg__num(double v);

/* ---- tensor.c */
/* Checks dtype, ndim and dims; names the caller `who` in the message. An
 * element count that overflows is TG_ESHAPE. */
tg_status tg__check_shape(tg_ctx *ctx, const char *who, tg_dtype dtype, int ndim,
                          const int64_t *shape, int64_t *numel);
/* A step tensor header; data is allocated when with_data is set. */
tg_tensor *tg__tensor_new(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                          bool with_data);
/* A zero-filled persistent tensor block of the given kind, not linked
 * anywhere; data points into the block, or is NULL when with_data is false
 * (a member of a parameter block, whose data the caller points). */
tg__ptensor *tg__ptensor_new(tg_ctx *ctx, const char *who, tg_kind kind, tg_dtype dtype,
                             int ndim, const int64_t *shape, const char *name, bool with_data);
/* The record of t when it is a live parameter (or buffer) of ctx, else NULL. */
tg__ptensor *tg__param_record(const tg_ctx *ctx, const tg_tensor *t);
/* Frees every parameter and buffer (tg_ctx_free). */
void tg__params_free_all(tg_ctx *ctx);
/* Formats a shape as "(2, 3)". */
int tg__shape_fmt(char *buf, size_t size, int ndim, const int64_t *shape);
/* A short-lived "(2, 3)" string for messages (rotates over four buffers). */
const char *tg__shape_s(const tg_tensor *t);
/* Validates a tensor argument: non-NULL, sane dtype, made by ctx, and alive
 * (persistent, or made in the current step). */
tg_status tg__check_tensor(tg_ctx *ctx, const char *who, const char *what, const tg_tensor *t);
/* Validates in[0..n-1] with tg__check_tensor, naming them "input i". */
tg_status tg__check_inputs(tg_ctx *ctx, const char *who, tg_tensor *const *in, int n);
/* "'name' (2, 3) float32" or "(2, 3) float32": how messages name a tensor.
 * Rotates over four thread-local buffers. */
const char *tg__tensor_s(const tg_tensor *t);
/* Both inputs share a dtype, or an error naming the op. */
tg_status tg__same_dtype(tg_ctx *ctx, const char *who, const tg_tensor *a, const tg_tensor *b);
/* Normalises a possibly negative axis; -1 and an error when out of range. */
int tg__axis(tg_ctx *ctx, const char *who, int axis, int ndim);
/* Element count of a shape, or -1 when the product overflows int64. */
int64_t tg__numel(int ndim, const int64_t *shape);

/* ---- context.c: the profile */
/* Monotonic wall time in nanoseconds. */
uint64_t tg__now_ns(void);
/* Adds one forward (vjp false) or vjp run of the op called name to the
 * totals; TG_ENOMEM when the table cannot grow. */
tg_status tg__profile_add(tg_ctx *ctx, const char *name, bool vjp, uint64_t ns, uint64_t bytes);
/* The name a node is drawn and profiled under: what the user called, else the op's. */
static inline const char *tg__node_name(const tg_node *node)
{
    return node->called ? node->called : node->op->name;
}

/* ---- tape.c */
/* Anomaly mode: TG_ENONFINITE naming the node when t holds a NaN or Inf;
 * input is -1 for the node's output, else the input whose gradient t is. */
tg_status tg__anomaly_check(tg_ctx *ctx, const tg_node *node, const tg_tensor *t, int input);

/* ---- registry.c */
/* Registers the ops of a table, skipping those already registered (the
 * built-ins are registered by ops/builtin.c through this, once). */
tg_status tg__register_all(tg_ctx *ctx, const tg_op *const *ops, size_t n);

/* ---- context.c: the context proper; tg_ctx_new_opts (ops/builtin.c) adds the built-in ops */
tg_ctx *tg__ctx_create(const tg_ctx_opts *opts);

#endif
