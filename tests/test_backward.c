/* test_backward.c: the tape and the reverse sweep. */
#include <string.h>

#include "testutil.h"

/* ---- an identity op that counts its vjp calls */
static int vjp_calls;

static tg_tensor *count_forward(tg_ctx *ctx, tg_node *node)
{
    return tg_copy(ctx, node->in[0]);
}

static tg_status count_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    vjp_calls++;
    for (int64_t i = 0; i < gout->numel; i++)
        tg_set(gin[0], i, tg_get(gin[0], i) + tg_get(gout, i));
    return TG_OK;
}

static const tg_op count_op = {.name = "test_count", .min_in = 1, .max_in = 1,
                               .forward = count_forward, .vjp = count_vjp};

static tg_tensor *counted(tg_ctx *ctx, tg_tensor *x)
{
    if (!tg_op_find("test_count"))
        tg_op_register(ctx, &count_op);
    return tg_apply(ctx, &count_op, &x, 1, NULL);
}

static tg_tensor *vec(tg_ctx *ctx, const char *name, const double *v, int64_t n)
{
    tg_tensor *p = tg_param(ctx, TG_F64, 1, &n, name);
    tg_assign_f64(ctx, p, v);
    return p;
}

START_TEST(fan_out)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = vec(ctx, "x", (const double[]){1, 2, -3}, 3);
    /* y = x*x + x, used twice more: L = sum(y) + sum(y * 2) = 3 sum(x^2 + x) */
    tg_tensor *y = tg_add(ctx, tg_mul(ctx, x, x), x);
    tg_tensor *loss = tg_add(ctx, tg_sum(ctx, y), tg_sum(ctx, tg_mul_scalar(ctx, y, 2)));
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    ck_tensor(x->grad, ((const double[]){9, 15, -15}), 0); /* 3 (2x + 1) */
    ck_assert_ptr_null(y->grad); /* intermediate gradients are released */
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(shared_parameters)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2, 2), "w");
    tg_assign_f64(ctx, w, (const double[]){1, 2, 3, 4});
    tg_tensor *x = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 2), (const double[]){1, 1});
    /* two layers with the same weight: L = sum(W (W x)) in linear's layout */
    tg_tensor *h = tg_linear(ctx, x, w, NULL);
    tg_tensor *loss = tg_sum(ctx, tg_linear(ctx, h, w, NULL));
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    /* h = W x = (3, 7); L = 1^T W h; dL/dW = 1 h^T + (W^T 1) x^T = [[3,7],[3,7]] + [[4,4],[6,6]] */
    ck_tensor(w->grad, ((const double[]){7, 11, 9, 13}), 1e-15);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(accumulate_until_zeroed)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = vec(ctx, "w", (const double[]){0.5, 2}, 2);
    for (int k = 1; k <= 3; k++) {
        ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_mul(ctx, w, w))), TG_OK);
        ck_tensor(w->grad, ((const double[]){1.0 * k, 4.0 * k}), 0);
        tg_reset(ctx); /* parameter gradients survive the reset */
    }
    tg_zero_grad(ctx);
    ck_tensor(w->grad, ((const double[]){0, 0}), 0);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(unreachable_nodes_are_skipped)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = vec(ctx, "w", (const double[]){1, 2}, 2);
    tg_tensor *side = tg_exp(ctx, counted(ctx, w)); /* recorded, but not on the loss's path */
    tg_tensor *loss = tg_sum(ctx, counted(ctx, tg_mul_scalar(ctx, w, 3)));
    ck_assert_ptr_nonnull(side);
    vjp_calls = 0;
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    ck_assert_int_eq(vjp_calls, 1);
    ck_tensor(w->grad, ((const double[]){3, 3}), 0);
    ck_assert(!side->node->consumed); /* never visited */
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(second_backward_needs_retain)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = vec(ctx, "w", (const double[]){1, 2}, 2);
    tg_tensor *loss = tg_sum(ctx, tg_exp(ctx, w));
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "consumed by an earlier backward");
    tg_clear_error(ctx);
    tg_zero_grad(ctx);
    tg_tensor *loss2 = tg_sum(ctx, tg_exp(ctx, w));
    ck_assert_int_eq(tg_backward_ex(ctx, loss2, NULL, TG_RETAIN_GRAPH), TG_OK);
    ck_assert_int_eq(tg_backward(ctx, loss2), TG_OK);
    ck_tensor(w->grad, ((const double[]){2 * exp(1.0), 2 * exp(2.0)}), 1e-15);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(explicit_output_gradient)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_from_f64(ctx, TG_F64, TG_SHAPE(3), (const double[]){1, 2, 3});
    ck_assert_int_eq(tg_set_requires_grad(ctx, x, true), TG_OK);
    tg_tensor *y = tg_mul_scalar(ctx, tg_mul(ctx, x, x), 0.5);
    ck_assert_int_eq(tg_backward(ctx, y), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "a gradient is implied only for one element");
    tg_clear_error(ctx);
    tg_tensor *bad = tg_ones(ctx, TG_F64, TG_SHAPE(2));
    ck_assert_int_eq(tg_backward_ex(ctx, y, bad, 0), TG_ESHAPE);
    ck_error(ctx, TG_ESHAPE, "gout is float64 (2) but the output is float64 (3)");
    tg_clear_error(ctx);
    tg_tensor *g = tg_from_f64(ctx, TG_F64, TG_SHAPE(3), (const double[]){1, 10, 100});
    ck_assert_int_eq(tg_backward_ex(ctx, y, g, TG_KEEP_GRADS), TG_OK);
    ck_tensor(x->grad, ((const double[]){1, 20, 300}), 0); /* leaves keep theirs */
    ck_assert_ptr_nonnull(y->grad);                        /* kept on request */
    ck_tensor(y->grad, ((const double[]){1, 10, 100}), 0);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(no_grad_errors)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(2));
    tg_tensor *loss = tg_sum(ctx, tg_exp(ctx, x));
    ck_assert_int_eq(tg_backward(ctx, loss), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "does not require grad");
    tg_clear_error(ctx);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_set_grad_enabled(ctx, false);
    loss = tg_sum(ctx, tg_exp(ctx, w));
    tg_set_grad_enabled(ctx, true);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "grad mode was off");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_backward(ctx, NULL), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "backward: the output is NULL");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_backward(NULL, w), TG_EINVAL);
    /* a parameter as its own loss: the seed */
    tg_tensor *s = tg_param(ctx, TG_F64, 0, NULL, "s");
    ck_assert_int_eq(tg_backward(ctx, s), TG_OK);
    ck_assert(tg_get(s->grad, 0) == 1.0);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(float32_backward)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F32, TG_SHAPE(2, 3), "w");
    tg_assign_f64(ctx, w, (const double[]){1, 2, 3, 4, 5, 6});
    tg_tensor *x = tg_from_f64(ctx, TG_F32, TG_SHAPE(3, 1), (const double[]){1, 0, -1});
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_matmul(ctx, w, x))), TG_OK);
    ck_assert_int_eq(w->grad->dtype, TG_F32);
    ck_tensor(w->grad, ((const double[]){1, 0, -1, 1, 0, -1}), 0);
    tg_ctx_free(ctx);
}
END_TEST

/* The tape has no fixed size: 100,000 nodes in one chain. */
START_TEST(long_tape)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = vec(ctx, "w", (const double[]){1}, 1);
    tg_tensor *y = w;
    for (int i = 0; i < 50000; i++)
        y = tg_mul_scalar(ctx, tg_add_scalar(ctx, y, 1), 1);
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    ck_assert_int_eq(st.tape_len, 100000);
    ck_assert(tg_get(y, 0) == 50001);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_OK);
    ck_assert(tg_get(w->grad, 0) == 1);
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("backward");
    TCase *tc = tcase_create("graph");
    tcase_add_test(tc, fan_out);
    tcase_add_test(tc, shared_parameters);
    tcase_add_test(tc, accumulate_until_zeroed);
    tcase_add_test(tc, unreachable_nodes_are_skipped);
    tcase_add_test(tc, float32_backward);
    tcase_add_test(tc, long_tape);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, second_backward_needs_retain);
    tcase_add_test(tc, explicit_output_gradient);
    tcase_add_test(tc, no_grad_errors);
    suite_add_tcase(s, tc);
    return s;
}
