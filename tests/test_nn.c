/*
 * test_nn.c: the neural-network ops against PyTorch (fixtures/torch_ops.txt,
 * made by fixtures/make_fixtures.py with python3-torch in float64), their
 * behaviour at extreme inputs, dropout's statistics, batch norm's modes, and
 * the errors for bad input.
 */
#include <string.h>

#include "testutil.h"

/* ------------------------------------------------------------ fixtures */

#define FX_MAX_T 16
#define FX_MAX_A 8

typedef struct fx_tensor {
    char key[16];
    bool is_int; /* an itensor line: int64 class indices */
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int64_t n;
    double *v;
} fx_tensor;

typedef struct fx_case {
    char name[64], op[32];
    int na, nt;
    char akey[FX_MAX_A][24];
    double aval[FX_MAX_A];
    fx_tensor t[FX_MAX_T];
} fx_case;

static fx_case *cases;
static int n_cases;

static void fx_free(void)
{
    for (int i = 0; i < n_cases; i++)
        for (int k = 0; k < cases[i].nt; k++)
            free(cases[i].t[k].v);
    free(cases);
}

static void fx_load(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(1);
    }
    char *line = NULL;
    size_t cap = 0;
    fx_case *c = NULL;
    while (getline(&line, &cap, f) > 0) {
        char op[32], key[16];
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (strncmp(line, "case ", 5) == 0) {
            cases = realloc(cases, (size_t)(n_cases + 1) * sizeof *cases);
            c = &cases[n_cases++];
            memset(c, 0, sizeof *c);
            if (sscanf(line, "case %63s %31s", c->name, op) != 2)
                abort();
            snprintf(c->op, sizeof c->op, "%s", op);
        } else if (c && strncmp(line, "attr ", 5) == 0 && c->na < FX_MAX_A) {
            if (sscanf(line, "attr %23s %lf", c->akey[c->na], &c->aval[c->na]) != 2)
                abort();
            c->na++;
        } else if (c && (strncmp(line, "tensor ", 7) == 0 || strncmp(line, "itensor ", 8) == 0) &&
                   c->nt < FX_MAX_T) {
            fx_tensor *t = &c->t[c->nt++];
            int used = 0;
            t->is_int = line[0] == 'i';
            if (sscanf(line + t->is_int, "tensor %15s %d%n", key, &t->ndim, &used) != 2 || t->ndim < 0 ||
                t->ndim > TG_MAX_DIMS)
                abort();
            snprintf(t->key, sizeof t->key, "%s", key);
            char *p = line + t->is_int + used;
            t->n = 1;
            for (int d = 0; d < t->ndim; d++) {
                t->shape[d] = strtoll(p, &p, 10);
                t->n *= t->shape[d];
            }
            if (getline(&line, &cap, f) <= 0)
                abort();
            t->v = malloc((size_t)(t->n ? t->n : 1) * sizeof(double));
            p = line;
            for (int64_t i = 0; i < t->n; i++)
                t->v[i] = strtod(p, &p);
        }
    }
    free(line);
    fclose(f);
    atexit(fx_free);
}

static const fx_tensor *fx_get(const fx_case *c, const char *key)
{
    for (int i = 0; i < c->nt; i++)
        if (strcmp(c->t[i].key, key) == 0)
            return &c->t[i];
    return NULL;
}

static double fx_attr(const fx_case *c, const char *key)
{
    for (int i = 0; i < c->na; i++)
        if (strcmp(c->akey[i], key) == 0)
            return c->aval[i];
    ck_abort_msg("%s: no attribute %s", c->name, key);
    return 0;
}

/* An attribute the older cases leave out, with PyTorch's default. */
static double fx_attr_or(const fx_case *c, const char *key, double fallback)
{
    for (int i = 0; i < c->na; i++)
        if (strcmp(c->akey[i], key) == 0)
            return c->aval[i];
    return fallback;
}

/* The inputs a case has made, by key, to compare their gradients. */
static struct { const char *key; tg_tensor *t; } fx_ins[8];
static int fx_nin;

/* The fixture's input tensor key as a float64 (or, for an itensor, int64)
 * leaf (NULL when absent); it requires grad when PyTorch's gradient for it
 * is in the fixture. */
static tg_tensor *fx_input(tg_ctx *ctx, const fx_case *c, const char *key)
{
    const fx_tensor *t = fx_get(c, key);
    if (!t)
        return NULL;
    tg_tensor *x = tg_from_f64(ctx, t->is_int ? TG_I64 : TG_F64, t->ndim, t->shape, t->v);
    if (t->is_int)
        return x;
    char gkey[20];
    snprintf(gkey, sizeof gkey, "g%s", key);
    tg_set_requires_grad(ctx, x, fx_get(c, gkey) != NULL);
    if (fx_nin < 8) {
        fx_ins[fx_nin].key = key;
        fx_ins[fx_nin++].t = x;
    }
    return x;
}

