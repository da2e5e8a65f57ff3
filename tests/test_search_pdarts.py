"""P-DARTS: the official op dropping, edge choice and skip_connect restriction on hand-made weights,
the skip_connect dropout and its schedule, one search step against the official loop, and a smoke
search that resumes exactly after a kill, across a stage boundary too."""
from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nasnetzoo
from nasnetzoo.genotype import Genotype
from nasnetzoo.ops.darts import DARTS_PRIMITIVES
from nasnetzoo.recipe_file import RecipeError
from nasnetzoo.search import run_search
from nasnetzoo.search.recipe import load_search_recipe
from nasnetzoo.search.runner import CHECKPOINT
from nasnetzoo.search.strategies.pdarts import (PDARTSOptions, PDARTSStrategy, drop_ops, min_k, min_k_no_zero,
                                                 parse_switches, pdarts_genotype, skip_dropout_rate)
from nasnetzoo.search.supernet import SearchNetwork

REPO = Path(__file__).resolve().parents[1]
P = DARTS_PRIMITIVES   # none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5
NONE, MAX, AVG, SKIP, SEP3, SEP5, DIL3, DIL5 = range(8)


def switches_of(*rows: list[int]) -> list[list[bool]]:
    return [[k in ops for k in range(8)] for ops in rows]


# ---------------------------------------------------------------- the official rules
def test_min_k_takes_the_first_minimum_and_no_zero_always_drops_none():
    assert min_k([0.3, 0.1, 0.2, 0.1, 0.3], 3) == [1, 3, 2]            # np.argmin: the first of equals
    assert min_k_no_zero([0.5, 0.2, 0.3], [NONE, SEP3, SEP5], 2, NONE) == [0, 1]   # none although strongest
    assert min_k_no_zero([0.5, 0.2, 0.3], [MAX, SEP3, SEP5], 2, NONE) == [1, 2]    # no none: the two weakest
    assert min_k_no_zero([0.1, 0.5, 0.2, 0.3], [MAX, SKIP, SEP3, SEP5], 2, NONE) == [0, 2]


def test_stage_drops_give_the_official_switches():
    """Hand-computed from ``get_min_k`` (stages 1, 2) and ``get_min_k_no_zero`` (stage 3)."""
    uniform = [1 / 8] * 8
    e0 = [0.05, 0.2, 0.1, 0.15, 0.12, 0.08, 0.18, 0.12]   # drops none (0.05), sep5 (0.08), avg (0.1)
    e1 = [0.3] + [0.1] * 7                                  # ties: the first three after none
    start = [[True] * 8 for _ in range(14)]
    stage1 = drop_ops(start, [e0, e1] + [uniform] * 12, 3, no_zero=False, none=NONE)
    assert stage1[:3] == switches_of([MAX, SKIP, SEP3, DIL3, DIL5], [NONE, SEP3, SEP5, DIL3, DIL5],
                                     [SKIP, SEP3, SEP5, DIL3, DIL5])
    stage2 = drop_ops(stage1, [[0.3, 0.1, 0.25, 0.15, 0.2], [0.4, 0.1, 0.2, 0.1, 0.2]] + [[0.2] * 5] * 12, 2,
                      no_zero=False, none=NONE)
    assert stage2[:3] == switches_of([MAX, SEP3, DIL5], [NONE, SEP5, DIL5], [SEP5, DIL3, DIL5])
    stage3 = drop_ops(stage2, [[0.2, 0.3, 0.5], [0.5, 0.2, 0.3]] + [[1 / 3] * 3] * 12, 2, no_zero=True, none=NONE)
    assert stage3[:3] == switches_of([DIL5], [DIL5], [DIL5])   # edge 1: none dropped though strongest
    assert all(sum(row) == 1 for row in stage3)


# The last stage's three ops per edge of the normal cell and their weights (hand-made):
LAST = [[NONE, SKIP, SEP3], [SKIP, SEP3, DIL3],                                       # node 0
        [MAX, SKIP, SEP5], [SKIP, SEP3, SEP5], [AVG, SEP3, DIL5],                     # node 1
        [NONE, SKIP, DIL3], [SKIP, SEP5, DIL5], [MAX, SEP3, DIL3], [AVG, SKIP, SEP5],  # node 2
        [SKIP, SEP3, SEP5], [MAX, DIL3, DIL5], [NONE, SEP3, SEP5], [AVG, SKIP, DIL5], [SKIP, SEP3, DIL3]]
