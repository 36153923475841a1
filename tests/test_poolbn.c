/*
 * test_poolbn.c: the parallel and vectorised kernels of pooling and batch
 * norm: one and two threads give the same values, and max pooling's 2x2
 * stride-2 kernel and its general kernel, whose saved arg-max is a byte
 * or an int64 by kernel size, agree with a plain reference (odd sizes,
 * padding, dilation, ceil mode, NaN, -inf and ties), gradients included.
 */
#include <string.h>

#include "testutil.h"

/* A float64 step tensor of values in [-2, 2) drawn from the context RNG. */
static tg_tensor *rand_leaf(tg_ctx *ctx, int ndim, const int64_t *shape, bool grad)
{
    tg_tensor *t = tg_rand(ctx, TG_F64, ndim, shape, -2, 2);
    ck_assert_ptr_nonnull(t);
    if (grad)
        ck_assert_int_eq(tg_set_requires_grad(ctx, t, true), TG_OK);
    return t;
}

/* Copies t's values out (caller frees). */
static double *values(const tg_tensor *t)
{
    ck_assert_ptr_nonnull(t);
    double *v = malloc((size_t)t->numel * sizeof *v);
    ck_assert_ptr_nonnull(v);
    for (int64_t i = 0; i < t->numel; i++)
        v[i] = tg_get(t, i);
    return v;
}

static void same(const double *a, const double *b, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(a[i] - b[i]) <= 1e-12 * fmax(1.0, fabs(a[i])),
                      "%s[%lld]: %.17g with 1 thread, %.17g with 2", what, (long long)i, a[i], b[i]);
}

/* ------------------------------------------------------------ threads */

typedef struct pool_case {
    const char *op;
    int ndim;
    int64_t x[4];
    tg_pool_attrs a;
} pool_case;

static const pool_case POOLS[] = {
    {"max_pool2d", 4, {8, 16, 32, 32}, {{2, 2}, {2, 2}, {0, 0}, {1, 1}, false, false}},
    {"max_pool2d", 4, {8, 16, 31, 33}, {{3, 3}, {2, 2}, {1, 1}, {1, 1}, true, false}},
    {"avg_pool2d", 4, {8, 16, 32, 30}, {{3, 2}, {2, 2}, {1, 0}, {1, 1}, false, true}},
    {"max_pool1d", 3, {16, 16, 301}, {{3, 0}, {2, 0}, {1, 0}, {2, 1}, false, false}},
    {"avg_pool1d", 3, {16, 16, 300}, {{4, 0}, {3, 0}, {2, 0}, {1, 1}, true, false}},
};

/* y and dx of one pooling case, its input and upstream gradient drawn from seed 7 */
static void pool_run(const pool_case *c, double **y, double **gx, int64_t *ny, int64_t *nx)
{
    tg_ctx *ctx = tg_ctx_new(7);
    tg_tensor *x = rand_leaf(ctx, c->ndim, c->x, true);
    tg_tensor *out = tg_apply_named(ctx, c->op, &x, 1, &c->a);
    ck_assert_msg(out != NULL, "%s", tg_errmsg(ctx));
    tg_tensor *g = rand_leaf(ctx, out->ndim, out->shape, false);
    ck_assert_int_eq(tg_backward_ex(ctx, out, g, 0), TG_OK);
    *y = values(out);
    *gx = values(x->grad);
    *ny = out->numel;
    *nx = x->numel;
    tg_ctx_free(ctx);
}

START_TEST(pool_threads)
{
    const pool_case *c = &POOLS[_i];
    double *y[2], *gx[2];
    int64_t ny, nx;
    int prev = tg_set_num_threads(1);
    pool_run(c, &y[0], &gx[0], &ny, &nx);
    tg_set_num_threads(2);
    pool_run(c, &y[1], &gx[1], &ny, &nx);
    tg_set_num_threads(prev);
    same(y[0], y[1], ny, c->op);
    same(gx[0], gx[1], nx, "dx");
    for (int k = 0; k < 2; k++) {
        free(y[k]);
        free(gx[k]);
    }
}
END_TEST

