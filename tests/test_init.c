/*
 * test_init.c: the initialisers of nn/init.c against torch.nn.init's
 * formulas, worked out by hand for a few shapes: bounds (every draw inside,
 * the largest close to the bound), sample means and standard deviations of
 * large tensors, reproducibility across seeds and dtypes, the gains, every
 * error, and the reason initialisers exist at all: a constant start never
 * breaks the symmetry between hidden units, the default one does.
 */
#include <string.h>

#include "testutil.h"

/* Sample statistics of a tensor's values. */
typedef struct stats {
    double mean, std, min, max;
} stats;

static stats stats_of(const tg_tensor *t)
{
    stats s = {0.0, 0.0, INFINITY, -INFINITY};
    for (int64_t i = 0; i < t->numel; i++) {
        double v = tg_get(t, i);
        s.mean += v;
        s.min = fmin(s.min, v);
        s.max = fmax(s.max, v);
    }
    s.mean /= (double)t->numel;
    for (int64_t i = 0; i < t->numel; i++)
        s.std += (tg_get(t, i) - s.mean) * (tg_get(t, i) - s.mean);
    s.std = sqrt(s.std / (double)(t->numel - 1));
    return s;
}

/* Every value in [-bound, bound] (up to float32 rounding), both extremes
 * near it (within 1% for 4000 values or more, within 40/numel below), and the
 * sample std within 2% of a uniform's bound / sqrt(3) (large tensors). */
static void ck_uniform_bound(const tg_tensor *t, double bound)
{
    stats s = stats_of(t);
    double tol = bound * 1e-6;
    ck_assert_msg(s.min >= -bound - tol && s.max <= bound + tol, "values [%g, %g] outside +-%g", s.min,
                  s.max, bound);
    double reach = fmin(0.99, 1.0 - 40.0 / (double)t->numel);
    ck_assert_msg(s.min < -reach * bound && s.max > reach * bound,
                  "values [%g, %g] do not reach +-%g", s.min, s.max, bound);
    if (t->numel >= 10000) {
        ck_assert_msg(fabs(s.std / (bound / sqrt(3.0)) - 1.0) < 0.02, "std %g, bound %g", s.std,
                      bound);
        ck_assert_msg(fabs(s.mean) < 0.02 * bound, "mean %g, bound %g", s.mean, bound);
    }
}

/* Sample mean within 2% of std of mean, sample std within 2% of std. */
static void ck_normal_std(const tg_tensor *t, double mean, double std)
{
    stats s = stats_of(t);
    ck_assert_msg(fabs(s.mean - mean) < 0.02 * std, "mean %g, want %g", s.mean, mean);
    ck_assert_msg(fabs(s.std / std - 1.0) < 0.02, "std %g, want %g", s.std, std);
}

/* ---------------------------------------------------------------- gains */

START_TEST(gains)
{
    ck_close(tg_init_gain(TG_NL_LINEAR, 0.0), 1.0, 1e-15);
    ck_close(tg_init_gain(TG_NL_CONV, 0.0), 1.0, 1e-15);
    ck_close(tg_init_gain(TG_NL_SIGMOID, 0.0), 1.0, 1e-15);
    ck_close(tg_init_gain(TG_NL_TANH, 0.0), 5.0 / 3.0, 1e-15);
    ck_close(tg_init_gain(TG_NL_RELU, 0.0), 1.4142135623730951, 1e-15);
    ck_close(tg_init_gain(TG_NL_LEAKY_RELU, 0.01), 1.4141428569978354, 1e-15);
    ck_close(tg_init_gain(TG_NL_LEAKY_RELU, 0.0), 1.4142135623730951, 1e-15);
    ck_close(tg_init_gain(TG_NL_LEAKY_RELU, sqrt(5.0)), sqrt(1.0 / 3.0), 1e-15);
    ck_close(tg_init_gain(TG_NL_SELU, 0.0), 0.75, 1e-15);
    ck_assert(isnan(tg_init_gain((tg_nonlinearity)99, 0.0)));
}
END_TEST

/* ---------------------------------------------------------------- bounds */

/* A (6, 1, 5, 5) conv weight: fan_in 25, weight bound
 * 1/sqrt(25) * sqrt(3) * sqrt(2 / (1 + 5)) = 1/5, bias bound 1/sqrt(25) = 1/5.
 * The same fans with 1000 output channels give a large sample. */
