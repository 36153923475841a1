/*
 * test_edge_nn.c: misuse and edge cases of activations, softmax, losses,
 * nll_loss, dropout and batch norm: NaN and infinities, int64 class
 * indices, float32 sums, empty and overflowing shapes, degenerate
 * attributes and version checks. Reference values were computed with
 * PyTorch 1.13 in float64 and are stated beside each check.
 */
#include <string.h>

#include "testutil.h"

#define BIG ((int64_t)1 << 40)

/* A call that must fail with code and a message containing text. */
#define EXPECT_FAIL(ctx, expr, code, text)  \
    do {                                    \
        ck_assert_ptr_null(expr);           \
        ck_error((ctx), (code), (text));    \
        tg_clear_error(ctx);                \
    } while (0)

static tg_tensor *leaf(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape,
                       const double *v)
{
    tg_tensor *t = tg_from_f64(ctx, dt, ndim, shape, v);
    ck_assert_int_eq(tg_set_requires_grad(ctx, t, true), TG_OK);
    return t;
}

/* Exact equality that treats NaN as equal to NaN. */
static void ck_same(double got, double want, const char *what)
{
    ck_assert_msg(got == want || (isnan(got) && isnan(want)), "%s = %.17g, PyTorch %.17g", what,
                  got, want);
}

/* ------------------------------------------------------------ nan */

/* PyTorch: relu([nan, 1, -1]) = [nan, 1, 0], gradient of the sum [1, 1, 0];
 * leaky_relu(., 0.2) = [nan, 1, -0.2], gradient [0.2, 1, 0.2]. */
START_TEST(relu_passes_nan)
{
    tg_ctx *ctx = tg_ctx_new(1);
    for (int dt = TG_F32; dt <= TG_F64; dt++) {
        tg_tensor *x = leaf(ctx, (tg_dtype)dt, TG_SHAPE(3), (const double[]){NAN, 1, -1});
        tg_tensor *r = tg_relu(ctx, x), *l = tg_leaky_relu(ctx, x, 0.2);
        ck_assert(isnan(tg_get(r, 0)) && isnan(tg_get(l, 0)));
        ck_assert(tg_get(r, 2) == 0 && !signbit(tg_get(r, 2)));
        ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, r)), TG_OK);
        ck_tensor(x->grad, ((const double[]){1, 1, 0}), 0);
        tg_zero_grad(ctx);
        x->grad = NULL;
        ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, l)), TG_OK);
        ck_tensor(x->grad, ((const double[]){0.2, 1, 0.2}), 1e-7);
        tg_reset(ctx);
    }
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch 1.13, F.binary_cross_entropy_with_logits(x, y, reduction="sum")
 * and its gradients (x.grad, y.grad):
 *   x = +inf: y = 0 -> (inf, 1, -inf), y = 1 -> (nan, 0, -inf), y = 0.5 -> (inf, 0.5, -inf)
 *   x = -inf: y = 0 -> (nan, 0, inf), y = 1 -> (nan, -1, inf), y = 0.5 -> (nan, -0.5, inf) */
