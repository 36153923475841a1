/*
 * test_oom.c: every allocation failed in turn, per op family and for a
 * training step, in the way of SQLite's fault simulator.
 *
 * A graph is a function that builds its parameters (or reuses those a
 * failed run left), runs forward and backward and keeps the values to
 * compare. For N = 1, 2, ... a fresh context whose allocator refuses the
 * N-th request and every later one runs the graph, until a run completes
 * without a refusal. For each N that fails:
 *   - the call that met the refusal returns NULL or TG_ENOMEM, every call
 *     before it succeeded with no error held, and tg_errmsg says "out of
 *     memory allocating B bytes", prefixed by the op's name when the
 *     failure is inside a forward ("conv2d: ...") or by "backward of op: "
 *     inside a vjp;
 *   - after tg_clear_error, tg_reset, tg_seed and with the refusals turned
 *     off, the same context runs the graph again and gets the loss, every
 *     parameter and gradient and every buffer bit-identical to a context
 *     that never failed;
 *   - after tg_ctx_free nothing the allocator handed out is still live.
 * Each graph is swept under several configurations (see configs[]): a
 * 64-byte arena chunk, so that every arena allocation reaches the
 * allocator; 512-byte chunks; the default chunk; checked mode, whose
 * arena takes new chunks after a reset; and a transient fault, where only
 * the N-th request is refused and later ones succeed again.
 *
 * Each test appends its count of failure points to a shared temporary
 * file (tests may run in forked children); the last test adds them up.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define SEED 20240611u
#define SMALL_CHUNK 64 /* the arena's block alignment: one chunk per allocation */
#define MAX_OPS 64
#define MAX_N 100000 /* a sweep longer than this never completes */

/* Asserts without recording passed checks (Check logs every passed ck_assert). */
#define EXPECT(cond, ...)               \
    do {                                \
        if (!(cond))                    \
            ck_abort_msg(__VA_ARGS__);  \
    } while (0)

/* ---------------------------------------------------------------- values kept */

/* Bytes to compare, from the C library's allocator (not the context's). */
typedef struct snap {
    unsigned char *p;
    size_t n, cap;
} snap;

static void snap_put(snap *s, const void *data, size_t n)
{
    if (s->n + n > s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap < s->n + n)
            cap *= 2;
        s->p = realloc(s->p, cap);
        EXPECT(s->p, "out of memory for the values compared");
        s->cap = cap;
    }
    memcpy(s->p + s->n, data, n);
    s->n += n;
}

static void snap_tensor(snap *s, const tg_tensor *t)
{
    int64_t present = t != NULL;
    snap_put(s, &present, sizeof present);
    if (t)
        snap_put(s, t->data, (size_t)t->numel * tg_dtype_size(t->dtype));
}

/* Every parameter with its gradient, and every buffer. */
static void snap_persistent(snap *s, const tg_ctx *ctx)
{
    for (tg_tensor *p = tg_param_next(ctx, NULL); p; p = tg_param_next(ctx, p)) {
        snap_tensor(s, p);
        snap_tensor(s, p->grad);
    }
    for (tg_tensor *b = tg_buffer_next(ctx, NULL); b; b = tg_buffer_next(ctx, b))
        snap_tensor(s, b);
}

/* ---------------------------------------------------------------- the faulty allocator */

/* test_alloc with a transient mode: refuse request fail_at only. */
typedef struct fault {
    long calls;      /* allocations and resizes asked for */
    long fail_at;    /* the first request to refuse (0: none) */
    bool transient;  /* refuse fail_at alone, not every later request too */
    long failed;     /* requests refused */
    long live_bytes; /* held now */
} fault;

static void *fault_alloc(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    fault *a = ud;
    if (new_size == 0) {
        free(ptr);
        a->live_bytes -= (long)old_size;
        return NULL;
    }
    a->calls++;
    if (a->fail_at && (a->calls == a->fail_at || (!a->transient && a->calls > a->fail_at))) {
        a->failed++;
        return NULL;
    }
    void *p = realloc(ptr, new_size);
    if (p)
        a->live_bytes += (long)new_size - (long)old_size;
    return p;
}

/* ---------------------------------------------------------------- one run of a graph */

typedef struct run {
    tg_ctx *ctx;
    const fault *alloc;
    snap *keep;                /* the values compared across runs */
    int nparam, nbuf;          /* parameters and buffers asked for so far */
    const char *ops[MAX_OPS];  /* the ops built, in order, with repeats */
    bool asked[MAX_OPS];       /* whether ops[i]'s forward asked the allocator (not
                                  all do: an output may reuse scratch a kernel gave back) */
    int nops;
    const char *failed_in;     /* the call that failed: an op, "backward", or "" */
    long failed_from;          /* allocator requests made before that call began */
} run;

typedef int (*graph_fn)(run *r);

