/* test_context.c: the arena, the allocator hook, errors, modes, steady state, OOM. */
#include <stdio.h>
#include <string.h>

#include "testutil.h"

START_TEST(errors_are_sticky)
{
    tg_ctx *ctx = tg_ctx_new(1);
    ck_assert_int_eq(tg_errcode(ctx), TG_OK);
    ck_assert_str_eq(tg_errmsg(ctx), "");
    tg_tensor *a = tg_ones(ctx, TG_F32, TG_SHAPE(2, 3));
    tg_tensor *b = tg_ones(ctx, TG_F32, TG_SHAPE(4));
    tg_tensor *c = tg_add(ctx, a, b); /* the first error */
    ck_assert_ptr_null(c);
    tg_tensor *d = tg_mul(ctx, a, tg_ones(ctx, TG_F64, TG_SHAPE(2, 3))); /* would be a dtype error */
    ck_assert_ptr_null(d);
    ck_assert_ptr_null(tg_zeros(ctx, TG_F32, TG_SHAPE(1)));
    ck_assert_int_eq(tg_backward(ctx, a), TG_ESHAPE);
    ck_error(ctx, TG_ESHAPE, "add: shapes (2, 3) and (4) cannot be broadcast together");
    int line = 0;
    ck_assert(strstr(tg_errwhere(ctx, &line), ".c") != NULL && line > 0);
    tg_clear_error(ctx);
    ck_assert_ptr_nonnull(tg_zeros(ctx, TG_F32, TG_SHAPE(1)));
    ck_assert_str_eq(tg_status_str(TG_ENOMEM), "out of memory");
    ck_assert_str_eq(tg_errmsg(NULL), "no context (NULL)");
    ck_assert_int_eq(tg_errcode(NULL), TG_EINVAL);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(modes)
{
    tg_ctx *ctx = tg_ctx_new(1);
    ck_assert(tg_grad_enabled(ctx) && tg_training(ctx));
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(2), "w");
    tg_tensor *y = NULL;
    TG_NO_GRAD(ctx) { y = tg_exp(ctx, w); }
    ck_assert(tg_grad_enabled(ctx));
    ck_assert(!y->requires_grad && !y->node);
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    ck_assert_int_eq(st.tape_len, 0);
    y = tg_exp(ctx, w);
    ck_assert(y->requires_grad && y->node && y->node->index == 0);
    ck_assert(tg_set_grad_enabled(ctx, false));
    ck_assert(!tg_set_grad_enabled(ctx, true));
    ck_assert(tg_set_training(ctx, false));
    ck_assert(!tg_training(ctx));
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(arena_reuses_memory)
{
    tg_ctx_opts o = {0};
    o.arena_chunk = 4096;
    tg_ctx *ctx = tg_ctx_new_opts(&o);
    tg_stats first, before, after;
    for (int step = 0; step < 5; step++) {
        tg_zeros(ctx, TG_F64, TG_SHAPE(100));      /* fits a chunk */
        tg_zeros(ctx, TG_F64, TG_SHAPE(10000));    /* larger than a chunk */
        tg_zeros(ctx, TG_F32, TG_SHAPE(300));
        tg_ctx_stats(ctx, step == 0 ? &first : step == 1 ? &before : &after);
        tg_reset(ctx);
    }
    /* the first step took several chunks, merged into one for the second */
    ck_assert_int_gt(first.arena_chunks, 1);
    ck_assert_int_eq(before.arena_chunks, 1);
    ck_assert_int_eq(before.arena_capacity, first.arena_peak);
    ck_assert_int_eq(first.arena_used, before.arena_used);
    ck_assert_int_eq(before.arena_chunks, after.arena_chunks);
    ck_assert_int_eq(before.arena_capacity, after.arena_capacity);
    ck_assert_int_eq(before.alloc_calls, after.alloc_calls);
    ck_assert_int_eq(before.arena_used, after.arena_used);
    tg_stats now;
    tg_ctx_stats(ctx, &now);
    ck_assert_int_eq(now.arena_used, 0);
    void *p = tg_scratch(ctx, 10, true);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq((uintptr_t)p % 64, 0);
    tg_ctx_free(ctx);
}
END_TEST

/* After the merge a smaller step fits the one chunk; a larger one grows the
 * arena and is merged again; fixed chunks never grow nor merge. */
START_TEST(arena_merges_and_grows)
{
    tg_ctx_opts o = {0};
    o.arena_chunk = 4096;
    tg_ctx *ctx = tg_ctx_new_opts(&o);
    tg_stats st, small, big;
    for (int i = 0; i < 8; i++)
        tg_zeros(ctx, TG_F64, TG_SHAPE(1000));
    tg_reset(ctx);
    tg_zeros(ctx, TG_F64, TG_SHAPE(1000)); /* the merged chunk, once */
    tg_ctx_stats(ctx, &st);
    tg_reset(ctx);
    for (int i = 0; i < 3; i++) /* smaller: no allocation */
        tg_zeros(ctx, TG_F64, TG_SHAPE(1500));
    tg_ctx_stats(ctx, &small);
    ck_assert_int_eq(small.alloc_calls, st.alloc_calls);
    ck_assert_int_eq(small.arena_chunks, 1);
    tg_reset(ctx);
    for (int i = 0; i < 20; i++) /* larger: chunks at least doubling the arena */
        tg_zeros(ctx, TG_F64, TG_SHAPE(1000));
    tg_ctx_stats(ctx, &big);
    ck_assert_int_eq(big.arena_chunks, 3); /* 64000 + 64000 + 128000 bytes */
    ck_assert_int_ge(big.arena_capacity, 4 * st.arena_capacity);
    tg_reset(ctx);
    tg_zeros(ctx, TG_F64, TG_SHAPE(1));
    tg_ctx_stats(ctx, &st);
    ck_assert_int_eq(st.arena_chunks, 1);
    ck_assert_int_eq(st.arena_capacity, big.arena_peak);
    ck_assert_int_ge(st.arena_peak, 20 * 8000);
    tg_ctx_free(ctx);

    o.arena_fixed = true;
    ctx = tg_ctx_new_opts(&o);
    for (int step = 0; step < 2; step++) {
        for (int i = 0; i < 8; i++)
            tg_zeros(ctx, TG_F64, TG_SHAPE(100));
        tg_ctx_stats(ctx, &st);
        tg_reset(ctx);
    }
    ck_assert_int_eq(st.arena_chunks, 2); /* 8 x 800 bytes in 4096-byte chunks */
    ck_assert_int_eq(st.arena_capacity, 2 * 4096);
    tg_ctx_free(ctx);
}
END_TEST

START_TEST(allocator_hook_sees_everything)
{
    tg_ctx_free(tg_ctx_new(0)); /* the registry fills with malloc, not with the hook below */
    test_alloc a = {0};
    tg_ctx *ctx = test_ctx_with(&a, 3);
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(4, 4), "w");
    tg_tensor *x = tg_randn(ctx, TG_F64, TG_SHAPE(2, 4), 0, 1);
    ck_assert_int_eq(tg_backward(ctx, tg_sum(ctx, tg_matmul(ctx, x, w))), TG_OK);
    tg_stats st;
    tg_ctx_stats(ctx, &st);
    ck_assert(a.calls > 0);
    ck_assert_int_eq(st.bytes_live, (size_t)a.live_bytes);
    tg_ctx_free(ctx);
    ck_assert_int_eq(a.live_bytes, 0);
}
END_TEST

