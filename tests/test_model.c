/*
 * test_model.c: sequential models (nn/model.c): state-dict names and the
 * parameter block, PyTorch's initialisation, forward/backward of LeNet-5
 * and of the batch-norm CNN against PyTorch (tests/fixtures/model/, made by
 * make_model_fixtures.py), pooling's ceil_mode, count_include_pad,
 * dilation and per-axis settings and the losses' reduction, ignore_index
 * and label_smoothing against PyTorch, the summaries of the notes' two networks,
 * checkpoints, and the errors of building and running a model.
 */
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define FIX TG_FIXTURES "/model/"
#define MODELS TG_FIXTURES "/../../models/"

static tg_model *load(tg_ctx *ctx, const char *file, tg_dtype dt)
{
    tg_model *m = tg_model_load(ctx, file, dt);
    ck_assert_msg(m != NULL, "%s: %s", file, tg_errmsg(ctx));
    return m;
}

static tg_layer layer(tg_layer_kind kind, int64_t in, int64_t out, int64_t kernel)
{
    tg_layer l = tg_layer_defaults(kind);
    l.in = in;
    l.out = out;
    l.kernel[0] = l.kernel[1] = kernel;
    return l;
}

/* The model of statedict_names.txt, through the API. */
static tg_model *statedict_model(tg_ctx *ctx)
{
    tg_model *m = tg_model_new(ctx, TG_F64, TG_SHAPE(1, 8, 8));
    tg_layer ls[8] = {layer(TG_LAYER_CONV2D, 1, 4, 3), layer(TG_LAYER_BATCH_NORM2D, 4, 0, 0),
                      layer(TG_LAYER_RELU, 0, 0, 0), layer(TG_LAYER_MAX_POOL2D, 0, 0, 2),
                      layer(TG_LAYER_FLATTEN, 0, 0, 0), layer(TG_LAYER_LINEAR, 36, 5, 0),
                      layer(TG_LAYER_BATCH_NORM1D, 5, 0, 0), layer(TG_LAYER_LINEAR, 5, 3, 0)};
    ls[7].bias = false;
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(tg_model_add(ctx, m, &ls[i]), TG_OK);
    ck_assert_int_eq(tg_model_build(ctx, m), TG_OK);
    return m;
}

START_TEST(state_dict_names_and_order_match_pytorch)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_model *m = statedict_model(ctx);
    FILE *f = fopen(FIX "statedict_names.txt", "r");
    ck_assert_ptr_nonnull(f);
    char line[256];
    int i = 0;
    while (fgets(line, sizeof line, f)) {
        char name[64];
        int used;
        ck_assert_int_eq(sscanf(line, "%63s%n", name, &used), 1);
        tg_tensor *t = tg_model_state(m, i);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(t->name, name);
        int64_t d;
        int nd = 0, k;
        for (char *p = line + used; sscanf(p, "%" SCNd64 "%n", &d, &k) == 1; p += k)
            ck_assert_int_eq(t->shape[nd++], d);
        ck_assert_int_eq(t->ndim, nd);
        bool buffer = strstr(name, "running_") || strstr(name, "num_batches");
        ck_assert_int_eq(tg_model_state_is_param(m, i), !buffer);
        ck_assert_int_eq(t->dtype, strstr(name, "num_batches") ? TG_I64 : TG_F64);
        i++;
    }
    fclose(f);
    ck_assert_int_eq(i, 15);
    ck_assert_int_eq(tg_model_state_count(m), i);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(parameters_live_in_one_block)
{
    tg_ctx *ctx = tg_ctx_new(2);
    tg_model *m = statedict_model(ctx);
    tg_tensor *block = tg_model_params(m);
    ck_assert_ptr_nonnull(block);
    ck_assert_ptr_nonnull(block->grad);
    ck_assert_int_eq(block->ndim, 1);
    int64_t at = 0;
    for (int i = 0; i < tg_model_state_count(m); i++) {
        if (!tg_model_state_is_param(m, i))
            continue;
        tg_tensor *p = tg_model_state(m, i);
        ck_assert_ptr_eq(p->data, (double *)block->data + at);
        ck_assert_ptr_eq(p->grad->data, (double *)block->grad->data + at);
        at += p->numel;
    }
    ck_assert_int_eq(at, block->numel);
    ck_assert_int_eq(at, tg_model_param_count(m, -1));
    ck_assert_int_eq(tg_model_param_count(m, 0), 4 * 9 + 4);
    ck_assert_int_eq(tg_model_param_count(m, 7), 15);
    tg_model_free(ctx, m);
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    ck_assert_int_eq(st.params, 0);
    ck_assert_int_eq(st.buffers, 0);
    tg_ctx_free(ctx);
}
END_TEST