static void fx_compare(const fx_case *c, const char *what, const tg_tensor *got, const fx_tensor *want)
{
    ck_assert_msg(got != NULL, "%s: no %s", c->name, what);
    ck_assert_msg(got->numel == want->n, "%s: %s has %lld elements, PyTorch %lld", c->name, what,
                  (long long)got->numel, (long long)want->n);
    for (int64_t i = 0; i < want->n; i++) {
        double a = tg_get(got, i), b = want->v[i];
        ck_assert_msg(fabs(a - b) <= 1e-10 * fmax(1.0, fabs(b)), "%s: %s[%lld] = %.17g, PyTorch %.17g",
                      c->name, what, (long long)i, a, b);
    }
}

/* Pooling: the older cases through the _ex builders, those with every
 * attribute through the _opts ones. */
static tg_tensor *fx_pool(tg_ctx *ctx, const fx_case *c, tg_tensor *x)
{
    const char *op = c->op;
    int64_t k = (int64_t)fx_attr(c, "kernel"), s = (int64_t)fx_attr(c, "stride");
    int64_t p = (int64_t)fx_attr(c, "padding"), d = (int64_t)fx_attr_or(c, "dilation", 0);
    if (d == 0) {
        tg_tensor *(*fn)(tg_ctx *, tg_tensor *, int64_t, int64_t, int64_t) =
            !strcmp(op, "max_pool1d") ? tg_max_pool1d_ex : !strcmp(op, "max_pool2d") ? tg_max_pool2d_ex
            : !strcmp(op, "avg_pool1d") ? tg_avg_pool1d_ex : tg_avg_pool2d_ex;
        return fn(ctx, x, k, s, p);
    }
    tg_pool_attrs a = {{k, k}, {s, s}, {p, p}, {d, d}, fx_attr(c, "ceil_mode") != 0,
                       fx_attr(c, "count_include_pad") == 0};
    tg_tensor *(*fn)(tg_ctx *, tg_tensor *, const tg_pool_attrs *) =
        !strcmp(op, "max_pool1d") ? tg_max_pool1d_opts : !strcmp(op, "max_pool2d") ? tg_max_pool2d_opts
        : !strcmp(op, "avg_pool1d") ? tg_avg_pool1d_opts : tg_avg_pool2d_opts;
    return fn(ctx, x, &a);
}

/* The losses, with their optional weights and attributes. */
static tg_tensor *fx_loss(tg_ctx *ctx, const fx_case *c, tg_tensor *x, tg_tensor *t)
{
    const char *op = c->op;
    double rv = fx_attr(c, "reduction");
    tg_reduction r = rv == 0 ? TG_MEAN : rv == 1 ? TG_SUM : TG_NONE;
    tg_tensor *w = fx_input(ctx, c, "w"), *pw = fx_input(ctx, c, "pw");
    tg_ce_attrs a = {r, (int64_t)fx_attr_or(c, "ignore_index", TG_IGNORE_INDEX),
                     fx_attr_or(c, "label_smoothing", 0)};
    if (!strcmp(op, "mse"))
        return tg_mse(ctx, x, t, r);
    if (!strcmp(op, "bce"))
        return tg_bce(ctx, x, t, r);
    if (!strcmp(op, "bce_with_logits"))
        return pw ? tg_bce_with_logits_ex(ctx, x, t, pw, r) : tg_bce_with_logits(ctx, x, t, r);
    if (!strcmp(op, "cross_entropy"))
        return c->na > 1 ? tg_cross_entropy_ex(ctx, x, t, w, &a) : tg_cross_entropy(ctx, x, t, r);
    if (!strcmp(op, "nll_loss"))
        return c->na > 1 ? tg_nll_loss_ex(ctx, x, t, w, r, a.ignore_index) : tg_nll_loss(ctx, x, t, r);
    ck_abort_msg("%s: unknown op %s", c->name, op);
    return NULL;
}

