/* test_tensor.c: creating, converting and reading tensors; parameters. */
#include <string.h>

#include "testutil.h"

START_TEST(creation_fills)
{
    tg_ctx *ctx = tg_ctx_new(1);
    for (int dt = TG_F32; dt <= TG_F64; dt++) {
        tg_tensor *z = tg_zeros(ctx, (tg_dtype)dt, TG_SHAPE(2, 3));
        tg_tensor *o = tg_ones(ctx, (tg_dtype)dt, TG_SHAPE(4));
        tg_tensor *f = tg_full(ctx, (tg_dtype)dt, TG_SHAPE(1, 1, 2), 2.5);
        ck_assert_ptr_nonnull(z);
        ck_assert_int_eq(z->ndim, 2);
        ck_assert_int_eq(z->numel, 6);
        ck_assert_int_eq(z->shape[0], 2);
        ck_assert_int_eq(z->shape[1], 3);
        ck_assert_int_eq(z->dtype, dt);
        for (int i = 0; i < 6; i++)
            ck_assert(tg_get(z, i) == 0.0);
        for (int i = 0; i < 4; i++)
            ck_assert(tg_get(o, i) == 1.0);
        ck_assert(tg_get(f, 1) == 2.5);
        ck_assert(!z->requires_grad && !z->grad && !z->node && !z->persistent);
        ck_assert_int_eq((uintptr_t)z->data % 64, 0); /* arena blocks are 64-byte aligned */
    }
    tg_tensor *s = tg_full(ctx, TG_F64, 0, NULL, 7); /* a scalar */
    ck_assert_int_eq(s->ndim, 0);
    ck_assert_int_eq(s->numel, 1);
    ck_assert(tg_get(s, 0) == 7);
    tg_tensor *e = tg_zeros(ctx, TG_F32, TG_SHAPE(0, 3)); /* empty is fine */
    ck_assert_int_eq(e->numel, 0);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(from_data_and_convert)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const float f[] = {1.5f, -2.0f, 3.25f};
    tg_tensor *a = tg_from_data(ctx, TG_F32, TG_SHAPE(3), f);
    tg_tensor *b = tg_to_dtype(ctx, a, TG_F64);
    ck_assert_int_eq(b->dtype, TG_F64);
    ck_assert(((double *)b->data)[2] == 3.25);
    tg_tensor *c = tg_from_f64(ctx, TG_F32, TG_SHAPE(2, 2), (const double[]){0.1, 0.2, 0.3, 0.4});
    ck_assert(((float *)c->data)[0] == 0.1f);
    tg_tensor *d = tg_copy(ctx, c);
    ck_assert_ptr_ne(d->data, c->data);
    ck_assert(tg_get(d, 3) == tg_get(c, 3));
    tg_tensor *dst = tg_zeros(ctx, TG_F64, TG_SHAPE(2, 2));
    ck_assert_int_eq(tg_assign(ctx, dst, c), TG_OK);
    ck_assert(tg_get(dst, 1) == (double)0.2f);
    ck_assert_int_eq(tg_fill(ctx, dst, -1), TG_OK);
    ck_assert(tg_get(dst, 3) == -1);
    ck_assert_int_eq(tg_offset(dst, (const int64_t[]){1, 0}), 2);
    ck_assert_int_eq(tg_offset(dst, (const int64_t[]){2, 0}), -1);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(rng_is_reproducible)
{
    tg_ctx *a = tg_ctx_new(123), *b = tg_ctx_new(123), *c = tg_ctx_new(124);
    tg_tensor *x = tg_randn(a, TG_F64, TG_SHAPE(1000), 0, 1);
    tg_tensor *y = tg_randn(b, TG_F64, TG_SHAPE(1000), 0, 1);
    tg_tensor *z = tg_randn(c, TG_F64, TG_SHAPE(1000), 0, 1);
    ck_assert_mem_eq(x->data, y->data, 1000 * sizeof(double));
    ck_assert(memcmp(x->data, z->data, 1000 * sizeof(double)) != 0);
    double mean = 0, var = 0;
    for (int i = 0; i < 1000; i++)
        mean += tg_get(x, i) / 1000;
    for (int i = 0; i < 1000; i++)
        var += (tg_get(x, i) - mean) * (tg_get(x, i) - mean) / 999;
    ck_assert(fabs(mean) < 0.15 && fabs(var - 1) < 0.15);
    tg_tensor *u = tg_rand(a, TG_F32, TG_SHAPE(1000), -2, 3);
    for (int i = 0; i < 1000; i++)
        ck_assert(tg_get(u, i) >= -2 && tg_get(u, i) < 3);
    /* the same seed gives the same values in float32 (rounded) and float64 */
    tg_seed(a, 9);
    tg_seed(b, 9);
    tg_tensor *p = tg_rand(a, TG_F32, TG_SHAPE(5), 0, 1), *q = tg_rand(b, TG_F64, TG_SHAPE(5), 0, 1);
    for (int i = 0; i < 5; i++)
        ck_assert(tg_get(p, i) == (double)(float)tg_get(q, i));
    tg_ctx_free(a);
    tg_ctx_free(b);
    tg_ctx_free(c);
}
END_TEST

START_TEST(params_survive_reset)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F32, TG_SHAPE(3, 2), "weight");
    tg_tensor *b = tg_param(ctx, TG_F64, TG_SHAPE(2), NULL);
    ck_assert(w->requires_grad && w->persistent);
    ck_assert_str_eq(w->name, "weight");
    ck_assert(tg_get(w, 5) == 0.0);
    tg_fill(ctx, w, 0.5);
    for (int step = 0; step < 3; step++) {
        tg_zeros(ctx, TG_F64, TG_SHAPE(100, 100));
        tg_reset(ctx);
    }
    ck_assert(tg_get(w, 5) == 0.5);
    ck_assert_ptr_eq(tg_param_next(ctx, NULL), w);
    ck_assert_ptr_eq(tg_param_next(ctx, w), b);
    ck_assert_ptr_null(tg_param_next(ctx, b));
    tg_set_name(ctx, b, "bias");
    ck_assert_str_eq(b->name, "bias");
    tg_param_free(ctx, w);
    ck_assert_ptr_eq(tg_param_next(ctx, NULL), b);
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    ck_assert_int_eq(st.params, 1);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(printing)
{
    tg_ctx *ctx = tg_ctx_new(1);
    char buf[64];
    tg_tensor *t = tg_set_name(ctx, tg_ones(ctx, TG_F32, TG_SHAPE(2, 3, 4)), "x");
    tg_shape_str(t, buf, sizeof buf);
    ck_assert_str_eq(buf, "(2, 3, 4)");
    tg_tensor *s = tg_zeros(ctx, TG_F64, 0, NULL);
    tg_shape_str(s, buf, sizeof buf);
    ck_assert_str_eq(buf, "()");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    tg_print(f, t, 3);
    fclose(f);
    ck_assert_str_eq(text, "tensor 'x' float32 (2, 3, 4) [1, 1, 1, ...]\n");
    free(text);
    ck_assert_str_eq(tg_dtype_name(TG_F64), "float64");
    ck_assert_int_eq(tg_dtype_size(TG_F32), 4);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(bad_arguments)
{
    tg_ctx *ctx = tg_ctx_new(1);
    ck_assert_ptr_null(tg_zeros(ctx, (tg_dtype)7, TG_SHAPE(2)));
    ck_error(ctx, TG_EDTYPE, "unknown dtype 7");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_zeros(ctx, TG_F32, 7, (const int64_t[]){1, 1, 1, 1, 1, 1, 1}));
    ck_error(ctx, TG_EINVAL, "7 dimensions");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_zeros(ctx, TG_F32, TG_SHAPE(2, -3)));
    ck_error(ctx, TG_EINVAL, "dimension 1 is -3");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_zeros(ctx, TG_F32, TG_SHAPE(INT64_MAX / 2, 8)));
    ck_error(ctx, TG_ESHAPE, "more elements than can be addressed");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_from_data(ctx, TG_F32, TG_SHAPE(2), NULL));
    ck_error(ctx, TG_EINVAL, "data is NULL");
    tg_clear_error(ctx);
    tg_tensor *a = tg_zeros(ctx, TG_F32, TG_SHAPE(2)), *b = tg_zeros(ctx, TG_F32, TG_SHAPE(3));
    ck_assert_int_eq(tg_assign(ctx, a, b), TG_ESHAPE);
    ck_error(ctx, TG_ESHAPE, "assign: dst is (2) but src is (3)");
    tg_clear_error(ctx);
    tg_tensor *y = tg_exp(ctx, tg_param(ctx, TG_F32, TG_SHAPE(2), "p"));
    ck_assert_int_eq(tg_set_requires_grad(ctx, y, false), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "made by a recorded exp");
    tg_clear_error(ctx);
    /* NULL everywhere: no crash */
    ck_assert_ptr_null(tg_copy(ctx, NULL));
    ck_error(ctx, TG_EINVAL, "copy: src is NULL");
    ck_assert_ptr_null(tg_zeros(NULL, TG_F32, TG_SHAPE(2)));
    tg_print(stdout, NULL, 1);
    tg_param_free(ctx, NULL);
    tg_ctx_free(NULL);
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("tensor");
    TCase *tc = tcase_create("create");
    tcase_add_test(tc, creation_fills);
    tcase_add_test(tc, from_data_and_convert);
    tcase_add_test(tc, rng_is_reproducible);
    tcase_add_test(tc, printing);
    suite_add_tcase(s, tc);
    tc = tcase_create("params");
    tcase_add_test(tc, params_survive_reset);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}
