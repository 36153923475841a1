/*
 * test_graph.c: the graph views (forward, backward, both, collapsed),
 * scopes, call names, argument names, values, anomaly colouring, the
 * profile and rendering through libgvc. Every view is parsed back with
 * Graphviz's own parser (libcgraph) and its nodes, edges and clusters
 * counted for the notes' 1-D network, LeNet-5 and a 10,000-op chain.
 */
#include <graphviz/cgraph.h>
#include <stdio.h>
#include <string.h>

#include "seed1d_net.h"
#include "testutil.h"

static char *dot_text(tg_ctx *ctx, const tg_tensor *out, const tg_dot_opts *opts)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_int_eq(tg_dot_write(ctx, out, f, opts), TG_OK);
    fclose(f);
    return text;
}

static int count_clusters(Agraph_t *g)
{
    int n = 0;
    for (Agraph_t *s = agfstsubg(g); s; s = agnxtsubg(s))
        n += (strncmp(agnameof(s), "cluster", 7) == 0) + count_clusters(s);
    return n;
}

typedef struct counts { int nodes, edges, clusters; } counts;

/* Parses the view back and counts what Graphviz sees. */
static counts view_counts(tg_ctx *ctx, const tg_tensor *out, tg_dot_view view, char **keep)
{
    tg_dot_opts o = {.view = view};
    char *text = dot_text(ctx, out, &o);
    Agraph_t *g = agmemread(text);
    ck_assert_msg(g != NULL, "libcgraph rejected:\n%s", text);
    counts c = {agnnodes(g), agnedges(g), count_clusters(g)};
    agclose(g);
    if (keep)
        *keep = text;
    else
        free(text);
    return c;
}

#define ck_counts(c, n, e, k)                                                             \
    do {                                                                                  \
        counts c_ = (c);                                                                  \
        ck_assert_msg(c_.nodes == (n) && c_.edges == (e) && c_.clusters == (k),           \
                      "%s: %d nodes, %d edges, %d clusters; expected %d, %d, %d", #c,     \
                      c_.nodes, c_.edges, c_.clusters, (n), (e), (k));                    \
    } while (0)

/* ---------------------------------------------------------------- the notes' 1-D network */

static tg_tensor *seed1d_loss(tg_ctx *ctx, seed1d *m)
{
    ck_assert_int_eq(seed1d_init(ctx, m, TG_F32), TG_OK);
    tg_tensor *x = tg_randn(ctx, TG_F32, TG_SHAPE(3, 1, 785), 0, 1);
    tg_tensor *y = tg_from_f64(ctx, TG_F32, TG_SHAPE(3, 1), (const double[]){1, 0, 1});
    tg_scope_push(ctx, "model");
    tg_tensor *p = seed1d_forward(ctx, m, x);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "loss");
    tg_tensor *loss = tg_bce(ctx, p, y, TG_MEAN);
    tg_scope_pop(ctx);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    return loss;
}

/* What the backward view should hold, from the tape's own records. */
static counts backward_counts(tg_node *last)
{
    tg_node *todo[64], *seen[64];
    const tg_tensor *leaves[64], *reads[256];
    int n_todo = 0, n_seen = 0, n_leaves = 0, n_reads = 0;
    counts c = {0, 0, 0};
    todo[n_todo++] = last;
    while (n_todo) {
        tg_node *n = todo[--n_todo];
        bool dup = false;
        for (int i = 0; i < n_seen; i++)
            dup |= seen[i] == n;
        if (dup)
            continue;
        seen[n_seen++] = n;
        c.nodes += 2; /* the vjp and its output's gradient */
        c.edges += 1;
        const tg_tensor *mine[16];
        int n_mine = 0;
        for (int i = 0; i <= n->n_in; i++)
            if (n->in_version[i] != TG_VERSION_UNCHECKED)
                mine[n_mine++] = i < n->n_in ? n->in[i] : n->out;
        for (int i = 0; i < n->n_saved_fwd; i++)
            mine[n_mine++] = n->saved[i];
        for (int i = 0; i < n_mine; i++) {
            bool again = false;
            for (int j = 0; j < i; j++)
                again |= mine[j] == mine[i];
            if (again)
                continue;
            c.edges++;
            bool known = false;
            for (int j = 0; j < n_reads; j++)
                known |= reads[j] == mine[i];
            if (!known)
                reads[n_reads++] = mine[i];
        }
        for (int i = 0; i < n->n_in; i++) {
            const tg_tensor *x = n->in[i];
            c.edges += x->requires_grad;
            if (x->node)
                todo[n_todo++] = x->node;
            bool known = !x->requires_grad || x->node;
            for (int j = 0; j < n_leaves && !known; j++)
                known = leaves[j] == x;
            if (!known)
                leaves[n_leaves++] = x;
        }
    }
    c.nodes += n_leaves + n_reads;
    return c;
}

