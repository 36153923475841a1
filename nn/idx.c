/*
 * idx.c: IDX files (plain or gzip), labelled image data sets built from
 * them, shuffling and mini-batches.
 *
 * An IDX file is 00 00 <type> <ndim>, ndim big-endian uint32 dimensions,
 * then the elements, big-endian, row-major. Reading is one pass over a byte
 * stream in two layers: the raw layer hands out the input in windows (the
 * whole buffer, or CHUNK-sized reads of a file), and the stream layer
 * copies from it (plain) or inflates it (gzip, zlib allocating through the
 * context's hook). The header is validated before any data is stored; the
 * data buffer then grows by doubling as bytes arrive, never beyond what the
 * header promised, so a load holds at most twice what the input really
 * yields, whatever its header claims. The data length is compared with the
 * header's at the end (short: truncated; longer: trailing bytes).
 *
 * Built only on the public API.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <stdalign.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "tapegrad.h"

#define CHUNK (64 * 1024)        /* bytes per read from a file */
#define FIRST_CAPACITY (64 * 1024) /* the data buffer's first size, at most */

/* The input being read: a buffer or a file, plain or gzip. */
typedef struct stream {
    tg_ctx *ctx;
    const char *fn;       /* the public call, for messages */
    const char *name;     /* the file (or buffer) name, for messages */
    FILE *file;           /* NULL: all of the input is in next/avail */
    uint8_t *chunk;       /* CHUNK bytes of file input */
    const uint8_t *next;  /* raw input not yet consumed */
    size_t avail;
    uint64_t consumed;    /* raw bytes consumed so far */
    bool gzip;
    bool z_live;          /* zs is initialised */
    bool member_ended;    /* the last gzip member has ended; more bytes start another */
    z_stream zs;
} stream;

const char *tg_idx_type_name(int type)
{
    switch (type) {
    case TG_IDX_U8: return "ubyte";
    case TG_IDX_I8: return "byte";
    case TG_IDX_I16: return "short";
    case TG_IDX_I32: return "int";
    case TG_IDX_F32: return "float";
    case TG_IDX_F64: return "double";
    default: return "?";
    }
}

/* Bytes per element of an IDX type, 0 for an unknown type. */
static size_t idx_elem_size(int type)
{
    switch (type) {
    case TG_IDX_U8: case TG_IDX_I8: return 1;
    case TG_IDX_I16: return 2;
    case TG_IDX_I32: case TG_IDX_F32: return 4;
    case TG_IDX_F64: return 8;
    default: return 0;
    }
}

/* ---------------------------------------------------------------- zlib's memory, through the hook */

/* zlib's free does not pass the size, so each block starts with it (padded
 * so that what zlib gets stays aligned for any type). */
typedef struct zhead { alignas(max_align_t) size_t size; } zhead;

static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    size_t bytes;
    if (__builtin_mul_overflow((size_t)items, (size_t)size, &bytes) ||
        __builtin_add_overflow(bytes, sizeof(zhead), &bytes))
        return Z_NULL;
    zhead *h = tg_malloc(opaque, bytes);
    if (!h)
        return Z_NULL;
    h->size = bytes;
    return h + 1;
}

static void z_free(voidpf opaque, voidpf p)
{
    zhead *h = (zhead *)p - 1;
    tg_free(opaque, h, h->size);
}

/* ---------------------------------------------------------------- the raw layer */

/* When the window is empty, refills it from the file; at the end of the
 * input it stays empty. */
static int raw_refill(stream *s)
{
    if (s->avail > 0 || !s->file)
        return TG_OK;
    size_t got = fread(s->chunk, 1, CHUNK, s->file);
    if (got < CHUNK && ferror(s->file))
        return TG_ERROR(s->ctx, TG_EIO, "%s: %s: read failed after %llu bytes: %s", s->fn,
                        s->name, (unsigned long long)s->consumed, strerror(errno));
    s->next = s->chunk;
    s->avail = got;
    return TG_OK;
}

static void raw_consume(stream *s, size_t n)
{
    s->next += n;
    s->avail -= n;
    s->consumed += n;
}

