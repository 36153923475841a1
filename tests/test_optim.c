/*
 * test_optim.c: the optimisers, schedules and clipping of nn/optim.c
 * against PyTorch 1.13 (tests/fixtures/optim/make_optim.py made
 * optim.safetensors), their state checkpoints, refusals and out-of-memory
 * behaviour.
 *
 * The model is y = linear(tanh(linear(X, W1, b1)), W2, b2), loss mse(y, Y),
 * run through tapegrad's own forward and backward at every step. The
 * optimiser also holds a parameter "unused" that never gets a gradient, as
 * PyTorch's p.grad is None: it and its state must stay as they were.
 */
#include <float.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define FIX TG_FIXTURES "/optim/optim.safetensors"
#define NP 4
#define STEPS 5

static const char *const PNAMES[NP] = {"W1", "b1", "W2", "b2"};

typedef struct model {
    tg_ctx *ctx;
    tg_dtype dtype;
    tg_tensor *p[NP];
    tg_tensor *unused;
    tg_tensor *list[NP + 1]; /* W1, unused, b1, W2, b2: what the optimiser gets */
    double x[24], y[16];
} model;

static void read_f64(tg_ctx *ctx, tg_st *f, const char *name, double *out, int64_t n)
{
    tg_tensor *t = tg_st_read(ctx, f, name);
    ck_assert_msg(t != NULL, "%s: %s", name, tg_errmsg(ctx));
    ck_assert_int_eq(t->numel, n);
    for (int64_t i = 0; i < n; i++)
        out[i] = tg_get(t, i);
}

static void model_init(model *m, tg_ctx *ctx, tg_dtype dt)
{
    memset(m, 0, sizeof *m);
    m->ctx = ctx;
    m->dtype = dt;
    tg_st *f = tg_st_open(ctx, FIX);
    ck_assert_msg(f != NULL, "%s", tg_errmsg(ctx));
    for (int i = 0; i < NP; i++) {
        char key[32];
        snprintf(key, sizeof key, "init.%s", PNAMES[i]);
        const tg_st_entry *e = tg_st_find(f, key);
        ck_assert_ptr_nonnull(e);
        m->p[i] = tg_param(ctx, dt, e->ndim, e->shape, PNAMES[i]);
        ck_assert_int_eq(tg_assign(ctx, m->p[i], tg_st_read(ctx, f, key)), TG_OK);
    }
    read_f64(ctx, f, "X", m->x, 24);
    read_f64(ctx, f, "Y", m->y, 16);
    tg_st_close(ctx, f);
    m->unused = tg_param(ctx, dt, TG_SHAPE(3), "unused");
    tg_fill(ctx, m->unused, 0.25);
    tg_tensor *list[NP + 1] = {m->p[0], m->unused, m->p[1], m->p[2], m->p[3]};
    memcpy(m->list, list, sizeof list);
    tg_reset(ctx);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
}

/* Forward and backward once: the parameters' gradients accumulate. */
static void model_backward(model *m)
{
    tg_ctx *ctx = m->ctx;
    tg_tensor *x = tg_from_f64(ctx, m->dtype, TG_SHAPE(8, 3), m->x);
    tg_tensor *y = tg_from_f64(ctx, m->dtype, TG_SHAPE(8, 2), m->y);
    tg_tensor *h = tg_tanh(ctx, tg_linear(ctx, x, m->p[0], m->p[1]));
    tg_tensor *loss = tg_mse(ctx, tg_linear(ctx, h, m->p[2], m->p[3]), y, TG_MEAN);
    ck_assert_msg(tg_backward(ctx, loss) == TG_OK, "%s", tg_errmsg(ctx));
}

/* ---------------------------------------------------------------- configurations */

typedef enum { SGD, ADAM, ADAMW } kind;

typedef struct config {
    const char *name;
    kind kind;
    tg_dtype dtype;
    tg_sgd_opts sgd;
    tg_adam_opts adam;
} config;

static const config CONFIGS[] = {
    {"sgd_plain", SGD, TG_F64, .sgd = {.lr = 0.1}},
    {"sgd_momentum", SGD, TG_F64, .sgd = {.lr = 0.1, .momentum = 0.9}},
    {"sgd_dampening", SGD, TG_F64, .sgd = {.lr = 0.1, .momentum = 0.9, .dampening = 0.3}},
    {"sgd_nesterov", SGD, TG_F64, .sgd = {.lr = 0.1, .momentum = 0.9, .nesterov = true}},
    {"sgd_wd", SGD, TG_F64, .sgd = {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.05}},
    {"adam_plain", ADAM, TG_F64, .adam = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8}},
    {"adam_wd", ADAM, TG_F64,
     .adam = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1}},
    {"adam_amsgrad", ADAM, TG_F64,
     .adam = {.lr = 0.01, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-8, .amsgrad = true}},
    {"adamw_plain", ADAMW, TG_F64,
     .adam = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1}},
    {"adamw_amsgrad", ADAMW, TG_F64,
     .adam = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .weight_decay = 0.1,
              .amsgrad = true}},
    {"sgd_f32", SGD, TG_F32,
     .sgd = {.lr = 0.1, .momentum = 0.9, .nesterov = true, .weight_decay = 0.01}},
    {"adam_f32", ADAM, TG_F32,
     .adam = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1,
              .amsgrad = true}},
};
#define N_CONFIGS (int)(sizeof CONFIGS / sizeof CONFIGS[0])

