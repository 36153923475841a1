/*
 * matmul.c: matrix products through CBLAS (sgemm / dgemm).
 *
 *   matmul: C (..., n, m) = A (..., n, k) B (..., k, m), batch dims broadcast
 *           dA (+)= G B^T,  dB (+)= A^T G   (summed over broadcast batches)
 *   linear: y (M, out) = x (M, in) W^T + b, W (out, in), b (out)
 *           dx (+)= G W,  dW (+)= G^T x,  db (+)= sum over rows of G (in double)
 * Forward writes the bias into y and lets gemm add the product. Backward
 * calls gemm with beta = 0 for a gradient's first contribution and beta = 1
 * for later ones (TG_OP_VJP_WRITES); an operand of matmul broadcast over
 * batches gets beta = 0 from its first batch only. An inner size of 0
 * gives zeros (an empty sum), and no size-0 matrix ever reaches BLAS, which
 * rejects a leading dimension below 1. Products of a few hundred
 * multiply-adds run in a plain loop; with oneDNN built in, float32
 * products whose B is not transposed (the backward ones of a linear layer)
 * go to oneDNN's sgemm where it measured faster (dnnl_wins).
 */
#include "ops_impl.h"

#include <cblas.h>
#include <limits.h>
#ifdef TG_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

/* Products this small cost BLAS more in its dispatch (buffers, packing,
 * the driver for each transpose) than in arithmetic (B2's layers are
 * 1 x 2 x 2): a plain loop, summing in double. It is scalar, so larger
 * ones (B1's last layer, 64 x 1 x 32) go to BLAS. */
enum { SMALL_GEMM = 256 };

#define SMALL_GEMM_FN(SUF, T)                                                                  \
    static void small_gemm_##SUF(bool ta, bool tb, int64_t m, int64_t n, int64_t k,            \
                                 const T *a, int64_t lda, const T *b, int64_t ldb, bool acc,   \
                                 T *c, int64_t ldc)                                            \
    {                                                                                          \
        const int64_t as = ta ? 1 : lda, ap = ta ? lda : 1; /* a(i, p) = a[i as + p ap] */     \
        const int64_t bp = tb ? 1 : ldb, bs = tb ? ldb : 1; /* b(p, j) = b[p bp + j bs] */     \
        for (int64_t i = 0; i < m; i++)                                                        \
            for (int64_t j = 0; j < n; j++) {                                                  \
                double s = 0;                                                                  \
                for (int64_t p = 0; p < k; p++)                                                \
                    s += (double)a[i * as + p * ap] * (double)b[p * bp + j * bs];              \
                T *o = c + i * ldc + j;                                                        \
                *o = acc ? (T)(*o + (T)s) : (T)s;                                              \
            }                                                                                  \
    }
SMALL_GEMM_FN(f32, float)
SMALL_GEMM_FN(f64, double)
#define small_gemm(T) _Generic((T)0, float: small_gemm_f32, double: small_gemm_f64)

#ifdef TG_HAVE_DNNL
/*
 * Whether oneDNN's sgemm beats OpenBLAS's on a product of mnk multiply-adds
 * (measured on the benchmark's shapes, 2-vCPU Zen 4, OpenBLAS 0.3.21,
 * oneDNN 2.6): with B not transposed it is 10-35% faster from about 2^18
 * on two threads (OpenBLAS's second thread makes B1's backward products
 * slower, oneDNN's makes them a third faster) and from about 2^21 on one;
 * with B transposed (forward) it is not, and under 2^18 its fixed cost of
 * about 4 us dominates. From 2^22 on (B5's 3136 x 128 layer) it still
 * wins by a few percent of the product but allocates packing buffers of
 * several MiB, which weigh more in a step's memory than the time they save
 * (under 1% of B5's step). Inside a parallel region OpenBLAS runs on the
 * calling thread, as everything there does.
 */
static bool dnnl_wins(bool tb, int64_t mnk)
{
    if (tb || mnk < (1 << 18) || mnk >= (1 << 22))
        return false;
#ifdef _OPENMP
    if (omp_in_parallel())
        return false;
    return omp_get_max_threads() > 1 || mnk >= (1 << 21);
#else
    return mnk >= (1 << 21);
#endif
}
#endif

