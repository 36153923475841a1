/*
 * test_first_write.c: first-write gradients (TG_OP_VJP_WRITES) under the ways a
 * gradient buffer is reached: an op's only contribution (written), an
 * earlier one added to or a later one adding (both tape orders), the op
 * applied twice, float32 against float64 with every convolution backend,
 * and parameter blocks released with TG_SET_TO_NONE.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "conv_impl.h"
#include "testutil.h"

/* ---- inputs */

static tg_tensor *mk(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, int seed,
                     double lo, double hi, bool rg)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * (0.5 + 0.5 * sin(1.37 * (double)i + 0.91 * seed + 0.3));
    tg_tensor *t = tg_from_f64(ctx, dt, ndim, shape, v);
    free(v);
    if (t && rg)
        tg_set_requires_grad(ctx, t, true);
    return t;
}

static tg_tensor *targets(tg_ctx *ctx, int ndim, const int64_t *shape, const int64_t *v)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    double *f = malloc((size_t)(n ? n : 1) * sizeof *f);
    for (int64_t i = 0; i < n; i++)
        f[i] = (double)v[i];
    tg_tensor *t = tg_from_f64(ctx, TG_I64, ndim, shape, f);
    free(f);
    return t;
}

/* ---- cases: make builds the inputs (returns their count), f the op */
typedef struct rcase {
    const char *name;
    int (*make)(tg_ctx *ctx, tg_dtype dt, tg_tensor **in);
    tg_tensor *(*f)(tg_ctx *ctx, tg_tensor *const *in);
    bool eval;
} rcase;

#define S(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

static int mk_x34(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(3, 4), 1, -2, 2, true); return 1; }
static int mk_x342(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(3, 4, 2), 2, -2, 2, true); return 1; }
static int mk_empty(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(0, 4), 1, -2, 2, true); return 1; }
static int mk_relu0(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = tg_from_f64(c, dt, S(2, 3), (const double[]){-1, 0.5, -0.25, 2, -3, 1});
    tg_set_requires_grad(c, in[0], true);
    return 1;
}

static tg_tensor *f_relu(tg_ctx *c, tg_tensor *const *in) { return tg_relu(c, in[0]); }
static tg_tensor *f_lrelu(tg_ctx *c, tg_tensor *const *in) { return tg_leaky_relu(c, in[0], 0.1); }
static tg_tensor *f_sigmoid(tg_ctx *c, tg_tensor *const *in) { return tg_sigmoid(c, in[0]); }
static tg_tensor *f_tanh(tg_ctx *c, tg_tensor *const *in) { return tg_tanh(c, in[0]); }
static tg_tensor *f_drop3(tg_ctx *c, tg_tensor *const *in) { return tg_dropout(c, in[0], 0.3); }
static tg_tensor *f_drop0(tg_ctx *c, tg_tensor *const *in) { return tg_dropout(c, in[0], 0.0); }
static tg_tensor *f_drop1(tg_ctx *c, tg_tensor *const *in) { return tg_dropout(c, in[0], 1.0); }
static tg_tensor *f_sm0(tg_ctx *c, tg_tensor *const *in) { return tg_softmax(c, in[0], 0); }
static tg_tensor *f_sm1(tg_ctx *c, tg_tensor *const *in) { return tg_softmax(c, in[0], 1); }
static tg_tensor *f_sml(tg_ctx *c, tg_tensor *const *in) { return tg_softmax(c, in[0], -1); }
static tg_tensor *f_lsm0(tg_ctx *c, tg_tensor *const *in) { return tg_log_softmax(c, in[0], 0); }
static tg_tensor *f_lsm1(tg_ctx *c, tg_tensor *const *in) { return tg_log_softmax(c, in[0], 1); }
static tg_tensor *f_sum(tg_ctx *c, tg_tensor *const *in) { return tg_sum(c, in[0]); }
static tg_tensor *f_mean(tg_ctx *c, tg_tensor *const *in) { return tg_mean(c, in[0]); }
static tg_tensor *f_sum0(tg_ctx *c, tg_tensor *const *in) { return tg_sum_axis(c, in[0], 0, false); }
static tg_tensor *f_sum1k(tg_ctx *c, tg_tensor *const *in) { return tg_sum_axis(c, in[0], 1, true); }
static tg_tensor *f_sum2(tg_ctx *c, tg_tensor *const *in) { return tg_sum_axis(c, in[0], -1, false); }
static tg_tensor *f_mean1(tg_ctx *c, tg_tensor *const *in) { return tg_mean_axis(c, in[0], 1, false); }
static tg_tensor *f_mean0k(tg_ctx *c, tg_tensor *const *in) { return tg_mean_axis(c, in[0], 0, true); }
static tg_tensor *f_reshape(tg_ctx *c, tg_tensor *const *in) { return tg_reshape(c, in[0], S(4, -1)); }
static tg_tensor *f_perm(tg_ctx *c, tg_tensor *const *in) { return tg_permute(c, in[0], (const int[]){2, 0, 1}); }
static tg_tensor *f_transp(tg_ctx *c, tg_tensor *const *in) { return tg_transpose(c, in[0], 0, 1); }
static tg_tensor *f_cat_self(tg_ctx *c, tg_tensor *const *in)
{
    tg_tensor *xs[3] = {in[0], in[0], in[0]};
    return tg_concat(c, xs, 3, 1);
}
static tg_tensor *f_relu_inplace_chain(tg_ctx *c, tg_tensor *const *in)
{
    return tg_relu(c, tg_relu(c, in[0]));
}

/* linear */
static int mk_lin(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(5, 3), 1, -1, 1, true);
    in[1] = mk(c, dt, S(4, 3), 2, -1, 1, true);
    in[2] = mk(c, dt, S(4), 3, -1, 1, true);
    return 3;
}
static int mk_lin3d(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(2, 3, 3), 1, -1, 1, true);
    in[1] = mk(c, dt, S(4, 3), 2, -1, 1, true);
    in[2] = mk(c, dt, S(4), 3, -1, 1, true);
    return 3;
}
static int mk_lin_constw(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(5, 3), 1, -1, 1, true);
    in[1] = mk(c, dt, S(4, 3), 2, -1, 1, false);
    in[2] = mk(c, dt, S(4), 3, -1, 1, true);
    return 3;
}
static int mk_lin_empty(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(0, 3), 1, -1, 1, true);
    in[1] = mk(c, dt, S(4, 3), 2, -1, 1, true);
    in[2] = mk(c, dt, S(4), 3, -1, 1, true);
    return 3;
}
static int mk_sq(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(4, 4), 1, -1, 1, true); return 1; }
static tg_tensor *f_lin(tg_ctx *c, tg_tensor *const *in) { return tg_linear(c, in[0], in[1], in[2]); }
static tg_tensor *f_lin_nob(tg_ctx *c, tg_tensor *const *in) { return tg_linear(c, in[0], in[1], NULL); }
static tg_tensor *f_lin_self(tg_ctx *c, tg_tensor *const *in) { return tg_linear(c, in[0], in[0], NULL); }
static tg_tensor *f_lin_self_b(tg_ctx *c, tg_tensor *const *in)
{
    /* x (4,4) as input, weight, and its first row as the bias */
    return tg_linear(c, in[0], in[0], tg_reshape(c, tg_slice(c, in[0], 0, 0, 1, 1), S(4)));
}