START_TEST(bce_with_logits_at_infinity)
{
    static const struct { double x, y, loss, gx, gy; } want[] = {
        {INFINITY, 0, INFINITY, 1, -INFINITY},  {INFINITY, 1, NAN, 0, -INFINITY},
        {INFINITY, 0.5, INFINITY, 0.5, -INFINITY}, {-INFINITY, 0, NAN, 0, INFINITY},
        {-INFINITY, 1, NAN, -1, INFINITY},      {-INFINITY, 0.5, NAN, -0.5, INFINITY},
    };
    tg_ctx *ctx = tg_ctx_new(1);
    for (int dt = TG_F32; dt <= TG_F64; dt++)
        for (int k = 0; k < 6; k++) {
            tg_tensor *x = leaf(ctx, (tg_dtype)dt, TG_SHAPE(1), &want[k].x);
            tg_tensor *y = leaf(ctx, (tg_dtype)dt, TG_SHAPE(1), &want[k].y);
            tg_tensor *l = tg_bce_with_logits(ctx, x, y, TG_SUM);
            ck_assert_ptr_nonnull(l);
            ck_same(tg_get(l, 0), want[k].loss, "loss");
            ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
            ck_same(tg_get(x->grad, 0), want[k].gx, "x.grad");
            ck_same(tg_get(y->grad, 0), want[k].gy, "y.grad");
            tg_reset(ctx);
        }
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch: softmax([[nan, 1], [0, 1]], dim=1) = [[nan, nan], [0.2689.., 0.7310..]],
 * and the same for inf in place of nan; a row of -inf is all NaN. */
START_TEST(softmax_nan_and_inf_rows)
{
    tg_ctx *ctx = tg_ctx_new(1);
    static const double bad[] = {NAN, INFINITY};
    for (int k = 0; k < 2; k++) {
        tg_tensor *x = tg_from_f64(ctx, TG_F64, TG_SHAPE(2, 2), (const double[]){bad[k], 1, 0, 1});
        tg_tensor *s = tg_softmax(ctx, x, 1);
        ck_assert(isnan(tg_get(s, 0)) && isnan(tg_get(s, 1)));
        ck_close(tg_get(s, 2), 0.26894142136999516, 1e-15);
        ck_close(tg_get(s, 3), 0.7310585786300049, 1e-15);
    }
    tg_tensor *m = tg_full(ctx, TG_F32, TG_SHAPE(1, 2), -INFINITY);
    tg_tensor *ls = tg_log_softmax(ctx, m, 1);
    ck_assert(isnan(tg_get(ls, 0)) && isnan(tg_get(ls, 1)));
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch: mse_loss([nan, 0.5], [1, 1]) = nan, x.grad = [nan, -0.5];
 * cross_entropy([[nan, 0.5], [0, 1]], [0, 1]) = nan, grad [[nan, nan], [0.1344.., -0.1344..]];
 * nll_loss([[nan, 0.5], [0, 1]], [1, 1]) = -0.75, grad [[0, -0.5], [0, -0.5]];
 * binary_cross_entropy on a NaN input raises. */
START_TEST(losses_with_nan)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = leaf(ctx, TG_F64, TG_SHAPE(2), (const double[]){NAN, 0.5});
    tg_tensor *l = tg_mse(ctx, x, tg_ones(ctx, TG_F64, TG_SHAPE(2)), TG_MEAN);
    ck_assert(isnan(tg_get(l, 0)));
    ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
    ck_assert(isnan(tg_get(x->grad, 0)) && tg_get(x->grad, 1) == -0.5);

    tg_tensor *z = leaf(ctx, TG_F64, TG_SHAPE(2, 2), (const double[]){NAN, 0.5, 0, 1});
    tg_tensor *t = tg_from_data(ctx, TG_I64, TG_SHAPE(2), (const int64_t[]){0, 1});
    l = tg_cross_entropy(ctx, z, t, TG_MEAN);
    ck_assert(isnan(tg_get(l, 0)));
    ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
    ck_assert(isnan(tg_get(z->grad, 0)) && isnan(tg_get(z->grad, 1)));
    ck_close(tg_get(z->grad, 2), 0.13447071068499755, 1e-15);
    ck_close(tg_get(z->grad, 3), -0.13447071068499755, 1e-15);

    tg_tensor *lp = leaf(ctx, TG_F64, TG_SHAPE(2, 2), (const double[]){NAN, 0.5, 0, 1});
    t = tg_from_data(ctx, TG_I64, TG_SHAPE(2), (const int64_t[]){1, 1});
    l = tg_nll_loss(ctx, lp, t, TG_MEAN);
    ck_assert(tg_get(l, 0) == -0.75);
    ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
    ck_tensor(lp->grad, ((const double[]){0, -0.5, 0, -0.5}), 0);

    EXPECT_FAIL(ctx, tg_bce(ctx, tg_full(ctx, TG_F64, TG_SHAPE(2), NAN), tg_ones(ctx, TG_F64, TG_SHAPE(2)),
                            TG_MEAN), TG_EINVAL, "bce: input[0] = nan is not a probability in [0, 1]");
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ int64_targets */

/* PyTorch: cross_entropy(zeros(2, 4), [1, 3]) = log 4, for float32 and float64 logits. */
START_TEST(int64_indices_accepted)
{
    tg_ctx *ctx = tg_ctx_new(1);
    for (int dt = TG_F32; dt <= TG_F64; dt++) {
        tg_tensor *z = tg_zeros(ctx, (tg_dtype)dt, TG_SHAPE(2, 4));
        tg_tensor *t = tg_from_data(ctx, TG_I64, TG_SHAPE(2), (const int64_t[]){1, 3});
        tg_tensor *l = tg_cross_entropy(ctx, z, t, TG_MEAN);
        ck_assert_ptr_nonnull(l);
        ck_assert_int_eq(l->dtype, dt);
        ck_close(tg_get(l, 0), log(4.0), 1e-7);
    }
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(float_indices_refused)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *z = tg_zeros(ctx, TG_F32, TG_SHAPE(3, 4));
    /* PyTorch: "expected scalar type Long but found Float" */
    EXPECT_FAIL(ctx, tg_cross_entropy(ctx, z, tg_zeros(ctx, TG_F32, TG_SHAPE(3)), TG_MEAN), TG_EDTYPE,
                "cross_entropy: target (3) float32 has the shape of class indices; pass the indices "
                "as an int64 tensor");
    EXPECT_FAIL(ctx, tg_cross_entropy(ctx, tg_zeros(ctx, TG_F64, TG_SHAPE(2, 3, 5)),
                                      tg_zeros(ctx, TG_F64, TG_SHAPE(2, 5)), TG_SUM),
                TG_EDTYPE, "pass the indices as an int64 tensor");
    EXPECT_FAIL(ctx, tg_cross_entropy(ctx, z, tg_zeros(ctx, TG_I64, TG_SHAPE(3, 4)), TG_MEAN), TG_ESHAPE,
                "cross_entropy: int64 target (3, 4) does not fit (3, 4) as class indices");
    EXPECT_FAIL(ctx, tg_cross_entropy(ctx, tg_zeros(ctx, TG_I64, TG_SHAPE(3, 4)),
                                      tg_zeros(ctx, TG_I64, TG_SHAPE(3)), TG_MEAN),
                TG_EDTYPE, "cross_entropy: logits are (3, 4) int64; they must be float32 or float64");
    EXPECT_FAIL(ctx, tg_cross_entropy(ctx, z, tg_zeros(ctx, TG_F64, TG_SHAPE(3, 4)), TG_MEAN), TG_EDTYPE,
                "cross_entropy");
    /* the other losses still refuse integers (through tg_apply) */
    EXPECT_FAIL(ctx, tg_mse(ctx, tg_zeros(ctx, TG_I64, TG_SHAPE(2)), tg_zeros(ctx, TG_I64, TG_SHAPE(2)),
                            TG_MEAN), TG_EDTYPE, "mse: input 0 is (2) int64");
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch: "Target 4 is out of bounds." (and IndexError for -1) */
START_TEST(index_out_of_range)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *z = tg_zeros(ctx, TG_F64, TG_SHAPE(3, 4));
    EXPECT_FAIL(ctx, tg_cross_entropy(ctx, z, tg_from_data(ctx, TG_I64, TG_SHAPE(3), (const int64_t[]){0, 1, 4}),
                                      TG_MEAN), TG_EINVAL,
                "cross_entropy: target[2] = 4 is not a class index in [0, 4)");
    tg_tensor *zs = tg_zeros(ctx, TG_F64, TG_SHAPE(2, 3, 3));
    tg_tensor *ts = tg_from_data(ctx, TG_I64, TG_SHAPE(2, 3), (const int64_t[]){0, 1, 2, 2, 1, -1});
    EXPECT_FAIL(ctx, tg_cross_entropy(ctx, zs, ts, TG_SUM), TG_EINVAL,
                "cross_entropy: target[1, 2] = -1 is not a class index in [0, 3)");
    tg_tensor *huge = tg_from_data(ctx, TG_I64, TG_SHAPE(1), (const int64_t[]){INT64_MAX});
    EXPECT_FAIL(ctx, tg_cross_entropy(ctx, tg_zeros(ctx, TG_F32, TG_SHAPE(1, 2)), huge, TG_MEAN),
                TG_EINVAL, "target[0] = 9223372036854775807 is not a class index in [0, 2)");
    tg_ctx_free(ctx);
}
END_TEST

/* Probability targets keep their gradient (PyTorch computes it too). */
START_TEST(probability_target_gradient)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *z = leaf(ctx, TG_F64, TG_SHAPE(1, 2), (const double[]){0, 0});
    tg_tensor *t = leaf(ctx, TG_F64, TG_SHAPE(1, 2), (const double[]){0.25, 0.75});
    tg_tensor *l = tg_cross_entropy(ctx, z, t, TG_SUM);
    ck_close(tg_get(l, 0), log(2.0), 1e-15);
    ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
    ck_tensor(z->grad, ((const double[]){0.25, -0.25}), 1e-15);
    ck_tensor(t->grad, ((const double[]){log(2.0), log(2.0)}), 1e-15);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ nll */

/* PyTorch: nll_loss([[-1, -2, -3], [-0.5, -1.5, -2.5]], [2, 0]) = 1.75 (mean),
 * 3.5 (sum); gradients -1/2 and -1 at the picked entries. */
START_TEST(nll_values)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const double v[] = {-1, -2, -3, -0.5, -1.5, -2.5};
    for (int r = TG_MEAN; r <= TG_SUM; r++) {
        tg_tensor *lp = leaf(ctx, TG_F64, TG_SHAPE(2, 3), v);
        tg_tensor *t = tg_from_data(ctx, TG_I64, TG_SHAPE(2), (const int64_t[]){2, 0});
        tg_tensor *l = tg_nll_loss(ctx, lp, t, (tg_reduction)r);
        ck_assert(tg_get(l, 0) == (r == TG_MEAN ? 1.75 : 3.5));
        ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
        double g = r == TG_MEAN ? -0.5 : -1;
        ck_tensor(lp->grad, ((const double[]){0, 0, g, g, 0, 0}), 0);
    }
    tg_ctx_free(ctx);
}
END_TEST

/* cross_entropy(z, t) = nll_loss(log_softmax(z, 1), t), value and gradient, over a spatial dim. */
START_TEST(nll_of_log_softmax_is_cross_entropy)
{
    tg_ctx *ctx = tg_ctx_new(3);
    tg_tensor *z = tg_randn(ctx, TG_F64, TG_SHAPE(2, 4, 3), 0, 2);
    tg_set_requires_grad(ctx, z, true);
    tg_tensor *t = tg_from_data(ctx, TG_I64, TG_SHAPE(2, 3), (const int64_t[]){3, 0, 1, 2, 2, 0});
    tg_tensor *ce = tg_cross_entropy(ctx, z, t, TG_MEAN);
    ck_assert_int_eq(tg_backward(ctx, ce), TG_OK);
    double want[24];
    for (int i = 0; i < 24; i++)
        want[i] = tg_get(z->grad, i);
    z->grad = NULL;
    tg_zero_grad(ctx);
    tg_tensor *nll = tg_nll_loss(ctx, tg_log_softmax(ctx, z, 1), t, TG_MEAN);
    ck_close(tg_get(nll, 0), tg_get(ce, 0), 1e-14);
    ck_assert_int_eq(tg_backward(ctx, nll), TG_OK);
    ck_tensor(z->grad, want, 1e-14);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(nll_errors)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *lp = tg_zeros(ctx, TG_F64, TG_SHAPE(2, 3));
    /* PyTorch: "expected scalar type Long but found Double" */
    EXPECT_FAIL(ctx, tg_nll_loss(ctx, lp, tg_zeros(ctx, TG_F64, TG_SHAPE(2)), TG_MEAN), TG_EDTYPE,
                "nll_loss: target is (2) float64; pass class indices as an int64 tensor");
    EXPECT_FAIL(ctx, tg_nll_loss(ctx, lp, tg_from_data(ctx, TG_I64, TG_SHAPE(2), (const int64_t[]){0, 3}),
                                 TG_MEAN), TG_EINVAL,
                "nll_loss: target[1] = 3 is not a class index in [0, 3)");
    EXPECT_FAIL(ctx, tg_nll_loss(ctx, tg_zeros(ctx, TG_F64, TG_SHAPE(3)), tg_zeros(ctx, TG_I64, TG_SHAPE(3)),
                                 TG_MEAN), TG_ESHAPE,
                "nll_loss: log-probabilities (3) need a batch and a class dimension");
    EXPECT_FAIL(ctx, tg_nll_loss(ctx, lp, tg_zeros(ctx, TG_I64, TG_SHAPE(3)), TG_MEAN), TG_ESHAPE,
                "nll_loss: int64 target (3) does not fit (2, 3) as class indices");
    EXPECT_FAIL(ctx, tg_nll_loss(ctx, lp, tg_zeros(ctx, TG_I64, TG_SHAPE(2)), (tg_reduction)5), TG_EINVAL,
                "nll_loss: reduction 5 is not TG_MEAN, TG_SUM or TG_NONE");
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(nll_registered)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const tg_op *op = tg_op_find("nll_loss");
    ck_assert_ptr_nonnull(op);
    ck_assert(op->flags & TG_OP_INT64_INPUTS);
    ck_assert(tg_op_find("cross_entropy")->flags & TG_OP_INT64_INPUTS);
    tg_gradcheck_result res;
    ck_assert_int_eq(tg_gradcheck_op(ctx, op, NULL, &res), TG_OK);
    ck_assert_msg(res.passed && res.cases == 6, "%s", res.msg);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ accumulation */

#define N22 ((int64_t)1 << 22)

/* float32 values in [1, 2) without a pattern a float sum would hide */
static tg_tensor *f32_ramp(tg_ctx *ctx, int ndim, const int64_t *shape)
{
    tg_tensor *x = tg_empty(ctx, TG_F32, ndim, shape);
    float *v = x->data;
    for (int64_t i = 0; i < x->numel; i++)
        v[i] = 1.0f + (float)((i * 2654435761u) % 1000003) / 1000003.0f;
    return x;
}

static double exact_sum(const tg_tensor *x, double power)
{
    double s = 0;
    for (int64_t i = 0; i < x->numel; i++)
        s += pow(tg_get(x, i), power);
    return s;
}

/* mean (x - 0)^2 over 2^22 float32 values: a float accumulator drifts
 * by about 1e-3 here; the double one matches the exact value to 1e-6. */
START_TEST(mse_float32_sum)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = f32_ramp(ctx, TG_SHAPE(N22));
    tg_tensor *l = tg_mse(ctx, x, tg_zeros(ctx, TG_F32, TG_SHAPE(N22)), TG_MEAN);
    double want = exact_sum(x, 2) / (double)N22;
    ck_assert_msg(fabs(tg_get(l, 0) - want) <= 1e-6 * want, "mse %.9g, exact %.9g", tg_get(l, 0), want);
    tg_ctx_free(ctx);
}
END_TEST

/* softmax over one float32 line of 2^22 values sums to 1 within 1e-6, and
 * log_softmax's normaliser is the exact log-sum-exp. */
START_TEST(softmax_float32_sum)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = f32_ramp(ctx, TG_SHAPE(1, N22));
    tg_tensor *s = tg_softmax(ctx, x, 1), *ls = tg_log_softmax(ctx, x, 1);
    double total = 0, lse = 0, m = 0;
    for (int64_t i = 0; i < N22; i++) {
        total += tg_get(s, i);
        m = fmax(m, tg_get(x, i));
    }
    for (int64_t i = 0; i < N22; i++)
        lse += exp(tg_get(x, i) - m);
    lse = m + log(lse);
    ck_assert_msg(fabs(total - 1) <= 1e-6, "softmax sums to %.9g", total);
    ck_close(tg_get(x, 7) - tg_get(ls, 7), lse, 1e-6);
    tg_ctx_free(ctx);
}
END_TEST

