/*
 * tapegrad/optim.h: optimisers (SGD, Adam, AdamW), learning-rate
 * schedules and gradient clipping, with PyTorch 1.13's arithmetic.
 *
 * An optimiser updates a list of tensors (the parameters) from their
 * gradients. Its state (momentum buffers, Adam's moments, step counts, the
 * learning rate) lives in persistent tensors beside the parameters, named
 * so that a safetensors checkpoint saves and restores it exactly, and a
 * run resumed from a checkpoint continues bit for bit. A training loop:
 *
 *   tg_tensor *params[] = {W1, b1, W2, b2};
 *   tg_adam_opts o = tg_adam_defaults();
 *   o.lr = 0.01;
 *   tg_optim *opt = tg_optim_adamw(ctx, params, 4, &o);
 *   tg_optim_set_schedule(ctx, opt, &(tg_lr_schedule){.kind = TG_LR_COSINE, .t_max = 10});
 *   for (int epoch = 0; epoch < 10; epoch++) {
 *       tg_optim_zero_grad(ctx, opt);
 *       tg_backward(ctx, loss_of(ctx, params));
 *       tg_clip_grad_norm(ctx, params, 4, 1.0, false, NULL);
 *       tg_optim_step(ctx, opt);
 *       tg_reset(ctx);
 *       tg_optim_schedule_step(ctx, opt);
 *   }
 *   size_t n;
 *   const tg_st_item *state = tg_optim_state(opt, &n);
 *   tg_st_save(ctx, "optim.safetensors", state, n, NULL, 0);  // tg_st_load_file restores it
 *   tg_optim_free(ctx, opt);
 *
 * State names (prefix "optimizer" unless the options give another; i is
 * the parameter's index in the list given at creation):
 *   <prefix>.lr                       float64 (): the learning rate now
 *   <prefix>.initial_lr               float64 (): the schedule's base rate
 *   <prefix>.last_epoch               int64 ():   schedule steps taken
 *   <prefix>.state.<i>.step           int64 ():   updates of parameter i
 *   <prefix>.state.<i>.momentum_buffer            SGD with momentum
 *   <prefix>.state.<i>.exp_avg, .exp_avg_sq       Adam, AdamW
 *   <prefix>.state.<i>.max_exp_avg_sq             Adam, AdamW with amsgrad
 * The per-parameter tensors have the parameter's shape and dtype. The step
 * count is kept per parameter, as PyTorch keeps it, because a parameter
 * whose gradient is NULL is skipped (as PyTorch skips p.grad is None):
 * its count and buffers wait. The state tensors are buffers of the context
 * (tg_buffer_next lists them, so code collecting a model's buffers should
 * skip the prefix); the optimiser owns them: do not free them yourself.
 * Hyperparameters other than the learning rate are not state: the code
 * that resumes gives them again.
 *
 * Every update is computed in the parameter's dtype, with the scalars
 * converted to it, in the order PyTorch's single-tensor kernels use, and
 * bumps the version of each parameter and state tensor it writes.
 */
#ifndef TAPEGRAD_OPTIM_H
#define TAPEGRAD_OPTIM_H

#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An optimiser over a fixed list of parameters; owned by the caller. */
typedef struct tg_optim tg_optim;

/*
 * SGD, as torch.optim.SGD: d = g + weight_decay * p; with momentum,
 * buf = momentum * buf + (1 - dampening) * d (buf = d on the first update)
 * and d = nesterov ? d + momentum * buf : buf; then p -= lr * d.
 */
typedef struct tg_sgd_opts {
    double lr;              /* >= 0 */
    double momentum;        /* >= 0; 0 keeps no momentum buffer */
    double dampening;       /* finite */
    double weight_decay;    /* >= 0: L2 penalty added to the gradient */
    bool nesterov;          /* needs momentum > 0 and dampening == 0 */
    bool refuse_nonfinite;  /* see tg_optim_step */
    const char *prefix;     /* of the state names; NULL: "optimizer" */
} tg_sgd_opts;