START_TEST(gap_threads)
{
    double *y[2], *gx[2];
    int64_t ny = 0, nx = 0;
    int prev = tg_num_threads();
    for (int k = 0; k < 2; k++) {
        tg_set_num_threads(k + 1);
        tg_ctx *ctx = tg_ctx_new(7);
        tg_tensor *x = rand_leaf(ctx, TG_SHAPE(64, 8, 17, 19), true);
        tg_tensor *out = tg_global_avg_pool(ctx, x);
        ck_assert_ptr_nonnull(out);
        ck_assert_int_eq(tg_backward_ex(ctx, out, rand_leaf(ctx, out->ndim, out->shape, false), 0),
                         TG_OK);
        y[k] = values(out);
        gx[k] = values(x->grad);
        ny = out->numel;
        nx = x->numel;
        tg_ctx_free(ctx);
    }
    tg_set_num_threads(prev);
    same(y[0], y[1], ny, "global_avg_pool");
    same(gx[0], gx[1], nx, "dx");
    for (int k = 0; k < 2; k++) {
        free(y[k]);
        free(gx[k]);
    }
}
END_TEST

typedef struct bn_case {
    int ndim;
    int64_t x[4];
    bool training;
} bn_case;

static const bn_case BNS[] = {
    {4, {16, 8, 32, 32}, true},
    {4, {16, 8, 32, 32}, false},
    {3, {32, 12, 100}, true},
    {2, {8192, 6}, true},
};

/* The outputs of one batch norm case: y, dx, dw, db, running mean and variance. */
#define BN_OUTS 6

static void bn_run(const bn_case *c, double *out[BN_OUTS], int64_t n[BN_OUTS])
{
    tg_ctx *ctx = tg_ctx_new(11);
    int64_t ch = c->x[1];
    tg_tensor *x = rand_leaf(ctx, c->ndim, c->x, true);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(ch), "w");
    tg_tensor *b = tg_param(ctx, TG_F64, TG_SHAPE(ch), "b");
    tg_tensor *rm = tg_buffer(ctx, TG_F64, TG_SHAPE(ch), "rm");
    tg_tensor *rv = tg_buffer(ctx, TG_F64, TG_SHAPE(ch), "rv");
    ck_assert_int_eq(tg_assign(ctx, w, tg_rand(ctx, TG_F64, TG_SHAPE(ch), 0.5, 1.5)), TG_OK);
    ck_assert_int_eq(tg_assign(ctx, b, tg_rand(ctx, TG_F64, TG_SHAPE(ch), -1, 1)), TG_OK);
    ck_assert_int_eq(tg_assign(ctx, rm, tg_rand(ctx, TG_F64, TG_SHAPE(ch), -0.5, 0.5)), TG_OK);
    ck_assert_int_eq(tg_assign(ctx, rv, tg_rand(ctx, TG_F64, TG_SHAPE(ch), 0.5, 2)), TG_OK);
    tg_set_training(ctx, c->training);
    tg_tensor *y = tg_batch_norm(ctx, x, w, b, rm, rv, 0.1, 1e-5);
    ck_assert_msg(y != NULL, "%s", tg_errmsg(ctx));
    ck_assert_int_eq(tg_backward_ex(ctx, y, rand_leaf(ctx, y->ndim, y->shape, false), 0), TG_OK);
    const tg_tensor *t[BN_OUTS] = {y, x->grad, w->grad, b->grad, rm, rv};
    for (int k = 0; k < BN_OUTS; k++) {
        out[k] = values(t[k]);
        n[k] = t[k]->numel;
    }
    tg_ctx_free(ctx);
}

START_TEST(bn_threads)
{
    static const char *const names[BN_OUTS] = {"y", "dx", "dw", "db", "running_mean",
                                               "running_var"};
    double *v[2][BN_OUTS];
    int64_t n[BN_OUTS];
    int prev = tg_set_num_threads(1);
    bn_run(&BNS[_i], v[0], n);
    tg_set_num_threads(2);
    bn_run(&BNS[_i], v[1], n);
    tg_set_num_threads(prev);
    for (int k = 0; k < BN_OUTS; k++) {
        same(v[0][k], v[1][k], n[k], names[k]);
        free(v[0][k]);
        free(v[1][k]);
    }
}
END_TEST

