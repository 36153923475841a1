/*
 * test_safetensors.c: checkpoints in safetensors (nn/safetensors.c).
 *
 *   roundtrip   save then load, bit-exact, for every dtype, scalars, empty
 *               tensors, metadata, names with quotes, escapes and unicode,
 *               and the exact header layout the reference writes
 *   atomic      a save that fails midway (file size limit) or on any
 *               allocation leaves the old file intact and no temporary file
 *   statedict   strict and non-strict loads, the first mismatch's message,
 *               nothing written on error (an I/O error included), read_into
 *   torch       fixtures/safetensors/torch_lenet.safetensors written by
 *               PyTorch (lenet_torch.py make) against torch_lenet.txt, and
 *               tapegrad_lenet.safetensors, which this suite writes and
 *               lenet_torch.py check loads into PyTorch
 *   malformed   every prefix of a valid file, bad framing, and a table of
 *               broken headers: each fails with its code and names the entry
 *   oom         every allocation of a load or a save failed in turn
 *
 * Set TG_REGEN_FIXTURES=1 to rewrite tapegrad_lenet.safetensors in the
 * source tree instead of comparing against it.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "testutil.h"

/* ------------------------------------------------------------ files */

static char tmp_dir[256];

static void tmp_setup(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/tg_st_XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
}

/* The number of files in the temporary directory. */
static int tmp_count(void)
{
    DIR *d = opendir(tmp_dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static void tmp_teardown(void)
{
    DIR *d = opendir(tmp_dir);
    char p[512];
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", tmp_dir, e->d_name);
            unlink(p);
        }
    if (d)
        closedir(d);
    rmdir(tmp_dir);
}

static const char *tmp_path(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", tmp_dir, name);
    return p;
}

/* TG_FIXTURES (tests/CMakeLists.txt) is the fixtures directory. */
static const char *fixture(const char *name)
{
    static char p[1024];
    snprintf(p, sizeof p, "%s/safetensors/%s", TG_FIXTURES, name);
    return p;
}

static unsigned char *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    ck_assert_int_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return b;
}

static void spit(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fwrite(data, 1, size, f), size);
    ck_assert_int_eq(fclose(f), 0);
}

static bool contains(const unsigned char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return true;
    return false;
}

/* A file image: the length of json (plus extra), json, then data zero bytes. */
static unsigned char *raw_file(const char *json, size_t data, int64_t extra, size_t *size)
{
    size_t n = strlen(json);
    *size = 8 + n + data;
    unsigned char *b = calloc(1, *size);
    uint64_t len = (uint64_t)((int64_t)n + extra);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(len >> (8 * i));
    memcpy(b + 8, json, n);
    return b;
}

/* ------------------------------------------------------------ roundtrip */

static tg_tensor *bits_f32(tg_ctx *ctx)
{
    const uint32_t v[] = {0x7FC00001u /* NaN payload */, 0x80000000u /* -0 */, 0x7F800000u,
                          0x00000001u /* denormal */, 0x3F800000u, 0xC0490FDBu};
    return tg_from_data(ctx, TG_F32, TG_SHAPE(2, 3), v);
}

static tg_tensor *bits_f64(tg_ctx *ctx)
{
    const uint64_t v[] = {0x7FF8000000000123ull, 0x8000000000000000ull, 0xFFF0000000000000ull,
                          0x0000000000000001ull};
    return tg_from_data(ctx, TG_F64, TG_SHAPE(2, 1, 2), v);
}

static void ck_same(const tg_tensor *a, const tg_tensor *b)
{
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(a->dtype, b->dtype);
    ck_assert(tg_same_shape(a, b));
    ck_assert_int_eq(memcmp(a->data, b->data, (size_t)a->numel * tg_dtype_size(a->dtype)), 0);
}

