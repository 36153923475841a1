/*
 * test_inplace_vjp.c: ops with TG_OP_VJP_INPLACE, whose input gradient may
 * take over the buffer of their output gradient. Each case runs the same
 * graph twice, once as a training step does (the buffer is handed over)
 * and once with TG_KEEP_GRADS (it cannot be: the output's gradient is
 * kept), and the gradients must agree bit for bit, and with checked mode
 * (which never hands over). Identity probes on both sides of the ops under
 * test see the buffers: the one that reaches the ops' output and the one
 * that leaves their input are the same exactly when it was handed over.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

enum { N = 8, C = 3, H = 4, W = 5, NUMEL = N * C * H * W, MAX_GRADS = NUMEL + 2 * C };

static tg_tensor *filled(tg_ctx *ctx, tg_dtype dt, int ndim, const int64_t *shape, double phase,
                         bool param)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = 2.0 * sin(0.731 * (double)i + phase) + 0.25;
    tg_tensor *t;
    if (param) {
        t = tg_param(ctx, dt, ndim, shape, NULL);
        tg_assign_f64(ctx, t, v);
    } else {
        t = tg_from_f64(ctx, dt, ndim, shape, v);
    }
    free(v);
    return t;
}

/* One case: the op (or chain) under test applied to z, a step tensor. */
typedef struct icase {
    const char *name;
    tg_tensor *(*f)(tg_ctx *ctx, tg_tensor *z, tg_tensor *const *p);
    int nparams;  /* batch norm's weight and bias */
    bool eval;    /* batch norm with running statistics */
    bool aliases; /* z's gradient is the one that reached the case's result */
} icase;

static tg_tensor *f_relu(tg_ctx *c, tg_tensor *z, tg_tensor *const *p) { (void)p; return tg_relu(c, z); }
static tg_tensor *f_leaky(tg_ctx *c, tg_tensor *z, tg_tensor *const *p) { (void)p; return tg_leaky_relu(c, z, 0.1); }
static tg_tensor *f_sigmoid(tg_ctx *c, tg_tensor *z, tg_tensor *const *p) { (void)p; return tg_sigmoid(c, z); }
static tg_tensor *f_tanh(tg_ctx *c, tg_tensor *z, tg_tensor *const *p) { (void)p; return tg_tanh(c, z); }
static tg_tensor *f_dropout(tg_ctx *c, tg_tensor *z, tg_tensor *const *p) { (void)p; return tg_dropout(c, z, 0.3); }
/* relu first: its gradient is handed on through sigmoid's and tanh's */
static tg_tensor *f_chain(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    (void)p;
    return tg_tanh(c, tg_sigmoid(c, tg_relu(c, z)));
}
/* z also reaches the loss directly: relu's vjp must add to z's gradient */
static tg_tensor *f_relu_plus(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    (void)p;
    return tg_add(c, tg_relu(c, z), z);
}
static tg_tensor *f_bn(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    return tg_batch_norm(c, z, p[0], p[1], p[2], p[3], 0.1, 1e-5);
}
static tg_tensor *f_bn_plain(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    (void)p;
    return tg_batch_norm(c, z, NULL, NULL, NULL, NULL, 0.1, 1e-5);
}
/* batch norm then relu, as a convolutional block: one buffer for both */
static tg_tensor *f_bn_relu(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    return tg_relu(c, tg_batch_norm(c, z, p[0], p[1], p[2], p[3], 0.1, 1e-5));
}