void tg__gemm(tg_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
                 int64_t lda, const void *b, int64_t ldb, bool accumulate, void *c, int64_t ldc)
{
    enum CBLAS_TRANSPOSE xa = ta ? CblasTrans : CblasNoTrans, xb = tb ? CblasTrans : CblasNoTrans;
    if (m == 0 || n == 0)
        return;
    if (k == 0) { /* an empty sum: C = 0 (or unchanged) */
        if (!accumulate)
            for (int64_t i = 0; i < m; i++)
                memset((char *)c + (size_t)(i * ldc) * tg_dtype_size(dt), 0,
                       (size_t)n * tg_dtype_size(dt));
        return;
    }
    if (m * n * k <= SMALL_GEMM) {
        TG__DISPATCH(dt, T, small_gemm(T)(ta, tb, m, n, k, a, lda, b, ldb, accumulate, c, ldc););
        return;
    }
#ifdef TG_HAVE_DNNL
    if (dt == TG_F32 && dnnl_wins(tb, m * n * k) &&
        dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, a, lda, b, ldb,
                   accumulate ? 1.0f : 0.0f, c, ldc) == dnnl_success)
        return;
#endif
    if (dt == TG_F32)
        cblas_sgemm(CblasRowMajor, xa, xb, (int)m, (int)n, (int)k, 1.0f, a, (int)lda, b, (int)ldb,
                    accumulate ? 1.0f : 0.0f, c, (int)ldc);
    else
        cblas_dgemm(CblasRowMajor, xa, xb, (int)m, (int)n, (int)k, 1.0, a, (int)lda, b, (int)ldb,
                    accumulate ? 1.0 : 0.0, c, (int)ldc);
}

static tg_status check_blas_dims(tg_ctx *ctx, const char *who, const tg_tensor *t)
{
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] > INT_MAX)
            return TG_ERROR(ctx, TG_ESHAPE, "%s: dimension %d of %s exceeds the BLAS limit %d", who,
                            i, tg__shape_s(t), INT_MAX);
    if (t->numel / (t->ndim ? t->shape[t->ndim - 1] ? t->shape[t->ndim - 1] : 1 : 1) > INT_MAX)
        return TG_ERROR(ctx, TG_ESHAPE, "%s: %s has more rows than BLAS takes", who,
                        tg__shape_s(t));
    return TG_OK;
}

/* ---------------------------------------------------------------- matmul */

/* A tensor header standing for the batch dimensions of t (no data). */
static tg_tensor batch_view(const tg_tensor *t)
{
    tg_tensor v;
    memset(&v, 0, sizeof v);
    v.dtype = t->dtype;
    v.ndim = t->ndim - 2;
    v.numel = 1;
    for (int i = 0; i < TG_MAX_DIMS; i++)
        v.shape[i] = i < v.ndim ? t->shape[i] : 1;
    for (int i = 0; i < v.ndim; i++)
        v.numel *= v.shape[i];
    return v;
}

typedef struct mm_args {
    tg_dtype dt;
    int64_t n, k, m;
    const void *a, *b;
    void *c;        /* forward: C; vjp: G */
    void *ga, *gb;  /* vjp only */
    bool vjp;
    bool add[2];    /* vjp: dA, dB hold gradients to add to (else written) */
    /* vjp, for an operand broadcast over batches: which of its matrices
     * hold a contribution yet (NULL: each matrix is reached once) */
    unsigned char *seen[2];
} mm_args;

/* Whether the vjp adds to matrix i of operand k: always when the gradient
 * held one before, else from the second batch that reaches it on. */
static bool mm_adds(const mm_args *u, int k, int64_t i)
{
    if (u->add[k] || !u->seen[k])
        return u->add[k];
    bool was = u->seen[k][i];
    u->seen[k][i] = 1;
    return was;
}

