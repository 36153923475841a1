/*
 * test_cli.c: the `tapegrad` command (tools/), run as a user runs it: the
 * built binary is started with fork and execv, its stdout and stderr go
 * to files in a fresh mkdtemp directory and are read back, and the exit
 * code is checked (0 ok, 1 runtime error, 2 usage).
 *
 *   usage      --help and -h, and the usage errors naming their argument
 *   summary    the notes' two networks' parameter totals; missing and
 *              malformed model files
 *   grad       LeNet-5 in float64 against PyTorch (tests/fixtures/model/)
 *   train      a tiny synthetic Fashion-MNIST: epochs, CSV, SVG, checkpoints,
 *              a bit-identical resume, eval's confusion matrix, no data
 *   dot        every view, as SVG and as dot text
 *   gradcheck  --load of a user's op library (examples/softplus_op.c built as a plugin)
 *   fixed      what a first version of the command got wrong
 *
 * A failing test leaves its directory behind for inspection.
 *
 * CMake passes TG_TAPEGRAD (the binary), TG_USEROPS (the module),
 * TG_MODELS (models/) and TG_FIXTURES (tests/fixtures).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define LENET TG_MODELS "/lenet5.tgm"
#define LENET_FIX TG_FIXTURES "/model/lenet5.safetensors"

/* ---------------------------------------------------------------- running the command */

enum { OUT_MAX = 1 << 16, MAX_ARGS = 32 };

/* The last run: exit code and what it printed. */
static struct {
    int code;
    char out[OUT_MAX], err[OUT_MAX];
} R;

/* A file read back. */
static char file_buf[1 << 22];

/* The temporary directory of the running test. */
static char dir[256];

static void make_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/tg_cli_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* dir/name in buf. */
static const char *in_dir(char *buf, size_t size, const char *name)
{
    int n = snprintf(buf, size, "%s/%s", dir, name);
    ck_assert(n > 0 && (size_t)n < size);
    return buf;
}

/* The file's bytes in buf (NUL-terminated); their count, or -1 when it cannot be read. */
static long slurp(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
    return (long)n;
}

/* In the child: stdin empty, stdout and stderr to files, then the program. */
static void child(char **argv, const char *out, const char *err)
{
    if (!freopen("/dev/null", "r", stdin) || !freopen(out, "w", stdout) ||
        !freopen(err, "w", stderr))
        _exit(126);
    execv(TG_TAPEGRAD, argv);
    _exit(127);
}

/* Runs `tapegrad ARGS...` (NULL-terminated); fills R and returns the exit code
 * (128 + the signal when a signal ended it). */
static int tapegrad(const char *arg, ...)
{
    char *argv[MAX_ARGS + 2] = {"tapegrad"};
    int n = 1;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a; a = va_arg(ap, const char *)) {
        ck_assert_int_lt(n, MAX_ARGS);
        argv[n++] = (char *)a;
    }
    va_end(ap);
    char out[300], err[300];
    in_dir(out, sizeof out, "stdout.txt");
    in_dir(err, sizeof err, "stderr.txt");
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        child(argv, out, err);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    R.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    ck_assert_int_ge(slurp(out, R.out, sizeof R.out), 0);
    ck_assert_int_ge(slurp(err, R.err, sizeof R.err), 0);
    return R.code;
}

/* The last run exited with code and its stderr contains text. */
#define ck_failed(want_code, text)                                                         \
    do {                                                                                   \
        ck_assert_msg(R.code == (want_code), "exit %d, expected %d; stderr: %s", R.code,   \
                      (want_code), R.err);                                                 \
        ck_assert_msg(strstr(R.err, (text)) != NULL, "stderr lacks '%s': %s", (text),      \
                      R.err);                                                              \
    } while (0)

/* The last run exited with 0 (stderr may hold a progress bar). */
#define ck_ran()                                                                           \
    ck_assert_msg(R.code == 0, "exit %d; stderr: %s", R.code, R.err)

