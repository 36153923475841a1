/* test_data.c: IDX data sets: reading plain and gzip files, validation, shuffling, batches */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "testutil.h"

/* ---------------------------------------------------------------- helpers */

/* A fresh temporary directory, removed with its files by tmp_remove. */
static void tmp_make(char *dir)
{
    strcpy(dir, "/tmp/tg_data_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void tmp_remove(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    char path[512];
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ck_assert_int_eq(unlink(path), 0);
    }
    closedir(d);
    ck_assert_int_eq(rmdir(dir), 0);
}

/* Writes an IDX image into buf: magic 00 00 type ndim, big-endian dims, data
 * (already big-endian). Returns its length. */
static size_t idx_make(uint8_t *buf, int type, int ndim, const uint32_t *dims, const void *data,
                       size_t data_bytes)
{
    uint8_t *p = buf;
    *p++ = 0, *p++ = 0, *p++ = (uint8_t)type, *p++ = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        *p++ = (uint8_t)(dims[i] >> 24), *p++ = (uint8_t)(dims[i] >> 16);
        *p++ = (uint8_t)(dims[i] >> 8), *p++ = (uint8_t)dims[i];
    }
    memcpy(p, data, data_bytes);
    return (size_t)(p - buf) + data_bytes;
}

static void write_plain(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

/* Writes buf gzip-compressed with zlib's gz* calls; mode "ab" appends a member. */
static void write_gzip(const char *path, const char *mode, const void *buf, size_t n)
{
    gzFile g = gzopen(path, mode);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(gzwrite(g, buf, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(g), Z_OK);
}

/* Reads a whole file into buf; returns its length. */
static size_t slurp(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, cap, f);
    ck_assert_int_eq(feof(f) || n < cap, 1);
    fclose(f);
    return n;
}

static void join(char *out, const char *dir, const char *name)
{
    snprintf(out, 512, "%s/%s", dir, name);
}

/* Bytes the context holds from its hook, less its arena's chunks (kept across
 * tg_reset): what a load must give back. */
static size_t held(const tg_ctx *ctx)
{
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    return st.bytes_live - st.arena_capacity;
}

/* A (2, 3, 4) ubyte file with values 0, 10, ..., 230, in plain IDX. */
static size_t sample_u8(uint8_t *buf, uint8_t *values)
{
    for (int i = 0; i < 24; i++)
        values[i] = (uint8_t)(10 * i);
    return idx_make(buf, 0x08, 3, (const uint32_t[]){2, 3, 4}, values, 24);
}

static void ck_sample_u8(const tg_idx *x, const uint8_t *values)
{
    ck_assert_int_eq(x->type, TG_IDX_U8);
    ck_assert_int_eq(x->ndim, 3);
    ck_assert_int_eq(x->dims[0], 2);
    ck_assert_int_eq(x->dims[1], 3);
    ck_assert_int_eq(x->dims[2], 4);
    ck_assert_int_eq(x->dims[3], 0);
    ck_assert_int_eq(x->count, 24);
    ck_assert_uint_eq(x->elem_size, 1);
    ck_assert_uint_eq(x->bytes, 24);
    ck_assert_mem_eq(x->data, values, 24);
}

/* ---------------------------------------------------------------- reading */

START_TEST(read_plain_and_gzip_files)
{
    char dir[64], plain[512], gz[512], two[512];
    uint8_t buf[256], values[24];
    size_t n = sample_u8(buf, values);
    tmp_make(dir);
    join(plain, dir, "a-idx3-ubyte");
    join(gz, dir, "a-idx3-ubyte.gz");
    join(two, dir, "two-members.gz");
    write_plain(plain, buf, n);
    write_gzip(gz, "wb", buf, n);
    write_gzip(two, "wb", buf, 10); /* the header splits across two gzip members */
    write_gzip(two, "ab", buf + 10, n - 10);

    tg_ctx *ctx = tg_ctx_new(1);
    size_t base = held(ctx);
    const char *paths[] = {plain, gz, two};
    for (int i = 0; i < 3; i++) {
        tg_idx x;
        ck_assert_int_eq(tg_idx_read(ctx, paths[i], &x), TG_OK);
        ck_sample_u8(&x, values);
        tg_idx_free(ctx, &x);
        ck_assert_ptr_null(x.data);
    }
    ck_assert_uint_eq(held(ctx), base);
    tg_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

START_TEST(read_memory_plain_and_gzip)
{
    char dir[64], gz[512];
    uint8_t buf[256], zbuf[512], values[24];
    size_t n = sample_u8(buf, values);
    tmp_make(dir);
    join(gz, dir, "a.gz");
    write_gzip(gz, "wb", buf, n);
    size_t zn = slurp(gz, zbuf, sizeof zbuf);
    ck_assert_int_eq(zbuf[0], 0x1f);

    tg_ctx *ctx = tg_ctx_new(1);
    size_t base = held(ctx);
    tg_idx x;
    ck_assert_int_eq(tg_idx_read_mem(ctx, buf, n, "plain", &x), TG_OK);
    ck_sample_u8(&x, values);
    tg_idx_free(ctx, &x);
    ck_assert_int_eq(tg_idx_read_mem(ctx, zbuf, zn, NULL, &x), TG_OK);
    ck_sample_u8(&x, values);
    tg_idx_free(ctx, &x);
    ck_assert_uint_eq(held(ctx), base);
    tg_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

START_TEST(read_every_element_type)
{
    /* Big-endian encodings of known values, read back in host order. */
    const uint8_t i8[] = {0x80, 0x7f, 0xff};                    /* -128, 127, -1 */
    const uint8_t i16[] = {0xff, 0xfe, 0x01, 0x2c};             /* -2, 300 */
    const uint8_t i32[] = {0xff, 0xfe, 0xee, 0x90, 0, 0, 0, 7}; /* -70000, 7 */
    const uint8_t f32[] = {0x3f, 0xc0, 0, 0, 0xbe, 0x80, 0, 0}; /* 1.5, -0.25 */
    const uint8_t f64[] = {0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18}; /* pi */
    uint8_t buf[64];
    tg_ctx *ctx = tg_ctx_new(1);
    size_t base = held(ctx);
    tg_idx x;

    ck_assert_int_eq(tg_idx_read_mem(ctx, buf, idx_make(buf, 0x09, 1, (const uint32_t[]){3}, i8, 3),
                                     "i8", &x), TG_OK);
    ck_assert_int_eq(((int8_t *)x.data)[0], -128);
    ck_assert_int_eq(((int8_t *)x.data)[2], -1);
    ck_assert_str_eq(tg_idx_type_name(x.type), "byte");
    tg_idx_free(ctx, &x);

    ck_assert_int_eq(tg_idx_read_mem(ctx, buf, idx_make(buf, 0x0B, 1, (const uint32_t[]){2}, i16, 4),
                                     "i16", &x), TG_OK);
    ck_assert_int_eq(((int16_t *)x.data)[0], -2);
    ck_assert_int_eq(((int16_t *)x.data)[1], 300);
    ck_assert_uint_eq(x.elem_size, 2);
    tg_idx_free(ctx, &x);

    ck_assert_int_eq(tg_idx_read_mem(ctx, buf, idx_make(buf, 0x0C, 2, (const uint32_t[]){1, 2}, i32, 8),
                                     "i32", &x), TG_OK);
    ck_assert_int_eq(((int32_t *)x.data)[0], -70000);
    ck_assert_int_eq(((int32_t *)x.data)[1], 7);
    tg_idx_free(ctx, &x);

    ck_assert_int_eq(tg_idx_read_mem(ctx, buf, idx_make(buf, 0x0D, 1, (const uint32_t[]){2}, f32, 8),
                                     "f32", &x), TG_OK);
    ck_assert(((float *)x.data)[0] == 1.5f && ((float *)x.data)[1] == -0.25f);
    tg_idx_free(ctx, &x);

    ck_assert_int_eq(tg_idx_read_mem(ctx, buf, idx_make(buf, 0x0E, 1, (const uint32_t[]){1}, f64, 8),
                                     "f64", &x), TG_OK);
    ck_assert(((double *)x.data)[0] == 3.141592653589793);
    ck_assert_str_eq(tg_idx_type_name(x.type), "double");
    tg_idx_free(ctx, &x);
    ck_assert_uint_eq(held(ctx), base);
    tg_ctx_free(ctx);
}
END_TEST

/* Every proper prefix of buf fails with TG_EFORMAT, zeroes out and holds nothing. */
static void ck_prefixes_fail(const uint8_t *buf, size_t n, const char *what)
{
    tg_ctx *ctx = tg_ctx_new(1);
    size_t base = held(ctx);
    for (size_t k = 0; k < n; k++) {
        tg_idx x;
        ck_assert_msg(tg_idx_read_mem(ctx, buf, k, what, &x) == TG_EFORMAT,
                      "%s prefix of %zu bytes: '%s'", what, k, tg_errmsg(ctx));
        ck_assert_ptr_null(x.data);
        ck_assert_int_eq(x.ndim, 0);
        ck_assert_ptr_nonnull(strstr(tg_errmsg(ctx), what));
        ck_assert_uint_eq(held(ctx), base);
        tg_clear_error(ctx);
    }
    tg_ctx_free(ctx);
}

START_TEST(every_prefix_fails_cleanly)
{
    char dir[64], gz[512], cut[512];
    uint8_t buf[256], zbuf[512], values[24];
    size_t n = sample_u8(buf, values);
    tmp_make(dir);
    join(gz, dir, "a.gz");
    write_gzip(gz, "wb", buf, n);
    size_t zn = slurp(gz, zbuf, sizeof zbuf);
    ck_prefixes_fail(buf, n, "plain");
    ck_prefixes_fail(zbuf, zn, "gzip");

    /* The same through files, with the numbers in the messages. */
    tg_ctx *ctx = tg_ctx_new(1);
    size_t base = held(ctx);
    tg_idx x;
    join(cut, dir, "cut");
    write_plain(cut, buf, n - 5);
    ck_assert_int_eq(tg_idx_read(ctx, cut, &x), TG_EFORMAT);
    ck_error(ctx, TG_EFORMAT, "truncated: 19 bytes of data, dims (2, 3, 4) of ubyte need 24");
    ck_assert_ptr_nonnull(strstr(tg_errmsg(ctx), cut));
    tg_clear_error(ctx);
    write_plain(cut, buf, 14);
    ck_assert_int_eq(tg_idx_read(ctx, cut, &x), TG_EFORMAT);
    ck_error(ctx, TG_EFORMAT, "file ends inside the dimensions (10 of 12 bytes)");
    tg_clear_error(ctx);
    write_plain(cut, zbuf, zn - 3);
    ck_assert_int_eq(tg_idx_read(ctx, cut, &x), TG_EFORMAT);
    ck_error(ctx, TG_EFORMAT, "gzip stream truncated");
    ck_assert_uint_eq(held(ctx), base);
    tg_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* Reads buf from memory and expects TG_EFORMAT with text in the message. */
static void ck_bad(const uint8_t *buf, size_t n, const char *text)
{
    tg_ctx *ctx = tg_ctx_new(1);
    size_t base = held(ctx);
    tg_idx x;
    ck_assert_int_eq(tg_idx_read_mem(ctx, buf, n, "bad.idx", &x), TG_EFORMAT);
    ck_error(ctx, TG_EFORMAT, text);
    ck_error(ctx, TG_EFORMAT, "bad.idx");
    ck_assert_ptr_null(x.data);
    ck_assert_uint_eq(held(ctx), base);
    tg_ctx_free(ctx);
}

START_TEST(malformed_headers)
{
    uint8_t buf[256], data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    size_t n = idx_make(buf, 0x08, 1, (const uint32_t[]){8}, data, 8);
    buf[1] = 0x01;
    ck_bad(buf, n, "bad magic 00 01 08 01");
    ck_bad(buf, idx_make(buf, 0x07, 1, (const uint32_t[]){8}, data, 8), "unknown element type 0x07");
    ck_bad(buf, idx_make(buf, 0x0A, 1, (const uint32_t[]){8}, data, 8), "unknown element type 0x0a");
    ck_bad(buf, idx_make(buf, 0x08, 0, NULL, data, 8), "0 dimensions, outside 1..6");
    ck_bad(buf, idx_make(buf, 0x08, 7, (const uint32_t[]){1, 1, 1, 1, 1, 1, 8}, data, 8),
           "7 dimensions, outside 1..6");
    ck_bad(buf, idx_make(buf, 0x08, 3, (const uint32_t[]){2, 0, 4}, data, 0), "dimension 1 of 3 is 0");
    ck_bad(buf, idx_make(buf, 0x0E, 4, (const uint32_t[]){0xffffffff, 0xffffffff, 0xffffffff, 2}, data, 8),
           "dims (4294967295, 4294967295, 4294967295, 2) of double overflow");
    ck_bad(buf, idx_make(buf, 0x08, 1, (const uint32_t[]){7}, data, 8),
           "trailing bytes after the 7 bytes of data that dims (7) of ubyte need");
    ck_bad(buf, idx_make(buf, 0x0C, 1, (const uint32_t[]){3}, data, 8),
           "truncated: 8 bytes of data, dims (3) of int need 12");
}
END_TEST

START_TEST(huge_header_allocates_little)
{
    /* A header promising 3 * 4 GiB of doubles, followed by 8 bytes. */
    uint8_t buf[64], data[8] = {0};
    size_t n = idx_make(buf, 0x0E, 2, (const uint32_t[]){0xffffffff, 3}, data, 8);
    tg_ctx *ctx = tg_ctx_new(1);
    tg_stats before, after;
    tg_ctx_stats(ctx, &before);
    tg_idx x;
    ck_assert_int_eq(tg_idx_read_mem(ctx, buf, n, "huge", &x), TG_EFORMAT);
    ck_error(ctx, TG_EFORMAT, "truncated: 8 bytes of data, dims (4294967295, 3) of double need 103079215080");
    tg_ctx_stats(ctx, &after);
    ck_assert_uint_le(after.bytes_peak - before.bytes_live, 64u << 10);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(gzip_corrupt_and_trailing_garbage)
{
    char dir[64], gz[512];
    uint8_t buf[256], zbuf[512], values[24];
    size_t n = sample_u8(buf, values);
    tmp_make(dir);
    join(gz, dir, "a.gz");
    write_gzip(gz, "wb", buf, n);
    size_t zn = slurp(gz, zbuf, sizeof zbuf);

    memcpy(zbuf + zn, "junk", 4); /* not another gzip member */
    ck_bad(zbuf, zn + 4, "corrupt gzip data");
    zbuf[zn - 6] ^= 0x55; /* the CRC-32 of the data */
    ck_bad(zbuf, zn, "corrupt gzip data");
    zbuf[zn - 6] ^= 0x55;
    zbuf[3] = 0xe0; /* reserved flag bits in the gzip header */
    ck_bad(zbuf, zn, "corrupt gzip data near compressed byte");
    tmp_remove(dir);
}
END_TEST

START_TEST(read_errors_and_sticky_state)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_idx x;
    ck_assert_int_eq(tg_idx_read(ctx, "/nonexistent/dir/x-idx1-ubyte", &x), TG_ENOTFOUND);
    ck_error(ctx, TG_ENOTFOUND, "/nonexistent/dir/x-idx1-ubyte");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_idx_read(ctx, "/", &x), TG_EIO); /* a directory opens but cannot be read */
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_idx_read(ctx, NULL, &x), TG_EINVAL);
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_idx_read_mem(ctx, NULL, 4, NULL, &x), TG_EINVAL);
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_idx_read_mem(ctx, "", 0, NULL, NULL), TG_EINVAL);
    /* A held error makes the readers fail at once, leaving the message. */
    uint8_t buf[64], values[24];
    size_t n = sample_u8(buf, values);
    ck_assert_int_eq(tg_idx_read_mem(ctx, buf, n, NULL, &x), TG_EINVAL);
    ck_error(ctx, TG_EINVAL, "buf or out is NULL");
    ck_assert_ptr_null(x.data);
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_idx_read(NULL, "x", &x), TG_EINVAL);
    tg_idx_free(ctx, NULL);
    ck_assert_str_eq(tg_idx_type_name(0x42), "?");
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- data sets */

