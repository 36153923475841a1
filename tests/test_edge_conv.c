/*
 * test_edge_conv.c: misuse and edge cases of convolution and pooling:
 * sizes that overflow, degenerate attributes, empty tensors, NaN, float32
 * accumulation, values the vjps do not read, dtypes, and allocation failure.
 * Where the issue is silent the library does what PyTorch does; each such
 * test says what PyTorch returns or raises.
 */
#include <stdint.h>
#include <string.h>

#include "testutil.h"

/* Asserts that expr failed with this code and a message containing text, then clears it. */
#define EXPECT(ctx, expr, code, text)        \
    do {                                     \
        ck_assert_ptr_null(expr);            \
        ck_error((ctx), (code), (text));     \
        tg_clear_error(ctx);                 \
    } while (0)

static tg_tensor *grad_leaf(tg_ctx *ctx, tg_tensor *t)
{
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(tg_set_requires_grad(ctx, t, true), TG_OK);
    return t;
}

static tg_tensor *vec(tg_ctx *ctx, tg_dtype dt, int64_t n, const double *v, int ndim)
{
    return ndim == 3 ? tg_from_f64(ctx, dt, TG_SHAPE(1, 1, n), v)
                     : tg_from_f64(ctx, dt, TG_SHAPE(1, 1, 1, n), v);
}

/* ------------------------------------------------------------ overflow */

START_TEST(conv_dilation_overflows)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 8));
    tg_tensor *w = tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 3));
    /* 2^62 (3 - 1) + 1 does not fit in int64 */
    EXPECT(ctx, tg_conv1d(ctx, x, w, NULL, 1, 0, INT64_C(1) << 62, 1), TG_ESHAPE,
           "conv1d: kernel 3 with dilation 4611686018427387904 spans more than can be addressed");
    /* (INT64_MAX / 2) (3 - 1) + 1 is exactly INT64_MAX: it fits, and is too long */
    EXPECT(ctx, tg_conv1d(ctx, x, w, NULL, 1, 0, INT64_MAX / 2, 1), TG_ESHAPE,
           "conv1d: the kernel spans 9223372036854775807 but the padded input is only 8 long");
    tg_tensor *x2 = tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 8, 8));
    tg_tensor *w2 = tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 3, 3));
    tg_conv_attrs a = {{1, 1}, {0, 0}, {1, INT64_MAX / 2 + 1}, 1};
    EXPECT(ctx, tg_conv2d_ex(ctx, x2, w2, NULL, &a), TG_ESHAPE,
           "conv2d: kernel 3 x 3 with dilation 1 x 4611686018427387904 spans more than can be "
           "addressed");
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(conv_padding_overflows)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 8));
    tg_tensor *w = tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 3));
    /* 8 + 2 (INT64_MAX / 2) overflows */
    EXPECT(ctx, tg_conv1d(ctx, x, w, NULL, 1, INT64_MAX / 2, 1, 1), TG_ESHAPE,
           "conv1d: input 8 with padding 4611686018427387903 on each side is larger than can be "
           "addressed");
    tg_tensor *x2 = tg_ones(ctx, TG_F32, TG_SHAPE(1, 1, 1, 1));
    tg_tensor *w2 = tg_ones(ctx, TG_F32, TG_SHAPE(1, 1, 1, 1));
    EXPECT(ctx, tg_conv2d(ctx, tg_ones(ctx, TG_F32, TG_SHAPE(1, 1, 3, 3)), w2, NULL, 1,
                          INT64_MAX / 2, 1, 1), TG_ESHAPE,
           "conv2d: input 3 x 3 with padding 4611686018427387903 x 4611686018427387903 on each "
           "side is larger than can be addressed");
    /* 1 + 2 (INT64_MAX / 2) fits: INT64_MAX rows and columns */
    EXPECT(ctx, tg_conv2d(ctx, x2, w2, NULL, 1, INT64_MAX / 2, 1, 1), TG_ESHAPE,
           "conv2d: an output of 9223372036854775807 x 9223372036854775807 per channel is more "
           "than can be addressed");
    /* padding 2^31: 2^32 + 1 rows and columns, whose product overflows int64 */
    EXPECT(ctx, tg_conv2d(ctx, x2, w2, NULL, 1, INT64_C(1) << 31, 1, 1), TG_ESHAPE,
           "conv2d: an output of 4294967297 x 4294967297 per channel is more than can be "
           "addressed");
    /* padding 2^20: (2^21 + 1)^2 positions fit int64 but not BLAS's int */
    EXPECT(ctx, tg_conv2d(ctx, x2, w2, NULL, 1, INT64_C(1) << 20, 1, 1), TG_ESHAPE,
           "conv2d: output positions per channel = 4398050705409 exceeds the BLAS limit 2147483647");
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(pool_padding_overflows)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = grad_leaf(ctx, tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 3, 3)));
    /* the fuzzer's case: 2 INT64_MAX wrapped, the check passed and backward wrote x.grad[-1] */
    EXPECT(ctx, tg_max_pool2d_ex(ctx, x, 2, 1, INT64_MAX), TG_EINVAL,
           "max_pool2d: padding 9223372036854775807 must be between 0 and half the kernel size 2");
    EXPECT(ctx, tg_avg_pool1d_ex(ctx, tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 3)), 2, 1, INT64_MAX),
           TG_EINVAL, "avg_pool1d: padding 9223372036854775807 must be between 0 and half");
    /* half of a huge kernel is allowed, but 3 + 2 (INT64_MAX / 2) overflows */
    EXPECT(ctx, tg_max_pool2d_ex(ctx, x, INT64_MAX, 1, INT64_MAX / 2), TG_ESHAPE,
           "max_pool2d: input 3 x 3 with padding 4611686018427387903 x 4611686018427387903 on "
           "each side is larger than can be addressed");
    tg_ctx_free(ctx);
}
END_TEST

