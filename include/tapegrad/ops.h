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

/* ------------------------------------------------ threads (ops/threads.c) */

/*
 * The threads the kernels run on, process-wide; n >= 1 (other values only
 * read the count). Returns the previous count; tg_num_threads gives the
 * current one. The default is the cores the process may use (or
 * OMP_NUM_THREADS). The library's own kernels split batches, channels and
 * long element ranges over OpenMP threads, and BLAS runs in the same pool
 * (OpenBLAS's OpenMP build), single-threaded inside a parallel region, so
 * the cores are never oversubscribed. Results do not depend on the count
 * beyond the order of floating-point sums. Call it between steps, from the
 * thread that runs them.
 */
TG_API int tg_set_num_threads(int n);
TG_API int tg_num_threads(void);

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
/* pad[d][0] zeros before and pad[d][1] after dimension d (the first ndim entries
 * count); a negative entry removes that many elements, as torch.nn.functional.pad. */
typedef struct tg_pad_attrs { int ndim; int64_t pad[TG_MAX_DIMS][2]; } tg_pad_attrs;

/* [reshape] Same elements, new shape; one dimension may be -1 (inferred).
 * The output shares x's data (no copy). */
TG_API tg_tensor *tg_reshape(tg_ctx *ctx, tg_tensor *x, int ndim, const int64_t *shape);
/* [reshape] Merges dimensions start..end (inclusive, negative from the end)
 * into one, as torch.flatten; tg_flatten(ctx, x, 1, -1) keeps the batch. */
TG_API tg_tensor *tg_flatten(tg_ctx *ctx, tg_tensor *x, int start, int end);
/* [permute] out.shape[i] = x.shape[perm[i]]; perm has x->ndim entries, negative
 * ones counting from the end. */
TG_API tg_tensor *tg_permute(tg_ctx *ctx, tg_tensor *x, const int *perm);
/* [permute] Swaps two dimensions. */
TG_API tg_tensor *tg_transpose(tg_ctx *ctx, tg_tensor *x, int dim0, int dim1);
/* [concat] Joins n >= 1 tensors along axis; the other dimensions must agree. */
TG_API tg_tensor *tg_concat(tg_ctx *ctx, tg_tensor *const *xs, int n, int axis);
/* [slice] Elements start, start+step, ... below end along axis (step >= 1;
 * negative start/end count from the end; both are clamped like Python's). */
TG_API tg_tensor *tg_slice(tg_ctx *ctx, tg_tensor *x, int axis, int64_t start, int64_t end,
                           int64_t step);
/* [pad] Zero padding of the last dimension (a conv1d layer's padding); negative
 * values crop, and removing more than the dimension holds is TG_ESHAPE. */
TG_API tg_tensor *tg_pad1d(tg_ctx *ctx, tg_tensor *x, int64_t left, int64_t right);
/* [pad] Zero padding of the last two dimensions, in torch.nn.functional.pad's
 * order: left and right of the last, top and bottom of the one before. */
TG_API tg_tensor *tg_pad2d(tg_ctx *ctx, tg_tensor *x, int64_t left, int64_t right, int64_t top,
                           int64_t bottom);


/* ------------------------------------------------ convolution (ops/conv.c) */

/*
 * Cross-correlation as PyTorch's conv1d / conv2d (no kernel flip).
 * conv2d: x (N, C, H, W), weight (K, C / groups, R, S), bias (K) or NULL
 *         -> (N, K, OH, OW), OH = floor((H + 2 pad - dilation (R - 1) - 1) / stride) + 1.
 * conv1d: x (N, C, L), weight (K, C / groups, R) -> (N, K, OL); only entry 0
 *         of each pair in the attributes counts.
 * Entries are (height, width). stride and dilation >= 1, padding >= 0
 * (zeros), groups >= 1 dividing C and K, kernel sizes >= 1. As in PyTorch,
 * an input without elements is taken only when N = 0 (the output is then
 * (0, K, OH, OW)).
 */
