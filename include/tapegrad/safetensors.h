/*
 * tapegrad/safetensors.h: checkpoints in the safetensors format.
 *
 * A safetensors file is an 8-byte little-endian header length N, N bytes
 * of JSON, then the raw little-endian data of every tensor:
 *
 *   {"__metadata__": {"epoch": "3"},
 *    "0.weight": {"dtype": "F32", "shape": [6, 1, 5, 5], "data_offsets": [0, 600]},
 *    ...}
 *
 * with offsets counted from the end of the header. PyTorch's state_dict
 * names ("0.weight", "1.running_mean") are the keys, so weights move both
 * ways between tapegrad and PyTorch. F32, F64 and I64 map to tapegrad's
 * dtypes; a file holding any other dtype (F16, BF16, I32, U8, ...) is
 * refused with TG_EDTYPE.
 *
 * Saving a model and loading it back into the same tensors:
 *
 *   tg_tensor *w = tg_param(ctx, TG_F32, TG_SHAPE(10, 84), "fc.weight");
 *   tg_tensor *n = tg_buffer(ctx, TG_I64, 0, NULL, "bn.num_batches_tracked");
 *   const tg_st_item state[] = {{NULL, w}, {NULL, n}};   // NULL: the tensor's own name
 *   const tg_st_kv meta[] = {{"epoch", "3"}};
 *   tg_st_save(ctx, "model.safetensors", state, 2, meta, 1);
 *   ...
 *   if (tg_st_load_file(ctx, "model.safetensors", state, 2, true) != TG_OK)
 *       fprintf(stderr, "%s\n", tg_errmsg(ctx));  // e.g. the first shape mismatch
 *
 * Reading a file entry by entry:
 *
 *   tg_st *f = tg_st_open(ctx, "model.safetensors");
 *   for (size_t i = 0; f && i < tg_st_count(f); i++)
 *       printf("%s\n", tg_st_entry_at(f, i)->name);
 *   tg_tensor *x = tg_st_read(ctx, f, "fc.weight");      // a step tensor
 *   tg_st_close(ctx, f);
 *
 * Files are untrusted: opening one validates the whole header against the
 * file's size (header length at most 100 MB and within the file; JSON that
 * is an object; each entry exactly {dtype, shape, data_offsets} with a
 * supported dtype, a shape of at most TG_MAX_DIMS non-negative integers
 * whose byte size does not overflow and equals its byte range; no
 * duplicate names; the byte ranges, sorted, tile the data section from 0
 * to its end without gap or overlap). Errors are TG_EFORMAT for a
 * malformed file, TG_EDTYPE for an unsupported dtype, TG_ENOTFOUND for a
 * missing file, TG_EIO for a failed read or write; each message names the
 * file and the entry.
 *
 * Only little-endian hosts are supported (the format stores little-endian
 * data, read and written as it is): on a big-endian host every call fails
 * with TG_ENOTSUP.
 */
#ifndef TAPEGRAD_SAFETENSORS_H
#define TAPEGRAD_SAFETENSORS_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest header accepted, as in the reference implementation. */
#define TG_ST_MAX_HEADER 100000000u

/* An open, validated safetensors file (or buffer). */
typedef struct tg_st tg_st;

/* One tensor of a file, as its header describes it. */
typedef struct tg_st_entry {
    const char *name;              /* UTF-8, NUL-terminated, owned by the tg_st */
    tg_dtype dtype;
    int ndim;                      /* 0 (a scalar) .. TG_MAX_DIMS */
    int64_t shape[TG_MAX_DIMS];    /* shape[0..ndim-1]; the rest are 1 */
    int64_t numel;
    uint64_t begin, end;           /* byte range in the data section */
} tg_st_entry;

/* A (name, tensor) pair of a state dict. name NULL: the tensor's own name. */
typedef struct tg_st_item {
    const char *name;
    tg_tensor *tensor;
} tg_st_item;

/* A metadata entry ("__metadata__" in the header): both strings UTF-8. */
typedef struct tg_st_kv {
    const char *key;
    const char *value;
} tg_st_kv;

/*
 * Opens a safetensors file and validates its header (see above). Only the
 * header is read now; the file stays open for tg_st_read* until
 * tg_st_close. Returns NULL with an error in the context (TG_ENOTFOUND,
 * TG_EIO, TG_EFORMAT, TG_EDTYPE, TG_ENOMEM, or one already held).
 * The handle is the caller's: close it with tg_st_close before freeing ctx.
 */
