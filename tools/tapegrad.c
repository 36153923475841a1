/*
 * tapegrad.c: the command-line program. Thin: it parses arguments and
 * calls the library.
 *
 *   tapegrad gradcheck [OP ...]   float64 gradcheck of every registered op (or those named)
 *   tapegrad ops                  the registered ops
 *   tapegrad version
 */
#include <stdio.h>
#include <string.h>

#include "tapegrad.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: tapegrad gradcheck [OP ...]   check every op's vjp against finite differences\n"
               "       tapegrad ops                  list the registered ops\n"
               "       tapegrad version\n");
}

/* One row per op: name, cases, entries compared, max abs and rel error, verdict. */
static int gradcheck(tg_ctx *ctx, int argc, char **argv)
{
    int passed = 0, failed = 0;
    printf("%-18s %5s %8s %12s %12s  %s\n", "op", "cases", "entries", "max abs err", "max rel err",
           "result");
    for (const tg_op *op = tg_op_next(NULL); op; op = tg_op_next(op)) {
        bool wanted = argc == 0;
        for (int i = 0; i < argc && !wanted; i++)
            wanted = strcmp(argv[i], op->name) == 0;
        if (!wanted)
            continue;
        tg_gradcheck_result r;
        tg_status st = op->sample ? tg_gradcheck_op(ctx, op, NULL, &r) : TG_EINVAL;
        if (st != TG_OK) {
            printf("%-18s %5s %8s %12s %12s  FAIL: %s\n", op->name, "-", "-", "-", "-",
                   op->sample ? tg_errmsg(ctx) : "no sample inputs");
            tg_clear_error(ctx);
            failed++;
        } else {
            printf("%-18s %5d %8lld %12.3e %12.3e  %s%s\n", op->name, r.cases,
                   (long long)r.checked, r.max_abs_err, r.max_rel_err, r.passed ? "pass" : "FAIL: ",
                   r.passed ? "" : r.msg);
            r.passed ? passed++ : failed++;
        }
        tg_reset(ctx);
    }
    for (int i = 0; i < argc; i++)
        if (!tg_op_find(argv[i])) {
            printf("%-18s %5s %8s %12s %12s  FAIL: no such op\n", argv[i], "-", "-", "-", "-");
            failed++;
        }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

static int list_ops(void)
{
    for (const tg_op *op = tg_op_next(NULL); op; op = tg_op_next(op)) {
        char inputs[32];
        if (op->max_in < 0)
            snprintf(inputs, sizeof inputs, "%d or more", op->min_in);
        else if (op->max_in == op->min_in)
            snprintf(inputs, sizeof inputs, "%d", op->min_in);
        else
            snprintf(inputs, sizeof inputs, "%d to %d", op->min_in, op->max_in);
        printf("%-18s inputs: %-10s%s\n", op->name, inputs, op->sample ? "" : "  (no samples)");
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    tg_ctx *ctx = tg_ctx_new(20261123);
    if (!ctx) {
        fprintf(stderr, "tapegrad: cannot create a context (out of memory)\n");
        return 1;
    }
    int rc;
    if (strcmp(argv[1], "gradcheck") == 0) {
        rc = gradcheck(ctx, argc - 2, argv + 2);
    } else if (strcmp(argv[1], "ops") == 0) {
        rc = list_ops();
    } else if (strcmp(argv[1], "version") == 0) {
        printf("tapegrad %s\n", tg_version());
        rc = 0;
    } else {
        usage(stderr);
        rc = 2;
    }
    tg_ctx_free(ctx);
    return rc;
}