START_TEST(seed1d_views)
{
    tg_ctx *ctx = tg_ctx_new(11);
    seed1d m;
    tg_tensor *loss = seed1d_loss(ctx, &m);
    /* forward: 9 recorded ops (the input's pad needs no gradient), their
     * outputs, 6 parameters, the padded input and the labels; one edge per
     * input (3+1+1+1+3+1+3+1+2) and per output */
    ck_counts(view_counts(ctx, loss, TG_VIEW_FORWARD, NULL), 9 + 9 + 8, 16 + 9, 2);
    /* backward: 9 vjps, 9 output gradients and 6 parameter gradients, and
     * each tensor a vjp reads (whose version the tape checks, or saved);
     * edges: a gradient into each vjp, one out per input that requires
     * grad, one per tensor read */
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    char *text;
    counts b = view_counts(ctx, loss, TG_VIEW_BACKWARD, &text);
    ck_assert(strstr(text, "vjp conv1d") != NULL);
    ck_assert(strstr(text, "label=\"weight\"") != NULL);
    free(text);
    counts both = view_counts(ctx, loss, TG_VIEW_BOTH, NULL);
    ck_counts(b, b.nodes, b.edges, 2);
    /* both = forward + the backward view's vjp and gradient nodes; the saved
     * tensors are forward nodes already */
    ck_assert_int_eq(both.nodes, 26 + 9 + 15);
    ck_assert_int_eq(both.edges, 25 + b.edges);
    counts want = backward_counts(loss->node);
    ck_counts(b, want.nodes, want.edges, 2);
    ck_counts(b, 33, 34, 2);
    /* collapsed: the two scopes, the input and labels, the loss */
    ck_counts(view_counts(ctx, loss, TG_VIEW_COLLAPSED, NULL), 2 + 2 + 1, 4, 0);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(called_names_and_arguments)
{
    tg_ctx *ctx = tg_ctx_new(11);
    seed1d m;
    tg_tensor *loss = seed1d_loss(ctx, &m);
    char *text = dot_text(ctx, loss, NULL);
    Agraph_t *g = agmemread(text);
    ck_assert_ptr_nonnull(g);
    Agnode_t *flat = agnode(g, "op3", 0); /* pad is not recorded: conv, relu, pool, flatten */
    ck_assert_ptr_nonnull(flat);
    ck_assert_str_eq(agget(flat, "label"), "flatten\\n(3, 393)");
    ck_assert(strstr(agget(flat, "tooltip"), "recorded as reshape") != NULL);
    ck_assert(strstr(agget(flat, "tooltip"), "seed1d_net.h:") != NULL);
    ck_assert(strstr(agget(flat, "tooltip"), "scope model") != NULL);
    Agnode_t *conv = agnode(g, "op0", 0);
    ck_assert(strstr(agget(conv, "tooltip"), "recorded as") == NULL); /* called as recorded */
    /* every edge into conv1d and linear names its argument */
    int named = 0;
    for (Agnode_t *n = agfstnode(g); n; n = agnxtnode(g, n))
        for (Agedge_t *e = agfstin(g, n); e; e = agnxtin(g, e)) {
            char *l = agget(e, "xlabel");
            named += l && (strcmp(l, "x") == 0 || strcmp(l, "weight") == 0 ||
                           strcmp(l, "bias") == 0);
        }
    ck_assert_int_eq(named, 9);
    agclose(g);
    free(text);
    /* sub_scalar is drawn as called, add_scalar in the tooltip, whichever
     * order the compiler evaluates nested calls in */
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_tensor *y = tg_sum(ctx, tg_sub_scalar(ctx, tg_exp(ctx, tg_transpose(ctx, tg_reshape(ctx, w, TG_SHAPE(1, 2)), 0, 1)), 1));
    text = dot_text(ctx, y, NULL);
    ck_assert(strstr(text, "label=\"sub_scalar\\nc=-1\"") || strstr(text, "label=\"sub_scalar"));
    ck_assert(strstr(text, "recorded as add_scalar") != NULL);
    ck_assert(strstr(text, "label=\"transpose") != NULL);
    ck_assert(strstr(text, "recorded as permute") != NULL);
    ck_assert(strstr(text, "label=\"exp\"") != NULL);
    free(text);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- LeNet-5 */

typedef struct lenet { tg_tensor *p[10]; } lenet;

static tg_tensor *param(tg_ctx *ctx, int ndim, const int64_t *shape, const char *name, double fan_in)
{
    tg_tensor *p = tg_param(ctx, TG_F32, ndim, shape, name);
    double bound = 1 / sqrt(fan_in);
    tg_assign(ctx, p, tg_rand(ctx, TG_F32, ndim, shape, -bound, bound));
    return p;
}

static void lenet_init(tg_ctx *ctx, lenet *m)
{
    m->p[0] = param(ctx, TG_SHAPE(6, 1, 5, 5), "conv1.weight", 25);
    m->p[1] = param(ctx, TG_SHAPE(6), "conv1.bias", 25);
    m->p[2] = param(ctx, TG_SHAPE(16, 6, 5, 5), "conv2.weight", 150);
    m->p[3] = param(ctx, TG_SHAPE(16), "conv2.bias", 150);
    m->p[4] = param(ctx, TG_SHAPE(120, 400), "fc1.weight", 400);
    m->p[5] = param(ctx, TG_SHAPE(120), "fc1.bias", 400);
    m->p[6] = param(ctx, TG_SHAPE(84, 120), "fc2.weight", 120);
    m->p[7] = param(ctx, TG_SHAPE(84), "fc2.bias", 120);
    m->p[8] = param(ctx, TG_SHAPE(10, 84), "fc3.weight", 84);
    m->p[9] = param(ctx, TG_SHAPE(10), "fc3.bias", 84);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
}

/* One scope per layer: 13 ops in 7 scopes. */
static tg_tensor *lenet_loss(tg_ctx *ctx, const lenet *m, int64_t n)
{
    tg_tensor *x = tg_set_name(ctx, tg_randn(ctx, TG_F32, TG_SHAPE(n, 1, 28, 28), 0, 1), "x");
    tg_tensor *t = tg_set_name(ctx, tg_zeros(ctx, TG_I64, TG_SHAPE(n)), "target");
    for (int64_t i = 0; i < n; i++)
        tg_set(t, i, (double)(i % 10));
    tg_scope_push(ctx, "conv1");
    tg_tensor *h = tg_max_pool2d(ctx, tg_relu(ctx, tg_conv2d(ctx, x, m->p[0], m->p[1], 1, 2, 1, 1)), 2);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "conv2");
    h = tg_max_pool2d(ctx, tg_relu(ctx, tg_conv2d(ctx, h, m->p[2], m->p[3], 1, 0, 1, 1)), 2);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "flatten");
    h = tg_flatten(ctx, h, 1, -1);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "fc1");
    h = tg_relu(ctx, tg_linear(ctx, h, m->p[4], m->p[5]));
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "fc2");
    h = tg_relu(ctx, tg_linear(ctx, h, m->p[6], m->p[7]));
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "fc3");
    h = tg_linear(ctx, h, m->p[8], m->p[9]);
    tg_scope_pop(ctx);
    tg_scope_push(ctx, "loss");
    tg_tensor *loss = tg_cross_entropy(ctx, h, t, TG_MEAN);
    tg_scope_pop(ctx);
    return loss;
}

