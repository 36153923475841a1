/*
 * tapegrad/data.h: data sets stored as IDX files (MNIST, Fashion-MNIST),
 * shuffling, and mini-batches as tensors.
 *
 * An epoch of Fashion-MNIST in mini-batches of 64, as PyTorch's
 * DataLoader(dataset, batch_size=64, shuffle=True) with ToTensor():
 *
 *   tg_dataset *train = tg_fashion_mnist(ctx, NULL, "train");
 *   for (int epoch = 0; train && epoch < 10; epoch++) {
 *       tg_dataset_shuffle(ctx, train);
 *       for (int64_t i = 0; i < train->n; i += 64) {
 *           tg_tensor *x, *y;                        // (B, 1, 28, 28), (B)
 *           if (tg_dataset_batch(ctx, train, i, 64, TG_F32, TG_LAYOUT_IMAGE, &x, &y))
 *               break;
 *           ... forward, tg_cross_entropy(ctx, logits, y), backward, step ...
 *           tg_reset(ctx);                           // x and y die here
 *       }
 *   }
 *   if (tg_errcode(ctx)) fprintf(stderr, "%s\n", tg_errmsg(ctx));
 *   tg_dataset_free(ctx, train);
 *
 * The pixels stay in memory as bytes (47 MB for the 60000 training images);
 * a batch converts only its own examples, to x = byte / 255 in [0, 1]. The
 * last batch of an epoch may be smaller than asked (drop_last=False).
 *
 * Files are untrusted: every reader validates the header (magic, element
 * type, number of dimensions, each dimension, the size's arithmetic) and
 * the data length against the file, and fails with TG_EFORMAT and a message
 * naming the file and the numbers. Memory is never reserved on the word of a
 * header: the data buffer starts at 64 KiB at most and doubles as data
 * actually arrives, so a 40-byte file claiming gigabytes costs 64 KiB before
 * it is refused. Every allocation, zlib's included, goes through the
 * context's allocator hook.
 */
#ifndef TAPEGRAD_DATA_H
#define TAPEGRAD_DATA_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- IDX files */

/* IDX element types (the third byte of the magic number). */
typedef enum tg_idx_type {
    TG_IDX_U8 = 0x08,  /* unsigned byte (MNIST's pixels and labels) */
    TG_IDX_I8 = 0x09,  /* signed byte */
    TG_IDX_I16 = 0x0B, /* short, 2 bytes */
    TG_IDX_I32 = 0x0C, /* int, 4 bytes */
    TG_IDX_F32 = 0x0D, /* float, 4 bytes */
    TG_IDX_F64 = 0x0E  /* double, 8 bytes */
} tg_idx_type;

/* The most dimensions an IDX file may declare (the fourth magic byte). */
#define TG_IDX_MAX_DIMS 6

/* An IDX file read into memory. */
typedef struct tg_idx {
    tg_idx_type type;
    int ndim;                      /* 1 .. TG_IDX_MAX_DIMS */
    int64_t dims[TG_IDX_MAX_DIMS]; /* dims[0..ndim-1], each >= 1; the rest 0 */
    int64_t count;                 /* elements: the product of the dims */
    size_t elem_size;              /* bytes per element: 1, 2, 4 or 8 */
    void *data;                    /* count elements, row-major, in host byte order */
    size_t bytes;                  /* count * elem_size */
} tg_idx;

/* "ubyte", "byte", "short", "int", "float", "double"; "?" for anything else. */
TG_API const char *tg_idx_type_name(int type);

/*
 * Reads the IDX file at path into *out, plain or gzip-compressed (told
 * apart by the gzip magic 1f 8b; concatenated gzip members are read as one
 * stream). All six IDX element types are read; big-endian values are
 * converted to host order. Errors (out is then zeroed and nothing is held):
 * TG_ENOTFOUND (no such file), TG_EIO (cannot open or read), TG_EFORMAT
 * (bad magic, unknown type, ndim 0 or above TG_IDX_MAX_DIMS, a zero
 * dimension, a size that overflows, a corrupt or truncated gzip stream,
 * data shorter or longer than the dims say), TG_ENOMEM, TG_EINVAL (NULL
 * arguments). out->data is allocated from ctx's hook and owned by the
 * caller: free it with tg_idx_free (or it leaks from ctx's accounting).
 */
TG_API tg_status tg_idx_read(tg_ctx *ctx, const char *path, tg_idx *out);

/* As tg_idx_read, from size bytes at buf (plain or gzip). name labels the
 * buffer in error messages (NULL: "<memory>"). buf is not kept. */
TG_API tg_status tg_idx_read_mem(tg_ctx *ctx, const void *buf, size_t size, const char *name,
                                 tg_idx *out);