/* conv */
static int mk_conv(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(2, 4, 6, 5), 1, -1, 1, true);
    in[1] = mk(c, dt, S(6, 2, 3, 3), 2, -0.5, 0.5, true);
    in[2] = mk(c, dt, S(6), 3, -1, 1, true);
    return 3;
}
static int mk_conv1(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(2, 1, 7, 6), 1, -1, 1, true);
    in[1] = mk(c, dt, S(3, 1, 2, 2), 2, -0.5, 0.5, true);
    in[2] = mk(c, dt, S(3), 3, -1, 1, true);
    return 3;
}
static int mk_conv1_nob(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(2, 1, 7, 6), 1, -1, 1, true);
    in[1] = mk(c, dt, S(3, 1, 2, 2), 2, -0.5, 0.5, true);
    return 2;
}
static int mk_conv_cx(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(2, 4, 6, 5), 1, -1, 1, false);
    in[1] = mk(c, dt, S(6, 4, 3, 3), 2, -0.5, 0.5, true);
    in[2] = mk(c, dt, S(6), 3, -1, 1, true);
    return 3;
}
static int mk_conv_cw(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(2, 4, 6, 5), 1, -1, 1, true);
    in[1] = mk(c, dt, S(6, 4, 3, 3), 2, -0.5, 0.5, false);
    in[2] = mk(c, dt, S(6), 3, -1, 1, false);
    return 3;
}
static int mk_conv_cwb(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(2, 4, 6, 5), 1, -1, 1, true);
    in[1] = mk(c, dt, S(6, 4, 3, 3), 2, -0.5, 0.5, false);
    in[2] = mk(c, dt, S(6), 3, -1, 1, true);
    return 3;
}
static int mk_conv1_cw(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(2, 1, 7, 6), 1, -1, 1, false);
    in[1] = mk(c, dt, S(3, 1, 2, 2), 2, -0.5, 0.5, false);
    in[2] = mk(c, dt, S(3), 3, -1, 1, true);
    return 3;
}
static int mk_conv1d(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(2, 3, 9), 1, -1, 1, true);
    in[1] = mk(c, dt, S(4, 3, 3), 2, -0.5, 0.5, true);
    in[2] = mk(c, dt, S(4), 3, -1, 1, true);
    return 3;
}
static int mk_conv_n0(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(0, 4, 6, 5), 1, -1, 1, true);
    in[1] = mk(c, dt, S(6, 4, 3, 3), 2, -0.5, 0.5, true);
    in[2] = mk(c, dt, S(6), 3, -1, 1, true);
    return 3;
}
static tg_tensor *f_conv_g2(tg_ctx *c, tg_tensor *const *in) { return tg_conv2d(c, in[0], in[1], in[2], 1, 1, 1, 2); }
static tg_tensor *f_conv_g2s2(tg_ctx *c, tg_tensor *const *in) { return tg_conv2d(c, in[0], in[1], in[2], 2, 0, 1, 2); }
static tg_tensor *f_conv_g2d2(tg_ctx *c, tg_tensor *const *in) { return tg_conv2d(c, in[0], in[1], in[2], 1, 2, 2, 2); }
static tg_tensor *f_conv_g2nob(tg_ctx *c, tg_tensor *const *in) { return tg_conv2d(c, in[0], in[1], NULL, 1, 0, 1, 2); }
static tg_tensor *f_conv(tg_ctx *c, tg_tensor *const *in) { return tg_conv2d(c, in[0], in[1], in[2], 1, 1, 1, 1); }
static tg_tensor *f_conv_s2(tg_ctx *c, tg_tensor *const *in) { return tg_conv2d(c, in[0], in[1], in[2], 2, 1, 1, 1); }
static tg_tensor *f_conv_p0(tg_ctx *c, tg_tensor *const *in) { return tg_conv2d(c, in[0], in[1], in[2], 1, 0, 1, 1); }
static tg_tensor *f_conv_nob(tg_ctx *c, tg_tensor *const *in) { return tg_conv2d(c, in[0], in[1], NULL, 1, 0, 1, 1); }
static tg_tensor *f_conv_nob_p1(tg_ctx *c, tg_tensor *const *in) { return tg_conv2d(c, in[0], in[1], NULL, 1, 1, 1, 1); }
static tg_tensor *f_conv1d(tg_ctx *c, tg_tensor *const *in) { return tg_conv1d(c, in[0], in[1], in[2], 2, 1, 1, 1); }
static tg_tensor *f_conv1d_d(tg_ctx *c, tg_tensor *const *in) { return tg_conv1d(c, in[0], in[1], in[2], 1, 0, 2, 1); }

/* pooling */
static int mk_p2(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(2, 3, 7, 5), 1, -2, 2, true); return 1; }
static int mk_p2e(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(2, 2, 8, 6), 1, -2, 2, true); return 1; }
static int mk_p1(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(2, 3, 9), 1, -2, 2, true); return 1; }
static int mk_p2n0(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(0, 3, 7, 5), 1, -2, 2, true); return 1; }
static tg_pool_attrs pa(int64_t k, int64_t s, int64_t p, int64_t d, bool ceil, bool excl)
{
    return (tg_pool_attrs){{k, k}, {s, s}, {p, p}, {d, d}, ceil, excl};
}
static tg_tensor *f_max2(tg_ctx *c, tg_tensor *const *in) { return tg_max_pool2d(c, in[0], 2); }
static tg_tensor *f_max2_ceil(tg_ctx *c, tg_tensor *const *in) { tg_pool_attrs a = pa(2, 2, 0, 1, true, false); return tg_max_pool2d_opts(c, in[0], &a); }
static tg_tensor *f_max3_s2_p1(tg_ctx *c, tg_tensor *const *in) { return tg_max_pool2d_ex(c, in[0], 3, 2, 1); }
static tg_tensor *f_max2_s1(tg_ctx *c, tg_tensor *const *in) { return tg_max_pool2d_ex(c, in[0], 2, 1, 0); }
static tg_tensor *f_max_dil(tg_ctx *c, tg_tensor *const *in) { tg_pool_attrs a = pa(2, 1, 1, 2, false, false); return tg_max_pool2d_opts(c, in[0], &a); }
static tg_tensor *f_avg2(tg_ctx *c, tg_tensor *const *in) { return tg_avg_pool2d(c, in[0], 2); }
static tg_tensor *f_avg3(tg_ctx *c, tg_tensor *const *in) { return tg_avg_pool2d(c, in[0], 3); }
static tg_tensor *f_avg3_s2_p1(tg_ctx *c, tg_tensor *const *in) { return tg_avg_pool2d_ex(c, in[0], 3, 2, 1); }
static tg_tensor *f_avg_ceil_ex(tg_ctx *c, tg_tensor *const *in) { tg_pool_attrs a = pa(3, 2, 1, 1, true, true); return tg_avg_pool2d_opts(c, in[0], &a); }
static tg_tensor *f_avg2_ceil(tg_ctx *c, tg_tensor *const *in) { tg_pool_attrs a = pa(2, 2, 0, 1, true, false); return tg_avg_pool2d_opts(c, in[0], &a); }
static tg_tensor *f_max1(tg_ctx *c, tg_tensor *const *in) { return tg_max_pool1d(c, in[0], 2); }
static tg_tensor *f_max1_p(tg_ctx *c, tg_tensor *const *in) { return tg_max_pool1d_ex(c, in[0], 3, 2, 1); }
static tg_tensor *f_avg1(tg_ctx *c, tg_tensor *const *in) { return tg_avg_pool1d(c, in[0], 2); }
static tg_tensor *f_avg1_3(tg_ctx *c, tg_tensor *const *in) { return tg_avg_pool1d(c, in[0], 3); }
static tg_tensor *f_avg1_p(tg_ctx *c, tg_tensor *const *in) { return tg_avg_pool1d_ex(c, in[0], 3, 1, 1); }
static tg_tensor *f_gap(tg_ctx *c, tg_tensor *const *in) { return tg_global_avg_pool(c, in[0]); }
static tg_tensor *f_gapk(tg_ctx *c, tg_tensor *const *in) { return tg_global_avg_pool_ex(c, in[0], true); }

/* losses */
static int mk_xy(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(3, 4), 1, -2, 2, true);
    in[1] = mk(c, dt, S(3, 4), 2, -1, 1, true);
    return 2;
}
static int mk_xy_c(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(3, 4), 1, -2, 2, true);
    in[1] = mk(c, dt, S(3, 4), 2, 0.1, 0.9, false);
    return 2;
}
static int mk_py(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(3, 4), 1, 0.1, 0.9, true);
    in[1] = mk(c, dt, S(3, 4), 2, 0.1, 0.9, true);
    return 2;
}
static int mk_xyw(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(3, 4), 1, -2, 2, true);
    in[1] = mk(c, dt, S(3, 4), 2, 0.1, 0.9, true);
    in[2] = mk(c, dt, S(4), 3, 0.5, 2, false);
    return 3;
}
static tg_tensor *f_mse_m(tg_ctx *c, tg_tensor *const *in) { return tg_mse(c, in[0], in[1], TG_MEAN); }
static tg_tensor *f_mse_s(tg_ctx *c, tg_tensor *const *in) { return tg_mse(c, in[0], in[1], TG_SUM); }
static tg_tensor *f_mse_n(tg_ctx *c, tg_tensor *const *in) { return tg_mse(c, in[0], in[1], TG_NONE); }
static tg_tensor *f_mse_self(tg_ctx *c, tg_tensor *const *in) { return tg_mse(c, in[0], in[0], TG_MEAN); }
static tg_tensor *f_bce_m(tg_ctx *c, tg_tensor *const *in) { return tg_bce(c, in[0], in[1], TG_MEAN); }
static tg_tensor *f_bce_n(tg_ctx *c, tg_tensor *const *in) { return tg_bce(c, in[0], in[1], TG_NONE); }
static tg_tensor *f_bcel_m(tg_ctx *c, tg_tensor *const *in) { return tg_bce_with_logits(c, in[0], in[1], TG_MEAN); }
static tg_tensor *f_bcel_n(tg_ctx *c, tg_tensor *const *in) { return tg_bce_with_logits(c, in[0], in[1], TG_NONE); }
static tg_tensor *f_bcel_pw(tg_ctx *c, tg_tensor *const *in) { return tg_bce_with_logits_ex(c, in[0], in[1], in[2], TG_SUM); }
static tg_tensor *f_bcel_pw_n(tg_ctx *c, tg_tensor *const *in) { return tg_bce_with_logits_ex(c, in[0], in[1], in[2], TG_NONE); }

