/*
 * backward.c: the reverse sweep.
 *
 * tg_backward_ex marks the nodes that lead to `out` (walking the tape from
 * out's node down, a node is needed when it produced an input, requiring
 * grad, of a needed node), then visits the needed nodes from the last to
 * the first: each one's output gradient is complete by then, because
 * every consumer comes later on the tape. The vjp accumulates into the
 * input gradients. Afterwards the node is consumed (saved values dropped)
 * unless TG_RETAIN_GRAPH (the pointers stay, counted by n_saved_fwd, so a
 * graph drawn after backward still shows what each vjp read), and its output's gradient, an intermediate one,
 * goes back to the arena's free list unless TG_KEEP_GRADS. An op with
 * TG_OP_VJP_INPLACE may instead get that buffer as its input 0's gradient
 * (can_alias), so a chain of elementwise ops walks back through one buffer.
 *
 * Before a vjp runs, the versions of what it may read (inputs, output,
 * saved tensors) are compared with those forward left: a value written
 * since is an error, never a gradient computed from the new numbers.
 */
#include "impl.h"

#include <math.h>

static void zero_data(tg_tensor *t)
{
    memset(t->data, 0, (size_t)t->numel * tg_dtype_size(t->dtype));
}

/*
 * Brings back the gradient of parameter block b after tg_zero_grad_ex
 * released some of it: every released member's region becomes zeros and
 * every pointer is set again, in one go. The block and its members share
 * memory, and any of them may be an op's input (an L2 penalty reads the
 * whole block), so none of them is ever handed out as fresh: contributions
 * add, to values that are either kept or zero.
 */
static void revive_block(tg_ctx *ctx, tg__ptensor *b)
{
    for (tg__ptensor *m = ctx->params.first; m; m = m->next)
        if (m->owner == b && !m->t.grad) {
            zero_data(&m->grad_block->t);
            m->t.grad = &m->grad_block->t;
        }
    if (!b->t.grad) {
        b->t.grad = &b->grad_block->t;
        tg__bump(b->t.grad);
    }
}

/* Makes t's gradient a step tensor over data (t's shape and dtype). */
static tg_tensor *grad_on(tg_ctx *ctx, tg_tensor *t, void *data)
{
    tg_tensor *g = tg__tensor_new(ctx, t->dtype, t->ndim, t->shape, false);
    if (g) {
        g->data = data;
        t->grad = g;
    }
    return g;
}

/*
 * t's gradient buffer. *fresh says whether it holds no values yet (just
 * made, or a lone parameter's released by tg_zero_grad_ex): the first
 * contribution then writes it. A parameter's buffer persists and a
 * released one comes back; a block and its members come back together
 * (revive_block). Other tensors' buffers come from the step arena.
 */
static tg_tensor *grad_of(tg_ctx *ctx, tg_tensor *t, bool *fresh)
{
    *fresh = false;
    if (t->grad)
        return t->grad;
    *fresh = true;
    if (t->persistent) {
        tg__ptensor *p = tg__param_record(ctx, t);
        if (!p || t->kind != TG_KIND_PARAM) {
            TG_ERROR(ctx, TG_ESTATE, "backward: %s claims to need a gradient but is not a live "
                                     "parameter of this context", tg__tensor_s(t));
            return NULL;
        }
        if (p->is_block || p->owner) {
            revive_block(ctx, p->is_block ? p : p->owner);
            *fresh = false;
            return t->grad;
        }
        if (!p->grad_block) {
            p->grad_block = tg__ptensor_new(ctx, "backward", TG_KIND_GRAD, t->dtype, t->ndim,
                                            t->shape, NULL, true);
            if (!p->grad_block)
                return NULL;
        }
        t->grad = &p->grad_block->t;
        return t->grad;
    }
    void *data = tg__grad_buffer(ctx, (size_t)t->numel * tg_dtype_size(t->dtype));
    return data ? grad_on(ctx, t, data) : NULL;
}

static void fill(tg_tensor *t, double v)
{
    TG__DISPATCH(t->dtype, T, {
        T *d = t->data;
        for (int64_t i = 0; i < t->numel; i++)
            d[i] = (T)v;
    });
}

/* Makes a fresh buffer hold zeros (or, under gradcheck and checked mode,
 * NaN, for a vjp that promises to write it). */
static void prepare_fresh(tg_ctx *ctx, tg_tensor *g, bool writes)
{
    if (!writes)
        zero_data(g);
    else if (ctx->poison_grads > 0 || ctx->checked)
        fill(g, NAN);
}

