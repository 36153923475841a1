/*
 * dot.c: the recorded graph as Graphviz dot text, and its rendering
 * through libgvc.
 *
 * Node ids are stable: op k on the tape is "op<k>", its output "t<k>", its
 * vjp "b<k>" and its output's gradient "g<k>"; leaves (inputs, parameters,
 * constants) are "x0", "x1", ... in the order the walk over the tape first
 * meets them, their gradients "gx<i>"; a saved tensor that is in the graph
 * nowhere else is "s<k>_<m>"; a collapsed scope "s<id>". A uthash map from
 * tensor to id (allocated through the context's allocator) remembers the
 * leaves. Scopes become clusters listed after the nodes and edges (a node
 * named inside a subgraph joins it). Every label is a quoted string with
 * quotes, backslashes and control characters escaped, so any name is safe.
 * Text goes to a FILE or, for rendering, to a buffer from the context's
 * allocator; everything else lives in the step arena and is rewound.
 *
 * Rendering shares one Graphviz context per process, made on first use
 * and never freed, and renders one graph at a time: Graphviz 2.43's text
 * layout plugin reads freed memory when a second context follows a freed
 * one, and Graphviz is not thread-safe. Besides the op registry, it is the
 * only process-wide state.
 */
#define _POSIX_C_SOURCE 200809L /* pthread_once */
#include "impl.h"

#include <errno.h>
#include <graphviz/gvc.h>
#include <pthread.h>
#include <math.h>
#include <stdarg.h>

static _Thread_local tg_ctx *map_ctx; /* whose allocator uthash uses right now */
static _Thread_local int map_oom;

#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) tg__malloc(map_ctx, (sz))
#define uthash_free(ptr, sz) tg__free(map_ctx, (ptr), (sz))
#define uthash_nonfatal_oom(obj) (map_oom = 1)
#include <uthash.h>

typedef struct leaf_id {
    const tg_tensor *t;
    int id;
    bool declared, grad_declared, bad;
    int scope;         /* the cluster it is drawn in (a parameter's first user's), or -1 */
    int counted_group; /* collapsed view: the last scope its parameters were counted in */
    UT_hash_handle hh;
} leaf_id;

typedef struct edge_key { int64_t src, dst; } edge_key;
typedef struct edge_seen {
    edge_key k;
    UT_hash_handle hh;
} edge_seen;

/* a node id in a cluster: kind 'o' op, 't' tensor, 'b' vjp, 'g' gradient, 'x' leaf,
 * 'y' leaf gradient, 's' saved tensor (a = node, b = slot) */
typedef struct member {
    int scope;
    char kind;
    int64_t a;
    int b;
} member;

#define GROUP_LIST 4 /* shapes listed per side of a collapsed scope */
typedef struct group {
    bool used;
    int64_t ops, params;
    uint64_t act_bytes, fwd_ns, vjp_ns;
    const tg_tensor *ins[GROUP_LIST], *outs[GROUP_LIST];
    int n_ins, n_outs;
} group;

typedef struct dot {
    tg_ctx *ctx;
    FILE *f;            /* or, when NULL, the buffer below */
    char *buf;
    size_t len, cap;
    bool io_failed;
    const tg_dot_opts *opts;
    tg_dot_view view;
    bool auto_collapsed;
    const tg_tensor *out;
    int64_t last;       /* the last tape index drawn */
    bool *reach;        /* [last + 1] */
    unsigned char *red; /* [last + 1]: 2 the first non-finite output, 1 downstream */
    unsigned char *tdecl; /* [last + 1]: t<k> declared */
    int64_t n_ops;
    uint64_t hot;       /* the largest forward + vjp time of a drawn node */
    leaf_id *leaves;
    int n_leaves;
    member *members;
    size_t n_members, cap_members;
    int n_scopes;       /* ids below ctx->scope_next */
    const tg_scope **scopes;
    edge_seen *edges;
} dot;

/* ---------------------------------------------------------------- output */

static void put(dot *d, const char *fmt, ...) TG_PRINTF(2, 3);
static void put(dot *d, const char *fmt, ...)
{
    va_list ap;
    if (d->f) {
        va_start(ap, fmt);
        if (vfprintf(d->f, fmt, ap) < 0)
            d->io_failed = true;
        va_end(ap);
        return;
    }
    if (d->ctx->errcode)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (d->len + (size_t)n + 1 > d->cap) {
        size_t cap = d->cap ? d->cap : 4096;
        while (cap < d->len + (size_t)n + 1)
            cap *= 2;
        char *b = tg__realloc(d->ctx, d->buf, d->cap, cap);
        if (!b)
            return;
        d->buf = b;
        d->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(d->buf + d->len, d->cap - d->len, fmt, ap);
    va_end(ap);
    d->len += (size_t)n;
}

/* Writes s as the inside of a dot double-quoted string. */
static void put_escaped(dot *d, const char *s)
{
    char run[256];
    size_t n = 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (n + 3 >= sizeof run) {
            run[n] = '\0';
            put(d, "%s", run);
            n = 0;
        }
        if (ch == '"' || ch == '\\') {
            run[n++] = '\\';
            run[n++] = (char)ch;
        } else if (ch == '\n') {
            run[n++] = '\\';
            run[n++] = 'n';
        } else if (ch < 0x20 || ch == 0x7f) {
            run[n++] = ' ';
        } else {
            run[n++] = (char)ch;
        }
    }
    run[n] = '\0';
    put(d, "%s", run);
}

