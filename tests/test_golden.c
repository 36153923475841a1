/*
 * test_golden.c: the course notes' hand-worked examples (golden/README.md
 * beside the project), by section: 1 the conv + global average pooling
 * example, exactly; 2 the 2-2-2 sigmoid MLP step to 1e-12 relative (once
 * with basic ops only, once with the sigmoid and mse ops); 3 the softmax and
 * cross-entropy identities; 4 window output sizes; 5 the parameter and
 * activation counts of the two 224 x 224 networks; 6 the other facts.
 */
#include <string.h>

#include "testutil.h"

/* sigmoid from basic ops, or the sigmoid op */
static bool use_sigmoid_op;

static tg_tensor *sigmoid(tg_ctx *ctx, tg_tensor *z)
{
    if (use_sigmoid_op)
        return tg_sigmoid(ctx, z);
    return tg_pow(ctx, tg_add_scalar(ctx, tg_exp(ctx, tg_neg(ctx, z)), 1), -1);
}

static tg_tensor *param(tg_ctx *ctx, const char *name, int ndim, const int64_t *shape,
                        const double *v)
{
    tg_tensor *p = tg_param(ctx, TG_F64, ndim, shape, name);
    tg_assign_f64(ctx, p, v);
    return p;
}

/* row-vector convention: z1 = i W1 + b1, a1 = s(z1), z2 = a1 W2 + b2, a2 = s(z2) */
static tg_tensor *forward(tg_ctx *ctx, tg_tensor *const *p, tg_tensor **a1, tg_tensor **a2)
{
    tg_tensor *i = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 2), (const double[]){0.05, 0.15});
    tg_tensor *t = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 2), (const double[]){0.1, 0.9});
    *a1 = sigmoid(ctx, tg_add(ctx, tg_matmul(ctx, i, p[0]), p[1]));
    *a2 = sigmoid(ctx, tg_add(ctx, tg_matmul(ctx, *a1, p[2]), p[3]));
    if (use_sigmoid_op)
        return tg_mul_scalar(ctx, tg_mse(ctx, *a2, t, TG_SUM), 0.5);
    tg_tensor *d = tg_sub(ctx, *a2, t);
    return tg_mul_scalar(ctx, tg_sum(ctx, tg_mul(ctx, d, d)), 0.5);
}

START_TEST(mlp_sgd_step)
{
    use_sigmoid_op = _i == 1;
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *p[4] = {
        param(ctx, "W1", TG_SHAPE(2, 2), (const double[]){0.1, 0.2, 0.15, 0.25}),
        param(ctx, "b1", TG_SHAPE(2), (const double[]){0.3, 0.3}),
        param(ctx, "W2", TG_SHAPE(2, 2), (const double[]){0.3, 0.4, 0.35, 0.45}),
        param(ctx, "b2", TG_SHAPE(2), (const double[]){0.5, 0.5}),
    };
    tg_tensor *a1, *a2;
    tg_tensor *E = forward(ctx, p, &a1, &a2);
    ck_tensor(a1, ((const double[]){0.5811509642893937, 0.5860112044388707}), 1e-12);
    ck_tensor(a2, ((const double[]){0.7067080710468736, 0.7303039883089828}), 1e-12);
    ck_close(tg_get(E, 0), 0.19844570992862806, 1e-12);
    ck_assert_int_eq(tg_backward(ctx, E), TG_OK);
    ck_tensor(p[0]->grad, ((const double[]){0.00029643874510714634, 0.00035144801265841194,
                                            0.0008893162353214388, 0.0010543440379752358}), 1e-12);
    ck_tensor(p[1]->grad, ((const double[]){0.005928774902142926, 0.007028960253168239}), 1e-12);
    ck_tensor(p[2]->grad, ((const double[]){0.07308174326330374, -0.019424005599663167,
                                            0.07369293526783977, -0.019586451053048213}), 1e-12);
    ck_tensor(p[3]->grad, ((const double[]){0.12575345780018612, -0.03342333884520694}), 1e-12);
    for (int k = 0; k < 4; k++)
        for (int64_t j = 0; j < p[k]->numel; j++)
            tg_set(p[k], j, tg_get(p[k], j) - 0.4 * tg_get(p[k]->grad, j));
    ck_tensor(p[0], ((const double[]){0.09988142450195715, 0.19985942079493665,
                                      0.14964427350587142, 0.2495782623848099}), 1e-12);
    ck_tensor(p[1], ((const double[]){0.2976284900391428, 0.2971884158987327}), 1e-12);
    ck_tensor(p[2], ((const double[]){0.27076730269467847, 0.4077696022398653,
                                      0.32052282589286407, 0.4578345804212193}), 1e-12);
    /* b2: the notes print 0.4475; the corrected value is 0.4497 */
    ck_tensor(p[3], ((const double[]){0.4496986168799255, 0.5133693355380827}), 1e-12);
    tg_reset(ctx);
    tg_zero_grad(ctx);
    E = forward(ctx, p, &a1, &a2);
    ck_close(tg_get(E, 0), 0.18701976362572423, 1e-12);
    tg_ctx_free(ctx);
}
END_TEST

