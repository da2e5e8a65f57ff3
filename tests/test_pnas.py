"""PNAS (strategy ``pnas``): the progressive space, the beam, the surrogate, the rank correlation
and the proposer's exact resume.  Every test here is CPU-cheap (a few seconds in all)."""
from __future__ import annotations

import io
import itertools
import math
import random

import pytest
import torch

from nasnetzoo.errors import ConfigError
from nasnetzoo.search.sampled.pnas import PNASProposer, top_k
from nasnetzoo.search.sampled.pnas_cells import PNAS_OPS, ProgressiveSpace, canonical_block
from nasnetzoo.search.sampled.pnas_predictor import EnsemblePredictor, PredictorConfig, spearman

SMALL_OPS = ("separable_3x3_2", "max_pool_3x3")


def brute_force_cells(space: ProgressiveSpace, blocks: int) -> list:
    """Every ordered choice of (input, op, input, op) per block, canonicalised: the cells by definition."""
    per_block = [list(itertools.product(range(space.num_inputs(b)), range(len(space.ops)),
                                        range(space.num_inputs(b)), range(len(space.ops))))
                 for b in range(blocks)]
    return [tuple(canonical_block(block) for block in cell) for cell in itertools.product(*per_block)]


# ---------------------------------------------------------------------- the space
def test_one_block_cells_of_the_paper_space():
    space = ProgressiveSpace(PNAS_OPS, 5)
    ordered = brute_force_cells(space, 1)
    assert len(ordered) == 256                          # |B_1| = 2^2 x 8^2, the paper's count
    assert len(set(ordered)) == 136                     # symmetric (swapped) blocks merged
    assert sorted(space.one_block_cells()) == sorted(set(ordered))
    assert len(space.one_block_cells()) == space.num_cells(1) == 136


@pytest.mark.parametrize("blocks", [2, 3])
def test_expansion_enumerates_every_larger_cell_exactly_once(blocks):
    space = ProgressiveSpace(SMALL_OPS, 3)
    smaller = sorted(set(brute_force_cells(space, blocks - 1)))
    expanded = space.expand_all(smaller)
    truth = set(brute_force_cells(space, blocks))
    assert len(expanded) == len(set(expanded))          # nothing twice
    assert set(expanded) == truth                       # nothing missing, nothing extra
    assert len(truth) == space.num_cells(blocks)
    # Each child extends its parent by one block that reads only states before it.
    for cell in space.expand(smaller[0]):
        assert cell[:-1] == smaller[0] and max(cell[-1][0], cell[-1][2]) <= blocks


def test_genotype_round_trip_and_bad_cells():
    space = ProgressiveSpace(PNAS_OPS, 5)
    cell = ((1, 1, 1, 6), (0, 2, 0, 6), (0, 1, 0, 0), (0, 6, 4, 0), (0, 4, 1, 0))   # PNASNet-5's cell
    genotype = space.to_genotype(cell, name="x")
    assert genotype.normal == genotype.reduce and genotype.normal.concat == (2, 3, 4, 5, 6)
    assert space.encode(genotype) == space.check(cell)
    from nasnetzoo.registry import get_genotype
    published = get_genotype("pnasnet5")
    assert space.encode(published) == space.check(cell)
    rebuilt = space.to_genotype(space.encode(published)).normal     # the same cell, up to edge order
    assert [set(node) for node in rebuilt.nodes] == [set(node) for node in published.normal.nodes]
    assert rebuilt.concat == published.normal.concat
    with pytest.raises(ConfigError, match="may read states 0..2"):
        space.check([(0, 0, 1, 0), (3, 0, 0, 0)])
    with pytest.raises(ConfigError, match="op index 8"):
        space.check([(0, 8, 1, 0)])
    assert space.from_actions(space.to_actions(cell)) == space.check(cell)
    with pytest.raises(ConfigError, match="adds"):
        space.from_actions([0, 1, 0, 0, 1])