/* A training step of a small network: linear, exp-based sigmoid, MSE-like loss, SGD. */
static tg_status train_step(tg_ctx *ctx, tg_tensor *w1, tg_tensor *b1, tg_tensor *w2,
                            tg_tensor *x, tg_tensor *t)
{
    tg_tensor *h = tg_linear(ctx, x, w1, b1);
    h = tg_pow(ctx, tg_add_scalar(ctx, tg_exp(ctx, tg_neg(ctx, h)), 1), -1);
    tg_tensor *y = tg_matmul(ctx, h, w2);
    tg_tensor *d = tg_sub(ctx, y, t);
    tg_tensor *loss = tg_mean(ctx, tg_mul(ctx, d, d));
    tg_status st = tg_backward(ctx, loss);
    for (tg_tensor *p = tg_param_next(ctx, NULL); st == TG_OK && p; p = tg_param_next(ctx, p))
        for (int64_t i = 0; i < p->numel; i++)
            tg_set(p, i, tg_get(p, i) - 0.1 * tg_get(p->grad, i));
    tg_zero_grad(ctx);
    return st;
}

/* Anonymous resident memory in KiB (heap, arena, stacks): what a leak or a
 * growing arena would show. File-backed pages are left out: in Check's
 * forked child, library code faults in lazily as paths are first taken. */
