/*
 * test_registry.c: the op registry, a user-defined op, and the float64
 * gradcheck of every registered op over its sample inputs.
 */
#include <string.h>

#include "testutil.h"

/* ---- a user op, defined here and not in the library: y = x^3, dy/dx = 3x^2,
 * written once for float32 and float64 with the public dispatch macro */

static tg_tensor *cube_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *x = node->in[0];
    tg_tensor *y = tg_empty(ctx, x->dtype, x->ndim, x->shape);
    if (!y)
        return NULL;
    TG_DISPATCH_FLOAT(x->dtype, T, {
        const T *xs = x->data;
        T *ys = y->data;
        for (int64_t i = 0; i < x->numel; i++)
            ys[i] = xs[i] * xs[i] * xs[i];
    });
    return y;
}

static tg_status cube_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    const tg_tensor *x = node->in[0];
    TG_DISPATCH_FLOAT(x->dtype, T, {
        const T *xs = x->data, *g = gout->data;
        T *gx = gin[0]->data;
        for (int64_t i = 0; i < x->numel; i++)
            gx[i] += 3 * xs[i] * xs[i] * g[i];
    });
    return TG_OK;
}

static int cube_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    if (index > 0)
        return 0;
    s->n_in = 1;
    s->in[0] = tg_randn(ctx, TG_F64, TG_SHAPE(2, 3), 0, 1);
    tg_set_requires_grad(ctx, s->in[0], true);
    snprintf(s->desc, sizeof s->desc, "matrix");
    return 1;
}

static const tg_op cube_op = {.name = "test_cube", .min_in = 1, .max_in = 1,
                              .forward = cube_forward, .vjp = cube_vjp, .sample = cube_sample};

static void register_cube(tg_ctx *ctx)
{
    if (!tg_op_find("test_cube"))
        ck_assert_int_eq(tg_op_register(ctx, &cube_op), TG_OK);
}