/* ---------------------------------------------------------------- the stream layer */

/* Reads up to want bytes of plain input; fewer only at its end. */
static int plain_read(stream *s, uint8_t *dst, size_t want, size_t *got)
{
    *got = 0;
    while (*got < want) {
        int rc = raw_refill(s);
        if (rc != TG_OK)
            return rc;
        if (s->avail == 0)
            break;
        size_t n = want - *got < s->avail ? want - *got : s->avail;
        memcpy(dst + *got, s->next, n);
        raw_consume(s, n);
        *got += n;
    }
    return TG_OK;
}

/* One inflate call on the current window (possibly empty: inflate may still
 * owe output); notes the end of a member. */
static int gzip_step(stream *s)
{
    if (s->member_ended) {
        inflateReset(&s->zs); /* bytes after a member must start another */
        s->member_ended = false;
    }
    uInt in = s->avail < UINT_MAX ? (uInt)s->avail : UINT_MAX;
    s->zs.next_in = (Bytef *)s->next;
    s->zs.avail_in = in;
    int zr = inflate(&s->zs, Z_NO_FLUSH);
    raw_consume(s, in - s->zs.avail_in);
    if (zr == Z_STREAM_END)
        s->member_ended = true;
    else if (zr == Z_MEM_ERROR)
        return TG_ERROR(s->ctx, TG_ENOMEM, "%s: %s: out of memory inflating", s->fn, s->name);
    else if (zr != Z_OK && zr != Z_BUF_ERROR)
        return TG_ERROR(s->ctx, TG_EFORMAT, "%s: %s: corrupt gzip data near compressed byte %llu (zlib: %s)",
                        s->fn, s->name, (unsigned long long)s->consumed,
                        s->zs.msg ? s->zs.msg : "error");
    return TG_OK;
}

/* Inflates up to want bytes; fewer only where the gzip stream ends cleanly. */
static int gzip_read(stream *s, uint8_t *dst, size_t want, size_t *got)
{
    *got = 0;
    while (*got < want) {
        int rc = raw_refill(s);
        if (rc != TG_OK || (s->avail == 0 && s->member_ended))
            return rc;
        size_t left = want - *got;
        uInt room = left < UINT_MAX ? (uInt)left : UINT_MAX;
        uint64_t before = s->consumed;
        s->zs.next_out = dst + *got;
        s->zs.avail_out = room;
        rc = gzip_step(s);
        *got += room - s->zs.avail_out;
        if (rc != TG_OK)
            return rc;
        bool stuck = s->zs.avail_out == room && s->consumed == before && !s->member_ended;
        if (stuck) /* no input left, nothing more to give, and the member is unfinished */
            return TG_ERROR(s->ctx, TG_EFORMAT,
                            "%s: %s: gzip stream truncated after %llu compressed bytes", s->fn,
                            s->name, (unsigned long long)s->consumed);
    }
    return TG_OK;
}

static int stream_read(stream *s, void *dst, size_t want, size_t *got)
{
    return s->gzip ? gzip_read(s, dst, want, got) : plain_read(s, dst, want, got);
}

/* Reads exactly n header bytes, or fails naming what was cut short. */
static int read_exact(stream *s, void *dst, size_t n, const char *what)
{
    size_t got;
    int rc = stream_read(s, dst, n, &got);
    if (rc == TG_OK && got < n)
        rc = TG_ERROR(s->ctx, TG_EFORMAT, "%s: %s: file ends inside the %s (%zu of %zu bytes)",
                      s->fn, s->name, what, got, n);
    return rc;
}

/* Looks at the first bytes and sets up inflate for gzip input. */
static int stream_open(stream *s)
{
    int rc = raw_refill(s);
    if (rc != TG_OK)
        return rc;
    s->gzip = s->avail >= 2 && s->next[0] == 0x1f && s->next[1] == 0x8b;
    if (!s->gzip)
        return TG_OK;
    s->zs.zalloc = z_alloc;
    s->zs.zfree = z_free;
    s->zs.opaque = s->ctx;
    int zr = inflateInit2(&s->zs, 16 + MAX_WBITS); /* gzip wrapper only */
    if (zr == Z_MEM_ERROR)
        return TG_ERROR(s->ctx, TG_ENOMEM, "%s: %s: out of memory starting inflate", s->fn, s->name);
    if (zr != Z_OK)
        return TG_ERROR(s->ctx, TG_EINTERNAL, "%s: zlib's inflateInit2 failed (%d)", s->fn, zr);
    s->z_live = true;
    return TG_OK;
}