/* ------------------------------------------------------------ the 2x2 kernel */

/* Max pooling 2x2 stride 2 as PyTorch defines it, element by element: the
 * first maximum of each window's in-bounds part, a later NaN beating all. */
static void ref_max2(const double *x, int64_t planes, int64_t h, int64_t w, int64_t oh,
                     int64_t ow, double *y, int64_t *arg)
{
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oy = 0; oy < oh; oy++)
            for (int64_t ox = 0; ox < ow; ox++) {
                int64_t best = -1;
                double high = -INFINITY;
                for (int64_t i = 2 * oy; i < 2 * oy + 2 && i < h; i++)
                    for (int64_t j = 2 * ox; j < 2 * ox + 2 && j < w; j++) {
                        double v = x[(p * h + i) * w + j];
                        if (best < 0 || v > high || isnan(v)) {
                            high = v;
                            best = (p * h + i) * w + j;
                        }
                    }
                y[(p * oh + oy) * ow + ox] = high;
                arg[(p * oh + oy) * ow + ox] = best;
            }
}

/* Values from {-1, 0, 1, 2} (ties everywhere), about one in eight NaN and
 * one in sixteen -inf. */
static double tricky(tg_ctx *ctx)
{
    double u = tg_rand_uniform(ctx);
    if (u < 0.125)
        return NAN;
    if (u < 0.1875)
        return -INFINITY;
    return floor(tg_rand_uniform(ctx) * 4) - 1;
}

static void check_max2(tg_ctx *ctx, tg_dtype dt, int64_t h, int64_t w, bool ceil_mode)
{
    const int64_t n = 2, c = 3, planes = n * c;
    int64_t oh = ceil_mode ? (h + 1) / 2 : h / 2, ow = ceil_mode ? (w + 1) / 2 : w / 2;
    double *xv = malloc((size_t)(planes * h * w) * sizeof *xv);
    double *yr = malloc((size_t)(planes * oh * ow) * sizeof *yr);
    double *gv = malloc((size_t)(planes * oh * ow) * sizeof *gv);
    double *dx = calloc((size_t)(planes * h * w), sizeof *dx);
    int64_t *arg = malloc((size_t)(planes * oh * ow) * sizeof *arg);
    ck_assert(xv && yr && gv && dx && arg);
    for (int64_t i = 0; i < planes * h * w; i++)
        xv[i] = tricky(ctx);
    for (int64_t i = 0; i < planes * oh * ow; i++)
        gv[i] = (double)(i % 7) + 1;
    ref_max2(xv, planes, h, w, oh, ow, yr, arg);
    for (int64_t i = 0; i < planes * oh * ow; i++)
        if (arg[i] >= 0)
            dx[arg[i]] += gv[i];

    tg_tensor *x = tg_from_f64(ctx, dt, TG_SHAPE(n, c, h, w), xv);
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(tg_set_requires_grad(ctx, x, true), TG_OK);
    tg_pool_attrs a = {{2, 2}, {2, 2}, {0, 0}, {1, 1}, ceil_mode, false};
    tg_tensor *y = tg_max_pool2d_opts(ctx, x, &a);
    ck_assert_msg(y != NULL, "%s", tg_errmsg(ctx));
    ck_assert_int_eq(y->shape[2], oh);
    ck_assert_int_eq(y->shape[3], ow);
    for (int64_t i = 0; i < y->numel; i++) {
        double got = tg_get(y, i);
        ck_assert_msg(isnan(yr[i]) ? isnan(got) : got == yr[i],
                      "%lld x %lld%s: y[%lld] = %g, expected %g", (long long)h, (long long)w,
                      ceil_mode ? " ceil" : "", (long long)i, got, yr[i]);
    }
    tg_tensor *g = tg_from_f64(ctx, dt, y->ndim, y->shape, gv);
    ck_assert_int_eq(tg_backward_ex(ctx, y, g, 0), TG_OK);
    for (int64_t i = 0; i < x->numel; i++)
        ck_assert_msg(tg_get(x->grad, i) == dx[i], "%lld x %lld%s: dx[%lld] = %g, expected %g",
                      (long long)h, (long long)w, ceil_mode ? " ceil" : "", (long long)i,
                      tg_get(x->grad, i), dx[i]);
    free(xv);
    free(yr);
    free(gv);
    free(dx);
    free(arg);
}

