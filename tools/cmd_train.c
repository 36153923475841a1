/*
 * cmd_train.c: training a model file's network on Fashion-MNIST, and
 * evaluating a checkpoint.
 *
 * One epoch: shuffle (context RNG), mini-batches of pixels / 255 and int64
 * labels, forward, loss, backward, optimiser step, zero the gradients,
 * end the step; then the test set in eval mode without recording. A
 * checkpoint holds the model's state dict, the optimiser's state and the
 * run's own (epochs done, RNG state), so --resume continues the run exactly
 * as if it had not stopped.
 *
 * Under mpirun (built with MPI) the run is data-parallel: every rank holds
 * the model, reads its shard of each global batch (tg_dist_shard), and the
 * gradients are reduced across ranks before each optimiser step, so every
 * rank takes the same steps a single process would. Only rank 0 prints and
 * writes files; a failure on any rank stops them all.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#ifdef TG_HAVE_MPI
#include "tapegrad/dist.h"
#endif

static const char train_usage[] =
    "usage: tapegrad train MODEL [options]\n"
    "\n"
    "Trains the model file's network on Fashion-MNIST and prints, per epoch, the\n"
    "train loss, test loss and test accuracy; a progress bar goes to stderr.\n"
    "\n"
    "  --data DIR           Fashion-MNIST's IDX files (default " TG_FASHION_MNIST_DIR ",\n"
    "                       from the Debian package dataset-fashion-mnist)\n"
    "  --epochs E           epochs to run (default 1)\n"
    "  --batch B            examples per batch (default 64)\n"
    "  --optimizer NAME     sgd, adam or adamw (default adam)\n"
    "  --lr L               learning rate (default 1e-3; 0.01 for sgd)\n"
    "  --momentum M         sgd momentum (default 0.9)\n"
    "  --weight-decay W     weight decay (default 0; 0.01 for adamw)\n"
    "  --seed S             RNG seed: initialisation, shuffling, dropout (default 0)\n"
    "  --threads T          threads for the kernels and BLAS (default: the cores\n"
    "                       available, or OMP_NUM_THREADS)\n"
    "  --dtype f32|f64      parameter and activation type (default f32)\n"
    "  --save CKPT          write a checkpoint (safetensors) after every epoch\n"
    "  --resume CKPT        continue the run saved in CKPT (its epochs count)\n"
    "  --log FILE.csv       epoch, train_loss, test_loss, test_accuracy, seconds\n"
    "  --plot FILE.svg      loss and accuracy curves, redrawn after every epoch\n"
    "  --max-batches N      stop each epoch after N batches (a quick smoke run)\n"
    "  --verbose            per epoch: the gradient allreduce's cost per step\n"
    "  --profile            per epoch (rank 0): time and bytes of every op of the\n"
    "                       training steps, and of the communication\n"
    "\n"
    "Under mpirun -np N (see docs/distributed.md) it trains data-parallel: each\n"
    "rank takes 1/N of every global batch of B examples; only rank 0 prints and\n"
    "writes files.\n"
    "  --allreduce MODE     bucketed (during backward, default) or plain (after it)\n"
    "  --bucket-mb MB       gradient bucket size in MiB (default 25)\n"
    "  --sync-bn            batch norm on the statistics of the whole global batch\n"
    "                       (SyncBatchNorm) instead of each rank's shard\n";

static const char eval_usage[] =
    "usage: tapegrad eval MODEL --load CKPT [--data DIR] [--batch B] [--dtype f32|f64]\n"
    "\n"
    "Evaluates a checkpoint on Fashion-MNIST's test set: loss, accuracy and the\n"
    "confusion matrix (rows: true class, columns: predicted).\n";

typedef struct run {
    const char *model_path, *data, *save, *resume, *log, *plot, *optimizer, *allreduce;
    long long epochs, batch, seed, max_batches;
    double lr, momentum, weight_decay, bucket_mb;
    tg_dtype dtype;
    bool verbose, profile, sync_bn;
} run;

/* ---------------------------------------------------------------- ranks
 *
 * The run's view of the other processes: none in a single process or a
 * build without MPI, where every call below is a no-op. */

