/*
 * test_kernels.c: the elementwise, activation, dropout, softmax, loss,
 * linear and reduction kernels give bit-identical values and gradients at
 * 1 and at 2 threads on inputs large enough to be split (each kernel sums
 * in a fixed order, whatever the thread count), in float32 and float64,
 * except where BLAS computes (linear's products, compared to a tolerance);
 * dropout draws the same mask from the same seed, and its vjp (which
 * hashes the mask again) uses forward's mask.
 */
#include <string.h>

#include "testutil.h"

#define ROWS 64
#define COLS 1200 /* ROWS x COLS is above the grain at which kernels split */

enum { RELU, LEAKY, SIGMOID, TANH, DROPOUT, SOFTMAX, LOG_SOFTMAX, CROSS_ENTROPY, MSE,
       BCE_LOGITS, LINEAR, ADD, MUL_ROW, EXP, SUM, MEAN_AXIS0, N_KERNELS };
static const char *const names[] = {"relu", "leaky_relu", "sigmoid", "tanh", "dropout",
                                    "softmax", "log_softmax", "cross_entropy", "mse",
                                    "bce_with_logits", "linear", "add", "mul (row)", "exp",
                                    "sum", "mean (axis 0)"};

/* The kernel's output on x (and y, w, b where it takes them). */
static tg_tensor *apply(tg_ctx *ctx, int k, tg_tensor *x, tg_tensor *y, tg_tensor *w,
                        tg_tensor *b)
{
    switch (k) {
    case RELU: return tg_relu(ctx, x);
    case LEAKY: return tg_leaky_relu(ctx, x, 0.1);
    case SIGMOID: return tg_sigmoid(ctx, x);
    case TANH: return tg_tanh(ctx, x);
    case DROPOUT: return tg_dropout(ctx, x, 0.3);
    case SOFTMAX: return tg_softmax(ctx, x, 1);
    case LOG_SOFTMAX: return tg_log_softmax(ctx, x, 0);
    case CROSS_ENTROPY: {
        tg_tensor *t = tg_zeros(ctx, TG_I64, TG_SHAPE(ROWS));
        for (int64_t i = 0; t && i < ROWS; i++)
            ((int64_t *)t->data)[i] = (i * 37) % COLS;
        return tg_cross_entropy(ctx, x, t, TG_MEAN);
    }
    case MSE: return tg_mse(ctx, x, y, TG_MEAN);
    case BCE_LOGITS: return tg_bce_with_logits(ctx, x, tg_sigmoid(ctx, y), TG_SUM);
    case LINEAR: return tg_linear(ctx, x, w, b);
    case ADD: return tg_add(ctx, x, y);
    case MUL_ROW: return tg_mul(ctx, x, b);
    case EXP: return tg_exp(ctx, x);
    case SUM: return tg_sum(ctx, x);
    default: return tg_mean_axis(ctx, x, 0, false);
    }
}

typedef struct result {
    size_t bytes[5];
    void *data[5]; /* the output, then the gradients of x, y, w, b */
} result;

static void keep(result *r, int i, const tg_tensor *t)
{
    r->bytes[i] = t ? (size_t)t->numel * tg_dtype_size(t->dtype) : 0;
    r->data[i] = t ? malloc(r->bytes[i] ? r->bytes[i] : 1) : NULL;
    if (t)
        memcpy(r->data[i], t->data, r->bytes[i]);
}

/* Kernel k forward and backward (through sum(out * r), r random) at the
 * given thread count, from seed 11. */
static void run(int k, tg_dtype dt, int threads, result *r)
{
    int before = tg_set_num_threads(threads);
    tg_ctx *ctx = tg_ctx_new(11);
    tg_tensor *x = tg_rand(ctx, dt, TG_SHAPE(ROWS, COLS), -3, 3);
    tg_tensor *y = tg_rand(ctx, dt, TG_SHAPE(ROWS, COLS), -3, 3);
    tg_tensor *w = tg_rand(ctx, dt, TG_SHAPE(40, COLS), -0.1, 0.1);
    tg_tensor *b = tg_rand(ctx, dt, TG_SHAPE(k == LINEAR ? 40 : COLS), -1, 1);
    tg_tensor *in[] = {x, y, w, b};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(tg_set_requires_grad(ctx, in[i], true), TG_OK);
    tg_tensor *out = apply(ctx, k, x, y, w, b);
    ck_assert_msg(out != NULL, "%s: %s", names[k], tg_errmsg(ctx));
    tg_tensor *weights = tg_rand(ctx, dt, out->ndim, out->shape, -1, 1);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_mul(ctx, out, weights))), TG_OK);
    keep(r, 0, out);
    for (int i = 0; i < 4; i++)
        keep(r, i + 1, in[i]->grad);
    tg_ctx_free(ctx);
    tg_set_num_threads(before);
}

/* Whether a and b (n values of dtype dt) agree: bit for bit, or within a
 * relative tol when tol > 0. */
static bool agree(tg_dtype dt, const void *a, const void *b, size_t bytes, double tol)
{
    if (tol == 0)
        return !bytes || !memcmp(a, b, bytes);
    size_t n = bytes / tg_dtype_size(dt);
    for (size_t i = 0; i < n; i++) {
        double u = dt == TG_F32 ? ((const float *)a)[i] : ((const double *)a)[i];
        double v = dt == TG_F32 ? ((const float *)b)[i] : ((const double *)b)[i];
        if (!(fabs(u - v) <= tol * fmax(1.0, fabs(u))))
            return false;
    }
    return true;
}

