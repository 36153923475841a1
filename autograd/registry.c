/*
 * registry.c: the process-wide op registry, a uthash table keyed by name.
 *
 * Invariants: the table is kept sorted by name (so iteration order is
 * stable); it only grows; a lock serialises every access. uthash is built
 * with HASH_NONFATAL_OOM and allocates through the allocator of the context
 * that is registering, so running out of memory is a TG_ENOMEM error.
 */
#include "impl.h"

#include <pthread.h>

static tg_ctx *reg_ctx;  /* the registering context, while the lock is held */
static int reg_oom;

#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) tg__malloc(reg_ctx, (sz))
#define uthash_free(ptr, sz) tg__free(reg_ctx, (ptr), (sz))
#define uthash_nonfatal_oom(obj) (reg_oom = 1)
#include <uthash.h>

typedef struct opent {
    const tg_op *op;
    UT_hash_handle hh;
} opent;

static opent *table;
static bool builtins_done;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int by_name(const opent *a, const opent *b) { return strcmp(a->op->name, b->op->name); }

static tg_status check_op(tg_ctx *ctx, const tg_op *op)
{
    if (!op)
        return TG_ERROR(ctx, TG_EINVAL, "op_register: op is NULL");
    if (!op->name || !op->name[0])
        return TG_ERROR(ctx, TG_EINVAL, "op_register: the op has no name");
    if (!op->forward)
        return TG_ERROR(ctx, TG_EINVAL, "op_register: %s has no forward", op->name);
    if (op->min_in < 0 || (op->max_in >= 0 && op->max_in < op->min_in) || op->max_in < -1)
        return TG_ERROR(ctx, TG_EINVAL, "op_register: %s takes %d to %d inputs, which is not a range",
                        op->name, op->min_in, op->max_in);
    if (op->attr_size > TG_ATTR_MAX)
        return TG_ERROR(ctx, TG_EINVAL, "op_register: %s has %zu bytes of attributes; at most %d",
                        op->name, op->attr_size, TG_ATTR_MAX);
    return TG_OK;
}

/* Adds op; the caller holds the lock. */
static tg_status add_locked(tg_ctx *ctx, const tg_op *op)
{
    opent *e = NULL;
    HASH_FIND_STR(table, op->name, e);
    if (e)
        return TG_ERROR(ctx, TG_EEXIST, "op_register: an op named '%s' is already registered",
                        op->name);
    e = tg__malloc(ctx, sizeof *e);
    if (!e)
        return ctx->errcode;
    memset(e, 0, sizeof *e);
    e->op = op;
    reg_ctx = ctx;
    reg_oom = 0;
    HASH_ADD_KEYPTR(hh, table, op->name, strlen(op->name), e);
    reg_ctx = NULL;
    if (reg_oom) {
        tg__free(ctx, e, sizeof *e);
        return ctx->errcode ? ctx->errcode : tg__oom(ctx, sizeof(UT_hash_table));
    }
    HASH_SRT(hh, table, by_name);
    return TG_OK;
}

tg_status tg_op_register(tg_ctx *ctx, const tg_op *op)
{
    TG__GUARD(ctx, ctx ? ctx->errcode : TG_EINVAL);
    if (check_op(ctx, op))
        return ctx->errcode;
    pthread_mutex_lock(&lock);
    tg_status st = add_locked(ctx, op);
    pthread_mutex_unlock(&lock);
    return st;
}

static const tg_op *const builtins[] = {
#define TG__BUILTIN(name) &tg__op_##name,
#include "../ops/builtin.def"
#undef TG__BUILTIN
};

tg_status tg__register_builtins(tg_ctx *ctx)
{
    static pthread_mutex_t once_lock = PTHREAD_MUTEX_INITIALIZER;
    tg_status st = TG_OK;
    pthread_mutex_lock(&once_lock);
    /* through the public call; an op left from a failed earlier try is skipped */
    for (size_t i = 0; !builtins_done && i < sizeof builtins / sizeof builtins[0]; i++) {
        if (!tg_op_find(builtins[i]->name) && (st = tg_op_register(ctx, builtins[i])) != TG_OK)
            break;
    }
    if (st == TG_OK)
        builtins_done = true;
    pthread_mutex_unlock(&once_lock);
    return st;
}

const tg_op *tg_op_find(const char *name)
{
    if (!name)
        return NULL;
    opent *e = NULL;
    pthread_mutex_lock(&lock);
    HASH_FIND_STR(table, name, e);
    pthread_mutex_unlock(&lock);
    return e ? e->op : NULL;
}

const tg_op *tg_op_next(const tg_op *prev)
{
    opent *e = NULL;
    pthread_mutex_lock(&lock);
    if (!prev) {
        e = table;
    } else {
        HASH_FIND_STR(table, prev->name, e);
        e = e ? e->hh.next : NULL;
    }
    pthread_mutex_unlock(&lock);
    return e ? e->op : NULL;
}

int tg_op_count(void)
{
    pthread_mutex_lock(&lock);
    int n = (int)HASH_COUNT(table);
    pthread_mutex_unlock(&lock);
    return n;
}