static int mk_ce(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(5, 4), 1, -2, 2, true);
    in[1] = targets(c, S(5), (const int64_t[]){1, -100, 3, 0, 1});
    in[2] = mk(c, dt, S(4), 3, 0.5, 2, false);
    return 3;
}
static int mk_ce_allign(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(3, 4), 1, -2, 2, true);
    in[1] = targets(c, S(3), (const int64_t[]){-100, -100, -100});
    in[2] = mk(c, dt, S(4), 3, 0.5, 2, false);
    return 3;
}
static int mk_ce_noign(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(5, 4), 1, -2, 2, true);
    in[1] = targets(c, S(5), (const int64_t[]){1, 3, 3, 0, 1});
    in[2] = mk(c, dt, S(4), 3, 0.5, 2, false);
    return 3;
}
static int mk_ce3d(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(2, 4, 3), 1, -2, 2, true);
    in[1] = targets(c, S(2, 3), (const int64_t[]){1, 2, -100, 3, 0, 2});
    in[2] = mk(c, dt, S(4), 3, 0.5, 2, false);
    return 3;
}
static int mk_ce_prob(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(3, 4), 1, -2, 2, true);
    in[1] = mk(c, dt, S(3, 4), 2, 0.05, 0.5, true);
    in[2] = mk(c, dt, S(4), 3, 0.5, 2, true);
    return 3;
}
static tg_tensor *f_ce(tg_ctx *c, tg_tensor *const *in) { return tg_cross_entropy(c, in[0], in[1], TG_MEAN); }
static tg_tensor *f_ce_n(tg_ctx *c, tg_tensor *const *in) { return tg_cross_entropy(c, in[0], in[1], TG_NONE); }
static tg_tensor *f_ce_s(tg_ctx *c, tg_tensor *const *in) { return tg_cross_entropy(c, in[0], in[1], TG_SUM); }
static tg_tensor *f_ce_w(tg_ctx *c, tg_tensor *const *in)
{
    tg_ce_attrs a = TG_CE_DEFAULTS;
    return tg_cross_entropy_ex(c, in[0], in[1], in[2], &a);
}
static tg_tensor *f_ce_ws(tg_ctx *c, tg_tensor *const *in)
{
    tg_ce_attrs a = {TG_SUM, TG_IGNORE_INDEX, 0.2};
    return tg_cross_entropy_ex(c, in[0], in[1], in[2], &a);
}
static tg_tensor *f_ce_wsn(tg_ctx *c, tg_tensor *const *in)
{
    tg_ce_attrs a = {TG_NONE, TG_IGNORE_INDEX, 0.2};
    return tg_cross_entropy_ex(c, in[0], in[1], in[2], &a);
}
static tg_tensor *f_ce_ign1(tg_ctx *c, tg_tensor *const *in)
{
    tg_ce_attrs a = {TG_MEAN, 1, 0.1};
    return tg_cross_entropy_ex(c, in[0], in[1], NULL, &a);
}
static tg_tensor *f_nll(tg_ctx *c, tg_tensor *const *in) { return tg_nll_loss(c, in[0], in[1], TG_MEAN); }
static tg_tensor *f_nll_s(tg_ctx *c, tg_tensor *const *in) { return tg_nll_loss(c, in[0], in[1], TG_SUM); }
static tg_tensor *f_nll_wn(tg_ctx *c, tg_tensor *const *in) { return tg_nll_loss_ex(c, in[0], in[1], in[2], TG_NONE, TG_IGNORE_INDEX); }
static tg_tensor *f_nll_w(tg_ctx *c, tg_tensor *const *in) { return tg_nll_loss_ex(c, in[0], in[1], in[2], TG_MEAN, 3); }
static tg_tensor *f_cep(tg_ctx *c, tg_tensor *const *in)
{
    tg_ce_attrs a = {TG_MEAN, TG_IGNORE_INDEX, 0.1};
    return tg_cross_entropy_ex(c, in[0], in[1], in[2], &a);
}
static tg_tensor *f_cep_n(tg_ctx *c, tg_tensor *const *in) { return tg_cross_entropy(c, in[0], in[1], TG_NONE); }

/* batch norm */
static int mk_bn(tg_ctx *c, tg_dtype dt, tg_tensor **in, int ndim, const int64_t *shape)
{
    in[0] = mk(c, dt, ndim, shape, 1, -2, 2, true);
    in[1] = mk(c, dt, S(3), 2, 0.5, 1.5, true);
    in[2] = mk(c, dt, S(3), 3, -1, 1, true);
    in[3] = mk(c, dt, S(3), 4, -0.5, 0.5, false);
    in[4] = mk(c, dt, S(3), 5, 0.5, 2, false);
    return 5;
}
static int mk_bn2(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_bn(c, dt, in, S(4, 3)); }
static int mk_bn3(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_bn(c, dt, in, S(2, 3, 5)); }
static int mk_bn4(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_bn(c, dt, in, S(2, 3, 2, 3)); }
static int mk_bn4_cw(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    int n = mk_bn(c, dt, in, S(2, 3, 2, 3));
    tg_set_requires_grad(c, in[1], false);
    return n;
}
static int mk_bn4_cx(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    int n = mk_bn(c, dt, in, S(2, 3, 2, 3));
    tg_set_requires_grad(c, in[0], false);
    return n;
}
/* running statistics copied, so that every evaluation starts from the same */
static tg_tensor *bn_run(tg_ctx *c, tg_tensor *const *in, bool w, bool b, bool run)
{
    tg_tensor *rm = run ? tg_copy(c, in[3]) : NULL, *rv = run ? tg_copy(c, in[4]) : NULL;
    return tg_batch_norm(c, in[0], w ? in[1] : NULL, b ? in[2] : NULL, rm, rv, 0.1, 1e-5);
}
static tg_tensor *f_bn(tg_ctx *c, tg_tensor *const *in) { return bn_run(c, in, true, true, true); }
static tg_tensor *f_bn_w(tg_ctx *c, tg_tensor *const *in) { return bn_run(c, in, true, false, false); }
static tg_tensor *f_bn_b(tg_ctx *c, tg_tensor *const *in) { return bn_run(c, in, false, true, true); }
static tg_tensor *f_bn_none(tg_ctx *c, tg_tensor *const *in) { return bn_run(c, in, false, false, false); }

