/* test_model.c: placeholder suite, filled in by the training layer's work. */
#include "testutil.h"

START_TEST(layer_defaults_exist)
{
    ck_assert_int_eq(TG_LAYER_COUNT > 0, 1);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("placeholder");
    tcase_add_test(tc, layer_defaults_exist);
    suite_add_tcase(s, tc);
    return s;
}
