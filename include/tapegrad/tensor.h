/*
 * tapegrad/tensor.h: tensors, parameters and buffers.
 *
 * A tensor is a contiguous row-major array of float32, float64 or int64
 * with up to TG_MAX_DIMS dimensions. int64 tensors hold class indices and
 * counters: they are never differentiated, and an op that does not take
 * integers says so. Three lifetimes exist:
 *   - step tensors (everything made by tg_zeros, tg_from_data, ... and every
 *     op output) live in the context's step arena and die at tg_reset;
 *   - parameters (tg_param) persist until tg_param_free or tg_ctx_free, and
 *     so do their gradients;
 *   - buffers (tg_buffer: batch norm's running statistics, counters)
 *     persist like parameters but never have a gradient.
 * Users never free a step tensor. The struct is public so that kernels can
 * read data and shape directly; change fields only through the API.
 *
 * Every write through the API (tg_fill, tg_assign, tg_set, an optimiser
 * step, an op updating a buffer in place) bumps the tensor's version. A
 * recorded op remembers the versions of the values its vjp reads, and
 * backward refuses to use values written since (TG_ESTATE), so a gradient
 * is never computed from numbers other than the ones forward saw. Code that
 * writes t->data directly calls tg_mark_dirty(t) afterwards. A view (the
 * output of tg_reshape, which shares its input's data) counts its writes on
 * its base as well, and the checks read the base's counter, so writing
 * either one is seen through the other (tg_tensor_version).
 */
#ifndef TAPEGRAD_TENSOR_H
#define TAPEGRAD_TENSOR_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TG_MAX_DIMS 6

typedef enum tg_dtype { TG_F32 = 0, TG_F64 = 1, TG_I64 = 2 } tg_dtype;

/* "float32" / "float64" / "int64"; "?" for anything else. */
TG_API const char *tg_dtype_name(tg_dtype dtype);
/* Bytes per element (4 or 8), 0 for an invalid dtype. */
TG_API size_t tg_dtype_size(tg_dtype dtype);
/* True for TG_F32 and TG_F64, the dtypes gradients flow through. */
TG_API bool tg_dtype_is_float(tg_dtype dtype);

/* What a tensor is, and so how long it lives. */
typedef enum tg_kind {
    TG_KIND_STEP = 0,   /* dies at tg_reset */
    TG_KIND_PARAM = 1,  /* tg_param: persistent, requires grad */
    TG_KIND_BUFFER = 2, /* tg_buffer: persistent, no gradient */
    TG_KIND_GRAD = 3    /* a parameter's gradient: lives as long as its parameter */
} tg_kind;

typedef struct tg_node tg_node;
typedef struct tg_tensor tg_tensor;

struct tg_tensor {
    void *data;                    /* numel elements of dtype, row-major */
    int64_t shape[TG_MAX_DIMS];    /* shape[0..ndim-1]; the rest are 1 */
    int64_t numel;                 /* product of the shape (1 for ndim 0) */
    int ndim;                      /* 0 (a scalar) .. TG_MAX_DIMS */
    tg_dtype dtype;
    bool requires_grad;            /* gradients flow to this tensor */
    bool persistent;               /* a parameter, buffer or parameter gradient: survives tg_reset */
    tg_kind kind;
    tg_tensor *grad;               /* same shape and dtype, or NULL */
    tg_node *node;                 /* the recorded op that made it; NULL for a leaf */
    const char *name;              /* optional; dot labels and checkpoint keys */
    uint64_t version;              /* bumped by every write through the API */
    tg_tensor *base;               /* a view's tensor whose data it shares, or NULL */
    /* The library's bookkeeping, read-only. What the library frees is decided
     * by the context's own records, never by these fields. */
    tg_ctx *ctx;                   /* the context that made it */
    uint64_t step;                 /* the step it was made in (see tg_reset) */
};

/*
 * TG_SHAPE(2, 3) expands to the two arguments "ndim, dims" that every
 * creation function takes:  tg_zeros(ctx, TG_F64, TG_SHAPE(2, 3)).
 */
#define TG_SHAPE(...)                                                        \
    (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),        \
        (const int64_t[]) { __VA_ARGS__ }

/*
 * Step tensors. Each returns a new tensor in the step arena, or NULL with an
 * error in the context (bad dtype, ndim outside 0..6, a negative dimension,
 * a shape whose size overflows (TG_ESHAPE), NULL data, out of memory, or an
 * error already held). tg_empty leaves the data uninitialised. Every dtype
 * is accepted; values given as double are converted (truncated toward zero
 * for int64).
 */
TG_API tg_tensor *tg_empty(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape);
TG_API tg_tensor *tg_zeros(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape);
TG_API tg_tensor *tg_ones(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape);
TG_API tg_tensor *tg_full(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape, double value);
/* Copies numel elements of `dtype` from data. */
TG_API tg_tensor *tg_from_data(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                               const void *data);
/* Copies numel doubles, converting to dtype (handy for literals in either dtype). */
TG_API tg_tensor *tg_from_f64(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                              const double *values);
/* Uniform in [lo, hi) and normal(mean, std), drawn from the context RNG in
 * row-major order (so a seed fixes them, whatever the dtype). Float dtypes
 * only; lo <= hi and std >= 0, both finite, or TG_EINVAL. */
TG_API tg_tensor *tg_rand(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                          double lo, double hi);
TG_API tg_tensor *tg_randn(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                           double mean, double std);
/* A new step tensor with src's values converted to dtype; not recorded
 * (the result is a leaf without requires_grad). tg_copy keeps the dtype. */
