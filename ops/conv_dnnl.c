/*
 * conv_dnnl.c: the float32 convolution backend on oneDNN's C API.
 *
 * Our tensors keep their plain layouts (x and y nchw, w oihw or goihw with
 * groups, b x). oneDNN picks its own layouts for the convolution (blocked
 * ones such as nChw16c, whose direct kernels run at about twice the speed
 * of its im2col + gemm kernel on plain data); the arguments are reordered
 * into them and the result out of them in step-arena buffers. The three
 * primitives of a shape (forward, data gradient, weight gradient) are made
 * once and kept in a process-wide cache keyed by the descriptor and the
 * bias's presence; a lock guards the cache, and execution runs outside it
 * (a primitive with a user scratchpad, here from the step arena, may run
 * on several threads at once). The cache is released when the process
 * ends. oneDNN writes its outputs, so a gradient to accumulate goes
 * through a step-arena temporary and an add. The bias gradient is the
 * shared double-precision sum (tg__conv_bias_grad), not oneDNN's float one.
 * A shape oneDNN cannot do falls back to the portable kernels.
 */
#include "conv_impl.h"

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdlib.h>

enum { CACHE_MAX = 64 }; /* shapes; beyond them primitives are made per call */
enum { FWD, BWD_DATA, BWD_WEIGHT, NKINDS };
enum { FEW_CHANNELS = 4 };