static void write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, size, f), size);
    ck_assert_int_eq(fclose(f), 0);
}

/* The lines of text that hold a, and b too unless b is NULL. */
static int count_lines_with(const char *text, const char *a, const char *b)
{
    int n = 0;
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *end = strchr(l, '\n');
        size_t len = end ? (size_t)(end - l) : strlen(l);
        char line[512];
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), l);
        n += strstr(line, a) && (!b || strstr(line, b));
    }
    return n;
}

/* ---------------------------------------------------------------- usage */

static const char *const commands[] = {"summary", "train", "eval", "grad", "dot", "gradcheck"};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

/* --help and -h print usage on stdout, nothing on stderr, exit 0. */
static void ck_help(const char *cmd, const char *flag)
{
    ck_assert_msg(tapegrad(cmd, flag, NULL) == 0, "%s %s: exit %d", cmd, flag, R.code);
    ck_assert_msg(strstr(R.out, "usage:") != NULL, "%s %s: stdout '%s'", cmd, flag, R.out);
    ck_assert_msg(R.err[0] == '\0', "%s %s: stderr '%s'", cmd, flag, R.err);
}

START_TEST(help_on_every_command)
{
    for (int i = 0; i < N_COMMANDS; i++) {
        ck_help(commands[i], "--help");
        ck_help(commands[i], "-h");
    }
    /* help wins over whatever else is on the line */
    ck_assert_int_eq(tapegrad("train", LENET, "--epochs", "0", "--help", NULL), 0);
    ck_assert_ptr_nonnull(strstr(R.out, "usage: tapegrad train"));
}
END_TEST

START_TEST(help_of_the_program)
{
    ck_assert_int_eq(tapegrad("--help", NULL), 0);
    ck_assert_ptr_nonnull(strstr(R.out, "usage:"));
    ck_assert_str_eq(R.err, "");
    ck_assert_int_eq(tapegrad("-h", NULL), 0);
    ck_assert_ptr_nonnull(strstr(R.out, "usage:"));
    for (int i = 0; i < N_COMMANDS; i++) /* the overview names every command */
        ck_assert_msg(strstr(R.out, commands[i]) != NULL, "usage lacks %s", commands[i]);
}
END_TEST

START_TEST(no_command_is_a_usage_error)
{
    ck_assert_int_eq(tapegrad(NULL), 2);
    ck_assert_ptr_nonnull(strstr(R.err, "usage:"));
    ck_assert_str_eq(R.out, "");
}
END_TEST

START_TEST(unknown_command)
{
    tapegrad("frobnicate", LENET, NULL);
    ck_failed(2, "'frobnicate'");
    ck_assert_str_eq(R.out, "");
}
END_TEST

START_TEST(unknown_option_on_every_command)
{
    for (int i = 0; i < N_COMMANDS; i++) {
        tapegrad(commands[i], LENET, "--frobnicate", NULL);
        ck_failed(2, "--frobnicate");
        ck_assert_msg(strstr(R.err, commands[i]) != NULL, "stderr lacks the command: %s", R.err);
        ck_assert_str_eq(R.out, "");
    }
}
END_TEST

START_TEST(missing_values)
{
    static const char *const lines[][3] = {
        {"train", "--epochs", NULL}, {"train", "--data", NULL},  {"eval", "--load", NULL},
        {"eval", "--batch", NULL},   {"grad", "--params", NULL}, {"dot", "--view", NULL},
        {"gradcheck", "--load", NULL}};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        tapegrad(lines[i][0], LENET, lines[i][1], NULL);
        ck_failed(2, lines[i][1]);
        ck_assert_ptr_nonnull(strstr(R.err, "needs a value"));
    }
    tapegrad("summary", NULL); /* the model itself */
    ck_failed(2, "missing argument");
    tapegrad("summary", LENET, "extra.tgm", NULL);
    ck_failed(2, "'extra.tgm'");
}
END_TEST