static const char *bytes_s(char *buf, size_t size, uint64_t b)
{
    if (b >= (uint64_t)1 << 20)
        snprintf(buf, size, "%.1f MiB", (double)b / (1 << 20));
    else if (b >= 1024)
        snprintf(buf, size, "%.1f KiB", (double)b / 1024);
    else
        snprintf(buf, size, "%llu B", (unsigned long long)b);
    return buf;
}

static const char *time_s(char *buf, size_t size, uint64_t ns)
{
    if (ns >= 1000000)
        snprintf(buf, size, "%.2f ms", (double)ns / 1e6);
    else
        snprintf(buf, size, "%.1f us", (double)ns / 1e3);
    return buf;
}

static uint64_t tensor_bytes(const tg_tensor *t)
{
    return (uint64_t)t->numel * tg_dtype_size(t->dtype);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* "block1/conv1" */
static void put_scope_path(dot *d, const tg_scope *s)
{
    if (!s)
        return;
    if (s->parent) {
        put_scope_path(d, s->parent);
        put(d, "/");
    }
    put_escaped(d, s->name);
}

static bool is_bad(const tg_tensor *t)
{
    if (!tg_dtype_is_float(t->dtype) || !t->data)
        return false;
    TG_DISPATCH_FLOAT(t->dtype, T, {
        const T *v = t->data;
        for (int64_t i = 0; i < t->numel; i++)
            if (!isfinite(v[i]))
                return true;
    });
    return false;
}

static double l2(const tg_tensor *t)
{
    double s = 0;
    for (int64_t i = 0; i < t->numel; i++)
        s += tg_get(t, i) * tg_get(t, i);
    return sqrt(s);
}

/* min, max, mean, L2, NaN and Inf counts and the first values, for a tooltip */
static void put_stats(dot *d, const tg_tensor *t)
{
    double lo = INFINITY, hi = -INFINITY, sum = 0, sq = 0;
    int64_t nan = 0, inf = 0, finite = 0;
    for (int64_t i = 0; t->data && i < t->numel; i++) {
        double v = tg_get(t, i);
        if (isnan(v)) {
            nan++;
        } else if (isinf(v)) {
            inf++;
        } else {
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            sum += v;
            sq += v * v;
            finite++;
        }
    }
    if (finite)
        put(d, "\\nmin %.6g  max %.6g  mean %.6g\\nL2 %.6g", lo, hi, sum / (double)finite, sqrt(sq));
    put(d, "\\nNaN %lld  Inf %lld\\nvalues", (long long)nan, (long long)inf);
    for (int64_t i = 0; t->data && i < t->numel && i < 6; i++)
        put(d, "%s%.6g", i ? ", " : " ", tg_get(t, i));
    if (t->numel > 6)
        put(d, ", ...");
}

/* ---------------------------------------------------------------- tensors */

static const char *const short_names[] = {"f32", "f64", "i64"};

static void tensor_node(dot *d, const char *id, const tg_tensor *t, int red, bool with_bytes)
{
    const char *style;
    if (t == d->out)
        style = t->numel == 1 ? "shape=doubleoctagon, style=filled, fillcolor=\"#f4b6b6\""
                              : "shape=doubleoctagon";
    else if (t->kind == TG_KIND_BUFFER)
        style = "shape=box, style=\"filled,dashed\", fillcolor=\"#d5ecd4\"";
    else if (t->persistent)
        style = "shape=box, style=filled, fillcolor=\"#bcd4f6\"";
    else if (!t->node && t->requires_grad)
        style = "shape=ellipse, style=filled, fillcolor=\"#fde8a8\"";
    else if (!t->node)
        style = "shape=ellipse";
    else
        style = "shape=ellipse, style=filled, fillcolor=\"#eeeeee\"";
    put(d, "  %s [%s", id, style);
    if (red)
        put(d, ", style=filled, color=\"#c00000\", fillcolor=\"%s\"",
            red == 2 ? "#ff6060" : "#ffb0b0");
    put(d, ", label=\"");
    if (t->name) {
        put_escaped(d, t->name);
        put(d, "\\n");
    } else if (t == d->out && t->numel == 1) {
        put(d, "loss\\n");
    }
    put(d, "%s %s", tg__shape_s(t), short_names[t->dtype]);
    char b[32];
    if (with_bytes)
        put(d, ", %s", bytes_s(b, sizeof b, tensor_bytes(t)));
    if (d->opts && d->opts->show_grad_norm && t->grad)
        put(d, "\\n|grad| = %.4g", l2(t->grad));
    put(d, "\", tooltip=\"%s %s, %s", tg_dtype_name(t->dtype), tg__shape_s(t),
        bytes_s(b, sizeof b, tensor_bytes(t)));
    if (t->grad)
        put(d, "\\n|grad| = %.6g", l2(t->grad));
    if (d->opts && d->opts->stats)
        put_stats(d, t);
    put(d, "\"];\n");
}

static tg_status add_member(dot *d, int scope, char kind, int64_t a, int b)
{
    if (scope < 0)
        return TG_OK;
    if (d->n_members == d->cap_members) {
        size_t cap = d->cap_members ? 2 * d->cap_members : 256;
        member *m = tg__arena_alloc(d->ctx, cap * sizeof *m);
        if (!m)
            return d->ctx->errcode;
        if (d->n_members)
            memcpy(m, d->members, d->n_members * sizeof *m);
        d->members = m;
        d->cap_members = cap;
    }
    d->members[d->n_members++] = (member){scope, kind, a, b};
    return TG_OK;
}

static int scope_of(const tg_node *node) { return node->scope ? node->scope->id : -1; }

/* The leaf record of t, made (and its node drawn, when declare) the first time. */
static leaf_id *leaf(dot *d, const tg_tensor *t, const tg_node *user, bool declare)
{
    leaf_id *e = NULL;
    HASH_FIND_PTR(d->leaves, &t, e);
    if (!e) {
        if (!(e = tg__arena_alloc(d->ctx, sizeof *e)))
            return NULL;
        memset(e, 0, sizeof *e);
        e->t = t;
        e->id = d->n_leaves++;
        e->counted_group = -1;
        e->scope = t->persistent && user ? scope_of(user) : -1;
        e->bad = d->red && is_bad(t);
        map_oom = 0;
        HASH_ADD_PTR(d->leaves, t, e);
        if (map_oom) {
            if (!d->ctx->errcode)
                tg__oom(d->ctx, sizeof(UT_hash_table));
            return NULL;
        }
    }
    if (declare && !e->declared) {
        char id[32];
        snprintf(id, sizeof id, "x%d", e->id);
        tensor_node(d, id, t, e->bad ? 2 : 0, d->view == TG_VIEW_BACKWARD);
        e->declared = true;
        if (add_member(d, e->scope, 'x', e->id, 0))
            return NULL;
    }
    return e;
}

static bool on_tape(const dot *d, const tg_tensor *t)
{
    return t->node && t->node->index >= 0 && t->node->index <= d->last;
}

/* The id of a tensor an op reads, declaring it when it is a leaf met first. */
static tg_status input_id(dot *d, const tg_tensor *t, const tg_node *user, char *id, size_t size,
                          bool declare)
{
    if (on_tape(d, t)) {
        snprintf(id, size, "t%lld", (long long)t->node->index);
        return TG_OK;
    }
    leaf_id *e = leaf(d, t, user, declare);
    if (!e)
        return d->ctx->errcode;
    snprintf(id, size, "x%d", e->id);
    return TG_OK;
}

/* ---------------------------------------------------------------- ops */

static const char *fill_of(const dot *d, const tg_node *node, const char *cold)
{
    static _Thread_local char buf[32];
    if (!d->hot || !node->fwd_profiled)
        return cold;
    double r = (double)(node->fwd_ns + node->vjp_ns) / (double)d->hot;
    snprintf(buf, sizeof buf, "%.3f 0.550 1.000", 0.667 * (1 - r)); /* blue to red */
    return buf;
}

static void put_site(dot *d, const tg_node *node)
{
    if (node->called)
        put(d, "recorded as %s\\n", node->op->name);
    if (node->file)
        put(d, "at %s:%d\\n", base_name(node->file), node->line);
    if (node->scope) {
        put(d, "scope ");
        put_scope_path(d, node->scope);
        put(d, "\\n");
    }
}

static void op_node(dot *d, const tg_node *node)
{
    char attrs[256] = "", a[32], b[32];
    if (node->op->print_attrs)
        node->op->print_attrs(node, attrs, sizeof attrs);
    int red = d->red ? d->red[node->index] : 0;
    put(d, "  op%lld [shape=box, style=\"rounded,filled\", fillcolor=\"%s\"", (long long)node->index,
        red ? (red == 2 ? "#ff6060" : "#ffb0b0") : fill_of(d, node, "#d9d9d9"));
    if (red)
        put(d, ", color=\"#c00000\", penwidth=2");
    put(d, ", label=\"");
    put_escaped(d, tg__node_name(node));
    if (attrs[0]) {
        put(d, "\\n");
        put_escaped(d, attrs);
    }
    if (node->fwd_profiled)
        put(d, "\\nfwd %s, %s", time_s(a, sizeof a, node->fwd_ns),
            bytes_s(b, sizeof b, node->fwd_bytes));
    if (node->vjp_profiled && d->view == TG_VIEW_FORWARD)
        put(d, "\\nvjp %s, %s", time_s(a, sizeof a, node->vjp_ns),
            bytes_s(b, sizeof b, node->vjp_bytes));
    put(d, "\", tooltip=\"");
    put_site(d, node);
    put(d, "tape index %lld", (long long)node->index);
    if (red == 2)
        put(d, "\\nfirst NaN or Inf");
    put(d, "\"];\n");
}

static void vjp_node(dot *d, const tg_node *node)
{
    char a[32], b[32];
    uint64_t saved = 0;
    for (int m = 0; m < node->n_saved_fwd; m++)
        saved += tensor_bytes(node->saved[m]);
    put(d, "  b%lld [shape=box, style=\"rounded,filled\", fillcolor=\"%s\", label=\"vjp ",
        (long long)node->index, fill_of(d, node, "#fdd0a2"));
    put_escaped(d, tg__node_name(node));
    if (node->vjp_profiled)
        put(d, "\\n%s, %s", time_s(a, sizeof a, node->vjp_ns),
            bytes_s(b, sizeof b, node->vjp_bytes));
    put(d, "\", tooltip=\"");
    put_site(d, node);
    put(d, "reads %d saved tensor%s, %s", node->n_saved_fwd, node->n_saved_fwd == 1 ? "" : "s",
        bytes_s(a, sizeof a, saved));
    if (!node->op->vjp)
        put(d, "\\nno vjp: backward through it fails");
    put(d, "\"];\n");
}

/* The gradient of t: a node named id. */
static void grad_node(dot *d, const char *id, const tg_tensor *t)
{
    char b[32];
    const tg_tensor *g = t->grad;
    bool bad = g && d->red && is_bad(g);
    put(d, "  %s [shape=%s, style=filled, fillcolor=\"%s\"%s, label=\"grad", id,
        t->persistent ? "box" : "ellipse", bad ? "#ff6060" : "#fee6ce",
        bad ? ", color=\"#c00000\"" : "");
    if (t->name) {
        put(d, " ");
        put_escaped(d, t->name);
    } else if (t == d->out && t->numel == 1) {
        put(d, " loss");
    }
    put(d, "\\n%s %s, %s", tg__shape_s(t), short_names[t->dtype],
        bytes_s(b, sizeof b, tensor_bytes(t)));
    if (g && d->opts && d->opts->show_grad_norm)
        put(d, "\\n|grad| = %.4g", l2(g));
    put(d, "\", tooltip=\"dL/d%s%s", t->name ? "" : "tensor ", t->name ? "" : tg__shape_s(t));
    if (t->name)
        put_escaped(d, t->name);
    if (g && d->opts && d->opts->stats)
        put_stats(d, g);
    put(d, "\"];\n");
}

/* Edge labels are xlabels: Debian's Graphviz (2.42) frees the virtual
 * nodes of labelled edges twice in gvFreeLayout when clusters are drawn. */
static void edge(dot *d, const char *from, const char *to, const char *label, const char *style)
{
    put(d, "  %s -> %s", from, to);
    if (label || style) {
        put(d, " [");
        if (label) {
            put(d, "xlabel=\"");
            put_escaped(d, label);
            put(d, "\"%s", style ? ", " : "");
        }
        if (style)
            put(d, "%s", style);
        put(d, "]");
    }
    put(d, ";\n");
}

/* The argument name of input k, when the op takes several and names them. */
static const char *arg_name(const tg_node *node, int k)
{
    if (node->n_in < 2 || !node->op->input_names)
        return NULL;
    for (int i = 0; i <= k; i++)
        if (!node->op->input_names[i])
            return NULL;
    return node->op->input_names[k];
}

#define GRAD_EDGE "color=\"#e6550d\", fontcolor=\"#e6550d\""
#define SAVED_EDGE "style=dashed, color=\"#888888\", arrowhead=empty"

static tg_status forward_part(dot *d, const tg_node *node)
{
    int64_t k = node->index;
    int sc = scope_of(node);
    op_node(d, node);
    for (int i = 0; i < node->n_in; i++) {
        char id[32], to[32];
        if (input_id(d, node->in[i], node, id, sizeof id, true))
            return d->ctx->errcode;
        snprintf(to, sizeof to, "op%lld", (long long)k);
        edge(d, id, to, arg_name(node, i), NULL);
    }
    char id[32], from[32];
    snprintf(id, sizeof id, "t%lld", (long long)k);
    snprintf(from, sizeof from, "op%lld", (long long)k);
    tensor_node(d, id, node->out, d->red ? d->red[k] : 0, false);
    d->tdecl[k] = 1;
    edge(d, from, id, NULL, NULL);
    if (add_member(d, sc, 'o', k, 0) || add_member(d, sc, 't', k, 0))
        return d->ctx->errcode;
    return TG_OK;
}

static tg_status backward_part(dot *d, const tg_node *node)
{
    int64_t k = node->index;
    int sc = scope_of(node);
    char b[32], g[32], id[32];
    snprintf(b, sizeof b, "b%lld", (long long)k);
    snprintf(g, sizeof g, "g%lld", (long long)k);
    vjp_node(d, node);
    grad_node(d, g, node->out);
    edge(d, g, b, NULL, GRAD_EDGE);
    for (int i = 0; i < node->n_in; i++) {
        const tg_tensor *x = node->in[i];
        if (!x->requires_grad)
            continue;
        if (on_tape(d, x)) {
            snprintf(id, sizeof id, "g%lld", (long long)x->node->index);
        } else {
            leaf_id *e = leaf(d, x, node, d->view == TG_VIEW_BOTH);
            if (!e)
                return d->ctx->errcode;
            snprintf(id, sizeof id, "gx%d", e->id);
            if (!e->grad_declared) {
                grad_node(d, id, x);
                e->grad_declared = true;
                if (add_member(d, e->scope, 'y', e->id, 0))
                    return d->ctx->errcode;
            }
        }
        edge(d, b, id, arg_name(node, i), GRAD_EDGE);
    }
    /* what the vjp reads: the inputs and output whose versions it checks, and what forward saved */
    const tg_tensor *reads[TG_MAX_SAVED + 64];
    int n_reads = 0;
    for (int i = 0; i <= node->n_in && n_reads < 64; i++)
        if (node->in_version[i] != TG_VERSION_UNCHECKED)
            reads[n_reads++] = i < node->n_in ? node->in[i] : node->out;
    for (int m = 0; m < node->n_saved_fwd; m++)
        reads[n_reads++] = node->saved[m];
    for (int r = 0; r < n_reads; r++) {
        const tg_tensor *s = reads[r];
        bool dup = false;
        for (int q = 0; q < r && !dup; q++)
            dup = reads[q] == s;
        if (dup)
            continue;
        bool in_graph = on_tape(d, s) || s == d->out;
        for (int i = 0; i < node->n_in && !in_graph; i++)
            in_graph = s == node->in[i];
        if (!in_graph) { /* a tensor only the vjp reads (a mask, softmax probabilities) */
            snprintf(id, sizeof id, "s%lld_%d", (long long)k, r);
            put(d, "  %s [shape=note, style=filled, fillcolor=\"#f2f2f2\", label=\"saved\\n%s %s, ",
                id, tg__shape_s(s), short_names[s->dtype]);
            put(d, "%s\"];\n", bytes_s(g, sizeof g, tensor_bytes(s)));
            if (add_member(d, sc, 's', k, r))
                return d->ctx->errcode;
        } else if (on_tape(d, s)) {
            int64_t j = s->node->index;
            snprintf(id, sizeof id, "t%lld", (long long)j);
            if (!d->tdecl[j]) {
                tensor_node(d, id, s, d->red ? d->red[j] : 0, true);
                d->tdecl[j] = 1;
                if (add_member(d, scope_of(s->node), 't', j, 0))
                    return d->ctx->errcode;
            }
        } else if (input_id(d, s, node, id, sizeof id, true)) {
            return d->ctx->errcode;
        }
        edge(d, id, b, NULL, SAVED_EDGE);
    }
    if (add_member(d, sc, 'b', k, 0) || add_member(d, sc, 'g', k, 0))
        return d->ctx->errcode;
    return TG_OK;
}

/* ---------------------------------------------------------------- clusters */

static void put_member(dot *d, const member *m)
{
    switch (m->kind) {
    case 'o': put(d, " op%lld;", (long long)m->a); break;
    case 't': put(d, " t%lld;", (long long)m->a); break;
    case 'b': put(d, " b%lld;", (long long)m->a); break;
    case 'g': put(d, " g%lld;", (long long)m->a); break;
    case 'x': put(d, " x%lld;", (long long)m->a); break;
    case 'y': put(d, " gx%lld;", (long long)m->a); break;
    default: put(d, " s%lld_%d;", (long long)m->a, m->b); break;
    }
}

static void put_cluster(dot *d, int sid, const size_t *first, const size_t *count,
                        const bool *used, int indent)
{
    const tg_scope *s = d->scopes[sid];
    put(d, "%*ssubgraph cluster_%d {\n%*s  label=\"", indent, "", sid, indent, "");
    put_escaped(d, s->name);
    put(d, "\"; style=rounded; color=\"#7f7f7f\"; fontsize=11;\n%*s ", indent, "");
    for (size_t i = 0; i < count[sid]; i++)
        put_member(d, &d->members[first[sid] + i]);
    put(d, "\n");
    for (int c = sid + 1; c < d->n_scopes; c++)
        if (used[c] && d->scopes[c] && d->scopes[c]->parent == s)
            put_cluster(d, c, first, count, used, indent + 2);
    put(d, "%*s}\n", indent, "");
}

/* The scopes of the drawn nodes (with their ancestors), each a cluster of its members. */
static tg_status clusters(dot *d)
{
    tg_ctx *ctx = d->ctx;
    int n = d->n_scopes;
    if (!n || !d->n_members)
        return TG_OK;
    size_t *first = tg__arena_alloc(ctx, 2 * (size_t)n * sizeof *first);
    bool *used = tg__arena_alloc(ctx, (size_t)n);
    member *sorted = tg__arena_alloc(ctx, d->n_members * sizeof *sorted);
    if (!first || !used || !sorted)
        return ctx->errcode;
    size_t *count = first + n;
    memset(first, 0, 2 * (size_t)n * sizeof *first);
    memset(used, 0, (size_t)n);
    for (size_t i = 0; i < d->n_members; i++)
        count[d->members[i].scope]++;
    for (int s = 1; s < n; s++)
        first[s] = first[s - 1] + count[s - 1];
    size_t *fill = tg__arena_alloc(ctx, (size_t)n * sizeof *fill);
    if (!fill)
        return ctx->errcode;
    memcpy(fill, first, (size_t)n * sizeof *fill);
    for (size_t i = 0; i < d->n_members; i++)
        sorted[fill[d->members[i].scope]++] = d->members[i];
    d->members = sorted;
    for (int s = 0; s < n; s++)
        for (const tg_scope *p = count[s] ? d->scopes[s] : NULL; p && !used[p->id]; p = p->parent)
            used[p->id] = true;
    for (int s = 0; s < n; s++)
        if (used[s] && d->scopes[s]->depth == 1)
            put_cluster(d, s, first, count, used, 2);
    return TG_OK;
}

/* ---------------------------------------------------------------- collapsed view */

static int group_of(const tg_node *node)
{
    const tg_scope *s = node->scope;
    while (s && s->parent)
        s = s->parent;
    return s ? s->id : -1;
}

static void group_add(const tg_tensor **list, int *n, const tg_tensor *t)
{
    for (int i = 0; i < *n && i < GROUP_LIST; i++)
        if (list[i] == t)
            return;
    if (*n < GROUP_LIST)
        list[*n] = t;
    (*n)++;
}

static void put_shapes(dot *d, const char *what, const tg_tensor *const *list, int n)
{
    put(d, "\\n%s", what);
    for (int i = 0; i < n && i < GROUP_LIST; i++)
        put(d, "%s%s", i ? ", " : " ", tg__shape_s(list[i]));
    if (n > GROUP_LIST)
        put(d, " +%d", n - GROUP_LIST);
}

/* An edge between two collapsed entities, once. Entities: a scope is
 * -(id + 1) - 2^40, a tensor on the tape its index, a leaf 2^40 + id. */
static tg_status collapsed_edge(dot *d, int64_t src, int64_t dst, const char *from,
                                const char *to, const tg_tensor *t)
{
    edge_key k = {src, dst};
    edge_seen *e = NULL;
    HASH_FIND(hh, d->edges, &k, sizeof k, e);
    if (e)
        return TG_OK;
    if (!(e = tg__arena_alloc(d->ctx, sizeof *e)))
        return d->ctx->errcode;
    memset(e, 0, sizeof *e);
    e->k = k;
    map_oom = 0;
    HASH_ADD(hh, d->edges, k, sizeof k, e);
    if (map_oom)
        return d->ctx->errcode ? d->ctx->errcode : tg__oom(d->ctx, sizeof(UT_hash_table));
    edge(d, from, to, tg__shape_s(t), NULL);
    return TG_OK;
}

#define ENT_SCOPE(g) (-((int64_t)(g) + 1) - ((int64_t)1 << 40))
#define ENT_LEAF(i) (((int64_t)1 << 40) + (i))

static tg_status collapsed_inputs(dot *d, const tg_node *node, group *groups)
{
    int g = group_of(node);
    int64_t k = node->index;
    char from[32], to[32];
    if (g >= 0)
        snprintf(to, sizeof to, "s%d", g);
    else
        snprintf(to, sizeof to, "op%lld", (long long)k);
    for (int i = 0; i < node->n_in; i++) {
        const tg_tensor *t = node->in[i];
        int64_t src;
        if (on_tape(d, t)) {
            int gj = group_of(t->node);
            if (gj >= 0 && gj == g)
                continue;
            if (gj >= 0) {
                snprintf(from, sizeof from, "s%d", gj);
                group_add(groups[gj].outs, &groups[gj].n_outs, t);
                src = ENT_SCOPE(gj);
            } else {
                snprintf(from, sizeof from, "t%lld", (long long)t->node->index);
                src = t->node->index;
            }
        } else {
            bool param = t->persistent && t->kind == TG_KIND_PARAM;
            leaf_id *e = leaf(d, t, node, !(param && g >= 0));
            if (!e)
                return d->ctx->errcode;
            if (param && g >= 0) {
                if (e->counted_group != g)
                    groups[g].params += t->numel;
                e->counted_group = g;
                continue;
            }
            snprintf(from, sizeof from, "x%d", e->id);
            src = ENT_LEAF(e->id);
        }
        if (g >= 0 && !t->persistent)
            group_add(groups[g].ins, &groups[g].n_ins, t);
        if (collapsed_edge(d, src, g >= 0 ? ENT_SCOPE(g) : k, from, to, t))
            return d->ctx->errcode;
    }
    return TG_OK;
}

static void group_node(dot *d, int g, const group *gr)
{
    char a[32], b[32];
    put(d, "  s%d [shape=box3d, style=filled, fillcolor=\"#c6dbef\", label=\"", g);
    put_escaped(d, d->scopes[g]->name);
    put_shapes(d, "in", gr->ins, gr->n_ins);
    put_shapes(d, "out", gr->outs, gr->n_outs);
    put(d, "\\nparams %lld\\nactivations %s", (long long)gr->params,
        bytes_s(a, sizeof a, gr->act_bytes));
    if (gr->fwd_ns)
        put(d, "\\nfwd %s, vjp %s", time_s(a, sizeof a, gr->fwd_ns), time_s(b, sizeof b, gr->vjp_ns));
    put(d, "\", tooltip=\"scope ");
    put_escaped(d, d->scopes[g]->name);
    put(d, ": %lld ops\"];\n", (long long)gr->ops);
}

static tg_status write_collapsed(dot *d)
{
    tg_ctx *ctx = d->ctx;
    group *groups = tg__arena_alloc(ctx, (size_t)(d->n_scopes ? d->n_scopes : 1) * sizeof *groups);
    if (!groups)
        return ctx->errcode;
    memset(groups, 0, (size_t)(d->n_scopes ? d->n_scopes : 1) * sizeof *groups);
    for (int64_t k = 0; k <= d->last; k++) {
        if (!d->reach[k])
            continue;
        const tg_node *node = ctx->tape[k];
        int g = group_of(node);
        if (g < 0) {
            op_node(d, node);
            char id[32], from[32];
            snprintf(id, sizeof id, "t%lld", (long long)k);
            snprintf(from, sizeof from, "op%lld", (long long)k);
            tensor_node(d, id, node->out, d->red ? d->red[k] : 0, false);
            edge(d, from, id, NULL, NULL);
        } else {
            group *gr = &groups[g];
            gr->used = true;
            gr->ops++;
            gr->act_bytes += tensor_bytes(node->out);
            gr->fwd_ns += node->fwd_ns;
            gr->vjp_ns += node->vjp_ns;
        }
        if (collapsed_inputs(d, node, groups))
            return ctx->errcode;
    }
    const tg_node *lastn = ctx->tape[d->last];
    int gl = group_of(lastn);
    if (gl >= 0) { /* the output, after its scope */
        char id[32], from[32];
        group_add(groups[gl].outs, &groups[gl].n_outs, lastn->out);
        snprintf(id, sizeof id, "t%lld", (long long)d->last);
        snprintf(from, sizeof from, "s%d", gl);
        tensor_node(d, id, lastn->out, d->red ? d->red[d->last] : 0, false);
        edge(d, from, id, NULL, NULL);
    }
    for (int g = 0; g < d->n_scopes; g++)
        if (groups[g].used)
            group_node(d, g, &groups[g]);
    return TG_OK;
}

/* ---------------------------------------------------------------- the graph */

/* Anomaly mode: the first op whose output is not finite (or a leaf that is
 * not) and every op downstream of it. */
static void mark_red(dot *d)
{
    tg_ctx *ctx = d->ctx;
    bool found = false;
    for (int64_t k = 0; k <= d->last; k++) {
        if (!d->reach[k])
            continue;
        const tg_node *node = ctx->tape[k];
        for (int i = 0; i < node->n_in && !d->red[k]; i++) {
            const tg_tensor *t = node->in[i];
            if (on_tape(d, t) ? d->red[t->node->index] != 0 : is_bad(t))
                d->red[k] = 1;
        }
        if (!d->red[k] && !found && is_bad(node->out)) {
            d->red[k] = 2;
            found = true;
        }
    }
}

static tg_status prepare(dot *d)
{
    tg_ctx *ctx = d->ctx;
    size_t n = (size_t)(d->last + 1);
    d->reach = tg__arena_alloc(ctx, n);
    d->tdecl = tg__arena_alloc(ctx, n);
    d->scopes = tg__arena_alloc(ctx, (size_t)(ctx->scope_next ? ctx->scope_next : 1) *
                                         sizeof *d->scopes);
    if (!d->reach || !d->tdecl || !d->scopes)
        return ctx->errcode;
    d->n_scopes = ctx->scope_next;
    memset(d->scopes, 0, (size_t)(ctx->scope_next ? ctx->scope_next : 1) * sizeof *d->scopes);
    memset(d->tdecl, 0, n);
    memset(d->reach, d->out ? 0 : 1, n);
    d->reach[d->last] = true;
    for (int64_t i = d->last; i >= 0; i--) {
        if (!d->reach[i])
            continue;
        const tg_node *node = ctx->tape[i];
        for (int k = 0; k < node->n_in; k++)
            if (on_tape(d, node->in[k]))
                d->reach[node->in[k]->node->index] = true;
    }
    for (int64_t i = 0; i <= d->last; i++) {
        if (!d->reach[i])
            continue;
        const tg_node *node = ctx->tape[i];
        d->n_ops++;
        uint64_t t = node->fwd_ns + node->vjp_ns;
        d->hot = t > d->hot ? t : d->hot;
        for (const tg_scope *s = node->scope; s; s = s->parent)
            if (s->id < d->n_scopes)
                d->scopes[s->id] = s;
    }
    int above = d->opts && d->opts->collapse_above ? d->opts->collapse_above : TG_DOT_COLLAPSE_ABOVE;
    if (d->view != TG_VIEW_COLLAPSED && above >= 0 && d->n_ops > above) {
        d->view = TG_VIEW_COLLAPSED;
        d->auto_collapsed = true;
    }
    if (ctx->anomaly) {
        if (!(d->red = tg__arena_alloc(ctx, n)))
            return ctx->errcode;
        memset(d->red, 0, n);
        mark_red(d);
    }
    return TG_OK;
}

static void header(dot *d)
{
    static const char *const views[] = {"forward", "backward", "forward and backward", "collapsed"};
    put(d, "digraph tapegrad {\n  rankdir=%s;\n  fontname=\"Helvetica\";\n"
           "  node [fontname=\"Helvetica\", fontsize=10];\n  edge [fontname=\"Helvetica\", fontsize=9];\n",
        d->opts && d->opts->left_to_right ? "LR" : "TB");
    bool title = d->opts && d->opts->title;
    if (!title && !d->auto_collapsed)
        return;
    put(d, "  label=\"");
    if (title)
        put_escaped(d, d->opts->title);
    if (d->auto_collapsed)
        put(d, "%s%s view: %lld ops is above the limit of %d; each box is a top-level scope",
            title ? "\\n" : "", views[d->view], (long long)d->n_ops,
            d->opts && d->opts->collapse_above ? d->opts->collapse_above : TG_DOT_COLLAPSE_ABOVE);
    put(d, "\";\n  labelloc=t;\n");
}

static tg_status write_graph(dot *d)
{
    tg_ctx *ctx = d->ctx;
    const tg_tensor *out = d->out;
    if (out && (!out->node || out->node->index < 0)) { /* a leaf alone */
        header(d);
        char id[32];
        tg_status st = input_id(d, out, NULL, id, sizeof id, true);
        put(d, "}\n");
        return st;
    }
    d->last = out ? out->node->index : (int64_t)ctx->tape_len - 1;
    if (d->last < 0) { /* an empty tape */
        header(d);
        put(d, "}\n");
        return TG_OK;
    }
    if (prepare(d))
        return ctx->errcode;
    header(d);
    if (d->view == TG_VIEW_COLLAPSED) {
        if (write_collapsed(d))
            return ctx->errcode;
        put(d, "}\n");
        return ctx->errcode;
    }
    if (d->view != TG_VIEW_BACKWARD)
        for (int64_t i = 0; i <= d->last; i++)
            if (d->reach[i] && forward_part(d, ctx->tape[i]))
                return ctx->errcode;
    if (d->view != TG_VIEW_FORWARD)
        for (int64_t i = d->last; i >= 0; i--)
            if (d->reach[i] && backward_part(d, ctx->tape[i]))
                return ctx->errcode;
    if (clusters(d))
        return ctx->errcode;
    put(d, "}\n");
    return ctx->errcode;
}

/* Runs the writer with the map allocator set and the arena rewound afterwards. */
static tg_status run(tg_ctx *ctx, const char *who, dot *d)
{
    const tg_tensor *out = d->out;
    if (out && tg__check_tensor(ctx, who, "out", out))
        return ctx->errcode;
    if (out && out->node && (out->node->index < 0 || (size_t)out->node->index >= ctx->tape_len ||
                             ctx->tape[out->node->index] != out->node))
        return TG_ERROR(ctx, TG_ESTATE, "%s: the tensor's node is not on the tape "
                                         "(was the context reset since it was made?)", who);
    const tg_dot_opts *o = d->opts;
    if (o && (o->view < TG_VIEW_FORWARD || o->view > TG_VIEW_COLLAPSED))
        return TG_ERROR(ctx, TG_EINVAL, "%s: view %d is none of forward (0), backward (1), "
                                         "both (2) and collapsed (3)", who, (int)o->view);
    d->view = o ? o->view : TG_VIEW_FORWARD;
    tg__mark m = tg__mark_get(ctx);
    tg_ctx *prev = map_ctx;
    map_ctx = ctx;
    tg_status st = write_graph(d);
    HASH_CLEAR(hh, d->leaves);
    HASH_CLEAR(hh, d->edges);
    map_ctx = prev;
    tg__mark_rewind(ctx, m);
    return st ? st : (tg_status)ctx->errcode;
}

tg_status tg_dot_write(tg_ctx *ctx, const tg_tensor *out, FILE *f, const tg_dot_opts *opts)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (!f)
        return TG_ERROR(ctx, TG_EINVAL, "dot_write: the file is NULL");
    dot d = {.ctx = ctx, .f = f, .opts = opts, .out = out};
    tg_status st = run(ctx, "dot_write", &d);
    if (st == TG_OK && (d.io_failed || fflush(f) != 0 || ferror(f)))
        st = TG_ERROR(ctx, TG_EIO, "dot_write: writing the graph failed");
    return st;
}

