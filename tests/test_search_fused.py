"""The fused mixed op equals the reference one; checkpointing recomputes exactly; less is saved."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nasnetzoo.search.backends import node_mix
from nasnetzoo.search.backends.fused import max_pool
from nasnetzoo.search.strategies import DARTSStrategy, PCDARTSStrategy
from nasnetzoo.search.supernet import MixedOp, SearchNetwork

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from search_memory import saved_activation_bytes  # noqa: E402

NETS = {"darts": {}, "pcdarts": dict(partial_k=2, edge_norm=True)}


def make_pair(kind, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    ref = SearchNetwork(C=8, layers=5, num_classes=3, fused=False, **NETS[kind], **kw).to(dtype)
    with torch.no_grad():   # far from uniform, so every op's weight matters
        for a in ref.arch_parameters():
            a.normal_(0, 1)
    return ref, copy.deepcopy(ref).set_fused(True)


def forward_backward(net, x, y):
    loss = F.cross_entropy(net(x), y)
    return loss.detach(), torch.autograd.grad(loss, list(net.parameters())), [b.clone() for b in net.buffers()]


@pytest.mark.parametrize("kind", NETS)
@pytest.mark.parametrize("size", [8, 9])
def test_fused_equals_reference_in_float64(kind, size):
    """Same function, same gradients, same BatchNorm statistics: equal up to float rounding."""
    ref, fused = make_pair(kind, torch.float64)
    x, y = torch.randn(4, 3, size, size, dtype=torch.float64), torch.randint(0, 3, (4,))
    (l0, g0, b0), (l1, g1, b1) = forward_backward(ref, x, y), forward_backward(fused, x, y)
    assert abs(float(l0 - l1)) < 1e-12
    for (name, _), a, b in zip(ref.named_parameters(), g0, g1):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), name
    for a, b in zip(b0, b1):
        assert torch.allclose(a.double(), b.double(), rtol=1e-12, atol=1e-12)
    ref.eval(), fused.eval()   # eval mode: running statistics
    assert torch.allclose(ref(x), fused(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind,strategy", [("darts", DARTSStrategy), ("pcdarts", PCDARTSStrategy)])
def test_fused_search_follows_the_reference_trajectory(kind, strategy):
    """Three first-order steps (architecture then weights) in fp32: the same alphas and weights."""
    nets = make_pair(kind)
    runs = []
    for net in nets:
        torch.manual_seed(1)
        s = strategy(net)
        opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
        for _ in range(3):
            batch = (torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,)))
            s.arch_step(batch, batch, opt)
            s.weight_step(batch, opt)
        runs.append(net.state_dict())
    for key in runs[0]:
        assert torch.allclose(runs[0][key].double(), runs[1][key].double(), rtol=1e-4, atol=1e-5), key


@pytest.mark.parametrize("kind", NETS)
@pytest.mark.parametrize("C,size", [(8, 9), (4, 32)])   # 32 px: the CPU depthwise kernel on 2-5 edges' channels
def test_edges_side_by_side_equal_edge_by_edge_in_float64(kind, C, size, monkeypatch):
    """A node's edges run as one wide edge: same loss, gradients and BatchNorm statistics as one by one."""
    torch.manual_seed(0)
    net = SearchNetwork(C=C, layers=3 if size > 16 else 5, num_classes=3, backend="fused", **NETS[kind]).double()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 1)
    one_by_one = copy.deepcopy(net).set_fused(True, side_by_side=False)
    groups = []
    run_group = node_mix._group
    monkeypatch.setattr(node_mix, "_group", lambda edges, *a: groups.append(len(edges)) or run_group(edges, *a))
    x, y = torch.randn(4, 3, size, size, dtype=torch.float64), torch.randint(0, 3, (4,))
    (l0, g0, b0), (l1, g1, b1) = forward_backward(one_by_one, x, y), forward_backward(net, x, y)
    normal = sum(not c.reduction for c in net.cells)
    # a normal cell's node i is one group of i + 2 edges; a reduction cell's splits by stride
    assert sorted(groups) == sorted([2, 3, 4, 5] * normal + [2, 2, 2, 2, 1, 2, 3] * (len(net.cells) - normal))
    assert abs(float(l0 - l1)) < 1e-12
    for (name, _), a, b in zip(net.named_parameters(), g0, g1):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), name
    for (name, _), a, b in zip(net.named_buffers(), b0, b1):   # running statistics, batches counted
        assert torch.allclose(a.double(), b.double(), rtol=1e-12, atol=1e-12), name


def test_a_node_with_an_op_it_does_not_know_is_summed_edge_by_edge():
    """An op outside the DARTS chains (here a wrapped conv op) makes its node fall back, same result."""
    class Wrapped(torch.nn.Module):
        def __init__(self, op):
            super().__init__()
            self.inner = op

        def forward(self, x):
            return self.inner(x)

    _, net = make_pair("darts", torch.float64)
    first_node = list(net.cells[0].edges[:2])
    assert node_mix._batchable(first_node)   # and the answer is kept on the edges ...
    net.cells[0].edges[0].ops[4] = Wrapped(net.cells[0].edges[0].ops[4])   # ... until an op changes
    one_by_one = copy.deepcopy(net).set_fused(True, side_by_side=False)
    assert not node_mix._batchable(first_node) and node_mix._batchable(list(net.cells[0].edges[2:5]))
    net.cells[0].edges[3].eval()   # or a training flag
    assert not node_mix._batchable(list(net.cells[0].edges[2:5]))
    net.cells[0].edges[3].train()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(net(x), one_by_one(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", NETS)
def test_checkpoint_recomputes_exactly_and_updates_batch_norm_once(kind):
    _, plain = make_pair(kind, torch.float64)
    ckpt = copy.deepcopy(plain)
    ckpt.memory = "checkpoint"
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (4,))
    (l0, g0, b0), (l1, g1, b1) = forward_backward(plain, x, y), forward_backward(ckpt, x, y)
    assert float(l0) == float(l1)
    for (name, _), a, b in zip(plain.named_parameters(), g0, g1):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14), name
    for a, b in zip(b0, b1):   # running stats and num_batches_tracked: updated once, not twice
        assert torch.equal(a, b)