/* cross_entropy of 2^20 float32 rows of 4 classes, against the exact double value */
START_TEST(cross_entropy_float32_sum)
{
    tg_ctx *ctx = tg_ctx_new(1);
    int64_t n = N22 / 4;
    tg_tensor *z = f32_ramp(ctx, TG_SHAPE(n, 4));
    tg_tensor *t = tg_zeros(ctx, TG_I64, TG_SHAPE(n));
    for (int64_t i = 0; i < n; i++)
        ((int64_t *)t->data)[i] = i % 4;
    double want = 0;
    for (int64_t i = 0; i < n; i++) {
        double se = 0;
        for (int c = 0; c < 4; c++)
            se += exp(tg_get(z, i * 4 + c));
        want += log(se) - tg_get(z, i * 4 + i % 4);
    }
    want /= (double)n;
    ck_close(tg_get(tg_cross_entropy(ctx, z, t, TG_MEAN), 0), want, 1e-6);
    tg_ctx_free(ctx);
}
END_TEST

/* batch norm over 2^22 float32 values of one channel: the running mean and
 * variance match the exact statistics, and the bias gradient of a 0.1
 * upstream gradient is 2^22 * 0.1f within 1e-6. */
START_TEST(batch_norm_float32_sums)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = f32_ramp(ctx, TG_SHAPE(N22, 1));
    tg_tensor *b = tg_param(ctx, TG_F32, TG_SHAPE(1), "bias");
    tg_tensor *rm = tg_buffer(ctx, TG_F32, TG_SHAPE(1), "running_mean");
    tg_tensor *rv = tg_buffer(ctx, TG_F32, TG_SHAPE(1), "running_var");
    tg_tensor *y = tg_batch_norm(ctx, x, NULL, b, rm, rv, 1.0, TG_BN_EPS);
    ck_assert_ptr_nonnull(y);
    double mean = exact_sum(x, 1) / (double)N22, q = 0;
    for (int64_t i = 0; i < N22; i++)
        q += (tg_get(x, i) - mean) * (tg_get(x, i) - mean);
    ck_close(tg_get(rm, 0), mean, 1e-6);
    ck_close(tg_get(rv, 0), q / (double)(N22 - 1), 1e-6);
    ck_assert_int_eq(tg_backward_ex(ctx, y, tg_full(ctx, TG_F32, TG_SHAPE(N22, 1), 0.1), 0), TG_OK);
    ck_close(tg_get(b->grad, 0) / (double)N22, (double)0.1f, 1e-6);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ empty */

