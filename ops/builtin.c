/*
 * builtin.c: the one place where the built-in ops are wired in. Creating
 * a context registers them (once per process) through the same call a
 * user's ops take; the engine itself knows no op.
 */
#include "ops_impl.h"

static const tg_op *const builtins[] = {
#define TG__BUILTIN(name) &tg__op_##name,
#include "builtin.def"
#undef TG__BUILTIN
};

tg_ctx *tg_ctx_new_opts(const tg_ctx_opts *opts)
{
    tg_ctx *ctx = tg__ctx_create(opts);
    if (ctx && tg__register_all(ctx, builtins, sizeof builtins / sizeof builtins[0]) != TG_OK) {
        tg_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

tg_ctx *tg_ctx_new(uint64_t seed)
{
    tg_ctx_opts o = {0};
    o.seed = seed;
    return tg_ctx_new_opts(&o);
}