START_TEST(default_conv)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F32, TG_SHAPE(6, 1, 5, 5), "w");
    tg_tensor *b = tg_param(ctx, TG_F32, TG_SHAPE(6), "b");
    ck_assert_int_eq(tg_init_default(ctx, w, b), TG_OK);
    stats sw = stats_of(w), sb = stats_of(b);
    ck_assert(sw.min >= -0.2000001 && sw.max <= 0.2000001 && sw.max - sw.min > 0.3);
    ck_assert(sb.min >= -0.2000001 && sb.max <= 0.2000001 && sb.max != sb.min);
    tg_tensor *wl = tg_param(ctx, TG_F64, TG_SHAPE(1000, 1, 5, 5), "wl");
    tg_tensor *bl = tg_param(ctx, TG_F64, TG_SHAPE(1000), "bl");
    ck_assert_int_eq(tg_init_default(ctx, wl, bl), TG_OK);
    ck_uniform_bound(wl, 0.2);
    ck_uniform_bound(bl, 0.2);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

/* nn.Linear(400, 120): fan_in 400, both bounds 1/20. */
START_TEST(default_linear)
{
    tg_ctx *ctx = tg_ctx_new(2);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(120, 400), "w");
    tg_tensor *b = tg_param(ctx, TG_F64, TG_SHAPE(120), "b");
    ck_assert_int_eq(tg_init_default(ctx, w, b), TG_OK);
    ck_uniform_bound(w, 0.05);
    ck_uniform_bound(b, 0.05);
    /* Without a bias only the weight is drawn. */
    tg_tensor *w2 = tg_param(ctx, TG_F64, TG_SHAPE(120, 400), "w2");
    ck_assert_int_eq(tg_init_default(ctx, w2, NULL), TG_OK);
    ck_uniform_bound(w2, 0.05);
    tg_ctx_free(ctx);
}
END_TEST

/* (100, 50): fan_in 50, fan_out 100; xavier bound gain * sqrt(6 / 150) = gain / 5. */
START_TEST(xavier_uniform)
{
    tg_ctx *ctx = tg_ctx_new(3);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(100, 50), "w");
    ck_assert_int_eq(tg_init_xavier_uniform(ctx, w, 1.0), TG_OK);
    ck_uniform_bound(w, 0.2);
    ck_assert_int_eq(tg_init_xavier_uniform(ctx, w, 2.0), TG_OK);
    ck_uniform_bound(w, 0.4);
    /* (10, 5, 3, 3): receptive field 9, fan_in 45, fan_out 90; bound sqrt(6 / 135). */
    tg_tensor *c = tg_param(ctx, TG_F64, TG_SHAPE(10, 5, 3, 3), "c");
    ck_assert_int_eq(tg_init_xavier_uniform(ctx, c, 1.0), TG_OK);
    ck_uniform_bound(c, sqrt(6.0 / 135.0));
    tg_ctx_free(ctx);
}
END_TEST

/* (500, 200): fans 200 + 500; std gain * sqrt(2 / 700). */
START_TEST(xavier_normal)
{
    tg_ctx *ctx = tg_ctx_new(4);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(500, 200), "w");
    ck_assert_int_eq(tg_init_xavier_normal(ctx, w, 1.0), TG_OK);
    ck_normal_std(w, 0.0, sqrt(2.0 / 700.0));
    ck_assert_int_eq(tg_init_xavier_normal(ctx, w, 5.0 / 3.0), TG_OK);
    ck_normal_std(w, 0.0, 5.0 / 3.0 * sqrt(2.0 / 700.0));
    tg_tensor *z = tg_param(ctx, TG_F64, TG_SHAPE(3, 4), "z");
    ck_assert_int_eq(tg_init_xavier_normal(ctx, z, 0.0), TG_OK);
    for (int64_t i = 0; i < z->numel; i++)
        ck_assert(tg_get(z, i) == 0.0);
    tg_ctx_free(ctx);
}
END_TEST

/* (24, 6, 2, 2): fan_in 24, fan_out 96. relu: bound sqrt(2) / sqrt(fan) * sqrt(3):
 * 1/2 by fan_in, 1/4 by fan_out; leaky_relu(a = 1): gain 1, bound sqrt(3 / 24). */
