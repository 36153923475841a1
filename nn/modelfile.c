/*
 * modelfile.c: the model file (.tgm) reader (tapegrad/nn.h): one layer a
 * line, named as the PyTorch module in snake case, its constructor's
 * arguments positionally and/or as key=value.
 *
 * The text is untrusted: it is read through (pointer, length) tokens that
 * never leave it, any byte outside a comment other than printable ASCII,
 * space, tab and CR is refused, and numbers are checked for overflow.
 * Every error is TG_EFORMAT "NAME:LINE: what is wrong" (TG_ENOMEM stays
 * itself).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad.h"

#define MAX_TOKENS 24     /* a layer takes at most 8 arguments; more is an error anyway */
#define MAX_NUMBER 64     /* characters of a real number */
#define MAX_FILE (64u << 20)

typedef struct tok { const char *s; size_t n; } tok;

typedef struct parser {
    tg_ctx *ctx;
    const char *name;
    int line;
    tok t[MAX_TOKENS];
    int nt;
} parser;

/* ---------------------------------------------------------------- errors */

/* Raises TG_EFORMAT "name:line: <message>". */
static tg_status TG_PRINTF(2, 3) fail(parser *P, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return TG_ERROR(P->ctx, TG_EFORMAT, "%s:%d: %s", P->name, P->line, msg);
}

/* Turns the error a model call raised into the file's TG_EFORMAT at the
 * current line; out-of-memory stays TG_ENOMEM. */
static tg_status lift(parser *P)
{
    int code = tg_errcode(P->ctx);
    if (code == TG_OK || code == TG_ENOMEM || code == TG_EFORMAT)
        return (tg_status)code;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", tg_errmsg(P->ctx));
    tg_clear_error(P->ctx);
    return fail(P, "%s", msg);
}

/* A token for messages: at most 40 characters, all printable. */
#define TOK_FMT "'%.*s%s'"
#define TOK_ARG(t) (int)((t).n > 40 ? 40 : (t).n), (t).s, (t).n > 40 ? "..." : ""

static bool tok_is(tok t, const char *s)
{
    size_t n = strlen(s);
    return t.n == n && memcmp(t.s, s, n) == 0;
}

/* ---------------------------------------------------------------- lines */

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Splits the line [s, s + n) into tokens, stopping at '#'. */
static tg_status tokenize(parser *P, const char *s, size_t n)
{
    P->nt = 0;
    size_t i = 0;
    while (i < n && s[i] != '#') {
        unsigned char c = (unsigned char)s[i];
        if (is_space(c)) {
            i++;
            continue;
        }
        size_t b = i;
        for (; i < n && s[i] != '#' && !is_space((unsigned char)s[i]); i++) {
            unsigned char d = (unsigned char)s[i];
            if (d < 0x21 || d > 0x7e)
                return fail(P, "byte 0x%02x is not allowed outside a comment", d);
        }
        if (P->nt == MAX_TOKENS)
            return fail(P, "too many arguments (at most %d words a line)", MAX_TOKENS);
        P->t[P->nt].s = s + b;
        P->t[P->nt].n = i - b;
        P->nt++;
    }
    return TG_OK;
}

/* ---------------------------------------------------------------- numbers */

static tg_status parse_int(parser *P, tok t, const char *what, int64_t *out)
{
    size_t i = t.n && (t.s[0] == '-' || t.s[0] == '+');
    bool neg = t.n && t.s[0] == '-';
    if (i == t.n)
        return fail(P, "%s: " TOK_FMT " is not an integer", what, TOK_ARG(t));
    int64_t v = 0;
    for (; i < t.n; i++) {
        if (t.s[i] < '0' || t.s[i] > '9')
            return fail(P, "%s: " TOK_FMT " is not an integer", what, TOK_ARG(t));
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, neg ? -(t.s[i] - '0') : t.s[i] - '0', &v))
            return fail(P, "%s: " TOK_FMT " is out of range", what, TOK_ARG(t));
    }
    *out = v;
    return TG_OK;
}