/* Section 1: O = X (*) F, Z = global average of O, dZ/dF and dZ/dX, exactly. */
START_TEST(conv_global_average)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 1, 3, 3),
                               (const double[]){2, 3, 4, 3, 1, 5, 4, -1, -2});
    tg_tensor *f = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 1, 2, 2), (const double[]){0, 3, 1, -2});
    tg_set_requires_grad(ctx, x, true);
    tg_set_requires_grad(ctx, f, true);
    tg_tensor *o = tg_conv2d(ctx, x, f, NULL, 1, 0, 1, 1);
    ck_tensor(o, ((const double[]){10, 3, 9, 18}), 0);
    tg_tensor *z = tg_global_avg_pool(ctx, o);
    ck_assert(z->ndim == 2 && z->shape[0] == 1 && z->shape[1] == 1);
    ck_assert(tg_get(z, 0) == 10);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, z)), TG_OK);
    ck_tensor(f->grad, ((const double[]){9 / 4., 13 / 4., 7 / 4., 3 / 4.}), 0);
    ck_tensor(x->grad, ((const double[]){0, 3 / 4., 3 / 4., 1 / 4., 1 / 2., 1 / 4., 1 / 4., -1 / 4., -1 / 2.}), 0);
    tg_ctx_free(ctx);
}
END_TEST

/* Section 3: ds_i/dz_i = s_i (1 - s_i), ds_j/dz_i = -s_i s_j. */
START_TEST(softmax_jacobian)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *z = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 4), (const double[]){0.5, -1, 2, 0.25});
    tg_set_requires_grad(ctx, z, true);
    tg_tensor *s = tg_softmax(ctx, z, 1);
    for (int i = 0; i < 4; i++) {
        tg_tensor *e = tg_zeros(ctx, TG_F64, TG_SHAPE(1, 4));
        tg_set(e, i, 1);
        tg_tensor_zero_grad(z);
        ck_assert_int_eq(tg_backward_ex(ctx, s, e, TG_RETAIN_GRAPH), TG_OK);
        for (int j = 0; j < 4; j++) { /* row i of the Jacobian: ds_i / dz_j */
            double si = tg_get(s, i), sj = tg_get(s, j);
            double want = i == j ? si * (1 - si) : -si * sj;
            ck_assert_msg(fabs(tg_get(z->grad, j) - want) <= 1e-16, "ds_%d/dz_%d = %.17g, want %.17g",
                          i, j, tg_get(z->grad, j), want);
        }
    }
    tg_ctx_free(ctx);
}
END_TEST

/* Section 3: softmax(z + c) = softmax(z) exactly when z + c is exact. */
START_TEST(softmax_shift_invariance)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const double z[] = {0.25, -1.5, 3, 2, -0.75};
    double zc[5];
    for (int i = 0; i < 5; i++)
        zc[i] = z[i] + 1024;
    for (int dt = TG_F32; dt <= TG_F64; dt++) {
        tg_tensor *a = tg_softmax(ctx, tg_from_f64(ctx, (tg_dtype)dt, TG_SHAPE(5), z), 0);
        tg_tensor *b = tg_softmax(ctx, tg_from_f64(ctx, (tg_dtype)dt, TG_SHAPE(5), zc), 0);
        ck_assert_mem_eq(a->data, b->data, 5 * tg_dtype_size((tg_dtype)dt));
    }
    tg_ctx_free(ctx);
}
END_TEST

