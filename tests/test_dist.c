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

static tg_dataset *synthetic(tg_ctx *ctx)
{
    unsigned char *img, *lab;
    size_t is, ls;
    make_idx(N_EXAMPLES, 3, &img, &is, &lab, &ls);
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

static tg_optim *sgd(tg_ctx *ctx, tg_model *m)
{
    tg_tensor *block = tg_model_params(m);
    tg_sgd_opts o = {0};
    o.lr = 0.05;
    o.momentum = 0.9;
    return tg_optim_sgd(ctx, &block, 1, &o);
}

/*
 * STEPS steps as the trainer takes them: the epoch's order shuffled from
 * the context RNG (the same on every rank), this rank's shard of each
 * global batch; d NULL trains alone. Copies the final parameter block into
 * out (numel doubles).
 */
static int train(tg_dtype dtype, tg_dist *d, double *out, int64_t numel)
{
    tg_ctx *ctx = tg_ctx_new(SEED);
    tg_model *m = ctx ? lenet(ctx, dtype) : NULL;
    tg_dataset *ds = m ? synthetic(ctx) : NULL;
    tg_optim *opt = ds ? sgd(ctx, m) : NULL;
    int64_t *order = opt ? tg_malloc(ctx, N_EXAMPLES * sizeof *order) : NULL;
    if (order && d) {
        tg_dist_broadcast_model(ctx, d, m);
        tg_dist_attach(ctx, d, m);
    }
    tg_dataset view = ds ? *ds : (tg_dataset){0};
    view.order = order;
    int64_t per_epoch = tg_dist_batches(N_EXAMPLES, GLOBAL_BATCH);
    for (int step = 0; order && step < STEPS && !tg_errcode(ctx); step++) {
        int64_t b = step % per_epoch;
        if (b == 0)
            tg_dataset_shuffle(ctx, ds);
        tg_dist_shard_info sh;
        if (tg_dist_shard(d, N_EXAMPLES, GLOBAL_BATCH, b, &sh))
            return fail("tg_dist_shard refused a valid batch", NULL);
        for (int64_t i = 0; i < sh.count; i++)
            order[i] = ds->order[sh.start + i * sh.stride];
        tg_tensor *x, *y;
        if (tg_dataset_batch(ctx, &view, 0, sh.count, dtype, TG_LAYOUT_IMAGE, &x, &y))
            break;
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
    if (!rc) {
        tg_tensor *block = tg_model_params(m);
        if (block->numel != numel)
            rc = fail("parameter count", NULL);
        for (int64_t i = 0; !rc && i < numel; i++)
            out[i] = tg_get(block, i);
    }
    if (order)
        tg_free(ctx, order, N_EXAMPLES * sizeof *order);
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
    int64_t numel = m ? tg_model_param_count(m, -1) : 0;
    tg_model_free(ctx, m);
    double *ref = calloc((size_t)numel, sizeof *ref), *par[2], *root = calloc((size_t)numel, 8);
    par[0] = calloc((size_t)numel, sizeof(double));
    par[1] = calloc((size_t)numel, sizeof(double));
    int bad = !numel || !ref || !root || !par[0] || !par[1];
    if (!bad && rank_ == 0)
        bad = train(dtype, NULL, ref, numel);
    for (int mode = 0; mode < 2 && !bad; mode++) {
        tg_dist_opts o = tg_dist_defaults();
        o.mode = mode ? TG_DIST_PLAIN : TG_DIST_BUCKETED;
        o.bucket_bytes = 16 << 10; /* several buckets for LeNet-5's 62k parameters */
        tg_dist *dm = tg_dist_new(ctx, &o);
        bad = !dm || train(dtype, dm, par[mode], numel);
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
    if (argc == 2 && !strcmp(argv[1], "bandwidth"))
        return bandwidth();
    if (argc == 2 && !strcmp(argv[1], "shard"))
        return run_shard();
    if (argc == 3 && !strcmp(argv[1], "write-data"))
        return write_data(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "compare"))
        return compare(argv[2], argv[3], atof(argv[4]));
    fprintf(stderr, "usage: test_dist equal f32|f64 | shard | write-data DIR | compare A B TOL\n");
    return 2;
}