START_TEST(kaiming_uniform)
{
    tg_ctx *ctx = tg_ctx_new(5);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(24, 6, 2, 2), "w");
    ck_assert_int_eq(tg_init_kaiming_uniform(ctx, w, 0.0, TG_FAN_IN, TG_NL_RELU), TG_OK);
    ck_uniform_bound(w, 0.5);
    ck_assert_int_eq(tg_init_kaiming_uniform(ctx, w, 0.0, TG_FAN_OUT, TG_NL_RELU), TG_OK);
    ck_uniform_bound(w, 0.25);
    ck_assert_int_eq(tg_init_kaiming_uniform(ctx, w, 1.0, TG_FAN_IN, TG_NL_LEAKY_RELU), TG_OK);
    ck_uniform_bound(w, sqrt(3.0 / 24.0));
    /* a only matters for leaky_relu: tanh's bound is 5/3 * sqrt(3 / 24). */
    ck_assert_int_eq(tg_init_kaiming_uniform(ctx, w, 7.0, TG_FAN_IN, TG_NL_TANH), TG_OK);
    ck_uniform_bound(w, 5.0 / 3.0 * sqrt(3.0 / 24.0));
    /* A large one for the sample std: (1000, 100), relu, fan_in: bound sqrt(6 / 100). */
    tg_tensor *big = tg_param(ctx, TG_F32, TG_SHAPE(1000, 100), "big");
    ck_assert_int_eq(tg_init_kaiming_uniform(ctx, big, 0.0, TG_FAN_IN, TG_NL_RELU), TG_OK);
    ck_uniform_bound(big, sqrt(0.06));
    tg_ctx_free(ctx);
}
END_TEST

/* (1000, 100): relu, fan_in 100: std sqrt(2) / 10; fan_out 1000: sqrt(2 / 1000);
 * selu: 3/4 / 10. */
