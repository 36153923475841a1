/*
 * safetensors.c: checkpoints in the safetensors format (see
 * tapegrad/safetensors.h for the layout and the rules checked).
 *
 * Opening a file reads and validates only the header; it builds a table of
 * entries in header order, an index of them sorted by name for lookups,
 * and copies every name and metadata string into one block, so the JSON
 * tree is freed before tg_st_open returns. Data is read (fread, or memcpy
 * for a buffer) straight into tensors when asked.
 *
 * Invariants after a successful open: every entry's range lies inside the
 * data section, the ranges sorted tile it exactly, and end - begin equals
 * numel * dtype size without overflow; so reads never go out of bounds.
 *
 * Saving builds the header with jansson, pads it with spaces to a multiple
 * of 8 bytes, writes header and data to "<path>.<pid>.<n>.tmp" (created
 * with O_EXCL), fsyncs it and renames it over path.
 *
 * The data are stored little-endian and copied as they are, so only
 * little-endian hosts are supported; host_order_ok() refuses the others.
 * Every allocation goes through tg_malloc, apart from jansson's own.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tapegrad.h"

struct tg_st {
    tg_ctx *ctx;
    FILE *fp;                   /* the open file, or NULL for a buffer */
    const unsigned char *buf;   /* the caller's bytes, or NULL for a file */
    const char *path;           /* for messages: inside strings */
    uint64_t data_start;        /* 8 + header length */
    uint64_t data_size;         /* bytes after the header */
    tg_st_entry *entries;       /* n, header order */
    const tg_st_entry **by_name; /* n, sorted by name */
    size_t n;
    tg_st_kv *meta;             /* n_meta, header order */
    size_t n_meta;
    char *strings;              /* path, names, metadata keys and values */
    size_t strings_size;
};

/* What is being opened, for messages. */
typedef struct st_src {
    const char *fn;   /* the public function */
    const char *path; /* the file, or "<buffer>" */
} st_src;

#define META_KEY "__metadata__"

/* ---------------------------------------------------------------- small helpers */

static bool host_order_ok(tg_ctx *ctx, const char *fn)
{
    const uint16_t one = 1;
    unsigned char low;
    memcpy(&low, &one, 1);
    if (low == 1)
        return true;
    TG_ERROR(ctx, TG_ENOTSUP, "%s: safetensors files need a little-endian host", fn);
    return false;
}

/* Memory from tg_malloc that is freed with the same size; 0 bytes: NULL. */
static void *st_alloc(tg_ctx *ctx, size_t bytes) { return bytes ? tg_malloc(ctx, bytes) : NULL; }
static void st_free(tg_ctx *ctx, void *p, size_t bytes)
{
    if (bytes)
        tg_free(ctx, p, bytes);
}

static uint64_t load_le64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

static void store_le64(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real";
    case JSON_NULL: return "null";
    default: return "boolean";
    }
}

static const char *st_dtype_str(tg_dtype d)
{
    return d == TG_F32 ? "F32" : d == TG_F64 ? "F64" : "I64";
}

static void shape_str(int ndim, const int64_t *shape, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i ? ", %lld" : "%lld",
                                 (long long)shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, ")");
}

/* Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF),
 * as JSON and jansson require. */
static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p++;
        int more = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        if (more < 0)
            return false;
        uint32_t cp = more ? c & (0x3Fu >> more) : c;
        for (int i = 0; i < more; i++, p++) {
            if ((*p & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (*p & 0x3Fu);
        }
        static const uint32_t least[] = {0, 0x80, 0x800, 0x10000};
        if (cp < least[more] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
    }
    return true;
}

/* ---------------------------------------------------------------- the handle */

static tg_st *st_new(tg_ctx *ctx, const char *path)
{
    tg_st *f = tg_malloc(ctx, sizeof *f);
    if (!f)
        return NULL;
    memset(f, 0, sizeof *f);
    f->ctx = ctx;
    f->path = path;
    return f;
}

void tg_st_close(tg_ctx *ctx, tg_st *f)
{
    if (!f || !ctx)
        return;
    if (f->fp)
        fclose(f->fp);
    st_free(ctx, f->entries, f->n * sizeof *f->entries);
    st_free(ctx, f->by_name, f->n * sizeof *f->by_name);
    st_free(ctx, f->meta, f->n_meta * sizeof *f->meta);
    st_free(ctx, f->strings, f->strings_size);
    tg_free(ctx, f, sizeof *f);
}

/* ---------------------------------------------------------------- header validation */

static int parse_error(tg_ctx *ctx, const st_src *src, const char *text, size_t len,
                       const json_error_t *err)
{
    /* Show up to 40 bytes before the error, control bytes masked, so that
     * e.g. the duplicated key can be seen. */
    char near[41];
    size_t pos = err->position > 0 ? (size_t)err->position : 0;
    size_t end = pos < len ? pos : len;
    size_t start = end > 40 ? end - 40 : 0, k = 0;
    for (size_t i = start; i < end; i++)
        near[k++] = (unsigned char)text[i] < 0x20 ? '?' : text[i];
    near[k] = '\0';
    return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: header is not valid JSON: %s at byte %zu, after '%s'",
                    src->fn, src->path, err->text, pos, near);
}