typedef struct par {
#ifdef TG_HAVE_MPI
    tg_dist *d;
#endif
    int rank, size;
} par;

static bool par_root(const par *p) { return p->rank == 0; }

/* True when the run is part of an MPI job (of any size). */
static bool par_joined(const par *p)
{
#ifdef TG_HAVE_MPI
    return p->d != NULL;
#else
    (void)p;
    return false;
#endif
}

/* Cuts the model's gradients into the allreduce's buckets. */
static void par_attach(tg_ctx *ctx, par *p, tg_model *m)
{
#ifdef TG_HAVE_MPI
    if (p->d)
        tg_dist_attach(ctx, p->d, m);
#else
    (void)ctx;
    (void)p;
    (void)m;
#endif
}

/* Sums n doubles over the ranks. */
static void par_sum(tg_ctx *ctx, par *p, double *v, int n)
{
#ifdef TG_HAVE_MPI
    if (p->d)
        tg_dist_sum(ctx, p->d, v, n);
#endif
}

/*
 * Error agreement at a point where any rank can fail: the failing rank
 * prints its message; every rank learns that one failed and returns
 * false, so all of them exit non-zero instead of waiting for each other.
 */
static bool par_agree(tg_ctx *ctx, par *p, const char *cmd, bool ok)
{
    if (!ok && ctx)
        cli_fail(cmd, ctx);
#ifdef TG_HAVE_MPI
    if (p->d) {
        int first = tg_dist_agree(p->d, ok ? TG_OK : TG_EIO);
        if (first >= 0 && ok && par_root(p))
            fprintf(stderr, "tapegrad %s: stopping: rank %d failed\n", cmd, first);
        return first < 0;
    }
#endif
    return ok;
}

/* A failure in the middle of a step, where the other ranks are inside a
 * collective: print it and take the whole job down. */
static int par_fail(tg_ctx *ctx, par *p, const char *cmd)
{
    int rc = cli_fail(cmd, ctx);
#ifdef TG_HAVE_MPI
    if (p->d && p->size > 1) {
        fflush(NULL);
        MPI_Abort(tg_dist_comm(p->d), rc);
    }
#endif
    return rc;
}

/* Rank 0's RNG state on every rank, so all shuffle the same way. */
static void par_sync_rng(tg_ctx *ctx, par *p)
{
#ifdef TG_HAVE_MPI
    if (p->d && p->size > 1) {
        tg_rng_state st = tg_rng_get(ctx);
        MPI_Bcast(st.s, 4, MPI_UINT64_T, 0, tg_dist_comm(p->d));
        tg_rng_set(ctx, st);
    }
#endif
}

/* Broadcasts tensors from rank 0 (a resumed checkpoint's). */
static void par_broadcast(tg_ctx *ctx, par *p, const tg_st_item *items, size_t n)
{
#ifdef TG_HAVE_MPI
    for (size_t i = 0; p->d && i < n && !tg_errcode(ctx); i++)
        tg_dist_broadcast(ctx, p->d, items[i].tensor, 0);
#endif
}

/* Batch norm over the global batch (--sync-bn); one process needs nothing. */
static void par_sync_bn(tg_ctx *ctx, par *p, tg_model *m)
{
#ifdef TG_HAVE_MPI
    if (p->d)
        tg_dist_sync_batch_norm(ctx, p->d, m);
#else
    (void)ctx;
    (void)p;
    (void)m;
#endif
}

/* This rank's share of the coming step, so that a rank holding only
 * padding adds nothing to synchronised batch-norm statistics. */
static void par_set_weight(par *p, double weight)
{
#ifdef TG_HAVE_MPI
    tg_dist_set_weight(p->d, weight);
#else
    (void)p;
    (void)weight;
#endif
}

static tg_status par_backward(tg_ctx *ctx, par *p, tg_tensor *loss, double weight)
{
#ifdef TG_HAVE_MPI
    if (p->d)
        return tg_dist_backward(ctx, p->d, loss, weight);
#endif
    return tg_backward(ctx, loss);
}

/* Joins the job when launched by mpirun. False (with a message) when MPI
 * cannot start, or when the build has no MPI and the launcher asks for it. */
