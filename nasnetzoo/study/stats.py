"""The statistics of a study, on plain numbers and genotypes (no torch, no files).

* :func:`mean`, :func:`std` (the sample standard deviation, n - 1 in the denominator);
* :func:`bootstrap_difference`: a percentile bootstrap interval for ``mean(a) - mean(b)``, each
  group resampled with replacement on its own, from a seeded generator (the same interval every run);
* :func:`identical_edge_share` and :func:`op_histogram_distance` between two cells, and
  :func:`similarity` over every pair of a group's cells;
* :func:`collapse`: how often the parameter-free ops win the edges of a group's cells.

Two cells are compared node by node: a node sums its two edges, so the order of the edges in a
node does not matter and an edge is the pair (op, input).  The op histogram of a cell counts its
edges' ops; the distance between two histograms is the total variation distance (half the L1
distance of the op shares), 0 for the same ops, 1 for cells sharing no op.
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Optional, Sequence

import numpy as np

from ..genotype import CELL_TYPES, Cell, Genotype
from ..search.history import MAX_NORMAL_SKIPS, PARAM_FREE_OPS


def mean(values: Sequence[float]) -> Optional[float]:
    return math.fsum(values) / len(values) if len(values) else None


def std(values: Sequence[float]) -> Optional[float]:
    """Sample standard deviation (n - 1); None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    m = math.fsum(values) / n
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))


def bootstrap_difference(a: Sequence[float], b: Sequence[float], *, resamples: int = 10000,
                         confidence: float = 0.95, seed: int = 0) -> Optional[tuple[float, float]]:
    """Percentile interval of ``mean(a) - mean(b)``: ``a`` and ``b`` are resampled independently
    (each with replacement, its own size), ``resamples`` times; None when a group is empty."""
    if not len(a) or not len(b):
        return None
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    means_a = a[rng.integers(0, len(a), size=(resamples, len(a)))].mean(axis=1)
    means_b = b[rng.integers(0, len(b), size=(resamples, len(b)))].mean(axis=1)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(means_a - means_b, [tail, 1.0 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------- cells
def _node_edges(cell: Cell) -> list[Counter]:
    return [Counter((edge.op, edge.input) for edge in node) for node in cell.nodes]


def identical_edge_share(a: Cell, b: Cell) -> float:
    """The share of edges two cells have in common: per node, the (op, input) pairs both hold."""
    if len(a.nodes) != len(b.nodes):
        raise ValueError(f"cells of {len(a.nodes)} and {len(b.nodes)} nodes cannot be compared edge by edge.")
    shared = sum(sum((x & y).values()) for x, y in zip(_node_edges(a), _node_edges(b)))
    return shared / max(len(a.edges), 1)


def op_histogram(cell: Cell) -> Counter:
    return Counter(edge.op for edge in cell.edges)


def op_histogram_distance(a: Cell, b: Cell) -> float:
    """Total variation distance between the two cells' op shares (0: the same ops, 1: none shared)."""
    ha, hb = op_histogram(a), op_histogram(b)
    na, nb = max(sum(ha.values()), 1), max(sum(hb.values()), 1)
    return 0.5 * math.fsum(abs(ha[op] / na - hb[op] / nb) for op in set(ha) | set(hb))


def similarity(genotypes: Sequence[Genotype]) -> dict:
    """Per cell type, the mean over every pair of genotypes of the identical-edge share and of the
    op-histogram distance (None for fewer than two genotypes)."""
    pairs = list(itertools.combinations(genotypes, 2))
    out: dict = {"pairs": len(pairs)}
    for cell_type in CELL_TYPES:
        cells = [(a.cell(cell_type), b.cell(cell_type)) for a, b in pairs]
        out[cell_type] = {
            "identical_edges": mean([identical_edge_share(x, y) for x, y in cells]) if cells else None,
            "op_histogram_distance": mean([op_histogram_distance(x, y) for x, y in cells]) if cells else None}
    return out


def collapse(genotypes: Sequence[Genotype]) -> dict:
    """How often parameter-free ops (``search.history.PARAM_FREE_OPS``) win: per genotype, the count
    in each cell; over the group, their share of all edges; and how many normal cells hold more
    than ``MAX_NORMAL_SKIPS`` skip connections (P-DARTS's guard, the known DARTS collapse)."""
    per = []
    for g in genotypes:
        per.append({t: sum(e.op in PARAM_FREE_OPS for e in g.cell(t).edges) for t in CELL_TYPES}
                   | {"edges": {t: len(g.cell(t).edges) for t in CELL_TYPES},
                      "normal_skips": sum(e.op == "skip_connect" for e in g.normal.edges)})
    out: dict = {"per_genotype": per, "collapsed_normal_cells": sum(p["normal_skips"] > MAX_NORMAL_SKIPS for p in per)}
    for t in CELL_TYPES:
        edges = sum(p["edges"][t] for p in per)
        out[f"param_free_share_{t}"] = sum(p[t] for p in per) / edges if edges else None
    return out


__all__ = ["bootstrap_difference", "collapse", "identical_edge_share", "mean", "op_histogram",
           "op_histogram_distance", "similarity", "std"]