static tg_status parse_real(parser *P, tok t, const char *what, double *out)
{
    char buf[MAX_NUMBER + 1];
    if (t.n == 0 || t.n > MAX_NUMBER)
        return fail(P, "%s: " TOK_FMT " is not a number", what, TOK_ARG(t));
    memcpy(buf, t.s, t.n);
    buf[t.n] = '\0';
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (end != buf + t.n || end == buf)
        return fail(P, "%s: " TOK_FMT " is not a number", what, TOK_ARG(t));
    if (errno == ERANGE || !isfinite(v))
        return fail(P, "%s: " TOK_FMT " is out of range", what, TOK_ARG(t));
    *out = v;
    return TG_OK;
}

static tg_status parse_bool(parser *P, tok t, const char *what, bool *out)
{
    if (tok_is(t, "true") || tok_is(t, "True") || tok_is(t, "1"))
        *out = true;
    else if (tok_is(t, "false") || tok_is(t, "False") || tok_is(t, "0"))
        *out = false;
    else
        return fail(P, "%s: " TOK_FMT " is not true or false", what, TOK_ARG(t));
    return TG_OK;
}

/* ---------------------------------------------------------------- layers */

typedef enum vtype {
    V_INT,  /* an int64_t field */
    V_PAIR, /* both entries of an int64_t[2] field (one value for both axes) */
    V_BOOL,
    V_REAL,
    V_DIM   /* an int field */
} vtype;

typedef struct argdef { const char *key; vtype type; size_t off; } argdef;

typedef struct layerdef {
    tg_layer_kind kind;
    int required;    /* leading arguments that must be given */
    int positional;  /* leading arguments that may be given without key */
    argdef args[8];
} layerdef;

#define F(field) offsetof(tg_layer, field)
#define CONV_ARGS                                                                          \
    {{"in_channels", V_INT, F(in)}, {"out_channels", V_INT, F(out)},                      \
     {"kernel_size", V_PAIR, F(kernel)}, {"stride", V_PAIR, F(stride)},                   \
     {"padding", V_PAIR, F(padding)}, {"dilation", V_PAIR, F(dilation)},                  \
     {"groups", V_INT, F(groups)}, {"bias", V_BOOL, F(bias)}}
/* MaxPool's fifth positional argument is return_indices, which has no use
 * here: ceil_mode is taken by key only. */
#define MAX_POOL_ARGS                                                                      \
    {{"kernel_size", V_PAIR, F(kernel)}, {"stride", V_PAIR, F(stride)},                   \
     {"padding", V_PAIR, F(padding)}, {"dilation", V_PAIR, F(dilation)},                  \
     {"ceil_mode", V_BOOL, F(ceil_mode)}}
#define AVG_POOL_ARGS                                                                      \
    {{"kernel_size", V_PAIR, F(kernel)}, {"stride", V_PAIR, F(stride)},                   \
     {"padding", V_PAIR, F(padding)}, {"ceil_mode", V_BOOL, F(ceil_mode)},                \
     {"count_include_pad", V_BOOL, F(count_include_pad)}}
#define BN_ARGS                                                                            \
    {{"num_features", V_INT, F(in)}, {"eps", V_REAL, F(eps)}, {"momentum", V_REAL, F(momentum)}}

