/*
 * fuzz_graph.c: a libFuzzer harness that turns its input into a random
 * computation graph through the public API, runs backward on it, and
 * checks the library's promises about errors and results.
 *
 * The input is read front to back: a configuration byte (checked mode,
 * anomaly mode, eval mode, a tiny arena chunk, one injected allocation
 * failure, the default 1 MiB chunk), then a list of actions (make a leaf, apply an op, write a
 * tensor, toggle a mode, backward, reset, call a registered op by name
 * with hand-built attributes). When the bytes run out the harness runs a
 * last backward and frees everything.
 *
 * What it checks (abort() with a message on a violation):
 *   - a builder that returns NULL leaves an error code and a message; one
 *     that returns a tensor leaves no error, and the tensor has a valid
 *     dtype, ndim, shape and numel, and its data can be read to the end;
 *   - no error is TG_EINTERNAL, and TG_ENOMEM only follows a refused
 *     allocation;
 *   - errors stick until tg_clear_error, and after it the context works;
 *   - a failed tg_backward leaves its status and a message in the context,
 *     and the gradients it leaves have their tensors' shapes and dtypes;
 *   - the allocator hook is always told a block's true size, and every
 *     byte taken through it is given back by tg_ctx_free.
 * Everything is bounded so that one input runs in milliseconds: the
 * harness caps the shapes it fills with values, draws attributes either
 * small or absurd (absurd ones must be rejected, or overflow to a shape
 * the allocator budget refuses), and the hook refuses anything beyond
 * 64 MiB in total. No state outlives one call.
 */
#include "tapegrad.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BUDGET ((size_t)64 << 20) /* bytes a run may hold from the allocator */
#define FILL_MAX 1024             /* most elements of a leaf filled with values */
#define POOL_MAX 48               /* tensors kept to pick inputs from */
#define ACTIONS_MAX 160           /* actions per input */
#define HDR 16                    /* the hook's block header: the block's size */

/* ---------------------------------------------------------------- failing loudly */

TG_PRINTF(1, 2) static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz_graph: invariant violated: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* ---------------------------------------------------------------- reading the input */

typedef struct src {
    const uint8_t *p;
    size_t n, i;
} src;

static bool done(const src *s) { return s->i >= s->n; }
static uint8_t u8(src *s) { return s->i < s->n ? s->p[s->i++] : 0; }
static unsigned below(src *s, unsigned n) { return n ? u8(s) % n : 0; }
/* True with probability about pct/100; false once the input is used up. */
static bool coin(src *s, unsigned pct) { return !done(s) && u8(s) * 100u < pct * 256u; }

static const int64_t absurd_i64[] = {
    -1, -2, INT32_MIN, (int64_t)1 << 31, (int64_t)1 << 32, (int64_t)1 << 40, (int64_t)1 << 62,
    INT64_MAX / 3, INT64_MAX / 2, INT64_MAX - 1, INT64_MAX, INT64_MIN, INT64_MIN + 1,
    -((int64_t)1 << 40)};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* An attribute: mostly small (-2..6), sometimes absurd. Never a moderately
 * large legal value, which could make a legal op run for seconds. */
static int64_t attr_i64(src *s)
{
    if (coin(s, 20))
        return absurd_i64[below(s, NELEM(absurd_i64))];
    return (int64_t)below(s, 9) - 2;
}

static int attr_int(src *s)
{
    static const int odd[] = {INT32_MIN, INT32_MAX, -7, 7, 100, -100};
    if (coin(s, 10))
        return odd[below(s, NELEM(odd))];
    return (int)below(s, 9) - 4;
}

static double any_double(src *s)
{
    static const double odd[] = {0.0, -0.0, 1.0, -1.0, 0.5, 2.0, NAN, INFINITY, -INFINITY,
                                 1e308, -1e308, 4e-320, 3.5e38, -3.5e38, 1e-7, 1e6, 100.0,
                                 -100.0, 0.999999, 1.0000001};
    if (coin(s, 40))
        return odd[below(s, NELEM(odd))];
    return ((int)u8(s) - 128) / 16.0;
}

/* ---------------------------------------------------------------- the allocator hook */

typedef struct budget {
    size_t live;        /* bytes held through the hook, both contexts */
    uint64_t calls;     /* allocations and resizes asked for */
    uint64_t fail_at;   /* the call to refuse, 0 for none */
    uint64_t refusals;  /* allocations refused, ever */
} budget;

static void *hook(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    budget *b = ud;
    unsigned char *blk = ptr ? (unsigned char *)ptr - HDR : NULL;
    if (blk) {
        size_t held;
        memcpy(&held, blk, sizeof held);
        if (held != old_size)
            die("allocator hook: told a block of %zu bytes holds %zu", held, old_size);
    } else if (old_size) {
        die("allocator hook: old_size %zu for a NULL pointer", old_size);
    }
    if (new_size == 0) {
        b->live -= old_size;
        free(blk);
        return NULL;
    }
    b->calls++;
    if (new_size > BUDGET || b->live - old_size + new_size > BUDGET || b->calls == b->fail_at) {
        b->refusals++;
        return NULL;
    }
    unsigned char *nb = realloc(blk, new_size + HDR);
    if (!nb) {
        b->refusals++;
        return NULL;
    }
    memcpy(nb, &new_size, sizeof new_size);
    b->live = b->live - old_size + new_size;
    return nb + HDR;
}

/* ---------------------------------------------------------------- the harness state */

