/*
 * backward.c: the reverse sweep.
 *
 * tg_backward_ex marks the nodes that lead to `out` (walking the tape from
 * out's node down, a node is needed when it produced an input, requiring
 * grad, of a needed node), then visits the needed nodes from the last to
 * the first: each one's output gradient is complete by then, because
 * every consumer comes later on the tape. The vjp accumulates into the
 * input gradients. Afterwards the node is consumed (saved values dropped)
 * unless TG_RETAIN_GRAPH, and its output's gradient, an intermediate one,
 * goes back to the arena's free list unless TG_KEEP_GRADS.
 */
#include "impl.h"

/* t's gradient buffer, created zero-filled on first use: persistent for a
 * parameter, in the step arena otherwise. */
static tg_tensor *grad_of(tg_ctx *ctx, tg_tensor *t)
{
    if (t->grad)
        return t->grad;
    if (t->persistent) {
        tg__ptensor *p = (tg__ptensor *)t;
        tg__ptensor *g = tg__ptensor_new(ctx, "backward", t->dtype, t->ndim, t->shape, NULL);
        if (!g)
            return NULL;
        p->grad_block = g;
        t->grad = &g->t;
        return t->grad;
    }
    tg_tensor *g = tg__tensor_new(ctx, t->dtype, t->ndim, t->shape, false);
    if (!g)
        return NULL;
    g->data = tg__grad_buffer(ctx, (size_t)t->numel * tg_dtype_size(t->dtype));
    if (!g->data)
        return NULL;
    t->grad = g;
    return g;
}

static void accumulate(tg_tensor *dst, const tg_tensor *src)
{
    TG__DISPATCH(dst->dtype, T, {
        T *d = dst->data;
        const T *s = src->data;
        for (int64_t i = 0; i < dst->numel; i++)
            d[i] += s[i];
    });
}

static tg_status check_out(tg_ctx *ctx, tg_tensor *out, const tg_tensor *gout)
{
    if (tg__check_tensor(ctx, "backward", "the output", out))
        return ctx->errcode;
    if (!out->requires_grad)
        return TG_ERROR(ctx, TG_EINVAL,
                        "backward: the tensor %s%s%s does not require grad (no input of the ops "
                        "that made it requires grad, or grad mode was off)",
                        out->name ? "'" : "", out->name ? out->name : tg__shape_s(out),
                        out->name ? "'" : "");
    if (out->node && out->node->consumed)
        return TG_ERROR(ctx, TG_ESTATE,
                        "backward: the graph of this tensor was consumed by an earlier backward; "
                        "pass TG_RETAIN_GRAPH to the first one to go through it again");
    if (!gout) {
        if (out->numel != 1)
            return TG_ERROR(ctx, TG_EINVAL,
                            "backward: the output has shape %s; a gradient is implied only for "
                            "one element (pass gout to tg_backward_ex)", tg__shape_s(out));
        return TG_OK;
    }
    if (tg__check_tensor(ctx, "backward", "gout", gout))
        return ctx->errcode;
    if (!tg_same_shape(out, gout) || gout->dtype != out->dtype)
        return TG_ERROR(ctx, TG_ESHAPE, "backward: gout is %s %s but the output is %s %s",
                        tg_dtype_name(gout->dtype), tg__shape_s(gout), tg_dtype_name(out->dtype),
                        tg__shape_s(out));
    return TG_OK;
}

static tg_status seed(tg_ctx *ctx, tg_tensor *out, const tg_tensor *gout)
{
    tg_tensor *g = grad_of(ctx, out);
    if (!g)
        return ctx->errcode;
    if (gout) {
        accumulate(g, gout);
    } else {
        tg_set(g, 0, tg_get(g, 0) + 1.0);
    }
    return TG_OK;
}

static void mark_needed(tg_ctx *ctx, tg_node *last)
{
    for (int64_t i = 0; i <= last->index; i++)
        ctx->tape[i]->needed = false;
    last->needed = true;
    for (int64_t i = last->index; i >= 0; i--) {
        tg_node *node = ctx->tape[i];
        if (!node->needed)
            continue;
        for (int k = 0; k < node->n_in; k++) {
            tg_tensor *x = node->in[k];
            if (x->requires_grad && x->node)
                x->node->needed = true;
        }
    }
}

static tg_status run_vjp(tg_ctx *ctx, tg_node *node, tg_tensor **gin)
{
    for (int k = 0; k < node->n_in; k++) {
        tg_tensor *x = node->in[k];
        gin[k] = NULL;
        if (x->requires_grad && !(gin[k] = grad_of(ctx, x)))
            return ctx->errcode;
    }
    tg_status st = node->op->vjp(ctx, node, node->out->grad, gin);
    if (st != TG_OK && ctx->errcode == TG_OK)
        TG_ERROR(ctx, st, "%s: vjp failed (%s)", node->op->name, tg_status_str(st));
    return ctx->errcode;
}

tg_status tg_backward_ex(tg_ctx *ctx, tg_tensor *out, const tg_tensor *gout, unsigned flags)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (check_out(ctx, out, gout) || seed(ctx, out, gout))
        return ctx->errcode;
    tg_node *last = out->node;
    if (!last)
        return TG_OK; /* a leaf: its gradient is the seed */
    if (last->index < 0 || (size_t)last->index >= ctx->tape_len || ctx->tape[last->index] != last)
        return TG_ERROR(ctx, TG_ESTATE, "backward: the tensor's node is not on the tape "
                                         "(was the context reset since it was made?)");
    mark_needed(ctx, last);
    int max_in = 0;
    for (int64_t i = 0; i <= last->index; i++)
        if (ctx->tape[i]->needed && ctx->tape[i]->n_in > max_in)
            max_in = ctx->tape[i]->n_in;
    tg_tensor **gin = tg__arena_alloc(ctx, (size_t)(max_in ? max_in : 1) * sizeof *gin);
    if (!gin)
        return ctx->errcode;

    for (int64_t i = last->index; i >= 0; i--) {
        tg_node *node = ctx->tape[i];
        if (!node->needed)
            continue;
        if (node->consumed)
            return TG_ERROR(ctx, TG_ESTATE,
                            "backward: node %lld (%s) was consumed by an earlier backward; pass "
                            "TG_RETAIN_GRAPH to the first one to go through it again",
                            (long long)i, node->op->name);
        tg_tensor *y = node->out;
        if (y->grad && run_vjp(ctx, node, gin))
            return ctx->errcode;
        if (!(flags & TG_RETAIN_GRAPH)) {
            node->consumed = true;
            memset(node->saved, 0, sizeof node->saved);
            node->n_saved = 0;
        }
        if (!(flags & TG_KEEP_GRADS) && y->grad) {
            tg__grad_release(ctx, y->grad->data, (size_t)y->numel * tg_dtype_size(y->dtype));
            y->grad = NULL;
        }
    }
    return TG_OK;
}

tg_status tg_backward(tg_ctx *ctx, tg_tensor *loss) { return tg_backward_ex(ctx, loss, NULL, 0); }

void tg_tensor_zero_grad(tg_tensor *t)
{
    if (t && t->grad)
        memset(t->grad->data, 0, (size_t)t->grad->numel * tg_dtype_size(t->grad->dtype));
}

void tg_zero_grad(tg_ctx *ctx)
{
    for (tg_tensor *p = tg_param_next(ctx, NULL); p; p = tg_param_next(ctx, p))
        tg_tensor_zero_grad(p);
}