START_TEST(kaiming_normal)
{
    tg_ctx *ctx = tg_ctx_new(6);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(1000, 100), "w");
    ck_assert_int_eq(tg_init_kaiming_normal(ctx, w, 0.0, TG_FAN_IN, TG_NL_RELU), TG_OK);
    ck_normal_std(w, 0.0, sqrt(2.0) / 10.0);
    ck_assert_int_eq(tg_init_kaiming_normal(ctx, w, 0.0, TG_FAN_OUT, TG_NL_RELU), TG_OK);
    ck_normal_std(w, 0.0, sqrt(2.0 / 1000.0));
    ck_assert_int_eq(tg_init_kaiming_normal(ctx, w, 0.0, TG_FAN_IN, TG_NL_SELU), TG_OK);
    ck_normal_std(w, 0.0, 0.075);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(uniform_normal_constant)
{
    tg_ctx *ctx = tg_ctx_new(7);
    tg_tensor *t = tg_param(ctx, TG_F64, TG_SHAPE(100000), "t");
    ck_assert_int_eq(tg_init_uniform(ctx, t, -1.0, 3.0), TG_OK);
    stats s = stats_of(t);
    ck_assert(s.min >= -1.0 && s.max < 3.0 && s.min < -0.999 && s.max > 2.999);
    ck_assert_msg(fabs(s.mean - 1.0) < 0.02, "mean %g", s.mean);
    ck_assert_msg(fabs(s.std / (4.0 / sqrt(12.0)) - 1.0) < 0.02, "std %g", s.std);
    ck_assert_int_eq(tg_init_normal(ctx, t, 2.0, 0.5), TG_OK);
    ck_normal_std(t, 2.0, 0.5);
    /* a == b and std == 0 are allowed: constants. */
    ck_assert_int_eq(tg_init_uniform(ctx, t, 1.5, 1.5), TG_OK);
    ck_assert(stats_of(t).min == 1.5 && stats_of(t).max == 1.5);
    ck_assert_int_eq(tg_init_normal(ctx, t, -2.0, 0.0), TG_OK);
    ck_assert(stats_of(t).min == -2.0 && stats_of(t).max == -2.0);
    tg_tensor *f = tg_param(ctx, TG_F32, TG_SHAPE(2, 3), "f");
    ck_assert_int_eq(tg_init_constant(ctx, f, 0.1), TG_OK);
    for (int64_t i = 0; i < f->numel; i++)
        ck_assert(tg_get(f, i) == (double)0.1f);
    /* Step tensors and buffers are initialised just as well. */
    tg_tensor *st = tg_zeros(ctx, TG_F64, TG_SHAPE(4, 4));
    ck_assert_int_eq(tg_init_kaiming_uniform(ctx, st, 0.0, TG_FAN_IN, TG_NL_RELU), TG_OK);
    ck_assert(stats_of(st).max > 0.0 && stats_of(st).max <= sqrt(6.0 / 4.0));
    tg_tensor *buf = tg_buffer(ctx, TG_F32, TG_SHAPE(3), "buf");
    ck_assert_int_eq(tg_init_constant(ctx, buf, 1.0), TG_OK);
    ck_assert(tg_get(buf, 2) == 1.0);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- streams */

/* Runs every drawing initialiser once on t. */
static void draw_all(tg_ctx *ctx, tg_tensor *t, tg_tensor *bias)
{
    ck_assert_int_eq(tg_init_uniform(ctx, t, -2.0, 1.0), TG_OK);
    ck_assert_int_eq(tg_init_normal(ctx, t, 1.0, 3.0), TG_OK);
    ck_assert_int_eq(tg_init_xavier_uniform(ctx, t, 1.0), TG_OK);
    ck_assert_int_eq(tg_init_xavier_normal(ctx, t, 1.0), TG_OK);
    ck_assert_int_eq(tg_init_kaiming_uniform(ctx, t, 0.0, TG_FAN_IN, TG_NL_RELU), TG_OK);
    ck_assert_int_eq(tg_init_kaiming_normal(ctx, t, 0.0, TG_FAN_OUT, TG_NL_RELU), TG_OK);
    ck_assert_int_eq(tg_init_default(ctx, t, bias), TG_OK);
}

/* Each initialiser draws t->numel values in row-major order from the
 * stream: the same seed, the same values; another seed, others; float32
 * holds float64's draws rounded to float. */
START_TEST(same_seed_same_values)
{
    tg_ctx *ctx = tg_ctx_new(0);
    tg_tensor *a = tg_param(ctx, TG_F64, TG_SHAPE(7, 3, 2), "a");
    tg_tensor *ab = tg_param(ctx, TG_F64, TG_SHAPE(7), "ab");
    tg_tensor *b = tg_param(ctx, TG_F64, TG_SHAPE(7, 3, 2), "b");
    tg_tensor *bb = tg_param(ctx, TG_F64, TG_SHAPE(7), "bb");
    tg_tensor *f = tg_param(ctx, TG_F32, TG_SHAPE(7, 3, 2), "f");
    tg_tensor *fb = tg_param(ctx, TG_F32, TG_SHAPE(7), "fb");
    tg_tensor *c = tg_param(ctx, TG_F64, TG_SHAPE(7, 3, 2), "c");
    tg_tensor *cb = tg_param(ctx, TG_F64, TG_SHAPE(7), "cb");
    tg_seed(ctx, 42);
    draw_all(ctx, a, ab);
    tg_rng_state after = tg_rng_get(ctx);
    tg_seed(ctx, 42);
    draw_all(ctx, b, bb);
    tg_seed(ctx, 42);
    draw_all(ctx, f, fb);
    tg_seed(ctx, 43);
    draw_all(ctx, c, cb);
    ck_assert_mem_eq(a->data, b->data, (size_t)a->numel * sizeof(double));
    ck_assert_mem_eq(ab->data, bb->data, (size_t)ab->numel * sizeof(double));
    int differ = 0;
    for (int64_t i = 0; i < a->numel; i++) {
        ck_assert(tg_get(f, i) == (double)(float)tg_get(a, i));
        differ += tg_get(c, i) != tg_get(a, i);
    }
    for (int64_t i = 0; i < fb->numel; i++) {
        ck_assert(tg_get(fb, i) == (double)(float)tg_get(bb, i));
        differ += tg_get(cb, i) != tg_get(ab, i);
    }
    ck_assert_int_eq(differ, (int)(a->numel + ab->numel));
    /* The same calls consume the same stream, whatever the dtype. */
    tg_seed(ctx, 42);
    draw_all(ctx, f, fb);
    tg_rng_state after_f = tg_rng_get(ctx);
    ck_assert_mem_eq(after.s, after_f.s, sizeof after.s);
    tg_ctx_free(ctx);
}
END_TEST

/* The first draw of a uniform init is the first tg_rand_uniform of the stream. */
START_TEST(row_major_draws)
{
    tg_ctx *ctx = tg_ctx_new(9);
    tg_tensor *t = tg_param(ctx, TG_F64, TG_SHAPE(2, 3), "t");
    ck_assert_int_eq(tg_init_uniform(ctx, t, 0.0, 1.0), TG_OK);
    tg_seed(ctx, 9);
    for (int64_t i = 0; i < t->numel; i++)
        ck_assert(tg_get(t, i) == tg_rand_uniform(ctx));
    tg_seed(ctx, 9);
    ck_assert_int_eq(tg_init_normal(ctx, t, 1.0, 2.0), TG_OK);
    tg_seed(ctx, 9);
    for (int64_t i = 0; i < t->numel; i++)
        ck_assert(tg_get(t, i) == 1.0 + 2.0 * tg_rand_normal(ctx));
    tg_ctx_free(ctx);
}
END_TEST

/* Every initialiser bumps the version, so a recorded op that saved t notices. */
START_TEST(bumps_version)
{
    tg_ctx *ctx = tg_ctx_new(10);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(3, 2), "w");
    tg_tensor *b = tg_param(ctx, TG_F64, TG_SHAPE(3), "b");
    uint64_t v = tg_tensor_version(w), vb = tg_tensor_version(b);
    ck_assert_int_eq(tg_init_constant(ctx, w, 1.0), TG_OK);
    ck_assert_uint_gt(tg_tensor_version(w), v);
    v = tg_tensor_version(w);
    ck_assert_int_eq(tg_init_default(ctx, w, b), TG_OK);
    ck_assert_uint_gt(tg_tensor_version(w), v);
    ck_assert_uint_gt(tg_tensor_version(b), vb);
    /* Backward refuses a product whose saved weight was re-initialised. */
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(1, 2));
    tg_tensor *loss = tg_mse(ctx, tg_linear(ctx, x, w, b), tg_zeros(ctx, TG_F64, TG_SHAPE(1, 3)),
                             TG_MEAN);
    ck_assert_int_eq(tg_init_xavier_uniform(ctx, w, 1.0), TG_OK);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_ESTATE);
    tg_ctx_free(ctx);
}
END_TEST