/* Even and odd sizes, floor and ceil mode, both dtypes, in checked mode
 * (fresh gradient buffers hold NaN, so an element the vjp fails to write
 * shows). */
START_TEST(max2_against_reference)
{
    tg_ctx_opts o = {.seed = 3, .checked = true};
    tg_ctx *ctx = tg_ctx_new_opts(&o);
    ck_assert_ptr_nonnull(ctx);
    static const int64_t sizes[] = {2, 3, 4, 5, 8, 9, 31};
    for (int dt = TG_F32; dt <= TG_F64; dt++)
        for (int i = 0; i < 7; i++)
            for (int j = 0; j < 7; j++)
                for (int cm = 0; cm < 2; cm++) {
                    check_max2(ctx, (tg_dtype)dt, sizes[i], sizes[j], cm);
                    tg_reset(ctx);
                }
    tg_ctx_free(ctx);
}
END_TEST

/* A second contribution to the same gradient adds to the first. */
START_TEST(max2_accumulates)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 1, 2, 4),
                               (const double[]){1, 5, 2, 2, 3, 0, 2, NAN});
    ck_assert_int_eq(tg_set_requires_grad(ctx, x, true), TG_OK);
    tg_tensor *y = tg_add(ctx, tg_max_pool2d(ctx, x, 2), tg_max_pool2d(ctx, x, 2));
    ck_assert_ptr_nonnull(y);
    tg_tensor *g = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 1, 1, 2), (const double[]){1, 10});
    ck_assert_int_eq(tg_backward_ex(ctx, y, g, 0), TG_OK);
    ck_tensor(x->grad, ((const double[]){0, 2, 0, 0, 0, 0, 0, 20}), 0);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ saved taps */

/* Max pooling in general saves each window's arg-max as its tap within the
 * kernel: a byte for kernels of up to 255 taps, an int64 beyond. Each case
 * against the definition, with ties, NaN and -inf everywhere. */
typedef struct mp_case {
    bool one;           /* max_pool1d: h = 1, the kernel's entries in a[0] */
    int64_t h, w;
    tg_pool_attrs a;
    const char *desc;
} mp_case;

static const mp_case MPS[] = {
    {false, 8, 9, {{3, 3}, {2, 2}, {1, 1}, {1, 1}, false, false}, "3x3 stride 2 pad 1"},
    {false, 9, 8, {{4, 3}, {1, 2}, {2, 1}, {2, 1}, true, false}, "4x3 dilated rows, ceil"},
    {false, 13, 14, {{5, 5}, {3, 2}, {2, 2}, {2, 3}, false, false}, "5x5 dilation (2, 3)"},
    {false, 18, 19, {{15, 17}, {3, 2}, {7, 8}, {1, 1}, false, false}, "15x17: 255 taps, bytes"},
    {false, 22, 26, {{16, 17}, {3, 4}, {8, 8}, {2, 2}, true, false}, "16x17 dilated: 272 taps, int64"},
    {false, 5, 2, {{2, 2}, {1, 1}, {1, 1}, {1, 3}, false, false}, "windows over padding only"},
    {true, 1, 23, {{5, 0}, {2, 0}, {2, 0}, {3, 0}, false, false}, "1-D k 5 dilation 3"},
    {true, 1, 260, {{255, 0}, {5, 0}, {127, 0}, {1, 0}, false, false}, "1-D k 255, bytes"},
    {true, 1, 310, {{300, 0}, {7, 0}, {150, 0}, {2, 0}, true, false}, "1-D k 300 dilated, int64"},
};

