"""The statistics of a study on planted result sets, and the random baseline's sampler.

Each expected value is worked out by hand (or by an independent formula) from the planted set, so
that the usual mistakes fail: a population std, a bootstrap that resamples one group or pools them,
edges compared by position within a node, histograms of counts instead of shares, a collapse count
of skip connections alone, a sampler that draws the zero op or one input twice."""
from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter

import numpy as np
import pytest

from nasnetzoo.genotype import Cell, Edge, Genotype
from nasnetzoo.search.sampling import candidate_ops, sample_genotype
from nasnetzoo.study import stats


def cell(*nodes, concat=(2, 3, 4, 5)) -> Cell:
    """``cell(("sep_conv_3x3", 0, "skip_connect", 1), ...)``: each node as op, input, op, input."""
    return Cell(tuple((Edge(n[0], n[1]), Edge(n[2], n[3])) for n in nodes), tuple(concat))


def genotype(normal: Cell, reduce: Cell = None) -> Genotype:
    return Genotype(normal, reduce or normal, "darts")


A = cell(("sep_conv_3x3", 0, "sep_conv_5x5", 1), ("skip_connect", 0, "dil_conv_3x3", 2),
         ("max_pool_3x3", 1, "sep_conv_3x3", 3), ("avg_pool_3x3", 0, "sep_conv_3x3", 4))


# ---------------------------------------------------------------- mean, std, bootstrap
def test_mean_and_sample_std_of_a_planted_set():
    values = [96.1, 97.0, 96.4, 97.3]
    assert stats.mean(values) == pytest.approx(96.7)
    # sample std, n - 1: sqrt(((-.6)^2 + .3^2 + (-.3)^2 + .6^2) / 3) = sqrt(0.9 / 3)
    assert stats.std(values) == pytest.approx(math.sqrt(0.9 / 3))
    assert stats.std(values) != pytest.approx(statistics.pstdev(values))   # not the population std
    assert stats.std([97.0]) is None and stats.mean([]) is None


def test_bootstrap_of_constant_groups_is_the_difference_itself():
    low, high = stats.bootstrap_difference([97.0] * 3, [96.5] * 4, resamples=500)
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)


def test_bootstrap_interval_matches_the_normal_theory_interval_on_a_large_planted_set():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 2.0, 300)
    low, high = stats.bootstrap_difference(a, b, resamples=4000, confidence=0.95, seed=3)
    centre = a.mean() - b.mean()
    # the difference of two independent means: se^2 = var(a)/n_a + var(b)/n_b
    half = 1.96 * math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert (low + high) / 2 == pytest.approx(centre, abs=0.03)   # a minus b, not b minus a
    assert (high - low) / 2 == pytest.approx(half, rel=0.08)     # both groups resampled, each on its own
    narrower = stats.bootstrap_difference(a, b, resamples=4000, confidence=0.80, seed=3)
    assert narrower[1] - narrower[0] == pytest.approx(2 * 1.2816 / 1.96 * half, rel=0.08)


def test_bootstrap_is_seeded_and_resamples_within_each_group():
    a, b = [10.0, 11.0, 12.0], [0.0, 1.0, 2.0]
    assert stats.bootstrap_difference(a, b, seed=5) == stats.bootstrap_difference(a, b, seed=5)
    low, high = stats.bootstrap_difference(a, b, resamples=20000, seed=0)
    # a's resampled means lie in [10, 12] and b's in [0, 2]: every difference in [8, 12] (a pooled
    # resample would centre on 0); 1/27 of each group's means is an extreme, so the 95% interval
    # stays inside, symmetric about the difference of the means, 10
    assert 8.0 <= low < 10.0 < high <= 12.0
    assert (low + high) / 2 == pytest.approx(10.0, abs=0.05)
    assert stats.bootstrap_difference([], b) is None


# ---------------------------------------------------------------- cell similarity
def test_identical_edges_ignore_the_order_of_a_nodes_two_edges():
    swapped = cell(("sep_conv_5x5", 1, "sep_conv_3x3", 0), ("dil_conv_3x3", 2, "skip_connect", 0),
                   ("sep_conv_3x3", 3, "max_pool_3x3", 1), ("sep_conv_3x3", 4, "avg_pool_3x3", 0))
    assert stats.identical_edge_share(A, A) == 1.0
    assert stats.identical_edge_share(A, swapped) == 1.0   # a node sums its edges: same node


def test_identical_edges_count_op_and_input_per_node():
    other_inputs = cell(("sep_conv_3x3", 1, "sep_conv_5x5", 0), ("skip_connect", 1, "dil_conv_3x3", 0),
                        ("max_pool_3x3", 0, "sep_conv_3x3", 2), ("avg_pool_3x3", 1, "sep_conv_3x3", 2))
    assert stats.identical_edge_share(A, other_inputs) == 0.0   # same ops, other inputs: no edge shared
    half = cell(("sep_conv_3x3", 0, "sep_conv_3x3", 1), ("skip_connect", 0, "sep_conv_3x3", 2),
                ("max_pool_3x3", 1, "skip_connect", 3), ("avg_pool_3x3", 0, "max_pool_3x3", 4))
    assert stats.identical_edge_share(A, half) == 0.5           # the first edge of every node
    # an edge of another node is not shared: node 3's (sep_conv_3x3, 0) would match node 2's
    moved = cell(("skip_connect", 1, "dil_conv_5x5", 1), ("sep_conv_3x3", 0, "dil_conv_5x5", 1),
                 ("dil_conv_5x5", 0, "dil_conv_5x5", 1), ("dil_conv_5x5", 0, "dil_conv_5x5", 1))
    assert stats.identical_edge_share(A, moved) == 0.0