typedef struct entry {
    tg__conv_desc d;
    bool bias;
    bool tried[NKINDS], ok[NKINDS];
    dnnl_primitive_desc_t fwd_pd; /* the hint the two backward ones need */
    dnnl_primitive_t prim[NKINDS];
    size_t pad[NKINDS];           /* scratchpad bytes */
    dnnl_memory_desc_t pad_md[NKINDS];
    /* per kind, its three tensor arguments in the order of arg_ids: the
     * layout the primitive wants and the reorder to it (from it, for the
     * last, an output), NULL when that is our plain layout */
    dnnl_memory_desc_t md[NKINDS][3];
    dnnl_primitive_t re[NKINDS][3];
    struct entry *next;
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t engine;
static bool engine_tried;
static entry *cache;
static int cached;

static bool same(const entry *e, const tg__conv_desc *d, bool bias)
{
    return e->bias == bias && !memcmp(&e->d, d, sizeof *d);
}

/* Memory descriptors of x, w, b and y in our layouts (any: oneDNN's choice). */
typedef struct mds { dnnl_memory_desc_t x, w, b, y; } mds;

static bool make_mds(const tg__conv_desc *d, mds *m, bool any)
{
    dnnl_dims_t x = {d->n, d->c, d->h, d->w}, y = {d->n, d->k, d->oh, d->ow}, b = {d->k};
    dnnl_dims_t w = {d->k, d->c, d->r, d->s}, gw = {d->g, d->k / d->g, d->c / d->g, d->r, d->s};
    dnnl_format_tag_t act = any ? dnnl_format_tag_any : dnnl_nchw;
    dnnl_format_tag_t wt = any ? dnnl_format_tag_any : d->g == 1 ? dnnl_oihw : dnnl_goihw;
    return dnnl_memory_desc_init_by_tag(&m->x, 4, x, dnnl_f32, act) == dnnl_success &&
           dnnl_memory_desc_init_by_tag(&m->y, 4, y, dnnl_f32, act) == dnnl_success &&
           dnnl_memory_desc_init_by_tag(&m->b, 1, b, dnnl_f32, dnnl_x) == dnnl_success &&
           (d->g == 1 ? dnnl_memory_desc_init_by_tag(&m->w, 4, w, dnnl_f32, wt)
                      : dnnl_memory_desc_init_by_tag(&m->w, 5, gw, dnnl_f32, wt)) ==
               dnnl_success;
}

/* Each kind's tensor arguments: two inputs, then its output. */
static const int arg_ids[NKINDS][3] = {
    {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST},
    {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC},
    {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS}};
static const dnnl_query_t arg_queries[NKINDS][3] = {
    {dnnl_query_src_md, dnnl_query_weights_md, dnnl_query_dst_md},
    {dnnl_query_diff_dst_md, dnnl_query_weights_md, dnnl_query_diff_src_md},
    {dnnl_query_src_md, dnnl_query_diff_dst_md, dnnl_query_diff_weights_md}};

/* The plain descriptors of a kind's arguments, in arg_ids' order. */
static void plain_args(const mds *m, int kind, const dnnl_memory_desc_t *out[3])
{
    out[0] = kind == BWD_DATA ? &m->y : &m->x;
    out[1] = kind == BWD_WEIGHT ? &m->y : &m->w;
    out[2] = kind == FWD ? &m->y : kind == BWD_DATA ? &m->x : &m->w;
}

/* The reorders between our layouts and those pd wants; false on failure. */
static bool make_reorders(entry *e, int kind, const_dnnl_primitive_desc_t pd)
{
    mds m;
    const dnnl_memory_desc_t *plain[3];
    if (!make_mds(&e->d, &m, false))
        return false;
    plain_args(&m, kind, plain);
    for (int a = 0; a < 3; a++) {
        e->md[kind][a] = *dnnl_primitive_desc_query_md(pd, arg_queries[kind][a], 0);
        if (dnnl_memory_desc_equal(&e->md[kind][a], plain[a]))
            continue;
        dnnl_primitive_desc_t rpd;
        const dnnl_memory_desc_t *from = a < 2 ? plain[a] : &e->md[kind][a];
        const dnnl_memory_desc_t *to = a < 2 ? &e->md[kind][a] : plain[a];
        if (dnnl_reorder_primitive_desc_create(&rpd, from, engine, to, engine, NULL) !=
            dnnl_success)
            return false;
        bool ok = dnnl_primitive_create(&e->re[kind][a], rpd) == dnnl_success;
        dnnl_primitive_desc_destroy(rpd);
        if (!ok)
            return false;
    }
    return true;
}

/* The op descriptor of one kind. oneDNN counts dilation from 0; the right
 * padding is the left one, as PyTorch passes it (the output size decides). */
static bool op_desc(const tg__conv_desc *d, const mds *m, bool bias, int kind,
                    dnnl_convolution_desc_t *cd)
{
    dnnl_dims_t st = {d->sh, d->sw}, dil = {d->dh - 1, d->dw - 1}, pad = {d->ph, d->pw};
    dnnl_status_t s;
    if (kind == FWD)
        s = dnnl_dilated_convolution_forward_desc_init(cd, dnnl_forward_training,
                                                       dnnl_convolution_direct, &m->x, &m->w,
                                                       bias ? &m->b : NULL, &m->y, st, dil, pad, pad);
    else if (kind == BWD_DATA)
        s = dnnl_dilated_convolution_backward_data_desc_init(cd, dnnl_convolution_direct, &m->x,
                                                             &m->w, &m->y, st, dil, pad, pad);
    else
        s = dnnl_dilated_convolution_backward_weights_desc_init(cd, dnnl_convolution_direct, &m->x,
                                                                &m->w, NULL, &m->y, st, dil, pad,
                                                                pad);
    return s == dnnl_success;
}

/* Makes e's primitive of that kind (and the forward one it needs); false
 * when oneDNN has none for the shape. The caller holds the lock. */
static bool make_prim(entry *e, int kind)
{
    if (kind != FWD && !e->tried[FWD] && !make_prim(e, FWD))
        return false;
    if (kind != FWD && !e->ok[FWD])
        return false;
    if (e->tried[kind])
        return e->ok[kind];
    e->tried[kind] = true;
    mds m;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    if (!make_mds(&e->d, &m, true) || !op_desc(&e->d, &m, e->bias, kind, &cd) ||
        dnnl_primitive_attr_create(&attr) != dnnl_success)
        return false;
    bool ok = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) ==
                  dnnl_success &&
              dnnl_primitive_desc_create(&pd, &cd, attr, engine,
                                         kind == FWD ? NULL : e->fwd_pd) == dnnl_success &&
              dnnl_primitive_create(&e->prim[kind], pd) == dnnl_success &&
              make_reorders(e, kind, pd);
    dnnl_primitive_attr_destroy(attr);
    if (ok) {
        e->pad_md[kind] = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        e->pad[kind] = dnnl_memory_desc_get_size(&e->pad_md[kind]);
    }
    if (ok && kind == FWD)
        e->fwd_pd = pd;
    else if (pd)
        dnnl_primitive_desc_destroy(pd);
    e->ok[kind] = ok;
    return ok;
}