static const layerdef LAYERS[TG_LAYER_COUNT] = {
    {TG_LAYER_CONV1D, 3, 8, CONV_ARGS},
    {TG_LAYER_CONV2D, 3, 8, CONV_ARGS},
    {TG_LAYER_LINEAR, 2, 3,
     {{"in_features", V_INT, F(in)}, {"out_features", V_INT, F(out)}, {"bias", V_BOOL, F(bias)}}},
    {TG_LAYER_RELU, 0, 0, {{NULL, V_INT, 0}}},
    {TG_LAYER_SIGMOID, 0, 0, {{NULL, V_INT, 0}}},
    {TG_LAYER_TANH, 0, 0, {{NULL, V_INT, 0}}},
    {TG_LAYER_LEAKY_RELU, 0, 1, {{"negative_slope", V_REAL, F(p)}}},
    {TG_LAYER_MAX_POOL1D, 1, 4, MAX_POOL_ARGS},
    {TG_LAYER_MAX_POOL2D, 1, 4, MAX_POOL_ARGS},
    {TG_LAYER_AVG_POOL1D, 1, 5, AVG_POOL_ARGS},
    {TG_LAYER_AVG_POOL2D, 1, 5, AVG_POOL_ARGS},
    {TG_LAYER_GLOBAL_AVG_POOL, 0, 0, {{NULL, V_INT, 0}}},
    {TG_LAYER_PAD1D, 1, 1, {{"padding", V_PAIR, F(padding)}}},
    {TG_LAYER_PAD2D, 1, 1, {{"padding", V_PAIR, F(padding)}}},
    {TG_LAYER_FLATTEN, 0, 0, {{NULL, V_INT, 0}}},
    {TG_LAYER_DROPOUT, 0, 1, {{"p", V_REAL, F(p)}}},
    {TG_LAYER_BATCH_NORM1D, 1, 3, BN_ARGS},
    {TG_LAYER_BATCH_NORM2D, 1, 3, BN_ARGS},
    {TG_LAYER_SOFTMAX, 0, 1, {{"dim", V_DIM, F(dim)}}},
    {TG_LAYER_LOG_SOFTMAX, 0, 1, {{"dim", V_DIM, F(dim)}}},
};

static int arg_count(const layerdef *d)
{
    int n = 0;
    while (n < 8 && d->args[n].key)
        n++;
    return n;
}

/* Stores the value token v of argument a into the layer. */
static tg_status set_arg(parser *P, tg_layer *l, const argdef *a, tok v)
{
    char *field = (char *)l + a->off;
    int64_t i;
    double r;
    bool b = false;
    tg_status st;
    switch (a->type) {
    case V_INT:
        if (!(st = parse_int(P, v, a->key, &i)))
            memcpy(field, &i, sizeof i);
        return st;
    case V_PAIR:
        if (!(st = parse_int(P, v, a->key, &i))) {
            int64_t pair[2] = {i, i};
            memcpy(field, pair, sizeof pair);
        }
        return st;
    case V_BOOL:
        if (!(st = parse_bool(P, v, a->key, &b)))
            memcpy(field, &b, sizeof b);
        return st;
    case V_REAL:
        if (!(st = parse_real(P, v, a->key, &r)))
            memcpy(field, &r, sizeof r);
        return st;
    case V_DIM:
        if ((st = parse_int(P, v, a->key, &i)))
            return st;
        if (i < INT_MIN || i > INT_MAX)
            return fail(P, "%s: " TOK_FMT " is out of range", a->key, TOK_ARG(v));
        int d = (int)i;
        memcpy(field, &d, sizeof d);
        return TG_OK;
    }
    return fail(P, "internal: argument type %d", (int)a->type);
}

/* Finds the '=' of a key=value token, or returns false. */
static bool split_kv(tok t, tok *key, tok *val)
{
    const char *eq = memchr(t.s, '=', t.n);
    if (!eq)
        return false;
    key->s = t.s;
    key->n = (size_t)(eq - t.s);
    val->s = eq + 1;
    val->n = t.n - key->n - 1;
    return true;
}

static tg_status parse_args(parser *P, const layerdef *d, tg_layer *l, const char *what)
{
    int nargs = arg_count(d), npos = 0;
    bool given[8] = {false};
    for (int k = 1; k < P->nt; k++) {
        tok key, val;
        const argdef *a = NULL;
        int idx = -1;
        if (split_kv(P->t[k], &key, &val)) {
            for (int j = 0; j < nargs && idx < 0; j++)
                if (tok_is(key, d->args[j].key))
                    idx = j;
            if (idx < 0)
                return fail(P, "%s: unknown argument " TOK_FMT, what, TOK_ARG(key));
            npos = INT_MAX;
        } else {
            if (npos == INT_MAX)
                return fail(P, "%s: positional argument " TOK_FMT " after a key=value one", what,
                            TOK_ARG(P->t[k]));
            if (npos >= d->positional)
                return fail(P, "%s: extra positional argument " TOK_FMT " (it takes %d)", what,
                            TOK_ARG(P->t[k]), d->positional);
            idx = npos++;
            val = P->t[k];
        }
        a = &d->args[idx];
        if (given[idx])
            return fail(P, "%s: argument '%s' given twice", what, a->key);
        given[idx] = true;
        tg_status st = set_arg(P, l, a, val);
        if (st)
            return st;
    }
    for (int j = 0; j < d->required; j++)
        if (!given[j])
            return fail(P, "%s: missing argument '%s'", what, d->args[j].key);
    return TG_OK;
}

