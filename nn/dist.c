/*
 * dist.c: data-parallel training over MPI (see tapegrad/dist.h).
 *
 * Invariants: every rank starts the same collectives on d->comm in the same
 * order. Buckets are therefore started strictly in index order (a bucket
 * that becomes ready before its predecessors waits for them), and every
 * bucket is started in every step, including one whose parameters received
 * no gradient. A bucket is a contiguous range of the gradient block, since
 * a block's members are consecutive slices of it; bucket 0 holds the last
 * parameters of the model, which backward finishes first.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tapegrad.h"
#include "tapegrad/dist.h"

typedef struct dist_param {
    int64_t offset, numel; /* the member's slice of the gradient block, in elements */
    int bucket;
} dist_param;

typedef struct dist_bucket {
    int64_t offset, numel;
    int params, pending;   /* members, and those whose gradient is not final yet */
    bool started, done;
    double t_start, t_done;
} dist_bucket;

struct tg_dist {
    MPI_Comm comm;
    int rank, size;
    bool owns_mpi;         /* tg_dist_new initialised MPI */
    tg_dist_mode mode;
    size_t bucket_bytes;
    /* set by tg_dist_attach */
    tg_tensor *block;
    dist_param *params;
    int n_params;
    dist_bucket *buckets;
    MPI_Request *requests; /* one per bucket, MPI_REQUEST_NULL when idle or done */
    int *done_idx;         /* MPI_Testsome's output, one per bucket */
    int n_buckets, next_start;
    /* the step in progress */
    double weight;         /* this rank's share; < 0: 1 / size */
    bool in_backward;
    double t_backward_end;
    double bn_weight;      /* tg_dist_set_weight for this step; < 0: not set */
    tg_dist_stats stats;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Raises TG_EIO with MPI's message when rc is not MPI_SUCCESS. */
static bool mpi_ok(tg_ctx *ctx, int rc, const char *what)
{
    if (rc == MPI_SUCCESS)
        return true;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "error %d", rc);
    TG_ERROR(ctx, TG_EIO, "dist: %s failed: %s", what, msg);
    return false;
}

static tg_status register_sync_bn(tg_ctx *ctx);

static MPI_Datatype mpi_type(tg_dtype dtype)
{
    return dtype == TG_F32 ? MPI_FLOAT : dtype == TG_F64 ? MPI_DOUBLE : MPI_INT64_T;
}

/* ---------------------------------------------------------------- life cycle */

tg_dist_opts tg_dist_defaults(void)
{
    tg_dist_opts o = {MPI_COMM_NULL, TG_DIST_BUCKETED, TG_DIST_BUCKET_BYTES};
    return o;
}

bool tg_dist_launched(void)
{
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin)
        return true;
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK",
                                       "PMI_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return true;
    return false;
}

tg_dist *tg_dist_new(tg_ctx *ctx, const tg_dist_opts *opts)
{
    if (!ctx || tg_errcode(ctx))
        return NULL;
    tg_dist_opts o = opts ? *opts : tg_dist_defaults();
    if (o.mode != TG_DIST_BUCKETED && o.mode != TG_DIST_PLAIN) {
        TG_ERROR(ctx, TG_EINVAL, "dist_new: mode %d is not TG_DIST_BUCKETED or TG_DIST_PLAIN",
                 (int)o.mode);
        return NULL;
    }
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (fin) {
        TG_ERROR(ctx, TG_ESTATE, "dist_new: MPI has been finalised already");
        return NULL;
    }
    bool owns = false;
    if (!init) {
        int provided;
        if (!mpi_ok(ctx, MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided),
                    "MPI_Init_thread"))
            return NULL;
        owns = true;
    }
    tg_dist *d = tg_malloc(ctx, sizeof *d);
    if (!d) {
        if (owns)
            MPI_Finalize();
        return NULL;
    }
    memset(d, 0, sizeof *d);
    d->owns_mpi = owns;
    d->mode = o.mode;
    d->bucket_bytes = o.bucket_bytes ? o.bucket_bytes : TG_DIST_BUCKET_BYTES;
    d->weight = -1;
    d->bn_weight = -1;
    MPI_Comm base = o.comm == MPI_COMM_NULL ? MPI_COMM_WORLD : o.comm;
    /* Errors come back as codes, reported through the context, instead of
     * MPI's default of aborting the job. */
    if (!mpi_ok(ctx, MPI_Comm_dup(base, &d->comm), "MPI_Comm_dup")) {
        tg_free(ctx, d, sizeof *d);
        if (owns)
            MPI_Finalize();
        return NULL;
    }
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    if (register_sync_bn(ctx)) {
        tg_dist_free(ctx, d);
        return NULL;
    }
    return d;
}

static void release(tg_ctx *ctx, void *p, size_t size)
{
    if (p)
        tg_free(ctx, p, size);
}

static void detach(tg_ctx *ctx, tg_dist *d)
{
    for (int i = 0; d->requests && i < d->n_buckets; i++)
        if (d->requests[i] != MPI_REQUEST_NULL)
            MPI_Wait(&d->requests[i], MPI_STATUS_IGNORE);
    size_t nb = (size_t)d->n_buckets;
    release(ctx, d->params, (size_t)d->n_params * sizeof *d->params);
    release(ctx, d->buckets, nb * sizeof *d->buckets);
    release(ctx, d->requests, nb * sizeof *d->requests);
    release(ctx, d->done_idx, nb * sizeof *d->done_idx);
    d->params = NULL;
    d->buckets = NULL;
    d->requests = NULL;
    d->done_idx = NULL;
    d->n_params = d->n_buckets = 0;
    d->block = NULL;
}

