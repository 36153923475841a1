/* test_ops.c: forward values and vjps of the basic ops against hand-computed values. */
#include <string.h>

#include "testutil.h"

static tg_tensor *leaf(tg_ctx *ctx, int ndim, const int64_t *shape, const double *v)
{
    tg_tensor *t = tg_from_f64(ctx, TG_F64, ndim, shape, v);
    tg_set_requires_grad(ctx, t, true);
    return t;
}

START_TEST(elementwise_values)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *a = tg_from_f64(ctx, TG_F32, TG_SHAPE(2, 2), (const double[]){1, 2, 3, 4});
    tg_tensor *b = tg_from_f64(ctx, TG_F32, TG_SHAPE(2), (const double[]){10, 20});
    ck_tensor(tg_add(ctx, a, b), ((const double[]){11, 22, 13, 24}), 0);
    ck_tensor(tg_sub(ctx, a, b), ((const double[]){-9, -18, -7, -16}), 0);
    ck_tensor(tg_mul(ctx, a, b), ((const double[]){10, 40, 30, 80}), 0);
    ck_tensor(tg_div(ctx, b, a), ((const double[]){10, 10, 10.0 / 3, 5}), 1e-7);
    ck_tensor(tg_neg(ctx, a), ((const double[]){-1, -2, -3, -4}), 0);
    ck_tensor(tg_exp(ctx, a), ((const double[]){exp(1.), exp(2.), exp(3.), exp(4.)}), 1e-6);
    ck_tensor(tg_log(ctx, a), ((const double[]){0, log(2.), log(3.), log(4.)}), 1e-7);
    ck_tensor(tg_sqrt(ctx, a), ((const double[]){1, sqrt(2.), sqrt(3.), 2}), 1e-7);
    ck_tensor(tg_pow(ctx, a, 2), ((const double[]){1, 4, 9, 16}), 0);
    ck_tensor(tg_add_scalar(ctx, a, 0.5), ((const double[]){1.5, 2.5, 3.5, 4.5}), 0);
    ck_tensor(tg_sub_scalar(ctx, a, 1), ((const double[]){0, 1, 2, 3}), 0);
    ck_tensor(tg_mul_scalar(ctx, a, -2), ((const double[]){-2, -4, -6, -8}), 0);
    ck_tensor(tg_div_scalar(ctx, a, 4), ((const double[]){0.25, 0.5, 0.75, 1}), 0);
    /* a column against a row broadcasts to a matrix */
    tg_tensor *col = tg_from_f64(ctx, TG_F32, TG_SHAPE(3, 1), (const double[]){1, 2, 3});
    tg_tensor *row = tg_from_f64(ctx, TG_F32, TG_SHAPE(1, 2), (const double[]){10, 100});
    tg_tensor *m = tg_mul(ctx, col, row);
    ck_assert_int_eq(m->ndim, 2);
    ck_assert(m->shape[0] == 3 && m->shape[1] == 2);
    ck_tensor(m, ((const double[]){10, 100, 20, 200, 30, 300}), 0);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(broadcast_vjp_sums)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *a = leaf(ctx, TG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    tg_tensor *b = leaf(ctx, TG_SHAPE(3), (const double[]){1, 10, 100});
    tg_tensor *c = leaf(ctx, TG_SHAPE(2, 1), (const double[]){2, 3});
    tg_tensor *s = leaf(ctx, 0, NULL, (const double[]){0.5});
    /* L = sum(a * b + c - s) */
    tg_tensor *y = tg_sub(ctx, tg_add(ctx, tg_mul(ctx, a, b), c), s);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_OK);
    ck_tensor(a->grad, ((const double[]){1, 10, 100, 1, 10, 100}), 0);
    ck_tensor(b->grad, ((const double[]){5, 7, 9}), 0);   /* column sums of a */
    ck_tensor(c->grad, ((const double[]){3, 3}), 0);      /* 3 columns each */
    ck_tensor(s->grad, ((const double[]){-6}), 0);        /* 6 elements */
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(matmul_and_linear_values)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *a = leaf(ctx, TG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    tg_tensor *b = leaf(ctx, TG_SHAPE(3, 2), (const double[]){1, 0, 0, 1, 1, 1});
    tg_tensor *c = tg_matmul(ctx, a, b);
    ck_tensor(c, ((const double[]){4, 5, 10, 11}), 0);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, c)), TG_OK);
    ck_tensor(a->grad, ((const double[]){1, 1, 2, 1, 1, 2}), 0); /* row sums of b */
    ck_tensor(b->grad, ((const double[]){5, 5, 7, 7, 9, 9}), 0); /* column sums of a */
    /* batched with a broadcast right side */
    tg_tensor *x = tg_from_f64(ctx, TG_F64, TG_SHAPE(2, 1, 3), (const double[]){1, 2, 3, -1, -2, -3});
    tg_tensor *bx = tg_matmul(ctx, x, b);
    ck_assert(bx->ndim == 3 && bx->shape[0] == 2 && bx->shape[1] == 1 && bx->shape[2] == 2);
    ck_tensor(bx, ((const double[]){4, 5, -4, -5}), 0);
    /* linear: y = x W^T + b */
    tg_tensor *w = tg_from_f64(ctx, TG_F64, TG_SHAPE(2, 3), (const double[]){1, 0, -1, 2, 2, 2});
    tg_tensor *bias = tg_from_f64(ctx, TG_F64, TG_SHAPE(2), (const double[]){0.5, -0.5});
    ck_tensor(tg_linear(ctx, a, w, bias), ((const double[]){-1.5, 11.5, -1.5, 29.5}), 0);
    tg_tensor *v = tg_from_f64(ctx, TG_F64, TG_SHAPE(3), (const double[]){1, 1, 1});
    tg_tensor *yv = tg_linear(ctx, v, w, NULL);
    ck_assert_int_eq(yv->ndim, 1);
    ck_tensor(yv, ((const double[]){0, 6}), 0);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(reductions)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = leaf(ctx, TG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    ck_tensor(tg_sum(ctx, x), ((const double[]){21}), 0);
    ck_tensor(tg_mean(ctx, x), ((const double[]){3.5}), 0);
    tg_tensor *s0 = tg_sum_axis(ctx, x, 0, false);
    ck_assert(s0->ndim == 1 && s0->shape[0] == 3);
    ck_tensor(s0, ((const double[]){5, 7, 9}), 0);
    tg_tensor *m1 = tg_mean_axis(ctx, x, -1, true);
    ck_assert(m1->ndim == 2 && m1->shape[0] == 2 && m1->shape[1] == 1);
    ck_tensor(m1, ((const double[]){2, 5}), 0);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_mul(ctx, m1, m1))), TG_OK);
    /* d/dx of sum_r mean_r^2 = 2 mean_r / 3 */
    ck_tensor(x->grad, ((const double[]){4. / 3, 4. / 3, 4. / 3, 10. / 3, 10. / 3, 10. / 3}), 1e-15);
    ck_assert_ptr_null(tg_sum_axis(ctx, x, 2, false));
    ck_error(ctx, TG_EINVAL, "sum: axis 2 is out of range for 2 dimensions");
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(shape_ops)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = leaf(ctx, TG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    tg_tensor *r = tg_reshape(ctx, x, TG_SHAPE(3, -1));
    ck_assert(r->shape[0] == 3 && r->shape[1] == 2 && r->data == x->data);
    tg_tensor *f = tg_flatten(ctx, tg_reshape(ctx, x, TG_SHAPE(1, 2, 3)), 1, -1);
    ck_assert(f->ndim == 2 && f->shape[0] == 1 && f->shape[1] == 6);
    tg_tensor *t = tg_transpose(ctx, x, 0, 1);
    ck_tensor(t, ((const double[]){1, 4, 2, 5, 3, 6}), 0);
    tg_tensor *p = tg_permute(ctx, tg_reshape(ctx, x, TG_SHAPE(1, 2, 3)), (const int[]){2, 0, 1});
    ck_assert(p->shape[0] == 3 && p->shape[1] == 1 && p->shape[2] == 2);
    ck_tensor(p, ((const double[]){1, 4, 2, 5, 3, 6}), 0);
    tg_tensor *sl = tg_slice(ctx, x, 1, 0, 3, 2);
    ck_tensor(sl, ((const double[]){1, 3, 4, 6}), 0);
    tg_tensor *neg = tg_slice(ctx, x, -1, -1, 100, 1);
    ck_tensor(neg, ((const double[]){3, 6}), 0);
    tg_tensor *cat = tg_concat(ctx, (tg_tensor *[]){x, sl}, 2, 1);
    ck_assert(cat->shape[0] == 2 && cat->shape[1] == 5);
    ck_tensor(cat, ((const double[]){1, 2, 3, 1, 3, 4, 5, 6, 4, 6}), 0);
    tg_tensor *p1 = tg_pad1d(ctx, x, 1, 2);
    ck_assert(p1->shape[1] == 6);
    ck_tensor(p1, ((const double[]){0, 1, 2, 3, 0, 0, 0, 4, 5, 6, 0, 0}), 0);
    tg_tensor *p2 = tg_pad2d(ctx, tg_reshape(ctx, x, TG_SHAPE(1, 2, 3)), 0, 1, 1, 0);
    ck_assert(p2->shape[1] == 3 && p2->shape[2] == 4);
    ck_tensor(p2, ((const double[]){0, 0, 0, 0, 1, 2, 3, 0, 4, 5, 6, 0}), 0);
    /* every path feeds x: the gradient counts how often each element is used */
    tg_tensor *parts[] = {tg_sum(ctx, r), tg_sum(ctx, t), tg_sum(ctx, sl), tg_sum(ctx, cat),
                          tg_sum(ctx, p1), tg_sum(ctx, p2), tg_sum(ctx, neg), tg_sum(ctx, p)};
    tg_tensor *loss = parts[0];
    for (int i = 1; i < 8; i++)
        loss = tg_add(ctx, loss, parts[i]);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    ck_tensor(x->grad, ((const double[]){8, 6, 9, 8, 6, 9}), 0);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(shape_errors)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F32, TG_SHAPE(2, 3));
    tg_tensor *y = tg_ones(ctx, TG_F64, TG_SHAPE(2, 3));