static bool par_init(tg_ctx *ctx, const run *r, par *p)
{
    p->rank = 0;
    p->size = 1;
#ifdef TG_HAVE_MPI
    if (!tg_dist_launched())
        return true;
    tg_dist_opts o = tg_dist_defaults();
    o.mode = !strcmp(r->allreduce, "plain") ? TG_DIST_PLAIN : TG_DIST_BUCKETED;
    o.bucket_bytes = (size_t)(r->bucket_mb * 1048576.0);
    if (!(p->d = tg_dist_new(ctx, &o)))
        return false;
    p->rank = tg_dist_rank(p->d);
    p->size = tg_dist_size(p->d);
    if (!par_root(p) && !freopen("/dev/null", "w", stdout))
        return false;
    return true;
#else
    (void)ctx;
    (void)r;
    const char *n = getenv("OMPI_COMM_WORLD_SIZE");
    if (!n)
        n = getenv("PMI_SIZE");
    if (n && strcmp(n, "1")) {
        fprintf(stderr, "tapegrad train: launched as one of %s processes, but this tapegrad "
                        "was built without MPI\n", n);
        return false;
    }
    return true;
#endif
}

static void par_free(tg_ctx *ctx, par *p)
{
#ifdef TG_HAVE_MPI
    tg_dist_free(ctx, p->d);
    p->d = NULL;
#endif
}

typedef struct metrics {
    double loss, accuracy;
    long long confusion[10][10];
} metrics;

/* ---------------------------------------------------------------- arguments */

static int parse_train(int argc, char **argv, run *r)
{
    const char *epochs = "1", *batch = "64", *lr = NULL, *momentum = "0.9", *wd = NULL;
    const char *seed = "0", *dtype = "f32", *maxb = "0", *threads = NULL, *pos[1];
    const char *bucket = "25";
    r->optimizer = "adam";
    r->allreduce = "bucketed";
    cli_opt opts[] = {{"data", &r->data, NULL, 0},         {"epochs", &epochs, NULL, 0},
                      {"batch", &batch, NULL, 0},          {"optimizer", &r->optimizer, NULL, 0},
                      {"lr", &lr, NULL, 0},                {"momentum", &momentum, NULL, 0},
                      {"weight-decay", &wd, NULL, 0},      {"seed", &seed, NULL, 0},
                      {"dtype", &dtype, NULL, 0},       {"threads", &threads, NULL, 0},
                      {"save", &r->save, NULL, 0},         {"resume", &r->resume, NULL, 0},
                      {"log", &r->log, NULL, 0},           {"plot", &r->plot, NULL, 0},
                      {"max-batches", &maxb, NULL, 0},     {"verbose", NULL, &r->verbose, 0},
                      {"allreduce", &r->allreduce, NULL, 0}, {"bucket-mb", &bucket, NULL, 0},
                      {"sync-bn", NULL, &r->sync_bn, 0},   {"profile", NULL, &r->profile, 0},
                      {NULL, NULL, NULL, 0}};
    int n, rc = cli_parse("train", train_usage, argc, argv, opts, pos, 1, 1, &n);
    if (rc != CLI_OK)
        return rc;
    r->model_path = pos[0];
    bool sgd = !strcmp(r->optimizer, "sgd"), adamw = !strcmp(r->optimizer, "adamw");
    if (!sgd && !adamw && strcmp(r->optimizer, "adam")) {
        fprintf(stderr, "tapegrad train: --optimizer '%s' is not sgd, adam or adamw\n",
                r->optimizer);
        return CLI_USAGE;
    }
    if (strcmp(r->allreduce, "bucketed") && strcmp(r->allreduce, "plain")) {
        fprintf(stderr, "tapegrad train: --allreduce '%s' is not bucketed or plain\n",
                r->allreduce);
        return CLI_USAGE;
    }
    long long n_threads = 0;
    bool ok = cli_int("train", "epochs", epochs, 1, 100000, &r->epochs) &&
              (!threads || cli_int("train", "threads", threads, 1, 1024, &n_threads)) &&
              cli_int("train", "batch", batch, 1, 1 << 20, &r->batch) &&
              cli_int("train", "seed", seed, 0, (long long)(~0ULL >> 1), &r->seed) &&
              cli_int("train", "max-batches", maxb, 0, 1LL << 40, &r->max_batches) &&
              cli_double("train", "lr", lr ? lr : sgd ? "0.01" : "1e-3", 0, 1e6, &r->lr) &&
              cli_double("train", "momentum", momentum, 0, 1e6, &r->momentum) &&
              cli_double("train", "bucket-mb", bucket, 1.0 / 1024, 1 << 20, &r->bucket_mb) &&
              cli_double("train", "weight-decay", wd ? wd : adamw ? "0.01" : "0", 0, 1e6,
                         &r->weight_decay) &&
              cli_dtype("train", dtype, &r->dtype);
    if (ok && n_threads)
        tg_set_num_threads((int)n_threads);
    return ok ? CLI_OK : CLI_USAGE;
}