static tg_tensor *f_exp(tg_ctx *c, tg_tensor *z, tg_tensor *const *p) { (void)p; return tg_exp(c, z); }
static tg_tensor *f_neg(tg_ctx *c, tg_tensor *z, tg_tensor *const *p) { (void)p; return tg_neg(c, z); }
static tg_tensor *f_pow3(tg_ctx *c, tg_tensor *z, tg_tensor *const *p) { (void)p; return tg_pow(c, z, 3.0); }
static tg_tensor *f_adds(tg_ctx *c, tg_tensor *z, tg_tensor *const *p) { (void)p; return tg_add_scalar(c, z, 0.5); }
static tg_tensor *f_muls(tg_ctx *c, tg_tensor *z, tg_tensor *const *p) { (void)p; return tg_mul_scalar(c, z, -0.7); }
static tg_tensor *f_divs(tg_ctx *c, tg_tensor *z, tg_tensor *const *p) { (void)p; return tg_div_scalar(c, z, 3.0); }
/* log and sqrt of exp(z), which is positive */
static tg_tensor *f_log_sqrt(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    (void)p;
    return tg_log(c, tg_sqrt(c, tg_exp(c, z)));
}
static tg_tensor *f_unary_chain(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    (void)p;
    return tg_div_scalar(c, tg_exp(c, tg_mul_scalar(c, tg_neg(c, tg_add_scalar(c, z, 0.5)), 0.3)), 2.0);
}
/* z times a constant of its shape */
static tg_tensor *f_mul_const(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    (void)p;
    return tg_mul(c, z, filled(c, z->dtype, z->ndim, z->shape, 0.6, false));
}
/* b's gradient reads gout, which a's may overwrite: b's must come first */
static tg_tensor *f_mul_half(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    (void)p;
    return tg_mul(c, z, tg_mul_scalar(c, z, 0.5));
}
static tg_tensor *f_div_sq(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    (void)p;
    return tg_div(c, z, tg_add_scalar(c, tg_mul(c, z, z), 1.0));
}
static tg_tensor *f_sub_add(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    (void)p;
    return tg_sub(c, tg_add(c, z, tg_exp(c, z)), tg_mul_scalar(c, z, 0.25));
}
/* z w + b per channel: the broadcast gradients are sums of gout */
static tg_tensor *per_channel(tg_ctx *c, tg_tensor *v)
{
    return tg_reshape(c, v, 3, (const int64_t[]){C, 1, 1});
}
static tg_tensor *f_affine(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    return tg_add(c, tg_mul(c, z, per_channel(c, p[0])), per_channel(c, p[1]));
}
static tg_tensor *f_affine_div(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    return tg_sub(c, tg_div(c, z, tg_exp(c, per_channel(c, p[0]))), per_channel(c, p[1]));
}
/* input 0 broadcast: z, input 1, never takes over the gradient */
static tg_tensor *f_bcast_first(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    return tg_add(c, tg_mul(c, per_channel(c, p[0]), z), per_channel(c, p[1]));
}

/* a flatten, as between a network's convolutions and its linear layers */
static tg_tensor *f_flatten(tg_ctx *c, tg_tensor *z, tg_tensor *const *p)
{
    (void)p;
    return tg_reshape(c, tg_relu(c, tg_reshape(c, z, 2, (const int64_t[]){N, -1})), 4,
                      (const int64_t[]){N, C, H, W});
}

static const icase cases[] = {
    {"reshape, relu, reshape", f_flatten, 0, false, true},
    {"relu", f_relu, 0, false, true},
    {"leaky_relu", f_leaky, 0, false, true},
    {"sigmoid", f_sigmoid, 0, false, true},
    {"tanh", f_tanh, 0, false, true},
    {"dropout", f_dropout, 0, false, true},
    {"relu, sigmoid, tanh", f_chain, 0, false, true},
    {"relu(z) + z", f_relu_plus, 0, false, false},
    {"batch_norm affine", f_bn, 2, false, true},
    {"batch_norm plain", f_bn_plain, 0, false, true},
    {"batch_norm eval", f_bn, 2, true, true},
    {"batch_norm, relu", f_bn_relu, 2, false, true},
    {"exp", f_exp, 0, false, true},
    {"neg", f_neg, 0, false, true},
    {"pow 3", f_pow3, 0, false, true},
    {"add_scalar", f_adds, 0, false, true},
    {"mul_scalar", f_muls, 0, false, true},
    {"div_scalar", f_divs, 0, false, true},
    {"exp, sqrt, log", f_log_sqrt, 0, false, true},
    {"add_scalar, neg, mul_scalar, exp, div_scalar", f_unary_chain, 0, false, true},
    {"z * constant", f_mul_const, 0, false, true},
    {"z * (z / 2)", f_mul_half, 0, false, true},
    {"z / (z^2 + 1)", f_div_sq, 0, false, true},
    {"z + exp(z) - z / 4", f_sub_add, 0, false, true},
    {"z w + b per channel", f_affine, 2, false, true},
    {"z / exp(w) - b per channel", f_affine_div, 2, false, true},
    {"w z + b, w broadcast", f_bcast_first, 2, false, false},
};
enum { N_CASES = sizeof cases / sizeof cases[0] };

/* The gradients of x and the parameters, as doubles; whether z's gradient
 * was the buffer that reached the ops' output. */
typedef struct result {
    double g[MAX_GRADS];
    int n;
    bool same_buffer;
} result;

/* ---- the probe: an identity op whose vjp notes its gradients' buffers */
static const void *probe_gout[2], *probe_gin[2];

static tg_tensor *probe_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *x = node->in[0];
    tg_tensor *y = tg_empty(ctx, x->dtype, x->ndim, x->shape);
    if (y)
        memcpy(y->data, x->data, (size_t)x->numel * tg_dtype_size(x->dtype));
    return y;
}

