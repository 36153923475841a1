/*
 * test_edge_basic.c: misuse and edge cases of the basic ops (elementwise,
 * reduce, shape, matmul): sizes that overflow int64, empty tensors,
 * float32 accumulation, the values each vjp reads (versions), pow at 0,
 * degenerate attributes. Where the issue is silent the expected values are
 * PyTorch's, stated in a comment beside each check.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define BIG ((int64_t)1 << 62)

/* ck_error, then clears the error so the context can go on */
#define EXPECT(ctx, expr, code, text)                                     \
    do {                                                                  \
        ck_assert_ptr_null(expr);                                         \
        ck_error((ctx), (code), (text));                                  \
        tg_clear_error(ctx);                                              \
    } while (0)

static tg_tensor *leaf(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, double lo)
{
    tg_tensor *t = tg_empty(ctx, dt, ndim, shape);
    ck_assert_ptr_nonnull(t);
    for (int64_t i = 0; i < t->numel; i++)
        tg_set(t, i, lo + (double)i);
    ck_assert_int_eq(tg_set_requires_grad(ctx, t, true), TG_OK);
    return t;
}

static void ck_shape(const tg_tensor *t, int ndim, const int64_t *shape)
{
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ndim, ndim);
    for (int d = 0; d < ndim; d++)
        ck_assert_msg(t->shape[d] == shape[d], "dimension %d is %lld, expected %lld", d,
                      (long long)t->shape[d], (long long)shape[d]);
}

static void ck_all(const tg_tensor *t, double want)
{
    ck_assert_ptr_nonnull(t);
    for (int64_t i = 0; i < t->numel; i++)
        ck_assert_msg(tg_get(t, i) == want, "element %lld is %.17g, expected %.17g",
                      (long long)i, tg_get(t, i), want);
}

/* ---------------------------------------------------------------- overflow */