/* ---------------------------------------------------------------- pieces of a run */

static tg_optim *make_optimizer(tg_ctx *ctx, const run *r, tg_tensor *block)
{
    if (!strcmp(r->optimizer, "sgd")) {
        tg_sgd_opts o = {0};
        o.lr = r->lr;
        o.momentum = r->momentum;
        o.weight_decay = r->weight_decay;
        return tg_optim_sgd(ctx, &block, 1, &o);
    }
    tg_adam_opts o = tg_adam_defaults();
    o.lr = r->lr;
    o.weight_decay = r->weight_decay;
    return !strcmp(r->optimizer, "adamw") ? tg_optim_adamw(ctx, &block, 1, &o)
                                          : tg_optim_adam(ctx, &block, 1, &o);
}

/* The layout a model's input takes: (1, H, W) images or flat (H*W) vectors. */
static bool layout_of(tg_ctx *ctx, const tg_model *m, const tg_dataset *ds, tg_layout *out)
{
    int64_t s[TG_MAX_DIMS];
    int nd = tg_model_shape(m, -1, s);
    if (nd == 3 && s[0] == 1 && s[1] == ds->height && s[2] == ds->width) {
        *out = TG_LAYOUT_IMAGE;
        return true;
    }
    if (nd == 1 && s[0] == ds->height * ds->width) {
        *out = TG_LAYOUT_FLAT;
        return true;
    }
    char shape[96] = "(";
    for (int i = 0; i < nd; i++)
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), i ? ", %lld" : "%lld",
                 (long long)s[i]);
    TG_ERROR(ctx, TG_ESHAPE, "the model takes examples of shape %s); Fashion-MNIST gives "
                             "(1, %lld, %lld) images or %lld pixels", shape,
             (long long)ds->height, (long long)ds->width, (long long)(ds->height * ds->width));
    return false;
}

/* Loss and accuracy over a data set in eval mode, nothing recorded. */
/* Loss and accuracy over a data set in eval mode, nothing recorded. Each
 * rank takes a contiguous part; the sums and counts are reduced. */
static tg_status evaluate(tg_ctx *ctx, par *p, tg_model *m, const tg_dataset *ds,
                          long long batch, tg_layout layout, metrics *out)
{
    memset(out, 0, sizeof *out);
    bool was_training = tg_set_training(ctx, false);
    bool was_grad = tg_set_grad_enabled(ctx, false);
    double loss_sum = 0;
    long long correct = 0;
    int64_t lo = ds->n * p->rank / p->size, hi = ds->n * (p->rank + 1) / p->size;
    for (int64_t start = lo; start < hi && !tg_errcode(ctx); start += batch) {
        tg_tensor *x, *y;
        int64_t count = hi - start < batch ? hi - start : batch;
        if (tg_dataset_batch(ctx, ds, start, count, tg_model_dtype(m), layout, &x, &y))
            break;
        tg_tensor *logits = tg_model_forward(ctx, m, x);
        tg_tensor *loss = tg_model_loss(ctx, m, logits, y);
        if (!loss)
            break;
        loss_sum += tg_get(loss, 0) * (double)y->numel;
        int64_t classes = logits->shape[1];
        for (int64_t i = 0; i < y->numel; i++) {
            int64_t best = 0;
            for (int64_t c = 1; c < classes; c++)
                if (tg_get(logits, i * classes + c) > tg_get(logits, i * classes + best))
                    best = c;
            int64_t truth = ((const int64_t *)y->data)[i];
            correct += best == truth;
            if (truth < 10 && best < 10)
                out->confusion[truth][best]++;
        }
        tg_reset(ctx);
    }
    tg_set_grad_enabled(ctx, was_grad);
    tg_set_training(ctx, was_training);
    if (p->size > 1) {
        /* every rank reaches the reduction, failed or not; the caller agrees on errors */
        double sums[2 + 100];
        sums[0] = loss_sum;
        sums[1] = (double)correct;
        for (int i = 0; i < 100; i++)
            sums[2 + i] = (double)out->confusion[i / 10][i % 10];
        if (tg_errcode(ctx))
            return par_fail(ctx, p, "train"), tg_errcode(ctx); /* the others are in the sum */
        par_sum(ctx, p, sums, 102);
        loss_sum = sums[0];
        correct = (long long)sums[1];
        for (int i = 0; i < 100; i++)
            out->confusion[i / 10][i % 10] = (long long)sums[2 + i];
    }
    out->loss = loss_sum / (double)ds->n;
    out->accuracy = (double)correct / (double)ds->n;
    return tg_errcode(ctx);
}