/* Zero-element tensors: nothing drawn, nothing written, no error. A weight
 * with fan_in 0 gets a bias bound of 0 (PyTorch's rule). */
START_TEST(empty_tensors)
{
    tg_ctx *ctx = tg_ctx_new(11);
    tg_tensor *e = tg_param(ctx, TG_F64, TG_SHAPE(0, 5), "e");
    tg_tensor *eb = tg_param(ctx, TG_F64, TG_SHAPE(0), "eb");
    tg_rng_state before = tg_rng_get(ctx);
    uint64_t v = tg_tensor_version(e);
    draw_all(ctx, e, eb);
    ck_assert_int_eq(tg_init_constant(ctx, e, 3.0), TG_OK);
    tg_rng_state after = tg_rng_get(ctx);
    ck_assert_mem_eq(before.s, after.s, sizeof before.s);
    ck_assert_uint_eq(tg_tensor_version(e), v);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(4, 0, 3), "w");
    tg_tensor *b = tg_param(ctx, TG_F64, TG_SHAPE(4), "b");
    ck_assert_int_eq(tg_init_constant(ctx, b, 7.0), TG_OK);
    ck_assert_int_eq(tg_init_default(ctx, w, b), TG_OK);
    for (int64_t i = 0; i < b->numel; i++)
        ck_assert(tg_get(b, i) == 0.0);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- errors */

/* call fails with code, the message holds text; the error is then cleared. */
#define ck_fails(ctx, call, code, text)           \
    do {                                          \
        ck_assert_int_eq((call), (code));         \
        ck_error((ctx), (code), (text));          \
        tg_clear_error(ctx);                      \
    } while (0)