START_TEST(lenet_views)
{
    tg_ctx *ctx = tg_ctx_new(3);
    lenet m;
    lenet_init(ctx, &m);
    tg_tensor *loss = lenet_loss(ctx, &m, 4);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    ck_assert_int_eq(tg_scope_depth(ctx), 0);
    /* 13 ops and outputs, x, 10 parameters, the targets; 24 inputs + 13 outputs */
    ck_counts(view_counts(ctx, loss, TG_VIEW_FORWARD, NULL), 13 + 13 + 12, 24 + 13, 7);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    counts b = view_counts(ctx, loss, TG_VIEW_BACKWARD, NULL);
    /* 13 vjps, 13 output and 10 parameter gradients, and the saved tensors */
    ck_assert_int_ge(b.nodes, 13 + 23);
    ck_assert_int_eq(b.clusters, 7);
    counts both = view_counts(ctx, loss, TG_VIEW_BOTH, NULL);
    ck_assert_int_eq(both.clusters, 7);
    ck_assert_int_eq(both.edges, 37 + b.edges);
    /* collapsed: 7 boxes, x and the targets, the loss; x -> conv1 -> ... -> loss box
     * (7 edges), targets -> loss box, loss box -> loss */
    char *text;
    ck_counts(view_counts(ctx, loss, TG_VIEW_COLLAPSED, &text), 7 + 2 + 1, 9, 0);
    ck_assert_msg(strstr(text, "conv1\\nin (4, 1, 28, 28)\\nout (4, 6, 14, 14)\\nparams 156") != NULL,
                  "%s", text);
    ck_assert(strstr(text, "fc1\\nin (4, 400)\\nout (4, 120)\\nparams 48120") != NULL);
    free(text);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(lenet_profile)
{
    tg_ctx *ctx = tg_ctx_new(3);
    lenet m;
    lenet_init(ctx, &m);
    ck_assert(!tg_set_profile(ctx, true));
    tg_tensor *loss = lenet_loss(ctx, &m, 8);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    ck_assert_int_eq(st.tape_len, 13);
    /* every node of the step: a time and a byte count for forward, a time for its vjp */
    tg_node *todo[32], *seen[32];
    int n_todo = 0, n_seen = 0;
    todo[n_todo++] = loss->node;
    while (n_todo) {
        tg_node *n = todo[--n_todo];
        bool dup = false;
        for (int i = 0; i < n_seen; i++)
            dup |= seen[i] == n;
        if (dup)
            continue;
        seen[n_seen++] = n;
        ck_assert_msg(n->fwd_profiled && n->fwd_ns > 0 && n->fwd_bytes > 0, "%s", n->op->name);
        ck_assert_msg(n->vjp_profiled && n->vjp_ns > 0, "%s", n->op->name);
        for (int i = 0; i < n->n_in; i++)
            if (n->in[i]->node)
                todo[n_todo++] = n->in[i]->node;
    }
    ck_assert_int_eq(n_seen, 13);
    char *text = dot_text(ctx, loss, NULL);
    Agraph_t *g = agmemread(text);
    ck_assert_ptr_nonnull(g);
    int profiled = 0;
    for (Agnode_t *n = agfstnode(g); n; n = agnxtnode(g, n))
        if (strncmp(agnameof(n), "op", 2) == 0) {
            ck_assert_msg(strstr(agget(n, "label"), "\\nfwd ") && strstr(agget(n, "label"), "\\nvjp "),
                          "%s", agget(n, "label"));
            profiled++;
        }
    ck_assert_int_eq(profiled, 13);
    agclose(g);
    free(text);
    char *table = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&table, &len);
    ck_assert_int_eq(tg_profile_print(ctx, f), TG_OK);
    fclose(f);
    ck_assert_msg(strstr(table, "conv2d") && strstr(table, "cross_entropy") &&
                  strstr(table, "flatten") && strstr(table, "(all ops)"), "%s", table);
    free(table);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- 10,000 ops */

START_TEST(chain_collapses)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F32, TG_SHAPE(4), "w");
    tg_tensor *y = w;
    for (int i = 0; i < 10000; i++) {
        if (i % 100 == 0) {
            char name[32];
            snprintf(name, sizeof name, "block%d", i / 100);
            tg_scope_push(ctx, name);
        }
        y = i % 2 ? tg_mul_scalar(ctx, y, 1.0) : tg_add_scalar(ctx, y, 0.0);
        if (i % 100 == 99)
            tg_scope_pop(ctx);
    }
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    char *text;
    /* asked for forward, drawn collapsed: 100 boxes and the output (the
     * parameter w is counted inside block0); block0 -> ... -> block99 -> output */
    counts c = view_counts(ctx, y, TG_VIEW_FORWARD, &text);
    ck_counts(c, 101, 100, 0);
    ck_assert(strstr(text, "block0\\nin\\nout (4)\\nparams 4") != NULL);
    ck_assert(strstr(text, "collapsed view: 10000 ops is above the limit of 500") != NULL);
    free(text);
    /* a caller's own threshold: drawn in full, one cluster per block */
    tg_dot_opts o = {.collapse_above = 20000};
    text = dot_text(ctx, y, &o);
    Agraph_t *g = agmemread(text);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(agnnodes(g), 20001);
    ck_assert_int_eq(agnedges(g), 20000);
    ck_assert_int_eq(count_clusters(g), 100);
    agclose(g);
    free(text);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- values */