typedef struct fz {
    src s;
    budget bud;
    tg_ctx *ctx, *other;
    tg_tensor *pool[POOL_MAX];     /* usable now: this step's tensors and persistent ones */
    int n;
    tg_tensor *stale[POOL_MAX];    /* the previous step's (checked mode only) */
    int n_stale;
    tg_tensor *foreign[4];         /* the other context's */
    int n_foreign;
    tg_tensor *last;               /* the latest op output */
    uint64_t refusals0;            /* bud.refusals before the current call */
    double vals[FILL_MAX];         /* scratch for leaf values */
    int64_t ivals[FILL_MAX];
} fz;

static void keep(fz *f, tg_tensor *t)
{
    if (f->n < POOL_MAX)
        f->pool[f->n++] = t;
    else
        f->pool[below(&f->s, POOL_MAX)] = t;
}

static void begin(fz *f) { f->refusals0 = f->bud.refusals; }

/* A persistent tensor's gradient from the pool, or NULL. */
static tg_tensor *some_grad(fz *f)
{
    for (int i = 0; i < f->n; i++) {
        tg_tensor *t = f->pool[(i + f->n / 2) % f->n];
        if (t->persistent && t->grad)
            return t->grad;
    }
    return NULL;
}

/* An input for an op: mostly a tensor of this step (often the latest),
 * sometimes NULL, another context's tensor, a tensor of an ended step
 * (checked mode only: elsewhere it is a deliberate ASan report) or a
 * parameter's gradient. */
static tg_tensor *pick(fz *f)
{
    unsigned r = u8(&f->s);
    if (r < 5)
        return NULL;
    if (r < 10 && f->n_foreign)
        return f->foreign[r % f->n_foreign];
    if (r < 16 && f->n_stale && tg_checked(f->ctx))
        return f->stale[u8(&f->s) % f->n_stale];
    if (r < 20) {
        tg_tensor *g = some_grad(f);
        if (g)
            return g;
    }
    if (r >= 150 && f->last)
        return f->last;
    return f->n ? f->pool[u8(&f->s) % f->n] : NULL;
}

/* ---------------------------------------------------------------- the checks */

#ifdef FUZZ_TRACE
static const char *trace_shape(const tg_tensor *t)
{
    static char buf[96];
    tg_shape_str(t, buf, sizeof buf);
    return buf;
}
#endif

static void check_tensor(fz *f, const char *what, const tg_tensor *t)
{
    size_t es = tg_dtype_size(t->dtype);
    if (t->ctx != f->ctx)
        die("%s: result belongs to another context", what);
    if (es == 0)
        die("%s: result has dtype %d", what, (int)t->dtype);
    if (t->ndim < 0 || t->ndim > TG_MAX_DIMS)
        die("%s: result has ndim %d", what, t->ndim);
    bool empty = false; /* a 0 anywhere makes the tensor empty, whatever the others */
    for (int i = 0; i < t->ndim && i < TG_MAX_DIMS; i++)
        empty |= t->shape[i] == 0;
    int64_t numel = empty ? 0 : 1;
    for (int i = 0; i < TG_MAX_DIMS; i++) {
        if (i >= t->ndim) {
            if (t->shape[i] != 1)
                die("%s: unused dimension %d is %" PRId64 ", not 1", what, i, t->shape[i]);
            continue;
        }
        if (t->shape[i] < 0)
            die("%s: dimension %d is %" PRId64, what, i, t->shape[i]);
        if (!empty && __builtin_mul_overflow(numel, t->shape[i], &numel))
            die("%s: shape overflows int64", what);
    }
    if (numel != t->numel)
        die("%s: numel %" PRId64 " but the shape holds %" PRId64, what, t->numel, numel);
    if (numel > INT64_MAX / (int64_t)es)
        die("%s: %" PRId64 " elements do not fit in memory", what, numel);
    if (numel == 0)
        return;
    if (!t->data)
        die("%s: %" PRId64 " elements but no data", what, numel);
    if (t->requires_grad && !tg_dtype_is_float(t->dtype))
        die("%s: an %s result requires grad", what, tg_dtype_name(t->dtype));
    /* read the whole block (or its ends) so ASan sees a short allocation */
    const volatile unsigned char *d = t->data;
    size_t bytes = (size_t)numel * es;
    unsigned char acc = d[0] ^ d[bytes - 1];
    if (bytes <= 1u << 16)
        for (size_t i = 0; i < bytes; i++)
            acc ^= d[i];
    (void)acc;
}

static void check_error(fz *f, const char *what)
{
    int code = tg_errcode(f->ctx);
    const char *msg = tg_errmsg(f->ctx);
    if (code == TG_OK)
        die("%s failed without an error code", what);
    if (code < TG_ENONFINITE || code > TG_EINVAL)
        die("%s: unknown error code %d (%s)", what, code, msg);
    if (!msg || !msg[0])
        die("%s: error %d (%s) without a message", what, code, tg_status_str(code));
    if (code == TG_EINTERNAL)
        die("%s: internal error: %s", what, msg);
    if (code == TG_ENOMEM && f->bud.refusals == f->refusals0)
        die("%s: out of memory, but no allocation was refused: %s", what, msg);
}

/* After tg_clear_error the context must work again: a tensor and an op. */
static void check_recovered(fz *f)
{
    begin(f);
    tg_tensor *a = tg_full(f->ctx, TG_F64, TG_SHAPE(2), 1.5);
    tg_tensor *b = a ? tg_mul_scalar(f->ctx, a, 2.0) : NULL;
    if (b) {
        if (tg_get(b, 0) != 3.0 || tg_get(b, 1) != 3.0)
            die("after tg_clear_error 1.5 * 2 gave %g", tg_get(b, 0));
        return;
    }
    if (tg_errcode(f->ctx) != TG_ENOMEM || f->bud.refusals == f->refusals0)
        die("the context does not work after tg_clear_error: %d %s", tg_errcode(f->ctx),
            tg_errmsg(f->ctx));
    tg_clear_error(f->ctx);
}

