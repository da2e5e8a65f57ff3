"""The NASNet-family pool and factorized reduction as the mobile runtimes need them (issue 12, item 1):
the same outputs as the previous ops (``benchmarks/nasnet_pool_latency.py`` keeps those, to time
them) at every size the zoo's networks meet and at odd ones, without ``divisor_override`` or
strided slicing."""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch

import nasnetzoo
from nasnetzoo.ops.padding import Pool2dSame
from nasnetzoo.ops.tf import FactorizedReduction

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
try:
    from nasnet_pool_latency import Legacy, legacy_factorized_reduction, legacy_ops  # noqa: E402
finally:
    sys.path.pop(0)

pytestmark = pytest.mark.usefixtures("one_thread")

NASNET_FAMILY = [n for n in nasnetzoo.list_models() if nasnetzoo.get_entry(n).family == "nasnet"]


def _feature_sizes(n: int) -> set[int]:
    """Every map size a network fed ``n`` px meets (each reduction halves, rounding up), +-1."""
    sizes = set()
    while n > 1:
        sizes |= {n - 1, n, n + 1}
        n = -(-n // 2)
    return sizes | {1, 2}


ENTRY_SIZES = sorted(set().union(*(_feature_sizes(nasnetzoo.get_entry(n).data["input_size"][1])
                                   for n in NASNET_FAMILY), _feature_sizes(97), range(1, 18)))


def test_the_sizes_cover_every_entry():
    assert {224, 112, 56, 28, 14, 7, 331, 166, 83, 42, 21, 11, 32, 16, 8, 4, 97, 49, 25, 13} <= set(ENTRY_SIZES)


@pytest.mark.parametrize("kernel,stride", [(3, 2), (5, 2), (7, 2), (3, 1), (5, 1), (7, 1)])
def test_avg_pool_same_is_bitwise_the_previous_pool(kernel, stride):
    gen = torch.Generator().manual_seed(kernel * 10 + stride)
    pool = Pool2dSame("avg", kernel, stride)
    for h, w in itertools.chain(((n, n) for n in ENTRY_SIZES), itertools.product((1, 2, 7, 8, 33), repeat=2)):
        x = torch.randn(2, 3, h, w, generator=gen)
        new = pool(x)
        with legacy_ops():
            old = pool(x)
        assert new.shape == old.shape == (2, 3, -(-h // stride), -(-w // stride)), (h, w)
        assert torch.equal(new, old), (h, w, (new - old).abs().max())


def test_the_pool_uses_no_divisor_override():
    """The ops of the new pool, as torch.export records them: plain pools, slices, concatenations."""
    gm = torch.export.export(Pool2dSame("avg", 3, 2), (torch.randn(1, 4, 14, 14),)).graph_module
    targets = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
    pools = [n for n in gm.graph.nodes if "avg_pool2d" in str(n.target)]
    assert pools and all(len(n.args) < 7 or n.args[6] is None for n in pools)  # no divisor_override
    assert all(n.args[4] is False if len(n.args) > 4 else True for n in pools)  # no ceil_mode
    assert not any("div" in t or "ones" in t or "full" in t for t in targets), targets


@pytest.mark.parametrize("C_out", [10, 27])
def test_factorized_reduction_matches_the_previous_one(C_out):
    gen = torch.Generator().manual_seed(C_out)
    fr = FactorizedReduction(6, C_out, 2, act=True).eval()
    with torch.no_grad():
        for p in fr.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        for h, w in itertools.chain(((n, n) for n in ENTRY_SIZES), itertools.product((1, 2, 7, 8), repeat=2)):
            x = torch.randn(2, 6, h, w, generator=gen)
            new, old = fr(x), legacy_factorized_reduction(fr, x)
            assert new.shape == old.shape == (2, C_out, -(-h // 2), -(-w // 2))
            # a 1x1 stride-2 conv instead of a strided slice then a 1x1 conv: the same products and
            # sums, in an order oneDNN may choose differently (measured: at most 1 float32 ulp)
            torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-6)
    gm = torch.export.export(fr, (torch.randn(1, 6, 15, 15),)).graph_module
    steps = [n.args[4] for n in gm.graph.nodes if "slice" in str(n.target) and len(n.args) > 4]
    assert all(s == 1 for s in steps)  # no strided slicing


@pytest.mark.parametrize("name", NASNET_FAMILY)
def test_networks_compute_what_they_computed_before(name):
    """Each NASNet-family entry at its own size (the 331 px ones at 33, an odd size; their 331 px
    maps are covered op by op above) and at an odd size, against the previous ops."""
    torch.manual_seed(0)
    model = nasnetzoo.load(name).eval()
    native = nasnetzoo.get_entry(name).data["input_size"][1]
    sizes = [33] if native > 224 else [native, 33 if native == 32 else 97]
    for size in sizes:
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            new, old = model(x), Legacy(model)(x)
        torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-5 * float(old.abs().max()))