static long resident_anon_kib(void)
{
    char line[256];
    long kib = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "RssAnon: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

START_TEST(steady_state_allocates_nothing)
{
    tg_ctx_free(tg_ctx_new(0));
    test_alloc a = {0};
    tg_ctx *ctx = test_ctx_with(&a, 5);
    tg_tensor *w1 = tg_param(ctx, TG_F32, TG_SHAPE(32, 16), "w1");
    tg_tensor *b1 = tg_param(ctx, TG_F32, TG_SHAPE(32), "b1");
    tg_tensor *w2 = tg_param(ctx, TG_F32, TG_SHAPE(32, 4), "w2");
    tg_tensor *init = tg_randn(ctx, TG_F32, TG_SHAPE(32, 16), 0, 0.2);
    tg_assign(ctx, w1, init);
    tg_reset(ctx);
    long calls_after_first = 0, rss_early = 0;
    tg_status st = TG_OK;
    /* no ck_assert inside the loop: Check records every passed assertion */
    for (int step = 0; step < 1000 && st == TG_OK; step++) {
        tg_tensor *x = tg_randn(ctx, TG_F32, TG_SHAPE(64, 16), 0, 1);
        tg_tensor *t = tg_rand(ctx, TG_F32, TG_SHAPE(64, 4), 0, 1);
        st = train_step(ctx, w1, b1, w2, x, t);
        tg_reset(ctx);
        if (step == 0)
            calls_after_first = a.calls;
        if (step == 99) /* after warm-up: OpenBLAS and libc touch pages of their own early on */
            rss_early = resident_anon_kib();
    }
    long rss_late = resident_anon_kib(); /* before any ck_assert, which allocates */
    ck_assert_msg(st == TG_OK, "%s", tg_errmsg(ctx));
    ck_assert_int_eq(a.calls, calls_after_first); /* no allocation after the first step */
    ck_assert(rss_early > 0 && rss_late > 0);
#if !defined(__SANITIZE_ADDRESS__) /* ASan's quarantine keeps freed stdio buffers resident */
    ck_assert_msg(rss_late <= rss_early, "anonymous resident memory grew from %ld to %ld KiB",
                  rss_early, rss_late);
#endif
    tg_ctx_free(ctx);
    ck_assert_int_eq(a.live_bytes, 0);
}
END_TEST

/* Everything a user does in a step, as one function that reports its status. */
static tg_status whole_step(tg_ctx *ctx)
{
    tg_tensor *w = tg_param(ctx, TG_F64, TG_SHAPE(3, 4), "w");
    tg_tensor *x = tg_randn(ctx, TG_F64, TG_SHAPE(5, 4), 0, 1);
    tg_tensor *parts[2] = {x, tg_zeros(ctx, TG_F64, TG_SHAPE(1, 4))};
    tg_tensor *xs = tg_concat(ctx, parts, 2, 0);
    tg_tensor *y = tg_linear(ctx, tg_pad1d(ctx, tg_slice(ctx, xs, 1, 0, 2, 1), 1, 1), w, NULL);
    tg_tensor *loss = tg_sum(ctx, tg_exp(ctx, tg_transpose(ctx, y, 0, 1)));
    tg_status st = tg_backward(ctx, loss);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (st == TG_OK)
        st = tg_dot_write(ctx, loss, f, NULL);
    fclose(f);
    free(text);
    tg_reset(ctx);
    return st != TG_OK ? st : tg_errcode(ctx);
}

START_TEST(every_allocation_can_fail)
{
    tg_ctx_free(tg_ctx_new(0)); /* fill the registry first */
    int completed = 0;
    for (long n = 1; n < 500 && !completed; n++) {
        test_alloc a = {0};
        a.fail_at = n;
        tg_ctx *ctx = test_ctx_with(&a, 1);
        if (!ctx) {
            ck_assert_int_eq(a.live_bytes, 0);
            continue;
        }
        tg_status st = whole_step(ctx);
        if (a.failed == 0) {
            ck_assert_int_eq(st, TG_OK);
            completed = 1;
        } else {
            ck_assert_int_eq(st, TG_ENOMEM);
            ck_assert_msg(strstr(tg_errmsg(ctx), "out of memory") != NULL, "%s", tg_errmsg(ctx));
        }
        tg_ctx_free(ctx);
        ck_assert_msg(a.live_bytes == 0, "%ld bytes leak when allocation %ld fails", a.live_bytes, n);
    }
    ck_assert(completed);
}
END_TEST

static tg_tensor *never_called(tg_ctx *ctx, tg_node *node) { return NULL; }

/* The registry owns its memory: registering through a context whose
 * allocator refuses everything still works, and takes nothing from it. */
START_TEST(registry_owns_its_memory)
{
    static const tg_op dummy = {.name = "test_oom_dummy", .min_in = 1, .max_in = 1};
    static const tg_op with_forward = {.name = "test_oom_dummy", .min_in = 1, .max_in = 1,
                                       .forward = never_called, .flags = TG_OP_NO_VJP};
    test_alloc a = {0};
    tg_ctx *ctx = test_ctx_with(&a, 1);
    ck_assert_int_eq(tg_op_register(ctx, &dummy), TG_EINVAL); /* no forward */
    ck_error(ctx, TG_EINVAL, "test_oom_dummy has no forward");
    tg_clear_error(ctx);
    long before = a.calls;
    a.fail_at = a.calls + 1;
    ck_assert_int_eq(tg_op_register(ctx, &with_forward), TG_OK);
    ck_assert_int_eq(a.calls, before);
    ck_assert_ptr_eq(tg_op_find("test_oom_dummy"), &with_forward);
    tg_ctx_free(ctx);
    ck_assert_int_eq(a.live_bytes, 0);
}
END_TEST

Suite *tg_test_suite(void)
{
    Suite *s = suite_create("context");
    TCase *tc = tcase_create("errors");
    tcase_add_test(tc, errors_are_sticky);
    tcase_add_test(tc, modes);
    suite_add_tcase(s, tc);
    tc = tcase_create("memory");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, arena_reuses_memory);
    tcase_add_test(tc, arena_merges_and_grows);
    tcase_add_test(tc, allocator_hook_sees_everything);
    tcase_add_test(tc, steady_state_allocates_nothing);
    tcase_add_test(tc, every_allocation_can_fail);
    tcase_add_test(tc, registry_owns_its_memory);
    suite_add_tcase(s, tc);
    return s;
}