/* A kernel of INT64_MAX over one element padded by INT64_MAX / 2 on each
 * side: one window, found without walking the kernel. PyTorch gives the
 * element for max pooling and element / kernel for average pooling. */
START_TEST(pool_huge_kernel_one_window)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = grad_leaf(ctx, tg_full(ctx, TG_F64, TG_SHAPE(1, 1, 1), 5));
    tg_tensor *m = tg_max_pool1d_ex(ctx, x, INT64_MAX, 1, INT64_MAX / 2);
    tg_tensor *a = tg_avg_pool1d_ex(ctx, x, INT64_MAX, 1, INT64_MAX / 2);
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(m->numel, 1);
    ck_close(tg_get(m, 0), 5, 0);
    ck_close(tg_get(a, 0) * 9223372036854775807.0, 5, 1e-15);
    ck_assert_int_eq(tg_backward(ctx, tg_add(ctx, tg_sum(ctx, m), tg_sum(ctx, a))), TG_OK);
    ck_close(tg_get(x->grad, 0), 1 + 1 / 9223372036854775807.0, 1e-15);
    tg_ctx_free(ctx);
}
END_TEST

/* Strides and paddings near 2^62 that fit: positions are computed without
 * overflow (UBSan would report it). PyTorch gives the same values. */
START_TEST(huge_stride_and_padding_compute)
{
    tg_ctx *ctx = tg_ctx_new(1);
    int64_t p = INT64_C(1) << 61, s = INT64_C(1) << 62;
    tg_tensor *x = grad_leaf(ctx, vec(ctx, TG_F64, 4, (const double[]){1, 2, 3, 4}, 3));
    /* padded length 2^62 + 4: outputs at -2^61 and 2^61, both in the padding */
    tg_tensor *y = tg_conv1d(ctx, x, tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 1)), NULL, s, p, 1, 1);
    ck_assert_ptr_nonnull(y);
    ck_tensor(y, ((const double[]){0, 0}), 0);
    /* one window from -2^61 to 2^61 covers the whole input */
    tg_tensor *m = tg_max_pool1d_ex(ctx, x, s, s, p);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(m->numel, 1);
    ck_close(tg_get(m, 0), 4, 0);
    ck_assert_int_eq(tg_backward(ctx, tg_add(ctx, tg_sum(ctx, y), tg_sum(ctx, m))), TG_OK);
    ck_tensor(x->grad, ((const double[]){0, 0, 0, 1}), 0);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ degenerate */