/* `tapegrad CMD MODEL OPT VALUE` is a usage error naming OPT and VALUE. */
static void ck_bad_value(const char *cmd, const char *opt, const char *value)
{
    if (strcmp(cmd, "eval") == 0) /* eval asks for --load first */
        tapegrad(cmd, LENET, "--load", "ckpt.safetensors", opt, value, NULL);
    else
        tapegrad(cmd, LENET, opt, value, NULL);
    ck_failed(2, opt);
    ck_failed(2, value);
    ck_assert_str_eq(R.out, "");
}

START_TEST(bad_numbers)
{
    ck_bad_value("train", "--epochs", "0");
    ck_bad_value("train", "--epochs", "2.5");
    ck_bad_value("train", "--batch", "x");
    ck_bad_value("train", "--batch", "-3");
    ck_bad_value("train", "--lr", "fast");
    ck_bad_value("train", "--lr", "nan");
    ck_bad_value("train", "--seed", "99999999999999999999999");
    ck_bad_value("train", "--max-batches", "-1");
    ck_bad_value("train", "--threads", "0");
    ck_bad_value("eval", "--batch", "0");
    ck_bad_value("dot", "--batch", "many");
}
END_TEST

START_TEST(bad_names)
{
    ck_bad_value("train", "--dtype", "f16");
    ck_bad_value("summary", "--dtype", "int8");
    ck_bad_value("eval", "--dtype", "double");
    ck_bad_value("train", "--optimizer", "lbfgs");
    ck_bad_value("dot", "--view", "sideways");
    /* grad checks --dtype before its required options */
    tapegrad("grad", LENET, "--dtype", "bf16", "--params", "p", "--input", "x", "--out", "g",
             NULL);
    ck_failed(2, "'bf16'");
}
END_TEST

START_TEST(required_options)
{
    tapegrad("eval", LENET, NULL);
    ck_failed(2, "--load");
    tapegrad("grad", LENET, "--params", LENET_FIX, "--input", LENET_FIX, NULL);
    ck_failed(2, "--out");
}
END_TEST

/* ---------------------------------------------------------------- summary */

START_TEST(summary_of_the_notes_networks)
{
    ck_assert_int_eq(tapegrad("summary", TG_MODELS "/notes_net1.tgm", NULL), 0);
    ck_assert_msg(strstr(R.out, "total params: 42,968,388\n") != NULL, "%s", R.out);
    ck_assert_int_eq(tapegrad("summary", TG_MODELS "/notes_net2.tgm", NULL), 0);
    ck_assert_msg(strstr(R.out, "total params: 5,812,276\n") != NULL, "%s", R.out);
    ck_assert_str_eq(R.err, "");
}
END_TEST

START_TEST(summary_of_a_missing_file)
{
    char path[300];
    tapegrad("summary", in_dir(path, sizeof path, "absent.tgm"), NULL);
    ck_failed(1, path);
    ck_assert_str_eq(R.out, "");
}
END_TEST

START_TEST(summary_of_a_malformed_file)
{
    static const char text[] = "# a broken LeNet\n"
                               "input 1 28 28\n"
                               "conv2d 1 6 5 padding=2\n"
                               "relu\n"
                               "max_pool2d two\n";
    char path[300], where[320];
    in_dir(path, sizeof path, "broken.tgm");
    write_file(path, text, sizeof text - 1);
    tapegrad("summary", path, NULL);
    snprintf(where, sizeof where, "%s:5:", path);
    ck_failed(1, where);
    ck_assert_str_eq(R.out, "");
    char svg[300]; /* the same message from another command that reads models */
    tapegrad("dot", path, "-o", in_dir(svg, sizeof svg, "x.svg"), NULL);
    ck_failed(1, where);
}
END_TEST

/* ---------------------------------------------------------------- grad */

