/*
 * elementwise.c: add, sub, mul, div with broadcasting; neg, exp, log,
 * sqrt, pow and the scalar ops.
 *
 * The binary ops share one forward and one vjp, told apart by op->impl;
 * so do the unary ones. Kernels come from one source for float and double
 * (TG__DISPATCH with <tgmath.h>, so exp() is expf() on floats). The
 * gradient of a float32 operand that was broadcast is a sum over the
 * broadcast elements, accumulated in double.
 *
 * The vjps write a gradient's first contribution and add later ones
 * (TG_OP_VJP_WRITES). Input 0's gradient may be gout's own buffer
 * (TG_OP_VJP_INPLACE, never for a broadcast input 0): each element of gout
 * is read before the element of it is written, and a binary op's b
 * gradient, which reads gout too, is done first.
 */
#include "ops_impl.h"

#include <tgmath.h>

enum { ADD, SUB, MUL, DIV };
enum { NEG, EXP, LOG, SQRT, POW, ADD_S, MUL_S, DIV_S };
static const int kinds[] = {0, 1, 2, 3, 4, 5, 6, 7};

static int kind_of(const tg_node *node) { return *(const int *)node->op->impl; }

/* ---------------------------------------------------------------- binary */

typedef struct bin_args {
    int kind;
    tg_dtype dtype;
    void *o;              /* forward: out; vjp: gout */
    const void *a, *b;    /* the inputs */
    void *g[2];           /* vjp: gradient buffers of a and b, or NULL */
    double *acc[2];       /* vjp: double accumulators used instead of g[k], or NULL */
    bool add[2];          /* vjp: g[k] holds a gradient to add to (else written) */
} bin_args;

/* out[i] = a[i] op b[i] along one row (a and b may have stride 0) */
static void bin_forward_row(void *ud, int64_t n, const int64_t off[3], const int64_t inc[3])
{
    const bin_args *u = ud;
    int64_t sa = inc[1], sb = inc[2];
    TG__DISPATCH(u->dtype, T, {
        T *o = (T *)u->o + off[0];
        const T *a = (const T *)u->a + off[1], *b = (const T *)u->b + off[2];
        switch (u->kind) {
        case ADD: for (int64_t i = 0; i < n; i++) o[i] = a[i * sa] + b[i * sb]; break;
        case SUB: for (int64_t i = 0; i < n; i++) o[i] = a[i * sa] - b[i * sb]; break;
        case MUL: for (int64_t i = 0; i < n; i++) o[i] = a[i * sa] * b[i * sb]; break;
        default:  for (int64_t i = 0; i < n; i++) o[i] = a[i * sa] / b[i * sb]; break;
        }
    });
}

/* One parallel, vectorised loop over n elements (a pragma that can stand
 * inside the dispatch macro's argument). */
#define PAR_SIMD(...) TG__PAR_FOR_SIMD(n >= TG__PAR_GRAIN, __VA_ARGS__)

/* Operands of out's shape (no broadcast): one flat pass. */
static void same_shape_forward(int kind, tg_tensor *out, const tg_tensor *x, const tg_tensor *y)
{
    int64_t n = out->numel;
    TG__DISPATCH(out->dtype, T, {
        T *restrict o = out->data;
        const T *restrict a = x->data, *restrict b = y->data;
        switch (kind) {
        case ADD: PAR_SIMD(for (int64_t i = 0; i < n; i++) o[i] = a[i] + b[i];); break;
        case SUB: PAR_SIMD(for (int64_t i = 0; i < n; i++) o[i] = a[i] - b[i];); break;
        case MUL: PAR_SIMD(for (int64_t i = 0; i < n; i++) o[i] = a[i] * b[i];); break;
        default:  PAR_SIMD(for (int64_t i = 0; i < n; i++) o[i] = a[i] / b[i];); break;
        }
    });
}

/* d[i] = EXPR (add false) or d[i] += EXPR over n elements, parallel and
 * vectorised. d may be gout's own buffer when it is written (never when it
 * is added to): EXPR reads g[i] before the store. */
#define STORE(add, d, EXPR)                                                              \
    do {                                                                                 \
        if (add) {                                                                       \
            PAR_SIMD(for (int64_t i = 0; i < n; i++) d[i] += (EXPR););                   \
        } else {                                                                         \
            PAR_SIMD(for (int64_t i = 0; i < n; i++) d[i] = (EXPR););                    \
        }                                                                                \
    } while (0)

