"""SNAS: the relaxed sample, the official cost table and resource penalty (values and gradients), drop
path on every edge, one step against the official loop's semantics, and a smoke search that resumes
exactly after a kill."""
from __future__ import annotations

import math
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
from nasnetzoo.search.strategies.snas import SNASStrategy, relaxed_gumbel_softmax, snas_temperature
from nasnetzoo.search.strategies.snas_resources import cost_tables, op_cost, resource_penalty
from nasnetzoo.search.supernet import SearchNetwork

REPO = Path(__file__).resolve().parents[1]
TINY = ["image_size=16", "C=4", "layers=3", "batch_size=16", "max_steps_per_epoch=2", "progress=false", "threads=1"]
PRIMS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
         "dil_conv_5x5")


def test_relaxed_sample_and_its_gradient_follow_the_formula():
    """Z = softmax((alpha - log(-log U)) / t); d(sum v Z)/d alpha = Z (v - <v, Z>) / t."""
    torch.manual_seed(0)
    alpha = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, 8, dtype=torch.float64)
    t = 0.3
    z = relaxed_gumbel_softmax(alpha, t, torch.Generator().manual_seed(4))
    u = torch.empty(5, 8, dtype=torch.float64).uniform_(generator=torch.Generator().manual_seed(4))
    g = -torch.log(-torch.log(u))
    expected = torch.exp((alpha.detach() + g) / t)
    torch.testing.assert_close(z.detach(), expected / expected.sum(-1, keepdim=True), rtol=1e-12, atol=0)
    (grad,) = torch.autograd.grad((v * z).sum(), alpha)
    zd = z.detach()
    torch.testing.assert_close(grad, zd * (v - (v * zd).sum(-1, keepdim=True)) / t, rtol=1e-12, atol=1e-14)


def test_temperature_is_the_official_schedule():
    """Temp_Scheduler: epoch e (0-based) runs at t_min + (t0 - t_min)(1 - (e + 1) / epochs)."""
    assert snas_temperature(0, 150, 1.0, 0.03) == pytest.approx(0.03 + 0.97 * 149 / 150)
    assert snas_temperature(149, 150, 1.0, 0.03) == pytest.approx(0.03)
    assert snas_temperature(200, 150, 1.0, 0.03) == 0.03


def test_cost_table_is_the_official_one():
    """Entries worked out by hand from SNAS/operations.py's formulas (C=4 at 8 px, C=8 in the
    reduction cell)."""
    assert op_cost("sep_conv_3x3", 4, 8, 1) == (104.0, 104.0 * 64, 64 * (7 * 4 + 4) + 104.0)
    assert op_cost("sep_conv_5x5", 8, 8, 2) == (2 * 8 * 25 + 16 * 8, (2 * 8 * 25 + 16 * 8) * 16,
                                                16 * (10 * 8 + 8) + 2 * 8 * 25 + 16 * 8)
    assert op_cost("dil_conv_5x5", 4, 8, 1) == (4 * 25 + 16, (4 * 25 + 16) * 64, 64 * (3 * 4 + 4) + 116)
    assert op_cost("dil_conv_3x3", 4, 8, 2) == (52, 52 * 16, 16 * (6 * 4 + 4) + 52)
    assert op_cost("skip_connect", 4, 8, 1) == (0, 0, 2 * 4 * 64)
    assert op_cost("skip_connect", 8, 8, 2) == (64, 64 * 16, 2 * 16 * (32 + 4) + 64)
    assert op_cost("max_pool_3x3", 4, 8, 1) == (0, 9 * 64 * 4, 2 * 64 * 4)
    assert op_cost("avg_pool_3x3", 8, 8, 2) == (0, 9 * 16 * 8, 5 * 16 * 8)
    assert op_cost("none", 4, 8, 2) == (0, 0, 0)
    net = SearchNetwork(C=4, layers=3, steps=2)
    tables = cost_tables(net, 8, dtype=torch.float64)
    assert [t for t, _ in tables] == ["normal", "reduce", "reduce"]
    (_, normal), (_, reduce), (_, reduce2) = tables
    sep3 = PRIMS.index("sep_conv_3x3")
    assert normal[:, 0, sep3].tolist() == list(op_cost("sep_conv_3x3", 4, 8, 1))
    assert reduce[:, 0, sep3].tolist() == list(op_cost("sep_conv_3x3", 8, 8, 2))     # edge 0 <- 0: stride 2
    assert reduce[:, 4, sep3].tolist() == list(op_cost("sep_conv_3x3", 8, 4, 1))     # node 1 <- node 0: at 4 px
    assert reduce2[:, 0, sep3].tolist() == list(op_cost("sep_conv_3x3", 16, 4, 2))   # the second reduction
    with pytest.raises(Exception, match="no cost for op 'conv_7x1_1x7'"):
        op_cost("conv_7x1_1x7", 4, 8, 1)


