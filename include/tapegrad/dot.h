/*
 * tapegrad/dot.h: the recorded graph as Graphviz dot text, and rendered to
 * SVG, PNG or PDF through Graphviz's C library.
 *
 * Four views of the same tape:
 *   forward    one node per tensor and per op, edges tensor -> op -> tensor;
 *   backward   one node per vjp (orange), the gradient tensors each one
 *              produces and the saved tensors it reads, with their bytes;
 *   both       the two together, the gradient flow in a second edge colour;
 *   collapsed  each top-level scope (tg_scope_push) as one box with its
 *              input and output shapes, parameter count and activation bytes.
 * Scopes are drawn as clusters in the first three. Above opts->collapse_above
 * ops (500 by default) the collapsed view is chosen, and the graph's label
 * says so: Graphviz cannot lay out ten thousand nodes in reasonable time.
 */
#ifndef TAPEGRAD_DOT_H
#define TAPEGRAD_DOT_H

#include "op.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tg_dot_view {
    TG_VIEW_FORWARD = 0,
    TG_VIEW_BACKWARD = 1,
    TG_VIEW_BOTH = 2,
    TG_VIEW_COLLAPSED = 3
} tg_dot_view;

#define TG_DOT_COLLAPSE_ABOVE 500 /* the default threshold, in drawn ops */

typedef struct tg_dot_opts {
    const char *title;     /* graph label; NULL for none */
    bool show_grad_norm;   /* add |grad| (L2 norm) to every tensor that holds a gradient */
    bool left_to_right;    /* rankdir=LR instead of top to bottom */
    tg_dot_view view;      /* TG_VIEW_FORWARD when zero-initialised */
    int collapse_above;    /* draw collapsed above this many ops; 0: TG_DOT_COLLAPSE_ABOVE;
                              negative: never */
    bool stats;            /* min, max, mean, L2 norm, NaN and Inf counts and the first
                              values of every tensor, in its tooltip */
} tg_dot_opts;

/*
 * Writes the graph that produced out, or with out == NULL every node on the
 * tape (the way to see a graph whose last op failed). Tensor nodes: leaf
 * inputs white ellipses, parameters blue boxes, out a double octagon, red
 * when it is a scalar loss; op nodes grey rounded boxes labelled as the
 * user called them ("sub_scalar") with their attributes ("pad (0, 0)(1, 1)");
 * the recorded op ("add_scalar"), call site, scope, bytes and profile are
 * in tooltips. An op with several inputs labels each edge with the argument
 * it feeds (tg_op.input_names). Labels carry names, shapes and dtypes;
 * every string is escaped. Node ids come from tape positions, so the same
 * graph always gives the same text.
 *
 * Values: with opts->stats, tensor statistics in tooltips; with anomaly
 * mode on (tg_set_detect_anomaly), the first op whose output holds a NaN
 * or an Inf (or a leaf that holds one) and everything downstream of it are
 * red. Profile: nodes profiled (tg_set_profile) show their forward and vjp
 * time and bytes, and are filled from blue (cold) to red (hot).
 *
 * Works before or after backward (what each vjp saved stays drawable),
 * until tg_reset. opts may be NULL.
 * Errors: TG_EINVAL (NULL ctx or f, a bad view), TG_ESTATE (out's node is
 * not on the tape), TG_EIO (a write failed), TG_ENOMEM.
 */
TG_API tg_status tg_dot_write(tg_ctx *ctx, const tg_tensor *out, FILE *f,
                              const tg_dot_opts *opts);

/* The same into a file at path (created or truncated). */
TG_API tg_status tg_dot_save(tg_ctx *ctx, const tg_tensor *out, const char *path,
                             const tg_dot_opts *opts);

/*
 * Lays the graph out with Graphviz's dot layout (libgvc, in process; no
 * `dot` program needed) and renders it to path, in the format its
 * extension names: .svg, .png or .pdf (.dot and .gv write the text, as
 * tg_dot_save). SVG keeps the tooltips. Errors: as tg_dot_write, and
 * TG_EINVAL (NULL path, another extension), TG_EFORMAT (Graphviz rejected
 * the text: a bug), TG_EIO (layout or rendering failed, e.g. an unwritable
 * path or a missing Graphviz plugin).
 */
TG_API tg_status tg_dot_render(tg_ctx *ctx, const tg_tensor *out, const char *path,
                               const tg_dot_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
