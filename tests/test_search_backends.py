"""The supernet's backend seam: one switch (``backend=`` / the recipe's ``backend:``), ``auto``'s
choice, old spellings, ops the fast path does not know, and the reference without the fast path."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nasnetzoo.errors import ConfigError
from nasnetzoo.ops.darts import SepConv
from nasnetzoo.search import backend as backend_table
from nasnetzoo.search.backends import FusedBackend
from nasnetzoo.search.recipe import load_search_recipe
from nasnetzoo.search.runner import build_network, search
from nasnetzoo.search.supernet import SearchNetwork
from nasnetzoo.train.recipe import RecipeError

REPO = Path(__file__).resolve().parents[1]
TINY = ["image_size=8", "C=4", "layers=3", "batch_size=16", "epochs=1", "warmup_epochs=0",
        "max_steps_per_epoch=1", "progress=false"]


@pytest.fixture
def fused_calls(monkeypatch):
    """Every entry of the fused backend records its name here (and still runs)."""
    calls = []
    for name in ("cell", "cell_discrete", "edge", "edge_run"):
        real = getattr(FusedBackend, name)
        monkeypatch.setattr(FusedBackend, name, lambda self, *a, _n=name, _r=real: calls.append(_n) or _r(self, *a))
    return calls


def test_recipe_backend_reference_runs_the_reference_computation(tmp_path, monkeypatch):
    def refuse(self, *args):
        raise AssertionError("the fused path ran under backend: reference")

    for name in ("cell", "cell_discrete", "edge", "edge_run"):
        monkeypatch.setattr(FusedBackend, name, refuse)
    search(load_search_recipe(REPO / "recipes" / "smoke_search.yaml", [*TINY, "backend=reference"]),
           out=tmp_path / "ref")
    assert (tmp_path / "ref" / "genotype.yaml").is_file()
    # and the default (auto, CPU fp32) would have run it: the runner's supernet, one batch
    net = build_network(load_search_recipe(REPO / "recipes" / "smoke_search.yaml", TINY), num_classes=10)
    with pytest.raises(AssertionError, match="fused path ran"):
        net(torch.randn(2, 3, 8, 8))


def test_unknown_backend_in_a_recipe_is_one_line_naming_the_choices():
    with pytest.raises(RecipeError, match="'backend' = 'fast' is not one of auto, reference, fused"):
        load_search_recipe(REPO / "recipes" / "smoke_search.yaml", ["backend=fast"])
    with pytest.raises(ConfigError, match="unknown search backend 'fast'"):
        SearchNetwork(C=4, layers=3, backend="fast")


@pytest.mark.parametrize("case,fused", [("fp32", True), ("fp64", False), ("channels_last", False),
                                        ("autocast", False)])
def test_auto_takes_the_fused_path_only_on_cpu_fp32_nchw(case, fused, fused_calls):
    net = SearchNetwork(C=4, layers=3, num_classes=3, channels_last=case == "channels_last")
    x = torch.randn(2, 3, 8, 8)
    if case == "fp64":
        net, x = net.double(), x.double()
    if case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(x)
    else:
        net(x)
    assert bool(fused_calls) == fused, fused_calls
    fused_calls.clear()
    net.set_backend("fused")   # named, it runs everywhere (as fused=True did)
    net(x)
    assert fused_calls


def test_old_spellings_map_to_the_backend():
    assert SearchNetwork(C=4, layers=3, fused=False).backend == "reference"
    net = SearchNetwork(C=4, layers=3, fused=True)
    assert net.backend == "fused" and all(e.backend == "fused" for c in net.cells for e in c.edges)
    assert net.set_fused(False).cells[0].edges[0].backend == "reference"
    assert not net.cells[0].edges[0].fused
    edge = net.cells[0].edges[0]
    edge.fused = True
    assert edge.backend == "fused"
    with pytest.raises(ConfigError, match="fused=True contradicts backend='reference'"):
        SearchNetwork(C=4, layers=3, fused=True, backend="reference")


class ScaledSepConv(SepConv):
    """A SepConv subclass with a forward of its own: the fast path must call it, not walk ``.op``."""

    calls = 0

    def forward(self, x):
        ScaledSepConv.calls += 1
        return 3.0 * self.op(x) + 1.0


@pytest.mark.parametrize("partial_k,edge_norm", [pytest.param(1, False, marks=pytest.mark.slow), (2, True)])
def test_a_subclass_of_a_known_op_is_computed_by_its_own_forward(partial_k, edge_norm):
    torch.manual_seed(0)
    ref = SearchNetwork(C=4, layers=3, num_classes=3, partial_k=partial_k, edge_norm=edge_norm,
                        backend="reference").double()
    index = ref.primitives.index("sep_conv_3x3")
    for cell in ref.cells:
        for edge in cell.edges:
            old = edge.ops[index]
            new = ScaledSepConv(old.op[1].in_channels, old.op[-1].num_features, 3, old.op[1].stride[0], 1,
                                affine=False).double()
            new.load_state_dict(old.state_dict())
            edge.ops[index] = new
    with torch.no_grad():
        for a in ref.arch_parameters():
            a.normal_(0, 1)
    fused = copy.deepcopy(ref).set_backend("fused")
    x, y = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (2,))
    ScaledSepConv.calls = 0
    losses = [F.cross_entropy(net(x), y) for net in (ref, fused)]
    assert ScaledSepConv.calls == 2 * sum(len(c.edges) for c in ref.cells)   # every edge, both backends
    assert torch.allclose(losses[0], losses[1], rtol=1e-10, atol=1e-12)
    grads = [torch.autograd.grad(loss, net.arch_parameters()) for loss, net in zip(losses, (ref, fused))]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_without_the_fast_path_every_backend_name_but_fused_is_the_reference(monkeypatch):
    """What deleting search/backends/ and its table line leaves (checked by hand once too)."""
    monkeypatch.setattr(backend_table, "FAST_BACKENDS", {})
    net = SearchNetwork(C=4, layers=3, num_classes=3)
    assert all(m.__dict__.get("_fast") is None for m in net.modules() if hasattr(m, "backend"))
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 3)