static tg_tensor *fx_run(tg_ctx *ctx, const fx_case *c)
{
    const char *op = c->op;
    tg_tensor *x = fx_input(ctx, c, "x");
    if (!strcmp(op, "pow"))
        return tg_pow(ctx, x, fx_attr(c, "p"));
    if (!strcmp(op, "log"))
        return tg_log(ctx, x);
    if (!strcmp(op, "sqrt"))
        return tg_sqrt(ctx, x);
    if (!strcmp(op, "sum"))
        return tg_sum_axis(ctx, x, (int)fx_attr(c, "axis"), fx_attr(c, "keepdim") != 0);
    if (!strcmp(op, "mean"))
        return tg_mean(ctx, x);
    if (!strcmp(op, "permute"))
        return tg_permute(ctx, x, (const int[]){2, 0, 1});
    if (!strcmp(op, "slice"))
        return tg_slice(ctx, x, (int)fx_attr(c, "axis"), (int64_t)fx_attr(c, "start"),
                        (int64_t)fx_attr(c, "end"), (int64_t)fx_attr(c, "step"));
    if (!strcmp(op, "pad"))
        return tg_pad2d(ctx, x, (int64_t)fx_attr(c, "left"), (int64_t)fx_attr(c, "right"),
                        (int64_t)fx_attr(c, "top"), (int64_t)fx_attr(c, "bottom"));
    if (!strcmp(op, "linear")) {
        tg_tensor *w = fx_input(ctx, c, "w"), *b = fx_input(ctx, c, "b");
        return tg_linear(ctx, x, w, b);
    }
    if (!strcmp(op, "conv2d") || !strcmp(op, "conv1d")) {
        tg_tensor *w = fx_input(ctx, c, "w"), *b = fx_input(ctx, c, "b");
        int64_t s = (int64_t)fx_attr(c, "stride"), p = (int64_t)fx_attr(c, "padding");
        int64_t d = (int64_t)fx_attr(c, "dilation"), g = (int64_t)fx_attr(c, "groups");
        return op[4] == '2' ? tg_conv2d(ctx, x, w, b, s, p, d, g) : tg_conv1d(ctx, x, w, b, s, p, d, g);
    }
    if (strstr(op, "_pool1d") || strstr(op, "_pool2d"))
        return fx_pool(ctx, c, x);
    if (!strcmp(op, "global_avg_pool"))
        return fx_attr_or(c, "keepdim", 0) ? tg_global_avg_pool_ex(ctx, x, true)
                                           : tg_global_avg_pool(ctx, x);
    if (!strcmp(op, "relu"))
        return tg_relu(ctx, x);
    if (!strcmp(op, "leaky_relu"))
        return tg_leaky_relu(ctx, x, fx_attr(c, "negative_slope"));
    if (!strcmp(op, "sigmoid"))
        return tg_sigmoid(ctx, x);
    if (!strcmp(op, "tanh"))
        return tg_tanh(ctx, x);
    if (!strcmp(op, "softmax"))
        return tg_softmax(ctx, x, (int)fx_attr(c, "axis"));
    if (!strcmp(op, "log_softmax"))
        return tg_log_softmax(ctx, x, (int)fx_attr(c, "axis"));
    if (!strcmp(op, "dropout")) {
        tg_set_training(ctx, fx_attr(c, "training") != 0);
        return tg_dropout(ctx, x, fx_attr(c, "p"));
    }
    if (!strcmp(op, "batch_norm")) {
        tg_tensor *w = fx_input(ctx, c, "w"), *b = fx_input(ctx, c, "b");
        tg_tensor *rm = fx_input(ctx, c, "rm"), *rv = fx_input(ctx, c, "rv");
        tg_set_training(ctx, fx_attr(c, "training") != 0);
        return tg_batch_norm(ctx, x, w, b, rm, rv, fx_attr(c, "momentum"), fx_attr(c, "eps"));
    }
    tg_tensor *t = fx_input(ctx, c, "t");
    if (!strcmp(op, "add"))
        return tg_add(ctx, x, t);
    if (!strcmp(op, "div"))
        return tg_div(ctx, x, t);
    if (!strcmp(op, "matmul"))
        return tg_matmul(ctx, x, t);
    if (!strcmp(op, "concat"))
        return tg_concat(ctx, (tg_tensor *[]){x, t}, 2, (int)fx_attr(c, "axis"));
    return fx_loss(ctx, c, x, t);
}

/* batch_norm_running3: the running statistics after three training steps. */
static void fx_running3(tg_ctx *ctx, const fx_case *c)
{
    tg_tensor *rm = tg_zeros(ctx, TG_F64, TG_SHAPE(3)), *rv = tg_ones(ctx, TG_F64, TG_SHAPE(3));
    for (int i = 0; i < 3; i++) {
        char key[8];
        snprintf(key, sizeof key, "x%d", i);
        tg_tensor *x = fx_input(ctx, c, key);
        ck_assert_ptr_nonnull(tg_batch_norm(ctx, x, NULL, NULL, rm, rv, fx_attr(c, "momentum"),
                                            fx_attr(c, "eps")));
    }
    fx_compare(c, "running_mean", rm, fx_get(c, "rm"));
    fx_compare(c, "running_var", rv, fx_get(c, "rv"));
}