/* Errors stick: with one held, a builder returns NULL and keeps it. */
static void check_sticky(fz *f)
{
    int code = tg_errcode(f->ctx);
    char msg[64];
    snprintf(msg, sizeof msg, "%s", tg_errmsg(f->ctx));
    tg_tensor *t = tg_zeros(f->ctx, TG_F32, TG_SHAPE(1));
    if (t || tg_errcode(f->ctx) != code || strncmp(msg, tg_errmsg(f->ctx), sizeof msg - 1))
        die("a held error did not stick (code %d, then %d)", code, tg_errcode(f->ctx));
}

static void clear(fz *f)
{
    if (coin(&f->s, 10))
        check_sticky(f);
    tg_clear_error(f->ctx);
    if (tg_errcode(f->ctx) != TG_OK || tg_errmsg(f->ctx)[0])
        die("tg_clear_error left an error");
    check_recovered(f);
}

/* Checks a builder's result, keeps it, or checks and clears its error. */
static tg_tensor *result(fz *f, const char *what, tg_tensor *t)
{
#ifdef FUZZ_TRACE /* -DFUZZ_TRACE: print what each input does, to write corpora */
    fprintf(stderr, "%s: %s\n", what, t ? trace_shape(t) : tg_errmsg(f->ctx));
#endif
    if (!t) {
        check_error(f, what);
        clear(f);
        return NULL;
    }
    if (tg_errcode(f->ctx) != TG_OK)
        die("%s returned a tensor with error %d held: %s", what, tg_errcode(f->ctx),
            tg_errmsg(f->ctx));
    check_tensor(f, what, t);
    keep(f, t);
    return t;
}

static void status(fz *f, const char *what, tg_status st)
{
#ifdef FUZZ_TRACE
    fprintf(stderr, "%s: %s\n", what, st == TG_OK ? "ok" : tg_errmsg(f->ctx));
#endif
    if (st == TG_OK) {
        if (tg_errcode(f->ctx) != TG_OK)
            die("%s returned TG_OK with error %d held", what, tg_errcode(f->ctx));
        return;
    }
    check_error(f, what);
    if (tg_errcode(f->ctx) != (int)st)
        die("%s returned %d but the context holds %d", what, (int)st, tg_errcode(f->ctx));
    clear(f);
}

/* ---------------------------------------------------------------- leaves */

static tg_dtype any_dtype(src *s)
{
    unsigned r = below(s, 20);
    if (r == 0)
        return (tg_dtype)(3 + below(s, 3)); /* not a dtype */
    if (r < 3)
        return TG_I64;
    return r & 1 ? TG_F32 : TG_F64;
}

static int64_t any_dim(src *s)
{
    unsigned r = u8(s);
    if (r < 200)
        return r % 5;
    if (r < 235)
        return 1 + r % 16;
    return absurd_i64[r % NELEM(absurd_i64)];
}

/* A shape; legal shapes whose size is neither tiny, empty nor absurd are
 * shrunk so a leaf never costs more than FILL_MAX elements of work. */
static int any_shape(src *s, int64_t *shape)
{
    int ndim = (int)below(s, 5);
    if (coin(s, 8)) {
        ndim = (int)below(s, 4) + 5; /* 5..8, or -2..1 */
        ndim -= coin(s, 30) ? 7 : 0;
    }
    int k = ndim < 0 ? 0 : ndim > TG_MAX_DIMS + 2 ? TG_MAX_DIMS + 2 : ndim;
    int64_t n = 1;
    bool absurd = false;
    for (int i = 0; i < k; i++) {
        shape[i] = any_dim(s);
        absurd |= shape[i] < 0 || __builtin_mul_overflow(n, shape[i], &n);
    }
    if (!absurd && n > FILL_MAX && n < ((int64_t)1 << 30))
        for (int i = 0; i < k; i++)
            shape[i] = shape[i] % 4 + 1;
    return ndim;
}

static int64_t count(int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > TG_MAX_DIMS)
        return -1;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(n, shape[i], &n))
            return -1;
    return n;
}

static void fill_values(fz *f, tg_dtype dt, int64_t n)
{
    src *s = &f->s;
    static const int64_t odd[] = {0, 1, 2, -1, 3, INT64_MAX, INT64_MIN, 1000};
    for (int64_t i = 0; i < n; i++) {
        if (dt == TG_I64)
            f->ivals[i] = coin(s, 15) ? odd[below(s, NELEM(odd))] : (int64_t)below(s, 4);
        else
            f->vals[i] = any_double(s);
    }
}

static const char *any_name(src *s, char *buf, size_t size)
{
    switch (below(s, 6)) {
    case 0: return NULL;
    case 1: return "%s%n%d%%";
    case 2:
        memset(buf, 'w', size - 1);
        buf[size - 1] = 0;
        return buf;
    default: return "t";
    }
}

static tg_tensor *make_values(fz *f, tg_dtype dt, int ndim, const int64_t *shape)
{
    int64_t n = count(ndim, shape);
    if (n < 0 || n > FILL_MAX)
        return tg_full(f->ctx, dt, ndim, shape, any_double(&f->s));
    fill_values(f, dt, n);
    if (dt == TG_I64 && coin(&f->s, 80))
        return tg_from_data(f->ctx, dt, ndim, shape, f->ivals);
    return tg_from_f64(f->ctx, dt, ndim, shape, f->vals);
}