static tg_optim *make_opt(tg_ctx *ctx, const config *c, tg_tensor *const *params, size_t n)
{
    switch (c->kind) {
    case SGD: return tg_optim_sgd(ctx, params, n, &c->sgd);
    case ADAM: return tg_optim_adam(ctx, params, n, &c->adam);
    default: return tg_optim_adamw(ctx, params, n, &c->adam);
    }
}

/* One training step: zero_grad, forward, backward, step, end of step. */
static void train_step(model *m, tg_optim *opt)
{
    ck_assert_int_eq(tg_optim_zero_grad(m->ctx, opt), TG_OK);
    model_backward(m);
    ck_assert_msg(tg_optim_step(m->ctx, opt) == TG_OK, "%s", tg_errmsg(m->ctx));
    tg_reset(m->ctx);
}

/* The largest |got - want| / max(1, |want|) between t and fixture entry key. */
static double fixture_diff(tg_ctx *ctx, tg_st *f, const char *key, const tg_tensor *t)
{
    tg_tensor *want = tg_st_read(ctx, f, key);
    ck_assert_msg(want != NULL, "%s: %s", key, tg_errmsg(ctx));
    ck_assert_int_eq(want->dtype, t->dtype);
    ck_assert(tg_same_shape(want, t));
    double worst = 0;
    for (int64_t i = 0; i < t->numel; i++) {
        double w = tg_get(want, i);
        worst = fmax(worst, fabs(tg_get(t, i) - w) / fmax(1.0, fabs(w)));
    }
    return worst;
}

/* ---------------------------------------------------------------- PyTorch parity */

START_TEST(parity)
{
    const config *c = &CONFIGS[_i];
    tg_ctx *ctx = tg_ctx_new(1);
    model m;
    model_init(&m, ctx, c->dtype);
    tg_optim *opt = make_opt(ctx, c, m.list, NP + 1);
    ck_assert_msg(opt != NULL, "%s", tg_errmsg(ctx));
    tg_st *f = tg_st_open(ctx, FIX);
    ck_assert_ptr_nonnull(f);
    double worst = 0;
    for (int step = 1; step <= STEPS; step++) {
        uint64_t v0 = tg_tensor_version(m.p[0]);
        train_step(&m, opt);
        ck_assert_uint_gt(tg_tensor_version(m.p[0]), v0);
        for (int i = 0; i < NP; i++) {
            char key[64];
            snprintf(key, sizeof key, "%s.%d.%s", c->name, step, PNAMES[i]);
            worst = fmax(worst, fixture_diff(ctx, f, key, m.p[i]));
        }
        tg_reset(ctx);
    }
    tg_st_close(ctx, f);
    /* both agree to about one rounding of their dtype (2e-16 and 6e-8) */
    double tol = c->dtype == TG_F64 ? 1e-10 : 1e-6;
    ck_assert_msg(worst <= tol, "%s: worst relative difference %g > %g", c->name, worst, tol);
    /* the parameter without a gradient kept its value, step count and buffers */
    for (int64_t i = 0; i < 3; i++)
        ck_assert(tg_get(m.unused, i) == 0.25);
    size_t n;
    const tg_st_item *items = tg_optim_state(opt, &n);
    for (size_t k = 0; k < n; k++)
        if (strncmp(items[k].name, "optimizer.state.1.", 18) == 0)
            for (int64_t i = 0; i < items[k].tensor->numel; i++)
                ck_assert_msg(tg_get(items[k].tensor, i) == 0, "%s changed", items[k].name);
    tg_optim_free(ctx, opt);
    tg_ctx_free(ctx);
}
END_TEST