START_TEST(roundtrip_dtypes)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *nbt = tg_buffer(ctx, TG_I64, 0, NULL, "bn.num_batches_tracked");
    *(int64_t *)nbt->data = INT64_MAX - 5;
    tg_mark_dirty(nbt);
    const int64_t iv[] = {INT64_MIN, -1, 0, 1, INT64_MAX};
    tg_tensor *ts[] = {bits_f32(ctx), bits_f64(ctx), nbt,
                       tg_from_data(ctx, TG_I64, TG_SHAPE(5), iv),
                       tg_full(ctx, TG_F64, 0, NULL, 2.5),
                       tg_zeros(ctx, TG_F32, TG_SHAPE(0, 3)),
                       tg_zeros(ctx, TG_I64, TG_SHAPE(0))};
    const char *names[] = {"f32", "f64", NULL, "i64", "scalar", "empty", "empty_i64"};
    enum { N = 7 };
    tg_st_item items[N];
    for (int i = 0; i < N; i++)
        items[i] = (tg_st_item){names[i], ts[i]};
    ck_assert_int_eq(tg_st_save(ctx, tmp_path("a.safetensors"), items, N, NULL, 0), TG_OK);
    ck_assert_int_eq(tmp_count(), 1);

    tg_st *f = tg_st_open(ctx, tmp_path("a.safetensors"));
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(tg_st_count(f), N);
    ck_assert_uint_eq(tg_st_metadata_count(f), 0);
    uint64_t at = 0;
    for (int i = 0; i < N; i++) {
        const tg_st_entry *e = tg_st_entry_at(f, (size_t)i);
        const char *name = names[i] ? names[i] : "bn.num_batches_tracked";
        ck_assert_str_eq(e->name, name);
        ck_assert_ptr_eq(tg_st_find(f, name), e);
        ck_assert_int_eq(e->dtype, ts[i]->dtype);
        ck_assert_int_eq(e->ndim, ts[i]->ndim);
        ck_assert_int_eq(e->numel, ts[i]->numel);
        ck_assert_uint_eq(e->begin, at);
        at = e->end;
        tg_tensor *back = tg_st_read(ctx, f, name);
        ck_same(back, ts[i]);
        ck_assert_str_eq(back->name, name);
    }
    ck_assert_ptr_null(tg_st_entry_at(f, N));
    ck_assert_ptr_null(tg_st_find(f, "nope"));
    tg_st_close(ctx, f);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(roundtrip_metadata)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *x = tg_full(ctx, TG_F32, TG_SHAPE(3), 1.5);
    const tg_st_kv meta[] = {{"format", "pt"}, {"note", "say \"hi\"\\ \xc3\xa9\xe2\x82\xac\n"},
                             {"\xf0\x9f\x98\x80", ""}, {"__metadata__", "fine inside"}};
    const tg_st_item items[] = {{"x", x}};
    ck_assert_int_eq(tg_st_save(ctx, tmp_path("m.st"), items, 1, meta, 4), TG_OK);
    tg_st *f = tg_st_open(ctx, tmp_path("m.st"));
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(tg_st_metadata_count(f), 4);
    for (size_t i = 0; i < 4; i++) {
        ck_assert_str_eq(tg_st_metadata_at(f, i)->key, meta[i].key);
        ck_assert_str_eq(tg_st_metadata_at(f, i)->value, meta[i].value);
        ck_assert_str_eq(tg_st_metadata(f, meta[i].key), meta[i].value);
    }
    ck_assert_ptr_null(tg_st_metadata(f, "absent"));
    ck_assert_ptr_null(tg_st_metadata_at(f, 4));
    ck_assert_uint_eq(tg_st_count(f), 1);
    tg_st_close(ctx, f);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(roundtrip_names)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const char *names[] = {"with \"quotes\"", "back\\slash/and\ttab\nnewline", "",
                           "\xce\xbb.weight \xf0\x9d\x94\x81", "layer.0.\xe2\x9c\x93"};
    tg_st_item items[5];
    for (int i = 0; i < 5; i++)
        items[i] = (tg_st_item){names[i], tg_full(ctx, TG_F64, TG_SHAPE(1), i)};
    tg_set_name(ctx, items[4].tensor, names[4]);
    items[4].name = NULL; /* its own name */
    ck_assert_int_eq(tg_st_save(ctx, tmp_path("n.st"), items, 5, NULL, 0), TG_OK);

    size_t size;
    unsigned char *raw = slurp(tmp_path("n.st"), &size);
    ck_assert(contains(raw, size, "\"with \\\"quotes\\\"\""));
    ck_assert(contains(raw, size, "\"back\\\\slash/and\\ttab\\nnewline\""));
    ck_assert(contains(raw, size, "\"\xce\xbb.weight \xf0\x9d\x94\x81\"")); /* UTF-8 kept as is */
    tg_st *f = tg_st_open_buffer(ctx, raw, size);
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 5; i++) {
        ck_assert_str_eq(tg_st_entry_at(f, (size_t)i)->name, names[i]);
        ck_assert_double_eq(tg_get(tg_st_read(ctx, f, names[i]), 0), i);
    }
    tg_st_close(ctx, f);
    free(raw);
    tg_ctx_free(ctx);
}
END_TEST

/* The header is compact JSON in the order given, padded with spaces to a
 * multiple of 8, and the data follows contiguously. */