START_TEST(stats_and_anomaly)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(3), "w");
    tg_assign_f64(ctx, w, (const double[]){0, 1, 4});
    tg_tensor *h = tg_sqrt(ctx, w);                  /* op0: finite */
    tg_tensor *l = tg_log(ctx, tg_mul(ctx, h, w));    /* op1 mul finite, op2 log -inf */
    tg_tensor *loss = tg_sum(ctx, tg_exp(ctx, l));    /* op3, op4 downstream */
    ck_assert_int_eq(tg_backward_ex(ctx, loss, NULL, TG_KEEP_GRADS), TG_OK);
    tg_dot_opts o = {.stats = true, .show_grad_norm = true};
    char *text = dot_text(ctx, loss, &o);
    Agraph_t *g = agmemread(text);
    ck_assert_ptr_nonnull(g);
    ck_assert_msg(strstr(agget(agnode(g, "x0", 0), "tooltip"),
                         "min 0  max 4  mean 1.66667\\nL2 4.12311\\nNaN 0  Inf 0\\nvalues 0, 1, 4") != NULL,
                  "%s", agget(agnode(g, "x0", 0), "tooltip"));
    ck_assert(strstr(agget(agnode(g, "t2", 0), "tooltip"), "Inf 1") != NULL);
    /* intermediate gradients kept: every tensor with one shows its norm */
    ck_assert(strstr(agget(agnode(g, "t0", 0), "label"), "|grad| = ") != NULL);
    ck_assert(strstr(agget(agnode(g, "op2", 0), "fillcolor"), "#ff") == NULL); /* anomaly off */
    agclose(g);
    free(text);
    tg_set_detect_anomaly(ctx, true);
    text = dot_text(ctx, loss, NULL);
    g = agmemread(text);
    ck_assert_str_eq(agget(agnode(g, "op0", 0), "fillcolor"), "#d9d9d9");
    ck_assert_str_eq(agget(agnode(g, "op1", 0), "fillcolor"), "#d9d9d9");
    ck_assert_str_eq(agget(agnode(g, "op2", 0), "fillcolor"), "#ff6060"); /* the first */
    ck_assert_str_eq(agget(agnode(g, "t2", 0), "fillcolor"), "#ff6060");
    ck_assert_str_eq(agget(agnode(g, "op3", 0), "fillcolor"), "#ffb0b0"); /* downstream */
    ck_assert_str_eq(agget(agnode(g, "op4", 0), "fillcolor"), "#ffb0b0");
    agclose(g);
    free(text);
    /* an op that fails under anomaly mode is still on the tape: draw the whole tape */
    tg_reset(ctx);
    tg_tensor *z = tg_log(ctx, tg_mul_scalar(ctx, w, 0.0));
    ck_assert_ptr_null(z);
    ck_assert_int_eq(tg_errcode(ctx), TG_ENONFINITE);
    tg_clear_error(ctx);
    text = dot_text(ctx, NULL, NULL);
    g = agmemread(text);
    ck_assert_str_eq(agget(agnode(g, "op0", 0), "fillcolor"), "#d9d9d9");
    ck_assert_str_eq(agget(agnode(g, "op1", 0), "fillcolor"), "#ff6060");
    agclose(g);
    free(text);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- rendering */