static void accumulate(tg_tensor *dst, const tg_tensor *src, bool add)
{
    TG__DISPATCH(dst->dtype, T, {
        T *d = dst->data;
        const T *s = src->data;
        if (add)
            for (int64_t i = 0; i < dst->numel; i++)
                d[i] += s[i];
        else
            memcpy(d, s, (size_t)dst->numel * sizeof(T));
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
    if (!tg_dtype_is_float(out->dtype))
        return TG_ERROR(ctx, TG_EDTYPE, "backward: the output is %s; gradients are float",
                        tg__tensor_s(out));
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
    bool fresh;
    tg_tensor *g = grad_of(ctx, out, &fresh);
    if (!g)
        return ctx->errcode;
    if (gout)
        accumulate(g, gout, !fresh);
    else
        tg_set(g, 0, (fresh ? 0.0 : tg_get(g, 0)) + 1.0);
    return TG_OK;
}

/* A leaf parameter whose gradient backward makes (a tg__ptensor). */
static tg__ptensor *hooked_param(const tg_tensor *x)
{
    return x->requires_grad && x->persistent && !x->node && x->kind == TG_KIND_PARAM
               ? (tg__ptensor *)(void *)x
               : NULL;
}

/* Marks the nodes that lead to last; with a grad hook, also notes for each
 * parameter the lowest needed node reading it: its gradient is complete
 * once that node's vjp has run. */
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
            tg__ptensor *p;
            if (x->requires_grad && x->node)
                x->node->needed = true;
            else if (ctx->grad_hook && (p = hooked_param(x)))
                p->hook_at = i;
        }
    }
}

/* Calls the grad hook for the parameters node i completes. A member of a
 * block that some node reads whole waits for the end of the sweep
 * (fire_deferred): until then the whole block's gradient is not done. */
static tg_status fire_hooks(tg_ctx *ctx, const tg_node *node, int64_t i)
{
    for (int k = 0; k < node->n_in; k++) {
        tg__ptensor *p = hooked_param(node->in[k]);
        if (!p || p->is_block || p->hook_at != i || (p->owner && p->owner->hook_at >= 0))
            continue;
        p->hook_at = -1; /* once, even when the node reads it twice */
        if (!p->t.grad) { /* nothing reached it: zeros, never stale values */
            bool fresh;
            if (!grad_of(ctx, &p->t, &fresh))
                return ctx->errcode;
            if (fresh)
                zero_data(p->t.grad);
        }
        ctx->grad_hook(ctx, &p->t, ctx->grad_hook_ud);
    }
    return ctx->errcode;
}

/* The end of the sweep: the members of blocks read whole, last first. */
static tg_status fire_deferred(tg_ctx *ctx)
{
    for (tg__ptensor *b = ctx->blocks.first; b; b = b->next) {
        if (b->hook_at < 0)
            continue;
        b->hook_at = -1;
        for (tg__ptensor *m = ctx->params.last; m; m = m->prev) {
            bool fresh;
            if (m->owner != b)
                continue;
            m->hook_at = -1;
            if (!m->t.grad && !grad_of(ctx, &m->t, &fresh))
                return ctx->errcode;
            ctx->grad_hook(ctx, &m->t, ctx->grad_hook_ud);
        }
    }
    return ctx->errcode;
}

static tg_status stale(tg_ctx *ctx, const tg_node *node, const tg_tensor *t, const char *what,
                       uint64_t then)
{
    return TG_ERROR(ctx, TG_ESTATE,
                    "backward: %s (tape index %lld) needs %s %s as forward saw it (version %llu), "
                    "but it has been modified since (version %llu): a write through tg_fill, "
                    "tg_assign, tg_set, an optimiser step or an in-place op came between forward "
                    "and backward",
                    node->op->name, (long long)node->index, what, tg__tensor_s(t),
                    (unsigned long long)then, (unsigned long long)tg_tensor_version(t));
}

/* The values the vjp may read are those forward saw. */
static tg_status check_versions(tg_ctx *ctx, const tg_node *node)
{
    char what[32];
    for (int k = 0; k <= node->n_in; k++) {
        const tg_tensor *t = k < node->n_in ? node->in[k] : node->out;
        uint64_t then = node->in_version[k];
        if (then == TG_VERSION_UNCHECKED || then == tg_tensor_version(t))
            continue;
        if (k < node->n_in)
            snprintf(what, sizeof what, "its input %d", k);
        else
            snprintf(what, sizeof what, "its output");
        return stale(ctx, node, t, what, then);
    }
    for (int k = 0; k < node->n_saved; k++)
        if (tg_tensor_version(node->saved[k]) != node->saved_version[k]) {
            snprintf(what, sizeof what, "its saved tensor %d", k);
            return stale(ctx, node, node->saved[k], what, node->saved_version[k]);
        }
    return TG_OK;
}