START_TEST(matches_pytorch)
{
    const fx_case *c = &cases[_i];
    tg_ctx *ctx = tg_ctx_new(1);
    if (!strcmp(c->name, "batch_norm_running3")) {
        fx_running3(ctx, c);
        tg_ctx_free(ctx);
        return;
    }
    fx_nin = 0;
    tg_tensor *y = fx_run(ctx, c);
    ck_assert_msg(y != NULL, "%s: %s", c->name, tg_errmsg(ctx));
    fx_compare(c, "y", y, fx_get(c, "y"));
    const fx_tensor *gy = fx_get(c, "gy");
    tg_tensor *g = tg_from_f64(ctx, TG_F64, gy->ndim, gy->shape, gy->v);
    ck_assert_msg(tg_backward_ex(ctx, y, g, 0) == TG_OK, "%s: %s", c->name, tg_errmsg(ctx));
    int compared = 0;
    for (int i = 0; i < fx_nin; i++) {
        char gkey[20];
        snprintf(gkey, sizeof gkey, "g%s", fx_ins[i].key);
        const fx_tensor *want = fx_get(c, gkey);
        if (want) {
            fx_compare(c, gkey, fx_ins[i].t->grad, want);
            compared++;
        }
    }
    ck_assert_msg(compared > 0, "%s: no gradient compared", c->name);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ stability */

START_TEST(huge_logits_stay_finite)
{
    tg_ctx *ctx = tg_ctx_new(1);
    for (int dt = TG_F32; dt <= TG_F64; dt++) {
        tg_tensor *z = tg_from_f64(ctx, (tg_dtype)dt, TG_SHAPE(2, 3),
                                   (const double[]){1e4, -1e4, 0, -1e4, 1e4, 1e4});
        tg_set_requires_grad(ctx, z, true);
        tg_tensor *s = tg_softmax(ctx, z, 1), *ls = tg_log_softmax(ctx, z, 1);
        ck_tensor(s, ((const double[]){1, 0, 0, 0, 0.5, 0.5}), 0);
        ck_tensor(ls, ((const double[]){0, -2e4, -1e4, -2e4 - log(2.0), -log(2.0), -log(2.0)}), 1e-7);
        tg_tensor *t = tg_from_data(ctx, TG_I64, TG_SHAPE(2), (const int64_t[]){0, 2});
        tg_tensor *ce = tg_cross_entropy(ctx, z, t, TG_MEAN);
        ck_close(tg_get(ce, 0), log(2.0) / 2, 1e-6);
        tg_tensor *loss = tg_add(ctx, ce, tg_add(ctx, tg_sum(ctx, s), tg_sum(ctx, ls)));
        ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
        for (int64_t i = 0; i < 6; i++)
            ck_assert_msg(isfinite(tg_get(z->grad, i)), "grad[%lld] = %g", (long long)i,
                          tg_get(z->grad, i));
    }
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(saturated_activations)
{
    tg_ctx *ctx = tg_ctx_new(1);
    for (int dt = TG_F32; dt <= TG_F64; dt++) {
        tg_tensor *x = tg_from_f64(ctx, (tg_dtype)dt, TG_SHAPE(4), (const double[]){-1000, 1000, -40, 40});
        tg_set_requires_grad(ctx, x, true);
        tg_tensor *s = tg_sigmoid(ctx, x), *t = tg_tanh(ctx, x);
        ck_assert(tg_get(s, 0) == 0 && tg_get(s, 1) == 1);
        ck_assert(tg_get(t, 0) == -1 && tg_get(t, 1) == 1);
        tg_tensor *y = tg_from_f64(ctx, (tg_dtype)dt, TG_SHAPE(4), (const double[]){0, 1, 1, 0});
        tg_tensor *l = tg_bce_with_logits(ctx, x, y, TG_SUM);
        ck_close(tg_get(l, 0), 80, 1e-6); /* 0 + 0 + 40 + 40 */
        ck_assert_int_eq(tg_backward(ctx, tg_add(ctx, l, tg_sum(ctx, tg_add(ctx, s, t)))), TG_OK);
        for (int64_t i = 0; i < 4; i++)
            ck_assert(isfinite(tg_get(x->grad, i)));
        ck_close(tg_get(x->grad, 2), -1, 1e-6); /* d bce / dx = sigmoid(-40) - 1 */
    }
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(bce_at_zero_and_one)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *p = tg_from_f64(ctx, TG_F64, TG_SHAPE(4), (const double[]){0, 1, 0, 1});
    tg_set_requires_grad(ctx, p, true);
    tg_tensor *y = tg_from_f64(ctx, TG_F64, TG_SHAPE(4), (const double[]){0, 1, 1, 0});
    tg_tensor *l = tg_bce(ctx, p, y, TG_SUM);
    ck_close(tg_get(l, 0), 200, 1e-12); /* the right answers cost 0, the wrong ones 100 each */
    ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
    /* PyTorch: (p - y) / max(p (1 - p), 1e-12) */
    ck_tensor(p->grad, ((const double[]){0, 0, -1e12, 1e12}), 1e-12);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ dropout, batch norm */

/* 10,000 draws of a 100-element mask per p: the keep fraction is within 1%
 * of 1 - p and the mean output within 1% of the input. */
START_TEST(dropout_statistics)
{
    tg_ctx *ctx = tg_ctx_new(99);
    static const double ps[] = {0.1, 0.5, 0.8};
    tg_tensor *x = tg_param(ctx, TG_F64, TG_SHAPE(100), "x");
    x->requires_grad = false;
    tg_fill(ctx, x, 3.0);
    for (int k = 0; k < 3; k++) {
        double p = ps[k], scaled = 3 / (1 - p), mean = 0;
        int64_t kept = 0, odd = 0;
        for (int draw = 0; draw < 10000; draw++) {
            tg_tensor *y = tg_dropout(ctx, x, p);
            for (int64_t i = 0; y && i < 100; i++) {
                double v = tg_get(y, i);
                kept += v != 0;
                odd += v != 0 && fabs(v - scaled) > 1e-12;
                mean += v;
            }
            tg_reset(ctx);
        }
        mean /= 1e6;
        ck_assert_int_eq(odd, 0); /* kept values are x / (1 - p) exactly */
        ck_assert_msg(fabs((double)kept / 1e6 - (1 - p)) < 0.01, "p %g: kept %g", p, kept / 1e6);
        ck_assert_msg(fabs(mean / 3 - 1) < 0.01, "p %g: mean output %g for input 3", p, mean);
    }
    /* the same seed, the same mask; eval mode is the identity */
    tg_seed(ctx, 5);
    tg_tensor *a = tg_dropout(ctx, tg_ones(ctx, TG_F32, TG_SHAPE(64)), 0.5);
    tg_seed(ctx, 5);
    tg_tensor *b = tg_dropout(ctx, tg_ones(ctx, TG_F32, TG_SHAPE(64)), 0.5);
    ck_assert_mem_eq(a->data, b->data, 64 * sizeof(float));
    tg_set_training(ctx, false);
    tg_tensor *r = tg_randn(ctx, TG_F64, TG_SHAPE(50), 0, 1);
    tg_tensor *e = tg_dropout(ctx, r, 0.9);
    ck_assert_mem_eq(e->data, r->data, 50 * sizeof(double));
    tg_set_training(ctx, true);
    ck_tensor(tg_dropout(ctx, r, 1.0), ((const double[50]){0}), 0);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(batch_norm_modes)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_from_f64(ctx, TG_F64, TG_SHAPE(4, 2), (const double[]){1, 10, 2, 20, 3, 30, 4, 40});
    tg_tensor *rm = tg_param(ctx, TG_F64, TG_SHAPE(2), "running_mean");
    tg_tensor *rv = tg_param(ctx, TG_F64, TG_SHAPE(2), "running_var");
    rm->requires_grad = rv->requires_grad = false; /* buffers, not parameters */
    tg_fill(ctx, rv, 1);
    tg_tensor *y = tg_batch_norm(ctx, x, NULL, NULL, rm, rv, 0.1, TG_BN_EPS);
    /* column 0: mean 2.5, biased var 1.25; column 1: ten times both, var 125 */
    double r = 1 / sqrt(1.25 + TG_BN_EPS), q = 10 / sqrt(125 + TG_BN_EPS);
    ck_tensor(y, ((const double[]){-1.5 * r, -1.5 * q, -0.5 * r, -0.5 * q, 0.5 * r, 0.5 * q,
                                   1.5 * r, 1.5 * q}), 1e-12);
    /* running: 0.9 * 0 + 0.1 * 2.5; 0.9 * 1 + 0.1 * (5 / 3) with the unbiased variance */
    ck_tensor(rm, ((const double[]){0.25, 2.5}), 1e-12);
    ck_tensor(rv, ((const double[]){0.9 + 0.1 * 5 / 3, 0.9 + 0.1 * 500 / 3}), 1e-12);
    tg_set_training(ctx, false);
    tg_tensor *e = tg_batch_norm(ctx, x, NULL, NULL, rm, rv, 0.1, TG_BN_EPS);
    ck_close(tg_get(e, 0), (1 - 0.25) / sqrt(0.9 + 0.1 * 5 / 3 + TG_BN_EPS), 1e-12);
    ck_tensor(rm, ((const double[]){0.25, 2.5}), 1e-12); /* eval leaves them alone */
    /* a batch of one is fine in eval mode */
    ck_assert_ptr_nonnull(tg_batch_norm(ctx, tg_ones(ctx, TG_F64, TG_SHAPE(1, 2)), NULL, NULL, rm, rv, 0.1, 1e-5));
    tg_ctx_free(ctx);
}
END_TEST

#define EXPECT(expr, code, text)              \
    do {                                      \
        ck_assert_ptr_null(expr);             \
        ck_error(ctx, (code), (text));        \
        tg_clear_error(ctx);                  \
    } while (0)

/* ------------------------------------------------------------ options */

/* PyTorch 1.13: max_pool1d(x, 2, padding=1, dilation=2) of one element
 * reaches only padding: -inf (tapegrad sends that window no gradient);
 * avg_pool2d(3 x 3, 4, ceil_mode=True) has one window (floor mode has none). */
START_TEST(pool_edge_windows)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 1, 1), (const double[]){5});
    tg_set_requires_grad(ctx, x, true);
    tg_pool_attrs a = {{2, 0}, {1, 0}, {1, 0}, {2, 0}, false, false};
    tg_tensor *y = tg_max_pool1d_opts(ctx, x, &a);
    ck_assert_ptr_nonnull(y);
    ck_assert(tg_get(y, 0) == -INFINITY);
    ck_assert_int_eq(tg_backward_ex(ctx, y, tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 1)), 0), TG_OK);
    ck_assert(tg_get(x->grad, 0) == 0);
    tg_tensor *z = tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 3, 3));
    tg_pool_attrs c = {{4, 4}, {4, 4}, {0, 0}, {1, 1}, true, false};
    tg_tensor *p = tg_avg_pool2d_opts(ctx, z, &c);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(p->numel, 1);
    ck_assert(tg_get(p, 0) == 1); /* 9 ones over the window clipped to the input: 9 */
    c.ceil_mode = false;
    ck_assert_ptr_null(tg_avg_pool2d_opts(ctx, z, &c));
    ck_error(ctx, TG_ESHAPE, "avg_pool2d: kernel 4 x 4 is larger than the padded input 3 x 3");
    tg_clear_error(ctx);
    /* keepdim: (N, C, 1, 1) as nn.AdaptiveAvgPool2d(1); without: (N, C) */
    tg_tensor *g = tg_global_avg_pool_ex(ctx, tg_ones(ctx, TG_F32, TG_SHAPE(2, 3, 4, 5)), true);
    ck_assert_int_eq(g->ndim, 4);
    ck_assert(g->shape[2] == 1 && g->shape[3] == 1 && g->shape[1] == 3);
    ck_assert_int_eq(tg_global_avg_pool(ctx, tg_ones(ctx, TG_F32, TG_SHAPE(2, 3, 4)))->ndim, 2);
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch: a target of -100 is ignored by default; all ignored gives a
 * mean of nan and a sum of 0, with no gradient. */
