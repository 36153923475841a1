#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_graph.c: small graphs that run.

    python3 tests/fuzz/gen_corpus_graph.py tests/fuzz/corpus/graph

Each input is encoded in the harness's byte language (see fuzz_graph.c:
a configuration byte, then actions), so the fuzzer starts from whole
networks (linear, conv, pooling, batch norm, losses, shape ops) that reach
backward, instead of from inputs that fail at their first op. The encoder
mirrors the harness's reads; if the harness changes how it reads, update
the encoder and regenerate. Inputs that crash the current library are the
fuzzer's business, not the corpus's: filter them out before committing.
"""
import os
import random
import sys

# the harness's op numbers (enum in fuzz_graph.c)
OPS = ("add sub mul div neg exp log sqrt pow add_s sub_s mul_s div_s matmul linear sum mean "
       "sum_axis mean_axis reshape flatten permute transpose concat slice pad1d pad2d conv1d "
       "conv2d conv2d_ex pool pool_ex gap relu leaky sigmoid tanh softmax log_softmax mse bce "
       "bce_logits ce dropout bn convert").split()
OP = {name: i for i, name in enumerate(OPS)}
YES, NO = 0, 255  # bytes that make coin() true / false


class Enc:
    def __init__(self, cfg=0):
        self.b = bytearray([cfg])
        self.pool = []     # shapes of the tensors the harness keeps, in order
        self.last = None   # pool index of the latest op output

    def put(self, *bs):
        self.b.extend(bs)

    def double(self, v):
        """any_double: (b - 128) / 16 for v in [-8, 8)."""
        self.put(NO, max(0, min(255, int(round(128 + 16 * v)))))

    def dim(self, d):
        self.put(d if d <= 4 else 200 + (d - 9) % 16)

    def keep(self, shape, persistent=False):
        self.pool.append((tuple(shape), persistent))
        return len(self.pool) - 1

    def pick(self, i):
        if i == self.last:
            self.put(200)
        else:
            self.put(100, i)

    def leaf(self, shape, f64=True, kind="values", grad=True, rnd=random):
        """make_leaf with values in [-2, 2): a step tensor, a param or a buffer."""
        n = 1
        for d in shape:
            n *= d
        self.put(0, 4 if f64 else 3, len(shape), NO)
        for d in shape:
            self.dim(d)
        self.put(3)  # name "t"
        self.put({"param": 0, "buffer": 1, "values": 4}[kind])
        if kind != "values":
            self.put(YES)  # assign values
        for _ in range(n):
            self.double(rnd.uniform(-2, 2))
        if kind == "values":
            self.put(YES if grad else NO)
            self.put(NO)  # no tg_set_name
        return self.keep(shape, kind != "values")

    def op(self, name, x, *rest, shape):
        self.put(6, OP[name])
        self.pick(x)
        self.put(*rest)
        self.last = self.keep(shape)
        return self.last

    def backward(self, summed=True):
        self.put(27, YES)            # action, loss = last
        if summed:
            self.put(YES)            # sum it first
            self.keep(())
        self.put(2, NO, YES)         # tg_backward, no second call, zero_grad

    def reset(self):
        self.put(30)
        self.pool = [p for p in self.pool if p[1]]  # parameters and buffers stay
        self.last = None


def small_int(v):
    """attr_int for -4..4."""
    return (NO, v + 4)


def small_i64(v):
    """attr_i64 for -2..6."""
    return (NO, v + 2)


def shape_attrs(i0=0, i1=0, v=(0, 0, 0, 0)):
    out = [*small_int(i0), *small_int(i1)]
    for x in v:
        out += small_i64(x)
    return out


def conv_attrs(stride=1, pad=0, dil=1, groups=1):
    out = []
    for _ in range(2):
        out += [YES, stride - 1, YES, pad, YES, dil - 1]
    return out + [YES, groups - 1]


def mlp(rnd, cfg, e=None):
    e = e or Enc(cfg)
    n, i, o = rnd.randint(1, 4), rnd.randint(1, 4), rnd.randint(1, 3)
    x = e.leaf((n, i), rnd=rnd, grad=rnd.random() < 0.5)
    w = e.leaf((o, i), kind="param", rnd=rnd)
    b = e.leaf((o,), kind="param", rnd=rnd)
    e.put(6, OP["linear"])
    e.pick(x)
    e.pick(w)
    e.put(YES)
    e.pick(b)
    y = e.last = e.keep((n, o))
    act = rnd.choice(["relu", "tanh", "sigmoid", "exp", "neg"])
    e.op(act, y, shape=(n, o))
    if rnd.random() < 0.5:
        t = e.leaf((n, o), rnd=rnd, grad=False)
        e.op("mse", e.last, shape=())
        e.pick(t)  # the op's second input follows the first
        e.put(NO, rnd.randint(0, 1))
        e.backward(summed=False)
    else:
        e.backward()
    return e


def conv_net(rnd, cfg):
    e = Enc(cfg)
    c, k, h = rnd.randint(1, 2), rnd.randint(1, 3), rnd.randint(3, 5)
    x = e.leaf((1, c, h, h), rnd=rnd, grad=False)
    w = e.leaf((k, c, 2, 2), kind="param", rnd=rnd)
    e.put(6, OP["conv2d"])
    e.pick(x)
    e.put(*conv_attrs(pad=rnd.randint(0, 1)))
    e.pick(w)
    e.put(NO)
    e.last = e.keep((1, k, h, h))
    if rnd.random() < 0.5:
        e.op("pool", e.last, rnd.choice([1, 3]), YES, 1, shape=(1, k, 1, 1))  # 2-D
    else:
        e.op("relu", e.last, shape=(1, k, 1, 1))
    e.op("gap", e.last, shape=(1, k))
    e.backward()
    return e


def conv1d_net(rnd, cfg):
    e = Enc(cfg)
    c, k, L = rnd.randint(1, 2), rnd.randint(1, 2), rnd.randint(3, 8)
    x = e.leaf((2, c, L), rnd=rnd)
    w = e.leaf((k, c, 3), kind="param", rnd=rnd)
    b = e.leaf((k,), kind="param", rnd=rnd)
    e.put(6, OP["conv1d"])
    e.pick(x)
    e.put(*conv_attrs(stride=rnd.randint(1, 2), pad=1))
    e.pick(w)
    e.put(YES)
    e.pick(b)
    e.last = e.keep((2, k, L))
    e.op(rnd.choice(["tanh", "sigmoid"]), e.last, shape=(2, k, L))
    e.backward()
    return e


def batch_norm(rnd, cfg):
    e = Enc(cfg)
    n, c = rnd.randint(2, 4), rnd.randint(1, 3)
    x = e.leaf((n, c), rnd=rnd)
    w = e.leaf((c,), kind="param", rnd=rnd)
    b = e.leaf((c,), kind="param", rnd=rnd)
    rm = e.leaf((c,), kind="buffer", rnd=rnd)
    rv = e.leaf((c,), kind="buffer", rnd=rnd)
    e.put(6, OP["bn"])
    e.pick(x)
    e.put(YES)
    e.pick(w)
    e.put(YES)
    e.pick(b)
    e.put(YES)
    e.pick(rm)
    e.put(YES)
    e.pick(rv)
    e.put(YES, YES)
    e.last = e.keep((n, c))
    e.backward()
    if rnd.random() < 0.5:
        e.reset()
    return e


def classifier(rnd, cfg):
    e = Enc(cfg)
    n, c = rnd.randint(1, 4), rnd.randint(2, 4)
    z = e.leaf((n, c), rnd=rnd)
    e.put(6, OP["ce"])
    e.pick(z)
    e.put(YES)  # class indices
    for _ in range(n):
        e.put(NO, rnd.randrange(c))
    e.put(NO)  # in the logits' dtype
    e.keep((n,))
    e.put(NO, rnd.randint(0, 1))
    e.last = e.keep(())
    e.backward(summed=False)
    return e


def softmaxes(rnd, cfg):
    e = Enc(cfg)
    shape = tuple(rnd.randint(1, 3) for _ in range(rnd.randint(1, 3)))
    x = e.leaf(shape, f64=rnd.random() < 0.5, rnd=rnd)
    e.op(rnd.choice(["softmax", "log_softmax"]), x, *small_int(-1), shape=shape)
    e.op("mul_s", e.last, NO, 140, shape=shape)
    e.backward()
    return e


def shapes(rnd, cfg):
    e = Enc(cfg)
    a, b = rnd.randint(1, 3), rnd.randint(1, 3)
    x = e.leaf((a, b), rnd=rnd)
    kind = rnd.choice(["transpose", "flatten", "slice", "pad1d", "pad2d", "concat", "reshape"])
    if kind == "transpose":
        e.op("transpose", x, *shape_attrs(0, 1), shape=(b, a))
    elif kind == "flatten":
        e.op("flatten", x, *shape_attrs(0, -1), shape=(a * b,))
    elif kind == "slice":
        e.op("slice", x, *shape_attrs(1, 0, (0, 2, 1, 0)), shape=(a, min(b, 2)))
    elif kind == "pad1d":
        e.op("pad1d", x, *shape_attrs(0, 0, (1, 2, 0, 0)), shape=(a, b + 3))
    elif kind == "pad2d":
        e.op("pad2d", x, *shape_attrs(0, 0, (1, 0, 0, 1)), shape=(a + 1, b + 1))
    elif kind == "reshape":
        e.op("reshape", x, *shape_attrs(), 0, YES, YES, shape=(a * b,))
    else:
        e.put(6, OP["concat"])
        e.pick(x)
        e.put(*shape_attrs())
        e.put(1)  # two inputs: x, then the first again
        e.pick(x)
        e.put(YES, NO, *small_int(rnd.randint(0, 1)), NO)
        e.last = e.keep((2 * a, b))
    e.op("sigmoid", e.last, shape=e.pool[e.last][0])
    e.backward()
    return e


def broadcast(rnd, cfg):
    e = Enc(cfg)
    a, b = rnd.randint(1, 3), rnd.randint(1, 3)
    x = e.leaf((a, b), rnd=rnd)
    y = e.leaf((b,), rnd=rnd, f64=True)
    e.op(rnd.choice(["add", "sub", "mul", "div"]), x, shape=(a, b))
    e.pick(y)  # the op's second input follows the first
    e.op("sum_axis", e.last, *small_int(0), NO, shape=(b,))
    e.backward()
    return e


def matmul(rnd, cfg):
    e = Enc(cfg)
    n, k, m = rnd.randint(1, 3), rnd.randint(1, 3), rnd.randint(1, 3)
    a = e.leaf((n, k), rnd=rnd)
    b = e.leaf((k, m), kind="param", rnd=rnd)
    e.put(6, OP["matmul"])
    e.pick(a)
    e.pick(b)
    e.last = e.keep((n, m))
    e.op("dropout", e.last, YES, rnd.randint(0, 4), shape=(n, m))
    e.backward()
    return e


def two_steps(rnd, cfg):
    e = mlp(rnd, cfg)
    e.reset()
    return mlp(rnd, cfg, e)


TEMPLATES = [mlp, conv_net, conv1d_net, batch_norm, classifier, softmaxes, shapes, broadcast,
             matmul, two_steps]
CONFIGS = [0, 1, 2, 4, 32, 3, 5]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/graph"
    os.makedirs(out, exist_ok=True)
    rnd = random.Random(20240611)
    k = 0
    for rep in range(4):
        for t in TEMPLATES:
            cfg = CONFIGS[(k + rep) % len(CONFIGS)]
            data = bytes(t(rnd, cfg).b)
            with open(os.path.join(out, f"{t.__name__}-{rep}"), "wb") as f:
                f.write(data)
            k += 1


if __name__ == "__main__":
    main()