START_TEST(header_layout)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_tensor *a = tg_from_f64(ctx, TG_F32, TG_SHAPE(2), (const double[]){1, 2});
    tg_tensor *b = tg_from_f64(ctx, TG_I64, TG_SHAPE(1, 1), (const double[]){7});
    const tg_st_item items[] = {{"b_first", a}, {"a_second", b}};
    const tg_st_kv meta[] = {{"k", "v"}};
    ck_assert_int_eq(tg_st_save(ctx, tmp_path("h.st"), items, 2, meta, 1), TG_OK);
    size_t size;
    unsigned char *raw = slurp(tmp_path("h.st"), &size);
    const char *want = "{\"__metadata__\":{\"k\":\"v\"},"
                       "\"b_first\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"a_second\":{\"dtype\":\"I64\",\"shape\":[1,1],\"data_offsets\":[8,16]}}";
    size_t n = strlen(want), padded = (n + 7) / 8 * 8;
    ck_assert_uint_eq(raw[0] | (size_t)raw[1] << 8, padded);
    for (int i = 2; i < 8; i++)
        ck_assert_int_eq(raw[i], 0);
    ck_assert_uint_eq(size, 8 + padded + 16);
    ck_assert_int_eq(memcmp(raw + 8, want, n), 0);
    for (size_t i = n; i < padded; i++)
        ck_assert_int_eq(raw[8 + i], ' ');
    ck_assert_int_eq(memcmp(raw + 8 + padded, a->data, 8), 0);
    ck_assert_int_eq(memcmp(raw + 8 + padded + 8, b->data, 8), 0);
    free(raw);

    /* an empty state dict is a valid file too */
    ck_assert_int_eq(tg_st_save(ctx, tmp_path("e.st"), NULL, 0, NULL, 0), TG_OK);
    raw = slurp(tmp_path("e.st"), &size);
    ck_assert_uint_eq(size, 16);
    ck_assert_int_eq(memcmp(raw + 8, "{}      ", 8), 0);
    free(raw);
    tg_st *f = tg_st_open(ctx, tmp_path("e.st"));
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(tg_st_count(f), 0);
    tg_st_close(ctx, f);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(save_errors)
{
    tg_ctx *ctx = tg_ctx_new(1), *other = tg_ctx_new(2);
    tg_tensor *x = tg_zeros(ctx, TG_F32, TG_SHAPE(2));
    tg_tensor *y = tg_zeros(other, TG_F32, TG_SHAPE(2));
    const char *p = tmp_path("s.st");
    const struct { tg_st_item items[2]; size_t n; tg_st_kv meta; size_t n_meta; int code;
                   const char *text; } cases[] = {
        {{{"a", x}, {"a", x}}, 2, {0}, 0, TG_EINVAL, "'a' is given twice"},
        {{{"__metadata__", x}}, 1, {0}, 0, TG_EINVAL, "reserved"},
        {{{"a", NULL}}, 1, {0}, 0, TG_EINVAL, "no tensor"},
        {{{NULL, x}}, 1, {0}, 0, TG_EINVAL, "item 0 has no name"},
        {{{"bad \xff utf8", x}}, 1, {0}, 0, TG_EINVAL, "not valid UTF-8"},
        {{{"\xed\xa0\x80", x}}, 1, {0}, 0, TG_EINVAL, "not valid UTF-8"}, /* a surrogate */
        {{{"\xc0\xaf", x}}, 1, {0}, 0, TG_EINVAL, "not valid UTF-8"},     /* overlong */
        {{{"y", y}}, 1, {0}, 0, TG_EINVAL, "another context"},
        {{{"a", x}}, 1, {"k", NULL}, 1, TG_EINVAL, "metadata 'k': the value is NULL"},
        {{{"a", x}}, 1, {"k", "\xfe"}, 1, TG_EINVAL, "not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ck_assert_int_eq(tg_st_save(ctx, p, cases[i].items, cases[i].n, &cases[i].meta,
                                    cases[i].n_meta), cases[i].code);
        ck_error(ctx, cases[i].code, cases[i].text);
        tg_clear_error(ctx);
    }
    ck_assert_int_eq(tmp_count(), 0);
    const tg_st_item ok[] = {{"a", x}};
    ck_assert_int_eq(tg_st_save(ctx, "/nonexistent-dir/x.st", ok, 1, NULL, 0), TG_EIO);
    ck_error(ctx, TG_EIO, "/nonexistent-dir/x.st");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_st_save(ctx, NULL, ok, 1, NULL, 0), TG_EINVAL);
    tg_ctx_free(other);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ atomic save */

static tg_tensor *big_tensor(tg_ctx *ctx)
{
    tg_tensor *t = tg_empty(ctx, TG_F64, TG_SHAPE(64, 128));
    for (int64_t i = 0; i < t->numel; i++)
        ((double *)t->data)[i] = (double)i;
    return t;
}

/* A disk that fills up midway: the file size limit makes write() fail with
 * EFBIG after 4 KiB of a 64 KiB checkpoint. */
START_TEST(atomic_midway)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const char *p = tmp_path("ck.st");
    const tg_st_item old[] = {{"w", tg_full(ctx, TG_F32, TG_SHAPE(3), 4.0)}};
    ck_assert_int_eq(tg_st_save(ctx, p, old, 1, NULL, 0), TG_OK);
    size_t old_size, now_size;
    unsigned char *before = slurp(p, &old_size);

    const tg_st_item big[] = {{"w", big_tensor(ctx)}};
    struct rlimit saved, small;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    small = saved;
    small.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    int rc = tg_st_save(ctx, p, big, 1, NULL, 0);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, prev);

    ck_assert_int_eq(rc, TG_EIO);
    ck_error(ctx, TG_EIO, "is unchanged");
    unsigned char *after = slurp(p, &now_size);
    ck_assert_uint_eq(now_size, old_size);
    ck_assert_int_eq(memcmp(before, after, old_size), 0);
    ck_assert_int_eq(tmp_count(), 1); /* no temporary file left */
    free(before);
    free(after);
    tg_ctx_free(ctx);
}
END_TEST

/* Every allocation of a save failed in turn: TG_ENOMEM, the old file intact,
 * no temporary file, nothing leaked. */
START_TEST(atomic_oom)
{
    const char *p = tmp_path("ck.st");
    tg_ctx *ctx0 = tg_ctx_new(1);
    const tg_st_item old[] = {{"w", tg_full(ctx0, TG_F32, TG_SHAPE(3), 4.0)}};
    ck_assert_int_eq(tg_st_save(ctx0, p, old, 1, NULL, 0), TG_OK);
    tg_ctx_free(ctx0);
    size_t old_size;
    unsigned char *before = slurp(p, &old_size);
    int failures = 0;
    for (long k = 1;; k++) {
        test_alloc a = {0};
        tg_ctx *ctx = test_ctx_with(&a, 1);
        const tg_st_item big[] = {{"w", big_tensor(ctx)}};
        const tg_st_kv meta[] = {{"epoch", "2"}};
        a.fail_at = a.calls + k;
        int rc = tg_st_save(ctx, p, big, 1, meta, 1);
        bool failed = a.failed > 0;
        tg_ctx_free(ctx);
        ck_assert_int_eq(a.live_bytes, 0);
        ck_assert_int_eq(tmp_count(), 1);
        if (!failed) {
            ck_assert_int_eq(rc, TG_OK);
            break;
        }
        ck_assert_int_eq(rc, TG_ENOMEM);
        size_t now_size;
        unsigned char *after = slurp(p, &now_size);
        ck_assert(now_size == old_size && memcmp(before, after, old_size) == 0);
        free(after);
        failures++;
    }
    ck_assert_int_ge(failures, 2);
    free(before);
}
END_TEST

