/*
 * tapegrad_bench.c: the library's side of the benchmarks (the workloads
 * B1-B6 of WORKLOADS.md; torch_ref.py is PyTorch's side).
 *
 *   tapegrad-bench WORKLOAD [--threads N] [--steps S] [--warmup W] [--json]
 *                           [--seed S] [--profile] [--epochs E] [--data DIR]
 *
 * Each workload builds the network torch_ref.py builds (same shapes,
 * PyTorch's default initialisation, same optimiser and settings, float32,
 * same loss reductions) through the public API and times whole training
 * steps as tapegrad runs them: forward, loss, backward, optimiser step,
 * release the gradients (zero_grad with set_to_none, as torch_ref.py),
 * end the step (tg_reset). The output line carries the
 * fields torch_ref.py prints, under the same names, so bench/compare.sh can
 * put the two side by side. The pseudo-workload `sgemm` times OpenBLAS's
 * sgemm on 1024 x 1024 matrices: the practical ceiling for B4's GFLOP/s.
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tapegrad.h"

#define DEFAULT_STEPS 50
#define DEFAULT_WARMUP 3
#define FMNIST_BATCH 64

static const char usage[] =
    "usage: tapegrad-bench WORKLOAD [--threads N] [--steps S] [--warmup W] [--json]\n"
    "                               [--seed S] [--profile]\n"
    "                               [--epochs E] [--data DIR] [--test-batches T]\n"
    "\n"
    "WORKLOAD: seed1d (B1), mlp2 (B2), lenet (B3), conv (B4), cnnbn (B5), fmnist (B6),\n"
    "or sgemm (OpenBLAS sgemm 1024 x 1024 x 1024, the machine's ceiling for conv).\n"
    "\n"
    "  --threads N   threads for the kernels and BLAS (default: the cores available)\n"
    "  --steps S     timed steps (default 50); fmnist: batches per epoch (default all)\n"
    "  --warmup W    untimed warm-up steps (default 3; fmnist has none)\n"
    "  --json        print the result as one JSON object\n"
    "  --seed S      the context's seed (default 0, as torch.manual_seed(0));\n"
    "                fmnist: the shuffle's stream too\n"
    "  --profile     time every op (tg_set_profile) and print tg_profile_print's\n"
    "                table to stderr after the run (not for sgemm)\n"
    "  --epochs E    fmnist: epochs (default 1)\n"
    "  --data DIR    fmnist: the IDX files (default " TG_FASHION_MNIST_DIR ")\n"
    "  --test-batches T  fmnist: evaluate only the first T test batches (default all;\n"
    "                torch_ref.py has no such option: for smoke runs only)\n";

/* ---------------------------------------------------------------- results */

/* One output field; printed in the order added, formatted as torch_ref.py does. */
typedef struct field {
    const char *key;
    enum { F_INT, F_REAL, F_STR } kind;
    long long i;
    double r;
    const char *s;
} field;

typedef struct result {
    field f[24];
    int n;
} result;

static void put_int(result *res, const char *key, long long v)
{
    res->f[res->n++] = (field){key, F_INT, v, 0, NULL};
}
static void put_real(result *res, const char *key, double v)
{
    res->f[res->n++] = (field){key, F_REAL, 0, v, NULL};
}
static void put_str(result *res, const char *key, const char *v)
{
    res->f[res->n++] = (field){key, F_STR, 0, 0, v};
}

/* torch_ref.py's fmt_line: losses, accuracy and GFLOP per step with 4
 * decimals, other reals with 1 from 10 up and 3 below. */
static void print_line(const char *workload, const result *res)
{
    printf("%s", workload);
    for (int i = 0; i < res->n; i++) {
        const field *f = &res->f[i];
        if (f->kind == F_INT)
            printf(" %s=%lld", f->key, f->i);
        else if (f->kind == F_STR)
            printf(" %s=%s", f->key, f->s);
        else if (!strcmp(f->key, "test_accuracy") || !strcmp(f->key, "test_loss") ||
                 !strcmp(f->key, "last_epoch_train_loss") || !strcmp(f->key, "gflop_per_step"))
            printf(" %s=%.4f", f->key, f->r);
        else
            printf(" %s=%.*f", f->key, f->r >= 10 ? 1 : 3, f->r);
    }
    printf("\n");
}

