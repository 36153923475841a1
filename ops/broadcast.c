/*
 * broadcast.c: NumPy broadcasting for the elementwise ops, and the small
 * helpers every op family uses (sample inputs, sizes in messages).
 *
 * An iterator describes up to three operands over the output's shape, with
 * stride 0 along broadcast dimensions. Adjacent dimensions that are
 * contiguous for every operand are merged first, so that equal shapes
 * become one long row and kernels see the longest rows possible.
 */
#include "ops_impl.h"

#include <inttypes.h>

tg_status tg__bcast_shape(tg_ctx *ctx, const char *who, const tg_tensor *a, const tg_tensor *b,
                          int *ndim, int64_t *shape)
{
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = 0; d < n; d++) {
        int da = d - (n - a->ndim), db = d - (n - b->ndim);
        int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
        if (sa != sb && sa != 1 && sb != 1)
            return TG_ERROR(ctx, TG_ESHAPE, "%s: shapes %s and %s cannot be broadcast together",
                            who, tg__shape_s(a), tg__shape_s(b));
        shape[d] = sa == 1 ? sb : sa;
    }
    if (tg__numel(n, shape) < 0) {
        char buf[160];
        tg__shape_fmt(buf, sizeof buf, n, shape);
        return TG_ERROR(ctx, TG_ESHAPE, "%s: shapes %s and %s broadcast to %s, which has more "
                        "elements than can be addressed", who, tg__shape_s(a), tg__shape_s(b), buf);
    }
    *ndim = n;
    return TG_OK;
}

static void operand_strides(int64_t *stride, const tg_tensor *x, int ndim, const int64_t *shape)
{
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        int dx = d - (ndim - (x ? x->ndim : 0));
        if (!x || dx < 0 || (x->shape[dx] == 1 && shape[d] != 1)) {
            stride[d] = 0;
        } else {
            stride[d] = s;
            s *= x->shape[dx];
        }
    }
}

void tg__bcast_init(tg__bcast *it, const tg_tensor *out, const tg_tensor *a, const tg_tensor *b)
{
    it->ndim = 0;
    it->numel = out->numel;
    if (out->numel == 0)
        return; /* nothing to visit; the strides of an empty shape may not fit in int64 */
    int n = out->ndim;
    int64_t st[3][TG_MAX_DIMS];
    operand_strides(st[0], out, n, out->shape);
    operand_strides(st[1], a, n, out->shape);
    operand_strides(st[2], b, n, out->shape);
    /* merge dimension d into the one after it when every operand allows it */
    int m = 0;
    for (int d = 0; d < n; d++) {
        if (out->shape[d] == 1)
            continue; /* size-1 dimensions change nothing */
        bool merge = m > 0;
        for (int k = 0; k < 3 && merge; k++)
            merge = it->stride[k][m - 1] == st[k][d] * out->shape[d];
        if (merge) {
            it->shape[m - 1] *= out->shape[d];
            for (int k = 0; k < 3; k++)
                it->stride[k][m - 1] = st[k][d];
        } else {
            it->shape[m] = out->shape[d];
            for (int k = 0; k < 3; k++)
                it->stride[k][m] = st[k][d];
            m++;
        }
    }
    it->ndim = m;
    it->numel = out->numel;
}

void tg__bcast_rows(const tg__bcast *it, tg__row_fn row, void *ud)
{
    if (it->numel == 0)
        return;
    int64_t off[3] = {0, 0, 0};
    if (it->ndim == 0) {
        const int64_t one[3] = {1, 1, 1};
        row(ud, 1, off, one);
        return;
    }
    int last = it->ndim - 1;
    const int64_t inc[3] = {it->stride[0][last], it->stride[1][last], it->stride[2][last]};
    int64_t idx[TG_MAX_DIMS] = {0};
    int64_t rows = it->numel / it->shape[last];
    for (int64_t r = 0; r < rows; r++) {
        row(ud, it->shape[last], off, inc);
        for (int d = last - 1; d >= 0; d--) { /* odometer over the outer dimensions */
            idx[d]++;
            for (int k = 0; k < 3; k++)
                off[k] += it->stride[k][d];
            if (idx[d] < it->shape[d])
                break;
            for (int k = 0; k < 3; k++)
                off[k] -= it->stride[k][d] * it->shape[d];
            idx[d] = 0;
        }
    }
}

tg_tensor *tg__sample_rand(tg_ctx *ctx, int ndim, const int64_t *shape, double lo, double hi,
                           bool requires_grad)
{
    tg_tensor *t = tg_rand(ctx, TG_F64, ndim, shape, lo, hi);
    if (t)
        t->requires_grad = requires_grad;
    return t;
}

const char *tg__size_pair(char *buf, size_t size, bool one, int64_t h, int64_t w)
{
    if (one)
        snprintf(buf, size, "%" PRId64, w);
    else
        snprintf(buf, size, "%" PRId64 " x %" PRId64, h, w);
    return buf;
}
