/*
 * test_modelfile.c: the model file reader (nn/modelfile.c): the shipped
 * models, the argument forms, every malformed file with its file:line
 * message, untrusted bytes, and out-of-memory at every allocation.
 */
#include <string.h>

#include "testutil.h"

#define MODELS TG_FIXTURES "/../../models/"

static tg_model *parse(tg_ctx *ctx, const char *text)
{
    return tg_model_parse(ctx, text, strlen(text), "t.tgm", TG_F32);
}

START_TEST(shipped_models_load)
{
    static const char *const files[] = {"seed_1d", "mlp2", "lenet5", "cnnbn", "notes_net1",
                                        "notes_net2"};
    static const int layers[] = {9, 4, 12, 13, 19, 19};
    static const int64_t params[] = {12644, 12, 61706, 421834, 42968388, 5812276};
    static const tg_loss_kind loss[] = {TG_LOSS_BCE, TG_LOSS_MSE, TG_LOSS_CROSS_ENTROPY,
                                        TG_LOSS_CROSS_ENTROPY, TG_LOSS_CROSS_ENTROPY,
                                        TG_LOSS_CROSS_ENTROPY};
    for (int i = 0; i < 6; i++) {
        tg_ctx *ctx = tg_ctx_new(1);
        char path[512];
        snprintf(path, sizeof path, MODELS "%s.tgm", files[i]);
        tg_model *m = tg_model_load(ctx, path, TG_F32);
        ck_assert_msg(m != NULL, "%s", tg_errmsg(ctx));
        ck_assert_int_eq(tg_model_layer_count(m), layers[i]);
        ck_assert_int_eq(tg_model_param_count(m, -1), params[i]);
        ck_assert_int_eq(tg_model_loss_spec(m)->kind, loss[i]);
        tg_model_free(ctx, m);
        tg_ctx_free(ctx);
    }
}
END_TEST