/* ------------------------------------------------------------ state dicts */

/* A file with a (2, 3) F32, b (4) F64, c () I64. */
static void save_abc(tg_ctx *ctx, const char *path)
{
    const tg_st_item items[] = {
        {"a", tg_from_f64(ctx, TG_F32, TG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6})},
        {"b", tg_from_f64(ctx, TG_F64, TG_SHAPE(4), (const double[]){.5, .25, .125, 8})},
        {"c", tg_full(ctx, TG_I64, 0, NULL, 42)}};
    ck_assert_int_eq(tg_st_save(ctx, path, items, 3, NULL, 0), TG_OK);
}

/* Destinations filled with -1, so that any write shows. */
static void fill_dest(tg_ctx *ctx, tg_tensor **d)
{
    d[0] = tg_param(ctx, TG_F32, TG_SHAPE(2, 3), "a");
    d[1] = tg_param(ctx, TG_F64, TG_SHAPE(4), "b");
    d[2] = tg_buffer(ctx, TG_I64, 0, NULL, "c");
    for (int i = 0; i < 3; i++)
        tg_fill(ctx, d[i], -1);
}

static void ck_untouched(tg_tensor **d, const uint64_t *versions)
{
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(d[i]->version, versions[i]);
        for (int64_t j = 0; j < d[i]->numel; j++)
            ck_assert_double_eq(tg_get(d[i], j), -1);
    }
}

START_TEST(statedict_strict)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const char *p = tmp_path("sd.st");
    save_abc(ctx, p);
    tg_tensor *d[3];
    fill_dest(ctx, d);
    uint64_t v[3] = {d[0]->version, d[1]->version, d[2]->version};

    /* strict without c: the first unexpected entry is named */
    const tg_st_item ab[] = {{NULL, d[0]}, {NULL, d[1]}};
    ck_assert_int_eq(tg_st_load_file(ctx, p, ab, 2, true), TG_EFORMAT);
    ck_error(ctx, TG_EFORMAT, "unexpected entry 'c'");
    ck_untouched(d, v);
    tg_clear_error(ctx);

    /* non-strict: a and b are loaded, c is ignored */
    ck_assert_int_eq(tg_st_load_file(ctx, p, ab, 2, false), TG_OK);
    ck_assert_double_eq(tg_get(d[0], 5), 6);
    ck_assert_double_eq(tg_get(d[1], 3), 8);
    ck_assert_uint_gt(d[0]->version, v[0]);
    ck_assert_uint_gt(d[1]->version, v[1]);
    ck_assert_uint_eq(d[2]->version, v[2]);

    /* strict with everything, names given explicitly */
    const tg_st_item all[] = {{"c", d[2]}, {"a", d[0]}, {"b", d[1]}};
    ck_assert_int_eq(tg_st_load_file(ctx, p, all, 3, true), TG_OK);
    ck_assert_double_eq(tg_get(d[2], 0), 42);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(statedict_mismatch)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const char *p = tmp_path("sd.st");
    save_abc(ctx, p);
    tg_tensor *d[3];
    fill_dest(ctx, d);
    uint64_t v[3] = {d[0]->version, d[1]->version, d[2]->version};
    tg_tensor *wrong_shape = tg_param(ctx, TG_F32, TG_SHAPE(3, 2), "a");
    tg_tensor *wrong_dtype = tg_param(ctx, TG_F32, TG_SHAPE(4), "b");
    tg_tensor *missing = tg_param(ctx, TG_F32, TG_SHAPE(4), "zz");
    const struct { tg_st_item items[3]; int code; const char *text; } cases[] = {
        {{{NULL, d[2]}, {NULL, wrong_shape}, {NULL, wrong_dtype}}, TG_ESHAPE,
         "'a' has shape (2, 3) in the file but (3, 2) in the tensor"},
        {{{NULL, d[0]}, {NULL, wrong_dtype}, {NULL, wrong_shape}}, TG_EDTYPE,
         "'b' is float64 in the file but float32 in the tensor"},
        {{{NULL, d[0]}, {NULL, missing}, {NULL, d[2]}}, TG_ENOTFOUND, "no entry 'zz' (item 1)"},
        {{{NULL, d[0]}, {NULL, d[1]}, {"a", d[0]}}, TG_EINVAL, "'a' is given twice"},
        {{{NULL, d[0]}, {NULL, d[1]}, {NULL, NULL}}, TG_EINVAL, "no tensor"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int strict = 0; strict < 2; strict++) {
            ck_assert_int_eq(tg_st_load_file(ctx, p, cases[i].items, 3, strict), cases[i].code);
            ck_error(ctx, cases[i].code, cases[i].text);
            ck_error(ctx, cases[i].code, p);
            ck_untouched(d, v);
            tg_clear_error(ctx);
        }
    }
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(read_into)
{
    tg_ctx *ctx = tg_ctx_new(1), *other = tg_ctx_new(1);
    save_abc(ctx, tmp_path("sd.st"));
    tg_st *f = tg_st_open(ctx, tmp_path("sd.st"));
    tg_tensor *d[3];
    fill_dest(ctx, d);
    uint64_t v = d[1]->version;
    ck_assert_int_eq(tg_st_read_into(ctx, f, "b", d[1]), TG_OK);
    ck_assert_double_eq(tg_get(d[1], 0), .5);
    ck_assert_uint_gt(d[1]->version, v);
    ck_assert_int_eq(tg_st_read_into(ctx, f, "a", d[1]), TG_ESHAPE);
    ck_error(ctx, TG_ESHAPE, "(2, 3) in the file but (4)");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_st_read_into(ctx, f, "c", tg_zeros(ctx, TG_F64, 0, NULL)), TG_EDTYPE);
    ck_error(ctx, TG_EDTYPE, "'c' is int64 in the file but float64");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_st_read_into(ctx, f, "q", d[1]), TG_ENOTFOUND);
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_st_read(ctx, f, "q"));
    ck_error(ctx, TG_ENOTFOUND, "no entry 'q'");
    tg_clear_error(ctx);
    ck_assert_int_eq(tg_st_read_into(other, f, "b", d[1]), TG_EINVAL);
    ck_error(other, TG_EINVAL, "another context");
    /* errors are sticky: nothing happens while one is held */
    ck_assert_ptr_null(tg_st_read(other, f, "b"));
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    tg_st_close(ctx, f);
    tg_ctx_free(other);
    tg_ctx_free(ctx);
}
END_TEST

