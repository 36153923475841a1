/*
 * init.c: torch.nn.init's initialisers (PyTorch 1.13), in place, from the
 * context RNG.
 *
 *   gain:     linear, conv, sigmoid 1; tanh 5/3; relu sqrt(2);
 *             leaky_relu(a) sqrt(2 / (1 + a^2)); selu 3/4
 *   fans:     rf = prod(shape[2:]); fan_in = shape[1] * rf, fan_out = shape[0] * rf
 *   xavier:   std = gain * sqrt(2 / (fan_in + fan_out)), uniform bound sqrt(3) * std
 *   kaiming:  std = gain(nl, a) / sqrt(fan), uniform bound sqrt(3) * std
 *   default:  nn.Linear / nn.ConvNd reset_parameters: kaiming_uniform(a = sqrt(5)),
 *             then bias uniform(+-1 / sqrt(fan_in)) (0 when fan_in is 0)
 *
 * Invariants: every argument is checked before anything is drawn, so a
 * failing call leaves the tensor and the RNG stream as they were; draws are
 * doubles taken in row-major order and then rounded to the tensor's dtype,
 * so float32 and float64 tensors get the same numbers from the same seed;
 * zero-element tensors draw nothing (PyTorch warns and returns).
 */
#include <math.h>

#include "tapegrad.h"

typedef enum draw_kind { DRAW_CONSTANT, DRAW_UNIFORM, DRAW_NORMAL } draw_kind;

/* A float tensor of ctx, or an error naming who and the argument. */
static tg_status check_tensor(tg_ctx *ctx, const char *who, const char *arg, const tg_tensor *t)
{
    if (!t)
        return TG_ERROR(ctx, TG_EINVAL, "%s: %s is NULL", who, arg);
    if (t->ctx != ctx)
        return TG_ERROR(ctx, TG_EINVAL, "%s: %s belongs to another context", who, arg);
    if (!tg_dtype_is_float(t->dtype))
        return TG_ERROR(ctx, TG_EDTYPE, "%s: %s has dtype %s; initialisers take float32 or float64",
                        who, arg, tg_dtype_name(t->dtype));
    return TG_OK;
}

/* check_tensor plus at least two dimensions, for the fan-based initialisers. */
static tg_status check_fan_tensor(tg_ctx *ctx, const char *who, const char *arg, const tg_tensor *t)
{
    tg_status rc = check_tensor(ctx, who, arg, t);
    if (rc == TG_OK && t->ndim < 2)
        return TG_ERROR(ctx, TG_EINVAL,
                        "%s: %s has %d dimension(s); fans need at least 2", who, arg, t->ndim);
    return rc;
}

static tg_status check_finite(tg_ctx *ctx, const char *who, const char *arg, double v)
{
    if (!isfinite(v))
        return TG_ERROR(ctx, TG_EINVAL, "%s: %s = %g must be finite", who, arg, v);
    return TG_OK;
}

/* The error already held, or TG_EINVAL for a NULL context. */
static tg_status held_error(tg_ctx *ctx)
{
    return ctx ? (tg_status)tg_errcode(ctx) : TG_EINVAL;
}

/* fan_in (in = true) or fan_out of a tensor of at least 2 dimensions, as a
 * double (the product of int64 sizes of a valid tensor cannot overflow it). */
static double fan(const tg_tensor *t, bool in)
{
    double rf = 1.0;
    for (int d = 2; d < t->ndim; d++)
        rf *= (double)t->shape[d];
    return (double)t->shape[in ? 1 : 0] * rf;
}

/* Writes t's elements in row-major order: a, uniform [a, b) or normal(a, b). */
static void draw(tg_ctx *ctx, tg_tensor *t, draw_kind kind, double a, double b)
{
    if (t->numel == 0)
        return;
    TG_DISPATCH_FLOAT(t->dtype, T, {
        T *d = t->data;
        for (int64_t i = 0; i < t->numel; i++) {
            double v = a;
            if (kind == DRAW_UNIFORM)
                v = a + (b - a) * tg_rand_uniform(ctx);
            else if (kind == DRAW_NORMAL)
                v = a + b * tg_rand_normal(ctx);
            d[i] = (T)v;
        }
    });
    tg_mark_dirty(t);
}