static int print_json(const char *workload, const result *res)
{
    json_t *o = json_object();
    int bad = !o || json_object_set_new(o, "workload", json_string(workload));
    for (int i = 0; i < res->n && !bad; i++) {
        const field *f = &res->f[i];
        json_t *v = f->kind == F_INT    ? json_integer(f->i)
                    : f->kind == F_REAL ? json_real(f->r)
                                        : json_string(f->s);
        bad = json_object_set_new(o, f->key, v);
    }
    char *text = bad ? NULL : json_dumps(o, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(o);
    if (!text)
        return 1;
    printf("%s\n", text);
    free(text);
    return 0;
}

/* ---------------------------------------------------------------- timing, memory */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median as torch_ref.py takes it (the mean of the middle two for an
 * even count); sorts t. */
static double median(double *t, size_t n)
{
    if (n == 0)
        return NAN;
    qsort(t, n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* ---------------------------------------------------------------- networks */

/* The networks of torch_ref.py as model files. Conv1d's padding=1 is the
 * layer's own padding, as in torch_ref.py (not a separate pad layer). */
static const char seed1d_tgm[] = "input 1 785\n"
                                 "conv1d 1 1 2 padding=1\n"
                                 "relu\n"
                                 "avg_pool1d 2 stride=2\n"
                                 "flatten\n"
                                 "linear 393 32\n"
                                 "relu\n"
                                 "linear 32 1\n"
                                 "sigmoid\n"
                                 "loss bce\n";
/* B2's loss is half this (reduction=sum) loss. */
static const char mlp2_tgm[] = "input 2\n"
                               "linear 2 2\n"
                               "sigmoid\n"
                               "linear 2 2\n"
                               "sigmoid\n"
                               "loss mse reduction=sum\n";
static const char lenet_tgm[] = "input 1 28 28\n"
                                "conv2d 1 6 5 padding=2\n"
                                "relu\n"
                                "max_pool2d 2\n"
                                "conv2d 6 16 5\n"
                                "relu\n"
                                "max_pool2d 2\n"
                                "flatten\n"
                                "linear 400 120\n"
                                "relu\n"
                                "linear 120 84\n"
                                "relu\n"
                                "linear 84 10\n"
                                "loss cross_entropy\n";
static const char cnnbn_tgm[] = "input 1 28 28\n"
                                "conv2d 1 32 3 padding=1\n"
                                "batch_norm2d 32\n"
                                "relu\n"
                                "max_pool2d 2\n"
                                "conv2d 32 64 3 padding=1\n"
                                "batch_norm2d 64\n"
                                "relu\n"
                                "max_pool2d 2\n"
                                "flatten\n"
                                "dropout 0.5\n"
                                "linear 3136 128\n"
                                "relu\n"
                                "linear 128 10\n"
                                "loss cross_entropy\n";

enum { CONV_N = 16, CONV_C = 64, CONV_K = 64, CONV_H = 32, CONV_W = 32, CONV_R = 3, CONV_S = 3 };

/* One workload's state: a model with its optimiser and fixed batch, or
 * (conv) a bare layer. */
typedef struct bench {
    tg_ctx *ctx;
    tg_model *m;
    tg_optim *opt;
    tg_tensor *x, *y;        /* the batch, as buffers: they outlive tg_reset */
    double loss_scale;       /* the model's loss times this (mlp2: 0.5) */
    tg_tensor *cx, *cw, *cb; /* conv: input, weight, bias (parameters: all get gradients) */
    double flop;             /* per step, when known */
} bench;

static tg_model *parse(tg_ctx *ctx, const char *text, const char *name)
{
    return tg_model_parse(ctx, text, strlen(text), name, TG_F32);
}

/* Class labels drawn uniformly from [0, classes), into an int64 buffer. */
static tg_tensor *labels(tg_ctx *ctx, int64_t n, int classes)
{
    tg_tensor *y = tg_buffer(ctx, TG_I64, TG_SHAPE(n), "y");
    if (!y)
        return NULL;
    for (int64_t i = 0; i < n; i++)
        ((int64_t *)y->data)[i] = (int64_t)(tg_rand_uniform(ctx) * classes);
    tg_mark_dirty(y);
    return y;
}

/* A standard normal batch of the given shape, as a float32 buffer. */
static tg_tensor *normal_batch(tg_ctx *ctx, int ndim, const int64_t *shape)
{
    tg_tensor *x = tg_buffer(ctx, TG_F32, ndim, shape, "x");
    if (x)
        tg_init_normal(ctx, x, 0.0, 1.0);
    return x;
}

static tg_optim *sgd(tg_ctx *ctx, tg_model *m, double lr, double momentum)
{
    tg_tensor *p = tg_model_params(m);
    tg_sgd_opts o = {0};
    o.lr = lr;
    o.momentum = momentum;
    return p ? tg_optim_sgd(ctx, &p, 1, &o) : NULL;
}

static tg_optim *adam(tg_ctx *ctx, tg_model *m)
{
    tg_tensor *p = tg_model_params(m);
    tg_adam_opts o = tg_adam_defaults(); /* lr 1e-3, as torch.optim.Adam */
    return p ? tg_optim_adam(ctx, &p, 1, &o) : NULL;
}

static void build_seed1d(bench *b)
{
    tg_ctx *ctx = b->ctx;
    b->m = parse(ctx, seed1d_tgm, "seed1d");
    b->x = b->m ? normal_batch(ctx, TG_SHAPE(64, 1, 785)) : NULL;
    b->y = b->x ? tg_buffer(ctx, TG_F32, TG_SHAPE(64, 1), "y") : NULL;
    if (b->y) { /* randint(0, 2).float() */
        for (int64_t i = 0; i < 64; i++)
            ((float *)b->y->data)[i] = tg_rand_uniform(ctx) < 0.5 ? 0.0f : 1.0f;
        tg_mark_dirty(b->y);
        b->opt = sgd(ctx, b->m, 0.01, 0.0);
    }
}

static void build_mlp2(bench *b)
{
    tg_ctx *ctx = b->ctx;
    b->m = parse(ctx, mlp2_tgm, "mlp2");
    if (!b->m)
        return;
    /* The notes' W1[i][j] (input i, hidden j), stored as nn.Linear's
     * weight[out][in]: the transposes, as torch_ref.py copies them. */
    static const double w1[] = {0.1, 0.15, 0.2, 0.25}, b1[] = {0.3, 0.3};
    static const double w2[] = {0.3, 0.35, 0.4, 0.45}, b2[] = {0.5, 0.5};
    const double *vals[] = {w1, b1, w2, b2};
    const char *keys[] = {"0.weight", "0.bias", "2.weight", "2.bias"};
    for (int k = 0; k < 4; k++) {
        tg_tensor *t = NULL;
        for (int i = 0; i < tg_model_state_count(b->m); i++)
            if (!strcmp(tg_model_state(b->m, i)->name, keys[k]))
                t = tg_model_state(b->m, i);
        if (!t) {
            TG_ERROR(ctx, TG_EINTERNAL, "mlp2: the model has no %s", keys[k]);
            return;
        }
        tg_assign_f64(ctx, t, vals[k]);
    }
    b->x = tg_buffer(ctx, TG_F32, TG_SHAPE(1, 2), "x");
    b->y = tg_buffer(ctx, TG_F32, TG_SHAPE(1, 2), "t");
    tg_assign_f64(ctx, b->x, (const double[]){0.05, 0.15});
    tg_assign_f64(ctx, b->y, (const double[]){0.1, 0.9});
    b->loss_scale = 0.5;
    b->opt = sgd(ctx, b->m, 0.4, 0.0);
}

static void build_lenet(bench *b)
{
    tg_ctx *ctx = b->ctx;
    b->m = parse(ctx, lenet_tgm, "lenet");
    b->x = b->m ? normal_batch(ctx, TG_SHAPE(64, 1, 28, 28)) : NULL;
    b->y = b->x ? labels(ctx, 64, 10) : NULL;
    b->opt = b->y ? sgd(ctx, b->m, 0.01, 0.9) : NULL;
}

static void build_conv(bench *b)
{
    tg_ctx *ctx = b->ctx;
    b->cw = tg_param(ctx, TG_F32, TG_SHAPE(CONV_K, CONV_C, CONV_R, CONV_S), "weight");
    b->cb = tg_param(ctx, TG_F32, TG_SHAPE(CONV_K), "bias");
    b->cx = tg_param(ctx, TG_F32, TG_SHAPE(CONV_N, CONV_C, CONV_H, CONV_W), "x");
    tg_init_default(ctx, b->cw, b->cb); /* nn.Conv2d's reset_parameters, then randn x */
    tg_init_normal(ctx, b->cx, 0.0, 1.0);
    double fwd = 2.0 * CONV_N * CONV_K * CONV_C * CONV_R * CONV_S * CONV_H * CONV_W;
    b->flop = 3.0 * fwd; /* forward + data gradient + weight gradient */
}

static void build_cnnbn(bench *b)
{
    tg_ctx *ctx = b->ctx;
    b->m = parse(ctx, cnnbn_tgm, "cnnbn");
    b->x = b->m ? normal_batch(ctx, TG_SHAPE(64, 1, 28, 28)) : NULL;
    b->y = b->x ? labels(ctx, 64, 10) : NULL;
    b->opt = b->y ? adam(ctx, b->m) : NULL;
}

/* One whole training step, as tapegrad runs one. */
static tg_status step(bench *b)
{
    tg_ctx *ctx = b->ctx;
    if (b->m) {
        tg_tensor *loss = tg_model_loss(ctx, b->m, tg_model_forward(ctx, b->m, b->x), b->y);
        if (b->loss_scale != 0.0)
            loss = tg_mul_scalar(ctx, loss, b->loss_scale);
        if (tg_backward(ctx, loss) == TG_OK)
            tg_optim_step(ctx, b->opt);
    } else {
        /* loss = sum of the outputs; gradients of x, weight and bias, no update */
        tg_tensor *out = tg_conv2d(ctx, b->cx, b->cw, b->cb, 1, 1, 1, 1);
        tg_backward(ctx, tg_sum(ctx, out));
    }
    /* zero_grad(set_to_none=True), as torch_ref.py: the next backward
     * writes the gradients instead of adding into zeroed buffers */
    tg_zero_grad_ex(ctx, TG_SET_TO_NONE);
    tg_reset(ctx);
    return tg_errcode(ctx);
}

/* ---------------------------------------------------------------- options */

typedef struct options {
    const char *workload;
    int threads;
    long long steps; /* 0: the default */
    long long warmup, epochs;
    long long test_batches; /* 0: all */
    unsigned long long seed;
    bool json, profile;
    const char *data;
} options;

static int bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "tapegrad-bench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage);
    return 2;
}

static bool parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    if (!s || !*s)
        return false;
    long long v = strtoll(s, &end, 10);
    if (*end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* A seed: any unsigned 64-bit decimal, as torch.manual_seed takes. */
static bool parse_seed(const char *s, unsigned long long *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno)
        return false;
    *out = v;
    return true;
}

/* 0 when parsed, 1 for --help (usage printed), 2 for a bad command line. */
static int parse_options(int argc, char **argv, options *o)
{
    static const char *const workloads[] = {"seed1d", "mlp2",   "lenet", "conv",
                                            "cnnbn",  "fmnist", "sgemm"};
    long long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("%s", usage);
            return 1;
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!strcmp(a, "--profile")) {
            o->profile = true;
            continue;
        }
        if (strncmp(a, "--", 2)) {
            if (o->workload)
                return bad_usage("one workload at a time ('%s' is a second)", a);
            for (size_t w = 0; w < sizeof workloads / sizeof *workloads; w++)
                if (!strcmp(a, workloads[w]))
                    o->workload = workloads[w];
            if (!o->workload)
                return bad_usage("unknown workload '%s'", a);
            continue;
        }
        /* --name VALUE or --name=VALUE */
        const char *eq = strchr(a, '='), *val;
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return bad_usage("%s needs a value", a);
        bool ok;
        if (len == 9 && !strncmp(a, "--threads", len))
            ok = parse_int(val, 1, 1024, &threads);
        else if (len == 7 && !strncmp(a, "--steps", len))
            ok = parse_int(val, 1, 1LL << 40, &o->steps);
        else if (len == 8 && !strncmp(a, "--warmup", len))
            ok = parse_int(val, 0, 1LL << 40, &o->warmup);
        else if (len == 8 && !strncmp(a, "--epochs", len))
            ok = parse_int(val, 1, 100000, &o->epochs);
        else if (len == 14 && !strncmp(a, "--test-batches", len))
            ok = parse_int(val, 1, 1LL << 40, &o->test_batches);
        else if (len == 6 && !strncmp(a, "--seed", len))
            ok = parse_seed(val, &o->seed);
        else if (len == 6 && !strncmp(a, "--data", len))
            ok = *(o->data = val) != '\0';
        else
            return bad_usage("unknown option '%s'", a);
        if (!ok)
            return bad_usage("bad value in '%s ...' (an integer in range, or a directory)", a);
    }
    if (!o->workload)
        return bad_usage("%s", "no workload given");
    if (o->profile && !strcmp(o->workload, "sgemm"))
        return bad_usage("%s", "--profile: sgemm runs no ops");
    o->threads = threads ? (int)threads : tg_num_threads();
    return 0;
}

