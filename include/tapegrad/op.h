/*
 * tapegrad/op.h: the op registry, and how to write an op of your own.
 *
 * An op is a `tg_op`: a name, how many tensor inputs it takes, the size of
 * its attribute struct, a forward kernel, a vector-Jacobian product (vjp),
 * an attribute printer (for graph labels) and a sample-input generator (so
 * gradcheck can test it without a hand-written list). Every built-in op is
 * registered through tg_op_register, the same call user ops use.
 *
 * Running an op: tg_apply(ctx, op, inputs, n, &attrs) copies the attributes
 * into a node, calls op->forward(ctx, node), and, if grad mode is on and an
 * input requires grad, appends the node to the tape; the output then
 * requires grad and points back at the node. tg_backward calls op->vjp for
 * each node on the path to the loss.
 *
 * The registry is process-wide and filled at start-up: the built-in ops
 * register when the first context is created, user ops when the user says.
 * Registering is serialised by a lock; lookups after start-up are read-only.
 * The registry owns its memory: a few bytes per op from the C library's
 * allocator, released when the process exits. The context passed to
 * tg_op_register only receives the error, if any.
 *
 * Writing a kernel once for float32 and float64:
 *
 *   TG_DISPATCH_FLOAT(x->dtype, T, {
 *       const T *xs = x->data;
 *       T *ys = y->data;
 *       for (int64_t i = 0; i < x->numel; i++)
 *           ys[i] = xs[i] * xs[i] * xs[i];
 *   });
 *
 * tg_apply hands an op int64 inputs only when it sets TG_OP_INT64_INPUTS,
 * so a kernel of an op without that flag only ever sees the two float types.
 */
#ifndef TAPEGRAD_OP_H
#define TAPEGRAD_OP_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TG_MAX_SAVED 8      /* tensors a node can save for its vjp */
#define TG_ATTR_MAX 256     /* largest attribute struct an op may declare */
#define TG_SAMPLE_MAX_IN 8  /* inputs a sample case can hold */

typedef struct tg_op tg_op;

/*
 * Runs the statement list with T = float or T = double as dtype says: the
 * one source of a type-generic kernel. Any other dtype runs nothing, so
 * check first (tg_apply does, for ops without TG_OP_INT64_INPUTS).
 */
#define TG_DISPATCH_FLOAT(dtype, T, ...)        \
    do {                                        \
        if ((dtype) == TG_F32) {                \
            typedef float T;                    \
            __VA_ARGS__                         \
        } else if ((dtype) == TG_F64) {         \
            typedef double T;                   \
            __VA_ARGS__                         \
        }                                       \
    } while (0)

/* A version a node does not check (see tg_node_value_unused). */
#define TG_VERSION_UNCHECKED UINT64_MAX

/* A scope (tg_scope_push), in the step arena until tg_reset. */
typedef struct tg_scope {
    const char *name;
    const struct tg_scope *parent; /* the enclosing scope, or NULL */
    int depth;                     /* 1 for a scope at top level */
    int id;                        /* 0, 1, ... in order of push within the step */
} tg_scope;

/* A recorded (or about to be recorded) application of an op. Read-only to
 * op authors except through tg_node_save and tg_node_value_unused. */
