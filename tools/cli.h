/*
 * cli.h: what the commands of the tapegrad program share: option parsing
 * in git's style (--help on stdout with exit 0, a usage error on stderr
 * naming the argument with exit 2), number parsing, the progress bar and
 * the error report. Exit codes: 0 ok, 1 runtime error, 2 usage.
 */
#ifndef TAPEGRAD_CLI_H
#define TAPEGRAD_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "tapegrad.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2, CLI_HELP = 3 };

/* One --option: a flag (value NULL) or one that takes a value. */
typedef struct cli_opt {
    const char *name;    /* "epochs" for --epochs */
    const char **value;  /* receives the value, or NULL for a flag */
    bool *flag;          /* set when a flag is given */
    char alias;          /* a one-letter form ('o' for -o), or 0 */
} cli_opt;

/*
 * Parses argv[0..argc-1] (the arguments after the command's name): options
 * from opts (NULL-terminated by name), the rest positional into pos (at
 * most max_pos). -h / --help prints usage to stdout and returns CLI_HELP.
 * Returns CLI_OK, CLI_HELP, or CLI_USAGE after printing the error and a
 * hint to stderr. Fewer than min_pos positionals is a usage error.
 */
int cli_parse(const char *cmd, const char *usage, int argc, char **argv, const cli_opt *opts,
              const char **pos, int min_pos, int max_pos, int *n_pos);

/* Number options: false (and a message naming the option) when s is not a
 * whole number in [lo, hi], or not a finite number in [lo, hi]. */
bool cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi,
             long long *out);
bool cli_double(const char *cmd, const char *opt, const char *s, double lo, double hi,
                double *out);
/* "f32" / "f64" (also float32 / float64). */
bool cli_dtype(const char *cmd, const char *s, tg_dtype *out);

/* True when path can be written (it is created and removed again if it did
 * not exist); else a message naming the option and path, and false. */
bool cli_writable(const char *cmd, const char *opt, const char *path);

/* Prints "tapegrad CMD: <the context's error>" to stderr and returns CLI_FAIL. */
int cli_fail(const char *cmd, const tg_ctx *ctx);

/* A progress bar on stderr: redrawn in place when stderr is a terminal
 * (batches done, loss, examples/s, elapsed, time left), a plain line every
 * tenth of the way otherwise. */
typedef struct cli_progress {
    bool tty;
    long long total, done, examples;
    double start, last_draw;
    int last_tenth;
    const char *label;
} cli_progress;

void cli_progress_start(cli_progress *p, const char *label, long long total);
void cli_progress_step(cli_progress *p, long long examples, double loss);
void cli_progress_end(cli_progress *p);

/* Seconds on a monotonic clock. */
double cli_now(void);

/* The commands. */
int cmd_gradcheck(int argc, char **argv);
int cmd_summary(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_dot(int argc, char **argv);

/* plot.c: the loss and accuracy curves of a run as an SVG, drawn with
 * PLplot: train and test loss against the epoch on the left, test
 * accuracy on the right; n epochs numbered from first. False (with a
 * message) on failure. */
bool cli_plot_curves(const char *path, int first, int n, const double *train_loss,
                     const double *test_loss, const double *test_acc);

#endif
