/*
 * context.c: creating and freeing a context, its allocator hook (every byte
 * the library takes passes through tg__malloc/realloc/free here), the
 * sticky error, the modes and the RNG.
 *
 * Invariant: bytes_live is the sum of the sizes of the blocks the context
 * holds from its hook; it is zero once tg_ctx_free has run.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "impl.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>

const char *tg_version(void) { return TG_VERSION_STRING; }

const char *tg_status_str(int status)
{
    switch (status) {
    case TG_OK: return "ok";
    case TG_EINVAL: return "invalid argument";
    case TG_ESHAPE: return "shape mismatch";
    case TG_EDTYPE: return "dtype mismatch";
    case TG_ENOMEM: return "out of memory";
    case TG_ENOTFOUND: return "not found";
    case TG_EEXIST: return "already exists";
    case TG_ESTATE: return "invalid state";
    case TG_EIO: return "i/o error";
    case TG_EFORMAT: return "malformed data";
    case TG_EINTERNAL: return "internal error";
    case TG_ENOTSUP: return "not supported";
    case TG_ENONFINITE: return "non-finite value";
    default: return "unknown status";
    }
}

/* ---------------------------------------------------------------- allocator */

static void *default_alloc(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    (void)ud;
    (void)old_size;
    if (new_size == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, new_size);
}

int tg__oom(tg_ctx *ctx, size_t bytes)
{
    if (ctx->cur_op)
        return TG_ERROR(ctx, TG_ENOMEM, "%s%s: out of memory allocating %zu bytes",
                        ctx->cur_phase ? ctx->cur_phase : "", ctx->cur_op, bytes);
    return TG_ERROR(ctx, TG_ENOMEM, "out of memory allocating %zu bytes", bytes);
}

void *tg__realloc(tg_ctx *ctx, void *ptr, size_t old_size, size_t new_size)
{
    void *p = ctx->alloc(ctx->alloc_ud, ptr, old_size, new_size);
    if (!p) {
        tg__oom(ctx, new_size);
        return NULL;
    }
    ctx->alloc_calls++;
    ctx->bytes_live += new_size - old_size; /* wraps correctly when shrinking */
    if (ctx->bytes_live > ctx->bytes_peak)
        ctx->bytes_peak = ctx->bytes_live;
    return p;
}

void *tg__malloc(tg_ctx *ctx, size_t bytes) { return tg__realloc(ctx, NULL, 0, bytes ? bytes : 1); }

void tg__free(tg_ctx *ctx, void *ptr, size_t size)
{
    if (!ptr)
        return;
    ctx->alloc(ctx->alloc_ud, ptr, size, 0);
    ctx->bytes_live -= size;
}

void *tg_malloc(tg_ctx *ctx, size_t bytes) { return ctx ? tg__malloc(ctx, bytes) : NULL; }

void *tg_realloc(tg_ctx *ctx, void *p, size_t old_size, size_t new_size)
{
    if (!ctx)
        return NULL;
    return tg__realloc(ctx, p, old_size, new_size ? new_size : 1);
}

void tg_free(tg_ctx *ctx, void *p, size_t size)
{
    if (ctx)
        tg__free(ctx, p, size);
}

/* ---------------------------------------------------------------- lifetime */

static bool env_checked(void)
{
    const char *v = getenv("TAPEGRAD_CHECKED");
    return v && v[0] && strcmp(v, "0") != 0;
}