/* Section 3: the gradient of mean cross-entropy is (softmax - onehot) / N, to the bit. */
START_TEST(cross_entropy_gradient)
{
    tg_ctx *ctx = tg_ctx_new(4);
    tg_tensor *z = tg_randn(ctx, TG_F64, TG_SHAPE(3, 4), 0, 2);
    tg_set_requires_grad(ctx, z, true);
    const int64_t cls[] = {2, 0, 3};
    tg_tensor *t = tg_from_data(ctx, TG_I64, TG_SHAPE(3), cls);
    ck_assert_int_eq(tg_backward(ctx, tg_cross_entropy(ctx, z, t, TG_MEAN)), TG_OK);
    tg_tensor *s = tg_softmax(ctx, z, 1);
    for (int i = 0; i < 3; i++)
        for (int c = 0; c < 4; c++) {
            double want = (tg_get(s, i * 4 + c) - (c == cls[i] ? 1.0 : 0.0)) / 3;
            ck_assert_msg(tg_get(z->grad, i * 4 + c) == want, "[%d][%d] %.17g vs %.17g", i, c,
                          tg_get(z->grad, i * 4 + c), want);
        }
    /* and L is the negative log-likelihood of the categorical model */
    tg_tensor *ls = tg_log_softmax(ctx, z, 1);
    double nll = -(tg_get(ls, 2) + tg_get(ls, 4) + tg_get(ls, 11)) / 3;
    ck_close(tg_get(tg_cross_entropy(ctx, z, t, TG_MEAN), 0), nll, 1e-15);
    tg_ctx_free(ctx);
}
END_TEST

/* Section 4: out = floor((N + 2P - F) / S) + 1, from the conv and pool ops themselves. */
START_TEST(window_output_sizes)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_zeros(ctx, TG_F32, TG_SHAPE(1, 1, 224, 224));
    tg_tensor *w = tg_zeros(ctx, TG_F32, TG_SHAPE(1, 1, 5, 5));
    ck_assert_int_eq(tg_conv2d(ctx, x, w, NULL, 1, 0, 1, 1)->shape[3], 220);
    static const int64_t pools[][2] = {{216, 106}, {98, 47}, {39, 18}};
    for (int k = 0; k < 3; k++) {
        tg_tensor *p = tg_zeros(ctx, TG_F32, TG_SHAPE(1, 1, pools[k][0], pools[k][0]));
        tg_tensor *y = tg_max_pool2d_ex(ctx, p, 5, 2, 0);
        ck_assert_int_eq(y->shape[2], pools[k][1]);
        ck_assert_int_eq(tg_conv2d(ctx, p, w, NULL, 2, 0, 1, 1)->shape[3], pools[k][1]);
    }
    tg_ctx_free(ctx);
}
END_TEST

/* Section 5: the two 224 x 224 networks. Spatial sizes come from running the
 * layers with one channel; channels come from the notes. */
START_TEST(parameter_counts)
{
    static const int64_t chans[2][6] = {{16, 32, 32, 64, 64, 128}, {128, 64, 64, 32, 32, 16}};
    static const int64_t want_params[2] = {42968388, 5812276};
    static const int64_t want_acts[2] = {4121700, 11084148};
    tg_ctx *ctx = tg_ctx_new(1);
    for (int net = 0; net < 2; net++) {
        tg_tensor *x = tg_zeros(ctx, TG_F32, TG_SHAPE(1, 1, 224, 224));
        tg_tensor *w = tg_zeros(ctx, TG_F32, TG_SHAPE(1, 1, 5, 5));
        int64_t params = 0, acts = 224 * 224, in_c = 1;
        for (int block = 0; block < 3; block++) {
            for (int j = 0; j < 2; j++) {
                int64_t k = chans[net][2 * block + j];
                x = tg_conv2d(ctx, x, w, NULL, 1, 0, 1, 1);
                params += k * in_c * 25 + k;
                acts += k * x->shape[2] * x->shape[3];
                in_c = k;
            }
            x = tg_max_pool2d_ex(ctx, x, 5, 2, 0);
            acts += in_c * x->shape[2] * x->shape[3];
        }
        int64_t flat = in_c * x->shape[2] * x->shape[3];
        ck_assert_int_eq(flat, net == 0 ? 41472 : 5184);
        params += (flat + 1) * 1024 + (1024 + 1) * 100;
        acts += 1024 + 100;
        ck_assert_int_eq(params, want_params[net]);
        ck_assert_int_eq(acts, want_acts[net]);
        tg_reset(ctx);
    }
    tg_ctx_free(ctx);
}
END_TEST

/* Section 6: max pooling's gradient reaches the arg-max of each window only. */
START_TEST(max_pool_routes_to_argmax)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 1, 4, 4),
                               (const double[]){1, 5, 2, 0, 3, 4, 8, 7, 0, 1, 6, 2, 9, 3, 1, 1});
    tg_set_requires_grad(ctx, x, true);
    tg_tensor *y = tg_max_pool2d(ctx, x, 2);
    ck_tensor(y, ((const double[]){5, 8, 9, 6}), 0);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_OK);
    ck_tensor(x->grad, ((const double[]){0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0}), 0);
    tg_ctx_free(ctx);
}
END_TEST