/* This rank's examples of global batch b: start, stride, count, weight. */
static void shard_of(const par *p, int64_t n, int64_t batch, int64_t b, int64_t *start,
                     int64_t *stride, int64_t *count, double *weight)
{
#ifdef TG_HAVE_MPI
    tg_dist_shard_info sh;
    if (p->d && tg_dist_shard(p->d, n, batch, b, &sh) == TG_OK) {
        *start = sh.start;
        *stride = sh.stride;
        *count = sh.count;
        *weight = sh.weight;
        return;
    }
#endif
    *start = b * batch;
    *stride = 1;
    *count = n - *start < batch ? n - *start : batch;
    *weight = 1;
}

/* Communication per step, on rank 0 (--verbose). */
static void print_comm(par *p)
{
#ifdef TG_HAVE_MPI
    tg_dist_stats st;
    tg_dist_get_stats(p->d, &st);
    if (!p->d || !par_root(p) || st.steps == 0)
        return;
    double n = (double)st.steps;
    printf("  allreduce over %d ranks, %d bucket(s): %.3f MB per step; backward %.2f ms, "
           "waiting after it %.2f ms per step; %.0f%% of the communication hidden behind "
           "backward\n", p->size, st.buckets, st.bytes / n / 1e6, 1e3 * st.backward_s / n,
           1e3 * st.wait_s / n, st.comm_s > 0 ? 100 * st.hidden_s / st.comm_s : 0.0);
    fflush(stdout);
    tg_dist_stats_reset(p->d);
#else
    (void)p;
#endif
}

/* One training epoch; returns the mean training loss over all ranks' examples
 * (NaN on error). The shared order comes from rank 0's RNG; each rank then
 * draws its own dropout masks (rank 0 from the stream a single process uses). */
static double train_epoch(tg_ctx *ctx, par *p, const run *r, tg_model *m, tg_optim *opt,
                          tg_dataset *ds, int64_t *shard_order, tg_layout layout, int epoch)
{
    long long batches = (ds->n + r->batch - 1) / r->batch;
    if (r->max_batches && r->max_batches < batches)
        batches = r->max_batches;
    char label[32];
    snprintf(label, sizeof label, "epoch %d", epoch);
    cli_progress bar;
    if (par_root(p))
        cli_progress_start(&bar, label, batches);
    tg_set_training(ctx, true);
    tg_profile_reset(ctx);
    par_sync_rng(ctx, p);
    tg_dataset_shuffle(ctx, ds);
    if (!par_root(p)) {
        tg_rng_state st = tg_rng_get(ctx);
        tg_seed(ctx, st.s[0] ^ (0x9e3779b97f4a7c15ULL * (uint64_t)p->rank));
    }
    tg_dataset view = *ds;
    view.order = shard_order;
    double sums[2] = {0, 0}; /* loss * examples, examples */
    for (long long b = 0; b < batches && !tg_errcode(ctx); b++) {
        int64_t start, stride, count;
        double weight;
        shard_of(p, ds->n, r->batch, b, &start, &stride, &count, &weight);
        for (int64_t i = 0; i < count; i++)
            shard_order[i] = ds->order[start + i * stride];
        tg_tensor *x, *y;
        if (tg_dataset_batch(ctx, &view, 0, count, r->dtype, layout, &x, &y))
            break;
        par_set_weight(p, weight);
        tg_tensor *loss = tg_model_loss(ctx, m, tg_model_forward(ctx, m, x), y);
        if (par_backward(ctx, p, loss, weight) || tg_optim_step(ctx, opt) ||
            tg_optim_zero_grad(ctx, opt))
            break;
        double l = tg_get(loss, 0);
        if (weight > 0) {
            sums[0] += l * (double)count;
            sums[1] += (double)count;
        }
        if (par_root(p))
            cli_progress_step(&bar, count * p->size, l);
        tg_reset(ctx);
    }
    if (par_root(p))
        cli_progress_end(&bar);
    if (tg_errcode(ctx)) {
        if (p->size > 1)
            par_fail(ctx, p, "train");
        return NAN;
    }
    par_sum(ctx, p, sums, 2);
    if (r->verbose)
        print_comm(p);
    return tg_errcode(ctx) ? NAN : sums[0] / sums[1];
}