tg_ctx *tg__ctx_create(const tg_ctx_opts *opts)
{
    tg_ctx_opts o = {0};
    if (opts)
        o = *opts;
    tg_alloc_fn alloc = o.alloc ? o.alloc : default_alloc;
    tg_ctx *ctx = alloc(o.alloc_ud, NULL, 0, sizeof *ctx);
    if (!ctx)
        return NULL;
    memset(ctx, 0, sizeof *ctx);
    ctx->alloc = alloc;
    ctx->alloc_ud = o.alloc_ud;
    ctx->alloc_calls = 1;
    ctx->bytes_live = ctx->bytes_peak = sizeof *ctx;
    ctx->chunk_size = o.arena_chunk ? o.arena_chunk : (size_t)1 << 20;
    ctx->arena_fixed = o.arena_fixed;
    ctx->grad_enabled = true;
    ctx->training = true;
    ctx->checked = o.checked || env_checked();
    ctx->step = 1;
    tg_seed(ctx, o.seed);
    return ctx;
}

bool tg_checked(const tg_ctx *ctx) { return ctx && ctx->checked; }

void tg_ctx_free(tg_ctx *ctx)
{
    if (!ctx)
        return;
    tg__params_free_all(ctx);
    tg__arena_free_all(ctx);
    tg__free(ctx, ctx->tape, ctx->tape_cap * sizeof *ctx->tape);
    tg__free(ctx, ctx->prof, ctx->cap_prof * sizeof *ctx->prof);
    ctx->alloc(ctx->alloc_ud, ctx, sizeof *ctx, 0);
}

void tg_reset(tg_ctx *ctx)
{
    if (!ctx)
        return;
    ctx->tape_len = 0;
    ctx->n_sites = 0;
    ctx->scope = NULL;
    ctx->scope_next = 0;
    ctx->step++;
    tg__arena_reset(ctx);
}

void tg_ctx_stats(const tg_ctx *ctx, tg_stats *out)
{
    if (!ctx || !out)
        return;
    memset(out, 0, sizeof *out);
    out->alloc_calls = ctx->alloc_calls;
    out->bytes_live = ctx->bytes_live;
    out->bytes_peak = ctx->bytes_peak;
    out->arena_used = ctx->arena_used;
    out->arena_peak = ctx->arena_peak;
    for (const tg__chunk *c = ctx->chunks; c; c = c->next) {
        out->arena_capacity += c->cap;
        out->arena_chunks++;
    }
    out->tape_len = ctx->tape_len;
    out->params = ctx->params.n;
    out->buffers = ctx->buffers.n;
}

/* ---------------------------------------------------------------- errors */

int tg_errcode(const tg_ctx *ctx) { return ctx ? ctx->errcode : TG_EINVAL; }

const char *tg_errmsg(const tg_ctx *ctx)
{
    if (!ctx)
        return "no context (NULL)";
    return ctx->errmsg;
}

const char *tg_errwhere(const tg_ctx *ctx, int *line)
{
    if (line)
        *line = ctx ? ctx->errline : 0;
    return ctx && ctx->errfile ? ctx->errfile : "";
}

void tg_clear_error(tg_ctx *ctx)
{
    if (!ctx)
        return;
    ctx->errcode = TG_OK;
    ctx->errmsg[0] = '\0';
    ctx->errfile = NULL;
    ctx->errline = 0;
    ctx->n_sites = 0; /* positions of calls that stopped at the error */
}

