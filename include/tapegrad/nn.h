/*
 * tapegrad/nn.h: sequential models, their layers, losses and initialisers.
 *
 * A tg_model mirrors PyTorch's nn.Sequential: layers numbered from 0, each
 * owning its parameters and buffers, named exactly as the Sequential's
 * state_dict keys ("0.weight", "0.bias", "1.running_mean",
 * "1.num_batches_tracked", ...), so weights move both ways between
 * tapegrad and PyTorch (see tapegrad/safetensors.h). All of a model's
 * parameters live in one parameter block (tg_param_block): an optimiser
 * step, a gradient norm or an allreduce runs over tg_model_params(m) and
 * its grad at once.
 *
 *   tg_model *m = tg_model_new(ctx, TG_F32, TG_SHAPE(1, 28, 28));
 *   tg_layer conv = tg_layer_defaults(TG_LAYER_CONV2D);
 *   conv.in = 1; conv.out = 6; conv.kernel[0] = conv.kernel[1] = 5;
 *   conv.padding[0] = conv.padding[1] = 2;
 *   tg_model_add(ctx, m, &conv);                 // shapes are inferred as layers come
 *   ...
 *   tg_loss_spec ce = tg_loss_defaults(TG_LOSS_CROSS_ENTROPY);
 *   tg_model_set_loss(ctx, m, &ce);
 *   tg_model_build(ctx, m);                      // parameters, buffers, PyTorch's init
 *   // or all of the above from a model file:
 *   //   tg_model *m = tg_model_load(ctx, "models/lenet5.tgm", TG_F32);
 *   tg_tensor *logits = tg_model_forward(ctx, m, x);   // x (N, 1, 28, 28)
 *   tg_tensor *loss = tg_model_loss(ctx, m, logits, y); // y (N) int64
 *
 * Ownership: the model and everything it holds belong to the context;
 * free it with tg_model_free (or let tg_ctx_free do the parameters).
 *
 * The model file (.tgm) is plain text, one layer a line, as in PyTorch:
 *
 *   # LeNet-5                        '#' starts a comment
 *   input 1 28 28                    the shape of one example (no batch)
 *   conv2d 1 6 5 padding=2           in out kernel [stride= padding= dilation= groups= bias=]
 *   relu                             | sigmoid | tanh | leaky_relu [slope]
 *   max_pool2d 2                     kernel [stride= padding= dilation= ceil_mode=]
 *   avg_pool2d 2                     kernel [stride= padding= ceil_mode= count_include_pad=]
 *                                    (no dilation: PyTorch's AvgPool has none)
 *   conv1d ... | max_pool1d ... | avg_pool1d ...
 *   global_avg_pool                  nn.AdaptiveAvgPool{1,2}d(1): pooled dims kept as size 1
 *   pad1d 1 | pad2d 1                zeros on every side (nn.ConstantPad1d(p, 0), nn.ZeroPad2d(p))
 *   flatten
 *   linear 400 120                   in out [bias=]
 *   dropout 0.5
 *   batch_norm1d 32 | batch_norm2d 32   [eps= momentum=]
 *   softmax | log_softmax            [dim=1]
 *   loss cross_entropy               | nll | mse | bce | bce_with_logits
 *                                    [reduction=mean|sum|none]; cross_entropy and nll
 *                                    [ignore_index=-100]; cross_entropy [label_smoothing=0]
 *   e.g. loss cross_entropy reduction=none ignore_index=0 label_smoothing=0.1
 *
 * Arguments are the PyTorch constructor's, positionally in its order or
 * as key=value with its names (conv2d 1 6 5 2 = conv2d in_channels=1
 * out_channels=6 kernel_size=5 stride=2; max pooling takes ceil_mode by key
 * only); no positional argument may follow a key=value one. A pair
 * (kernel_size, stride, padding, dilation) takes one value for both axes
 * (through the C API, tg_layer takes a value per axis).
 * Booleans are true/false (True/False, 1/0). The first line that is not
 * blank or a comment is `input`; `loss`, if present, is the last. Any
 * inconsistency (an unknown layer or argument, a missing or extra one, a
 * number that does not parse or overflows, a value out of range, a shape
 * that does not fit) is TG_EFORMAT "NAME:LINE: what is wrong"; a bad byte
 * (anything but printable ASCII, space, tab and CR outside a comment) too.
 *
 * Pooling follows PyTorch's nn.MaxPool / nn.AvgPool in every setting:
 * ceil_mode (see tg_model_add for the output size), count_include_pad
 * (average pooling) and dilation (max pooling). A loss takes PyTorch's
 * reduction, ignore_index and label_smoothing (see tg_loss_spec). Class
 * weights (cross_entropy, nll) and bce_with_logits's pos_weight are not
 * part of a model's loss, in the file or in tg_loss_spec: for them, call
 * tg_cross_entropy_ex, tg_nll_loss_ex or tg_bce_with_logits_ex on the
 * model's output.
 */