/* Operands of gout's shape: one flat pass per gradient, b's first, since
 * a's may be gout's buffer (TG_OP_VJP_INPLACE) and b's reads gout. */
static void same_shape_vjp(int kind, const tg_tensor *gout, const tg_tensor *x, const tg_tensor *y,
                           tg_tensor *const *gin, const bool *add)
{
    int64_t n = gout->numel;
    TG__DISPATCH(gout->dtype, T, {
        const T *g = gout->data; /* not restrict: it may be gin[0]'s */
        const T *restrict a = x->data, *restrict b = y->data;
        if (gin[1]) {
            T *d = gin[1]->data;
            switch (kind) {
            case ADD: STORE(add[1], d, g[i]); break;
            case SUB: STORE(add[1], d, -g[i]); break;
            case MUL: STORE(add[1], d, g[i] * a[i]); break;
            default: STORE(add[1], d, -g[i] * ((a[i] / b[i]) / b[i])); break;
            }
        }
        if (gin[0]) {
            T *d = gin[0]->data;
            switch (kind) {
            case ADD: case SUB: /* handed over, the gradient is in place already */
                if (d != g || add[0])
                    STORE(add[0], d, g[i]);
                break;
            case MUL: STORE(add[0], d, g[i] * b[i]); break;
            default: STORE(add[0], d, g[i] / b[i]); break;
            }
        }
    });
}

/* The gradient of operand k along one row, where s is its stride: written
 * or added element by element, or, when the operand was broadcast, summed
 * into its elements (the reduction the vjp of broadcasting needs; a stride
 * of 0 sums the whole row into one). Sums go to the double accumulator
 * when there is one. */
#define BIN_ROW(EXPR)                                                                    \
    do {                                                                                 \
        if (s == 0) {                                                                    \
            double t = 0;                                                                \
            _Pragma("omp simd reduction(+:t)")                                           \
            for (int64_t i = 0; i < n; i++) t += (double)(EXPR);                         \
            if (acc)                                                                     \
                acc[0] += t;                                                             \
            else                                                                         \
                dst[0] = add ? dst[0] + (T)t : (T)t;                                     \
        } else if (acc) {                                                                \
            for (int64_t i = 0; i < n; i++) acc[i * s] += (EXPR);                        \
        } else if (add) {                                                                \
            for (int64_t i = 0; i < n; i++) dst[i * s] += (EXPR);                        \
        } else {                                                                         \
            for (int64_t i = 0; i < n; i++) dst[i * s] = (EXPR);                         \
        }                                                                                \
    } while (0)

/* The formulas are PyTorch's: d/db of a / b is -g ((a / b) / b). */
static void bin_vjp_side(const bin_args *u, int k, int64_t n, const int64_t off[3],
                         const int64_t inc[3])
{
    int64_t sa = inc[1], sb = inc[2], s = inc[1 + k];
    bool add = u->add[k];
    TG__DISPATCH(u->dtype, T, {
        const T *g = (const T *)u->o + off[0];
        const T *a = (const T *)u->a + off[1], *b = (const T *)u->b + off[2];
        double *acc = u->acc[k] ? u->acc[k] + off[1 + k] : NULL;
        T *dst = acc ? NULL : (T *)u->g[k] + off[1 + k];
        switch (u->kind * 2 + k) {
        case ADD * 2: case ADD * 2 + 1: case SUB * 2: BIN_ROW(g[i]); break;
        case SUB * 2 + 1: BIN_ROW(-g[i]); break;
        case MUL * 2: BIN_ROW(g[i] * b[i * sb]); break;
        case MUL * 2 + 1: BIN_ROW(g[i] * a[i * sa]); break;
        case DIV * 2: BIN_ROW(g[i] / b[i * sb]); break;
        default: BIN_ROW(-g[i] * ((a[i * sa] / b[i * sb]) / b[i * sb])); break;
        }
    });
}

/* b's gradient first along the row: a's may be gout's buffer */
static void bin_vjp_row(void *ud, int64_t n, const int64_t off[3], const int64_t inc[3])
{
    const bin_args *u = ud;
    for (int k = 1; k >= 0; k--)
        if (u->g[k] || u->acc[k])
            bin_vjp_side(u, k, n, off, inc);
}