START_TEST(conv_degenerate_attributes)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(1, 4, 5, 5));
    tg_tensor *w = tg_ones(ctx, TG_F64, TG_SHAPE(2, 4, 3, 3));
    EXPECT(ctx, tg_conv2d(ctx, x, w, NULL, -3, 0, 1, 1), TG_EINVAL, "conv2d: stride -3; it must be >= 1");
    EXPECT(ctx, tg_conv2d(ctx, x, w, NULL, 1, 0, 0, 1), TG_EINVAL, "conv2d: dilation 0; it must be >= 1");
    EXPECT(ctx, tg_conv2d(ctx, x, w, NULL, 1, 0, -2, 1), TG_EINVAL, "conv2d: dilation -2; it must be >= 1");
    EXPECT(ctx, tg_conv2d(ctx, x, w, NULL, 1, -1, 1, 1), TG_EINVAL, "conv2d: padding -1; it must be >= 0");
    EXPECT(ctx, tg_conv2d(ctx, x, w, NULL, 1, 0, 1, 0), TG_EINVAL, "conv2d: groups = 0; it must be >= 1");
    EXPECT(ctx, tg_conv2d(ctx, x, w, NULL, 1, 0, 1, -2), TG_EINVAL, "conv2d: groups = -2; it must be >= 1");
    EXPECT(ctx, tg_conv2d(ctx, x, tg_ones(ctx, TG_F64, TG_SHAPE(3, 2, 3, 3)), NULL, 1, 0, 1, 2),
           TG_EINVAL, "conv2d: groups = 2 must divide both the 4 input channels and the 3 filters");
    tg_conv_attrs a = {{1, 0}, {0, 0}, {1, 1}, 1};
    EXPECT(ctx, tg_conv2d_ex(ctx, x, w, NULL, &a), TG_EINVAL, "conv2d: stride 0; it must be >= 1");
    tg_conv_attrs d = {{1, 1}, {0, 0}, {1, -5}, 1};
    EXPECT(ctx, tg_conv2d_ex(ctx, x, w, NULL, &d), TG_EINVAL, "conv2d: dilation -5; it must be >= 1");
    /* PyTorch: "Given groups=1, expected weight to be at least 1 at dimension 0" */
    EXPECT(ctx, tg_conv2d(ctx, x, tg_ones(ctx, TG_F64, TG_SHAPE(0, 4, 3, 3)), NULL, 1, 0, 1, 1),
           TG_ESHAPE, "conv2d: weight (0, 4, 3, 3) has no filters");
    tg_ctx_free(ctx);
}
END_TEST

/* A kernel of size 0 made an all-zero output longer than the input; PyTorch
 * refuses it ("kernel size should be greater than zero"). */
START_TEST(conv_kernel_size_zero)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(1, 4, 5, 5));
    EXPECT(ctx, tg_conv2d(ctx, x, tg_ones(ctx, TG_F64, TG_SHAPE(2, 4, 0, 3)), NULL, 1, 0, 1, 1),
           TG_ESHAPE, "conv2d: weight (2, 4, 0, 3) has a kernel of size 0 x 3; it must be at least 1");
    EXPECT(ctx, tg_conv1d(ctx, tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 5)),
                          tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 0)), NULL, 1, 0, 1, 1),
           TG_ESHAPE, "conv1d: weight (1, 1, 0) has a kernel of size 0; it must be at least 1");
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch: "Kernel size can't be greater than actual input size"; the
 * message names input, kernel, padding and dilation. */
START_TEST(conv_output_too_small)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 3, 4));
    tg_tensor *w = tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 3, 3));
    EXPECT(ctx, tg_conv2d(ctx, x, w, NULL, 1, 1, 3, 1), TG_ESHAPE,
           "conv2d: the kernel spans 7 x 7 but the padded input is only 5 x 6 (input 3 x 4, kernel "
           "3 x 3, padding 1 x 1, dilation 3 x 3): the output would be empty");
    /* one axis too short is enough */
    tg_conv_attrs a = {{1, 1}, {1, 1}, {2, 1}, 1};
    EXPECT(ctx, tg_conv2d_ex(ctx, tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 2, 9)), w, NULL, &a),
           TG_ESHAPE, "conv2d: the kernel spans 5 x 3 but the padded input is only 4 x 11");
    /* exactly as long as the kernel's span: one output */
    tg_tensor *y = tg_conv2d(ctx, x, w, NULL, 1, 1, 2, 1);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->shape[2], 1);
    ck_assert_int_eq(y->shape[3], 2);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(pool_degenerate_attributes)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(1, 2, 5, 5));
    tg_tensor *x1 = tg_ones(ctx, TG_F64, TG_SHAPE(1, 2, 5));
    EXPECT(ctx, tg_max_pool2d(ctx, x, 0), TG_EINVAL, "max_pool2d: kernel size 0; it must be >= 1");
    EXPECT(ctx, tg_avg_pool1d(ctx, x1, -1), TG_EINVAL, "avg_pool1d: kernel size -1; it must be >= 1");
    EXPECT(ctx, tg_avg_pool2d_ex(ctx, x, 2, -2, 0), TG_EINVAL, "avg_pool2d: stride -2; it must be >= 1");
    EXPECT(ctx, tg_max_pool1d_ex(ctx, x1, 2, 0, 0), TG_EINVAL, "max_pool1d: stride 0; it must be >= 1");
    EXPECT(ctx, tg_max_pool1d_ex(ctx, x1, 2, 1, -1), TG_EINVAL,
           "max_pool1d: padding -1 must be between 0 and half the kernel size 2");
    /* PyTorch: "pad should be at most half of effective kernel size": 1 of 3 is fine, 2 is not */
    ck_assert_ptr_nonnull(tg_max_pool2d_ex(ctx, x, 3, 1, 1));
    EXPECT(ctx, tg_max_pool2d_ex(ctx, x, 3, 1, 2), TG_EINVAL,
           "max_pool2d: padding 2 must be between 0 and half the kernel size 3");
    tg_pool_attrs a = {{3, 2}, {1, 1}, {1, 2}, {1, 1}, false, false};
    EXPECT(ctx, tg_apply_named(ctx, "avg_pool2d", &x, 1, &a), TG_EINVAL,
           "avg_pool2d: padding 2 must be between 0 and half the kernel size 2");
    /* PyTorch: "Output size is too small"; the message names input, kernel and padding */
    EXPECT(ctx, tg_max_pool1d(ctx, tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 3)), 4), TG_ESHAPE,
           "max_pool1d: kernel 4 is larger than the padded input 3 (input 3, padding 0): the output "
           "would be empty");
    tg_pool_attrs b = {{2, 8}, {1, 1}, {1, 1}, {1, 1}, false, false};
    EXPECT(ctx, tg_apply_named(ctx, "max_pool2d", &x, 1, &b), TG_ESHAPE,
           "max_pool2d: kernel 2 x 8 is larger than the padded input 7 x 7 (input 5 x 5, padding "
           "1 x 1)");
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ empty */