/* one row of batches: offsets are in matrices, turned into elements here */
static void mm_row(void *ud, int64_t cnt, const int64_t off[3], const int64_t inc[3])
{
    const mm_args *u = ud;
    size_t es = tg_dtype_size(u->dt);
    int64_t sc = u->n * u->m, sa = u->n * u->k, sb = u->k * u->m;
    for (int64_t i = 0; i < cnt; i++) {
        const char *a = (const char *)u->a + (size_t)((off[1] + i * inc[1]) * sa) * es;
        const char *b = (const char *)u->b + (size_t)((off[2] + i * inc[2]) * sb) * es;
        char *c = (char *)u->c + (size_t)((off[0] + i * inc[0]) * sc) * es;
        if (!u->vjp) {
            tg__gemm(u->dt, false, false, u->n, u->m, u->k, a, u->k, b, u->m, false, c, u->m);
            continue;
        }
        int64_t ia = off[1] + i * inc[1], ib = off[2] + i * inc[2];
        if (u->ga)
            tg__gemm(u->dt, false, true, u->n, u->k, u->m, c, u->m, b, u->m, mm_adds(u, 0, ia),
                     (char *)u->ga + (size_t)(ia * sa) * es, u->k);
        if (u->gb)
            tg__gemm(u->dt, true, false, u->k, u->m, u->n, a, u->k, c, u->m, mm_adds(u, 1, ib),
                     (char *)u->gb + (size_t)(ib * sb) * es, u->m);
    }
}

static void mm_run(mm_args *u, const tg_tensor *c, const tg_tensor *a, const tg_tensor *b)
{
    tg_tensor vc = batch_view(c), va = batch_view(a), vb = batch_view(b);
    tg__bcast it;
    tg__bcast_init(&it, &vc, &va, &vb);
    tg__bcast_rows(&it, mm_row, u);
}

static tg_tensor *matmul_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *a = node->in[0], *b = node->in[1];
    if (tg__same_dtype(ctx, "matmul", a, b))
        return NULL;
    if (a->ndim < 2 || b->ndim < 2) {
        TG_ERROR(ctx, TG_ESHAPE, "matmul: operands need at least 2 dimensions, got %s and %s",
                 tg__shape_s(a), tg__shape_s(b));
        return NULL;
    }
    int64_t n = a->shape[a->ndim - 2], k = a->shape[a->ndim - 1];
    int64_t k2 = b->shape[b->ndim - 2], m = b->shape[b->ndim - 1];
    if (k != k2) {
        TG_ERROR(ctx, TG_ESHAPE, "matmul: %s times %s: inner dimensions %lld and %lld differ",
                 tg__shape_s(a), tg__shape_s(b), (long long)k, (long long)k2);
        return NULL;
    }
    if (check_blas_dims(ctx, "matmul", a) || check_blas_dims(ctx, "matmul", b))
        return NULL;
    tg_tensor va = batch_view(a), vb = batch_view(b);
    int nb;
    int64_t shape[TG_MAX_DIMS];
    if (tg__bcast_shape(ctx, "matmul (batch dimensions)", &va, &vb, &nb, shape))
        return NULL;
    if (nb + 2 > TG_MAX_DIMS) {
        TG_ERROR(ctx, TG_ESHAPE, "matmul: the result would have %d dimensions", nb + 2);
        return NULL;
    }
    shape[nb] = n;
    shape[nb + 1] = m;
    tg_tensor *c = tg_empty(ctx, a->dtype, nb + 2, shape);
    if (!c)
        return NULL;
    mm_args u = {a->dtype, n, k, m, a->data, b->data, c->data, NULL, NULL, false, {false},
                 {NULL}};
    mm_run(&u, c, a, b);
    tg_node_value_unused(node, -1); /* the vjp reads both inputs, not the product */
    return c;
}

/* The matrices of operand k's fresh gradient that no batch reached (all of
 * them when the product has no batches) are zeros. */
static void zero_unseen(const mm_args *u, int k, const tg_tensor *grad, int64_t count)
{
    size_t bytes = (size_t)(grad->numel / count) * tg_dtype_size(grad->dtype);
    for (int64_t i = 0; i < count; i++)
        if (!u->seen[k][i])
            memset((char *)grad->data + (size_t)i * bytes, 0, bytes);
}