static long file_head(const char *path, char *head, size_t n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t got = fread(head, 1, n, f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    head[got < n ? got : n - 1] = '\0';
    return size;
}

START_TEST(renders_svg_png_pdf)
{
    tg_ctx *ctx = tg_ctx_new(11);
    seed1d m;
    tg_tensor *loss = seed1d_loss(ctx, &m);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    char head[64];
    tg_dot_opts o = {.view = TG_VIEW_BOTH, .stats = true};
    ck_assert_int_eq(tg_dot_render(ctx, loss, TG_TEST_TMP "/graph.svg", &o), TG_OK);
    ck_assert_int_gt(file_head(TG_TEST_TMP "/graph.svg", head, sizeof head), 1000);
    ck_assert(strstr(head, "<?xml") != NULL);
    FILE *f = fopen(TG_TEST_TMP "/graph.svg", "r");
    static char svg[1 << 20];
    size_t n = fread(svg, 1, sizeof svg - 1, f);
    svg[n] = '\0';
    fclose(f);
    ck_assert(strstr(svg, "recorded as reshape") != NULL); /* tooltips survive */
    ck_assert(strstr(svg, "cluster") != NULL);
    ck_assert_int_eq(tg_dot_render(ctx, loss, TG_TEST_TMP "/graph.png", NULL), TG_OK);
    ck_assert_int_gt(file_head(TG_TEST_TMP "/graph.png", head, sizeof head), 1000);
    ck_assert(memcmp(head, "\x89PNG", 4) == 0);
    ck_assert_int_eq(tg_dot_render(ctx, loss, TG_TEST_TMP "/graph.pdf", NULL), TG_OK);
    ck_assert_int_gt(file_head(TG_TEST_TMP "/graph.pdf", head, sizeof head), 1000);
    ck_assert(memcmp(head, "%PDF", 4) == 0);
    ck_assert_int_eq(tg_dot_render(ctx, loss, TG_TEST_TMP "/graph.dot", NULL), TG_OK);
    ck_assert(file_head(TG_TEST_TMP "/graph.dot", head, sizeof head) > 100);
    ck_assert(strncmp(head, "digraph", 7) == 0);
    remove(TG_TEST_TMP "/graph.svg");
    remove(TG_TEST_TMP "/graph.png");
    remove(TG_TEST_TMP "/graph.pdf");
    remove(TG_TEST_TMP "/graph.dot");
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- errors */

START_TEST(errors)
{
    tg_ctx *ctx = tg_ctx_new(1);
    ck_assert_int_eq(tg_scope_pop(ctx), TG_ESTATE);
    ck_error(ctx, TG_ESTATE, "scope_pop: no scope is open");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_scope_push(ctx, NULL), TG_EINVAL);
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_scope_push(ctx, ""), TG_EINVAL);
    tg_clear_error(ctx);
    /* one push, two pops */
    ck_assert_int_eq(tg_scope_push(ctx, "a"), TG_OK);
    ck_assert_int_eq(tg_scope_depth(ctx), 1);
    ck_assert_int_eq(tg_scope_pop(ctx), TG_OK);
    ck_assert_int_eq(tg_scope_pop(ctx), TG_ESTATE);
    tg_clear_error(ctx);
    /* tg_reset closes open scopes */
    tg_scope_push(ctx, "a");
    tg_scope_push(ctx, "b");
    ck_assert_int_eq(tg_scope_depth(ctx), 2);
    tg_reset(ctx);
    ck_assert_int_eq(tg_scope_depth(ctx), 0);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_tensor *y = tg_sum(ctx, tg_exp(ctx, w));
    ck_assert_int_eq(tg_dot_render(ctx, y, TG_TEST_TMP "/g.jpg", NULL), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "g.jpg' does not end in .svg, .png, .pdf");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_dot_render(ctx, y, "noextension", NULL), TG_EINVAL);
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_dot_render(ctx, y, NULL, NULL), TG_EINVAL);
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_dot_render(ctx, y, "/nonexistent-dir/g.svg", NULL), TG_EIO);
    ck_error(ctx, TG_EIO, "cannot open '/nonexistent-dir/g.svg'");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_dot_render(NULL, y, "g.svg", NULL), TG_EINVAL);
    ck_assert_int_eq(tg_dot_write(NULL, y, stdout, NULL), TG_EINVAL);
    tg_dot_opts bad = {.view = (tg_dot_view)7};
    ck_assert_int_eq(tg_dot_write(ctx, y, stdout, &bad), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "view 7");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_profile_print(ctx, NULL), TG_EINVAL);
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_scope_push(NULL, "a"), TG_EINVAL);
    ck_assert_int_eq(tg_scope_pop(NULL), TG_EINVAL);
    ck_assert(!tg_set_profile(NULL, true));
    ck_assert_int_eq(tg_profile_print(NULL, stdout), TG_EINVAL);
    tg_ctx_free(ctx);
}
END_TEST

