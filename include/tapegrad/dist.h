/*
 * tapegrad/dist.h: data-parallel training over MPI (library tapegrad_mpi).
 *
 * Every rank holds a full copy of the model and runs forward and backward
 * on its own shard of each global batch; the gradients are then summed
 * across ranks, each rank's share weighted by its part of the batch, so
 * every rank steps its optimiser with the gradient of the whole global
 * batch and the copies stay equal, as PyTorch's DistributedDataParallel:
 *
 *   tg_dist *d = tg_dist_new(ctx, NULL);             // MPI_COMM_WORLD; MPI_Init if needed
 *   tg_model *m = tg_model_load(ctx, "models/lenet5.tgm", TG_F32);
 *   tg_dist_broadcast_model(ctx, d, m);              // rank 0's weights everywhere
 *   tg_dist_attach(ctx, d, m);                       // buckets over the gradient block
 *   for (each global batch) {
 *       tg_dist_shard(d, n, global_batch, b, &sh);   // this rank's examples of it
 *       ... x, y from sh.start, sh.count, sh.stride ...
 *       tg_tensor *loss = tg_model_loss(ctx, m, tg_model_forward(ctx, m, x), y);
 *       tg_dist_backward(ctx, d, loss, sh.weight);   // backward overlapped with allreduce
 *       tg_optim_step(ctx, opt); tg_optim_zero_grad(ctx, opt); tg_reset(ctx);
 *   }
 *   tg_dist_free(ctx, d);                            // MPI_Finalize if tg_dist_new initialised it
 *
 * Gradient averaging comes in two forms (tg_dist_opts.mode):
 *   - TG_DIST_BUCKETED (default): the gradient block is cut into buckets of
 *     about bucket_bytes (default 25 MiB) in reverse model order (the last
 *     layers first, as backward produces them); tg_dist_backward installs a
 *     gradient hook (tg_set_grad_hook) that starts a bucket's
 *     MPI_Iallreduce as soon as backward has produced the last gradient in
 *     it, so communication overlaps the rest of backward; all of them are
 *     waited for before tg_dist_backward returns.
 *   - TG_DIST_PLAIN: one in-place MPI_Allreduce over the whole gradient
 *     block after backward, for comparison and debugging.
 * Both sum the same numbers in the same places, so they give the same
 * parameters (MPI's reduction order for a given element does not depend on
 * how the buffer is cut).
 *
 * Not thread-safe: one tg_dist per context, used from the thread that
 * initialised MPI. Errors are the context's (TG_EIO with MPI's message for
 * a failed MPI call). Only rank 0 should write files.
 */
#ifndef TAPEGRAD_DIST_H
#define TAPEGRAD_DIST_H

#include <mpi.h>

#include "nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tg_dist tg_dist;

typedef enum tg_dist_mode {
    TG_DIST_BUCKETED = 0, /* buckets allreduced during backward */
    TG_DIST_PLAIN = 1     /* one allreduce after backward */
} tg_dist_mode;

#define TG_DIST_BUCKET_BYTES ((size_t)25 << 20)

typedef struct tg_dist_opts {
    MPI_Comm comm;        /* the ranks to train over; MPI_COMM_NULL means MPI_COMM_WORLD */
    tg_dist_mode mode;    /* TG_DIST_BUCKETED */
    size_t bucket_bytes;  /* TG_DIST_BUCKET_BYTES; a bucket holds whole parameters, so one
                             larger than this is a bucket of its own */
} tg_dist_opts;

/* The defaults above. */
TG_API tg_dist_opts tg_dist_defaults(void);

/*
 * A distributed context over opts->comm (opts NULL: the defaults). If MPI
 * is not initialised yet it is initialised here (MPI_Init_thread, funneled)
 * and tg_dist_free finalises it; a program that initialised MPI itself
 * keeps that job. The communicator is duplicated, so tapegrad's messages
 * never mix with the program's. NULL with an error (TG_EIO: MPI failed,
 * TG_EINVAL: bad options, TG_ENOMEM).
 */
TG_API tg_dist *tg_dist_new(tg_ctx *ctx, const tg_dist_opts *opts);
/* Frees d (waiting for nothing: call it between steps); NULL is a no-op. */
TG_API void tg_dist_free(tg_ctx *ctx, tg_dist *d);

TG_API int tg_dist_rank(const tg_dist *d);
TG_API int tg_dist_size(const tg_dist *d);
/* The duplicated communicator tapegrad uses (owned by d). */
TG_API MPI_Comm tg_dist_comm(const tg_dist *d);

/* True when this process looks launched by mpirun/mpiexec or a PMI(x)
 * launcher (its environment says so) or MPI is already initialised. */
TG_API bool tg_dist_launched(void);

/* Broadcasts t's values (a persistent or step tensor of any dtype, the
 * same shape on every rank) from root; bumps its version. */
TG_API tg_status tg_dist_broadcast(tg_ctx *ctx, tg_dist *d, tg_tensor *t, int root);
/* Broadcasts a built model's parameter block and buffers from rank 0, so
 * every rank starts equal. */
TG_API tg_status tg_dist_broadcast_model(tg_ctx *ctx, tg_dist *d, tg_model *m);

/* Cuts the model's gradient block into buckets (see above). Needed once
 * before tg_dist_backward; again after the model changes. TG_EINVAL for a
 * model without parameters. */
TG_API tg_status tg_dist_attach(tg_ctx *ctx, tg_dist *d, tg_model *m);