#ifndef TAPEGRAD_NN_H
#define TAPEGRAD_NN_H

#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- layers */

typedef enum tg_layer_kind {
    TG_LAYER_CONV1D,
    TG_LAYER_CONV2D,
    TG_LAYER_LINEAR,
    TG_LAYER_RELU,
    TG_LAYER_SIGMOID,
    TG_LAYER_TANH,
    TG_LAYER_LEAKY_RELU,
    TG_LAYER_MAX_POOL1D,
    TG_LAYER_MAX_POOL2D,
    TG_LAYER_AVG_POOL1D,
    TG_LAYER_AVG_POOL2D,
    TG_LAYER_GLOBAL_AVG_POOL,
    TG_LAYER_PAD1D,
    TG_LAYER_PAD2D,
    TG_LAYER_FLATTEN,
    TG_LAYER_DROPOUT,
    TG_LAYER_BATCH_NORM1D,
    TG_LAYER_BATCH_NORM2D,
    TG_LAYER_SOFTMAX,
    TG_LAYER_LOG_SOFTMAX,
    TG_LAYER_COUNT
} tg_layer_kind;

/*
 * A layer's constructor arguments, as the PyTorch module's. Start from
 * tg_layer_defaults(kind), which holds PyTorch's defaults, and set what
 * the layer needs; a value the module would reject (a kernel of 0, a
 * stride of 0, a dropout p of 1.5) is an error in tg_model_add.
 * Parameters: conv weight (out, in / groups, kernel...) and bias (out);
 * linear weight (out, in) and bias (out); batch norm weight and bias (in)
 * with buffers running_mean, running_var (in) and num_batches_tracked
 * (int64, shape ()).
 */
typedef struct tg_layer {
    tg_layer_kind kind;
    int64_t in, out;          /* channels or features; batch norm: in = channels */
    int64_t kernel[2];        /* conv, pooling: (height, width); 1-D uses entry 0 */
    int64_t stride[2];        /* conv: 1; pooling: 0, meaning the kernel (PyTorch's None) */
    int64_t padding[2];       /* conv, pooling; pad1d: entry 0 on both ends; pad2d: entry 0
                                 above and below, entry 1 left and right */
    int64_t dilation[2];      /* conv, max pooling: 1 (average pooling: must stay 1) */
    int64_t groups;           /* conv */
    bool bias;                /* conv, linear: true */
    bool ceil_mode;           /* pooling: false; true rounds the output size up (PyTorch) */
    bool count_include_pad;   /* average pooling: true; false divides each window's sum by
                                 the input elements it covers (max pooling: must stay true) */
    double p;                 /* dropout: 0.5; leaky_relu: the negative slope, 0.01 */
    double eps, momentum;     /* batch norm: 1e-5, 0.1 */
    int dim;                  /* softmax, log_softmax: 1 */
} tg_layer;

/* PyTorch's defaults for a layer of this kind. */
TG_API tg_layer tg_layer_defaults(tg_layer_kind kind);
/* The model-file name of a kind ("conv2d", "batch_norm2d"), or "?". */
TG_API const char *tg_layer_name(tg_layer_kind kind);

