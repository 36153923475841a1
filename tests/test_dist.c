/*
 * test_dist.c: data-parallel training over MPI, run under mpirun by ctest.
 *
 * A plain program rather than a Check suite: Check's forked test cases and
 * MPI do not mix. Modes:
 *   test_dist equal f32|f64     LeNet-5, 20 steps of global batch 18 on 200
 *                               synthetic examples (short last batch, uneven
 *                               shards, padded ranks at -np 4): rank 0 also
 *                               trains alone in a second context; the plain
 *                               and bucketed runs must match it and each
 *                               other, and every rank must hold rank 0's
 *                               parameters exactly.
 *   test_dist sync-bn f32|f64   cnnbn (two batch_norm2d layers, dropout 0) trained
 *                               with synchronised batch norm must end with rank 0's
 *                               single-process parameters and running statistics;
 *                               with per-rank batch norm it must not.
 *   test_dist sync-bn-grad      the sync_batch_norm op gradchecked on one rank and
 *                               equal to batch_norm there; the distributed function
 *                               (uneven shards) against finite differences.
 *   test_dist shard             tg_dist_shard's arithmetic (one process)
 *   test_dist write-data DIR    synthetic Fashion-MNIST IDX files for the command
 *   test_dist compare A B TOL   two checkpoints' tensors agree within TOL (relative)
 *   test_dist bandwidth         MPI_Allreduce's time and bus bandwidth by size
 *                               (a measurement for docs/distributed.md, not a test)
 * Exit status 0 on success; messages name the rank.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad.h"
#include "tapegrad/dist.h"

#define N_EXAMPLES 200
#define GLOBAL_BATCH 18
#define STEPS 20
#define SEED 7

static int rank_;

static int fail(const char *what, tg_ctx *ctx)
{
    fprintf(stderr, "test_dist (rank %d): %s%s%s\n", rank_, what, ctx ? ": " : "",
            ctx ? tg_errmsg(ctx) : "");
    return 1;
}

/* ---------------------------------------------------------------- synthetic data */

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* IDX bytes of n 28x28 images (*img) and labels (*lab): a class-dependent
 * blob plus a fixed pseudo-random texture, so training makes progress. */
static void make_idx(int n, unsigned seed, unsigned char **img, size_t *img_size,
                     unsigned char **lab, size_t *lab_size)
{
    *img_size = 16 + (size_t)n * 784;
    *lab_size = 8 + (size_t)n;
    *img = malloc(*img_size);
    *lab = malloc(*lab_size);
    if (!*img || !*lab)
        return;
    put_be32(*img, 0x0803);
    put_be32(*img + 4, (uint32_t)n);
    put_be32(*img + 8, 28);
    put_be32(*img + 12, 28);
    put_be32(*lab, 0x0801);
    put_be32(*lab + 4, (uint32_t)n);
    uint32_t s = seed * 2654435761u + 1;
    for (int i = 0; i < n; i++) {
        int c = (int)((i * 7 + seed) % 10);
        (*lab)[8 + i] = (unsigned char)c;
        for (int p = 0; p < 784; p++) {
            s = s * 1664525u + 1013904223u;
            int r = p / 28, q = p % 28, dr = r - (4 + 2 * c), dq = q - (22 - 2 * c);
            int v = (int)(s >> 26) + (dr * dr + dq * dq < 30 ? 180 : 0);
            (*img)[16 + (size_t)i * 784 + (size_t)p] = (unsigned char)(v > 255 ? 255 : v);
        }
    }
}

static tg_dataset *synthetic(tg_ctx *ctx, int n)
{
    unsigned char *img, *lab;
    size_t is, ls;
    make_idx(n, 3, &img, &is, &lab, &ls);
    tg_dataset *ds = img && lab ? tg_dataset_from_mem(ctx, img, is, lab, ls, 10) : NULL;
    free(img);
    free(lab);
    return ds;
}

static int write_file(const char *dir, const char *name, const unsigned char *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(p, 1, n, f) == n;
    if (f && fclose(f))
        ok = 0;
    return ok ? 0 : fail(path, NULL);
}

