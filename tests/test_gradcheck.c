/* test_gradcheck.c: the checker itself must catch wrong gradients. */
#include <string.h>

#include "testutil.h"

/* y = x^2 with a vjp that is wrong for one element only (index 4) */
static tg_tensor *sq_forward(tg_ctx *ctx, tg_node *node)
{
    const tg_tensor *x = node->in[0];
    tg_tensor *y = tg_empty(ctx, x->dtype, x->ndim, x->shape);
    for (int64_t i = 0; y && i < x->numel; i++)
        tg_set(y, i, tg_get(x, i) * tg_get(x, i));
    return y;
}

static tg_status off_by_one_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                                tg_tensor *const *gin)
{
    const tg_tensor *x = node->in[0];
    for (int64_t i = 0; i < x->numel; i++)
        tg_set(gin[0], i, tg_get(gin[0], i) + (i == 4 ? 2.1 : 2.0) * tg_get(x, i) * tg_get(gout, i));
    return TG_OK;
}

static int sq_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    if (index > 0)
        return 0;
    s->n_in = 1;
    s->in[0] = tg_rand(ctx, TG_F64, TG_SHAPE(2, 3), 0.5, 1.5);
    s->in[0]->requires_grad = true;
    snprintf(s->desc, sizeof s->desc, "2x3");
    return 1;
}

static const tg_op broken_op = {.name = "test_broken_square", .min_in = 1, .max_in = 1,
                                .forward = sq_forward, .vjp = off_by_one_vjp, .sample = sq_sample};

START_TEST(catches_a_wrong_vjp)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_gradcheck_result r;
    ck_assert_int_eq(tg_gradcheck_op(ctx, &broken_op, NULL, &r), TG_OK);
    ck_assert(!r.passed);
    ck_assert_int_eq(r.fail_input, 0);
    ck_assert_int_eq(r.fail_index, 4);
    ck_assert(fabs(r.analytic / r.numeric - 1.05) < 1e-6);
    ck_assert_int_eq(r.fail_output, 4); /* the Jacobian is diagonal */
    ck_assert_msg(strstr(r.msg, "case 0 (2x3), input 0, element 4, output 4") != NULL, "%s", r.msg);
    ck_assert_int_eq(r.checked, 36); /* the whole 6 x 6 Jacobian */
    tg_ctx_free(ctx);
}
END_TEST

/* f(x, w) = sum over rows of exp(x W^T) / (1 + x^2), with a constant third input */
static tg_tensor *user_fn(tg_ctx *ctx, tg_tensor *const *in, int n, void *ud)
{
    (void)n;
    (void)ud;
    tg_tensor *h = tg_exp(ctx, tg_linear(ctx, in[0], in[1], in[2]));
    tg_tensor *d = tg_add_scalar(ctx, tg_mul(ctx, in[0], in[0]), 1);
    return tg_concat(ctx, (tg_tensor *[]){h, tg_div(ctx, in[0], d)}, 2, 1);
}

START_TEST(user_function)
{
    tg_ctx *ctx = tg_ctx_new(2);
    tg_tensor *in[3] = {tg_randn(ctx, TG_F64, TG_SHAPE(4, 3), 0, 1),
                        tg_param(ctx, TG_F64, TG_SHAPE(2, 3), "w"),
                        tg_randn(ctx, TG_F64, TG_SHAPE(2), 0, 1)};
    tg_set_requires_grad(ctx, in[0], true);
    tg_assign(ctx, in[1], tg_randn(ctx, TG_F64, TG_SHAPE(2, 3), 0, 0.5));
    /* the parameter's gradient survives the check */
    tg_tensor *loss = tg_sum(ctx, tg_mul(ctx, in[1], in[1]));
    tg_backward(ctx, loss);
    double before = tg_get(in[1]->grad, 1);
    tg_gradcheck_result r;
    ck_assert_int_eq(tg_gradcheck(ctx, user_fn, NULL, in, 3, NULL, &r), TG_OK);
    ck_assert_msg(r.passed, "%s", r.msg);
    ck_assert_int_eq(r.checked, 20 * (12 + 6)); /* outputs x checked inputs */
    ck_assert(r.max_abs_err < 1e-7);
    ck_assert(tg_get(in[1]->grad, 1) == before);
    tg_ctx_free(ctx);
}
END_TEST

static tg_tensor *apply_broken(tg_ctx *ctx, tg_tensor *const *in, int n, void *ud)
{
    return tg_apply(ctx, &broken_op, in, n, NULL);
}

/* Past 2^22 Jacobian entries the check projects on a random v: one entry per input element. */
START_TEST(large_jacobian_is_projected)
{
    tg_ctx *ctx = tg_ctx_new(3);
    tg_tensor *x = tg_rand(ctx, TG_F64, TG_SHAPE(2100), 0.5, 1.5);
    tg_set_requires_grad(ctx, x, true);
    tg_gradcheck_result r;
    ck_assert_int_eq(tg_gradcheck(ctx, apply_broken, NULL, &x, 1, NULL, &r), TG_OK);
    ck_assert(!r.passed);
    ck_assert_int_eq(r.checked, 2100);
    ck_assert_int_eq(r.fail_index, 4);
    ck_assert_int_eq(r.fail_output, -1);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(needs_float64)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_param(ctx, TG_F32, TG_SHAPE(3), "x");
    tg_gradcheck_result r;
    ck_assert_int_eq(tg_gradcheck(ctx, user_fn, NULL, &x, 1, NULL, &r), TG_EDTYPE);
    ck_error(ctx, TG_EDTYPE, "gradcheck: input 0 is float32; gradcheck needs float64");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_gradcheck_op(ctx, &broken_op, NULL, NULL), TG_EINVAL);
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("gradcheck");
    TCase *tc = tcase_create("gradcheck");
    tcase_add_test(tc, catches_a_wrong_vjp);
    tcase_add_test(tc, user_function);
    tcase_add_test(tc, needs_float64);
    tcase_add_test(tc, large_jacobian_is_projected);
    suite_add_tcase(s, tc);
    return s;
}
