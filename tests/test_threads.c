/*
 * test_threads.c: the thread count changes the order of some float sums and
 * nothing else. Training steps of the benchmark networks (LeNet-5; the CNN
 * with batch norm and dropout) end with the same parameters, batch-norm
 * statistics and losses at 1 and at 2 threads, to 1e-6 in float32 and
 * 1e-10 in float64 (SGD steps: see train()).
 */
#include <string.h>

#include "testutil.h"

#define MODELS TG_FIXTURES "/../../models/"
#define STEPS 3
#define BATCH 64

typedef struct outcome {
    double loss[STEPS];
    int64_t n;     /* parameters and buffers, flattened */
    double *state;
} outcome;

/* STEPS SGD steps of a model file's network on a fixed random batch. */
static void train(const char *file, tg_dtype dt, int threads, outcome *o)
{
    int before = tg_set_num_threads(threads);
    tg_ctx *ctx = tg_ctx_new(7);
    tg_model *m = tg_model_load(ctx, file, dt);
    ck_assert_msg(m != NULL, "%s", tg_errmsg(ctx));
    tg_tensor *block = tg_model_params(m);
    /* SGD: Adam's first steps divide by the gradients' own size, which
     * magnifies a difference in the last bits of a tiny gradient */
    tg_sgd_opts so = {.lr = 0.05, .momentum = 0.9};
    tg_optim *opt = tg_optim_sgd(ctx, &block, 1, &so);
    ck_assert_ptr_nonnull(opt);
    tg_set_training(ctx, true);
    for (int s = 0; s < STEPS; s++) {
        tg_tensor *x = tg_rand(ctx, dt, TG_SHAPE(BATCH, 1, 28, 28), 0, 1);
        tg_tensor *y = tg_empty(ctx, TG_I64, TG_SHAPE(BATCH));
        for (int64_t i = 0; y && i < BATCH; i++)
            ((int64_t *)y->data)[i] = (i * 7 + s) % 10;
        tg_tensor *loss = tg_model_loss(ctx, m, tg_model_forward(ctx, m, x), y);
        ck_assert_msg(loss != NULL, "%s", tg_errmsg(ctx));
        o->loss[s] = tg_get(loss, 0);
        ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
        ck_assert_int_eq(tg_optim_step(ctx, opt), TG_OK);
        ck_assert_int_eq(tg_optim_zero_grad(ctx, opt), TG_OK);
        tg_reset(ctx);
    }
    o->n = 0;
    for (int i = 0; i < tg_model_state_count(m); i++)
        o->n += tg_model_state(m, i)->numel;
    o->state = malloc((size_t)o->n * sizeof *o->state);
    ck_assert_ptr_nonnull(o->state);
    int64_t at = 0;
    for (int i = 0; i < tg_model_state_count(m); i++) {
        const tg_tensor *t = tg_model_state(m, i);
        for (int64_t j = 0; j < t->numel; j++)
            o->state[at++] = tg_get(t, j);
    }
    tg_optim_free(ctx, opt);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
    tg_set_num_threads(before);
}

static void same_at_1_and_2_threads(const char *file, tg_dtype dt, double tol)
{
    outcome one, two;
    train(file, dt, 1, &one);
    train(file, dt, 2, &two);
    for (int s = 0; s < STEPS; s++)
        ck_assert_msg(fabs(one.loss[s] - two.loss[s]) <= tol * fmax(1, fabs(one.loss[s])),
                      "%s step %d: loss %.17g at 1 thread, %.17g at 2", file, s, one.loss[s],
                      two.loss[s]);
    ck_assert_int_eq(one.n, two.n);
    for (int64_t i = 0; i < one.n; i++)
        ck_assert_msg(fabs(one.state[i] - two.state[i]) <= tol * fmax(1, fabs(one.state[i])),
                      "%s: state element %lld is %.17g at 1 thread, %.17g at 2", file,
                      (long long)i, one.state[i], two.state[i]);
    free(one.state);
    free(two.state);
}

START_TEST(lenet_f32) { same_at_1_and_2_threads(MODELS "lenet5.tgm", TG_F32, 1e-6); }
END_TEST
START_TEST(cnnbn_f32) { same_at_1_and_2_threads(MODELS "cnnbn.tgm", TG_F32, 1e-6); }
END_TEST
START_TEST(cnnbn_f64) { same_at_1_and_2_threads(MODELS "cnnbn.tgm", TG_F64, 1e-10); }
END_TEST

/* The count is process-wide and reads back. */
START_TEST(count)
{
    int before = tg_set_num_threads(1);
    ck_assert_int_ge(before, 1);
    ck_assert_int_eq(tg_num_threads(), 1);
    ck_assert_int_eq(tg_set_num_threads(0), 1); /* < 1 only reads */
    ck_assert_int_eq(tg_num_threads(), 1);
    tg_set_num_threads(before);
    ck_assert_int_eq(tg_num_threads(), before);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("threads");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, count);
    tcase_add_test(tc, lenet_f32);
    tcase_add_test(tc, cnnbn_f32);
    tcase_add_test(tc, cnnbn_f64);
    suite_add_tcase(s, tc);
    return s;
}