/* Section 6: equal initial weights keep hidden units identical under gradient descent. */
START_TEST(symmetry_persists)
{
    tg_ctx *ctx = tg_ctx_new(3);
    tg_tensor *w1 = tg_param(ctx, TG_F64, TG_SHAPE(3, 4), "w1");
    tg_tensor *w2 = tg_param(ctx, TG_F64, TG_SHAPE(2, 3), "w2");
    tg_fill(ctx, w1, 0.3);
    tg_fill(ctx, w2, -0.2);
    for (int step = 0; step < 10; step++) {
        tg_tensor *x = tg_randn(ctx, TG_F64, TG_SHAPE(5, 4), 0, 1);
        tg_tensor *t = tg_randn(ctx, TG_F64, TG_SHAPE(5, 2), 0, 1);
        tg_tensor *y = tg_linear(ctx, tg_tanh(ctx, tg_linear(ctx, x, w1, NULL)), w2, NULL);
        ck_assert_int_eq(tg_backward(ctx, tg_mse(ctx, y, t, TG_MEAN)), TG_OK);
        for (tg_tensor *p = tg_param_next(ctx, NULL); p; p = tg_param_next(ctx, p))
            for (int64_t i = 0; i < p->numel; i++)
                tg_set(p, i, tg_get(p, i) - 0.5 * tg_get(p->grad, i));
        tg_zero_grad(ctx);
        tg_reset(ctx);
    }
    for (int h = 1; h < 3; h++) /* the three hidden units' incoming weights agree */
        for (int i = 0; i < 4; i++)
            ck_assert(tg_get(w1, h * 4 + i) == tg_get(w1, i));
    ck_assert(tg_get(w1, 0) != 0.3); /* and they did move */
    tg_ctx_free(ctx);
}
END_TEST

/* Section 6: for a linear unit with squared error and Bernoulli(p_i) input
 * dropout without rescaling, E[dE_D/dw_i] = dE_ENS/dw_i + w_i p_i (1 - p_i) x_i^2.
 * The expectation is exact: a sum over all 2^3 masks. */
START_TEST(dropout_adds_l2_penalty)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const double xv[] = {0.7, -1.2, 2.0}, wv[] = {0.5, 0.3, -0.4}, p[] = {0.8, 0.5, 0.3}, t = 1.5;
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(3), "w");
    tg_assign_f64(ctx, w, wv);
    tg_tensor *x = tg_from_f64(ctx, TG_F64, TG_SHAPE(3), xv);
    tg_tensor *target = tg_full(ctx, TG_F64, 0, NULL, t);
    double expected[3] = {0, 0, 0};
    for (int mask = 0; mask < 8; mask++) {
        double m[3], prob = 1;
        for (int i = 0; i < 3; i++) {
            m[i] = (mask >> i) & 1;
            prob *= m[i] ? p[i] : 1 - p[i];
        }
        tg_tensor *xm = tg_mul(ctx, x, tg_from_f64(ctx, TG_F64, TG_SHAPE(3), m));
        tg_tensor *y = tg_sum(ctx, tg_mul(ctx, w, xm));
        tg_zero_grad(ctx);
        ck_assert_int_eq(tg_backward(ctx, tg_mul_scalar(ctx, tg_mse(ctx, y, target, TG_SUM), 0.5)), TG_OK);
        for (int i = 0; i < 3; i++)
            expected[i] += prob * tg_get(w->grad, i);
    }
    tg_tensor *y_ens = tg_sum(ctx, tg_mul(ctx, w, tg_mul(ctx, x, tg_from_f64(ctx, TG_F64, TG_SHAPE(3), p))));
    tg_zero_grad(ctx);
    ck_assert_int_eq(tg_backward(ctx, tg_mul_scalar(ctx, tg_mse(ctx, y_ens, target, TG_SUM), 0.5)), TG_OK);
    for (int i = 0; i < 3; i++)
        ck_close(expected[i], tg_get(w->grad, i) + wv[i] * p[i] * (1 - p[i]) * xv[i] * xv[i], 1e-14);
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("notes");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, mlp_sgd_step, 0, 2); /* basic ops, then the sigmoid and mse ops */
    tcase_add_test(tc, conv_global_average);
    tcase_add_test(tc, softmax_jacobian);
    tcase_add_test(tc, softmax_shift_invariance);
    tcase_add_test(tc, cross_entropy_gradient);
    tcase_add_test(tc, window_output_sizes);
    tcase_add_test(tc, parameter_counts);
    tcase_add_test(tc, max_pool_routes_to_argmax);
    tcase_add_test(tc, symmetry_persists);
    tcase_add_test(tc, dropout_adds_l2_penalty);
    suite_add_tcase(s, tc);
    return s;
}
