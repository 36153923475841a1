/*
 * render_svg.h: lays out a dot file with Graphviz and writes it as SVG
 * (the examples' way of turning tg_dot_save's output into a picture).
 */
#ifndef RENDER_SVG_H
#define RENDER_SVG_H

#include <graphviz/gvc.h>
#include <stdio.h>

/* 0 on success, -1 when the file cannot be read, laid out or written. */
static inline int render_svg(const char *dot_path, const char *svg_path)
{
    FILE *f = fopen(dot_path, "r");
    if (!f)
        return -1;
    GVC_t *gvc = gvContext();
    Agraph_t *g = agread(f, NULL);
    fclose(f);
    int rc = -1;
    if (g && gvLayout(gvc, g, "dot") == 0) {
        rc = gvRenderFilename(gvc, g, "svg", svg_path) == 0 ? 0 : -1;
        gvFreeLayout(gvc, g);
    }
    if (g)
        agclose(g);
    gvFreeContext(gvc);
    return rc;
}

#endif