/* Max pooling of one (h, w) plane as PyTorch defines it: the first maximum
 * of each window's in-bounds taps, a later NaN beating all; -inf and no
 * arg-max (-1) for a window without one. Returns how many lack one. */
static int64_t ref_max(const mp_case *c, const double *x, int64_t oh, int64_t ow, double *y,
                       int64_t *arg)
{
    const int64_t kh = c->one ? 1 : c->a.kernel[0], kw = c->a.kernel[c->one ? 0 : 1];
    const int64_t sh = c->one ? 1 : c->a.stride[0], sw = c->a.stride[c->one ? 0 : 1];
    const int64_t ph = c->one ? 0 : c->a.padding[0], pw = c->a.padding[c->one ? 0 : 1];
    const int64_t dh = c->one ? 1 : c->a.dilation[0], dw = c->a.dilation[c->one ? 0 : 1];
    int64_t empty = 0;
    for (int64_t oy = 0; oy < oh; oy++)
        for (int64_t ox = 0; ox < ow; ox++) {
            int64_t best = -1;
            double high = -INFINITY;
            for (int64_t i = 0; i < kh; i++)
                for (int64_t j = 0; j < kw; j++) {
                    int64_t r = oy * sh - ph + i * dh, col = ox * sw - pw + j * dw;
                    if (r < 0 || r >= c->h || col < 0 || col >= c->w)
                        continue;
                    double v = x[r * c->w + col];
                    if (best < 0 || v > high || isnan(v)) {
                        high = v;
                        best = r * c->w + col;
                    }
                }
            y[oy * ow + ox] = high;
            arg[oy * ow + ox] = best;
            empty += best < 0;
        }
    return empty;
}

/* Case c in dtype dt: y, and dx through two uses of the pooling (the second
 * vjp adds to the first's written gradient), against the reference, in
 * checked mode (fresh gradient buffers hold NaN, so an element the vjp
 * fails to write shows). */
static void check_taps(const mp_case *c, tg_dtype dt)
{
    tg_ctx_opts o = {.seed = 5, .checked = true};
    tg_ctx *ctx = tg_ctx_new_opts(&o);
    ck_assert_ptr_nonnull(ctx);
    const int64_t planes = 6, hw = c->h * c->w;
    double *xv = malloc((size_t)(planes * hw) * sizeof *xv);
    ck_assert_ptr_nonnull(xv);
    for (int64_t i = 0; i < planes * hw; i++)
        xv[i] = tricky(ctx);
    tg_tensor *x = c->one ? tg_from_f64(ctx, dt, TG_SHAPE(2, 3, c->w), xv)
                          : tg_from_f64(ctx, dt, TG_SHAPE(2, 3, c->h, c->w), xv);
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(tg_set_requires_grad(ctx, x, true), TG_OK);
    tg_tensor *y1 = c->one ? tg_max_pool1d_opts(ctx, x, &c->a) : tg_max_pool2d_opts(ctx, x, &c->a);
    tg_tensor *y2 = c->one ? tg_max_pool1d_opts(ctx, x, &c->a) : tg_max_pool2d_opts(ctx, x, &c->a);
    ck_assert_msg(y1 && y2, "%s: %s", c->desc, tg_errmsg(ctx));
    const int64_t oh = c->one ? 1 : y1->shape[2], ow = y1->shape[y1->ndim - 1], n = oh * ow;
    double *yr = malloc((size_t)(planes * n) * sizeof *yr);
    double *gv = malloc((size_t)(planes * n) * sizeof *gv);
    double *dx = calloc((size_t)(planes * hw), sizeof *dx);
    int64_t *arg = malloc((size_t)(planes * n) * sizeof *arg), empty = 0;
    ck_assert(yr && gv && dx && arg);
    for (int64_t p = 0; p < planes; p++)
        empty += ref_max(c, xv + p * hw, oh, ow, yr + p * n, arg + p * n);
    for (int64_t i = 0; i < planes * n; i++) {
        gv[i] = (double)(i % 7) + 1;
        if (arg[i] >= 0)
            dx[(i / n) * hw + arg[i]] += 2 * gv[i];
    }
    /* the case that means to have windows without an in-bounds tap has them */
    ck_assert_msg((empty > 0) == (strstr(c->desc, "padding only") != NULL), "%s: %lld empty",
                  c->desc, (long long)empty);
    for (int64_t i = 0; i < planes * n; i++) {
        double got = tg_get(y1, i);
        ck_assert_msg(isnan(yr[i]) ? isnan(got) : got == yr[i], "%s %s: y[%lld] = %g, expected %g",
                      c->desc, tg_dtype_name(dt), (long long)i, got, yr[i]);
    }
    tg_tensor *g = tg_from_f64(ctx, dt, y1->ndim, y1->shape, gv);
    tg_tensor *y = tg_add(ctx, y1, y2);
    ck_assert_int_eq(tg_backward_ex(ctx, y, g, 0), TG_OK);
    for (int64_t i = 0; i < x->numel; i++)
        ck_assert_msg(tg_get(x->grad, i) == dx[i], "%s %s: dx[%lld] = %g, expected %g", c->desc,
                      tg_dtype_name(dt), (long long)i, tg_get(x->grad, i), dx[i]);
    free(xv);
    free(yr);
    free(gv);
    free(dx);
    free(arg);
    tg_ctx_free(ctx);
}