static tg_tensor *binary_forward(tg_ctx *ctx, tg_node *node)
{
    const char *who = node->op->name;
    tg_tensor *a = node->in[0], *b = node->in[1];
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    if (tg__same_dtype(ctx, who, a, b) || tg__bcast_shape(ctx, who, a, b, &ndim, shape))
        return NULL;
    tg_tensor *out = tg_empty(ctx, a->dtype, ndim, shape);
    if (!out)
        return NULL;
    int kind = kind_of(node);
    if (a->numel == out->numel && b->numel == out->numel) {
        same_shape_forward(kind, out, a, b);
    } else {
        tg__bcast it;
        tg__bcast_init(&it, out, a, b);
        bin_args u = {kind, a->dtype, out->data, a->data, b->data, {NULL}, {NULL}, {false}};
        tg__bcast_rows(&it, bin_forward_row, &u);
    }
    if (kind == ADD || kind == SUB) { /* the vjp reads no values */
        tg_node_value_unused(node, 0);
        tg_node_value_unused(node, 1);
    }
    tg_node_value_unused(node, -1);
    return out;
}

/*
 * Prepares the gradient of operand k for the rows. One of gout's size is
 * written or added element by element. One that was broadcast is a sum
 * over several elements of gout: in float32 the sum runs in a zeroed
 * double buffer, written or added to the gradient at the end
 * (finish_reduced); in float64 it runs in the gradient itself, zeroed
 * first unless it holds an earlier contribution.
 */
static tg_status side_setup(tg_ctx *ctx, bin_args *u, int k, const tg_tensor *x, tg_tensor *grad,
                            const tg_tensor *gout, bool add)
{
    u->g[k] = NULL;
    u->acc[k] = NULL;
    u->add[k] = add;
    if (!grad)
        return TG_OK;
    if (x->numel == gout->numel || x->numel == 0) {
        u->g[k] = grad->data;
    } else if (x->dtype == TG_F32) {
        u->acc[k] = tg_scratch(ctx, (size_t)x->numel * sizeof(double), true);
        if (!u->acc[k])
            return tg_errcode(ctx);
    } else {
        if (!add)
            memset(grad->data, 0, (size_t)x->numel * sizeof(double));
        u->g[k] = grad->data;
        u->add[k] = true;
    }
    return TG_OK;
}

static void finish_reduced(tg_tensor *grad, const double *acc, bool add)
{
    float *g = grad->data;
    int64_t n = grad->numel;
    if (add)
        PAR_SIMD(for (int64_t i = 0; i < n; i++) g[i] += (float)acc[i];);
    else
        PAR_SIMD(for (int64_t i = 0; i < n; i++) g[i] = (float)acc[i];);
}

static tg_status binary_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                            tg_tensor *const *gin)
{
    tg_tensor *a = node->in[0], *b = node->in[1];
    int kind = kind_of(node);
    bool add[2] = {tg_vjp_adds(node, 0), tg_vjp_adds(node, 1)};
    if (a->numel == gout->numel && b->numel == gout->numel) {
        same_shape_vjp(kind, gout, a, b, gin, add);
        return TG_OK;
    }
    bin_args u = {kind, a->dtype, gout->data, a->data, b->data, {NULL}, {NULL}, {false}};
    for (int k = 0; k < 2; k++)
        if (side_setup(ctx, &u, k, node->in[k], gin[k], gout, add[k]))
            return tg_errcode(ctx);
    tg__bcast it;
    tg__bcast_init(&it, gout, a, b);
    tg__bcast_rows(&it, bin_vjp_row, &u);
    for (int k = 0; k < 2; k++)
        if (u.acc[k])
            finish_reduced(gin[k], u.acc[k], add[k]);
    return TG_OK;
}

/* Cases: equal shapes, a row vector, a column against a row, a scalar,
 * size-1 dimensions on both sides. Divisors stay away from zero. */
static int binary_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const struct { int na, nb; int64_t a[3], b[3]; const char *desc; } cases[] = {
        {2, 2, {3, 4}, {3, 4}, "same shape"},
        {2, 1, {3, 4}, {4}, "broadcast row"},
        {2, 2, {3, 1}, {1, 4}, "column x row"},
        {2, 0, {2, 3}, {0}, "scalar b"},
        {3, 3, {1, 5, 1}, {2, 1, 3}, "size-1 dims"},
    };
    if (index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    double lo = 0.5, hi = 2.0; /* positive, for div */
    s->n_in = 2;
    s->in[0] = tg__sample_rand(ctx, cases[index].na, cases[index].a, -hi, hi, true);
    s->in[1] = tg__sample_rand(ctx, cases[index].nb, cases[index].b, lo, hi, true);
    snprintf(s->desc, sizeof s->desc, "%s", cases[index].desc);
    return s->in[0] && s->in[1] ? 1 : tg_errcode(ctx);
}