/* The state names and shapes the header promises. */
START_TEST(state_names)
{
    tg_ctx *ctx = tg_ctx_new(1);
    model m;
    model_init(&m, ctx, TG_F64);
    tg_optim *opt = make_opt(ctx, &CONFIGS[9], m.list, NP + 1); /* adamw_amsgrad */
    size_t n;
    const tg_st_item *items = tg_optim_state(opt, &n);
    ck_assert_uint_eq(n, 3 + (NP + 1) * 4);
    ck_assert_str_eq(items[0].name, "optimizer.lr");
    ck_assert_str_eq(items[1].name, "optimizer.initial_lr");
    ck_assert_str_eq(items[2].name, "optimizer.last_epoch");
    ck_assert_int_eq(items[2].tensor->dtype, TG_I64);
    ck_assert_str_eq(items[3].name, "optimizer.state.0.step");
    ck_assert_int_eq(items[3].tensor->dtype, TG_I64);
    ck_assert_str_eq(items[4].name, "optimizer.state.0.exp_avg");
    ck_assert(tg_same_shape(items[4].tensor, m.p[0]));
    ck_assert_str_eq(items[6].name, "optimizer.state.0.max_exp_avg_sq");
    ck_assert_str_eq(items[n - 1].name, "optimizer.state.4.max_exp_avg_sq");
    ck_assert(tg_same_shape(items[n - 1].tensor, m.p[3]));
    ck_assert_double_eq(tg_optim_lr(opt), 0.01);
    tg_optim_free(ctx, opt);

    tg_sgd_opts so = {.lr = 0.5, .momentum = 0.9, .prefix = "opt2"};
    opt = tg_optim_sgd(ctx, m.p, 1, &so);
    items = tg_optim_state(opt, &n);
    ck_assert_uint_eq(n, 5);
    ck_assert_str_eq(items[4].name, "opt2.state.0.momentum_buffer");
    tg_optim_free(ctx, opt);
    so.momentum = 0;
    opt = tg_optim_sgd(ctx, m.p, 1, &so);
    tg_optim_state(opt, &n);
    ck_assert_uint_eq(n, 4);
    tg_optim_free(ctx, opt);
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    ck_assert_uint_eq(st.buffers, 0);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- schedules */

START_TEST(schedule)
{
    static const char *const keys[] = {"lr.step", "lr.cosine"};
    const tg_lr_schedule sched[] = {
        {.kind = TG_LR_STEP, .step_size = 3, .gamma = 0.5},
        {.kind = TG_LR_COSINE, .t_max = 10, .eta_min = 0.001},
    };
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(1), "w");
    tg_optim *opt = tg_optim_sgd(ctx, &w, 1, &(tg_sgd_opts){.lr = 0.1});
    ck_assert_int_eq(tg_optim_set_schedule(ctx, opt, &sched[_i]), TG_OK);
    tg_st *f = tg_st_open(ctx, FIX);
    double want[21];
    read_f64(ctx, f, keys[_i], want, 21);
    tg_st_close(ctx, f);
    double worst = fabs(tg_optim_lr(opt) - want[0]);
    for (int e = 1; e <= 20; e++) { /* 2 * t_max epochs */
        ck_assert_int_eq(tg_optim_schedule_step(ctx, opt), TG_OK);
        worst = fmax(worst, fabs(tg_optim_lr(opt) - want[e]));
    }
    ck_assert_msg(worst <= 1e-12, "%s: worst difference %g", keys[_i], worst);
    size_t n;
    const tg_st_item *items = tg_optim_state(opt, &n);
    ck_assert_int_eq(tg_get(items[2].tensor, 0), 20);       /* last_epoch */
    ck_assert_double_eq(tg_get(items[1].tensor, 0), 0.1);   /* initial_lr */
    tg_optim_free(ctx, opt);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(schedule_errors)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(1), "w");
    tg_optim *opt = tg_optim_sgd(ctx, &w, 1, &(tg_sgd_opts){.lr = 0.1});
    ck_assert_int_eq(tg_optim_schedule_step(ctx, opt), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "no schedule");
    tg_clear_error(ctx);
    const struct { tg_lr_schedule s; const char *text; } bad[] = {
        {{.kind = TG_LR_STEP, .step_size = 0, .gamma = 0.5}, "step_size = 0"},
        {{.kind = TG_LR_STEP, .step_size = 2, .gamma = -1}, "gamma = -1"},
        {{.kind = TG_LR_COSINE, .t_max = 0}, "t_max = 0"},
        {{.kind = TG_LR_COSINE, .t_max = 5, .eta_min = NAN}, "eta_min = nan"},
        {{.kind = 7}, "kind = 7"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(tg_optim_set_schedule(ctx, opt, &bad[i].s), TG_EINVAL);
        ck_error(ctx, TG_EINVAL, bad[i].text);
        tg_clear_error(ctx);
    }
    /* a last_epoch that cannot advance (e.g. from a file) */
    ck_assert_int_eq(tg_optim_set_schedule(ctx, opt, &(tg_lr_schedule){.kind = TG_LR_STEP,
                                                     .step_size = 1, .gamma = 0.5}), TG_OK);
    const tg_st_item *items = tg_optim_state(opt, NULL);
    *(int64_t *)items[2].tensor->data = INT64_MAX;
    ck_assert_int_eq(tg_optim_schedule_step(ctx, opt), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "optimizer.last_epoch");
    tg_clear_error(ctx);
    ck_assert_double_eq(tg_optim_lr(opt), 0.1);
    tg_optim_free(ctx, opt);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- clipping */

static void snapshot_grads(const model *m, double *out)
{
    for (int i = 0, at = 0; i < NP; i++)
        for (int64_t k = 0; k < m->p[i]->numel; k++)
            out[at++] = tg_get(m->p[i]->grad, k);
}

START_TEST(clip)
{
    tg_ctx *ctx = tg_ctx_new(1);
    model m;
    model_init(&m, ctx, TG_F64);
    model_backward(&m);
    tg_reset(ctx);
    tg_st *f = tg_st_open(ctx, FIX);
    double total_want, worst = 0;
    read_f64(ctx, f, "clip.total", &total_want, 1);
    for (int i = 0; i < NP; i++) {
        char key[32];
        snprintf(key, sizeof key, "clip.grad.%s", PNAMES[i]);
        worst = fmax(worst, fixture_diff(ctx, f, key, m.p[i]->grad));
    }
    ck_assert_msg(worst <= 1e-12, "gradients differ from PyTorch's by %g", worst);

    /* a large max_norm: the total is returned, nothing is scaled */
    double before[40] = {0}, after[40] = {0}, total = 0;
    snapshot_grads(&m, before);
    uint64_t v = tg_tensor_version(m.p[0]->grad);
    ck_assert_int_eq(tg_clip_grad_norm(ctx, m.list, NP + 1, 1e9, true, &total), TG_OK);
    ck_close(total, total_want, 1e-14);
    snapshot_grads(&m, after);
    ck_assert(memcmp(before, after, sizeof before) == 0);
    ck_assert_uint_eq(tg_tensor_version(m.p[0]->grad), v);

    /* half the norm: every gradient scaled by max_norm / (total + 1e-6) */
    ck_assert_int_eq(tg_clip_grad_norm(ctx, m.list, NP + 1, 0.5 * total_want, true, &total), TG_OK);
    ck_close(total, total_want, 1e-14);
    worst = 0;
    for (int i = 0; i < NP; i++) {
        char key[32];
        snprintf(key, sizeof key, "clip.small.%s", PNAMES[i]);
        worst = fmax(worst, fixture_diff(ctx, f, key, m.p[i]->grad));
    }
    ck_assert_msg(worst <= 1e-14, "clipped gradients differ from PyTorch's by %g", worst);
    ck_assert_uint_gt(tg_tensor_version(m.p[0]->grad), v);
    tg_st_close(ctx, f);

    /* a non-finite total: an error with error_if_nonfinite, nothing scaled */
    tg_set(m.p[2]->grad, 1, INFINITY);
    snapshot_grads(&m, before);
    ck_assert_int_eq(tg_clip_grad_norm(ctx, m.list, NP + 1, 0.1, true, &total), TG_ENONFINITE);
    ck_error(ctx, TG_ENONFINITE, "is inf");
    ck_assert(isinf(total));
    snapshot_grads(&m, after);
    ck_assert(memcmp(before, after, sizeof before) == 0);
    tg_clear_error(ctx);
    tg_set(m.p[2]->grad, 1, NAN);
    ck_assert_int_eq(tg_clip_grad_norm(ctx, m.list, NP + 1, 0.1, false, &total), TG_OK);
    ck_assert(isnan(total));
    ck_assert_double_eq(tg_get(m.p[0]->grad, 0), after[0]);

    ck_assert_int_eq(tg_clip_grad_norm(ctx, m.list, NP + 1, -1, false, NULL), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "max_norm = -1");
    tg_clear_error(ctx);
    tg_ctx *other = tg_ctx_new(2);
    ck_assert_int_eq(tg_clip_grad_norm(other, m.list, NP + 1, 1, false, NULL), TG_EINVAL);
    ck_error(other, TG_EINVAL, "parameter 0 ('W1') belongs to another context");
    tg_ctx_free(other);
    ck_assert_int_eq(tg_clip_grad_norm(ctx, NULL, 0, 1, false, &total), TG_OK);
    ck_assert_double_eq(total, 0);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- refusing non-finite gradients */

typedef struct snapshot {
    unsigned char bytes[4096];
    size_t used;
    uint64_t versions[64];
    size_t n;
} snapshot;

static void take(snapshot *s, const model *m, const tg_optim *opt)
{
    memset(s, 0, sizeof *s);
    size_t n;
    const tg_st_item *items = tg_optim_state(opt, &n);
    const tg_tensor *all[64];
    size_t k = 0;
    for (int i = 0; i < NP + 1; i++)
        all[k++] = m->list[i];
    for (size_t i = 0; i < n; i++)
        all[k++] = items[i].tensor;
    for (size_t i = 0; i < k; i++) {
        size_t b = (size_t)all[i]->numel * tg_dtype_size(all[i]->dtype);
        ck_assert_uint_le(s->used + b, sizeof s->bytes);
        memcpy(s->bytes + s->used, all[i]->data, b);
        s->used += b;
        s->versions[i] = tg_tensor_version(all[i]);
    }
    s->n = k;
}

START_TEST(refuse_nonfinite)
{
    tg_ctx *ctx = tg_ctx_new(1);
    model m;
    model_init(&m, ctx, TG_F64);
    config c = CONFIGS[_i ? 4 : 7]; /* sgd_wd, adam_amsgrad */
    c.sgd.refuse_nonfinite = c.adam.refuse_nonfinite = true;
    tg_optim *opt = make_opt(ctx, &c, m.list, NP + 1);
    train_step(&m, opt); /* so that the state is not all zeros */
    tg_optim_zero_grad(ctx, opt);
    model_backward(&m);
    tg_reset(ctx);
    tg_set(m.p[2]->grad, 5, NAN);
    tg_set(m.p[2]->grad, 6, INFINITY);
    snapshot s0, s1;
    take(&s0, &m, opt);
    ck_assert_int_eq(tg_optim_step(ctx, opt), TG_ENONFINITE);
    ck_error(ctx, TG_ENONFINITE, "parameter 3 ('W2') holds nan at element 5 (of 8)");
    take(&s1, &m, opt);
    ck_assert_uint_eq(s0.used, s1.used);
    ck_assert(memcmp(s0.bytes, s1.bytes, s0.used) == 0);
    ck_assert(memcmp(s0.versions, s1.versions, sizeof s0.versions) == 0);
    tg_optim_free(ctx, opt);

    /* without the option the NaN goes through, as in PyTorch */
    tg_clear_error(ctx);
    c.sgd.refuse_nonfinite = c.adam.refuse_nonfinite = false;
    opt = make_opt(ctx, &c, m.list, NP + 1);
    ck_assert_int_eq(tg_optim_step(ctx, opt), TG_OK);
    ck_assert(isnan(tg_get(m.p[2], 5)));
    tg_optim_free(ctx, opt);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- checkpoints */

static const char *const RESUME_CONFIGS[] = {"sgd_dampening", "sgd_wd", "adam_wd", "adamw_amsgrad",
                                             "adam_f32"};

static const config *config_named(const char *name)
{
    for (int i = 0; i < N_CONFIGS; i++)
        if (strcmp(CONFIGS[i].name, name) == 0)
            return &CONFIGS[i];
    ck_abort_msg("no config %s", name);
    return NULL;
}

/* The model's parameters followed by the optimiser's state. */
static size_t checkpoint_items(const model *m, const tg_optim *opt, tg_st_item *out, size_t cap)
{
    size_t n;
    const tg_st_item *st = tg_optim_state(opt, &n);
    ck_assert_uint_le(NP + 1 + n, cap);
    for (int i = 0; i < NP + 1; i++)
        out[i] = (tg_st_item){NULL, m->list[i]};
    memcpy(out + NP + 1, st, n * sizeof *st);
    return NP + 1 + n;
}

static tg_optim *resume_opt(model *m, const config *c)
{
    tg_optim *opt = make_opt(m->ctx, c, m->list, NP + 1);
    const tg_lr_schedule cos = {.kind = TG_LR_COSINE, .t_max = 4, .eta_min = 1e-4};
    ck_assert_int_eq(tg_optim_set_schedule(m->ctx, opt, &cos), TG_OK);
    return opt;
}

static void epoch(model *m, tg_optim *opt)
{
    train_step(m, opt);
    ck_assert_int_eq(tg_optim_schedule_step(m->ctx, opt), TG_OK);
}

START_TEST(resume)
{
    const config *c = config_named(RESUME_CONFIGS[_i]);
    char dir[] = "/tmp/tg_optim_XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
    tg_st_item items[64];

    tg_ctx *a = tg_ctx_new(1);
    model ma;
    model_init(&ma, a, c->dtype);
    tg_optim *oa = resume_opt(&ma, c);
    for (int s = 0; s < 3; s++)
        epoch(&ma, oa);
    size_t n = checkpoint_items(&ma, oa, items, 64);
    ck_assert_msg(tg_st_save(a, path, items, n, NULL, 0) == TG_OK, "%s", tg_errmsg(a));
    for (int s = 0; s < 2; s++)
        epoch(&ma, oa);
    snapshot sa;
    take(&sa, &ma, oa);

    tg_ctx *b = tg_ctx_new(2);
    model mb;
    model_init(&mb, b, c->dtype);
    tg_optim *ob = resume_opt(&mb, c);
    n = checkpoint_items(&mb, ob, items, 64);
    ck_assert_msg(tg_st_load_file(b, path, items, n, true) == TG_OK, "%s", tg_errmsg(b));
    for (int s = 0; s < 2; s++)
        epoch(&mb, ob);
    snapshot sb;
    take(&sb, &mb, ob);
    ck_assert_uint_eq(sa.used, sb.used);
    ck_assert_msg(memcmp(sa.bytes, sb.bytes, sa.used) == 0, "%s: resumed run differs", c->name);
    ck_assert(tg_optim_lr(oa) == tg_optim_lr(ob));

    tg_optim_free(a, oa);
    tg_optim_free(b, ob);
    tg_ctx_free(a);
    tg_ctx_free(b);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* ---------------------------------------------------------------- errors */

static void expect_sgd_error(const tg_sgd_opts *o, const char *text)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    ck_assert_ptr_null(tg_optim_sgd(ctx, &w, 1, o));
    ck_error(ctx, TG_EINVAL, text);
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    ck_assert_uint_eq(st.buffers, 0);
    tg_ctx_free(ctx);
}

static void expect_adam_error(const tg_adam_opts *o, const char *text)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    ck_assert_ptr_null(tg_optim_adamw(ctx, &w, 1, o));
    ck_error(ctx, TG_EINVAL, text);
    tg_ctx_free(ctx);
}

START_TEST(option_errors)
{
    expect_sgd_error(&(tg_sgd_opts){.lr = -0.1}, "lr = -0.1");
    expect_sgd_error(&(tg_sgd_opts){.lr = NAN}, "lr = nan");
    expect_sgd_error(&(tg_sgd_opts){.lr = 0.1, .momentum = -0.5}, "momentum = -0.5");
    expect_sgd_error(&(tg_sgd_opts){.lr = 0.1, .weight_decay = -1}, "weight_decay = -1");
    expect_sgd_error(&(tg_sgd_opts){.lr = 0.1, .dampening = INFINITY}, "dampening = inf");
    expect_sgd_error(&(tg_sgd_opts){.lr = 0.1, .nesterov = true},
                     "nesterov needs momentum > 0 and dampening 0 (momentum = 0");
    expect_sgd_error(&(tg_sgd_opts){.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true},
                     "dampening = 0.1)");
    char long_prefix[200];
    memset(long_prefix, 'p', sizeof long_prefix - 1);
    long_prefix[sizeof long_prefix - 1] = 0;
    expect_sgd_error(&(tg_sgd_opts){.lr = 0.1, .prefix = long_prefix}, "prefix is 199 bytes");
    expect_sgd_error(NULL, "opts is NULL");

    tg_adam_opts a = tg_adam_defaults();
    a.beta1 = 1;
    expect_adam_error(&a, "beta1 = 1; it must be in [0, 1)");
    a = tg_adam_defaults();
    a.beta2 = -0.1;
    expect_adam_error(&a, "beta2 = -0.1");
    a = tg_adam_defaults();
    a.eps = -1e-8;
    expect_adam_error(&a, "eps = -1e-08");
    a = tg_adam_defaults();
    a.lr = -1;
    expect_adam_error(&a, "optim_adamw: lr = -1");
    a = tg_adam_defaults();
    a.weight_decay = NAN;
    expect_adam_error(&a, "weight_decay = nan");
}
END_TEST

START_TEST(param_errors)
{
    tg_ctx *ctx = tg_ctx_new(1), *other = tg_ctx_new(2);
    const tg_sgd_opts o = {.lr = 0.1};
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_tensor *v = tg_param(other, TG_F64, TG_SHAPE(2), "v");
    tg_tensor *buf = tg_buffer(ctx, TG_F64, TG_SHAPE(2), "running_mean");
    struct { tg_tensor *list[2]; size_t n; const char *text; } bad[] = {
        {{w, v}, 2, "parameter 1 ('v') belongs to another context"},
        {{w, buf}, 2, "parameter 1 ('running_mean') does not require grad"},
        {{w, w}, 2, "parameter 1 ('w') is also parameter 0"},
        {{w, NULL}, 2, "parameter 1 is NULL"},
        {{w}, 0, "the parameter list is empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_ptr_null(tg_optim_sgd(ctx, bad[i].list, bad[i].n, &o));
        ck_error(ctx, TG_EINVAL, bad[i].text);
        tg_clear_error(ctx);
    }
    ck_assert_ptr_null(tg_optim_adam(ctx, NULL, 1, NULL));
    ck_error(ctx, TG_EINVAL, "optim_adam: params is NULL");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_optim_sgd(NULL, &w, 1, &o));

    /* an error already held: nothing is made */
    tg_optim *opt = tg_optim_sgd(ctx, &w, 1, &o);
    (void)TG_ERROR(ctx, TG_EIO, "earlier");
    ck_assert_ptr_null(tg_optim_sgd(ctx, &w, 1, &o));
    ck_assert_int_eq(tg_optim_step(ctx, opt), TG_EIO);
    tg_clear_error(ctx);

    /* the optimiser of another context, NULL */
    ck_assert_int_eq(tg_optim_step(other, opt), TG_EINVAL);
    ck_error(other, TG_EINVAL, "the sgd optimiser belongs to another context");
    ck_assert_int_eq(tg_optim_step(ctx, NULL), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "optim_step: the optimiser is NULL");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_optim_set_lr(ctx, opt, -2), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "optim_set_lr: lr = -2");
    tg_clear_error(ctx);
    ck_assert_double_eq(tg_optim_lr(opt), 0.1);
    ck_assert_int_eq(tg_optim_set_lr(ctx, opt, 0.25), TG_OK);
    ck_assert_double_eq(tg_optim_lr(opt), 0.25);
    ck_assert(isnan(tg_optim_lr(NULL)));
    tg_clear_error(other);
    tg_optim_free(other, opt);
    ck_error(other, TG_EINVAL, "optim_free: the sgd optimiser belongs to another context");
    tg_optim_free(ctx, opt);
    tg_ctx_free(other);
    tg_ctx_free(ctx);
}
END_TEST

/* A state loaded from a file, or a gradient, that a step must refuse:
 * nothing is written. */
START_TEST(step_errors)
{
    tg_ctx *ctx = tg_ctx_new(1);
    model m;
    model_init(&m, ctx, TG_F64);
    tg_optim *opt = make_opt(ctx, &CONFIGS[5], m.list, NP + 1);
    model_backward(&m);
    tg_reset(ctx);
    const tg_st_item *items = tg_optim_state(opt, NULL);
    snapshot s0, s1;

    tg_set(items[0].tensor, 0, NAN);
    take(&s0, &m, opt);
    ck_assert_int_eq(tg_optim_step(ctx, opt), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "optimizer.lr = nan");
    tg_clear_error(ctx);
    tg_set(items[0].tensor, 0, 0.01);

    *(int64_t *)items[3 + 4 * 3].tensor->data = -1; /* parameter 4's step count */
    ck_assert_str_eq(items[3 + 4 * 3].name, "optimizer.state.4.step");
    ck_assert_int_eq(tg_optim_step(ctx, opt), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "optimizer.state.4.step = -1");
    tg_clear_error(ctx);
    *(int64_t *)items[3 + 4 * 3].tensor->data = 0;

    /* a gradient that is not its parameter's (only by writing the field) */
    tg_tensor *g = m.p[3]->grad;
    m.p[3]->grad = tg_zeros(ctx, TG_F32, TG_SHAPE(2));
    take(&s0, &m, opt);
    ck_assert_int_eq(tg_optim_step(ctx, opt), TG_EDTYPE);
    ck_error(ctx, TG_EDTYPE, "parameter 4 ('b2') is float64 but its gradient is float32");
    tg_clear_error(ctx);
    m.p[3]->grad = tg_zeros(ctx, TG_F64, TG_SHAPE(3));
    ck_assert_int_eq(tg_optim_step(ctx, opt), TG_ESHAPE);
    ck_error(ctx, TG_ESHAPE, "parameter 4 ('b2') has shape (2) but its gradient (3)");
    tg_clear_error(ctx);
    take(&s1, &m, opt);
    ck_assert(memcmp(s0.bytes, s1.bytes, s0.used) == 0);
    ck_assert(memcmp(s0.versions, s1.versions, sizeof s0.versions) == 0);
    m.p[3]->grad = g;
    ck_assert_int_eq(tg_optim_step(ctx, opt), TG_OK);
    tg_optim_free(ctx, opt);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- out of memory */

/* Fails allocation k, k+1, ... of creating the optimiser and its first
 * step; returns true once both succeed. Nothing may be left behind. */
static bool oom_round(const config *c, long k)
{
    test_alloc al = {0};
    tg_ctx *ctx = test_ctx_with(&al, 1);
    model m;
    model_init(&m, ctx, c->dtype);
    model_backward(&m);
    tg_reset(ctx);
    tg_stats before, after;
    tg_ctx_stats(ctx, &before);
    al.fail_at = al.calls + k;
    tg_optim *opt = make_opt(ctx, c, m.list, NP + 1);
    int rc = opt ? tg_optim_step(ctx, opt) : tg_errcode(ctx);
    al.fail_at = 0;
    bool done = rc == TG_OK;
    if (!done) {
        ck_assert_int_eq(rc, TG_ENOMEM);
        ck_assert_ptr_null(opt);
        tg_ctx_stats(ctx, &after);
        ck_assert_uint_eq(after.bytes_live, before.bytes_live);
        ck_assert_uint_eq(after.buffers, 0);
    }
    tg_optim_free(ctx, opt);
    tg_ctx_free(ctx);
    ck_assert_int_eq(al.live_bytes, 0);
    return done;
}

START_TEST(oom)
{
    const config *c = &CONFIGS[_i ? 9 : 1]; /* sgd_momentum, adamw_amsgrad */
    long k = 1;
    while (!oom_round(c, k))
        k++;
    ck_assert_int_gt(k, 3 + 2 * (NP + 1)); /* every state tensor was refused once */
}
END_TEST

/* A parameter of several of the kernel's pieces (and a ragged tail): three
 * steps of nesterov SGD with weight decay and of AdamW with amsgrad agree
 * with the formulas element by element, at 1 and 2 threads. */
#define BIG (3 * 8192 + 5)

static void big_reference(bool adam, double *w, double *b, double *m, double *v, double *vmax,
                          const double *g, int step)
{
    const double lr = 0.01, wd = 0.1, mom = 0.9, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    for (int64_t k = 0; k < BIG; k++) {
        if (!adam) {
            double d = g[k] + wd * w[k];
            b[k] = step == 1 ? d : b[k] * mom + 1.0 * d;
            w[k] = w[k] + -lr * (d + mom * b[k]);
            continue;
        }
        w[k] = w[k] * (1 - lr * wd);
        m[k] = m[k] * b1 + (1 - b1) * g[k];
        v[k] = v[k] * b2 + (1 - b2) * g[k] * g[k];
        vmax[k] = vmax[k] >= v[k] ? vmax[k] : v[k];
        double denom = sqrt(vmax[k]) / sqrt(1 - pow(b2, step)) + eps;
        w[k] = w[k] + -(lr / (1 - pow(b1, step))) * m[k] / denom;
    }
}

START_TEST(big_parameter)
{
    const bool adam = _i >= 2;
    const int threads = 1 + _i % 2;
    int prev = tg_set_num_threads(threads);
    tg_ctx *ctx = tg_ctx_new(5);
    tg_tensor *p = tg_param(ctx, TG_F64, TG_SHAPE(BIG), "p");
    ck_assert_int_eq(tg_assign(ctx, p, tg_rand(ctx, TG_F64, TG_SHAPE(BIG), -1, 1)), TG_OK);
    double *w = calloc(5 * BIG, sizeof *w), *g = w + BIG;
    for (int64_t k = 0; k < BIG; k++)
        w[k] = tg_get(p, k);
    tg_optim *o;
    if (adam) {
        tg_adam_opts a = tg_adam_defaults();
        a.lr = 0.01;
        a.weight_decay = 0.1;
        a.amsgrad = true;
        o = tg_optim_adamw(ctx, &p, 1, &a);
    } else {
        tg_sgd_opts sg = {.lr = 0.01, .momentum = 0.9, .nesterov = true, .weight_decay = 0.1};
        o = tg_optim_sgd(ctx, &p, 1, &sg);
    }
    ck_assert_msg(o != NULL, "%s", tg_errmsg(ctx));
    for (int step = 1; step <= 3; step++) {
        tg_tensor *gt = tg_rand(ctx, TG_F64, TG_SHAPE(BIG), -1, 1);
        tg_zero_grad(ctx);
        ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_mul(ctx, p, gt))), TG_OK);
        for (int64_t k = 0; k < BIG; k++)
            g[k] = tg_get(gt, k);
        ck_assert_int_eq(tg_optim_step(ctx, o), TG_OK);
        big_reference(adam, w, g + BIG, g + BIG, g + 2 * BIG, g + 3 * BIG, g, step);
        for (int64_t k = 0; k < BIG; k++)
            ck_close(tg_get(p, k), w[k], 1e-12);
        tg_reset(ctx);
    }
    free(w);
    tg_optim_free(ctx, o);
    tg_ctx_free(ctx);
    tg_set_num_threads(prev);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("pytorch");
    tcase_add_loop_test(tc, parity, 0, N_CONFIGS);
    tcase_add_loop_test(tc, schedule, 0, 2);
    tcase_add_test(tc, clip);
    tcase_add_loop_test(tc, big_parameter, 0, 4);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    tc = tcase_create("state");
    tcase_add_test(tc, state_names);
    tcase_add_loop_test(tc, resume, 0, (int)(sizeof RESUME_CONFIGS / sizeof RESUME_CONFIGS[0]));
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_loop_test(tc, refuse_nonfinite, 0, 2);
    tcase_add_test(tc, option_errors);
    tcase_add_test(tc, param_errors);
    tcase_add_test(tc, step_errors);
    tcase_add_test(tc, schedule_errors);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    tc = tcase_create("oom");
    tcase_add_loop_test(tc, oom, 0, 2);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}
