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

/* ---- first-write vjps (TG_OP_VJP_WRITES) */

/* y = 3 x; a correct first-write vjp, and one that forgets the last element */
static tg_status triple_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                            tg_tensor *const *gin, bool forget)
{
    const double *g = gout->data;
    double *d = gin[0]->data;
    bool add = tg_vjp_adds(node, 0);
    for (int64_t i = 0; i < gout->numel - (forget ? 1 : 0); i++)
        d[i] = (add ? d[i] : 0.0) + 3.0 * g[i];
    return TG_OK;
}

static tg_tensor *triple_forward(tg_ctx *ctx, tg_node *node)
{
    const tg_tensor *x = node->in[0];
    tg_tensor *y = tg_empty(ctx, TG_F64, x->ndim, x->shape);
    for (int64_t i = 0; y && i < x->numel; i++)
        ((double *)y->data)[i] = 3.0 * ((const double *)x->data)[i];
    return y;
}

static tg_status triple_ok(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    return triple_vjp(ctx, node, gout, gin, false);
}

static tg_status triple_bad(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin)
{
    return triple_vjp(ctx, node, gout, gin, true);
}

static int triple_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    if (index > 0)
        return 0;
    s->n_in = 1;
    s->in[0] = tg_from_f64(ctx, TG_F64, TG_SHAPE(4), (const double[]){1, -2, 3, 0.5});
    tg_set_requires_grad(ctx, s->in[0], true);
    return 1;
}

static const tg_op triple_ok_op = {.name = "test_triple_ok", .min_in = 1, .max_in = 1,
                                   .forward = triple_forward, .vjp = triple_ok,
                                   .sample = triple_sample, .flags = TG_OP_VJP_WRITES};
static const tg_op triple_bad_op = {.name = "test_triple_bad", .min_in = 1, .max_in = 1,
                                    .forward = triple_forward, .vjp = triple_bad,
                                    .sample = triple_sample, .flags = TG_OP_VJP_WRITES};

START_TEST(first_write_vjp)
{
    tg_ctx *ctx = tg_ctx_new(1);
    if (!tg_op_find(triple_ok_op.name)) {
        ck_assert_int_eq(tg_op_register(ctx, &triple_ok_op), TG_OK);
        ck_assert_int_eq(tg_op_register(ctx, &triple_bad_op), TG_OK);
    }
    tg_tensor *x = vec(ctx, "x", (const double[]){1, 2, 3}, 3);
    /* first contribution written, the second (x used twice) added, then a
     * second backward adds to the parameter's gradient */
    for (int round = 1; round <= 2; round++) {
        tg_tensor *a = tg_apply(ctx, &triple_ok_op, &x, 1, NULL);
        tg_tensor *b = tg_apply(ctx, &triple_ok_op, &x, 1, NULL);
        tg_tensor *loss = tg_sum(ctx, tg_add(ctx, tg_mul(ctx, a, a), b));
        ck_assert_msg(tg_backward(ctx, loss) == TG_OK, "%s", tg_errmsg(ctx));
        double want[3];
        for (int i = 0; i < 3; i++)
            want[i] = round * (18.0 * (i + 1) + 3.0);
        ck_tensor(x->grad, want, 1e-15);
        tg_reset(ctx);
    }
    /* gradcheck catches an element the vjp forgets to write: it is NaN */
    tg_gradcheck_result r;
    ck_assert_int_eq(tg_gradcheck_op(ctx, &triple_ok_op, NULL, &r), TG_OK);
    ck_assert(r.passed);
    tg_gradcheck_op(ctx, &triple_bad_op, NULL, &r);
    ck_assert(!r.passed);
    tg_ctx_free(ctx);
}
END_TEST

/* A block of two members, w (2) and v (3); L = sum(3 w) reaches only w. */
START_TEST(set_to_none)
{
    tg_ctx *ctx = tg_ctx_new(1);
    if (!tg_op_find(triple_ok_op.name)) {
        ck_assert_int_eq(tg_op_register(ctx, &triple_ok_op), TG_OK);
        ck_assert_int_eq(tg_op_register(ctx, &triple_bad_op), TG_OK);
    }
    tg_param_spec specs[2] = {{.ndim = 1, .shape = {2}, .name = "w"},
                              {.ndim = 1, .shape = {3}, .name = "v"}};
    tg_tensor *m[2], *block;
    ck_assert_int_eq(tg_param_block(ctx, TG_F64, 2, specs, m, &block), TG_OK);
    /* first both reach their gradients, so the block holds values everywhere */
    tg_tensor *loss = tg_add(ctx, tg_sum(ctx, m[0]), tg_sum(ctx, tg_mul_scalar(ctx, m[1], 5)));
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    ck_tensor(block->grad, ((const double[]){1, 1, 5, 5, 5}), 0);
    tg_reset(ctx);
    tg_zero_grad_ex(ctx, TG_SET_TO_NONE);
    ck_assert_ptr_null(m[0]->grad);
    ck_assert_ptr_null(m[1]->grad);
    ck_assert_ptr_null(block->grad);
    /* now only w: written, not added to the old 1s; v gets zeros, not its old 5s */
    loss = tg_sum(ctx, tg_apply(ctx, &triple_ok_op, &m[0], 1, NULL));
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    ck_tensor(m[0]->grad, ((const double[]){3, 3}), 0);
    ck_tensor(m[1]->grad, ((const double[]){0, 0, 0}), 0);
    ck_tensor(block->grad, ((const double[]){3, 3, 0, 0, 0}), 0);
    tg_reset(ctx);
    /* and without set_to_none gradients accumulate as before */
    loss = tg_sum(ctx, tg_apply(ctx, &triple_ok_op, &m[0], 1, NULL));
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    ck_tensor(block->grad, ((const double[]){6, 6, 0, 0, 0}), 0);
    /* the block released as one */
    tg_tensor_zero_grad_ex(block, TG_SET_TO_NONE);
    ck_assert_ptr_null(block->grad);
    ck_assert_ptr_null(m[0]->grad);
    ck_assert_ptr_null(m[1]->grad);
    tg_zero_grad(ctx); /* zeroing what is released is a no-op */
    ck_assert_ptr_null(m[0]->grad);
    tg_ctx_free(ctx);
}
END_TEST