/* elementwise: a in [-2, 2], b in [0.5, 2] (a divisor) */
static int mk_ab(tg_ctx *c, tg_dtype dt, tg_tensor **in, int na, const int64_t *sa, int nb,
                 const int64_t *sb, bool ga, bool gb)
{
    in[0] = mk(c, dt, na, sa, 1, -2, 2, ga);
    in[1] = mk(c, dt, nb, sb, 2, 0.5, 2, gb);
    return 2;
}
static int mk_ab_same(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(3, 4), S(3, 4), true, true); }
static int mk_ab_row(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(3, 4), S(4), true, true); }
static int mk_ab_rowa(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(4), S(3, 4), true, true); }
static int mk_ab_colrow(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(3, 1), S(1, 4), true, true); }
static int mk_ab_scalar(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(3, 4), 1, -2, 2, true);
    in[1] = mk(c, dt, 0, NULL, 2, 0.5, 2, true);
    return 2;
}
static int mk_ab_size1(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(1, 5, 1), S(2, 1, 3), true, true); }
static int mk_ab_mid(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(2, 3, 4), S(2, 1, 4), true, true); }
static int mk_ab_cb(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(3, 4), S(4), true, false); }
static int mk_ab_ca(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(3, 4), S(3, 1), false, true); }
static int mk_ab_empty(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(0, 4), S(4), true, true); }
static int mk_ab_empty_s(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(0, 4), S(0, 4), true, true); }
static int mk_pos(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(3, 4), 1, 0.5, 2, true); return 1; }
static tg_tensor *f_add(tg_ctx *c, tg_tensor *const *in) { return tg_add(c, in[0], in[1]); }
static tg_tensor *f_sub(tg_ctx *c, tg_tensor *const *in) { return tg_sub(c, in[0], in[1]); }
static tg_tensor *f_mul(tg_ctx *c, tg_tensor *const *in) { return tg_mul(c, in[0], in[1]); }
static tg_tensor *f_div(tg_ctx *c, tg_tensor *const *in) { return tg_div(c, in[0], in[1]); }
static tg_tensor *f_add_self(tg_ctx *c, tg_tensor *const *in) { return tg_add(c, in[0], in[0]); }
static tg_tensor *f_sub_self(tg_ctx *c, tg_tensor *const *in) { return tg_sub(c, in[0], in[0]); }
static tg_tensor *f_mul_self(tg_ctx *c, tg_tensor *const *in) { return tg_mul(c, in[0], in[0]); }
static tg_tensor *f_div_self(tg_ctx *c, tg_tensor *const *in) { return tg_div(c, in[0], in[0]); }
/* x against its own first row: a broadcast b whose tensor is also a */
static tg_tensor *f_mul_row_self(tg_ctx *c, tg_tensor *const *in)
{
    return tg_mul(c, in[0], tg_slice(c, in[0], 0, 0, 1, 1));
}
static tg_tensor *f_neg(tg_ctx *c, tg_tensor *const *in) { return tg_neg(c, in[0]); }
static tg_tensor *f_exp(tg_ctx *c, tg_tensor *const *in) { return tg_exp(c, in[0]); }
static tg_tensor *f_log(tg_ctx *c, tg_tensor *const *in) { return tg_log(c, in[0]); }
static tg_tensor *f_sqrt(tg_ctx *c, tg_tensor *const *in) { return tg_sqrt(c, in[0]); }
static tg_tensor *f_pow25(tg_ctx *c, tg_tensor *const *in) { return tg_pow(c, in[0], 2.5); }
static tg_tensor *f_pow0(tg_ctx *c, tg_tensor *const *in) { return tg_pow(c, in[0], 0.0); }
static tg_tensor *f_pow3(tg_ctx *c, tg_tensor *const *in) { return tg_pow(c, in[0], 3.0); }
static tg_tensor *f_pow_neg(tg_ctx *c, tg_tensor *const *in) { return tg_pow(c, in[0], -1.5); }
static tg_tensor *f_adds(tg_ctx *c, tg_tensor *const *in) { return tg_add_scalar(c, in[0], 0.7); }
static tg_tensor *f_subs(tg_ctx *c, tg_tensor *const *in) { return tg_sub_scalar(c, in[0], 0.7); }
static tg_tensor *f_muls(tg_ctx *c, tg_tensor *const *in) { return tg_mul_scalar(c, in[0], -1.3); }
static tg_tensor *f_divs(tg_ctx *c, tg_tensor *const *in) { return tg_div_scalar(c, in[0], 0.6); }
/* a chain of ops whose input 0 may take over the gradient's buffer */
static tg_tensor *f_unary_chain(tg_ctx *c, tg_tensor *const *in)
{
    return tg_exp(c, tg_mul_scalar(c, tg_neg(c, tg_add_scalar(c, in[0], 0.5)), 0.5));
}
static tg_tensor *f_bin_chain(tg_ctx *c, tg_tensor *const *in)
{
    return tg_div(c, tg_mul(c, tg_sub(c, tg_add(c, in[0], in[1]), in[1]), in[1]), in[1]);
}

/* matmul */
static int mk_mm(tg_ctx *c, tg_dtype dt, tg_tensor **in, int na, const int64_t *sa, int nb,
                 const int64_t *sb)
{
    in[0] = mk(c, dt, na, sa, 1, -1, 1, true);
    in[1] = mk(c, dt, nb, sb, 2, -1, 1, true);
    return 2;
}
static int mk_mm2(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_mm(c, dt, in, S(3, 4), S(4, 2)); }
static int mk_mm_batch(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_mm(c, dt, in, S(2, 3, 4), S(2, 4, 5)); }
static int mk_mm_bcb(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_mm(c, dt, in, S(2, 3, 4), S(4, 2)); }
static int mk_mm_bca(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_mm(c, dt, in, S(3, 4), S(3, 4, 2)); }
static int mk_mm_both(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_mm(c, dt, in, S(2, 1, 3, 4), S(1, 3, 4, 2)); }
static int mk_mm_size1(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_mm(c, dt, in, S(1, 1), S(3, 1, 2)); }
static int mk_mm_n0(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_mm(c, dt, in, S(0, 4), S(4, 2)); }
static int mk_mm_k0(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_mm(c, dt, in, S(3, 0), S(0, 2)); }
static int mk_mm_b0(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_mm(c, dt, in, S(0, 3, 4), S(1, 4, 2)); }
static int mk_mm_cb(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    mk_mm(c, dt, in, S(2, 3, 4), S(4, 2));
    tg_set_requires_grad(c, in[0], false);
    return 2;
}
static tg_tensor *f_mm(tg_ctx *c, tg_tensor *const *in) { return tg_matmul(c, in[0], in[1]); }
static tg_tensor *f_mm_self(tg_ctx *c, tg_tensor *const *in) { return tg_matmul(c, in[0], in[0]); }

/* slice and pad */
static int mk_x45(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(4, 5), 1, -2, 2, true); return 1; }
static int mk_x0_5(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(0, 5), 1, -2, 2, true); return 1; }
static tg_tensor *f_sl_rows(tg_ctx *c, tg_tensor *const *in) { return tg_slice(c, in[0], 0, 1, 3, 1); }
static tg_tensor *f_sl_step(tg_ctx *c, tg_tensor *const *in) { return tg_slice(c, in[0], 1, 0, 5, 2); }
static tg_tensor *f_sl_neg(tg_ctx *c, tg_tensor *const *in) { return tg_slice(c, in[0], -1, -3, 100, 1); }
static tg_tensor *f_sl_mid(tg_ctx *c, tg_tensor *const *in) { return tg_slice(c, in[0], 1, 1, 4, 2); }
static tg_tensor *f_sl_one(tg_ctx *c, tg_tensor *const *in) { return tg_slice(c, in[0], 2, 1, 2, INT64_MAX); }
static tg_tensor *f_sl_none(tg_ctx *c, tg_tensor *const *in) { return tg_slice(c, in[0], 0, 3, 1, 1); }
static tg_tensor *f_sl_all(tg_ctx *c, tg_tensor *const *in) { return tg_slice(c, in[0], 0, 0, 100, 1); }
/* two slices of one tensor, overlapping */
static tg_tensor *f_sl_twice(tg_ctx *c, tg_tensor *const *in)
{
    return tg_add(c, tg_slice(c, in[0], 1, 0, 3, 1), tg_slice(c, in[0], 1, 2, 5, 1));
}
static tg_tensor *f_pad1(tg_ctx *c, tg_tensor *const *in) { return tg_pad1d(c, in[0], 1, 2); }
static tg_tensor *f_pad2(tg_ctx *c, tg_tensor *const *in) { return tg_pad2d(c, in[0], 1, 0, 2, 1); }
static tg_tensor *f_pad0(tg_ctx *c, tg_tensor *const *in) { return tg_pad1d(c, in[0], 0, 0); }
static tg_tensor *f_pad_crop(tg_ctx *c, tg_tensor *const *in) { return tg_pad2d(c, in[0], -1, 2, 1, -2); }
static tg_tensor *f_pad_crop_all(tg_ctx *c, tg_tensor *const *in) { return tg_pad1d(c, in[0], -2, -3); }
static tg_tensor *f_pad_first(tg_ctx *c, tg_tensor *const *in)
{
    tg_pad_attrs a;
    memset(&a, 0, sizeof a);
    a.ndim = in[0]->ndim;
    a.pad[0][0] = -1;
    a.pad[0][1] = 2;
    return tg_apply_named(c, "pad", in, 1, &a);
}