START_TEST(errors_arguments)
{
    tg_ctx *ctx = tg_ctx_new(12);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(3, 2), "w");
    tg_tensor *v = tg_param(ctx, TG_F64, TG_SHAPE(3), "v");
    ck_assert_int_eq(tg_init_constant(ctx, w, 0.25), TG_OK);
    ck_fails(ctx, tg_init_uniform(ctx, w, 1.0, 0.5), TG_EINVAL, "init_uniform: a = 1 is above b = 0.5");
    ck_fails(ctx, tg_init_uniform(ctx, w, NAN, 0.5), TG_EINVAL, "init_uniform: a = nan");
    ck_fails(ctx, tg_init_uniform(ctx, w, 0.0, INFINITY), TG_EINVAL, "b = inf must be finite");
    ck_fails(ctx, tg_init_uniform(ctx, w, -1e308, 1e308), TG_EINVAL, "overflows");
    ck_fails(ctx, tg_init_normal(ctx, w, 0.0, -1.0), TG_EINVAL, "init_normal: std = -1 is negative");
    ck_fails(ctx, tg_init_normal(ctx, w, INFINITY, 1.0), TG_EINVAL, "mean = inf");
    ck_fails(ctx, tg_init_normal(ctx, w, 0.0, NAN), TG_EINVAL, "std = nan");
    ck_fails(ctx, tg_init_constant(ctx, w, NAN), TG_EINVAL, "init_constant: value = nan");
    ck_fails(ctx, tg_init_xavier_uniform(ctx, w, -1.0), TG_EINVAL, "gain = -1 is negative");
    ck_fails(ctx, tg_init_xavier_normal(ctx, w, INFINITY), TG_EINVAL, "init_xavier_normal: gain = inf");
    ck_fails(ctx, tg_init_kaiming_uniform(ctx, w, NAN, TG_FAN_IN, TG_NL_RELU), TG_EINVAL,
             "init_kaiming_uniform: a = nan");
    ck_fails(ctx, tg_init_kaiming_normal(ctx, w, 0.0, (tg_fan_mode)7, TG_NL_RELU), TG_EINVAL,
             "mode = 7");
    ck_fails(ctx, tg_init_kaiming_uniform(ctx, w, 0.0, TG_FAN_IN, (tg_nonlinearity)-1), TG_EINVAL,
             "nonlinearity = -1 is unknown");
    /* Fan-based initialisers need 2 dimensions. */
    ck_fails(ctx, tg_init_xavier_uniform(ctx, v, 1.0), TG_EINVAL,
             "init_xavier_uniform: t has 1 dimension(s)");
    ck_fails(ctx, tg_init_xavier_normal(ctx, v, 1.0), TG_EINVAL, "fans need at least 2");
    ck_fails(ctx, tg_init_kaiming_uniform(ctx, v, 0.0, TG_FAN_IN, TG_NL_RELU), TG_EINVAL,
             "fans need at least 2");
    ck_fails(ctx, tg_init_kaiming_normal(ctx, v, 0.0, TG_FAN_IN, TG_NL_RELU), TG_EINVAL,
             "fans need at least 2");
    ck_fails(ctx, tg_init_default(ctx, v, NULL), TG_EINVAL, "init_default: weight has 1 dimension");
    tg_tensor *s = tg_param(ctx, TG_F64, 0, NULL, "s");
    ck_fails(ctx, tg_init_kaiming_normal(ctx, s, 0.0, TG_FAN_IN, TG_NL_RELU), TG_EINVAL,
             "t has 0 dimension(s)");
    /* None of the failures wrote anything. */
    for (int64_t i = 0; i < w->numel; i++)
        ck_assert(tg_get(w, i) == 0.25);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(errors_tensors)
{
    tg_ctx *ctx = tg_ctx_new(13);
    tg_ctx *other = tg_ctx_new(13);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(3, 2), "w");
    tg_tensor *ow = tg_param(other, TG_F64, TG_SHAPE(3, 2), "ow");
    tg_tensor *i64 = tg_buffer(ctx, TG_I64, TG_SHAPE(3, 2), "n");
    tg_tensor *ib = tg_buffer(ctx, TG_I64, TG_SHAPE(3), "nb");
    tg_tensor *b4 = tg_param(ctx, TG_F64, TG_SHAPE(4), "b4");
    tg_tensor *b2d = tg_param(ctx, TG_F64, TG_SHAPE(3, 1), "b2d");
    ck_assert_int_eq(tg_init_constant(NULL, w, 1.0), TG_EINVAL);
    ck_assert_int_eq(tg_init_default(NULL, w, NULL), TG_EINVAL);
    ck_fails(ctx, tg_init_constant(ctx, NULL, 1.0), TG_EINVAL, "init_constant: t is NULL");
    ck_fails(ctx, tg_init_uniform(ctx, NULL, 0.0, 1.0), TG_EINVAL, "init_uniform: t is NULL");
    ck_fails(ctx, tg_init_normal(ctx, NULL, 0.0, 1.0), TG_EINVAL, "init_normal: t is NULL");
    ck_fails(ctx, tg_init_xavier_uniform(ctx, NULL, 1.0), TG_EINVAL, "t is NULL");
    ck_fails(ctx, tg_init_xavier_normal(ctx, NULL, 1.0), TG_EINVAL, "t is NULL");
    ck_fails(ctx, tg_init_kaiming_uniform(ctx, NULL, 0.0, TG_FAN_IN, TG_NL_RELU), TG_EINVAL,
             "t is NULL");
    ck_fails(ctx, tg_init_kaiming_normal(ctx, NULL, 0.0, TG_FAN_IN, TG_NL_RELU), TG_EINVAL,
             "t is NULL");
    ck_fails(ctx, tg_init_default(ctx, NULL, NULL), TG_EINVAL, "init_default: weight is NULL");
    ck_fails(ctx, tg_init_constant(ctx, i64, 1.0), TG_EDTYPE, "t has dtype int64");
    ck_fails(ctx, tg_init_uniform(ctx, i64, 0.0, 1.0), TG_EDTYPE, "init_uniform: t has dtype int64");
    ck_fails(ctx, tg_init_normal(ctx, i64, 0.0, 1.0), TG_EDTYPE, "int64");
    ck_fails(ctx, tg_init_xavier_normal(ctx, i64, 1.0), TG_EDTYPE, "int64");
    ck_fails(ctx, tg_init_kaiming_uniform(ctx, i64, 0.0, TG_FAN_IN, TG_NL_RELU), TG_EDTYPE, "int64");
    ck_fails(ctx, tg_init_default(ctx, i64, NULL), TG_EDTYPE, "weight has dtype int64");
    ck_fails(ctx, tg_init_default(ctx, w, ib), TG_EDTYPE, "bias has dtype int64");
    ck_fails(ctx, tg_init_default(ctx, w, b4), TG_ESHAPE, "bias (4) does not fit weight (3, 2)");
    ck_fails(ctx, tg_init_default(ctx, w, b2d), TG_ESHAPE, "bias (3, 1)");
    ck_fails(ctx, tg_init_uniform(ctx, ow, 0.0, 1.0), TG_EINVAL, "t belongs to another context");
    ck_fails(ctx, tg_init_kaiming_normal(ctx, ow, 0.0, TG_FAN_IN, TG_NL_RELU), TG_EINVAL,
             "another context");
    ck_fails(ctx, tg_init_default(ctx, w, tg_param(other, TG_F64, TG_SHAPE(3), "ob")), TG_EINVAL,
             "init_default: bias belongs to another context");
    /* A failing bias check leaves the weight unwritten and the stream where it was. */
    tg_rng_state before = tg_rng_get(ctx);
    ck_fails(ctx, tg_init_default(ctx, w, b4), TG_ESHAPE, "does not fit");
    tg_rng_state after = tg_rng_get(ctx);
    ck_assert_mem_eq(before.s, after.s, sizeof before.s);
    for (int64_t i = 0; i < w->numel; i++)
        ck_assert(tg_get(w, i) == 0.0);
    ck_assert_int_eq(tg_errcode(other), TG_OK);
    tg_ctx_free(other);
    tg_ctx_free(ctx);
}
END_TEST

