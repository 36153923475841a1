/*
 * test_hardening.c: the engine refuses misuse instead of printing a
 * plausible wrong number. One test per defect found by trying the library
 * as a careless user would: values changed between forward and backward,
 * ops without a vjp, tensors of ended steps or other contexts, freeing what
 * is not a parameter, renaming with the tensor's own name; and the core
 * types training needs (buffers, int64 tensors), anomaly mode and checked
 * mode.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---------------------------------------------------------------- versions */

/* loss = sum(w * w) at w = 1, then fill(w, 5): PyTorch raises "one of the
 * variables needed for gradient computation has been modified by an
 * inplace operation"; printing 10 (the gradient at the new value) is the
 * defect. */
START_TEST(write_between_forward_and_backward)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_fill(ctx, w, 1);
    tg_tensor *loss = tg_sum(ctx, tg_mul(ctx, w, w));
    uint64_t before = w->version;
    tg_fill(ctx, w, 5);
    ck_assert_uint_eq(w->version, before + 1);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "mul");
    ck_error(ctx, TG_ESTATE, "'w'");
    char want[64];
    snprintf(want, sizeof want, "(version %llu)", (unsigned long long)before);
    ck_error(ctx, TG_ESTATE, want);
    snprintf(want, sizeof want, "(version %llu)", (unsigned long long)before + 1);
    ck_error(ctx, TG_ESTATE, want);
    ck_assert(!w->grad || tg_get(w->grad, 0) == 0); /* no gradient was written */
    tg_ctx_free(ctx);
}
END_TEST

/* Every write through the API bumps the version: assign, assign_f64, set,
 * mark_dirty; reading does not. */
START_TEST(every_write_bumps_the_version)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_zeros(ctx, TG_F64, TG_SHAPE(3));
    uint64_t v = x->version;
    tg_assign(ctx, x, tg_ones(ctx, TG_F32, TG_SHAPE(3)));
    ck_assert_uint_gt(x->version, v);
    v = x->version;
    tg_assign_f64(ctx, x, (const double[]){1, 2, 3});
    ck_assert_uint_gt(x->version, v);
    v = x->version;
    tg_set(x, 0, 7);
    ck_assert_uint_gt(x->version, v);
    v = x->version;
    tg_mark_dirty(x);
    ck_assert_uint_gt(x->version, v);
    v = x->version;
    (void)tg_get(x, 1);
    (void)tg_copy(ctx, x);
    ck_assert_uint_eq(x->version, v);
    tg_ctx_free(ctx);
}
END_TEST

/* The check covers an op's output too: sigmoid's vjp reads its output. */
START_TEST(write_to_an_output_the_vjp_reads)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_tensor *y = tg_sigmoid(ctx, w);
    tg_tensor *loss = tg_sum(ctx, y);
    tg_fill(ctx, y, 0.25);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "sigmoid");
    ck_error(ctx, TG_ESTATE, "its output");
    tg_ctx_free(ctx);
}
END_TEST

/* Writing after backward, then a fresh forward, is the ordinary loop. */
START_TEST(write_after_backward_is_fine)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(1), "w");
    tg_fill(ctx, w, 1);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_mul(ctx, w, w))), TG_OK);
    tg_set(w, 0, tg_get(w, 0) - 0.1 * tg_get(w->grad, 0));
    tg_reset(ctx);
    tg_zero_grad(ctx);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_mul(ctx, w, w))), TG_OK);
    ck_close(tg_get(w->grad, 0), 1.6, 1e-15);
    tg_ctx_free(ctx);
}
END_TEST

/* reshape's output shares its input's data: a write to either is seen
 * through the other (PyTorch's views share one version counter). */