/* An empty batch gives an empty output of the right shape, and zero
 * gradients for weight and bias (as PyTorch's Empty convolution backend). */
START_TEST(conv_empty_batch)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = grad_leaf(ctx, tg_zeros(ctx, TG_F32, TG_SHAPE(0, 4, 5, 5)));
    tg_tensor *w = grad_leaf(ctx, tg_ones(ctx, TG_F32, TG_SHAPE(2, 4, 3, 3)));
    tg_tensor *b = grad_leaf(ctx, tg_ones(ctx, TG_F32, TG_SHAPE(2)));
    tg_tensor *y = tg_conv2d(ctx, x, w, b, 2, 1, 1, 1);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->ndim, 4);
    ck_assert_int_eq(y->shape[0], 0);
    ck_assert_int_eq(y->shape[1], 2);
    ck_assert_int_eq(y->shape[2], 3);
    ck_assert_int_eq(y->shape[3], 3);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_OK);
    ck_assert_int_eq(x->grad->numel, 0);
    for (int64_t i = 0; i < w->numel; i++)
        ck_assert(tg_get(w->grad, i) == 0);
    ck_assert(tg_get(b->grad, 0) == 0 && tg_get(b->grad, 1) == 0);
    tg_ctx_free(ctx);
}
END_TEST

/* An empty batch beside a length of 2^40 (whose output exceeds BLAS's int)
 * returns at once; so does an empty batch with no channels, which PyTorch
 * also takes. */
START_TEST(conv_empty_batch_huge_dims)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = grad_leaf(ctx, tg_zeros(ctx, TG_F64, TG_SHAPE(0, 1, INT64_C(1) << 40)));
    tg_tensor *w = grad_leaf(ctx, tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 3)));
    tg_tensor *y = tg_conv1d(ctx, x, w, NULL, 1, 0, 1, 1);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->shape[2], (INT64_C(1) << 40) - 2);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_OK);
    tg_tensor *x0 = tg_zeros(ctx, TG_F64, TG_SHAPE(0, 0, 5, 5));
    y = tg_conv2d(ctx, x0, tg_ones(ctx, TG_F64, TG_SHAPE(3, 0, 3, 3)), NULL, 1, 0, 1, 1);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->shape[1], 3);
    ck_assert_int_eq(y->numel, 0);
    tg_ctx_free(ctx);
}
END_TEST

/* No input channels (or an empty spatial size) with a non-empty batch.
 * PyTorch raises: with C = 0 its Empty backend makes an empty product and
 * fails to view it as (N, K, OH, OW) ("shape '[2, 3, 1048574, 1048574]' is
 * invalid for input of size 0"); with H = 0, "Only zero batch or zero channel
 * inputs are supported". Here both are refused at once, whatever the other
 * sizes. */