/* ---- the grad hook: once per parameter, with its final gradient */
typedef struct hook_log {
    int n;
    const tg_tensor *who[8];
    double first[8]; /* the gradient's first element when the hook ran */
} hook_log;

static void log_hook(tg_ctx *ctx, tg_tensor *param, void *ud)
{
    hook_log *log = ud;
    ck_assert_int_lt(log->n, 8);
    log->who[log->n] = param;
    log->first[log->n] = tg_get(param->grad, 0);
    log->n++;
}

START_TEST(grad_hook)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *a = vec(ctx, "a", (const double[]){1, 2}, 2);
    tg_tensor *b = vec(ctx, "b", (const double[]){3, 4}, 2);
    tg_tensor *unused = vec(ctx, "unused", (const double[]){1}, 1);
    hook_log log = {0};
    tg_set_grad_hook(ctx, log_hook, &log);
    /* a is read early and late, b only late: b completes first, a last */
    tg_tensor *h = tg_mul(ctx, a, a);
    tg_tensor *loss = tg_sum(ctx, tg_add(ctx, tg_mul(ctx, h, b), a));
    (void)tg_mul(ctx, unused, unused); /* not on the path to loss */
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    ck_assert_int_eq(log.n, 2);
    ck_assert_ptr_eq(log.who[0], b);
    ck_assert_ptr_eq(log.who[1], a);
    ck_close(log.first[0], 1.0, 0);          /* db = a^2 */
    ck_close(log.first[1], 2 * 1 * 3 + 1, 0); /* da = 2 a b + 1, complete */
    tg_reset(ctx);
    tg_set_grad_hook(ctx, NULL, NULL);
    loss = tg_sum(ctx, a);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    ck_assert_int_eq(log.n, 2);
    tg_ctx_free(ctx);
}
END_TEST

/* A block read whole (an L2 penalty) completes its members only at the end
 * of backward: their hooks wait until then, and see the final values. */
START_TEST(grad_hook_block_read_whole)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_param_spec specs[2] = {{.ndim = 1, .shape = {2}, .name = "w"},
                              {.ndim = 1, .shape = {1}, .name = "v"}};
    tg_tensor *m[2], *block;
    ck_assert_int_eq(tg_param_block(ctx, TG_F64, 2, specs, m, &block), TG_OK);
    ck_assert_int_eq(tg_assign_f64(ctx, block, (const double[]){1, 2, 3}), TG_OK);
    hook_log log = {0};
    tg_set_grad_hook(ctx, log_hook, &log);
    tg_zero_grad_ex(ctx, TG_SET_TO_NONE);
    /* L = sum(3 w) + sum(v) + sum(block^2): the penalty comes first on the
     * tape, so its vjp runs last */
    tg_tensor *pen = tg_sum(ctx, tg_mul(ctx, block, block));
    tg_tensor *loss = tg_add(ctx, tg_add(ctx, tg_sum(ctx, tg_mul_scalar(ctx, m[0], 3)),
                                         tg_sum(ctx, m[1])), pen);
    ck_assert_msg(tg_backward(ctx, loss) == TG_OK, "%s", tg_errmsg(ctx));
    ck_tensor(block->grad, ((const double[]){5, 7, 7}), 0);
    ck_assert_int_eq(log.n, 2);
    ck_assert_ptr_eq(log.who[0], m[1]); /* the last member first */
    ck_assert_ptr_eq(log.who[1], m[0]);
    ck_close(log.first[0], 7, 0);
    ck_close(log.first[1], 5, 0);
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
    tcase_add_test(tc, first_write_vjp);
    tcase_add_test(tc, set_to_none);
    tcase_add_test(tc, grad_hook);
    tcase_add_test(tc, grad_hook_block_read_whole);
    suite_add_tcase(s, tc);
    return s;
}