/* The file shrinks after it was opened: reads fail with TG_EIO, and a
 * state-dict load writes nothing (it stages everything first). The file is
 * larger than stdio's buffer, so the lost bytes must be read again. */
START_TEST(io_error_after_open)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const char *p = tmp_path("io.st");
    const tg_st_item src[] = {{"a", tg_full(ctx, TG_F32, TG_SHAPE(2, 3), 5)},
                              {"big", big_tensor(ctx)}};
    ck_assert_int_eq(tg_st_save(ctx, p, src, 2, NULL, 0), TG_OK);
    tg_st *f = tg_st_open(ctx, p);
    ck_assert_ptr_nonnull(f);
    tg_tensor *a = tg_param(ctx, TG_F32, TG_SHAPE(2, 3), "a");
    tg_tensor *big = tg_param(ctx, TG_F64, TG_SHAPE(64, 128), "big");
    tg_fill(ctx, a, -1);
    uint64_t va = a->version;
    size_t size;
    free(slurp(p, &size));
    ck_assert_int_eq(truncate(p, (off_t)(size - 4)), 0);
    const tg_st_item items[] = {{NULL, a}, {NULL, big}};
    ck_assert_int_eq(tg_st_load(ctx, f, items, 2, true), TG_EIO);
    ck_error(ctx, TG_EIO, "entry 'big'");
    ck_error(ctx, TG_EIO, "the file is shorter");
    ck_assert_uint_eq(a->version, va);
    ck_assert_double_eq(tg_get(a, 0), -1);
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_st_read(ctx, f, "big"));
    ck_error(ctx, TG_EIO, p);
    tg_clear_error(ctx);
    ck_assert_double_eq(tg_get(tg_st_read(ctx, f, "a"), 5), 5); /* still within the file */
    tg_st_close(ctx, f);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ PyTorch fixtures */

static const struct lenet_entry {
    const char *name;
    tg_dtype dtype;
    int ndim;
    int64_t shape[4];
} lenet[] = {
    {"0.weight", TG_F32, 4, {6, 1, 5, 5}},  {"0.bias", TG_F32, 1, {6}},
    {"1.weight", TG_F32, 1, {6}},           {"1.bias", TG_F32, 1, {6}},
    {"1.running_mean", TG_F32, 1, {6}},     {"1.running_var", TG_F32, 1, {6}},
    {"1.num_batches_tracked", TG_I64, 0, {0}},
    {"4.weight", TG_F32, 4, {16, 6, 5, 5}}, {"4.bias", TG_F32, 1, {16}},
    {"5.weight", TG_F32, 1, {16}},          {"5.bias", TG_F32, 1, {16}},
    {"5.running_mean", TG_F32, 1, {16}},    {"5.running_var", TG_F32, 1, {16}},
    {"5.num_batches_tracked", TG_I64, 0, {0}},
    {"9.weight", TG_F32, 2, {32, 400}},     {"9.bias", TG_F32, 1, {32}},
    {"11.weight", TG_F32, 2, {10, 32}},     {"11.bias", TG_F32, 1, {10}},
};
enum { LENET_N = sizeof lenet / sizeof *lenet };

/* The model's parameters and buffers, named as PyTorch names them. */
static void lenet_model(tg_ctx *ctx, tg_st_item *items)
{
    for (int k = 0; k < LENET_N; k++) {
        const struct lenet_entry *e = &lenet[k];
        bool buffer = strstr(e->name, "running") || strstr(e->name, "num_batches");
        items[k].name = NULL;
        items[k].tensor = buffer ? tg_buffer(ctx, e->dtype, e->ndim, e->shape, e->name)
                                 : tg_param(ctx, e->dtype, e->ndim, e->shape, e->name);
        ck_assert_ptr_nonnull(items[k].tensor);
    }
}

