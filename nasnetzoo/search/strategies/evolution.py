"""Regularized evolution (Real et al., AAAI 2019) in the strategies table: the sample-and-train
pipeline (``search/sampled/``) with the evolution proposer."""
from __future__ import annotations

from ..sampled.recipe import EvolutionRecipe
from ..sampled.runners import evolution_search
from .random_search import _summary
from .registry import Strategy, register_strategy

register_strategy(Strategy("evolution", title="regularized evolution", run=evolution_search, recipe=EvolutionRecipe,
                           summary=_summary))