START_TEST(conv_empty_input_refused)
{
    tg_ctx *ctx = tg_ctx_new(1);
    int64_t big = INT64_C(1) << 20;
    tg_tensor *x = tg_zeros(ctx, TG_F64, TG_SHAPE(2, 0, big, big));
    EXPECT(ctx, tg_conv2d(ctx, x, tg_ones(ctx, TG_F64, TG_SHAPE(3, 0, 3, 3)), NULL, 1, 0, 1, 1),
           TG_ESHAPE, "conv2d: input (2, 0, 1048576, 1048576) has no elements but a batch of 2");
    tg_tensor *h0 = tg_zeros(ctx, TG_F64, TG_SHAPE(1, 2, 0, 4));
    EXPECT(ctx, tg_conv2d(ctx, h0, tg_ones(ctx, TG_F64, TG_SHAPE(1, 2, 1, 1)), NULL, 1, 1, 1, 1),
           TG_ESHAPE, "conv2d: input (1, 2, 0, 4) has no elements but a batch of 1");
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(pool_empty_batch)
{
    tg_ctx *ctx = tg_ctx_new(1);
    int64_t big = INT64_C(1) << 30;
    tg_tensor *x = grad_leaf(ctx, tg_zeros(ctx, TG_F64, TG_SHAPE(0, big, big, big)));
    tg_tensor *m = tg_max_pool2d(ctx, x, 2);
    tg_tensor *a = tg_avg_pool2d_ex(ctx, x, 3, 2, 1);
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(m->shape[1], big);
    ck_assert_int_eq(m->shape[2], big / 2);
    ck_assert_int_eq(a->shape[3], big / 2);
    ck_assert_int_eq(tg_backward(ctx, tg_add(ctx, tg_sum(ctx, m), tg_sum(ctx, a))), TG_OK);
    ck_assert_int_eq(x->grad->numel, 0);
    tg_tensor *x1 = grad_leaf(ctx, tg_zeros(ctx, TG_F32, TG_SHAPE(0, 3, 7)));
    tg_tensor *m1 = tg_max_pool1d_ex(ctx, x1, 3, 2, 1);
    ck_assert_ptr_nonnull(m1);
    ck_assert_int_eq(m1->shape[2], 4);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, m1)), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch: "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch
 * size for input": only N may be 0. */
START_TEST(pool_empty_refused)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *c0 = tg_zeros(ctx, TG_F64, TG_SHAPE(2, 0, 4, 4));
    EXPECT(ctx, tg_max_pool2d(ctx, c0, 2), TG_ESHAPE,
           "max_pool2d: input (2, 0, 4, 4) is empty outside its batch dimension");
    tg_tensor *l0 = tg_zeros(ctx, TG_F64, TG_SHAPE(1, 2, 0));
    EXPECT(ctx, tg_avg_pool1d_ex(ctx, l0, 2, 1, 1), TG_ESHAPE,
           "avg_pool1d: input (1, 2, 0) is empty outside its batch dimension");
    tg_ctx_free(ctx);
}
END_TEST

/* global_avg_pool is the mean over the spatial dimensions: an empty plane
 * gives NaN, as torch.mean(x, dim=(2, 3)) does, and its gradient is empty. */
START_TEST(global_avg_pool_empty)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = grad_leaf(ctx, tg_zeros(ctx, TG_F32, TG_SHAPE(2, 3, 0, 4)));
    tg_tensor *y = tg_global_avg_pool(ctx, x);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->numel, 6);
    for (int64_t i = 0; i < 6; i++)
        ck_assert(isnan(tg_get(y, i)));
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_OK);
    ck_assert_int_eq(x->grad->numel, 0);
    tg_tensor *n0 = tg_global_avg_pool(ctx, tg_zeros(ctx, TG_F64, TG_SHAPE(0, INT64_C(1) << 40, 5)));
    ck_assert_ptr_nonnull(n0);
    ck_assert_int_eq(n0->shape[1], INT64_C(1) << 40);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ nan */

/* PyTorch's max_pool2d_with_indices takes a value when it is larger than the
 * best so far or NaN: a window with a NaN gives NaN, and the index (so the
 * gradient) is that of the window's last NaN. */
START_TEST(max_pool_nan)
{
    tg_ctx *ctx = tg_ctx_new(1);
    for (int dt = TG_F32; dt <= TG_F64; dt++) {
        tg_tensor *x = grad_leaf(ctx, vec(ctx, (tg_dtype)dt, 4, (const double[]){1, NAN, 3, 2}, 3));
        tg_tensor *y = tg_max_pool1d(ctx, x, 4);
        ck_assert_ptr_nonnull(y);
        ck_assert(isnan(tg_get(y, 0)));
        tg_tensor *g = tg_full(ctx, (tg_dtype)dt, TG_SHAPE(1, 1, 1), 2);
        ck_assert_int_eq(tg_backward_ex(ctx, y, g, 0), TG_OK);
        ck_tensor(x->grad, ((const double[]){0, 2, 0, 0}), 0);
        /* two NaNs: the later one takes the gradient */
        x = grad_leaf(ctx, vec(ctx, (tg_dtype)dt, 4, (const double[]){NAN, 5, NAN, 1}, 4));
        tg_pool_attrs a = {{1, 4}, {1, 4}, {0, 0}, {1, 1}, false, false};
        y = tg_apply_named(ctx, "max_pool2d", &x, 1, &a);
        ck_assert_ptr_nonnull(y);
        ck_assert(isnan(tg_get(y, 0)));
        g = tg_full(ctx, (tg_dtype)dt, TG_SHAPE(1, 1, 1, 1), 2);
        ck_assert_int_eq(tg_backward_ex(ctx, y, g, 0), TG_OK);
        ck_tensor(x->grad, ((const double[]){0, 0, 2, 0}), 0);
        tg_reset(ctx);
    }
    tg_ctx_free(ctx);
}
END_TEST

