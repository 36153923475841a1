/*
 * tapegrad/dot.h: the recorded graph as Graphviz dot text.
 */
#ifndef TAPEGRAD_DOT_H
#define TAPEGRAD_DOT_H

#include "op.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tg_dot_opts {
    const char *title;     /* graph label; NULL for none */
    bool show_grad_norm;   /* add |grad| (L2 norm) to tensors that hold a gradient */
    bool left_to_right;    /* rankdir=LR instead of top to bottom */
} tg_dot_opts;

/*
 * Writes the graph that produced out: one node per tensor (ellipses; leaf
 * inputs white, parameters blue boxes, out a double octagon, red when it is a
 * scalar loss) and per op (grey rounded boxes labelled with the op's name and
 * attributes, e.g. "pad (0, 0)(1, 1)"), edges tensor -> op -> tensor.
 * Labels carry names, shapes and dtypes; names are escaped. Node ids come
 * from tape positions, so the same graph always gives the same text.
 * Works before or after backward, until tg_reset. opts may be NULL.
 * Errors: TG_EINVAL (NULL ctx, out or f), TG_EIO (a write failed), TG_ENOMEM.
 */
TG_API tg_status tg_dot_write(tg_ctx *ctx, const tg_tensor *out, FILE *f,
                              const tg_dot_opts *opts);

/* The same into a file at path (created or truncated). */
TG_API tg_status tg_dot_save(tg_ctx *ctx, const tg_tensor *out, const char *path,
                             const tg_dot_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