static void free_entry(entry *e)
{
    for (int k = 0; k < NKINDS; k++) {
        if (e->prim[k])
            dnnl_primitive_destroy(e->prim[k]);
        for (int a = 0; a < 3; a++)
            if (e->re[k][a])
                dnnl_primitive_destroy(e->re[k][a]);
    }
    if (e->fwd_pd)
        dnnl_primitive_desc_destroy(e->fwd_pd);
    free(e);
}

/* The shape's entry with its primitive of that kind made, or NULL when
 * oneDNN cannot do it. *owned: the entry is not cached and the caller
 * frees it. */
static entry *lookup(const tg__conv_desc *d, bool bias, int kind, bool *owned)
{
    entry *e;
    pthread_mutex_lock(&lock);
    if (!engine_tried) {
        engine_tried = true;
        if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success)
            engine = NULL;
    }
    for (e = cache; e && !same(e, d, bias); e = e->next)
        ;
    *owned = false;
    if (!e && engine && (e = calloc(1, sizeof *e))) {
        e->d = *d;
        e->bias = bias;
        *owned = cached >= CACHE_MAX;
        if (!*owned) {
            e->next = cache;
            cache = e;
            cached++;
        }
    }
    bool ok = e && make_prim(e, kind);
    pthread_mutex_unlock(&lock);
    if (!ok && e && *owned)
        free_entry(e);
    return ok ? e : NULL;
}

__attribute__((destructor)) static void release_cache(void)
{
    pthread_mutex_lock(&lock);
    while (cache) {
        entry *e = cache;
        cache = e->next;
        free_entry(e);
    }
    cached = 0;
    if (engine)
        dnnl_engine_destroy(engine);
    engine = NULL;
    engine_tried = false;
    pthread_mutex_unlock(&lock);
}

/* A memory object over buf, kept in mem[*n] so that run() destroys it. */
static dnnl_memory_t memory(const dnnl_memory_desc_t *md, void *buf, dnnl_memory_t *mem, int *n)
{
    if (dnnl_memory_create(&mem[*n], md, engine, buf) != dnnl_success)
        return NULL;
    return mem[(*n)++];
}

static dnnl_status_t reorder(dnnl_primitive_t re, dnnl_stream_t stream, dnnl_memory_t from,
                             dnnl_memory_t to)
{
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    return dnnl_primitive_execute(re, stream, 2, args);
}

/* Runs e's primitive of that kind on ptr (our buffers in arg_ids' order)
 * and the bias b (forward, or NULL): inputs reordered into the layouts
 * it wants, the output out of its own, scratch from the step arena. */
static tg_status run(tg_ctx *ctx, entry *e, int kind, void *const ptr[3], const void *b)
{
    mds m;
    const dnnl_memory_desc_t *plain[3];
    make_mds(&e->d, &m, false);
    plain_args(&m, kind, plain);
    void *buf[3] = {NULL, NULL, NULL};
    for (int a = 0; a < 3; a++)
        if (e->re[kind][a] &&
            !(buf[a] = tg_scratch(ctx, dnnl_memory_desc_get_size(&e->md[kind][a]), false)))
            return tg_errcode(ctx);
    void *pad = e->pad[kind] ? tg_scratch(ctx, e->pad[kind], false) : NULL;
    if (e->pad[kind] && !pad)
        return tg_errcode(ctx);
    dnnl_memory_t mem[8], ours[3], theirs[3];
    dnnl_exec_arg_t args[5];
    dnnl_stream_t stream = NULL;
    int nmem = 0, nargs = 0;
    dnnl_status_t s = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
    for (int a = 0; a < 3 && s == dnnl_success; a++) {
        ours[a] = memory(plain[a], ptr[a], mem, &nmem);
        theirs[a] = buf[a] ? memory(&e->md[kind][a], buf[a], mem, &nmem) : ours[a];
        if (!ours[a] || !theirs[a])
            s = dnnl_out_of_memory;
        else if (a < 2 && buf[a])
            s = reorder(e->re[kind][a], stream, ours[a], theirs[a]);
        args[nargs++] = (dnnl_exec_arg_t){arg_ids[kind][a], theirs[a]};
    }
    if (s == dnnl_success && b)
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, memory(&m.b, (void *)b, mem, &nmem)};
    if (s == dnnl_success && pad)
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD,
                                          memory(&e->pad_md[kind], pad, mem, &nmem)};
    for (int a = 0; a < nargs && s == dnnl_success; a++)
        if (!args[a].memory)
            s = dnnl_out_of_memory;
    if (s == dnnl_success)
        s = dnnl_primitive_execute(e->prim[kind], stream, nargs, args);
    if (s == dnnl_success && buf[2])
        s = reorder(e->re[kind][2], stream, theirs[2], ours[2]);
    if (s == dnnl_success)
        s = dnnl_stream_wait(stream);
    if (stream)
        dnnl_stream_destroy(stream);
    for (int i = 0; i < nmem; i++)
        dnnl_memory_destroy(mem[i]);
    if (s == dnnl_out_of_memory)
        return TG_ERROR(ctx, TG_ENOMEM, "conv2d: oneDNN ran out of memory");
    if (s != dnnl_success)
        return TG_ERROR(ctx, TG_EINTERNAL, "conv2d: oneDNN failed (status %d)", (int)s);
    return TG_OK;
}