PROBS = [[0.5, 0.3, 0.2], [0.4, 0.35, 0.25],
         [0.2, 0.5, 0.3], [0.3, 0.45, 0.25], [0.3, 0.3, 0.4],
         [0.6, 0.25, 0.15], [0.5, 0.2, 0.3], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4],
         [0.45, 0.3, 0.25], [0.2, 0.5, 0.3], [0.9, 0.06, 0.04], [0.3, 0.33, 0.37], [0.2, 0.3, 0.5]]


def test_genotype_and_skip_connect_restriction_are_the_official_ones():
    """By hand, with train_search.py's rules: none's weight zeroed, one op per edge, two edges per
    node, which gives 4 skip_connects (edges 0, 1, 2, 6); ``delete_min_sk_prob`` zeroes edge 0's
    (0.3, the weakest: it keeps sep_conv_3x3), then edge 1's (0.4: sep_conv_3x3); 2 are left.  The
    reduce cell (the same weights) keeps its 4."""
    switches = {"normal": switches_of(*LAST), "reduce": switches_of(*LAST)}
    final, details = pdarts_genotype({"normal": PROBS, "reduce": PROBS}, switches, list(P), 4, 2)
    assert details == {"skip_connects_before_restriction": 4, "skip_weights_zeroed": 2}
    assert parse_switches(final["normal"], P, 4) == [
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)], [("skip_connect", 0), ("sep_conv_3x3", 1)],
        [("skip_connect", 1), ("sep_conv_3x3", 2)], [("dil_conv_3x3", 1), ("dil_conv_3x3", 4)]]
    assert parse_switches(final["reduce"], P, 4) == [
        [("skip_connect", 0), ("skip_connect", 1)], [("skip_connect", 0), ("sep_conv_3x3", 1)],
        [("skip_connect", 1), ("sep_conv_3x3", 2)], [("dil_conv_3x3", 1), ("dil_conv_3x3", 4)]]
    # a bound of 4 leaves the normal cell as the edge rule chose it; a bound of 0 removes every skip
    assert pdarts_genotype({"normal": PROBS, "reduce": PROBS}, switches, list(P), 4, 4)[0]["normal"] == \
        final["reduce"]
    none_left, details = pdarts_genotype({"normal": PROBS, "reduce": PROBS}, switches, list(P), 4, 0)
    assert details["skip_connects_before_restriction"] == 4 and \
        not any(row[SKIP] for row in none_left["normal"])


def _strategy(ops_per_edge: list[list[int]], probs: list[list[float]], *, options=None, epochs=6, warmup=1):
    net = SearchNetwork(C=4, layers=3, edge_ops={"normal": ops_per_edge, "reduce": ops_per_edge}, skip_dropout=True,
                        backend="reference")
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(torch.tensor(probs).log())   # softmax(log p) = p
    return PDARTSStrategy(net, options=options or PDARTSOptions(add_layers=[0, 1, 2]), epochs=epochs,
                          warmup_epochs=warmup, layers=3, C=4)


def test_the_strategy_asks_for_the_next_stages_network_with_the_surviving_ops():
    probs = [[0.05, 0.2, 0.1, 0.15, 0.12, 0.08, 0.18, 0.12]] * 14
    strategy = _strategy([list(range(8))] * 14, probs)
    strategy.start_epoch(1, 6)   # the last epoch of stage 1 (3 stages of 2 epochs)
    assert strategy.network_change(1, 6) is None
    change = strategy.network_change(2, 6)
    assert change.epochs == 2 and change.options["layers"] == 4 and change.options["skip_dropout"]
    assert change.options["edge_ops"]["normal"] == [[MAX, SKIP, SEP3, DIL3, DIL5]] * 14
    dist = strategy.distribution()
    assert dist["dropped_normal"][0] == ["none", "avg_pool_3x3", "sep_conv_5x5"] and dist["stage"] == 1
    # the last stage: none dropped although it is the strongest (get_min_k_no_zero)
    last = _strategy([[NONE, SEP3, SEP5]] * 14, [[0.5, 0.2, 0.3]] * 14)
    last.start_epoch(5, 6)
    assert last.distribution()["dropped_normal"][0] == ["none", "sep_conv_3x3"]
    assert last.network_change(6, 6) is None