TG_API tg_tensor *tg_to_dtype(tg_ctx *ctx, const tg_tensor *src, tg_dtype dtype);
TG_API tg_tensor *tg_copy(tg_ctx *ctx, const tg_tensor *src);

/* Copies src's values into dst (same shape; dtypes may differ). Not
 * recorded: use it to load parameters or inputs. Bumps dst's version. */
TG_API tg_status tg_assign(tg_ctx *ctx, tg_tensor *dst, const tg_tensor *src);
/* Copies numel doubles into t, converting to its dtype. */
TG_API tg_status tg_assign_f64(tg_ctx *ctx, tg_tensor *t, const double *values);
/* Sets every element of t to value. */
TG_API tg_status tg_fill(tg_ctx *ctx, tg_tensor *t, double value);
/* Records that t's data was written directly (not through the API): bumps
 * its version (and its base's), so backward refuses values a recorded op
 * saw differently. */
TG_API void tg_mark_dirty(tg_tensor *t);
/* The counter the checks compare: the base's for a view, else t's own. */
TG_API uint64_t tg_tensor_version(const tg_tensor *t);

/* Marks a leaf tensor as one gradients flow to. Fails (TG_EINVAL) for a
 * tensor produced by a recorded op, whose flag the tape owns, for a buffer
 * or a gradient, and (TG_EDTYPE) for an int64 tensor. */
TG_API tg_status tg_set_requires_grad(tg_ctx *ctx, tg_tensor *t, bool requires_grad);

/* Names a tensor (the string is copied: into the arena for step tensors,
 * beside the parameter for parameters). Returns t, or NULL on error. */
TG_API tg_tensor *tg_set_name(tg_ctx *ctx, tg_tensor *t, const char *name);

/*
 * Parameters: persistent tensors with requires_grad set, zero-filled,
 * owned by the context; they survive tg_reset, and so do their gradients,
 * which accumulate over backward calls until tg_zero_grad. name may be NULL.
 */
TG_API tg_tensor *tg_param(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                           const char *name);
/* Frees one parameter and its gradient now (otherwise tg_ctx_free does),
 * or a parameter block with its members (tg_param_block). No step tensor
 * may refer to it afterwards: call it between steps. TG_EINVAL, and
 * nothing freed, for anything that is not a live parameter of ctx (a step
 * tensor, a gradient, a buffer, a parameter already freed, a member of a
 * block). */
TG_API tg_status tg_param_free(tg_ctx *ctx, tg_tensor *param);
/* Iterates over the live parameters in creation order: pass NULL for the
 * first. prev must be a live parameter of ctx (NULL is returned otherwise). */
TG_API tg_tensor *tg_param_next(const tg_ctx *ctx, const tg_tensor *prev);

/* One parameter of a block: its name (copied) and shape. */
typedef struct tg_param_spec {
    const char *name;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
} tg_param_spec;

/*
 * Parameters in one block: creates n parameters of one float dtype whose
 * values are consecutive slices, in order, of one zero-filled contiguous
 * array, and whose gradients (created now, zero) are consecutive slices of
 * a second one. params[i] receives parameter i: a view of the block, so a
 * write to either is seen through both (their versions are counted on the
 * block). *block receives the whole array as a 1-D parameter whose grad is
 * the whole gradient array, so an optimiser step, a norm or an allreduce
 * runs over all of them at once. The members are listed by tg_param_next
 * like any parameter; the block is not (nothing is stepped twice).
 * tg_param_free(ctx, block) frees the block with its members; a member
 * alone cannot be freed. Errors: TG_EINVAL, TG_EDTYPE, TG_ESHAPE (a spec's
 * shape, or a total that overflows), TG_ENOMEM (nothing is left behind).
 */
TG_API tg_status tg_param_block(tg_ctx *ctx, tg_dtype dtype, int n, const tg_param_spec *specs,
                                tg_tensor **params, tg_tensor **block);

/*
 * Buffers: persistent tensors without a gradient (batch norm's running
 * mean and variance, an int64 num_batches_tracked). Zero-filled, owned by
 * the context, listed apart from the parameters, never touched by an
 * optimiser, drawn apart in graphs, saved in checkpoints. Any dtype.
 */
TG_API tg_tensor *tg_buffer(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                            const char *name);
/* As tg_param_free, for buffers. */
TG_API tg_status tg_buffer_free(tg_ctx *ctx, tg_tensor *buffer);
/* Iterates over the live buffers in creation order, as tg_param_next. */
TG_API tg_tensor *tg_buffer_next(const tg_ctx *ctx, const tg_tensor *prev);

/* Element access through a flat row-major index (no bounds check on the
 * hot path: index must be in [0, numel)); values pass as double (int64
 * values beyond 2^53 lose precision; tg_set truncates toward zero and
 * saturates for int64). tg_set bumps the version. For kernels, read
 * t->data directly through TG_DISPATCH_FLOAT (tapegrad/op.h). */
TG_API double tg_get(const tg_tensor *t, int64_t index);
TG_API void tg_set(tg_tensor *t, int64_t index, double value);
/* The flat index of a multi-index (ndim entries), or -1 when out of range. */
TG_API int64_t tg_offset(const tg_tensor *t, const int64_t *idx);

/* Writes "(2, 3)" (a scalar is "()") into buf; returns what snprintf returns. */
TG_API int tg_shape_str(const tg_tensor *t, char *buf, size_t size);
/* Prints dtype, shape, name and (up to max_items) values, for debugging. */
TG_API void tg_print(FILE *f, const tg_tensor *t, int64_t max_items);
/* True when the two tensors have the same ndim and dims. */
TG_API bool tg_same_shape(const tg_tensor *a, const tg_tensor *b);

#ifdef __cplusplus
}
#endif
#endif