/* ---------------------------------------------------------------- runs */

static int fail(const char *workload, tg_ctx *ctx)
{
    fprintf(stderr, "tapegrad-bench: %s: %s\n", workload,
            ctx ? tg_errmsg(ctx) : "cannot create a context");
    return 1;
}

/* Fields torch_ref.py appends after the workload's own. */
static void put_tail(result *res, double base_rss)
{
    put_real(res, "base_rss_mib", base_rss);
    put_int(res, "blas_threads", openblas_get_num_threads());
    put_str(res, "blas_core", openblas_get_corename());
    put_str(res, "tapegrad", tg_version());
}

/* What the context holds: every allocator block at its peak, and the step
 * arena's chunks (the activations, gradients and scratch of one step). */
static void put_memory(result *res, const tg_ctx *ctx)
{
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    put_real(res, "ctx_peak_mib", (double)st.bytes_peak / 1048576.0);
    put_real(res, "arena_mib", (double)st.arena_capacity / 1048576.0);
    put_real(res, "arena_peak_mib", (double)st.arena_peak / 1048576.0);
}

/* W untimed and S timed calls of a step; fills median/min/max. */
typedef int (*step_fn)(void *ud);

static int time_steps(step_fn fn, void *ud, const options *o, result *res, double flop)
{
    long long steps = o->steps ? o->steps : DEFAULT_STEPS;
    for (long long i = 0; i < o->warmup; i++)
        if (fn(ud))
            return 1;
    double *t = malloc((size_t)steps * sizeof *t);
    if (!t)
        return 1;
    for (long long i = 0; i < steps; i++) {
        double t0 = now();
        if (fn(ud)) {
            free(t);
            return 1;
        }
        t[i] = now() - t0;
    }
    double lo = t[0], hi = t[0];
    for (long long i = 1; i < steps; i++) {
        lo = t[i] < lo ? t[i] : lo;
        hi = t[i] > hi ? t[i] : hi;
    }
    double med = median(t, (size_t)steps);
    free(t);
    put_int(res, "threads", o->threads);
    put_int(res, "steps", steps);
    put_int(res, "warmup", o->warmup);
    put_real(res, "median_us", med * 1e6);
    put_real(res, "min_us", lo * 1e6);
    put_real(res, "max_us", hi * 1e6);
    put_real(res, "peak_rss_mib", peak_rss_mib());
    if (flop > 0) {
        put_real(res, "gflop_per_step", flop / 1e9);
        put_real(res, "gflops", flop / med / 1e9);
    }
    return 0;
}