START_TEST(one_and_two_threads_agree)
{
    static const char *const what[] = {"output", "dx", "dy", "dw", "db"};
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F64 : TG_F32;
        result one, two;
        run(_i, dt, 1, &one);
        run(_i, dt, 2, &two);
        for (int i = 0; i < 5; i++) {
            /* BLAS may split a product's sums differently by thread count */
            double tol = _i == LINEAR && i < 4 ? (d ? 1e-12 : 1e-5) : 0;
            ck_assert_msg((one.data[i] == NULL) == (two.data[i] == NULL), "%s: %s", names[_i],
                          what[i]);
            ck_assert_msg(one.bytes[i] == two.bytes[i] &&
                              agree(dt, one.data[i], two.data[i], one.bytes[i], tol),
                          "%s %s: %s differs at 1 and 2 threads", names[_i],
                          tg_dtype_name(dt), what[i]);
            free(one.data[i]);
            free(two.data[i]);
        }
    }
}
END_TEST

/* The same seed draws the same mask at 1 and 2 threads, and the mask keeps
 * about 1 - p of a large input. */
START_TEST(dropout_mask_by_seed)
{
    float *masks[2];
    for (int k = 0; k < 2; k++) {
        int before = tg_set_num_threads(k + 1);
        tg_ctx *ctx = tg_ctx_new(3);
        tg_tensor *y = tg_dropout(ctx, tg_ones(ctx, TG_F32, TG_SHAPE(ROWS, 3136)), 0.5);
        ck_assert_ptr_nonnull(y);
        masks[k] = malloc((size_t)y->numel * sizeof(float));
        memcpy(masks[k], y->data, (size_t)y->numel * sizeof(float));
        tg_ctx_free(ctx);
        tg_set_num_threads(before);
    }
    ck_assert_mem_eq(masks[0], masks[1], (size_t)ROWS * 3136 * sizeof(float));
    int64_t kept = 0;
    for (int64_t i = 0; i < ROWS * 3136; i++) {
        ck_assert(masks[0][i] == 0 || masks[0][i] == 2);
        kept += masks[0][i] != 0;
    }
    ck_assert_msg(llabs(kept - ROWS * 3136 / 2) < 1000, "kept %lld of %d", (long long)kept,
                  ROWS * 3136);
    free(masks[0]);
    free(masks[1]);
}
END_TEST

/* The vjp hashes the mask again from the saved key: dx = g m with the m of
 * forward's y = x m, bit for bit, for x never 0 (so that y shows m), both
 * dtypes, in checked mode (a gradient element the vjp fails to write is
 * NaN); with a second use of x, dx = g m + g. p = 1 writes zeros; in eval
 * mode dx = g. */
static void check_dropout_grad(tg_dtype dt, double p, bool training, bool twice)
{
    tg_ctx_opts o = {.seed = 9, .checked = true};
    tg_ctx *ctx = tg_ctx_new_opts(&o);
    ck_assert_ptr_nonnull(ctx);
    tg_set_training(ctx, training);
    tg_tensor *x = tg_rand(ctx, dt, TG_SHAPE(ROWS, COLS), 1, 2);
    tg_tensor *g = tg_rand(ctx, dt, TG_SHAPE(ROWS, COLS), -1, 1);
    ck_assert_int_eq(tg_set_requires_grad(ctx, x, true), TG_OK);
    tg_tensor *y = tg_dropout(ctx, x, p);
    tg_tensor *out = twice ? tg_add(ctx, y, x) : y;
    ck_assert_msg(out != NULL, "%s", tg_errmsg(ctx));
    ck_assert_int_eq(tg_backward_ex(ctx, out, g, 0), TG_OK);
    const double keep = training ? (p < 1 ? 1.0 / (1.0 - p) : 0.0) : 1.0;
    int64_t kept = 0;
    TG_DISPATCH_FLOAT(dt, T, {
        const T *xs = x->data, *ys = y->data, *gs = g->data, *dx = x->grad->data;
        for (int64_t i = 0; i < x->numel; i++) {
            T m = ys[i] != 0 ? (T)keep : 0;
            ck_assert_msg(ys[i] == xs[i] * m, "%s p=%g: y[%lld] = %g is not x m", tg_dtype_name(dt),
                          p, (long long)i, (double)ys[i]);
            T want = twice ? gs[i] * m + gs[i] : gs[i] * m;
            ck_assert_msg(dx[i] == want, "%s p=%g: dx[%lld] = %.17g, expected %.17g",
                          tg_dtype_name(dt), p, (long long)i, (double)dx[i], (double)want);
            kept += m != 0;
        }
    });
    /* the mask is not trivial when it should not be */
    if (training && p > 0 && p < 1)
        ck_assert(kept > 0 && kept < x->numel);
    tg_ctx_free(ctx);
}

START_TEST(dropout_grad_is_forward_mask)
{
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F64 : TG_F32;
        check_dropout_grad(dt, 0.3, true, false);
        check_dropout_grad(dt, 0.5, true, true);
        check_dropout_grad(dt, 0.9, true, false);
        check_dropout_grad(dt, 1.0, true, false);
        check_dropout_grad(dt, 0.0, true, true);
        check_dropout_grad(dt, 0.5, false, false);
    }
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("threads");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, one_and_two_threads_agree, 0, N_KERNELS);
    tcase_add_test(tc, dropout_mask_by_seed);
    tcase_add_test(tc, dropout_grad_is_forward_mask);
    suite_add_tcase(s, tc);
    return s;
}