/* dst += src over n floats */
static void add_into(float *dst, const float *src, int64_t n)
{
    TG__PAR_FOR(n >= TG__PAR_GRAIN, "omp parallel for schedule(static)",
    for (int64_t i = 0; i < n; i++)
        dst[i] += src[i];);
}

static tg_status dnnl_fwd(tg_ctx *ctx, const tg__conv_desc *d, const void *x, const void *w,
                          const void *b, void *y, void **keep)
{
    bool owned;
    entry *e = lookup(d, b != NULL, FWD, &owned);
    if (!e)
        return tg__conv_portable.fwd(ctx, d, x, w, b, y, keep);
    void *const ptr[3] = {(void *)x, (void *)w, y};
    tg_status st = run(ctx, e, FWD, ptr, b);
    if (owned)
        free_entry(e);
    return st;
}

/* A gradient of n elements from primitive `kind` on inputs a and b: written
 * straight into grad (oneDNN writes, beta = 0), or made in scratch and
 * added when grad already holds earlier contributions. */
static tg_status run_gradient(tg_ctx *ctx, entry *e, int kind, const void *a, const void *b,
                              void *grad, int64_t n, bool add)
{
    float *out = add ? tg_scratch(ctx, (size_t)n * sizeof(float), false) : grad;
    tg_status st = out ? TG_OK : tg_errcode(ctx);
    void *const ptr[3] = {(void *)a, (void *)b, out};
    if (!st)
        st = run(ctx, e, kind, ptr, NULL);
    if (!st && add)
        add_into(grad, out, n);
    return st;
}

static tg_status dnnl_bwd_data(tg_ctx *ctx, const tg__conv_desc *d, const void *dy, const void *w,
                               void *dx, bool add)
{
    bool owned;
    /* few input channels: oneDNN's data gradient pads them to a block of
     * 16 and loses to the portable kernels (measured with bench/conv_bench) */
    entry *e = d->c / d->g >= FEW_CHANNELS ? lookup(d, false, BWD_DATA, &owned) : NULL;
    if (!e)
        return tg__conv_portable.bwd_data(ctx, d, dy, w, dx, add);
    tg_status st = run_gradient(ctx, e, BWD_DATA, dy, w, dx, d->n * d->c * d->h * d->w, add);
    if (owned)
        free_entry(e);
    return st;
}

static tg_status dnnl_bwd_weight(tg_ctx *ctx, const tg__conv_desc *d, const void *dy,
                                 const void *x, void *dw, bool add_w, void *db, bool add_b,
                                 void *kept)
{
    if (db)
        tg__conv_bias_grad(d, dy, db, add_b);
    if (!dw)
        return TG_OK;
    bool owned;
    entry *e = lookup(d, false, BWD_WEIGHT, &owned);
    if (!e)
        return tg__conv_portable.bwd_weight(ctx, d, dy, x, dw, add_w, NULL, false, kept);
    tg_status st = run_gradient(ctx, e, BWD_WEIGHT, x, dy, dw, d->k * (d->c / d->g) * d->r * d->s,
                                add_w);
    if (owned)
        free_entry(e);
    return st;
}

const tg__conv_impl tg__conv_dnnl = {"dnnl", dnnl_fwd, dnnl_bwd_data, dnnl_bwd_weight};