START_TEST(slice_extreme_bounds)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = leaf(ctx, TG_F64, TG_SHAPE(5), 0); /* 0 1 2 3 4 */
    /* PyTorch: x[0:5:2**63-1] -> [0.]; x[1::2**63-1] -> [1.]; x[-2::2**63-1] -> [3.] */
    ck_tensor(tg_slice(ctx, x, 0, 0, 5, INT64_MAX), ((const double[]){0}), 0);
    ck_tensor(tg_slice(ctx, x, 0, 1, INT64_MAX, INT64_MAX), ((const double[]){1}), 0);
    ck_tensor(tg_slice(ctx, x, 0, -2, INT64_MAX, INT64_MAX), ((const double[]){3}), 0);
    /* PyTorch: x[-2**63:2**63-1:2] -> [0., 2., 4.] */
    tg_tensor *even = tg_slice(ctx, x, 0, INT64_MIN, INT64_MAX, 2);
    ck_shape(even, TG_SHAPE(3));
    ck_tensor(even, ((const double[]){0, 2, 4}), 0);
    /* PyTorch: x[2**63-1:-2**63] and x[-2**63:-2**63] are empty */
    ck_shape(tg_slice(ctx, x, 0, INT64_MAX, INT64_MIN, 1), TG_SHAPE(0));
    ck_shape(tg_slice(ctx, x, 0, INT64_MIN, INT64_MIN, INT64_MAX), TG_SHAPE(0));
    /* the vjp of a one-element slice with the largest step */
    tg_tensor *one = tg_slice(ctx, x, 0, 3, INT64_MAX, INT64_MAX);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, one)), TG_OK);
    ck_tensor(x->grad, ((const double[]){0, 0, 0, 1, 0}), 0);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(pad_extreme_sizes)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = leaf(ctx, TG_F64, TG_SHAPE(2, 3), 1);
    EXPECT(ctx, tg_pad1d(ctx, x, INT64_MAX, 0), TG_ESHAPE,
           "pad: size 3 of dimension 1 of (2, 3) plus padding (9223372036854775807, 0) overflows int64");
    EXPECT(ctx, tg_pad1d(ctx, x, 1, INT64_MAX), TG_ESHAPE,
           "plus padding (1, 9223372036854775807) overflows int64");
    EXPECT(ctx, tg_pad2d(ctx, x, 0, 0, INT64_MAX - 1, 0), TG_ESHAPE,
           "pad: size 2 of dimension 0 of (2, 3) plus padding (9223372036854775806, 0)");
    /* PyTorch: "The input size 3, plus negative padding ... resulted in a negative output size" */
    EXPECT(ctx, tg_pad1d(ctx, x, INT64_MIN, 0), TG_ESHAPE,
           "pad: negative padding (-9223372036854775808, 0) of dimension 1 of (2, 3) removes "
           "more than its 3 elements");
    EXPECT(ctx, tg_pad1d(ctx, x, INT64_MIN, INT64_MIN), TG_ESHAPE, "removes more than its 3");
    EXPECT(ctx, tg_pad1d(ctx, x, -2, -2), TG_ESHAPE, "negative padding (-2, -2)");
    EXPECT(ctx, tg_pad1d(ctx, x, -4, 5), TG_ESHAPE, "negative padding (-4, 5)");
    /* an empty tensor may grow to sizes whose offsets would not fit in int64;
     * PyTorch: F.pad(torch.zeros(0, 3), (2**63 - 4, 0)).shape == (0, 2**63 - 1) */
    tg_tensor *e = tg_zeros(ctx, TG_F64, TG_SHAPE(0, 3));
    ck_shape(tg_pad1d(ctx, e, INT64_MAX - 3, 0), TG_SHAPE(0, INT64_MAX));
    tg_tensor *e3 = tg_zeros(ctx, TG_F64, TG_SHAPE(0, 3, 3));
    ck_shape(tg_pad2d(ctx, e3, BIG, 0, BIG, 0), TG_SHAPE(0, BIG + 3, BIG + 3));
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(negative_padding_crops)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = leaf(ctx, TG_F64, TG_SHAPE(2, 3), 0); /* 0 1 2 / 3 4 5 */
    /* PyTorch: F.pad(x, (-1, 2)) == [[1, 2, 0, 0], [4, 5, 0, 0]] */
    tg_tensor *p = tg_pad1d(ctx, x, -1, 2);
    ck_shape(p, TG_SHAPE(2, 4));
    ck_tensor(p, ((const double[]){1, 2, 0, 0, 4, 5, 0, 0}), 0);
    /* PyTorch: F.pad(x, (1, -3, -2, 1)) has shape (1, 1): [[0]] */
    tg_tensor *q = tg_pad2d(ctx, x, 1, -3, -2, 1);
    ck_shape(q, TG_SHAPE(1, 1));
    ck_all(q, 0);
    tg_tensor *r = tg_pad1d(ctx, x, -3, 0); /* PyTorch: shape (2, 0) */
    ck_shape(r, TG_SHAPE(2, 0));
    tg_tensor *loss = tg_add(ctx, tg_sum(ctx, p), tg_add(ctx, tg_sum(ctx, q), tg_sum(ctx, r)));
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    ck_tensor(x->grad, ((const double[]){0, 1, 1, 0, 1, 1}), 0);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(reshape_and_flatten_overflow)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = leaf(ctx, TG_F64, TG_SHAPE(6), 0);
    EXPECT(ctx, tg_reshape(ctx, x, TG_SHAPE(BIG, 4)), TG_ESHAPE,
           "reshape: cannot view (6) (6 elements) as (4611686018427387904, 4): that shape has "
           "more elements than can be addressed");
    EXPECT(ctx, tg_reshape(ctx, x, TG_SHAPE(-1, BIG, 4)), TG_ESHAPE,
           "as (-1, 4611686018427387904, 4): that shape has more elements");
    EXPECT(ctx, tg_reshape(ctx, x, TG_SHAPE(1 << 16, (int64_t)1 << 48, 1 << 16)), TG_ESHAPE,
           "that shape has more elements than can be addressed");
    /* PyTorch: "shape '[0, -1]' is invalid for input of size 0" (the -1 is ambiguous) */
    tg_tensor *e = tg_zeros(ctx, TG_F64, TG_SHAPE(0, 3));
    EXPECT(ctx, tg_reshape(ctx, e, TG_SHAPE(0, -1)), TG_ESHAPE,
           "reshape: cannot view (0, 3) (0 elements) as (0, -1): the -1 could be any size");
    tg_tensor *huge = tg_zeros(ctx, TG_F64, TG_SHAPE(0, BIG, 4));
    EXPECT(ctx, tg_flatten(ctx, huge, 1, 2), TG_ESHAPE,
           "flatten: dimensions 1 to 2 of (0, 4611686018427387904, 4) multiply to more elements");
    ck_shape(tg_flatten(ctx, huge, 0, 1), TG_SHAPE(0, 4));
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(concat_and_broadcast_overflow)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *a = tg_zeros(ctx, TG_F64, TG_SHAPE(0, BIG));
    tg_tensor *b = tg_zeros(ctx, TG_F64, TG_SHAPE(0, BIG + 1));
    EXPECT(ctx, tg_concat(ctx, (tg_tensor *[]){a, b}, 2, 1), TG_ESHAPE,
           "concat: the sizes along axis 1 add up to more than 9223372036854775807 at input 1, "
           "(0, 4611686018427387905)");
    ck_shape(tg_concat(ctx, (tg_tensor *[]){a, a}, 2, 0), TG_SHAPE(0, BIG));
    /* empty operands whose broadcast shape's nonzero sizes overflow: the
     * result is empty wherever the 0 stands, as torch.empty(2**62, 2**62, 0) */
    tg_tensor *p = tg_zeros(ctx, TG_F64, TG_SHAPE(BIG, 1, 0));
    tg_tensor *q = tg_zeros(ctx, TG_F64, TG_SHAPE(1, BIG, 0));
    ck_shape(tg_add(ctx, p, q), TG_SHAPE(BIG, BIG, 0));
    /* empty tensors whose strides would overflow: PyTorch gives empty results */
    tg_tensor *h = tg_zeros(ctx, TG_F64, TG_SHAPE(0, BIG, 4));
    ck_shape(tg_mul(ctx, h, h), TG_SHAPE(0, BIG, 4));
    ck_shape(tg_permute(ctx, h, (const int[]){0, 2, 1}), TG_SHAPE(0, 4, BIG));
    ck_shape(tg_slice(ctx, h, 1, 1, INT64_MAX, 2), TG_SHAPE(0, BIG / 2, 4));
    ck_shape(tg_sum_axis(ctx, h, 1, false), TG_SHAPE(0, 4));
    ck_shape(tg_concat(ctx, (tg_tensor *[]){h, h}, 2, 2), TG_SHAPE(0, BIG, 8));
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(matmul_sizes)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const int64_t B = INT32_MAX;
    /* batch dimensions that broadcast to more elements than int64 holds */
    tg_tensor *a = tg_zeros(ctx, TG_F64, TG_SHAPE(B, 1, 1, 0, 2));
    tg_tensor *b = tg_zeros(ctx, TG_F64, TG_SHAPE(1, B, B, 2, 0));
    EXPECT(ctx, tg_matmul(ctx, a, b), TG_ESHAPE,
           "matmul (batch dimensions): shapes (2147483647, 1, 1) and (1, 2147483647, 2147483647) "
           "broadcast to (2147483647, 2147483647, 2147483647), which has more elements");
    /* a matrix dimension BLAS cannot take */
    tg_tensor *wide = tg_zeros(ctx, TG_F64, TG_SHAPE(0, (int64_t)1 << 31));
    tg_tensor *c = tg_zeros(ctx, TG_F64, TG_SHAPE(3, 0));
    EXPECT(ctx, tg_matmul(ctx, c, wide), TG_ESHAPE,
           "matmul: dimension 1 of (0, 2147483648) exceeds the BLAS limit 2147483647");
    tg_tensor *w = tg_zeros(ctx, TG_F64, TG_SHAPE(2, 0));
    tg_tensor *x = tg_zeros(ctx, TG_F64, TG_SHAPE((int64_t)1 << 31, 0));
    EXPECT(ctx, tg_linear(ctx, x, w, NULL), TG_ESHAPE,
           "linear: dimension 0 of (2147483648, 0) exceeds the BLAS limit 2147483647");
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- empty */

