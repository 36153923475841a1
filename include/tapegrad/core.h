/*
 * tapegrad/core.h: the context, the allocator hook, errors and modes.
 *
 * A tg_ctx is one thread of work. It owns
 *   - the step arena: every tensor, tape node, saved value and
 *     intermediate gradient a step creates; tg_reset() rewinds it in O(1)
 *     and keeps its memory, so a steady training loop does not allocate;
 *   - the tape of recorded operations;
 *   - the first error (code + message), which is sticky;
 *   - a seeded random number generator;
 *   - the grad mode (record or not) and the training/eval mode;
 *   - the parameters (tensors that outlive tg_reset).
 * A context is not thread-safe; use one per thread.
 */
#ifndef TAPEGRAD_CORE_H
#define TAPEGRAD_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(_WIN32) && defined(TG_SHARED_BUILD)
#define TG_API __declspec(dllexport)
#elif defined(__GNUC__)
#define TG_API __attribute__((visibility("default")))
#else
#define TG_API
#endif

#if defined(__GNUC__)
#define TG_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TG_PRINTF(f, a)
#endif

#ifdef __cplusplus
#define TG_ALIGN16 alignas(16)
#else
#define TG_ALIGN16 _Alignas(16)
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define TG_VERSION_MAJOR 0
#define TG_VERSION_MINOR 1
#define TG_VERSION_PATCH 0
#define TG_VERSION_STRING "0.1.0"

/* The library's version string, e.g. "0.1.0". */
TG_API const char *tg_version(void);

/* Status codes. TG_OK is 0; every error is negative. */
typedef enum tg_status {
    TG_OK = 0,
    TG_EINVAL = -1,    /* bad argument: NULL, out of range, wrong kind */
    TG_ESHAPE = -2,    /* shapes that do not fit together */
    TG_EDTYPE = -3,    /* wrong or mixed element types */
    TG_ENOMEM = -4,    /* the allocator returned NULL */
    TG_ENOTFOUND = -5, /* no such op, name or file */
    TG_EEXIST = -6,    /* an op of that name is already registered */
    TG_ESTATE = -7,    /* call out of order (e.g. second backward) */
    TG_EIO = -8,       /* a read or write failed */
    TG_EFORMAT = -9,   /* a file's contents are malformed */
    TG_EINTERNAL = -10, /* a broken invariant inside the library (a bug) */
    TG_ENOTSUP = -11,  /* not supported: the derivative of an op that has no vjp */
    TG_ENONFINITE = -12 /* anomaly mode met a NaN or an Inf */
} tg_status;

/* A short constant description of a status code ("shape mismatch"). */
TG_API const char *tg_status_str(int status);

typedef struct tg_ctx tg_ctx;

/*
 * The allocator hook, in the style of Lua's lua_Alloc:
 *   new_size > 0, ptr == NULL: allocate new_size bytes;
 *   new_size > 0, ptr != NULL: resize a block of old_size bytes;
 *   new_size == 0: free ptr (a block of old_size bytes), return NULL.
 * Blocks must be aligned for any C type (as malloc's are). Returning NULL
 * for an allocation or resize is an out-of-memory error, which the library
 * reports as TG_ENOMEM without crashing.
 */
typedef void *(*tg_alloc_fn)(void *ud, void *ptr, size_t old_size, size_t new_size);

/* Options for tg_ctx_new_opts; zero-initialise and set what you need. */
typedef struct tg_ctx_opts {
    tg_alloc_fn alloc;   /* NULL: the C library's malloc/realloc/free */
    void *alloc_ud;      /* passed to alloc */
    uint64_t seed;       /* RNG seed (0 is a valid seed) */
    size_t arena_chunk;  /* bytes of the arena's first chunk; 0: 1 MiB */
    bool arena_fixed;    /* every chunk arena_chunk bytes (or one block's); see below */
    bool checked;        /* checked mode; see below */
} tg_ctx_opts;