def test_skip_connect_dropout_follows_the_official_schedule():
    """train_search.py: ``rate * (epochs - epoch - 1) / epochs`` in the weights-only epochs, then
    ``rate * exp(-(epoch - eps_no_arch) * 0.2)``; 25 epochs, 10 weights-only."""
    assert skip_dropout_rate(0.4, 0, 25, 10, 0.2) == pytest.approx(0.4 * 24 / 25)
    assert skip_dropout_rate(0.4, 9, 25, 10, 0.2) == pytest.approx(0.4 * 15 / 25)
    assert skip_dropout_rate(0.4, 10, 25, 10, 0.2) == pytest.approx(0.4)
    assert skip_dropout_rate(0.4, 15, 25, 10, 0.2) == pytest.approx(0.4 * math.exp(-1.0))
    strategy = _strategy([list(range(8))] * 14, [[1 / 8] * 8] * 14,
                         options=PDARTSOptions(add_layers=[0, 1, 2], dropout_rate=[0.1, 0.4, 0.7]), epochs=75, warmup=10)
    strategy.start_epoch(25 + 12, 75)   # stage 2, its epoch 12
    assert strategy.network.skip_dropout_prob == pytest.approx(0.4 * math.exp(-0.4))
    assert [strategy.trains_architecture(e, 10) for e in (9, 10, 25 + 9, 25 + 10, 74)] == [False, True, False, True, True]
    # the dropout sits after the stride-1 identities only (a reduction's input edges have none)
    dropouts = [(cell.reduction, e) for cell in strategy.network.cells for e, edge in enumerate(cell.edges)
                for op in edge.ops if isinstance(op, nn.Sequential) and isinstance(op[-1], nn.Dropout)]
    assert sorted(e for reduction, e in dropouts if not reduction) == list(range(14))
    assert sorted(e for reduction, e in dropouts if reduction) == [4, 4, 7, 7, 8, 8, 11, 11, 12, 12, 13, 13]
    net = SearchNetwork(C=4, layers=3, skip_dropout=False)
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())   # a rate of 0: no dropout built


def test_recipes_hold_the_official_protocol_and_refuse_bad_values():
    r = load_search_recipe(REPO / "recipes" / "pdarts_cifar10.yaml")
    o = r.strategy_options()
    assert (r.epochs, r.warmup_epochs, r.layers, r.C, r.batch_size, r.lr, r.lr_min, r.weight_decay, r.arch_lr,
            r.arch_weight_decay, r.grad_clip) == (75, 10, 5, 16, 96, 0.025, 0.0, 3e-4, 6e-4, 1e-3, 5.0)
    assert (o.add_layers, o.num_to_drop, o.dropout_rate, o.dropout_decay, o.max_skip_connects) == \
        ([0, 6, 12], [3, 2, 2], [0.1, 0.4, 0.7], 0.2, 2)
    smoke = REPO / "recipes" / "smoke_pdarts.yaml"
    for override, message in [("epochs=10", "split into 3 stages"), ("warmup_epochs=3", "counts per stage"),
                              ("options.num_to_drop=[3,3,2]", "must sum to 7"), ("partial_k=2", "partial_k: 1"),
                              ("options.add_layers=[0,6]", "one value per stage")]:
        with pytest.raises(RecipeError, match=message):
            load_search_recipe(smoke, [override])


# ---------------------------------------------------------------- one step against the official loop
def _official_forward(net: SearchNetwork, x: torch.Tensor) -> torch.Tensor:
    """model_search.py's ``Network.forward``: per edge ``sum(w * op(h))`` over its surviving ops,
    ``w = softmax(alpha)``, the cells' nodes summed, the last four concatenated."""
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        w = F.softmax(net.alphas_reduce if cell.reduction else net.alphas_normal, dim=-1)
        states = [cell.preprocess0(s0), cell.preprocess1(s1)]
        offset = 0
        for _ in range(cell.steps):
            states.append(sum(sum(wk * op(h) for wk, op in zip(w[offset + j], cell.edges[offset + j].ops))
                              for j, h in enumerate(states)))
            offset += len(states) - 1
        s0, s1 = s1, torch.cat(states[-cell.multiplier:], dim=1)
    return net.classifier(net.global_pool(s1).flatten(1))


