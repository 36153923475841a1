#!/usr/bin/python3
"""torch_ref.py with another seed.

    /usr/bin/python3 bench/torch_seeded.py [--seed S] WORKLOAD [torch_ref.py's options]

torch_ref.py (the PyTorch side of the benchmarks, beside the repository
in ../shared/bench/, or wherever TORCH_REF says) seeds everything with 0:
torch.manual_seed(0) before the model is built, and for fmnist a
torch.Generator().manual_seed(0) for the shuffle. It has no option for
another seed and is not ours to edit, so this script imports it as a
module and, once torch_ref has imported torch (its load_torch sets the
thread counts first), replaces those two calls in the running process by
ones that add S to the seed they are given. Then it calls torch_ref's
main with the remaining arguments, which prints torch_ref's usual line.
--seed 0 (the default) changes nothing: the numbers are torch_ref.py's own.

bench/accuracy.sh uses it to average B6's test accuracy over seeds.
"""
import importlib.util
import os
import sys


def torch_ref_path():
    env = os.environ.get("TORCH_REF")
    if env:
        return env
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.path.dirname(root), "shared", "bench", "torch_ref.py")


def split_seed(argv):
    """(seed, the other arguments); --seed S or --seed=S, anywhere."""
    seed, rest, i = 0, [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--seed" or a.startswith("--seed="):
            if a == "--seed":
                if i + 1 >= len(argv):
                    sys.exit("torch_seeded.py: --seed needs a value")
                i += 1
                v = argv[i]
            else:
                v = a[len("--seed="):]
            if not v.isdigit():
                sys.exit("torch_seeded.py: --seed '%s' is not a non-negative integer" % v)
            seed = int(v)
        else:
            rest.append(a)
        i += 1
    return seed, rest


def offset_seeds(torch, offset, calls):
    """Make torch.manual_seed(s) and torch.Generator().manual_seed(s) seed
    with s + offset; counts the calls in calls so that main can tell."""
    real_manual_seed = torch.manual_seed

    def manual_seed(seed):
        calls["manual_seed"] += 1
        return real_manual_seed(int(seed) + offset)

    class Generator(torch.Generator):
        def manual_seed(self, seed):
            calls["generator"] += 1
            return super().manual_seed(int(seed) + offset)

    torch.manual_seed = manual_seed
    torch.Generator = Generator


def main(argv):
    seed, rest = split_seed(argv)
    path = torch_ref_path()
    if not os.path.isfile(path):
        sys.exit("torch_seeded.py: %s not found (set TORCH_REF)" % path)
    spec = importlib.util.spec_from_file_location("torch_ref", path)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)

    calls = {"manual_seed": 0, "generator": 0}
    real_load_torch = ref.load_torch

    def load_torch(threads, blas_threads):
        core = real_load_torch(threads, blas_threads)
        offset_seeds(ref.torch, seed, calls)
        return core

    ref.load_torch = load_torch  # main looks it up in the module at call time
    rc = ref.main(rest)
    # A torch_ref.py that seeds some other way would silently ignore --seed.
    if seed and not calls.get("manual_seed"):
        sys.exit("torch_seeded.py: torch_ref.py never called torch.manual_seed; --seed had no effect")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