static void assign_values(fz *f, tg_tensor *t)
{
    if (!t || t->numel > FILL_MAX)
        return;
    fill_values(f, TG_F64, t->numel);
    begin(f);
    status(f, "tg_assign_f64", tg_assign_f64(f->ctx, t, f->vals));
}

static void make_leaf(fz *f)
{
    src *s = &f->s;
    int64_t shape[TG_MAX_DIMS + 2];
    tg_dtype dt = any_dtype(s);
    int ndim = any_shape(s, shape);
    char nbuf[300];
    const char *name = any_name(s, nbuf, sizeof nbuf);
    tg_tensor *t = NULL;
    const char *what = "leaf";
    begin(f);
    switch (below(s, 8)) {
    case 0:
        what = "tg_param";
        t = result(f, what, tg_param(f->ctx, dt, ndim, shape, name));
        if (t && coin(s, 80))
            assign_values(f, t);
        return;
    case 1:
        what = "tg_buffer";
        t = result(f, what, tg_buffer(f->ctx, dt, ndim, shape, name));
        if (t && coin(s, 80))
            assign_values(f, t);
        return;
    case 2:
        what = "tg_rand";
        double p0 = any_double(s), p1 = any_double(s);
        t = coin(s, 50) ? tg_rand(f->ctx, dt, ndim, shape, p0, p1)
                        : tg_randn(f->ctx, dt, ndim, shape, p0, p1);
        break;
    case 3:
        what = "tg_empty";
        t = coin(s, 50) ? tg_empty(f->ctx, dt, ndim, shape) : tg_zeros(f->ctx, dt, ndim, shape);
        break;
    default:
        what = "tg_from_f64";
        t = make_values(f, dt, ndim, shape);
        break;
    }
    t = result(f, what, t);
    if (!t)
        return;
    if (coin(s, 50)) {
        begin(f);
        status(f, "tg_set_requires_grad", tg_set_requires_grad(f->ctx, t, true));
    }
    if (name && coin(s, 30)) {
        begin(f);
        if (!tg_set_name(f->ctx, t, name)) {
            check_error(f, "tg_set_name");
            clear(f);
        }
    }
}

/* Class indices for cross-entropy: x's shape without dimension 1, whole
 * numbers in [0, C) mostly, sometimes out of range or not whole. */
static tg_tensor *class_target(fz *f, const tg_tensor *x)
{
    src *s = &f->s;
    double *v = f->vals;
    int64_t *iv = f->ivals;
    if (!x || x->ndim < 1 || x->ctx != f->ctx || !tg_dtype_is_float(x->dtype))
        return pick(f);
    int64_t shape[TG_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < x->ndim; i++)
        if (i != 1)
            shape[nd++] = x->shape[i];
    int64_t n = count(nd, shape);
    if (n < 0 || n > FILL_MAX)
        return pick(f);
    int64_t c = x->ndim > 1 ? x->shape[1] : 1;
    static const double odd[] = {-1, 0.5, NAN, INFINITY, 1e30, -1e30};
    for (int64_t i = 0; i < n; i++) {
        bool bad = coin(s, 5);
        iv[i] = bad ? (coin(s, 50) ? c : -1) : c > 0 ? (int64_t)(u8(s) % (uint64_t)c) : 0;
        v[i] = bad && coin(s, 50) ? odd[below(s, NELEM(odd))] : (double)iv[i];
    }
    tg_tensor *t = coin(s, 30) ? tg_from_data(f->ctx, TG_I64, nd, shape, iv)
                               : tg_from_f64(f->ctx, x->dtype, nd, shape, v);
    return result(f, "class target", t);
}

/* ---------------------------------------------------------------- attributes */

static void any_reshape(src *s, const tg_tensor *x, tg_reshape_attrs *a)
{
    memset(a, 0, sizeof *a);
    unsigned r = below(s, 4);
    if (r == 0 && x) { /* the same size, flat or with -1 */
        a->ndim = coin(s, 50) ? 1 : 2;
        a->shape[0] = a->ndim == 1 ? (coin(s, 50) ? x->numel : -1) : -1;
        a->shape[1] = x->ndim ? x->shape[x->ndim - 1] : 1;
        return;
    }
    a->ndim = (int)below(s, 5);
    if (coin(s, 5))
        a->ndim = coin(s, 50) ? -1 : TG_MAX_DIMS + 1;
    for (int i = 0; i < TG_MAX_DIMS; i++)
        a->shape[i] = coin(s, 15) ? -1 : any_dim(s);
}

static void any_conv(src *s, tg_conv_attrs *a)
{
    for (int i = 0; i < 2; i++) {
        a->stride[i] = coin(s, 70) ? 1 + below(s, 2) : attr_i64(s);
        a->padding[i] = coin(s, 60) ? below(s, 2) : attr_i64(s);
        a->dilation[i] = coin(s, 70) ? 1 + below(s, 2) : attr_i64(s);
    }
    a->groups = coin(s, 70) ? 1 + below(s, 2) : attr_i64(s);
}

static void any_pool(src *s, tg_pool_attrs *a)
{
    for (int i = 0; i < 2; i++) {
        a->kernel[i] = coin(s, 70) ? 1 + below(s, 3) : attr_i64(s);
        a->stride[i] = coin(s, 70) ? 1 + below(s, 2) : attr_i64(s);
        a->padding[i] = coin(s, 70) ? below(s, 2) : attr_i64(s);
        a->dilation[i] = coin(s, 70) ? 1 + below(s, 2) : attr_i64(s);
    }
    a->ceil_mode = coin(s, 30);
    a->exclude_pad = coin(s, 30);
}