START_TEST(views_share_the_version)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2, 2), "w");
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(4));
    tg_set_name(ctx, x, "x");
    tg_tensor *y = tg_reshape(ctx, x, TG_SHAPE(2, 2));
    ck_assert_ptr_eq(y->data, x->data);
    tg_tensor *loss = tg_sum(ctx, tg_mul(ctx, y, w));
    tg_fill(ctx, x, 5); /* changes y's values too */
    ck_assert_uint_eq(tg_tensor_version(y), tg_tensor_version(x));
    ck_assert_int_eq(tg_backward(ctx, loss), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "mul");
    tg_clear_error(ctx);
    tg_reset(ctx);
    /* and the other way: a write to the view is a write to its base */
    x = tg_ones(ctx, TG_F64, TG_SHAPE(2, 2));
    y = tg_reshape(ctx, x, TG_SHAPE(4));
    loss = tg_sum(ctx, tg_mul(ctx, x, w));
    tg_set(y, 3, 9);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_ESTATE);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- ops without a vjp */

static tg_tensor *twice_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *x = node->in[0];
    tg_tensor *y = tg_empty(ctx, x->dtype, x->ndim, x->shape);
    if (y)
        for (int64_t i = 0; i < x->numel; i++)
            tg_set(y, i, 2 * tg_get(x, i));
    return y;
}

static const tg_op novjp = {.name = "test_novjp", .min_in = 1, .max_in = 1,
                            .forward = twice_forward, .flags = TG_OP_NO_VJP};
static const tg_op undeclared = {.name = "test_undeclared", .min_in = 1, .max_in = 1,
                                 .forward = twice_forward};

/* 3 * novjp(w) + w: the gradient is not silently 1. */
START_TEST(op_without_vjp_is_an_error_in_backward)
{
    tg_ctx *ctx = tg_ctx_new(1);
    ck_assert_int_eq(tg_op_register(ctx, &undeclared), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "test_undeclared has no vjp");
    tg_clear_error(ctx);
    if (!tg_op_find("test_novjp"))
        ck_assert_int_eq(tg_op_register(ctx, &novjp), TG_OK);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_tensor *y = tg_add(ctx, tg_mul_scalar(ctx, tg_apply(ctx, &novjp, &w, 1, NULL), 3), w);
    ck_assert_ptr_nonnull(y);
    ck_assert(y->requires_grad);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_ENOTSUP);
    ck_error(ctx, TG_ENOTSUP, "derivative of test_novjp");
    tg_clear_error(ctx);
    /* without grad the op runs as any other */
    tg_tensor *z = NULL;
    TG_NO_GRAD(ctx) { z = tg_apply(ctx, &novjp, &w, 1, NULL); }
    ck_assert_ptr_nonnull(z);
    ck_assert(!z->requires_grad);
    /* and gradcheck refuses it */
    tg_gradcheck_result r;
    ck_assert_int_eq(tg_gradcheck_op(ctx, &novjp, NULL, &r), TG_EINVAL);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- stale tensors */

/* In checked mode, backward on a loss of an ended step is an error naming
 * it, not a backward through whatever graph now lives at that address. */
START_TEST(tensor_of_an_ended_step_checked)
{
    tg_ctx_opts o = {0};
    o.checked = true;
    tg_ctx *ctx = tg_ctx_new_opts(&o);
    ck_assert(tg_checked(ctx));
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_fill(ctx, w, 1);
    tg_tensor *old = tg_sum(ctx, tg_mul_scalar(ctx, w, 2));
    tg_tensor *old_x = tg_ones(ctx, TG_F64, TG_SHAPE(2));
    tg_set_name(ctx, old_x, "old_x");
    tg_reset(ctx);
    tg_tensor *fresh = tg_sum(ctx, tg_mul_scalar(ctx, w, 7));
    ck_assert_ptr_ne(fresh, old); /* the address was not handed out again */
    ck_assert_int_eq(tg_backward(ctx, old), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "ended step");
    ck_assert_ptr_null(w->grad);
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_add(ctx, old_x, w));
    ck_error(ctx, TG_ESTATE, "'old_x'");
    tg_clear_error(ctx);
    /* the new graph is untouched */
    ck_assert_int_eq(tg_backward(ctx, fresh), TG_OK);
    ck_close(tg_get(w->grad, 0), 7, 0);
    tg_ctx_free(ctx);
}
END_TEST