def _official_step(net, optimizer, optimizer_a, base, arch, clip):
    """train_search.py's ``train`` loop body, with PyTorch 0.4's ``zero_grad`` (zeroing)."""
    optimizer_a.zero_grad(set_to_none=False)
    logits_a = _official_forward(net, arch[0])
    F.cross_entropy(logits_a, arch[1]).backward()
    nn.utils.clip_grad_norm_(net.arch_parameters(), clip)
    arch_grads = [p.grad.clone() for p in net.arch_parameters()]
    optimizer_a.step()
    optimizer.zero_grad(set_to_none=False)
    logits = _official_forward(net, base[0])
    F.cross_entropy(logits, base[1]).backward()
    nn.utils.clip_grad_norm_(net.weight_parameters(), clip)
    optimizer.step()
    return logits_a.detach(), logits.detach(), arch_grads


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_search_steps_match_the_official_loop(backend):
    """Two steps of a stage-2 supernet (5 ops per edge, skip_connect dropout 0.3) from the same
    state, batches and dropout draws: the official loop's logits, architecture gradients, alphas,
    weights and BatchNorm statistics.  The clip is 0.05, so that both clips bind and count."""
    clip = 0.05
    ops = [[MAX, SKIP, SEP3, DIL3, DIL5]] * 7 + [[NONE, AVG, SKIP, SEP5, DIL5]] * 7
    torch.manual_seed(1)
    official = SearchNetwork(C=4, layers=4, edge_ops={"normal": ops, "reduce": ops[::-1]}, skip_dropout=True,
                             backend="reference").double()
    with torch.no_grad():
        for a in official.arch_parameters():
            a.normal_()
    ours = copy.deepcopy(official).set_backend(backend)
    official.skip_dropout_prob = ours.skip_dropout_prob = 0.3
    sgd = dict(lr=0.025, momentum=0.9, weight_decay=3e-4)
    w_official = torch.optim.SGD(official.weight_parameters(), **sgd)
    a_official = torch.optim.Adam(official.arch_parameters(), lr=6e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    strategy = PDARTSStrategy(ours, options=PDARTSOptions(add_layers=[0, 1, 2]), epochs=6, warmup_epochs=0,
                              layers=4, C=4, arch_lr=6e-4, grad_clip=clip)
    strategy.start_epoch(2, 6)
    ours.skip_dropout_prob = 0.3
    w_ours = torch.optim.SGD(ours.weight_parameters(), **sgd)
    logits = []
    original = strategy.forward
    strategy.forward = lambda x: logits.append(original(x)) or logits[-1]
    gen = torch.Generator().manual_seed(0)
    close = dict(rtol=1e-9, atol=1e-12)
    for step in range(2):
        base = (torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=gen), torch.randint(0, 10, (4,), generator=gen))
        arch = (torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=gen), torch.randint(0, 10, (4,), generator=gen))
        torch.manual_seed(10 + step)   # the same dropout draws, in the same order
        want_a, want_w, want_grads = _official_step(official, w_official, a_official, base, arch, clip)
        torch.manual_seed(10 + step)
        strategy.step(base, arch, w_ours)
        torch.testing.assert_close(logits[-2].detach(), want_a, **close)
        torch.testing.assert_close(logits[-1].detach(), want_w, **close)
        for got, want in zip(ours.arch_parameters(), want_grads):
            torch.testing.assert_close(got.grad, want, **close)
        for got, want in zip(ours.parameters(), official.parameters(), strict=True):
            torch.testing.assert_close(got.detach(), want.detach(), **close)
        for got, want in zip(ours.buffers(), official.buffers(), strict=True):
            torch.testing.assert_close(got, want, **close)


# ---------------------------------------------------------------- end to end
# 3 stages of 2 epochs (3, 4, 5 cells), the first of each weights-only, one step per epoch.
TINY = ["image_size=16", "C=4", "layers=3", "batch_size=16", "max_steps_per_epoch=1", "progress=false", "threads=1",
        "epochs=6", "warmup_epochs=1", "options.add_layers=[0,1,2]"]
RECIPE = REPO / "recipes" / "smoke_pdarts.yaml"


def _same_run(a_dir: Path, b_dir: Path) -> dict:
    a = torch.load(a_dir / CHECKPOINT, weights_only=False)
    b = torch.load(b_dir / CHECKPOINT, weights_only=False)
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["history"] == b["history"] and a["network"] == b["network"]
    assert a["strategy"]["arch_optimizer"]["state"].keys() == b["strategy"]["arch_optimizer"]["state"].keys()
    for key, state in a["strategy"]["arch_optimizer"]["state"].items():
        assert all(torch.equal(v, b["strategy"]["arch_optimizer"]["state"][key][n]) for n, v in state.items())
    return a


