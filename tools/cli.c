/*
 * cli.c: option and number parsing, the error report and the progress bar
 * shared by the commands.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

static const cli_opt *find_opt(const cli_opt *opts, const char *name, size_t len)
{
    for (const cli_opt *o = opts; o && o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

static const cli_opt *find_alias(const cli_opt *opts, char c)
{
    for (const cli_opt *o = opts; o && o->name; o++)
        if (o->alias && o->alias == c)
            return o;
    return NULL;
}

static int usage_error(const char *cmd, const char *what, const char *arg)
{
    fprintf(stderr, "tapegrad %s: %s '%s'\n(see 'tapegrad %s --help')\n", cmd, what, arg, cmd);
    return CLI_USAGE;
}

int cli_parse(const char *cmd, const char *usage, int argc, char **argv, const cli_opt *opts,
              const char **pos, int min_pos, int max_pos, int *n_pos)
{
    *n_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return CLI_HELP;
        }
        bool short_form = a[0] == '-' && a[1] && a[1] != '-' && !a[2];
        if (!short_form && (strncmp(a, "--", 2) != 0 || a[2] == '\0')) {
            if (*n_pos == max_pos)
                return usage_error(cmd, "unexpected argument", a);
            pos[(*n_pos)++] = a;
            continue;
        }
        const char *name = a + (short_form ? 1 : 2), *eq = short_form ? NULL : strchr(name, '=');
        const cli_opt *o = short_form ? find_alias(opts, a[1])
                                      : find_opt(opts, name, eq ? (size_t)(eq - name) : strlen(name));
        if (!o)
            return usage_error(cmd, "unknown option", a);
        if (!o->value) {
            if (eq)
                return usage_error(cmd, "this option takes no value", a);
            *o->flag = true;
        } else if (eq) {
            *o->value = eq + 1;
        } else if (i + 1 < argc) {
            *o->value = argv[++i];
        } else {
            return usage_error(cmd, "this option needs a value", a);
        }
    }
    if (*n_pos < min_pos) {
        fprintf(stderr, "tapegrad %s: missing argument\n%s", cmd, usage);
        return CLI_USAGE;
    }
    return CLI_OK;
}

bool cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi,
             long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "tapegrad %s: --%s '%s' is not a whole number from %lld to %lld\n", cmd,
                opt, s, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

bool cli_double(const char *cmd, const char *opt, const char *s, double lo, double hi,
                double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "tapegrad %s: --%s '%s' is not a number from %g to %g\n", cmd, opt, s, lo,
                hi);
        return false;
    }
    *out = v;
    return true;
}

bool cli_dtype(const char *cmd, const char *s, tg_dtype *out)
{
    if (!strcmp(s, "f32") || !strcmp(s, "float32")) {
        *out = TG_F32;
    } else if (!strcmp(s, "f64") || !strcmp(s, "float64")) {
        *out = TG_F64;
    } else {
        fprintf(stderr, "tapegrad %s: --dtype '%s' is not f32 or f64\n", cmd, s);
        return false;
    }
    return true;
}

bool cli_writable(const char *cmd, const char *opt, const char *path)
{
    struct stat st;
    bool existed = stat(path, &st) == 0;
    FILE *f = fopen(path, "a");
    if (!f) {
        fprintf(stderr, "tapegrad %s: cannot write --%s '%s': %s\n", cmd, opt, path,
                strerror(errno));
        return false;
    }
    fclose(f);
    if (!existed)
        remove(path);
    return true;
}

int cli_fail(const char *cmd, const tg_ctx *ctx)
{
    fprintf(stderr, "tapegrad %s: %s\n", cmd,
            tg_errcode(ctx) ? tg_errmsg(ctx) : "cannot create a context (out of memory)");
    return CLI_FAIL;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "1:02:03" or "2:03" */
static void clock_text(char *buf, size_t size, double seconds)
{
    long s = seconds > 0 && seconds < 1e8 ? (long)(seconds + 0.5) : 0;
    if (s >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
}

void cli_progress_start(cli_progress *p, const char *label, long long total)
{
    memset(p, 0, sizeof *p);
    p->tty = isatty(STDERR_FILENO);
    p->total = total;
    p->label = label;
    p->start = p->last_draw = cli_now();
}

static void draw(cli_progress *p, double loss, bool final)
{
    double now = cli_now(), elapsed = now - p->start;
    double rate = elapsed > 0 ? (double)p->examples / elapsed : 0;
    double left = p->done ? elapsed * (double)(p->total - p->done) / (double)p->done : 0;
    char el[48], lf[48];
    clock_text(el, sizeof el, elapsed);
    clock_text(lf, sizeof lf, left);
    if (p->tty) {
        enum { WIDTH = 24 };
        int fill = p->total ? (int)(WIDTH * p->done / p->total) : WIDTH;
        char bar[WIDTH + 1];
        for (int i = 0; i < WIDTH; i++)
            bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
        bar[WIDTH] = '\0';
        fprintf(stderr, "\r%s [%s] %lld/%lld  loss %.4f  %.0f ex/s  %s elapsed, %s left\033[K%s",
                p->label, bar, p->done, p->total, loss, rate, el, lf, final ? "\n" : "");
    } else {
        fprintf(stderr, "%s %lld/%lld batches  loss %.4f  %.0f ex/s  %s elapsed, %s left\n",
                p->label, p->done, p->total, loss, rate, el, lf);
    }
    fflush(stderr);
    p->last_draw = now;
}

void cli_progress_step(cli_progress *p, long long examples, double loss)
{
    p->done++;
    p->examples += examples;
    if (p->tty) {
        if (cli_now() - p->last_draw >= 0.1 || p->done == p->total)
            draw(p, loss, p->done == p->total);
        return;
    }
    int tenth = p->total ? (int)(10 * p->done / p->total) : 10;
    if (tenth > p->last_tenth) {
        p->last_tenth = tenth;
        draw(p, loss, false);
    }
}

void cli_progress_end(cli_progress *p)
{
    if (p->tty && p->done != p->total)
        fputc('\n', stderr);
}