static void stream_close(stream *s)
{
    if (s->z_live)
        inflateEnd(&s->zs);
    tg_free(s->ctx, s->chunk, CHUNK);
    if (s->file)
        fclose(s->file);
}

/* ---------------------------------------------------------------- header and data */

/* Writes "(60000, 28, 28)" into buf. */
static void dims_str(const tg_idx *x, char *buf, size_t size)
{
    size_t at = 0;
    for (int i = 0; i < x->ndim && at < size; i++)
        at += (size_t)snprintf(buf + at, size - at, "%s%lld", i ? ", " : "(", (long long)x->dims[i]);
    if (at < size)
        snprintf(buf + at, size - at, ")");
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads and checks the magic, the dims and the size they imply. */
static int read_header(stream *s, tg_idx *out)
{
    uint8_t m[4], d[4 * TG_IDX_MAX_DIMS];
    int rc = read_exact(s, m, 4, "magic number");
    if (rc != TG_OK)
        return rc;
    if (m[0] != 0 || m[1] != 0)
        return TG_ERROR(s->ctx, TG_EFORMAT,
                        "%s: %s: bad magic %02x %02x %02x %02x (an IDX file starts 00 00 <type> <ndim>)",
                        s->fn, s->name, m[0], m[1], m[2], m[3]);
    out->elem_size = idx_elem_size(m[2]);
    if (out->elem_size == 0)
        return TG_ERROR(s->ctx, TG_EFORMAT, "%s: %s: unknown element type 0x%02x", s->fn, s->name, m[2]);
    if (m[3] < 1 || m[3] > TG_IDX_MAX_DIMS)
        return TG_ERROR(s->ctx, TG_EFORMAT, "%s: %s: %d dimensions, outside 1..%d", s->fn, s->name,
                        m[3], TG_IDX_MAX_DIMS);
    out->type = (tg_idx_type)m[2];
    out->ndim = m[3];
    rc = read_exact(s, d, 4 * (size_t)out->ndim, "dimensions");
    if (rc != TG_OK)
        return rc;
    size_t bytes = out->elem_size;
    bool overflow = false;
    for (int i = 0; i < out->ndim; i++) {
        out->dims[i] = be32(d + 4 * i);
        if (out->dims[i] == 0)
            return TG_ERROR(s->ctx, TG_EFORMAT, "%s: %s: dimension %d of %d is 0", s->fn, s->name,
                            i, out->ndim);
        overflow |= __builtin_mul_overflow(bytes, (size_t)out->dims[i], &bytes);
    }
    char ds[160];
    dims_str(out, ds, sizeof ds);
    if (overflow || bytes > (size_t)PTRDIFF_MAX)
        return TG_ERROR(s->ctx, TG_EFORMAT, "%s: %s: dims %s of %s overflow the addressable size",
                        s->fn, s->name, ds, tg_idx_type_name(out->type));
    out->bytes = bytes;
    out->count = (int64_t)(bytes / out->elem_size);
    return TG_OK;
}

/* Fails with the numbers when the data is shorter or longer than promised. */
static int data_length_error(stream *s, const tg_idx *out, size_t have, bool trailing)
{
    char ds[160];
    dims_str(out, ds, sizeof ds);
    if (trailing)
        return TG_ERROR(s->ctx, TG_EFORMAT,
                        "%s: %s: trailing bytes after the %zu bytes of data that dims %s of %s need",
                        s->fn, s->name, out->bytes, ds, tg_idx_type_name(out->type));
    return TG_ERROR(s->ctx, TG_EFORMAT, "%s: %s: truncated: %zu bytes of data, dims %s of %s need %zu",
                    s->fn, s->name, have, ds, tg_idx_type_name(out->type), out->bytes);
}

/* Reads the out->bytes of data into a buffer that grows as they arrive. */
static int read_data(stream *s, tg_idx *out)
{
    size_t cap = out->bytes < FIRST_CAPACITY ? out->bytes : FIRST_CAPACITY, have = 0, got;
    uint8_t *buf = tg_malloc(s->ctx, cap);
    int rc = buf ? TG_OK : TG_ENOMEM;
    while (rc == TG_OK) {
        rc = stream_read(s, buf + have, cap - have, &got);
        have += got;
        if (rc != TG_OK || have < cap || cap == out->bytes)
            break;
        size_t grown = cap > out->bytes / 2 ? out->bytes : 2 * cap;
        uint8_t *p = tg_realloc(s->ctx, buf, cap, grown);
        if (!p)
            rc = TG_ENOMEM;
        else
            buf = p, cap = grown;
    }
    uint8_t extra;
    if (rc == TG_OK && have < out->bytes)
        rc = data_length_error(s, out, have, false);
    if (rc == TG_OK && (rc = stream_read(s, &extra, 1, &got)) == TG_OK && got > 0)
        rc = data_length_error(s, out, have, true);
    if (rc != TG_OK) {
        tg_free(s->ctx, buf, cap);
        return rc;
    }
    out->data = buf;
    return TG_OK;
}

/* IDX stores elements big-endian; turn them into host order. */
static void to_host_order(tg_idx *x)
{
    const uint16_t probe = 1;
    if (x->elem_size == 1 || *(const uint8_t *)&probe == 0)
        return; /* bytes, or a big-endian host */
    uint8_t *p = x->data;
    for (int64_t i = 0; i < x->count; i++, p += x->elem_size)
        for (size_t a = 0, b = x->elem_size - 1; a < b; a++, b--) {
            uint8_t t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

/* Reads a whole IDX stream, then releases the stream whatever happened. */
static int idx_parse(stream *s, tg_idx *out)
{
    int rc = stream_open(s);
    if (rc == TG_OK)
        rc = read_header(s, out);
    if (rc == TG_OK)
        rc = read_data(s, out);
    stream_close(s);
    if (rc != TG_OK) {
        memset(out, 0, sizeof *out);
        return tg_errcode(s->ctx) != TG_OK ? tg_errcode(s->ctx) : rc;
    }
    to_host_order(out);
    return TG_OK;
}

tg_status tg_idx_read(tg_ctx *ctx, const char *path, tg_idx *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (tg_errcode(ctx) != TG_OK)
        return tg_errcode(ctx);
    if (!path || !out)
        return TG_ERROR(ctx, TG_EINVAL, "tg_idx_read: path or out is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return TG_ERROR(ctx, e == ENOENT ? TG_ENOTFOUND : TG_EIO, "tg_idx_read: cannot open %s: %s",
                        path, strerror(e));
    }
    stream s = {.ctx = ctx, .fn = "tg_idx_read", .name = path, .file = f};
    s.chunk = tg_malloc(ctx, CHUNK);
    if (!s.chunk) {
        fclose(f);
        return TG_ENOMEM;
    }
    return idx_parse(&s, out);
}

tg_status tg_idx_read_mem(tg_ctx *ctx, const void *buf, size_t size, const char *name, tg_idx *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (tg_errcode(ctx) != TG_OK)
        return tg_errcode(ctx);
    if ((!buf && size > 0) || !out)
        return TG_ERROR(ctx, TG_EINVAL, "tg_idx_read_mem: buf or out is NULL");
    stream s = {.ctx = ctx, .fn = "tg_idx_read_mem", .name = name ? name : "<memory>",
                .next = buf, .avail = size};
    return idx_parse(&s, out);
}

void tg_idx_free(tg_ctx *ctx, tg_idx *idx)
{
    if (!idx)
        return;
    tg_free(ctx, idx->data, idx->bytes);
    memset(idx, 0, sizeof *idx);
}

/* ---------------------------------------------------------------- data sets */

/* Checks one file's element type and rank for its role in a data set. */
static int check_role(tg_ctx *ctx, const char *fn, const char *name, const tg_idx *x, int ndim,
                      const char *role)
{
    if (x->type != TG_IDX_U8 || x->ndim != ndim)
        return TG_ERROR(ctx, TG_EFORMAT,
                        "%s: %s: %s must be ubyte with %d dimension%s, the file holds %s with %d",
                        fn, name, role, ndim, ndim == 1 ? "" : "s", tg_idx_type_name(x->type), x->ndim);
    return TG_OK;
}

/* Checks the two files against each other and the number of classes. */
static int check_pair(tg_ctx *ctx, const char *fn, const char *img_name, const tg_idx *img,
                      const char *lab_name, const tg_idx *lab, int classes)
{
    int rc = check_role(ctx, fn, img_name, img, 3, "images (N, H, W)");
    if (rc == TG_OK)
        rc = check_role(ctx, fn, lab_name, lab, 1, "labels (N)");
    if (rc != TG_OK)
        return rc;
    if (img->dims[0] != lab->dims[0])
        return TG_ERROR(ctx, TG_EFORMAT, "%s: %s holds %lld images but %s holds %lld labels", fn,
                        img_name, (long long)img->dims[0], lab_name, (long long)lab->dims[0]);
    const uint8_t *l = lab->data;
    for (int64_t i = 0; i < lab->count; i++)
        if (l[i] >= classes)
            return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: label %d of example %lld is not below %d classes",
                            fn, lab_name, l[i], (long long)i, classes);
    return TG_OK;
}

/* Makes a data set that takes the data of img and lab (zeroing them). */
static tg_dataset *dataset_take(tg_ctx *ctx, tg_idx *img, tg_idx *lab, int classes)
{
    int64_t n = img->dims[0];
    size_t order_bytes;
    if (__builtin_mul_overflow((size_t)n, sizeof(int64_t), &order_bytes)) {
        TG_ERROR(ctx, TG_ENOMEM, "tg_dataset: an order of %lld examples overflows memory", (long long)n);
        return NULL;
    }
    tg_dataset *ds = tg_malloc(ctx, sizeof *ds);
    int64_t *order = ds ? tg_malloc(ctx, order_bytes) : NULL;
    if (!order) {
        tg_free(ctx, ds, sizeof *ds);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++)
        order[i] = i;
    *ds = (tg_dataset){.n = n, .height = img->dims[1], .width = img->dims[2], .classes = classes,
                       .images = img->data, .labels = lab->data, .order = order};
    memset(img, 0, sizeof *img);
    memset(lab, 0, sizeof *lab);
    return ds;
}

/* Validates two read files and makes the data set; frees what it does not take. */
static tg_dataset *dataset_build(tg_ctx *ctx, const char *fn, tg_idx *img, const char *img_name,
                                 tg_idx *lab, const char *lab_name, int classes)
{
    tg_dataset *ds = NULL;
    if (tg_errcode(ctx) == TG_OK &&
        check_pair(ctx, fn, img_name, img, lab_name, lab, classes) == TG_OK)
        ds = dataset_take(ctx, img, lab, classes);
    tg_idx_free(ctx, img);
    tg_idx_free(ctx, lab);
    return ds;
}

/* Checks the classes argument; 0 becomes 10. */
static int resolve_classes(tg_ctx *ctx, const char *fn, int *classes)
{
    if (*classes == 0)
        *classes = 10;
    if (*classes < 1 || *classes > 256)
        return TG_ERROR(ctx, TG_EINVAL, "%s: %d classes, outside 1..256 (byte labels)", fn, *classes);
    return TG_OK;
}

tg_dataset *tg_dataset_from_idx(tg_ctx *ctx, const char *images_path, const char *labels_path,
                                int classes)
{
    const char *fn = "tg_dataset_from_idx";
    if (tg_errcode(ctx) != TG_OK || resolve_classes(ctx, fn, &classes) != TG_OK)
        return NULL;
    if (!images_path || !labels_path) {
        TG_ERROR(ctx, TG_EINVAL, "%s: a path is NULL", fn);
        return NULL;
    }
    tg_idx img = {0}, lab = {0};
    if (tg_idx_read(ctx, images_path, &img) == TG_OK)
        tg_idx_read(ctx, labels_path, &lab);
    return dataset_build(ctx, fn, &img, images_path, &lab, labels_path, classes);
}

tg_dataset *tg_dataset_from_mem(tg_ctx *ctx, const void *images, size_t images_size,
                                const void *labels, size_t labels_size, int classes)
{
    const char *fn = "tg_dataset_from_mem";
    if (tg_errcode(ctx) != TG_OK || resolve_classes(ctx, fn, &classes) != TG_OK)
        return NULL;
    tg_idx img = {0}, lab = {0};
    if (tg_idx_read_mem(ctx, images, images_size, "<images>", &img) == TG_OK)
        tg_idx_read_mem(ctx, labels, labels_size, "<labels>", &lab);
    return dataset_build(ctx, fn, &img, "<images>", &lab, "<labels>", classes);
}

/* Finds dir/base.gz or dir/base; TG_ENOTFOUND says what to install. */
static int find_file(tg_ctx *ctx, const char *dir, const char *base, char *path, size_t size)
{
    const char *fn = "tg_fashion_mnist";
    for (int gz = 1; gz >= 0; gz--) {
        int n = snprintf(path, size, "%s/%s%s", dir, base, gz ? ".gz" : "");
        if (n < 0 || (size_t)n >= size)
            return TG_ERROR(ctx, TG_EINVAL, "%s: directory name too long (%zu bytes)", fn, strlen(dir));
        if (access(path, F_OK) == 0)
            return TG_OK;
    }
    return TG_ERROR(ctx, TG_ENOTFOUND,
                    "%s: neither %s/%s.gz nor %s/%s exists; install the Debian package "
                    "dataset-fashion-mnist (apt install dataset-fashion-mnist) or pass the "
                    "directory that holds the files",
                    fn, dir, base, dir, base);
}

tg_dataset *tg_fashion_mnist(tg_ctx *ctx, const char *dir, const char *split)
{
    if (tg_errcode(ctx) != TG_OK)
        return NULL;
    const char *prefix = !split ? NULL
                         : strcmp(split, "train") == 0 ? "train"
                         : strcmp(split, "test") == 0  ? "t10k"
                                                       : NULL;
    if (!prefix) {
        TG_ERROR(ctx, TG_EINVAL, "tg_fashion_mnist: split '%s' is neither \"train\" nor \"test\"",
                 split ? split : "(null)");
        return NULL;
    }
    dir = dir ? dir : TG_FASHION_MNIST_DIR;
    char base[64], img[4096], lab[4096];
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
    if (find_file(ctx, dir, base, img, sizeof img) != TG_OK)
        return NULL;
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
    if (find_file(ctx, dir, base, lab, sizeof lab) != TG_OK)
        return NULL;
    return tg_dataset_from_idx(ctx, img, lab, 10);
}

void tg_dataset_free(tg_ctx *ctx, tg_dataset *ds)
{
    if (!ds)
        return;
    size_t n = (size_t)ds->n;
    tg_free(ctx, ds->images, n * (size_t)ds->height * (size_t)ds->width);
    tg_free(ctx, ds->labels, n);
    tg_free(ctx, ds->order, n * sizeof *ds->order);
    tg_free(ctx, ds, sizeof *ds);
}

/* ---------------------------------------------------------------- shuffling, batches */

tg_status tg_shuffle(tg_ctx *ctx, int64_t *values, int64_t n)
{
    if (tg_errcode(ctx) != TG_OK)
        return tg_errcode(ctx);
    /* Up to 2^53, i + 1 is exact as a double and u * (i + 1) < i + 1. */
    if (n < 0 || n > (INT64_C(1) << 53) || (!values && n > 0))
        return TG_ERROR(ctx, TG_EINVAL, "tg_shuffle: %lld values at %p", (long long)n, (void *)values);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(tg_rand_uniform(ctx) * (double)(i + 1));
        int64_t t = values[i];
        values[i] = values[j];
        values[j] = t;
    }
    return TG_OK;
}