# ---------------------------------------------------------------------- the beam
def test_top_k_keeps_the_k_best_in_order():
    rng = random.Random(3)
    cells = [((i % 2, 0, 1, 1),) for i in range(200)]
    scores = [rng.random() for _ in cells]
    scores[10] = scores[20]                             # a tie: the earlier one first
    chosen = top_k(cells, scores, 17)
    assert chosen == sorted(range(200), key=lambda i: (-scores[i], i))[:17]
    assert min(scores[i] for i in chosen) >= max(s for i, s in enumerate(scores) if i not in chosen)
    assert top_k(cells, scores, 500) == sorted(range(200), key=lambda i: (-scores[i], i))


def random_cell(space: ProgressiveSpace, blocks: int, rng: random.Random):
    return space.check([rng.choice(space.blocks_at(b)) for b in range(blocks)])


def planted_reward(cell) -> float:
    """A reward the tiny search space can rank: separable convs and reading earlier blocks help."""
    score = 0.3
    for in_a, op_a, in_b, op_b in cell:
        score += 0.04 * (op_a == 0) + 0.04 * (op_b == 0) + 0.02 * (in_a >= 2) + 0.02 * (in_b >= 2) - 0.01 * (in_b == 1)
    return score


def run_to_end(proposer: PNASProposer, reward=planted_reward, free: int = 7) -> None:
    while not proposer.done():
        batch = proposer.ask(free)
        assert batch, "the proposer stalled"
        for index, arch in batch:
            proposer.tell(index, arch, reward(proposer.space.from_actions(arch)))


def fast_predictor(**kw) -> PredictorConfig:
    return PredictorConfig(**{"kind": "mlp", "members": 3, "embedding": 16, "hidden": 16, "epochs": 15, **kw})


def test_the_beam_is_the_top_k_predicted_expansions():
    space = ProgressiveSpace(SMALL_OPS, 2)
    proposer = PNASProposer(space, beam_size=9, predictor=fast_predictor(), seed=1)
    stage_one = [(i, space.from_actions(a)) for i, a in proposer.ask(1000)]
    assert len(stage_one) == 10 and proposer.ask(5) == []          # one-block cells: all of them
    for index, cell in stage_one:
        proposer.tell(index, space.to_actions(cell), planted_reward(cell))
    candidates = space.expand_all(sorted(c for _, c in stage_one))
    scores = proposer.predictor.predict([space.tokens(c) for c in candidates]).tolist()
    best = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))[:9]
    assert len(proposer.queue) == 9 and proposer.stage == 2
    assert proposer.queue == [candidates[i] for i in best]
    assert proposer.predicted == {candidates[i]: pytest.approx(scores[i]) for i in best}


# ---------------------------------------------------------------------- the surrogate
@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_fitting_lowers_the_error_on_a_planted_function(kind):
    space = ProgressiveSpace(("separable_3x3_2", "max_pool_3x3", "none"), 3)
    rng = random.Random(0)
    cells = sorted({random_cell(space, rng.randint(1, 3), rng) for _ in range(260)})[:200]
    rng.shuffle(cells)
    train, held = cells[:140], cells[140:]
    predictor = EnsemblePredictor(4, 3, fast_predictor(kind=kind, epochs=30 if kind == "mlp" else 20), seed=0)

    def error(sample):
        predicted = predictor.predict([space.tokens(c) for c in sample])
        return float((predicted - torch.tensor([planted_reward(c) for c in sample])).abs().mean())

    before = error(held)
    stats = predictor.fit([space.tokens(c) for c in train], [planted_reward(c) for c in train])
    assert stats["member_cells"] == math.ceil(0.8 * 140)
    assert error(held) < 0.4 * before, (before, error(held))
    assert spearman(predictor.predict([space.tokens(c) for c in held]).tolist(),
                    [planted_reward(c) for c in held]) > 0.5


