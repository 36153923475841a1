/*
 * test_conv_backends.c: the convolution backends (portable im2col + gemm,
 * oneDNN when built in, direct for one input channel) against a direct double-precision reference, for
 * y, dx, dw and db, in float32 (1e-4 of the largest reference value) and
 * float64 (portable only). Each backend is forced in turn through the
 * private tg__conv_force; a build without oneDNN checks the portable one.
 * A second case reuses the convolution so that every gradient is first
 * written and then added to.
 */
#include <string.h>

#include "conv_impl.h"
#include "testutil.h"

typedef struct ccase {
    int64_t n, c, h, w, k, r, s, sh, sw, ph, pw, dh, dw, g;
    bool bias, one; /* one: conv1d (h = r = 1) */
} ccase;

static const ccase cases[] = {
    {2, 3, 9, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, false},  /* 3x3 pad 1 */
    {3, 4, 11, 9, 6, 3, 3, 2, 2, 1, 1, 1, 1, 1, true, false}, /* stride 2, odd sizes */
    {1, 1, 7, 5, 3, 5, 5, 1, 1, 2, 2, 1, 1, 1, true, false},  /* batch 1, C = 1, 5x5 pad 2 */
    {5, 6, 14, 14, 16, 5, 5, 1, 1, 0, 0, 1, 1, 1, false, false}, /* LeNet's second */
    {2, 4, 10, 7, 4, 3, 2, 2, 1, 2, 1, 2, 1, 2, true, false}, /* groups, dilation, uneven */
    {2, 8, 6, 6, 8, 1, 1, 1, 1, 0, 0, 1, 1, 1, true, false},  /* 1x1 (x as the columns) */
    {3, 2, 1, 13, 3, 1, 3, 1, 2, 0, 1, 1, 1, 1, true, true},  /* conv1d stride 2 pad 1 */
    {2, 3, 5, 5, 2, 3, 3, 3, 3, 2, 2, 1, 1, 1, true, false},  /* stride 3 > kernel reach */
    /* one input channel at stride 1: the direct kernels' shapes */
    {4, 1, 9, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, false},  /* B5's first layer, small */
    {3, 1, 8, 8, 6, 5, 5, 1, 1, 2, 2, 1, 1, 1, true, false},  /* LeNet's first */
    {2, 1, 1, 20, 1, 1, 2, 1, 1, 0, 0, 1, 1, 1, true, true},  /* B1's conv1d */
    {2, 1, 4, 3, 2, 3, 3, 1, 1, 3, 3, 1, 1, 1, false, false}, /* padding beyond the kernel */
    {1, 1, 5, 6, 3, 2, 4, 1, 1, 0, 1, 1, 1, 1, true, false},  /* uneven kernel and padding */
    {2, 1, 6, 37, 2, 4, 4, 1, 1, 1, 2, 1, 1, 1, true, false}, /* 16 taps fused, rows not a multiple of 4 */
    {3, 1, 1, 43, 2, 1, 2, 1, 1, 0, 1, 1, 1, 1, false, true}, /* conv1d of 2 taps, longer rows */
};

static int64_t out_len(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d)
{
    return (n + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* y, dx, dw, db of the case in double, for dy = r, straight from the definition. */
static void reference(const ccase *q, const double *x, const double *w, const double *b,
                      const double *r, double *y, double *dx, double *dw, double *db)
{
    const int64_t oh = out_len(q->h, q->r, q->sh, q->ph, q->dh), ow = out_len(q->w, q->s, q->sw, q->pw, q->dw);
    const int64_t cg = q->c / q->g, kg = q->k / q->g;
    memset(dx, 0, sizeof(double) * (size_t)(q->n * q->c * q->h * q->w));
    memset(dw, 0, sizeof(double) * (size_t)(q->k * cg * q->r * q->s));
    memset(db, 0, sizeof(double) * (size_t)q->k);
    for (int64_t n = 0; n < q->n; n++)
        for (int64_t k = 0; k < q->k; k++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    const int64_t o = ((n * q->k + k) * oh + oy) * ow + ox;
                    double s = q->bias ? b[k] : 0;
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t i = 0; i < q->r; i++)
                            for (int64_t j = 0; j < q->s; j++) {
                                int64_t yy = oy * q->sh - q->ph + i * q->dh;
                                int64_t xx = ox * q->sw - q->pw + j * q->dw;
                                if (yy < 0 || yy >= q->h || xx < 0 || xx >= q->w)
                                    continue;
                                int64_t xi = ((n * q->c + k / kg * cg + c) * q->h + yy) * q->w + xx;
                                int64_t wi = ((k * cg + c) * q->r + i) * q->s + j;
                                s += w[wi] * x[xi];
                                dx[xi] += w[wi] * r[o];
                                dw[wi] += x[xi] * r[o];
                            }
                    y[o] = s;
                    db[k] += r[o];
                }
}

static double *rand_values(int64_t n, unsigned *seed)
{
    double *v = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        *seed = *seed * 1103515245u + 12345u;
        v[i] = (double)(*seed >> 8 & 0xffff) / 32768.0 - 1.0;
    }
    return v;
}