typedef struct tg_conv_attrs {
    int64_t stride[2], padding[2], dilation[2];
    int64_t groups;
} tg_conv_attrs;

/* [conv1d] */
TG_API tg_tensor *tg_conv1d(tg_ctx *ctx, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                            int64_t stride, int64_t padding, int64_t dilation, int64_t groups);
/* [conv2d] the same stride, padding and dilation along both axes */
TG_API tg_tensor *tg_conv2d(tg_ctx *ctx, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                            int64_t stride, int64_t padding, int64_t dilation, int64_t groups);
/* [conv2d] per-axis values */
TG_API tg_tensor *tg_conv2d_ex(tg_ctx *ctx, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                               const tg_conv_attrs *attrs);

/* ------------------------------------------------ pooling (ops/pool.c) */

/*
 * Windows of kernel size, moved by stride, over x padded by padding on
 * each side: (N, C, L) for 1-D, (N, C, H, W) for 2-D. Out size, as PyTorch:
 *   floor((n + 2 padding - dilation (kernel - 1) - 1) / stride) + 1
 * or, with ceil_mode, the same rounded up, less one when the last window
 * would start past the input and its left padding; an out size below 1 is
 * TG_ESHAPE. Max pooling pads with -inf and sends each window's gradient to
 * its first maximum, or to its last NaN when it holds one (the output is
 * then NaN), as PyTorch; a window that reaches no input element (possible
 * only with dilation) gives -inf and no gradient. Average pooling pads with
 * zeros and divides by the window's size clipped to the padded input
 * (count_include_pad, PyTorch's default), or with exclude_pad by the number
 * of input elements it covers. padding is at most half the kernel, as
 * PyTorch requires. Only N may be 0. Entries are (height, width); 1-D uses
 * entry 0.
 */
typedef struct tg_pool_attrs {
    int64_t kernel[2], stride[2], padding[2];
    int64_t dilation[2]; /* >= 1 (0 is TG_EINVAL); average pooling takes only 1 */
    bool ceil_mode;      /* PyTorch's ceil_mode */
    bool exclude_pad;    /* average pooling: count_include_pad=False (max pooling: must be false) */
} tg_pool_attrs;

/* stride = kernel, no padding: PyTorch's defaults */
TG_API tg_tensor *tg_max_pool1d(tg_ctx *ctx, tg_tensor *x, int64_t kernel);     /* [max_pool1d] */
TG_API tg_tensor *tg_max_pool2d(tg_ctx *ctx, tg_tensor *x, int64_t kernel);     /* [max_pool2d] */
TG_API tg_tensor *tg_avg_pool1d(tg_ctx *ctx, tg_tensor *x, int64_t kernel);     /* [avg_pool1d] */
TG_API tg_tensor *tg_avg_pool2d(tg_ctx *ctx, tg_tensor *x, int64_t kernel);     /* [avg_pool2d] */
/* kernel, stride and padding; 2-D ones apply to both axes; dilation 1, floor mode */
TG_API tg_tensor *tg_max_pool1d_ex(tg_ctx *ctx, tg_tensor *x, int64_t kernel, int64_t stride,
                                   int64_t padding);
TG_API tg_tensor *tg_max_pool2d_ex(tg_ctx *ctx, tg_tensor *x, int64_t kernel, int64_t stride,
                                   int64_t padding);
TG_API tg_tensor *tg_avg_pool1d_ex(tg_ctx *ctx, tg_tensor *x, int64_t kernel, int64_t stride,
                                   int64_t padding);
TG_API tg_tensor *tg_avg_pool2d_ex(tg_ctx *ctx, tg_tensor *x, int64_t kernel, int64_t stride,
                                   int64_t padding);