int tg_error_at(tg_ctx *ctx, int code, const char *file, int line, const char *fmt, ...)
{
    if (code >= 0)
        code = TG_EINTERNAL; /* an error must be an error */
    if (!ctx || ctx->errcode != TG_OK)
        return code;
    ctx->errcode = code;
    ctx->errfile = file;
    ctx->errline = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

/* ---------------------------------------------------------------- modes */

bool tg_set_grad_enabled(tg_ctx *ctx, bool enabled)
{
    if (!ctx)
        return false;
    bool prev = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return prev;
}

bool tg_grad_enabled(const tg_ctx *ctx) { return ctx && ctx->grad_enabled; }

bool tg_set_training(tg_ctx *ctx, bool training)
{
    if (!ctx)
        return false;
    bool prev = ctx->training;
    ctx->training = training;
    return prev;
}

bool tg_training(const tg_ctx *ctx) { return ctx && ctx->training; }

bool tg_set_detect_anomaly(tg_ctx *ctx, bool enabled)
{
    if (!ctx)
        return false;
    bool prev = ctx->anomaly;
    ctx->anomaly = enabled;
    return prev;
}

bool tg_detect_anomaly(const tg_ctx *ctx) { return ctx && ctx->anomaly; }

tg_ctx *tg_at_op(tg_ctx *ctx, const char *file, int line, const char *name)
{
    if (!ctx || ctx->errcode != TG_OK)
        return ctx;
    if (ctx->n_sites == TG__SITES) { /* a nest deeper than any real one: drop the oldest */
        memmove(ctx->sites, ctx->sites + 1, (TG__SITES - 1) * sizeof ctx->sites[0]);
        ctx->n_sites--;
    }
    ctx->sites[ctx->n_sites].file = file;
    ctx->sites[ctx->n_sites].line = line;
    ctx->sites[ctx->n_sites].name = name;
    ctx->n_sites++;
    return ctx;
}

tg_ctx *tg_at(tg_ctx *ctx, const char *file, int line) { return tg_at_op(ctx, file, line, NULL); }

/* ---------------------------------------------------------------- scopes */

tg_status tg_scope_push(tg_ctx *ctx, const char *name)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (!name || !name[0])
        return TG_ERROR(ctx, TG_EINVAL, "scope_push: the name is %s", name ? "empty" : "NULL");
    size_t len = strlen(name);
    tg_scope *s = tg__arena_alloc(ctx, sizeof *s + len + 1);
    if (!s)
        return ctx->errcode;
    char *copy = (char *)(s + 1);
    memcpy(copy, name, len + 1);
    s->name = copy;
    s->parent = ctx->scope;
    s->depth = ctx->scope ? ctx->scope->depth + 1 : 1;
    s->id = ctx->scope_next++;
    ctx->scope = s;
    return TG_OK;
}

tg_status tg_scope_pop(tg_ctx *ctx)
{
    if (!ctx)
        return TG_EINVAL;
    /* closing works with an error held, so that a failed layer leaves no scope open */
    if (!ctx->scope)
        return TG_ERROR(ctx, TG_ESTATE, "scope_pop: no scope is open (more pops than pushes "
                                         "since the last tg_reset)");
    ctx->scope = (tg_scope *)ctx->scope->parent;
    return TG_OK;
}

int tg_scope_depth(const tg_ctx *ctx) { return ctx && ctx->scope ? ctx->scope->depth : 0; }

/* ---------------------------------------------------------------- profile */

uint64_t tg__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

bool tg_set_profile(tg_ctx *ctx, bool enabled)
{
    if (!ctx)
        return false;
    bool prev = ctx->profile;
    ctx->profile = enabled;
    return prev;
}

bool tg_profiling(const tg_ctx *ctx) { return ctx && ctx->profile; }

void tg_profile_reset(tg_ctx *ctx)
{
    if (ctx)
        ctx->n_prof = 0;
}

/* The totals named name (an op's, or with other a recorded entry's),
 * appended zeroed when there are none yet; NULL on out-of-memory. */
static tg__prof *prof_entry(tg_ctx *ctx, const char *name, bool other)
{
    for (size_t i = 0; i < ctx->n_prof; i++) { /* a few dozen names: a scan is enough */
        tg__prof *p = &ctx->prof[i];
        if (p->other == other &&
            (other ? strcmp(p->label, name) == 0 : p->name == name || strcmp(p->name, name) == 0))
            return p;
    }
    if (ctx->n_prof == ctx->cap_prof) {
        size_t cap = ctx->cap_prof ? 2 * ctx->cap_prof : 32;
        tg__prof *t = tg__realloc(ctx, ctx->prof, ctx->cap_prof * sizeof *t, cap * sizeof *t);
        if (!t)
            return NULL;
        ctx->prof = t;
        ctx->cap_prof = cap;
    }
    tg__prof *p = &ctx->prof[ctx->n_prof++];
    memset(p, 0, sizeof *p);
    p->other = other;
    if (other)
        memcpy(p->label, name, strlen(name) + 1); /* the caller checked its length */
    else
        p->name = name;
    return p;
}