static int bench_step(void *ud) { return step(ud) != TG_OK; }

static int run_steps(const options *o, result *res)
{
    tg_ctx *ctx = tg_ctx_new(o->seed); /* torch.manual_seed(0) by default */
    if (!ctx)
        return fail(o->workload, NULL);
    bench b = {.ctx = ctx};
    const char *w = o->workload;
    if (!strcmp(w, "seed1d"))
        build_seed1d(&b);
    else if (!strcmp(w, "mlp2"))
        build_mlp2(&b);
    else if (!strcmp(w, "lenet"))
        build_lenet(&b);
    else if (!strcmp(w, "conv"))
        build_conv(&b);
    else
        build_cnnbn(&b);
    tg_set_training(ctx, true);
    tg_set_profile(ctx, o->profile);
    int rc = tg_errcode(ctx) || time_steps(bench_step, &b, o, res, b.flop) ? fail(w, ctx) : 0;
    if (!rc)
        put_memory(res, ctx);
    if (!rc && o->profile && tg_profile_print(ctx, stderr))
        rc = fail(w, ctx);
    tg_optim_free(ctx, b.opt);
    tg_model_free(ctx, b.m);
    tg_ctx_free(ctx);
    return rc;
}

enum { SGEMM_N = 1024 };

typedef struct sgemm_bufs { float *a, *b, *c; } sgemm_bufs;

