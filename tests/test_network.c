/*
 * test_network.c: the course notes' 1-D network (examples/seed1d_net.h) end
 * to end: its whole gradient passes gradcheck in float64, its graph lays out
 * and renders with Graphviz, and training lowers its loss.
 */
#include <graphviz/gvc.h>
#include <string.h>

#include "seed1d_net.h"
#include "testutil.h"

/* BCE summed over the examples, as the notes have it; in[6] is x, in[7] the labels. */
static tg_tensor *network_loss(tg_ctx *ctx, tg_tensor *const *in, int n, void *ud)
{
    (void)n;
    (void)ud;
    seed1d m = {in[0], in[1], in[2], in[3], in[4], in[5]};
    return tg_bce(ctx, seed1d_forward(ctx, &m, in[6]), in[7], TG_SUM);
}

START_TEST(whole_network_gradcheck)
{
    tg_ctx *ctx = tg_ctx_new(11);
    seed1d m;
    ck_assert_int_eq(seed1d_init(ctx, &m, TG_F64), TG_OK);
    tg_tensor *x = tg_randn(ctx, TG_F64, TG_SHAPE(2, 1, 785), 0, 1);
    tg_tensor *y = tg_from_f64(ctx, TG_F64, TG_SHAPE(2, 1), (const double[]){1, 0});
    tg_tensor *in[8] = {m.conv_w, m.conv_b, m.fc1_w, m.fc1_b, m.fc2_w, m.fc2_b, x, y};
    tg_gradcheck_result r;
    ck_assert_int_eq(tg_gradcheck(ctx, network_loss, NULL, in, 8, NULL, &r), TG_OK);
    ck_assert_msg(r.passed, "%s", r.msg);
    ck_assert_int_eq(r.checked, 2 + 1 + 32 * 393 + 32 + 32 + 1); /* every parameter entry */
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(graph_renders)
{
    tg_ctx *ctx = tg_ctx_new(11);
    seed1d m;
    ck_assert_int_eq(seed1d_init(ctx, &m, TG_F32), TG_OK);
    tg_tensor *x = tg_randn(ctx, TG_F32, TG_SHAPE(3, 1, 785), 0, 1);
    tg_tensor *y = tg_from_f64(ctx, TG_F32, TG_SHAPE(3, 1), (const double[]){1, 0, 1});
    tg_tensor *loss = tg_bce(ctx, seed1d_forward(ctx, &m, x), y, TG_MEAN);
    ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    tg_dot_opts o = {.show_grad_norm = true};
    ck_assert_int_eq(tg_dot_write(ctx, loss, f, &o), TG_OK);
    fclose(f);
    ck_assert(strstr(text, "conv1d\\nstride=1 pad=0 dilation=1 groups=1") != NULL);
    ck_assert(strstr(text, "avg_pool1d\\nkernel=2 stride=2 pad=0") != NULL);
    GVC_t *gvc = gvContext();
    Agraph_t *g = agmemread(text);
    ck_assert_ptr_nonnull(g);
    /* 9 recorded ops (the pad of an input that needs no gradient is not
     * recorded), their outputs, 6 parameters, the padded input and the labels */
    ck_assert_int_eq(agnnodes(g), 9 + 9 + 6 + 2);
    ck_assert_int_eq(gvLayout(gvc, g, "dot"), 0);
    char *svg = NULL;
    unsigned int svg_len = 0;
    ck_assert_int_eq(gvRenderData(gvc, g, "svg", &svg, &svg_len), 0);
    ck_assert(svg_len > 1000 && strstr(svg, "<svg") != NULL && strstr(svg, "fc1.weight") != NULL);
    gvFreeRenderData(svg);
    gvFreeLayout(gvc, g);
    agclose(g);
    gvFreeContext(gvc);
    free(text);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(training_lowers_the_loss)
{
    tg_ctx *ctx = tg_ctx_new(5);
    seed1d m;
    ck_assert_int_eq(seed1d_init(ctx, &m, TG_F32), TG_OK);
    tg_tensor *x = tg_param(ctx, TG_F32, TG_SHAPE(16, 1, 785), "x"); /* a fixed batch */
    tg_tensor *y = tg_param(ctx, TG_F32, TG_SHAPE(16, 1), "y");
    x->requires_grad = y->requires_grad = false;
    tg_assign(ctx, x, tg_randn(ctx, TG_F32, TG_SHAPE(16, 1, 785), 0, 1));
    for (int i = 0; i < 16; i++)
        tg_set(y, i, i % 2);
    double first = 0, last = 0;
    for (int step = 0; step < 30; step++) {
        tg_tensor *loss = tg_bce(ctx, seed1d_forward(ctx, &m, x), y, TG_MEAN);
        ck_assert_int_eq(tg_backward(ctx, loss), TG_OK);
        *(step == 0 ? &first : &last) = tg_get(loss, 0);
        for (tg_tensor *p = tg_param_next(ctx, NULL); p; p = tg_param_next(ctx, p))
            for (int64_t i = 0; p->requires_grad && i < p->numel; i++)
                tg_set(p, i, tg_get(p, i) - 0.1 * tg_get(p->grad, i));
        tg_zero_grad(ctx);
        tg_reset(ctx);
    }
    ck_assert_msg(last < 0.6 * first, "BCE went from %g to %g", first, last);
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("network");
    TCase *tc = tcase_create("seed1d");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, whole_network_gradcheck);
    tcase_add_test(tc, graph_renders);
    tcase_add_test(tc, training_lowers_the_loss);
    suite_add_tcase(s, tc);
    return s;
}