/*
 * Whether input 0's gradient may take over the output's buffer: the op
 * allows it (TG_OP_VJP_INPLACE), the output's gradient dies with this vjp
 * (not TG_KEEP_GRADS), and input 0 is a step tensor read once by the node,
 * of the output's dtype and size, with no gradient yet. Never under
 * gradcheck or checked mode, whose NaN-filled fresh buffers catch an
 * element a vjp forgets to write (here it would hold the output's
 * gradient instead).
 */
static bool can_alias(const tg_ctx *ctx, const tg_node *node, bool keep_grads)
{
    const unsigned both = TG_OP_VJP_WRITES | TG_OP_VJP_INPLACE;
    if ((node->op->flags & both) != both || keep_grads || ctx->poison_grads > 0 ||
        ctx->checked || node->n_in < 1)
        return false;
    const tg_tensor *x = node->in[0], *y = node->out;
    if (!x->requires_grad || x->grad || x->persistent || !y->grad || x->dtype != y->dtype ||
        x->numel != y->numel)
        return false;
    for (int k = 1; k < node->n_in; k++)
        if (node->in[k] == x)
            return false;
    return true;
}

/* Runs node's vjp; *aliased says whether input 0's gradient took over the
 * output's buffer (which then must not be released). */
static tg_status run_vjp(tg_ctx *ctx, tg_node *node, tg_tensor **gin, bool keep_grads,
                         bool *aliased)
{
    *aliased = false;
    if (!node->op->vjp)
        return TG_ERROR(ctx, TG_ENOTSUP,
                        "backward: the derivative of %s (tape index %lld) is not implemented: "
                        "the op was registered without a vjp",
                        node->op->name, (long long)node->index);
    if (check_versions(ctx, node))
        return ctx->errcode;
    ctx->cur_op = node->op->name;
    ctx->cur_phase = "backward of ";
    bool writes = node->op->flags & TG_OP_VJP_WRITES;
    node->grad_adds = 0;
    for (int k = 0; k < node->n_in; k++) {
        tg_tensor *x = node->in[k];
        bool fresh;
        gin[k] = NULL;
        if (!x->requires_grad)
            continue;
        if (k == 0 && can_alias(ctx, node, keep_grads)) {
            /* the vjp writes it (bit 0 stays clear) */
            if (!(gin[0] = grad_on(ctx, x, node->out->grad->data)))
                goto done;
            *aliased = true;
            continue;
        }
        if (!(gin[k] = grad_of(ctx, x, &fresh)))
            goto done;
        for (int j = 0; j < k; j++)
            if (gin[j] == gin[k] && !tg_vjp_adds(node, j)) {
                /* the same tensor twice: which contribution comes first is
                 * the vjp's business, so both add, to zeros */
                zero_data(gin[k]);
                node->grad_adds |= 1u << j;
                fresh = false;
            }
        if (fresh)
            prepare_fresh(ctx, gin[k], writes && k < 32);
        if (!fresh || !writes || k >= 32)
            node->grad_adds |= k < 32 ? 1u << k : 0;
    }
    tg_status st = node->op->vjp(ctx, node, node->out->grad, gin);
    if (st != TG_OK && ctx->errcode == TG_OK)
        TG_ERROR(ctx, st, "backward of %s: vjp failed (%s)", node->op->name, tg_status_str(st));
    for (int k = 0; ctx->anomaly && !ctx->errcode && k < node->n_in; k++)
        if (gin[k])
            tg__anomaly_check(ctx, node, gin[k], k);
done:
    ctx->cur_op = "backward";
    ctx->cur_phase = "";
    return ctx->errcode;
}

/* run_vjp with the clock and the arena's count read around it. */
static tg_status run_vjp_profiled(tg_ctx *ctx, tg_node *node, tg_tensor **gin, bool keep_grads,
                                  bool *aliased)
{
    size_t b0 = ctx->arena_used;
    uint64_t t0 = tg__now_ns();
    tg_status st = run_vjp(ctx, node, gin, keep_grads, aliased);
    uint64_t ns = tg__now_ns() - t0;
    node->vjp_ns = ns ? ns : 1;
    node->vjp_bytes = ctx->arena_used > b0 ? ctx->arena_used - b0 : 0;
    node->vjp_profiled = true;
    if (st == TG_OK)
        st = tg__profile_add(ctx, tg__node_name(node), true, node->vjp_ns, node->vjp_bytes);
    return st;
}

