/*
 * tapegrad/tensor.h: tensors and parameters.
 *
 * A tensor is a contiguous row-major array of float32 or float64 with up to
 * TG_MAX_DIMS dimensions. Two lifetimes exist:
 *   - step tensors (everything made by tg_zeros, tg_from_data, ... and every
 *     op output) live in the context's step arena and die at tg_reset;
 *   - parameters (tg_param) persist until tg_param_free or tg_ctx_free, and
 *     so do their gradients.
 * Users never free a step tensor. The struct is public so that kernels can
 * read data and shape directly; change fields only through the API.
 */
#ifndef TAPEGRAD_TENSOR_H
#define TAPEGRAD_TENSOR_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TG_MAX_DIMS 6

typedef enum tg_dtype { TG_F32 = 0, TG_F64 = 1 } tg_dtype;

/* "float32" / "float64"; "?" for anything else. */
TG_API const char *tg_dtype_name(tg_dtype dtype);
/* Bytes per element (4 or 8), 0 for an invalid dtype. */
TG_API size_t tg_dtype_size(tg_dtype dtype);

typedef struct tg_node tg_node;
typedef struct tg_tensor tg_tensor;

struct tg_tensor {
    void *data;                    /* numel elements of dtype, row-major */
    int64_t shape[TG_MAX_DIMS];    /* shape[0..ndim-1]; the rest are 1 */
    int64_t numel;                 /* product of the shape (1 for ndim 0) */
    int ndim;                      /* 0 (a scalar) .. TG_MAX_DIMS */
    tg_dtype dtype;
    bool requires_grad;            /* gradients flow to this tensor */
    bool persistent;               /* a parameter: survives tg_reset */
    tg_tensor *grad;               /* same shape and dtype, or NULL */
    tg_node *node;                 /* the recorded op that made it; NULL for a leaf */
    const char *name;              /* optional; dot labels and checkpoint keys */
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
 * NULL data, out of memory, or an error already held).
 * tg_empty leaves the data uninitialised.
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
 * row-major order (so a seed fixes them, whatever the dtype). */
TG_API tg_tensor *tg_rand(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                          double lo, double hi);
TG_API tg_tensor *tg_randn(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *shape,
                           double mean, double std);
/* A new step tensor with src's values converted to dtype; not recorded
 * (the result is a leaf without requires_grad). tg_copy keeps the dtype. */
TG_API tg_tensor *tg_to_dtype(tg_ctx *ctx, const tg_tensor *src, tg_dtype dtype);
TG_API tg_tensor *tg_copy(tg_ctx *ctx, const tg_tensor *src);

/* Copies src's values into dst (same shape; dtypes may differ). Not
 * recorded: use it to load parameters or inputs. */
TG_API tg_status tg_assign(tg_ctx *ctx, tg_tensor *dst, const tg_tensor *src);
/* Copies numel doubles into t, converting to its dtype. */
TG_API tg_status tg_assign_f64(tg_ctx *ctx, tg_tensor *t, const double *values);
/* Sets every element of t to value. */
TG_API tg_status tg_fill(tg_ctx *ctx, tg_tensor *t, double value);

/* Marks a leaf tensor as one gradients flow to. Fails (TG_EINVAL) for a
 * tensor produced by a recorded op, whose flag the tape owns. */
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
/* Frees one parameter and its gradient now (otherwise tg_ctx_free does).
 * No step tensor may refer to it afterwards: call it between steps. */
TG_API void tg_param_free(tg_ctx *ctx, tg_tensor *param);
/* Iterates over the live parameters in creation order: pass NULL for the first. */
TG_API tg_tensor *tg_param_next(const tg_ctx *ctx, const tg_tensor *prev);

/* Element access through a flat row-major index (no bounds check on the
 * hot path: index must be in [0, numel)); values pass as double. */
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