def test_smoke_search_resumes_exactly_across_a_stage_boundary_and_its_genotype_loads(tmp_path, monkeypatch):
    """Killed in the first step of stage 3: its checkpoint holds stage 2's network (rebuilt from the
    options saved with it), whose alphas choose stage 3's ops on resume; it ends as the uninterrupted
    run, weights, alphas, Adam's state and history bitwise."""
    from nasnetzoo.search import runner

    monkeypatch.setattr(runner, "plot_history", lambda *args: None)   # seconds per run (drawn in test_plot)
    arch_epochs = []
    arch_step = PDARTSStrategy.arch_step
    monkeypatch.setattr(PDARTSStrategy, "arch_step", lambda self, *a: arch_epochs.append(self.epoch) or arch_step(self, *a))
    whole = run_search(RECIPE, out=tmp_path / "whole", overrides=TINY)
    assert arch_epochs == [1, 3, 5]   # the first epoch of each stage updates the weights only
    cut = tmp_path / "cut"
    pid = os.fork()
    if pid == 0:   # the child is killed in its 5th step (epoch 5, stage 3's first)
        try:
            calls = [0]
            original = PDARTSStrategy.step

            def step(self, *args):
                calls[0] += 1
                if calls[0] == 5:
                    os._exit(9)
                return original(self, *args)

            PDARTSStrategy.step = step
            run_search(RECIPE, out=cut, overrides=TINY)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    saved = torch.load(cut / CHECKPOINT, weights_only=False)
    assert saved["epoch"] == 3 and saved["network"]["options"]["layers"] == 4
    resumed = run_search(None, resume=cut)
    assert resumed.genotype == whole.genotype
    history = _same_run(tmp_path / "whole", cut)["history"]
    assert [r["distribution"]["ops_per_edge"] for r in history] == [8, 8, 5, 5, 3, 3]
    assert [r["distribution"]["layers"] for r in history] == [3, 3, 4, 4, 5, 5]
    assert [len(r["distribution"].get("dropped_normal", [[]])[0]) for r in history] == [0, 3, 0, 2, 0, 2]
    assert "skip_connects_before_restriction" in history[-1]["distribution"]
    assert all(r["collapse"]["skip_connects"] <= 2 for r in history)
    assert [json.loads(line)["arch_updates"] for line in (cut / "metrics.jsonl").read_text().splitlines()] == \
        [False, True] * 3
    genotype = Genotype.from_file(cut / "genotype.yaml")
    assert genotype.provenance["strategy"] == "pdarts" and genotype == whole.genotype
    model = nasnetzoo.load(str(cut / "genotype.yaml"), C=8, layers=5)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.slow
def test_stopped_on_a_stage_boundary_and_inside_a_stage_resume_exactly(tmp_path, monkeypatch):
    from nasnetzoo.search import runner

    monkeypatch.setattr(runner, "plot_history", lambda *args: None)
    recipe = load_search_recipe(RECIPE, [*TINY, "max_steps_per_epoch=2"])
    runner.search(recipe, out=tmp_path / "whole")
    for last in (1, 2):   # after stage 1's last epoch; after stage 2's first
        run = tmp_path / f"stopped{last}"
        runner.search(recipe, out=run, on_epoch_end=lambda epoch, last=last: epoch == last)
        run_search(None, resume=run)
        _same_run(tmp_path / "whole", run)


@pytest.mark.slow
def test_history_plot_draws_dropped_ops_as_gaps_and_marks_the_stages(tmp_path):
    """Ops a stage no longer has are logged as null: the plot leaves a gap (it drew in 3 s on 2
    loaded cores: slow tier)."""
    pytest.importorskip("matplotlib")
    from nasnetzoo.search.history import SearchHistory, plot_history

    genotype = Genotype.from_file(REPO / "genotypes" / "pdarts.yaml")   # the paper's cells
    full = [[1 / 8] * 8] * 14
    five = [[None, 0.2, 0.2, 0.2, None, 0.2, None, 0.2]] * 14
    history = SearchHistory()
    for epoch, (stage, alphas) in enumerate([(1, full), (2, five)]):
        history.add(epoch, {"alphas_normal": alphas, "alphas_reduce": alphas, "stage": stage, "skip_dropout": 0.1},
                    genotype, {"val_acc": 0.0})
    path = plot_history(history, tmp_path / "alphas.png", list(P))
    assert path.stat().st_size > 10_000