/* max |got - want| <= tol * max |want| over the tensor, shapes and dtype equal. */
static void ck_same(tg_ctx *ctx, tg_st *got_f, const char *got_name, tg_st *want_f,
                    const char *want_name, double tol)
{
    tg_tensor *got = tg_st_read(ctx, got_f, got_name);
    tg_tensor *want = tg_st_read(ctx, want_f, want_name);
    ck_assert_msg(got && want, "%s / %s: %s", got_name, want_name, tg_errmsg(ctx));
    ck_assert_int_eq(got->dtype, TG_F64);
    ck_assert_int_eq(got->numel, want->numel);
    ck_assert_msg(got->ndim == want->ndim, "%s: %d dims, expected %d", got_name, got->ndim,
                  want->ndim);
    for (int d = 0; d < got->ndim; d++)
        ck_assert_int_eq(got->shape[d], want->shape[d]);
    double scale = 0, err = 0;
    for (int64_t i = 0; i < want->numel; i++) {
        scale = fmax(scale, fabs(tg_get(want, i)));
        err = fmax(err, fabs(tg_get(got, i) - tg_get(want, i)));
    }
    ck_assert_msg(scale > 0, "%s is all zeros", want_name);
    ck_assert_msg(err <= tol * scale, "%s: max error %.3g, %.3g of max |value| %.3g", got_name,
                  err, err / scale, scale);
}

/* Runs grad on LeNet-5 with these parameters and checks its output file
 * against the fixture: loss, logits and every parameter's gradient. */
static void ck_grad_run(const char *params)
{
    char out[300];
    in_dir(out, sizeof out, "grads.safetensors");
    tapegrad("grad", LENET, "--params", params, "--input", LENET_FIX, "--target", LENET_FIX,
             "--out", out, "--dtype", "f64", NULL);
    ck_ran();
    tg_ctx *ctx = tg_ctx_new(0);
    tg_st *got = tg_st_open(ctx, out), *want = tg_st_open(ctx, LENET_FIX);
    ck_assert_msg(got && want, "%s", tg_errmsg(ctx));
    ck_same(ctx, got, "loss", want, "loss", 1e-10);
    ck_same(ctx, got, "output", want, "output", 1e-10);
    double printed = 0;
    ck_assert_int_eq(sscanf(R.out, "loss %lf", &printed), 1);
    ck_close(printed, tg_get(tg_st_read(ctx, want, "loss"), 0), 1e-15);
    tg_tensor *gx = tg_st_read(ctx, got, "input.grad"), *x = tg_st_read(ctx, want, "input");
    ck_assert_msg(gx && x, "%s", tg_errmsg(ctx));
    ck_assert_int_eq(gx->numel, x->numel);
    int params_seen = 0;
    for (size_t i = 0; i < tg_st_count(want); i++) {
        const char *name = tg_st_entry_at(want, i)->name;
        if (strncmp(name, "grad.", 5) != 0)
            continue;
        char key[128];
        snprintf(key, sizeof key, "%s.grad", name + 5);
        ck_same(ctx, got, key, want, name, 1e-10);
        params_seen++;
    }
    ck_assert_int_eq(params_seen, 10); /* 5 layers with weight and bias */
    /* loss, output, input.grad and the 10 gradients, nothing else */
    ck_assert_uint_eq(tg_st_count(got), 13);
    tg_st_close(ctx, got);
    tg_st_close(ctx, want);
    tg_ctx_free(ctx);
}

START_TEST(grad_of_lenet5_matches_pytorch)
{
    /* the fixture's state dict alone, as --params is strict today */
    char params[300];
    in_dir(params, sizeof params, "params.safetensors");
    tg_ctx *ctx = tg_ctx_new(0);
    tg_model *m = tg_model_load(ctx, LENET, TG_F64);
    ck_assert_int_eq(tg_model_load_state(ctx, m, LENET_FIX, false), TG_OK);
    tg_st_item items[16];
    int n = tg_model_state_count(m);
    ck_assert_int_le(n, 16);
    for (int i = 0; i < n; i++)
        items[i] = (tg_st_item){NULL, tg_model_state(m, i)};
    ck_assert_int_eq(tg_st_save(ctx, params, items, (size_t)n, NULL, 0), TG_OK);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
    ck_grad_run(params);
}
END_TEST

