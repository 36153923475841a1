/*
 * fit_sin.c: the notes' piecewise-linear exercise. A ReLU network computes
 * a piecewise-linear function of its input; here one with two hidden
 * layers (1 -> 32 -> 32 -> 1) learns sin(x) on [-1, 2] with Adam, full
 * batch, the learning rate annealed along a cosine.
 *
 *   fit_sin [--steps N] [--csv PATH] [--max-mse M]
 *     --steps N     Adam steps (default 2000)
 *     --csv PATH    write x, sin(x) and the prediction on the grid as CSV
 *     --max-mse M   exit 1 when the final grid MSE is above M (a check for tests)
 *
 * Prints the loss while training, then the MSE on a 1201-point grid (other
 * points than the 256 it trained on) and a few (x, sin x, prediction) rows.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad.h"

#define LO (-1.0)
#define HI 2.0
#define TRAIN_POINTS 256
#define GRID_POINTS 1201 /* a step of 0.0025 */
#define HIDDEN 32

/* The network: three linear layers in PyTorch's layout, weight (out, in). */
typedef struct mlp {
    tg_tensor *w[3], *b[3];
} mlp;

/* Creates the layers and initialises them as nn.Linear does. */
static void mlp_init(tg_ctx *ctx, mlp *m)
{
    static const int64_t in[3] = {1, HIDDEN, HIDDEN}, out[3] = {HIDDEN, HIDDEN, 1};
    for (int l = 0; l < 3; l++) {
        char name[32];
        snprintf(name, sizeof name, "fc%d.weight", l + 1);
        m->w[l] = tg_param(ctx, TG_F32, TG_SHAPE(out[l], in[l]), name);
        snprintf(name, sizeof name, "fc%d.bias", l + 1);
        m->b[l] = tg_param(ctx, TG_F32, TG_SHAPE(out[l]), name);
        tg_init_default(ctx, m->w[l], m->b[l]);
    }
}

/* x (N, 1) -> prediction (N, 1). */
static tg_tensor *mlp_forward(tg_ctx *ctx, const mlp *m, tg_tensor *x)
{
    tg_tensor *h = tg_relu(ctx, tg_linear(ctx, x, m->w[0], m->b[0]));
    h = tg_relu(ctx, tg_linear(ctx, h, m->w[1], m->b[1]));
    return tg_linear(ctx, h, m->w[2], m->b[2]);
}

/* n points evenly spaced on [LO, HI] as x (n, 1), and sin of them as y. */
static void make_points(tg_ctx *ctx, int64_t n, tg_tensor **x, tg_tensor **y)
{
    *x = tg_set_name(ctx, tg_empty(ctx, TG_F32, TG_SHAPE(n, 1)), "x");
    *y = tg_set_name(ctx, tg_empty(ctx, TG_F32, TG_SHAPE(n, 1)), "sin x");
    for (int64_t i = 0; *x && *y && i < n; i++) {
        double v = LO + (HI - LO) * (double)i / (double)(n - 1);
        tg_set(*x, i, v);
        tg_set(*y, i, sin(v));
    }
}

/* Trains for `steps` steps; TG_OK or the context's error. */
static tg_status train(tg_ctx *ctx, const mlp *m, long steps)
{
    tg_tensor *params[6];
    for (int l = 0; l < 3; l++) {
        params[2 * l] = m->w[l];
        params[2 * l + 1] = m->b[l];
    }
    tg_adam_opts o = tg_adam_defaults();
    o.lr = 1e-2;
    tg_optim *adam = tg_optim_adam(ctx, params, 6, &o);
    tg_optim_set_schedule(ctx, adam,
                          &(tg_lr_schedule){.kind = TG_LR_COSINE, .t_max = steps, .eta_min = 1e-4});
    long every = steps >= 10 ? steps / 10 : 1;
    for (long step = 1; step <= steps && tg_errcode(ctx) == TG_OK; step++) {
        tg_tensor *x, *y;
        make_points(ctx, TRAIN_POINTS, &x, &y);
        tg_tensor *loss = tg_mse(ctx, mlp_forward(ctx, m, x), y, TG_MEAN);
        tg_optim_zero_grad(ctx, adam);
        tg_backward(ctx, loss);
        tg_optim_step(ctx, adam);
        if (tg_errcode(ctx) == TG_OK && (step == 1 || step % every == 0))
            printf("step %5ld  lr %.2e  training MSE %.3e\n", step, tg_optim_lr(adam),
                   tg_get(loss, 0));
        tg_reset(ctx);
        tg_optim_schedule_step(ctx, adam);
    }
    tg_optim_free(ctx, adam);
    return (tg_status)tg_errcode(ctx);
}