START_TEST(reductions_of_nothing)
{
    for (int k = 0; k < 2; k++) {
        tg_dtype dt = k ? TG_F32 : TG_F64;
        tg_ctx *ctx = tg_ctx_new(1);
        tg_tensor *x = leaf(ctx, dt, TG_SHAPE(0, 3), 0);
        /* PyTorch: torch.zeros(0, 3).sum() == 0, .mean() is nan,
         * .sum(0) == [0, 0, 0], .mean(0) == [nan, nan, nan], .sum(1).shape == (0,) */
        ck_all(tg_sum(ctx, x), 0);
        ck_assert(isnan(tg_get(tg_mean(ctx, x), 0)));
        ck_tensor(tg_sum_axis(ctx, x, 0, false), ((const double[]){0, 0, 0}), 0);
        tg_tensor *m0 = tg_mean_axis(ctx, x, 0, true);
        ck_shape(m0, TG_SHAPE(1, 3));
        for (int64_t i = 0; i < 3; i++)
            ck_assert(isnan(tg_get(m0, i)));
        ck_shape(tg_sum_axis(ctx, x, 1, false), TG_SHAPE(0));
        ck_shape(tg_mean_axis(ctx, x, -1, true), TG_SHAPE(0, 1));
        /* the vjps reach no element: x.grad is an empty (0, 3) tensor */
        tg_tensor *loss = tg_add(ctx, tg_sum(ctx, tg_mean_axis(ctx, x, 0, false)), tg_sum(ctx, x));
        loss = tg_add(ctx, loss, tg_sum(ctx, tg_mean_axis(ctx, x, 1, false)));
        ck_assert_int_eq(tg_backward(ctx, tg_add(ctx, loss, tg_mean(ctx, x))), TG_OK);
        ck_shape(x->grad, TG_SHAPE(0, 3));
        ck_assert_int_eq(tg_errcode(ctx), TG_OK);
        tg_ctx_free(ctx);
    }
}
END_TEST

/* Runs fn with stderr sent to a temporary file; returns how many bytes it wrote. */
static long stderr_bytes(void (*fn)(tg_ctx *), tg_ctx *ctx)
{
    fflush(stderr);
    FILE *tmp = tmpfile();
    ck_assert_ptr_nonnull(tmp);
    int saved = dup(2);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fileno(tmp), 2), 0);
    fn(ctx);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fseek(tmp, 0, SEEK_END);
    long n = ftell(tmp);
    fclose(tmp);
    return n;
}