static int write_data(const char *dir)
{
    static const struct {
        const char *img, *lab;
        int n;
    } sets[] = {{"train-images-idx3-ubyte", "train-labels-idx1-ubyte", 512},
                {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 100}};
    for (int k = 0; k < 2; k++) {
        unsigned char *img, *lab;
        size_t is, ls;
        make_idx(sets[k].n, (unsigned)k + 1, &img, &is, &lab, &ls);
        int rc = !img || !lab || write_file(dir, sets[k].img, img, is) ||
                 write_file(dir, sets[k].lab, lab, ls);
        free(img);
        free(lab);
        if (rc)
            return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- training */

static tg_model *lenet(tg_ctx *ctx, tg_dtype dtype)
{
    return tg_model_load(ctx, TG_MODELS "/lenet5.tgm", dtype);
}

/* cnnbn.tgm (two batch_norm2d layers) with dropout 0, so that ranks draw
 * no masks a single process would draw differently. */
static tg_model *cnnbn(tg_ctx *ctx, tg_dtype dtype)
{
    char text[4096];
    FILE *f = fopen(TG_MODELS "/cnnbn.tgm", "rb");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f)
        fclose(f);
    text[n] = '\0';
    char *p = strstr(text, "dropout 0.5");
    if (!p) {
        TG_ERROR(ctx, TG_ENOTFOUND, "cnnbn.tgm: no 'dropout 0.5' line");
        return NULL;
    }
    memcpy(p, "dropout 0.0", 11);
    return tg_model_parse(ctx, text, n, "cnnbn.tgm", dtype);
}

static tg_optim *sgd(tg_ctx *ctx, tg_model *m)
{
    tg_tensor *block = tg_model_params(m);
    tg_sgd_opts o = {0};
    o.lr = 0.05;
    o.momentum = 0.9;
    return tg_optim_sgd(ctx, &block, 1, &o);
}

/* A training run: the model, data and steps, and how ranks cooperate. */
typedef struct run_cfg {
    tg_model *(*model)(tg_ctx *ctx, tg_dtype dtype);
    int examples, global_batch, steps;
    bool sync_bn;
} run_cfg;

static const run_cfg LENET_RUN = {lenet, N_EXAMPLES, GLOBAL_BATCH, STEPS, false};

/* Every state-dict entry's values after a run, in order: numel doubles
 * (parameters and buffers). */
static int64_t state_numel(const tg_model *m)
{
    int64_t n = 0;
    for (int i = 0; i < tg_model_state_count(m); i++)
        n += tg_model_state(m, i)->numel;
    return n;
}

/*
 * c->steps steps as the trainer takes them: the epoch's order shuffled from
 * the context RNG (the same on every rank), this rank's shard of each
 * global batch; d NULL trains alone. Copies the final state dict into out
 * (numel doubles, see state_numel).
 */
static int train(const run_cfg *c, tg_dtype dtype, tg_dist *d, double *out, int64_t numel)
{
    tg_ctx *ctx = tg_ctx_new(SEED);
    tg_model *m = ctx ? c->model(ctx, dtype) : NULL;
    tg_dataset *ds = m ? synthetic(ctx, c->examples) : NULL;
    tg_optim *opt = ds ? sgd(ctx, m) : NULL;
    int64_t *order = opt ? tg_malloc(ctx, (size_t)c->examples * sizeof *order) : NULL;
    if (order && d) {
        tg_dist_broadcast_model(ctx, d, m);
        tg_dist_attach(ctx, d, m);
        if (c->sync_bn)
            tg_dist_sync_batch_norm(ctx, d, m);
    }
    tg_dataset view = ds ? *ds : (tg_dataset){0};
    view.order = order;
    int64_t per_epoch = tg_dist_batches(c->examples, c->global_batch);
    for (int step = 0; order && step < c->steps && !tg_errcode(ctx); step++) {
        int64_t b = step % per_epoch;
        if (b == 0)
            tg_dataset_shuffle(ctx, ds);
        tg_dist_shard_info sh;
        if (tg_dist_shard(d, c->examples, c->global_batch, b, &sh))
            return fail("tg_dist_shard refused a valid batch", NULL);
        for (int64_t i = 0; i < sh.count; i++)
            order[i] = ds->order[sh.start + i * sh.stride];
        tg_tensor *x, *y;
        if (tg_dataset_batch(ctx, &view, 0, sh.count, dtype, TG_LAYOUT_IMAGE, &x, &y))
            break;
        tg_dist_set_weight(d, sh.weight); /* a padded rank's example must not count */
        tg_tensor *loss = tg_model_loss(ctx, m, tg_model_forward(ctx, m, x), y);
        if (d)
            tg_dist_backward(ctx, d, loss, sh.weight);
        else
            tg_backward(ctx, loss);
        tg_optim_step(ctx, opt);
        tg_optim_zero_grad(ctx, opt);
        tg_reset(ctx);
    }
    int rc = tg_errcode(ctx) ? fail("training", ctx) : 0;
    if (!rc && state_numel(m) != numel)
        rc = fail("state size", NULL);
    for (int i = 0, k = 0; !rc && i < tg_model_state_count(m); i++) {
        const tg_tensor *t = tg_model_state(m, i);
        for (int64_t j = 0; j < t->numel; j++)
            out[k++] = tg_get(t, j);
    }
    if (order)
        tg_free(ctx, order, (size_t)c->examples * sizeof *order);
    tg_optim_free(ctx, opt);
    tg_dataset_free(ctx, ds);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
    return rc;
}

/* max |a - b| / max |b| */
static double rel_diff(const double *a, const double *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return den > 0 ? num / den : num;
}

static int run_equal(tg_dtype dtype)
{
    double tol = dtype == TG_F64 ? 1e-12 : 1e-5;
    tg_ctx *ctx = tg_ctx_new(0);
    tg_dist *d = ctx ? tg_dist_new(ctx, NULL) : NULL;
    if (!d)
        return fail("tg_dist_new", ctx);
    rank_ = tg_dist_rank(d);
    int size = tg_dist_size(d);
    tg_model *m = lenet(ctx, dtype);
    int64_t numel = m ? state_numel(m) : 0;
    tg_model_free(ctx, m);
    double *ref = calloc((size_t)numel, sizeof *ref), *par[2], *root = calloc((size_t)numel, 8);
    par[0] = calloc((size_t)numel, sizeof(double));
    par[1] = calloc((size_t)numel, sizeof(double));
    int bad = !numel || !ref || !root || !par[0] || !par[1];
    if (!bad && rank_ == 0)
        bad = train(&LENET_RUN, dtype, NULL, ref, numel);
    for (int mode = 0; mode < 2 && !bad; mode++) {
        tg_dist_opts o = tg_dist_defaults();
        o.mode = mode ? TG_DIST_PLAIN : TG_DIST_BUCKETED;
        o.bucket_bytes = 16 << 10; /* several buckets for LeNet-5's 62k parameters */
        tg_dist *dm = tg_dist_new(ctx, &o);
        bad = !dm || train(&LENET_RUN, dtype, dm, par[mode], numel);
        if (!bad && rank_ == 0 && mode == 0) {
            tg_dist_stats st;
            tg_dist_get_stats(dm, &st);
            printf("bucketed: %d buckets, %lld steps, %.0f bytes per step\n", st.buckets,
                   (long long)st.steps, st.bytes / (double)st.steps);
            if (st.buckets < 2 || st.steps != STEPS)
                bad = fail("expected several buckets and one reduction per step", NULL);
        }
        /* every rank holds rank 0's parameters, bit for bit */
        memcpy(root, par[mode], (size_t)numel * sizeof *root);
        if (!bad && MPI_Bcast(root, (int)numel, MPI_DOUBLE, 0, tg_dist_comm(dm)) != MPI_SUCCESS)
            bad = fail("MPI_Bcast", NULL);
        if (!bad && memcmp(root, par[mode], (size_t)numel * sizeof *root))
            bad = fail("parameters differ from rank 0's", NULL);
        tg_dist_free(ctx, dm);
    }
    if (!bad && rank_ == 0) {
        double e0 = rel_diff(par[0], ref, numel), e1 = rel_diff(par[1], ref, numel);
        double e01 = rel_diff(par[0], par[1], numel);
        printf("%d ranks, %s: bucketed vs one process %.3g, plain vs one process %.3g, "
               "bucketed vs plain %.3g (tolerance %g)\n", size, tg_dtype_name(dtype), e0, e1,
               e01, tol);
        if (!(e0 <= tol && e1 <= tol && e01 <= tol))
            bad = fail("parameters differ from the single-process run", NULL);
        /* the run must have moved the parameters, or equality says nothing */
        tg_ctx *c0 = tg_ctx_new(SEED);
        tg_model *m0 = c0 ? lenet(c0, dtype) : NULL;
        double moved = 0;
        for (int64_t i = 0; m0 && i < numel; i++)
            moved = fmax(moved, fabs(tg_get(tg_model_params(m0), i) - ref[i]));
        tg_model_free(c0, m0);
        tg_ctx_free(c0);
        if (!(moved > 1e-3))
            bad = fail("training did not move the parameters", NULL);
    }
    int any = tg_dist_agree(d, bad ? TG_EINVAL : TG_OK);
    free(ref);
    free(root);
    free(par[0]);
    free(par[1]);
    tg_dist_free(ctx, d);
    tg_ctx_free(ctx);
    return any >= 0;
}

/* ---------------------------------------------------------------- synchronised batch norm */

#define BN_EXAMPLES 38 /* batches of 12, 12, 12 and 2: at -np 4 two ranks are padding */
#define BN_BATCH 12
#define BN_STEPS 6

/* The largest difference of a state-dict entry relative to its size in
 * ref, over the entries that are parameters (buffers false) or buffers;
 * *worst names the entry. */
static double state_diff(const tg_model *m, const double *a, const double *ref, bool buffers,
                         const char **worst)
{
    double max = 0;
    for (int i = 0, k = 0; i < tg_model_state_count(m); i++) {
        const tg_tensor *t = tg_model_state(m, i);
        double num = 0, den = 0;
        for (int64_t j = 0; j < t->numel; j++, k++) {
            num = fmax(num, fabs(a[k] - ref[k]));
            den = fmax(den, fabs(ref[k]));
        }
        double rel = den > 0 ? num / den : num;
        if (tg_model_state_is_param(m, i) != buffers && !(rel <= max)) {
            max = rel;
            *worst = t->name;
        }
    }
    return max;
}

/*
 * cnnbn trained BN_STEPS steps with synchronised batch norm on every rank
 * must end where one process with the whole batches ends, parameters and
 * running statistics alike; with per-rank statistics it must not.
 */
static int run_sync_bn(tg_dtype dtype)
{
    double tol = dtype == TG_F64 ? 1e-12 : 1e-5;
    tg_ctx *ctx = tg_ctx_new(0);
    tg_dist *d = ctx ? tg_dist_new(ctx, NULL) : NULL;
    if (!d)
        return fail("tg_dist_new", ctx);
    rank_ = tg_dist_rank(d);
    tg_model *m = cnnbn(ctx, dtype);
    int64_t numel = m ? state_numel(m) : 0;
    double *ref = calloc((size_t)numel, sizeof *ref), *sync = calloc((size_t)numel, sizeof *sync);
    double *local = calloc((size_t)numel, sizeof *local);
    double *root = calloc((size_t)numel, sizeof *root);
    int bad = !numel || !ref || !sync || !local || !root ? fail("setup", ctx) : 0;
    run_cfg c = {cnnbn, BN_EXAMPLES, BN_BATCH, BN_STEPS, true};
    if (!bad && rank_ == 0)
        bad = train(&c, dtype, NULL, ref, numel);
    bad = bad || train(&c, dtype, d, sync, numel);
    c.sync_bn = false;
    bad = bad || train(&c, dtype, d, local, numel);
    /* every rank holds rank 0's state, bit for bit */
    memcpy(root, sync, (size_t)numel * sizeof *root);
    if (!bad && MPI_Bcast(root, (int)numel, MPI_DOUBLE, 0, tg_dist_comm(d)) != MPI_SUCCESS)
        bad = fail("MPI_Bcast", NULL);
    if (!bad && memcmp(root, sync, (size_t)numel * sizeof *root))
        bad = fail("state differs from rank 0's", NULL);
    if (!bad && rank_ == 0) {
        const char *wp = "", *wb = "", *lp = "", *lb = "";
        double ep = state_diff(m, sync, ref, false, &wp), eb = state_diff(m, sync, ref, true, &wb);
        double lpv = state_diff(m, local, ref, false, &lp);
        double lbv = state_diff(m, local, ref, true, &lb);
        printf("%d ranks, %s, sync batch norm vs one process: parameters %.3g (%s), buffers "
               "%.3g (%s); per-rank batch norm: parameters %.3g (%s), buffers %.3g (%s) "
               "(tolerance %g)\n", tg_dist_size(d), tg_dtype_name(dtype), ep, wp, eb, wb, lpv,
               lp, lbv, lb, tol);
        if (!(ep <= tol && eb <= tol))
            bad = fail("synchronised batch norm differs from the single-process run", NULL);
        if (tg_dist_size(d) > 1 && !(lpv > 100 * tol && lbv > 100 * tol))
            bad = fail("per-rank batch norm matches the single-process run: the test cannot "
                       "tell synchronised statistics from local ones", NULL);
    }
    int any = tg_dist_agree(d, bad ? TG_EINVAL : TG_OK);
    free(ref);
    free(sync);
    free(local);
    free(root);
    tg_model_free(ctx, m);
    tg_dist_free(ctx, d);
    tg_ctx_free(ctx);
    return any >= 0;
}

/* max |a - b| over n elements of two float64 tensors */
static double max_abs(const tg_tensor *a, const tg_tensor *b)
{
    double e = a && b && a->numel == b->numel ? 0 : INFINITY;
    for (int64_t i = 0; e < INFINITY && i < a->numel; i++)
        e = fmax(e, fabs(tg_get(a, i) - tg_get(b, i)));
    return e;
}

static tg_tensor *persistent(tg_ctx *ctx, const char *name, int nd, const int64_t *shape,
                             double lo, double hi)
{
    tg_tensor *p = tg_param(ctx, TG_F64, nd, shape, name);
    if (p)
        tg_init_uniform(ctx, p, lo, hi);
    return p;
}

/* On one rank (MPI_COMM_SELF) synchronised batch norm is batch_norm:
 * output, gradients and running statistics. Returns the largest difference. */
static double self_equals_batch_norm(tg_ctx *ctx)
{
    tg_dist_opts o = tg_dist_defaults();
    o.comm = MPI_COMM_SELF;
    tg_dist *self = tg_dist_new(ctx, &o);
    tg_tensor *x = persistent(ctx, "x", TG_SHAPE(3, 2, 4), -2, 2);
    tg_tensor *w = persistent(ctx, "w", TG_SHAPE(2), 0.5, 1.5);
    tg_tensor *b = persistent(ctx, "b", TG_SHAPE(2), -1, 1);
    tg_tensor *c = tg_rand(ctx, TG_F64, TG_SHAPE(3, 2, 4), -1, 1);
    tg_tensor *rm[2], *rv[2], *g[3][2];
    for (int k = 0; k < 2; k++) {
        rm[k] = tg_full(ctx, TG_F64, TG_SHAPE(2), 0.25);
        rv[k] = tg_full(ctx, TG_F64, TG_SHAPE(2), 1.5);
    }
    for (int k = 0; k < 2 && !tg_errcode(ctx); k++) {
        tg_tensor *y = k ? tg_batch_norm(ctx, x, w, b, rm[k], rv[k], 0.1, 1e-5)
                         : tg_dist_batch_norm(ctx, self, x, w, b, rm[k], rv[k], 0.1, 1e-5);
        tg_backward(ctx, tg_sum(ctx, tg_mul(ctx, y, c)));
        tg_tensor *ps[3] = {x, w, b};
        for (int i = 0; i < 3 && !tg_errcode(ctx); i++) {
            g[i][k] = tg_copy(ctx, ps[i]->grad);
            tg_tensor_zero_grad(ps[i]);
        }
    }
    double e = tg_errcode(ctx) ? INFINITY : 0;
    for (int i = 0; i < 3 && e < INFINITY; i++)
        e = fmax(e, max_abs(g[i][0], g[i][1]));
    if (e < INFINITY)
        e = fmax(e, fmax(max_abs(rm[0], rm[1]), max_abs(rv[0], rv[1])));
    tg_param_free(ctx, x);
    tg_param_free(ctx, w);
    tg_param_free(ctx, b);
    tg_reset(ctx);
    tg_dist_free(ctx, self);
    return e;
}

/* The function the ranks compute together: L = sum_r s_r sum(y_r c_r),
 * s_r this rank's share of the examples; returned on every rank. */
static double global_loss(tg_ctx *ctx, tg_dist *d, tg_tensor *x, tg_tensor *w, tg_tensor *b,
                          tg_tensor *c, double share)
{
    double l = NAN;
    TG_NO_GRAD(ctx)
    {
        tg_tensor *y = tg_dist_batch_norm(ctx, d, x, w, b, NULL, NULL, 0.1, 1e-5);
        tg_tensor *s = tg_sum(ctx, tg_mul(ctx, y, c));
        l = s ? share * tg_get(s, 0) : NAN;
    }
    tg_reset(ctx);
    tg_dist_sum(ctx, d, &l, 1);
    return l;
}

/* Central differences of global_loss against the gradients the ranks
 * compute (x's on its rank, w's and b's reduced): the largest difference. */
static double across_ranks(tg_ctx *ctx, tg_dist *d)
{
    int size = tg_dist_size(d), rank = tg_dist_rank(d);
    int64_t total = 0;
    for (int q = 0; q < size; q++)
        total += 3 + q;
    double share = (double)(3 + rank) / (double)total;
    tg_seed(ctx, 5); /* the same weight and bias on every rank */
    tg_tensor *w = persistent(ctx, "w", TG_SHAPE(2), 0.5, 1.5);
    tg_tensor *b = persistent(ctx, "b", TG_SHAPE(2), -1, 1);
    tg_seed(ctx, 100 + (uint64_t)rank); /* uneven shards of different values */
    tg_tensor *x = persistent(ctx, "x", TG_SHAPE(3 + rank, 2, 3), -2, 2);
    tg_tensor *c = tg_buffer(ctx, TG_F64, TG_SHAPE(3 + rank, 2, 3), "c");
    if (c)
        tg_init_uniform(ctx, c, -1, 1);
    if (tg_errcode(ctx))
        return INFINITY;
    /* analytic: each rank's backward of its own loss, in its units */
    tg_tensor *y = tg_dist_batch_norm(ctx, d, x, w, b, NULL, NULL, 0.1, 1e-5);
    tg_backward(ctx, tg_sum(ctx, tg_mul(ctx, y, c)));
    tg_reset(ctx);
    double gwb[4];
    for (int i = 0; i < 2 && !tg_errcode(ctx); i++) {
        gwb[i] = share * tg_get(w->grad, i);
        gwb[2 + i] = share * tg_get(b->grad, i);
    }
    tg_dist_sum(ctx, d, gwb, 4);
    double err = tg_errcode(ctx) ? INFINITY : 0, h = 1e-6;
    /* numeric: every element of every rank's x, then w and b, in the same order everywhere */
    for (int q = 0; q < size && err < INFINITY; q++)
        for (int64_t j = 0; j < (3 + q) * 6; j++) {
            double v = q == rank ? tg_get(x, j) : 0, f[2];
            for (int s = 0; s < 2; s++) {
                if (q == rank)
                    tg_set(x, j, v + (s ? -h : h));
                f[s] = global_loss(ctx, d, x, w, b, c, share);
            }
            if (q == rank) {
                tg_set(x, j, v);
                err = fmax(err, fabs((f[0] - f[1]) / (2 * h) - share * tg_get(x->grad, j)));
            }
        }
    tg_tensor *wb[2] = {w, b};
    for (int i = 0; i < 4 && err < INFINITY; i++) {
        tg_tensor *p = wb[i / 2];
        double v = tg_get(p, i % 2), f[2];
        for (int s = 0; s < 2; s++) {
            tg_set(p, i % 2, v + (s ? -h : h));
            f[s] = global_loss(ctx, d, x, w, b, c, share);
        }
        tg_set(p, i % 2, v);
        err = fmax(err, fabs((f[0] - f[1]) / (2 * h) - gwb[i]));
    }
    if (tg_errcode(ctx))
        err = INFINITY;
    tg_param_free(ctx, x);
    tg_param_free(ctx, w);
    tg_param_free(ctx, b);
    tg_buffer_free(ctx, c);
    return err;
}

/* tg_profile_record: rows of their own in tg_profile_print, only while
 * profiling; names checked. The sync op's collectives are recorded. */
static int profile_rows(tg_ctx *ctx)
{
    char long_name[64];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    if (tg_profile_record(ctx, "off", 5, 7) != TG_OK ||
        tg_profile_record(ctx, long_name, 1, 1) != TG_EINVAL)
        return fail("tg_profile_record's arguments", ctx);
    tg_clear_error(ctx);
    tg_set_profile(ctx, true);
    tg_profile_record(ctx, "test (wait)", 2000, 64);
    tg_profile_record(ctx, "test (wait)", 1000, 64);
    tg_tensor *x = tg_rand(ctx, TG_F64, TG_SHAPE(4, 3), -1, 1);
    tg_set_requires_grad(ctx, x, true);
    tg_backward(ctx, tg_sum(ctx, tg_dist_batch_norm(ctx, NULL, x, NULL, NULL, NULL, NULL, 0.1,
                                                    1e-5)));
    char buf[8192] = "";
    FILE *f = tmpfile();
    size_t n = f && tg_profile_print(ctx, f) == TG_OK && fseek(f, 0, SEEK_SET) == 0
                   ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
    tg_set_profile(ctx, false);
    tg_profile_reset(ctx);
    tg_reset(ctx);
    if (tg_errcode(ctx) || !strstr(buf, "test (wait)                              2       3.000us"
                                        "               128") ||
        !strstr(buf, "sync_batch_norm ") || strstr(buf, "off"))
        return fail("the profile's rows", ctx);
    return 0;
}

/* Gradchecks: the registered op on one rank, and the whole distributed
 * function over every rank by finite differences. */
static int run_sync_bn_grad(void)
{
    tg_ctx *ctx = tg_ctx_new(3);
    tg_dist *d = ctx ? tg_dist_new(ctx, NULL) : NULL;
    if (!d)
        return fail("tg_dist_new", ctx);
    rank_ = tg_dist_rank(d);
    int bad = 0;
    const tg_op *op = tg_op_find("sync_batch_norm");
    tg_gradcheck_result r;
    if (!op || tg_gradcheck_op(ctx, op, NULL, &r) != TG_OK)
        bad = fail("gradcheck of sync_batch_norm", ctx);
    else if (!r.passed || r.cases < 2)
        bad = fail(r.passed ? "gradcheck: fewer than 2 cases" : r.msg, NULL);
    double e_self = bad ? INFINITY : self_equals_batch_norm(ctx);
    if (!bad && !(e_self <= 1e-13))
        bad = fail("on one rank, sync batch norm differs from batch_norm", ctx);
    if (!bad)
        bad = profile_rows(ctx);
    double e_fd = across_ranks(ctx, d);
    if (!bad && !(e_fd <= 1e-7))
        bad = fail("the distributed gradient differs from finite differences", ctx);
    if (rank_ == 0)
        printf("sync_batch_norm: gradcheck %d cases (%lld entries) on one rank; against "
               "batch_norm %.3g; %d ranks against finite differences %.3g\n", r.cases,
               (long long)r.checked, e_self, tg_dist_size(d), e_fd);
    int any = tg_dist_agree(d, bad ? TG_EINVAL : TG_OK);
    tg_dist_free(ctx, d);
    tg_ctx_free(ctx);
    return any >= 0;
}

/* ---------------------------------------------------------------- sharding */

static int run_shard(void)
{
    /* one process: the whole batch, weight 1 */
    tg_dist_shard_info sh;
    if (tg_dist_shard(NULL, 10, 4, 2, &sh) || sh.start != 8 || sh.count != 2 || sh.stride != 1 ||
        sh.weight != 1 || sh.global_count != 2)
        return fail("one process: last batch", NULL);
    if (tg_dist_shard(NULL, 10, 4, 3, &sh) != TG_EINVAL || tg_dist_batches(10, 4) != 3)
        return fail("batch count", NULL);
    return 0;
}

/* ---------------------------------------------------------------- checkpoints */

static int compare(const char *a, const char *b, double tol)
{
    tg_ctx *ctx = tg_ctx_new(0);
    tg_st *fa = ctx ? tg_st_open(ctx, a) : NULL, *fb = fa ? tg_st_open(ctx, b) : NULL;
    int rc = fb ? 0 : fail("open", ctx);
    for (size_t i = 0; !rc && i < tg_st_count(fa); i++) {
        const tg_st_entry *e = tg_st_entry_at(fa, i);
        tg_tensor *x = tg_st_read(ctx, fa, e->name), *y = x ? tg_st_read(ctx, fb, e->name) : NULL;
        if (!y || x->numel != y->numel) {
            rc = fail(e->name, ctx);
            break;
        }
        double num = 0, den = 0;
        for (int64_t k = 0; k < x->numel; k++) {
            num = fmax(num, fabs(tg_get(x, k) - tg_get(y, k)));
            den = fmax(den, fabs(tg_get(y, k)));
        }
        double rel = den > 0 ? num / den : num;
        if (!(rel <= tol)) {
            fprintf(stderr, "test_dist: %s differs: %.3g relative (tolerance %g)\n", e->name,
                    rel, tol);
            rc = 1;
        }
        tg_reset(ctx);
    }
    if (!rc && tg_st_count(fa) != tg_st_count(fb))
        rc = fail("different tensor counts", NULL);
    if (!rc)
        printf("%zu tensors agree within %g\n", tg_st_count(fa), tol);
    tg_st_close(ctx, fb);
    tg_st_close(ctx, fa);
    tg_ctx_free(ctx);
    return rc;
}

/* ---------------------------------------------------------------- bandwidth */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int bandwidth(void)
{
    tg_ctx *ctx = tg_ctx_new(0);
    tg_dist *d = ctx ? tg_dist_new(ctx, NULL) : NULL;
    if (!d)
        return fail("tg_dist_new", ctx);
    int rank = tg_dist_rank(d), n = tg_dist_size(d);
    MPI_Comm comm = tg_dist_comm(d);
    size_t max_bytes = (size_t)64 << 20;
    float *buf = calloc(max_bytes / sizeof(float), sizeof(float));
    if (rank == 0)
        printf("%d ranks: size, median time, bus bandwidth 2(N-1)/N * bytes / time\n", n);
    for (size_t bytes = 4096; buf && bytes <= max_bytes; bytes *= 4) {
        enum { REPS = 15 };
        double t[REPS];
        int count = (int)(bytes / sizeof(float));
        MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, comm);
        for (int r = 0; r < REPS; r++) {
            MPI_Barrier(comm);
            double t0 = MPI_Wtime();
            MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, comm);
            t[r] = MPI_Wtime() - t0;
        }
        qsort(t, REPS, sizeof t[0], cmp_double);
        if (rank == 0)
            printf("%10zu bytes  %9.3f ms  %7.2f GB/s\n", bytes, 1e3 * t[REPS / 2],
                   2.0 * (n - 1) / n * (double)bytes / t[REPS / 2] / 1e9);
    }
    free(buf);
    tg_dist_free(ctx, d);
    tg_ctx_free(ctx);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "equal"))
        return run_equal(!strcmp(argv[2], "f64") ? TG_F64 : TG_F32);
    if (argc == 3 && !strcmp(argv[1], "sync-bn"))
        return run_sync_bn(!strcmp(argv[2], "f64") ? TG_F64 : TG_F32);
    if (argc == 2 && !strcmp(argv[1], "sync-bn-grad"))
        return run_sync_bn_grad();
    if (argc == 2 && !strcmp(argv[1], "bandwidth"))
        return bandwidth();
    if (argc == 2 && !strcmp(argv[1], "shard"))
        return run_shard();
    if (argc == 3 && !strcmp(argv[1], "write-data"))
        return write_data(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "compare"))
        return compare(argv[2], argv[3], atof(argv[4]));
    fprintf(stderr, "usage: test_dist equal f32|f64 | sync-bn f32|f64 | sync-bn-grad | shard | "
                    "write-data DIR | compare A B TOL | bandwidth\n");
    return 2;
}
