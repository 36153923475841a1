/*
 * ops_impl.h: the ops' private header (ops/). Builds on the engine's
 * (autograd/impl.h); the engine never includes this one.
 */
#ifndef TAPEGRAD_OPS_IMPL_H
#define TAPEGRAD_OPS_IMPL_H

#include "impl.h"

/* ---- the built-in ops, one line each in ops/builtin.def */
#define TG__BUILTIN(name) extern const tg_op tg__op_##name;
#include "builtin.def"
#undef TG__BUILTIN

/* ---- ops/broadcast.c: NumPy broadcasting of up to three operands */
typedef struct tg__bcast {
    int ndim;                           /* of the output */
    int64_t shape[TG_MAX_DIMS];         /* the output shape */
    int64_t stride[3][TG_MAX_DIMS];     /* element strides; 0 on broadcast dims */
    int64_t numel;
} tg__bcast;

/* The broadcast shape of a and b, or an error naming the op. */
tg_status tg__bcast_shape(tg_ctx *ctx, const char *who, const tg_tensor *a, const tg_tensor *b,
                          int *ndim, int64_t *shape);
/* Strides of operands out (0), a (1), b (2) over out's shape. b may be NULL. */
void tg__bcast_init(tg__bcast *it, const tg_tensor *out, const tg_tensor *a, const tg_tensor *b);
/* Calls row() for each innermost row: n elements, each operand's offset of
 * the row's first element, and its stride along the row. */
typedef void (*tg__row_fn)(void *ud, int64_t n, const int64_t off[3], const int64_t inc[3]);
void tg__bcast_rows(const tg__bcast *it, tg__row_fn row, void *ud);

/* ---- threads (ops/threads.c). A loop over fewer elements than
 * TG__PAR_GRAIN runs on the calling thread. The choice is made before the
 * OpenMP construct, never with its `if` clause: libgomp builds and frees a
 * thread team even for a region whose `if` is false, which costs more than
 * a small op's arithmetic (B2's 2-2-2 network ran 2.5x slower that way).
 *   TG__PAR_FOR(cond, "omp parallel for schedule(static)", for (...) ...);
 *   TG__PAR_FOR_SIMD(cond, for (...) ...);   (parallel for simd / simd)
 * `loop` is a for statement, compiled twice. Without OpenMP the parallel
 * pragmas are ignored and the simd ones still vectorise (-fopenmp-simd).
 * With one thread the loop stays in the calling function too, so that a
 * kernel compiled for several instruction sets (TG__HOT) runs its own. */
#define TG__PAR_GRAIN 32768
/* Whether more than one thread may run the kernels (ops/threads.c). */
bool tg__threads_many(void);
#define TG__PAR_FOR(cond, pragma, ...)                                                     \
    do {                                                                                   \
        if ((cond) && tg__threads_many()) {                                                \
            _Pragma(pragma) __VA_ARGS__                                                    \
        } else {                                                                           \
            __VA_ARGS__                                                                    \
        }                                                                                  \
    } while (0)
#define TG__PAR_FOR_SIMD(cond, ...)                                                        \
    do {                                                                                   \
        if ((cond) && tg__threads_many()) {                                                \
            _Pragma("omp parallel for simd schedule(static)") __VA_ARGS__                  \
        } else {                                                                           \
            _Pragma("omp simd") __VA_ARGS__                                                \
        }                                                                                  \
    } while (0)

/* A hot kernel, compiled for AVX2 as well as for the build's baseline
 * (x86-64's SSE2 unless TG_NATIVE), the one to run chosen once at load
 * time by the CPU (GCC's function multi-versioning): wider vectors for
 * the library's own loops while the build still runs on any x86-64. The
 * AVX2 version uses no FMA, so it rounds as the baseline does; only the
 * grouping of vectorised sums can differ. Loops inside an OpenMP region
 * are compiled apart and keep the baseline. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__AVX2__) && !defined(TG_NO_CLONES)
#define TG__HOT __attribute__((target_clones("avx2", "default")))
#else
#define TG__HOT
#endif

/* ---- ops/matmul.c: C (m x n) = op(A) op(B) (+ C when accumulate), row-major, through CBLAS */
void tg__gemm(tg_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
              int64_t lda, const void *b, int64_t ldb, bool accumulate, void *c, int64_t ldc);

/* ---- ops/softmax.c: (log-)softmax of outer x inner lines of n values, stride inner */
void tg__softmax_lines(tg_dtype dt, const void *x, void *y, int64_t outer, int64_t n,
                       int64_t inner, bool logp);

/* ---- ops/broadcast.c: a pair of window sizes as messages give it: "h x w"
 * in 2-D, "w" alone in 1-D (one); returns buf */
const char *tg__size_pair(char *buf, size_t size, bool one, int64_t h, int64_t w);

/* ---- ops/broadcast.c: helpers for sample generators */
/* A float64 step tensor of uniform values in [lo, hi), requires_grad as given. */
tg_tensor *tg__sample_rand(tg_ctx *ctx, int ndim, const int64_t *shape, double lo, double hi,
                           bool requires_grad);


#endif