/* matmul and linear with every size 0 in turn, forward and vjp */
static void empty_products(tg_ctx *ctx)
{
    static const int64_t mm[][4] = {{0, 3, 4, 0}, {2, 0, 4, 0}, {2, 3, 0, 0}, {0, 0, 0, 0}};
    for (int i = 0; i < 4; i++) {
        int64_t n = mm[i][0], k = mm[i][1], m = mm[i][2];
        tg_tensor *a = leaf(ctx, TG_F64, TG_SHAPE(2, n, k), 1);
        tg_tensor *b = leaf(ctx, TG_F64, TG_SHAPE(k, m), 1);
        tg_tensor *c = tg_matmul(ctx, a, b);
        /* PyTorch: an inner size 0 gives zeros; (0, k) x (k, m) gives (0, m) */
        ck_shape(c, TG_SHAPE(2, n, m));
        ck_all(c, 0);
        ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, c)), TG_OK);
        /* every product over the missing dimension is an empty sum: gradients are 0 */
        ck_all(a->grad, 0);
        ck_shape(b->grad, TG_SHAPE(k, m));
        ck_all(b->grad, 0);
    }
    static const int64_t lin[][3] = {{0, 3, 2}, {4, 0, 2}, {4, 3, 0}};
    for (int i = 0; i < 3; i++) {
        int64_t rows = lin[i][0], in = lin[i][1], out = lin[i][2];
        tg_tensor *x = leaf(ctx, TG_F32, TG_SHAPE(rows, in), 1);
        tg_tensor *w = leaf(ctx, TG_F32, TG_SHAPE(out, in), 1);
        tg_tensor *bias = leaf(ctx, TG_F32, TG_SHAPE(out), 0.5);
        tg_tensor *y = tg_linear(ctx, x, w, bias);
        ck_shape(y, TG_SHAPE(rows, out));
        /* PyTorch: with in = 0, every output is the bias */
        for (int64_t r = 0; in == 0 && r < rows; r++)
            for (int64_t j = 0; j < out; j++)
                ck_assert(tg_get(y, r * out + j) == 0.5 + (double)j);
        ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_OK);
        ck_all(bias->grad, (double)rows); /* db = rows ones summed */
        ck_all(w->grad, 0);               /* rows = 0 or in = 0: nothing to sum */
        ck_shape(x->grad, TG_SHAPE(rows, in));
    }
}