START_TEST(grad_of_missing_files)
{
    char out[300];
    in_dir(out, sizeof out, "g.safetensors");
    tapegrad("grad", LENET, "--params", LENET_FIX, "--input", "/nonexistent/x.safetensors",
             "--out", out, NULL);
    ck_assert_int_eq(R.code, 1);
    struct stat st;
    ck_assert_int_ne(stat(out, &st), 0); /* no output on failure */
}
END_TEST

/* ---------------------------------------------------------------- train, eval */

enum { N_TRAIN = 256, N_TEST = 64, SIDE = 28 };

/* A tiny Fashion-MNIST: random bytes whose mean brightness decides the
 * label (class c draws its pixels from [25 c, 25 c + 30)), plain IDX files. */
static void write_idx(const char *data_dir, const char *prefix, int n, uint32_t *rng)
{
    static uint8_t images[16 + N_TRAIN * SIDE * SIDE];
    static uint8_t labels[8 + N_TRAIN];
    const uint8_t img_head[16] = {0, 0, 8, 3, (uint8_t)(n >> 24), (uint8_t)(n >> 16),
                                  (uint8_t)(n >> 8), (uint8_t)n, 0, 0, 0, SIDE, 0, 0, 0, SIDE};
    const uint8_t lab_head[8] = {0, 0, 8, 1, (uint8_t)(n >> 24), (uint8_t)(n >> 16),
                                 (uint8_t)(n >> 8), (uint8_t)n};
    memcpy(images, img_head, sizeof img_head);
    memcpy(labels, lab_head, sizeof lab_head);
    for (int i = 0; i < n; i++) {
        int c = i % 10;
        labels[8 + i] = (uint8_t)c;
        for (int p = 0; p < SIDE * SIDE; p++) {
            *rng = *rng * 1664525u + 1013904223u;
            images[16 + (size_t)i * SIDE * SIDE + (size_t)p] = (uint8_t)(25 * c + (*rng >> 24) % 30);
        }
    }
    char path[400];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", data_dir, prefix);
    write_file(path, images, 16 + (size_t)n * SIDE * SIDE);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", data_dir, prefix);
    write_file(path, labels, 8 + (size_t)n);
}

static char data_dir[300];

/* The tiny set in dir/fashion. */
static void write_data(void)
{
    in_dir(data_dir, sizeof data_dir, "fashion");
    ck_assert_int_eq(mkdir(data_dir, 0700), 0);
    uint32_t rng = 12345;
    write_idx(data_dir, "train", N_TRAIN, &rng);
    write_idx(data_dir, "t10k", N_TEST, &rng);
}

static void make_data(void)
{
    make_dir();
    write_data();
}

/* Trains LeNet-5 on the tiny set with seed 7 and batch 32; extra options
 * follow (NULL-terminated, at most 8). */
static int train(const char *epochs, ...)
{
    const char *extra[9] = {NULL};
    va_list ap;
    va_start(ap, epochs);
    for (int i = 0; i < 8 && (extra[i] = va_arg(ap, const char *)); i++)
        ;
    va_end(ap);
    return tapegrad("train", LENET, "--data", data_dir, "--epochs", epochs, "--batch", "32",
                    "--seed", "7", extra[0], extra[1], extra[2], extra[3], extra[4], extra[5],
                    extra[6], extra[7], NULL);
}

static long file_bytes(const char *path, char *buf, size_t size)
{
    long n = slurp(path, buf, size);
    ck_assert_msg(n > 0, "%s is missing or empty", path);
    ck_assert_msg((size_t)n < size - 1, "%s is larger than the test's buffer", path);
    return n;
}