/* PyTorch: mse_loss / binary_cross_entropy(_with_logits) over no elements:
 * mean nan, sum 0. Here beside a dimension of 2^40, which must not be walked. */
START_TEST(empty_pair_losses)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *(*fns[])(tg_ctx *, tg_tensor *, tg_tensor *, tg_reduction) = {
        (tg_mse), (tg_bce), (tg_bce_with_logits)};
    for (int k = 0; k < 3; k++) {
        tg_tensor *x = tg_zeros(ctx, TG_F32, TG_SHAPE(BIG, 0));
        tg_set_requires_grad(ctx, x, true);
        tg_tensor *mean = fns[k](ctx, x, tg_zeros(ctx, TG_F32, TG_SHAPE(BIG, 0)), TG_MEAN);
        tg_tensor *sum = fns[k](ctx, x, tg_zeros(ctx, TG_F32, TG_SHAPE(BIG, 0)), TG_SUM);
        ck_assert_msg(mean && sum, "%s", tg_errmsg(ctx));
        ck_assert(isnan(tg_get(mean, 0)) && tg_get(sum, 0) == 0);
        ck_assert_int_eq(tg_backward(ctx, sum), TG_OK);
        ck_assert_int_eq(x->grad->numel, 0);
        tg_reset(ctx);
    }
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch: cross_entropy and nll_loss with N = 0 are nan (mean) and 0
 * (sum), with an empty gradient; cross_entropy with C = 0 and probability
 * targets is nan; with C = 0 and an index it is "Target 0 is out of bounds". */