/* The tg_dtype of a safetensors dtype string, or TG_EDTYPE / TG_EFORMAT. */
static int parse_dtype(tg_ctx *ctx, const st_src *src, const char *name, const json_t *v,
                       tg_dtype *out)
{
    static const char *const others[] = {"BOOL", "U8", "I8", "U16", "I16", "F16", "BF16", "U32",
                                         "I32", "U64", "F8_E4M3", "F8_E5M2", "F4", "F6_E2M3",
                                         "F6_E3M2", "F8_E8M0", "C64"};
    if (!json_is_string(v))
        return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: entry '%s': dtype is a JSON %s, not a string",
                        src->fn, src->path, name, json_kind(v));
    const char *s = json_string_value(v);
    for (tg_dtype d = TG_F32; d <= TG_I64; d++)
        if (strcmp(s, st_dtype_str(d)) == 0) {
            *out = d;
            return TG_OK;
        }
    for (size_t i = 0; i < sizeof others / sizeof *others; i++)
        if (strcmp(s, others[i]) == 0)
            return TG_ERROR(ctx, TG_EDTYPE,
                            "%s: %s: entry '%s' has dtype %s; only F32, F64 and I64 are supported",
                            src->fn, src->path, name, s);
    return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: entry '%s' has an unknown dtype '%s'", src->fn,
                    src->path, name, s);
}

/* shape: an array of at most TG_MAX_DIMS non-negative integers. */
static int parse_shape(tg_ctx *ctx, const st_src *src, const char *name, const json_t *v,
                       tg_st_entry *e)
{
    if (!json_is_array(v))
        return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: entry '%s': shape is a JSON %s, not an array",
                        src->fn, src->path, name, json_kind(v));
    size_t nd = json_array_size(v);
    if (nd > TG_MAX_DIMS)
        return TG_ERROR(ctx, TG_EFORMAT,
                        "%s: %s: entry '%s': shape has %zu dimensions, at most %d are supported",
                        src->fn, src->path, name, nd, TG_MAX_DIMS);
    e->ndim = (int)nd;
    e->numel = 1;
    for (size_t i = 0; i < TG_MAX_DIMS; i++)
        e->shape[i] = 1;
    for (size_t i = 0; i < nd; i++) {
        const json_t *d = json_array_get(v, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return TG_ERROR(ctx, TG_EFORMAT,
                            "%s: %s: entry '%s': shape[%zu] is not a non-negative integer",
                            src->fn, src->path, name, i);
        e->shape[i] = (int64_t)json_integer_value(d);
        if (__builtin_mul_overflow(e->numel, e->shape[i], &e->numel))
            return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: entry '%s': the element count overflows",
                            src->fn, src->path, name);
    }
    return TG_OK;
}

/* data_offsets: [begin, end] with begin <= end <= the data size. */
static int parse_offsets(tg_ctx *ctx, const st_src *src, const tg_st *f, const char *name,
                         const json_t *v, tg_st_entry *e)
{
    const json_t *b = json_array_get(v, 0), *en = json_array_get(v, 1);
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(b) ||
        !json_is_integer(en) || json_integer_value(b) < 0 || json_integer_value(en) < 0)
        return TG_ERROR(ctx, TG_EFORMAT,
                        "%s: %s: entry '%s': data_offsets is not two non-negative integers",
                        src->fn, src->path, name);
    e->begin = (uint64_t)json_integer_value(b);
    e->end = (uint64_t)json_integer_value(en);
    if (e->begin > e->end || e->end > f->data_size)
        return TG_ERROR(ctx, TG_EFORMAT,
                        "%s: %s: entry '%s': data_offsets [%llu, %llu] do not fit the %llu data "
                        "bytes", src->fn, src->path, name, (unsigned long long)e->begin,
                        (unsigned long long)e->end, (unsigned long long)f->data_size);
    return TG_OK;
}