/* Out of memory in every allocation of a scoped, profiled, rendered step:
 * reported, and nothing leaks. */
START_TEST(out_of_memory)
{
    for (long fail = 1;; fail++) {
        test_alloc ta = {.fail_at = fail};
        tg_ctx_opts opts = {.alloc = test_alloc_fn, .alloc_ud = &ta, .arena_chunk = 4096};
        tg_ctx *ctx = tg_ctx_new_opts(&opts);
        if (!ctx)
            continue;
        tg_set_profile(ctx, true);
        tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(64), "w");
        tg_scope_push(ctx, "s");
        tg_tensor *y = tg_sum(ctx, tg_exp(ctx, w));
        tg_scope_pop(ctx);
        tg_backward(ctx, y);
        tg_dot_opts o = {.view = TG_VIEW_BOTH};
        tg_status st = tg_dot_render(ctx, y, TG_TEST_TMP "/oom.svg", &o);
        if (st == TG_OK) {
            FILE *f = fopen("/dev/null", "w");
            ck_assert_int_eq(tg_profile_print(ctx, f), TG_OK);
            fclose(f);
        }
        bool done = ta.failed == 0;
        if (!done)
            ck_assert_int_eq(tg_errcode(ctx), TG_ENOMEM);
        tg_ctx_free(ctx);
        ck_assert_int_eq(ta.live_bytes, 0);
        if (done)
            break;
    }
    remove(TG_TEST_TMP "/oom.svg");
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("graph");
    TCase *views = tcase_create("views");
    tcase_set_timeout(views, 120);
    tcase_add_test(views, seed1d_views);
    tcase_add_test(views, called_names_and_arguments);
    tcase_add_test(views, lenet_views);
    tcase_add_test(views, chain_collapses);
    tcase_add_test(views, stats_and_anomaly);
    suite_add_tcase(s, views);
    TCase *profile = tcase_create("profile");
    tcase_add_test(profile, lenet_profile);
    suite_add_tcase(s, profile);
    TCase *render = tcase_create("render");
    tcase_set_timeout(render, 60);
    tcase_add_test(render, renders_svg_png_pdf);
    suite_add_tcase(s, render);
    TCase *err = tcase_create("errors");
    tcase_set_timeout(err, 60);
    tcase_add_test(err, errors);
    tcase_add_test(err, out_of_memory);
    suite_add_tcase(s, err);
    return s;
}