START_TEST(empty_class_losses)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *z = tg_zeros(ctx, TG_F64, TG_SHAPE(0, 3));
    tg_set_requires_grad(ctx, z, true);
    tg_tensor *t = tg_zeros(ctx, TG_I64, TG_SHAPE(0));
    ck_assert(isnan(tg_get(tg_cross_entropy(ctx, z, t, TG_MEAN), 0)));
    ck_assert(isnan(tg_get(tg_nll_loss(ctx, z, t, TG_MEAN), 0)));
    ck_assert(tg_get(tg_nll_loss(ctx, z, t, TG_SUM), 0) == 0);
    tg_tensor *s = tg_cross_entropy(ctx, z, t, TG_SUM);
    ck_assert(tg_get(s, 0) == 0);
    ck_assert_int_eq(tg_backward(ctx, s), TG_OK);
    ck_assert_int_eq(z->grad->numel, 0);
    /* no classes beside 2^40 samples, probability targets */
    tg_tensor *p = tg_zeros(ctx, TG_F32, TG_SHAPE(BIG, 0));
    ck_assert(isnan(tg_get(tg_cross_entropy(ctx, p, tg_zeros(ctx, TG_F32, TG_SHAPE(BIG, 0)), TG_MEAN), 0)));
    /* spatial size 0: PyTorch nan */
    ck_assert(isnan(tg_get(tg_cross_entropy(ctx, tg_zeros(ctx, TG_F64, TG_SHAPE(2, 3, 0)),
                                            tg_zeros(ctx, TG_I64, TG_SHAPE(2, 0)), TG_MEAN), 0)));
    EXPECT_FAIL(ctx, tg_cross_entropy(ctx, tg_zeros(ctx, TG_F64, TG_SHAPE(2, 0)), tg_zeros(ctx, TG_I64, TG_SHAPE(2)),
                                      TG_MEAN), TG_EINVAL, "target[0] = 0 is not a class index in [0, 0)");
    /* 2^40 x 2^40 samples cannot be counted */
    EXPECT_FAIL(ctx, tg_cross_entropy(ctx, tg_zeros(ctx, TG_F64, TG_SHAPE(BIG, 0, BIG)),
                                      tg_zeros(ctx, TG_F64, TG_SHAPE(BIG, 0, BIG)), TG_MEAN),
                TG_ESHAPE, "cross_entropy: logits (1099511627776, 0, 1099511627776) hold more samples");
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch: softmax of an empty tensor is empty. Lines that cannot be
 * counted (2^40 x 2^40 beside a 0) are TG_ESHAPE here. */
