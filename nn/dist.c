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
    double t1 = now_s();
    d->stats.wait_s += t1 - t0;
    for (int b = 0; b < d->n_buckets; b++) {
        const dist_bucket *bk = &d->buckets[b];
        d->stats.comm_s += bk->t_done - bk->t_start;
        double end = bk->t_done < d->t_backward_end ? bk->t_done : d->t_backward_end;
        if (end > bk->t_start)
            d->stats.hidden_s += end - bk->t_start;
    }
    d->stats.steps++;
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
    return ok ? TG_OK : tg_errcode(ctx);
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