void tg_dist_free(tg_ctx *ctx, tg_dist *d)
{
    if (!d)
        return;
    detach(ctx, d);
    MPI_Comm_free(&d->comm);
    bool owns = d->owns_mpi;
    tg_free(ctx, d, sizeof *d);
    if (owns)
        MPI_Finalize();
}

int tg_dist_rank(const tg_dist *d) { return d ? d->rank : 0; }
int tg_dist_size(const tg_dist *d) { return d ? d->size : 1; }
MPI_Comm tg_dist_comm(const tg_dist *d) { return d ? d->comm : MPI_COMM_NULL; }

/* ---------------------------------------------------------------- collectives */

tg_status tg_dist_broadcast(tg_ctx *ctx, tg_dist *d, tg_tensor *t, int root)
{
    if (tg_errcode(ctx))
        return tg_errcode(ctx);
    if (!d || !t || root < 0 || root >= d->size)
        return TG_ERROR(ctx, TG_EINVAL, "dist_broadcast: %s", !d ? "no dist" : !t ? "no tensor"
                        : "root out of range");
    if (t->numel > INT32_MAX)
        return TG_ERROR(ctx, TG_EINVAL, "dist_broadcast: %lld elements exceed MPI's int count",
                        (long long)t->numel);
    if (!mpi_ok(ctx, MPI_Bcast(t->data, (int)t->numel, mpi_type(t->dtype), root, d->comm),
                "MPI_Bcast"))
        return tg_errcode(ctx);
    tg_mark_dirty(t);
    return TG_OK;
}

tg_status tg_dist_broadcast_model(tg_ctx *ctx, tg_dist *d, tg_model *m)
{
    if (!m)
        return TG_ERROR(ctx, TG_EINVAL, "dist_broadcast_model: no model");
    tg_tensor *block = tg_model_params(m);
    if (block)
        tg_dist_broadcast(ctx, d, block, 0);
    for (int i = 0; i < tg_model_state_count(m) && !tg_errcode(ctx); i++)
        if (!tg_model_state_is_param(m, i))
            tg_dist_broadcast(ctx, d, tg_model_state(m, i), 0);
    return tg_errcode(ctx);
}

tg_status tg_dist_sum(tg_ctx *ctx, tg_dist *d, double *values, int n)
{
    if (tg_errcode(ctx))
        return tg_errcode(ctx);
    if (!d || (!values && n > 0) || n < 0)
        return TG_ERROR(ctx, TG_EINVAL, "dist_sum: bad arguments");
    mpi_ok(ctx, MPI_Allreduce(MPI_IN_PLACE, values, n, MPI_DOUBLE, MPI_SUM, d->comm),
           "MPI_Allreduce");
    return tg_errcode(ctx);
}

int tg_dist_agree(tg_dist *d, int status)
{
    /* The lowest failing rank: a minimum over (rank if failed, else size). */
    int mine = status != TG_OK ? d->rank : d->size, first = d->size;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, d->comm) != MPI_SUCCESS)
        return status != TG_OK ? d->rank : 0;
    return first < d->size ? first : -1;
}

/* ---------------------------------------------------------------- buckets */

static int cmp_offset_desc(const void *a, const void *b)
{
    const dist_param *x = a, *y = b;
    return x->offset < y->offset ? 1 : x->offset > y->offset ? -1 : 0;
}

tg_status tg_dist_attach(tg_ctx *ctx, tg_dist *d, tg_model *m)
{
    if (tg_errcode(ctx))
        return tg_errcode(ctx);
    tg_tensor *block = m ? tg_model_params(m) : NULL;
    if (!d || !block || !block->grad)
        return TG_ERROR(ctx, TG_EINVAL, "dist_attach: %s", !d ? "no dist"
                        : !m ? "no model" : "the model has no parameters (is it built?)");
    detach(ctx, d);
    int n = 0;
    for (int i = 0; i < tg_model_state_count(m); i++)
        n += tg_model_state_is_param(m, i);
    d->params = tg_malloc(ctx, (size_t)n * sizeof *d->params);
    if (!d->params)
        return tg_errcode(ctx);
    d->n_params = n;
    size_t es = tg_dtype_size(block->dtype);
    const char *base = block->grad->data;
    for (int i = 0, k = 0; i < tg_model_state_count(m); i++) {
        tg_tensor *p = tg_model_state(m, i);
        if (!tg_model_state_is_param(m, i))
            continue;
        d->params[k].offset = (int64_t)(((const char *)p->grad->data - base) / (ptrdiff_t)es);
        d->params[k].numel = p->numel;
        k++;
    }
    /* Reverse model order: the last parameters first. */
    qsort(d->params, (size_t)n, sizeof *d->params, cmp_offset_desc);
    int64_t cap = (int64_t)(d->bucket_bytes / es);
    if (cap < 1)
        cap = 1;
    int nb = 0;
    int64_t fill = 0;
    for (int k = 0; k < n; k++) {
        if (k == 0 || (fill > 0 && fill + d->params[k].numel > cap)) {
            nb++;
            fill = 0;
        }
        fill += d->params[k].numel;
        d->params[k].bucket = nb - 1;
    }
    /* n >= 1 (the block exists), so nb >= 1 */
    d->n_buckets = nb;
    d->buckets = tg_malloc(ctx, (size_t)nb * sizeof *d->buckets);
    d->requests = tg_malloc(ctx, (size_t)nb * sizeof *d->requests);
    d->done_idx = tg_malloc(ctx, (size_t)nb * sizeof *d->done_idx);
    if (!d->buckets || !d->requests || !d->done_idx) {
        for (int b = 0; d->requests && b < nb; b++)
            d->requests[b] = MPI_REQUEST_NULL;
        detach(ctx, d);
        return tg_errcode(ctx);
    }
    d->n_buckets = nb;
    memset(d->buckets, 0, (size_t)nb * sizeof *d->buckets);
    for (int b = 0; b < nb; b++)
        d->requests[b] = MPI_REQUEST_NULL;
    for (int k = 0; k < n; k++) {
        dist_bucket *bk = &d->buckets[d->params[k].bucket];
        /* Parameters come with decreasing offsets: the last one seen starts the range. */
        if (bk->params == 0)
            bk->numel = 0;
        bk->offset = d->params[k].offset;
        bk->numel += d->params[k].numel;
        bk->params++;
    }
    d->block = block;
    d->stats.buckets = nb;
    return TG_OK;
}