START_TEST(builtins_are_registered)
{
    tg_ctx *ctx = tg_ctx_new(1);
    static const char *names[] = {"add", "sub", "mul", "div", "neg", "exp", "log", "sqrt", "pow",
                                  "add_scalar", "mul_scalar", "div_scalar", "matmul", "linear",
                                  "sum", "mean", "reshape", "permute", "concat", "slice", "pad"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const tg_op *op = tg_op_find(names[i]);
        ck_assert_msg(op != NULL, "%s is not registered", names[i]);
        ck_assert_str_eq(op->name, names[i]);
        ck_assert_msg(op->vjp && op->sample, "%s lacks a vjp or samples", names[i]);
    }
    ck_assert_ptr_null(tg_op_find("no_such_op"));
    ck_assert_ptr_null(tg_op_find(NULL));
    /* iteration visits every op once, in name order */
    int n = 0;
    const char *prev = "";
    for (const tg_op *op = tg_op_next(NULL); op; op = tg_op_next(op), n++) {
        ck_assert_msg(strcmp(prev, op->name) < 0, "%s after %s", op->name, prev);
        prev = op->name;
    }
    ck_assert_int_eq(n, tg_op_count());
    ck_assert_int_ge(n, (int)(sizeof names / sizeof names[0]));
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(bad_registrations)
{
    tg_ctx *ctx = tg_ctx_new(1);
    ck_assert_int_eq(tg_op_register(ctx, NULL), TG_EINVAL);
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_op_register(ctx, tg_op_find("add")), TG_EEXIST);
    ck_error(ctx, TG_EEXIST, "'add' is already registered");
    tg_clear_error(ctx);
    static const tg_op bad_range = {.name = "test_bad_range", .min_in = 3, .max_in = 1,
                                    .forward = cube_forward};
    ck_assert_int_eq(tg_op_register(ctx, &bad_range), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "takes 3 to 1 inputs");
    tg_clear_error(ctx);
    static const tg_op big_attrs = {.name = "test_big", .min_in = 1, .max_in = 1,
                                    .attr_size = TG_ATTR_MAX + 1, .forward = cube_forward};
    ck_assert_int_eq(tg_op_register(ctx, &big_attrs), TG_EINVAL);
    tg_clear_error(ctx);
    tg_tensor *x = tg_ones(ctx, TG_F32, TG_SHAPE(2));
    ck_assert_ptr_null(tg_apply_named(ctx, "conv7d", &x, 1, NULL));
    ck_error(ctx, TG_ENOTFOUND, "no op named 'conv7d'");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_apply_named(ctx, "add", &x, 1, NULL));
    ck_error(ctx, TG_EINVAL, "add: takes 2 inputs, got 1");
    tg_clear_error(ctx);
    tg_tensor *two[2] = {x, NULL};
    ck_assert_ptr_null(tg_apply_named(ctx, "add", two, 2, NULL));
    ck_error(ctx, TG_EINVAL, "add: input 1 is NULL");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_apply_named(ctx, "pow", &x, 1, NULL));
    ck_error(ctx, TG_EINVAL, "pow: attributes are NULL");
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(user_op_runs_and_backpropagates)
{
    tg_ctx *ctx = tg_ctx_new(1);
    register_cube(ctx);
    ck_assert_ptr_eq(tg_op_find("test_cube"), &cube_op);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(3), "w");
    tg_assign_f64(ctx, w, (const double[]){1, -2, 0.5});
    tg_tensor *y = tg_apply_named(ctx, "test_cube", &w, 1, NULL);
    ck_assert_ptr_nonnull(y);
    ck_tensor(y, ((const double[]){1, -8, 0.125}), 0);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_OK);
    ck_tensor(w->grad, ((const double[]){3, 12, 0.75}), 0);
    tg_gradcheck_result r;
    ck_assert_int_eq(tg_gradcheck_op(ctx, &cube_op, NULL, &r), TG_OK);
    ck_assert_msg(r.passed, "%s", r.msg);
    ck_assert_int_eq(r.cases, 1);
    ck_assert_int_eq(r.checked, 36);
    /* the same source runs in float32 */
    tg_tensor *v = tg_param(ctx, TG_F32, TG_SHAPE(2), "v");
    tg_assign_f64(ctx, v, (const double[]){2, -0.5});
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_apply(ctx, &cube_op, &v, 1, NULL))), TG_OK);
    ck_tensor(v->grad, ((const double[]){12, 0.75}), 0);
    tg_ctx_free(ctx);
}
END_TEST

/* The loop index picks the i-th registered op. */
START_TEST(gradcheck_registered_op)
{
    tg_ctx *ctx = tg_ctx_new(7);
    const tg_op *op = tg_op_next(NULL);
    for (int i = 0; op && i < _i; i++)
        op = tg_op_next(op);
    ck_assert_ptr_nonnull(op);
    if (!op->sample || !op->vjp)
        ck_abort_msg("%s has no sample inputs or no vjp", op->name);
    tg_gradcheck_result r;
    tg_status st = tg_gradcheck_op(ctx, op, NULL, &r);
    ck_assert_msg(st == TG_OK, "%s: %s", op->name, tg_errmsg(ctx));
    ck_assert_msg(r.passed, "%s: %s", op->name, r.msg);
    ck_assert_msg(r.cases >= 2 && r.checked > 0, "%s: only %d cases", op->name, r.cases);
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    tg_ctx_free(tg_ctx_new(0)); /* registers the built-ins, so they can be counted */
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("registry");
    tcase_add_test(tc, builtins_are_registered);
    tcase_add_test(tc, bad_registrations);
    tcase_add_test(tc, user_op_runs_and_backpropagates);
    suite_add_tcase(s, tc);
    tc = tcase_create("gradcheck");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, gradcheck_registered_op, 0, tg_op_count());
    suite_add_tcase(s, tc);
    return s;
}