static tg_status parse_layer(parser *P, tg_model *m)
{
    const layerdef *d = NULL;
    for (int k = 0; k < TG_LAYER_COUNT && !d; k++)
        if (tok_is(P->t[0], tg_layer_name(LAYERS[k].kind)))
            d = &LAYERS[k];
    if (!d)
        return fail(P, "unknown layer " TOK_FMT, TOK_ARG(P->t[0]));
    tg_layer l = tg_layer_defaults(d->kind);
    tg_status st = parse_args(P, d, &l, tg_layer_name(d->kind));
    if (st)
        return st;
    tg_model_add(P->ctx, m, &l);
    return lift(P);
}

/* ---------------------------------------------------------------- input and loss */

static tg_model *parse_input(parser *P, tg_dtype dtype)
{
    int64_t shape[TG_MAX_DIMS];
    int nd = P->nt - 1;
    if (nd < 1 || nd > TG_MAX_DIMS - 1) {
        fail(P, "input: %d dimensions; an example has 1 to %d", nd, TG_MAX_DIMS - 1);
        return NULL;
    }
    for (int k = 0; k < nd; k++)
        if (parse_int(P, P->t[k + 1], "input", &shape[k]))
            return NULL;
    tg_model *m = tg_model_new(P->ctx, dtype, nd, shape);
    lift(P);
    return m;
}

static tg_status parse_reduction(parser *P, tok v, tg_loss_spec *s)
{
    if (tok_is(v, "mean"))
        s->reduction = TG_MEAN;
    else if (tok_is(v, "sum"))
        s->reduction = TG_SUM;
    else if (tok_is(v, "none"))
        s->reduction = TG_NONE;
    else
        return fail(P, "loss: reduction " TOK_FMT " is not mean, sum or none", TOK_ARG(v));
    return TG_OK;
}

static tg_status parse_loss(parser *P, tg_model *m)
{
    if (P->nt < 2)
        return fail(P, "loss: missing the loss name");
    tg_loss_kind kind = TG_LOSS_NONE;
    for (int k = TG_LOSS_CROSS_ENTROPY; k <= TG_LOSS_BCE_WITH_LOGITS; k++)
        if (tok_is(P->t[1], tg_loss_name((tg_loss_kind)k)))
            kind = (tg_loss_kind)k;
    if (kind == TG_LOSS_NONE)
        return fail(P, "unknown loss " TOK_FMT, TOK_ARG(P->t[1]));
    tg_loss_spec s = tg_loss_defaults(kind);
    bool classes = kind == TG_LOSS_CROSS_ENTROPY || kind == TG_LOSS_NLL;
    for (int k = 2; k < P->nt; k++) {
        tok key, v;
        tg_status st;
        if (!split_kv(P->t[k], &key, &v))
            return fail(P, "loss: extra positional argument " TOK_FMT, TOK_ARG(P->t[k]));
        for (int j = 2; j < k; j++) {
            tok earlier, ev;
            if (split_kv(P->t[j], &earlier, &ev) && earlier.n == key.n &&
                memcmp(earlier.s, key.s, key.n) == 0)
                return fail(P, "loss: argument " TOK_FMT " given twice", TOK_ARG(key));
        }
        if (tok_is(key, "reduction"))
            st = parse_reduction(P, v, &s);
        else if (classes && tok_is(key, "ignore_index"))
            st = parse_int(P, v, "ignore_index", &s.ignore_index);
        else if (kind == TG_LOSS_CROSS_ENTROPY && tok_is(key, "label_smoothing"))
            st = parse_real(P, v, "label_smoothing", &s.label_smoothing);
        else
            st = fail(P, "loss %s: unknown argument " TOK_FMT, tg_loss_name(kind), TOK_ARG(key));
        if (st)
            return st;
    }
    tg_model_set_loss(P->ctx, m, &s);
    return lift(P);
}