static double my_weight(const tg_dist *d)
{
    return d->weight < 0 ? 1.0 / (double)d->size : d->weight;
}

/* Scales numel gradient elements from offset by the rank's weight. */
static void scale_range(tg_dist *d, int64_t offset, int64_t numel)
{
    double w = my_weight(d);
    if (w == 1.0)
        return;
    TG_DISPATCH_FLOAT(d->block->dtype, T, {
        T *g = (T *)d->block->grad->data + offset;
        for (int64_t i = 0; i < numel; i++)
            g[i] = (T)(g[i] * w);
    });
}

static bool start_bucket(tg_ctx *ctx, tg_dist *d, int b)
{
    dist_bucket *bk = &d->buckets[b];
    scale_range(d, bk->offset, bk->numel);
    void *g = (char *)d->block->grad->data + bk->offset * (int64_t)tg_dtype_size(d->block->dtype);
    bk->started = true;
    bk->t_start = now_s();
    d->stats.bytes += (double)bk->numel * (double)tg_dtype_size(d->block->dtype);
    return mpi_ok(ctx, MPI_Iallreduce(MPI_IN_PLACE, g, (int)bk->numel,
                                      mpi_type(d->block->dtype), MPI_SUM, d->comm,
                                      &d->requests[b]),
                  "MPI_Iallreduce");
}

/* Starts, in index order, every bucket that is ready (or all of them). */
static bool start_ready(tg_ctx *ctx, tg_dist *d, bool all)
{
    while (d->next_start < d->n_buckets &&
           (all || d->buckets[d->next_start].pending == 0)) {
        if (!start_bucket(ctx, d, d->next_start))
            return false;
        d->next_start++;
    }
    return true;
}

/* Notes the buckets that have completed (MPI_Testsome also progresses
 * the others, which Open MPI does mostly inside MPI calls). */
static void poll_buckets(tg_dist *d)
{
    int outcount = 0;
    if (d->next_start == 0 ||
        MPI_Testsome(d->next_start, d->requests, &outcount, d->done_idx, MPI_STATUSES_IGNORE) !=
            MPI_SUCCESS ||
        outcount == MPI_UNDEFINED)
        return;
    double t = now_s();
    for (int i = 0; i < outcount; i++) {
        d->buckets[d->done_idx[i]].done = true;
        d->buckets[d->done_idx[i]].t_done = t;
    }
}

static void begin_step(tg_dist *d, double weight)
{
    d->weight = weight;
    d->next_start = 0;
    for (int b = 0; b < d->n_buckets; b++) {
        d->buckets[b].pending = d->buckets[b].params;
        d->buckets[b].started = d->buckets[b].done = false;
    }
}

/* One step's gradient reduction in the context's profile (tg_set_profile):
 * the wait after backward with the bytes reduced, and the communication
 * time that backward hid. */
static void profile_step(tg_ctx *ctx, double wait_s, double hidden_s, double bytes)
{
    if (!tg_profiling(ctx))
        return;
    tg_profile_record(ctx, "allreduce (wait)", (uint64_t)(wait_s * 1e9), (uint64_t)bytes);
    if (hidden_s > 0)
        tg_profile_record(ctx, "allreduce (hidden by backward)", (uint64_t)(hidden_s * 1e9), 0);
}

/* Waits for every bucket, and accounts the step's communication. */
static tg_status finish_step(tg_ctx *ctx, tg_dist *d)
{
    double t0 = now_s();
    for (int b = 0; b < d->n_buckets; b++) {
        if (d->buckets[b].done)
            continue;
        if (d->requests[b] != MPI_REQUEST_NULL &&
            !mpi_ok(ctx, MPI_Wait(&d->requests[b], MPI_STATUS_IGNORE), "MPI_Wait"))
            return tg_errcode(ctx);
        d->buckets[b].done = true;
        d->buckets[b].t_done = now_s();
    }
    double t1 = now_s(), hidden = 0;
    d->stats.wait_s += t1 - t0;
    for (int b = 0; b < d->n_buckets; b++) {
        const dist_bucket *bk = &d->buckets[b];
        d->stats.comm_s += bk->t_done - bk->t_start;
        double end = bk->t_done < d->t_backward_end ? bk->t_done : d->t_backward_end;
        if (end > bk->t_start)
            hidden += end - bk->t_start;
    }
    d->stats.hidden_s += hidden;
    d->stats.steps++;
    profile_step(ctx, t1 - t0, hidden,
                 (double)d->block->numel * (double)tg_dtype_size(d->block->dtype));
    return TG_OK;
}

