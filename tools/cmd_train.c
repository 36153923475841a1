/*
 * cmd_train.c: training a model file's network on Fashion-MNIST, and
 * evaluating a checkpoint.
 *
 * One epoch: shuffle (context RNG), mini-batches of pixels / 255 and int64
 * labels, forward, loss, backward, optimiser step, zero the gradients,
 * end the step; then the test set in eval mode without recording. A
 * checkpoint holds the model's state dict, the optimiser's state and the
 * run's own (epochs done, RNG state), so --resume continues the run exactly
 * as if it had not stopped.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char train_usage[] =
    "usage: tapegrad train MODEL [options]\n"
    "\n"
    "Trains the model file's network on Fashion-MNIST and prints, per epoch, the\n"
    "train loss, test loss and test accuracy; a progress bar goes to stderr.\n"
    "\n"
    "  --data DIR           Fashion-MNIST's IDX files (default " TG_FASHION_MNIST_DIR ",\n"
    "                       from the Debian package dataset-fashion-mnist)\n"
    "  --epochs E           epochs to run (default 1)\n"
    "  --batch B            examples per batch (default 64)\n"
    "  --optimizer NAME     sgd, adam or adamw (default adam)\n"
    "  --lr L               learning rate (default 1e-3; 0.01 for sgd)\n"
    "  --momentum M         sgd momentum (default 0.9)\n"
    "  --weight-decay W     weight decay (default 0; 0.01 for adamw)\n"
    "  --seed S             RNG seed: initialisation, shuffling, dropout (default 0)\n"
    "  --threads T          threads for the matrix products (default: OpenBLAS's choice)\n"
    "  --dtype f32|f64      parameter and activation type (default f32)\n"
    "  --save CKPT          write a checkpoint (safetensors) after every epoch\n"
    "  --resume CKPT        continue the run saved in CKPT (its epochs count)\n"
    "  --log FILE.csv       epoch, train_loss, test_loss, test_accuracy, seconds\n"
    "  --plot FILE.svg      loss and accuracy curves, redrawn after every epoch\n"
    "  --max-batches N      stop each epoch after N batches (a quick smoke run)\n";

static const char eval_usage[] =
    "usage: tapegrad eval MODEL --load CKPT [--data DIR] [--batch B] [--dtype f32|f64]\n"
    "\n"
    "Evaluates a checkpoint on Fashion-MNIST's test set: loss, accuracy and the\n"
    "confusion matrix (rows: true class, columns: predicted).\n";

typedef struct run {
    const char *model_path, *data, *save, *resume, *log, *plot, *optimizer;
    long long epochs, batch, seed, max_batches;
    double lr, momentum, weight_decay;
    tg_dtype dtype;
} run;

typedef struct metrics {
    double loss, accuracy;
    long long confusion[10][10];
} metrics;

/* ---------------------------------------------------------------- arguments */