/*
 * Creates a context. tg_ctx_new(seed) uses malloc and a 1 MiB arena chunk.
 * Returns NULL only when the context itself cannot be allocated (or the
 * built-in op registry cannot be set up); free with tg_ctx_free.
 *
 * The step arena grows by chunks, each new one at least as large as all
 * the others together. A tg_reset after a step that needed more than one
 * chunk gives them all back, and the next step takes a single chunk as
 * large as the most the arena ever held at once: from then on a training
 * loop runs in one block of memory, and a smaller step fits in it.
 * opts.arena_fixed keeps every chunk at arena_chunk bytes (a larger block
 * gets a chunk of its own size) and never merges them, so that with a tiny
 * arena_chunk every allocation reaches the hook: for testing how a program
 * copes with allocation failures.
 *
 * Checked mode (opts.checked, or the environment variable TAPEGRAD_CHECKED=1
 * for an existing program): the arena does not hand out the same addresses
 * again for TG_CHECKED_STEPS resets, so every use of a tensor from an ended
 * step is reported as an error naming it instead of reaching whatever tensor
 * now lives at that address. It costs memory, not time. In every mode a
 * tensor of another context is an error, and so is a step tensor whose step
 * has visibly ended; in AddressSanitizer builds the rewound arena is poisoned
 * (outside checked mode), so a stale use is reported where it happens.
 */
#define TG_CHECKED_STEPS 4
TG_API tg_ctx *tg_ctx_new(uint64_t seed);
TG_API tg_ctx *tg_ctx_new_opts(const tg_ctx_opts *opts);

/* Frees the context with everything it owns, parameters included. NULL is a no-op. */
TG_API void tg_ctx_free(tg_ctx *ctx);

/* True when ctx runs in checked mode. */
TG_API bool tg_checked(const tg_ctx *ctx);

/*
 * Ends a step: empties the tape and rewinds the step arena in O(1). Every
 * tensor created since the last reset, other than parameters and buffers,
 * dies here (so do intermediate gradients). Parameter values and gradients
 * and buffers survive.
 * The arena keeps its memory (merged into one chunk after a step that took
 * several; see tg_ctx_new_opts), so the steps of a training loop allocate
 * nothing after the first two. The error state is not cleared (see
 * tg_clear_error).
 */
TG_API void tg_reset(tg_ctx *ctx);

/* ---------------------------------------------------------------- errors */

/* The first error since the last tg_clear_error, or TG_OK. */
TG_API int tg_errcode(const tg_ctx *ctx);
/* Its message, naming the operation and values ("add: shapes (2, 3) and (4) ..."),
 * or "" when there is none. Owned by the context, valid until the next error or clear. */
TG_API const char *tg_errmsg(const tg_ctx *ctx);
/* Source file and line inside the library where the error was raised (for bug reports). */
TG_API const char *tg_errwhere(const tg_ctx *ctx, int *line);
/* Forgets the error, so the context can be used again. */
TG_API void tg_clear_error(tg_ctx *ctx);

/*
 * Raises an error in the context: sets code and printf-style message, unless
 * an error is already held (the first one sticks). Returns code, or
 * TG_EINTERNAL when code is not negative (an error must be an error). Ops
 * written by users call it through TG_ERROR so that the message carries
 * the place; TG_ERROR's value is computed in the caller, so static
 * analysers see that it is negative.
 */
TG_API int tg_error_at(tg_ctx *ctx, int code, const char *file, int line, const char *fmt, ...)
    TG_PRINTF(5, 6);
static inline int tg_error_code_(int code) { return code < 0 ? code : TG_EINTERNAL; }
#define TG_ERROR(ctx, code, ...)                                             \
    ((void)tg_error_at((ctx), (code), __FILE__, __LINE__, __VA_ARGS__),      \
     tg_error_code_(code))

/* ---------------------------------------------------------------- modes */

/* Grad mode: when off, ops run but record nothing. Returns the previous mode. */
TG_API bool tg_set_grad_enabled(tg_ctx *ctx, bool enabled);
TG_API bool tg_grad_enabled(const tg_ctx *ctx);