/* every setting, as nn.MaxPool1d/2d and nn.AvgPool1d/2d take them */
TG_API tg_tensor *tg_max_pool1d_opts(tg_ctx *ctx, tg_tensor *x, const tg_pool_attrs *attrs);
TG_API tg_tensor *tg_max_pool2d_opts(tg_ctx *ctx, tg_tensor *x, const tg_pool_attrs *attrs);
TG_API tg_tensor *tg_avg_pool1d_opts(tg_ctx *ctx, tg_tensor *x, const tg_pool_attrs *attrs);
TG_API tg_tensor *tg_avg_pool2d_opts(tg_ctx *ctx, tg_tensor *x, const tg_pool_attrs *attrs);

typedef struct tg_gap_attrs { bool keepdim; } tg_gap_attrs;

/* [global_avg_pool] The mean over every dimension after the second:
 * (N, C, ...) -> (N, C). An empty plane gives NaN (torch.mean). */
TG_API tg_tensor *tg_global_avg_pool(tg_ctx *ctx, tg_tensor *x);
/* [global_avg_pool] With keepdim the pooled dimensions stay with size 1:
 * (N, C, H, W) -> (N, C, 1, 1), as nn.AdaptiveAvgPool2d(1) (1d likewise). */
TG_API tg_tensor *tg_global_avg_pool_ex(tg_ctx *ctx, tg_tensor *x, bool keepdim);

/* ------------------------------------------------ activations (ops/activation.c) */

#define TG_LEAKY_RELU_SLOPE 0.01 /* PyTorch's default negative slope */

/* NaN propagates as in PyTorch: relu(NaN) = leaky_relu(NaN) = NaN. */
TG_API tg_tensor *tg_relu(tg_ctx *ctx, tg_tensor *x);    /* [relu] max(x, 0); gradient 0 at 0 */
/* [leaky_relu] x for x > 0, negative_slope * x otherwise (TG_LEAKY_RELU_SLOPE
 * is PyTorch's default); any slope is accepted, as in PyTorch */
TG_API tg_tensor *tg_leaky_relu(tg_ctx *ctx, tg_tensor *x, double negative_slope);
TG_API tg_tensor *tg_sigmoid(tg_ctx *ctx, tg_tensor *x); /* [sigmoid] 1 / (1 + e^-x), no overflow */
TG_API tg_tensor *tg_tanh(tg_ctx *ctx, tg_tensor *x);    /* [tanh] */

/* ------------------------------------------------ softmax (ops/softmax.c) */

typedef struct tg_axis_attrs { int axis; } tg_axis_attrs;

/* [softmax] exp(x - max) / sum exp(x - max) along axis (negative from the
 * end; out of range is TG_EINVAL). The sums run in double; a NaN or an
 * infinity makes its whole line NaN (PyTorch); an empty x gives an empty
 * result, and a shape whose lines (the dimensions before the axis times
 * those after) cannot be counted in int64 is TG_ESHAPE. */
TG_API tg_tensor *tg_softmax(tg_ctx *ctx, tg_tensor *x, int axis);
/* [log_softmax] x - max - log sum exp(x - max): finite for logits of any size */
TG_API tg_tensor *tg_log_softmax(tg_ctx *ctx, tg_tensor *x, int axis);

/* ------------------------------------------------ losses (ops/loss.c) */

/* PyTorch's reduction='mean', 'sum' and 'none' */
typedef enum tg_reduction { TG_MEAN = 0, TG_SUM = 1, TG_NONE = 2 } tg_reduction;
typedef struct tg_loss_attrs { tg_reduction reduction; } tg_loss_attrs;

#define TG_IGNORE_INDEX (-100) /* PyTorch's default ignore_index */

/* Attributes of cross_entropy and nll_loss (nll_loss takes no smoothing).
 * A zero-initialised struct ignores class 0: start from TG_CE_DEFAULTS. */
typedef struct tg_ce_attrs {
    tg_reduction reduction;
    int64_t ignore_index;   /* targets equal to it count for nothing; PyTorch: -100 */
    double label_smoothing; /* in [0, 1]; PyTorch: 0 */
} tg_ce_attrs;
#define TG_CE_DEFAULTS ((tg_ce_attrs){TG_MEAN, TG_IGNORE_INDEX, 0.0})