double tg_init_gain(tg_nonlinearity nl, double param)
{
    switch (nl) {
    case TG_NL_LINEAR:
    case TG_NL_CONV:
    case TG_NL_SIGMOID:
        return 1.0;
    case TG_NL_TANH:
        return 5.0 / 3.0;
    case TG_NL_RELU:
        return sqrt(2.0);
    case TG_NL_LEAKY_RELU:
        return sqrt(2.0 / (1.0 + param * param));
    case TG_NL_SELU:
        return 3.0 / 4.0;
    }
    return NAN;
}

tg_status tg_init_constant(tg_ctx *ctx, tg_tensor *t, double value)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return held_error(ctx);
    const char *who = "init_constant";
    if (check_tensor(ctx, who, "t", t) || check_finite(ctx, who, "value", value))
        return tg_errcode(ctx);
    draw(ctx, t, DRAW_CONSTANT, value, 0.0);
    return TG_OK;
}

/* Uniform [a, b) after the checks, naming who. */
static tg_status uniform(tg_ctx *ctx, const char *who, tg_tensor *t, double a, double b)
{
    if (check_finite(ctx, who, "a", a) || check_finite(ctx, who, "b", b))
        return tg_errcode(ctx);
    if (a > b)
        return TG_ERROR(ctx, TG_EINVAL, "%s: a = %g is above b = %g", who, a, b);
    if (!isfinite(b - a))
        return TG_ERROR(ctx, TG_EINVAL, "%s: the range b - a (%g - %g) overflows", who, b, a);
    draw(ctx, t, DRAW_UNIFORM, a, b);
    return TG_OK;
}

/* Normal(mean, std) after the checks, naming who. */
static tg_status normal(tg_ctx *ctx, const char *who, tg_tensor *t, double mean, double std)
{
    if (check_finite(ctx, who, "mean", mean) || check_finite(ctx, who, "std", std))
        return tg_errcode(ctx);
    if (std < 0)
        return TG_ERROR(ctx, TG_EINVAL, "%s: std = %g is negative", who, std);
    draw(ctx, t, DRAW_NORMAL, mean, std);
    return TG_OK;
}

tg_status tg_init_uniform(tg_ctx *ctx, tg_tensor *t, double a, double b)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return held_error(ctx);
    if (check_tensor(ctx, "init_uniform", "t", t))
        return tg_errcode(ctx);
    return uniform(ctx, "init_uniform", t, a, b);
}

tg_status tg_init_normal(tg_ctx *ctx, tg_tensor *t, double mean, double std)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return held_error(ctx);
    if (check_tensor(ctx, "init_normal", "t", t))
        return tg_errcode(ctx);
    return normal(ctx, "init_normal", t, mean, std);
}

/* Xavier's std for t (checked), or a negative status. */
static tg_status xavier_std(tg_ctx *ctx, const char *who, const tg_tensor *t, double gain,
                            double *std)
{
    if (check_fan_tensor(ctx, who, "t", t) || check_finite(ctx, who, "gain", gain))
        return tg_errcode(ctx);
    if (gain < 0)
        return TG_ERROR(ctx, TG_EINVAL, "%s: gain = %g is negative", who, gain);
    double fans = fan(t, true) + fan(t, false);
    *std = fans > 0 ? gain * sqrt(2.0 / fans) : 0.0;
    return TG_OK;
}

tg_status tg_init_xavier_uniform(tg_ctx *ctx, tg_tensor *t, double gain)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return held_error(ctx);
    double std = 0; /* set by kaiming_std or xavier_std before any use */
    if (xavier_std(ctx, "init_xavier_uniform", t, gain, &std))
        return tg_errcode(ctx);
    return uniform(ctx, "init_xavier_uniform", t, -sqrt(3.0) * std, sqrt(3.0) * std);
}

