"""Per-layer forward and backward time of the search CPU kernels against PyTorch's own, in one run.

For each layer the supernet's kernels replace (``nasnetzoo/search/backends/cpu_kernels.py``) and each map
shape: the median forward and backward time over ``--reps`` calls, PyTorch's kernel (the fused
path's policy with ``kernels=False``) and this package's interleaved call by call, and the ratio of their sums.
The backward computes the input and (for convolutions) the weight gradient, as a weight step does.
PyTorch's side is what the fused supernet runs without these kernels: the module itself, except
for the max pool, which there keeps no indices and recomputes them in backward (``backends.fused.max_pool``).
Shapes where ``fast_layer`` declines (it keeps PyTorch's kernel there) say so.  ``LAYERS`` is
also the set ``tests/test_cpu_kernels.py`` checks.

    python benchmarks/cpu_kernels.py [--threads 2] [--reps 15] [--shapes 16,16,32,32 16,4,32,32]

Under a minute on a quiet 2-core machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from nasnetzoo.search.backends.cpu_kernels import fast_layer
from nasnetzoo.search.backends.fused import max_pool
from nasnetzoo.search.backends.policy import FastPathPolicy

NATIVE = FastPathPolicy(kernels=False)   # the fused path on PyTorch's own kernels

LAYERS = {
    "sep_conv_5x5 depthwise": lambda c: nn.Conv2d(c, c, 5, padding=2, groups=c, bias=False),
    "dil_conv_3x3 depthwise": lambda c: nn.Conv2d(c, c, 3, padding=2, dilation=2, groups=c, bias=False),
    "dil_conv_5x5 depthwise": lambda c: nn.Conv2d(c, c, 5, padding=4, dilation=2, groups=c, bias=False),
    # a reduction cell's first conv of a dil_conv: stride 2
    "dil_conv_3x3 depthwise, stride 2": lambda c: nn.Conv2d(c, c, 3, stride=2, padding=2, dilation=2, groups=c,
                                                            bias=False),
    "dil_conv_5x5 depthwise, stride 2": lambda c: nn.Conv2d(c, c, 5, stride=2, padding=4, dilation=2, groups=c,
                                                            bias=False),
    "sep/dil_conv pointwise 1x1": lambda c: nn.Conv2d(c, c, 1, bias=False),
    # four edges' 1x1 convs side by side (search/backends/node_mix.py): one group per edge
    "pointwise 1x1, 4 groups": lambda c: nn.Conv2d(c, c, 1, groups=4, bias=False),
    "max_pool_3x3": lambda c: nn.MaxPool2d(3, 1, 1),
    "avg_pool_3x3": lambda c: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
}


def timed_call(layer: nn.Module, x: torch.Tensor, native: bool) -> tuple[float, float]:
    """(forward, backward) seconds of one call."""
    start = time.perf_counter()
    if native:   # what the fused path runs without the kernels (its max pool keeps no indices)
        out = max_pool(layer, x, NATIVE) if isinstance(layer, nn.MaxPool2d) else layer(x)
    else:
        out = fast_layer(layer, x)
    middle = time.perf_counter()
    out.backward(torch.ones_like(out))
    return middle - start, time.perf_counter() - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--shapes", nargs="+", default=["16,16,32,32", "16,4,32,32", "16,32,16,16"],
                        help="N,C,H,W map shapes (batch 16, C=16 at 32 px is the first cell of the issue's supernet)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"ms per call, median of {args.reps}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'layer':26s} {'N,C,H,W':12s} {'PyTorch fwd':>11s} {'bwd':>7s} {'here fwd':>9s} {'bwd':>7s} {'ratio':>6s}")
    for shape in args.shapes:
        n, c, h, w = (int(v) for v in shape.split(","))
        for name, make in LAYERS.items():
            layer = make(c)
            x = torch.randn(n, c, h, w, requires_grad=True)
            if fast_layer(layer, x.detach()) is None:
                print(f"{name:26s} {shape:12s}   PyTorch's kernel (fast_layer declines this shape)")
                continue
            runs = {True: [], False: []}
            for rep in range(args.reps + 2):   # two warm-up rounds
                for native in (True, False):
                    t = timed_call(layer, x, native)
                    if rep >= 2:
                        runs[native].append(t)
            (nf, nb), (ff, fb) = ([1000 * statistics.median(col) for col in zip(*runs[k])] for k in (True, False))
            print(f"{name:26s} {shape:12s} {nf:11.2f} {nb:7.2f} {ff:9.2f} {fb:7.2f} {(ff + fb) / (nf + nb):6.2f}")


if __name__ == "__main__":
    main()