/*
 * Every loss returns a scalar (shape ()) for TG_MEAN and TG_SUM, and one
 * loss per element (mse, bce, bce_with_logits: the input's shape) or per
 * sample (cross_entropy, nll_loss: (N) or (N, d1, ...)) for TG_NONE.
 * Inputs and targets share a dtype; target gradients are computed where
 * PyTorch computes them (mse, bce, bce_with_logits, cross_entropy with
 * probabilities), so a target may itself require grad. The mean over no
 * elements is NaN and the sum 0, as in PyTorch. Sums run in double for
 * float32 too.
 */
/* [mse] (x - y)^2; x and y have the same shape */
TG_API tg_tensor *tg_mse(tg_ctx *ctx, tg_tensor *x, tg_tensor *y, tg_reduction reduction);
/* [bce] -(y log p + (1 - y) log(1 - p)) on probabilities p in [0, 1] and
 * targets y in [0, 1] (anything else, NaN included, is TG_EINVAL); each log
 * is clamped at -100 as PyTorch does, so p = 0 or 1 gives finite values */
TG_API tg_tensor *tg_bce(tg_ctx *ctx, tg_tensor *p, tg_tensor *y, tg_reduction reduction);
/* [bce_with_logits] BCE of sigmoid(x), in PyTorch's stable form
 * (1 - y) x + max(-x, 0) + log(1 + e^-|x|); logits of +-inf give PyTorch's
 * values, NaN where it gives NaN */
TG_API tg_tensor *tg_bce_with_logits(tg_ctx *ctx, tg_tensor *x, tg_tensor *y,
                                     tg_reduction reduction);
/* [bce_with_logits] With pos_weight (NULL for none) of x's dtype,
 * broadcastable to x's shape without growing it:
 * (1 - y) x + (1 + (pos_weight - 1) y) log(1 + e^-x). As in PyTorch,
 * pos_weight is not differentiable: one that requires grad while grad mode
 * is on is TG_EINVAL. */
TG_API tg_tensor *tg_bce_with_logits_ex(tg_ctx *ctx, tg_tensor *x, tg_tensor *y,
                                        tg_tensor *pos_weight, tg_reduction reduction);
/*
 * [cross_entropy] Softmax cross-entropy from float logits (N, C) or
 * (N, C, d1, ...). target is either class indices, an int64 tensor of shape
 * (N) or (N, d1, ...) with 0 <= index < C or index = -100 (ignored, as
 * PyTorch's default ignore_index; any other index outside is TG_EINVAL
 * naming the first), or class probabilities of the logits' shape and
 * dtype. A float target of the indices' shape is TG_EDTYPE: pass indices
 * as int64. The mean divides by the number of samples not ignored.
 */
TG_API tg_tensor *tg_cross_entropy(tg_ctx *ctx, tg_tensor *logits, tg_tensor *target,
                                   tg_reduction reduction);
/*
 * [cross_entropy] F.cross_entropy with every argument: class weights
 * `weight` (C) of the logits' dtype or NULL, ignore_index (class indices
 * only) and label_smoothing in [0, 1] (NaN or outside is TG_EINVAL), with
 * PyTorch 1.13's formulas. With class indices the weighted mean divides by
 * the sum of the weights of the targets not ignored, and the weight gets
 * no gradient: one that requires grad while grad mode is on is TG_EINVAL
 * (as PyTorch). With probabilities the mean divides by N * d1 * ... and
 * the weight is differentiable.
 */
TG_API tg_tensor *tg_cross_entropy_ex(tg_ctx *ctx, tg_tensor *logits, tg_tensor *target,
                                      tg_tensor *weight, const tg_ce_attrs *attrs);
/*
 * [nll_loss] PyTorch's F.nll_loss: -logp[i, target[i], ...] per sample, on
 * log-probabilities (N, C) or (N, C, d1, ...) (e.g. from tg_log_softmax
 * along axis 1) and int64 class indices (N) or (N, d1, ...) in [0, C) or
 * -100 (ignored). tg_cross_entropy(z, t) = tg_nll_loss(tg_log_softmax(z, 1), t).
 */
