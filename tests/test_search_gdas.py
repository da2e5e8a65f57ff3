"""GDAS: the straight-through hard sample's gradient, one path per edge, one search step against the
official code (xautodl 1.0.0), and a smoke search that resumes exactly after a kill."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nasnetzoo
from nasnetzoo.genotype import Genotype
from nasnetzoo.recipe_file import RecipeError
from nasnetzoo.search import run_search
from nasnetzoo.search.recipe import load_search_recipe
from nasnetzoo.search.runner import CHECKPOINT
from nasnetzoo.search.strategies.gdas import GDAS_PRIMITIVES, GDASStrategy, gdas_tau, hard_gumbel_softmax
from nasnetzoo.search.supernet import SearchNetwork

REPO = Path(__file__).resolve().parents[1]
TINY = ["image_size=16", "C=4", "layers=3", "batch_size=16", "max_steps_per_epoch=2", "progress=false", "threads=1"]


def _gumbel(alpha: torch.Tensor, seed: int) -> torch.Tensor:
    """The noise ``hard_gumbel_softmax`` draws first from a generator seeded ``seed``."""
    return -torch.empty_like(alpha).exponential_(generator=torch.Generator().manual_seed(seed)).log()


def test_straight_through_gradient_is_the_soft_probabilitys_gradient():
    """d/dalpha of sum_e h[e, k_e] v[e, k_e] (only the sampled op's term, as the network uses it)
    is v[e, k] p[e, k] (delta_kj - p[e, j]) / tau, with p = softmax((log_softmax(alpha) + g) / tau)."""
    torch.manual_seed(0)
    alpha = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(6, 5, dtype=torch.float64)
    tau = 0.7
    hard, index = hard_gumbel_softmax(alpha, tau, torch.Generator().manual_seed(3))
    g = _gumbel(alpha.detach(), 3)
    p = F.softmax((alpha.detach().log_softmax(-1) + g) / tau, dim=-1)
    assert torch.equal(index, p.argmax(-1)) and torch.equal(index, (alpha.detach() + g).argmax(-1))
    torch.testing.assert_close(hard.detach(), F.one_hot(index, 5).double(), rtol=0, atol=1e-15)
    rows = torch.arange(6)
    (grad,) = torch.autograd.grad((hard[rows, index] * v[rows, index]).sum(), alpha)
    pk = p[rows, index][:, None]
    expected = v[rows, index][:, None] * pk * (F.one_hot(index, 5).double() - p) / tau
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-15)


def test_tau_runs_linearly_from_tau_max_to_tau_min():
    assert [gdas_tau(e, 5, 10.0, 0.1) for e in (0, 4)] == [10.0, pytest.approx(0.1)]
    assert gdas_tau(2, 5, 10.0, 0.1) == pytest.approx(5.05)
    assert gdas_tau(0, 1, 10.0, 0.1) == 10.0


def _saved_bytes(fn) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_one_path_per_edge_on_either_backend(backend):
    """forward_sampled runs only the sampled op of each edge: the fused backend gives the reference's
    output, and what autograd keeps is a fraction of the continuous supernet's."""
    torch.manual_seed(0)
    net = SearchNetwork(C=8, layers=3, num_classes=10, primitives=GDAS_PRIMITIVES, pool_bn=None, last_act=True,
                        backend="reference")
    x = torch.randn(4, 3, 16, 16)
    sample = {t: hard_gumbel_softmax(getattr(net, f"alphas_{t}"), 1.0, torch.Generator().manual_seed(i))
              for i, t in enumerate(("normal", "reduce"))}
    weights = {t: w for t, (w, _) in sample.items()}
    index = {t: i.tolist() for t, (_, i) in sample.items()}
    ref = net.forward_sampled(x, weights, index)
    net.set_backend(backend)
    out = net.forward_sampled(x, weights, index)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    one_path = _saved_bytes(lambda: net.forward_sampled(x, weights, index))
    everything = _saved_bytes(lambda: net(x))
    assert one_path < 0.35 * everything, (one_path, everything)


def test_genotype_is_the_official_rule():
    """Per node the two strongest (op, input) pairs over all its edges, 'none' left out: both may read
    the same input."""
    net = SearchNetwork(C=4, layers=3, primitives=GDAS_PRIMITIVES, pool_bn=None, last_act=True)
    strategy = GDASStrategy(net)
    with torch.no_grad():
        net.alphas_normal.zero_()
        net.alphas_normal[0, 0] = 9.0                                  # 'none' never counts
        net.alphas_normal[1, GDAS_PRIMITIVES.index("sep_conv_3x3")] = 3.0
        net.alphas_normal[1, GDAS_PRIMITIVES.index("dil_conv_5x5")] = 2.5
        net.alphas_normal[0, GDAS_PRIMITIVES.index("max_pool_3x3")] = 1.0
    node0 = strategy.derive().normal.nodes[0]
    assert [(e.op, e.input) for e in node0] == [("sep_conv_3x3", 1), ("dil_conv_5x5", 1)]


def test_recipe_refuses_partial_channels_and_bad_tau():
    with pytest.raises(RecipeError, match="partial_k: 1 and edge_norm: false"):
        load_search_recipe(REPO / "recipes" / "smoke_gdas.yaml", ["partial_k=2"])
    with pytest.raises(RecipeError, match="tau_min"):
        load_search_recipe(REPO / "recipes" / "smoke_gdas.yaml", ["options.tau_min=0"])
    r = load_search_recipe(REPO / "recipes" / "gdas_cifar10.yaml")
    o = r.strategy_options()
    assert (r.epochs, r.batch_size, r.lr, r.lr_min, r.weight_decay, r.nesterov, r.arch_lr, r.arch_weight_decay,
            r.C, r.layers, o.tau_max, o.tau_min) == (250, 256, 0.025, 0.001, 5e-4, True, 3e-4, 1e-3, 16, 6, 10.0, 0.1)


# ---------------------------------------------------------------- against the official code
def _official_and_ours(C=4, N=1):
    search_model = pytest.importorskip("xautodl.models.cell_searchs.search_model_gdas_nasnet")
    from xautodl.models.cell_operations import SearchSpaceNames

    torch.manual_seed(1)
    official = search_model.NASNetworkGDAS(C, N, 4, 4, 3, 10, SearchSpaceNames["darts"], False, True).double()
    ours = SearchNetwork(C=C, layers=3 * N, num_classes=10, primitives=GDAS_PRIMITIVES, pool_bn=None,
                         last_act=True, backend="reference").double()
    layers = lambda net: [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]  # noqa: E731
    pairs = list(zip(layers(official), layers(ours), strict=True))
    affine = lambda net: [m for m in net.modules() if isinstance(m, nn.BatchNorm2d) and m.affine]  # noqa: E731
    with torch.no_grad():
        for a, b in pairs:
            assert a.weight.shape == b.weight.shape
            b.weight.copy_(a.weight)
            if isinstance(a, nn.Conv2d) and a.bias is not None:
                a.bias.zero_()   # the official's convs before BatchNorm carry a bias (see gdas.py)
            elif isinstance(a, nn.Linear):
                b.bias.copy_(a.bias)
        for a, b in zip(affine(official), affine(ours), strict=True):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        ours.alphas_normal.copy_(official.arch_normal_parameters)
        ours.alphas_reduce.copy_(official.arch_reduce_parameters)
    return official, ours, pairs


def _official_step(net, w_optimizer, a_optimizer, base, arch, clip):
    """``search_func``'s loop body (exps/NAS-Bench-201-algos/GDAS.py), with PyTorch 1.x's
    ``zero_grad()`` (zeroing, not dropping, gradients), the version the code was written for."""
    w_optimizer.zero_grad(set_to_none=False)
    _, logits_w = net(base[0])
    F.cross_entropy(logits_w, base[1]).backward()
    nn.utils.clip_grad_norm_(net.parameters(), clip)   # the official's 5
    w_optimizer.step()
    a_optimizer.zero_grad(set_to_none=False)
    _, logits_a = net(arch[0])
    F.cross_entropy(logits_a, arch[1]).backward()
    a_optimizer.step()
    return logits_w.detach(), logits_a.detach(), [p.grad.clone() for p in net.get_alphas()]


def test_search_steps_match_the_official_code():
    """Two search steps from the same state, batches and Gumbel noise: xautodl 1.0.0's logits,
    architecture gradients, updated weights, alphas and BatchNorm statistics, within float reordering.
    The gradient clip is 0.05 instead of 5, so that it binds on this tiny network and what its norm
    counts is compared too."""
    clip = 0.05
    official, ours, pairs = _official_and_ours()
    w_official = torch.optim.SGD(official.get_weights(), 0.025, momentum=0.9, weight_decay=5e-4, nesterov=True)
    a_official = torch.optim.Adam(official.get_alphas(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    strategy = GDASStrategy(ours, arch_lr=3e-4, arch_weight_decay=1e-3, grad_clip=clip,
                            generator=torch.Generator().manual_seed(7))
    w_ours = torch.optim.SGD(ours.weight_parameters(), 0.025, momentum=0.9, weight_decay=5e-4, nesterov=True)
    strategy.start_epoch(3, 10)
    official.set_tau(10 - (10 - 0.1) * 3 / 9)
    assert strategy.tau == official.get_tau()
    logits = []
    original = strategy.forward
    strategy.forward = lambda x: logits.append(original(x)) or logits[-1]
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(7)   # the official draws its noise from the global generator, in the same order
    for _ in range(2):
        base = (torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=gen), torch.randint(0, 10, (4,), generator=gen))
        arch = (torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=gen), torch.randint(0, 10, (4,), generator=gen))
        want_w, want_a, want_grads = _official_step(official, w_official, a_official, base, arch, clip)
        strategy.step(base, arch, w_ours)
        close = dict(rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(logits[-2].detach(), want_w, **close)
        torch.testing.assert_close(logits[-1].detach(), want_a, **close)
        for got, want in zip(ours.arch_parameters(), want_grads):
            torch.testing.assert_close(got.grad, want, **close)
        for got, want in zip(ours.arch_parameters(), official.get_alphas()):
            torch.testing.assert_close(got.detach(), want.detach(), **close)
        for a, b in pairs:
            torch.testing.assert_close(b.weight.detach(), a.weight.detach(), **close)
        stats = lambda net: [m.running_mean for m in net.modules() if isinstance(m, nn.BatchNorm2d)]  # noqa: E731
        for got, want in zip(stats(ours), stats(official), strict=True):
            torch.testing.assert_close(got, want, **close)


# ---------------------------------------------------------------- end to end
def test_smoke_search_resumes_exactly_after_a_kill_and_its_genotype_loads_and_exports(tmp_path, monkeypatch):
    from nasnetzoo.search import runner

    monkeypatch.setattr(runner, "plot_history", lambda *args: None)   # seconds per run (drawn in test_plot)
    recipe = REPO / "recipes" / "smoke_gdas.yaml"
    overrides = [*TINY, "epochs=3"]
    whole = run_search(recipe, out=tmp_path / "whole", overrides=overrides)
    cut = tmp_path / "cut"
    pid = os.fork()
    if pid == 0:   # the child is killed in its 4th step (epoch 2), after the first checkpoint
        try:
            calls = [0]
            original = GDASStrategy.step

            def step(self, *args):
                calls[0] += 1
                if calls[0] == 4:
                    os._exit(9)
                return original(self, *args)

            GDASStrategy.step = step
            run_search(recipe, out=cut, overrides=overrides)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9 and (cut / CHECKPOINT).is_file()
    resumed = run_search(None, resume=cut)
    assert resumed.genotype == whole.genotype
    a = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=False)
    b = torch.load(cut / CHECKPOINT, weights_only=False)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["strategy"]["generator"], b["strategy"]["generator"])
    assert a["strategy"]["with_grad"] == b["strategy"]["with_grad"]
    assert a["history"] == b["history"]
    assert [r["distribution"]["tau"] for r in a["history"]] == [10.0, pytest.approx(5.05), pytest.approx(0.1)]
    genotype = Genotype.from_file(cut / "genotype.yaml")
    assert genotype.provenance["strategy"] == "gdas"
    model = nasnetzoo.load(str(cut / "genotype.yaml"), C=8, layers=5)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from nasnetzoo.export import export_onnx

    result = export_onnx(model.eval(), tmp_path / "export", name="gdas_smoke", input_size=(32, 32), threads=1)
    assert result.onnx_path.is_file() and all(v["passed"] for v in result.report["verification"])