def _penalty_by_hand(tables, z, log):
    """model_search.py's terms and train_search.py's sum, written out edge by edge."""
    sums = {"normal": 0.0, "reduce": 0.0}
    for cell_type, table in tables:
        w = z[cell_type]
        for e in range(w.shape[0]):
            size, flops, mac = ((table[r, e] * w[e]).sum() for r in range(3))
            if log:
                clean = [x if abs(float(x.detach())) >= 1 else x * 0 + 1 for x in (size, flops, mac)]
                term = (torch.log(clean[0].abs()) + torch.log(clean[1].abs()) + torch.log(clean[2].abs())) / 3
            else:
                term = ((table[0, e] * w[e] * 2 + table[1, e] * w[e] / 4000 + table[2, e] * w[e] / 100) * 0.43).sum()
            sums[cell_type] = sums[cell_type] + term
    return sums["normal"] / 6 + sums["reduce"] / 2


@pytest.mark.parametrize("log", [True, False])
def test_resource_penalty_and_its_gradient_follow_the_formula(log):
    torch.manual_seed(0)
    net = SearchNetwork(C=4, layers=3, steps=2)
    tables = cost_tables(net, 8, dtype=torch.float64)
    z = {t: F.softmax(torch.randn(5, 8, dtype=torch.float64), -1).requires_grad_() for t in ("normal", "reduce")}
    with torch.no_grad():   # one edge all 'none': every resource under 1, its log terms 0 (and no gradient)
        z["normal"][1] = F.one_hot(torch.tensor(0), 8).double()
    got = resource_penalty(tables, z, log=log)
    want = _penalty_by_hand(tables, z, log)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    grads = torch.autograd.grad(got, [z["normal"], z["reduce"]])
    # d/dZ[e, k]: sum over the cells of the type of (1/3) sum_r cost_r[e, k] / R_r[e] (R_r >= 1) / 6 or / 2,
    # or, linear, 0.43 (2 size + flops / 4000 + mac / 100)[e, k] / 6 or / 2
    for cell_type, grad in zip(("normal", "reduce"), grads):
        expected = torch.zeros_like(grad)
        for t, table in tables:
            if t != cell_type:
                continue
            div = 6 if t == "normal" else 2
            if log:
                for r in range(3):
                    total = (table[r] * z[t].detach()).sum(-1, keepdim=True)
                    expected += torch.where(total.abs() >= 1, table[r] / total, torch.zeros_like(table[r])) / 3 / div
            else:
                expected += 0.43 * (2 * table[0] + table[1] / 4000 + table[2] / 100) / div
        torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-15)
    if log:
        assert torch.all(grads[0][1] == 0)


def test_drop_path_drops_every_edge_per_sample_while_training_only():
    torch.manual_seed(0)
    net = SearchNetwork(C=4, layers=3, steps=2, backend="reference").double()
    cell = net.cells[0]
    s = torch.randn(4, 12, 8, 8, dtype=torch.float64)
    w = F.softmax(torch.randn(5, 8, dtype=torch.float64), -1)
    net.drop_path_prob = 0.4
    torch.manual_seed(5)
    out = cell(s, s, w)
    torch.manual_seed(5)   # by hand: each edge's output times a per-sample Bernoulli(0.6) mask / 0.6
    states = [cell.preprocess0(s), cell.preprocess1(s)]
    for i, start in enumerate((0, 2)):
        terms = []
        for j, h in enumerate(states):
            y = cell.edges[start + j](h, w[start + j])
            mask = torch.empty(4, 1, 1, 1, dtype=torch.float64).bernoulli_(0.6)
            terms.append(y * mask / 0.6)
        states.append(sum(terms))
    torch.testing.assert_close(out, torch.cat(states[2:], 1), rtol=1e-12, atol=1e-14)
    net.eval()
    net.drop_path_prob = 0.0
    plain = cell(s, s, w)
    net.drop_path_prob = 0.4
    assert torch.equal(cell(s, s, w), plain)


def test_genotype_keeps_each_edges_most_likely_op():
    """genotype_edge_all: every edge its argmax op, 'none' meaning no edge; two edges per node."""
    net = SearchNetwork(C=4, layers=3, steps=2)
    strategy = SNASStrategy(net)
    with torch.no_grad():
        net.alphas_normal.zero_()
        net.alphas_normal[0, PRIMS.index("sep_conv_3x3")] = 2.0
        net.alphas_normal[1, 0] = 5.0                               # argmax 'none': no edge
        net.alphas_normal[2, PRIMS.index("skip_connect")] = 1.0     # node 1: three real edges, the weakest left out
        net.alphas_normal[3, PRIMS.index("dil_conv_3x3")] = 3.0
        net.alphas_normal[4, PRIMS.index("max_pool_3x3")] = 2.0
    normal = strategy.derive().normal
    assert [[(e.op, e.input) for e in node] for node in normal.nodes] == [
        [("sep_conv_3x3", 0), ("none", 1)], [("dil_conv_3x3", 1), ("max_pool_3x3", 2)]]