START_TEST(ignored_targets)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *z = tg_from_f64(ctx, TG_F64, TG_SHAPE(2, 2), (const double[]){0, 0, 3, 1});
    tg_set_requires_grad(ctx, z, true);
    tg_tensor *t = tg_from_data(ctx, TG_I64, TG_SHAPE(2), (const int64_t[]){1, -100});
    tg_tensor *l = tg_cross_entropy(ctx, z, t, TG_MEAN);
    ck_assert_ptr_nonnull(l);
    ck_close(tg_get(l, 0), log(2.0), 1e-15); /* the mean over the one sample left */
    ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
    ck_tensor(z->grad, ((const double[]){0.5, -0.5, 0, 0}), 1e-15);
    tg_tensor *all = tg_from_data(ctx, TG_I64, TG_SHAPE(2), (const int64_t[]){-100, -100});
    ck_assert(isnan(tg_get(tg_cross_entropy(ctx, z, all, TG_MEAN), 0)));
    ck_assert(isnan(tg_get(tg_nll_loss(ctx, z, all, TG_MEAN), 0)));
    ck_assert(tg_get(tg_nll_loss(ctx, z, all, TG_SUM), 0) == 0);
    tg_ce_attrs a = TG_CE_DEFAULTS;
    a.reduction = TG_NONE;
    a.ignore_index = 0;
    tg_tensor *none = tg_cross_entropy_ex(ctx, z, tg_from_data(ctx, TG_I64, TG_SHAPE(2),
                                                               (const int64_t[]){0, 1}), NULL, &a);
    ck_assert_int_eq(none->ndim, 1);
    ck_assert(tg_get(none, 0) == 0);
    ck_close(tg_get(none, 1), 2 + log(1 + exp(-2.0)), 1e-14);
    tg_ctx_free(ctx);
}
END_TEST

