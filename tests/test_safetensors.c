/* test_safetensors.c: checkpoints in safetensors: save, load, round trips, malformed files */
#include <string.h>

#include "testutil.h"

START_TEST(empty_tensor_exists)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_zeros(ctx, TG_F64, TG_SHAPE(0, 3));
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(x->numel, 0);
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("empty_tensor_exists");
    tcase_add_test(tc, empty_tensor_exists);
    suite_add_tcase(s, tc);
    return s;
}