struct tg_node {
    const tg_op *op;
    int64_t index;                  /* position on the tape; -1 when not recorded */
    int n_in;
    tg_tensor **in;                 /* the inputs, n_in of them */
    tg_tensor *out;                 /* set by tg_apply from forward's result */
    const void *attrs;              /* a copy of the caller's attributes (attr_size bytes) */
    tg_tensor *saved[TG_MAX_SAVED]; /* what forward saved for the vjp */
    int n_saved;
    void *aux;                      /* free for the op (e.g. arg-max indices in tg_scratch memory) */
    bool recording;                 /* forward may skip saving when false */
    bool consumed;                  /* its vjp has run (and saved values are released) */
    bool needed;                    /* used by tg_backward */
    /* versions seen at the end of forward: in_version[0..n_in-1] of the
     * inputs, then the output's; saved_version of the saved tensors */
    uint64_t *in_version;
    uint64_t saved_version[TG_MAX_SAVED];
    const char *file;               /* the caller's code that recorded it (tg_at), or NULL */
    int line;
    const char *called;             /* the builder the user called ("sub_scalar"), or NULL */
    const tg_scope *scope;          /* the innermost open scope when it ran, or NULL */
    int n_saved_fwd;                /* how many forward saved; saved[] keeps them for graphs
                                       until tg_reset, after the vjp has released them */
    /* with tg_set_profile: wall time (ns) and step-arena bytes of forward and vjp */
    uint64_t fwd_ns, vjp_ns;
    size_t fwd_bytes, vjp_bytes;
    bool fwd_profiled, vjp_profiled;
    /* set by backward before the vjp of an op with TG_OP_VJP_WRITES: bit i
     * when gin[i] already holds a gradient the vjp must add to (tg_vjp_adds) */
    uint32_t grad_adds;
};

/*
 * Forward: validates node->in and node->attrs, creates the output (with
 * tg_empty and friends), computes it and returns it; on bad input raises an
 * error with TG_ERROR naming the op and values, and returns NULL. It may
 * save tensors with tg_node_save and keep scratch memory in node->aux.
 * Every input, the output and every saved tensor is version-checked before
 * the vjp runs; forward calls tg_node_value_unused for inputs whose values
 * the vjp never reads, so that writing them later is allowed (as PyTorch
 * allows it for what a backward formula does not save).
 *
 * Vjp: given gout = dL/d(out), ACCUMULATES (+=) dL/d(in[i]) into gin[i] for
 * every i with gin[i] != NULL (inputs that do not require grad get NULL).
 * gin[i] has in[i]'s shape and dtype. Returns TG_OK or an error status.
 * An op that sets TG_OP_VJP_WRITES instead asks tg_vjp_adds(node, i) for
 * each gin[i], as BLAS takes beta: when it is false, gin[i] is the first
 * contribution to that gradient and holds no values yet, so the vjp WRITES
 * every element (zeros included); when true it adds. That spares backward
 * a zero-fill and a second pass over every gradient. (Checked mode and
 * gradcheck fill such buffers with NaN first, so an element the vjp forgets
 * to write cannot pass for a gradient.)
 * An op with TG_OP_VJP_WRITES may also set TG_OP_VJP_INPLACE when its vjp
 * is correct with gin[0]->data == gout->data: it reads every element of
 * gout it needs before writing the gin[0] elements that share its memory
 * (an elementwise vjp, or one that reduces a region of gout before writing
 * the same region). Backward then hands gout's buffer over as input 0's
 * gradient whenever gout is not needed after this vjp, so a chain of such
 * ops needs no new gradient buffer (as PyTorch's in-place backward). Such a
 * vjp must not declare gout or gin[0] restrict. Gradcheck and checked mode
 * never alias (their NaN-filled buffers test the writes).
 * An op with no vjp must say so with TG_OP_NO_VJP: its outputs still track
 * gradients, and backward through it fails with TG_ENOTSUP naming the op.
 *
 * print_attrs: writes "stride=2 pad=1" style text (snprintf semantics); may be NULL.
 *
 * sample: fills case number `index` (0, 1, ...) of float64 test inputs for
 * gradcheck into s and returns 1, or returns 0 when there are no more cases,
 * or a negative status on error. Inputs to differentiate get requires_grad.
 * May be NULL (the op then has no registry gradcheck).
 */
typedef struct tg_sample {
    int n_in;
    tg_tensor *in[TG_SAMPLE_MAX_IN];
    TG_ALIGN16 unsigned char attrs[TG_ATTR_MAX];
    bool training;       /* the mode the case runs in */
    char desc[64];       /* a few words naming the case ("broadcast row") */
} tg_sample;