START_TEST(torch_lenet)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_st *f = tg_st_open(ctx, fixture("torch_lenet.safetensors"));
    ck_assert_msg(f != NULL, "%s", tg_errmsg(ctx));
    ck_assert_str_eq(tg_st_metadata(f, "format"), "pt");
    FILE *txt = fopen(fixture("torch_lenet.txt"), "r");
    ck_assert_ptr_nonnull(txt);
    char line[1024];
    size_t k = 0;
    while (fgets(line, sizeof line, txt)) {
        if (line[0] == '#')
            continue;
        char name[64], dt[8];
        int ndim, used;
        ck_assert_int_eq(sscanf(line, "%63s %7s %d%n", name, dt, &ndim, &used), 3);
        const char *s = line + used;
        char *end;
        const tg_st_entry *e = tg_st_entry_at(f, k++);
        ck_assert_ptr_nonnull(e);
        ck_assert_str_eq(e->name, name); /* file order is state_dict order */
        ck_assert_str_eq(dt, e->dtype == TG_F32 ? "F32" : e->dtype == TG_F64 ? "F64" : "I64");
        ck_assert_int_eq(e->ndim, ndim);
        for (int d = 0; d < ndim; d++, s = end)
            ck_assert_int_eq(e->shape[d], strtoll(s, &end, 10));
        ck_assert_int_eq(e->numel, strtoll(s, &end, 10));
        double want_sum = strtod(end, &end), sum = 0;
        tg_tensor *t = tg_st_read(ctx, f, name);
        ck_assert_ptr_nonnull(t);
        for (int64_t i = 0; i < t->numel; i++)
            sum += tg_get(t, i);
        ck_close(sum, want_sum, 1e-12);
        for (s = end; *s && *s != '\n';) {
            int64_t i = strtoll(s, &end, 10);
            double want = strtod(end, &end);
            ck_assert_msg(tg_get(t, i) == want, "%s[%lld] = %.17g, expected %.17g", name,
                          (long long)i, tg_get(t, i), want);
            s = end;
            while (*s == ' ')
                s++;
        }
    }
    fclose(txt);
    ck_assert_uint_eq(k, LENET_N);
    ck_assert_uint_eq(tg_st_count(f), LENET_N);

    /* the whole state dict into the model, strictly */
    tg_st_item items[LENET_N];
    lenet_model(ctx, items);
    ck_assert_int_eq(tg_st_load(ctx, f, items, LENET_N, true), TG_OK);
    ck_assert_double_eq(tg_get(items[6].tensor, 0), 3); /* 1.num_batches_tracked */
    ck_assert_int_eq(memcmp(items[14].tensor->data, tg_st_read(ctx, f, "9.weight")->data,
                            32 * 400 * 4), 0);
    tg_st_close(ctx, f);
    tg_ctx_free(ctx);
}
END_TEST

/* The tapegrad-written checkpoint that lenet_torch.py check loads into
 * PyTorch: value i of tensor k is ((37 i + 11 k) mod 101 - 50) / 64 (exact
 * in float32), int64 buffers hold 5000000000 + k. Saved again here and
 * compared byte for byte, so the committed file is what tg_st_save writes. */
