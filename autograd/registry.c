/*
 * registry.c: the process-wide op registry, a uthash table keyed by name.
 *
 * Invariants: the table is kept sorted by name (so iteration order is
 * stable); it only grows; a lock serialises every access. The registry
 * owns its memory: entries come from the C library's allocator (uthash
 * built with HASH_NONFATAL_OOM, so running out is a TG_ENOMEM error, never
 * an exit) and are released by a destructor when the process ends. No
 * context's allocator is ever borrowed.
 */
#include "impl.h"

#include <pthread.h>
#include <stdlib.h>

static int reg_oom;

#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) malloc(sz)
#define uthash_free(ptr, sz) free(ptr)
#define uthash_nonfatal_oom(obj) (reg_oom = 1)
#include <uthash.h>

typedef struct opent {
    const tg_op *op;
    UT_hash_handle hh;
} opent;

static opent *table;
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
    if (!op->vjp && !(op->flags & TG_OP_NO_VJP))
        return TG_ERROR(ctx, TG_EINVAL,
                        "op_register: %s has no vjp; give it one, or declare that it has none "
                        "with .flags = TG_OP_NO_VJP (backward through it is then an error)",
                        op->name);
    if (op->vjp && (op->flags & TG_OP_NO_VJP))
        return TG_ERROR(ctx, TG_EINVAL, "op_register: %s has a vjp but sets TG_OP_NO_VJP",
                        op->name);
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
    e = calloc(1, sizeof *e);
    if (!e)
        return TG_ERROR(ctx, TG_ENOMEM, "op_register: %s: out of memory", op->name);
    e->op = op;
    reg_oom = 0;
    HASH_ADD_KEYPTR(hh, table, op->name, strlen(op->name), e);
    if (reg_oom) {
        free(e);
        return TG_ERROR(ctx, TG_ENOMEM, "op_register: %s: out of memory", op->name);
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

tg_status tg__register_all(tg_ctx *ctx, const tg_op *const *ops, size_t n)
{
    static pthread_mutex_t once_lock = PTHREAD_MUTEX_INITIALIZER;
    static bool done;
    tg_status st = TG_OK;
    pthread_mutex_lock(&once_lock);
    /* an op left from a failed earlier try is skipped */
    for (size_t i = 0; !done && i < n; i++)
        if (!tg_op_find(ops[i]->name) && (st = tg_op_register(ctx, ops[i])) != TG_OK)
            break;
    if (st == TG_OK)
        done = true;
    pthread_mutex_unlock(&once_lock);
    return st;
}

/* The process is ending: give the table back. */
__attribute__((destructor)) static void registry_free(void)
{
    opent *e, *tmp;
    HASH_ITER(hh, table, e, tmp) {
        HASH_DEL(table, e);
        free(e);
    }
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
    } else if (prev->name) {
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