/* Called by backward when a parameter's gradient is final for this step. */
static void grad_ready(tg_ctx *ctx, tg_tensor *param, void *ud)
{
    tg_dist *d = ud;
    if (!d->in_backward || !param->grad || param->dtype != d->block->dtype)
        return;
    size_t es = tg_dtype_size(d->block->dtype);
    const char *base = d->block->grad->data, *g = param->grad->data;
    if (g < base || g >= base + d->block->numel * (int64_t)es)
        return; /* not a member of this model's block */
    int64_t off = (int64_t)((g - base) / (ptrdiff_t)es);
    /* params are sorted by decreasing offset */
    int lo = 0, hi = d->n_params - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (d->params[mid].offset > off)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (d->params[lo].offset != off)
        return;
    d->buckets[d->params[lo].bucket].pending--;
    start_ready(ctx, d, false);
    poll_buckets(d);
}

tg_status tg_dist_backward(tg_ctx *ctx, tg_dist *d, tg_tensor *loss, double weight)
{
    if (tg_errcode(ctx))
        return tg_errcode(ctx);
    if (!d || !d->block)
        return TG_ERROR(ctx, TG_ESTATE, "dist_backward: %s", !d ? "no dist"
                        : "no model attached (call tg_dist_attach first)");
    if (weight > 1)
        return TG_ERROR(ctx, TG_EINVAL, "dist_backward: weight %g is above 1", weight);
    begin_step(d, weight);
    double t0 = now_s();
    d->in_backward = true;
    if (d->mode == TG_DIST_BUCKETED)
        tg_set_grad_hook(ctx, grad_ready, d);
    tg_status rc = tg_backward(ctx, loss);
    if (d->mode == TG_DIST_BUCKETED)
        tg_set_grad_hook(ctx, NULL, NULL);
    d->in_backward = false;
    if (rc == TG_OK) {
        if (d->mode == TG_DIST_PLAIN) {
            d->t_backward_end = now_s();
            d->stats.backward_s += d->t_backward_end - t0;
            return tg_dist_allreduce_grads(ctx, d, weight);
        }
        /* buckets whose parameters got no gradient in this step start now */
        start_ready(ctx, d, true);
        d->t_backward_end = now_s();
        d->stats.backward_s += d->t_backward_end - t0;
        poll_buckets(d);
        rc = finish_step(ctx, d);
    }
    d->weight = -1;
    d->bn_weight = -1;
    return rc ? rc : tg_errcode(ctx);
}

tg_status tg_dist_allreduce_grads(tg_ctx *ctx, tg_dist *d, double weight)
{
    if (tg_errcode(ctx))
        return tg_errcode(ctx);
    if (!d || !d->block)
        return TG_ERROR(ctx, TG_ESTATE, "dist_allreduce_grads: %s", !d ? "no dist"
                        : "no model attached (call tg_dist_attach first)");
    if (d->block->numel > INT32_MAX)
        return TG_ERROR(ctx, TG_EINVAL, "dist_allreduce_grads: %lld elements exceed MPI's int "
                        "count", (long long)d->block->numel);
    d->weight = weight;
    scale_range(d, 0, d->block->numel);
    double t0 = now_s();
    if (!d->in_backward && d->t_backward_end < t0 - 1e9)
        d->t_backward_end = t0;
    bool ok = mpi_ok(ctx, MPI_Allreduce(MPI_IN_PLACE, d->block->grad->data, (int)d->block->numel,
                                        mpi_type(d->block->dtype), MPI_SUM, d->comm),
                     "MPI_Allreduce");
    double t1 = now_s();
    d->stats.bytes += (double)d->block->numel * (double)tg_dtype_size(d->block->dtype);
    d->stats.wait_s += t1 - t0;
    d->stats.comm_s += t1 - t0;
    d->stats.steps++;
    d->weight = -1;
    d->bn_weight = -1;
    if (ok)
        profile_step(ctx, t1 - t0, 0,
                     (double)d->block->numel * (double)tg_dtype_size(d->block->dtype));
    return ok ? TG_OK : tg_errcode(ctx);
}

/* ---------------------------------------------------------------- synchronised batch norm
 *
 * sync_batch_norm is batch_norm (tapegrad/ops.h) over the union of every
 * rank's batch; per channel, with M the values over all ranks:
 *   forward: each rank's count, mean and M2 (the sum of squared deviations
 *     from its mean), in double, two passes; MPI_Allgather; every rank
 *     merges them in rank order (Chan, Golub and LeVeque's pairwise
 *     update), so all ranks hold the same mean and biased variance M2 / M
 *     to the bit, and move the running statistics by the unbiased
 *     M2 / (M - 1) as one process with the whole batch would;
 *   vjp: with d = g w, dx = r / M (M d - A - xh B), A and B the sums of d
 *     and d xh over the global batch. The global loss is sum_r s_r L_r (s_r
 *     a rank's share, tg_dist_backward's weight) while this rank's g is
 *     dL_r/dy, so each rank allreduces s_r times its sums and divides the
 *     total by s_r: dx stays in units of L_r, which the gradient reduction
 *     multiplies by s_r like every other gradient. dw and db are local sums.
 * Every rank must run the same layers in the same order (one collective
 * per forward and one per vjp). Attributes carry the communicator and the
 * tg_dist (NULL: no tg_dist, shares by counts; MPI_COMM_NULL: no MPI, this
 * process alone, which is plain batch_norm).
 */

typedef struct sync_bn_attrs {
    tg_batch_norm_attrs bn;
    MPI_Comm comm;
    const tg_dist *d;
    int ranks; /* the communicator's size, for graph labels drawn after it is gone */
} sync_bn_attrs;

/* What forward leaves the vjp besides mean and inverse std. */
typedef struct sync_bn_aux {
    double m;     /* values per channel over all ranks */
    double share; /* this rank's values / m */
} sync_bn_aux;