static int sgemm_step(void *ud)
{
    sgemm_bufs *m = ud;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, SGEMM_N, SGEMM_N, SGEMM_N, 1.0f, m->a,
                SGEMM_N, m->b, SGEMM_N, 0.0f, m->c, SGEMM_N);
    return 0;
}

static int run_sgemm(const options *o, result *res)
{
    size_t n = (size_t)SGEMM_N * SGEMM_N;
    sgemm_bufs m = {malloc(n * sizeof(float)), malloc(n * sizeof(float)),
                    malloc(n * sizeof(float))};
    int rc = 1;
    if (m.a && m.b && m.c) {
        for (size_t i = 0; i < n; i++) {
            m.a[i] = (float)((i * 7 + 3) % 17) / 17.0f - 0.5f;
            m.b[i] = (float)((i * 5 + 1) % 13) / 13.0f - 0.5f;
            m.c[i] = 0.0f;
        }
        rc = time_steps(sgemm_step, &m, o, res, 2.0 * SGEMM_N * SGEMM_N * SGEMM_N);
    }
    if (rc)
        fprintf(stderr, "tapegrad-bench: sgemm: out of memory\n");
    free(m.a);
    free(m.b);
    free(m.c);
    return rc;
}

/* ---------------------------------------------------------------- fmnist */