#define EXPECT(expr, c, t)                                                \
    do {                                                                  \
        ck_assert_ptr_null(expr);                                         \
        ck_error(ctx, (c), (t));                                          \
        tg_clear_error(ctx);                                              \
    } while (0)
    EXPECT(tg_add(ctx, x, y), TG_EDTYPE, "add: inputs are float32 and float64");
    EXPECT(tg_matmul(ctx, x, x), TG_ESHAPE, "matmul: (2, 3) times (2, 3): inner dimensions 3 and 2 differ");
    EXPECT(tg_linear(ctx, x, tg_ones(ctx, TG_F32, TG_SHAPE(4, 2)), NULL), TG_ESHAPE,
           "linear: x (2, 3) has 3 features but weight (4, 2) expects 2");
    EXPECT(tg_reshape(ctx, x, TG_SHAPE(4, -1)), TG_ESHAPE, "reshape: cannot view (2, 3) (6 elements) as (4, -1)");
    EXPECT(tg_concat(ctx, (tg_tensor *[]){x, tg_ones(ctx, TG_F32, TG_SHAPE(3, 3))}, 2, 1), TG_ESHAPE,
           "concat: input 1 is (3, 3) but input 0 is (2, 3); only axis 1 may differ");
    EXPECT(tg_slice(ctx, x, 0, 0, 1, 0), TG_EINVAL, "slice: step is 0");
    EXPECT(tg_permute(ctx, x, (const int[]){0, 0}), TG_EINVAL, "not a permutation");
    EXPECT(tg_pad1d(ctx, x, -4, 0), TG_ESHAPE,
           "pad: negative padding (-4, 0) of dimension 1 of (2, 3) removes more than its 3 elements");
    EXPECT(tg_flatten(ctx, x, 1, 0), TG_EINVAL, "flatten: start dimension 1 comes after end dimension 0");
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("forward");
    tcase_add_test(tc, elementwise_values);
    tcase_add_test(tc, matmul_and_linear_values);
    tcase_add_test(tc, reductions);
    tcase_add_test(tc, shape_ops);
    suite_add_tcase(s, tc);
    tc = tcase_create("vjp");
    tcase_add_test(tc, broadcast_vjp_sums);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, shape_errors);
    suite_add_tcase(s, tc);
    return s;
}