typedef struct sbn {
    tg_tensor *x, *w, *b, *rm, *rv;
    int64_t n, c, s;
} sbn;

static void sbn_unpack(const tg_node *node, sbn *v)
{
    const sync_bn_attrs *a = node->attrs;
    int k = 1;
    memset(v, 0, sizeof *v);
    v->x = node->in[0];
    if (a->bn.has & TG_BN_WEIGHT)
        v->w = node->in[k++];
    if (a->bn.has & TG_BN_BIAS)
        v->b = node->in[k++];
    if (a->bn.has & TG_BN_RUNNING) {
        v->rm = node->in[k++];
        v->rv = node->in[k++];
    }
    v->n = v->x->shape[0];
    v->c = v->x->ndim > 1 ? v->x->shape[1] : 0;
    v->s = 1;
    for (int i = 2; i < v->x->ndim; i++)
        v->s *= v->x->shape[i];
}

static tg_status sbn_check(tg_ctx *ctx, const tg_node *node, const sbn *v)
{
    const sync_bn_attrs *a = node->attrs;
    const tg_batch_norm_attrs *bn = &a->bn;
    int want = 1 + !!(bn->has & TG_BN_WEIGHT) + !!(bn->has & TG_BN_BIAS) +
               2 * !!(bn->has & TG_BN_RUNNING);
    if (node->n_in != want || (bn->has & ~(TG_BN_WEIGHT | TG_BN_BIAS | TG_BN_RUNNING)))
        return TG_ERROR(ctx, TG_EINVAL, "sync_batch_norm: %d inputs do not match the flags %d",
                        node->n_in, bn->has);
    if (v->x->ndim < 2 || v->x->ndim > 4)
        return TG_ERROR(ctx, TG_ESHAPE, "sync_batch_norm: input has %d dimensions; it should "
                        "be (N, C), (N, C, L) or (N, C, H, W)", v->x->ndim);
    if (!(bn->eps > 0 && isfinite(bn->eps)) || !(bn->momentum >= 0 && bn->momentum <= 1))
        return TG_ERROR(ctx, TG_EINVAL, "sync_batch_norm: eps = %g must be positive and finite, "
                        "momentum = %g in [0, 1]", bn->eps, bn->momentum);
    if (v->c > INT32_MAX / 3)
        return TG_ERROR(ctx, TG_EINVAL, "sync_batch_norm: %lld channels exceed MPI's int count",
                        (long long)v->c);
    const tg_tensor *per_c[4] = {v->w, v->b, v->rm, v->rv};
    static const char *const names[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++)
        if (per_c[i] && (per_c[i]->dtype != v->x->dtype || per_c[i]->ndim != 1 ||
                         per_c[i]->shape[0] != v->c))
            return TG_ERROR(ctx, TG_ESHAPE, "sync_batch_norm: %s should be (%lld) of %s, as the "
                            "input's channels", names[i], (long long)v->c,
                            tg_dtype_name(v->x->dtype));
    if (v->rm && (v->rm->requires_grad || v->rv->requires_grad))
        return TG_ERROR(ctx, TG_EINVAL, "sync_batch_norm: running statistics cannot require grad");
    if (!tg_training(ctx) && v->rm)
        return TG_ERROR(ctx, TG_EINVAL, "sync_batch_norm: in eval mode the running statistics "
                        "are used, with nothing to share: run batch_norm");
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (a->comm != MPI_COMM_NULL && (!init || fin))
        return TG_ERROR(ctx, TG_ESTATE, "sync_batch_norm: MPI is %s", fin ? "finalised" :
                        "not initialised");
    return TG_OK;
}

/* Whether this rank's values count in the statistics: not when
 * tg_dist_set_weight said it holds padding (weight 0). */
static bool sbn_contributes(const sync_bn_attrs *a)
{
    return !a->d || a->d->bn_weight != 0;
}

/* This rank's share of the loss for the vjp: tg_dist_backward's weight,
 * else tg_dist_set_weight's, else its share of the values. */
static double sbn_share(const sync_bn_attrs *a, const sync_bn_aux *aux)
{
    if (a->d && a->d->in_backward)
        return my_weight(a->d);
    if (a->d && a->d->bn_weight >= 0)
        return a->d->bn_weight;
    return aux->share;
}

/* Per channel: count, mean and M2 of this rank's values, into st (3 c). */
static void local_moments(const sbn *v, bool contributes, double *st)
{
    TG_DISPATCH_FLOAT(v->x->dtype, T, {
        const T *xs = v->x->data;
        double cnt = (double)(v->n * v->s);
        for (int64_t c = 0; c < v->c; c++) {
            double sum = 0, sq = 0;
            for (int64_t i = 0; i < v->n; i++)
                for (int64_t k = 0; k < v->s; k++)
                    sum += (double)xs[(i * v->c + c) * v->s + k];
            double mean = cnt > 0 ? sum / cnt : 0;
            for (int64_t i = 0; i < v->n; i++)
                for (int64_t k = 0; k < v->s; k++) {
                    double dv = (double)xs[(i * v->c + c) * v->s + k] - mean;
                    sq += dv * dv;
                }
            st[3 * c] = contributes ? cnt : 0;
            st[3 * c + 1] = contributes ? mean : 0;
            st[3 * c + 2] = contributes ? sq : 0;
        }
    });
}