START_TEST(train_two_epochs_with_log_plot_and_checkpoint)
{
    char ckpt[300], csv[300], svg[300];
    in_dir(ckpt, sizeof ckpt, "lenet.safetensors");
    in_dir(csv, sizeof csv, "log.csv");
    in_dir(svg, sizeof svg, "curves.svg");
    train("2", "--save", ckpt, "--log", csv, "--plot", svg, NULL);
    ck_ran();
    ck_assert_msg(count_lines_with(R.out, "epoch ", "test accuracy") == 2, "stdout: %s", R.out);
    ck_assert_int_eq(count_lines_with(R.out, "epoch 1 ", NULL), 1);
    ck_assert_int_eq(count_lines_with(R.out, "epoch 2 ", NULL), 1);

    file_bytes(csv, file_buf, sizeof file_buf);
    ck_assert_msg(strncmp(file_buf, "epoch,train_loss,test_loss,test_accuracy", 40) == 0, "%s", file_buf);
    ck_assert_int_eq(count_lines_with(file_buf, ",", NULL), 3); /* the header and 2 rows */
    int e;
    double tl, vl, acc;
    const char *row2 = strchr(strchr(file_buf, '\n') + 1, '\n') + 1;
    ck_assert_int_eq(sscanf(row2, "%d,%lf,%lf,%lf", &e, &tl, &vl, &acc), 4);
    ck_assert_int_eq(e, 2);
    ck_assert(isfinite(tl) && isfinite(vl) && acc >= 0 && acc <= 1);

    file_bytes(svg, file_buf, sizeof file_buf);
    ck_assert_msg(strncmp(file_buf, "<?xml", 5) == 0, "%.40s", file_buf);

    /* eval of the checkpoint: accuracy and a confusion matrix over the 64 test images */
    ck_assert_int_eq(tapegrad("eval", LENET, "--load", ckpt, "--data", data_dir, NULL), 0);
    ck_assert_ptr_nonnull(strstr(R.out, "test accuracy"));
    const char *m = strstr(R.out, "confusion matrix");
    ck_assert_ptr_nonnull(m);
    m = strchr(strchr(m, '\n') + 1, '\n') + 1; /* past the title and the column numbers */
    long long sum = 0;
    for (int row = 0; row < 10; row++) {
        int label, used;
        ck_assert_int_eq(sscanf(m, "%d%n", &label, &used), 1);
        ck_assert_int_eq(label, row);
        m += used;
        for (int c = 0; c < 10; c++) {
            long long v;
            ck_assert_int_eq(sscanf(m, "%lld%n", &v, &used), 1);
            ck_assert_int_ge(v, 0);
            sum += v;
            m += used;
        }
    }
    ck_assert_int_eq(sum, N_TEST);
}
END_TEST

/* Two epochs in one run, or one and then one more from the checkpoint:
 * the same checkpoint, byte for byte. */
START_TEST(resume_is_bit_identical)
{
    char whole[300], first[300], second[300];
    static char other[sizeof file_buf];
    in_dir(whole, sizeof whole, "whole.safetensors");
    in_dir(first, sizeof first, "first.safetensors");
    in_dir(second, sizeof second, "second.safetensors");
    ck_assert_int_eq(train("2", "--save", whole, NULL), 0);
    ck_assert_int_eq(train("1", "--save", first, NULL), 0);
    ck_assert_int_eq(train("1", "--resume", first, "--save", second, NULL), 0);
    ck_assert_msg(count_lines_with(R.out, "epoch 2 ", "test accuracy") == 1, "%s", R.out);
    long n = file_bytes(whole, file_buf, sizeof file_buf);
    ck_assert_int_eq(file_bytes(second, other, sizeof other), n);
    ck_assert_msg(memcmp(file_buf, other, (size_t)n) == 0, "the resumed run's checkpoint differs");
    ck_assert_int_eq(file_bytes(first, other, sizeof other), n);
    ck_assert_msg(memcmp(file_buf, other, (size_t)n) != 0, "one epoch changed nothing");
}
END_TEST