/*
 * Runs the statement or block that follows with grad mode off, then restores
 * the previous mode:   TG_NO_GRAD(ctx) { y = tg_mul(ctx, a, b); }
 * Leaving the block with break, return or goto skips the restore.
 */
#define TG_NO_GRAD(ctx)                                                              \
    for (int tg__ng_once = 1, tg__ng_prev = tg_set_grad_enabled((ctx), false);      \
         tg__ng_once; tg__ng_once = 0, tg_set_grad_enabled((ctx), tg__ng_prev))

/* Training mode (dropout active, batch norm on batch statistics) or eval mode. */
TG_API bool tg_set_training(tg_ctx *ctx, bool training);
TG_API bool tg_training(const tg_ctx *ctx);

/*
 * Anomaly mode (PyTorch's detect_anomaly): every forward output and every
 * gradient a vjp produces is scanned, and the first NaN or Inf fails with
 * TG_ENONFINITE and a message naming the op, its tape index, its input
 * shapes and the file and line of the caller's code that recorded it.
 * Costs one pass over each tensor. Returns the previous setting.
 */
TG_API bool tg_set_detect_anomaly(tg_ctx *ctx, bool enabled);
TG_API bool tg_detect_anomaly(const tg_ctx *ctx);

/*
 * Notes the caller's source position for the next recorded op and returns
 * ctx. The op builders in tapegrad/ops.h are wrapped in macros that call
 * it, so every node knows the line of user code that made it (for anomaly
 * messages and graph tooltips). Define TG_NO_CALLSITE before including
 * tapegrad.h to get the plain functions.
 */
TG_API tg_ctx *tg_at(tg_ctx *ctx, const char *file, int line);

/*
 * tg_at for a named builder: the macros in tapegrad/ops.h call it with the
 * name the user called ("sub_scalar", "flatten", "transpose"), which the
 * node keeps beside the op it records ("add_scalar", "reshape", "permute"),
 * so graphs label ops as the user wrote them. The positions are kept on a
 * small stack that each recorded op pops, so nested calls
 * (tg_relu(ctx, tg_linear(ctx, ...))) pair up whatever order the compiler
 * evaluates arguments in. A builder called without its macro
 * ((tg_relu)(ctx, x)) inside a macro'd call may take its caller's entry.
 * name may be NULL (the op's own name). The stack is emptied by tg_reset
 * and tg_clear_error; nothing is pushed while an error is held.
 */
TG_API tg_ctx *tg_at_op(tg_ctx *ctx, const char *file, int line, const char *name);

/* ---------------------------------------------------------------- scopes */

/*
 * Names a region of the graph: every op recorded between
 * tg_scope_push(ctx, "conv1") and the matching tg_scope_pop(ctx) remembers
 * the scope (node->scope), and graphs draw each scope as a cluster, or as
 * a single box in the collapsed view. Scopes nest ("block1" > "conv1").
 * The name is copied into the step arena; tg_reset closes every scope.
 * Errors: TG_EINVAL (NULL or empty name), TG_ENOMEM; popping with no scope
 * open is TG_ESTATE. tg_scope_pop works even with an error held, so code
 * that pushes a scope can always close it.
 */
TG_API tg_status tg_scope_push(tg_ctx *ctx, const char *name);
TG_API tg_status tg_scope_pop(tg_ctx *ctx);
/* How many scopes are open (0 for none or a NULL ctx). */
TG_API int tg_scope_depth(const tg_ctx *ctx);

/* ---------------------------------------------------------------- profile */

/*
 * Profiling (off by default): every op run and every vjp records its wall
 * time and the step-arena bytes handed out while it ran, on its node
 * (node->fwd_ns, fwd_bytes, vjp_ns, vjp_bytes, drawn by tg_dot_write) and
 * in per-op totals kept by the context since the last tg_profile_reset
 * (every op run counts, recorded or not). Off, it costs one branch per op
 * and per vjp. Gradient buffers reused from the step's free list are not
 * counted as bytes. Returns the previous setting.
 */