/* PyTorch's reset_parameters: |w| <= 1/sqrt(fan_in), batch norm 1, 0, 0, 1, 0. */
START_TEST(build_initialises_as_pytorch)
{
    tg_ctx *ctx = tg_ctx_new(3);
    tg_model *m = statedict_model(ctx);
    const double bound[] = {1 / 3.0, 1 / 3.0, 1 / 6.0, 1 / 6.0};
    const int conv_lin[] = {0, 1, 7, 8}; /* 0.weight, 0.bias, 5.weight, 5.bias */
    for (int k = 0; k < 4; k++) {
        tg_tensor *t = tg_model_state(m, conv_lin[k]);
        double maxabs = 0;
        for (int64_t j = 0; j < t->numel; j++)
            maxabs = fmax(maxabs, fabs(tg_get(t, j)));
        ck_assert_msg(maxabs > 0 && maxabs <= bound[k], "%s: max %g", t->name, maxabs);
    }
    const double want[] = {1, 0, 0, 1, 0}; /* 1.weight bias running_mean running_var count */
    for (int k = 0; k < 5; k++) {
        tg_tensor *t = tg_model_state(m, 2 + k);
        for (int64_t j = 0; j < t->numel; j++)
            ck_assert_double_eq(tg_get(t, j), want[k]);
    }
    /* The same seed gives the same weights. */
    tg_ctx *ctx2 = tg_ctx_new(3);
    tg_model *m2 = statedict_model(ctx2);
    tg_tensor *a = tg_model_params(m), *b = tg_model_params(m2);
    ck_assert_int_eq(memcmp(a->data, b->data, (size_t)a->numel * 8), 0);
    tg_model_free(ctx2, m2);
    tg_ctx_free(ctx2);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- against PyTorch */

/* Loads the fixture's weights into m (converting to its dtype); the
 * 10.weight of cnnbn, not stored, is made as make_model_fixtures.py does. */
static void load_weights(tg_ctx *ctx, tg_model *m, tg_st *f)
{
    for (int i = 0; i < tg_model_state_count(m); i++) {
        tg_tensor *t = tg_model_state(m, i);
        if (tg_st_find(f, t->name)) {
            ck_assert_int_eq(tg_assign(ctx, t, tg_st_read(ctx, f, t->name)), TG_OK);
            continue;
        }
        ck_assert_str_eq(t->name, "10.weight");
        for (int64_t j = 0; j < t->numel; j++)
            tg_set(t, j, (double)((j * 40503) % 2001 - 1000) / 65536.0);
    }
}

static void ck_against(tg_ctx *ctx, tg_st *f, const char *key, const tg_tensor *got, double tol)
{
    tg_tensor *want = tg_st_read(ctx, f, key);
    ck_assert_msg(want != NULL, "%s: %s", key, tg_errmsg(ctx));
    ck_assert_msg(tg_same_shape(got, want), "%s: shapes differ", key);
    for (int64_t i = 0; i < want->numel; i++) {
        double g = tg_get(got, i), w = tg_get(want, i);
        ck_assert_msg(fabs(g - w) <= tol * fmax(1.0, fabs(w)), "%s[%lld] = %.17g, PyTorch %.17g",
                      key, (long long)i, g, w);
    }
}

/* The sampled gradient of cnnbn's 10.weight: every 16th element, sum, sum of squares. */
static void ck_sampled_grad(tg_ctx *ctx, tg_st *f, const tg_tensor *g, double tol)
{
    tg_tensor *want = tg_st_read(ctx, f, "grad16.10.weight");
    tg_tensor *sums = tg_st_read(ctx, f, "gradsum.10.weight");
    ck_assert_ptr_nonnull(want);
    ck_assert_int_eq(want->numel, (g->numel + 15) / 16);
    for (int64_t i = 0; i < want->numel; i++)
        ck_close(tg_get(g, 16 * i), tg_get(want, i), tol);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < g->numel; i++) {
        s += tg_get(g, i);
        s2 += tg_get(g, i) * tg_get(g, i);
    }
    ck_close(s, tg_get(sums, 0), tol);
    ck_close(s2, tg_get(sums, 1), tol);
}

static void ck_grads(tg_ctx *ctx, tg_st *f, tg_model *m, double tol)
{
    for (int i = 0; i < tg_model_state_count(m); i++) {
        if (!tg_model_state_is_param(m, i))
            continue;
        tg_tensor *p = tg_model_state(m, i);
        char key[64];
        snprintf(key, sizeof key, "grad.%s", p->name);
        if (tg_st_find(f, key))
            ck_against(ctx, f, key, p->grad, tol);
        else
            ck_sampled_grad(ctx, f, p->grad, tol);
    }
}

/* One forward, loss and backward (of the loss's sum when reduction is
 * none) of m on the fixture's batch. */