/* An error already held: every initialiser returns it and draws nothing. */
START_TEST(errors_sticky)
{
    tg_ctx *ctx = tg_ctx_new(14);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(3, 2), "w");
    tg_tensor *b = tg_param(ctx, TG_F64, TG_SHAPE(3), "b");
    ck_assert_int_eq(tg_init_uniform(ctx, w, 2.0, 1.0), TG_EINVAL);
    tg_rng_state before = tg_rng_get(ctx);
    ck_assert_int_eq(tg_init_constant(ctx, w, 1.0), TG_EINVAL);
    ck_assert_int_eq(tg_init_uniform(ctx, w, 0.0, 1.0), TG_EINVAL);
    ck_assert_int_eq(tg_init_normal(ctx, w, 0.0, 1.0), TG_EINVAL);
    ck_assert_int_eq(tg_init_xavier_uniform(ctx, w, 1.0), TG_EINVAL);
    ck_assert_int_eq(tg_init_xavier_normal(ctx, w, 1.0), TG_EINVAL);
    ck_assert_int_eq(tg_init_kaiming_uniform(ctx, w, 0.0, TG_FAN_IN, TG_NL_RELU), TG_EINVAL);
    ck_assert_int_eq(tg_init_kaiming_normal(ctx, w, 0.0, TG_FAN_IN, TG_NL_RELU), TG_EINVAL);
    ck_assert_int_eq(tg_init_default(ctx, w, b), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "a = 2 is above b = 1");
    tg_rng_state after = tg_rng_get(ctx);
    ck_assert_mem_eq(before.s, after.s, sizeof before.s);
    for (int64_t i = 0; i < w->numel; i++)
        ck_assert(tg_get(w, i) == 0.0);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- symmetry */

/* A 2-2-1 tanh MLP, x (4, 2) -> tanh(x W1^T + b1) W2^T + b2, mse against y. */
typedef struct mlp {
    tg_tensor *w1, *b1, *w2, *b2;
} mlp;

static mlp mlp_new(tg_ctx *ctx)
{
    mlp m = {tg_param(ctx, TG_F64, TG_SHAPE(2, 2), "w1"), tg_param(ctx, TG_F64, TG_SHAPE(2), "b1"),
             tg_param(ctx, TG_F64, TG_SHAPE(1, 2), "w2"), tg_param(ctx, TG_F64, TG_SHAPE(1), "b2")};
    return m;
}