def test_op_histogram_distance_is_total_variation_of_op_shares():
    all_sep = cell(*[("sep_conv_3x3", 0, "sep_conv_3x3", 1)] * 4)
    all_skip = cell(*[("skip_connect", 0, "skip_connect", 1)] * 4)
    half_sep = cell(*[("sep_conv_3x3", 0, "skip_connect", 1)] * 4)
    assert stats.op_histogram_distance(all_sep, all_skip) == 1.0
    assert stats.op_histogram_distance(all_sep, half_sep) == pytest.approx(0.5)   # half the ops differ
    shuffled = cell(("sep_conv_3x3", 1, "avg_pool_3x3", 0), ("sep_conv_5x5", 2, "sep_conv_3x3", 0),
                    ("dil_conv_3x3", 0, "max_pool_3x3", 3), ("skip_connect", 4, "sep_conv_3x3", 1))
    assert stats.op_histogram_distance(A, shuffled) == 0.0   # same ops anywhere: same histogram
    # shares, not counts: a 3-node cell of the same op mix is at distance 0 from its 4-node twin
    small = cell(("sep_conv_3x3", 0, "skip_connect", 1), ("sep_conv_3x3", 0, "skip_connect", 1),
                 ("sep_conv_3x3", 0, "skip_connect", 1), concat=(2, 3, 4))
    assert stats.op_histogram_distance(small, half_sep) == 0.0


def test_similarity_is_the_mean_over_every_pair():
    all_sep = cell(*[("sep_conv_3x3", 0, "sep_conv_3x3", 1)] * 4)
    half = cell(*[("sep_conv_3x3", 0, "skip_connect", 1)] * 4)
    all_skip = cell(*[("skip_connect", 0, "skip_connect", 1)] * 4)
    result = stats.similarity([genotype(all_sep, A), genotype(half, A), genotype(all_skip, A)])
    assert result["pairs"] == 3
    # pairs: (sep, half) 0.5 shared, (sep, skip) 0, (half, skip) 0.5  -> mean 1/3
    assert result["normal"]["identical_edges"] == pytest.approx(1 / 3)
    # distances: 0.5, 1, 0.5 -> 2/3; the reduction cells are all A: identical, distance 0
    assert result["normal"]["op_histogram_distance"] == pytest.approx(2 / 3)
    assert result["reduce"] == {"identical_edges": 1.0, "op_histogram_distance": 0.0}
    assert stats.similarity([genotype(A)])["normal"]["identical_edges"] is None


# ---------------------------------------------------------------- collapse
def test_collapse_counts_every_parameter_free_op_and_the_skip_guard():
    collapsed = cell(("skip_connect", 0, "skip_connect", 1), ("skip_connect", 0, "max_pool_3x3", 2),
                     ("sep_conv_3x3", 0, "avg_pool_3x3", 1), ("sep_conv_3x3", 1, "dil_conv_3x3", 4))
    two_skips = cell(("skip_connect", 0, "sep_conv_3x3", 1), ("skip_connect", 1, "sep_conv_3x3", 2),
                     ("none", 0, "sep_conv_3x3", 1), ("sep_conv_3x3", 1, "dil_conv_3x3", 4))
    result = stats.collapse([genotype(collapsed, A), genotype(A, A), genotype(two_skips, A)])
    first, second, third = result["per_genotype"]
    assert (first["normal"], first["normal_skips"]) == (5, 3)   # 3 skips, a max pool and an avg pool
    assert (second["normal"], second["normal_skips"]) == (3, 1)  # A: skip, max pool, avg pool
    assert (third["normal"], third["normal_skips"]) == (3, 2)   # the zero op counts as parameter-free
    assert result["param_free_share_normal"] == pytest.approx((5 + 3 + 3) / 24)
    assert result["param_free_share_reduce"] == pytest.approx(3 / 8)
    assert result["collapsed_normal_cells"] == 1                 # more than two skips: the first only


# ---------------------------------------------------------------- the random baseline's sampler
def test_a_random_cell_has_two_distinct_earlier_inputs_per_node_and_no_zero_op():
    for seed in range(50):
        g = sample_genotype(seed, steps=4)
        for c in (g.normal, g.reduce):
            assert c.concat == (2, 3, 4, 5)
            for i, node in enumerate(c.nodes):
                inputs = [e.input for e in node]
                assert len(set(inputs)) == 2 and all(0 <= j < 2 + i for j in inputs)
                assert all(e.op in candidate_ops() and e.op != "none" for e in node)
    assert sample_genotype(7) == sample_genotype(7) and sample_genotype(7) != sample_genotype(8)


def test_random_cells_are_uniform_over_ops_and_input_pairs():
    ops, pairs = Counter(), Counter()
    draws = 3000
    for seed in range(draws):
        node = sample_genotype(seed, steps=4).normal.nodes[3]   # the last node: 5 possible inputs
        ops.update(e.op for e in node)
        pairs[tuple(e.input for e in node)] += 1
    assert set(ops) == set(candidate_ops()) and len(ops) == 7
    expected = 2 * draws / 7
    assert all(abs(n - expected) < 4 * math.sqrt(expected) for n in ops.values()), ops
    assert set(pairs) == set(itertools.combinations(range(5), 2))   # 10 pairs, each equally likely
    assert all(abs(n - draws / 10) < 4 * math.sqrt(draws / 10) for n in pairs.values()), pairs