static tg_tensor *run_batch(tg_ctx *ctx, tg_model *m, tg_st *f, tg_tensor **loss)
{
    tg_tensor *x = tg_to_dtype(ctx, tg_st_read(ctx, f, "input"), tg_model_dtype(m));
    tg_tensor *out = tg_model_forward(ctx, m, x);
    *loss = tg_model_loss(ctx, m, out, tg_st_read(ctx, f, "target"));
    ck_assert_msg(*loss != NULL, "%s", tg_errmsg(ctx));
    tg_tensor *total = (*loss)->ndim ? tg_sum(ctx, *loss) : *loss;
    ck_assert_int_eq(tg_backward(ctx, total), TG_OK);
    return out;
}

static void lenet_against_pytorch(tg_dtype dt, double tol)
{
    tg_ctx *ctx = tg_ctx_new(4);
    tg_model *m = load(ctx, MODELS "lenet5.tgm", dt);
    tg_st *f = tg_st_open(ctx, FIX "lenet5.safetensors");
    ck_assert_msg(f != NULL, "%s", tg_errmsg(ctx));
    if (dt == TG_F64) /* the checkpoint path, strict = false: the file holds more */
        ck_assert_int_eq(tg_model_load_state(ctx, m, FIX "lenet5.safetensors", false), TG_OK);
    else
        load_weights(ctx, m, f);
    tg_set_training(ctx, true);
    tg_tensor *loss, *out = run_batch(ctx, m, f, &loss);
    ck_against(ctx, f, "output", out, tol);
    ck_against(ctx, f, "loss", loss, tol);
    ck_grads(ctx, f, m, tol);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_st_close(ctx, f);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}

START_TEST(lenet5_float64_matches_pytorch) { lenet_against_pytorch(TG_F64, 1e-10); }
END_TEST
START_TEST(lenet5_float32_matches_pytorch) { lenet_against_pytorch(TG_F32, 1e-5); }
END_TEST

/* cnnbn.tgm with dropout p = 0, as the fixture (PyTorch's masks are its own). */
static tg_model *cnnbn_without_dropout(tg_ctx *ctx, tg_dtype dt)
{
    FILE *f = fopen(MODELS "cnnbn.tgm", "rb");
    ck_assert_ptr_nonnull(f);
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *p = strstr(text, "dropout 0.5");
    ck_assert_ptr_nonnull(p);
    memcpy(p, "dropout 0.0", 11);
    tg_model *m = tg_model_parse(ctx, text, n, "cnnbn.tgm", dt);
    ck_assert_msg(m != NULL, "%s", tg_errmsg(ctx));
    return m;
}

static void cnnbn_against_pytorch(tg_dtype dt, double tol)
{
    tg_ctx *ctx = tg_ctx_new(5);
    tg_model *m = cnnbn_without_dropout(ctx, dt);
    tg_st *f = tg_st_open(ctx, FIX "cnnbn.safetensors");
    ck_assert_msg(f != NULL, "%s", tg_errmsg(ctx));
    load_weights(ctx, m, f);
    tg_set_training(ctx, true);
    tg_tensor *loss, *out = run_batch(ctx, m, f, &loss);
    ck_against(ctx, f, "output", out, tol);
    ck_against(ctx, f, "loss", loss, tol);
    ck_grads(ctx, f, m, tol);
    for (int i = 0; i < tg_model_state_count(m); i++) {
        if (tg_model_state_is_param(m, i))
            continue;
        char key[64];
        snprintf(key, sizeof key, "after.%s", tg_model_state(m, i)->name);
        ck_against(ctx, f, key, tg_model_state(m, i), tol);
        if (strstr(key, "num_batches"))
            ck_assert_double_eq(tg_get(tg_model_state(m, i), 0), 1);
    }
    tg_reset(ctx);
    tg_set_training(ctx, false); /* eval mode: the updated running statistics */
    tg_tensor *x = tg_to_dtype(ctx, tg_st_read(ctx, f, "input"), dt);
    ck_against(ctx, f, "eval_output", tg_model_forward(ctx, m, x), tol);
    ck_assert_double_eq(tg_get(tg_model_state(m, 6), 0), 1); /* eval does not count */
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_st_close(ctx, f);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}

START_TEST(cnnbn_float64_training_step_matches_pytorch) { cnnbn_against_pytorch(TG_F64, 1e-10); }
END_TEST
START_TEST(cnnbn_float32_training_step_matches_pytorch) { cnnbn_against_pytorch(TG_F32, 1e-5); }
END_TEST

/* make_model_fixtures.py's POOLCE_TGM: max pooling with dilation 2 and
 * ceil_mode, average pooling with ceil_mode and count_include_pad=false,
 * cross-entropy with label_smoothing=0.1 and ignore_index=1. */
static const char POOLCE_TGM[] =
    "input 2 8 9\n"
    "conv2d 2 4 3 padding=1\n"
    "relu\n"
    "max_pool2d 3 stride=2 padding=1 dilation=2 ceil_mode=true\n"
    "avg_pool2d 3 stride=2 padding=1 ceil_mode=true count_include_pad=false\n"
    "flatten\n"
    "linear 36 5\n"
    "loss cross_entropy label_smoothing=0.1 ignore_index=1\n";