enum { N = 5, H = 3, W = 2 };

/* Pixels of example i are 50 i + p (p = 0..5); labels 2, 0, 1, 2, 1. */
static const uint8_t LABELS[N] = {2, 0, 1, 2, 1};

static size_t set_images(uint8_t *buf, uint32_t n)
{
    uint8_t px[N * H * W];
    for (int i = 0; i < N * H * W; i++)
        px[i] = (uint8_t)(50 * (i / (H * W)) + i % (H * W));
    px[N * H * W - 1] = 255;
    return idx_make(buf, 0x08, 3, (const uint32_t[]){n, H, W}, px, n * H * W);
}

static size_t set_labels(uint8_t *buf, uint32_t n, const uint8_t *labels)
{
    return idx_make(buf, 0x08, 1, (const uint32_t[]){n}, labels, n);
}

/* Writes images and labels files (gzip) into dir. */
static void write_set(const char *dir, char *img, char *lab)
{
    uint8_t buf[256];
    join(img, dir, "images.gz");
    join(lab, dir, "labels.gz");
    write_gzip(img, "wb", buf, set_images(buf, N));
    write_gzip(lab, "wb", buf, set_labels(buf, N, LABELS));
}

START_TEST(dataset_from_files_and_memory)
{
    char dir[64], img[512], lab[512];
    tmp_make(dir);
    write_set(dir, img, lab);
    tg_ctx *ctx = tg_ctx_new(1);
    size_t base = held(ctx);
    tg_dataset *ds = tg_dataset_from_idx(ctx, img, lab, 3);
    ck_assert_ptr_nonnull(ds);
    ck_assert_int_eq(ds->n, N);
    ck_assert_int_eq(ds->height, H);
    ck_assert_int_eq(ds->width, W);
    ck_assert_int_eq(ds->classes, 3);
    ck_assert_mem_eq(ds->labels, LABELS, N);
    for (int i = 0; i < N * H * W - 1; i++)
        ck_assert_int_eq(ds->images[i], 50 * (i / (H * W)) + i % (H * W));
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(ds->order[i], i);
    tg_dataset_free(ctx, ds);

    uint8_t ib[256], lb[64];
    size_t in = set_images(ib, N), ln = set_labels(lb, N, LABELS);
    ds = tg_dataset_from_mem(ctx, ib, in, lb, ln, 0);
    ck_assert_ptr_nonnull(ds);
    ck_assert_int_eq(ds->classes, 10);
    ck_assert_mem_eq(ds->images, ib + 16, N * H * W);
    tg_dataset_free(ctx, ds);
    tg_dataset_free(ctx, NULL);
    ck_assert_uint_eq(held(ctx), base);
    tg_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* tg_dataset_from_mem fails with code and text, holding nothing. */
static void ck_set_bad(const uint8_t *ib, size_t in, const uint8_t *lb, size_t ln, int classes,
                       int code, const char *text)
{
    tg_ctx *ctx = tg_ctx_new(1);
    size_t base = held(ctx);
    ck_assert_ptr_null(tg_dataset_from_mem(ctx, ib, in, lb, ln, classes));
    ck_error(ctx, code, text);
    ck_assert_uint_eq(held(ctx), base);
    tg_ctx_free(ctx);
}

START_TEST(dataset_validation)
{
    uint8_t ib[256], lb[64], fb[64];
    size_t in = set_images(ib, N), ln = set_labels(lb, N, LABELS);
    ck_set_bad(ib, in, fb, set_labels(fb, N - 1, LABELS), 3, TG_EFORMAT,
               "<images> holds 5 images but <labels> holds 4 labels");
    ck_set_bad(ib, in, lb, ln, 2, TG_EFORMAT, "<labels>: label 2 of example 0 is not below 2 classes");
    ck_set_bad(lb, ln, lb, ln, 3, TG_EFORMAT,
               "<images>: images (N, H, W) must be ubyte with 3 dimensions, the file holds ubyte with 1");
    ck_set_bad(ib, in, ib, in, 3, TG_EFORMAT, "labels (N) must be ubyte with 1 dimension, the file holds ubyte with 3");
    const uint8_t f[20] = {0};
    size_t fn = idx_make(fb, 0x0D, 1, (const uint32_t[]){N}, f, 20);
    ck_set_bad(ib, in, fb, fn, 3, TG_EFORMAT, "holds float with 1");
    ck_set_bad(ib, in, lb, ln, 257, TG_EINVAL, "257 classes, outside 1..256");
    ck_set_bad(ib, in - 1, lb, ln, 3, TG_EFORMAT, "<images>: truncated");

    tg_ctx *ctx = tg_ctx_new(1);
    ck_assert_ptr_null(tg_dataset_from_idx(ctx, NULL, "x", 0));
    ck_error(ctx, TG_EINVAL, "a path is NULL");
    ck_assert_ptr_null(tg_dataset_from_idx(ctx, "x", "y", 0)); /* sticky: the first error stays */
    ck_error(ctx, TG_EINVAL, "a path is NULL");
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(dataset_label_range_edges)
{
    /* Labels equal to classes - 1 pass; 256 classes accept every byte. */
    uint8_t ib[256], lb[64];
    size_t in = set_images(ib, N);
    const uint8_t high[N] = {0, 1, 2, 255, 9};
    size_t ln = set_labels(lb, N, high);
    tg_ctx *ctx = tg_ctx_new(1);
    size_t base = held(ctx);
    tg_dataset *ds = tg_dataset_from_mem(ctx, ib, in, lb, ln, 256);
    ck_assert_ptr_nonnull(ds);
    tg_dataset_free(ctx, ds);
    ck_assert_ptr_null(tg_dataset_from_mem(ctx, ib, in, lb, ln, 255));
    ck_error(ctx, TG_EFORMAT, "label 255 of example 3 is not below 255 classes");
    ck_assert_uint_eq(held(ctx), base);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(fashion_mnist_missing_and_plain_files)
{
    char dir[64], path[512];
    tmp_make(dir);
    tg_ctx *ctx = tg_ctx_new(1);
    size_t base = held(ctx);
    ck_assert_ptr_null(tg_fashion_mnist(ctx, dir, "train"));
    ck_error(ctx, TG_ENOTFOUND, "dataset-fashion-mnist");
    ck_error(ctx, TG_ENOTFOUND, dir);
    ck_error(ctx, TG_ENOTFOUND, "train-images-idx3-ubyte.gz");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_fashion_mnist(ctx, dir, "valid"));
    ck_error(ctx, TG_EINVAL, "split 'valid'");
    tg_clear_error(ctx);

    /* The test split, as uncompressed files; the labels missing first. */
    uint8_t buf[256];
    join(path, dir, "t10k-images-idx3-ubyte");
    write_plain(path, buf, set_images(buf, N));
    ck_assert_ptr_null(tg_fashion_mnist(ctx, dir, "test"));
    ck_error(ctx, TG_ENOTFOUND, "t10k-labels-idx1-ubyte.gz nor");
    tg_clear_error(ctx);
    join(path, dir, "t10k-labels-idx1-ubyte");
    write_plain(path, buf, set_labels(buf, N, LABELS));
    tg_dataset *ds = tg_fashion_mnist(ctx, dir, "test");
    ck_assert_ptr_nonnull(ds);
    ck_assert_int_eq(ds->n, N);
    ck_assert_int_eq(ds->classes, 10);
    tg_dataset_free(ctx, ds);
    ck_assert_uint_eq(held(ctx), base);
    tg_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* ---------------------------------------------------------------- shuffling */

static void ck_permutation(const int64_t *v, int64_t n)
{
    static char seen[4096];
    ck_assert_int_le(n, (int64_t)sizeof seen);
    memset(seen, 0, (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        ck_assert(v[i] >= 0 && v[i] < n);
        ck_assert_int_eq(seen[v[i]], 0);
        seen[v[i]] = 1;
    }
}

static void shuffled(uint64_t seed, int64_t *v, int64_t n)
{
    tg_ctx *ctx = tg_ctx_new(seed);
    for (int64_t i = 0; i < n; i++)
        v[i] = i;
    ck_assert_int_eq(tg_shuffle(ctx, v, n), TG_OK);
    tg_ctx_free(ctx);
}

START_TEST(shuffle_is_a_seeded_permutation)
{
    enum { M = 1000 };
    static int64_t a[M], b[M], c[M];
    shuffled(7, a, M);
    shuffled(7, b, M);
    shuffled(8, c, M);
    ck_permutation(a, M);
    ck_permutation(c, M);
    ck_assert_mem_eq(a, b, sizeof a);
    ck_assert(memcmp(a, c, sizeof a) != 0);
    int fixed = 0;
    for (int i = 0; i < M; i++)
        fixed += a[i] == i;
    ck_assert_int_lt(fixed, 10); /* about 1 expected */

    tg_ctx *ctx = tg_ctx_new(1);
    ck_assert_int_eq(tg_shuffle(ctx, NULL, 0), TG_OK);
    ck_assert_int_eq(tg_shuffle(ctx, a, 1), TG_OK);
    ck_assert_int_eq(tg_shuffle(ctx, a, -1), TG_EINVAL);
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_shuffle(ctx, NULL, 3), TG_EINVAL);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(shuffle_is_uniform_over_small_sets)
{
    /* 6000 shuffles of 3 values: each of the 6 orders about 1000 times
     * (standard deviation about 29). */
    tg_ctx *ctx = tg_ctx_new(3);
    int count[3][3][3] = {{{0}}};
    for (int r = 0; r < 6000; r++) {
        int64_t v[3] = {0, 1, 2};
        tg_shuffle(ctx, v, 3);
        count[v[0]][v[1]][v[2]]++;
    }
    const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    for (int p = 0; p < 6; p++) {
        int k = count[perms[p][0]][perms[p][1]][perms[p][2]];
        ck_assert_msg(k > 850 && k < 1150, "order %d came %d times in 6000", p, k);
    }
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(dataset_shuffle_depends_only_on_the_rng)
{
    uint8_t ib[256], lb[64];
    size_t in = set_images(ib, N), ln = set_labels(lb, N, LABELS);
    tg_ctx *ctx = tg_ctx_new(11);
    tg_dataset *ds = tg_dataset_from_mem(ctx, ib, in, lb, ln, 3);
    ck_assert_ptr_nonnull(ds);
    tg_rng_state st = tg_rng_get(ctx);
    ck_assert_int_eq(tg_dataset_shuffle(ctx, ds), TG_OK);
    int64_t first[N];
    memcpy(first, ds->order, sizeof first);
    ck_permutation(ds->order, N);
    ck_assert_int_eq(tg_dataset_shuffle(ctx, ds), TG_OK); /* order now differs from identity */
    tg_rng_set(ctx, st);
    ck_assert_int_eq(tg_dataset_shuffle(ctx, ds), TG_OK);
    ck_assert_mem_eq(ds->order, first, sizeof first);
    ck_assert_int_eq(tg_dataset_shuffle(ctx, NULL), TG_EINVAL);
    tg_clear_error(ctx);
    tg_dataset_free(ctx, ds);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- batches */

/* Row r of x holds example e's pixels / 255 and y[r] its label. */
static void ck_row(const tg_dataset *ds, const tg_tensor *x, const tg_tensor *y, int64_t r, int64_t e)
{
    int64_t px = ds->height * ds->width;
    for (int64_t p = 0; p < px; p++) {
        uint8_t v = ds->images[e * px + p];
        if (x->dtype == TG_F32)
            ck_assert(((const float *)x->data)[r * px + p] == (float)v / 255.0f);
        else
            ck_assert(((const double *)x->data)[r * px + p] == v / 255.0);
    }
    ck_assert_int_eq(((const int64_t *)y->data)[r], ds->labels[e]);
}

START_TEST(batches_hold_the_scaled_examples)
{
    uint8_t ib[256], lb[64];
    size_t in = set_images(ib, N), ln = set_labels(lb, N, LABELS);
    tg_ctx *ctx = tg_ctx_new(5);
    tg_dataset *ds = tg_dataset_from_mem(ctx, ib, in, lb, ln, 3);
    ck_assert_ptr_nonnull(ds);
    ck_assert_int_eq(tg_dataset_shuffle(ctx, ds), TG_OK);
    tg_tensor *x, *y;

    ck_assert_int_eq(tg_dataset_batch(ctx, ds, 0, 2, TG_F32, TG_LAYOUT_IMAGE, &x, &y), TG_OK);
    ck_assert_int_eq(x->ndim, 4);
    ck_assert(x->shape[0] == 2 && x->shape[1] == 1 && x->shape[2] == H && x->shape[3] == W);
    ck_assert_int_eq(x->dtype, TG_F32);
    ck_assert_int_eq(y->dtype, TG_I64);
    ck_assert(y->ndim == 1 && y->shape[0] == 2);
    ck_assert(!x->requires_grad && !x->persistent);
    for (int r = 0; r < 2; r++)
        ck_row(ds, x, y, r, ds->order[r]);
    tg_reset(ctx);

    ck_assert_int_eq(tg_dataset_batch(ctx, ds, 2, 2, TG_F64, TG_LAYOUT_FLAT, &x, &y), TG_OK);
    ck_assert(x->ndim == 2 && x->shape[0] == 2 && x->shape[1] == H * W);
    for (int r = 0; r < 2; r++)
        ck_row(ds, x, y, r, ds->order[2 + r]);
    tg_reset(ctx);

    /* The last batch is partial: one example left of five. */
    ck_assert_int_eq(tg_dataset_batch(ctx, ds, 4, 2, TG_F32, TG_LAYOUT_IMAGE, &x, &y), TG_OK);
    ck_assert_int_eq(x->shape[0], 1);
    ck_assert_int_eq(y->shape[0], 1);
    ck_row(ds, x, y, 0, ds->order[4]);
    tg_reset(ctx);

    /* 0 and 255 map to exactly 0 and 1; a whole-set batch in load order. */
    for (int i = 0; i < N; i++)
        ds->order[i] = i;
    ck_assert_int_eq(tg_dataset_batch(ctx, ds, 0, 100, TG_F64, TG_LAYOUT_FLAT, &x, &y), TG_OK);
    ck_assert_int_eq(x->shape[0], N);
    ck_assert(tg_get(x, 0) == 0.0 && tg_get(x, N * H * W - 1) == 1.0);
    for (int r = 0; r < N; r++)
        ck_row(ds, x, y, r, r);
    tg_dataset_free(ctx, ds);
    tg_ctx_free(ctx);
}
END_TEST

/* tg_dataset_batch fails with code and text, setting x and y to NULL. */
static void ck_batch_bad(tg_ctx *ctx, const tg_dataset *ds, int64_t start, int64_t batch, tg_dtype dt,
                         int layout, int code, const char *text)
{
    tg_tensor *x = (tg_tensor *)1, *y = (tg_tensor *)1;
    ck_assert_int_eq(tg_dataset_batch(ctx, ds, start, batch, dt, (tg_layout)layout, &x, &y), code);
    ck_error(ctx, code, text);
    ck_assert(x == NULL && y == NULL);
    tg_clear_error(ctx);
}

START_TEST(batch_errors)
{
    uint8_t ib[256], lb[64];
    size_t in = set_images(ib, N), ln = set_labels(lb, N, LABELS);
    tg_ctx *ctx = tg_ctx_new(5);
    tg_dataset *ds = tg_dataset_from_mem(ctx, ib, in, lb, ln, 3);
    ck_assert_ptr_nonnull(ds);
    ck_batch_bad(ctx, ds, 5, 1, TG_F32, TG_LAYOUT_IMAGE, TG_EINVAL, "start 5, batch 1 for 5 examples");
    ck_batch_bad(ctx, ds, -1, 1, TG_F32, TG_LAYOUT_IMAGE, TG_EINVAL, "start -1");
    ck_batch_bad(ctx, ds, 0, 0, TG_F32, TG_LAYOUT_IMAGE, TG_EINVAL, "batch 0");
    ck_batch_bad(ctx, ds, 0, 1, TG_I64, TG_LAYOUT_IMAGE, TG_EDTYPE, "dtype int64");
    ck_batch_bad(ctx, ds, 0, 1, TG_F32, 7, TG_EINVAL, "unknown layout 7");
    ck_batch_bad(ctx, NULL, 0, 1, TG_F32, TG_LAYOUT_IMAGE, TG_EINVAL, "ds, x or y is NULL");
    ds->order[3] = 99;
    ck_batch_bad(ctx, ds, 2, 3, TG_F32, TG_LAYOUT_FLAT, TG_EINVAL, "order[3] = 99, outside [0, 5)");
    tg_tensor *x;
    ck_assert_int_eq(tg_dataset_batch(ctx, ds, 0, 1, TG_F32, TG_LAYOUT_FLAT, &x, NULL), TG_EINVAL);
    ck_assert_ptr_null(x);
    tg_dataset_free(ctx, ds);
    tg_ctx_free(ctx);
}
END_TEST

/* ---------------------------------------------------------------- out of memory */

typedef struct load_case {
    const char *img, *lab;        /* files for tg_dataset_from_idx, or */
    const uint8_t *mem;           /* a buffer for tg_idx_read_mem */
    size_t mem_size;
} load_case;

/* Runs one load; returns true when it succeeded (and frees what it made). */
static bool load_once(tg_ctx *ctx, const load_case *lc)
{
    if (lc->mem) {
        tg_idx x;
        if (tg_idx_read_mem(ctx, lc->mem, lc->mem_size, NULL, &x) != TG_OK)
            return false;
        tg_idx_free(ctx, &x);
        return true;
    }
    tg_dataset *ds = tg_dataset_from_idx(ctx, lc->img, lc->lab, 3);
    tg_dataset_free(ctx, ds);
    return ds != NULL;
}

/* Fails the k-th allocation of the load for k = 1, 2, ... until it succeeds:
 * each failure is TG_ENOMEM and leaks nothing. Returns the failures seen. */
static int fail_each_allocation(const load_case *lc)
{
    for (int k = 1;; k++) {
        test_alloc a = {0};
        tg_ctx *ctx = test_ctx_with(&a, 1);
        ck_assert_ptr_nonnull(ctx);
        size_t base = held(ctx);
        a.fail_at = a.calls + k;
        bool ok = load_once(ctx, lc);
        ck_assert_uint_eq(held(ctx), base);
        if (!ok)
            ck_error(ctx, TG_ENOMEM, "out of memory");
        tg_ctx_free(ctx);
        ck_assert_int_eq(a.live_bytes, 0);
        if (ok) {
            ck_assert_int_eq(a.failed, 0);
            return k - 1;
        }
        ck_assert_int_ge(a.failed, 1);
        ck_assert_int_lt(k, 100);
    }
}

START_TEST(every_allocation_failure_is_enomem)
{
    char dir[64], img[512], lab[512];
    tmp_make(dir);
    write_set(dir, img, lab);
    load_case files = {.img = img, .lab = lab};
    /* Per file: chunk, zlib state and window, data; then the set and its order. */
    ck_assert_int_ge(fail_each_allocation(&files), 8);

    uint8_t big[4096 + 32], values[4096], zbig[8192];
    for (int i = 0; i < 4096; i++)
        values[i] = (uint8_t)(i * 7 % 251);
    size_t n = idx_make(big, 0x08, 2, (const uint32_t[]){64, 64}, values, 4096);
    load_case plain = {.mem = big, .mem_size = n};
    ck_assert_int_ge(fail_each_allocation(&plain), 1);
    char gz[512];
    join(gz, dir, "big.gz");
    write_gzip(gz, "wb", big, n);
    load_case gzip = {.mem = zbig, .mem_size = slurp(gz, zbig, sizeof zbig)};
    ck_assert_int_ge(fail_each_allocation(&gzip), 3);
    tmp_remove(dir);
}
END_TEST

/* ---------------------------------------------------------------- the real Fashion-MNIST */

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Facts printed by tests/fixtures/idx/fashion_mnist_facts.py. */
static void ck_real_split(tg_ctx *ctx, const char *split, int64_t n, uint64_t pixel_sum,
                          const uint8_t *first_labels)
{
    double t0 = seconds_now();
    tg_dataset *ds = tg_fashion_mnist(ctx, NULL, split);
    double dt = seconds_now() - t0;
    ck_assert_msg(ds != NULL, "%s", tg_errmsg(ctx));
    printf("data: Fashion-MNIST %s: %lld images loaded in %.3f s\n", split, (long long)ds->n, dt);
    ck_assert_int_eq(ds->n, n);
    ck_assert(ds->height == 28 && ds->width == 28 && ds->classes == 10);
    int64_t count[10] = {0};
    for (int64_t i = 0; i < ds->n; i++) {
        ck_assert_int_lt(ds->labels[i], 10);
        count[ds->labels[i]]++;
    }
    for (int c = 0; c < 10; c++)
        ck_assert_int_eq(count[c], n / 10);
    ck_assert_mem_eq(ds->labels, first_labels, 5);
    uint64_t sum = 0;
    for (int64_t i = 0; i < ds->n * 28 * 28; i++)
        sum += ds->images[i];
    ck_assert_uint_eq(sum, pixel_sum);

    tg_tensor *x, *y;
    ck_assert_int_eq(tg_dataset_batch(ctx, ds, 0, 64, TG_F32, TG_LAYOUT_IMAGE, &x, &y), TG_OK);
    ck_assert(x->shape[0] == 64 && x->shape[1] == 1 && x->shape[2] == 28 && x->shape[3] == 28);
    ck_row(ds, x, y, 63, 63);
    tg_reset(ctx);
    tg_dataset_free(ctx, ds);
}

START_TEST(real_fashion_mnist)
{
    struct stat st;
    if (stat(TG_FASHION_MNIST_DIR, &st) != 0) {
        printf("data: %s is missing (apt install dataset-fashion-mnist); "
               "the real data set test is skipped\n", TG_FASHION_MNIST_DIR);
        return;
    }
    tg_ctx *ctx = tg_ctx_new(1);
    ck_real_split(ctx, "train", 60000, 3431114169u, (const uint8_t[]){9, 0, 0, 3, 0});
    size_t base = held(ctx); /* after a first step, whose bookkeeping the context keeps */
    ck_real_split(ctx, "test", 10000, 573469082u, (const uint8_t[]){9, 2, 1, 1, 6});
    ck_assert_uint_eq(held(ctx), base);
    tg_ctx_free(ctx);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("data");
    TCase *read = tcase_create("read");
    tcase_add_test(read, read_plain_and_gzip_files);
    tcase_add_test(read, read_memory_plain_and_gzip);
    tcase_add_test(read, read_every_element_type);
    suite_add_tcase(s, read);

    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, every_prefix_fails_cleanly);
    tcase_add_test(errors, malformed_headers);
    tcase_add_test(errors, huge_header_allocates_little);
    tcase_add_test(errors, gzip_corrupt_and_trailing_garbage);
    tcase_add_test(errors, read_errors_and_sticky_state);
    suite_add_tcase(s, errors);

    TCase *sets = tcase_create("datasets");
    tcase_add_test(sets, dataset_from_files_and_memory);
    tcase_add_test(sets, dataset_validation);
    tcase_add_test(sets, dataset_label_range_edges);
    tcase_add_test(sets, fashion_mnist_missing_and_plain_files);
    suite_add_tcase(s, sets);

    TCase *order = tcase_create("shuffle_and_batches");
    tcase_add_test(order, shuffle_is_a_seeded_permutation);
    tcase_add_test(order, shuffle_is_uniform_over_small_sets);
    tcase_add_test(order, dataset_shuffle_depends_only_on_the_rng);
    tcase_add_test(order, batches_hold_the_scaled_examples);
    tcase_add_test(order, batch_errors);
    suite_add_tcase(s, order);

    TCase *oom = tcase_create("oom");
    tcase_add_test(oom, every_allocation_failure_is_enomem);
    tcase_set_timeout(oom, 60);
    suite_add_tcase(s, oom);

    TCase *real = tcase_create("fashion_mnist");
    tcase_add_test(real, real_fashion_mnist);
    tcase_set_timeout(real, 120);
    suite_add_tcase(s, real);
    return s;
}