/* Merges the ranks' moments of channel c in rank order: count, mean, M2. */
static void merge_moments(const double *all, int ranks, int64_t channels, int64_t c, double *cnt,
                          double *mean, double *m2)
{
    double n = 0, mu = 0, q = 0;
    for (int r = 0; r < ranks; r++) {
        const double *st = all + 3 * (r * channels + c);
        if (st[0] == 0)
            continue;
        double nn = n + st[0], delta = st[1] - mu;
        mu += delta * (st[0] / nn);
        q += st[2] + delta * delta * (n * st[0] / nn);
        n = nn;
    }
    *cnt = n;
    *mean = mu;
    *m2 = q;
}

/* Time and bytes of sync_batch_norm's collectives, in the profile. */
static void sbn_profile(tg_ctx *ctx, double t0, size_t bytes)
{
    if (tg_profiling(ctx))
        tg_profile_record(ctx, "sync_batch_norm (comm)", (uint64_t)((now_s() - t0) * 1e9),
                          bytes);
}

/* Global statistics into mu and r (and the running ones); false with an
 * error when MPI fails or the batch is too small. */
static bool sbn_stats(tg_ctx *ctx, const sync_bn_attrs *a, const sbn *v, tg_tensor *mu,
                      tg_tensor *r, sync_bn_aux *aux)
{
    int ranks = 1;
    if (a->comm != MPI_COMM_NULL && !mpi_ok(ctx, MPI_Comm_size(a->comm, &ranks), "MPI_Comm_size"))
        return false;
    size_t per = 3 * (size_t)v->c;
    double *all = tg_scratch(ctx, ((size_t)ranks + 1) * per * sizeof *all + 1, false);
    if (!all)
        return false;
    double *mine = all + (size_t)ranks * per;
    local_moments(v, sbn_contributes(a), mine);
    double t0 = now_s();
    if (a->comm == MPI_COMM_NULL)
        memcpy(all, mine, per * sizeof *all);
    else if (!mpi_ok(ctx, MPI_Allgather(mine, (int)per, MPI_DOUBLE, all, (int)per, MPI_DOUBLE,
                                        a->comm), "MPI_Allgather"))
        return false;
    sbn_profile(ctx, t0, per * sizeof *all);
    const tg_batch_norm_attrs *bn = &a->bn;
    double total = 0;
    TG_DISPATCH_FLOAT(v->x->dtype, T, {
        T *mus = mu->data, *rs = r->data;
        T *rm = v->rm ? v->rm->data : NULL, *rv = v->rm ? v->rv->data : NULL;
        for (int64_t c = 0; c < v->c; c++) {
            double cnt, mean, m2;
            merge_moments(all, ranks, v->c, c, &cnt, &mean, &m2);
            total = cnt;
            mus[c] = (T)mean;
            rs[c] = (T)(1.0 / sqrt(m2 / cnt + bn->eps));
            if (rm && cnt > 1) {
                rm[c] = (T)((1 - bn->momentum) * (double)rm[c] + bn->momentum * mean);
                rv[c] = (T)((1 - bn->momentum) * (double)rv[c] + bn->momentum * m2 / (cnt - 1));
            }
        }
    });
    if (v->c > 0 && total <= 1) {
        TG_ERROR(ctx, TG_EINVAL, "sync_batch_norm: expected more than 1 value per channel over "
                 "all ranks when training, got %.0f", total);
        return false;
    }
    if (v->rm) {
        tg_mark_dirty(v->rm);
        tg_mark_dirty(v->rv);
    }
    aux->m = total;
    aux->share = total > 0 && sbn_contributes(a) ? (double)(v->n * v->s) / total : 0;
    return true;
}

static void sbn_normalise(const sbn *v, const tg_tensor *mu, const tg_tensor *r, tg_tensor *y)
{
    TG_DISPATCH_FLOAT(v->x->dtype, T, {
        const T *xs = v->x->data, *mus = mu->data, *rs = r->data;
        const T *w = v->w ? v->w->data : NULL, *b = v->b ? v->b->data : NULL;
        T *o = y->data;
        for (int64_t i = 0; i < v->n; i++)
            for (int64_t c = 0; c < v->c; c++)
                for (int64_t k = 0; k < v->s; k++) {
                    int64_t at = (i * v->c + c) * v->s + k;
                    T xh = (xs[at] - mus[c]) * rs[c];
                    o[at] = (w ? w[c] * xh : xh) + (b ? b[c] : 0);
                }
    });
}

static tg_tensor *sbn_forward(tg_ctx *ctx, tg_node *node)
{
    const sync_bn_attrs *a = node->attrs;
    sbn v;
    sbn_unpack(node, &v);
    if (sbn_check(ctx, node, &v))
        return NULL;
    tg_tensor *y = tg_empty(ctx, v.x->dtype, v.x->ndim, v.x->shape);
    tg_tensor *mu = tg_empty(ctx, v.x->dtype, TG_SHAPE(v.c));
    tg_tensor *r = tg_empty(ctx, v.x->dtype, TG_SHAPE(v.c));
    sync_bn_aux *aux = tg_scratch(ctx, sizeof *aux, true);
    if (!y || !mu || !r || !aux || !sbn_stats(ctx, a, &v, mu, r, aux))
        return NULL;
    node->aux = aux;
    /* the vjp reads x, the weight and the saved statistics, nothing else */
    int k = 1 + !!v.w;
    tg_node_value_unused(node, -1);
    if (v.b)
        tg_node_value_unused(node, k++);
    if (v.rm) {
        tg_node_value_unused(node, k);
        tg_node_value_unused(node, k + 1);
    }
    sbn_normalise(&v, mu, r, y);
    if (node->recording && (!tg_node_save(ctx, node, mu) || !tg_node_save(ctx, node, r)))
        return NULL;
    return y;
}

/* Writes (first contribution) or adds v to dst. */
#define SBN_PUT(add, dst, v) ((add) ? (void)((dst) += (v)) : (void)((dst) = (v)))