static const char *const binary_names[] = {"a", "b", NULL}; /* graph edge labels */

#define BINARY_OP(NAME, KIND)                                                            \
    const tg_op tg__op_##NAME = {                                                        \
        .name = #NAME, .min_in = 2, .max_in = 2, .forward = binary_forward,              \
        .vjp = binary_vjp, .sample = binary_sample, .impl = &kinds[KIND],                \
        .flags = TG_OP_VJP_WRITES | TG_OP_VJP_INPLACE, .input_names = binary_names};     \
    tg_tensor *tg_##NAME(tg_ctx *ctx, tg_tensor *a, tg_tensor *b)                        \
    {                                                                                    \
        tg_tensor *in[2] = {a, b};                                                       \
        return tg_apply(ctx, &tg__op_##NAME, in, 2, NULL);                               \
    }

BINARY_OP(add, ADD)
BINARY_OP(sub, SUB)
BINARY_OP(mul, MUL)
BINARY_OP(div, DIV)

/* ---------------------------------------------------------------- unary */

static double scalar_of(const tg_node *node)
{
    return node->op->attr_size ? ((const tg_scalar_attrs *)node->attrs)->c : 0.0;
}

/* The vjp of exp and sqrt reads the output, of log and pow the input, and
 * of the others neither. */
static void mark_unread(tg_node *node, int kind)
{
    if (kind != LOG && kind != POW)
        tg_node_value_unused(node, 0);
    if (kind != EXP && kind != SQRT)
        tg_node_value_unused(node, -1);
}

static tg_tensor *unary_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *x = node->in[0];
    tg_tensor *out = tg_empty(ctx, x->dtype, x->ndim, x->shape);
    if (!out)
        return NULL;
    int kind = kind_of(node);
    double c = scalar_of(node);
    TG__DISPATCH(x->dtype, T, {
        const T *restrict xs = x->data;
        T *restrict o = out->data;
        T tc = (T)c;
        int64_t n = x->numel;
        switch (kind) {
        case NEG: PAR_SIMD(for (int64_t i = 0; i < n; i++) o[i] = -xs[i];); break;
        case EXP: PAR_SIMD(for (int64_t i = 0; i < n; i++) o[i] = exp(xs[i]);); break;
        case LOG: PAR_SIMD(for (int64_t i = 0; i < n; i++) o[i] = log(xs[i]);); break;
        case SQRT: PAR_SIMD(for (int64_t i = 0; i < n; i++) o[i] = sqrt(xs[i]);); break;
        case POW: PAR_SIMD(for (int64_t i = 0; i < n; i++) o[i] = pow(xs[i], tc);); break;
        case ADD_S: PAR_SIMD(for (int64_t i = 0; i < n; i++) o[i] = xs[i] + tc;); break;
        case MUL_S: PAR_SIMD(for (int64_t i = 0; i < n; i++) o[i] = xs[i] * tc;); break;
        default: PAR_SIMD(for (int64_t i = 0; i < n; i++) o[i] = xs[i] / tc;); break;
        }
    });
    mark_unread(node, kind);
    return out;
}

/* dx (+)= g * f'(x), with f' from the saved output where that is cheaper:
 * exp' = exp(x) = y, sqrt' = 1 / (2 y), pow' = p x^(p-1). As PyTorch, pow'
 * is g * (p x^(p-1)) with the bracket set to 0 when p = 0 (so at x = 0:
 * p = 0 gives 0, 0 < p < 1 gives inf, p = 1 gives 1, p = 2 gives 0), and a
 * NaN or Inf in g still propagates. Element by element, so dx may be g's
 * own buffer (TG_OP_VJP_INPLACE). */