tg_status tg__profile_add(tg_ctx *ctx, const char *name, bool vjp, uint64_t ns, uint64_t bytes)
{
    tg__prof *p = prof_entry(ctx, name, false);
    if (!p)
        return ctx->errcode;
    if (vjp) {
        p->vjp_calls++;
        p->vjp_ns += ns;
        p->vjp_bytes += bytes;
    } else {
        p->calls++;
        p->fwd_ns += ns;
        p->fwd_bytes += bytes;
    }
    return TG_OK;
}

tg_status tg_profile_record(tg_ctx *ctx, const char *name, uint64_t ns, uint64_t bytes)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (!name || !*name || strlen(name) >= TG__PROF_LABEL)
        return TG_ERROR(ctx, TG_EINVAL, "profile_record: the name %s", !name ? "is NULL"
                        : !*name ? "is empty" : "is longer than 47 bytes");
    if (!ctx->profile)
        return TG_OK;
    tg__prof *p = prof_entry(ctx, name, true);
    if (!p)
        return ctx->errcode;
    p->calls++;
    p->fwd_ns += ns;
    p->fwd_bytes += bytes;
    return TG_OK;
}

/* Ops first, then recorded entries; each by total time, then name. */
static int by_time(const void *a, const void *b)
{
    const tg__prof *x = a, *y = b;
    if (x->other != y->other)
        return x->other ? 1 : -1;
    uint64_t tx = x->fwd_ns + x->vjp_ns, ty = y->fwd_ns + y->vjp_ns;
    if (tx != ty)
        return tx < ty ? 1 : -1;
    return strcmp(x->other ? x->label : x->name, y->other ? y->label : y->name);
}

/* "12.345ms" with a unit that suits the value */
static const char *fmt_ns(char *buf, size_t size, uint64_t ns)
{
    if (ns >= 1000000000u)
        snprintf(buf, size, "%.3fs", ns / 1e9);
    else if (ns >= 1000000u)
        snprintf(buf, size, "%.3fms", ns / 1e6);
    else
        snprintf(buf, size, "%.3fus", ns / 1e3);
    return buf;
}

/* The tg_profile_record entries, in a table of their own: their time is
 * not the ops' (communication overlaps backward), nor are their bytes. */
static void print_others(FILE *f, const tg__prof *p, size_t n)
{
    if (n == 0)
        return;
    const char *rule = "--------------------------------  --------  ------------  "
                       "----------------\n";
    fprintf(f, "\n%s%-32s  %8s  %12s  %16s\n%s", rule, "Other", "Calls", "Total", "Bytes", rule);
    char a[32];
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%-32s  %8llu  %12s  %16llu\n", p[i].label, (unsigned long long)p[i].calls,
                fmt_ns(a, sizeof a, p[i].fwd_ns), (unsigned long long)p[i].fwd_bytes);
    fputs(rule, f);
}

