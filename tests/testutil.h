/*
 * testutil.h: what every suite shares: the suite entry point, closeness
 * checks, and an allocator hook that counts, and fails the N-th request.
 */
#ifndef TG_TESTUTIL_H
#define TG_TESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "tapegrad.h"

/* Each suite file defines this; main.c runs it. */
Suite *tg_test_suite(void);

/* Asserts |got - want| <= tol * max(1, |want|). */
#define ck_close(got, want, tol)                                                          \
    do {                                                                                  \
        double g_ = (got), w_ = (want);                                                   \
        ck_assert_msg(fabs(g_ - w_) <= (tol) * fmax(1.0, fabs(w_)),                       \
                      "%s = %.17g, expected %.17g (tol %g)", #got, g_, w_, (double)(tol)); \
    } while (0)

/* Every element of t against want[], within tol. */
#define ck_tensor(t, want, tol)                                                           \
    do {                                                                                  \
        const tg_tensor *t_ = (t);                                                        \
        ck_assert_ptr_nonnull(t_);                                                        \
        for (int64_t i_ = 0; i_ < t_->numel; i_++)                                        \
            ck_assert_msg(fabs(tg_get(t_, i_) - (want)[i_]) <= (tol) * fmax(1.0, fabs((want)[i_])), \
                          "%s[%lld] = %.17g, expected %.17g", #t, (long long)i_,          \
                          tg_get(t_, i_), (double)(want)[i_]);                            \
    } while (0)

/* Asserts that the context holds an error of this code whose message contains text. */
#define ck_error(ctx, code, text)                                                         \
    do {                                                                                  \
        ck_assert_int_eq(tg_errcode(ctx), (code));                                        \
        ck_assert_msg(strstr(tg_errmsg(ctx), (text)) != NULL, "message '%s' lacks '%s'",  \
                      tg_errmsg(ctx), (text));                                            \
    } while (0)

typedef struct test_alloc {
    long calls;      /* allocations and resizes asked for */
    long fail_at;    /* the request number to refuse (0: none) */
    long failed;     /* requests refused */
    long live_bytes; /* held now */
} test_alloc;

static inline void *test_alloc_fn(void *ud, void *ptr, size_t old_size, size_t new_size)
{
    test_alloc *a = ud;
    if (new_size == 0) {
        free(ptr);
        a->live_bytes -= (long)old_size;
        return NULL;
    }
    a->calls++;
    if (a->fail_at && a->calls >= a->fail_at) {
        a->failed++;
        return NULL;
    }
    void *p = realloc(ptr, new_size);
    if (p)
        a->live_bytes += (long)new_size - (long)old_size;
    return p;
}

static inline tg_ctx *test_ctx_with(test_alloc *a, uint64_t seed)
{
    tg_ctx_opts o = {0};
    o.alloc = test_alloc_fn;
    o.alloc_ud = a;
    o.seed = seed;
    return tg_ctx_new_opts(&o);
}

#endif