/* ---------------------------------------------------------------- losses */

typedef enum tg_loss_kind {
    TG_LOSS_NONE = 0, /* the model has no loss: tg_model_loss is an error */
    TG_LOSS_CROSS_ENTROPY,
    TG_LOSS_NLL,
    TG_LOSS_MSE,
    TG_LOSS_BCE,
    TG_LOSS_BCE_WITH_LOGITS
} tg_loss_kind;

/* A model's loss, as PyTorch's functional losses take it. Start from
 * tg_loss_defaults(kind). tg_model_set_loss refuses (TG_EINVAL) an
 * ignore_index other than -100 on a loss other than cross_entropy and nll,
 * a label_smoothing other than 0 on a loss other than cross_entropy, and a
 * label_smoothing outside [0, 1] (NaN included). */
typedef struct tg_loss_spec {
    tg_loss_kind kind;
    tg_reduction reduction;   /* TG_MEAN; TG_SUM; TG_NONE: one loss per sample or element */
    int64_t ignore_index;     /* cross_entropy, nll: TG_IGNORE_INDEX (-100); targets equal to
                                 it count for nothing (and not in the mean's divisor) */
    double label_smoothing;   /* cross_entropy: 0; in [0, 1] */
} tg_loss_spec;

TG_API tg_loss_spec tg_loss_defaults(tg_loss_kind kind);
/* "cross_entropy", "mse", ...; "?" for anything else. */
TG_API const char *tg_loss_name(tg_loss_kind kind);

/* ---------------------------------------------------------------- models */

typedef struct tg_model tg_model;

/* An empty model whose examples have the given shape (batch excluded), in
 * dtype (float32 or float64). NULL with an error on bad arguments or OOM. */
TG_API tg_model *tg_model_new(tg_ctx *ctx, tg_dtype dtype, int ndim, const int64_t *input_shape);
/* Appends a layer (copied), inferring its output shape from the previous
 * one. A window (conv, pooling) gives floor((n + 2 padding - dilation
 * (kernel - 1) - 1) / stride) + 1 per axis; pooling with ceil_mode rounds
 * the quotient up instead, less one when that last window would start at
 * or beyond n + padding (in the right padding), as PyTorch. An
 * inconsistency is TG_ESHAPE or TG_EINVAL naming the layer's index
 * and kind and the shapes ("model_add: layer 1 (linear): expects 3456
 * input features in the last dimension (a flatten before it would give
 * them); its input is (6, 24, 24)"). After tg_model_build: TG_ESTATE. */
TG_API tg_status tg_model_add(tg_ctx *ctx, tg_model *m, const tg_layer *layer);
/* Sets (or replaces) the model's loss; TG_EINVAL for an unknown kind or
 * reduction or a setting tg_loss_spec refuses. */
TG_API tg_status tg_model_set_loss(tg_ctx *ctx, tg_model *m, const tg_loss_spec *loss);
/*
 * Creates the parameters (one block) and buffers, named as the state_dict,
 * and initialises them as PyTorch's modules do (tg_init_default), from
 * the context RNG, one module after the other in order (conv and linear:
 * tg_init_default; batch norm: weight 1, bias 0, running_var 1). A model
 * is built once (again: TG_ESTATE); layers cannot be added after. A model
 * whose build failed (TG_ENOMEM) can only be freed. A cross_entropy or nll
 * loss needs class scores (examples of at least one dimension): TG_ESHAPE.
 */
TG_API tg_status tg_model_build(tg_ctx *ctx, tg_model *m);
/* Frees the model, its parameters and buffers (call it before tg_ctx_free:
 * the model itself is memory from tg_malloc). NULL is a no-op; it works
 * whatever error the context holds. */
TG_API void tg_model_free(tg_ctx *ctx, tg_model *m);

/* Parses a model file's text (len bytes, not NUL-terminated; name is used
 * in messages) and builds the model, drawing its initial weights from the
 * context RNG. NULL with TG_EFORMAT "name:line: what is wrong" on any
 * error, TG_ENOMEM when memory runs out (nothing is left behind). */