static tg_status sbn_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    const sync_bn_attrs *a = node->attrs;
    const sync_bn_aux *aux = node->aux;
    sbn v;
    sbn_unpack(node, &v);
    int k = 1;
    int iw = v.w ? k++ : -1, ib = v.b ? k++ : -1;
    tg_tensor *gx = gin[0], *gw = iw > 0 ? gin[iw] : NULL, *gb = ib > 0 ? gin[ib] : NULL;
    bool add_x = tg_vjp_adds(node, 0), add_w = gw && tg_vjp_adds(node, iw);
    bool add_b = gb && tg_vjp_adds(node, ib);
    /* sums[c] of g and sums[c + C] of g xh, then their global, share-weighted totals */
    double *sums = tg_scratch(ctx, 2 * (size_t)v.c * sizeof *sums + 1, false);
    if (!sums)
        return tg_errcode(ctx);
    double share = sbn_share(a, aux);
    TG_DISPATCH_FLOAT(v.x->dtype, T, {
        const T *xs = v.x->data, *g = gout->data;
        const T *mus = node->saved[0]->data, *rs = node->saved[1]->data;
        for (int64_t c = 0; c < v.c; c++) {
            double sum_g = 0, sum_gxh = 0;
            for (int64_t i = 0; i < v.n; i++)
                for (int64_t s = 0; s < v.s; s++) {
                    int64_t at = (i * v.c + c) * v.s + s;
                    sum_g += (double)g[at];
                    sum_gxh += (double)g[at] * (double)((xs[at] - mus[c]) * rs[c]);
                }
            if (gw)
                SBN_PUT(add_w, ((T *)gw->data)[c], (T)sum_gxh);
            if (gb)
                SBN_PUT(add_b, ((T *)gb->data)[c], (T)sum_g);
            sums[c] = share * sum_g;
            sums[v.c + c] = share * sum_gxh;
        }
    });
    /* every rank takes part, whether or not its input needs a gradient */
    double t0 = now_s();
    if (a->comm != MPI_COMM_NULL &&
        !mpi_ok(ctx, MPI_Allreduce(MPI_IN_PLACE, sums, (int)(2 * v.c), MPI_DOUBLE, MPI_SUM,
                                   a->comm), "MPI_Allreduce"))
        return tg_errcode(ctx);
    sbn_profile(ctx, t0, 2 * (size_t)v.c * sizeof *sums);
    if (!gx)
        return TG_OK;
    TG_DISPATCH_FLOAT(v.x->dtype, T, {
        const T *xs = v.x->data, *g = gout->data;
        const T *mus = node->saved[0]->data, *rs = node->saved[1]->data;
        const T *w = v.w ? v.w->data : NULL;
        T *dx = gx->data;
        for (int64_t c = 0; c < v.c; c++) {
            T wc = w ? w[c] : 1, rc = rs[c];
            /* a rank of share 0 (padding) has no gradient to give */
            double scale = share > 0 ? (double)wc / (share * aux->m) : 0;
            T mean_d = (T)(sums[c] * scale), mean_dxh = (T)(sums[v.c + c] * scale);
            for (int64_t i = 0; i < v.n; i++)
                for (int64_t s = 0; s < v.s; s++) {
                    int64_t at = (i * v.c + c) * v.s + s;
                    T xh = (xs[at] - mus[c]) * rc;
                    T val = share > 0 ? rc * (g[at] * wc - mean_d - xh * mean_dxh) : 0;
                    SBN_PUT(add_x, dx[at], val);
                }
        }
    });
    return TG_OK;
}

static int sbn_print(const tg_node *node, char *buf, size_t size)
{
    const sync_bn_attrs *a = node->attrs;
    return snprintf(buf, size, "momentum=%g eps=%g%s ranks=%d", a->bn.momentum, a->bn.eps,
                    a->bn.has & TG_BN_WEIGHT ? " affine" : "", a->ranks);
}

/* Gradcheck cases, run over MPI_COMM_SELF when MPI is up (else without
 * MPI): one rank, where the op must be batch_norm. */
static int sbn_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const struct {
        int nd;
        int64_t x[4];
        int has;
        const char *desc;
    } cases[] = {
        {2, {4, 3}, TG_BN_WEIGHT | TG_BN_BIAS | TG_BN_RUNNING, "(N, C) affine, running"},
        {3, {2, 3, 4}, 0, "(N, C, L) plain"},
        {4, {2, 2, 3, 2}, TG_BN_WEIGHT | TG_BN_BIAS, "(N, C, H, W) affine"},
    };
    if (index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    int64_t c = cases[index].x[1];
    int has = cases[index].has;
    s->n_in = 0;
    s->in[s->n_in++] = tg_rand(ctx, TG_F64, cases[index].nd, cases[index].x, -2, 2);
    if (has & TG_BN_WEIGHT)
        s->in[s->n_in++] = tg_rand(ctx, TG_F64, TG_SHAPE(c), 0.5, 1.5);
    if (has & TG_BN_BIAS)
        s->in[s->n_in++] = tg_rand(ctx, TG_F64, TG_SHAPE(c), -1, 1);
    int grads = s->n_in;
    if (has & TG_BN_RUNNING) {
        s->in[s->n_in++] = tg_rand(ctx, TG_F64, TG_SHAPE(c), -0.5, 0.5);
        s->in[s->n_in++] = tg_rand(ctx, TG_F64, TG_SHAPE(c), 0.5, 2);
    }
    for (int i = 0; i < grads && !tg_errcode(ctx); i++)
        tg_set_requires_grad(ctx, s->in[i], true);
    if (tg_errcode(ctx))
        return tg_errcode(ctx);
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    sync_bn_attrs a;
    memset(&a, 0, sizeof a);
    a.bn = (tg_batch_norm_attrs){0.1, 1e-5, has};
    a.comm = init && !fin ? MPI_COMM_SELF : MPI_COMM_NULL;
    a.ranks = 1;
    memcpy(s->attrs, &a, sizeof a);
    s->training = true;
    snprintf(s->desc, sizeof s->desc, "%s", cases[index].desc);
    return 1;
}

