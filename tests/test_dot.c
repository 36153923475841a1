/* test_dot.c: Graphviz export, parsed back with Graphviz's own parser (libcgraph). */
#include <graphviz/cgraph.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"
#include "fixtures/dot/small_graph.h"

static char *dot_text(tg_ctx *ctx, const tg_tensor *out, const tg_dot_opts *opts)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_int_eq(tg_dot_write(ctx, out, f, opts), TG_OK);
    fclose(f);
    return text;
}

/* y = sigmoid(W x + b) summed: 7 ops (linear, neg, exp, add_scalar, pow, sum), inputs x, W, b */
static tg_tensor *neuron(tg_ctx *ctx, const char *wname)
{
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2, 3), wname);
    tg_tensor *b = tg_param(ctx, TG_F64, TG_SHAPE(2), "b");
    tg_tensor *x = tg_set_name(ctx, tg_ones(ctx, TG_F64, TG_SHAPE(1, 3)), "x");
    tg_tensor *z = tg_linear(ctx, x, w, b);
    tg_tensor *y = tg_pow(ctx, tg_add_scalar(ctx, tg_exp(ctx, tg_neg(ctx, z)), 1), -1);
    return tg_sum(ctx, y);
}

START_TEST(parses_with_counts)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *loss = neuron(ctx, "W");
    tg_tensor *unrelated = tg_exp(ctx, tg_param(ctx, TG_F64, TG_SHAPE(1), "u")); /* not drawn */
    ck_assert_ptr_nonnull(unrelated);
    char *text = dot_text(ctx, loss, NULL);
    Agraph_t *g = agmemread(text);
    ck_assert_msg(g != NULL, "libcgraph rejected:\n%s", text);
    /* against the tape: every node but the unrelated exp is drawn, with its
     * output; plus the 3 leaves x, W, b; one edge per input and per output */
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    ck_assert_int_eq(st.tape_len, 7);
    int ops = (int)st.tape_len - 1, edges = 0;
    for (tg_node *n = loss->node; n; n = n->in[0]->node)
        edges += n->n_in + 1;
    ck_assert_int_eq(agnnodes(g), 2 * ops + 3);
    ck_assert_int_eq(agnedges(g), edges);
    ck_assert_int_eq(agnedges(g), 14);
    Agnode_t *op0 = agnode(g, "op0", 0);
    ck_assert_ptr_nonnull(op0);
    ck_assert_str_eq(agget(op0, "label"), "linear");
    Agnode_t *op4 = agnode(g, "op4", 0);
    ck_assert_str_eq(agget(op4, "label"), "pow\\np=-1");
    Agnode_t *w = agnode(g, "x1", 0);
    ck_assert_str_eq(agget(w, "shape"), "box"); /* a parameter */
    ck_assert_str_eq(agget(w, "label"), "W\\n(2, 3) f64");
    Agnode_t *x = agnode(g, "x0", 0);
    ck_assert_str_eq(agget(x, "shape"), "ellipse"); /* an input */
    Agnode_t *out = agnode(g, "t5", 0);
    ck_assert_str_eq(agget(out, "shape"), "doubleoctagon"); /* the loss */
    ck_assert(strstr(agget(out, "label"), "loss") != NULL);
    agclose(g);
    /* the same graph gives the same text */
    char *again = dot_text(ctx, loss, NULL);
    ck_assert_str_eq(text, again);
    free(again);
    free(text);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(hostile_names_are_escaped)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *loss = neuron(ctx, "W\" ]; evil -> x; \\\n{ \"label=\\");
    tg_dot_opts o = {.title = "title with \"quotes\"", .left_to_right = true};
    char *text = dot_text(ctx, loss, &o);
    Agraph_t *g = agmemread(text);
    ck_assert_msg(g != NULL, "libcgraph rejected:\n%s", text);
    ck_assert_int_eq(agnnodes(g), 15); /* no node smuggled in through the name */
    ck_assert_ptr_null(agnode(g, "evil", 0));
    agclose(g);
    free(text);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(gradient_norms_after_backward)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_assign_f64(ctx, w, (const double[]){3, 4});
    tg_tensor *loss = tg_mul_scalar(ctx, tg_sum(ctx, tg_mul(ctx, w, w)), 0.5);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    tg_dot_opts o = {.show_grad_norm = true};
    char *text = dot_text(ctx, loss, &o);
    Agraph_t *g = agmemread(text);
    ck_assert_ptr_nonnull(g);
    ck_assert_str_eq(agget(agnode(g, "x0", 0), "label"), "w\\n(2) f64\\n|grad| = 5"); /* |(3, 4)| */
    agclose(g);
    free(text);
    /* a leaf alone is a graph of one node */
    text = dot_text(ctx, w, NULL);
    g = agmemread(text);
    ck_assert_int_eq(agnnodes(g), 1);
    agclose(g);
    free(text);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(files_and_errors)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *loss = neuron(ctx, "W");
    const char *path = TG_TEST_TMP "/test_graph.dot";
    ck_assert_int_eq(tg_dot_save(ctx, loss, path, NULL), TG_OK);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    Agraph_t *g = agread(f, NULL);
    fclose(f);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(agnnodes(g), 15);
    agclose(g);
    remove(path);
    ck_assert_int_eq(tg_dot_save(ctx, loss, "/nonexistent-dir/g.dot", NULL), TG_EIO);
    ck_error(ctx, TG_EIO, "cannot open '/nonexistent-dir/g.dot'");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_dot_write(ctx, loss, NULL, NULL), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "dot_write: the file is NULL");
    tg_ctx_free(ctx);
}
END_TEST

/* Each view of fixtures/dot/small_graph.h against its golden file, byte
 * for byte; TG_REGEN_FIXTURES=1 rewrites the files (review the diff). */
START_TEST(golden_views)
{
    static const char *const names[] = {"forward", "backward", "both", "collapsed"};
    const char *regen = getenv("TG_REGEN_FIXTURES");
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *loss = small_graph(ctx);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    for (int v = 0; v < 4; v++) {
        tg_dot_opts o = {.title = names[v], .view = (tg_dot_view)v, .show_grad_norm = true,
                         .stats = v == 0};
        char *text = dot_text(ctx, loss, &o);
        char path[512];
        snprintf(path, sizeof path, "%s/dot/%s.dot", TG_FIXTURES, names[v]);
        if (regen && strcmp(regen, "1") == 0) {
            FILE *f = fopen(path, "w");
            ck_assert_ptr_nonnull(f);
            fputs(text, f);
            fclose(f);
        }
        FILE *f = fopen(path, "r");
        ck_assert_msg(f != NULL, "%s is missing (TG_REGEN_FIXTURES=1 writes it)", path);
        static char want[1 << 16];
        size_t n = fread(want, 1, sizeof want - 1, f);
        want[n] = '\0';
        fclose(f);
        ck_assert_msg(strcmp(text, want) == 0, "%s differs; the graph is now:\n%s", path, text);
        Agraph_t *g = agmemread(text);
        ck_assert_ptr_nonnull(g);
        agclose(g);
        free(text);
    }
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("dot");
    TCase *tc = tcase_create("dot");
    tcase_add_test(tc, parses_with_counts);
    tcase_add_test(tc, hostile_names_are_escaped);
    tcase_add_test(tc, gradient_norms_after_backward);
    tcase_add_test(tc, files_and_errors);
    tcase_add_test(tc, golden_views);
    suite_add_tcase(s, tc);
    return s;
}