/* The environment variable turns checked mode on for an existing program;
 * addresses are not reused for TG_CHECKED_STEPS resets. */
START_TEST(checked_mode_from_the_environment)
{
    setenv("TAPEGRAD_CHECKED", "1", 1);
    tg_ctx *ctx = tg_ctx_new(1);
    unsetenv("TAPEGRAD_CHECKED");
    ck_assert(tg_checked(ctx));
    tg_ctx *plain = tg_ctx_new(1);
    ck_assert(!tg_checked(plain));
    tg_ctx_free(plain);
    void *seen[TG_CHECKED_STEPS + 1];
    for (int s = 0; s <= TG_CHECKED_STEPS; s++) {
        seen[s] = tg_zeros(ctx, TG_F32, TG_SHAPE(4));
        for (int k = 0; k < s; k++)
            ck_assert_ptr_ne(seen[s], seen[k]);
        tg_reset(ctx);
    }
    tg_ctx_free(ctx);
}
END_TEST

/* A tensor of another context is an error in every mode. */
START_TEST(tensor_of_another_context)
{
    tg_ctx *a = tg_ctx_new(1), *b = tg_ctx_new(2);
    tg_tensor *x = tg_ones(a, TG_F64, TG_SHAPE(2));
    tg_tensor *w = tg_param(b, TG_F64, TG_SHAPE(2), "w");
    ck_assert_ptr_null(tg_mul(b, x, w));
    ck_error(b, TG_EINVAL, "another context");
    tg_clear_error(b);
    ck_assert_int_eq(tg_fill(b, x, 3), TG_EINVAL);
    tg_clear_error(b);
    tg_tensor *loss = tg_sum(a, tg_mul(a, x, x));
    ck_assert_int_eq(tg_backward(b, loss), TG_EINVAL);
    ck_error(b, TG_EINVAL, "another context");
    ck_assert_int_eq(tg_param_free(a, w), TG_EINVAL);
    ck_assert(tg_get(x, 0) == 1);
    tg_ctx_free(a);
    tg_ctx_free(b);
}
END_TEST

/* ---------------------------------------------------------------- ownership */

/* tg_param_free(ctx, w->grad) used to be accepted: the list emptied while
 * its count said 1, and every parameter leaked. */
START_TEST(param_free_takes_only_live_parameters)
{
    test_alloc al = {0};
    tg_ctx *ctx = test_ctx_with(&al, 1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_tensor *v = tg_param(ctx, TG_F32, TG_SHAPE(3), "v");
    tg_tensor *rm = tg_buffer(ctx, TG_F32, TG_SHAPE(3), "running_mean");
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_mul(ctx, w, w))), TG_OK);
    ck_assert_int_eq(tg_param_free(ctx, w->grad), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "not a live parameter");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_param_free(ctx, tg_zeros(ctx, TG_F64, TG_SHAPE(2))), TG_EINVAL);
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_param_free(ctx, rm), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "other kind");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_param_free(ctx, NULL), TG_EINVAL);
    tg_clear_error(ctx);
    /* a forged flag decides nothing */
    tg_tensor *s = tg_zeros(ctx, TG_F64, TG_SHAPE(2));
    s->persistent = true;
    ck_assert_int_eq(tg_param_free(ctx, s), TG_EINVAL);
    tg_clear_error(ctx);
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    ck_assert_uint_eq(st.params, 2);
    ck_assert_uint_eq(st.buffers, 1);
    ck_assert_ptr_eq(tg_param_next(ctx, NULL), w);
    ck_assert_int_eq(tg_param_free(ctx, w), TG_OK);
    ck_assert_int_eq(tg_param_free(ctx, w), TG_EINVAL); /* freed twice */
    tg_clear_error(ctx);
    ck_assert_ptr_eq(tg_param_next(ctx, NULL), v);
    ck_assert_ptr_null(tg_param_next(ctx, v));
    ck_assert_int_eq(tg_buffer_free(ctx, rm), TG_OK);
    tg_ctx_free(ctx);
    ck_assert_int_eq(al.live_bytes, 0);
}
END_TEST