/* seed_1d.tgm is examples/seed1d_net.h's network: 787, 786, 393, 32, 1. */
START_TEST(seed_1d_has_the_example_shapes)
{
    tg_ctx *ctx = tg_ctx_new(2);
    tg_model *m = tg_model_load(ctx, MODELS "seed_1d.tgm", TG_F64);
    ck_assert_ptr_nonnull(m);
    static const int64_t last[] = {787, 786, 786, 393, 393, 32, 32, 1, 1};
    int64_t shape[TG_MAX_DIMS];
    for (int i = 0; i < 9; i++) {
        int nd = tg_model_shape(m, i, shape);
        ck_assert_int_eq(shape[nd - 1], last[i]);
    }
    ck_assert_int_eq(tg_model_layer(m, 3)->stride[0], 2);
    ck_assert_int_eq(tg_model_loss_spec(m)->reduction, TG_MEAN);
    /* Runs: a probability per example, and a finite BCE. */
    tg_tensor *x = tg_randn(ctx, TG_F64, TG_SHAPE(3, 1, 785), 0, 1);
    tg_tensor *p = tg_model_forward(ctx, m, x);
    ck_assert_int_eq(p->shape[1], 1);
    tg_tensor *l = tg_model_loss(ctx, m, p, tg_full(ctx, TG_F64, TG_SHAPE(3, 1), 1));
    ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
    ck_assert(isfinite(tg_get(l, 0)));
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(positional_and_keyword_arguments_agree)
{
    static const char *const forms[] = {
        "input 3 16 16\nconv2d 3 8 3 2 1 1 1 false\n",
        "input 3 16 16\nconv2d 3 8 3 stride=2 padding=1 bias=false\n",
        "input 3 16 16\nconv2d in_channels=3 out_channels=8 kernel_size=3 bias=False padding=1 "
        "stride=2 dilation=1 groups=1\n",
        "# comment\r\n\r\n  input\t3 16 16   # trailing\r\n\tconv2d 3 8 3 stride=2 padding=1 bias=0\r\n",
    };
    for (int i = 0; i < 4; i++) {
        tg_ctx *ctx = tg_ctx_new(3);
        tg_model *m = parse(ctx, forms[i]);
        ck_assert_msg(m != NULL, "form %d: %s", i, tg_errmsg(ctx));
        const tg_layer *l = tg_model_layer(m, 0);
        ck_assert(l->in == 3 && l->out == 8 && l->kernel[1] == 3 && l->stride[1] == 2 &&
                  l->padding[0] == 1 && !l->bias);
        int64_t shape[TG_MAX_DIMS];
        tg_model_shape(m, 0, shape);
        ck_assert_int_eq(shape[2], 8);
        tg_model_free(ctx, m);
        tg_ctx_free(ctx);
    }
}
END_TEST

START_TEST(every_layer_and_loss_parses)
{
    tg_ctx *ctx = tg_ctx_new(4);
    const char *text =
        "input 2 12\n"
        "conv1d 2 4 3 padding=1 dilation=1 groups=2\n"
        "batch_norm1d 4 eps=1e-3 momentum=0.2\n"
        "leaky_relu 0.2\n"
        "max_pool1d 2 stride=1 padding=1\n"  /* (4, 13) */
        "avg_pool1d 3 2 1 false true\n"      /* (4, 7) */
        "pad1d 2\n"                           /* (4, 11) */
        "tanh\n"
        "global_avg_pool\n"                   /* (4, 1) */
        "flatten\n"
        "dropout p=0.25\n"
        "linear in_features=4 out_features=3\n"
        "log_softmax dim=-1\n"
        "loss nll reduction=sum ignore_index=-100\n";
    tg_model *m = parse(ctx, text);
    ck_assert_msg(m != NULL, "%s", tg_errmsg(ctx));
    int64_t shape[TG_MAX_DIMS];
    static const int64_t last[] = {12, 12, 12, 13, 7, 11, 11, 1, 4, 4, 3, 3};
    for (int i = 0; i < 12; i++) {
        int nd = tg_model_shape(m, i, shape);
        ck_assert_int_eq(shape[nd - 1], last[i]);
    }
    ck_assert_double_eq(tg_model_layer(m, 1)->momentum, 0.2);
    ck_assert_double_eq(tg_model_layer(m, 2)->p, 0.2);
    ck_assert_int_eq(tg_model_layer(m, 11)->dim, -1);
    ck_assert_int_eq(tg_model_loss_spec(m)->reduction, TG_SUM);
    tg_set_training(ctx, true);
    tg_tensor *out = tg_model_forward(ctx, m, tg_randn(ctx, TG_F32, TG_SHAPE(5, 2, 12), 0, 1));
    const double t[5] = {0, 1, 2, 1, 0};
    tg_tensor *l = tg_model_loss(ctx, m, out, tg_from_f64(ctx, TG_I64, TG_SHAPE(5), t));
    ck_assert_msg(l != NULL, "%s", tg_errmsg(ctx));
    ck_assert_int_eq(tg_backward(ctx, l), TG_OK);
    tg_model_free(ctx, m);
    tg_model *s = parse(ctx, "input 1 4 4\npad2d 1\nmax_pool2d kernel_size=2\nsigmoid\nsoftmax\n"
                             "loss bce_with_logits reduction=mean\n");
    ck_assert_msg(s != NULL, "%s", tg_errmsg(ctx));
    tg_model_free(ctx, s);
    s = parse(ctx, "input 4\nloss cross_entropy label_smoothing=0\n");
    ck_assert_msg(s != NULL, "%s", tg_errmsg(ctx));
    tg_model_free(ctx, s);
    tg_ctx_free(ctx);
}
END_TEST

/* ceil_mode (with the last window dropped when it would start in the right
 * padding), count_include_pad=false and dilation parse into the layers and
 * give PyTorch's shapes; reduction=none gives one loss per element. */
START_TEST(pooling_settings_and_reduction_none_parse_and_run)
{
    tg_ctx *ctx = tg_ctx_new(9);
    tg_model *m = parse(ctx, "input 1 5 6\n"
                             "max_pool2d 2 stride=2 padding=1 ceil_mode=true\n" /* (1, 3, 4) */
                             "avg_pool2d 2 ceil_mode=True count_include_pad=False\n" /* (1, 2, 2) */
                             "max_pool2d 2 stride=1 dilation=1\n"               /* (1, 1, 1) */
                             "loss mse reduction=none\n");
    ck_assert_msg(m != NULL, "%s", tg_errmsg(ctx));
    const tg_layer *a = tg_model_layer(m, 1);
    ck_assert(a->ceil_mode && !a->count_include_pad && a->stride[1] == 2);
    ck_assert(tg_model_layer(m, 0)->count_include_pad);
    static const int64_t want[3][2] = {{3, 4}, {2, 2}, {1, 1}};
    int64_t shape[TG_MAX_DIMS];
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tg_model_shape(m, i, shape), 3);
        ck_assert_int_eq(shape[1], want[i][0]);
        ck_assert_int_eq(shape[2], want[i][1]);
    }
    ck_assert_int_eq(tg_model_loss_spec(m)->reduction, TG_NONE);
    tg_tensor *x = tg_randn(ctx, TG_F32, TG_SHAPE(3, 1, 5, 6), 0, 1);
    ck_assert_int_eq(tg_set_requires_grad(ctx, x, true), TG_OK);
    tg_tensor *out = tg_model_forward(ctx, m, x);
    tg_tensor *l = tg_model_loss(ctx, m, out, tg_zeros(ctx, TG_F32, TG_SHAPE(3, 1, 1, 1)));
    ck_assert_msg(l != NULL, "%s", tg_errmsg(ctx));
    ck_assert_int_eq(l->ndim, 4);
    ck_assert_int_eq(l->numel, 3);
    for (int64_t i = 0; i < 3; i++)
        ck_close(tg_get(l, i), tg_get(out, i) * tg_get(out, i), 1e-6);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, l)), TG_OK);
    ck_assert_ptr_nonnull(x->grad);
    double g = 0; /* d/dx of sum out^2 reaches x */
    for (int64_t i = 0; i < x->numel; i++)
        g += fabs(tg_get(x->grad, i));
    ck_assert(g > 0);
    tg_model_free(ctx, m);

    m = parse(ctx, "input 3\nloss cross_entropy reduction=none ignore_index=0 "
                   "label_smoothing=0.1\n");
    ck_assert_msg(m != NULL, "%s", tg_errmsg(ctx));
    const tg_loss_spec *ls = tg_model_loss_spec(m);
    ck_assert(ls->reduction == TG_NONE && ls->ignore_index == 0 && ls->label_smoothing == 0.1);
    const double z[6] = {1, 2, 3, 0, 0, 0}, t[2] = {0, 2};
    l = tg_model_loss(ctx, m, tg_from_f64(ctx, TG_F32, TG_SHAPE(2, 3), z),
                      tg_from_f64(ctx, TG_I64, TG_SHAPE(2), t));
    ck_assert_msg(l != NULL, "%s", tg_errmsg(ctx));
    ck_assert_int_eq(l->ndim, 1);
    ck_assert_double_eq(tg_get(l, 0), 0); /* ignored */
    /* uniform logits: log 3 whatever the smoothing */
    ck_close(tg_get(l, 1), log(3.0), 1e-6);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- bad files */