/* Over a window of -inf PyTorch's index stays at the window's first
 * element, and ties go to the first maximum. */
START_TEST(max_pool_inf_and_ties)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = grad_leaf(ctx, vec(ctx, TG_F64, 4, (const double[]){-INFINITY, -INFINITY, 7, 7}, 3));
    tg_tensor *y = tg_max_pool1d(ctx, x, 2);
    ck_assert_ptr_nonnull(y);
    ck_assert(tg_get(y, 0) == -INFINITY);
    ck_close(tg_get(y, 1), 7, 0);
    tg_tensor *g = tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 1, 2), (const double[]){1, 10});
    ck_assert_int_eq(tg_backward_ex(ctx, y, g, 0), TG_OK);
    ck_tensor(x->grad, ((const double[]){1, 0, 10, 0}), 0);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(avg_pool_nan)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = vec(ctx, TG_F32, 4, (const double[]){1, NAN, 3, 5}, 3);
    tg_tensor *y = tg_avg_pool1d(ctx, x, 2);
    ck_assert_ptr_nonnull(y);
    ck_assert(isnan(tg_get(y, 0)));
    ck_close(tg_get(y, 1), 4, 0);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ accumulation */

/* The float32 bias gradient sums N OH OW = 2^20 values of 0.1f: in double it
 * is within 1e-6 of 2^20 0.1f (a float sum drifts by about 1e-3). */
START_TEST(conv_bias_grad_float32)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_zeros(ctx, TG_F32, TG_SHAPE(16, 1, 256, 256));
    tg_tensor *w = tg_ones(ctx, TG_F32, TG_SHAPE(2, 1, 1, 1));
    tg_tensor *b = grad_leaf(ctx, tg_zeros(ctx, TG_F32, TG_SHAPE(2)));
    tg_tensor *y = tg_conv2d(ctx, x, w, b, 1, 0, 1, 1);
    ck_assert_ptr_nonnull(y);
    tg_tensor *g = tg_full(ctx, TG_F32, y->ndim, y->shape, 0.1);
    ck_assert_int_eq(tg_backward_ex(ctx, y, g, 0), TG_OK);
    double exact = 1048576.0 * (double)0.1f;
    ck_close(tg_get(b->grad, 0), exact, 1e-6);
    ck_close(tg_get(b->grad, 1), exact, 1e-6);
    /* conv1d, padded: im2col path */
    tg_tensor *b1 = grad_leaf(ctx, tg_zeros(ctx, TG_F32, TG_SHAPE(1)));
    tg_tensor *y1 = tg_conv1d(ctx, tg_zeros(ctx, TG_F32, TG_SHAPE(4, 1, 262142)),
                              tg_ones(ctx, TG_F32, TG_SHAPE(1, 1, 3)), b1, 1, 2, 1, 1);
    ck_assert_ptr_nonnull(y1);
    ck_assert_int_eq(y1->numel, 1048576);
    ck_assert_int_eq(tg_backward_ex(ctx, y1, tg_full(ctx, TG_F32, y1->ndim, y1->shape, 0.1), 0), TG_OK);
    ck_close(tg_get(b1->grad, 0), exact, 1e-6);
    tg_ctx_free(ctx);
}
END_TEST

/* 2^20 values of 0.1f summed in double and divided by 2^20 give 0.1f
 * exactly; a float sum does not. */
START_TEST(avg_pools_sum_in_double)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_full(ctx, TG_F32, TG_SHAPE(1, 1, 1048576), 0.1);
    tg_tensor *a = tg_avg_pool1d(ctx, x, 1048576);
    ck_assert_ptr_nonnull(a);
    ck_assert(tg_get(a, 0) == (double)0.1f);
    tg_tensor *x2 = tg_full(ctx, TG_F32, TG_SHAPE(1, 1, 1024, 1024), 0.1);
    tg_tensor *a2 = tg_avg_pool2d(ctx, x2, 1024);
    ck_assert_ptr_nonnull(a2);
    ck_assert(tg_get(a2, 0) == (double)0.1f);
    tg_tensor *m = tg_global_avg_pool(ctx, x2);
    ck_assert_ptr_nonnull(m);
    ck_assert(tg_get(m, 0) == (double)0.1f);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ unused */

/* Values a vjp never reads may be written between forward and backward, as
 * PyTorch allows for what a backward formula does not save. */