/* max |t - want| <= tol * max |want| (and no NaN) */
static void ck_near(const char *what, const tg_tensor *t, const double *want, double scale,
                    double tol)
{
    double big = 0, err = 0;
    ck_assert_ptr_nonnull(t);
    for (int64_t i = 0; i < t->numel; i++) {
        big = fmax(big, fabs(want[i] * scale));
        double e = fabs(tg_get(t, i) - want[i] * scale);
        ck_assert_msg(e == e, "%s[%lld] is NaN", what, (long long)i);
        err = fmax(err, e);
    }
    ck_assert_msg(err <= tol * fmax(big, 1e-30), "%s: max error %g against max %g", what, err, big);
}

/* The case through the public API on the forced backend; uses > 1 applies
 * the convolution that many times to the same x, w, b (gradients add up). */
static void run_case(const ccase *q, tg_dtype dt, int uses, double tol)
{
    const int64_t oh = out_len(q->h, q->r, q->sh, q->ph, q->dh), ow = out_len(q->w, q->s, q->sw, q->pw, q->dw);
    const int64_t nx = q->n * q->c * q->h * q->w, nw = q->k * (q->c / q->g) * q->r * q->s,
                  ny = q->n * q->k * oh * ow;
    unsigned seed = 7;
    double *x = rand_values(nx, &seed), *w = rand_values(nw, &seed), *b = rand_values(q->k, &seed);
    double *r = rand_values(ny, &seed);
    double *y = malloc(sizeof(double) * (size_t)ny), *dx = malloc(sizeof(double) * (size_t)nx),
           *dw = malloc(sizeof(double) * (size_t)nw), *db = malloc(sizeof(double) * (size_t)q->k);
    reference(q, x, w, b, r, y, dx, dw, db);

    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *tx = q->one ? tg_param(ctx, dt, TG_SHAPE(q->n, q->c, q->w), "x")
                           : tg_param(ctx, dt, TG_SHAPE(q->n, q->c, q->h, q->w), "x");
    tg_tensor *tw = q->one ? tg_param(ctx, dt, TG_SHAPE(q->k, q->c / q->g, q->s), "w")
                           : tg_param(ctx, dt, TG_SHAPE(q->k, q->c / q->g, q->r, q->s), "w");
    tg_tensor *tb = q->bias ? tg_param(ctx, dt, TG_SHAPE(q->k), "b") : NULL;
    ck_assert_int_eq(tg_assign_f64(ctx, tx, x), TG_OK);
    ck_assert_int_eq(tg_assign_f64(ctx, tw, w), TG_OK);
    if (tb)
        ck_assert_int_eq(tg_assign_f64(ctx, tb, b), TG_OK);
    tg_tensor *tr = q->one ? tg_from_f64(ctx, dt, TG_SHAPE(q->n, q->k, ow), r)
                           : tg_from_f64(ctx, dt, TG_SHAPE(q->n, q->k, oh, ow), r);
    tg_conv_attrs a = {{q->sh, q->sw}, {q->ph, q->pw}, {q->dh, q->dw}, q->g};
    tg_tensor *loss = NULL, *ty = NULL;
    for (int u = 0; u < uses; u++) {
        ty = q->one ? tg_conv1d(ctx, tx, tw, tb, q->sw, q->pw, q->dw, q->g)
                    : tg_conv2d_ex(ctx, tx, tw, tb, &a);
        tg_tensor *l = tg_sum(ctx, tg_mul(ctx, ty, tr));
        loss = loss ? tg_add(ctx, loss, l) : l;
    }
    ck_assert_msg(tg_backward(ctx, loss) == TG_OK, "%s", tg_errmsg(ctx));
    ck_near("y", ty, y, 1, tol);
    ck_near("dx", tx->grad, dx, uses, tol);
    ck_near("dw", tw->grad, dw, uses, tol);
    if (tb)
        ck_near("db", tb->grad, db, uses, tol);
    tg_ctx_free(ctx);
    free(x), free(w), free(b), free(r), free(y), free(dx), free(dw), free(db);
}

