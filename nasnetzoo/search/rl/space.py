"""NASNet's search space, which the sampled searches share: see :mod:`nasnetzoo.search.sampled.space`."""
from __future__ import annotations

from ..sampled.space import DECISIONS_PER_BLOCK, PAPER_OPS, Decision, SearchSpace

__all__ = ["DECISIONS_PER_BLOCK", "PAPER_OPS", "Decision", "SearchSpace"]