/* Test loss (summed cross-entropy) and correct predictions, in eval mode
 * with nothing recorded, in batches of 64. */
static tg_status evaluate(tg_ctx *ctx, tg_model *m, const tg_dataset *ds, int64_t examples,
                          double *loss_sum, int64_t *correct)
{
    bool was_training = tg_set_training(ctx, false);
    bool was_grad = tg_set_grad_enabled(ctx, false);
    *loss_sum = 0;
    *correct = 0;
    for (int64_t start = 0; start < examples && !tg_errcode(ctx); start += FMNIST_BATCH) {
        tg_tensor *x, *y;
        if (tg_dataset_batch(ctx, ds, start, FMNIST_BATCH, TG_F32, TG_LAYOUT_IMAGE, &x, &y))
            break;
        tg_tensor *logits = tg_model_forward(ctx, m, x);
        tg_tensor *loss = logits ? tg_cross_entropy(ctx, logits, y, TG_SUM) : NULL;
        if (!loss)
            break;
        *loss_sum += tg_get(loss, 0);
        const float *z = logits->data;
        const int64_t *t = y->data;
        int64_t classes = logits->shape[1];
        for (int64_t i = 0; i < y->numel; i++) {
            int64_t best = 0; /* the first maximum, as argmax */
            for (int64_t c = 1; c < classes; c++)
                if (z[i * classes + c] > z[i * classes + best])
                    best = c;
            *correct += best == t[i];
        }
        tg_reset(ctx);
    }
    tg_set_grad_enabled(ctx, was_grad);
    tg_set_training(ctx, was_training);
    return tg_errcode(ctx);
}

/*
 * B6: the cnnbn network trained on Fashion-MNIST. The data sets keep their
 * pixels as bytes; each batch converts its own examples to float32 / 255
 * (tg_dataset_batch). The epoch's shuffle draws from its own stream, apart
 * from the one initialisation and dropout draw from, as torch_ref.py
 * shuffles with its own torch.Generator; both start from --seed (default 0,
 * as torch_ref.py seeds both with 0).
 */
