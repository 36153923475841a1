/*
 * dropout.c: inverted dropout.
 *
 * Training: m_i = (u_i >= p) / (1 - p) with u_i uniform from the context RNG,
 * drawn in row-major order; y = x * m; the mask m is saved; dx += g * m.
 * p = 1 drops everything (m = 0). Eval: y = x, dx += g.
 * p outside [0, 1], NaN included, is TG_EINVAL (as PyTorch). The vjp reads
 * only the mask, never x or y, so both may be written after forward.
 */
#include "ops_impl.h"

static tg_tensor *dropout_forward(tg_ctx *ctx, tg_node *node)
{
    double p = ((const tg_dropout_attrs *)node->attrs)->p;
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
    tg_tensor *mask = tg_empty(ctx, x->dtype, x->ndim, x->shape);
    if (!y || !mask)
        return NULL;
    double keep = p < 1 ? 1.0 / (1.0 - p) : 0.0;
    TG__DISPATCH(x->dtype, T, {
        const T *xs = x->data;
        T *o = y->data, *m = mask->data;
        for (int64_t i = 0; i < x->numel; i++) {
            m[i] = tg_rand_uniform(ctx) >= p ? (T)keep : 0;
            o[i] = xs[i] * m[i];
        }
    });
    if (node->recording && !tg_node_save(ctx, node, mask))
        return NULL;
    return y;
}

static tg_status dropout_vjp(tg_ctx *ctx, tg_node *node, const tg_tensor *gout,
                             tg_tensor *const *gin)
{
    (void)ctx;
    const tg_tensor *mask = node->n_saved ? node->saved[0] : NULL; /* none in eval mode */
    TG__DISPATCH(gout->dtype, T, {
        const T *g = gout->data, *m = mask ? mask->data : NULL;
        T *gx = gin[0]->data;
        for (int64_t i = 0; i < gout->numel; i++)
            gx[i] += m ? g[i] * m[i] : g[i];
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
                              .sample = dropout_sample};

tg_tensor *tg_dropout(tg_ctx *ctx, tg_tensor *x, double p)
{
    tg_dropout_attrs a = {p};
    return tg_apply(ctx, &tg__op_dropout, &x, 1, &a);
}