/* One entry: exactly the fields dtype, shape and data_offsets, consistent. */
static int parse_entry(tg_ctx *ctx, const st_src *src, const tg_st *f, const char *name,
                       const json_t *v, tg_st_entry *e)
{
    if (!json_is_object(v))
        return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: entry '%s' is a JSON %s, not an object",
                        src->fn, src->path, name, json_kind(v));
    const char *field;
    const json_t *fv;
    json_object_foreach((json_t *)v, field, fv)
        if (strcmp(field, "dtype") && strcmp(field, "shape") && strcmp(field, "data_offsets"))
            return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: entry '%s' has an unknown field '%s'",
                            src->fn, src->path, name, field);
    static const char *const fields[] = {"dtype", "shape", "data_offsets"};
    for (int i = 0; i < 3; i++)
        if (!json_object_get(v, fields[i]))
            return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: entry '%s' has no %s", src->fn,
                            src->path, name, fields[i]);
    if (parse_dtype(ctx, src, name, json_object_get(v, "dtype"), &e->dtype) ||
        parse_shape(ctx, src, name, json_object_get(v, "shape"), e) ||
        parse_offsets(ctx, src, f, name, json_object_get(v, "data_offsets"), e))
        return tg_errcode(ctx);
    uint64_t bytes;
    if (__builtin_mul_overflow((uint64_t)e->numel, (uint64_t)tg_dtype_size(e->dtype), &bytes) ||
        bytes != e->end - e->begin)
        return TG_ERROR(ctx, TG_EFORMAT,
                        "%s: %s: entry '%s': %lld elements of %s do not fill its %llu bytes "
                        "[%llu, %llu]", src->fn, src->path, name, (long long)e->numel,
                        st_dtype_str(e->dtype), (unsigned long long)(e->end - e->begin),
                        (unsigned long long)e->begin, (unsigned long long)e->end);
    return TG_OK;
}

/* __metadata__: an object of strings. */
static int check_metadata(tg_ctx *ctx, const st_src *src, const json_t *m)
{
    if (!json_is_object(m))
        return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: %s is a JSON %s, not an object", src->fn,
                        src->path, META_KEY, json_kind(m));
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)m, k, v)
        if (!json_is_string(v))
            return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: %s entry '%s' is a JSON %s, not a string",
                            src->fn, src->path, META_KEY, k, json_kind(v));
    return TG_OK;
}

static int cmp_by_offset(const void *a, const void *b)
{
    const tg_st_entry *x = *(const tg_st_entry *const *)a, *y = *(const tg_st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp((*(const tg_st_entry *const *)a)->name, (*(const tg_st_entry *const *)b)->name);
}

/* The byte ranges, sorted, must tile [0, data_size): no gap, no overlap.
 * Leaves f->by_name sorted by name for tg_st_find. */
static int check_tiling(tg_ctx *ctx, const st_src *src, tg_st *f)
{
    for (size_t i = 0; i < f->n; i++)
        f->by_name[i] = &f->entries[i];
    if (f->n)
        qsort(f->by_name, f->n, sizeof *f->by_name, cmp_by_offset);
    uint64_t at = 0;
    for (size_t i = 0; i < f->n; i++) {
        const tg_st_entry *e = f->by_name[i];
        if (e->begin != at)
            return TG_ERROR(ctx, TG_EFORMAT,
                            "%s: %s: entry '%s' starts at data byte %llu, but the entries before "
                            "it end at %llu (%s)", src->fn, src->path, e->name,
                            (unsigned long long)e->begin, (unsigned long long)at,
                            e->begin > at ? "a gap" : "an overlap");
        at = e->end;
    }
    if (at != f->data_size)
        return TG_ERROR(ctx, TG_EFORMAT,
                        "%s: %s: the entries cover %llu data bytes, but the file has %llu after "
                        "the header", src->fn, src->path, (unsigned long long)at,
                        (unsigned long long)f->data_size);
    if (f->n)
        qsort(f->by_name, f->n, sizeof *f->by_name, cmp_by_name);
    return TG_OK;
}

/* Copies s into the string block at *at; returns the copy. */
static const char *keep_string(tg_st *f, size_t *at, const char *s)
{
    size_t len = strlen(s) + 1;
    char *copy = f->strings + *at;
    memcpy(copy, s, len);
    *at += len;
    return copy;
}

/* Sizes the tables and string block for root and allocates them. */
static int st_alloc_tables(tg_ctx *ctx, tg_st *f, const json_t *root, const json_t *meta)
{
    f->n = json_object_size(root) - (meta != NULL);
    f->n_meta = meta ? json_object_size(meta) : 0;
    f->strings_size = strlen(f->path) + 1;
    const char *k;
    const json_t *v;
    /* jansson's iteration macro; its header is not given to cppcheck */
    // cppcheck-suppress unknownMacro
    json_object_foreach((json_t *)root, k, v)
        f->strings_size += strlen(k) + 1;
    if (meta)
        json_object_foreach((json_t *)meta, k, v)
            f->strings_size += strlen(k) + strlen(json_string_value(v)) + 2;
    f->strings = st_alloc(ctx, f->strings_size);
    f->entries = st_alloc(ctx, f->n * sizeof *f->entries);
    f->by_name = st_alloc(ctx, f->n * sizeof *f->by_name);
    f->meta = st_alloc(ctx, f->n_meta * sizeof *f->meta);
    return tg_errcode(ctx);
}

/* Validates the parsed header and fills f's tables. */
static int st_fill(tg_ctx *ctx, const st_src *src, tg_st *f, const json_t *root)
{
    const json_t *meta = json_object_get(root, META_KEY);
    if (meta && check_metadata(ctx, src, meta))
        return tg_errcode(ctx);
    if (st_alloc_tables(ctx, f, root, meta))
        return tg_errcode(ctx);
    size_t at = 0, i = 0;
    f->path = keep_string(f, &at, f->path);
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)root, k, v) {
        if (strcmp(k, META_KEY) == 0)
            continue;
        tg_st_entry *e = &f->entries[i++];
        if (parse_entry(ctx, src, f, k, v, e))
            return tg_errcode(ctx);
        e->name = keep_string(f, &at, k);
    }
    i = 0;
    if (meta)
        json_object_foreach((json_t *)meta, k, v) {
            f->meta[i].key = keep_string(f, &at, k);
            f->meta[i++].value = keep_string(f, &at, json_string_value(v));
        }
    return check_tiling(ctx, src, f);
}