def test_checkpoint_works_with_both_architecture_steps():
    """First- and second-order architecture steps give the same alphas with and without checkpointing."""
    for second_order in (False, True):
        results = []
        for memory in ("default", "checkpoint"):
            torch.manual_seed(0)
            net = SearchNetwork(C=4, layers=3, num_classes=3, memory=memory, backend="fused").double()
            s = DARTSStrategy(net, second_order=second_order)
            opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
            for _ in range(2):
                batch = (torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (4,)))
                s.arch_step(batch, batch, opt)
                s.weight_step(batch, opt)
            results.append(net.state_dict())
        for key in results[0]:
            assert torch.allclose(results[0][key], results[1][key], rtol=1e-9, atol=1e-12), (second_order, key)


def test_fused_and_checkpoint_keep_fewer_tensors_for_backward():
    sizes = {}
    x = torch.randn(4, 3, 16, 16)
    for name, kw in (("reference", dict(backend="reference")), ("fused", {}), ("checkpoint", dict(memory="checkpoint"))):
        torch.manual_seed(0)
        net = SearchNetwork(C=8, layers=5, num_classes=3, **kw)
        record = []
        with saved_activation_bytes(record):
            net(x).sum().backward()
        sizes[name] = record[0]
    assert sizes["fused"] < 0.65 * sizes["reference"]
    assert sizes["checkpoint"] < 0.1 * sizes["reference"]


def test_max_pool_without_indices_has_the_exact_gradient():
    pool = torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    for x in (torch.randn(2, 3, 9, 9), torch.ones(2, 3, 8, 8)):   # ones: every window ties
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_a, out_b = pool(a), max_pool(pool, b)
        grad = torch.randn_like(out_a)
        assert torch.equal(out_a, out_b)
        out_a.backward(grad)
        out_b.backward(grad)
        assert torch.equal(a.grad, b.grad)


def test_an_edge_of_zero_ops_only():
    op = MixedOp(4, 2, ["none"])
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(op(x, torch.ones(1)), torch.zeros(2, 4, 4, 4))


def test_unknown_memory_mode_is_one_clear_error():
    from nasnetzoo.errors import ConfigError

    with pytest.raises(ConfigError, match="memory mode 'lots'"):
        SearchNetwork(C=4, layers=3, memory="lots")


@pytest.mark.parametrize("kind,strategy", [("darts", DARTSStrategy), ("pcdarts", PCDARTSStrategy)])
def test_bf16_autocast_search_step_on_the_cpu(kind, strategy):
    """``amp: bf16`` on the CPU: the fused ops (BatchNorm scaled in fp32, pools, checkpoint) run under
    autocast, and the logits stay near fp32's."""
    _, net = make_pair(kind, memory="checkpoint")
    s = strategy(net)
    s.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)
    batch = (torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,)))
    net.eval()
    with torch.no_grad():
        fp32 = net(batch[0])
        bf16 = s.forward(batch[0])
    net.train()
    assert bf16.dtype == torch.bfloat16 and torch.allclose(bf16.float(), fp32, atol=0.1, rtol=0.1)
    stats = s.arch_step(batch, batch, opt)
    loss, _ = s.weight_step(batch, opt)
    assert torch.isfinite(loss) and stats["arch_loss"] == stats["arch_loss"]
    assert all(torch.isfinite(a.grad).all() for a in net.arch_parameters())


def test_channel_shuffle_keeps_channels_last_and_permutes_alike():
    x = torch.randn(2, 8, 3, 5)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    from nasnetzoo.search.supernet import channel_shuffle

    out = channel_shuffle(nhwc, 4)
    assert torch.equal(out, channel_shuffle(x, 4)) and out.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_opt_in_runs_channels_last_end_to_end():
    net = SearchNetwork(C=8, layers=5, num_classes=3, partial_k=2, edge_norm=True, channels_last=True)
    formats = []
    for cell in net.cells:
        cell.register_forward_hook(lambda m, args, out: formats.append(out.is_contiguous(memory_format=torch.channels_last)))
    net(torch.randn(2, 3, 9, 9))
    assert all(formats)
    assert not SearchNetwork(C=4, layers=3).channels_last   # opt-in (see SearchNetwork)


def test_a_sampled_architecture_runs_alike_on_both_paths():
    """PARSEC's discrete forward: the fused path (channels_last, pools without indices) equals the reference."""
    ref, fused = make_pair("darts", torch.float64)
    choice = {t: [[(0, 1), (1, 4)], [(2, 2), (0, 3)], [(3, 7), (1, 6)], [(4, 5), (2, 1)]] for t in ("normal", "reduce")}
    x = torch.randn(4, 3, 9, 9, dtype=torch.float64)
    outs = []
    for net in (ref, fused):
        logits = net.forward_discrete(x, choice)
        outs.append((logits.detach(), torch.autograd.grad(logits.square().sum(), list(net.weight_parameters()),
                                                          allow_unused=True)))
    assert torch.allclose(outs[0][0], outs[1][0], rtol=1e-10, atol=1e-12)
    for a, b in zip(outs[0][1], outs[1][1]):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, rtol=1e-9, atol=1e-12))