static tg_status matmul_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                            tg_tensor *const *gin)
{
    tg_tensor *a = node->in[0], *b = node->in[1];
    mm_args u = {a->dtype, a->shape[a->ndim - 2], a->shape[a->ndim - 1], b->shape[b->ndim - 1],
                 a->data, b->data, gout->data, gin[0] ? gin[0]->data : NULL,
                 gin[1] ? gin[1]->data : NULL, true, {tg_vjp_adds(node, 0), tg_vjp_adds(node, 1)},
                 {NULL}};
    int64_t batches = batch_view(gout).numel, count[2];
    for (int k = 0; k < 2; k++) {
        count[k] = batch_view(node->in[k]).numel;
        if (gin[k] && !u.add[k] && count[k] != batches && gin[k]->numel > 0) {
            u.seen[k] = tg_scratch(ctx, (size_t)count[k], true);
            if (!u.seen[k])
                return tg_errcode(ctx);
        }
    }
    mm_run(&u, gout, a, b);
    for (int k = 0; k < 2; k++)
        if (u.seen[k])
            zero_unseen(&u, k, gin[k], count[k]);
    return TG_OK;
}

static int matmul_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const struct { int na, nb; int64_t a[3], b[3]; const char *desc; } cases[] = {
        {2, 2, {3, 4}, {4, 2}, "2-D"},
        {3, 3, {2, 3, 4}, {2, 4, 5}, "batched"},
        {3, 2, {2, 3, 4}, {4, 2}, "broadcast batch"},
        {2, 3, {1, 1}, {3, 1, 2}, "size-1"},
    };
    if (index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    s->n_in = 2;
    s->in[0] = tg__sample_rand(ctx, cases[index].na, cases[index].a, -1, 1, true);
    s->in[1] = tg__sample_rand(ctx, cases[index].nb, cases[index].b, -1, 1, true);
    snprintf(s->desc, sizeof s->desc, "%s", cases[index].desc);
    return s->in[1] ? 1 : tg_errcode(ctx);
}

static const char *const matmul_names[] = {"a", "b", NULL}; /* graph edge labels */

const tg_op tg__op_matmul = {.name = "matmul", .min_in = 2, .max_in = 2,
                             .forward = matmul_forward, .vjp = matmul_vjp,
                             .sample = matmul_sample, .flags = TG_OP_VJP_WRITES,
                             .input_names = matmul_names};

tg_tensor *tg_matmul(tg_ctx *ctx, tg_tensor *a, tg_tensor *b)
{
    tg_tensor *in[2] = {a, b};
    return tg_apply(ctx, &tg__op_matmul, in, 2, NULL);
}

/* ---------------------------------------------------------------- linear */

static tg_tensor *linear_forward(tg_ctx *ctx, tg_node *node)
{
    tg_tensor *x = node->in[0], *w = node->in[1], *b = node->n_in > 2 ? node->in[2] : NULL;
    if (tg__same_dtype(ctx, "linear", x, w) || (b && tg__same_dtype(ctx, "linear", x, b)))
        return NULL;
    if (w->ndim != 2 || x->ndim < 1) {
        TG_ERROR(ctx, TG_ESHAPE, "linear: weight must be (out, in) and x (..., in); got x %s, "
                 "weight %s", tg__shape_s(x), tg__shape_s(w));
        return NULL;
    }
    int64_t in = w->shape[1], out_f = w->shape[0];
    if (x->shape[x->ndim - 1] != in) {
        TG_ERROR(ctx, TG_ESHAPE, "linear: x %s has %lld features but weight %s expects %lld",
                 tg__shape_s(x), (long long)x->shape[x->ndim - 1], tg__shape_s(w), (long long)in);
        return NULL;
    }
    if (b && (b->ndim != 1 || b->shape[0] != out_f)) {
        TG_ERROR(ctx, TG_ESHAPE, "linear: bias %s should be (%lld)", tg__shape_s(b),
                 (long long)out_f);
        return NULL;
    }
    if (check_blas_dims(ctx, "linear", x) || check_blas_dims(ctx, "linear", w))
        return NULL;
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out_f;
    tg_tensor *y = tg_empty(ctx, x->dtype, x->ndim, shape);
    if (!y)
        return NULL;
    int64_t rows = in ? x->numel / in : y->numel / (out_f ? out_f : 1);
    if (b) { /* y starts as the bias in every row; the product adds to it (beta = 1) */
        size_t row = (size_t)out_f * tg_dtype_size(x->dtype);
        for (int64_t r = 0; r < rows; r++)
            memcpy((char *)y->data + (size_t)r * row, b->data, row);
    }
    tg__gemm(x->dtype, false, true, rows, out_f, in, x->data, in, w->data, in, b != NULL,
             y->data, out_f);
    if (b)
        tg_node_value_unused(node, 2); /* db is the column sums of the gradient */
    tg_node_value_unused(node, -1);
    return y;
}