START_TEST(tapegrad_lenet)
{
    tg_ctx *ctx = tg_ctx_new(1);
    tg_st_item items[LENET_N];
    lenet_model(ctx, items);
    for (int k = 0; k < LENET_N; k++) {
        tg_tensor *t = items[k].tensor;
        for (int64_t i = 0; i < t->numel; i++)
            tg_set(t, i, t->dtype == TG_I64 ? 5000000000.0 + k
                                            : (double)((i * 37 + k * 11) % 101 - 50) / 64.0);
    }
    const tg_st_kv meta[] = {{"producer", "tapegrad"}, {"epoch", "7"}};
    const char *regen = getenv("TG_REGEN_FIXTURES");
    const char *out = regen && *regen == '1' ? fixture("tapegrad_lenet.safetensors")
                                             : tmp_path("tapegrad_lenet.safetensors");
    ck_assert_int_eq(tg_st_save(ctx, out, items, LENET_N, meta, 2), TG_OK);
    size_t n_got, n_want;
    unsigned char *got = slurp(out, &n_got);
    unsigned char *want = slurp(fixture("tapegrad_lenet.safetensors"), &n_want);
    ck_assert_uint_eq(n_got, n_want);
    ck_assert_int_eq(memcmp(got, want, n_got), 0);
    free(got);
    free(want);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ malformed files */

START_TEST(truncated_prefixes)
{
    tg_ctx *ctx = tg_ctx_new(1);
    const char *p = tmp_path("t.st");
    save_abc(ctx, p);
    size_t size;
    unsigned char *raw = slurp(p, &size);
    tg_st *ok = tg_st_open_buffer(ctx, raw, size);
    ck_assert_ptr_nonnull(ok);
    tg_st_close(ctx, ok);
    for (size_t len = 0; len < size; len++) {
        ck_assert_ptr_null(tg_st_open_buffer(ctx, raw, len));
        ck_assert_int_eq(tg_errcode(ctx), TG_EFORMAT);
        tg_clear_error(ctx);
        spit(p, raw, len);
        ck_assert_ptr_null(tg_st_open(ctx, p));
        ck_error(ctx, TG_EFORMAT, p);
        tg_clear_error(ctx);
    }
    /* one byte too many is as wrong as one too few */
    unsigned char *longer = calloc(1, size + 1);
    memcpy(longer, raw, size);
    ck_assert_ptr_null(tg_st_open_buffer(ctx, longer, size + 1));
    ck_error(ctx, TG_EFORMAT, "the entries cover");
    free(longer);
    free(raw);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(bad_framing)
{
    tg_ctx *ctx = tg_ctx_new(1);
    size_t size;
    unsigned char *b = raw_file("{}", 0, 1, &size); /* length one past the end */
    ck_assert_ptr_null(tg_st_open_buffer(ctx, b, size));
    ck_error(ctx, TG_EFORMAT, "header length 3 exceeds the 2 bytes after it");
    tg_clear_error(ctx);
    free(b);
    b = raw_file("", 4, 0, &size);
    ck_assert_ptr_null(tg_st_open_buffer(ctx, b, size));
    ck_error(ctx, TG_EFORMAT, "a header of 0 bytes");
    tg_clear_error(ctx);
    free(b);
    b = raw_file("{}", 0, -(int64_t)2 - 1, &size); /* 2^64 - 1 */
    ck_assert_ptr_null(tg_st_open_buffer(ctx, b, size));
    ck_error(ctx, TG_EFORMAT, "header length 18446744073709551615 exceeds");
    tg_clear_error(ctx);
    free(b);
    /* within the file but above the 100 MB cap */
    size = 8 + TG_ST_MAX_HEADER + 1;
    b = calloc(1, size);
    ck_assert_ptr_nonnull(b);
    uint64_t n = TG_ST_MAX_HEADER + 1;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(n >> (8 * i));
    ck_assert_ptr_null(tg_st_open_buffer(ctx, b, size));
    ck_error(ctx, TG_EFORMAT, "exceeds the limit of 100000000");
    tg_clear_error(ctx);
    free(b);
    ck_assert_ptr_null(tg_st_open_buffer(ctx, NULL, 0));
    ck_error(ctx, TG_EFORMAT, "0 bytes, too short");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_st_open(ctx, tmp_path("absent.st")));
    ck_error(ctx, TG_ENOTFOUND, "absent.st");
    tg_clear_error(ctx);
    ck_assert_ptr_null(tg_st_open(ctx, tmp_dir));
    ck_error(ctx, TG_EIO, "not a regular file");
    tg_ctx_free(ctx);
}
END_TEST

#define E(name, dtype, shape, b, e) \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static const struct bad_header {
    const char *json;
    size_t data;
    int code;
    const char *text;
} bad_headers[] = {
    {"{" E("h", "F16", "[2]", 0, 4) "}", 4, TG_EDTYPE, "entry 'h' has dtype F16"},
    {"{" E("b", "BF16", "[2]", 0, 4) "}", 4, TG_EDTYPE, "entry 'b' has dtype BF16"},
    {"{" E("i", "I32", "[1]", 0, 4) "}", 4, TG_EDTYPE, "entry 'i' has dtype I32"},
    {"{" E("u", "U8", "[8]", 0, 8) "}", 8, TG_EDTYPE, "entry 'u' has dtype U8"},
    {"{" E("x", "F33", "[1]", 0, 4) "}", 4, TG_EFORMAT, "entry 'x' has an unknown dtype 'F33'"},
    {"{\"x\":{\"dtype\":5,\"shape\":[],\"data_offsets\":[0,4]}}", 4, TG_EFORMAT,
     "entry 'x': dtype is a JSON integer"},
    {"{" E("a", "F32", "[2]", 0, 8) "," E("b", "F32", "[2]", 4, 12) "}", 12, TG_EFORMAT,
     "entry 'b' starts at data byte 4, but the entries before it end at 8 (an overlap)"},
    {"{" E("a", "F32", "[1]", 0, 4) "," E("b", "F32", "[1]", 8, 12) "}", 12, TG_EFORMAT,
     "entry 'b' starts at data byte 8, but the entries before it end at 4 (a gap)"},
    {"{" E("a", "F32", "[1]", 4, 8) "}", 8, TG_EFORMAT, "entry 'a' starts at data byte 4"},
    {"{" E("a", "F32", "[1]", 0, 4) "," E("b", "F32", "[1]", 0, 4) "}", 8, TG_EFORMAT,
     "an overlap"},
    {"{" E("a", "F32", "[4]", 0, 16) "}", 8, TG_EFORMAT, "entry 'a': data_offsets [0, 16] do not fit the 8"},
    {"{" E("a", "F32", "[1]", 8, 4) "}", 8, TG_EFORMAT, "entry 'a': data_offsets [8, 4]"},
    {"{" E("a", "F32", "[1]", 0, 4) "}", 8, TG_EFORMAT, "the entries cover 4 data bytes, but the file has 8"},
    {"{" E("a", "F32", "[-1]", 0, 4) "}", 4, TG_EFORMAT, "entry 'a': shape[0] is not a non-negative"},
    {"{" E("a", "F32", "[2.0]", 0, 8) "}", 8, TG_EFORMAT, "entry 'a': shape[0] is not"},
    {"{" E("a", "F32", "[1e30]", 0, 4) "}", 4, TG_EFORMAT, "entry 'a': shape[0] is not"},
    {"{" E("a", "F32", "[\"2\"]", 0, 8) "}", 8, TG_EFORMAT, "entry 'a': shape[0] is not"},
    {"{" E("a", "F32", "[99999999999999999999]", 0, 4) "}", 4, TG_EFORMAT, "not valid JSON"},
    {"{" E("a", "F32", "[4294967296,4294967296,4294967296]", 0, 4) "}", 4, TG_EFORMAT,
     "entry 'a': the element count overflows"},
    {"{" E("a", "F64", "[2305843009213693952]", 0, 8) "}", 8, TG_EFORMAT,
     "entry 'a': 2305843009213693952 elements of F64 do not fill its 8 bytes"},
    {"{" E("a", "F32", "[1,1,1,1,1,1,1]", 0, 4) "}", 4, TG_EFORMAT,
     "entry 'a': shape has 7 dimensions, at most 6"},
    {"{" E("a", "F32", "{}", 0, 4) "}", 4, TG_EFORMAT, "entry 'a': shape is a JSON object"},
    {"{" E("a", "F32", "[3]", 0, 8) "}", 8, TG_EFORMAT, "entry 'a': 3 elements of F32 do not fill its 8 bytes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, TG_EFORMAT,
     "entry 'a': data_offsets is not two"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, TG_EFORMAT,
     "entry 'a': data_offsets is not two"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4, TG_EFORMAT,
     "entry 'a': data_offsets is not two"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, TG_EFORMAT, "entry 'a' has no data_offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, TG_EFORMAT,
     "entry 'a' has an unknown field 'x'"},
    {"{\"a\":[1]}", 0, TG_EFORMAT, "entry 'a' is a JSON array, not an object"},
    {"[1, 2]", 0, TG_EFORMAT, "header is a JSON array, not an object"},
    {"\"string\"", 0, TG_EFORMAT, "not valid JSON"},
    {"{\"a\":", 0, TG_EFORMAT, "not valid JSON"},
    {"{}  x", 0, TG_EFORMAT, "not valid JSON"},
    {"{" E("dup", "F32", "[1]", 0, 4) "," E("dup", "F32", "[1]", 4, 8) "}", 8, TG_EFORMAT,
     "duplicate object key"},
    {"{" E("dup", "F32", "[1]", 0, 4) "," E("dup", "F32", "[1]", 4, 8) "}", 8, TG_EFORMAT,
     "duplicate object key near '\"dup\"'"},
    {"{\"a\\u0000b\":{}}", 0, TG_EFORMAT, "not valid JSON"},
    {"{\"\xff\":{}}", 0, TG_EFORMAT, "not valid JSON"},
    {"{\"__metadata__\":[]}", 0, TG_EFORMAT, "__metadata__ is a JSON array"},
    {"{\"__metadata__\":{\"k\":1}}", 0, TG_EFORMAT, "__metadata__ entry 'k' is a JSON integer"},
    {"{\"q\\\"uote\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[0,2]}}", 2, TG_EDTYPE,
     "entry 'q\"uote' has dtype F16"},
};