/* Forward, loss and backward of m against the fixture file; m's weights
 * are loaded from it. */
static void ck_fixture_step(tg_ctx *ctx, tg_model *m, const char *file, double tol)
{
    tg_st *f = tg_st_open(ctx, file);
    ck_assert_msg(f != NULL, "%s", tg_errmsg(ctx));
    load_weights(ctx, m, f);
    tg_set_training(ctx, true);
    tg_tensor *loss, *out = run_batch(ctx, m, f, &loss);
    ck_against(ctx, f, "output", out, tol);
    ck_against(ctx, f, "loss", loss, tol);
    ck_grads(ctx, f, m, tol);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_st_close(ctx, f);
}

static void poolce_against_pytorch(tg_dtype dt, double tol)
{
    tg_ctx *ctx = tg_ctx_new(11);
    tg_model *m = tg_model_parse(ctx, POOLCE_TGM, sizeof POOLCE_TGM - 1, "poolce.tgm", dt);
    ck_assert_msg(m != NULL, "%s", tg_errmsg(ctx));
    int64_t shape[TG_MAX_DIMS];
    ck_assert_int_eq(tg_model_shape(m, 2, shape), 3); /* floor mode would give (4, 3, 4) */
    ck_assert(shape[0] == 4 && shape[1] == 4 && shape[2] == 4);
    ck_assert_int_eq(tg_model_shape(m, 3, shape), 3); /* floor mode would give (4, 2, 2) */
    ck_assert(shape[0] == 4 && shape[1] == 3 && shape[2] == 3);
    ck_fixture_step(ctx, m, FIX "poolce.safetensors", tol);
    char buf[4096] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    ck_assert_int_eq(tg_model_summary(ctx, m, f), TG_OK);
    fclose(f);
    ck_assert_msg(strstr(buf, "loss: cross_entropy (mean, ignore_index=1, label_smoothing=0.1)"),
                  "%s", buf);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}

START_TEST(pooling_options_and_smoothed_ce_match_pytorch_float64)
{
    poolce_against_pytorch(TG_F64, 1e-10);
}
END_TEST
START_TEST(pooling_options_and_smoothed_ce_match_pytorch_float32)
{
    poolce_against_pytorch(TG_F32, 1e-5);
}
END_TEST

/* The poolaxes fixture's model, through the API: per-axis pooling values,
 * nll with reduction none and ignore_index 2. */
static tg_model *poolaxes_model(tg_ctx *ctx)
{
    tg_model *m = tg_model_new(ctx, TG_F64, TG_SHAPE(2, 8, 9));
    tg_layer conv = layer(TG_LAYER_CONV2D, 2, 3, 3);
    conv.padding[0] = conv.padding[1] = 1;
    tg_layer mp = tg_layer_defaults(TG_LAYER_MAX_POOL2D);
    mp.kernel[0] = 3, mp.kernel[1] = 2;
    mp.stride[0] = 2, mp.stride[1] = 1;
    mp.padding[0] = 1, mp.padding[1] = 0;
    mp.dilation[0] = 1, mp.dilation[1] = 2;
    mp.ceil_mode = true;
    tg_layer ap = tg_layer_defaults(TG_LAYER_AVG_POOL2D);
    ap.kernel[0] = 2, ap.kernel[1] = 3;
    ap.stride[0] = ap.stride[1] = 2;
    ap.padding[0] = ap.padding[1] = 1;
    ap.ceil_mode = true;
    ap.count_include_pad = false;
    tg_layer ls[6] = {conv, mp, ap, tg_layer_defaults(TG_LAYER_FLATTEN),
                      layer(TG_LAYER_LINEAR, 36, 4, 0), tg_layer_defaults(TG_LAYER_LOG_SOFTMAX)};
    for (int i = 0; i < 6; i++)
        ck_assert_msg(tg_model_add(ctx, m, &ls[i]) == TG_OK, "%s", tg_errmsg(ctx));
    tg_loss_spec nll = tg_loss_defaults(TG_LOSS_NLL);
    nll.reduction = TG_NONE;
    nll.ignore_index = 2;
    ck_assert_int_eq(tg_model_set_loss(ctx, m, &nll), TG_OK);
    ck_assert_int_eq(tg_model_build(ctx, m), TG_OK);
    return m;
}

START_TEST(per_axis_pooling_and_unreduced_nll_match_pytorch)
{
    tg_ctx *ctx = tg_ctx_new(12);
    tg_model *m = poolaxes_model(ctx);
    int64_t shape[TG_MAX_DIMS];
    tg_model_shape(m, 1, shape);
    ck_assert(shape[0] == 3 && shape[1] == 5 && shape[2] == 7);
    tg_model_shape(m, 2, shape); /* the last row window would start in the padding: 3, not 4 */
    ck_assert(shape[0] == 3 && shape[1] == 3 && shape[2] == 4);
    ck_fixture_step(ctx, m, FIX "poolaxes.safetensors", 1e-10);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}