tg_status tg_dataset_shuffle(tg_ctx *ctx, tg_dataset *ds)
{
    if (tg_errcode(ctx) != TG_OK)
        return tg_errcode(ctx);
    if (!ds)
        return TG_ERROR(ctx, TG_EINVAL, "tg_dataset_shuffle: ds is NULL");
    for (int64_t i = 0; i < ds->n; i++)
        ds->order[i] = i;
    return tg_shuffle(ctx, ds->order, ds->n);
}

/* Checks the arguments of tg_dataset_batch and the order entries it will use. */
static int batch_check(tg_ctx *ctx, const tg_dataset *ds, int64_t start, int64_t batch,
                       tg_dtype dtype, tg_layout layout, tg_tensor **x, tg_tensor **y)
{
    const char *fn = "tg_dataset_batch";
    if (!ds || !x || !y)
        return TG_ERROR(ctx, TG_EINVAL, "%s: ds, x or y is NULL", fn);
    if (start < 0 || start >= ds->n || batch < 1)
        return TG_ERROR(ctx, TG_EINVAL, "%s: start %lld, batch %lld for %lld examples", fn,
                        (long long)start, (long long)batch, (long long)ds->n);
    if (!tg_dtype_is_float(dtype))
        return TG_ERROR(ctx, TG_EDTYPE, "%s: dtype %s is not float32 or float64", fn, tg_dtype_name(dtype));
    if (layout != TG_LAYOUT_IMAGE && layout != TG_LAYOUT_FLAT)
        return TG_ERROR(ctx, TG_EINVAL, "%s: unknown layout %d", fn, (int)layout);
    int64_t end = batch < ds->n - start ? start + batch : ds->n;
    for (int64_t i = start; i < end; i++)
        if (ds->order[i] < 0 || ds->order[i] >= ds->n)
            return TG_ERROR(ctx, TG_EINVAL, "%s: order[%lld] = %lld, outside [0, %lld)", fn,
                            (long long)i, (long long)ds->order[i], (long long)ds->n);
    return TG_OK;
}