/* A model's parameters in one block: members are views, the block's grad
 * holds every member's gradient, and ownership stays with the block. */
START_TEST(parameter_blocks)
{
    test_alloc al = {0};
    tg_ctx *ctx = test_ctx_with(&al, 1);
    tg_param_spec specs[2] = {{"0.weight", 2, {2, 3}}, {"0.bias", 1, {2}}};
    tg_tensor *p[2], *block = NULL;
    ck_assert_int_eq(tg_param_block(ctx, TG_F64, 2, specs, p, &block), TG_OK);
    ck_assert_int_eq(block->numel, 8);
    ck_assert_ptr_eq(p[0]->data, block->data);
    ck_assert_ptr_eq(p[1]->data, (double *)block->data + 6);
    ck_assert_ptr_eq(p[1]->grad->data, (double *)block->grad->data + 6);
    ck_assert_str_eq(p[1]->name, "0.bias");
    /* listed as parameters, the block itself is not */
    ck_assert_ptr_eq(tg_param_next(ctx, NULL), p[0]);
    ck_assert_ptr_eq(tg_param_next(ctx, p[0]), p[1]);
    ck_assert_ptr_null(tg_param_next(ctx, p[1]));
    tg_fill(ctx, block, 1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(1, 3));
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_linear(ctx, x, p[0], p[1]))), TG_OK);
    const double want[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    ck_tensor(block->grad, want, 0);
    /* a step over the block between forward and backward is seen by the members */
    tg_tensor *loss = tg_sum(ctx, tg_linear(ctx, x, p[0], p[1]));
    tg_fill(ctx, block, 2);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "'0.weight'");
    tg_clear_error(ctx);
    tg_reset(ctx);
    /* a member alone cannot be freed; the block frees them all */
    ck_assert_int_eq(tg_param_free(ctx, p[0]), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "parameter block");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_param_free(ctx, block), TG_OK);
    ck_assert_ptr_null(tg_param_next(ctx, NULL));
    /* every allocation failed in turn: an error, nothing left behind */
    for (long k = 1;; k++) {
        al.fail_at = al.calls + k;
        al.failed = 0;
        tg_status st = tg_param_block(ctx, TG_F32, 2, specs, p, &block);
        if (!al.failed) {
            ck_assert_int_eq(st, TG_OK);
            break;
        }
        ck_assert_int_eq(st, TG_ENOMEM);
        ck_assert_ptr_null(tg_param_next(ctx, NULL));
        tg_clear_error(ctx);
    }
    al.fail_at = 0;
    tg_ctx_free(ctx);
    ck_assert_int_eq(al.live_bytes, 0);
}
END_TEST

/* tg_set_name(ctx, w, w->name) read the name after freeing it. */
START_TEST(rename_with_own_name)
{
    test_alloc al = {0};
    tg_ctx *ctx = test_ctx_with(&al, 1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "weight");
    ck_assert_ptr_eq(tg_set_name(ctx, w, "renamed_weight"), w);
    ck_assert_ptr_eq(tg_set_name(ctx, w, w->name), w);
    ck_assert_str_eq(w->name, "renamed_weight");
    ck_assert_ptr_eq(tg_set_name(ctx, w, w->name + 8), w);
    ck_assert_str_eq(w->name, "weight");
    tg_tensor *x = tg_zeros(ctx, TG_F64, TG_SHAPE(1));
    tg_set_name(ctx, x, "x");
    ck_assert_ptr_eq(tg_set_name(ctx, x, x->name), x);
    ck_assert_str_eq(x->name, "x");
    ck_assert_ptr_eq(tg_set_name(ctx, w, NULL), w);
    ck_assert_ptr_null(w->name);
    tg_ctx_free(ctx);
    ck_assert_int_eq(al.live_bytes, 0);
}
END_TEST

