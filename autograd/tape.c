/*
 * tape.c: running an op (tg_apply) and recording it on the tape.
 *
 * Invariants: tape[i]->index == i; a node's inputs were all created before
 * it, so the tape is in topological order; the tape array keeps its
 * capacity across tg_reset (a steady loop does not reallocate it); a
 * recorded node holds the versions of its inputs, output and saved tensors
 * as forward left them, for backward to compare.
 */
#include "impl.h"

#include <math.h>

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
    if (!(op->flags & TG_OP_INT64_INPUTS))
        for (int i = 0; i < n; i++)
            if (!tg_dtype_is_float(in[i]->dtype))
                return TG_ERROR(ctx, TG_EDTYPE, "%s: input %d is %s; %s takes float32 or float64",
                                op->name, i, tg__tensor_s(in[i]), op->name);
    if (op->attr_size && !attrs)
        return TG_ERROR(ctx, TG_EINVAL, "%s: attributes are NULL", op->name);
    return TG_OK;
}

/* The node's call site: the newest position noted by tg_at_op, taken off the stack. */
static void take_site(tg_ctx *ctx, tg_node *node)
{
    if (ctx->n_sites == 0)
        return;
    ctx->n_sites--;
    node->file = ctx->sites[ctx->n_sites].file;
    node->line = ctx->sites[ctx->n_sites].line;
    node->called = ctx->sites[ctx->n_sites].name;
    if (node->called && strcmp(node->called, node->op->name) == 0)
        node->called = NULL;
}

static const tg_node blank_node;