/*
 * Adam and AdamW, as torch.optim.Adam / AdamW (single-tensor path):
 * step += 1; Adam: g += weight_decay * p; AdamW: p *= 1 - lr * weight_decay;
 * m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
 * amsgrad: vmax = max(vmax, v), used in place of v below;
 * denom = sqrt(v) / sqrt(1 - beta2^step) + eps;
 * p -= (lr / (1 - beta1^step)) * m / denom.
 */
typedef struct tg_adam_opts {
    double lr;              /* >= 0 */
    double beta1, beta2;    /* each in [0, 1) */
    double eps;             /* >= 0 */
    double weight_decay;    /* >= 0 */
    bool amsgrad;
    bool refuse_nonfinite;  /* see tg_optim_step */
    const char *prefix;     /* of the state names; NULL: "optimizer" */
} tg_adam_opts;

/* PyTorch's defaults for Adam: lr 1e-3, betas (0.9, 0.999), eps 1e-8,
 * weight_decay 0, no amsgrad (AdamW's default weight_decay is 1e-2). */
TG_API tg_adam_opts tg_adam_defaults(void);

/*
 * Creates an optimiser over params[0..n-1] (the list is copied; the
 * tensors must outlive the optimiser). Every parameter must be a float
 * tensor of ctx with requires_grad, and appear once. The state tensors are
 * created now, zero-filled (step counts 0), learning rate opts->lr, so a
 * checkpoint can be loaded into them before the first step; tg_optim_step
 * allocates nothing.
 * Returns NULL with an error in ctx: TG_EINVAL naming the offending value
 * (NULL ctx, params or opts, n == 0, a NULL parameter, one of another
 * context, one without requires_grad, a repeated one, lr < 0, momentum < 0,
 * weight_decay < 0, betas outside [0, 1), eps < 0, any NaN, nesterov
 * without momentum or with dampening, a prefix longer than 128 bytes),
 * TG_ENOMEM (nothing is left behind), or an error already held.
 * For tg_optim_adam and tg_optim_adamw, opts NULL means tg_adam_defaults()
 * (with weight_decay 1e-2 for AdamW).
 */
TG_API tg_optim *tg_optim_sgd(tg_ctx *ctx, tg_tensor *const *params, size_t n,
                              const tg_sgd_opts *opts);
TG_API tg_optim *tg_optim_adam(tg_ctx *ctx, tg_tensor *const *params, size_t n,
                               const tg_adam_opts *opts);
TG_API tg_optim *tg_optim_adamw(tg_ctx *ctx, tg_tensor *const *params, size_t n,
                                const tg_adam_opts *opts);

/* Frees the optimiser and its state tensors. Call it before tg_ctx_free,
 * with the context it was made in (another is TG_EINVAL, nothing freed);
 * NULL is a no-op; works whatever error ctx holds. */
TG_API void tg_optim_free(tg_ctx *ctx, tg_optim *opt);

/*
 * Updates every parameter whose gradient is not NULL, once. Everything is
 * checked before anything is written, so a failed step changes no
 * parameter and no state:
 *   TG_EINVAL: NULL, an optimiser of another context, a learning rate
 *     (e.g. one loaded from a file) that is negative or NaN, a step count
 *     that is negative or at its largest;
 *   TG_EDTYPE / TG_ESHAPE: a gradient whose dtype or shape is not its
 *     parameter's;
 *   TG_ENONFINITE, only with refuse_nonfinite: some gradient holds a NaN
 *     or an Inf; the message names the parameter (its name and index) and
 *     the flat index and value of the first bad element.
 */
TG_API tg_status tg_optim_step(tg_ctx *ctx, tg_optim *opt);

/* Releases the gradients of the optimiser's parameters, as PyTorch's
 * zero_grad() (set_to_none=True): their grad becomes NULL and the next
 * backward writes them without zero-filling first (tg_zero_grad_ex). A
 * parameter backward does not reach keeps a NULL grad and tg_optim_step
 * skips it, as PyTorch; members of a parameter block get zeros instead
 * once any member is reached (the block is one tensor). Zeroing in place
 * is tg_tensor_zero_grad. TG_EINVAL for NULL. */