static tg_reduction any_reduction(src *s)
{
    return coin(s, 5) ? (tg_reduction)(coin(s, 50) ? 3 : -1) : (tg_reduction)below(s, 3);
}

static void any_ce(src *s, tg_ce_attrs *a)
{
    a->reduction = any_reduction(s);
    a->ignore_index = coin(s, 60) ? TG_IGNORE_INDEX : coin(s, 50) ? (int64_t)below(s, 4) : attr_i64(s);
    a->label_smoothing = coin(s, 60) ? below(s, 5) / 4.0 : any_double(s);
}

/* ---------------------------------------------------------------- ops */

enum {
    OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_NEG, OP_EXP, OP_LOG, OP_SQRT, OP_POW, OP_ADD_S, OP_SUB_S,
    OP_MUL_S, OP_DIV_S, OP_MATMUL, OP_LINEAR, OP_SUM, OP_MEAN, OP_SUM_AXIS, OP_MEAN_AXIS,
    OP_RESHAPE, OP_FLATTEN, OP_PERMUTE, OP_TRANSPOSE, OP_CONCAT, OP_SLICE, OP_PAD1D, OP_PAD2D,
    OP_CONV1D, OP_CONV2D, OP_CONV2D_EX, OP_POOL, OP_POOL_EX, OP_GAP, OP_RELU, OP_LEAKY,
    OP_SIGMOID, OP_TANH, OP_SOFTMAX, OP_LOG_SOFTMAX, OP_MSE, OP_BCE, OP_BCE_LOGITS, OP_CE,
    OP_DROPOUT, OP_BN, OP_CONVERT, OP_COUNT
};

static tg_tensor *pool_op(fz *f, tg_tensor *x, bool ex)
{
    src *s = &f->s;
    tg_ctx *c = f->ctx;
    unsigned which = below(s, 4);
    if (!ex) {
        int64_t k = coin(s, 80) ? 1 + below(s, 3) : attr_i64(s);
        switch (which) {
        case 0: return tg_max_pool1d(c, x, k);
        case 1: return tg_max_pool2d(c, x, k);
        case 2: return tg_avg_pool1d(c, x, k);
        default: return tg_avg_pool2d(c, x, k);
        }
    }
    tg_pool_attrs a;
    any_pool(s, &a);
    if (coin(s, 50))
        switch (which) {
        case 0: return tg_max_pool1d_opts(c, x, coin(s, 3) ? NULL : &a);
        case 1: return tg_max_pool2d_opts(c, x, &a);
        case 2: return tg_avg_pool1d_opts(c, x, &a);
        default: return tg_avg_pool2d_opts(c, x, &a);
        }
    switch (which) {
    case 0: return tg_max_pool1d_ex(c, x, a.kernel[0], a.stride[0], a.padding[0]);
    case 1: return tg_max_pool2d_ex(c, x, a.kernel[0], a.stride[0], a.padding[0]);
    case 2: return tg_avg_pool1d_ex(c, x, a.kernel[0], a.stride[0], a.padding[0]);
    default: return tg_avg_pool2d_ex(c, x, a.kernel[0], a.stride[0], a.padding[0]);
    }
}

static tg_tensor *concat_op(fz *f)
{
    src *s = &f->s;
    tg_tensor *xs[6];
    int n = 1 + (int)below(s, 4);
    for (int i = 0; i < n; i++)
        xs[i] = i > 0 && coin(s, 60) ? xs[0] : pick(f);
    if (coin(s, 5))
        n = coin(s, 50) ? 0 : -1;
    int axis = attr_int(s);
    return tg_concat(f->ctx, coin(s, 3) ? NULL : xs, n, axis);
}

static tg_tensor *batch_norm_op(fz *f, tg_tensor *x)
{
    src *s = &f->s;
    tg_tensor *w = coin(s, 50) ? pick(f) : NULL;
    tg_tensor *b = coin(s, 50) ? pick(f) : NULL;
    tg_tensor *rm = NULL, *rv = NULL;
    if (coin(s, 50)) {
        rm = pick(f);
        rv = coin(s, 90) ? pick(f) : NULL;
    }
    double mom = coin(s, 70) ? TG_BN_MOMENTUM : any_double(s);
    double eps = coin(s, 70) ? TG_BN_EPS : any_double(s);
    return tg_batch_norm(f->ctx, x, w, b, rm, rv, mom, eps);
}

static tg_tensor *shape_op(fz *f, unsigned op, tg_tensor *x)
{
    src *s = &f->s;
    tg_ctx *c = f->ctx;
    int i0 = attr_int(s), i1 = attr_int(s);
    int64_t v[4];
    for (int i = 0; i < 4; i++)
        v[i] = attr_i64(s);
    switch (op) {
    case OP_RESHAPE: {
        tg_reshape_attrs a;
        any_reshape(s, x, &a);
        return tg_reshape(c, x, a.ndim, a.shape);
    }
    case OP_FLATTEN: return tg_flatten(c, x, i0, i1);
    case OP_PERMUTE: {
        int perm[TG_MAX_DIMS];
        for (int i = 0; i < TG_MAX_DIMS; i++)
            perm[i] = coin(s, 80) ? (int)below(s, TG_MAX_DIMS) : attr_int(s);
        if (coin(s, 50) && x && x->ndim >= 0 && x->ndim <= TG_MAX_DIMS) /* a permutation */
            for (int i = 0; i < x->ndim; i++)
                perm[i] = x->ndim - 1 - i;
        return tg_permute(c, x, perm);
    }
    case OP_TRANSPOSE: return tg_transpose(c, x, i0, i1);
    case OP_CONCAT: return concat_op(f);
    case OP_SLICE: return tg_slice(c, x, i0, v[0], v[1], v[2]);
    case OP_PAD1D: return tg_pad1d(c, x, v[0], v[1]);
    default: return tg_pad2d(c, x, v[0], v[1], v[2], v[3]);
    }
}