static const char *const sbn_inputs[] = {"x", "weight", "bias", "running_mean", "running_var",
                                         NULL};

static const tg_op sync_bn_op = {.name = "sync_batch_norm", .min_in = 1, .max_in = 5,
                                 .attr_size = sizeof(sync_bn_attrs), .forward = sbn_forward,
                                 .vjp = sbn_vjp, .print_attrs = sbn_print, .sample = sbn_sample,
                                 .flags = TG_OP_VJP_WRITES, .input_names = sbn_inputs};

/* Registers sync_batch_norm once per process (by tg_dist_new, so only
 * programs that run MPI ever have it). */
static tg_status register_sync_bn(tg_ctx *ctx)
{
    const tg_op *op = tg_op_find(sync_bn_op.name);
    if (op == &sync_bn_op)
        return TG_OK;
    if (op)
        return TG_ERROR(ctx, TG_EEXIST, "dist: another op is registered as '%s'", op->name);
    return tg_op_register(ctx, &sync_bn_op);
}

tg_tensor *tg_dist_batch_norm(tg_ctx *ctx, tg_dist *d, tg_tensor *x, tg_tensor *weight,
                              tg_tensor *bias, tg_tensor *running_mean, tg_tensor *running_var,
                              double momentum, double eps)
{
    if (!ctx || tg_errcode(ctx))
        return NULL;
    if (!running_mean != !running_var) {
        TG_ERROR(ctx, TG_EINVAL, "dist_batch_norm: give both running_mean and running_var, "
                 "or neither");
        return NULL;
    }
    if (!tg_training(ctx) && running_mean) /* eval: the running statistics, nothing to share */
        return tg_batch_norm(ctx, x, weight, bias, running_mean, running_var, momentum, eps);
    if (register_sync_bn(ctx))
        return NULL;
    sync_bn_attrs a;
    memset(&a, 0, sizeof a);
    a.bn = (tg_batch_norm_attrs){momentum, eps, 0};
    a.comm = d ? d->comm : MPI_COMM_NULL;
    a.d = d;
    a.ranks = tg_dist_size(d);
    tg_tensor *in[5] = {x};
    int n = 1;
    if (weight) {
        a.bn.has |= TG_BN_WEIGHT;
        in[n++] = weight;
    }
    if (bias) {
        a.bn.has |= TG_BN_BIAS;
        in[n++] = bias;
    }
    if (running_mean) {
        a.bn.has |= TG_BN_RUNNING;
        in[n++] = running_mean;
        in[n++] = running_var;
    }
    return tg_apply(ctx, &sync_bn_op, in, n, &a);
}

static tg_tensor *model_bn(tg_ctx *ctx, tg_tensor *x, tg_tensor *weight, tg_tensor *bias,
                           tg_tensor *running_mean, tg_tensor *running_var, double momentum,
                           double eps, void *ud)
{
    return tg_dist_batch_norm(ctx, ud, x, weight, bias, running_mean, running_var, momentum, eps);
}

tg_status tg_dist_sync_batch_norm(tg_ctx *ctx, tg_dist *d, tg_model *m)
{
    if (tg_errcode(ctx))
        return tg_errcode(ctx);
    if (!d || !m)
        return TG_ERROR(ctx, TG_EINVAL, "dist_sync_batch_norm: no %s", !d ? "dist" : "model");
    return tg_model_set_batch_norm(ctx, m, model_bn, d);
}

void tg_dist_set_weight(tg_dist *d, double weight)
{
    if (d)
        d->bn_weight = weight < 0 ? -1 : weight;
}

/* ---------------------------------------------------------------- sharding */

int64_t tg_dist_batches(int64_t n, int64_t global_batch)
{
    return n > 0 && global_batch > 0 ? (n + global_batch - 1) / global_batch : 0;
}

tg_status tg_dist_shard(const tg_dist *d, int64_t n, int64_t global_batch, int64_t b,
                        tg_dist_shard_info *out)
{
    if (!out || n < 1 || global_batch < 1 || b < 0 || b >= tg_dist_batches(n, global_batch))
        return TG_EINVAL;
    int64_t rank = tg_dist_rank(d), size = tg_dist_size(d);
    int64_t start = b * global_batch;
    int64_t gcount = n - start < global_batch ? n - start : global_batch;
    out->global_count = gcount;
    out->stride = size;
    if (rank < gcount) {
        out->start = start + rank;
        out->count = (gcount - rank + size - 1) / size;
        out->weight = (double)out->count / (double)gcount;
    } else {
        out->start = start; /* padding: the batch's first example, counted for nothing */
        out->count = 1;
        out->weight = 0;
    }
    return TG_OK;
}

/* ---------------------------------------------------------------- statistics */

void tg_dist_get_stats(const tg_dist *d, tg_dist_stats *out)
{
    if (out)
        *out = d ? d->stats : (tg_dist_stats){0};
}

void tg_dist_stats_reset(tg_dist *d)
{
    if (d) {
        int nb = d->stats.buckets;
        memset(&d->stats, 0, sizeof d->stats);
        d->stats.buckets = nb;
    }
}