/* Frees idx->data and zeroes *idx. A zeroed tg_idx or NULL is a no-op. */
TG_API void tg_idx_free(tg_ctx *ctx, tg_idx *idx);

/* ---------------------------------------------------------------- data sets */

/*
 * A labelled image data set. Fields are read-only for the caller (change
 * them only through the calls below). Example i has pixels
 * images[i*height*width .. (i+1)*height*width), row by row, and class
 * labels[i] < classes.
 */
typedef struct tg_dataset {
    int64_t n;        /* examples */
    int64_t height;
    int64_t width;
    int classes;      /* labels lie in [0, classes) */
    uint8_t *images;  /* n * height * width pixel bytes */
    uint8_t *labels;  /* n class bytes */
    int64_t *order;   /* n example indices, the order tg_dataset_batch visits;
                         0, 1, ..., n-1 after loading; tg_dataset_shuffle permutes it */
} tg_dataset;

/*
 * Loads a data set from an IDX image file (unsigned bytes, dims (N, H, W))
 * and an IDX label file (unsigned bytes, dims (N)), each plain or gzip.
 * classes is the number of classes, 1..256; 0 means 10. Errors: those of
 * tg_idx_read, and TG_EFORMAT when a file has another element type or
 * number of dimensions, when the two files disagree on N, or when a label
 * is >= classes (the message names the first such example); TG_EINVAL for
 * NULL paths or classes out of range. Returns NULL on error. The data set
 * is owned by the caller; free it with tg_dataset_free before ctx.
 */
TG_API tg_dataset *tg_dataset_from_idx(tg_ctx *ctx, const char *images_path,
                                       const char *labels_path, int classes);

/* As tg_dataset_from_idx, from two buffers holding the files' bytes. */
TG_API tg_dataset *tg_dataset_from_mem(tg_ctx *ctx, const void *images, size_t images_size,
                                       const void *labels, size_t labels_size, int classes);

/*
 * Fashion-MNIST (or MNIST: the file names are the same) from directory dir
 * (NULL: TG_FASHION_MNIST_DIR, where Debian's dataset-fashion-mnist package
 * puts it). split is "train" (60000 examples) or "test" (10000), reading
 * <train|t10k>-images-idx3-ubyte and -labels-idx1-ubyte, each with or
 * without .gz. 10 classes. Errors: TG_ENOTFOUND naming the directory and
 * the package to install when the files are missing, TG_EINVAL for
 * another split or a path too long, and those of tg_dataset_from_idx.
 */
#define TG_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
TG_API tg_dataset *tg_fashion_mnist(tg_ctx *ctx, const char *dir, const char *split);

/* Frees the data set and everything it holds. NULL is a no-op. */
TG_API void tg_dataset_free(tg_ctx *ctx, tg_dataset *ds);

/* ---------------------------------------------------------------- shuffling, batches */

/*
 * Shuffles values[0..n) in place with the context RNG (Fisher-Yates; each
 * index is drawn as floor(u * (i + 1)) from a 53-bit uniform u, so the bias
 * is below n / 2^53). The same seed and the same calls give the same order.
 * TG_EINVAL for NULL values with n > 0 or n < 0.
 */
TG_API tg_status tg_shuffle(tg_ctx *ctx, int64_t *values, int64_t n);

/* Resets ds->order to 0, 1, ..., n-1 and shuffles it with tg_shuffle, so an
 * epoch's order depends only on the RNG state. Call it once per epoch. */
TG_API tg_status tg_dataset_shuffle(tg_ctx *ctx, tg_dataset *ds);

/* The shape of the images in a batch. */
typedef enum tg_layout {
    TG_LAYOUT_IMAGE = 0, /* (B, 1, H, W), for convolutions */
    TG_LAYOUT_FLAT = 1   /* (B, H * W), for linear layers (the same values) */
} tg_layout;

/*
 * Makes one mini-batch of the examples ds->order[start .. start + B), where
 * B = min(batch, n - start): *x gets their pixels as dtype (TG_F32 or
 * TG_F64), each byte / 255 exactly as torchvision's ToTensor, in layout;
 * *y gets their labels as int64 of shape (B). Both are new step tensors
 * (they die at tg_reset; after the first step of a shape the arena serves
 * them without allocating); nothing else is copied. Errors, with *x and *y
 * set to NULL: TG_EINVAL (NULL arguments, start outside [0, n), batch < 1,
 * an unknown layout, an order entry outside [0, n)), TG_EDTYPE (dtype not
 * float), TG_ENOMEM.
 */
TG_API tg_status tg_dataset_batch(tg_ctx *ctx, const tg_dataset *ds, int64_t start,
                                  int64_t batch, tg_dtype dtype, tg_layout layout,
                                  tg_tensor **x, tg_tensor **y);

#ifdef __cplusplus
}
#endif
#endif