static const rcase cases[] = {
    {"relu", mk_x34, f_relu, false}, {"relu0", mk_relu0, f_relu, false},
    {"relu_chain", mk_relu0, f_relu_inplace_chain, false},
    {"leaky_relu", mk_x34, f_lrelu, false}, {"sigmoid", mk_x34, f_sigmoid, false},
    {"tanh", mk_x34, f_tanh, false}, {"relu_empty", mk_empty, f_relu, false},
    {"dropout.3", mk_x34, f_drop3, false}, {"dropout0", mk_x34, f_drop0, false},
    {"dropout1", mk_x34, f_drop1, false}, {"dropout_eval", mk_x34, f_drop3, true},
    {"softmax0", mk_x342, f_sm0, false}, {"softmax1", mk_x342, f_sm1, false},
    {"softmax-1", mk_x342, f_sml, false}, {"log_softmax0", mk_x342, f_lsm0, false},
    {"log_softmax1", mk_x342, f_lsm1, false}, {"softmax_empty", mk_empty, f_sml, false},
    {"sum", mk_x342, f_sum, false}, {"mean", mk_x342, f_mean, false},
    {"sum_empty", mk_empty, f_sum, false}, {"sum_ax0", mk_x342, f_sum0, false},
    {"sum_ax1k", mk_x342, f_sum1k, false}, {"sum_ax2", mk_x342, f_sum2, false},
    {"mean_ax1", mk_x342, f_mean1, false}, {"mean_ax0k", mk_x342, f_mean0k, false},
    {"sum_ax0_empty", mk_empty, f_sum0, false},
    {"reshape", mk_x342, f_reshape, false}, {"permute", mk_x342, f_perm, false},
    {"transpose", mk_x342, f_transp, false}, {"concat_self", mk_x342, f_cat_self, false},
    {"linear", mk_lin, f_lin, false}, {"linear_nob", mk_lin, f_lin_nob, false},
    {"linear3d", mk_lin3d, f_lin, false}, {"linear_constw", mk_lin_constw, f_lin, false},
    {"linear_empty", mk_lin_empty, f_lin, false}, {"linear_self", mk_sq, f_lin_self, false},
    {"linear_self_b", mk_sq, f_lin_self_b, false},
    {"conv", mk_conv_cw, f_conv, false}, {"conv_cx", mk_conv_cx, f_conv, false},
    {"conv_s2", mk_conv_cx, f_conv_s2, false}, {"conv_p0", mk_conv_cw, f_conv_p0, false},
    {"conv_g2", mk_conv, f_conv_g2, false}, {"conv_g2s2", mk_conv, f_conv_g2s2, false},
    {"conv_g2d2", mk_conv, f_conv_g2d2, false}, {"conv_g2nob", mk_conv, f_conv_g2nob, false},
    {"conv_c1", mk_conv1, f_conv_p0, false}, {"conv_c1_p1", mk_conv1, f_conv, false},
    {"conv_c1_nob", mk_conv1_nob, f_conv_nob, false},
    {"conv_c1_nob_p1", mk_conv1_nob, f_conv_nob_p1, false},
    {"conv1d", mk_conv1d, f_conv1d, false}, {"conv1d_d", mk_conv1d, f_conv1d_d, false},
    {"conv_n0", mk_conv_n0, f_conv, false}, {"conv_cwb", mk_conv_cwb, f_conv, false},
    {"conv_c1_only_b", mk_conv1_cw, f_conv_p0, false},
    {"max2", mk_p2, f_max2, false}, {"max2_even", mk_p2e, f_max2, false},
    {"max2_ceil", mk_p2, f_max2_ceil, false}, {"max3s2p1", mk_p2, f_max3_s2_p1, false},
    {"max2s1", mk_p2, f_max2_s1, false}, {"max_dil", mk_p2, f_max_dil, false},
    {"avg2", mk_p2, f_avg2, false}, {"avg2_even", mk_p2e, f_avg2, false},
    {"avg3", mk_p2, f_avg3, false}, {"avg3s2p1", mk_p2, f_avg3_s2_p1, false},
    {"avg_ceil_ex", mk_p2, f_avg_ceil_ex, false}, {"avg2_ceil", mk_p2, f_avg2_ceil, false},
    {"max1", mk_p1, f_max1, false}, {"max1p", mk_p1, f_max1_p, false},
    {"avg1", mk_p1, f_avg1, false}, {"avg1_3", mk_p1, f_avg1_3, false},
    {"avg1p", mk_p1, f_avg1_p, false}, {"gap", mk_p2, f_gap, false},
    {"gapk", mk_p2, f_gapk, false}, {"max2_n0", mk_p2n0, f_max2, false},
    {"avg2_n0", mk_p2n0, f_avg2, false},
    {"mse_mean", mk_xy, f_mse_m, false}, {"mse_sum", mk_xy, f_mse_s, false},
    {"mse_none", mk_xy, f_mse_n, false}, {"mse_self", mk_x34, f_mse_self, false},
    {"mse_const_y", mk_xy_c, f_mse_m, false},
    {"bce_mean", mk_py, f_bce_m, false}, {"bce_none", mk_py, f_bce_n, false},
    {"bcel_mean", mk_xy, f_bcel_m, false}, {"bcel_none", mk_xy, f_bcel_n, false},
    {"bcel_const_y", mk_xy_c, f_bcel_m, false},
    {"bcel_pw", mk_xyw, f_bcel_pw, false}, {"bcel_pw_none", mk_xyw, f_bcel_pw_n, false},
    {"ce", mk_ce, f_ce, false}, {"ce_none", mk_ce, f_ce_n, false}, {"ce_sum", mk_ce, f_ce_s, false},
    {"ce_w", mk_ce, f_ce_w, false}, {"ce_w_smooth_sum", mk_ce, f_ce_ws, false},
    {"ce_w_smooth_none", mk_ce, f_ce_wsn, false}, {"ce_ignore1", mk_ce_noign, f_ce_ign1, false},
    {"ce_all_ignored_sum", mk_ce_allign, f_ce_s, false},
    {"ce_all_ignored_none", mk_ce_allign, f_ce_n, false},
    {"ce_all_ignored_ws", mk_ce_allign, f_ce_ws, false},
    {"ce3d", mk_ce3d, f_ce, false}, {"ce3d_w", mk_ce3d, f_ce_ws, false},
    {"nll", mk_ce, f_nll, false}, {"nll_sum", mk_ce, f_nll_s, false},
    {"nll_w_none", mk_ce, f_nll_wn, false}, {"nll_w_ign3", mk_ce_noign, f_nll_w, false},
    {"nll_all_ignored_sum", mk_ce_allign, f_nll_s, false},
    {"nll3d", mk_ce3d, f_nll_wn, false},
    {"ce_prob", mk_ce_prob, f_cep, false}, {"ce_prob_none", mk_ce_prob, f_cep_n, false},
    {"bn2", mk_bn2, f_bn, false}, {"bn3", mk_bn3, f_bn, false}, {"bn4", mk_bn4, f_bn, false},
    {"bn4_w", mk_bn4, f_bn_w, false}, {"bn4_b", mk_bn4, f_bn_b, false},
    {"bn4_none", mk_bn4, f_bn_none, false}, {"bn4_cw", mk_bn4_cw, f_bn, false},
    {"bn4_cx", mk_bn4_cx, f_bn, false},
    {"bn2_eval", mk_bn2, f_bn, true}, {"bn4_eval", mk_bn4, f_bn, true},
    {"bn4_eval_cx", mk_bn4_cx, f_bn, true}, {"bn4_eval_b", mk_bn4, f_bn_b, true},
    {"add", mk_ab_same, f_add, false}, {"sub", mk_ab_same, f_sub, false},
    {"mul", mk_ab_same, f_mul, false}, {"div", mk_ab_same, f_div, false},
    {"add_row", mk_ab_row, f_add, false}, {"sub_row", mk_ab_row, f_sub, false},
    {"mul_row", mk_ab_row, f_mul, false}, {"div_row", mk_ab_row, f_div, false},
    {"add_rowa", mk_ab_rowa, f_add, false}, {"sub_rowa", mk_ab_rowa, f_sub, false},
    {"mul_rowa", mk_ab_rowa, f_mul, false}, {"div_rowa", mk_ab_rowa, f_div, false},
    {"add_colrow", mk_ab_colrow, f_add, false}, {"sub_colrow", mk_ab_colrow, f_sub, false},
    {"mul_colrow", mk_ab_colrow, f_mul, false}, {"div_colrow", mk_ab_colrow, f_div, false},
    {"add_scalar_b", mk_ab_scalar, f_add, false}, {"sub_scalar_b", mk_ab_scalar, f_sub, false},
    {"mul_scalar_b", mk_ab_scalar, f_mul, false}, {"div_scalar_b", mk_ab_scalar, f_div, false},
    {"add_size1", mk_ab_size1, f_add, false}, {"mul_size1", mk_ab_size1, f_mul, false},
    {"div_size1", mk_ab_size1, f_div, false}, {"sub_mid", mk_ab_mid, f_sub, false},
    {"mul_mid", mk_ab_mid, f_mul, false}, {"div_mid", mk_ab_mid, f_div, false},
    {"mul_const_b", mk_ab_cb, f_mul, false}, {"div_const_b", mk_ab_cb, f_div, false},
    {"mul_const_a", mk_ab_ca, f_mul, false}, {"div_const_a", mk_ab_ca, f_div, false},
    {"add_empty", mk_ab_empty, f_add, false}, {"mul_empty", mk_ab_empty, f_mul, false},
    {"div_empty", mk_ab_empty, f_div, false}, {"mul_empty_same", mk_ab_empty_s, f_mul, false},
    {"add_self", mk_x34, f_add_self, false}, {"sub_self", mk_x34, f_sub_self, false},
    {"mul_self", mk_x34, f_mul_self, false}, {"div_self", mk_pos, f_div_self, false},
    {"mul_row_self", mk_x34, f_mul_row_self, false}, {"bin_chain", mk_ab_same, f_bin_chain, false},
    {"neg", mk_x34, f_neg, false}, {"exp", mk_x34, f_exp, false}, {"log", mk_pos, f_log, false},
    {"sqrt", mk_pos, f_sqrt, false}, {"pow2.5", mk_pos, f_pow25, false},
    {"pow0", mk_pos, f_pow0, false}, {"pow3", mk_x34, f_pow3, false},
    {"pow-1.5", mk_pos, f_pow_neg, false}, {"add_scalar", mk_x34, f_adds, false},
    {"sub_scalar", mk_x34, f_subs, false}, {"mul_scalar", mk_x34, f_muls, false},
    {"div_scalar", mk_x34, f_divs, false}, {"exp_empty", mk_empty, f_exp, false},
    {"mul_scalar_empty", mk_empty, f_muls, false}, {"unary_chain", mk_x34, f_unary_chain, false},
    {"matmul", mk_mm2, f_mm, false}, {"matmul_batch", mk_mm_batch, f_mm, false},
    {"matmul_bcast_b", mk_mm_bcb, f_mm, false}, {"matmul_bcast_a", mk_mm_bca, f_mm, false},
    {"matmul_bcast_both", mk_mm_both, f_mm, false}, {"matmul_size1", mk_mm_size1, f_mm, false},
    {"matmul_n0", mk_mm_n0, f_mm, false}, {"matmul_k0", mk_mm_k0, f_mm, false},
    {"matmul_batch0", mk_mm_b0, f_mm, false}, {"matmul_const_a", mk_mm_cb, f_mm, false},
    {"matmul_self", mk_sq, f_mm_self, false},
    {"slice_rows", mk_x45, f_sl_rows, false}, {"slice_step", mk_x45, f_sl_step, false},
    {"slice_neg", mk_x45, f_sl_neg, false}, {"slice_mid", mk_x342, f_sl_mid, false},
    {"slice_one", mk_x342, f_sl_one, false}, {"slice_none", mk_x45, f_sl_none, false},
    {"slice_all", mk_x45, f_sl_all, false}, {"slice_twice", mk_x45, f_sl_twice, false},
    {"slice_empty", mk_x0_5, f_sl_step, false},
    {"pad1d", mk_x342, f_pad1, false}, {"pad2d", mk_x342, f_pad2, false},
    {"pad0", mk_x342, f_pad0, false}, {"pad_crop", mk_x342, f_pad_crop, false},
    {"pad_crop_all", mk_x45, f_pad_crop_all, false}, {"pad_first", mk_x342, f_pad_first, false},
    {"pad_empty", mk_x0_5, f_pad1, false},
};
enum { N_CASES = (int)(sizeof cases / sizeof cases[0]) };