static int st_parse(tg_ctx *ctx, const st_src *src, tg_st *f, const char *text, size_t len)
{
    json_error_t err;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return parse_error(ctx, src, text, len, &err);
    if (!json_is_object(root))
        TG_ERROR(ctx, TG_EFORMAT, "%s: %s: header is a JSON %s, not an object", src->fn,
                 src->path, json_kind(root));
    else
        st_fill(ctx, src, f, root);
    json_decref(root);
    return tg_errcode(ctx);
}

/* Checks the header length n against the file size; sets the data range. */
static int st_frame(tg_ctx *ctx, const st_src *src, tg_st *f, uint64_t size, uint64_t n)
{
    if (n > size - 8)
        return TG_ERROR(ctx, TG_EFORMAT,
                        "%s: %s: header length %llu exceeds the %llu bytes after it", src->fn,
                        src->path, (unsigned long long)n, (unsigned long long)(size - 8));
    if (n > TG_ST_MAX_HEADER)
        return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: header length %llu exceeds the limit of %u",
                        src->fn, src->path, (unsigned long long)n, TG_ST_MAX_HEADER);
    if (n < 2)
        return TG_ERROR(ctx, TG_EFORMAT, "%s: %s: a header of %llu bytes holds no JSON object",
                        src->fn, src->path, (unsigned long long)n);
    f->data_start = 8 + n;
    f->data_size = size - 8 - n;
    return TG_OK;
}

static int too_short(tg_ctx *ctx, const st_src *src, uint64_t size)
{
    return TG_ERROR(ctx, TG_EFORMAT,
                    "%s: %s: %llu bytes, too short for the 8-byte header length", src->fn,
                    src->path, (unsigned long long)size);
}

/* ---------------------------------------------------------------- opening */

tg_st *tg_st_open_buffer(tg_ctx *ctx, const void *data, size_t size)
{
    const st_src src = {"st_open_buffer", "<buffer>"};
    if (!ctx || tg_errcode(ctx) || !host_order_ok(ctx, src.fn))
        return NULL;
    if (!data && size) {
        TG_ERROR(ctx, TG_EINVAL, "st_open_buffer: data is NULL");
        return NULL;
    }
    if (size < 8) {
        too_short(ctx, &src, size);
        return NULL;
    }
    tg_st *f = st_new(ctx, src.path);
    if (!f)
        return NULL;
    f->buf = data;
    uint64_t n = load_le64(f->buf);
    if (st_frame(ctx, &src, f, size, n) ||
        st_parse(ctx, &src, f, (const char *)f->buf + 8, (size_t)n)) {
        tg_st_close(ctx, f);
        return NULL;
    }
    return f;
}

/* Opens path for reading and finds its size; NULL with an error. */
static FILE *open_regular(tg_ctx *ctx, const st_src *src, uint64_t *size)
{
    FILE *fp = fopen(src->path, "rb");
    if (!fp) {
        int e = errno;
        TG_ERROR(ctx, e == ENOENT ? TG_ENOTFOUND : TG_EIO, "%s: %s: cannot open: %s", src->fn,
                 src->path, strerror(e));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        TG_ERROR(ctx, TG_EIO, "%s: %s: not a regular file", src->fn, src->path);
        fclose(fp);
        return NULL;
    }
    *size = (uint64_t)st.st_size;
    return fp;
}

/* Reads exactly len bytes of f's file at offset pos. */
static int read_at(tg_ctx *ctx, const char *fn, const tg_st *f, const char *what, uint64_t pos,
                   void *dst, size_t len)
{
    if (fseeko(f->fp, (off_t)pos, SEEK_SET) != 0 || fread(dst, 1, len, f->fp) != len)
        return TG_ERROR(ctx, TG_EIO, "%s: %s: cannot read %zu bytes of %s at byte %llu: %s", fn,
                        f->path, len, what, (unsigned long long)pos,
                        ferror(f->fp) ? strerror(errno) : "the file is shorter");
    return TG_OK;
}