START_TEST(bad_header)
{
    const struct bad_header *c = &bad_headers[_i];
    tg_ctx *ctx = tg_ctx_new(1);
    size_t size;
    unsigned char *b = raw_file(c->json, c->data, 0, &size);
    ck_assert_ptr_null(tg_st_open_buffer(ctx, b, size));
    ck_error(ctx, c->code, c->text);
    ck_error(ctx, c->code, "<buffer>");
    tg_clear_error(ctx);
    spit(tmp_path("bad.st"), b, size);
    ck_assert_ptr_null(tg_st_open(ctx, tmp_path("bad.st")));
    ck_error(ctx, c->code, c->text);
    ck_error(ctx, c->code, "bad.st");
    free(b);
    tg_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------ out of memory */

/* Every allocation of open + state-dict load + read failed in turn, from a
 * file and from a buffer: TG_ENOMEM, and nothing leaks. */
START_TEST(oom_load)
{
    tg_ctx *ctx0 = tg_ctx_new(1);
    const char *p = tmp_path("sd.st");
    save_abc(ctx0, p);
    tg_ctx_free(ctx0);
    size_t size;
    unsigned char *raw = slurp(p, &size);
    for (int from_file = 0; from_file < 2; from_file++) {
        int failures = 0;
        for (long k = 1;; k++) {
            test_alloc a = {0};
            tg_ctx *ctx = test_ctx_with(&a, 1);
            tg_tensor *d[3];
            fill_dest(ctx, d);
            const tg_st_item items[] = {{NULL, d[0]}, {NULL, d[1]}, {NULL, d[2]}};
            a.fail_at = a.calls + k;
            tg_st *f = from_file ? tg_st_open(ctx, p) : tg_st_open_buffer(ctx, raw, size);
            if (tg_st_load(ctx, f, items, 3, true) != TG_OK)
                ck_assert_double_eq(tg_get(d[1], 0), -1); /* nothing written */
            tg_st_read(ctx, f, "b");
            tg_st_close(ctx, f);
            int rc = tg_errcode(ctx);
            bool failed = a.failed > 0;
            tg_ctx_free(ctx);
            ck_assert_int_eq(a.live_bytes, 0);
            if (!failed) {
                ck_assert_int_eq(rc, TG_OK);
                break;
            }
            ck_assert_int_eq(rc, TG_ENOMEM);
            failures++;
        }
        ck_assert_int_ge(failures, 5);
    }
    free(raw);
}
END_TEST

static void tcase(Suite *s, const char *name, const TTest *const *tests, size_t n)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_set_timeout(tc, 60);
    for (size_t i = 0; i < n; i++)
        tcase_add_test(tc, tests[i]);
    suite_add_tcase(s, tc);
}

#define TCASE(s, name, ...)                                                           \
    tcase(s, name, (const TTest *const[]){__VA_ARGS__},                               \
          sizeof((const TTest *const[]){__VA_ARGS__}) / sizeof(const TTest *))

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCASE(s, "roundtrip", roundtrip_dtypes, roundtrip_metadata, roundtrip_names, header_layout,
          save_errors);
    TCASE(s, "atomic", atomic_midway, atomic_oom);
    TCASE(s, "statedict", statedict_strict, statedict_mismatch, read_into, io_error_after_open);
    TCASE(s, "torch", torch_lenet, tapegrad_lenet);
    TCASE(s, "malformed", truncated_prefixes, bad_framing);
    TCASE(s, "oom", oom_load);
    TCase *bad = tcase_create("malformed_headers");
    tcase_add_checked_fixture(bad, tmp_setup, tmp_teardown);
    suite_add_tcase(s, bad);
    tcase_add_loop_test(bad, bad_header, 0, (int)(sizeof bad_headers / sizeof *bad_headers));
    return s;
}