END_TEST

/* Shape inference of max and average pooling against the output lengths
 * PyTorch's MaxPool1d gives (pool_shapes.txt), ceil_mode included. */
START_TEST(pool_output_sizes_follow_pytorch)
{
    FILE *f = fopen(FIX "pool_shapes.txt", "r");
    ck_assert_ptr_nonnull(f);
    tg_ctx *ctx = tg_ctx_new(13);
    int64_t n, k, s, p, d, out;
    int ceil, rows = 0, ceil_rows = 0;
    while (fscanf(f, "%" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %d %" SCNd64,
                  &n, &k, &s, &p, &d, &ceil, &out) == 7) {
        for (int avg = 0; avg < (d == 1 ? 2 : 1); avg++) {
            tg_model *m = tg_model_new(ctx, TG_F32, TG_SHAPE(1, n));
            tg_layer l = tg_layer_defaults(avg ? TG_LAYER_AVG_POOL1D : TG_LAYER_MAX_POOL1D);
            l.kernel[0] = k, l.stride[0] = s, l.padding[0] = p, l.dilation[0] = d;
            l.ceil_mode = ceil;
            ck_assert_msg(tg_model_add(ctx, m, &l) == TG_OK, "%s", tg_errmsg(ctx));
            int64_t shape[TG_MAX_DIMS];
            tg_model_shape(m, 0, shape);
            ck_assert_msg(shape[1] == out, "n %" PRId64 " k %" PRId64 " s %" PRId64 " p %" PRId64
                          " d %" PRId64 " ceil %d: %" PRId64 ", PyTorch %" PRId64, n, k, s, p, d,
                          ceil, shape[1], out);
            tg_model_free(ctx, m);
        }
        rows++;
        ceil_rows += ceil;
    }
    fclose(f);
    ck_assert_int_gt(rows, 500);
    ck_assert_int_gt(ceil_rows, 250);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- summaries */

typedef struct golden_row { int64_t params, c, h, w; } golden_row;

/* /work/shared/golden/README.md section 5; the models add a relu after
 * every conv and after the first linear, and a flatten. */
static void ck_notes_net(const char *file, const golden_row *rows, int64_t total,
                         int64_t activation_values, const char *total_text)
{
    tg_ctx *ctx = tg_ctx_new(6);
    tg_model *m = load(ctx, file, TG_F32);
    int r = 0;
    int64_t values = 224 * 224, shape[TG_MAX_DIMS];
    for (int i = 0; i < tg_model_layer_count(m); i++) {
        tg_layer_kind k = tg_model_layer(m, i)->kind;
        if (k == TG_LAYER_RELU || k == TG_LAYER_FLATTEN) {
            ck_assert_int_eq(tg_model_param_count(m, i), 0);
            continue;
        }
        int nd = tg_model_shape(m, i, shape);
        ck_assert_int_eq(tg_model_param_count(m, i), rows[r].params);
        ck_assert_int_eq(shape[0], rows[r].c);
        ck_assert_int_eq(nd, rows[r].h ? 3 : 1);
        if (nd == 3) {
            ck_assert_int_eq(shape[1], rows[r].h);
            ck_assert_int_eq(shape[2], rows[r].w);
        }
        values += tg_model_activation_bytes(m, i) / 4;
        r++;
    }
    ck_assert_int_eq(r, 11);
    ck_assert_int_eq(tg_model_param_count(m, -1), total);
    ck_assert_int_eq(values, activation_values);
    char buf[8192] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    ck_assert_int_eq(tg_model_summary(ctx, m, f), TG_OK);
    fclose(f);
    ck_assert_msg(strstr(buf, total_text) != NULL, "summary lacks %s:\n%s", total_text, buf);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}

START_TEST(notes_network_summaries_match_the_golden_figures)
{
    static const golden_row net1[] = {
        {416, 16, 220, 220}, {12832, 32, 216, 216}, {0, 32, 106, 106}, {25632, 32, 102, 102},
        {51264, 64, 98, 98}, {0, 64, 47, 47}, {102464, 64, 43, 43}, {204928, 128, 39, 39},
        {0, 128, 18, 18}, {42468352, 1024, 0, 0}, {102500, 100, 0, 0}};
    static const golden_row net2[] = {
        {3328, 128, 220, 220}, {204864, 64, 216, 216}, {0, 64, 106, 106}, {102464, 64, 102, 102},
        {51232, 32, 98, 98}, {0, 32, 47, 47}, {25632, 32, 43, 43}, {12816, 16, 39, 39},
        {0, 16, 18, 18}, {5309440, 1024, 0, 0}, {102500, 100, 0, 0}};
    ck_notes_net(MODELS "notes_net1.tgm", net1, 42968388, 4121700, "total params: 42,968,388");
    ck_notes_net(MODELS "notes_net2.tgm", net2, 5812276, 11084148, "total params: 5,812,276");
}
END_TEST

/* ---------------------------------------------------------------- checkpoints */

START_TEST(checkpoint_round_trip_is_bit_exact)
{
    char path[] = "/tmp/tg_model_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ne(fd, -1);
    close(fd);
    tg_ctx *ctx = tg_ctx_new(7);
    tg_model *a = statedict_model(ctx);
    tg_tensor *x = tg_randn(ctx, TG_F64, TG_SHAPE(3, 1, 8, 8), 0, 1);
    tg_set_training(ctx, true); /* moves the running statistics and the counters */
    tg_model_forward(ctx, a, x);
    tg_set_training(ctx, false);
    tg_tensor *ya = tg_model_forward(ctx, a, x);
    ck_assert_int_eq(tg_model_save(ctx, a, path), TG_OK);
    tg_seed(ctx, 99);
    tg_model *b = statedict_model(ctx); /* other weights */
    tg_tensor *yb = tg_model_forward(ctx, b, x);
    ck_assert_int_ne(memcmp(ya->data, yb->data, (size_t)ya->numel * 8), 0);
    ck_assert_int_eq(tg_model_load_state(ctx, b, path, true), TG_OK);
    yb = tg_model_forward(ctx, b, x);
    ck_assert_int_eq(memcmp(ya->data, yb->data, (size_t)ya->numel * 8), 0);
    ck_assert_double_eq(tg_get(tg_model_state(b, 6), 0), 1); /* 1.num_batches_tracked */
    /* A model it does not fit: the first mismatch by name, nothing written. */
    tg_model *c = load(ctx, MODELS "mlp2.tgm", TG_F64);
    ck_assert_int_eq(tg_model_load_state(ctx, c, path, false), TG_ESHAPE);
    ck_error(ctx, TG_ESHAPE, "0.weight");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_model_load_state(ctx, c, "/nonexistent/x.safetensors", true),
                     TG_ENOTFOUND);
    tg_model_free(ctx, c);
    tg_model_free(ctx, b);
    tg_model_free(ctx, a);
    tg_ctx_free(ctx);
    unlink(path);
}
END_TEST