START_TEST(matmul_and_linear_on_empty)
{
    tg_ctx *ctx = tg_ctx_new(1);
    /* cblas rejects a leading dimension below max(1, n) and says so on stderr */
    ck_assert_int_eq(stderr_bytes(empty_products, ctx), 0);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(elementwise_on_empty)
{
    tg_ctx *ctx = tg_ctx_new(1);
    for (int k = 0; k < 2; k++) {
        tg_dtype dt = k ? TG_F32 : TG_F64;
        tg_tensor *x = leaf(ctx, dt, TG_SHAPE(0, 3), 1);
        tg_tensor *b = leaf(ctx, dt, TG_SHAPE(3), 1);
        tg_tensor *y = tg_div(ctx, tg_mul(ctx, tg_sub(ctx, tg_add(ctx, x, b), b), b), b);
        y = tg_pow(ctx, tg_sqrt(ctx, tg_log(ctx, tg_exp(ctx, tg_neg(ctx, y)))), 2.5);
        y = tg_div_scalar(ctx, tg_mul_scalar(ctx, tg_add_scalar(ctx, y, 1), 2), 3);
        ck_shape(y, TG_SHAPE(0, 3));
        ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_OK);
        ck_shape(x->grad, TG_SHAPE(0, 3));
        /* PyTorch: the broadcast operand's gradient is a sum over no rows: zeros */
        ck_tensor(b->grad, ((const double[]){0, 0, 0}), 0);
    }
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(shape_ops_on_empty)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = leaf(ctx, TG_F64, TG_SHAPE(4, 5), 1);
    /* PyTorch: x[:, 3:3] has shape (4, 0); x[:, 7:] too */
    tg_tensor *s = tg_slice(ctx, x, 1, 3, 3, 1);
    ck_shape(s, TG_SHAPE(4, 0));
    ck_shape(tg_slice(ctx, x, 1, 7, INT64_MAX, 3), TG_SHAPE(4, 0));
    tg_tensor *p = tg_permute(ctx, s, (const int[]){1, 0});
    ck_shape(p, TG_SHAPE(0, 4));
    tg_tensor *r = tg_reshape(ctx, p, TG_SHAPE(2, 0, 2));
    ck_shape(r, TG_SHAPE(2, 0, 2));
    tg_tensor *f = tg_flatten(ctx, r, 0, -1);
    ck_shape(f, TG_SHAPE(0));
    /* PyTorch: F.pad(torch.zeros(4, 0), (1, 2)) is (4, 3) of zeros */
    tg_tensor *pd = tg_pad1d(ctx, s, 1, 2);
    ck_shape(pd, TG_SHAPE(4, 3));
    ck_all(pd, 0);
    tg_tensor *cat = tg_concat(ctx, (tg_tensor *[]){s, x, s}, 3, 1);
    ck_shape(cat, TG_SHAPE(4, 5));
    tg_tensor *loss = tg_add(ctx, tg_sum(ctx, f), tg_sum(ctx, pd));
    loss = tg_add(ctx, loss, tg_sum(ctx, cat));
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    ck_all(x->grad, 1); /* only the concat reaches x's elements */
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- accumulation */

#define ROWS ((int64_t)1 << 20)

/* d(sum_r g[r, j]) with g = 0.1f everywhere, exactly */
static double exact_column_sum(void) { return (double)ROWS * (double)0.1f; }

static void ck_relative(const tg_tensor *t, double want, double rtol)
{
    for (int64_t i = 0; i < t->numel; i++)
        ck_assert_msg(fabs(tg_get(t, i) - want) <= rtol * fabs(want),
                      "element %lld is %.9g, exact %.9g (relative error %.3g)", (long long)i,
                      tg_get(t, i), want, fabs(tg_get(t, i) - want) / fabs(want));
}

START_TEST(broadcast_gradient_in_double)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_full(ctx, TG_F32, TG_SHAPE(ROWS, 4), 1);
    tg_tensor *bias = leaf(ctx, TG_F32, TG_SHAPE(4), 0);
    tg_tensor *scale = leaf(ctx, TG_F32, TG_SHAPE(1, 4), 1);
    tg_tensor *g = tg_full(ctx, TG_F32, TG_SHAPE(ROWS, 4), 0.1);
    /* PyTorch accumulates these reductions in float32 pairwise; the exact
     * value is 2^20 * 0.1f, which float32 double accumulation rounds to
     * within 6e-8 (plain float32 summation is 2.7e-5 off) */
    ck_assert_int_eq(tg_backward_ex(ctx, tg_add(ctx, x, bias), g, 0), TG_OK);
    ck_relative(bias->grad, exact_column_sum(), 1e-6);
    ck_assert_int_eq(tg_backward_ex(ctx, tg_mul(ctx, x, scale), g, 0), TG_OK);
    ck_relative(scale->grad, exact_column_sum(), 1e-6);
    tg_tensor *sub = tg_sub(ctx, x, bias);
    tg_tensor_zero_grad(bias);
    ck_assert_int_eq(tg_backward_ex(ctx, sub, g, 0), TG_OK);
    ck_relative(bias->grad, -exact_column_sum(), 1e-6);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(linear_bias_gradient_in_double)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_full(ctx, TG_F32, TG_SHAPE(ROWS, 1), 1);
    tg_tensor *w = leaf(ctx, TG_F32, TG_SHAPE(4, 1), 1);
    tg_tensor *bias = leaf(ctx, TG_F32, TG_SHAPE(4), 0);
    tg_tensor *g = tg_full(ctx, TG_F32, TG_SHAPE(ROWS, 4), 0.1);
    ck_assert_int_eq(tg_backward_ex(ctx, tg_linear(ctx, x, w, bias), g, 0), TG_OK);
    ck_relative(bias->grad, exact_column_sum(), 1e-6);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(float32_sum_and_mean_in_double)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_full(ctx, TG_F32, TG_SHAPE(ROWS, 4), 0.1);
    ck_relative(tg_sum(ctx, x), 4 * exact_column_sum(), 1e-7);
    ck_relative(tg_sum_axis(ctx, x, 0, false), exact_column_sum(), 1e-7);
    ck_relative(tg_mean(ctx, x), (double)0.1f, 1e-7);
    ck_relative(tg_mean_axis(ctx, x, 0, false), (double)0.1f, 1e-7);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- versions */

START_TEST(add_does_not_read_its_inputs)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(2, 3));
    tg_tensor *w = leaf(ctx, TG_F64, TG_SHAPE(3), 1);
    tg_tensor *y = tg_sum(ctx, tg_add(ctx, x, w));
    /* PyTorch: add saves nothing, so x.fill_(5) before backward is fine */
    ck_assert_int_eq(tg_fill(ctx, x, 5), TG_OK);
    ck_assert_int_eq(tg_backward(ctx, y), TG_OK);
    ck_tensor(w->grad, ((const double[]){2, 2, 2}), 0);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(mul_reads_its_inputs)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_ones(ctx, TG_F64, TG_SHAPE(2, 3));
    tg_tensor *w = leaf(ctx, TG_F64, TG_SHAPE(3), 1);
    tg_tensor *y = tg_sum(ctx, tg_mul(ctx, x, w));
    uint64_t before = x->version;
    ck_assert_int_eq(tg_fill(ctx, x, 5), TG_OK);
    /* PyTorch: "one of the variables needed for gradient computation has
     * been modified by an inplace operation ... is at version 1; expected version 0" */
    ck_assert_int_eq(tg_backward(ctx, y), TG_ESTATE);
    char want[160];
    snprintf(want, sizeof want, "as forward saw it (version %llu), but it has been modified since "
             "(version %llu)", (unsigned long long)before, (unsigned long long)x->version);
    ck_error(ctx, TG_ESTATE, "backward: mul (tape index 0) needs its input 0");
    ck_error(ctx, TG_ESTATE, want);
    tg_ctx_free(ctx);
}
END_TEST