/* p -= lr * p.grad, written through data as an optimiser does. */
static void sgd(tg_tensor *p, double lr)
{
    double *d = p->data;
    const double *g = p->grad->data;
    for (int64_t i = 0; i < p->numel; i++)
        d[i] -= lr * g[i];
    tg_mark_dirty(p);
}

/* One forward, backward and SGD step on four fixed points. */
static void mlp_step(tg_ctx *ctx, mlp *m)
{
    static const double xs[] = {0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0};
    static const double ys[] = {0.1, 0.9, 0.8, -0.3};
    tg_tensor *x = tg_from_f64(ctx, TG_F64, TG_SHAPE(4, 2), xs);
    tg_tensor *y = tg_from_f64(ctx, TG_F64, TG_SHAPE(4, 1), ys);
    tg_tensor *h = tg_tanh(ctx, tg_linear(ctx, x, m->w1, m->b1));
    tg_tensor *loss = tg_mse(ctx, tg_linear(ctx, h, m->w2, m->b2), y, TG_MEAN);
    tg_zero_grad(ctx);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    sgd(m->w1, 0.1);
    sgd(m->b1, 0.1);
    sgd(m->w2, 0.1);
    sgd(m->b2, 0.1);
    tg_reset(ctx);
}

/* Hidden unit j is row j of W1, b1[j] and column j of W2: are the two the
 * same, bitwise, in values (grads = false) or in gradients (grads = true)? */
static bool units_equal(const mlp *m, bool grads)
{
    const double *w1 = grads ? m->w1->grad->data : m->w1->data;
    const double *b1 = grads ? m->b1->grad->data : m->b1->data;
    const double *w2 = grads ? m->w2->grad->data : m->w2->data;
    return memcmp(w1, w1 + 2, 2 * sizeof(double)) == 0 && b1[0] == b1[1] && w2[0] == w2[1];
}

START_TEST(constant_init_stays_symmetric)
{
    tg_ctx *ctx = tg_ctx_new(15);
    mlp m = mlp_new(ctx);
    ck_assert_int_eq(tg_init_constant(ctx, m.w1, 0.3), TG_OK);
    ck_assert_int_eq(tg_init_constant(ctx, m.b1, 0.1), TG_OK);
    ck_assert_int_eq(tg_init_constant(ctx, m.w2, -0.4), TG_OK);
    ck_assert_int_eq(tg_init_constant(ctx, m.b2, 0.2), TG_OK);
    double w2_start = ((double *)m.w2->data)[0];
    for (int step = 0; step < 100; step++) {
        mlp_step(ctx, &m);
        ck_assert_msg(units_equal(&m, true), "gradients differ at step %d", step);
        ck_assert_msg(units_equal(&m, false), "units differ after step %d", step);
    }
    /* It trained (the weights moved), yet the units are still one. */
    ck_assert(((double *)m.w2->data)[0] != w2_start);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(default_init_breaks_symmetry)
{
    tg_ctx *ctx = tg_ctx_new(15);
    mlp m = mlp_new(ctx);
    ck_assert_int_eq(tg_init_default(ctx, m.w1, m.b1), TG_OK);
    ck_assert_int_eq(tg_init_default(ctx, m.w2, m.b2), TG_OK);
    ck_assert(!units_equal(&m, false));
    mlp_step(ctx, &m);
    ck_assert(!units_equal(&m, true));
    ck_assert(!units_equal(&m, false));
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("init");
    TCase *tc = tcase_create("values");
    tcase_add_test(tc, gains);
    tcase_add_test(tc, default_conv);
    tcase_add_test(tc, default_linear);
    tcase_add_test(tc, xavier_uniform);
    tcase_add_test(tc, xavier_normal);
    tcase_add_test(tc, kaiming_uniform);
    tcase_add_test(tc, kaiming_normal);
    tcase_add_test(tc, uniform_normal_constant);
    suite_add_tcase(s, tc);
    tc = tcase_create("streams");
    tcase_add_test(tc, same_seed_same_values);
    tcase_add_test(tc, row_major_draws);
    tcase_add_test(tc, bumps_version);
    tcase_add_test(tc, empty_tensors);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, errors_arguments);
    tcase_add_test(tc, errors_tensors);
    tcase_add_test(tc, errors_sticky);
    suite_add_tcase(s, tc);
    tc = tcase_create("symmetry");
    tcase_add_test(tc, constant_init_stays_symmetric);
    tcase_add_test(tc, default_init_breaks_symmetry);
    suite_add_tcase(s, tc);
    return s;
}