/* ---------------------------------------------------------------- buffers and int64 */

START_TEST(buffers_are_persistent_without_gradients)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_tensor *rm = tg_buffer(ctx, TG_F64, TG_SHAPE(2), "running_mean");
    tg_tensor *nbt = tg_buffer(ctx, TG_I64, 0, NULL, "num_batches_tracked");
    ck_assert(rm->persistent && !rm->requires_grad && rm->kind == TG_KIND_BUFFER);
    ck_assert_int_eq(nbt->dtype, TG_I64);
    ck_assert_int_eq(nbt->numel, 1);
    /* listed apart from the parameters */
    ck_assert_ptr_eq(tg_param_next(ctx, NULL), w);
    ck_assert_ptr_null(tg_param_next(ctx, w));
    ck_assert_ptr_eq(tg_buffer_next(ctx, NULL), rm);
    ck_assert_ptr_eq(tg_buffer_next(ctx, rm), nbt);
    ck_assert_ptr_null(tg_buffer_next(ctx, nbt));
    /* no gradient can be asked of a buffer */
    ck_assert_int_eq(tg_set_requires_grad(ctx, rm, true), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "buffer");
    tg_clear_error(ctx);
    /* it survives a reset and takes part in ops as a constant */
    tg_fill(ctx, rm, 2);
    tg_reset(ctx);
    tg_tensor *loss = tg_sum(ctx, tg_mul(ctx, w, rm));
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    ck_assert_ptr_null(rm->grad);
    ck_close(tg_get(w->grad, 1), 2, 0);
    /* int64 counters count exactly past 2^53 */
    ((int64_t *)nbt->data)[0] = ((int64_t)1 << 53) + 1;
    ck_assert(((int64_t *)nbt->data)[0] + 1 == ((int64_t)1 << 53) + 2);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(int64_tensors)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *idx = tg_from_data(ctx, TG_I64, TG_SHAPE(3), (const int64_t[]){0, 2, -5});
    ck_assert_str_eq(tg_dtype_name(TG_I64), "int64");
    ck_assert_uint_eq(tg_dtype_size(TG_I64), 8);
    ck_assert(!tg_dtype_is_float(TG_I64) && tg_dtype_is_float(TG_F32));
    ck_assert(tg_get(idx, 2) == -5);
    tg_set(idx, 0, 3.9); /* truncated toward zero, as a C cast */
    ck_assert(((int64_t *)idx->data)[0] == 3);
    tg_set(idx, 0, 1e300); /* saturates instead of undefined behaviour */
    ck_assert(((int64_t *)idx->data)[0] == INT64_MAX);
    tg_set(idx, 0, NAN);
    ck_assert(((int64_t *)idx->data)[0] == 0);
    tg_tensor *f = tg_to_dtype(ctx, idx, TG_F64);
    ck_assert(tg_get(f, 1) == 2);
    /* never differentiated */
    ck_assert_int_eq(tg_set_requires_grad(ctx, idx, true), TG_EDTYPE);
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_param(ctx, TG_I64, TG_SHAPE(2), "p"));
    ck_error(ctx, TG_EDTYPE, "buffer");
    tg_clear_error(ctx);
    /* ops that do not take integers say so */
    ck_assert_ptr_null(tg_relu(ctx, idx));
    ck_error(ctx, TG_EDTYPE, "relu: input 0 is (3) int64");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_rand(ctx, TG_I64, TG_SHAPE(2), 0, 1));
    ck_error(ctx, TG_EDTYPE, "rand");
    tg_clear_error(ctx);
    tg_tensor *filled = tg_full(ctx, TG_I64, TG_SHAPE(2), 7);
    ck_assert(((int64_t *)filled->data)[1] == 7);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- degenerate arguments */