static tg_tensor *apply(tg_ctx *ctx, const tg_op *op, tg_tensor *const *in, int n,
                        const void *attrs, tg_node **made)
{
    if (!op || !op->forward || !op->name) {
        TG_ERROR(ctx, TG_EINVAL, "apply: op is NULL or incomplete");
        return NULL;
    }
    if (check_inputs(ctx, op, in, n, attrs))
        return NULL;

    /* node, in[n], in_version[n + 1], attrs: one block */
    size_t vers = (size_t)(n + 1) * sizeof(uint64_t);
    tg_node *node = tg__arena_alloc(ctx, sizeof *node + (size_t)n * sizeof(tg_tensor *) + vers +
                                             op->attr_size);
    if (!node)
        return NULL;
    *node = blank_node; /* vector stores, where memset would be a slow `rep stos` */
    node->op = op;
    node->index = -1;
    node->n_in = n;
    node->in = (tg_tensor **)(node + 1);
    node->in_version = (uint64_t *)(node->in + n);
    memset(node->in_version, 0, vers);
    take_site(ctx, node);
    node->scope = ctx->scope;
    *made = node;
    bool any_grad = false;
    for (int i = 0; i < n; i++) {
        node->in[i] = in[i];
        any_grad |= in[i]->requires_grad;
    }
    if (op->attr_size) {
        void *a = (unsigned char *)(node->in_version + n + 1);
        memcpy(a, attrs, op->attr_size);
        node->attrs = a;
    }
    node->recording = ctx->grad_enabled && any_grad;

    ctx->cur_op = op->name;
    ctx->cur_phase = "";
    tg_tensor *out = op->forward(ctx, node);
    ctx->cur_op = NULL;
    if (ctx->errcode)
        return NULL;
    if (!out) {
        TG_ERROR(ctx, TG_EINTERNAL, "%s: forward returned NULL without raising an error", op->name);
        return NULL;
    }
    if (out->ctx != ctx || out->persistent || out->step != ctx->step || out->node) {
        TG_ERROR(ctx, TG_EINTERNAL, "%s: forward must return a new step tensor", op->name);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (out == in[i]) {
            TG_ERROR(ctx, TG_EINTERNAL, "%s: forward must return a new step tensor", op->name);
            return NULL;
        }
    node->out = out;
    if (node->recording && tg_dtype_is_float(out->dtype)) {
        for (int i = 0; i < n; i++)
            if (node->in_version[i] != TG_VERSION_UNCHECKED)
                node->in_version[i] = tg_tensor_version(in[i]);
        if (node->in_version[n] != TG_VERSION_UNCHECKED)
            node->in_version[n] = tg_tensor_version(out);
        for (int i = 0; i < node->n_saved; i++)
            node->saved_version[i] = tg_tensor_version(node->saved[i]);
        node->n_saved_fwd = node->n_saved;
        if (tape_push(ctx, node))
            return NULL;
        out->node = node;
        out->requires_grad = true;
    } else {
        node->recording = false;
    }
    if (ctx->anomaly && tg__anomaly_check(ctx, node, out, -1))
        return NULL;
    return out;
}

/* apply with the clock and the arena's count read around it. */
static tg_tensor *apply_profiled(tg_ctx *ctx, const tg_op *op, tg_tensor *const *in, int n,
                                 const void *attrs)
{
    tg_node *node = NULL;
    size_t b0 = ctx->arena_used;
    uint64_t t0 = tg__now_ns();
    tg_tensor *out = apply(ctx, op, in, n, attrs, &node);
    uint64_t ns = tg__now_ns() - t0;
    size_t bytes = ctx->arena_used > b0 ? ctx->arena_used - b0 : 0;
    if (!node)
        return out;
    node->fwd_ns = ns ? ns : 1;
    node->fwd_bytes = bytes;
    node->fwd_profiled = true;
    if (out && tg__profile_add(ctx, tg__node_name(node), false, node->fwd_ns, bytes))
        return NULL;
    return out;
}

tg_tensor *tg_apply(tg_ctx *ctx, const tg_op *op, tg_tensor *const *in, int n, const void *attrs)
{
    TG__GUARD(ctx, NULL);
    if (ctx->profile)
        return apply_profiled(ctx, op, in, n, attrs);
    tg_node *node;
    return apply(ctx, op, in, n, attrs, &node);
}

static const char *first_bad(const tg_tensor *t, int64_t *at)
{
    TG_DISPATCH_FLOAT(t->dtype, T, {
        const T *d = t->data;
        for (int64_t i = 0; i < t->numel; i++)
            if (!isfinite(d[i])) {
                *at = i;
                return isnan(d[i]) ? "NaN" : "Inf";
            }
    });
    return NULL;
}

tg_status tg__anomaly_check(tg_ctx *ctx, const tg_node *node, const tg_tensor *t, int input)
{
    int64_t at;
    const char *bad = first_bad(t, &at);
    if (!bad)
        return TG_OK;
    char shapes[200] = "";
    size_t len = 0;
    for (int i = 0; i < node->n_in && len < sizeof shapes; i++)
        len += (size_t)snprintf(shapes + len, sizeof shapes - len, "%s%s", i ? ", " : "",
                                tg__shape_s(node->in[i]));
    char where[160];
    if (node->file)
        snprintf(where, sizeof where, ", recorded at %s:%d", node->file, node->line);
    else
        where[0] = '\0';
    char index[32];
    if (node->index >= 0)
        snprintf(index, sizeof index, "tape index %lld", (long long)node->index);
    else
        snprintf(index, sizeof index, "not recorded");
    if (input < 0)
        return TG_ERROR(ctx, TG_ENONFINITE,
                        "anomaly: %s (%s%s) produced %s at output element %lld; input shapes %s",
                        node->op->name, index, where, bad, (long long)at, shapes);
    return TG_ERROR(ctx, TG_ENONFINITE,
                    "anomaly: backward of %s (%s%s) produced %s in the gradient of input %d at "
                    "element %lld; input shapes %s",
                    node->op->name, index, where, bad, input, (long long)at, shapes);
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
    if (tg__check_tensor(ctx, node->op->name, "a saved tensor", t))
        return NULL;
    node->saved[node->n_saved++] = t;
    return t;
}

void tg_node_value_unused(tg_node *node, int i)
{
    if (node && i >= -1 && i < node->n_in)
        node->in_version[i < 0 ? node->n_in : i] = TG_VERSION_UNCHECKED;
}