typedef struct bad { const char *text; const char *msg; } bad;

static const bad BAD[] = {
    {"", "t.tgm:1: no 'input' line"},
    {"# only a comment\n\n", "t.tgm:2: no 'input' line"},
    {"relu\n", "t.tgm:1: the first line must be 'input' with the shape of one example, not 'relu'"},
    {"input 1 28 28\ninput 1 28 28\n", "t.tgm:2: input given again (first on line 1)"},
    {"input\n", "t.tgm:1: input: 0 dimensions; an example has 1 to 5"},
    {"input 1 2 3 4 5 6\n", "t.tgm:1: input: 6 dimensions"},
    {"input 1 0\n", "t.tgm:1: model_new: input dimension 1 is 0"},
    {"input 1 x\n", "t.tgm:1: input: 'x' is not an integer"},
    {"input 99999999999999999999\n", "t.tgm:1: input: '99999999999999999999' is out of range"},
    {"input 4\nconv3d 1 1 1\n", "t.tgm:2: unknown layer 'conv3d'"},
    {"input 4\nlinear 4\n", "t.tgm:2: linear: missing argument 'out_features'"},
    {"input 4\nlinear 4 2 true 7\n", "t.tgm:2: linear: extra positional argument '7' (it takes 3)"},
    {"input 4\nrelu 1\n", "t.tgm:2: relu: extra positional argument '1' (it takes 0)"},
    {"input 4\nlinear 4 2 bais=false\n", "t.tgm:2: linear: unknown argument 'bais'"},
    {"input 4\nlinear 4 out_features=2 2\n",
     "t.tgm:2: linear: positional argument '2' after a key=value one"},
    {"input 4\nlinear 4 2 out_features=3\n", "t.tgm:2: linear: argument 'out_features' given twice"},
    {"input 4\nlinear 4 2.5\n", "t.tgm:2: out_features: '2.5' is not an integer"},
    {"input 4\nlinear 4 2 bias=maybe\n", "t.tgm:2: bias: 'maybe' is not true or false"},
    {"input 4\ndropout 1e999\n", "t.tgm:2: p: '1e999' is out of range"},
    {"input 4\ndropout nan\n", "t.tgm:2: p: 'nan' is out of range"},
    {"input 4\ndropout 0.5x\n", "t.tgm:2: p: '0.5x' is not a number"},
    {"input 4\ndropout 1.5\n", "t.tgm:2: model_add: layer 0 (dropout): p must be in [0, 1]"},
    {"input 4\nsoftmax dim=3000000000\n", "t.tgm:2: dim: '3000000000' is out of range"},
    {"input 4\nsoftmax dim=2\n", "t.tgm:2: model_add: layer 0 (softmax): dim is outside"},
    {"input 1 28 28\nconv2d 1 6 5\nflatten\nlinear 400 120\n",
     "t.tgm:4: model_add: layer 2 (linear): expects 400 input features in the last dimension; "
     "its input is (3456)"},
    {"input 1 28 28\nconv2d 3 6 5\n",
     "t.tgm:2: model_add: layer 0 (conv2d): expects 3 input channels; its input is (1, 28, 28)"},
    {"input 1 4 4\nconv2d 1 6 5\n", "t.tgm:2: model_add: layer 0 (conv2d): a window of 5 does not "
                                    "fit in 4 (4 padded)"},
    {"input 1 4 4\nconv2d 1 6 0\n", "t.tgm:2: model_add: layer 0 (conv2d): kernel must be >= 1"},
    {"input 1 4 4\nconv2d 1 6 1 stride=0\n", "stride must be >= 1"},
    {"input 1 4 4\nconv2d 2 6 1 groups=3\n", "groups must be >= 1 and divide in and out"},
    {"input 1 4 4\nconv2d 1 6 3 padding=9223372036854775807\n",
     "kernel, dilation or padding too large"},
    {"input 1 4 4\nmax_pool2d 2 padding=2\n", "padding must be at most half the kernel"},
    {"input 1 4 4\nmax_pool2d 2 dilation=0\n", "t.tgm:2: model_add: layer 0 (max_pool2d): "
                                               "dilation must be >= 1"},
    {"input 1 4 4\nmax_pool2d 2 dilation=4\n", "t.tgm:2: model_add: layer 0 (max_pool2d): a window "
                                               "of 5 does not fit in 4 (4 padded)"},
    {"input 1 4 4\navg_pool2d 2 dilation=2\n", "t.tgm:2: avg_pool2d: unknown argument 'dilation'"},
    {"input 1 4 4\nmax_pool2d 2 count_include_pad=false\n",
     "t.tgm:2: max_pool2d: unknown argument 'count_include_pad'"},
    {"input 1 4 4\navg_pool2d 2 ceil_mode=yes\n", "t.tgm:2: ceil_mode: 'yes' is not true or false"},
    {"input 1 4 4\nmax_pool2d 2 2 0 1 true\n",
     "t.tgm:2: max_pool2d: extra positional argument 'true' (it takes 4)"},
    {"input 4\nbatch_norm2d 4\n", "layer 0 (batch_norm2d): expects examples of shape (C, H, W)"},
    {"input 4 3\nbatch_norm1d 3\n", "layer 0 (batch_norm1d): expects 3 channels; its input is (4, 3)"},
    {"input 4\nbatch_norm1d 4 eps=0\n", "eps must be > 0 and finite"},
    {"input 4\nmax_pool1d 2\n", "layer 0 (max_pool1d): expects examples of shape (C, L)"},
    {"input 4\nglobal_avg_pool\n", "expects examples of shape (C, ...)"},
    {"input 4\nloss\n", "t.tgm:2: loss: missing the loss name"},
    {"input 4\nloss hinge\n", "t.tgm:2: unknown loss 'hinge'"},
    {"input 4\nloss mse sum\n", "t.tgm:2: loss: extra positional argument 'sum'"},
    {"input 4\nloss mse ignore_index=1\n", "t.tgm:2: loss mse: unknown argument 'ignore_index'"},
    {"input 4\nloss mse reduction=max\n", "t.tgm:2: loss: reduction 'max' is not mean, sum or none"},
    {"input 4\nloss cross_entropy reduction=bogus\n",
     "t.tgm:2: loss: reduction 'bogus' is not mean, sum or none"},
    {"input 4\nloss cross_entropy label_smoothing=2\n", "t.tgm:2: model_set_loss: cross_entropy: "
                                                       "label_smoothing=2 is outside [0, 1]"},
    {"input 4\nloss cross_entropy label_smoothing=-0.1\n", "label_smoothing=-0.1 is outside [0, 1]"},
    {"input 4\nloss cross_entropy label_smoothing=nan\n",
     "t.tgm:2: label_smoothing: 'nan' is out of range"},
    {"input 4\nloss cross_entropy ignore_index=x\n", "t.tgm:2: ignore_index: 'x' is not an integer"},
    {"input 4\nloss nll label_smoothing=0.1\n", "t.tgm:2: loss nll: unknown argument "
                                                "'label_smoothing'"},
    {"input 4\nloss bce ignore_index=0\n", "t.tgm:2: loss bce: unknown argument 'ignore_index'"},
    {"input 4\nloss nll reduction=sum reduction=none\n",
     "t.tgm:2: loss: argument 'reduction' given twice"},
    {"input 4\nloss mse\nrelu\n", "t.tgm:3: 'relu' after the loss line (line 2); the loss comes last"},
    {"input 4\nloss mse\nloss mse\n", "t.tgm:3: 'loss' after the loss line"},
    {"input 4\nlinear 4 2 \x01\n", "t.tgm:2: byte 0x01 is not allowed outside a comment"},
    {"input 4\nlinear 4 2 caf\xc3\xa9=1\n", "t.tgm:2: byte 0xc3 is not allowed outside a comment"},
    {"input 4\nlinear =4 2\n", "t.tgm:2: linear: unknown argument ''"},
    {"input 4\nlinear 4 2 bias=\n", "t.tgm:2: bias: '' is not true or false"},
    {"input 4\nrelu 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24\n",
     "t.tgm:2: too many arguments"},
};