static tg_status unary_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                           tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *x = node->in[0], *y = node->out;
    int kind = kind_of(node);
    double c = scalar_of(node);
    bool add = tg_vjp_adds(node, 0);
    TG__DISPATCH(x->dtype, T, {
        /* g and gx may be one buffer: not restrict */
        const T *restrict xs = x->data, *restrict ys = y->data, *g = gout->data;
        T *gx = gin[0]->data;
        T tc = (T)c;
        int64_t n = x->numel;
        switch (kind) {
        case NEG: STORE(add, gx, -g[i]); break;
        case EXP: STORE(add, gx, g[i] * ys[i]); break;
        case LOG: STORE(add, gx, g[i] / xs[i]); break;
        case SQRT: STORE(add, gx, g[i] / (2 * ys[i])); break;
        case POW: STORE(add, gx, g[i] * (c == 0 ? 0 : tc * pow(xs[i], tc - 1))); break;
        case ADD_S: /* handed over, the gradient is in place already */
            if (gx != g || add)
                STORE(add, gx, g[i]);
            break;
        case MUL_S: STORE(add, gx, g[i] * tc); break;
        default: STORE(add, gx, g[i] / tc); break;
        }
    });
    return TG_OK;
}

static int scalar_print(const tg_node *node, char *buf, size_t size)
{
    return snprintf(buf, size, "%s=%s", kind_of(node) == POW ? "p" : "c", tg__num(scalar_of(node)));
}

/* Inputs stay in [0.5, 2] where log, sqrt and any power are smooth; the
 * scalars cover negative, fractional and integer values. */
static int unary_sample(tg_ctx *ctx, int index, tg_sample *s, bool has_scalar)
{
    static const int64_t shapes[][3] = {{3, 4, 0}, {1, 5, 0}, {2, 1, 3}};
    static const int ndims[] = {2, 2, 3};
    static const double scalars[] = {-1.0, 2.5, 3.0};
    if (index >= 3)
        return 0;
    s->n_in = 1;
    s->in[0] = tg__sample_rand(ctx, ndims[index], shapes[index], 0.5, 2.0, true);
    if (has_scalar) {
        tg_scalar_attrs a = {scalars[index]};
        memcpy(s->attrs, &a, sizeof a);
    }
    snprintf(s->desc, sizeof s->desc, "%s", index == 2 ? "size-1 dim" : "matrix");
    return s->in[0] ? 1 : tg_errcode(ctx);
}

static int plain_sample(tg_ctx *ctx, int index, tg_sample *s) { return unary_sample(ctx, index, s, false); }
static int scalar_sample(tg_ctx *ctx, int index, tg_sample *s) { return unary_sample(ctx, index, s, true); }

#define UNARY_OP(NAME, KIND)                                                             \
    const tg_op tg__op_##NAME = {                                                        \
        .name = #NAME, .min_in = 1, .max_in = 1, .forward = unary_forward,               \
        .vjp = unary_vjp, .sample = plain_sample, .impl = &kinds[KIND],                  \
        .flags = TG_OP_VJP_WRITES | TG_OP_VJP_INPLACE};                                  \
    tg_tensor *tg_##NAME(tg_ctx *ctx, tg_tensor *x)                                      \
    {                                                                                    \
        return tg_apply(ctx, &tg__op_##NAME, &x, 1, NULL);                               \
    }

#define SCALAR_OP(NAME, KIND)                                                            \
    const tg_op tg__op_##NAME = {                                                        \
        .name = #NAME, .min_in = 1, .max_in = 1, .attr_size = sizeof(tg_scalar_attrs),   \
        .forward = unary_forward, .vjp = unary_vjp, .print_attrs = scalar_print,         \
        .sample = scalar_sample, .impl = &kinds[KIND],                                   \
        .flags = TG_OP_VJP_WRITES | TG_OP_VJP_INPLACE};                                  \
    tg_tensor *tg_##NAME(tg_ctx *ctx, tg_tensor *x, double c)                            \
    {                                                                                    \
        tg_scalar_attrs a = {c};                                                         \
        return tg_apply(ctx, &tg__op_##NAME, &x, 1, &a);                                 \
    }

UNARY_OP(neg, NEG)
UNARY_OP(exp, EXP)
UNARY_OP(log, LOG)
UNARY_OP(sqrt, SQRT)
SCALAR_OP(pow, POW)
SCALAR_OP(add_scalar, ADD_S)
SCALAR_OP(mul_scalar, MUL_S)
SCALAR_OP(div_scalar, DIV_S)

tg_tensor *tg_sub_scalar(tg_ctx *ctx, tg_tensor *x, double c) { return tg_add_scalar(ctx, x, -c); }
