/*
 * tapegrad.c: the command-line program. Thin: each command parses its
 * arguments and calls the library.
 *
 *   tapegrad summary MODEL               layers, shapes, parameters, activation memory
 *   tapegrad train MODEL [options]       train on Fashion-MNIST, with checkpoints, CSV and curves
 *   tapegrad eval MODEL --load CKPT      test loss, accuracy and the confusion matrix
 *   tapegrad grad MODEL --params P ...   one forward and backward pass, from and to safetensors
 *   tapegrad dot MODEL [-o graph.svg]    draw its graph (forward, backward, collapsed)
 *   tapegrad gradcheck [OP ...]          float64 gradcheck of registered ops (--load LIB for yours)
 *   tapegrad ops                         the registered ops
 *   tapegrad version
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage_text[] =
    "usage: tapegrad COMMAND [ARGS]\n"
    "\n"
    "  summary MODEL          per layer: output shape, parameters, activation memory; totals\n"
    "  train MODEL            train on Fashion-MNIST (checkpoints, metrics CSV, curves SVG)\n"
    "  eval MODEL --load C    test loss, accuracy and confusion matrix of a checkpoint\n"
    "  grad MODEL ...         one forward and backward pass, from and to safetensors files\n"
    "  dot MODEL              draw the graph of one forward and backward pass\n"
    "  gradcheck [OP ...]     check ops' vjps against finite differences in float64\n"
    "  ops                    list the registered ops\n"
    "  version                print the version\n"
    "\n"
    "'tapegrad COMMAND --help' describes a command. MODEL is a model file (.tgm).\n";

static const char gradcheck_usage[] =
    "usage: tapegrad gradcheck [OP ...] [--load LIB.so]\n"
    "\n"
    "Checks each registered op's vjp (or each OP named) against central finite\n"
    "differences in float64 over the op's sample inputs, one row per op, then a\n"
    "closing 'N passed, M failed' line. Exit status 1 when any failed.\n"
    "\n"
    "  --load LIB.so   first load a shared library of your own ops: it must export\n"
    "                  'tg_status tg_register_ops(tg_ctx *ctx)', which registers them\n"
    "                  with tg_op_register; with --load and no OP, only its ops are checked\n";

/* Loads LIB and calls its tg_register_ops; the new ops are listed in wanted. */
static int load_ops(tg_ctx *ctx, const char *lib, const char **wanted, int *n_wanted, int max)
{
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "tapegrad gradcheck: cannot load '%s': %s\n", lib, dlerror());
        return CLI_FAIL;
    }
    tg_status (*reg)(tg_ctx *);
    *(void **)&reg = dlsym(h, "tg_register_ops");
    if (!reg) {
        fprintf(stderr, "tapegrad gradcheck: '%s' does not export tg_register_ops\n", lib);
        return CLI_FAIL; /* the handle stays open: the process ends soon */
    }
    int before = tg_op_count();
    const tg_op *known[1024];
    int n_known = 0;
    for (const tg_op *op = tg_op_next(NULL); op && n_known < 1024; op = tg_op_next(op))
        known[n_known++] = op;
    if (reg(ctx) != TG_OK)
        return cli_fail("gradcheck", ctx);
    for (const tg_op *op = tg_op_next(NULL); op && *n_wanted < max; op = tg_op_next(op)) {
        bool old = false;
        for (int i = 0; i < n_known && !old; i++)
            old = known[i] == op;
        if (!old)
            wanted[(*n_wanted)++] = op->name;
    }
    if (tg_op_count() == before)
        fprintf(stderr, "tapegrad gradcheck: '%s' registered no op\n", lib);
    return CLI_OK;
}

/* One row per op: name, cases, entries compared, max abs and rel error, verdict. */
static int check_ops(tg_ctx *ctx, const char **names, int n)
{
    int passed = 0, failed = 0;
    printf("%-18s %5s %8s %12s %12s  %s\n", "op", "cases", "entries", "max abs err", "max rel err",
           "result");
    for (const tg_op *op = tg_op_next(NULL); op; op = tg_op_next(op)) {
        bool wanted = n == 0;
        for (int i = 0; i < n && !wanted; i++)
            wanted = strcmp(names[i], op->name) == 0;
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
    for (int i = 0; i < n; i++)
        if (!tg_op_find(names[i])) {
            printf("%-18s %5s %8s %12s %12s  FAIL: no such op\n", names[i], "-", "-", "-", "-");
            failed++;
        }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? CLI_FAIL : CLI_OK;
}

int cmd_gradcheck(int argc, char **argv)
{
    const char *lib = NULL, *pos[256];
    cli_opt opts[] = {{"load", &lib, NULL, 0}, {NULL, NULL, NULL, 0}};
    int n = 0, rc = cli_parse("gradcheck", gradcheck_usage, argc, argv, opts, pos, 0, 128, &n);
    if (rc != CLI_OK)
        return rc == CLI_HELP ? CLI_OK : rc;
    tg_ctx *ctx = tg_ctx_new(20261123);
    if (!ctx)
        return cli_fail("gradcheck", NULL);
    if (lib) /* the library's ops join the list only when none was named */
        rc = load_ops(ctx, lib, pos, &n, n ? n : 256);
    if (rc == CLI_OK)
        rc = check_ops(ctx, pos, n);
    tg_ctx_free(ctx);
    return rc;
}

static const char ops_usage[] =
    "usage: tapegrad ops\n"
    "\n"
    "Lists the registered ops: name, how many inputs, whether they have samples.\n";
static const char version_usage[] = "usage: tapegrad version\n\nPrints the version.\n";

/* A command without arguments: only --help is taken. */
static int no_args(const char *cmd, const char *usage, int argc, char **argv)
{
    int n;
    return cli_parse(cmd, usage, argc, argv, NULL, NULL, 0, 0, &n);
}

static int list_ops(int argc, char **argv)
{
    int rc = no_args("ops", ops_usage, argc, argv);
    if (rc != CLI_OK)
        return rc == CLI_HELP ? CLI_OK : rc;
    tg_ctx *ctx = tg_ctx_new(0); /* registers the built-ins */
    if (!ctx)
        return cli_fail("ops", NULL);
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
    tg_ctx_free(ctx);
    return CLI_OK;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } cmds[] = {{"summary", cmd_summary}, {"train", cmd_train},         {"eval", cmd_eval},
                {"grad", cmd_grad},       {"gradcheck", cmd_gradcheck}, {"dot", cmd_dot}};
    if (argc < 2) {
        fputs(usage_text, stderr);
        return CLI_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(cmd, cmds[i].name))
            return cmds[i].run(argc - 2, argv + 2);
    if (!strcmp(cmd, "ops"))
        return list_ops(argc - 2, argv + 2);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        int rc = no_args("version", version_usage, argc - 2, argv + 2);
        if (rc == CLI_OK)
            printf("tapegrad %s\n", tg_version());
        return rc == CLI_HELP ? CLI_OK : rc;
    }
    fprintf(stderr, "tapegrad: '%s' is not a command\n\n%s", cmd, usage_text);
    return CLI_USAGE;
}