START_TEST(random_tensors_refuse_bad_ranges)
{
    tg_ctx *ctx = tg_ctx_new(1);
    ck_assert_ptr_null(tg_rand(ctx, TG_F64, TG_SHAPE(2), 1, 0));
    ck_error(ctx, TG_EINVAL, "lo = 1 is above hi = 0");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_randn(ctx, TG_F64, TG_SHAPE(2), 0, -1));
    ck_error(ctx, TG_EINVAL, "std = -1 is negative");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_rand(ctx, TG_F32, TG_SHAPE(2), 0, NAN));
    ck_error(ctx, TG_EINVAL, "finite");
    tg_clear_error(ctx);
    ck_assert_ptr_nonnull(tg_rand(ctx, TG_F32, TG_SHAPE(2), 3, 3)); /* lo == hi: all 3 */
    ck_assert_ptr_nonnull(tg_randn(ctx, TG_F32, TG_SHAPE(2), 0, 0));
    tg_ctx_free(ctx);
}
END_TEST

/* Numbers in messages read back as themselves. */
START_TEST(numbers_in_messages_round_trip)
{
    tg_ctx *ctx = tg_ctx_new(1);
    ck_assert_ptr_null(tg_rand(ctx, TG_F64, TG_SHAPE(2), 1.0000001, 1));
    ck_error(ctx, TG_EINVAL, "lo = 1.0000001 is above hi = 1");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_rand(ctx, TG_F64, TG_SHAPE(2), 0.30000000000000004, 0.3));
    ck_error(ctx, TG_EINVAL, "0.30000000000000004");
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- anomaly mode */

START_TEST(anomaly_names_the_op_and_the_line)
{
    tg_ctx *ctx = tg_ctx_new(1);
    ck_assert(!tg_set_detect_anomaly(ctx, true));
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2, 3), "w");
    tg_tensor *e = tg_exp(ctx, w);
    ck_assert_ptr_nonnull(e);
    int line = __LINE__ + 1;
    tg_tensor *y = tg_log(ctx, tg_sub(ctx, e, e)); /* log(0) */
    ck_assert_ptr_null(y);
    ck_error(ctx, TG_ENONFINITE, "anomaly: log (tape index 2");
    ck_error(ctx, TG_ENONFINITE, "produced Inf at output element 0");
    ck_error(ctx, TG_ENONFINITE, "input shapes (2, 3)");
    char where[64];
    snprintf(where, sizeof where, "test_hardening.c:%d", line);
    ck_error(ctx, TG_ENONFINITE, where);
    tg_set_detect_anomaly(ctx, false);
    tg_clear_error(ctx);
    /* off: the same graph runs, and its infinities are the user's business */
    ck_assert_ptr_nonnull(tg_log(ctx, tg_sub(ctx, e, e)));
    tg_ctx_free(ctx);
}
END_TEST

/* sqrt at 0 is finite forward, but its vjp divides by 0: caught in backward. */
START_TEST(anomaly_in_backward)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_set_detect_anomaly(ctx, true);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_tensor *loss = tg_sum(ctx, tg_sqrt(ctx, w));
    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_ENONFINITE);
    ck_error(ctx, TG_ENONFINITE, "backward of sqrt (tape index 0");
    ck_error(ctx, TG_ENONFINITE, "Inf in the gradient of input 0");
    tg_ctx_free(ctx);
}
END_TEST

/* An exploding learning rate: plain SGD on sum(w^4) diverges; anomaly mode
 * stops at the first op whose output overflows. */