typedef tg_tensor *(*unary_case)(tg_ctx *ctx, tg_tensor *x);

static tg_tensor *c_sub(tg_ctx *ctx, tg_tensor *x) { return tg_sub(ctx, x, x); }
static tg_tensor *c_add_s(tg_ctx *ctx, tg_tensor *x) { return tg_sub_scalar(ctx, x, 2); }
static tg_tensor *c_mul_s(tg_ctx *ctx, tg_tensor *x) { return tg_mul_scalar(ctx, x, 2); }
static tg_tensor *c_div_s(tg_ctx *ctx, tg_tensor *x) { return tg_div_scalar(ctx, x, 2); }
static tg_tensor *c_neg(tg_ctx *ctx, tg_tensor *x) { return tg_neg(ctx, x); }
static tg_tensor *c_exp(tg_ctx *ctx, tg_tensor *x) { return tg_exp(ctx, x); }
static tg_tensor *c_sqrt(tg_ctx *ctx, tg_tensor *x) { return tg_sqrt(ctx, x); }
static tg_tensor *c_reshape(tg_ctx *ctx, tg_tensor *x) { return tg_reshape(ctx, x, TG_SHAPE(3, 2)); }
static tg_tensor *c_permute(tg_ctx *ctx, tg_tensor *x) { return tg_transpose(ctx, x, 0, 1); }
static tg_tensor *c_concat(tg_ctx *ctx, tg_tensor *x) { return tg_concat(ctx, (tg_tensor *[]){x, x}, 2, 0); }
static tg_tensor *c_slice(tg_ctx *ctx, tg_tensor *x) { return tg_slice(ctx, x, 1, 0, 3, 2); }
static tg_tensor *c_pad(tg_ctx *ctx, tg_tensor *x) { return tg_pad2d(ctx, x, 1, -1, 0, 2); }
static tg_tensor *c_sum(tg_ctx *ctx, tg_tensor *x) { return tg_sum_axis(ctx, x, 0, true); }
static tg_tensor *c_mean(tg_ctx *ctx, tg_tensor *x) { return tg_mean(ctx, x); }
static tg_tensor *c_log(tg_ctx *ctx, tg_tensor *x) { return tg_log(ctx, x); }
static tg_tensor *c_pow(tg_ctx *ctx, tg_tensor *x) { return tg_pow(ctx, x, 3); }
static tg_tensor *c_div(tg_ctx *ctx, tg_tensor *x) { return tg_div(ctx, x, x); }
static tg_tensor *c_matmul(tg_ctx *ctx, tg_tensor *x) { return tg_matmul(ctx, x, tg_transpose(ctx, x, 0, 1)); }