static int parse_train(int argc, char **argv, run *r)
{
    const char *epochs = "1", *batch = "64", *lr = NULL, *momentum = "0.9", *wd = NULL;
    const char *seed = "0", *dtype = "f32", *maxb = "0", *threads = NULL, *pos[1];
    r->optimizer = "adam";
    cli_opt opts[] = {{"data", &r->data, NULL, 0},         {"epochs", &epochs, NULL, 0},
                      {"batch", &batch, NULL, 0},          {"optimizer", &r->optimizer, NULL, 0},
                      {"lr", &lr, NULL, 0},                {"momentum", &momentum, NULL, 0},
                      {"weight-decay", &wd, NULL, 0},      {"seed", &seed, NULL, 0},
                      {"dtype", &dtype, NULL, 0},       {"threads", &threads, NULL, 0},
                      {"save", &r->save, NULL, 0},         {"resume", &r->resume, NULL, 0},
                      {"log", &r->log, NULL, 0},           {"plot", &r->plot, NULL, 0},
                      {"max-batches", &maxb, NULL, 0},     {NULL, NULL, NULL, 0}};
    int n, rc = cli_parse("train", train_usage, argc, argv, opts, pos, 1, 1, &n);
    if (rc != CLI_OK)
        return rc;
    r->model_path = pos[0];
    bool sgd = !strcmp(r->optimizer, "sgd"), adamw = !strcmp(r->optimizer, "adamw");
    if (!sgd && !adamw && strcmp(r->optimizer, "adam")) {
        fprintf(stderr, "tapegrad train: --optimizer '%s' is not sgd, adam or adamw\n",
                r->optimizer);
        return CLI_USAGE;
    }
    long long n_threads = 0;
    bool ok = cli_int("train", "epochs", epochs, 1, 100000, &r->epochs) &&
              (!threads || cli_int("train", "threads", threads, 1, 1024, &n_threads)) &&
              cli_int("train", "batch", batch, 1, 1 << 20, &r->batch) &&
              cli_int("train", "seed", seed, 0, (long long)(~0ULL >> 1), &r->seed) &&
              cli_int("train", "max-batches", maxb, 0, 1LL << 40, &r->max_batches) &&
              cli_double("train", "lr", lr ? lr : sgd ? "0.01" : "1e-3", 0, 1e6, &r->lr) &&
              cli_double("train", "momentum", momentum, 0, 1e6, &r->momentum) &&
              cli_double("train", "weight-decay", wd ? wd : adamw ? "0.01" : "0", 0, 1e6,
                         &r->weight_decay) &&
              cli_dtype("train", dtype, &r->dtype);
    if (ok && n_threads)
        tg_set_num_threads((int)n_threads);
    return ok ? CLI_OK : CLI_USAGE;
}

/* ---------------------------------------------------------------- pieces of a run */

static tg_optim *make_optimizer(tg_ctx *ctx, const run *r, tg_tensor *block)
{
    if (!strcmp(r->optimizer, "sgd")) {
        tg_sgd_opts o = {0};
        o.lr = r->lr;
        o.momentum = r->momentum;
        o.weight_decay = r->weight_decay;
        return tg_optim_sgd(ctx, &block, 1, &o);
    }
    tg_adam_opts o = tg_adam_defaults();
    o.lr = r->lr;
    o.weight_decay = r->weight_decay;
    return !strcmp(r->optimizer, "adamw") ? tg_optim_adamw(ctx, &block, 1, &o)
                                          : tg_optim_adam(ctx, &block, 1, &o);
}

/* The layout a model's input takes: (1, H, W) images or flat (H*W) vectors. */
static bool layout_of(tg_ctx *ctx, const tg_model *m, const tg_dataset *ds, tg_layout *out)
{
    int64_t s[TG_MAX_DIMS];
    int nd = tg_model_shape(m, -1, s);
    if (nd == 3 && s[0] == 1 && s[1] == ds->height && s[2] == ds->width) {
        *out = TG_LAYOUT_IMAGE;
        return true;
    }
    if (nd == 1 && s[0] == ds->height * ds->width) {
        *out = TG_LAYOUT_FLAT;
        return true;
    }
    char shape[96] = "(";
    for (int i = 0; i < nd; i++)
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), i ? ", %lld" : "%lld",
                 (long long)s[i]);
    TG_ERROR(ctx, TG_ESHAPE, "the model takes examples of shape %s); Fashion-MNIST gives "
                             "(1, %lld, %lld) images or %lld pixels", shape,
             (long long)ds->height, (long long)ds->width, (long long)(ds->height * ds->width));
    return false;
}