static tg_tensor *math_op(fz *f, unsigned op, tg_tensor *x)
{
    src *s = &f->s;
    tg_ctx *c = f->ctx;
    tg_tensor *y = NULL;
    switch (op) {
    case OP_ADD: return tg_add(c, x, pick(f));
    case OP_SUB: return tg_sub(c, x, pick(f));
    case OP_MUL: return tg_mul(c, x, pick(f));
    case OP_DIV: return tg_div(c, x, pick(f));
    case OP_NEG: return tg_neg(c, x);
    case OP_EXP: return tg_exp(c, x);
    case OP_LOG: return tg_log(c, x);
    case OP_SQRT: return tg_sqrt(c, x);
    case OP_POW: return tg_pow(c, x, any_double(s));
    case OP_ADD_S: return tg_add_scalar(c, x, any_double(s));
    case OP_SUB_S: return tg_sub_scalar(c, x, any_double(s));
    case OP_MUL_S: return tg_mul_scalar(c, x, any_double(s));
    case OP_DIV_S: return tg_div_scalar(c, x, any_double(s));
    case OP_MATMUL: return tg_matmul(c, x, pick(f));
    case OP_LINEAR:
        y = pick(f);
        return tg_linear(c, x, y, coin(s, 50) ? pick(f) : NULL);
    case OP_SUM: return tg_sum(c, x);
    case OP_MEAN: return tg_mean(c, x);
    default: {
        int axis = attr_int(s);
        bool keepdim = coin(s, 50);
        return op == OP_SUM_AXIS ? tg_sum_axis(c, x, axis, keepdim)
                                 : tg_mean_axis(c, x, axis, keepdim);
    }
    }
}

static tg_tensor *nn_op(fz *f, unsigned op, tg_tensor *x)
{
    src *s = &f->s;
    tg_ctx *c = f->ctx;
    tg_conv_attrs a;
    tg_tensor *w, *b;
    switch (op) {
    case OP_CONV1D:
    case OP_CONV2D:
        any_conv(s, &a);
        w = pick(f);
        b = coin(s, 50) ? pick(f) : NULL;
        return (op == OP_CONV1D ? (tg_conv1d) : (tg_conv2d))(
            c, x, w, b, a.stride[0], a.padding[0], a.dilation[0], a.groups);
    case OP_CONV2D_EX:
        any_conv(s, &a);
        w = pick(f);
        b = coin(s, 50) ? pick(f) : NULL;
        return tg_conv2d_ex(c, x, w, b, coin(s, 3) ? NULL : &a);
    case OP_POOL: return pool_op(f, x, false);
    case OP_POOL_EX: return pool_op(f, x, true);
    case OP_GAP: return coin(s, 50) ? tg_global_avg_pool(c, x) : tg_global_avg_pool_ex(c, x, coin(s, 50));
    case OP_RELU: return tg_relu(c, x);
    case OP_LEAKY: return tg_leaky_relu(c, x, coin(s, 70) ? TG_LEAKY_RELU_SLOPE : any_double(s));
    case OP_SIGMOID: return tg_sigmoid(c, x);
    case OP_TANH: return tg_tanh(c, x);
    case OP_SOFTMAX: return tg_softmax(c, x, attr_int(s));
    case OP_LOG_SOFTMAX: return tg_log_softmax(c, x, attr_int(s));
    case OP_MSE:
    case OP_BCE:
    case OP_BCE_LOGITS: {
        tg_tensor *y = pick(f);
        tg_reduction r = any_reduction(s);
        if (op == OP_BCE_LOGITS && coin(s, 50))
            return tg_bce_with_logits_ex(c, x, y, coin(s, 30) ? NULL : pick(f), r);
        return op == OP_MSE ? tg_mse(c, x, y, r)
               : op == OP_BCE ? tg_bce(c, x, y, r) : tg_bce_with_logits(c, x, y, r);
    }
    case OP_CE: {
        tg_tensor *t = coin(s, 70) ? class_target(f, x) : pick(f);
        if (coin(s, 50))
            return tg_cross_entropy(c, x, t, any_reduction(s));
        tg_ce_attrs ce;
        any_ce(s, &ce);
        tg_tensor *cw = coin(s, 50) ? NULL : pick(f);
        if (coin(s, 30))
            return tg_nll_loss_ex(c, x, t, cw, ce.reduction, ce.ignore_index);
        return tg_cross_entropy_ex(c, x, t, cw, coin(s, 3) ? NULL : &ce);
    }
    case OP_DROPOUT: return tg_dropout(c, x, coin(s, 60) ? below(s, 5) / 4.0 : any_double(s));
    default: return batch_norm_op(f, x);
    }
}

static const char *const op_names[OP_COUNT] = {
    "add", "sub", "mul", "div", "neg", "exp", "log", "sqrt", "pow", "add_scalar", "sub_scalar",
    "mul_scalar", "div_scalar", "matmul", "linear", "sum", "mean", "sum_axis", "mean_axis",
    "reshape", "flatten", "permute", "transpose", "concat", "slice", "pad1d", "pad2d", "conv1d",
    "conv2d", "conv2d_ex", "pool", "pool_ex", "global_avg_pool", "relu", "leaky_relu", "sigmoid",
    "tanh", "softmax", "log_softmax", "mse", "bce", "bce_with_logits", "cross_entropy", "dropout",
    "batch_norm", "to_dtype"};

