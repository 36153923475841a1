/*
 * test_golden.c: the course notes' hand-worked examples (../shared/golden),
 * reproduced with the basic ops. Section 2: the 2-2-2 sigmoid MLP, one SGD
 * step, to 1e-12 relative in float64. sigmoid(z) = (1 + exp(-z))^-1 stands in
 * until the sigmoid op exists.
 */
#include "testutil.h"

static tg_tensor *sigmoid(tg_ctx *ctx, tg_tensor *z)
{
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
    tg_tensor *d = tg_sub(ctx, *a2, t);
    return tg_mul_scalar(ctx, tg_sum(ctx, tg_mul(ctx, d, d)), 0.5);
}

START_TEST(mlp_sgd_step)
{
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

/* Section 4: out = floor((N + 2P - F) / S) + 1, through pad and slice with a step. */
START_TEST(window_output_sizes)
{
    static const int64_t cases[][4] = {{224, 5, 1, 220}, {216, 5, 2, 106}, {98, 5, 2, 47},
                                       {39, 5, 2, 18}};
    tg_ctx *ctx = tg_ctx_new(1);
    for (int k = 0; k < 4; k++) {
        int64_t n = cases[k][0], f = cases[k][1], s = cases[k][2];
        tg_tensor *x = tg_zeros(ctx, TG_F32, TG_SHAPE(1, n));
        /* window starts are 0, S, 2S, ... while start + F <= N */
        tg_tensor *starts = tg_slice(ctx, x, 1, 0, n - f + 1, s);
        ck_assert_int_eq(starts->shape[1], cases[k][3]);
    }
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("notes");
    tcase_add_test(tc, mlp_sgd_step);
    tcase_add_test(tc, window_output_sizes);
    suite_add_tcase(s, tc);
    return s;
}