/* Row i of the batch gets example ds->order[start + i], scaled to [0, 1]. */
#define SCALE_ROWS(T)                                                          \
    do {                                                                       \
        T *dst_ = xt->data;                                                    \
        for (int64_t i_ = 0; i_ < b; i_++) {                                   \
            const uint8_t *src_ = ds->images + ds->order[start + i_] * pixels; \
            for (int64_t p_ = 0; p_ < pixels; p_++)                            \
                dst_[i_ * pixels + p_] = (T)src_[p_] / (T)255;                 \
        }                                                                      \
    } while (0)

tg_status tg_dataset_batch(tg_ctx *ctx, const tg_dataset *ds, int64_t start, int64_t batch,
                           tg_dtype dtype, tg_layout layout, tg_tensor **x, tg_tensor **y)
{
    if (x)
        *x = NULL;
    if (y)
        *y = NULL;
    if (tg_errcode(ctx) != TG_OK)
        return tg_errcode(ctx);
    if (batch_check(ctx, ds, start, batch, dtype, layout, x, y) != TG_OK)
        return tg_errcode(ctx);
    int64_t b = batch < ds->n - start ? batch : ds->n - start, pixels = ds->height * ds->width;
    tg_tensor *xt = layout == TG_LAYOUT_IMAGE
                        ? tg_empty(ctx, dtype, TG_SHAPE(b, 1, ds->height, ds->width))
                        : tg_empty(ctx, dtype, TG_SHAPE(b, pixels));
    tg_tensor *yt = tg_empty(ctx, TG_I64, TG_SHAPE(b));
    if (!xt || !yt)
        return tg_errcode(ctx);
    if (dtype == TG_F32)
        SCALE_ROWS(float);
    else
        SCALE_ROWS(double);
    int64_t *labels = yt->data;
    for (int64_t i = 0; i < b; i++)
        labels[i] = ds->labels[ds->order[start + i]];
    tg_mark_dirty(xt);
    tg_mark_dirty(yt);
    *x = xt;
    *y = yt;
    return TG_OK;
}