START_TEST(empty_softmax_and_elementwise)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_zeros(ctx, TG_F32, TG_SHAPE(BIG, 0));
    tg_set_requires_grad(ctx, x, true);
    tg_tensor *outs[] = {tg_softmax(ctx, x, 1), tg_log_softmax(ctx, x, 0), tg_relu(ctx, x),
                         tg_leaky_relu(ctx, x, 0.1), tg_sigmoid(ctx, x), tg_tanh(ctx, x),
                         tg_dropout(ctx, x, 0.5)};
    tg_tensor *total = NULL;
    for (int k = 0; k < 7; k++) {
        ck_assert_msg(outs[k] != NULL, "%d: %s", k, tg_errmsg(ctx));
        ck_assert(outs[k]->numel == 0 && outs[k]->shape[0] == BIG);
        total = total ? tg_add(ctx, total, tg_sum(ctx, outs[k])) : tg_sum(ctx, outs[k]);
    }
    ck_assert_int_eq(tg_backward(ctx, total), TG_OK);
    EXPECT_FAIL(ctx, tg_softmax(ctx, tg_zeros(ctx, TG_F32, TG_SHAPE(BIG, 0, BIG)), 1), TG_ESHAPE,
                "softmax: input (1099511627776, 0, 1099511627776) along axis 1 has more lines");
    EXPECT_FAIL(ctx, tg_log_softmax(ctx, tg_zeros(ctx, TG_F32, TG_SHAPE(0, BIG, BIG)), 0), TG_ESHAPE,
                "log_softmax: input (0, 1099511627776, 1099511627776) along axis 0");
    tg_ctx_free(ctx);
}
END_TEST

/* Training batch norm without values per channel is refused at once, with
 * PyTorch's message for a batch of one (PyTorch 1.13's F.batch_norm returns
 * an empty tensor for N = 0; we refuse, as a batch without values has no
 * statistics). No channels, or eval mode, gives an empty output. */
START_TEST(empty_batch_norm)
{
    tg_ctx *ctx = tg_ctx_new(1);
    EXPECT_FAIL(ctx, tg_batch_norm(ctx, tg_zeros(ctx, TG_F32, TG_SHAPE(0, 3)), NULL, NULL, NULL, NULL, 0.1,
                                   TG_BN_EPS), TG_EINVAL,
                "batch_norm: expected more than 1 value per channel when training, got input of size (0, 3)");
    EXPECT_FAIL(ctx, tg_batch_norm(ctx, tg_zeros(ctx, TG_F32, TG_SHAPE(4, 3, 0)), NULL, NULL, NULL, NULL, 0.1,
                                   TG_BN_EPS), TG_EINVAL, "expected more than 1 value per channel");
    /* PyTorch: (4, 0) in training gives an empty (4, 0) */
    tg_tensor *x = tg_zeros(ctx, TG_F64, TG_SHAPE(BIG, 0, BIG));
    tg_set_requires_grad(ctx, x, true);
    tg_tensor *y = tg_batch_norm(ctx, x, NULL, NULL, NULL, NULL, 0.1, TG_BN_EPS);
    ck_assert_msg(y && y->numel == 0, "%s", tg_errmsg(ctx));
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_OK);
    /* PyTorch: eval mode with N = 0 gives an empty (0, 3); the statistics stay */
    tg_tensor *w = tg_ones(ctx, TG_F64, TG_SHAPE(3));
    tg_set_requires_grad(ctx, w, true);
    tg_tensor *rm = tg_zeros(ctx, TG_F64, TG_SHAPE(3)), *rv = tg_ones(ctx, TG_F64, TG_SHAPE(3));
    tg_set_training(ctx, false);
    y = tg_batch_norm(ctx, tg_zeros(ctx, TG_F64, TG_SHAPE(0, 3)), w, NULL, rm, rv, 0.1, TG_BN_EPS);
    ck_assert_msg(y && y->numel == 0, "%s", tg_errmsg(ctx));
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_OK);
    ck_tensor(w->grad, ((const double[]){0, 0, 0}), 0);
    ck_tensor(rv, ((const double[]){1, 1, 1}), 0);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ attributes */

/* PyTorch: "dropout probability has to be between 0 and 1, but got nan" */
START_TEST(dropout_p)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(4));
    EXPECT_FAIL(ctx, tg_dropout(ctx, x, NAN), TG_EINVAL, "dropout: p = nan is outside [0, 1]");
    EXPECT_FAIL(ctx, tg_dropout(ctx, x, 1.0000001), TG_EINVAL, "dropout: p = 1.0000001 is outside [0, 1]");
    EXPECT_FAIL(ctx, tg_dropout(ctx, x, -1e-300), TG_EINVAL, "dropout: p = -1e-300 is outside");
    tg_set_training(ctx, false); /* checked in eval mode too, as PyTorch */
    EXPECT_FAIL(ctx, tg_dropout(ctx, x, 2), TG_EINVAL, "dropout: p = 2 is outside [0, 1]");
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch accepts eps <= 0 (giving inf or nan) and any momentum; the
 * issue makes them errors. */