START_TEST(writes_the_vjps_allow)
{
    /* PyTorch saves no input of these (exp and sqrt save their result):
     * x.fill_ after forward leaves backward working, and the gradient only
     * depends on the shapes */
    static const struct { unary_case fn; const char *name; } cases[] = {
        {c_sub, "sub"}, {c_add_s, "add_scalar"}, {c_mul_s, "mul_scalar"}, {c_div_s, "div_scalar"},
        {c_neg, "neg"}, {c_exp, "exp"}, {c_sqrt, "sqrt"}, {c_reshape, "reshape"},
        {c_permute, "permute"}, {c_concat, "concat"}, {c_slice, "slice"}, {c_pad, "pad"},
        {c_sum, "sum"}, {c_mean, "mean"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_ctx *ctx = tg_ctx_new(1);
        tg_tensor *x = leaf(ctx, TG_F64, TG_SHAPE(2, 3), 1);
        tg_tensor *y = cases[i].fn(ctx, x);
        ck_assert_msg(y != NULL, "%s: %s", cases[i].name, tg_errmsg(ctx));
        ck_assert_int_eq(tg_fill(ctx, x, 5), TG_OK);
        ck_assert_msg(tg_backward(ctx, tg_sum(ctx, y)) == TG_OK, "%s: %s", cases[i].name,
                      tg_errmsg(ctx));
        tg_ctx_free(ctx);
    }
}
END_TEST

START_TEST(writes_the_vjps_refuse)
{
    /* PyTorch saves the input of log, pow, div and matmul, and the result of exp */
    static const struct { unary_case fn; const char *name; } cases[] = {
        {c_log, "backward: log"}, {c_pow, "backward: pow"}, {c_div, "backward: div"},
        {c_matmul, "backward: matmul"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_ctx *ctx = tg_ctx_new(1);
        tg_tensor *x = leaf(ctx, TG_F64, TG_SHAPE(2, 3), 1);
        tg_tensor *y = cases[i].fn(ctx, x);
        ck_assert_int_eq(tg_fill(ctx, x, 5), TG_OK);
        ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, y)), TG_ESTATE);
        ck_error(ctx, TG_ESTATE, cases[i].name);
        tg_ctx_free(ctx);
    }
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = leaf(ctx, TG_F64, TG_SHAPE(2, 3), 1);
    tg_tensor *y = tg_exp(ctx, x);
    tg_tensor *loss = tg_sum(ctx, y);
    ck_assert_int_eq(tg_fill(ctx, y, 5), TG_OK);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "backward: exp (tape index 0) needs its output");
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(linear_reads_weight_not_bias)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = leaf(ctx, TG_F64, TG_SHAPE(2, 3), 1);
    tg_tensor *w = leaf(ctx, TG_F64, TG_SHAPE(4, 3), 1);
    tg_tensor *b = leaf(ctx, TG_F64, TG_SHAPE(4), 1);
    tg_tensor *y = tg_sum(ctx, tg_linear(ctx, x, w, b));
    /* PyTorch: linear's backward never reads the bias */
    ck_assert_int_eq(tg_fill(ctx, b, 7), TG_OK);
    ck_assert_int_eq(tg_backward_ex(ctx, y, NULL, TG_RETAIN_GRAPH), TG_OK);
    ck_tensor(b->grad, ((const double[]){2, 2, 2, 2}), 0);
    ck_assert_int_eq(tg_fill(ctx, w, 7), TG_OK);
    ck_assert_int_eq(tg_backward(ctx, y), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "backward: linear (tape index 0) needs its input 1");
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- pow */

/* d/dx sum(x^p) at x, with dL/dy = g */
static double pow_grad(double x, double p, double g)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *t = tg_from_f64(ctx, TG_F64, TG_SHAPE(1), (const double[]){x});
    tg_set_requires_grad(ctx, t, true);
    tg_tensor *y = tg_pow(ctx, t, p);
    tg_tensor *gout = tg_from_f64(ctx, TG_F64, TG_SHAPE(1), (const double[]){g});
    ck_assert_int_eq(tg_backward_ex(ctx, y, gout, 0), TG_OK);
    double r = tg_get(t->grad, 0);
    tg_ctx_free(ctx);
    return r;
}

START_TEST(pow_at_zero_as_pytorch)
{
    /* torch.tensor([0.], requires_grad=True).pow(p).backward(): */
    ck_assert(pow_grad(0, 0, 1) == 0);          /* p = 0: 0 (not 0 * inf) */
    ck_assert(isinf(pow_grad(0, 0.5, 1)) && pow_grad(0, 0.5, 1) > 0); /* 0 < p < 1: inf */
    ck_assert(pow_grad(0, 1, 1) == 1);          /* p = 1: 1 */
    ck_assert(pow_grad(0, 2, 1) == 0);          /* p = 2: 0 */
    ck_assert(pow_grad(0, 3, 1) == 0);          /* p = 3: 0 */
    ck_assert(pow_grad(0, -1, 1) == -INFINITY); /* p = -1: -inf */
    ck_close(pow_grad(4, 0.5, 1), 0.25, 1e-15);
    ck_close(pow_grad(2, 3, 0.5), 6, 1e-15);
    ck_close(pow_grad(-2, 2, 1), -4, 1e-15);
    /* PyTorch multiplies the incoming gradient by the (masked) derivative,
     * so NaN and inf still propagate: p = 0 with g = nan or inf gives nan */
    ck_assert(isnan(pow_grad(3, 0, NAN)));
    ck_assert(isnan(pow_grad(0, 0, INFINITY)));
}
END_TEST

START_TEST(div_gradient_as_pytorch)
{
    /* PyTorch: d(a / b)/db = -g ((a / b) / b); at a = b = 1e-170 that is -1e170,
     * where -g a / (b * b) would underflow b * b to 0 and give -inf */
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *a = tg_from_f64(ctx, TG_F64, TG_SHAPE(1), (const double[]){1e-170});
    tg_tensor *b = tg_from_f64(ctx, TG_F64, TG_SHAPE(1), (const double[]){1e-170});
    tg_set_requires_grad(ctx, a, true);
    tg_set_requires_grad(ctx, b, true);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_div(ctx, a, b))), TG_OK);
    ck_close(tg_get(a->grad, 0) / 1e170, 1, 1e-15);
    ck_close(tg_get(b->grad, 0) / 1e170, -1, 1e-15);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- errors */