START_TEST(malformed_files_say_file_line_and_what)
{
    int n = (int)(sizeof BAD / sizeof BAD[0]);
    ck_assert_int_ge(n, 30);
    for (int i = 0; i < n; i++) {
        tg_ctx *ctx = tg_ctx_new(5);
        ck_assert_ptr_null(parse(ctx, BAD[i].text));
        ck_assert_msg(tg_errcode(ctx) == TG_EFORMAT, "case %d: code %d: %s", i, tg_errcode(ctx),
                      tg_errmsg(ctx));
        ck_assert_msg(strstr(tg_errmsg(ctx), BAD[i].msg) != NULL, "case %d: '%s' lacks '%s'", i,
                      tg_errmsg(ctx), BAD[i].msg);
        tg_stats st;
        tg_ctx_stats(ctx, &st);
        ck_assert_int_eq(st.params + st.buffers, 0);
        tg_ctx_free(ctx);
    }
}
END_TEST

/* NUL bytes, long lines, no final newline, text that is not NUL-terminated. */
START_TEST(untrusted_bytes)
{
    tg_ctx *ctx = tg_ctx_new(6);
    static const char nul[] = "input 4\nlin\0ear 4 2\n";
    ck_assert_ptr_null(tg_model_parse(ctx, nul, sizeof nul - 1, "n.tgm", TG_F32));
    ck_error(ctx, TG_EFORMAT, "n.tgm:2: byte 0x00 is not allowed outside a comment");
    tg_clear_error(ctx);
    static const char nul_comment[] = "input 4 # \0 fine\nrelu";
    tg_model *m = tg_model_parse(ctx, nul_comment, sizeof nul_comment - 1, "n.tgm", TG_F32);
    ck_assert_msg(m != NULL, "%s", tg_errmsg(ctx));
    tg_model_free(ctx, m);
    size_t big = 200000;
    char *text = malloc(big + 16);
    memcpy(text, "input 4\nrelu ", 13);
    memset(text + 13, '9', big);
    m = tg_model_parse(ctx, text, big + 13, "long.tgm", TG_F32);
    ck_assert_ptr_null(m);
    ck_error(ctx, TG_EFORMAT, "long.tgm:2: relu: extra positional argument '9999");
    tg_clear_error(ctx);
    memcpy(text, "input 4\nlinear 4 ", 17); /* a 200000-digit number */
    ck_assert_ptr_null(tg_model_parse(ctx, text, big + 13, "long.tgm", TG_F32));
    ck_error(ctx, TG_EFORMAT, "is out of range");
    tg_clear_error(ctx);
    /* "input 4\nrelu" then a byte that must not be read. */
    memcpy(text, "input 4\nrelu!", 13);
    m = tg_model_parse(ctx, text, 12, "cut.tgm", TG_F32);
    ck_assert_msg(m != NULL, "%s", tg_errmsg(ctx));
    tg_model_free(ctx, m);
    free(text);
    ck_assert_ptr_null(tg_model_parse(ctx, NULL, 3, "x", TG_F32));
    ck_error(ctx, TG_EINVAL, "text NULL");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_model_parse(ctx, "input 4\n", 8, "x", TG_I64));
    ck_error(ctx, TG_EFORMAT, "x:1: model_new: dtype int64");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_model_load(ctx, "/nonexistent/model.tgm", TG_F32));
    ck_error(ctx, TG_ENOTFOUND, "/nonexistent/model.tgm");
    tg_ctx_free(ctx);
}
END_TEST