/* ---------------------------------------------------------------- checkpoints */

/* The run's own state: epochs done and the RNG, as int64 tensors. */
typedef struct run_state {
    tg_tensor *epoch, *rng;
} run_state;

static tg_status run_state_new(tg_ctx *ctx, run_state *s)
{
    s->epoch = tg_buffer(ctx, TG_I64, 0, NULL, "trainer.epoch");
    s->rng = tg_buffer(ctx, TG_I64, 1, (const int64_t[]){4}, "trainer.rng");
    return tg_errcode(ctx);
}

static void run_state_store(tg_ctx *ctx, run_state *s, int epoch)
{
    tg_rng_state st = tg_rng_get(ctx);
    ((int64_t *)s->epoch->data)[0] = epoch;
    memcpy(s->rng->data, st.s, sizeof st.s);
    tg_mark_dirty(s->epoch);
    tg_mark_dirty(s->rng);
}

/* Every (name, tensor) a checkpoint holds: the state dict, the
 * optimiser's state, the run's. *n receives the count; tg_free the list. */
static tg_st_item *checkpoint_items(tg_ctx *ctx, const tg_model *m, const tg_optim *opt,
                                    const run_state *s, size_t *n)
{
    size_t n_opt = 0;
    const tg_st_item *o = tg_optim_state(opt, &n_opt);
    size_t n_model = (size_t)tg_model_state_count(m);
    *n = n_model + n_opt + 2;
    tg_st_item *items = tg_malloc(ctx, *n * sizeof *items);
    if (!items)
        return NULL;
    for (size_t i = 0; i < n_model; i++)
        items[i] = (tg_st_item){NULL, tg_model_state(m, (int)i)};
    memcpy(items + n_model, o, n_opt * sizeof *o);
    items[n_model + n_opt] = (tg_st_item){NULL, s->epoch};
    items[n_model + n_opt + 1] = (tg_st_item){NULL, s->rng};
    return items;
}

static tg_status checkpoint(tg_ctx *ctx, const tg_model *m, tg_optim *opt, run_state *s,
                            const char *path, bool save)
{
    size_t n;
    tg_st_item *items = checkpoint_items(ctx, m, opt, s, &n);
    if (!items)
        return tg_errcode(ctx);
    if (save)
        tg_st_save(ctx, path, items, n, NULL, 0);
    else
        tg_st_load_file(ctx, path, items, n, true);
    tg_free(ctx, items, n * sizeof *items);
    return tg_errcode(ctx);
}

/* ---------------------------------------------------------------- outputs */

static void log_epoch(FILE *csv, int epoch, double train_loss, const metrics *t, double secs)
{
    printf("epoch %d  train loss %.4f  test loss %.4f  test accuracy %.2f%%  (%.1f s)\n", epoch,
           train_loss, t->loss, 100 * t->accuracy, secs);
    fflush(stdout);
    if (csv) {
        fprintf(csv, "%d,%.6f,%.6f,%.6f,%.3f\n", epoch, train_loss, t->loss, t->accuracy, secs);
        fflush(csv);
    }
}