def test_spearman_on_a_planted_case():
    # Ranks of y with its tie averaged: [1, 2, 3.5, 5, 3.5]; rho = 8 / sqrt(10 * 9.5).
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95), abs=1e-12)
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)          # monotone, not linear
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2, 3], [7, 7, 7]))
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = random.Random(5)
    x = [rng.randint(0, 6) for _ in range(40)]
    y = [rng.randint(0, 6) for _ in range(40)]
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)


def test_each_stage_logs_the_rank_correlation_of_cells_predicted_before_training():
    space = ProgressiveSpace(SMALL_OPS, 3)
    proposer = PNASProposer(space, beam_size=12, predictor=fast_predictor(), seed=0)
    run_to_end(proposer)
    assert [s["stage"] for s in proposer.stages] == [1, 2, 3]
    assert [s["trained"] for s in proposer.stages] == [10, 12, 12]
    assert "spearman" not in proposer.stages[0]
    for record in proposer.stages[1:]:
        mine = sorted((t for t in proposer.trained if t["stage"] == record["stage"]), key=lambda t: t["child"])
        assert all(t["predicted"] is not None for t in mine)
        assert record["spearman"] == pytest.approx(spearman([t["predicted"] for t in mine],
                                                            [t["reward"] for t in mine]))
    assert proposer.stages[1]["spearman"] > 0.3                      # the planted reward is learnable
    assert len(proposer.trained) == 34 and proposer.ask(4) == []


# ---------------------------------------------------------------------- exact resume
def test_state_round_trip_continues_exactly():
    space = ProgressiveSpace(SMALL_OPS, 3)

    def make():
        return PNASProposer(space, beam_size=8, predictor=fast_predictor(), seed=4)

    straight = make()
    run_to_end(straight, free=3)

    first = make()
    told, running = 0, []
    while told < 14:                      # into stage 2, with children handed out but not told
        running += first.ask(3)
        index, arch = running.pop(0)
        first.tell(index, arch, planted_reward(space.from_actions(arch)))
        told += 1
    assert first.stage == 2 and first.outstanding
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)     # the pipeline's checkpoints are read weights-only
    buffer.seek(0)
    resumed = make()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert sorted(resumed.outstanding) == sorted(i for i, _ in running)
    for index, arch in running:           # the pipeline trains the outstanding children again
        resumed.tell(index, arch, planted_reward(space.from_actions(arch)))
    run_to_end(resumed, free=3)
    def trail(proposer):
        return sorted((t["child"], t["cell"], t["reward"], t["predicted"]) for t in proposer.trained)

    assert trail(resumed) == trail(straight)
    assert resumed.stages == straight.stages
    for a, b in zip(resumed.predictor.members, straight.predictor.members):
        for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(pa, pb)


def test_state_refuses_another_space():
    proposer = PNASProposer(ProgressiveSpace(SMALL_OPS, 3), beam_size=4, predictor=fast_predictor())
    other = PNASProposer(ProgressiveSpace(SMALL_OPS, 2), beam_size=4, predictor=fast_predictor())
    with pytest.raises(ValueError, match="saved PNAS search ran over"):
        other.load_state_dict(proposer.state_dict())


def test_the_order_children_finish_in_does_not_change_the_search():
    space = ProgressiveSpace(SMALL_OPS, 3)

    def search(order):
        proposer = PNASProposer(space, beam_size=6, predictor=fast_predictor(), seed=2)
        while not proposer.done():
            for index, arch in order(proposer.ask(1000)):   # a whole stage out, told in `order`
                proposer.tell(index, arch, planted_reward(space.from_actions(arch)))
        return proposer

    forward, backward = search(list), search(lambda batch: batch[::-1])
    assert forward.stages == backward.stages
    assert sorted(forward.queue) == sorted(backward.queue) and forward.predicted == backward.predicted
    for a, b in zip(forward.predictor.members, backward.predictor.members):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