START_TEST(batch_norm_attrs)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(4, 2));
    tg_tensor *rm = tg_zeros(ctx, TG_F64, TG_SHAPE(2)), *rv = tg_ones(ctx, TG_F64, TG_SHAPE(2));
    EXPECT_FAIL(ctx, tg_batch_norm(ctx, x, NULL, NULL, NULL, NULL, 0.1, 0), TG_EINVAL,
                "batch_norm: eps = 0; it must be positive and finite");
    EXPECT_FAIL(ctx, tg_batch_norm(ctx, x, NULL, NULL, NULL, NULL, 0.1, -1e-5), TG_EINVAL,
                "batch_norm: eps = -1e-05; it must be positive");
    EXPECT_FAIL(ctx, tg_batch_norm(ctx, x, NULL, NULL, NULL, NULL, 0.1, NAN), TG_EINVAL,
                "batch_norm: eps = nan");
    EXPECT_FAIL(ctx, tg_batch_norm(ctx, x, NULL, NULL, rm, rv, 1.0000001, 1e-5), TG_EINVAL,
                "batch_norm: momentum = 1.0000001 is outside [0, 1]");
    EXPECT_FAIL(ctx, tg_batch_norm(ctx, x, NULL, NULL, rm, rv, NAN, 1e-5), TG_EINVAL,
                "batch_norm: momentum = nan is outside [0, 1]");
    EXPECT_FAIL(ctx, tg_batch_norm(ctx, x, NULL, NULL, rm, rv, -0.1, 1e-5), TG_EINVAL,
                "batch_norm: momentum = -0.1 is outside [0, 1]");
    ck_tensor(rm, ((const double[]){0, 0}), 0); /* a refused call writes nothing */
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch: leaky_relu([-1, 1], nan) = [nan, 1]: any slope is accepted. */
START_TEST(leaky_relu_nan_slope)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *y = tg_leaky_relu(ctx, tg_from_f64(ctx, TG_F64, TG_SHAPE(2), (const double[]){-1, 1}), NAN);
    ck_assert_ptr_nonnull(y);
    ck_assert(isnan(tg_get(y, 0)) && tg_get(y, 1) == 1);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(softmax_axis)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(2, 3));
    EXPECT_FAIL(ctx, tg_softmax(ctx, x, 2), TG_EINVAL, "softmax: axis 2 is out of range for 2 dimensions");
    EXPECT_FAIL(ctx, tg_log_softmax(ctx, x, -3), TG_EINVAL, "log_softmax: axis -3 is out of range");
    ck_assert_ptr_nonnull(tg_softmax(ctx, x, -2));
    tg_ctx_free(ctx);
}
END_TEST

/* Newer PyTorch: "all elements of target should be between 0 and 1". */
START_TEST(bce_numbers)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *p = tg_full(ctx, TG_F64, TG_SHAPE(2), 0.5);
    EXPECT_FAIL(ctx, tg_bce(ctx, p, tg_from_f64(ctx, TG_F64, TG_SHAPE(2), (const double[]){1, 1.0000001}),
                            TG_MEAN), TG_EINVAL, "bce: target[1] = 1.0000001 is outside [0, 1]");
    EXPECT_FAIL(ctx, tg_bce(ctx, tg_from_f64(ctx, TG_F64, TG_SHAPE(2), (const double[]){0.5, -1e-9}), p,
                            TG_MEAN), TG_EINVAL, "bce: input[1] = -1e-09 is not a probability in [0, 1]");
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ versions */

static tg_tensor *bn_layer(tg_ctx *ctx, tg_tensor *x, tg_tensor *w, tg_tensor *b, tg_tensor *rm,
                           tg_tensor *rv)
{
    return tg_batch_norm(ctx, x, w, b, rm, rv, TG_BN_MOMENTUM, TG_BN_EPS);
}

/* PyTorch: bn(x) twice in training mode, then backward through the first,
 * succeeds; the running statistics moved twice (versions bumped). */
START_TEST(two_forwards_share_running_stats)
{
    tg_ctx *ctx = tg_ctx_new(2);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w"), *b = tg_param(ctx, TG_F64, TG_SHAPE(2), "b");
    tg_fill(ctx, w, 1.5);
    tg_tensor *rm = tg_buffer(ctx, TG_F64, TG_SHAPE(2), "rm"), *rv = tg_buffer(ctx, TG_F64, TG_SHAPE(2), "rv");
    tg_fill(ctx, rv, 1);
    tg_tensor *x = tg_randn(ctx, TG_F64, TG_SHAPE(4, 2), 0, 1);
    tg_set_requires_grad(ctx, x, true);
    uint64_t v0 = rm->version;
    tg_tensor *y1 = bn_layer(ctx, x, w, b, rm, rv);
    ck_assert_uint_gt(rm->version, v0);
    uint64_t v1 = rv->version;
    tg_tensor *y2 = bn_layer(ctx, tg_mul_scalar(ctx, x, 2), w, b, rm, rv);
    ck_assert_uint_gt(rv->version, v1);
    ck_assert_ptr_nonnull(y2);
    tg_tensor *g = tg_randn(ctx, TG_F64, TG_SHAPE(4, 2), 0, 1);
    ck_assert_int_eq(tg_backward_ex(ctx, y1, g, 0), TG_OK);
    double gw[2] = {tg_get(w->grad, 0), tg_get(w->grad, 1)};
    /* the same gradient as a lone forward */
    tg_zero_grad(ctx);
    x->grad = NULL;
    ck_assert_int_eq(tg_backward_ex(ctx, bn_layer(ctx, x, w, b, rm, rv), g, 0), TG_OK);
    ck_tensor(w->grad, gw, 1e-15);
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch: writing bn.weight between forward and backward raises "one of
 * the variables needed for gradient computation has been modified by an
 * inplace operation"; writing bn.bias does not. */
START_TEST(batch_norm_weight_write)
{
    tg_ctx *ctx = tg_ctx_new(2);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w"), *b = tg_param(ctx, TG_F64, TG_SHAPE(2), "b");
    tg_fill(ctx, w, 1);
    tg_tensor *x = tg_randn(ctx, TG_F64, TG_SHAPE(4, 2), 0, 1);
    tg_tensor *l = tg_sum(ctx, tg_mul(ctx, bn_layer(ctx, x, w, b, NULL, NULL), x));
    tg_fill(ctx, b, 3);
    ck_assert_int_eq(tg_backward_ex(ctx, l, NULL, TG_RETAIN_GRAPH), TG_OK);
    tg_fill(ctx, w, 2);
    ck_assert_int_eq(tg_backward(ctx, l), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "backward: batch_norm (tape index 0) needs its input 1 'w' (2) float64");
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch: in eval mode, writing running_var between forward and backward
 * raises (it is saved); in training mode it does not. */
START_TEST(batch_norm_running_var_write)
{
    tg_ctx *ctx = tg_ctx_new(2);
    tg_tensor *x = tg_randn(ctx, TG_F64, TG_SHAPE(4, 2), 0, 1);
    tg_set_requires_grad(ctx, x, true);
    tg_tensor *rm = tg_buffer(ctx, TG_F64, TG_SHAPE(2), "rm"), *rv = tg_buffer(ctx, TG_F64, TG_SHAPE(2), "rv");
    tg_fill(ctx, rv, 1);
    tg_tensor *y = bn_layer(ctx, x, NULL, NULL, rm, rv);
    tg_fill(ctx, rv, 2);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_mul(ctx, y, y))), TG_OK);
    tg_set_training(ctx, false);
    y = bn_layer(ctx, x, NULL, NULL, rm, rv);
    tg_fill(ctx, rv, 3);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "needs its input 2 'rv' (2) float64");
    tg_ctx_free(ctx);
}
END_TEST