static int train_loop(tg_ctx *ctx, par *p, const run *r, tg_model *m, tg_optim *opt,
                      run_state *s, tg_dataset *train, tg_dataset *test, int first_epoch)
{
    tg_layout layout;
    bool ok = layout_of(ctx, m, train, &layout);
    int64_t *shard_order = ok ? tg_malloc(ctx, (size_t)train->n * sizeof *shard_order) : NULL;
    FILE *csv = NULL;
    if (shard_order && par_root(p) && r->log &&
        !(csv = fopen(r->log, first_epoch > 1 ? "a" : "w")))
        TG_ERROR(ctx, TG_EIO, "cannot write '%s'", r->log);
    int n = (int)r->epochs;
    double *curves = tg_errcode(ctx) ? NULL : calloc((size_t)3 * (size_t)n, sizeof *curves);
    if (!curves && !tg_errcode(ctx))
        TG_ERROR(ctx, TG_ENOMEM, "out of memory for the curves");
    int rc = par_agree(ctx, p, "train", !tg_errcode(ctx)) ? CLI_OK : CLI_FAIL;
    if (csv && first_epoch == 1)
        fprintf(csv, "epoch,train_loss,test_loss,test_accuracy,seconds\n");
    for (int e = first_epoch, done = 0; rc == CLI_OK && e < first_epoch + n; e++, done++) {
        double t0 = cli_now();
        double train_loss = train_epoch(ctx, p, r, m, opt, train, shard_order, layout, e);
        double secs = cli_now() - t0;
        if (r->profile && par_root(p) && !tg_errcode(ctx)) {
            printf("profile of epoch %d's training steps (rank 0):\n", e);
            tg_profile_print(ctx, stdout);
        }
        metrics t;
        if (tg_errcode(ctx) || evaluate(ctx, p, m, test, r->batch, layout, &t)) {
            rc = cli_fail("train", ctx);
            break;
        }
        curves[done] = train_loss;
        curves[n + done] = t.loss;
        curves[2 * n + done] = t.accuracy;
        run_state_store(ctx, s, e);
        bool written = true;
        if (par_root(p)) {
            log_epoch(csv, e, train_loss, &t, secs);
            written = !(r->save && checkpoint(ctx, m, opt, s, r->save, true));
            if (written && r->plot &&
                !cli_plot_curves(r->plot, first_epoch, done + 1, curves, curves + n,
                                 curves + 2 * n)) {
                written = false;
                TG_ERROR(ctx, TG_EIO, "cannot draw '%s'", r->plot);
            }
        }
        if (!par_agree(ctx, p, "train", written))
            rc = CLI_FAIL;
    }
    free(curves);
    if (csv)
        fclose(csv);
    if (shard_order)
        tg_free(ctx, shard_order, (size_t)train->n * sizeof *shard_order);
    return rc;
}