static void apply_op(fz *f)
{
    src *s = &f->s;
    unsigned op = below(s, OP_COUNT);
    tg_tensor *x = pick(f);
    tg_tensor *y;
    begin(f);
    if (op <= OP_MEAN_AXIS)
        y = math_op(f, op, x);
    else if (op <= OP_PAD2D)
        y = shape_op(f, op, x);
    else if (op < OP_CONVERT)
        y = nn_op(f, op, x);
    else
        y = coin(s, 50) ? tg_copy(f->ctx, x) : tg_to_dtype(f->ctx, x, any_dtype(s));
    y = result(f, op_names[op], y);
    if (y)
        f->last = y;
}

/* ---------------------------------------------------------------- ops by name */

typedef union any_attrs {
    tg_scalar_attrs scalar;
    tg_reduce_attrs reduce;
    tg_reshape_attrs reshape;
    tg_permute_attrs permute;
    tg_concat_attrs concat;
    tg_axis_attrs axis;
    tg_slice_attrs slice;
    tg_pad_attrs pad;
    tg_conv_attrs conv;
    tg_pool_attrs pool;
    tg_loss_attrs loss;
    tg_ce_attrs ce;
    tg_gap_attrs gap;
    tg_dropout_attrs dropout;
    tg_batch_norm_attrs bn;
    unsigned char bytes[TG_ATTR_MAX];
} any_attrs;

static bool named(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(name, *list))
            return true;
    return false;
}

/* Attributes of the right struct for a registered op, with values a
 * builder would never pass (ndim 7, a reduction of 2, any bn flags). */
static void attrs_for(src *s, const char *name, const tg_tensor *x, any_attrs *a)
{
    static const char *const scalar[] = {"pow", "add_scalar", "mul_scalar", "div_scalar",
                                         "leaky_relu", NULL};
    static const char *const loss[] = {"mse", "bce", "bce_with_logits", NULL};
    static const char *const pool[] = {"max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
                                       NULL};
    memset(a, 0, sizeof *a);
    if (named(name, scalar)) {
        a->scalar.c = any_double(s);
    } else if (!strcmp(name, "sum") || !strcmp(name, "mean")) {
        a->reduce.axis = attr_int(s);
        a->reduce.all = coin(s, 50);
        a->reduce.keepdim = coin(s, 50);
    } else if (!strcmp(name, "reshape")) {
        any_reshape(s, x, &a->reshape);
    } else if (!strcmp(name, "permute")) {
        a->permute.ndim = attr_int(s);
        for (int i = 0; i < TG_MAX_DIMS; i++)
            a->permute.perm[i] = attr_int(s);
    } else if (!strcmp(name, "concat") || !strcmp(name, "softmax") ||
               !strcmp(name, "log_softmax")) {
        a->axis.axis = attr_int(s);
    } else if (!strcmp(name, "slice")) {
        a->slice.axis = attr_int(s);
        a->slice.start = attr_i64(s);
        a->slice.end = attr_i64(s);
        a->slice.step = attr_i64(s);
    } else if (!strcmp(name, "pad")) {
        a->pad.ndim = attr_int(s);
        for (int i = 0; i < TG_MAX_DIMS; i++)
            a->pad.pad[i][0] = attr_i64(s), a->pad.pad[i][1] = attr_i64(s);
    } else if (!strcmp(name, "conv1d") || !strcmp(name, "conv2d")) {
        any_conv(s, &a->conv);
    } else if (named(name, pool)) {
        any_pool(s, &a->pool);
    } else if (named(name, loss)) {
        a->loss.reduction = any_reduction(s);
    } else if (!strcmp(name, "cross_entropy") || !strcmp(name, "nll_loss")) {
        any_ce(s, &a->ce);
    } else if (!strcmp(name, "global_avg_pool")) {
        a->gap.keepdim = coin(s, 50);
    } else if (!strcmp(name, "dropout")) {
        a->dropout.p = any_double(s);
    } else if (!strcmp(name, "batch_norm")) {
        a->bn.momentum = any_double(s);
        a->bn.eps = any_double(s);
        a->bn.has = attr_int(s);
    }
}

static void apply_named(fz *f)
{
    src *s = &f->s;
    int count_ops = tg_op_count();
    const tg_op *op = tg_op_next(NULL);
    for (int i = count_ops > 0 ? (int)below(s, (unsigned)count_ops) : 0; op && i > 0; i--)
        op = tg_op_next(op);
    const char *name = op ? op->name : "add";
    if (coin(s, 3))
        name = coin(s, 50) ? NULL : "no_such_op";
    tg_tensor *in[TG_SAMPLE_MAX_IN];
    int n = (int)below(s, 6);
    for (int i = 0; i < n; i++)
        in[i] = pick(f);
    any_attrs a;
    attrs_for(s, name ? name : "", n ? in[0] : NULL, &a);
    if (coin(s, 3))
        n = -1 - (int)below(s, 3);
    begin(f);
    tg_tensor *const *ins = coin(s, 2) ? NULL : in;
    tg_tensor *y = tg_apply_named(f->ctx, name, ins, n, coin(s, 2) ? NULL : &a);
    y = result(f, name ? name : "tg_apply_named(NULL)", y);
    if (y)
        f->last = y;
}

/* ---------------------------------------------------------------- writes, modes, backward */