/* Loss and accuracy over a data set in eval mode, nothing recorded. */
static tg_status evaluate(tg_ctx *ctx, tg_model *m, const tg_dataset *ds, long long batch,
                          tg_layout layout, metrics *out)
{
    memset(out, 0, sizeof *out);
    bool was_training = tg_set_training(ctx, false);
    bool was_grad = tg_set_grad_enabled(ctx, false);
    double loss_sum = 0;
    long long correct = 0;
    for (int64_t start = 0; start < ds->n && !tg_errcode(ctx); start += batch) {
        tg_tensor *x, *y;
        if (tg_dataset_batch(ctx, ds, start, batch, tg_model_dtype(m), layout, &x, &y))
            break;
        tg_tensor *logits = tg_model_forward(ctx, m, x);
        tg_tensor *loss = tg_model_loss(ctx, m, logits, y);
        if (!loss)
            break;
        loss_sum += tg_get(loss, 0) * (double)y->numel;
        int64_t classes = logits->shape[1];
        for (int64_t i = 0; i < y->numel; i++) {
            int64_t best = 0;
            for (int64_t c = 1; c < classes; c++)
                if (tg_get(logits, i * classes + c) > tg_get(logits, i * classes + best))
                    best = c;
            int64_t truth = ((const int64_t *)y->data)[i];
            correct += best == truth;
            if (truth < 10 && best < 10)
                out->confusion[truth][best]++;
        }
        tg_reset(ctx);
    }
    tg_set_grad_enabled(ctx, was_grad);
    tg_set_training(ctx, was_training);
    out->loss = loss_sum / (double)ds->n;
    out->accuracy = (double)correct / (double)ds->n;
    return tg_errcode(ctx);
}

/* One training epoch; returns the mean training loss (NaN on error). */
static double train_epoch(tg_ctx *ctx, const run *r, tg_model *m, tg_optim *opt,
                          tg_dataset *ds, tg_layout layout, int epoch)
{
    long long batches = (ds->n + r->batch - 1) / r->batch;
    if (r->max_batches && r->max_batches < batches)
        batches = r->max_batches;
    char label[32];
    snprintf(label, sizeof label, "epoch %d", epoch);
    cli_progress bar;
    cli_progress_start(&bar, label, batches);
    tg_set_training(ctx, true);
    tg_dataset_shuffle(ctx, ds);
    double loss_sum = 0;
    long long seen = 0;
    for (long long b = 0; b < batches && !tg_errcode(ctx); b++) {
        tg_tensor *x, *y;
        if (tg_dataset_batch(ctx, ds, b * r->batch, r->batch, r->dtype, layout, &x, &y))
            break;
        tg_tensor *loss = tg_model_loss(ctx, m, tg_model_forward(ctx, m, x), y);
        if (tg_backward(ctx, loss) || tg_optim_step(ctx, opt) || tg_optim_zero_grad(ctx, opt))
            break;
        double l = tg_get(loss, 0);
        loss_sum += l * (double)y->numel;
        seen += y->numel;
        cli_progress_step(&bar, y->numel, l);
        tg_reset(ctx);
    }
    cli_progress_end(&bar);
    return tg_errcode(ctx) ? NAN : loss_sum / (double)seen;
}

/* ---------------------------------------------------------------- checkpoints */

/* The run's own state: epochs done and the RNG, as int64 tensors. */
typedef struct run_state {
    tg_tensor *epoch, *rng;
} run_state;

static tg_status run_state_new(tg_ctx *ctx, run_state *s)
{
    s->epoch = tg_buffer(ctx, TG_I64, 0, NULL, "trainer.epoch");
    s->rng = tg_buffer(ctx, TG_I64, 1, (const int64_t[]){4}, "trainer.rng");
    return tg_errcode(ctx);
}

static void run_state_store(tg_ctx *ctx, run_state *s, int epoch)
{
    tg_rng_state st = tg_rng_get(ctx);
    ((int64_t *)s->epoch->data)[0] = epoch;
    memcpy(s->rng->data, st.s, sizeof st.s);
    tg_mark_dirty(s->epoch);
    tg_mark_dirty(s->rng);
}

/* Every (name, tensor) a checkpoint holds: the state dict, the
 * optimiser's state, the run's. *n receives the count; tg_free the list. */