tg_status tg_profile_print(tg_ctx *ctx, FILE *f)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (!f)
        return TG_ERROR(ctx, TG_EINVAL, "profile_print: the file is NULL");
    qsort(ctx->prof, ctx->n_prof, sizeof *ctx->prof, by_time);
    uint64_t all = 0, fwd = 0, vjp = 0, calls = 0, bytes = 0;
    size_t n_ops = 0;
    while (n_ops < ctx->n_prof && !ctx->prof[n_ops].other)
        n_ops++;
    for (size_t i = 0; i < n_ops; i++) {
        all += ctx->prof[i].fwd_ns + ctx->prof[i].vjp_ns;
        fwd += ctx->prof[i].fwd_ns;
        vjp += ctx->prof[i].vjp_ns;
        calls += ctx->prof[i].calls;
        bytes += ctx->prof[i].fwd_bytes + ctx->prof[i].vjp_bytes;
    }
    const char *rule = "--------------------  --------  ------------  ------------  ------------  "
                       "-------  ------------  ------------\n";
    fputs(rule, f);
    fprintf(f, "%-20s  %8s  %12s  %12s  %12s  %7s  %12s  %12s\n", "Name", "Calls", "Fwd total",
            "Vjp total", "Total", "Total %", "Fwd bytes", "Vjp bytes");
    fputs(rule, f);
    char a[32], b[32], c[32];
    for (size_t i = 0; i < n_ops; i++) {
        const tg__prof *p = &ctx->prof[i];
        uint64_t t = p->fwd_ns + p->vjp_ns;
        fprintf(f, "%-20s  %8llu  %12s  %12s  %12s  %6.2f%%  %12llu  %12llu\n", p->name,
                (unsigned long long)p->calls, fmt_ns(a, sizeof a, p->fwd_ns),
                fmt_ns(b, sizeof b, p->vjp_ns), fmt_ns(c, sizeof c, t),
                all ? 100.0 * (double)t / (double)all : 0.0, (unsigned long long)p->fwd_bytes,
                (unsigned long long)p->vjp_bytes);
    }
    fputs(rule, f);
    fprintf(f, "%-20s  %8llu  %12s  %12s  %12s  %6.2f%%  %12s  %12llu\n", "(all ops)",
            (unsigned long long)calls, fmt_ns(a, sizeof a, fwd), fmt_ns(b, sizeof b, vjp),
            fmt_ns(c, sizeof c, all), all ? 100.0 : 0.0, "", (unsigned long long)bytes);
    print_others(f, ctx->prof + n_ops, ctx->n_prof - n_ops);
    if (fflush(f) != 0 || ferror(f))
        return TG_ERROR(ctx, TG_EIO, "profile_print: writing the table failed");
    return TG_OK;
}

/* ---------------------------------------------------------------- numbers in messages */

const char *tg__num(double v)
{
    static _Thread_local char bufs[8][32];
    static _Thread_local unsigned next;
    char *b = bufs[next++ & 7];
    /* the fewest digits that read back as v */
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(b, sizeof bufs[0], "%.*g", prec, v);
        if (strtod(b, NULL) == v || v != v)
            break;
    }
    return b;
}

/* ---------------------------------------------------------------- RNG */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* xoshiro256**: small state, fast, and good enough for initialisation and masks. */
static uint64_t next_u64(tg_ctx *ctx)
{
    uint64_t *s = ctx->rng;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void tg_seed(tg_ctx *ctx, uint64_t seed)
{
    if (!ctx)
        return;
    for (int i = 0; i < 4; i++)
        ctx->rng[i] = splitmix64(&seed);
}

double tg_rand_uniform(tg_ctx *ctx)
{
    if (!ctx)
        return 0.0;
    return (double)(next_u64(ctx) >> 11) * 0x1.0p-53;
}

/* Box-Muller with one value per call, so the stream does not depend on
 * how many normals were asked for before. */
double tg_rand_normal(tg_ctx *ctx)
{
    if (!ctx)
        return 0.0;
    double u1 = 1.0 - tg_rand_uniform(ctx); /* (0, 1]: log stays finite */
    double u2 = tg_rand_uniform(ctx);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

tg_rng_state tg_rng_get(const tg_ctx *ctx)
{
    tg_rng_state st = {{0, 0, 0, 0}};
    if (ctx)
        memcpy(st.s, ctx->rng, sizeof st.s);
    return st;
}

void tg_rng_set(tg_ctx *ctx, tg_rng_state state)
{
    if (ctx)
        memcpy(ctx->rng, state.s, sizeof state.s);
}