START_TEST(strict_load_refuses_extra_keys)
{
    tg_ctx *ctx = tg_ctx_new(8);
    tg_model *m = load(ctx, MODELS "lenet5.tgm", TG_F64);
    ck_assert_int_eq(tg_model_load_state(ctx, m, FIX "lenet5.safetensors", true), TG_EFORMAT);
    ck_error(ctx, TG_EFORMAT, "input");
    tg_clear_error(ctx);
    tg_model *c = load(ctx, MODELS "cnnbn.tgm", TG_F64); /* 10.weight is not in the file */
    ck_assert_int_eq(tg_model_load_state(ctx, c, FIX "cnnbn.safetensors", false), TG_ENOTFOUND);
    ck_error(ctx, TG_ENOTFOUND, "10.weight");
    tg_model_free(ctx, c);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}
END_TEST

/* Each layer's ops are recorded in a scope named "<index>.<kind>", and a
 * failing layer leaves no scope open. */
START_TEST(forward_records_one_scope_per_layer)
{
    tg_ctx *ctx = tg_ctx_new(10);
    tg_model *m = load(ctx, MODELS "lenet5.tgm", TG_F32);
    tg_tensor *x = tg_zeros(ctx, TG_F32, TG_SHAPE(2, 1, 28, 28));
    tg_set_requires_grad(ctx, x, true);
    ck_assert_ptr_nonnull(tg_model_forward(ctx, m, x));
    ck_assert_int_eq(tg_scope_depth(ctx), 0);
    const char *want[] = {"0.conv2d", "1.relu", "2.max_pool2d", "3.conv2d", "4.relu",
                          "5.max_pool2d", "6.flatten", "7.linear", "8.relu", "9.linear",
                          "10.relu", "11.linear"};
    int seen = 0;
    for (tg_tensor *t = tg_model_forward(ctx, m, x); t && t->node; t = t->node->in[0], seen++) {
        ck_assert_ptr_nonnull(t->node->scope);
        ck_assert_str_eq(t->node->scope->name, want[11 - seen]);
    }
    ck_assert_int_eq(seen, 12);
    tg_reset(ctx);
    tg_tensor *bad = tg_zeros(ctx, TG_F32, TG_SHAPE(2, 1, 28, 28));
    tg_fill(ctx, bad, NAN);
    tg_set_detect_anomaly(ctx, true); /* the first layer fails inside its scope */
    ck_assert_ptr_null(tg_model_forward(ctx, m, bad));
    ck_assert_int_eq(tg_scope_depth(ctx), 0);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- layers and errors */

/* pad2d, conv, global_avg_pool (pooled dims kept), softmax, against hand values. */
START_TEST(small_layers_compute_what_they_say)
{
    tg_ctx *ctx = tg_ctx_new(9);
    tg_model *m = tg_model_new(ctx, TG_F64, TG_SHAPE(1, 2, 2));
    tg_layer pad = tg_layer_defaults(TG_LAYER_PAD2D);
    pad.padding[0] = pad.padding[1] = 1;
    tg_layer gap = tg_layer_defaults(TG_LAYER_GLOBAL_AVG_POOL);
    tg_layer sm = tg_layer_defaults(TG_LAYER_SOFTMAX);
    tg_layer fl = tg_layer_defaults(TG_LAYER_FLATTEN);
    ck_assert_int_eq(tg_model_add(ctx, m, &pad), TG_OK);
    ck_assert_int_eq(tg_model_add(ctx, m, &gap), TG_OK);
    int64_t shape[TG_MAX_DIMS];
    ck_assert_int_eq(tg_model_shape(m, 0, shape), 3);
    ck_assert_int_eq(shape[1], 4);
    ck_assert_int_eq(tg_model_shape(m, 1, shape), 3);
    ck_assert_int_eq(shape[0] * 10 + shape[1] + shape[2], 12);
    ck_assert_int_eq(tg_model_add(ctx, m, &fl), TG_OK);
    sm.dim = 0; /* over the batch */
    ck_assert_int_eq(tg_model_add(ctx, m, &sm), TG_OK);
    ck_assert_int_eq(tg_model_build(ctx, m), TG_OK);
    ck_assert_ptr_null(tg_model_params(m));
    const double xv[8] = {1, 2, 3, 4, 0, 0, 0, 8};
    tg_tensor *y = tg_model_forward(ctx, m, tg_from_f64(ctx, TG_F64, TG_SHAPE(2, 1, 2, 2), xv));
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->ndim, 2);
    /* means over 4x4 padded planes: 10/16 and 8/16; softmax over the two */
    double a = exp(10 / 16.0), b = exp(8 / 16.0);
    const double want[2] = {a / (a + b), b / (a + b)};
    ck_tensor(y, want, 1e-14);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(shape_errors_name_the_layer_and_shapes)
{
    tg_ctx *ctx = tg_ctx_new(10);
    tg_model *m = tg_model_new(ctx, TG_F32, TG_SHAPE(1, 28, 28));
    tg_layer conv = layer(TG_LAYER_CONV2D, 3, 6, 5);
    ck_assert_int_eq(tg_model_add(ctx, m, &conv), TG_ESHAPE);
    ck_error(ctx, TG_ESHAPE, "layer 0 (conv2d): expects 3 input channels; its input is (1, 28, 28)");
    tg_clear_error(ctx);
    conv.in = 1;
    ck_assert_int_eq(tg_model_add(ctx, m, &conv), TG_OK);
    tg_layer lin = layer(TG_LAYER_LINEAR, 3456, 10, 0);
    ck_assert_int_eq(tg_model_add(ctx, m, &lin), TG_ESHAPE);
    ck_error(ctx, TG_ESHAPE, "layer 1 (linear): expects 3456 input features in the last dimension "
                             "(a flatten before it would give them); its input is (6, 24, 24)");
    tg_clear_error(ctx);
    tg_layer pool = layer(TG_LAYER_MAX_POOL2D, 0, 0, 30);
    pool.padding[0] = pool.padding[1] = 2;
    ck_assert_int_eq(tg_model_add(ctx, m, &pool), TG_ESHAPE);
    ck_error(ctx, TG_ESHAPE, "a window of 30 does not fit in 24 (28 padded)");
    tg_clear_error(ctx);
    pool.kernel[0] = pool.kernel[1] = 2;
    pool.padding[0] = pool.padding[1] = 0;
    pool.count_include_pad = false;
    ck_assert_int_eq(tg_model_add(ctx, m, &pool), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "layer 1 (max_pool2d): count_include_pad=false applies to average "
                             "pooling only");
    tg_clear_error(ctx);
    tg_layer avg = layer(TG_LAYER_AVG_POOL2D, 0, 0, 2);
    avg.dilation[1] = 2;
    ck_assert_int_eq(tg_model_add(ctx, m, &avg), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "layer 1 (avg_pool2d): average pooling has no dilation");
    tg_clear_error(ctx);
    tg_layer drop = tg_layer_defaults(TG_LAYER_DROPOUT);
    drop.p = 1.5;
    ck_assert_int_eq(tg_model_add(ctx, m, &drop), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "layer 1 (dropout): p must be in [0, 1]");
    tg_clear_error(ctx);
    tg_loss_spec ls = tg_loss_defaults(TG_LOSS_CROSS_ENTROPY);
    ls.label_smoothing = 1.5;
    ck_assert_int_eq(tg_model_set_loss(ctx, m, &ls), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "cross_entropy: label_smoothing=1.5 is outside [0, 1]");
    tg_clear_error(ctx);
    ls.label_smoothing = NAN;
    ck_assert_int_eq(tg_model_set_loss(ctx, m, &ls), TG_EINVAL);
    tg_clear_error(ctx);
    ls = tg_loss_defaults(TG_LOSS_NLL);
    ls.label_smoothing = 0.1;
    ck_assert_int_eq(tg_model_set_loss(ctx, m, &ls), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "nll: label_smoothing=0.1; it applies to cross_entropy only");
    tg_clear_error(ctx);
    ls = tg_loss_defaults(TG_LOSS_MSE);
    ls.ignore_index = 3;
    ck_assert_int_eq(tg_model_set_loss(ctx, m, &ls), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "mse: ignore_index=3; it applies to cross_entropy and nll only");
    tg_clear_error(ctx);
    ls = tg_loss_defaults(TG_LOSS_BCE);
    ls.reduction = (tg_reduction)7;
    ck_assert_int_eq(tg_model_set_loss(ctx, m, &ls), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "bce: reduction 7 is not mean, sum or none");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_model_loss_spec(m)->kind, TG_LOSS_NONE); /* nothing refused was kept */
    /* Not built yet; then built: no more layers, and the input must fit. */
    tg_tensor *x = tg_zeros(ctx, TG_F32, TG_SHAPE(2, 1, 28, 28));
    ck_assert_ptr_null(tg_model_forward(ctx, m, x));
    ck_error(ctx, TG_ESTATE, "not built");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_model_build(ctx, m), TG_OK);
    ck_assert_int_eq(tg_model_add(ctx, m, &drop), TG_ESTATE);
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_model_forward(ctx, m, tg_zeros(ctx, TG_F32, TG_SHAPE(2, 1, 28, 27))));
    ck_error(ctx, TG_ESHAPE, "input (2, 1, 28, 27); the model takes (N, 1, 28, 28)");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_model_forward(ctx, m, tg_zeros(ctx, TG_F64, TG_SHAPE(2, 1, 28, 28))));
    ck_error(ctx, TG_EDTYPE, "float64");
    tg_clear_error(ctx);
    tg_tensor *y = tg_model_forward(ctx, m, x);
    ck_assert_ptr_null(tg_model_loss(ctx, m, y, y));
    ck_error(ctx, TG_ESTATE, "no loss");
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(names_and_defaults)
{
    ck_assert_str_eq(tg_layer_name(TG_LAYER_BATCH_NORM2D), "batch_norm2d");
    ck_assert_str_eq(tg_layer_name(TG_LAYER_COUNT), "?");
    ck_assert_str_eq(tg_loss_name(TG_LOSS_BCE_WITH_LOGITS), "bce_with_logits");
    ck_assert_str_eq(tg_loss_name(TG_LOSS_NONE), "?");
    tg_layer p = tg_layer_defaults(TG_LAYER_MAX_POOL2D);
    ck_assert_int_eq(p.stride[0], 0); /* the kernel, resolved by tg_model_add */
    tg_layer c = tg_layer_defaults(TG_LAYER_CONV2D);
    ck_assert(c.stride[1] == 1 && c.dilation[0] == 1 && c.groups == 1 && c.bias);
    ck_assert_double_eq(tg_layer_defaults(TG_LAYER_LEAKY_RELU).p, 0.01);
    ck_assert_double_eq(tg_layer_defaults(TG_LAYER_DROPOUT).p, 0.5);
    tg_loss_spec l = tg_loss_defaults(TG_LOSS_CROSS_ENTROPY);
    ck_assert(l.reduction == TG_MEAN && l.ignore_index == -100 && l.label_smoothing == 0);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, state_dict_names_and_order_match_pytorch);
    tcase_add_test(tc, forward_records_one_scope_per_layer);
    tcase_add_test(tc, parameters_live_in_one_block);
    tcase_add_test(tc, build_initialises_as_pytorch);
    tcase_add_test(tc, lenet5_float64_matches_pytorch);
    tcase_add_test(tc, lenet5_float32_matches_pytorch);
    tcase_add_test(tc, cnnbn_float64_training_step_matches_pytorch);
    tcase_add_test(tc, cnnbn_float32_training_step_matches_pytorch);
    tcase_add_test(tc, pooling_options_and_smoothed_ce_match_pytorch_float64);
    tcase_add_test(tc, pooling_options_and_smoothed_ce_match_pytorch_float32);
    tcase_add_test(tc, per_axis_pooling_and_unreduced_nll_match_pytorch);
    tcase_add_test(tc, pool_output_sizes_follow_pytorch);
    tcase_add_test(tc, notes_network_summaries_match_the_golden_figures);
    tcase_add_test(tc, checkpoint_round_trip_is_bit_exact);
    tcase_add_test(tc, strict_load_refuses_extra_keys);
    tcase_add_test(tc, small_layers_compute_what_they_say);
    tcase_add_test(tc, shape_errors_name_the_layer_and_shapes);
    tcase_add_test(tc, names_and_defaults);
    suite_add_tcase(s, tc);
    return s;
}