START_TEST(conv_bias_may_change)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = grad_leaf(ctx, tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 3, 3)));
    tg_tensor *w = grad_leaf(ctx, tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 2, 2)));
    tg_tensor *b = grad_leaf(ctx, tg_ones(ctx, TG_F64, TG_SHAPE(1)));
    tg_tensor *y = tg_conv2d(ctx, x, w, b, 1, 0, 1, 1);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(tg_fill(ctx, b, 5), TG_OK);
    ck_assert_int_eq(tg_fill(ctx, y, 0), TG_OK);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_OK);
    ck_close(tg_get(b->grad, 0), 4, 0);
    ck_tensor(w->grad, ((const double[]){4, 4, 4, 4}), 0);
    /* x is read (for the weight's gradient): writing it is refused */
    y = tg_conv2d(ctx, x, w, b, 1, 0, 1, 1);
    tg_tensor *loss = tg_sum(ctx, y);
    ck_assert_int_eq(tg_fill(ctx, x, 2), TG_OK);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "backward: conv2d");
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(pool_input_may_change)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = grad_leaf(ctx, vec(ctx, TG_F64, 4, (const double[]){1, 4, 3, 2}, 4));
    tg_pool_attrs a = {{1, 2}, {1, 2}, {0, 0}, {1, 1}, false, false};
    tg_tensor *m = tg_apply_named(ctx, "max_pool2d", &x, 1, &a);
    tg_tensor *v = tg_apply_named(ctx, "avg_pool2d", &x, 1, &a);
    tg_tensor *g = tg_global_avg_pool(ctx, x);
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(v);
    ck_assert_ptr_nonnull(g);
    tg_tensor *loss = tg_add(ctx, tg_add(ctx, tg_sum(ctx, m), tg_sum(ctx, v)), tg_sum(ctx, g));
    ck_assert_int_eq(tg_fill(ctx, x, 9), TG_OK);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    /* max: to 4 and 3, the maxima forward saw; avg 1/2 each; global 1/4 each */
    ck_tensor(x->grad, ((const double[]){0.75, 1.75, 1.75, 0.75}), 1e-15);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ dtype */

START_TEST(conv_mixed_dtypes)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x32 = tg_ones(ctx, TG_F32, TG_SHAPE(1, 1, 3, 3));
    tg_tensor *w64 = tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 2, 2));
    EXPECT(ctx, tg_conv2d(ctx, x32, w64, NULL, 1, 0, 1, 1), TG_EDTYPE,
           "conv2d: inputs are float32 and float64");
    tg_tensor *x64 = tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 5));
    tg_tensor *k64 = tg_ones(ctx, TG_F64, TG_SHAPE(1, 1, 2));
    EXPECT(ctx, tg_conv1d(ctx, x64, k64, tg_ones(ctx, TG_F32, TG_SHAPE(1)), 1, 0, 1, 1), TG_EDTYPE,
           "conv1d: inputs are float64 and float32");
    tg_tensor *i64 = tg_zeros(ctx, TG_I64, TG_SHAPE(1, 1, 3, 3));
    EXPECT(ctx, tg_conv2d(ctx, i64, w64, NULL, 1, 0, 1, 1), TG_EDTYPE,
           "conv2d: input 0 is (1, 1, 3, 3) int64; conv2d takes float32 or float64");
    EXPECT(ctx, tg_max_pool2d(ctx, i64, 2), TG_EDTYPE, "max_pool2d: input 0 is (1, 1, 3, 3) int64");
    EXPECT(ctx, tg_global_avg_pool(ctx, i64), TG_EDTYPE, "global_avg_pool: input 0 is (1, 1, 3, 3) int64");
    /* float32 in, float32 out */
    tg_tensor *y = tg_conv2d(ctx, x32, tg_ones(ctx, TG_F32, TG_SHAPE(1, 1, 2, 2)), NULL, 1, 0, 1, 1);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->dtype, TG_F32);
    ck_close(tg_get(y, 0), 4, 0);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ oom */

/* A context whose small arena chunks send nearly every tensor, node and
 * scratch buffer to the counting allocator. */
static tg_ctx *counted_ctx(test_alloc *a)
{
    tg_ctx_opts o = {0};
    o.alloc = test_alloc_fn;
    o.alloc_ud = a;
    o.seed = 1;
    o.arena_chunk = 512;
    return tg_ctx_new_opts(&o);
}

typedef tg_tensor *(*oom_op)(tg_ctx *ctx, tg_tensor *x);

static tg_tensor *oom_max_pool(tg_ctx *ctx, tg_tensor *x) { return tg_max_pool2d_ex(ctx, x, 3, 2, 1); }
static tg_tensor *oom_avg_pool(tg_ctx *ctx, tg_tensor *x) { return tg_avg_pool2d_ex(ctx, x, 3, 2, 1); }
static tg_tensor *oom_global(tg_ctx *ctx, tg_tensor *x) { return tg_global_avg_pool(ctx, x); }