tg_status tg_dot_save(tg_ctx *ctx, const tg_tensor *out, const char *path, const tg_dot_opts *opts)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (!path)
        return TG_ERROR(ctx, TG_EINVAL, "dot_save: path is NULL");
    FILE *f = fopen(path, "w");
    if (!f)
        return TG_ERROR(ctx, TG_EIO, "dot_save: cannot open '%s' for writing: %s", path,
                        strerror(errno));
    tg_status st = tg_dot_write(ctx, out, f, opts);
    if (fclose(f) != 0 && st == TG_OK)
        st = TG_ERROR(ctx, TG_EIO, "dot_save: closing '%s' failed: %s", path, strerror(errno));
    return st;
}

/* The Graphviz output format an extension names, or NULL. */
static const char *format_of(const char *path)
{
    const char *dotp = strrchr(path, '.');
    if (!dotp || strchr(dotp, '/'))
        return NULL;
    static const char *const exts[][2] = {{".svg", "svg"}, {".png", "png"}, {".pdf", "pdf"},
                                          {".dot", "dot"}, {".gv", "dot"}};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (strcmp(dotp, exts[i][0]) == 0)
            return exts[i][1];
    return NULL;
}

static GVC_t *gvc_shared;
static pthread_once_t gvc_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t gvc_lock = PTHREAD_MUTEX_INITIALIZER;

