"""A random cell of the DARTS search space, drawn uniformly: the random-search baseline's sampler.

As Li & Talwalkar's random search (liamcli/randomNAS_release, ``sample_arch``) and Sciuto et al.
draw it: each intermediate node picks two distinct inputs among the states before it, uniformly
without replacement, and each of its two edges an op uniformly and independently among the
candidates.  The candidates are the space's ops other than ``none``: the zero op is never kept in
a derived DARTS cell (``derive_from_weights`` excludes it), so a sample containing it would lie
outside the set of cells a gradient search can return.  (randomNAS draws from its own PRIMITIVES
list; the brief of this baseline is the derived-cell space.)  The output is the last
``multiplier`` states, as the supernet's cells concatenate them.
"""
from __future__ import annotations

import random
from typing import Optional, Sequence

from ..genotype import CELL_TYPES, Cell, Edge, Genotype
from ..ops.darts import DARTS_PRIMITIVES

EDGES = 2   # inputs per node


def candidate_ops(primitives: Sequence[str] = DARTS_PRIMITIVES) -> list[str]:
    """The ops a derived cell may hold: every primitive but the zero op."""
    return [op for op in primitives if op != "none"]


def sample_cell(rng: random.Random, *, steps: int = 4, multiplier: Optional[int] = None,
                primitives: Sequence[str] = DARTS_PRIMITIVES) -> Cell:
    ops = candidate_ops(primitives)
    nodes = []
    for i in range(steps):
        inputs = sorted(rng.sample(range(2 + i), EDGES))   # distinct inputs, uniform
        nodes.append(tuple(Edge(rng.choice(ops), j) for j in inputs))
    multiplier = steps if multiplier is None else multiplier
    return Cell(tuple(nodes), tuple(range(2 + steps - multiplier, 2 + steps)))


def sample_genotype(seed: int, *, steps: int = 4, multiplier: Optional[int] = None,
                    primitives: Sequence[str] = DARTS_PRIMITIVES, name: str = "") -> Genotype:
    """A normal and a reduction cell drawn independently from the generator seeded with ``seed``
    (Python's ``random``: the same cells on every platform)."""
    rng = random.Random(seed)
    cells = {t: sample_cell(rng, steps=steps, multiplier=multiplier, primitives=primitives) for t in CELL_TYPES}
    return Genotype(cells["normal"], cells["reduce"], "darts", name or f"random_seed{seed}",
                    {"sampled_with": "nasnetzoo.search.sampling.sample_genotype", "seed": seed, "steps": steps})


__all__ = ["candidate_ops", "sample_cell", "sample_genotype"]
