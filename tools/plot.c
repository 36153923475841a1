/*
 * plot.c: a run's training curves as an SVG, drawn by PLplot's svg device
 * (Debian libplplot-dev): loss per epoch (train and test) in the left
 * panel, test accuracy in the right one.
 */
#include "cli.h"

#include <math.h>
#include <plplot.h>
#include <stdlib.h>

/* The range of up to two series, padded so the lines stay off the frame. */
static void range(int n, const double *a, const double *b, double *lo, double *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        const double v[2] = {a[i], b ? b[i] : a[i]};
        for (int k = 0; k < 2; k++)
            if (isfinite(v[k])) {
                *lo = fmin(*lo, v[k]);
                *hi = fmax(*hi, v[k]);
            }
    }
    if (!isfinite(*lo)) {
        *lo = 0;
        *hi = 1;
    }
    double pad = (*hi - *lo) * 0.08 + 1e-6;
    *lo -= pad;
    *hi += pad;
}

static void series(int n, const double *x, const double *y, int color, PLINT symbol)
{
    plcol0(color);
    plwidth(2.0);
    plline(n, x, y);
    plssym(0.0, 0.8);
    plpoin(n, x, y, symbol);
}

static void legend(const char *const *text, const PLINT *colors, int n)
{
    PLINT opts[2], lcol[2], lstyle[2] = {1, 1}, scol[2], snum[2] = {1, 1}, black[2] = {1, 1};
    PLFLT lwidth[2] = {2, 2}, sscale[2] = {1, 1};
    const char *sym[2] = {"*", "x"}; /* plpoin codes 3 and 5 */
    for (int i = 0; i < n; i++) {
        opts[i] = PL_LEGEND_LINE | PL_LEGEND_SYMBOL;
        lcol[i] = scol[i] = colors[i];
    }
    PLFLT w, h;
    pllegend(&w, &h, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, PL_POSITION_TOP | PL_POSITION_RIGHT,
             0.02, 0.02, 0.1, 0, 1, 1, 0, 0, n, opts, 1.0, 1.0, 2.0, 1.0, black, text, NULL, NULL,
             NULL, NULL, lcol, lstyle, lwidth, scol, sscale, snum, sym);
}

bool cli_plot_curves(const char *path, int first, int n, const double *train_loss,
                     const double *test_loss, const double *test_acc)
{
    double *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    if (!x || n < 1) {
        free(x);
        fprintf(stderr, "tapegrad train: no epoch to plot\n");
        return false;
    }
    for (int i = 0; i < n; i++)
        x[i] = first + i;
    double xlo = first - 0.3, xhi = first + n - 0.7, lo, hi;
    plsdev("svg");
    plsfnam(path);
    plsetopt("geometry", "1000x420");
    plscolbg(255, 255, 255);
    plscol0(1, 0, 0, 0);        /* frame and text: black */
    plscol0(2, 31, 119, 180);   /* train: blue */
    plscol0(3, 214, 39, 40);    /* test: red */
    plscol0(4, 44, 160, 44);    /* accuracy: green */
    plssub(2, 1);
    plinit();
    range(n, train_loss, test_loss, &lo, &hi);
    plcol0(1);
    plwidth(1.0);
    plenv(xlo, xhi, lo, hi, 0, 2);
    pllab("epoch", "loss", "loss per epoch");
    series(n, x, train_loss, 2, 3);
    series(n, x, test_loss, 3, 5);
    legend((const char *[]){"train", "test"}, (const PLINT[]){2, 3}, 2);
    double *pct = malloc((size_t)n * sizeof *pct);
    if (pct) {
        for (int i = 0; i < n; i++)
            pct[i] = 100.0 * test_acc[i];
        range(n, pct, NULL, &lo, &hi);
        plcol0(1);
        plwidth(1.0);
        plenv(xlo, xhi, lo, hi, 0, 2);
        pllab("epoch", "accuracy (%)", "test accuracy");
        series(n, x, pct, 4, 3);
    }
    plend();
    free(pct);
    free(x);
    return pct != NULL;
}