static int st_read_header(tg_ctx *ctx, const st_src *src, tg_st *f, uint64_t size)
{
    unsigned char len8[8];
    if (read_at(ctx, src->fn, f, "the header length", 0, len8, 8) ||
        st_frame(ctx, src, f, size, load_le64(len8)))
        return tg_errcode(ctx);
    size_t n = (size_t)(f->data_start - 8);
    char *text = tg_malloc(ctx, n);
    if (!text)
        return TG_ENOMEM;
    if (!read_at(ctx, src->fn, f, "the header", 8, text, n))
        st_parse(ctx, src, f, text, n);
    tg_free(ctx, text, n);
    return tg_errcode(ctx);
}

tg_st *tg_st_open(tg_ctx *ctx, const char *path)
{
    const st_src src = {"st_open", path};
    if (!ctx || tg_errcode(ctx) || !host_order_ok(ctx, src.fn))
        return NULL;
    if (!path) {
        TG_ERROR(ctx, TG_EINVAL, "st_open: path is NULL");
        return NULL;
    }
    uint64_t size;
    FILE *fp = open_regular(ctx, &src, &size);
    if (!fp)
        return NULL;
    if (size < 8) {
        too_short(ctx, &src, size);
        fclose(fp);
        return NULL;
    }
    tg_st *f = st_new(ctx, path);
    if (!f) {
        fclose(fp);
        return NULL;
    }
    f->fp = fp;
    if (st_read_header(ctx, &src, f, size)) {
        tg_st_close(ctx, f);
        return NULL;
    }
    return f;
}

/* ---------------------------------------------------------------- lookups */

size_t tg_st_count(const tg_st *f) { return f ? f->n : 0; }

const tg_st_entry *tg_st_entry_at(const tg_st *f, size_t i)
{
    return f && i < f->n ? &f->entries[i] : NULL;
}

const tg_st_entry *tg_st_find(const tg_st *f, const char *name)
{
    if (!f || !name || !f->n)
        return NULL;
    const tg_st_entry key = {.name = name}, *kp = &key;
    const tg_st_entry *const *hit = bsearch(&kp, f->by_name, f->n, sizeof *f->by_name, cmp_by_name);
    return hit ? *hit : NULL;
}

size_t tg_st_metadata_count(const tg_st *f) { return f ? f->n_meta : 0; }

const tg_st_kv *tg_st_metadata_at(const tg_st *f, size_t i)
{
    return f && i < f->n_meta ? &f->meta[i] : NULL;
}