tg_status tg_init_xavier_normal(tg_ctx *ctx, tg_tensor *t, double gain)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return held_error(ctx);
    double std = 0; /* set by kaiming_std or xavier_std before any use */
    if (xavier_std(ctx, "init_xavier_normal", t, gain, &std))
        return tg_errcode(ctx);
    return normal(ctx, "init_xavier_normal", t, 0.0, std);
}

/* Kaiming's std for t (checked), or a negative status. */
static tg_status kaiming_std(tg_ctx *ctx, const char *who, const char *arg, const tg_tensor *t,
                             double a, tg_fan_mode mode, tg_nonlinearity nl, double *std)
{
    if (check_fan_tensor(ctx, who, arg, t) || check_finite(ctx, who, "a", a))
        return tg_errcode(ctx);
    if (mode != TG_FAN_IN && mode != TG_FAN_OUT)
        return TG_ERROR(ctx, TG_EINVAL, "%s: mode = %d is not TG_FAN_IN or TG_FAN_OUT", who,
                        (int)mode);
    double gain = tg_init_gain(nl, a);
    if (isnan(gain))
        return TG_ERROR(ctx, TG_EINVAL, "%s: nonlinearity = %d is unknown", who, (int)nl);
    double f = fan(t, mode == TG_FAN_IN);
    *std = f > 0 ? gain / sqrt(f) : 0.0;
    return TG_OK;
}

tg_status tg_init_kaiming_uniform(tg_ctx *ctx, tg_tensor *t, double a, tg_fan_mode mode,
                                  tg_nonlinearity nl)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return held_error(ctx);
    double std = 0; /* set by kaiming_std or xavier_std before any use */
    if (kaiming_std(ctx, "init_kaiming_uniform", "t", t, a, mode, nl, &std))
        return tg_errcode(ctx);
    return uniform(ctx, "init_kaiming_uniform", t, -sqrt(3.0) * std, sqrt(3.0) * std);
}

tg_status tg_init_kaiming_normal(tg_ctx *ctx, tg_tensor *t, double a, tg_fan_mode mode,
                                 tg_nonlinearity nl)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return held_error(ctx);
    double std = 0; /* set by kaiming_std or xavier_std before any use */
    if (kaiming_std(ctx, "init_kaiming_normal", "t", t, a, mode, nl, &std))
        return tg_errcode(ctx);
    return normal(ctx, "init_kaiming_normal", t, 0.0, std);
}

/* A bias for weight: 1-D of weight's size(0). */
static tg_status check_bias(tg_ctx *ctx, const char *who, const tg_tensor *w, const tg_tensor *b)
{
    if (check_tensor(ctx, who, "bias", b))
        return tg_errcode(ctx);
    if (b->ndim != 1 || b->shape[0] != w->shape[0]) {
        char ws[96], bs[96];
        tg_shape_str(w, ws, sizeof ws);
        tg_shape_str(b, bs, sizeof bs);
        return TG_ERROR(ctx, TG_ESHAPE, "%s: bias %s does not fit weight %s (want (%lld))", who,
                        bs, ws, (long long)w->shape[0]);
    }
    return TG_OK;
}

tg_status tg_init_default(tg_ctx *ctx, tg_tensor *weight, tg_tensor *bias)
{
    if (!ctx || tg_errcode(ctx) != TG_OK)
        return held_error(ctx);
    const char *who = "init_default";
    double std = 0; /* set by kaiming_std or xavier_std before any use */
    if (kaiming_std(ctx, who, "weight", weight, sqrt(5.0), TG_FAN_IN, TG_NL_LEAKY_RELU, &std) ||
        (bias && check_bias(ctx, who, weight, bias)))
        return tg_errcode(ctx);
    draw(ctx, weight, DRAW_UNIFORM, -sqrt(3.0) * std, sqrt(3.0) * std);
    if (!bias)
        return TG_OK;
    double f = fan(weight, true);
    double bound = f > 0 ? 1.0 / sqrt(f) : 0.0;
    draw(ctx, bias, DRAW_UNIFORM, -bound, bound);
    return TG_OK;
}