START_TEST(max_taps_against_reference)
{
    check_taps(&MPS[_i], TG_F32);
    check_taps(&MPS[_i], TG_F64);
}
END_TEST

/* Average pooling with windows that tile the input (kernel = stride, no
 * padding) takes its own pass: against the definition, including rows and
 * columns no window reaches, both dtypes, written and then added to. */
static void check_avg_tiled(tg_dtype dt, bool one, int64_t h, int64_t w, int64_t kh, int64_t kw)
{
    tg_ctx *ctx = tg_ctx_new(3);
    const int64_t planes = 6, oh = h / kh, ow = w / kw;
    tg_tensor *x = one ? tg_rand(ctx, dt, TG_SHAPE(2, 3, w), -2, 2)
                       : tg_rand(ctx, dt, TG_SHAPE(2, 3, h, w), -2, 2);
    tg_set_requires_grad(ctx, x, true);
    tg_pool_attrs a = {{kh, kw}, {kh, kw}, {0, 0}, {1, 1}, false, false};
    if (one)
        a.kernel[0] = a.stride[0] = kw;
    tg_tensor *y = NULL, *loss = NULL, *wts[2];
    for (int use = 0; use < 2; use++) { /* the second use adds to the first's gradient */
        y = one ? tg_avg_pool1d_opts(ctx, x, &a) : tg_avg_pool2d_opts(ctx, x, &a);
        ck_assert_msg(y != NULL, "%s", tg_errmsg(ctx));
        wts[use] = tg_rand(ctx, dt, y->ndim, y->shape, -1, 1);
        tg_tensor *l = tg_sum(ctx, tg_mul(ctx, y, wts[use]));
        loss = loss ? tg_add(ctx, loss, l) : l;
        ck_assert_int_eq(y->numel, planes * oh * ow);
        for (int64_t p = 0; p < planes; p++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    double sum = 0;
                    for (int64_t i = 0; i < kh; i++)
                        for (int64_t j = 0; j < kw; j++)
                            sum += tg_get(x, (p * h + oy * kh + i) * w + ox * kw + j);
                    ck_close(tg_get(y, (p * oh + oy) * ow + ox), sum / (double)(kh * kw),
                             dt == TG_F32 ? 1e-6 : 1e-15);
                }
    }
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    /* the gradient: each input's window weight over the divisor, summed over
     * both uses; 0 outside every window */
    for (int64_t p = 0; p < planes; p++)
        for (int64_t iy = 0; iy < h; iy++)
            for (int64_t ix = 0; ix < w; ix++) {
                double want = 0;
                if (iy < oh * kh && ix < ow * kw)
                    for (int use = 0; use < 2; use++)
                        want += tg_get(wts[use], (p * oh + iy / kh) * ow + ix / kw) /
                                (double)(kh * kw);
                ck_close(tg_get(x->grad, (p * h + iy) * w + ix), want,
                         dt == TG_F32 ? 1e-6 : 1e-15);
            }
    tg_reset(ctx);
    tg_ctx_free(ctx);
}

