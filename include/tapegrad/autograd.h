/*
 * tapegrad/autograd.h: backward, gradients and gradient checking.
 */
#ifndef TAPEGRAD_AUTOGRAD_H
#define TAPEGRAD_AUTOGRAD_H

#include "op.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Flags of tg_backward_ex. */
enum {
    TG_RETAIN_GRAPH = 1 << 0, /* keep the tape usable for another backward */
    TG_KEEP_GRADS = 1 << 1    /* keep the gradients of intermediate tensors */
};

/*
 * Backpropagates from a scalar (one-element) tensor: seeds d(loss) = 1,
 * walks the tape in reverse, calls each vjp on the path to loss (nodes that
 * do not lead to it are skipped) and accumulates into .grad of every tensor
 * that requires it. Leaf tensors keep their gradients (parameters' persist
 * and accumulate over calls until tg_zero_grad); intermediate gradients and
 * saved values are released as soon as their node has run, and the nodes
 * are consumed: a second backward through them is a TG_ESTATE error.
 * Errors: TG_EINVAL (NULL, loss does not require grad, not a scalar),
 * TG_ESTATE (graph already consumed), errors of the vjps.
 */
TG_API tg_status tg_backward(tg_ctx *ctx, tg_tensor *loss);

/*
 * The general form: gout is dL/d(out), of out's shape and dtype (NULL means
 * ones for a one-element out); flags is a mix of TG_RETAIN_GRAPH and
 * TG_KEEP_GRADS.
 */
TG_API tg_status tg_backward_ex(tg_ctx *ctx, tg_tensor *out, const tg_tensor *gout,
                                unsigned flags);

/* Zeroes the gradients of all parameters (they keep their buffers). */
TG_API void tg_zero_grad(tg_ctx *ctx);

/* Flags of tg_zero_grad_ex. */
enum {
    TG_SET_TO_NONE = 1 << 0 /* release instead of zeroing (PyTorch's set_to_none=True) */
};

/*
 * tg_zero_grad, or with TG_SET_TO_NONE the faster form a training loop
 * wants: every parameter's grad becomes NULL (its memory is kept), and the
 * next backward writes each gradient on its first contribution instead of
 * adding to zeros, so no gradient is zero-filled or read before it is
 * written. A member of a parameter block (tg_param_block) that backward
 * reaches gets its gradient back; when the block's gradient is in use,
 * members backward did not reach get zeros, so the block never holds stale
 * values.
 */
TG_API void tg_zero_grad_ex(tg_ctx *ctx, unsigned flags);
/* The same for one tensor; for a parameter block, the block and its members. */
TG_API void tg_tensor_zero_grad_ex(tg_tensor *t, unsigned flags);

/*
 * A hook backward calls for each parameter the moment its gradient is
 * complete: right after the last vjp that contributes to it (in reverse
 * tape order), with the parameter (for a block member, the member, whose
 * gradient lies inside the block's). Data-parallel training starts sending
 * a bucket of gradients while backward computes the rest. The gradient the
 * hook sees is always defined (zeros when nothing reached it). fn = NULL
 * removes the hook. The hook must not run ops on ctx.
 */
typedef void (*tg_grad_hook)(tg_ctx *ctx, tg_tensor *param, void *ud);
TG_API void tg_set_grad_hook(tg_ctx *ctx, tg_grad_hook fn, void *ud);
/* Zeroes one tensor's gradient, if it has one. */
TG_API void tg_tensor_zero_grad(tg_tensor *t);

/* ---------------------------------------------------------------- gradcheck */

typedef struct tg_gradcheck_opts {
    double eps;   /* central-difference step; 0 means 1e-6 */
    double atol;  /* 0 means 1e-5 */
    double rtol;  /* 0 means 1e-3; pass when |a - n| <= atol + rtol * |n| */
} tg_gradcheck_opts;

typedef struct tg_gradcheck_result {
    bool passed;
    int cases;            /* cases checked (1 for a function) */
    int64_t checked;      /* gradient entries compared */
    double max_abs_err;   /* over all entries */
    double max_rel_err;   /* |a - n| / max(|n|, 1e-6), over all entries (below 1e-6
                             the differences' own noise dominates) */
    /* the first failure, when !passed: */
    int fail_case;
    int fail_input;
    int64_t fail_index;   /* flat index into that input */
    int64_t fail_output;  /* flat index into the output; -1 when compared through v */
    double analytic, numeric;
    char msg[256];        /* one line naming all of the above */
} tg_gradcheck_result;

/* A function of tensors, to gradient-check: returns its output (any shape). */
typedef tg_tensor *(*tg_fn)(tg_ctx *ctx, tg_tensor *const *in, int n, void *ud);

/*
 * Compares the gradient tapegrad computes for fn with central finite
 * differences, in float64: every input with requires_grad must be float64.
 * As PyTorch's gradcheck, it compares the whole Jacobian: one backward per
 * output element (one-hot output gradients) against one column of
 * differences per input element. When outputs x inputs exceed 2^22 entries
 * it compares v^T J for a fixed random v instead (one backward).
 * The RNG is rewound before every evaluation (dropout masks repeat), grad
 * mode is forced on, and the inputs' values and gradients are restored.
 * Returns TG_OK when the check ran (see res->passed), or an error from fn.
 */
TG_API tg_status tg_gradcheck(tg_ctx *ctx, tg_fn fn, void *ud, tg_tensor *const *in, int n,
                              const tg_gradcheck_opts *opts, tg_gradcheck_result *res);

/* The same for a registered op, over every case of its sample generator
 * (each run in the case's training mode). TG_EINVAL if it has none. */
TG_API tg_status tg_gradcheck_op(tg_ctx *ctx, const tg_op *op, const tg_gradcheck_opts *opts,
                                 tg_gradcheck_result *res);

#ifdef __cplusplus
}
#endif
#endif