TG_API tg_tensor *tg_nll_loss(tg_ctx *ctx, tg_tensor *logp, tg_tensor *target,
                              tg_reduction reduction);
/* [nll_loss] With class weights (C) or NULL and ignore_index, as
 * tg_cross_entropy_ex (the weight is not differentiable). */
TG_API tg_tensor *tg_nll_loss_ex(tg_ctx *ctx, tg_tensor *logp, tg_tensor *target,
                                 tg_tensor *weight, tg_reduction reduction,
                                 int64_t ignore_index);

/* ------------------------------------------------ dropout (ops/dropout.c) */

typedef struct tg_dropout_attrs { double p; } tg_dropout_attrs;

/* [dropout] In training mode zeroes each element with probability p (mask
 * drawn from the context RNG) and scales the kept ones by 1 / (1 - p); in
 * eval mode returns x unchanged. 0 <= p <= 1 (anything else, NaN included,
 * is TG_EINVAL); p = 1 gives zeros. */
TG_API tg_tensor *tg_dropout(tg_ctx *ctx, tg_tensor *x, double p);

/* ------------------------------------------------ batch norm (ops/batchnorm.c) */

#define TG_BN_MOMENTUM 0.1 /* PyTorch's defaults */
#define TG_BN_EPS 1e-5

enum { TG_BN_WEIGHT = 1, TG_BN_BIAS = 2, TG_BN_RUNNING = 4 };
typedef struct tg_batch_norm_attrs {
    double momentum; /* running = (1 - momentum) running + momentum batch, in [0, 1]; PyTorch: 0.1 */
    double eps;      /* added to the variance, > 0 and finite; PyTorch: 1e-5 */
    int has;         /* which optional inputs follow x, in this order: TG_BN_* bits */
} tg_batch_norm_attrs;

/*
 * [batch_norm] Normalises x (N, C), (N, C, L) or (N, C, H, W) per channel.
 * Training mode (or no running statistics): batch mean and biased variance,
 * and running_mean / running_var (C), when given, are updated in place with
 * the unbiased variance. Eval mode: the running statistics. weight and bias
 * (C) are optional; so are the running statistics (both or neither).
 * Training needs more than one value per channel (an empty batch is
 * TG_EINVAL). The running statistics are updated in place (their version
 * bumps); backward reads them only in eval mode, so writing them between
 * forward and backward of a training step is allowed, as in PyTorch.
 */
TG_API tg_tensor *tg_batch_norm(tg_ctx *ctx, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                                tg_tensor *running_mean, tg_tensor *running_var,
                                double momentum, double eps);


/* ------------------------------------------------ call sites
 * Each builder is also a macro of the same name that notes the caller's
 * file, line and the builder's name (tg_at_op) before the call, so anomaly
 * messages and graphs can point at the user's code and label each op as
 * it was called (tg_sub_scalar records add_scalar but is drawn as
 * sub_scalar). (tg_relu)(ctx, x) or a function pointer
 * calls the function itself; TG_NO_CALLSITE turns the macros off. */