/* Soft targets need not sum to 1: the gradient is (sum t) softmax - t, as
 * PyTorch's, not softmax - t. */
START_TEST(unnormalised_probabilities)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *z = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 2), (const double[]){0, 0});
    tg_set_requires_grad(ctx, z, true);
    tg_tensor *t = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 2), (const double[]){1, 1});
    tg_tensor *l = tg_cross_entropy(ctx, z, t, TG_SUM);
    ck_close(tg_get(l, 0), 2 * log(2.0), 1e-15);
    ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
    ck_tensor(z->grad, ((const double[]){0, 0}), 1e-15);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(option_errors)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F32, TG_SHAPE(1, 2, 5, 5));
    tg_pool_attrs a = {{2, 2}, {2, 2}, {0, 0}, {0, 0}, false, false};
    EXPECT(tg_max_pool2d_opts(ctx, x, &a), TG_EINVAL, "max_pool2d: dilation 0; it must be >= 1");
    a.dilation[0] = a.dilation[1] = 2;
    EXPECT(tg_avg_pool2d_opts(ctx, x, &a), TG_EINVAL,
           "avg_pool2d: dilation 2; average pooling has none, so it must be 1");
    a.dilation[0] = a.dilation[1] = 1;
    a.exclude_pad = true;
    EXPECT(tg_max_pool2d_opts(ctx, x, &a), TG_EINVAL,
           "max_pool2d: exclude_pad applies to average pooling only");
    EXPECT(tg_max_pool2d_opts(ctx, x, NULL), TG_EINVAL, "max_pool2d: attributes are NULL");
    a = (tg_pool_attrs){{2, 2}, {1, 1}, {0, 0}, {INT64_MAX, 1}, false, false};
    EXPECT(tg_max_pool2d_opts(ctx, x, &a), TG_ESHAPE, "spans more than can be addressed");
    tg_tensor *z = tg_ones(ctx, TG_F32, TG_SHAPE(3, 4));
    tg_tensor *t = tg_from_data(ctx, TG_I64, TG_SHAPE(3), (const int64_t[]){0, 5, -100});
    EXPECT(tg_cross_entropy(ctx, z, t, TG_MEAN), TG_EINVAL,
           "cross_entropy: target[1] = 5 is not a class index in [0, 4) nor the ignore_index -100");
    tg_tensor *ok = tg_from_data(ctx, TG_I64, TG_SHAPE(3), (const int64_t[]){0, 3, -100});
    tg_ce_attrs ce = TG_CE_DEFAULTS;
    ce.label_smoothing = 1.5;
    EXPECT(tg_cross_entropy_ex(ctx, z, ok, NULL, &ce), TG_EINVAL,
           "cross_entropy: label_smoothing = 1.5 is outside [0, 1]");
    ce.label_smoothing = NAN;
    EXPECT(tg_cross_entropy_ex(ctx, z, ok, NULL, &ce), TG_EINVAL, "label_smoothing = nan");
    ce.label_smoothing = 0.1;
    EXPECT(tg_apply_named(ctx, "nll_loss", (tg_tensor *[]){z, ok}, 2, &ce), TG_EINVAL,
           "nll_loss: label_smoothing = 0.1; nll_loss has none, so it must be 0");
    ce.label_smoothing = 0;
    EXPECT(tg_cross_entropy_ex(ctx, z, ok, tg_ones(ctx, TG_F32, TG_SHAPE(3)), &ce), TG_ESHAPE,
           "cross_entropy: weight is (3); it needs one entry per class, (4)");
    EXPECT(tg_nll_loss_ex(ctx, z, ok, tg_ones(ctx, TG_F64, TG_SHAPE(4)), TG_MEAN, -100), TG_EDTYPE,
           "nll_loss: weight is (4) float64 but the input is (3, 4) float32");
    tg_tensor *zg = tg_ones(ctx, TG_F32, TG_SHAPE(3, 4)), *wg = tg_ones(ctx, TG_F32, TG_SHAPE(4));
    tg_set_requires_grad(ctx, zg, true);
    tg_set_requires_grad(ctx, wg, true);
    /* PyTorch: "not differentiable with respect to argument 'weight'" */
    EXPECT(tg_cross_entropy_ex(ctx, zg, ok, wg, &ce), TG_EINVAL,
           "with class indices it is not differentiable");
    tg_tensor *pw = tg_ones(ctx, TG_F32, TG_SHAPE(4));
    tg_set_requires_grad(ctx, pw, true);
    EXPECT(tg_bce_with_logits_ex(ctx, zg, z, pw, TG_MEAN), TG_EINVAL,
           "bce_with_logits: pos_weight (4) float32 requires grad, but it is not differentiable");
    /* without grad mode nothing is recorded, so PyTorch and tapegrad take it */
    tg_set_grad_enabled(ctx, false);
    ck_assert_ptr_nonnull(tg_bce_with_logits_ex(ctx, zg, z, pw, TG_MEAN));
    tg_set_grad_enabled(ctx, true);
    /* PyTorch: "output with shape [3, 4] doesn't match the broadcast shape [2, 3, 4]" */
    EXPECT(tg_bce_with_logits_ex(ctx, z, z, tg_ones(ctx, TG_F32, TG_SHAPE(2, 3, 4)), TG_MEAN),
           TG_ESHAPE, "bce_with_logits: pos_weight (2, 3, 4) broadcast with input (3, 4) gives a larger");
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ bad input */