/* Writes the grid's x, sin x and prediction as CSV; TG_OK or TG_EIO. */
static tg_status write_csv(tg_ctx *ctx, const char *path, const tg_tensor *x, const tg_tensor *y,
                           const tg_tensor *pred)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return TG_ERROR(ctx, TG_EIO, "write_csv: cannot create %s: %s", path, strerror(errno));
    fprintf(f, "x,sin_x,prediction\n");
    for (int64_t i = 0; i < x->numel; i++)
        fprintf(f, "%.6f,%.6f,%.6f\n", tg_get(x, i), tg_get(y, i), tg_get(pred, i));
    if (fclose(f) != 0)
        return TG_ERROR(ctx, TG_EIO, "write_csv: cannot write %s", path);
    printf("wrote %s\n", path);
    return TG_OK;
}

/* Evaluates on the grid: prints the MSE and a few rows, optionally writes
 * the CSV; *mse receives the MSE. TG_OK or the error. */
static tg_status evaluate(tg_ctx *ctx, const mlp *m, const char *csv, double *mse)
{
    tg_tensor *x, *y, *pred = NULL;
    TG_NO_GRAD(ctx) {
        make_points(ctx, GRID_POINTS, &x, &y);
        pred = mlp_forward(ctx, m, x);
        tg_tensor *err = tg_mse(ctx, pred, y, TG_MEAN);
        *mse = err ? tg_get(err, 0) : NAN;
    }
    if (tg_errcode(ctx) != TG_OK)
        return (tg_status)tg_errcode(ctx);
    printf("MSE on %d grid points in [%g, %g]: %.3e\n", GRID_POINTS, LO, HI, *mse);
    printf("%8s %10s %10s\n", "x", "sin x", "network");
    for (int64_t i = 0; i < GRID_POINTS; i += (GRID_POINTS - 1) / 6) /* x = -1, -0.5, ..., 2 */
        printf("%8.3f %10.5f %10.5f\n", tg_get(x, i), tg_get(y, i), tg_get(pred, i));
    return csv ? write_csv(ctx, csv, x, y, pred) : TG_OK;
}

/* Parses the options; false (after printing the usage) on a bad one. */
static bool parse_args(int argc, char **argv, long *steps, const char **csv, double *max_mse)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[++i] : "";
        char *end;
        bool ok = *val != '\0';
        if (ok && !strcmp(opt, "--steps")) {
            *steps = strtol(val, &end, 10);
            ok = *end == '\0' && *steps >= 1 && *steps <= 10000000;
        } else if (ok && !strcmp(opt, "--max-mse")) {
            *max_mse = strtod(val, &end);
            ok = *end == '\0' && *max_mse >= 0;
        } else if (ok && !strcmp(opt, "--csv")) {
            *csv = val;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "usage: fit_sin [--steps N] [--csv PATH] [--max-mse M]\n");
            return false;
        }
    }
    return true;
}

int main(int argc, char **argv)
{
    long steps = 2000;
    const char *csv = NULL;
    double max_mse = INFINITY, mse = NAN;
    if (!parse_args(argc, argv, &steps, &csv, &max_mse))
        return 2;
    tg_ctx *ctx = tg_ctx_new(1);
    if (!ctx) {
        fprintf(stderr, "fit_sin: cannot create a context\n");
        return 1;
    }
    mlp m;
    mlp_init(ctx, &m);
    tg_status st = train(ctx, &m, steps);
    if (st == TG_OK)
        st = evaluate(ctx, &m, csv, &mse);
    if (st != TG_OK)
        fprintf(stderr, "fit_sin: %s\n", tg_errmsg(ctx));
    tg_ctx_free(ctx); /* frees the parameters too */
    if (st == TG_OK && !(mse <= max_mse)) {
        fprintf(stderr, "fit_sin: MSE %.3e is above %g\n", mse, max_mse);
        return 1;
    }
    return st != TG_OK;
}