/* ---- the graphs around a case
 * mode 0: the op alone (the whole Jacobian);
 * mode 1: sum(f(in) R) + sum(0.5 in_i), the extra terms recorded first (so
 *         their vjps run last: the op writes, the others add);
 * mode 2: the extra terms recorded after the op (its vjp adds);
 * mode 3: the op twice, sum(f(in) R) + sum(f(in) R'). */
typedef struct wrap { const rcase *c; int mode; } wrap;

static tg_tensor *weights(tg_ctx *ctx, const tg_tensor *y, double phase)
{
    tg_tensor *r = tg_empty(ctx, y->dtype, y->ndim, y->shape);
    for (int64_t i = 0; r && i < r->numel; i++)
        tg_set(r, i, cos(0.77 * (double)i + phase));
    return r;
}

static tg_tensor *extras(tg_ctx *ctx, tg_tensor *const *in, int n)
{
    tg_tensor *s = NULL;
    for (int i = 0; i < n; i++) {
        if (!in[i] || !in[i]->requires_grad)
            continue;
        tg_tensor *e = tg_sum(ctx, tg_mul_scalar(ctx, tg_mul(ctx, in[i], in[i]), 0.5));
        s = s ? tg_add(ctx, s, e) : e;
    }
    return s;
}

static tg_tensor *wrapped(tg_ctx *ctx, tg_tensor *const *in, int n, void *ud)
{
    const wrap *w = ud;
    if (w->mode == 0)
        return w->c->f(ctx, in);
    tg_tensor *e = w->mode == 1 ? extras(ctx, in, n) : NULL;
    tg_tensor *y = w->c->f(ctx, in);
    if (!y)
        return NULL;
    tg_tensor *l = tg_sum(ctx, tg_mul(ctx, y, weights(ctx, y, 0.1)));
    if (w->mode == 3) {
        tg_tensor *y2 = w->c->f(ctx, in);
        l = tg_add(ctx, l, tg_sum(ctx, tg_mul(ctx, y2, weights(ctx, y2, 1.3))));
    }
    if (w->mode == 2)
        e = extras(ctx, in, n);
    return e ? tg_add(ctx, l, e) : l;
}

static tg_ctx *checked_ctx(void)
{
    tg_ctx_opts o = {0};
    o.seed = 7;
    o.checked = true;
    return tg_ctx_new_opts(&o);
}

/* Finite differences, float64, every mode. Returns the failures. */
static int run_fd(const rcase *c, char *log, size_t size)
{
    int fails = 0;
    for (int mode = 0; mode < 4; mode++) {
        tg_ctx *ctx = checked_ctx();
        tg_set_training(ctx, !c->eval);
        tg_tensor *in[8] = {0};
        int n = c->make(ctx, TG_F64, in);
        wrap w = {c, mode};
        tg_gradcheck_result r;
        memset(&r, 0, sizeof r);
        tg_status st = tg_gradcheck(ctx, wrapped, &w, in, n, NULL, &r);
        if (st != TG_OK || !r.passed) {
            fails++;
            size_t used = strlen(log);
            snprintf(log + used, size - used, "[%s mode %d] %s %s\n", c->name, mode,
                     st != TG_OK ? tg_errmsg(ctx) : "", st == TG_OK ? r.msg : "");
        }
        tg_ctx_free(ctx);
    }
    return fails;
}

/* The gradients of mode's graph in dtype dt (checked mode: fresh buffers
 * are NaN), into g[i] (malloc'ed doubles, NULL for no gradient). */
static tg_status grads(const rcase *c, tg_dtype dt, int mode, double **g, int *n_out, char *err,
                       size_t size)
{
    tg_ctx *ctx = checked_ctx();
    tg_set_training(ctx, !c->eval);
    tg_tensor *in[8] = {0};
    int n = c->make(ctx, dt, in);
    *n_out = n;
    wrap w = {c, mode};
    tg_tensor *l = wrapped(ctx, in, n, &w);
    tg_status st = l ? tg_backward(ctx, l) : tg_errcode(ctx);
    if (st != TG_OK)
        snprintf(err, size, "%s", tg_errmsg(ctx));
    for (int i = 0; i < n; i++) {
        g[i] = NULL;
        if (st != TG_OK || !in[i]->requires_grad)
            continue;
        g[i] = malloc((size_t)(in[i]->numel ? in[i]->numel : 1) * sizeof(double));
        for (int64_t k = 0; k < in[i]->numel; k++)
            g[i][k] = in[i]->grad ? tg_get(in[i]->grad, k) : 0.0;
    }
    tg_ctx_free(ctx);
    return st;
}

