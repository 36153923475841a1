/*
 * dot.c: the recorded graph of a tensor as Graphviz dot text.
 *
 * Node ids are stable: op k on the tape is "op<k>", its output "t<k>", and
 * leaves (inputs, parameters, constants) are "x0", "x1", ... in the order
 * the walk over the tape first meets them; a uthash map from tensor to id
 * (allocated through the context's allocator) remembers them. Every label
 * is a quoted string with quotes, backslashes and control characters
 * escaped, so any tensor name is safe.
 */
#include "impl.h"

#include <errno.h>
#include <math.h>

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
    UT_hash_handle hh;
} leaf_id;

typedef struct dot {
    tg_ctx *ctx;
    FILE *f;
    const tg_dot_opts *opts;
    const tg_tensor *out;
    leaf_id *leaves;
    int n_leaves;
} dot;

/* Writes s as the inside of a dot double-quoted string. */
static void put_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch < 0x20 || ch == 0x7f)
            fputc(' ', f);
        else
            fputc(ch, f);
    }
}

static void tensor_label(dot *d, const tg_tensor *t)
{
    FILE *f = d->f;
    fputs("label=\"", f);
    if (t->name) {
        put_escaped(f, t->name);
        fputs("\\n", f);
    } else if (t == d->out && t->numel == 1) {
        fputs("loss\\n", f);
    }
    static const char *const short_names[] = {"f32", "f64", "i64"};
    fprintf(f, "%s %s", tg__shape_s(t), short_names[t->dtype]);
    if (d->opts && d->opts->show_grad_norm && t->grad) {
        double s = 0;
        for (int64_t i = 0; i < t->grad->numel; i++)
            s += tg_get(t->grad, i) * tg_get(t->grad, i);
        fprintf(f, "\\n|grad| = %.4g", sqrt(s));
    }
    fputc('"', f);
}

static void tensor_node(dot *d, const char *id, const tg_tensor *t)
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
    fprintf(d->f, "  %s [%s, ", id, style);
    tensor_label(d, t);
    fputs("];\n", d->f);
}

static void op_node(dot *d, const tg_node *node)
{
    char attrs[256] = "";
    if (node->op->print_attrs)
        node->op->print_attrs(node, attrs, sizeof attrs);
    fprintf(d->f, "  op%lld [shape=box, style=\"rounded,filled\", fillcolor=\"#d9d9d9\", label=\"",
            (long long)node->index);
    put_escaped(d->f, node->op->name);
    if (attrs[0]) {
        fputs("\\n", d->f);
        put_escaped(d->f, attrs);
    }
    fputs("\"];\n", d->f);
}

/* The id of an input tensor, emitting its node the first time a leaf is met. */
static tg_status input_id(dot *d, const tg_tensor *t, char *id, size_t size)
{
    if (t->node && t->node->index >= 0) {
        snprintf(id, size, "t%lld", (long long)t->node->index);
        return TG_OK;
    }
    leaf_id *e = NULL;
    HASH_FIND_PTR(d->leaves, &t, e);
    if (!e) {
        if (!(e = tg__arena_alloc(d->ctx, sizeof *e)))
            return d->ctx->errcode;
        memset(e, 0, sizeof *e);
        e->t = t;
        e->id = d->n_leaves++;
        map_oom = 0;
        HASH_ADD_PTR(d->leaves, t, e);
        if (map_oom)
            return d->ctx->errcode ? d->ctx->errcode : tg__oom(d->ctx, sizeof(UT_hash_table));
        snprintf(id, size, "x%d", e->id);
        tensor_node(d, id, t);
        return TG_OK;
    }
    snprintf(id, size, "x%d", e->id);
    return TG_OK;
}

static tg_status write_graph(dot *d)
{
    tg_ctx *ctx = d->ctx;
    const tg_tensor *out = d->out;
    fprintf(d->f, "digraph tapegrad {\n  rankdir=%s;\n  fontname=\"Helvetica\";\n  node [fontname=\"Helvetica\", fontsize=10];\n",
            d->opts && d->opts->left_to_right ? "LR" : "TB");
    if (d->opts && d->opts->title) {
        fputs("  label=\"", d->f);
        put_escaped(d->f, d->opts->title);
        fputs("\";\n  labelloc=t;\n", d->f);
    }
    tg_node *last = out->node;
    if (!last || last->index < 0) {
        char id[32];
        tg_status st = input_id(d, out, id, sizeof id);
        fputs("}\n", d->f);
        return st;
    }
    bool *reach = tg__arena_alloc(ctx, (size_t)(last->index + 1));
    if (!reach)
        return ctx->errcode;
    memset(reach, 0, (size_t)(last->index + 1));
    reach[last->index] = true;
    for (int64_t i = last->index; i >= 0; i--) {
        if (!reach[i])
            continue;
        const tg_node *node = ctx->tape[i];
        for (int k = 0; k < node->n_in; k++)
            if (node->in[k]->node && node->in[k]->node->index >= 0)
                reach[node->in[k]->node->index] = true;
    }
    for (int64_t i = 0; i <= last->index; i++) {
        if (!reach[i])
            continue;
        const tg_node *node = ctx->tape[i];
        op_node(d, node);
        for (int k = 0; k < node->n_in; k++) {
            char id[32];
            if (input_id(d, node->in[k], id, sizeof id))
                return ctx->errcode;
            fprintf(d->f, "  %s -> op%lld;\n", id, (long long)i);
        }
        char id[32];
        snprintf(id, sizeof id, "t%lld", (long long)i);
        tensor_node(d, id, node->out);
        fprintf(d->f, "  op%lld -> %s;\n", (long long)i, id);
    }
    fputs("}\n", d->f);
    return TG_OK;
}

tg_status tg_dot_write(tg_ctx *ctx, const tg_tensor *out, FILE *f, const tg_dot_opts *opts)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (!f)
        return TG_ERROR(ctx, TG_EINVAL, "dot_write: the file is NULL");
    if (tg__check_tensor(ctx, "dot_write", "out", out))
        return ctx->errcode;
    if (out->node && (out->node->index < 0 || (size_t)out->node->index >= ctx->tape_len ||
                      ctx->tape[out->node->index] != out->node))
        return TG_ERROR(ctx, TG_ESTATE, "dot_write: the tensor's node is not on the tape "
                                         "(was the context reset since it was made?)");
    dot d = {ctx, f, opts, out, NULL, 0};
    tg__mark m = tg__mark_get(ctx);
    tg_ctx *prev = map_ctx;
    map_ctx = ctx;
    tg_status st = write_graph(&d);
    HASH_CLEAR(hh, d.leaves);
    map_ctx = prev;
    tg__mark_rewind(ctx, m);
    if (st == TG_OK && (fflush(f) != 0 || ferror(f)))
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
