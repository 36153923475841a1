/*
 * notes_mlp.c: the course notes' 2-2-2 sigmoid network, one SGD step at
 * learning rate 0.4, every number printed beside the notes' value.
 *
 * The notes use row vectors: z1 = i W1 + b1, a1 = sigmoid(z1),
 * z2 = a1 W2 + b2, a2 = sigmoid(z2), E = 1/2 sum((a2 - t)^2), with W of
 * shape (in, out). tg_linear takes PyTorch's layout, weight (out, in), so
 * the parameters hold W1 and W2 transposed, and the printing transposes
 * them back. The expected values are the notes', re-derived in float64
 * (the notes' own printed b2 after the step has a slip: 0.4475 for 0.4497).
 *
 *   notes_mlp        exits 1 if any number differs from the notes' by more
 *                    than 1e-12 (or on an error)
 */
#include <math.h>
#include <stdio.h>

#include "tapegrad.h"

#define TOL 1e-12

/* The notes' numbers; matrices in the notes' (in, out) layout, row by row. */
static const double input[2] = {0.05, 0.15}, target[2] = {0.1, 0.9};
static const double W1[4] = {0.1, 0.2, 0.15, 0.25}, b1[2] = {0.3, 0.3};
static const double W2[4] = {0.3, 0.4, 0.35, 0.45}, b2[2] = {0.5, 0.5};

static const double want_a1[2] = {0.5811509642893937, 0.5860112044388707};
static const double want_a2[2] = {0.7067080710468736, 0.7303039883089828};
static const double want_E = 0.19844570992862806;
static const double want_dW1[4] = {0.00029643874510714634, 0.00035144801265841194,
                                   0.0008893162353214388, 0.0010543440379752358};
static const double want_db1[2] = {0.005928774902142926, 0.007028960253168239};
static const double want_dW2[4] = {0.07308174326330374, -0.019424005599663167,
                                   0.07369293526783977, -0.019586451053048213};
static const double want_db2[2] = {0.12575345780018612, -0.03342333884520694};
static const double new_W1[4] = {0.09988142450195715, 0.19985942079493665,
                                  0.14964427350587142, 0.2495782623848099};
static const double new_b1[2] = {0.2976284900391428, 0.2971884158987327};
static const double new_W2[4] = {0.27076730269467847, 0.4077696022398653,
                                  0.32052282589286407, 0.4578345804212193};
static const double new_b2[2] = {0.4496986168799255, 0.5133693355380827};
static const double want_E_after = 0.18701976362572423;

/* The network's parameters, in tg_linear's layout. */
typedef struct net {
    tg_tensor *w1, *b1, *w2, *b2; /* w1 = W1^T, w2 = W2^T: (out, in) */
} net;

/* Element k of t, where t may be stored transposed (a 2 x 2 weight). */
static double value(const tg_tensor *t, int k, int transposed)
{
    return tg_get(t, transposed ? (k % 2) * 2 + k / 2 : k);
}

/* How many numbers were compared, and how many differ by more than TOL. */
typedef struct tally {
    int checked, bad;
} tally;

/* Prints t's n elements next to the notes' values and counts them. */
static void compare(tally *c, const char *name, const tg_tensor *t, const double *want, int n,
                    int transposed)
{
    for (int k = 0; k < n; k++) {
        double got = value(t, k, transposed), diff = fabs(got - want[k]);
        bool ok = diff <= TOL;
        c->checked++;
        c->bad += !ok;
        printf("  %-8s[%d] %22.17g   notes %22.17g   diff %.1e%s\n", name, k, got, want[k],
               diff, ok ? "" : "  MISMATCH");
    }
}