TG_API bool tg_set_profile(tg_ctx *ctx, bool enabled);
TG_API bool tg_profiling(const tg_ctx *ctx);
/* Forgets the per-op totals (the nodes keep theirs until tg_reset). */
TG_API void tg_profile_reset(tg_ctx *ctx);
/*
 * Prints the per-op totals as a table sorted by total time, like PyTorch's
 * profiler's key_averages().table(): op (as called), calls, forward and vjp
 * time, their share, bytes; a total line closes it. Errors: TG_EINVAL
 * (NULL f), TG_EIO (a write failed).
 */
TG_API tg_status tg_profile_print(tg_ctx *ctx, FILE *f);
/*
 * Adds one call of ns nanoseconds and bytes bytes to the totals of name,
 * for work that is not an op (communication, data loading): such entries
 * are printed by tg_profile_print in a table of their own after the ops'
 * (calls, total time, bytes) and count in none of the ops' totals.
 * tg_dist records its allreduce there. name is copied. Nothing is recorded
 * when profiling is off. Errors: TG_EINVAL (name NULL, empty or longer
 * than 47 bytes), TG_ENOMEM.
 */
TG_API tg_status tg_profile_record(tg_ctx *ctx, const char *name, uint64_t ns, uint64_t bytes);

/* ---------------------------------------------------------------- RNG */

/* Reseeds the context RNG (xoshiro256** seeded by splitmix64). The same
 * seed and the same calls give bit-identical results on every platform. */
TG_API void tg_seed(tg_ctx *ctx, uint64_t seed);
/* A uniform draw in [0, 1) with 53 random bits. */
TG_API double tg_rand_uniform(tg_ctx *ctx);
/* A standard normal draw. */
TG_API double tg_rand_normal(tg_ctx *ctx);

/* The whole RNG state, to save and restore a stream (gradcheck uses it so
 * that dropout draws the same mask on every evaluation). */
typedef struct tg_rng_state { uint64_t s[4]; } tg_rng_state;
TG_API tg_rng_state tg_rng_get(const tg_ctx *ctx);
TG_API void tg_rng_set(tg_ctx *ctx, tg_rng_state state);

/* ---------------------------------------------------------------- memory */

/* What the context holds and has asked of its allocator. */
typedef struct tg_stats {
    uint64_t alloc_calls;  /* allocations and resizes the hook has served, ever */
    size_t bytes_live;     /* bytes currently held from the hook */
    size_t bytes_peak;     /* the most ever held at once */
    size_t arena_used;     /* bytes handed out by the arena since the last reset */
    size_t arena_peak;     /* the most the arena has handed out at once, in any step */
    size_t arena_capacity; /* bytes of all arena chunks */
    size_t arena_chunks;
    size_t tape_len;       /* nodes on the tape */
    size_t params;         /* live parameters */
    size_t buffers;        /* live buffers */
} tg_stats;

TG_API void tg_ctx_stats(const tg_ctx *ctx, tg_stats *out);

/*
 * Memory from the context's allocator hook, counted in tg_ctx_stats, for
 * code built on tapegrad that must hold memory across steps (nn/, a user's
 * layer). NULL with TG_ENOMEM in the context when the hook refuses (an
 * error already held does not stop these calls). tg_free takes the size
 * that was asked for; NULL is a no-op. tg_realloc keeps p on failure.
 */
TG_API void *tg_malloc(tg_ctx *ctx, size_t bytes);
TG_API void *tg_realloc(tg_ctx *ctx, void *p, size_t old_size, size_t new_size);
TG_API void tg_free(tg_ctx *ctx, void *p, size_t size);

/*
 * Scratch memory from the step arena, aligned to 64 bytes, zero-filled when
 * zero is true; it dies at the next tg_reset. For ops that need buffers
 * (their own kernels, index arrays they save for the vjp). NULL and an error
 * on out-of-memory.
 */
TG_API void *tg_scratch(tg_ctx *ctx, size_t bytes, bool zero);

#ifdef __cplusplus
}
#endif
#endif
