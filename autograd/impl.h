/*
 * impl.h: the one private header. Internal cross-file helpers are named
 * tg__*; everything else inside a .c file is static.
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

/* A parameter (or a parameter's gradient): one allocator block. */
typedef struct tg__ptensor {
    tg_tensor t;
    struct tg__ptensor *prev, *next; /* the context's parameter list */
    struct tg__ptensor *grad_block;  /* its gradient's block, if any */
    size_t block;                    /* bytes of this block */
} tg__ptensor;

/* Where the arena and tape stood, to come back to (gradcheck uses it). */
typedef struct tg__mark {
    tg__chunk *chunk;
    size_t chunk_used;
    size_t arena_used;
    size_t tape_len;
} tg__mark;

struct tg_ctx {
    tg_alloc_fn alloc;
    void *alloc_ud;
    uint64_t alloc_calls;
    size_t bytes_live, bytes_peak;

    tg__chunk *chunks;     /* all chunks; those after cur are free */
    tg__chunk *cur;        /* the chunk being filled; NULL right after a reset */
    size_t chunk_size;
    size_t arena_used;
    tg__freebuf *freebufs; /* released gradient buffers of this step */

    tg_node **tape;
    size_t tape_len, tape_cap;

    int errcode;
    int errline;
    const char *errfile;
    char errmsg[512];
    const char *cur_op;    /* the op whose forward is running, for OOM messages */

    uint64_t rng[4];
    bool grad_enabled;
    bool training;

    tg__ptensor *params, *params_last;
    size_t n_params;
};

/* Fails fast when the context is NULL or already holds an error. */
#define TG__GUARD(ctx, ret)                       \
    do {                                          \
        if (!(ctx) || (ctx)->errcode != TG_OK)    \
            return ret;                           \
    } while (0)

/* Runs the statement list once with T = float and once with T = double,
 * picking by dtype at run time: the one source of every typed kernel. */
#define TG__DISPATCH(dtype, T, ...)             \
    do {                                        \
        if ((dtype) == TG_F32) {                \
            typedef float T;                    \
            __VA_ARGS__                         \
        } else {                                \
            typedef double T;                   \
            __VA_ARGS__                         \
        }                                       \
    } while (0)

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
/* A zero-filled buffer for a gradient, reusing released ones first. */
void *tg__grad_buffer(tg_ctx *ctx, size_t bytes);
void tg__grad_release(tg_ctx *ctx, void *buf, size_t bytes);

/* ---- tensor.c */
/* Checks dtype, ndim and dims; names the caller `who` in the message. */
tg_status tg__check_shape(tg_ctx *ctx, const char *who, tg_dtype dtype, int ndim,
                          const int64_t *shape, int64_t *numel);
/* A step tensor header; data is allocated when with_data is set. */
tg_tensor *tg__tensor_new(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                          bool with_data);
/* A zero-filled persistent tensor block (a parameter or a parameter's gradient). */
tg__ptensor *tg__ptensor_new(tg_ctx *ctx, const char *who, tg_dtype dtype, int ndim,
                             const int64_t *shape, const char *name);
/* Formats a shape as "(2, 3)". */
int tg__shape_fmt(char *buf, size_t size, int ndim, const int64_t *shape);
/* A short-lived "(2, 3)" string for messages (rotates over four buffers). */
const char *tg__shape_s(const tg_tensor *t);
/* Validates a tensor argument: non-NULL, sane dtype. */
tg_status tg__check_tensor(tg_ctx *ctx, const char *who, const char *what, const tg_tensor *t);
/* Validates in[0..n-1] with tg__check_tensor, naming them "input i". */
tg_status tg__check_inputs(tg_ctx *ctx, const char *who, tg_tensor *const *in, int n);
/* Both inputs share a dtype, or an error naming the op. */
tg_status tg__same_dtype(tg_ctx *ctx, const char *who, const tg_tensor *a, const tg_tensor *b);
/* Normalises a possibly negative axis; -1 and an error when out of range. */
int tg__axis(tg_ctx *ctx, const char *who, int axis, int ndim);

/* ---- registry.c */
tg_status tg__register_builtins(tg_ctx *ctx);

/* ---- the built-in ops, one line each in ops/builtin.def */
#define TG__BUILTIN(name) extern const tg_op tg__op_##name;
#include "../ops/builtin.def"
#undef TG__BUILTIN

/* ---- ops/broadcast.c: NumPy broadcasting of up to three operands */
typedef struct tg__bcast {
    int ndim;                           /* of the output */
    int64_t shape[TG_MAX_DIMS];         /* the output shape */
    int64_t stride[3][TG_MAX_DIMS];     /* element strides; 0 on broadcast dims */
    int64_t numel;
} tg__bcast;

/* The broadcast shape of a and b, or an error naming the op. */
tg_status tg__bcast_shape(tg_ctx *ctx, const char *who, const tg_tensor *a, const tg_tensor *b,
                          int *ndim, int64_t *shape);
/* Strides of operands out (0), a (1), b (2) over out's shape. b may be NULL. */
void tg__bcast_init(tg__bcast *it, const tg_tensor *out, const tg_tensor *a, const tg_tensor *b);
/* Calls row() for each innermost row: n elements, each operand's offset of
 * the row's first element, and its stride along the row. */
typedef void (*tg__row_fn)(void *ud, int64_t n, const int64_t off[3], const int64_t inc[3]);
void tg__bcast_rows(const tg__bcast *it, tg__row_fn row, void *ud);

/* ---- ops/matmul.c: C (m x n) = op(A) op(B) (+ C when accumulate), row-major, through CBLAS */
void tg__gemm(tg_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
              int64_t lda, const void *b, int64_t ldb, bool accumulate, void *c, int64_t ldc);

/* ---- ops/softmax.c: (log-)softmax of outer x inner lines of n values, stride inner */
void tg__softmax_lines(tg_dtype dt, const void *x, void *y, int64_t outer, int64_t n,
                       int64_t inner, bool logp);

/* ---- ops/broadcast.c: helpers for sample generators */
/* A float64 step tensor of uniform values in [lo, hi), requires_grad as given. */
tg_tensor *tg__sample_rand(tg_ctx *ctx, int ndim, const int64_t *shape, double lo, double hi,
                           bool requires_grad);

#endif