TG_API tg_model *tg_model_parse(tg_ctx *ctx, const char *text, size_t len, const char *name,
                                tg_dtype dtype);
/* tg_model_parse of a file (at most 64 MiB), the path as its name;
 * TG_ENOTFOUND / TG_EIO when it cannot be read. */
TG_API tg_model *tg_model_load(tg_ctx *ctx, const char *path, tg_dtype dtype);

/* Runs the layers on x (N, input shape...) of the model's dtype and
 * returns the output (a step tensor). Dropout and batch norm follow the
 * context's training mode; in training mode batch norm updates its running
 * statistics and adds 1 to num_batches_tracked. global_avg_pool keeps the
 * pooled dimensions with size 1. Each layer's ops are recorded in a scope
 * named as its state_dict prefix and kind ("3.conv2d"), so graphs draw
 * one cluster per layer. Errors: TG_ESTATE (not built), TG_EDTYPE,
 * TG_ESHAPE (x does not fit the input), or an op's. */
TG_API tg_tensor *tg_model_forward(tg_ctx *ctx, tg_model *m, tg_tensor *x);
/* The model's loss of out against target (int64 class indices for
 * cross_entropy and nll, floats of out's shape otherwise): a scalar (shape
 * ()) for TG_MEAN and TG_SUM; for TG_NONE one loss per sample ((N) or
 * (N, d1, ...)) for cross_entropy and nll and one per element (out's
 * shape) for the others, which is not a scalar: reduce it (tg_sum) before
 * tg_backward, or give tg_backward_ex its gradient. A step tensor. Errors:
 * TG_ESTATE (no loss), or the loss op's (a target outside [0, C) other
 * than ignore_index is TG_EINVAL). */
TG_API tg_tensor *tg_model_loss(tg_ctx *ctx, const tg_model *m, tg_tensor *out, tg_tensor *target);

/*
 * A function that runs a model's batch-norm layers in place of
 * tg_batch_norm: the same arguments, and ud. It must compute what
 * tg_batch_norm computes over the batch it defines (synchronised batch
 * norm, tapegrad/dist.h, normalises with the statistics of every rank's
 * batch); the model still counts num_batches_tracked.
 */
typedef tg_tensor *(*tg_batch_norm_fn)(tg_ctx *ctx, tg_tensor *x, tg_tensor *weight,
                                       tg_tensor *bias, tg_tensor *running_mean,
                                       tg_tensor *running_var, double momentum, double eps,
                                       void *ud);
/* Runs every batch-norm layer of m through fn(..., ud) from now on; fn NULL
 * restores tg_batch_norm. ud must outlive the calls. TG_EINVAL for a NULL
 * model. */
TG_API tg_status tg_model_set_batch_norm(tg_ctx *ctx, tg_model *m, tg_batch_norm_fn fn,
                                         void *ud);

/* ---------------------------------------------------------------- inspection */

TG_API tg_dtype tg_model_dtype(const tg_model *m);
TG_API int tg_model_layer_count(const tg_model *m);
TG_API const tg_layer *tg_model_layer(const tg_model *m, int i);
TG_API const tg_loss_spec *tg_model_loss_spec(const tg_model *m);
/* The shape of one example at the input (i = -1) or after layer i: its
 * ndim, or -1 when i is out of range. */
TG_API int tg_model_shape(const tg_model *m, int i, int64_t shape[TG_MAX_DIMS]);
/* Parameters (elements) of layer i, or of the whole model for i = -1;
 * -1 when i is out of range. Known before tg_model_build. */
TG_API int64_t tg_model_param_count(const tg_model *m, int i);
/* Bytes of activations per example that layer i outputs (its output size
 * times the dtype size; flatten and activations count like any layer, the
 * input does not), or their sum over the layers for i = -1. */
TG_API int64_t tg_model_activation_bytes(const tg_model *m, int i);
/* Writes the summary table: per layer its index, kind, output shape,
 * parameter count and activation bytes per example, then the totals
 * ("total params: 42,968,388", "total activation bytes per example: ...")
 * and the loss. TG_EIO when writing fails. */