START_TEST(bad_input)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F32, TG_SHAPE(1, 4, 3, 3));
    tg_tensor *w = tg_ones(ctx, TG_F32, TG_SHAPE(2, 4, 5, 5));
    EXPECT(tg_conv2d(ctx, x, w, NULL, 1, 0, 1, 1), TG_ESHAPE,
           "conv2d: the kernel spans 5 x 5 but the padded input is only 3 x 3");
    EXPECT(tg_conv2d(ctx, x, tg_ones(ctx, TG_F32, TG_SHAPE(2, 4, 1, 1)), NULL, 0, 0, 1, 1), TG_EINVAL,
           "conv2d: stride 0; it must be >= 1");
    EXPECT(tg_conv2d(ctx, x, tg_ones(ctx, TG_F32, TG_SHAPE(2, 4, 1, 1)), NULL, 1, 0, 1, 3), TG_EINVAL,
           "conv2d: groups = 3 must divide both the 4 input channels and the 2 filters");
    EXPECT(tg_conv2d(ctx, x, tg_ones(ctx, TG_F32, TG_SHAPE(2, 3, 1, 1)), NULL, 1, 0, 1, 1), TG_ESHAPE,
           "conv2d: input has 4 channels but weight (2, 3, 1, 1) expects 3");
    EXPECT(tg_conv1d(ctx, tg_ones(ctx, TG_F32, TG_SHAPE(1, 1, 3)), tg_ones(ctx, TG_F32, TG_SHAPE(1, 1, 6)),
                     NULL, 1, 1, 1, 1), TG_ESHAPE, "conv1d: the kernel spans 6 but the padded input is only 5 long");
    EXPECT(tg_max_pool2d_ex(ctx, x, 2, 0, 0), TG_EINVAL, "max_pool2d: stride 0; it must be >= 1");
    EXPECT(tg_avg_pool2d(ctx, x, 4), TG_ESHAPE, "avg_pool2d: kernel 4 x 4 is larger than the padded input 3 x 3");
    EXPECT(tg_max_pool2d_ex(ctx, x, 2, 1, 2), TG_EINVAL, "max_pool2d: padding 2 must be between 0 and half the kernel size 2");
    tg_tensor *z = tg_ones(ctx, TG_F32, TG_SHAPE(3, 4));
    EXPECT(tg_cross_entropy(ctx, z, tg_from_data(ctx, TG_I64, TG_SHAPE(3), (const int64_t[]){0, 4, 1}), TG_MEAN),
           TG_EINVAL, "cross_entropy: target[1] = 4 is not a class index in [0, 4)");
    EXPECT(tg_cross_entropy(ctx, z, tg_from_f64(ctx, TG_F32, TG_SHAPE(3), (const double[]){0, 1.5, 1}), TG_MEAN),
           TG_EDTYPE, "pass the indices as an int64 tensor");
    EXPECT(tg_cross_entropy(ctx, z, tg_ones(ctx, TG_F32, TG_SHAPE(4)), TG_MEAN), TG_ESHAPE,
           "cross_entropy: target (4) fits logits (3, 4) neither as class indices");
    EXPECT(tg_mse(ctx, z, tg_ones(ctx, TG_F32, TG_SHAPE(4, 3)), TG_MEAN), TG_ESHAPE,
           "mse: input is (3, 4) but target is (4, 3)");
    EXPECT(tg_bce(ctx, tg_full(ctx, TG_F32, TG_SHAPE(2), 1.5), tg_ones(ctx, TG_F32, TG_SHAPE(2)), TG_MEAN),
           TG_EINVAL, "bce: input[0] = 1.5 is not a probability in [0, 1]");
    EXPECT(tg_mse(ctx, z, z, (tg_reduction)7), TG_EINVAL, "mse: reduction 7 is not TG_MEAN, TG_SUM or TG_NONE");
    EXPECT(tg_dropout(ctx, z, 1.5), TG_EINVAL, "dropout: p = 1.5 is outside [0, 1]");
    EXPECT(tg_dropout(ctx, z, -0.1), TG_EINVAL, "dropout: p = -0.1 is outside [0, 1]");
    EXPECT(tg_batch_norm(ctx, tg_ones(ctx, TG_F32, TG_SHAPE(1, 3)), NULL, NULL, NULL, NULL, 0.1, 1e-5),
           TG_EINVAL, "batch_norm: expected more than 1 value per channel when training, got input of size (1, 3)");
    EXPECT(tg_batch_norm(ctx, z, tg_ones(ctx, TG_F32, TG_SHAPE(3)), NULL, NULL, NULL, 0.1, 1e-5), TG_ESHAPE,
           "batch_norm: weight is (3) but the input has 4 channels");
    EXPECT(tg_batch_norm(ctx, z, NULL, NULL, tg_zeros(ctx, TG_F32, TG_SHAPE(4)), NULL, 0.1, 1e-5), TG_EINVAL,
           "batch_norm: give both running_mean and running_var, or neither");
    EXPECT(tg_softmax(ctx, z, 2), TG_EINVAL, "softmax: axis 2 is out of range for 2 dimensions");
    EXPECT(tg_global_avg_pool(ctx, z), TG_ESHAPE, "global_avg_pool: input (3, 4) should be (N, C, ...)");
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    fx_load(TG_FIXTURES "/torch_ops.txt");
    Suite *s = suite_create("nn");
    TCase *tc = tcase_create("pytorch");
    tcase_add_loop_test(tc, matches_pytorch, 0, n_cases);
    suite_add_tcase(s, tc);
    tc = tcase_create("stability");
    tcase_add_test(tc, huge_logits_stay_finite);
    tcase_add_test(tc, saturated_activations);
    tcase_add_test(tc, bce_at_zero_and_one);
    suite_add_tcase(s, tc);
    tc = tcase_create("modes");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, dropout_statistics);
    tcase_add_test(tc, batch_norm_modes);
    suite_add_tcase(s, tc);
    tc = tcase_create("options");
    tcase_add_test(tc, pool_edge_windows);
    tcase_add_test(tc, ignored_targets);
    tcase_add_test(tc, unnormalised_probabilities);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, option_errors);
    suite_add_tcase(s, tc);
    return s;
}