static int failed(run *r, const char *call, long calls_before)
{
    r->failed_in = call ? call : "";
    r->failed_from = calls_before;
    return -1;
}

static void succeeded(run *r, const char *call, const char *expr, long calls_before)
{
    EXPECT(tg_errcode(r->ctx) == TG_OK, "%s succeeded but left the error '%s'", expr,
           tg_errmsg(r->ctx));
    if (call && strcmp(call, "backward") != 0 && r->nops < MAX_OPS) {
        r->asked[r->nops] = r->alloc->calls > calls_before;
        r->ops[r->nops++] = call;
    }
}

/* var = expr, a builder of op `call` (NULL for the rest of the API); a
 * failure ends the run. */
#define TRY(call, var, expr)                     \
    do {                                         \
        long calls_ = r->alloc->calls;           \
        if (!((var) = (expr)))                   \
            return failed(r, (call), calls_);    \
        succeeded(r, (call), #expr, calls_);     \
    } while (0)
/* The same for a call that returns a status. */
#define TRY_OK(call, expr)                       \
    do {                                         \
        long calls_ = r->alloc->calls;           \
        if ((expr) != TG_OK)                     \
            return failed(r, (call), calls_);    \
        succeeded(r, (call), #expr, calls_);     \
    } while (0)

/* The k-th persistent tensor of a list, or NULL when there are fewer. */
static tg_tensor *nth(const tg_ctx *ctx, bool buffers, int k)
{
    tg_tensor *t = buffers ? tg_buffer_next(ctx, NULL) : tg_param_next(ctx, NULL);
    for (; t && k > 0; k--)
        t = buffers ? tg_buffer_next(ctx, t) : tg_param_next(ctx, t);
    return t;
}

/* The run's next parameter: made on the first run, reused by a rerun
 * after a failure; set to shift + scale * normal draws either way. */
static tg_tensor *param(run *r, tg_dtype dt, int ndim, const int64_t *shape, double shift,
                        double scale)
{
    tg_tensor *p = nth(r->ctx, false, r->nparam);
    if (!p && !(p = tg_param(r->ctx, dt, ndim, shape, "p")))
        return NULL;
    r->nparam++;
    for (int64_t i = 0; i < p->numel; i++)
        tg_set(p, i, shift + scale * tg_rand_normal(r->ctx));
    return p;
}

/* The run's next buffer, made or reused as param(), filled with value. */
static tg_tensor *buffer(run *r, int64_t n, double value)
{
    tg_tensor *b = nth(r->ctx, true, r->nbuf);
    if (!b && !(b = tg_buffer(r->ctx, TG_F64, TG_SHAPE(n), "running")))
        return NULL;
    r->nbuf++;
    return tg_fill(r->ctx, b, value) == TG_OK ? b : NULL;
}

#define PARAM(var, dt, shape, shift, scale) TRY(NULL, var, param(r, dt, shape, shift, scale))

/* Appends every value of t (as doubles, exact for both float dtypes). */
static void keep(run *r, const tg_tensor *t)
{
    for (int64_t i = 0; i < t->numel; i++) {
        double v = tg_get(t, i);
        snap_put(r->keep, &v, sizeof v);
    }
}

/* *loss += sum(y * y): every output reaches the loss with a gradient of its own. */
static int add_sq(run *r, tg_tensor **loss, tg_tensor *y)
{
    tg_ctx *ctx = r->ctx;
    tg_tensor *sq, *s;
    TRY("mul", sq, tg_mul(ctx, y, y));
    TRY("sum", s, tg_sum(ctx, sq));
    if (*loss)
        TRY("add", s, tg_add(ctx, *loss, s));
    *loss = s;
    return 0;
}

#define ADD_SQ(loss, y)               \
    do {                              \
        if (add_sq(r, &(loss), (y)))  \
            return -1;                \
    } while (0)

/* Backward from loss, keeping its value. */
static int finish(run *r, tg_tensor *loss)
{
    keep(r, loss);
    TRY_OK("backward", tg_backward(r->ctx, loss));
    return 0;
}

/* Every run starts from the same state, whatever a failed run left. */
static void begin(run *r)
{
    tg_set_training(r->ctx, true);
    tg_set_grad_enabled(r->ctx, true);
    tg_zero_grad(r->ctx);
}

/* ---------------------------------------------------------------- the graphs */

/* add, sub, mul, div with broadcasting; neg, exp, log, sqrt, pow and the scalar forms */
static int g_elementwise(run *r)
{
    tg_ctx *ctx = r->ctx;
    tg_tensor *a, *b, *c, *y, *e, *l, *loss = NULL;
    begin(r);
    PARAM(a, TG_F64, TG_SHAPE(2, 3), 0, 1);
    PARAM(b, TG_F64, TG_SHAPE(3), 0, 1);
    PARAM(c, TG_F64, TG_SHAPE(2, 1), 2, 0.3);
    TRY("add", y, tg_add(ctx, a, b));
    TRY("mul", y, tg_mul(ctx, y, c));
    TRY("exp", e, tg_exp(ctx, c));
    TRY("add_scalar", e, tg_add_scalar(ctx, e, 1));
    TRY("div", y, tg_div(ctx, y, e));
    TRY("sub", y, tg_sub(ctx, y, b));
    TRY("neg", y, tg_neg(ctx, y));
    TRY("pow", l, tg_pow(ctx, c, 1.5));
    TRY("mul", l, tg_mul(ctx, a, l));
    TRY("mul", l, tg_mul(ctx, l, l));
    TRY("add_scalar", l, tg_add_scalar(ctx, l, 1));
    TRY("log", l, tg_log(ctx, l));
    TRY("sqrt", l, tg_sqrt(ctx, l));
    TRY("mul_scalar", l, tg_mul_scalar(ctx, l, 3));
    TRY("div_scalar", l, tg_div_scalar(ctx, l, 7));
    TRY("add_scalar", l, tg_sub_scalar(ctx, l, 0.5));
    ADD_SQ(loss, y);
    ADD_SQ(loss, l);
    return finish(r, loss);
}

/* matmul with broadcast batch dimensions, linear with and without bias; a
 * first backward from a non-scalar output keeps the graph and the
 * intermediate gradients, the second goes through the same nodes */
static int g_matmul(run *r)
{
    tg_ctx *ctx = r->ctx;
    tg_tensor *a, *b, *c, *w, *bias, *w2, *y, *z, *g, *loss = NULL;
    begin(r);
    PARAM(a, TG_F32, TG_SHAPE(2, 3, 4), 0, 1);
    PARAM(b, TG_F32, TG_SHAPE(4, 5), 0, 1);
    PARAM(c, TG_F32, TG_SHAPE(2, 5, 2), 0, 1);
    PARAM(w, TG_F32, TG_SHAPE(4, 2), 0, 1);
    PARAM(bias, TG_F32, TG_SHAPE(4), 0, 1);
    PARAM(w2, TG_F32, TG_SHAPE(2, 4), 0, 1);
    TRY("matmul", y, tg_matmul(ctx, a, b));
    TRY("matmul", y, tg_matmul(ctx, y, c));
    TRY("linear", z, tg_linear(ctx, y, w, bias));
    TRY("linear", y, tg_linear(ctx, z, w2, NULL));
    TRY(NULL, g, tg_randn(ctx, TG_F32, TG_SHAPE(2, 3, 2), 0, 1));
    TRY_OK("backward", tg_backward_ex(ctx, y, g, TG_RETAIN_GRAPH | TG_KEEP_GRADS));
    EXPECT(z->grad, "TG_KEEP_GRADS kept no gradient");
    keep(r, z->grad);
    ADD_SQ(loss, z);
    ADD_SQ(loss, y);
    return finish(r, loss);
}

/* sum and mean of everything and along axes, with and without keepdim */
static int g_reduce(run *r)
{
    tg_ctx *ctx = r->ctx;
    tg_tensor *x, *s, *m, *y, *loss = NULL;
    begin(r);
    PARAM(x, TG_F64, TG_SHAPE(2, 3, 4), 0, 1);
    TRY("sum", s, tg_sum_axis(ctx, x, 1, false));
    TRY("mean", m, tg_mean_axis(ctx, x, -2, false));
    TRY("mul", y, tg_mul(ctx, s, m));
    TRY("mean", y, tg_mean_axis(ctx, y, -1, true));
    TRY("sum", s, tg_sum_axis(ctx, x, 0, true));
    TRY("mean", m, tg_mean(ctx, x));
    TRY("mul", m, tg_mul(ctx, m, m));
    ADD_SQ(loss, y);
    ADD_SQ(loss, s);
    TRY("add", loss, tg_add(ctx, loss, m));
    return finish(r, loss);
}

/* reshape, flatten, permute, transpose, concat, slice, pad1d and pad2d */
static int g_shape(run *r)
{
    tg_ctx *ctx = r->ctx;
    tg_tensor *x, *u, *y, *loss = NULL;
    static const int perm[3] = {2, 0, 1};
    begin(r);
    PARAM(x, TG_F64, TG_SHAPE(2, 3, 4), 0, 1);
    PARAM(u, TG_F64, TG_SHAPE(2, 2, 4), 0, 1);
    TRY("reshape", y, tg_reshape(ctx, x, TG_SHAPE(4, -1)));
    ADD_SQ(loss, y);
    TRY("reshape", y, tg_flatten(ctx, x, 1, -1));
    TRY("mul", y, tg_mul(ctx, y, y));
    ADD_SQ(loss, y);
    TRY("permute", y, tg_permute(ctx, x, perm));
    TRY("permute", y, tg_transpose(ctx, y, 0, 2));
    TRY("mul", y, tg_mul(ctx, y, y));
    ADD_SQ(loss, y);
    tg_tensor *parts[2] = {x, u};
    TRY("concat", y, tg_concat(ctx, parts, 2, 1));
    TRY("slice", y, tg_slice(ctx, y, 1, 1, 5, 2));
    TRY("mul", y, tg_mul(ctx, y, y));
    ADD_SQ(loss, y);
    TRY("pad", y, tg_pad2d(ctx, x, 1, 2, 0, 1));
    TRY("mul", y, tg_mul(ctx, y, y));
    ADD_SQ(loss, y);
    TRY("pad", y, tg_pad1d(ctx, u, 2, 1));
    TRY("mul", y, tg_mul(ctx, y, y));
    ADD_SQ(loss, y);
    return finish(r, loss);
}

/* conv1d and conv2d with bias, stride, padding, dilation and groups */
static int g_conv(run *r)
{
    tg_ctx *ctx = r->ctx;
    tg_tensor *x1, *w1, *b1, *x2, *w2, *b2, *w3, *y, *loss = NULL;
    begin(r);
    PARAM(x1, TG_F32, TG_SHAPE(2, 4, 9), 0, 1);
    PARAM(w1, TG_F32, TG_SHAPE(6, 2, 3), 0, 0.5);
    PARAM(b1, TG_F32, TG_SHAPE(6), 0, 0.5);
    PARAM(x2, TG_F64, TG_SHAPE(2, 4, 6, 5), 0, 1);
    PARAM(w2, TG_F64, TG_SHAPE(6, 2, 3, 3), 0, 0.5);
    PARAM(b2, TG_F64, TG_SHAPE(6), 0, 0.5);
    PARAM(w3, TG_F64, TG_SHAPE(3, 4, 2, 3), 0, 0.5);
    TRY("conv1d", y, tg_conv1d(ctx, x1, w1, b1, 2, 1, 2, 2));
    ADD_SQ(loss, y);
    TRY("conv2d", y, tg_conv2d(ctx, x2, w2, b2, 2, 1, 1, 2));
    tg_tensor *loss2 = NULL;
    ADD_SQ(loss2, y);
    tg_conv_attrs at = {{1, 2}, {0, 1}, {2, 1}, 1};
    TRY("conv2d", y, tg_conv2d_ex(ctx, x2, w3, NULL, &at));
    ADD_SQ(loss2, y);
    keep(r, loss);
    keep(r, loss2);
    TRY_OK("backward", tg_backward(ctx, loss));
    return finish(r, loss2);
}

/* max and average pooling in 1-D and 2-D, global average pooling */
static int g_pool(run *r)
{
    tg_ctx *ctx = r->ctx;
    tg_tensor *x1, *x2, *y, *loss = NULL;
    begin(r);
    PARAM(x1, TG_F64, TG_SHAPE(2, 3, 7), 0, 1);
    PARAM(x2, TG_F64, TG_SHAPE(2, 3, 6, 6), 0, 1);
    TRY("max_pool1d", y, tg_max_pool1d_ex(ctx, x1, 3, 2, 1));
    ADD_SQ(loss, y);
    TRY("max_pool1d", y, tg_max_pool1d(ctx, x1, 2));
    ADD_SQ(loss, y);
    TRY("avg_pool1d", y, tg_avg_pool1d_ex(ctx, x1, 3, 2, 1));
    ADD_SQ(loss, y);
    TRY("avg_pool1d", y, tg_avg_pool1d(ctx, x1, 2));
    ADD_SQ(loss, y);
    TRY("max_pool2d", y, tg_max_pool2d_ex(ctx, x2, 3, 2, 1));
    ADD_SQ(loss, y);
    TRY("max_pool2d", y, tg_max_pool2d(ctx, x2, 2));
    ADD_SQ(loss, y);
    TRY("avg_pool2d", y, tg_avg_pool2d_ex(ctx, x2, 3, 2, 1));
    ADD_SQ(loss, y);
    TRY("avg_pool2d", y, tg_avg_pool2d(ctx, x2, 2));
    ADD_SQ(loss, y);
    TRY("global_avg_pool", y, tg_global_avg_pool(ctx, x2));
    ADD_SQ(loss, y);
    return finish(r, loss);
}

/* relu, leaky_relu, sigmoid, tanh, softmax and log_softmax */
static int g_activation(run *r)
{
    tg_ctx *ctx = r->ctx;
    tg_tensor *x, *y, *loss = NULL;
    begin(r);
    PARAM(x, TG_F32, TG_SHAPE(2, 3, 4), 0, 1);
    TRY("relu", y, tg_relu(ctx, x));
    ADD_SQ(loss, y);
    TRY("leaky_relu", y, tg_leaky_relu(ctx, x, 0.1));
    ADD_SQ(loss, y);
    TRY("sigmoid", y, tg_sigmoid(ctx, x));
    ADD_SQ(loss, y);
    TRY("tanh", y, tg_tanh(ctx, x));
    ADD_SQ(loss, y);
    TRY("softmax", y, tg_softmax(ctx, x, 1));
    ADD_SQ(loss, y);
    TRY("log_softmax", y, tg_log_softmax(ctx, x, -1));
    ADD_SQ(loss, y);
    return finish(r, loss);
}

/* mse, bce, bce_with_logits and cross_entropy with class probabilities */
static int g_loss(run *r)
{
    tg_ctx *ctx = r->ctx;
    tg_tensor *x, *q, *t, *y, *p, *probs, *l, *loss;
    begin(r);
    PARAM(x, TG_F64, TG_SHAPE(3, 4), 0, 1);
    PARAM(q, TG_F64, TG_SHAPE(3, 4), 0, 1);
    PARAM(t, TG_F64, TG_SHAPE(3, 4), 0.5, 0.2);
    TRY(NULL, y, tg_rand(ctx, TG_F64, TG_SHAPE(3, 4), 0, 1));
    TRY("mse", loss, tg_mse(ctx, x, y, TG_MEAN));
    TRY("mse", l, tg_mse(ctx, x, q, TG_SUM));
    TRY("add", loss, tg_add(ctx, loss, l));
    TRY("sigmoid", p, tg_sigmoid(ctx, x));
    TRY("bce", l, tg_bce(ctx, p, y, TG_SUM));
    TRY("add", loss, tg_add(ctx, loss, l));
    TRY("bce_with_logits", l, tg_bce_with_logits(ctx, q, t, TG_MEAN));
    TRY("add", loss, tg_add(ctx, loss, l));
    TRY("softmax", probs, tg_softmax(ctx, q, 1));
    TRY("cross_entropy", l, tg_cross_entropy(ctx, x, probs, TG_MEAN));
    TRY("add", loss, tg_add(ctx, loss, l));
    TRY("cross_entropy", l, tg_cross_entropy(ctx, q, y, TG_SUM));
    TRY("add", loss, tg_add(ctx, loss, l));
    return finish(r, loss);
}

/* cross_entropy with int64 class indices, (N, C) and (N, C, d) logits */
static int g_cross_entropy_int64(run *r)
{
    tg_ctx *ctx = r->ctx;
    tg_tensor *x, *z, *i1, *i2, *l, *loss;
    static const int64_t cls1[4] = {0, 2, 1, 2};
    static const int64_t cls2[6] = {1, 0, 2, 2, 0, 1};
    begin(r);
    PARAM(x, TG_F64, TG_SHAPE(4, 3), 0, 1);
    PARAM(z, TG_F32, TG_SHAPE(2, 3, 3), 0, 1);
    TRY(NULL, i1, tg_from_data(ctx, TG_I64, TG_SHAPE(4), cls1));
    TRY(NULL, i2, tg_from_data(ctx, TG_I64, TG_SHAPE(2, 3), cls2));
    TRY("cross_entropy", loss, tg_cross_entropy(ctx, x, i1, TG_MEAN));
    TRY("cross_entropy", l, tg_cross_entropy(ctx, z, i2, TG_SUM));
    keep(r, loss);
    TRY_OK("backward", tg_backward(ctx, loss));
    return finish(r, l);
}

/* dropout and batch norm with running statistics, in training and eval mode */
static int g_dropout_batch_norm(run *r)
{
    tg_ctx *ctx = r->ctx;
    tg_tensor *x, *x4, *w, *b, *rm, *rv, *y, *loss = NULL;
    begin(r);
    PARAM(x, TG_F64, TG_SHAPE(4, 3, 5), 0, 1);
    PARAM(x4, TG_F64, TG_SHAPE(2, 3, 2, 2), 0, 1);
    PARAM(w, TG_F64, TG_SHAPE(3), 1, 0.2);
    PARAM(b, TG_F64, TG_SHAPE(3), 0, 0.2);
    TRY(NULL, rm, buffer(r, 3, 0));
    TRY(NULL, rv, buffer(r, 3, 1));
    TRY("dropout", y, tg_dropout(ctx, x, 0.3));
    TRY("batch_norm", y, tg_batch_norm(ctx, y, w, b, rm, rv, 0.1, 1e-5));
    ADD_SQ(loss, y);
    TRY("batch_norm", y, tg_batch_norm(ctx, x4, w, NULL, NULL, NULL, 0.1, 1e-5));
    ADD_SQ(loss, y);
    tg_set_training(ctx, false);
    TRY("dropout", y, tg_dropout(ctx, x, 0.3));
    TRY("batch_norm", y, tg_batch_norm(ctx, y, w, b, rm, rv, 0.1, 1e-5));
    ADD_SQ(loss, y);
    tg_set_training(ctx, true);
    return finish(r, loss);
}

/* One SGD step over every parameter, through tg_get and tg_set. */
static void sgd(tg_ctx *ctx, double lr)
{
    for (tg_tensor *p = tg_param_next(ctx, NULL); p; p = tg_param_next(ctx, p))
        for (int64_t i = 0; p->grad && i < p->numel; i++)
            tg_set(p, i, tg_get(p, i) - lr * tg_get(p->grad, i));
}

/* One step of the CNN below: forward, backward, SGD. */
static int cnn_step(run *r, tg_tensor *const *w)
{
    tg_ctx *ctx = r->ctx;
    static const int64_t cls[4] = {0, 2, 1, 2};
    tg_tensor *x, *labels, *y, *loss;
    TRY(NULL, x, tg_randn(ctx, TG_F32, TG_SHAPE(4, 1, 8, 8), 0, 1));
    TRY(NULL, labels, tg_from_data(ctx, TG_I64, TG_SHAPE(4), cls));
    TRY("conv2d", y, tg_conv2d(ctx, x, w[0], w[1], 1, 1, 1, 1));
    TRY("relu", y, tg_relu(ctx, y));
    TRY("max_pool2d", y, tg_max_pool2d(ctx, y, 2));
    TRY("reshape", y, tg_flatten(ctx, y, 1, -1));
    TRY("linear", y, tg_linear(ctx, y, w[2], w[3]));
    TRY("cross_entropy", loss, tg_cross_entropy(ctx, y, labels, TG_MEAN));
    if (finish(r, loss))
        return -1;
    sgd(ctx, 0.1);
    return 0;
}

/* Two training steps of conv2d, relu, max_pool2d, flatten, linear, cross_entropy. */
static int g_cnn_training(run *r)
{
    tg_tensor *w[4];
    begin(r);
    PARAM(w[0], TG_F32, TG_SHAPE(4, 1, 3, 3), 0, 0.3);
    PARAM(w[1], TG_F32, TG_SHAPE(4), 0, 0.1);
    PARAM(w[2], TG_F32, TG_SHAPE(3, 64), 0, 0.1);
    PARAM(w[3], TG_F32, TG_SHAPE(3), 0, 0.1);
    if (cnn_step(r, w))
        return -1;
    tg_zero_grad(r->ctx);
    tg_reset(r->ctx);
    return cnn_step(r, w);
}

/* ---------------------------------------------------------------- the sweep */

typedef struct config {
    const char *desc;
    size_t chunk;   /* tg_ctx_opts.arena_chunk; 0: the default */
    bool checked;
    bool transient;
} config;

static const config configs[] = {
    {"64-byte arena chunks", SMALL_CHUNK, false, false},
    {"512-byte arena chunks", 512, false, false},
    {"the default arena chunk", 0, false, false},
    {"64-byte chunks, checked mode", SMALL_CHUNK, true, false},
    {"64-byte chunks, one transient failure", SMALL_CHUNK, false, true},
};
#define NCONFIGS (int)(sizeof configs / sizeof configs[0])

typedef struct sweep {
    const char *graph;
    const config *cfg;
    long points;        /* values of N at which a refusal happened */
    long named_forward; /* failures whose message names the op being built */
    long named_backward;
    const char *named[MAX_OPS]; /* the ops named in a forward failure */
    int nnamed;
} sweep;

static tg_ctx *ctx_new(fault *a, const config *cfg)
{
    tg_ctx_opts o = {0};
    o.alloc = fault_alloc;
    o.alloc_ud = a;
    o.seed = SEED;
    o.arena_chunk = cfg->chunk;
    o.arena_fixed = cfg->chunk == SMALL_CHUNK; /* every allocation reaches the hook */
    o.checked = cfg->checked;
    return tg_ctx_new_opts(&o);
}

static int run_graph(tg_ctx *ctx, const fault *a, graph_fn fn, snap *s, run *r)
{
    memset(r, 0, sizeof *r);
    r->ctx = ctx;
    r->alloc = a;
    r->keep = s;
    tg_seed(ctx, SEED);
    int rc = fn(r);
    if (rc == 0)
        snap_persistent(s, ctx);
    return rc;
}

static bool in_list(const char *const *list, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return true;
    return false;
}

/* msg is "out of memory allocating B bytes" after a prefix of prefix_len bytes. */
static bool oom_tail(const char *msg, size_t prefix_len)
{
    static const char head[] = "out of memory allocating ";
    const char *p = msg + prefix_len;
    if (strncmp(p, head, sizeof head - 1) != 0)
        return false;
    p += sizeof head - 1;
    if (*p < '1' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9')
        p++;
    return strcmp(p, " bytes") == 0;
}

#define AT "%s, %s, N = %ld: "
#define AT_ARGS sw->graph, sw->cfg->desc, n

/*
 * The failure of run r holds TG_ENOMEM and a message that says where it
 * happened: "op: out of memory allocating B bytes" for a failure inside
 * the forward of the op being built, "backward of op: ..." inside a vjp,
 * and no prefix in the engine. A builder call meets the engine outside
 * its op only at its first request (the tape node, made before the
 * forward runs) and, for the first op recorded, when the tape grows.
 */
static void check_failure(sweep *sw, const run *r, long n)
{
    const char *msg = tg_errmsg(r->ctx);
    const char *call = r->failed_in[0] ? r->failed_in : "a tensor call";
    EXPECT(tg_errcode(r->ctx) == TG_ENOMEM, AT "%s: code %d, '%s'", AT_ARGS, call,
           tg_errcode(r->ctx), msg);
    bool builder = r->failed_in[0] && strcmp(r->failed_in, "backward") != 0;
    long k = n - r->failed_from; /* the refused request's place within the call */
    if (oom_tail(msg, 0)) {
        EXPECT(!builder || k == 1 || r->nops == 0,
               AT "'%s' without the op's name, at request %ld of the call of %s", AT_ARGS, msg, k,
               call);
        return;
    }
    static const char bwd[] = "backward of ";
    const char *colon = strchr(msg, ':');
    EXPECT(colon && oom_tail(msg, (size_t)(colon - msg) + 2), AT "unexpected message '%s'",
           AT_ARGS, msg);
    char op[64];
    if (strncmp(msg, bwd, sizeof bwd - 1) == 0) {
        const char *name = msg + sizeof bwd - 1;
        snprintf(op, sizeof op, "%.*s", (int)(colon - name), name);
        EXPECT(strcmp(r->failed_in, "backward") == 0 && in_list(r->ops, r->nops, op),
               AT "'%s' in %s, which ran no vjp of %s", AT_ARGS, msg, call, op);
        sw->named_backward++;
        return;
    }
    snprintf(op, sizeof op, "%.*s", (int)(colon - msg), msg);
    EXPECT(strcmp(r->failed_in, op) == 0, AT "'%s' from %s", AT_ARGS, msg, call);
    sw->named_forward++;
    if (!in_list(sw->named, sw->nnamed, op) && sw->nnamed < MAX_OPS)
        sw->named[sw->nnamed++] = r->failed_in;
}

/* The context's own accounting agrees with the allocator's. */
static void check_stats(const sweep *sw, tg_ctx *ctx, const fault *a, long n)
{
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    EXPECT(st.bytes_live == (size_t)a->live_bytes, AT "the context counts %zu live bytes, the "
           "allocator %ld", AT_ARGS, st.bytes_live, a->live_bytes);
}

/* The reference: a context with the default options that never fails. */
static void reference(const char *graph, graph_fn fn, snap *ref, run *r)
{
    static const config plain = {"no failure", 0, false, false};
    fault a = {0};
    tg_ctx *ctx = ctx_new(&a, &plain);
    ck_assert_ptr_nonnull(ctx);
    int rc = run_graph(ctx, &a, fn, ref, r);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", tg_errmsg(ctx));
    tg_ctx_free(ctx);
    if (rc != 0)
        free(ref->p); /* the test ends here */
    ck_assert_msg(rc == 0, "%s: the graph fails without any allocation failure: %s", graph, msg);
    ck_assert_int_eq(a.live_bytes, 0);
}

/* After the failure of request n: clear, reset, rerun with no more failures. */
static void rerun(sweep *sw, tg_ctx *ctx, fault *a, graph_fn fn, snap *s, long n)
{
    run r;
    check_stats(sw, ctx, a, n);
    tg_clear_error(ctx);
    tg_reset(ctx);
    a->fail_at = 0;
    s->n = 0;
    int rc = run_graph(ctx, a, fn, s, &r);
    EXPECT(rc == 0, AT "the rerun after the failure fails in %s: %s", AT_ARGS,
           r.failed_in[0] ? r.failed_in : "a tensor call", tg_errmsg(ctx));
    check_stats(sw, ctx, a, n);
}

/* Fails request n; returns true when the run completed without a refusal. */
static bool fail_at(sweep *sw, graph_fn fn, const snap *ref, long n)
{
    fault a = {0};
    a.fail_at = n;
    a.transient = sw->cfg->transient;
    tg_ctx *ctx = ctx_new(&a, sw->cfg);
    if (!ctx) {
        EXPECT(a.failed > 0 && a.live_bytes == 0, AT "context creation left %ld bytes", AT_ARGS,
               a.live_bytes);
        sw->points++;
        return false;
    }
    snap s = {0};
    run r;
    bool done = run_graph(ctx, &a, fn, &s, &r) == 0;
    if (done) {
        EXPECT(a.failed == 0, AT "%ld refused allocations went unreported", AT_ARGS, a.failed);
    } else {
        EXPECT(a.failed > 0, AT "failed without a refused allocation: %s", AT_ARGS,
               tg_errmsg(ctx));
        check_failure(sw, &r, n);
        sw->points++;
        rerun(sw, ctx, &a, fn, &s, n);
    }
    EXPECT(s.n == ref->n && memcmp(s.p, ref->p, s.n) == 0,
           AT "the %s differs from a context that never failed", AT_ARGS,
           done ? "completed run" : "rerun after the failure");
    free(s.p);
    tg_ctx_free(ctx);
    EXPECT(a.live_bytes == 0, AT "%ld bytes leak", AT_ARGS, a.live_bytes);
    return done;
}

/* Sweeps N = 1, 2, ... until the graph completes; returns the failure
 * points. ref and r are the reference run's values and record. */
static long sweep_graph(const char *name, graph_fn fn, const config *cfg, const snap *ref,
                        const run *r)
{
    sweep sw = {.graph = name, .cfg = cfg};
    long n = 1;
    while (!fail_at(&sw, fn, ref, n))
        EXPECT(++n < MAX_N, "%s, %s: still failing at N = %ld", name, cfg->desc, n);
    if (cfg->chunk == SMALL_CHUNK) { /* every arena allocation reaches the allocator */
        ck_assert_msg(sw.named_backward > 0, "%s, %s: no failure inside a vjp names its op", name,
                      cfg->desc);
        for (int i = 0; i < r->nops; i++) /* each forward that asks can fail */
            ck_assert_msg(!r->asked[i] || in_list(sw.named, sw.nnamed, r->ops[i]),
                          "%s, %s: no forward failure names %s", name, cfg->desc, r->ops[i]);
    }
    printf("oom: %s, %s: %ld failure points (%ld in a forward, %ld in a vjp, naming the op)\n",
           name, cfg->desc, sw.points, sw.named_forward, sw.named_backward);
    return sw.points;
}

/* ---------------------------------------------------------------- the tally */

typedef struct tally_rec {
    char graph[32];
    long points;
} tally_rec;

static int tally_fd = -1; /* a temporary file shared with forked tests */

static void tally_add(const char *graph, long points)
{
    tally_rec rec = {{0}, points};
    snprintf(rec.graph, sizeof rec.graph, "%s", graph);
    ck_assert_int_eq(write(tally_fd, &rec, sizeof rec), (ssize_t)sizeof rec);
}

typedef struct graph {
    const char *name;
    graph_fn fn;
} graph;

static const graph graphs[] = {
    {"elementwise", g_elementwise},
    {"matmul", g_matmul},
    {"reduce", g_reduce},
    {"shape", g_shape},
    {"conv", g_conv},
    {"pool", g_pool},
    {"activation", g_activation},
    {"loss", g_loss},
    {"cross_entropy_int64", g_cross_entropy_int64},
    {"dropout_batch_norm", g_dropout_batch_norm},
    {"cnn_training", g_cnn_training},
};
#define NGRAPHS (int)(sizeof graphs / sizeof graphs[0])

/* Graph _i under every configuration, against one reference. */
START_TEST(every_allocation_fails_in_turn)
{
    snap ref = {0};
    run r;
    reference(graphs[_i].name, graphs[_i].fn, &ref, &r);
    long points = 0;
    for (int c = 0; c < NCONFIGS; c++)
        points += sweep_graph(graphs[_i].name, graphs[_i].fn, &configs[c], &ref, &r);
    free(ref.p);
    tally_add(graphs[_i].name, points);
}
END_TEST

START_TEST(total)
{
    tally_rec rec;
    long points = 0;
    int seen = 0;
    bool found[NGRAPHS] = {false};
    for (off_t at = 0; pread(tally_fd, &rec, sizeof rec, at) == (ssize_t)sizeof rec;
         at += (off_t)sizeof rec)
        for (int g = 0; g < NGRAPHS; g++)
            if (strcmp(rec.graph, graphs[g].name) == 0 && !found[g]) {
                found[g] = true;
                seen++;
                points += rec.points;
            }
    char missing[512] = "";
    for (int g = 0; g < NGRAPHS; g++)
        if (!found[g])
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " %s",
                     graphs[g].name);
    ck_assert_msg(seen == NGRAPHS, "these sweeps did not finish:%s", missing);
    printf("oom: %ld allocation failure points covered across %d graphs (%d allocator "
           "configurations each)\n", points, seen, NCONFIGS);
    fflush(stdout);
}
END_TEST

Suite *tg_test_suite(void)
{
    FILE *f = tmpfile();
    tally_fd = f ? fileno(f) : -1;
    Suite *s = suite_create("oom");
    TCase *tc = tcase_create("graphs");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, every_allocation_fails_in_turn, 0, NGRAPHS);
    suite_add_tcase(s, tc);
    tc = tcase_create("total");
    tcase_add_test(tc, total);
    suite_add_tcase(s, tc);
    return s;
}