/* Writes to what a vjp never reads are allowed (PyTorch allows writing the
 * logits of cross_entropy, the input of sigmoid, relu and dropout);
 * writes to what it reads are not (mse's target, sigmoid's output).
 * cross_entropy and nll_loss keep their own copy of the targets, so
 * writing an int64 target is allowed too (PyTorch refuses that one). */
START_TEST(unused_values_may_change)
{
    tg_ctx *ctx = tg_ctx_new(2);
    tg_tensor *z = tg_randn(ctx, TG_F64, TG_SHAPE(3, 4), 0, 1);
    tg_set_requires_grad(ctx, z, true);
    tg_tensor *t = tg_from_data(ctx, TG_I64, TG_SHAPE(3), (const int64_t[]){0, 1, 2});
    tg_tensor *l = tg_add(ctx, tg_cross_entropy(ctx, z, t, TG_MEAN), tg_nll_loss(ctx, z, t, TG_SUM));
    l = tg_add(ctx, l, tg_sum(ctx, tg_add(ctx, tg_sigmoid(ctx, z), tg_relu(ctx, z))));
    l = tg_add(ctx, l, tg_sum(ctx, tg_dropout(ctx, z, 0.5)));
    tg_fill(ctx, z, 7);
    tg_fill(ctx, t, 3);
    ck_assert_int_eq(tg_backward(ctx, l), TG_OK);

    tg_tensor *y = tg_randn(ctx, TG_F64, TG_SHAPE(3, 4), 0, 1);
    l = tg_mse(ctx, z, y, TG_MEAN);
    tg_fill(ctx, y, 0);
    ck_assert_int_eq(tg_backward(ctx, l), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "backward: mse");
    tg_clear_error(ctx);
    tg_tensor *s = tg_sigmoid(ctx, z);
    tg_fill(ctx, s, 0);
    ck_assert_int_eq(tg_backward_ex(ctx, s, tg_ones(ctx, TG_F64, TG_SHAPE(3, 4)), 0), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "backward: sigmoid");
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("edge_nn");
    TCase *tc = tcase_create("nan");
    tcase_add_test(tc, relu_passes_nan);
    tcase_add_test(tc, bce_with_logits_at_infinity);
    tcase_add_test(tc, softmax_nan_and_inf_rows);
    tcase_add_test(tc, losses_with_nan);
    suite_add_tcase(s, tc);
    tc = tcase_create("int64_targets");
    tcase_add_test(tc, int64_indices_accepted);
    tcase_add_test(tc, float_indices_refused);
    tcase_add_test(tc, index_out_of_range);
    tcase_add_test(tc, probability_target_gradient);
    suite_add_tcase(s, tc);
    tc = tcase_create("nll");
    tcase_add_test(tc, nll_values);
    tcase_add_test(tc, nll_of_log_softmax_is_cross_entropy);
    tcase_add_test(tc, nll_errors);
    tcase_add_test(tc, nll_registered);
    suite_add_tcase(s, tc);
    tc = tcase_create("accumulation");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, mse_float32_sum);
    tcase_add_test(tc, softmax_float32_sum);
    tcase_add_test(tc, cross_entropy_float32_sum);
    tcase_add_test(tc, batch_norm_float32_sums);
    suite_add_tcase(s, tc);
    tc = tcase_create("empty");
    tcase_add_test(tc, empty_pair_losses);
    tcase_add_test(tc, empty_class_losses);
    tcase_add_test(tc, empty_softmax_and_elementwise);
    tcase_add_test(tc, empty_batch_norm);
    suite_add_tcase(s, tc);
    tc = tcase_create("attributes");
    tcase_add_test(tc, dropout_p);
    tcase_add_test(tc, batch_norm_attrs);
    tcase_add_test(tc, leaky_relu_nan_slope);
    tcase_add_test(tc, softmax_axis);
    tcase_add_test(tc, bce_numbers);
    suite_add_tcase(s, tc);
    tc = tcase_create("versions");
    tcase_add_test(tc, two_forwards_share_running_stats);
    tcase_add_test(tc, batch_norm_weight_write);
    tcase_add_test(tc, batch_norm_running_var_write);
    tcase_add_test(tc, unused_values_may_change);
    suite_add_tcase(s, tc);
    return s;
}