#ifndef TG_NO_CALLSITE
#define TG__AT(ctx, name) tg_at_op((ctx), __FILE__, __LINE__, (name))
#define tg_add(ctx, ...) tg_add(TG__AT(ctx, "add"), __VA_ARGS__)
#define tg_sub(ctx, ...) tg_sub(TG__AT(ctx, "sub"), __VA_ARGS__)
#define tg_mul(ctx, ...) tg_mul(TG__AT(ctx, "mul"), __VA_ARGS__)
#define tg_div(ctx, ...) tg_div(TG__AT(ctx, "div"), __VA_ARGS__)
#define tg_neg(ctx, ...) tg_neg(TG__AT(ctx, "neg"), __VA_ARGS__)
#define tg_exp(ctx, ...) tg_exp(TG__AT(ctx, "exp"), __VA_ARGS__)
#define tg_log(ctx, ...) tg_log(TG__AT(ctx, "log"), __VA_ARGS__)
#define tg_sqrt(ctx, ...) tg_sqrt(TG__AT(ctx, "sqrt"), __VA_ARGS__)
#define tg_pow(ctx, ...) tg_pow(TG__AT(ctx, "pow"), __VA_ARGS__)
#define tg_add_scalar(ctx, ...) tg_add_scalar(TG__AT(ctx, "add_scalar"), __VA_ARGS__)
#define tg_sub_scalar(ctx, ...) tg_sub_scalar(TG__AT(ctx, "sub_scalar"), __VA_ARGS__)
#define tg_mul_scalar(ctx, ...) tg_mul_scalar(TG__AT(ctx, "mul_scalar"), __VA_ARGS__)
#define tg_div_scalar(ctx, ...) tg_div_scalar(TG__AT(ctx, "div_scalar"), __VA_ARGS__)
#define tg_matmul(ctx, ...) tg_matmul(TG__AT(ctx, "matmul"), __VA_ARGS__)
#define tg_linear(ctx, ...) tg_linear(TG__AT(ctx, "linear"), __VA_ARGS__)
#define tg_sum(ctx, ...) tg_sum(TG__AT(ctx, "sum"), __VA_ARGS__)
#define tg_mean(ctx, ...) tg_mean(TG__AT(ctx, "mean"), __VA_ARGS__)
#define tg_sum_axis(ctx, ...) tg_sum_axis(TG__AT(ctx, "sum_axis"), __VA_ARGS__)
#define tg_mean_axis(ctx, ...) tg_mean_axis(TG__AT(ctx, "mean_axis"), __VA_ARGS__)
#define tg_reshape(ctx, ...) tg_reshape(TG__AT(ctx, "reshape"), __VA_ARGS__)
#define tg_flatten(ctx, ...) tg_flatten(TG__AT(ctx, "flatten"), __VA_ARGS__)
#define tg_permute(ctx, ...) tg_permute(TG__AT(ctx, "permute"), __VA_ARGS__)
#define tg_transpose(ctx, ...) tg_transpose(TG__AT(ctx, "transpose"), __VA_ARGS__)
#define tg_concat(ctx, ...) tg_concat(TG__AT(ctx, "concat"), __VA_ARGS__)
#define tg_slice(ctx, ...) tg_slice(TG__AT(ctx, "slice"), __VA_ARGS__)
#define tg_pad1d(ctx, ...) tg_pad1d(TG__AT(ctx, "pad1d"), __VA_ARGS__)
#define tg_pad2d(ctx, ...) tg_pad2d(TG__AT(ctx, "pad2d"), __VA_ARGS__)
#define tg_conv1d(ctx, ...) tg_conv1d(TG__AT(ctx, "conv1d"), __VA_ARGS__)
#define tg_conv2d(ctx, ...) tg_conv2d(TG__AT(ctx, "conv2d"), __VA_ARGS__)
#define tg_conv2d_ex(ctx, ...) tg_conv2d_ex(TG__AT(ctx, "conv2d_ex"), __VA_ARGS__)
#define tg_max_pool1d(ctx, ...) tg_max_pool1d(TG__AT(ctx, "max_pool1d"), __VA_ARGS__)
#define tg_max_pool2d(ctx, ...) tg_max_pool2d(TG__AT(ctx, "max_pool2d"), __VA_ARGS__)
#define tg_avg_pool1d(ctx, ...) tg_avg_pool1d(TG__AT(ctx, "avg_pool1d"), __VA_ARGS__)
#define tg_avg_pool2d(ctx, ...) tg_avg_pool2d(TG__AT(ctx, "avg_pool2d"), __VA_ARGS__)
#define tg_max_pool1d_ex(ctx, ...) tg_max_pool1d_ex(TG__AT(ctx, "max_pool1d_ex"), __VA_ARGS__)
#define tg_max_pool2d_ex(ctx, ...) tg_max_pool2d_ex(TG__AT(ctx, "max_pool2d_ex"), __VA_ARGS__)
#define tg_avg_pool1d_ex(ctx, ...) tg_avg_pool1d_ex(TG__AT(ctx, "avg_pool1d_ex"), __VA_ARGS__)
#define tg_avg_pool2d_ex(ctx, ...) tg_avg_pool2d_ex(TG__AT(ctx, "avg_pool2d_ex"), __VA_ARGS__)
#define tg_max_pool1d_opts(ctx, ...) tg_max_pool1d_opts(TG__AT(ctx, "max_pool1d_opts"), __VA_ARGS__)
#define tg_max_pool2d_opts(ctx, ...) tg_max_pool2d_opts(TG__AT(ctx, "max_pool2d_opts"), __VA_ARGS__)
#define tg_avg_pool1d_opts(ctx, ...) tg_avg_pool1d_opts(TG__AT(ctx, "avg_pool1d_opts"), __VA_ARGS__)
#define tg_avg_pool2d_opts(ctx, ...) tg_avg_pool2d_opts(TG__AT(ctx, "avg_pool2d_opts"), __VA_ARGS__)
#define tg_global_avg_pool(ctx, ...) tg_global_avg_pool(TG__AT(ctx, "global_avg_pool"), __VA_ARGS__)
#define tg_global_avg_pool_ex(ctx, ...) tg_global_avg_pool_ex(TG__AT(ctx, "global_avg_pool_ex"), __VA_ARGS__)
#define tg_relu(ctx, ...) tg_relu(TG__AT(ctx, "relu"), __VA_ARGS__)
#define tg_leaky_relu(ctx, ...) tg_leaky_relu(TG__AT(ctx, "leaky_relu"), __VA_ARGS__)
#define tg_sigmoid(ctx, ...) tg_sigmoid(TG__AT(ctx, "sigmoid"), __VA_ARGS__)
#define tg_tanh(ctx, ...) tg_tanh(TG__AT(ctx, "tanh"), __VA_ARGS__)
#define tg_softmax(ctx, ...) tg_softmax(TG__AT(ctx, "softmax"), __VA_ARGS__)
#define tg_log_softmax(ctx, ...) tg_log_softmax(TG__AT(ctx, "log_softmax"), __VA_ARGS__)
#define tg_mse(ctx, ...) tg_mse(TG__AT(ctx, "mse"), __VA_ARGS__)
#define tg_bce(ctx, ...) tg_bce(TG__AT(ctx, "bce"), __VA_ARGS__)
#define tg_bce_with_logits(ctx, ...) tg_bce_with_logits(TG__AT(ctx, "bce_with_logits"), __VA_ARGS__)
#define tg_bce_with_logits_ex(ctx, ...) tg_bce_with_logits_ex(TG__AT(ctx, "bce_with_logits_ex"), __VA_ARGS__)
#define tg_cross_entropy(ctx, ...) tg_cross_entropy(TG__AT(ctx, "cross_entropy"), __VA_ARGS__)
#define tg_cross_entropy_ex(ctx, ...) tg_cross_entropy_ex(TG__AT(ctx, "cross_entropy_ex"), __VA_ARGS__)
#define tg_nll_loss(ctx, ...) tg_nll_loss(TG__AT(ctx, "nll_loss"), __VA_ARGS__)
#define tg_nll_loss_ex(ctx, ...) tg_nll_loss_ex(TG__AT(ctx, "nll_loss_ex"), __VA_ARGS__)
#define tg_dropout(ctx, ...) tg_dropout(TG__AT(ctx, "dropout"), __VA_ARGS__)
#define tg_batch_norm(ctx, ...) tg_batch_norm(TG__AT(ctx, "batch_norm"), __VA_ARGS__)
#endif

#ifdef __cplusplus
}
#endif
#endif