TG_API tg_status tg_optim_zero_grad(tg_ctx *ctx, tg_optim *opt);

/* Sets the learning rate (>= 0, not NaN, else TG_EINVAL). */
TG_API tg_status tg_optim_set_lr(tg_ctx *ctx, tg_optim *opt, double lr);
/* The learning rate now; NaN for NULL. */
TG_API double tg_optim_lr(const tg_optim *opt);

/*
 * The state as (name, tensor) items for tg_st_save and tg_st_load, in the
 * order listed at the top of this file (scalars first, then parameter by
 * parameter); *n receives their number. Owned by the optimiser, valid
 * until tg_optim_free. NULL (and *n = 0) for NULL.
 */
TG_API const tg_st_item *tg_optim_state(const tg_optim *opt, size_t *n);

/* ---------------------------------------------------------------- schedules */

typedef enum tg_lr_kind {
    TG_LR_STEP = 1,   /* StepLR: lr *= gamma every step_size epochs */
    TG_LR_COSINE = 2  /* CosineAnnealingLR: from the base rate down to eta_min
                         over t_max epochs, and back up over the next t_max */
} tg_lr_kind;

typedef struct tg_lr_schedule {
    tg_lr_kind kind;
    int64_t step_size;  /* TG_LR_STEP: > 0 */
    double gamma;       /* TG_LR_STEP: >= 0, finite */
    int64_t t_max;      /* TG_LR_COSINE: > 0, at most INT64_MAX / 2 */
    double eta_min;     /* TG_LR_COSINE: >= 0, finite */
} tg_lr_schedule;

/*
 * Attaches a schedule (copied), as constructing a PyTorch scheduler does:
 * initial_lr = the learning rate now, last_epoch = 0. NULL detaches.
 * TG_EINVAL for a bad kind or field (named). The schedule's kind and
 * fields are not state: to resume, attach the same schedule, then load
 * the checkpoint (which restores lr, initial_lr and last_epoch).
 */
TG_API tg_status tg_optim_set_schedule(tg_ctx *ctx, tg_optim *opt, const tg_lr_schedule *s);

/*
 * Advances the schedule one epoch (scheduler.step()): last_epoch += 1 and
 * the learning rate follows PyTorch's recursive (chainable) forms:
 *   StepLR:  lr *= gamma when last_epoch % step_size == 0;
 *   cosine:  when (last_epoch - 1 - t_max) % (2 t_max) == 0,
 *              lr += (initial_lr - eta_min)(1 - cos(pi / t_max)) / 2,
 *            otherwise
 *              lr = (1 + cos(pi e / t_max)) / (1 + cos(pi (e - 1) / t_max))
 *                   (lr - eta_min) + eta_min,   e = last_epoch.
 * They read the learning rate now, so tg_optim_set_lr between epochs
 * chains as in PyTorch. TG_ESTATE without a schedule; TG_EINVAL when
 * last_epoch (e.g. loaded from a file) is negative or at its largest.
 */
TG_API tg_status tg_optim_schedule_step(tg_ctx *ctx, tg_optim *opt);

/* ---------------------------------------------------------------- clipping */

/*
 * torch.nn.utils.clip_grad_norm_ with the L2 norm: total = the norm of all
 * gradients of params[0..n-1] together (NULL gradients skipped; the sum of
 * squares is accumulated in double); when max_norm / (total + 1e-6) < 1,
 * every gradient is scaled by it (in its dtype; its version is bumped).
 * *total_norm (may be NULL) receives total. A NaN total leaves the
 * gradients unchanged; an infinite one scales them by 0 (an Inf element
 * becomes NaN, as in PyTorch).
 * Errors: TG_EINVAL (NULL ctx or params with n > 0, a NULL parameter or one
 * of another context, max_norm negative or NaN), TG_ENONFINITE when
 * error_if_nonfinite and total is NaN or infinite (nothing is scaled).
 */
TG_API tg_status tg_clip_grad_norm(tg_ctx *ctx, tg_tensor *const *params, size_t n,
                                   double max_norm, bool error_if_nonfinite, double *total_norm);

#ifdef __cplusplus
}
#endif
#endif