/* The file name in messages is the path given. */
START_TEST(load_names_the_path)
{
    tg_ctx *ctx = tg_ctx_new(7);
    ck_assert_ptr_null(tg_model_load(ctx, TG_FIXTURES "/model/statedict_names.txt", TG_F32));
    ck_error(ctx, TG_EFORMAT, "statedict_names.txt:1: the first line must be 'input'");
    tg_ctx_free(ctx);
}
END_TEST

/* Every allocation of tg_model_load failed in turn: TG_ENOMEM, nothing leaked. */
START_TEST(load_survives_every_allocation_failure)
{
    for (long k = 1;; k++) {
        test_alloc a = {0};
        tg_ctx *ctx = test_ctx_with(&a, 8);
        ck_assert_ptr_nonnull(ctx);
        a.fail_at = a.calls + k;
        tg_model *m = tg_model_load(ctx, MODELS "cnnbn.tgm", TG_F32);
        if (m) {
            ck_assert_int_eq(a.failed, 0);
            ck_assert_int_eq(tg_model_param_count(m, -1), 421834);
            tg_model_free(ctx, m);
            tg_stats st;
            tg_ctx_stats(ctx, &st);
            ck_assert_int_eq(st.params + st.buffers, 0);
            tg_ctx_free(ctx);
            ck_assert_int_eq(a.live_bytes, 0);
            ck_assert_int_gt(k, 10);
            break;
        }
        ck_assert_msg(tg_errcode(ctx) == TG_ENOMEM, "failing allocation %ld: %s", k,
                      tg_errmsg(ctx));
        tg_stats st;
        tg_ctx_stats(ctx, &st);
        ck_assert_int_eq(st.params + st.buffers, 0);
        tg_ctx_free(ctx);
        ck_assert_msg(a.live_bytes == 0, "failing allocation %ld leaks %ld bytes", k,
                      a.live_bytes);
    }
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("modelfile");
    TCase *tc = tcase_create("modelfile");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, shipped_models_load);
    tcase_add_test(tc, seed_1d_has_the_example_shapes);
    tcase_add_test(tc, positional_and_keyword_arguments_agree);
    tcase_add_test(tc, every_layer_and_loss_parses);
    tcase_add_test(tc, pooling_settings_and_reduction_none_parse_and_run);
    tcase_add_test(tc, malformed_files_say_file_line_and_what);
    tcase_add_test(tc, untrusted_bytes);
    tcase_add_test(tc, load_names_the_path);
    tcase_add_test(tc, load_survives_every_allocation_failure);
    suite_add_tcase(s, tc);
    return s;
}