START_TEST(anomaly_with_an_exploding_learning_rate)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_set_detect_anomaly(ctx, true);
    tg_tensor *w = tg_param(ctx, TG_F32, TG_SHAPE(4), "w");
    tg_fill(ctx, w, 3);
    int step, code = TG_OK;
    for (step = 0; step < 50 && code == TG_OK; step++) {
        tg_tensor *loss = tg_sum(ctx, tg_pow(ctx, w, 4));
        code = tg_backward(ctx, loss);
        for (int64_t i = 0; code == TG_OK && i < w->numel; i++)
            tg_set(w, i, tg_get(w, i) - 10.0 * tg_get(w->grad, i));
        tg_zero_grad(ctx);
        tg_reset(ctx);
    }
    ck_assert_int_eq(code, TG_ENONFINITE);
    ck_assert_int_lt(step, 50);
    ck_error(ctx, TG_ENONFINITE, "anomaly:");
    ck_error(ctx, TG_ENONFINITE, "test_hardening.c:");
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- out of memory */

/* Out of memory in a vjp names the op it was in. */
START_TEST(oom_in_backward_names_the_op)
{
    test_alloc al = {0};
    tg_ctx_opts o = {0};
    o.alloc = test_alloc_fn;
    o.alloc_ud = &al;
    o.arena_chunk = 256;
    tg_ctx *ctx = tg_ctx_new_opts(&o);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(64), "w");
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(64));
    tg_tensor *loss = tg_sum(ctx, tg_exp(ctx, tg_mul(ctx, w, x)));
    ck_assert_ptr_nonnull(loss);
    /* fail each allocation of the backward in turn: every message names
     * backward, and those inside a vjp name its op */
    bool named_op = false;
    for (long k = 1; k < 64; k++) {
        al.fail_at = al.calls + k;
        al.failed = 0;
        tg_status st = tg_backward_ex(ctx, loss, NULL, TG_RETAIN_GRAPH);
        if (!al.failed) {
            ck_assert_int_eq(st, TG_OK);
            break;
        }
        ck_assert_int_eq(st, TG_ENOMEM);
        ck_error(ctx, TG_ENOMEM, "out of memory allocating");
        ck_assert_msg(strncmp(tg_errmsg(ctx), "backward", 8) == 0, "%s", tg_errmsg(ctx));
        named_op |= strstr(tg_errmsg(ctx), "backward of exp: ") != NULL ||
                    strstr(tg_errmsg(ctx), "backward of mul: ") != NULL;
        tg_clear_error(ctx);
        tg_zero_grad(ctx);
    }
    ck_assert(named_op);
    tg_ctx_free(ctx);
    ck_assert_int_eq(al.live_bytes, 0);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("hardening");
    TCase *tc = tcase_create("versions");
    tcase_add_test(tc, write_between_forward_and_backward);
    tcase_add_test(tc, every_write_bumps_the_version);
    tcase_add_test(tc, write_to_an_output_the_vjp_reads);
    tcase_add_test(tc, write_after_backward_is_fine);
    tcase_add_test(tc, views_share_the_version);
    suite_add_tcase(s, tc);
    tc = tcase_create("no_vjp");
    tcase_add_test(tc, op_without_vjp_is_an_error_in_backward);
    suite_add_tcase(s, tc);
    tc = tcase_create("stale");
    tcase_add_test(tc, tensor_of_an_ended_step_checked);
    tcase_add_test(tc, checked_mode_from_the_environment);
    tcase_add_test(tc, tensor_of_another_context);
    suite_add_tcase(s, tc);
    tc = tcase_create("ownership");
    tcase_add_test(tc, param_free_takes_only_live_parameters);
    tcase_add_test(tc, rename_with_own_name);
    tcase_add_test(tc, parameter_blocks);
    suite_add_tcase(s, tc);
    tc = tcase_create("types");
    tcase_add_test(tc, buffers_are_persistent_without_gradients);
    tcase_add_test(tc, int64_tensors);
    tcase_add_test(tc, random_tensors_refuse_bad_ranges);
    tcase_add_test(tc, numbers_in_messages_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("anomaly");
    tcase_add_test(tc, anomaly_names_the_op_and_the_line);
    tcase_add_test(tc, anomaly_in_backward);
    tcase_add_test(tc, anomaly_with_an_exploding_learning_rate);
    tcase_add_test(tc, oom_in_backward_names_the_op);
    suite_add_tcase(s, tc);
    return s;
}