static tg_status sweep(tg_ctx *ctx, tg_tensor *out, const tg_tensor *gout, unsigned flags)
{
    if (check_out(ctx, out, gout) || seed(ctx, out, gout))
        return ctx->errcode;
    tg_node *last = out->node;
    if (!last)
        return TG_OK; /* a leaf: its gradient is the seed */
    if (last->index < 0 || (size_t)last->index >= ctx->tape_len || ctx->tape[last->index] != last)
        return TG_ERROR(ctx, TG_ESTATE, "backward: the tensor's node is not on the tape "
                                         "(was the context reset since it was made?)");
    if (ctx->grad_hook) /* mark_needed notes the blocks read whole */
        for (tg__ptensor *b = ctx->blocks.first; b; b = b->next)
            b->hook_at = -1;
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
        bool keep = flags & TG_KEEP_GRADS, aliased = false;
        if (y->grad && (ctx->profile ? run_vjp_profiled(ctx, node, gin, keep, &aliased)
                                     : run_vjp(ctx, node, gin, keep, &aliased)))
            return ctx->errcode;
        if (ctx->grad_hook && fire_hooks(ctx, node, i))
            return ctx->errcode;
        if (!(flags & TG_RETAIN_GRAPH)) {
            node->consumed = true;
            node->n_saved = 0; /* released; saved[] stays for graphs (n_saved_fwd) */
        }
        if (!keep && y->grad) {
            if (!aliased) /* else input 0's gradient holds it now */
                tg__grad_release(ctx, y->grad->data, (size_t)y->numel * tg_dtype_size(y->dtype));
            y->grad = NULL;
        }
    }
    return ctx->grad_hook ? fire_deferred(ctx) : TG_OK;
}

tg_status tg_backward_ex(tg_ctx *ctx, tg_tensor *out, const tg_tensor *gout, unsigned flags)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    ctx->cur_op = "backward"; /* names what runs out of memory outside a vjp */
    ctx->cur_phase = "";
    tg_status st = sweep(ctx, out, gout, flags);
    ctx->cur_op = NULL;
    return st;
}

tg_status tg_backward(tg_ctx *ctx, tg_tensor *loss) { return tg_backward_ex(ctx, loss, NULL, 0); }

void tg_tensor_zero_grad(tg_tensor *t) { tg_tensor_zero_grad_ex(t, 0); }

void tg_tensor_zero_grad_ex(tg_tensor *t, unsigned flags)
{
    if (!t)
        return;
    if (!(flags & TG_SET_TO_NONE)) {
        if (t->grad) {
            zero_data(t->grad);
            tg__bump(t->grad);
        }
        return;
    }
    tg_ctx *ctx = t->ctx;
    tg__ptensor *rec = t->persistent && ctx ? tg__param_record(ctx, t) : NULL;
    if (!rec || t->kind != TG_KIND_PARAM) {
        t->grad = NULL; /* a step tensor's gradient, in the arena until tg_reset */
        return;
    }
    t->grad = NULL;
    if (rec->owner) /* a member: its block's gradient is no longer whole */
        rec->owner->t.grad = NULL;
    for (tg__ptensor *p = ctx->params.first; p; p = p->next)
        if (p->owner == rec)
            p->t.grad = NULL;
}

void tg_zero_grad(tg_ctx *ctx) { tg_zero_grad_ex(ctx, 0); }

void tg_zero_grad_ex(tg_ctx *ctx, unsigned flags)
{
    if (!ctx)
        return;
    if (!(flags & TG_SET_TO_NONE)) {
        for (tg_tensor *p = tg_param_next(ctx, NULL); p; p = tg_param_next(ctx, p))
            tg_tensor_zero_grad(p); /* block members cover their blocks */
        return;
    }
    for (tg__ptensor *p = ctx->params.first; p; p = p->next)
        p->t.grad = NULL;
    for (tg__ptensor *b = ctx->blocks.first; b; b = b->next)
        b->t.grad = NULL;
}

void tg_set_grad_hook(tg_ctx *ctx, tg_grad_hook fn, void *ud)
{
    if (ctx) {
        ctx->grad_hook = fn;
        ctx->grad_hook_ud = ud;
    }
}