static void write_tensor(fz *f)
{
    src *s = &f->s;
    tg_tensor *t = pick(f);
    begin(f);
    switch (below(s, 4)) {
    case 0:
        status(f, "tg_assign", tg_assign(f->ctx, t, pick(f)));
        break;
    case 1: /* tg_set does not check its arguments: only a live tensor and index */
        for (int i = 0; i < f->n; i++)
            if (f->pool[i] == t && t->numel > 0) {
                int64_t at = (int64_t)(u8(s) % (uint64_t)t->numel);
                tg_set(t, at, any_double(s));
                break;
            }
        break;
    default:
        status(f, "tg_fill", tg_fill(f->ctx, t, any_double(s)));
        break;
    }
}

static void toggle_mode(fz *f)
{
    src *s = &f->s;
    switch (below(s, 3)) {
    case 0: tg_set_grad_enabled(f->ctx, !tg_grad_enabled(f->ctx)); break;
    case 1: tg_set_training(f->ctx, !tg_training(f->ctx)); break;
    default: tg_set_detect_anomaly(f->ctx, !tg_detect_anomaly(f->ctx)); break;
    }
}

static void check_grads(fz *f)
{
    for (int i = 0; i < f->n; i++) {
        const tg_tensor *t = f->pool[i];
        if (!t->grad)
            continue;
        if (!tg_same_shape(t, t->grad) || t->grad->dtype != t->dtype)
            die("backward left a gradient of another shape or dtype on %s", tg_dtype_name(t->dtype));
        check_tensor(f, "a gradient", t->grad);
    }
}

static void backward_once(fz *f, tg_tensor *loss)
{
    src *s = &f->s;
    tg_status st;
    begin(f);
    switch (below(s, 4)) {
    case 0:
        st = tg_backward_ex(f->ctx, loss, NULL, below(s, 4));
        break;
    case 1: {
        tg_tensor *gout = pick(f);
        st = tg_backward_ex(f->ctx, loss, gout, below(s, 4));
        break;
    }
    default:
        st = tg_backward(f->ctx, loss);
        break;
    }
    status(f, "tg_backward", st);
    if (st == TG_OK)
        check_grads(f);
}

static void backward(fz *f)
{
    src *s = &f->s;
    tg_tensor *loss = coin(s, 70) ? f->last : pick(f);
    if (loss && loss->ctx == f->ctx && loss->numel != 1 && coin(s, 90)) {
        begin(f);
        loss = result(f, "sum before backward", tg_sum(f->ctx, loss));
    }
    backward_once(f, loss);
    if (coin(s, 25))
        backward_once(f, loss);
    if (coin(s, 50))
        tg_zero_grad(f->ctx);
}

/* Ends the step. In checked mode the step's tensors stay pickable, as
 * stale ones the library must refuse; elsewhere they are forgotten. */
static void reset(fz *f)
{
    bool checked = tg_checked(f->ctx);
    int kept = 0;
    f->n_stale = 0;
    for (int i = 0; i < f->n; i++) {
        tg_tensor *t = f->pool[i];
        if (t->persistent)
            f->pool[kept++] = t;
        else if (checked)
            f->stale[f->n_stale++] = t;
    }
    f->n = kept;
    if (f->last && !f->last->persistent)
        f->last = NULL;
    tg_reset(f->ctx); /* after the last look at this step's tensors */
}

/* ---------------------------------------------------------------- setup and the run */

static tg_ctx *new_ctx(fz *f, unsigned cfg)
{
    tg_ctx_opts o = {0};
    o.alloc = hook;
    o.alloc_ud = &f->bud;
    o.seed = cfg * 0x9E3779B97F4A7C15ull;
    o.checked = cfg & 1;
    /* small chunks are cheaper to take per run than the 1 MiB default */
    if (cfg & 8)
        o.arena_chunk = (size_t)64 << below(&f->s, 8);
    else if (!(cfg & 32))
        o.arena_chunk = (size_t)32 << 10;
    tg_ctx *ctx = tg_ctx_new_opts(&o);
    if (ctx) {
        tg_set_detect_anomaly(ctx, cfg & 2);
        tg_set_training(ctx, !(cfg & 4));
    }
    return ctx;
}

static void make_foreign(fz *f)
{
    tg_tensor *a = tg_ones(f->other, TG_F32, TG_SHAPE(2, 3));
    tg_tensor *b = tg_param(f->other, TG_F64, TG_SHAPE(3), "foreign");
    if (a)
        f->foreign[f->n_foreign++] = a;
    if (b)
        f->foreign[f->n_foreign++] = b;
}

static void run(fz *f)
{
    src *s = &f->s;
    for (int k = 0; k < ACTIONS_MAX && !done(s); k++) {
        unsigned r = below(s, 32);
        if (r < 6)
            make_leaf(f);
        else if (r < 22)
            apply_op(f);
        else if (r < 24)
            apply_named(f);
        else if (r < 26)
            write_tensor(f);
        else if (r < 27)
            toggle_mode(f);
        else if (r < 30)
            backward(f);
        else
            reset(f);
    }
    if (f->last)
        backward(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f;
    memset(&f, 0, sizeof f);
    f.s = (src){data, size, 0};
    unsigned cfg = u8(&f.s);
    if (cfg & 16)
        f.bud.fail_at = 1 + u8(&f.s);
    f.ctx = new_ctx(&f, cfg);
    f.other = new_ctx(&f, cfg ^ 1);
    if (f.ctx && f.other) {
        make_foreign(&f);
        if (tg_errcode(f.ctx) == TG_OK)
            run(&f);
    }
    tg_ctx_free(f.other);
    tg_ctx_free(f.ctx);
    if (f.bud.live != 0)
        die("%zu bytes taken through the allocator hook were not given back", f.bud.live);
    return 0;
}
