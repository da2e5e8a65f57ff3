"""The supernet and the DARTS, PC-DARTS and PARSEC strategies on tiny data."""
from __future__ import annotations

import pytest
import torch

import nasnetzoo
from nasnetzoo.search.strategies import DARTSStrategy, PARSECStrategy, PCDARTSStrategy
from nasnetzoo.search.supernet import MixedOp, SearchNetwork, channel_shuffle, edge_offset, num_edges


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def batch(n=4, size=8, classes=3, dtype=torch.float32):
    return torch.randn(n, 3, size, size, dtype=dtype), torch.randint(0, classes, (n,))


def tiny(**kw):
    return SearchNetwork(C=4, layers=3, num_classes=3, **kw)


def sgd(net, lr=0.1):
    return torch.optim.SGD(net.weight_parameters(), lr=lr, momentum=0.9, weight_decay=3e-4)


@pytest.mark.parametrize("make", [
    lambda: DARTSStrategy(tiny()),
    lambda: DARTSStrategy(tiny(), second_order=True),
    lambda: PCDARTSStrategy(tiny(partial_k=2, edge_norm=True)),
    lambda: PARSECStrategy(tiny(), num_samples=3),
])
def test_each_strategy_steps_and_derives_a_valid_genotype(make):
    strategy = make()
    opt = sgd(strategy.network)
    before = [p.detach().clone() for p in strategy.network.weight_parameters()]
    for _ in range(2):
        stats = strategy.arch_step(batch(), batch(), opt)
        loss, logits = strategy.weight_step(batch(), opt)
    assert torch.isfinite(loss) and logits.shape == (4, 3) and "arch_loss" in stats
    assert any(not torch.equal(a, b) for a, b in zip(before, strategy.network.weight_parameters()))
    genotype = strategy.derive(name="test")
    nasnetzoo.Genotype.from_dict(genotype.to_dict())  # validates
    model = nasnetzoo.load(genotype, dataset="cifar10", C=4, layers=3)
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_second_order_gradient_matches_finite_differences():
    """d/d alpha of L_val(w - eta (g_train(w, alpha) + wd w), alpha), numerically, in float64."""
    torch.set_default_dtype(torch.float64)
    try:
        net = SearchNetwork(C=4, layers=3, num_classes=3)
        net.alphas_normal.data.normal_(0, 0.5)
        net.alphas_reduce.data.normal_(0, 0.5)
        strategy = DARTSStrategy(net, second_order=True)
        opt = torch.optim.SGD(net.weight_parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
        train, val = batch(dtype=torch.float64), batch(dtype=torch.float64)
        state = {k: v.clone() for k, v in net.state_dict().items()}
        _, grads = strategy.unrolled_arch_grads(train, val, opt, r=1e-4)

        def unrolled_val_loss():
            net.load_state_dict(state)
            weights = net.weight_parameters()
            g = torch.autograd.grad(strategy.loss(net(train[0]), train[1]), weights)
            with torch.no_grad():
                for p, gi in zip(weights, g):
                    p.sub_(0.5 * (gi + 1e-2 * p))
                return float(strategy.loss(net(val[0]), val[1]))

        eps = 1e-5
        for param_name, grad in (("alphas_normal", grads[0]), ("alphas_reduce", grads[1])):
            for idx in [(0, 4), (3, 1), (9, 7), (13, 2)]:
                base = state[param_name][idx].item()
                state[param_name][idx] = base + eps
                up = unrolled_val_loss()
                state[param_name][idx] = base - eps
                down = unrolled_val_loss()
                state[param_name][idx] = base
                numeric = (up - down) / (2 * eps)
                assert grad[idx].item() == pytest.approx(numeric, rel=2e-3, abs=1e-7), (param_name, idx)
    finally:
        torch.set_default_dtype(torch.float32)


def test_partial_channels_op_sees_C_over_K_and_bypass_is_untouched():
    C, K = 8, 4
    for stride in (1, 2):
        # The reference path calls each op module (so hooks see its input); the fused path must
        # give the same output.
        op = MixedOp(C, stride, ["skip_connect", "sep_conv_3x3"], partial_k=K, fused=False)
        seen = []
        for sub in op.ops:
            sub.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[1]))
        x = torch.randn(2, C, 9, 9)
        out = op(x, torch.tensor([1.0, 0.0]))
        assert seen == [C // K, C // K]
        op.fused = True
        assert torch.allclose(op(x, torch.tensor([1.0, 0.0])), out, atol=1e-6)
        # Undo the shuffle: the last C - C/K channels are the bypass, unchanged (or max-pooled).
        order = channel_shuffle(torch.arange(C, dtype=torch.float32).view(1, C, 1, 1), K).flatten().long()
        unshuffled = out[:, torch.argsort(order)]
        bypass = x[:, C // K:]
        if stride == 2:
            bypass = torch.nn.functional.max_pool2d(bypass, 2, 2, ceil_mode=True)
        assert torch.equal(unshuffled[:, C // K:], bypass)
        assert out.shape == (2, C, 9 if stride == 1 else 5, 9 if stride == 1 else 5)


def test_channel_shuffle_is_a_permutation():
    x = torch.arange(24.0).view(1, 24, 1, 1)
    for groups in (2, 3, 4, 8):
        y = channel_shuffle(x, groups).flatten()
        assert sorted(y.tolist()) == x.flatten().tolist() and not torch.equal(y, x.flatten())


def test_edge_weights_sum_to_one_per_node():
    net = tiny(partial_k=2, edge_norm=True)
    net.betas_normal.data.normal_()
    w = net.edge_weights("normal")
    assert w.shape == (num_edges(4),)
    for i in range(4):
        assert w[edge_offset(i):edge_offset(i) + 2 + i].sum().item() == pytest.approx(1.0)


def test_parsec_importance_weights_and_distribution():
    strategy = PARSECStrategy(tiny(), num_samples=4)
    w = strategy.importance_weights(torch.tensor([10.0, 12.0, 9.5, 30.0]))
    assert w.sum().item() == pytest.approx(1.0) and (w >= 0).all()
    opt = sgd(strategy.network)
    for _ in range(3):
        strategy.arch_step(batch(), batch(), opt)
    for name, logp in strategy.log_probs().items():
        probs = logp.exp()
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1])), name
        if name.startswith("input"):
            for i in range(4):  # node i may only read states 0..i+1
                assert probs[i, :, 2 + i:].sum().item() == 0.0
    # a sample only runs ops of its own architecture
    choice, _ = strategy.sample()
    assert all(len(pairs) == 2 and all(j < 2 + i for j, _ in pairs) for i, pairs in enumerate(choice["normal"]))


def test_parsec_warm_start_from_another_distribution():
    source = PARSECStrategy(tiny(), num_samples=2)
    with torch.no_grad():
        source.pi["op_normal"][:, :, 3] = 5.0  # strongly prefer one op
    target = PARSECStrategy(tiny(), num_samples=2)
    target.init_distribution(source.state_dict()["pi"])
    assert {e.op for e in target.derive().normal.edges} == {source.network.primitives[source.op_choices[3]]}
    with pytest.raises(nasnetzoo.ConfigError, match="same number of nodes"):
        PARSECStrategy(SearchNetwork(C=4, layers=3, num_classes=3, steps=3)).init_distribution(
            source.state_dict()["pi"])


@pytest.mark.parametrize("make", [lambda: PCDARTSStrategy(tiny(partial_k=2, edge_norm=True)),
                                  lambda: PARSECStrategy(tiny(), num_samples=2)])
def test_history_saves_and_plots(make, tmp_path):
    pytest.importorskip("matplotlib")
    from nasnetzoo.search.history import SearchHistory, plot_history

    strategy = make()
    history = SearchHistory()
    opt = sgd(strategy.network)
    for epoch in range(3):
        strategy.arch_step(batch(), batch(), opt)
        history.add(epoch, strategy.distribution(), strategy.derive(), {"val_acc": 0.1 * epoch})
    history.save(tmp_path / "history.json")
    again = SearchHistory.load(tmp_path / "history.json")
    assert [r["epoch"] for r in again.records] == [0, 1, 2]
    assert nasnetzoo.Genotype.from_dict(again.records[-1]["genotype"]) == strategy.derive()
    out = plot_history(again, tmp_path / "alphas.png", list(strategy.network.primitives))
    assert out.stat().st_size > 10_000


def test_collapse_report_flags_skip_heavy_cells():
    from nasnetzoo.search.history import collapse_report

    from nasnetzoo.search.history import collapse_warning

    report = collapse_report(nasnetzoo.get_genotype("pcdarts_cifar"))
    assert report == {"param_free_ops": 2, "normal_ops": 8, "skip_connects": 1, "collapse_warning": False,
                      "param_free_warning": False}
    assert collapse_warning(report) is None
    data = nasnetzoo.get_genotype("darts_v2").to_dict()
    data["normal"]["nodes"] = [[["skip_connect", 0], ["skip_connect", 1]]] * 2 + data["normal"]["nodes"][2:]
    report = collapse_report(nasnetzoo.Genotype.from_dict(data))
    assert report["skip_connects"] == 6 and report["collapse_warning"]
    assert collapse_warning(report).startswith("WARNING: 6 skip connections")


@pytest.mark.parametrize("pools, warned", [(6, False), (7, True), (8, True)])
def test_a_normal_cell_of_more_than_six_parameter_free_ops_is_warned_with_the_reason(pools, warned):
    from nasnetzoo.search.history import collapse_report, collapse_warning

    data = nasnetzoo.get_genotype("pcdarts_cifar").to_dict()
    edges = [edge for node in data["normal"]["nodes"] for edge in node]
    for i, edge in enumerate(edges):
        edge[0] = "max_pool_3x3" if i < pools else "sep_conv_3x3"
    report = collapse_report(nasnetzoo.Genotype.from_dict(data))
    assert (report["param_free_ops"], report["param_free_warning"]) == (pools, warned)
    text = collapse_warning(report)
    if warned:
        assert text.startswith(f"WARNING: {pools} of the normal cell's 8 ops are parameter-free") and "\n" not in text
        assert "warmup_epochs" in text
    else:
        assert text is None