static int run_fmnist(const options *o, result *res)
{
    const char *dir = o->data ? o->data : TG_FASHION_MNIST_DIR;
    tg_ctx *ctx = tg_ctx_new(o->seed);
    if (!ctx)
        return fail("fmnist", NULL);
    double t0 = now();
    tg_dataset *train = tg_fashion_mnist(ctx, dir, "train");
    tg_dataset *test = train ? tg_fashion_mnist(ctx, dir, "test") : NULL;
    double load_s = now() - t0, load_rss = peak_rss_mib();

    tg_seed(ctx, o->seed);
    tg_set_profile(ctx, o->profile);
    tg_rng_state shuffle = tg_rng_get(ctx), main_rng;
    tg_model *m = test ? parse(ctx, cnnbn_tgm, "cnnbn") : NULL;
    tg_optim *opt = m ? adam(ctx, m) : NULL;
    int64_t nbatches = train ? (train->n + FMNIST_BATCH - 1) / FMNIST_BATCH : 0;
    if (o->steps && o->steps < nbatches)
        nbatches = o->steps;
    double *epoch_s = calloc((size_t)o->epochs, sizeof *epoch_s);
    double *step_s = calloc((size_t)(o->epochs * nbatches) + 1, sizeof *step_s);
    size_t nsteps = 0;
    double loss_sum = 0;
    if (!epoch_s || !step_s)
        TG_ERROR(ctx, TG_ENOMEM, "fmnist: out of memory for the timings");
    for (long long e = 0; e < o->epochs && opt && !tg_errcode(ctx); e++) {
        tg_set_training(ctx, true);
        double te = now();
        main_rng = tg_rng_get(ctx);
        tg_rng_set(ctx, shuffle);
        tg_dataset_shuffle(ctx, train);
        shuffle = tg_rng_get(ctx);
        tg_rng_set(ctx, main_rng);
        loss_sum = 0;
        for (int64_t b = 0; b < nbatches && !tg_errcode(ctx); b++) {
            double ts = now();
            tg_tensor *x, *y;
            if (tg_dataset_batch(ctx, train, b * FMNIST_BATCH, FMNIST_BATCH, TG_F32,
                                 TG_LAYOUT_IMAGE, &x, &y))
                break;
            tg_tensor *loss = tg_model_loss(ctx, m, tg_model_forward(ctx, m, x), y);
            if (tg_backward(ctx, loss) || tg_optim_step(ctx, opt))
                break;
            tg_zero_grad_ex(ctx, TG_SET_TO_NONE);
            loss_sum += tg_get(loss, 0);
            tg_reset(ctx);
            step_s[nsteps++] = now() - ts;
        }
        epoch_s[e] = now() - te;
    }
    double t_eval = now(), test_loss = 0;
    int64_t correct = 0, examples = test ? test->n : 0;
    if (o->test_batches && o->test_batches < (examples + FMNIST_BATCH - 1) / FMNIST_BATCH)
        examples = o->test_batches * FMNIST_BATCH;
    if (opt && !tg_errcode(ctx))
        evaluate(ctx, m, test, examples, &test_loss, &correct);
    double eval_s = now() - t_eval;
    int rc = 0;
    if (!tg_errcode(ctx) && o->profile)
        tg_profile_print(ctx, stderr);
    if (tg_errcode(ctx)) {
        rc = fail("fmnist", ctx); /* a missing directory's message names the package */
    } else {
        put_int(res, "threads", o->threads);
        put_int(res, "epochs", o->epochs);
        put_int(res, "batches_per_epoch", nbatches);
        put_real(res, "sec_per_epoch", median(epoch_s, (size_t)o->epochs));
        put_real(res, "median_step_us", median(step_s, nsteps) * 1e6);
        put_real(res, "last_epoch_train_loss", loss_sum / (double)nbatches);
        put_real(res, "test_loss", test_loss / (double)examples);
        put_real(res, "test_accuracy", (double)correct / (double)examples);
        put_real(res, "eval_s", eval_s);
        put_real(res, "load_s", load_s);
        put_real(res, "peak_rss_mib", peak_rss_mib());
        put_real(res, "load_rss_mib", load_rss);
        put_memory(res, ctx);
    }
    free(epoch_s);
    free(step_s);
    tg_optim_free(ctx, opt);
    tg_model_free(ctx, m);
    tg_dataset_free(ctx, test);
    tg_dataset_free(ctx, train);
    tg_ctx_free(ctx);
    return rc;
}

int main(int argc, char **argv)
{
    options o = {.warmup = DEFAULT_WARMUP, .epochs = 1};
    int rc = parse_options(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;
    tg_set_num_threads(o.threads);
    double base = peak_rss_mib();
    result res = {.n = 0};
    if (!strcmp(o.workload, "fmnist"))
        rc = run_fmnist(&o, &res);
    else if (!strcmp(o.workload, "sgemm"))
        rc = run_sgemm(&o, &res);
    else
        rc = run_steps(&o, &res);
    if (rc)
        return rc;
    put_tail(&res, base);
    if (o.json ? print_json(o.workload, &res) : (print_line(o.workload, &res), 0))
        return 1;
    return fflush(stdout) ? 1 : 0;
}
