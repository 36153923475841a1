/*
 * tapegrad/ops.h: the built-in differentiable operations.
 *
 * Every function here records one node (registry op named in brackets) and
 * returns a new step tensor, or NULL with the error in the context. Inputs
 * of a binary op must share a dtype. All accept float32 and float64.
 *
 * Broadcasting follows NumPy: shapes are aligned at the right, and each
 * pair of dimensions must be equal or one of them 1. The vjp sums the
 * gradient over the broadcast dimensions.
 *
 * The attribute structs are public so that tg_apply can run any op by
 * name with the same attributes the builders pass.
 */
#ifndef TAPEGRAD_OPS_H
#define TAPEGRAD_OPS_H

#include "op.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------ elementwise (ops/elementwise.c) */

TG_API tg_tensor *tg_add(tg_ctx *ctx, tg_tensor *a, tg_tensor *b); /* [add] a + b */
TG_API tg_tensor *tg_sub(tg_ctx *ctx, tg_tensor *a, tg_tensor *b); /* [sub] a - b */
TG_API tg_tensor *tg_mul(tg_ctx *ctx, tg_tensor *a, tg_tensor *b); /* [mul] a * b */
TG_API tg_tensor *tg_div(tg_ctx *ctx, tg_tensor *a, tg_tensor *b); /* [div] a / b */

/* Attributes of the one-input elementwise ops that take a number. */
typedef struct tg_scalar_attrs { double c; } tg_scalar_attrs;

TG_API tg_tensor *tg_neg(tg_ctx *ctx, tg_tensor *x);  /* [neg] -x */
TG_API tg_tensor *tg_exp(tg_ctx *ctx, tg_tensor *x);  /* [exp] */
TG_API tg_tensor *tg_log(tg_ctx *ctx, tg_tensor *x);  /* [log] natural log; -inf at 0 */
TG_API tg_tensor *tg_sqrt(tg_ctx *ctx, tg_tensor *x); /* [sqrt] */
TG_API tg_tensor *tg_pow(tg_ctx *ctx, tg_tensor *x, double p);        /* [pow] x^p */
TG_API tg_tensor *tg_add_scalar(tg_ctx *ctx, tg_tensor *x, double c); /* [add_scalar] x + c */
TG_API tg_tensor *tg_sub_scalar(tg_ctx *ctx, tg_tensor *x, double c); /* [add_scalar] x - c */
TG_API tg_tensor *tg_mul_scalar(tg_ctx *ctx, tg_tensor *x, double c); /* [mul_scalar] x * c */
TG_API tg_tensor *tg_div_scalar(tg_ctx *ctx, tg_tensor *x, double c); /* [div_scalar] x / c */

/* ------------------------------------------------ matrix products (ops/matmul.c) */

/*
 * [matmul] a (..., n, k) times b (..., k, m) -> (..., n, m). Both need at
 * least 2 dimensions; the leading (batch) dimensions broadcast.
 */
TG_API tg_tensor *tg_matmul(tg_ctx *ctx, tg_tensor *a, tg_tensor *b);

/*
 * [linear] y = x W^T + b in PyTorch's layout: x (..., in), W (out, in),
 * b (out) or NULL -> y (..., out).
 */
TG_API tg_tensor *tg_linear(tg_ctx *ctx, tg_tensor *x, tg_tensor *w, tg_tensor *b);

/* ------------------------------------------------ reductions (ops/reduce.c) */

typedef struct tg_reduce_attrs {
    int axis;      /* the axis reduced; negative counts from the end */
    bool all;      /* reduce every element (axis ignored) */
    bool keepdim;  /* keep the reduced axis with size 1 */
} tg_reduce_attrs;

TG_API tg_tensor *tg_sum(tg_ctx *ctx, tg_tensor *x);   /* [sum] of all elements, shape () */
TG_API tg_tensor *tg_mean(tg_ctx *ctx, tg_tensor *x);  /* [mean] of all elements, shape () */
TG_API tg_tensor *tg_sum_axis(tg_ctx *ctx, tg_tensor *x, int axis, bool keepdim);  /* [sum] */
TG_API tg_tensor *tg_mean_axis(tg_ctx *ctx, tg_tensor *x, int axis, bool keepdim); /* [mean] */

/* ------------------------------------------------ shape (ops/shape.c) */

typedef struct tg_reshape_attrs { int ndim; int64_t shape[TG_MAX_DIMS]; } tg_reshape_attrs;
typedef struct tg_permute_attrs { int ndim; int perm[TG_MAX_DIMS]; } tg_permute_attrs;
typedef struct tg_concat_attrs { int axis; } tg_concat_attrs;
typedef struct tg_slice_attrs { int axis; int64_t start, end, step; } tg_slice_attrs;
/* pad[d][0] zeros before and pad[d][1] after dimension d (the first ndim entries count). */
typedef struct tg_pad_attrs { int ndim; int64_t pad[TG_MAX_DIMS][2]; } tg_pad_attrs;

/* [reshape] Same elements, new shape; one dimension may be -1 (inferred).
 * The output shares x's data (no copy). */
TG_API tg_tensor *tg_reshape(tg_ctx *ctx, tg_tensor *x, int ndim, const int64_t *shape);
/* [reshape] Merges dimensions start..end (inclusive, negative from the end)
 * into one, as torch.flatten; tg_flatten(ctx, x, 1, -1) keeps the batch. */
TG_API tg_tensor *tg_flatten(tg_ctx *ctx, tg_tensor *x, int start, int end);
/* [permute] out.shape[i] = x.shape[perm[i]]; perm has x->ndim entries. */
TG_API tg_tensor *tg_permute(tg_ctx *ctx, tg_tensor *x, const int *perm);
/* [permute] Swaps two dimensions. */
TG_API tg_tensor *tg_transpose(tg_ctx *ctx, tg_tensor *x, int dim0, int dim1);
/* [concat] Joins n >= 1 tensors along axis; the other dimensions must agree. */
TG_API tg_tensor *tg_concat(tg_ctx *ctx, tg_tensor *const *xs, int n, int axis);
/* [slice] Elements start, start+step, ... below end along axis (step >= 1;
 * negative start/end count from the end; both are clamped like Python's). */
TG_API tg_tensor *tg_slice(tg_ctx *ctx, tg_tensor *x, int axis, int64_t start, int64_t end,
                           int64_t step);
/* [pad] Zero padding of the last dimension (a conv1d layer's padding). */
TG_API tg_tensor *tg_pad1d(tg_ctx *ctx, tg_tensor *x, int64_t left, int64_t right);
/* [pad] Zero padding of the last two dimensions, in torch.nn.functional.pad's
 * order: left and right of the last, top and bottom of the one before. */
TG_API tg_tensor *tg_pad2d(tg_ctx *ctx, tg_tensor *x, int64_t left, int64_t right, int64_t top,
                           int64_t bottom);

#ifdef __cplusplus
}
#endif
#endif