/*
 * Backward from loss (a scalar) and the cross-rank reduction of the
 * gradient block: afterwards every rank's gradient block holds
 * sum over ranks of weight_r * (its gradient), where weight is this rank's
 * share of the global batch (its examples / all ranks' examples; the
 * tg_dist_shard weight); a negative weight means 1 / size (equal shards).
 * With mean-reduced per-rank losses this is the gradient of the global
 * batch's mean loss. The gradient block must hold zeros before (zero the
 * gradients after every step); one tg_dist_backward per step.
 */
TG_API tg_status tg_dist_backward(tg_ctx *ctx, tg_dist *d, tg_tensor *loss, double weight);

/* The reduction alone, after a tg_backward of the caller's: the gradient
 * block becomes sum over ranks of weight_r * gradient_r (one allreduce). */
TG_API tg_status tg_dist_allreduce_grads(tg_ctx *ctx, tg_dist *d, double weight);

/* Sums n doubles across ranks in place (metrics, counts). */
TG_API tg_status tg_dist_sum(tg_ctx *ctx, tg_dist *d, double *values, int n);

/*
 * Error agreement: every rank calls it at the same point with its own
 * status; returns the lowest rank that failed (status != TG_OK), or -1
 * when none did. A failing rank keeps its message in its context.
 */
TG_API int tg_dist_agree(tg_dist *d, int status);

/* ---------------------------------------------------------------- batch norm */

/*
 * Synchronised batch norm (PyTorch's SyncBatchNorm): tg_batch_norm over
 * the union of every rank's batch. In training mode the per-channel
 * statistics are gathered from all ranks (count, mean and sum of squared
 * deviations, merged in double), so every rank normalises with the global
 * batch's mean and biased variance and moves the running statistics with
 * its unbiased variance, exactly as one process holding the whole batch;
 * backward allreduces the two per-channel sums the input's gradient needs,
 * so after the gradient reduction it equals that process's gradient. Eval
 * mode with running statistics is tg_batch_norm (nothing to share). The
 * op is registered as "sync_batch_norm" by tg_dist_new; its vjp uses this
 * rank's share of the global loss: tg_dist_backward's weight inside it,
 * else tg_dist_set_weight's, else the rank's share of the batch's values.
 * Every rank must run its synchronised layers in the same order (each
 * forward and each backward is a collective on d's communicator), and an
 * error raised before the collective on one rank only (a shape that only
 * one rank has) leaves the others waiting. d NULL: this process alone.
 */
TG_API tg_tensor *tg_dist_batch_norm(tg_ctx *ctx, tg_dist *d, tg_tensor *x, tg_tensor *weight,
                                     tg_tensor *bias, tg_tensor *running_mean,
                                     tg_tensor *running_var, double momentum, double eps);
/* Runs m's batch-norm layers through tg_dist_batch_norm over d from now on
 * (tg_model_set_batch_norm; d must outlive the model's use of it, and
 * tg_model_set_batch_norm(ctx, m, NULL, NULL) undoes it). */
TG_API tg_status tg_dist_sync_batch_norm(tg_ctx *ctx, tg_dist *d, tg_model *m);
/* This rank's share of the step's global batch (the tg_dist_shard weight),
 * given before the forward; with synchronised batch norm a rank of weight
 * 0, which holds only padding, then adds nothing to the statistics. Reset
 * by tg_dist_backward and tg_dist_allreduce_grads at the end of the step;
 * negative: not given. Without synchronised batch norm it changes nothing. */
TG_API void tg_dist_set_weight(tg_dist *d, double weight);

/* ---------------------------------------------------------------- sharding */

/*
 * The examples of global batch b this rank takes, as PyTorch's
 * DistributedSampler: the global batches cut the (shared, same-seed
 * shuffled) order of n examples into batches of global_batch (the last one
 * shorter); within a batch rank r takes positions r, r + N, r + 2N, ...
 * When the last batch has fewer examples than ranks, the ranks left over
 * are padded with the batch's first example and weight 0, so every rank
 * runs the same number of steps and the padding changes nothing. Positions
 * index the order: example i of the shard is order[start + i * stride].
 */
typedef struct tg_dist_shard_info {
    int64_t start, stride, count; /* count >= 1 */
    int64_t global_count;         /* examples in this global batch */
    double weight;                /* count / global_count (0 for padding) */
} tg_dist_shard_info;

/* Global batches per epoch: ceil(n / global_batch). */
TG_API int64_t tg_dist_batches(int64_t n, int64_t global_batch);
/* Fills *out for global batch b (0 <= b < tg_dist_batches) on rank
 * tg_dist_rank(d) of tg_dist_size(d); d NULL means one process.
 * TG_EINVAL for arguments out of range. */
TG_API tg_status tg_dist_shard(const tg_dist *d, int64_t n, int64_t global_batch, int64_t b,
                               tg_dist_shard_info *out);

/* ---------------------------------------------------------------- statistics */

/* Communication of the gradient reduction, summed over tg_dist_backward
 * calls since the last tg_dist_stats_reset. */
typedef struct tg_dist_stats {
    int64_t steps;
    double bytes;        /* bytes of gradient this rank handed to allreduce */
    double backward_s;   /* seconds in backward (the hook's MPI calls included) */
    double wait_s;       /* seconds waiting for allreduce after backward returned */
    double comm_s;       /* seconds from each bucket's start to its completion, summed */
    double hidden_s;     /* the part of comm_s that ran before backward returned */
    int buckets;         /* buckets per step */
} tg_dist_stats;

TG_API void tg_dist_get_stats(const tg_dist *d, tg_dist_stats *out);
TG_API void tg_dist_stats_reset(tg_dist *d);

#ifdef __cplusplus
}
#endif
#endif