/* Features per block of the bias gradient: a block's double sums stay in
 * registers and cache while the rows stream past. */
#define BIAS_BLOCK 64

/* db (+)= the column sums of G (rows x out_f), in double: each block of
 * features is summed over the rows in order by one thread, so the result
 * does not depend on the thread count. */
static void bias_grad(const tg_tensor *gout, int64_t rows, int64_t out_f, tg_tensor *gb, bool add)
{
    int64_t blocks = (out_f + BIAS_BLOCK - 1) / BIAS_BLOCK;
    TG__DISPATCH(gout->dtype, T, {
        const T *restrict g = gout->data;
        T *restrict d = gb->data;
        TG__PAR_FOR(rows * out_f >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
        for (int64_t blk = 0; blk < blocks; blk++) {
            int64_t j0 = blk * BIAS_BLOCK, nj = out_f - j0 < BIAS_BLOCK ? out_f - j0 : BIAS_BLOCK;
            double acc[BIAS_BLOCK] = {0};
            for (int64_t r = 0; r < rows; r++) {
                const T *gr = g + r * out_f + j0;
                _Pragma("omp simd")
                for (int64_t j = 0; j < nj; j++)
                    acc[j] += (double)gr[j];
            }
            for (int64_t j = 0; j < nj; j++)
                d[j0 + j] = add ? (T)((double)d[j0 + j] + acc[j]) : (T)acc[j];
        });
    });
}

static tg_status linear_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                            tg_tensor *const *gin)
{
    (void)ctx;
    tg_tensor *x = node->in[0], *w = node->in[1];
    int64_t in = w->shape[1], out_f = w->shape[0];
    int64_t rows = gout->numel / (out_f ? out_f : 1);
    if (gin[0])
        tg__gemm(x->dtype, false, false, rows, in, out_f, gout->data, out_f, w->data, in,
                 tg_vjp_adds(node, 0), gin[0]->data, in);
    if (gin[1])
        tg__gemm(x->dtype, true, false, out_f, in, rows, gout->data, out_f, x->data, in,
                 tg_vjp_adds(node, 1), gin[1]->data, in);
    if (node->n_in > 2 && gin[2])
        bias_grad(gout, rows, out_f, gin[2], tg_vjp_adds(node, 2));
    return TG_OK;
}

static int linear_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const struct { int nx; int64_t x[3]; bool bias; const char *desc; } cases[] = {
        {2, {4, 3}, true, "batch with bias"},
        {2, {4, 3}, false, "no bias"},
        {3, {2, 2, 3}, true, "3-D input"},
        {1, {3}, true, "one sample, 1-D"},
    };
    if (index >= (int)(sizeof cases / sizeof cases[0]))
        return 0;
    s->in[0] = tg__sample_rand(ctx, cases[index].nx, cases[index].x, -1, 1, true);
    s->in[1] = tg__sample_rand(ctx, TG_SHAPE(2, 3), -1, 1, true);
    s->n_in = 2;
    if (cases[index].bias)
        s->in[s->n_in++] = tg__sample_rand(ctx, TG_SHAPE(2), -1, 1, true);
    snprintf(s->desc, sizeof s->desc, "%s", cases[index].desc);
    return s->in[s->n_in - 1] ? 1 : tg_errcode(ctx);
}

static const char *const linear_names[] = {"x", "weight", "bias", NULL};

const tg_op tg__op_linear = {.name = "linear", .min_in = 2, .max_in = 3,
                             .forward = linear_forward, .vjp = linear_vjp,
                             .sample = linear_sample, .flags = TG_OP_VJP_WRITES,
                             .input_names = linear_names};

tg_tensor *tg_linear(tg_ctx *ctx, tg_tensor *x, tg_tensor *w, tg_tensor *b)
{
    tg_tensor *in[3] = {x, w, b};
    return tg_apply(ctx, &tg__op_linear, in, b ? 3 : 2, NULL);
}