def test_recipes_refuse_bad_values_and_hold_the_official_protocol():
    with pytest.raises(RecipeError, match="partial_k: 1 and edge_norm: false"):
        load_search_recipe(REPO / "recipes" / "smoke_snas.yaml", ["edge_norm=true"])
    with pytest.raises(RecipeError, match="'options.separation' = 'time'"):
        load_search_recipe(REPO / "recipes" / "smoke_snas.yaml", ["options.separation=time"])
    with pytest.raises(RecipeError, match="'options.arch_optimizer'"):
        load_search_recipe(REPO / "recipes" / "smoke_snas.yaml", ["options.arch_optimizer=rmsprop"])
    r = load_search_recipe(REPO / "recipes" / "snas_cifar10.yaml")
    o = r.strategy_options()
    assert (r.epochs, r.batch_size, r.lr, r.lr_min, r.weight_decay, r.arch_lr, r.C, r.layers, r.grad_clip) == \
        (150, 64, 0.025, 0.001, 3e-4, 3e-4, 16, 8, 5.0)
    assert (o.temp, o.temp_min, o.resource_lambda, o.log_penalty, o.separation, o.drop_path_prob,
            o.arch_optimizer, o.arch_grad_clip) == (1.0, 0.03, 1.5e-3, True, "all", 0.3, "sgd", 10.0)


def test_one_step_is_the_official_loops():
    """train_search.py's train() body, written out on the same supernet: one sample Z per cell type,
    loss = CE + lambda * penalty, one backward, the weights' gradient clipped to its norm, the
    architecture's to its own, plain SGD for both.  Clips small enough to bind here."""
    torch.manual_seed(0)
    net = SearchNetwork(C=4, layers=3, steps=2, backend="reference").double()
    twin = SearchNetwork(C=4, layers=3, steps=2, backend="reference").double()
    strategy = SNASStrategy(net, resource_lambda=0.05, drop_path_prob=0.0, arch_lr=0.1, arch_grad_clip=0.01,
                            grad_clip=0.1, generator=torch.Generator().manual_seed(3))
    twin.load_state_dict(net.state_dict())
    strategy.start_epoch(4, 10)
    opt = torch.optim.SGD(net.weight_parameters(), 0.05, momentum=0.9, weight_decay=3e-4)
    twin_opt = torch.optim.SGD(twin.weight_parameters(), 0.05, momentum=0.9, weight_decay=3e-4)
    twin_arch = torch.optim.SGD(twin.arch_parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    noise = torch.Generator().manual_seed(3)
    for _ in (0, 1):   # the generator was used once for the N(1, 0.01) init; replay it
        torch.empty(5, 8, dtype=torch.float64).normal_(generator=noise)
    for _ in range(2):
        x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=gen)
        y = torch.randint(0, 10, (4,), generator=gen)
        loss, _ = strategy.step((x, y), (x, y), opt)
        t = 0.03 + 0.97 * (1 - 5 / 10)
        z = {}
        for cell_type in ("normal", "reduce"):
            u = torch.empty(5, 8, dtype=torch.float64).uniform_(generator=noise)
            z[cell_type] = F.softmax((getattr(twin, f"alphas_{cell_type}") - torch.log(-torch.log(u))) / t, -1)
        error = F.cross_entropy(twin(x, op_weights=z), y)
        total = error + 0.05 * _penalty_by_hand(cost_tables(twin, 8, dtype=torch.float64), z, True)
        twin_opt.zero_grad()
        twin_arch.zero_grad()
        total.backward()
        nn.utils.clip_grad_norm_(twin.weight_parameters(), 0.1)
        nn.utils.clip_grad_norm_(twin.arch_parameters(), 0.01)
        twin_opt.step()
        twin_arch.step()
        torch.testing.assert_close(loss, error.detach(), rtol=1e-10, atol=0)
        for (name, a), b in zip(net.named_parameters(), twin.parameters()):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-9, atol=1e-12, msg=name)
    assert math.isclose(strategy.temperature, t)


def test_smoke_search_resumes_exactly_after_a_kill_and_its_genotype_loads(tmp_path, monkeypatch):
    from nasnetzoo.search import runner

    monkeypatch.setattr(runner, "plot_history", lambda *args: None)   # seconds per run (drawn in test_plot)
    recipe = REPO / "recipes" / "smoke_snas.yaml"
    overrides = [*TINY, "epochs=2", "steps=2"]
    whole = run_search(recipe, out=tmp_path / "whole", overrides=overrides)
    cut = tmp_path / "cut"
    pid = os.fork()
    if pid == 0:   # the child is killed in its 4th step (epoch 2), after the first checkpoint
        try:
            calls = [0]
            original = SNASStrategy.step

            def step(self, *args):
                calls[0] += 1
                if calls[0] == 4:
                    os._exit(9)
                return original(self, *args)

            SNASStrategy.step = step
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
    assert a["history"] == b["history"]
    assert [r["distribution"]["temperature"] for r in a["history"]] == [pytest.approx(0.515), pytest.approx(0.03)]
    genotype = Genotype.from_file(cut / "genotype.yaml")
    assert genotype.provenance["strategy"] == "snas"
    model = nasnetzoo.load(str(cut / "genotype.yaml"), C=8, layers=5)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