const char *tg_st_metadata(const tg_st *f, const char *key)
{
    for (size_t i = 0; key && i < tg_st_metadata_count(f); i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

/* ---------------------------------------------------------------- reading */

/* Copies entry e's bytes into dst. */
static int read_entry(tg_ctx *ctx, const char *fn, const tg_st *f, const tg_st_entry *e, void *dst)
{
    size_t len = (size_t)(e->end - e->begin);
    if (!len)
        return TG_OK;
    if (f->buf) {
        memcpy(dst, f->buf + f->data_start + e->begin, len);
        return TG_OK;
    }
    char what[64];
    snprintf(what, sizeof what, "entry '%.40s'", e->name);
    return read_at(ctx, fn, f, what, f->data_start + e->begin, dst, len);
}

static int check_handle(tg_ctx *ctx, const char *fn, const tg_st *f)
{
    if (!ctx || tg_errcode(ctx))
        return ctx ? tg_errcode(ctx) : TG_EINVAL;
    if (!f)
        return TG_ERROR(ctx, TG_EINVAL, "%s: the file handle is NULL", fn);
    if (f->ctx != ctx)
        return TG_ERROR(ctx, TG_EINVAL, "%s: %s was opened with another context", fn, f->path);
    return TG_OK;
}

static const tg_st_entry *find_or_fail(tg_ctx *ctx, const char *fn, const tg_st *f,
                                       const char *name)
{
    const tg_st_entry *e = tg_st_find(f, name);
    if (!e)
        TG_ERROR(ctx, name ? TG_ENOTFOUND : TG_EINVAL, "%s: %s: no entry '%s'", fn, f->path,
                 name ? name : "(null)");
    return e;
}

tg_tensor *tg_st_read(tg_ctx *ctx, tg_st *f, const char *name)
{
    if (check_handle(ctx, "st_read", f))
        return NULL;
    const tg_st_entry *e = find_or_fail(ctx, "st_read", f, name);
    tg_tensor *t = e ? tg_empty(ctx, e->dtype, e->ndim, e->shape) : NULL;
    if (!t || read_entry(ctx, "st_read", f, e, t->data) || !tg_set_name(ctx, t, e->name))
        return NULL;
    return t;
}

/* ---------------------------------------------------------------- state dicts */

/* Checks item i against the file; marks its entry claimed. */
static int match_item(tg_ctx *ctx, const char *fn, const tg_st *f, const tg_st_item *it,
                      size_t i, bool *claimed, const tg_st_entry **match)
{
    const tg_tensor *t = it->tensor;
    const char *name = it->name ? it->name : t ? t->name : NULL;
    if (!t || !name || t->ctx != ctx)
        return TG_ERROR(ctx, TG_EINVAL, "%s: %s: item %zu ('%s') has %s", fn, f->path, i,
                        name ? name : "(null)",
                        !t ? "no tensor" : !name ? "no name" : "a tensor of another context");
    const tg_st_entry *e = tg_st_find(f, name);
    if (!e)
        return TG_ERROR(ctx, TG_ENOTFOUND, "%s: %s: no entry '%s' (item %zu)", fn, f->path,
                        name, i);
    size_t k = (size_t)(e - f->entries);
    if (claimed[k])
        return TG_ERROR(ctx, TG_EINVAL, "%s: %s: '%s' is given twice (item %zu)", fn, f->path,
                        name, i);
    claimed[k] = true;
    char want[96], got[96];
    shape_str(e->ndim, e->shape, got, sizeof got);
    shape_str(t->ndim, t->shape, want, sizeof want);
    if (t->ndim != e->ndim || memcmp(t->shape, e->shape, (size_t)e->ndim * sizeof *e->shape))
        return TG_ERROR(ctx, TG_ESHAPE, "%s: %s: '%s' has shape %s in the file but %s in the "
                        "tensor", fn, f->path, name, got, want);
    if (t->dtype != e->dtype)
        return TG_ERROR(ctx, TG_EDTYPE, "%s: %s: '%s' is %s in the file but %s in the tensor",
                        fn, f->path, name, tg_dtype_name(e->dtype), tg_dtype_name(t->dtype));
    *match = e;
    return TG_OK;
}

static int check_unexpected(tg_ctx *ctx, const char *fn, const tg_st *f, const bool *claimed,
                            size_t n)
{
    for (size_t k = 0; k < f->n; k++)
        if (!claimed[k])
            return TG_ERROR(ctx, TG_EFORMAT,
                            "%s: %s: unexpected entry '%s' (strict: the file has %zu entries, %zu "
                            "expected)", fn, f->path, f->entries[k].name, f->n, n);
    return TG_OK;
}

/* Reads every matched entry into one staging block, then copies it out. */
static int stage_and_copy(tg_ctx *ctx, const char *fn, const tg_st *f, const tg_st_item *items,
                          size_t n, const tg_st_entry **match)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += (size_t)(match[i]->end - match[i]->begin);
    unsigned char *stage = st_alloc(ctx, total);
    if (total && !stage)
        return TG_ENOMEM;
    size_t at = 0;
    for (size_t i = 0; i < n && !read_entry(ctx, fn, f, match[i], stage + at); i++)
        at += (size_t)(match[i]->end - match[i]->begin);
    if (!tg_errcode(ctx)) {
        at = 0;
        for (size_t i = 0; i < n; i++) {
            size_t len = (size_t)(match[i]->end - match[i]->begin);
            if (len)
                memcpy(items[i].tensor->data, stage + at, len);
            at += len;
            tg_mark_dirty(items[i].tensor);
        }
    }
    st_free(ctx, stage, total);
    return tg_errcode(ctx);
}

static int load_items(tg_ctx *ctx, const char *fn, tg_st *f, const tg_st_item *items, size_t n,
                      bool strict)
{
    if (check_handle(ctx, fn, f))
        return tg_errcode(ctx);
    if (n && !items)
        return TG_ERROR(ctx, TG_EINVAL, "%s: items is NULL", fn);
    bool *claimed = st_alloc(ctx, f->n * sizeof *claimed);
    const tg_st_entry **match = st_alloc(ctx, n * sizeof *match);
    if (!tg_errcode(ctx)) {
        if (f->n)
            memset(claimed, 0, f->n * sizeof *claimed);
        for (size_t i = 0; i < n; i++)
            if (match_item(ctx, fn, f, &items[i], i, claimed, &match[i]))
                break;
    }
    if (!tg_errcode(ctx) && strict)
        check_unexpected(ctx, fn, f, claimed, n);
    if (!tg_errcode(ctx))
        stage_and_copy(ctx, fn, f, items, n, match);
    st_free(ctx, claimed, f->n * sizeof *claimed);
    st_free(ctx, match, n * sizeof *match);
    return tg_errcode(ctx);
}

tg_status tg_st_load(tg_ctx *ctx, tg_st *f, const tg_st_item *items, size_t n, bool strict)
{
    return load_items(ctx, "st_load", f, items, n, strict);
}

tg_status tg_st_read_into(tg_ctx *ctx, tg_st *f, const char *name, tg_tensor *dst)
{
    if (check_handle(ctx, "st_read_into", f))
        return tg_errcode(ctx);
    if (!name || !dst)
        return TG_ERROR(ctx, TG_EINVAL, "st_read_into: %s is NULL", name ? "dst" : "name");
    const tg_st_item item = {name, dst};
    return load_items(ctx, "st_read_into", f, &item, 1, false);
}

tg_status tg_st_load_file(tg_ctx *ctx, const char *path, const tg_st_item *items, size_t n,
                          bool strict)
{
    tg_st *f = tg_st_open(ctx, path);
    if (f)
        load_items(ctx, "st_load_file", f, items, n, strict);
    tg_st_close(ctx, f);
    return ctx ? tg_errcode(ctx) : TG_EINVAL;
}

/* ---------------------------------------------------------------- saving */

static size_t tensor_bytes(const tg_tensor *t) { return (size_t)t->numel * tg_dtype_size(t->dtype); }

/* Adds v under key k (v is consumed even on failure); false on failure. */
static bool put(json_t *obj, const char *k, json_t *v)
{
    return v && json_object_set_new_nocheck(obj, k, v) == 0;
}

static json_t *entry_json(const tg_tensor *t, uint64_t begin, uint64_t end)
{
    json_t *e = json_object(), *shape = json_array(), *offsets = json_array();
    /* e takes its own references to shape and offsets; ours are dropped below */
    bool ok = e && put(e, "dtype", json_string(st_dtype_str(t->dtype))) &&
              put(e, "shape", json_incref(shape)) && put(e, "data_offsets", json_incref(offsets));
    for (int d = 0; ok && d < t->ndim; d++)
        ok = json_array_append_new(shape, json_integer(t->shape[d])) == 0;
    ok = ok && json_array_append_new(offsets, json_integer((json_int_t)begin)) == 0 &&
         json_array_append_new(offsets, json_integer((json_int_t)end)) == 0;
    json_decref(shape);
    json_decref(offsets);
    if (ok)
        return e;
    json_decref(e);
    return NULL;
}

/* A name or metadata string a header can hold: UTF-8, unique in obj. */
static int check_key(tg_ctx *ctx, const json_t *obj, const char *what, size_t i, const char *s)
{
    if (!s)
        return TG_ERROR(ctx, TG_EINVAL, "st_save: %s %zu has no name", what, i);
    if (!utf8_valid(s))
        return TG_ERROR(ctx, TG_EINVAL, "st_save: %s %zu: name is not valid UTF-8", what, i);
    if (json_object_get(obj, s))
        return TG_ERROR(ctx, TG_EINVAL, "st_save: %s %zu: '%s' is given twice", what, i, s);
    return TG_OK;
}

static int add_metadata(tg_ctx *ctx, json_t *root, const tg_st_kv *meta, size_t n_meta)
{
    json_t *m = json_object();
    if (!put(root, META_KEY, m))
        return TG_ERROR(ctx, TG_ENOMEM, "st_save: out of memory building the header");
    for (size_t i = 0; i < n_meta; i++) {
        const char *v = meta[i].value;
        if (check_key(ctx, m, "metadata entry", i, meta[i].key))
            return tg_errcode(ctx);
        if (!v || !utf8_valid(v))
            return TG_ERROR(ctx, TG_EINVAL, "st_save: metadata '%s': the value is %s",
                            meta[i].key, v ? "not valid UTF-8" : "NULL");
        if (!put(m, meta[i].key, json_string_nocheck(v)))
            return TG_ERROR(ctx, TG_ENOMEM, "st_save: out of memory building the header");
    }
    return TG_OK;
}

static int add_item(tg_ctx *ctx, json_t *root, const tg_st_item *it, size_t i, uint64_t *at)
{
    const tg_tensor *t = it->tensor;
    const char *name = it->name ? it->name : t ? t->name : NULL;
    if (!t || t->ctx != ctx)
        return TG_ERROR(ctx, TG_EINVAL, "st_save: item %zu ('%s') has %s", i,
                        name ? name : "(null)", t ? "a tensor of another context" : "no tensor");
    if (name && strcmp(name, META_KEY) == 0)
        return TG_ERROR(ctx, TG_EINVAL, "st_save: item %zu: the name %s is reserved", i, META_KEY);
    if (check_key(ctx, root, "item", i, name))
        return tg_errcode(ctx);
    uint64_t end = *at + tensor_bytes(t);
    if (!put(root, name, entry_json(t, *at, end)))
        return TG_ERROR(ctx, TG_ENOMEM, "st_save: out of memory building the header");
    *at = end;
    return TG_OK;
}

/* The header as JSON: metadata first, then the items in order. */
static json_t *build_header(tg_ctx *ctx, const tg_st_item *items, size_t n, const tg_st_kv *meta,
                            size_t n_meta)
{
    json_t *root = json_object();
    if (!root) {
        TG_ERROR(ctx, TG_ENOMEM, "st_save: out of memory building the header");
        return NULL;
    }
    uint64_t at = 0;
    if (n_meta)
        add_metadata(ctx, root, meta, n_meta);
    for (size_t i = 0; i < n && !tg_errcode(ctx); i++)
        add_item(ctx, root, &items[i], i, &at);
    if (tg_errcode(ctx)) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* The length prefix and the JSON text padded with spaces to a multiple of 8. */
static unsigned char *dump_header(tg_ctx *ctx, const json_t *root, size_t *out_len)
{
    size_t len = json_dumpb(root, NULL, 0, JSON_COMPACT);
    size_t padded = len + (8 - len % 8) % 8;
    if (!len || padded > TG_ST_MAX_HEADER) {
        TG_ERROR(ctx, len ? TG_EINVAL : TG_ENOMEM, "st_save: the header (%zu bytes) %s", len,
                 len ? "exceeds the limit" : "could not be written");
        return NULL;
    }
    unsigned char *buf = tg_malloc(ctx, 8 + padded);
    if (!buf)
        return NULL;
    store_le64(buf, padded);
    json_dumpb(root, (char *)buf + 8, len, JSON_COMPACT);
    memset(buf + 8 + len, ' ', padded - len);
    *out_len = 8 + padded;
    return buf;
}

static int write_all(int fd, const void *p, size_t len)
{
    const unsigned char *b = p;
    while (len) {
        ssize_t w = write(fd, b, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        b += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Creates "<path>.<pid>.<k>.tmp" for the first k not taken; -1 with errno. */
static int make_temp(const char *path, char *tmp, size_t tmp_size)
{
    for (unsigned k = 0; k < 1000; k++) {
        snprintf(tmp, tmp_size, "%s.%ld.%u.tmp", path, (long)getpid(), k);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    return -1;
}

/* Makes the rename durable. Best effort: some file systems cannot fsync a
 * directory, and the checkpoint itself is complete either way. */
static void sync_dir(const char *path, char *scratch)
{
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 0;
    if (slash && len == 0)
        len = 1; /* "/name": the root */
    memcpy(scratch, slash ? path : ".", slash ? len : 1);
    scratch[slash ? len : 1] = '\0';
    int fd = open(scratch, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* Writes head and the items' data to a temporary file, fsyncs it, renames it over path. */
static int write_atomically(tg_ctx *ctx, const char *path, const unsigned char *head,
                            size_t head_len, const tg_st_item *items, size_t n)
{
    size_t tmp_size = strlen(path) + 48;
    char *tmp = tg_malloc(ctx, tmp_size);
    if (!tmp)
        return TG_ENOMEM;
    int fd = make_temp(path, tmp, tmp_size), err = fd < 0 ? errno : 0;
    if (fd >= 0) {
        err = write_all(fd, head, head_len);
        for (size_t i = 0; i < n && !err; i++)
            err = write_all(fd, items[i].tensor->data, tensor_bytes(items[i].tensor));
        if (!err && fsync(fd) != 0)
            err = errno;
        if (close(fd) != 0 && !err)
            err = errno;
        if (!err && rename(tmp, path) != 0)
            err = errno;
        if (err)
            unlink(tmp);
    }
    if (err)
        TG_ERROR(ctx, TG_EIO, "st_save: %s: cannot write the checkpoint (%s); the file at that path, "
                 "if any, is unchanged", path, strerror(err));
    else
        sync_dir(path, tmp);
    tg_free(ctx, tmp, tmp_size);
    return tg_errcode(ctx);
}

tg_status tg_st_save(tg_ctx *ctx, const char *path, const tg_st_item *items, size_t n,
                     const tg_st_kv *meta, size_t n_meta)
{
    if (!ctx || tg_errcode(ctx))
        return ctx ? tg_errcode(ctx) : TG_EINVAL;
    if (!host_order_ok(ctx, "st_save"))
        return TG_ENOTSUP;
    if (!path || (n && !items) || (n_meta && !meta))
        return TG_ERROR(ctx, TG_EINVAL, "st_save: %s is NULL",
                        !path ? "path" : n && !items ? "items" : "meta");
    json_t *root = build_header(ctx, items, n, meta, n_meta);
    size_t head_len = 0;
    unsigned char *head = root ? dump_header(ctx, root, &head_len) : NULL;
    json_decref(root);
    if (head)
        write_atomically(ctx, path, head, head_len, items, n);
    if (head)
        tg_free(ctx, head, head_len);
    return tg_errcode(ctx);
}