START_TEST(degenerate_attributes)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = leaf(ctx, TG_F64, TG_SHAPE(2, 3), 0);
    /* PyTorch: "slice step must be positive" */
    EXPECT(ctx, tg_slice(ctx, x, 1, 0, 3, 0), TG_EINVAL, "slice: step is 0; it must be >= 1");
    EXPECT(ctx, tg_slice(ctx, x, 1, 0, 3, -1), TG_EINVAL, "slice: step is -1; it must be >= 1");
    EXPECT(ctx, tg_slice(ctx, x, 1, 0, 3, INT64_MIN), TG_EINVAL,
           "slice: step is -9223372036854775808");
    /* PyTorch: "permute(): duplicate dims are not allowed" / "Dimension out of range" */
    EXPECT(ctx, tg_permute(ctx, x, (const int[]){1, 1}), TG_EINVAL,
           "permute: (1, 1) is not a permutation: axis 1 appears twice");
    EXPECT(ctx, tg_permute(ctx, x, (const int[]){1, -1}), TG_EINVAL,
           "permute: (1, -1) is not a permutation: axis 1 appears twice");
    EXPECT(ctx, tg_permute(ctx, x, (const int[]){0, 2}), TG_EINVAL,
           "permute: (0, 2) is not a permutation: entry 1 is 2, out of range for (2, 3) (axes -2 to 1)");
    EXPECT(ctx, tg_permute(ctx, x, (const int[]){-3, 0}), TG_EINVAL, "entry 0 is -3, out of range");
    /* PyTorch: x.permute(-1, 0) is x.T */
    tg_tensor *t = tg_permute(ctx, x, (const int[]){-1, 0});
    ck_shape(t, TG_SHAPE(3, 2));
    ck_tensor(t, ((const double[]){0, 3, 1, 4, 2, 5}), 0);
    /* PyTorch: torch.cat([]) "expected a non-empty list of Tensors" */
    EXPECT(ctx, tg_concat(ctx, NULL, 0, 0), TG_EINVAL, "concat: needs at least 1 tensor to join, got 0");
    EXPECT(ctx, tg_concat(ctx, (tg_tensor *[]){x}, -1, 0), TG_EINVAL, "got -1");
    EXPECT(ctx, tg_reshape(ctx, x, TG_SHAPE(4, 2)), TG_ESHAPE,
           "reshape: cannot view (2, 3) (6 elements) as (4, 2)");
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(scalar_attributes_print_exactly)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = leaf(ctx, TG_F64, TG_SHAPE(2), 1);
    tg_tensor *y = tg_mul_scalar(ctx, tg_pow(ctx, x, 1.0000001), 0.1);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_int_eq(tg_dot_write(ctx, y, f, NULL), TG_OK);
    fclose(f);
    /* %g would print both exponents as "p=1" */
    ck_assert_msg(strstr(text, "p=1.0000001") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "c=0.1") != NULL, "%s", text);
    free(text);
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("edge_basic");
    TCase *tc = tcase_create("overflow");
    tcase_add_test(tc, slice_extreme_bounds);
    tcase_add_test(tc, pad_extreme_sizes);
    tcase_add_test(tc, negative_padding_crops);
    tcase_add_test(tc, reshape_and_flatten_overflow);
    tcase_add_test(tc, concat_and_broadcast_overflow);
    tcase_add_test(tc, matmul_sizes);
    suite_add_tcase(s, tc);
    tc = tcase_create("empty");
    tcase_add_test(tc, reductions_of_nothing);
    tcase_add_test(tc, matmul_and_linear_on_empty);
    tcase_add_test(tc, elementwise_on_empty);
    tcase_add_test(tc, shape_ops_on_empty);
    suite_add_tcase(s, tc);
    tc = tcase_create("accumulation");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, broadcast_gradient_in_double);
    tcase_add_test(tc, linear_bias_gradient_in_double);
    tcase_add_test(tc, float32_sum_and_mean_in_double);
    suite_add_tcase(s, tc);
    tc = tcase_create("versions");
    tcase_add_test(tc, add_does_not_read_its_inputs);
    tcase_add_test(tc, mul_reads_its_inputs);
    tcase_add_test(tc, writes_the_vjps_allow);
    tcase_add_test(tc, writes_the_vjps_refuse);
    tcase_add_test(tc, linear_reads_weight_not_bias);
    suite_add_tcase(s, tc);
    tc = tcase_create("pow");
    tcase_add_test(tc, pow_at_zero_as_pytorch);
    tcase_add_test(tc, div_gradient_as_pytorch);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, degenerate_attributes);
    tcase_add_test(tc, scalar_attributes_print_exactly);
    suite_add_tcase(s, tc);
    return s;
}