START_TEST(avg_tiled_against_reference)
{
    for (int dt = 0; dt < 2; dt++) {
        tg_dtype t = dt ? TG_F64 : TG_F32;
        check_avg_tiled(t, true, 1, 11, 1, 2);  /* B1's shape, odd length */
        check_avg_tiled(t, true, 1, 12, 1, 3);
        check_avg_tiled(t, false, 5, 7, 2, 2);  /* a row and a column outside */
        check_avg_tiled(t, false, 6, 6, 3, 2);
    }
}
END_TEST

/* B1's pairs in float32: each output is (a + b) / 2 rounded once, as the
 * sum in double gives it, also at the top of the range (no overflow to
 * infinity) and with NaN and infinities passed on. */
START_TEST(avg_pairs_rounded_once)
{
    tg_ctx *ctx = tg_ctx_new(5);
    enum { N = 4099 };
    static double v[2 * N];
    for (int i = 0; i < 2 * N; i++) /* magnitudes over the whole float range */
        v[i] = ldexp(sin(1.3 * i) , (int)(i * 37 % 250) - 125);
    const double special[][2] = {{FLT_MAX, FLT_MAX}, {-FLT_MAX, -FLT_MAX}, {FLT_MAX, -FLT_MAX},
                                 {NAN, 1}, {1, INFINITY}, {INFINITY, -INFINITY},
                                 {0x1p-149, 0x1p-149}, {0x1p-149, 0}, {-0.0, -0.0}};
    for (int i = 0; i < 9; i++) {
        v[2 * i] = special[i][0];
        v[2 * i + 1] = special[i][1];
    }
    tg_tensor *x = tg_from_f64(ctx, TG_F32, TG_SHAPE(1, 1, 2 * N), v);
    tg_tensor *y = tg_avg_pool1d(ctx, x, 2);
    ck_assert_ptr_nonnull(y);
    const float *xs = x->data, *ys = y->data;
    for (int i = 0; i < N; i++) {
        float want = (float)(((double)xs[2 * i] + (double)xs[2 * i + 1]) / 2);
        ck_assert_msg(memcmp(&want, &ys[i], sizeof want) == 0 || (isnan(want) && isnan(ys[i])),
                      "pair %d: (%a + %a) / 2 is %a, want %a", i, xs[2 * i], xs[2 * i + 1],
                      ys[i], want);
    }
    /* float64 at the top of its range */
    tg_tensor *xd = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 1, 4),
                                (const double[]){DBL_MAX, DBL_MAX, -DBL_MAX, 0x1p-1074});
    tg_tensor *yd = tg_avg_pool1d(ctx, xd, 2);
    ck_assert_ptr_nonnull(yd);
    ck_assert(tg_get(yd, 0) == DBL_MAX && tg_get(yd, 1) == -DBL_MAX / 2);
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("poolbn");
    TCase *tc = tcase_create("threads");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, pool_threads, 0, (int)(sizeof POOLS / sizeof POOLS[0]));
    tcase_add_test(tc, gap_threads);
    tcase_add_loop_test(tc, bn_threads, 0, (int)(sizeof BNS / sizeof BNS[0]));
    suite_add_tcase(s, tc);
    tc = tcase_create("max2");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, max2_against_reference);
    tcase_add_test(tc, max2_accumulates);
    tcase_add_test(tc, avg_tiled_against_reference);
    tcase_add_test(tc, avg_pairs_rounded_once);
    tcase_add_loop_test(tc, max_taps_against_reference, 0, (int)(sizeof MPS / sizeof MPS[0]));
    suite_add_tcase(s, tc);
    return s;
}
