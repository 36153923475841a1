/*
 * tape.c: running an op (tg_apply) and recording it on the tape.
 *
 * Invariants: tape[i]->index == i; a node's inputs were all created before
 * it, so the tape is in topological order; the tape array keeps its
 * capacity across tg_reset (a steady loop does not reallocate it).
 */
#include "impl.h"

static tg_status tape_push(tg_ctx *ctx, tg_node *node)
{
    if (ctx->tape_len == ctx->tape_cap) {
        size_t cap = ctx->tape_cap ? ctx->tape_cap * 2 : 256;
        tg_node **t = tg__realloc(ctx, ctx->tape, ctx->tape_cap * sizeof *t, cap * sizeof *t);
        if (!t)
            return ctx->errcode;
        ctx->tape = t;
        ctx->tape_cap = cap;
    }
    node->index = (int64_t)ctx->tape_len;
    ctx->tape[ctx->tape_len++] = node;
    return TG_OK;
}

static tg_status check_inputs(tg_ctx *ctx, const tg_op *op, tg_tensor *const *in, int n,
                              const void *attrs)
{
    if (n < op->min_in || (op->max_in >= 0 && n > op->max_in)) {
        if (op->min_in == op->max_in)
            return TG_ERROR(ctx, TG_EINVAL, "%s: takes %d input%s, got %d", op->name, op->min_in,
                            op->min_in == 1 ? "" : "s", n);
        if (op->max_in < 0)
            return TG_ERROR(ctx, TG_EINVAL, "%s: takes at least %d inputs, got %d", op->name,
                            op->min_in, n);
        return TG_ERROR(ctx, TG_EINVAL, "%s: takes %d to %d inputs, got %d", op->name, op->min_in,
                        op->max_in, n);
    }
    if (n > 0 && !in)
        return TG_ERROR(ctx, TG_EINVAL, "%s: the input array is NULL", op->name);
    if (tg__check_inputs(ctx, op->name, in, n))
        return ctx->errcode;
    if (op->attr_size && !attrs)
        return TG_ERROR(ctx, TG_EINVAL, "%s: attributes are NULL", op->name);
    return TG_OK;
}

tg_tensor *tg_apply(tg_ctx *ctx, const tg_op *op, tg_tensor *const *in, int n, const void *attrs)
{
    TG__GUARD(ctx, NULL);
    if (!op || !op->forward || !op->name) {
        TG_ERROR(ctx, TG_EINVAL, "apply: op is NULL or incomplete");
        return NULL;
    }
    if (check_inputs(ctx, op, in, n, attrs))
        return NULL;

    tg_node *node = tg__arena_alloc(ctx, sizeof *node + (size_t)n * sizeof(tg_tensor *) +
                                             op->attr_size);
    if (!node)
        return NULL;
    memset(node, 0, sizeof *node);
    node->op = op;
    node->index = -1;
    node->n_in = n;
    node->in = (tg_tensor **)(node + 1);
    bool any_grad = false;
    for (int i = 0; i < n; i++) {
        node->in[i] = in[i];
        any_grad |= in[i]->requires_grad;
    }
    if (op->attr_size) {
        void *a = (unsigned char *)(node->in + n);
        memcpy(a, attrs, op->attr_size);
        node->attrs = a;
    }
    node->recording = ctx->grad_enabled && any_grad && op->vjp;

    ctx->cur_op = op->name;
    tg_tensor *out = op->forward(ctx, node);
    ctx->cur_op = NULL;
    if (ctx->errcode)
        return NULL;
    if (!out) {
        TG_ERROR(ctx, TG_EINTERNAL, "%s: forward returned NULL without raising an error", op->name);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (out == in[i] || out->persistent) {
            TG_ERROR(ctx, TG_EINTERNAL, "%s: forward must return a new step tensor", op->name);
            return NULL;
        }
    node->out = out;
    if (node->recording) {
        if (tape_push(ctx, node))
            return NULL;
        out->node = node;
        out->requires_grad = true;
    }
    return out;
}

tg_tensor *tg_apply_named(tg_ctx *ctx, const char *name, tg_tensor *const *in, int n,
                          const void *attrs)
{
    TG__GUARD(ctx, NULL);
    const tg_op *op = tg_op_find(name);
    if (!op) {
        TG_ERROR(ctx, TG_ENOTFOUND, "apply: no op named '%s' is registered", name ? name : "(null)");
        return NULL;
    }
    return tg_apply(ctx, op, in, n, attrs);
}

tg_tensor *tg_node_save(tg_ctx *ctx, tg_node *node, tg_tensor *t)
{
    TG__GUARD(ctx, NULL);
    if (!node || !t) {
        TG_ERROR(ctx, TG_EINVAL, "node_save: node or tensor is NULL");
        return NULL;
    }
    if (node->n_saved == TG_MAX_SAVED) {
        TG_ERROR(ctx, TG_EINVAL, "%s: saves more than %d tensors", node->op->name, TG_MAX_SAVED);
        return NULL;
    }
    node->saved[node->n_saved++] = t;
    return t;
}