TG_API tg_status tg_model_summary(tg_ctx *ctx, const tg_model *m, FILE *f);

/* The parameter block (1-D, its grad the gradient block), once built;
 * NULL for a model without parameters. Owned by the model. */
TG_API tg_tensor *tg_model_params(const tg_model *m);
/* The state dict in PyTorch's order (each layer's parameters, then its
 * buffers): count, and entry i (NULL out of range), whose name is its key.
 * Parameters are views of the block. Owned by the model. */
TG_API int tg_model_state_count(const tg_model *m);
TG_API tg_tensor *tg_model_state(const tg_model *m, int i);
/* True when state entry i is a parameter (else a buffer). */
TG_API bool tg_model_state_is_param(const tg_model *m, int i);

/* Saves the state dict to a safetensors file (atomically), and loads one
 * into a built model: every key must be present with the right shape and
 * dtype, and (strict) no other key; the first mismatch is reported by
 * name, and nothing is written unless everything fits. Both need a built
 * model (TG_ESTATE); the errors are tg_st_save's and tg_st_load_file's. */
TG_API tg_status tg_model_save(tg_ctx *ctx, const tg_model *m, const char *path);
TG_API tg_status tg_model_load_state(tg_ctx *ctx, tg_model *m, const char *path, bool strict);

/* ---------------------------------------------------------------- initialisers */

/* torch.nn.init's nonlinearities, for the gains. */
typedef enum tg_nonlinearity {
    TG_NL_LINEAR, TG_NL_CONV, TG_NL_SIGMOID, TG_NL_TANH, TG_NL_RELU, TG_NL_LEAKY_RELU, TG_NL_SELU
} tg_nonlinearity;
typedef enum tg_fan_mode { TG_FAN_IN, TG_FAN_OUT } tg_fan_mode;

/* torch.nn.init.calculate_gain (param: leaky_relu's negative slope). */
TG_API double tg_init_gain(tg_nonlinearity nl, double param);

/*
 * In-place initialisers of a float tensor (a parameter, usually), drawn
 * from the context RNG in row-major order; usable at any time. Each bumps
 * the tensor's version (a zero-element tensor is left untouched: nothing
 * drawn, no bump). Fans as torch.nn.init: fan_in = size(1) * receptive
 * field, fan_out = size(0) * receptive field. Errors, checked before
 * anything is drawn: TG_EINVAL for NULL, another context's tensor, a
 * non-finite argument, a > b, std < 0, a negative gain, fewer than 2
 * dimensions for the fan-based ones; TG_EDTYPE for int64.
 */
TG_API tg_status tg_init_constant(tg_ctx *ctx, tg_tensor *t, double value);
TG_API tg_status tg_init_uniform(tg_ctx *ctx, tg_tensor *t, double a, double b);
TG_API tg_status tg_init_normal(tg_ctx *ctx, tg_tensor *t, double mean, double std);
TG_API tg_status tg_init_xavier_uniform(tg_ctx *ctx, tg_tensor *t, double gain);
TG_API tg_status tg_init_xavier_normal(tg_ctx *ctx, tg_tensor *t, double gain);
TG_API tg_status tg_init_kaiming_uniform(tg_ctx *ctx, tg_tensor *t, double a, tg_fan_mode mode,
                                         tg_nonlinearity nl);
TG_API tg_status tg_init_kaiming_normal(tg_ctx *ctx, tg_tensor *t, double a, tg_fan_mode mode,
                                        tg_nonlinearity nl);
/* PyTorch's reset_parameters of nn.Linear and nn.ConvNd: weight
 * kaiming_uniform(a = sqrt(5)), bias uniform(+-1 / sqrt(fan_in)); bias may
 * be NULL, else 1-D of weight's size(0) (TG_ESHAPE); a weight with fan_in 0
 * gets a zero bias. */
TG_API tg_status tg_init_default(tg_ctx *ctx, tg_tensor *weight, tg_tensor *bias);

#ifdef __cplusplus
}
#endif
#endif