static tg_st_item *checkpoint_items(tg_ctx *ctx, const tg_model *m, const tg_optim *opt,
                                    const run_state *s, size_t *n)
{
    size_t n_opt = 0;
    const tg_st_item *o = tg_optim_state(opt, &n_opt);
    size_t n_model = (size_t)tg_model_state_count(m);
    *n = n_model + n_opt + 2;
    tg_st_item *items = tg_malloc(ctx, *n * sizeof *items);
    if (!items)
        return NULL;
    for (size_t i = 0; i < n_model; i++)
        items[i] = (tg_st_item){NULL, tg_model_state(m, (int)i)};
    memcpy(items + n_model, o, n_opt * sizeof *o);
    items[n_model + n_opt] = (tg_st_item){NULL, s->epoch};
    items[n_model + n_opt + 1] = (tg_st_item){NULL, s->rng};
    return items;
}

static tg_status checkpoint(tg_ctx *ctx, const tg_model *m, tg_optim *opt, run_state *s,
                            const char *path, bool save)
{
    size_t n;
    tg_st_item *items = checkpoint_items(ctx, m, opt, s, &n);
    if (!items)
        return tg_errcode(ctx);
    if (save)
        tg_st_save(ctx, path, items, n, NULL, 0);
    else
        tg_st_load_file(ctx, path, items, n, true);
    tg_free(ctx, items, n * sizeof *items);
    return tg_errcode(ctx);
}

/* ---------------------------------------------------------------- outputs */

static void log_epoch(FILE *csv, int epoch, double train_loss, const metrics *t, double secs)
{
    printf("epoch %d  train loss %.4f  test loss %.4f  test accuracy %.2f%%  (%.1f s)\n", epoch,
           train_loss, t->loss, 100 * t->accuracy, secs);
    fflush(stdout);
    if (csv) {
        fprintf(csv, "%d,%.6f,%.6f,%.6f,%.3f\n", epoch, train_loss, t->loss, t->accuracy, secs);
        fflush(csv);
    }
}

static int train_loop(tg_ctx *ctx, const run *r, tg_model *m, tg_optim *opt, run_state *s,
                      tg_dataset *train, tg_dataset *test, int first_epoch)
{
    tg_layout layout;
    if (!layout_of(ctx, m, train, &layout))
        return cli_fail("train", ctx);
    FILE *csv = NULL;
    if (r->log && !(csv = fopen(r->log, first_epoch > 1 ? "a" : "w"))) {
        fprintf(stderr, "tapegrad train: cannot write '%s'\n", r->log);
        return CLI_FAIL;
    }
    if (csv && first_epoch == 1)
        fprintf(csv, "epoch,train_loss,test_loss,test_accuracy,seconds\n");
    int n = (int)r->epochs;
    double *curves = calloc((size_t)3 * (size_t)n, sizeof *curves);
    int rc = curves ? CLI_OK : CLI_FAIL, done = 0;
    for (int e = first_epoch; rc == CLI_OK && e < first_epoch + n; e++, done++) {
        double t0 = cli_now();
        double train_loss = train_epoch(ctx, r, m, opt, train, layout, e);
        double secs = cli_now() - t0;
        metrics t;
        if (tg_errcode(ctx) || evaluate(ctx, m, test, r->batch, layout, &t)) {
            rc = cli_fail("train", ctx);
            break;
        }
        log_epoch(csv, e, train_loss, &t, secs);
        curves[done] = train_loss;
        curves[n + done] = t.loss;
        curves[2 * n + done] = t.accuracy;
        run_state_store(ctx, s, e);
        if (r->save && checkpoint(ctx, m, opt, s, r->save, true))
            rc = cli_fail("train", ctx);
        if (rc == CLI_OK && r->plot &&
            !cli_plot_curves(r->plot, first_epoch, done + 1, curves, curves + n, curves + 2 * n))
            rc = CLI_FAIL;
    }
    free(curves);
    if (csv)
        fclose(csv);
    return rc;
}

