/*
 * dropout.c: inverted dropout.
 *
 * Training: m_i = (u_i >= p) / (1 - p), y = x * m; dx += g * m. The u_i
 * are 32-bit integers compared with p 2^32: u_i is a hash of (key, i), the
 * key two draws from the context RNG. Element i's bit depends on nothing
 * else, so one pass computes the output in parallel and vectorised, a seed
 * gives the same mask at any thread count, and forward saves only the key
 * (8 bytes, not a tensor of n): the vjp hashes the same bits again, element
 * by element, so dx may reuse the buffer of g (TG_OP_VJP_INPLACE).
 * p = 1 drops everything (m = 0). Eval: y = x, dx += g.
 * p outside [0, 1], NaN included, is TG_EINVAL (as PyTorch). The vjp reads
 * only the key and p, never x or y, so both may be written after forward.
 */
#include "ops_impl.h"

#include <math.h>

/* One parallel, vectorised loop over n elements (a pragma that can stand
 * inside the dispatch macro's argument). */
#define PAR_SIMD(...) TG__PAR_FOR_SIMD(n >= TG__PAR_GRAIN, __VA_ARGS__)

/* A bijection of 32-bit integers whose every output bit depends on every
 * input bit (two multiply-xorshift rounds). */
static inline uint32_t mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x7feb352dU;
    h ^= h >> 15;
    h *= 0x846ca68bU;
    h ^= h >> 16;
    return h;
}

/* The 32 random bits of element i: two keyed rounds, the second taking the
 * index's high half so that tensors beyond 2^32 elements do not repeat. */
static inline uint32_t bits_of(uint64_t key, int64_t i)
{
    uint32_t lo = (uint32_t)i, hi = (uint32_t)((uint64_t)i >> 32);
    return mix32(mix32(lo + (uint32_t)key) ^ (hi + (uint32_t)(key >> 32)));
}

/* 64 bits from the context RNG (two 53-bit uniform draws). */
static uint64_t draw_key(tg_ctx *ctx)
{
    uint64_t a = (uint64_t)(tg_rand_uniform(ctx) * 0x1.0p53);
    uint64_t b = (uint64_t)(tg_rand_uniform(ctx) * 0x1.0p53);
    return a << 11 ^ b;
}

/* What p makes of the mask: element i is kept, scaled by *keep, when its
 * bits are >= *thr (ceil(p 2^32)); p = 1 keeps nothing through keep = 0. */
static void mask_params(double p, uint32_t *thr, double *keep)
{
    double thr_d = ceil(p * 0x1.0p32);
    *thr = thr_d >= 0x1.0p32 ? UINT32_MAX : (uint32_t)thr_d;
    *keep = p < 1 ? 1.0 / (1.0 - p) : 0.0;
}

static tg_tensor *dropout_forward(tg_ctx *ctx, tg_node *node)
{
    double p = ((const tg_dropout_attrs *)node->attrs)->p, keep;
    tg_tensor *x = node->in[0];
    if (!(p >= 0 && p <= 1)) {
        TG_ERROR(ctx, TG_EINVAL, "dropout: p = %s is outside [0, 1]", tg__num(p));
        return NULL;
    }
    tg_node_value_unused(node, 0);
    tg_node_value_unused(node, -1);
    if (!tg_training(ctx) || p == 0)
        return tg_copy(ctx, x);
    tg_tensor *y = tg_empty(ctx, x->dtype, x->ndim, x->shape);
    uint64_t *saved = node->recording ? tg_scratch(ctx, sizeof *saved, false) : NULL;
    if (!y || (node->recording && !saved))
        return NULL;
    uint32_t thr;
    mask_params(p, &thr, &keep);
    uint64_t key = draw_key(ctx);
    int64_t n = x->numel;
    TG__DISPATCH(x->dtype, T, {
        const T *restrict xs = x->data;
        T *restrict o = y->data;
        T tk = (T)keep;
        PAR_SIMD(for (int64_t i = 0; i < n; i++)
            o[i] = xs[i] * (bits_of(key, i) >= thr ? tk : 0););
    });
    if (saved)
        *saved = key;
    node->aux = saved;
    return y;
}

static tg_status dropout_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                             tg_tensor *const *gin)
{
    (void)ctx;
    double p = ((const tg_dropout_attrs *)node->attrs)->p, keep;
    const uint64_t *saved = node->aux; /* none in eval mode or with p = 0 */
    uint64_t key = saved ? *saved : 0;
    uint32_t thr;
    mask_params(p, &thr, &keep);
    bool add = tg_vjp_adds(node, 0);
    int64_t n = gout->numel;
    TG__DISPATCH(gout->dtype, T, {
        const T *g = gout->data; /* g and gx may be one buffer (TG_OP_VJP_INPLACE) */
        T *gx = gin[0]->data;
        T tk = (T)keep;
        if (saved && add) {
            PAR_SIMD(for (int64_t i = 0; i < n; i++)
                gx[i] += g[i] * (bits_of(key, i) >= thr ? tk : 0););
        } else if (saved) {
            PAR_SIMD(for (int64_t i = 0; i < n; i++)
                gx[i] = g[i] * (bits_of(key, i) >= thr ? tk : 0););
        } else if (add) {
            PAR_SIMD(for (int64_t i = 0; i < n; i++)
                gx[i] += g[i];);
        } else if (gx != g) {
            memcpy(gx, g, (size_t)n * sizeof *g);
        }
    });
    return TG_OK;
}

static int dropout_print(const tg_node *node, char *buf, size_t size)
{
    return snprintf(buf, size, "p=%s", tg__num(((const tg_dropout_attrs *)node->attrs)->p));
}

/* Training and eval modes, with p = 0.5, 0 and 1; gradcheck rewinds the
 * RNG, so every evaluation draws the same mask. */
static int dropout_sample(tg_ctx *ctx, int index, tg_sample *s)
{
    static const double ps[] = {0.5, 0.5, 0.0, 1.0, 0.3};
    static const bool training[] = {true, false, true, true, true};
    static const char *desc[] = {"p=0.5 training", "p=0.5 eval", "p=0 training",
                                 "p=1 training", "p=0.3, size-1 dims"};
    if (index >= 5)
        return 0;
    s->n_in = 1;
    s->in[0] = index == 4 ? tg__sample_rand(ctx, TG_SHAPE(1, 6, 1), -1, 1, true)
                          : tg__sample_rand(ctx, TG_SHAPE(3, 4), -1, 1, true);
    tg_dropout_attrs a = {ps[index]};
    memcpy(s->attrs, &a, sizeof a);
    s->training = training[index];
    snprintf(s->desc, sizeof s->desc, "%s", desc[index]);
    return s->in[0] ? 1 : tg_errcode(ctx);
}

const tg_op tg__op_dropout = {.name = "dropout", .min_in = 1, .max_in = 1,
                              .attr_size = sizeof(tg_dropout_attrs), .forward = dropout_forward,
                              .vjp = dropout_vjp, .print_attrs = dropout_print,
                              .sample = dropout_sample,
                              .flags = TG_OP_VJP_WRITES | TG_OP_VJP_INPLACE};

tg_tensor *tg_dropout(tg_ctx *ctx, tg_tensor *x, double p)
{
    tg_dropout_attrs a = {p};
    return tg_apply(ctx, &tg__op_dropout, &x, 1, &a);
}