static int compare(const rcase *c, const char *what, int mode, double **a, double **b, int n,
                   const int64_t *numel, double tol, char *log, size_t size)
{
    for (int i = 0; i < n; i++) {
        if (!a[i] || !b[i])
            continue;
        for (int64_t k = 0; k < numel[i]; k++)
            if (!(fabs(a[i][k] - b[i][k]) <= tol * fmax(1.0, fabs(b[i][k])))) {
                size_t used = strlen(log);
                snprintf(log + used, size - used, "[%s %s mode %d] input %d [%lld]: %.9g vs %.9g\n",
                         c->name, what, mode, i, (long long)k, a[i][k], b[i][k]);
                return 1;
            }
    }
    return 0;
}

static void free_grads(double **g, int n)
{
    for (int i = 0; i < n; i++)
        free(g[i]);
}

static void numels(const rcase *c, int64_t *numel)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *in[8] = {0};
    int n = c->make(ctx, TG_F64, in);
    for (int i = 0; i < n; i++)
        numel[i] = in[i]->numel;
    tg_ctx_free(ctx);
}

/* float32 (each convolution backend) against float64, modes 1 to 3. */
static int run_f32(const rcase *c, char *log, size_t size)
{
    static const char *backends[] = {NULL, "portable", "direct",
#ifdef TG_HAVE_DNNL
                                     "dnnl",
#endif
    };
    int fails = 0;
    int64_t numel[8];
    numels(c, numel);
    for (int mode = 1; mode < 4; mode++) {
        double *ref[8] = {0}, *got[8] = {0};
        char err[512] = "";
        int n;
        if (grads(c, TG_F64, mode, ref, &n, err, sizeof err) != TG_OK) {
            size_t used = strlen(log);
            snprintf(log + used, size - used, "[%s f64 mode %d] %s\n", c->name, mode, err);
            fails++;
            continue;
        }
        for (size_t b = 0; b < sizeof backends / sizeof backends[0]; b++) {
            tg__conv_force(backends[b]);
            if (grads(c, TG_F32, mode, got, &n, err, sizeof err) != TG_OK) {
                size_t used = strlen(log);
                snprintf(log + used, size - used, "[%s f32 %s mode %d] %s\n", c->name,
                         backends[b] ? backends[b] : "auto", mode, err);
                fails++;
            } else {
                fails += compare(c, backends[b] ? backends[b] : "f32 auto", mode, got, ref, n,
                                 numel, 2e-3, log, size);
            }
            free_grads(got, n);
        }
        tg__conv_force(NULL);
        free_grads(ref, n);
    }
    return fails;
}

START_TEST(first_write_fd)
{
    const rcase *c = &cases[_i];
    static char log[16384];
    log[0] = 0;
    int fails = run_fd(c, log, sizeof log);
    ck_assert_msg(fails == 0, "%s", log);
}
END_TEST

START_TEST(first_write_f32)
{
    const rcase *c = &cases[_i];
    static char log[16384];
    log[0] = 0;
    int fails = run_f32(c, log, sizeof log);
    ck_assert_msg(fails == 0, "%s", log);
}
END_TEST

/* TG_RETAIN_GRAPH: two backward calls through one graph add up to twice one. */
START_TEST(retain_graph_twice)
{
    const rcase *c = &cases[_i];
    static char log[4096];
    log[0] = 0;
    int fails = 0;
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        double *one[8] = {0};
        char err[512] = "";
        int n;
        ck_assert_msg(grads(c, dt, 2, one, &n, err, sizeof err) == TG_OK, "%s: %s", c->name, err);
        tg_ctx *ctx = checked_ctx();
        tg_set_training(ctx, !c->eval);
        tg_tensor *in[8] = {0};
        n = c->make(ctx, dt, in);
        wrap w = {c, 2};
        tg_tensor *l = wrapped(ctx, in, n, &w);
        ck_assert_ptr_nonnull(l);
        ck_assert_msg(tg_backward_ex(ctx, l, NULL, TG_RETAIN_GRAPH) == TG_OK, "%s", tg_errmsg(ctx));
        /* something else in the arena between the two */
        tg_tensor *junk = tg_full(ctx, dt, S(4096), NAN);
        ck_assert_ptr_nonnull(junk);
        ck_assert_msg(tg_backward_ex(ctx, l, NULL, TG_RETAIN_GRAPH) == TG_OK, "%s", tg_errmsg(ctx));
        for (int i = 0; i < n && !fails; i++) {
            if (!one[i])
                continue;
            for (int64_t k = 0; k < in[i]->numel; k++) {
                double got = tg_get(in[i]->grad, k), want = 2 * one[i][k];
                if (!(fabs(got - want) <= 1e-5 * fmax(1.0, fabs(want)))) {
                    snprintf(log, sizeof log, "[%s %s] input %d [%lld]: %.9g, want %.9g", c->name,
                             tg_dtype_name(dt), i, (long long)k, got, want);
                    fails++;
                    break;
                }
            }
        }
        free_grads(one, n);
        tg_ctx_free(ctx);
    }
    ck_assert_msg(fails == 0, "%s", log);
}
END_TEST

/* ---- parameter blocks released with TG_SET_TO_NONE */

static void block_of(tg_ctx *ctx, tg_tensor **m, tg_tensor **block)
{
    tg_param_spec specs[2] = {{.ndim = 1, .shape = {2}, .name = "w"},
                              {.ndim = 1, .shape = {3}, .name = "v"}};
    ck_assert_int_eq(tg_param_block(ctx, TG_F64, 2, specs, m, block), TG_OK);
    ck_assert_int_eq(tg_assign_f64(ctx, *block, (const double[]){1, 2, 3, 4, 5}), TG_OK);
}

/* L = sum(block^2) / 2 reaches the block itself: dL/dblock = block. */
START_TEST(block_used_whole_after_set_to_none)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *m[2], *block;
    block_of(ctx, m, &block);
    for (int round = 0; round < 2; round++) {
        tg_zero_grad_ex(ctx, TG_SET_TO_NONE);
        tg_tensor *l = tg_mul_scalar(ctx, tg_sum(ctx, tg_mul(ctx, block, block)), 0.5);
        ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
        ck_tensor(block->grad, ((const double[]){1, 2, 3, 4, 5}), 1e-15);
        tg_reset(ctx);
    }
    tg_ctx_free(ctx);
}
END_TEST

/* L = sum(block^2) / 2 + sum(3 w): dL/dblock = block + (3, 3, 0, 0, 0),
 * whichever term's vjp runs first. */
START_TEST(block_and_member_after_set_to_none)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *m[2], *block;
    block_of(ctx, m, &block);
    for (int order = 0; order < 2; order++) {
        tg_zero_grad_ex(ctx, TG_SET_TO_NONE);
        tg_tensor *a = NULL, *b = NULL;
        if (order)
            b = tg_sum(ctx, tg_mul_scalar(ctx, m[0], 3));
        a = tg_mul_scalar(ctx, tg_sum(ctx, tg_mul(ctx, block, block)), 0.5);
        if (!order)
            b = tg_sum(ctx, tg_mul_scalar(ctx, m[0], 3));
        ck_assert_int_eq(tg_backward(ctx, tg_add(ctx, a, b)), TG_OK);
        ck_tensor(block->grad, ((const double[]){4, 5, 3, 4, 5}), 1e-15);
        tg_reset(ctx);
    }
    tg_ctx_free(ctx);
}
END_TEST

/* The same with the optimiser's zero_grad, which releases (set_to_none). */
START_TEST(block_member_only_then_whole)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *m[2], *block;
    block_of(ctx, m, &block);
    /* a first step leaves values in the whole gradient block */
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_mul_scalar(ctx, block, 7))), TG_OK);
    tg_reset(ctx);
    tg_zero_grad_ex(ctx, TG_SET_TO_NONE);
    /* v reached through the member, then the block through a relu (first-write op) */
    tg_tensor *l = tg_add(ctx, tg_sum(ctx, tg_relu(ctx, block)), tg_sum(ctx, m[1]));
    ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
    ck_tensor(block->grad, ((const double[]){1, 1, 2, 2, 2}), 1e-15);
    tg_ctx_free(ctx);
}
END_TEST