int cmd_train(int argc, char **argv)
{
    run r = {0};
    r.data = TG_FASHION_MNIST_DIR;
    int rc = parse_train(argc, argv, &r);
    if (rc != CLI_OK)
        return rc == CLI_HELP ? CLI_OK : rc;
    tg_ctx *ctx = tg_ctx_new((uint64_t)r.seed);
    if (!ctx)
        return cli_fail("train", NULL);
    tg_set_profile(ctx, r.profile);
    par p = {0};
    if (!par_init(ctx, &r, &p)) {
        if (tg_errcode(ctx))
            cli_fail("train", ctx);
        par_free(ctx, &p);
        tg_ctx_free(ctx);
        return CLI_FAIL;
    }
    /* Only rank 0 writes; its checks stop every rank. */
    bool ok = !par_root(&p) || ((!r.log || cli_writable("train", "log", r.log)) &&
                                (!r.plot || cli_writable("train", "plot", r.plot)) &&
                                (!r.save || cli_writable("train", "save", r.save)));
    ok = par_agree(NULL, &p, "train", ok);
    tg_model *m = ok ? tg_model_load(ctx, r.model_path, r.dtype) : NULL;
    tg_dataset *train = m ? tg_fashion_mnist(ctx, r.data, "train") : NULL;
    tg_dataset *test = train ? tg_fashion_mnist(ctx, r.data, "test") : NULL;
    tg_optim *opt = test ? make_optimizer(ctx, &r, tg_model_params(m)) : NULL;
    run_state s = {0};
    int first = 1;
    if (opt)
        run_state_new(ctx, &s);
    /* rank 0 reads the checkpoint and hands it to the others */
    if (opt && !tg_errcode(ctx) && r.resume && par_root(&p))
        checkpoint(ctx, m, opt, &s, r.resume, false);
    ok = ok && par_agree(ctx, &p, "train", !tg_errcode(ctx));
    if (ok && par_joined(&p)) {
        size_t n = 0;
        tg_st_item *items = checkpoint_items(ctx, m, opt, &s, &n);
        if (items) {
            par_broadcast(ctx, &p, items, n);
            tg_free(ctx, items, n * sizeof *items);
        }
        par_attach(ctx, &p, m);
        if (r.sync_bn)
            par_sync_bn(ctx, &p, m);
        ok = par_agree(ctx, &p, "train", !tg_errcode(ctx));
    }
    if (ok && r.resume) {
        tg_rng_state st;
        memcpy(st.s, s.rng->data, sizeof st.s);
        tg_rng_set(ctx, st);
        first = (int)((const int64_t *)s.epoch->data)[0] + 1;
    }
    rc = ok ? train_loop(ctx, &p, &r, m, opt, &s, train, test, first) : CLI_FAIL;
    tg_optim_free(ctx, opt);
    tg_dataset_free(ctx, test);
    tg_dataset_free(ctx, train);
    tg_model_free(ctx, m);
    par_free(ctx, &p);
    tg_ctx_free(ctx);
    return rc;
}

/* ---------------------------------------------------------------- eval */

static void print_confusion(const metrics *t)
{
    printf("confusion matrix (rows: true class, columns: predicted)\n     ");
    for (int c = 0; c < 10; c++)
        printf("%6d", c);
    printf("\n");
    for (int i = 0; i < 10; i++) {
        printf("%4d ", i);
        for (int c = 0; c < 10; c++)
            printf("%6lld", t->confusion[i][c]);
        printf("\n");
    }
}

int cmd_eval(int argc, char **argv)
{
    const char *load = NULL, *data = TG_FASHION_MNIST_DIR, *batch_s = "256", *dtype_s = "f32";
    const char *pos[1];
    cli_opt opts[] = {{"load", &load, NULL, 0},   {"data", &data, NULL, 0},
                      {"batch", &batch_s, NULL, 0}, {"dtype", &dtype_s, NULL, 0},
                      {NULL, NULL, NULL, 0}};
    int n, rc = cli_parse("eval", eval_usage, argc, argv, opts, pos, 1, 1, &n);
    if (rc != CLI_OK)
        return rc == CLI_HELP ? CLI_OK : rc;
    long long batch;
    tg_dtype dtype;
    if (!cli_int("eval", "batch", batch_s, 1, 1 << 20, &batch) || !cli_dtype("eval", dtype_s, &dtype))
        return CLI_USAGE;
    if (!load) {
        fprintf(stderr, "tapegrad eval: --load CKPT is required\n%s", eval_usage);
        return CLI_USAGE;
    }
    tg_ctx *ctx = tg_ctx_new(0);
    tg_model *m = ctx ? tg_model_load(ctx, pos[0], dtype) : NULL;
    if (m)
        tg_model_load_state(ctx, m, load, false); /* the optimiser's entries are not the model's */
    tg_dataset *test = tg_errcode(ctx) ? NULL : tg_fashion_mnist(ctx, data, "test");
    tg_layout layout;
    metrics t;
    par one = {0};
    one.size = 1;
    if (test && layout_of(ctx, m, test, &layout) &&
        evaluate(ctx, &one, m, test, batch, layout, &t) == TG_OK) {
        printf("test loss %.4f  test accuracy %.2f%%  (%lld examples)\n", t.loss,
               100 * t.accuracy, (long long)test->n);
        print_confusion(&t);
        rc = CLI_OK;
    } else {
        rc = cli_fail("eval", ctx);
    }
    tg_dataset_free(ctx, test);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
    return rc;
}