/* tg_op.flags */
enum {
    TG_OP_NO_VJP = 1 << 0,        /* no vjp: backward through it is TG_ENOTSUP */
    TG_OP_INT64_INPUTS = 1 << 1,  /* takes int64 inputs (checks their dtypes itself) */
    TG_OP_VJP_WRITES = 1 << 2,    /* the vjp writes first contributions (tg_vjp_adds) */
    TG_OP_VJP_INPLACE = 1 << 3    /* with VJP_WRITES: gin[0] may share gout's memory */
};

/* In the vjp of an op with TG_OP_VJP_WRITES: whether gin[i] holds a gradient
 * to add to (true) or nothing yet, to be overwritten (false). */
static inline bool tg_vjp_adds(const tg_node *node, int i)
{
    return i >= 32 || (node->grad_adds >> i & 1u);
}

struct tg_op {
    const char *name;   /* unique; lower case like PyTorch's ("max_pool2d") */
    int min_in;         /* fewest tensor inputs */
    int max_in;         /* most tensor inputs, or -1 for no limit */
    size_t attr_size;   /* bytes of the attribute struct (0 for none), <= TG_ATTR_MAX */
    tg_tensor *(*forward)(tg_ctx *ctx, tg_node *node);
    tg_status (*vjp)(tg_ctx *ctx, tg_node *node, const tg_tensor *gout, tg_tensor *const *gin);
    int (*print_attrs)(const tg_node *node, char *buf, size_t size);
    int (*sample)(tg_ctx *ctx, int index, tg_sample *s);
    const void *impl;   /* free for the op's author (e.g. one forward shared by several ops) */
    unsigned flags;     /* TG_OP_* */
    /* the arguments' names in input order, NULL-terminated ({"x", "weight",
     * "bias", NULL}), for graph edge labels; NULL for none */
    const char *const *input_names;
};

/*
 * Adds op to the registry. The registry keeps the pointer: op (and the
 * strings in it) must live as long as the process, as a static const does.
 * Errors (raised in ctx): TG_EINVAL (NULL, no name, no forward, no vjp
 * without TG_OP_NO_VJP, bad input counts, attr_size too large), TG_EEXIST
 * (the name is taken), TG_ENOMEM.
 */
TG_API tg_status tg_op_register(tg_ctx *ctx, const tg_op *op);
/* The op of that name, or NULL. */
TG_API const tg_op *tg_op_find(const char *name);
/* Iterates over registered ops in name order: tg_op_next(NULL) is the first. */
TG_API const tg_op *tg_op_next(const tg_op *prev);
/* How many ops are registered. */
TG_API int tg_op_count(void);

/*
 * Runs op on n inputs with attrs (attr_size bytes, copied; may be NULL when
 * attr_size is 0). Returns the output, a step tensor, or NULL with an error.
 * When grad mode is on, some input requires grad and the output is a float
 * tensor, the node is recorded. Inputs must belong to ctx and to the
 * current step (or be parameters or buffers), and be float unless the op
 * sets TG_OP_INT64_INPUTS.
 */
TG_API tg_tensor *tg_apply(tg_ctx *ctx, const tg_op *op, tg_tensor *const *in, int n,
                           const void *attrs);

/* tg_apply for the op registered under name; TG_ENOTFOUND when there is none. */
TG_API tg_tensor *tg_apply_named(tg_ctx *ctx, const char *name, tg_tensor *const *in, int n,
                                 const void *attrs);

/* Keeps t for the vjp (at most TG_MAX_SAVED per node). Returns t, or NULL on error. */
TG_API tg_tensor *tg_node_save(tg_ctx *ctx, tg_node *node, tg_tensor *t);

/* Called by forward: the vjp never reads input i's values (i = -1: the
 * output's), so backward does not check its version. */
TG_API void tg_node_value_unused(tg_node *node, int i);

/* With the call-site macros (see tg_at in core.h). */
#ifndef TG_NO_CALLSITE
#define tg_apply(ctx, ...) tg_apply(tg_at_op((ctx), __FILE__, __LINE__, NULL), __VA_ARGS__)
#define tg_apply_named(ctx, ...) tg_apply_named(tg_at_op((ctx), __FILE__, __LINE__, NULL), __VA_ARGS__)
#endif

#ifdef __cplusplus
}
#endif
#endif