/* ---------------------------------------------------------------- the file */

/* One non-empty line: the input, a layer or the loss. */
static tg_status parse_line(parser *P, tg_model **m, tg_dtype dtype, int *input_line,
                            int *loss_line)
{
    if (*loss_line)
        return fail(P, TOK_FMT " after the loss line (line %d); the loss comes last",
                    TOK_ARG(P->t[0]), *loss_line);
    if (tok_is(P->t[0], "input")) {
        if (*m)
            return fail(P, "input given again (first on line %d)", *input_line);
        *input_line = P->line;
        *m = parse_input(P, dtype);
        return (tg_status)tg_errcode(P->ctx);
    }
    if (!*m)
        return fail(P, "the first line must be 'input' with the shape of one example, not "
                    TOK_FMT, TOK_ARG(P->t[0]));
    if (tok_is(P->t[0], "loss")) {
        *loss_line = P->line;
        return parse_loss(P, *m);
    }
    return parse_layer(P, *m);
}

tg_model *tg_model_parse(tg_ctx *ctx, const char *text, size_t len, const char *name,
                         tg_dtype dtype)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return NULL;
    if (!text && len) {
        TG_ERROR(ctx, TG_EINVAL, "model_parse: text NULL");
        return NULL;
    }
    parser P = {ctx, name ? name : "<text>", 0, {{NULL, 0}}, 0};
    tg_model *m = NULL;
    int input_line = 0, loss_line = 0;
    size_t at = 0;
    while (at < len && tg_errcode(ctx) == TG_OK) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - text) : len;
        P.line++;
        if (tokenize(&P, text + at, end - at) == TG_OK && P.nt > 0)
            parse_line(&P, &m, dtype, &input_line, &loss_line);
        at = end + 1;
    }
    if (!m && tg_errcode(ctx) == TG_OK) {
        P.line = P.line ? P.line : 1;
        fail(&P, "no 'input' line (the shape of one example)");
    }
    if (tg_errcode(ctx) == TG_OK) {
        tg_model_build(ctx, m);
        lift(&P);
    }
    if (tg_errcode(ctx) != TG_OK) {
        tg_model_free(ctx, m);
        return NULL;
    }
    return m;
}

/* The whole file in memory from tg_malloc; *size receives its length and
 * *cap the block's size. */
static char *read_all(tg_ctx *ctx, FILE *f, const char *path, size_t *size, size_t *cap)
{
    size_t n = 0, c = 4096;
    char *buf = tg_malloc(ctx, c);
    while (buf) {
        n += fread(buf + n, 1, c - n, f);
        if (ferror(f)) {
            TG_ERROR(ctx, TG_EIO, "model_load: %s: read failed", path);
            break;
        }
        if (n < c) {
            *size = n;
            *cap = c;
            return buf;
        }
        if (c >= MAX_FILE) {
            TG_ERROR(ctx, TG_EFORMAT, "model_load: %s: larger than %u bytes", path, MAX_FILE);
            break;
        }
        char *bigger = tg_realloc(ctx, buf, c, 2 * c);
        if (!bigger)
            break;
        buf = bigger;
        c *= 2;
    }
    tg_free(ctx, buf, c);
    return NULL;
}

tg_model *tg_model_load(tg_ctx *ctx, const char *path, tg_dtype dtype)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return NULL;
    if (!path) {
        TG_ERROR(ctx, TG_EINVAL, "model_load: path NULL");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        TG_ERROR(ctx, e == ENOENT ? TG_ENOTFOUND : TG_EIO, "model_load: %s: %s", path,
                 strerror(e));
        return NULL;
    }
    size_t size = 0, cap = 0;
    char *text = read_all(ctx, f, path, &size, &cap);
    fclose(f);
    if (!text)
        return NULL;
    tg_model *m = tg_model_parse(ctx, text, size, path, dtype);
    tg_free(ctx, text, cap);
    return m;
}