int cmd_train(int argc, char **argv)
{
    run r = {0};
    r.data = TG_FASHION_MNIST_DIR;
    int rc = parse_train(argc, argv, &r);
    if (rc != CLI_OK)
        return rc == CLI_HELP ? CLI_OK : rc;
    if ((r.log && !cli_writable("train", "log", r.log)) ||
        (r.plot && !cli_writable("train", "plot", r.plot)) ||
        (r.save && !cli_writable("train", "save", r.save)))
        return CLI_FAIL;
    tg_ctx *ctx = tg_ctx_new((uint64_t)r.seed);
    if (!ctx)
        return cli_fail("train", NULL);
    tg_model *m = tg_model_load(ctx, r.model_path, r.dtype);
    tg_dataset *train = m ? tg_fashion_mnist(ctx, r.data, "train") : NULL;
    tg_dataset *test = train ? tg_fashion_mnist(ctx, r.data, "test") : NULL;
    tg_optim *opt = test ? make_optimizer(ctx, &r, tg_model_params(m)) : NULL;
    run_state s = {0};
    int first = 1;
    if (opt && run_state_new(ctx, &s) == TG_OK && r.resume &&
        checkpoint(ctx, m, opt, &s, r.resume, false) == TG_OK) {
        tg_rng_state st;
        memcpy(st.s, s.rng->data, sizeof st.s);
        tg_rng_set(ctx, st);
        first = (int)((const int64_t *)s.epoch->data)[0] + 1;
    }
    rc = tg_errcode(ctx) ? cli_fail("train", ctx)
                         : train_loop(ctx, &r, m, opt, &s, train, test, first);
    tg_optim_free(ctx, opt);
    tg_dataset_free(ctx, test);
    tg_dataset_free(ctx, train);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
    return rc;
}

/* ---------------------------------------------------------------- eval */

static void print_confusion(const metrics *t)
{
    printf("confusion matrix (rows: true class, columns: predicted)\n     ");
    for (int c = 0; c < 10; c++)
        printf("%6d", c);
    printf("\n");
    for (int i = 0; i < 10; i++) {
        printf("%4d ", i);
        for (int c = 0; c < 10; c++)
            printf("%6lld", t->confusion[i][c]);
        printf("\n");
    }
}

int cmd_eval(int argc, char **argv)
{
    const char *load = NULL, *data = TG_FASHION_MNIST_DIR, *batch_s = "256", *dtype_s = "f32";
    const char *pos[1];
    cli_opt opts[] = {{"load", &load, NULL, 0},   {"data", &data, NULL, 0},
                      {"batch", &batch_s, NULL, 0}, {"dtype", &dtype_s, NULL, 0},
                      {NULL, NULL, NULL, 0}};
    int n, rc = cli_parse("eval", eval_usage, argc, argv, opts, pos, 1, 1, &n);
    if (rc != CLI_OK)
        return rc == CLI_HELP ? CLI_OK : rc;
    long long batch;
    tg_dtype dtype;
    if (!cli_int("eval", "batch", batch_s, 1, 1 << 20, &batch) || !cli_dtype("eval", dtype_s, &dtype))
        return CLI_USAGE;
    if (!load) {
        fprintf(stderr, "tapegrad eval: --load CKPT is required\n%s", eval_usage);
        return CLI_USAGE;
    }
    tg_ctx *ctx = tg_ctx_new(0);
    tg_model *m = ctx ? tg_model_load(ctx, pos[0], dtype) : NULL;
    if (m)
        tg_model_load_state(ctx, m, load, false); /* the optimiser's entries are not the model's */
    tg_dataset *test = tg_errcode(ctx) ? NULL : tg_fashion_mnist(ctx, data, "test");
    tg_layout layout;
    metrics t;
    if (test && layout_of(ctx, m, test, &layout) && evaluate(ctx, m, test, batch, layout, &t) == TG_OK) {
        printf("test loss %.4f  test accuracy %.2f%%  (%lld examples)\n", t.loss,
               100 * t.accuracy, (long long)test->n);
        print_confusion(&t);
        rc = CLI_OK;
    } else {
        rc = cli_fail("eval", ctx);
    }
    tg_dataset_free(ctx, test);
    tg_model_free(ctx, m);
    tg_ctx_free(ctx);
    return rc;
}