START_TEST(train_and_eval_without_data)
{
    char empty[300], ckpt[300];
    in_dir(empty, sizeof empty, "empty");
    ck_assert_int_eq(mkdir(empty, 0700), 0);
    tapegrad("train", LENET, "--data", empty, NULL);
    ck_failed(1, "dataset-fashion-mnist");
    ck_assert_ptr_nonnull(strstr(R.err, empty));
    in_dir(ckpt, sizeof ckpt, "ckpt.safetensors");
    ck_assert_int_eq(train("1", "--max-batches", "2", "--threads", "1", "--save", ckpt, NULL), 0);
    tapegrad("eval", LENET, "--load", ckpt, "--data", empty, NULL);
    ck_failed(1, "dataset-fashion-mnist");
    in_dir(ckpt, sizeof ckpt, "absent.safetensors");
    tapegrad("eval", LENET, "--load", ckpt, "--data", data_dir, NULL);
    ck_failed(1, ckpt);
}
END_TEST

/* ---------------------------------------------------------------- dot */

START_TEST(dot_every_view)
{
    static const char *const views[] = {"forward", "backward", "both", "collapsed"};
    for (int i = 0; i < 4; i++) {
        char svg[300], dot[300], name[64];
        snprintf(name, sizeof name, "%s.svg", views[i]);
        in_dir(svg, sizeof svg, name);
        snprintf(name, sizeof name, "%s.dot", views[i]);
        in_dir(dot, sizeof dot, name);
        ck_assert_msg(tapegrad("dot", LENET, "-o", svg, "--view", views[i], NULL) == 0, "%s: %s",
                      views[i], R.err);
        ck_assert_ptr_nonnull(strstr(R.out, svg));
        file_bytes(svg, file_buf, sizeof file_buf);
        ck_assert_msg(strncmp(file_buf, "<?xml", 5) == 0, "%s: %.40s", views[i], file_buf);
        ck_assert_msg(tapegrad("dot", LENET, "-o", dot, "--view", views[i], NULL) == 0, "%s: %s",
                      views[i], R.err);
        file_bytes(dot, file_buf, sizeof file_buf);
        ck_assert_msg(strstr(file_buf, "digraph") != NULL, "%s: %.40s", views[i], file_buf);
        ck_assert_msg(strstr(file_buf, "conv2d") != NULL, "%s: no conv2d in the graph", views[i]);
    }
}
END_TEST

START_TEST(dot_options)
{
    char path[300];
    in_dir(path, sizeof path, "profiled.dot");
    ck_assert_int_eq(tapegrad("dot", LENET, "--output", path, "--collapse", "--stats", "--profile",
                              "--batch", "2", "--train", NULL),
                     0);
    ck_assert_msg(strstr(R.out, "conv2d") != NULL, "no profile table: %s", R.out);
    file_bytes(path, file_buf, sizeof file_buf);
    ck_assert_ptr_nonnull(strstr(file_buf, "digraph"));
    tapegrad("dot", TG_MODELS "/absent.tgm", "-o", path, NULL);
    ck_failed(1, "absent.tgm");
}
END_TEST

/* ---------------------------------------------------------------- gradcheck --load */

START_TEST(gradcheck_of_a_user_op_library)
{
    ck_assert_msg(tapegrad("gradcheck", "--load", TG_USEROPS, NULL) == 0, "%s%s", R.out, R.err);
    ck_assert_msg(count_lines_with(R.out, "softplus ", "pass") == 1, "%s", R.out);
    ck_assert_ptr_nonnull(strstr(R.out, "1 passed, 0 failed\n"));
    ck_assert_int_eq(count_lines_with(R.out, "relu ", NULL), 0); /* only the library's ops */
    /* named, and beside a built-in */
    ck_assert_int_eq(tapegrad("gradcheck", "softplus", "sigmoid", "--load", TG_USEROPS, NULL), 0);
    ck_assert_ptr_nonnull(strstr(R.out, "2 passed, 0 failed\n"));
}
END_TEST