static void each_case(tg_dtype dt, double tol)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int uses = 1; uses <= 2; uses++)
            run_case(&cases[i], dt, uses, tol);
}

START_TEST(portable_float32)
{
    ck_assert_int_eq(tg__conv_force("portable"), TG_OK);
    each_case(TG_F32, 1e-4);
    tg__conv_force(NULL);
}
END_TEST

START_TEST(portable_float64)
{
    ck_assert_int_eq(tg__conv_force("portable"), TG_OK);
    each_case(TG_F64, 1e-12);
    tg__conv_force(NULL);
}
END_TEST

START_TEST(dnnl_float32)
{
    if (tg__conv_force("dnnl") != TG_OK)
        return; /* built without oneDNN */
    each_case(TG_F32, 1e-4);
    tg__conv_force(NULL);
}
END_TEST

START_TEST(direct_float32)
{
    ck_assert_int_eq(tg__conv_force("direct"), TG_OK); /* other shapes: the default */
    each_case(TG_F32, 1e-4);
    tg__conv_force(NULL);
}
END_TEST

START_TEST(direct_float64)
{
    ck_assert_int_eq(tg__conv_force("direct"), TG_OK);
    each_case(TG_F64, 1e-12);
    tg__conv_force(NULL);
}
END_TEST

/* One input channel at stride 1 runs direct unless another backend is
 * forced; other shapes never do. */
START_TEST(direct_picked)
{
    tg__conv_desc d = {TG_F32, 2, 1, 8, 8, 1, 3, 3, 8, 8, 1, 1, 1, 1, 1, 1, 1};
    ck_assert_ptr_eq(tg__conv_pick(&d), &tg__conv_direct);
    d.dtype = TG_F64;
    ck_assert_ptr_eq(tg__conv_pick(&d), &tg__conv_direct);
    ck_assert_int_eq(tg__conv_force("portable"), TG_OK);
    ck_assert_ptr_eq(tg__conv_pick(&d), &tg__conv_portable);
    tg__conv_force(NULL);
    d.sw = 2;
    ck_assert_ptr_ne(tg__conv_pick(&d), &tg__conv_direct);
    d.sw = 1, d.c = 2;
    ck_assert_ptr_ne(tg__conv_pick(&d), &tg__conv_direct);
    d.c = 1, d.k = 6; /* 54 taps: a gemm does better */
    ck_assert_ptr_ne(tg__conv_pick(&d), &tg__conv_direct);
}
END_TEST

/* float64 always runs portable (beyond the direct kernels' shapes),
 * whatever is asked for. */
START_TEST(float64_is_portable)
{
    tg__conv_desc d = {TG_F64, 1, 2, 3, 3, 1, 3, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1};
    ck_assert_ptr_eq(tg__conv_pick(&d), &tg__conv_portable);
    if (tg__conv_force("dnnl") == TG_OK) {
        ck_assert_ptr_eq(tg__conv_pick(&d), &tg__conv_portable);
        d.dtype = TG_F32;
        ck_assert_ptr_ne(tg__conv_pick(&d), &tg__conv_portable);
    }
    ck_assert_int_eq(tg__conv_force("no such backend"), TG_ENOTFOUND);
    tg__conv_force(NULL);
    /* float64 runs through the public API on the portable kernels */
    run_case(&cases[1], TG_F64, 1, 1e-12);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("conv_backends");
    TCase *tc = tcase_create("agree");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, portable_float32);
    tcase_add_test(tc, portable_float64);
    tcase_add_test(tc, dnnl_float32);
    tcase_add_test(tc, float64_is_portable);
    tcase_add_test(tc, direct_float32);
    tcase_add_test(tc, direct_float64);
    tcase_add_test(tc, direct_picked);
    suite_add_tcase(s, tc);
    return s;
}
