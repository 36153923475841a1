/* consumer.c: d/dx sum(x^2) at x = (1, 2, 3) through an installed tapegrad. */
#include <tapegrad.h>

int main(void)
{
    tg_ctx *ctx = tg_ctx_new(0);
    tg_tensor *x = tg_param(ctx, TG_F64, TG_SHAPE(3), "x");
    tg_assign_f64(ctx, x, (const double[]){1, 2, 3});
    int ok = tg_backward(ctx, tg_sum(ctx, tg_mul(ctx, x, x))) == TG_OK &&
             tg_get(x->grad, 0) == 2 && tg_get(x->grad, 1) == 4 && tg_get(x->grad, 2) == 6;
    printf("consumer (tapegrad %s): %s\n", tg_version(), ok ? "ok" : tg_errmsg(ctx));
    tg_ctx_free(ctx);
    return ok ? 0 : 1;
}