START_TEST(gradcheck_of_bad_libraries)
{
    char path[300];
    tapegrad("gradcheck", "--load", in_dir(path, sizeof path, "absent.so"), NULL);
    ck_failed(1, path);
    tapegrad("gradcheck", "--load", "libm.so.6", NULL); /* a library without the entry point */
    ck_failed(1, "tg_register_ops");
    ck_assert_ptr_nonnull(strstr(R.err, "libm.so.6"));
}
END_TEST

/* ---------------------------------------------------------------- fixed */

/* ops and version take --help like every other command, and refuse options. */
START_TEST(help_of_ops_and_version)
{
    ck_help("ops", "--help");
    ck_help("ops", "-h");
    ck_help("version", "--help");
    ck_help("version", "-h");
    tapegrad("ops", "--frobnicate", NULL);
    ck_failed(2, "--frobnicate");
    tapegrad("version", "extra", NULL);
    ck_failed(2, "'extra'");
}
END_TEST

/* The error names the option as the user typed it. */
START_TEST(dot_short_option_named_as_typed)
{
    tapegrad("dot", LENET, "-o", NULL);
    ck_failed(2, "'-o'");
}
END_TEST

/* An unwritable --plot path is refused as an unwritable --log is: by the
 * command, before training, and not by PLplot asking stdin for a file name. */
START_TEST(train_plot_path_unwritable)
{
    write_data();
    train("1", "--plot", "/nonexistent/curves.svg", NULL);
    ck_failed(1, "tapegrad train: ");
    ck_assert_ptr_nonnull(strstr(R.err, "/nonexistent/curves.svg"));
    ck_assert_ptr_null(strstr(R.err, "PLPLOT"));
    ck_assert_str_eq(R.out, "");
}
END_TEST

/* --params takes a file holding more than the model's state (here the
 * fixture itself, with the batch and PyTorch's results beside the weights). */
START_TEST(grad_params_ignores_other_keys) { ck_grad_run(LENET_FIX); }
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("usage");
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, help_on_every_command);
    tcase_add_test(tc, help_of_the_program);
    tcase_add_test(tc, no_command_is_a_usage_error);
    tcase_add_test(tc, unknown_command);
    tcase_add_test(tc, unknown_option_on_every_command);
    tcase_add_test(tc, missing_values);
    tcase_add_test(tc, bad_numbers);
    tcase_add_test(tc, bad_names);
    tcase_add_test(tc, required_options);
    suite_add_tcase(s, tc);

    tc = tcase_create("summary");
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, summary_of_the_notes_networks);
    tcase_add_test(tc, summary_of_a_missing_file);
    tcase_add_test(tc, summary_of_a_malformed_file);
    suite_add_tcase(s, tc);

    tc = tcase_create("grad");
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, grad_of_lenet5_matches_pytorch);
    tcase_add_test(tc, grad_of_missing_files);
    suite_add_tcase(s, tc);

    tc = tcase_create("train");
    tcase_add_checked_fixture(tc, make_data, remove_dir);
    tcase_set_timeout(tc, 240); /* under the sanitizers training runs several times slower */
    tcase_add_test(tc, train_two_epochs_with_log_plot_and_checkpoint);
    tcase_add_test(tc, resume_is_bit_identical);
    tcase_add_test(tc, train_and_eval_without_data);
    suite_add_tcase(s, tc);

    tc = tcase_create("dot");
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, dot_every_view);
    tcase_add_test(tc, dot_options);
    suite_add_tcase(s, tc);

    tc = tcase_create("gradcheck");
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, gradcheck_of_a_user_op_library);
    tcase_add_test(tc, gradcheck_of_bad_libraries);
    suite_add_tcase(s, tc);

    tc = tcase_create("fixed");
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, help_of_ops_and_version);
    tcase_add_test(tc, dot_short_option_named_as_typed);
    tcase_add_test(tc, grad_params_ignores_other_keys);
    tcase_add_test(tc, train_plot_path_unwritable);
    suite_add_tcase(s, tc);
    return s;
}