static void gvc_make(void) { gvc_shared = gvContext(); }

static tg_status layout_and_render(tg_ctx *ctx, const char *text, const char *format,
                                   const char *path)
{
    pthread_once(&gvc_once, gvc_make);
    GVC_t *gvc = gvc_shared;
    pthread_mutex_lock(&gvc_lock);
    tg_status st = TG_OK;
    Agraph_t *g = agmemread(text);
    if (!g) {
        pthread_mutex_unlock(&gvc_lock);
        return TG_ERROR(ctx, TG_EFORMAT, "dot_render: Graphviz rejected the graph's text");
    }
    if (!gvc) {
        st = TG_ERROR(ctx, TG_ENOMEM, "dot_render: Graphviz could not make a context");
    } else if (gvLayout(gvc, g, "dot") != 0) {
        st = TG_ERROR(ctx, TG_EIO, "dot_render: Graphviz could not lay the graph out");
    } else {
        FILE *f = fopen(path, "wb");
        if (!f) {
            st = TG_ERROR(ctx, TG_EIO, "dot_render: cannot open '%s' for writing: %s", path,
                          strerror(errno));
        } else {
            if (gvRender(gvc, g, format, f) != 0)
                st = TG_ERROR(ctx, TG_EIO, "dot_render: Graphviz could not render %s (is its "
                                           "plugin installed?)", format);
            if (fclose(f) != 0 && st == TG_OK)
                st = TG_ERROR(ctx, TG_EIO, "dot_render: writing '%s' failed: %s", path,
                              strerror(errno));
        }
        gvFreeLayout(gvc, g);
    }
    agclose(g);
    pthread_mutex_unlock(&gvc_lock);
    return st;
}

tg_status tg_dot_render(tg_ctx *ctx, const tg_tensor *out, const char *path,
                        const tg_dot_opts *opts)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (!path)
        return TG_ERROR(ctx, TG_EINVAL, "dot_render: path is NULL");
    const char *format = format_of(path);
    if (!format)
        return TG_ERROR(ctx, TG_EINVAL, "dot_render: '%s' does not end in .svg, .png, .pdf, "
                                         ".dot or .gv", path);
    if (strcmp(format, "dot") == 0)
        return tg_dot_save(ctx, out, path, opts);
    dot d = {.ctx = ctx, .opts = opts, .out = out};
    tg_status st = run(ctx, "dot_render", &d);
    if (st == TG_OK)
        st = layout_and_render(ctx, d.buf, format, path);
    tg__free(ctx, d.buf, d.cap);
    return st;
}