/* ---- large inputs: 1 and 2 threads agree (parallel paths above the grain) */
static int mkb_c1(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(8, 1, 28, 28), 1, -1, 1, true);
    in[1] = mk(c, dt, S(6, 1, 2, 2), 2, -0.5, 0.5, true);
    in[2] = mk(c, dt, S(6), 3, -1, 1, true);
    return 3;
}
static int mkb_conv(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(4, 8, 16, 16), 1, -1, 1, true);
    in[1] = mk(c, dt, S(8, 4, 3, 3), 2, -0.5, 0.5, true);
    in[2] = mk(c, dt, S(8), 3, -1, 1, true);
    return 3;
}
static int mkb_conv_g1(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(4, 8, 16, 16), 1, -1, 1, true);
    in[1] = mk(c, dt, S(8, 8, 3, 3), 2, -0.5, 0.5, true);
    in[2] = mk(c, dt, S(8), 3, -1, 1, true);
    return 3;
}
static int mkb_py(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(200, 200), 1, 0.1, 0.9, true);
    in[1] = mk(c, dt, S(200, 200), 2, 0.1, 0.9, true);
    return 2;
}
static int mkb_pool(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(8, 4, 33, 31), 1, -2, 2, true); return 1; }
static int mkb_pool1(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(8, 8, 1030), 1, -2, 2, true); return 1; }
static int mkb_flat(tg_ctx *c, tg_dtype dt, tg_tensor **in) { in[0] = mk(c, dt, S(64, 40, 17), 1, -2, 2, true); return 1; }
static int mkb_lin(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(300, 64), 1, -1, 1, true);
    in[1] = mk(c, dt, S(130, 64), 2, -0.2, 0.2, true);
    in[2] = mk(c, dt, S(130), 3, -1, 1, true);
    return 3;
}
static int mkb_ce(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    int64_t n = 4000;
    int64_t *t = malloc((size_t)n * sizeof *t);
    for (int64_t i = 0; i < n; i++)
        t[i] = i % 13 == 0 ? -100 : (i * 7) % 10;
    in[0] = mk(c, dt, S(4000, 10), 1, -3, 3, true);
    in[1] = targets(c, 1, &n, t);
    in[2] = mk(c, dt, S(10), 3, 0.5, 2, false);
    free(t);
    return 3;
}
static int mkb_xy(tg_ctx *c, tg_dtype dt, tg_tensor **in)
{
    in[0] = mk(c, dt, S(200, 200), 1, -2, 2, true);
    in[1] = mk(c, dt, S(200, 200), 2, 0.1, 0.9, true);
    in[2] = mk(c, dt, S(200), 3, 0.5, 2, false);
    return 3;
}
static int mkb_bn(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_bn(c, dt, in, S(16, 3, 30, 30)); }
static int mkb_bn2(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_bn(c, dt, in, S(12000, 3)); }

static int mkb_row(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(200, 200), S(200), true, true); }
static int mkb_col(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(200, 200), S(200, 1), true, true); }
static int mkb_same(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_ab(c, dt, in, S(200, 200), S(200, 200), true, true); }
static int mkb_mm(tg_ctx *c, tg_dtype dt, tg_tensor **in) { return mk_mm(c, dt, in, S(4, 60, 64), S(64, 130)); }
static tg_tensor *f_slb(tg_ctx *c, tg_tensor *const *in) { return tg_slice(c, in[0], 1, 3, 37, 2); }

static const rcase big_cases[] = {
    {"conv_c1", mkb_c1, f_conv_p0, false}, {"conv_c1_p1", mkb_c1, f_conv, false},
    {"conv", mkb_conv_g1, f_conv, false}, {"conv_g2", mkb_conv, f_conv_g2, false},
    {"conv_s2", mkb_conv_g1, f_conv_s2, false},
    {"max2", mkb_pool, f_max2, false}, {"max2_ceil", mkb_pool, f_max2_ceil, false},
    {"max3s2p1", mkb_pool, f_max3_s2_p1, false}, {"avg2", mkb_pool, f_avg2, false},
    {"avg3s2p1", mkb_pool, f_avg3_s2_p1, false}, {"avg_ceil_ex", mkb_pool, f_avg_ceil_ex, false},
    {"max1", mkb_pool1, f_max1, false}, {"avg1", mkb_pool1, f_avg1, false},
    {"avg1_3", mkb_pool1, f_avg1_3, false}, {"gap", mkb_pool, f_gap, false},
    {"relu", mkb_flat, f_relu, false}, {"sigmoid", mkb_flat, f_sigmoid, false},
    {"dropout", mkb_flat, f_drop3, false}, {"softmax0", mkb_flat, f_sm0, false},
    {"softmax1", mkb_flat, f_sm1, false}, {"log_softmax-1", mkb_flat, f_lsm1, false},
    {"sum", mkb_flat, f_sum, false}, {"mean_ax0", mkb_flat, f_mean0k, false},
    {"sum_ax1", mkb_flat, f_sum1k, false}, {"sum_ax2", mkb_flat, f_sum2, false},
    {"permute", mkb_flat, f_perm, false}, {"concat_self", mkb_flat, f_cat_self, false},
    {"linear", mkb_lin, f_lin, false}, {"linear_nob", mkb_lin, f_lin_nob, false},
    {"ce", mkb_ce, f_ce, false}, {"ce_ws", mkb_ce, f_ce_ws, false},
    {"ce_none", mkb_ce, f_ce_wsn, false}, {"nll_wn", mkb_ce, f_nll_wn, false},
    {"mse", mkb_xy, f_mse_m, false}, {"bce", mkb_py, f_bce_n, false},
    {"bcel_pw", mkb_xy, f_bcel_pw, false},
    {"bn", mkb_bn, f_bn, false}, {"bn_eval", mkb_bn, f_bn, true}, {"bn2", mkb_bn2, f_bn_w, false},
    {"add", mkb_same, f_add, false}, {"sub", mkb_same, f_sub, false},
    {"mul", mkb_same, f_mul, false}, {"div", mkb_same, f_div, false},
    {"mul_row", mkb_row, f_mul, false}, {"div_col", mkb_col, f_div, false},
    {"mul_self", mkb_flat, f_mul_self, false}, {"exp", mkb_flat, f_exp, false},
    {"pow3", mkb_flat, f_pow3, false}, {"mul_scalar", mkb_flat, f_muls, false},
    {"add_scalar", mkb_flat, f_adds, false}, {"unary_chain", mkb_flat, f_unary_chain, false},
    {"matmul_bcast_b", mkb_mm, f_mm, false}, {"slice", mkb_flat, f_slb, false},
    {"slice_last", mkb_flat, f_sl_neg, false}, {"pad1d", mkb_flat, f_pad1, false},
};
enum { N_BIG = (int)(sizeof big_cases / sizeof big_cases[0]) };

START_TEST(threads_agree)
{
    const rcase *c = &big_cases[_i];
    static char log[4096];
    log[0] = 0;
    int64_t numel[8];
    numels(c, numel);
    int fails = 0, was = tg_num_threads();
    for (int d = 0; d < 2; d++)
        for (int mode = 1; mode < 3; mode++) {
            tg_dtype dt = d ? TG_F32 : TG_F64;
            double *one[8] = {0}, *two[8] = {0};
            char err[512] = "";
            int n;
            tg_set_num_threads(1);
            ck_assert_msg(grads(c, dt, mode, one, &n, err, sizeof err) == TG_OK, "%s", err);
            tg_set_num_threads(2);
            ck_assert_msg(grads(c, dt, mode, two, &n, err, sizeof err) == TG_OK, "%s", err);
            fails += compare(c, d ? "f32 threads" : "f64 threads", mode, two, one, n, numel,
                             d ? 1e-4 : 1e-11, log, sizeof log);
            free_grads(one, n);
            free_grads(two, n);
        }
    tg_set_num_threads(was);
    ck_assert_msg(fails == 0, "%s", log);
}
END_TEST

/* Large inputs (parallel and vectorised paths), float32 on every backend
 * against float64, fresh buffers NaN. */
START_TEST(big_f32)
{
    const rcase *c = &big_cases[_i];
    static char log[16384];
    log[0] = 0;
    int fails = run_f32(c, log, sizeof log);
    ck_assert_msg(fails == 0, "%s", log);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("first_write");
    TCase *tc = tcase_create("first_write");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, first_write_fd, 0, N_CASES);
    tcase_add_loop_test(tc, first_write_f32, 0, N_CASES);
    tcase_add_loop_test(tc, retain_graph_twice, 0, N_CASES);
    tcase_add_loop_test(tc, threads_agree, 0, N_BIG);
    tcase_add_loop_test(tc, big_f32, 0, N_BIG);
    suite_add_tcase(s, tc);
    TCase *tb = tcase_create("blocks");
    tcase_add_test(tb, block_used_whole_after_set_to_none);
    tcase_add_test(tb, block_and_member_after_set_to_none);
    tcase_add_test(tb, block_member_only_then_whole);
    suite_add_tcase(s, tb);
    return s;
}