/* Forward pass; returns E and stores a1 and a2. */
static tg_tensor *forward(tg_ctx *ctx, const net *m, tg_tensor **a1, tg_tensor **a2)
{
    tg_tensor *i = tg_set_name(ctx, tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 2), input), "i");
    tg_tensor *t = tg_set_name(ctx, tg_from_f64(ctx, TG_F64, TG_SHAPE(1, 2), target), "t");
    *a1 = tg_sigmoid(ctx, tg_linear(ctx, i, m->w1, m->b1));
    *a2 = tg_sigmoid(ctx, tg_linear(ctx, *a1, m->w2, m->b2));
    /* E = 1/2 sum((a2 - t)^2): mse with reduction "sum", halved */
    return tg_mul_scalar(ctx, tg_mse(ctx, *a2, t, TG_SUM), 0.5);
}

/* Creates a parameter holding a notes matrix (transposed) or vector. */
static tg_tensor *param(tg_ctx *ctx, const char *name, const double *v, int n)
{
    tg_tensor *p = n == 4 ? tg_param(ctx, TG_F64, TG_SHAPE(2, 2), name)
                          : tg_param(ctx, TG_F64, TG_SHAPE(2), name);
    if (!p)
        return NULL;
    if (n == 4)
        tg_assign_f64(ctx, p, (const double[]){v[0], v[2], v[1], v[3]}); /* W^T */
    else
        tg_assign_f64(ctx, p, v);
    return p;
}

/* Runs the step, printing and comparing every number into c; TG_OK or the error. */
static tg_status run(tg_ctx *ctx, tally *c)
{
    net m = {param(ctx, "W1^T", W1, 4), param(ctx, "b1", b1, 2), param(ctx, "W2^T", W2, 4),
             param(ctx, "b2", b2, 2)};
    tg_tensor *params[] = {m.w1, m.b1, m.w2, m.b2};
    tg_optim *sgd = tg_optim_sgd(ctx, params, 4, &(tg_sgd_opts){.lr = 0.4});
    tg_tensor *a1, *a2, *E = forward(ctx, &m, &a1, &a2);
    /* errors stick: one check covers every call above */
    if (tg_backward(ctx, E) == TG_OK) {
        printf("forward:\n");
        compare(c, "a1", a1, want_a1, 2, 0);
        compare(c, "a2", a2, want_a2, 2, 0);
        compare(c, "E", E, &want_E, 1, 0);
        printf("gradients (dE/dW in the notes' (in, out) layout):\n");
        compare(c, "dE/dW1", m.w1->grad, want_dW1, 4, 1);
        compare(c, "dE/db1", m.b1->grad, want_db1, 2, 0);
        compare(c, "dE/dW2", m.w2->grad, want_dW2, 4, 1);
        compare(c, "dE/db2", m.b2->grad, want_db2, 2, 0);
    }
    tg_reset(ctx); /* the step's tensors die; parameters and gradients live on */
    if (tg_optim_step(ctx, sgd) == TG_OK) {
        printf("after one SGD step, lr 0.4:\n");
        compare(c, "W1", m.w1, new_W1, 4, 1);
        compare(c, "b1", m.b1, new_b1, 2, 0);
        compare(c, "W2", m.w2, new_W2, 4, 1);
        compare(c, "b2", m.b2, new_b2, 2, 0);
    }
    TG_NO_GRAD(ctx) { E = forward(ctx, &m, &a1, &a2); }
    if (E)
        compare(c, "E after", E, &want_E_after, 1, 0);
    tg_optim_free(ctx, sgd);
    return (tg_status)tg_errcode(ctx);
}

int main(void)
{
    tg_ctx *ctx = tg_ctx_new(0);
    if (!ctx) {
        fprintf(stderr, "notes_mlp: cannot create a context\n");
        return 1;
    }
    tally c = {0, 0};
    tg_status st = run(ctx, &c);
    if (st != TG_OK)
        fprintf(stderr, "notes_mlp: %s\n", tg_errmsg(ctx));
    else if (c.bad)
        printf("%d of %d numbers differ from the notes' by more than %g\n", c.bad, c.checked, TOL);
    else
        printf("all %d numbers agree with the notes' to within %g\n", c.checked, TOL);
    tg_ctx_free(ctx);
    return st != TG_OK || c.bad ? 1 : 0;
}