static tg_status probe_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                           tg_tensor *const *gin)
{
    (void)ctx;
    int slot = *(const int *)node->attrs;
    probe_gout[slot] = gout->data;
    probe_gin[slot] = gin[0]->data;
    ck_assert(!tg_vjp_adds(node, 0));
    memcpy(gin[0]->data, gout->data, (size_t)gout->numel * tg_dtype_size(gout->dtype));
    return TG_OK;
}

static const tg_op probe_op = {.name = "test_probe", .min_in = 1, .max_in = 1,
                               .attr_size = sizeof(int), .forward = probe_forward,
                               .vjp = probe_vjp, .flags = TG_OP_VJP_WRITES};

static tg_tensor *probe(tg_ctx *ctx, tg_tensor *x, int slot)
{
    return tg_apply(ctx, &probe_op, &x, 1, &slot);
}

static void run(const icase *k, tg_dtype dt, unsigned flags, bool checked, result *res)
{
    tg_ctx_opts o = {0};
    o.seed = 11;
    o.checked = checked;
    tg_ctx *ctx = tg_ctx_new_opts(&o);
    ck_assert_ptr_nonnull(ctx);
    tg_set_training(ctx, !k->eval);
    const int64_t shape[] = {N, C, H, W};
    tg_tensor *x = filled(ctx, dt, 4, shape, 0.3, true);
    tg_tensor *r = filled(ctx, dt, 4, shape, 1.7, false);
    tg_tensor *p[4] = {NULL, NULL, NULL, NULL};
    if (k->nparams) {
        p[0] = filled(ctx, dt, 1, (const int64_t[]){C}, 0.9, true);
        p[1] = filled(ctx, dt, 1, (const int64_t[]){C}, 2.1, true);
        p[2] = tg_buffer(ctx, dt, 1, (const int64_t[]){C}, "running_mean");
        p[3] = tg_buffer(ctx, dt, 1, (const int64_t[]){C}, "running_var");
        tg_assign_f64(ctx, p[2], (const double[]){0.2, -0.1, 0.4});
        tg_assign_f64(ctx, p[3], (const double[]){1.5, 0.7, 2.2});
    }
    /* z is a step tensor: its gradient is the arena's */
    tg_tensor *z = probe(ctx, tg_mul_scalar(ctx, x, 1.5), 0);
    tg_tensor *y = probe(ctx, k->f(ctx, z, p), 1);
    tg_tensor *loss = tg_sum(ctx, tg_mul(ctx, y, r));
    ck_assert_msg(loss != NULL, "%s: %s", k->name, tg_errmsg(ctx));
    ck_assert_int_eq(tg_backward_ex(ctx, loss, NULL, flags), TG_OK);
    res->same_buffer = probe_gout[0] == probe_gin[1];
    res->n = 0;
    for (int64_t i = 0; i < x->numel; i++)
        res->g[res->n++] = tg_get(x->grad, i);
    for (int j = 0; j < k->nparams; j++)
        for (int64_t i = 0; i < p[j]->numel; i++)
            res->g[res->n++] = tg_get(p[j]->grad, i);
    tg_ctx_free(ctx);
}

START_TEST(same_gradients)
{
    const icase *k = &cases[_i];
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F64 : TG_F32;
        static result step, kept, checked;
        run(k, dt, 0, false, &step);
        run(k, dt, TG_KEEP_GRADS, false, &kept);
        run(k, dt, 0, true, &checked);
        ck_assert_int_eq(step.n, kept.n);
        for (int i = 0; i < step.n; i++) {
            ck_assert_msg(isfinite(step.g[i]), "%s %s: gradient %d is %g", k->name,
                          tg_dtype_name(dt), i, step.g[i]);
            ck_assert_msg(step.g[i] == kept.g[i] && step.g[i] == checked.g[i],
                          "%s %s: gradient %d is %.17g handed over, %.17g kept, %.17g checked",
                          k->name, tg_dtype_name(dt), i, step.g[i], kept.g[i], checked.g[i]);
        }
        ck_assert_msg(step.same_buffer == k->aliases, "%s %s: the gradient was %shanded over",
                      k->name, tg_dtype_name(dt), step.same_buffer ? "" : "not ");
        /* (checked mode may reuse a released buffer: not a hand-over) */
        ck_assert_msg(!kept.same_buffer, "%s %s: handed over with TG_KEEP_GRADS", k->name,
                      tg_dtype_name(dt));
    }
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("inplace_vjp");
    TCase *tc = tcase_create("inplace_vjp");
    tcase_add_loop_test(tc, same_gradients, 0, N_CASES);
    suite_add_tcase(s, tc);
    return s;
}