TG_API tg_st *tg_st_open(tg_ctx *ctx, const char *path);

/*
 * As tg_st_open, on size bytes in memory (fuzzing, files already read).
 * The bytes are not copied: they must stay valid and unchanged until
 * tg_st_close. Messages call the file "<buffer>".
 */
TG_API tg_st *tg_st_open_buffer(tg_ctx *ctx, const void *data, size_t size);

/* Closes the file and frees the handle and everything it owns (entry
 * names and metadata strings die here). NULL is a no-op. Works whatever
 * error the context holds. */
TG_API void tg_st_close(tg_ctx *ctx, tg_st *f);

/* The number of tensors in the file (the metadata is not one). */
TG_API size_t tg_st_count(const tg_st *f);

/* The i-th tensor, in the order of the header's keys; NULL when i is out
 * of range. Owned by f. */
TG_API const tg_st_entry *tg_st_entry_at(const tg_st *f, size_t i);

/* The tensor called name, or NULL (no error is raised: use it to probe).
 * O(log n). Owned by f. */
TG_API const tg_st_entry *tg_st_find(const tg_st *f, const char *name);

/* The number of metadata entries and the i-th, in the header's order
 * (NULL out of range); owned by f. */
TG_API size_t tg_st_metadata_count(const tg_st *f);
TG_API const tg_st_kv *tg_st_metadata_at(const tg_st *f, size_t i);

/* The metadata value of key, or NULL when there is none. Owned by f. */
TG_API const char *tg_st_metadata(const tg_st *f, const char *key);

/*
 * Reads the entry called name into a new step tensor of its dtype and
 * shape, named after it; it dies at tg_reset. NULL with an error:
 * TG_ENOTFOUND for no such entry, TG_EIO for a failed read, TG_ENOMEM.
 */
TG_API tg_tensor *tg_st_read(tg_ctx *ctx, tg_st *f, const char *name);

/*
 * Reads the entry called name into dst, an existing tensor of ctx (a
 * parameter, a buffer, a step tensor) that must have exactly the entry's
 * dtype (TG_EDTYPE) and shape (TG_ESHAPE); bumps dst's version. On any
 * error dst is left as it was.
 */
TG_API tg_status tg_st_read_into(tg_ctx *ctx, tg_st *f, const char *name, tg_tensor *dst);

/*
 * Loads a state dict: for each of the n items (in order), the entry of
 * that name must exist (TG_ENOTFOUND) with the tensor's shape (TG_ESHAPE)
 * and dtype (TG_EDTYPE); when strict, the file may hold no other entry
 * (TG_EFORMAT, naming the first such entry in file order). The first
 * mismatch is reported by name with both shapes or dtypes. All checks are
 * made, and all data read, before any tensor is written: on any error
 * (TG_EIO and TG_ENOMEM included) no tensor changes. A name given twice
 * or a tensor without a name is TG_EINVAL. Every loaded tensor's version
 * is bumped.
 */
TG_API tg_status tg_st_load(tg_ctx *ctx, tg_st *f, const tg_st_item *items, size_t n,
                            bool strict);

/* tg_st_open + tg_st_load + tg_st_close. */
TG_API tg_status tg_st_load_file(tg_ctx *ctx, const char *path, const tg_st_item *items,
                                 size_t n, bool strict);

/*
 * Saves the n items (name, or the tensor's own name when NULL) and the
 * n_meta metadata pairs (meta may be NULL when n_meta is 0) as a
 * safetensors file at path. Keys appear in the order given, metadata
 * first; the header is padded with spaces to a multiple of 8 bytes; the
 * data follows in the same order, contiguous.
 * The file is written to a temporary file in the same directory, flushed
 * to disk (fsync) and renamed over path, so a crash or a failure never
 * leaves a half-written checkpoint at path, and on any error the old file
 * is left intact and no temporary file remains.
 * Errors: TG_EINVAL (NULL or foreign tensor, missing, duplicate, non-UTF-8
 * or reserved "__metadata__" name, bad metadata string), TG_EIO (the
 * write, flush or rename failed), TG_ENOMEM.
 */
TG_API tg_status tg_st_save(tg_ctx *ctx, const char *path, const tg_st_item *items, size_t n,
                            const tg_st_kv *meta, size_t n_meta);

#ifdef __cplusplus
}
#endif
#endif