static tg_tensor *oom_conv(tg_ctx *ctx, tg_tensor *x)
{
    tg_tensor *w = tg_rand(ctx, TG_F64, TG_SHAPE(4, 3, 3, 3), -1, 1);
    tg_tensor *b = tg_rand(ctx, TG_F64, TG_SHAPE(4), -1, 1);
    if (tg_set_requires_grad(ctx, w, true) || tg_set_requires_grad(ctx, b, true))
        return NULL;
    return tg_conv2d(ctx, x, w, b, 2, 1, 1, 1);
}

/* forward and backward of op on a (2, 3, 8, 8) input; the context's error */
static int oom_run(tg_ctx *ctx, oom_op op)
{
    tg_tensor *x = tg_rand(ctx, TG_F64, TG_SHAPE(2, 3, 8, 8), -1, 1);
    if (tg_set_requires_grad(ctx, x, true))
        return tg_errcode(ctx);
    tg_tensor *y = op(ctx, x);
    tg_backward(ctx, tg_sum(ctx, y));
    return tg_errcode(ctx);
}

/* Fails the first, second, ... allocation after the context's creation
 * until a run needs no more: each failure is TG_ENOMEM, without a crash or
 * a leak. */
static void fail_each_allocation(oom_op op)
{
    for (long k = 1; k < 1000; k++) {
        test_alloc a = {0};
        tg_ctx *ctx = counted_ctx(&a);
        ck_assert_ptr_nonnull(ctx);
        a.fail_at = a.calls + k;
        int rc = oom_run(ctx, op);
        tg_ctx_free(ctx);
        ck_assert_int_eq(a.live_bytes, 0);
        if (a.failed == 0) {
            ck_assert_int_eq(rc, TG_OK);
            ck_assert_int_gt(k, 4);
            return;
        }
        ck_assert_msg(rc == TG_ENOMEM, "allocation %ld failed: status %d, not TG_ENOMEM", k, rc);
    }
    ck_abort_msg("still failing after 1000 allocations");
}

START_TEST(max_pool_each_allocation_fails) { fail_each_allocation(oom_max_pool); }
END_TEST
START_TEST(avg_pool_each_allocation_fails) { fail_each_allocation(oom_avg_pool); }
END_TEST
START_TEST(global_avg_pool_each_allocation_fails) { fail_each_allocation(oom_global); }
END_TEST
START_TEST(conv_each_allocation_fails) { fail_each_allocation(oom_conv); }
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("edge_conv");
    TCase *tc = tcase_create("overflow");
    tcase_add_test(tc, conv_dilation_overflows);
    tcase_add_test(tc, conv_padding_overflows);
    tcase_add_test(tc, pool_padding_overflows);
    tcase_add_test(tc, pool_huge_kernel_one_window);
    tcase_add_test(tc, huge_stride_and_padding_compute);
    suite_add_tcase(s, tc);
    tc = tcase_create("degenerate");
    tcase_add_test(tc, conv_degenerate_attributes);
    tcase_add_test(tc, conv_kernel_size_zero);
    tcase_add_test(tc, conv_output_too_small);
    tcase_add_test(tc, pool_degenerate_attributes);
    suite_add_tcase(s, tc);
    tc = tcase_create("empty");
    tcase_add_test(tc, conv_empty_batch);
    tcase_add_test(tc, conv_empty_batch_huge_dims);
    tcase_add_test(tc, conv_empty_input_refused);
    tcase_add_test(tc, pool_empty_batch);
    tcase_add_test(tc, pool_empty_refused);
    tcase_add_test(tc, global_avg_pool_empty);
    suite_add_tcase(s, tc);
    tc = tcase_create("nan");
    tcase_add_test(tc, max_pool_nan);
    tcase_add_test(tc, max_pool_inf_and_ties);
    tcase_add_test(tc, avg_pool_nan);
    suite_add_tcase(s, tc);
    tc = tcase_create("accumulation");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, conv_bias_grad_float32);
    tcase_add_test(tc, avg_pools_sum_in_double);
    suite_add_tcase(s, tc);
    tc = tcase_create("unused");
    tcase_add_test(tc, conv_bias_may_change);
    tcase_add_test(tc, pool_input_may_change);
    suite_add_tcase(s, tc);
    tc = tcase_create("dtype");
    tcase_add_test(tc, conv_mixed_dtypes);
    suite_add_tcase(s, tc);
    tc = tcase_create("oom");
    tcase_add_test(tc, max_pool_each_allocation_fails);
    tcase_add_test(tc, avg_pool_each_allocation_fails);
    tcase_add_test(tc, global_avg_pool_each_allocation_fails);
    tcase_add_test(tc, conv_each_allocation_fails);
    suite_add_tcase(s, tc);
    return s;
}
