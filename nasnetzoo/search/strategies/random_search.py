"""Random search over a sampled-search space, in the strategies table: the sample-and-train pipeline
(``search/sampled/``) with the uniform proposer."""
from __future__ import annotations

from ..sampled.recipe import RandomRecipe
from ..sampled.runners import random_search
from .registry import Strategy, register_strategy


def _summary(result) -> str:
    return (f"trained {result.children} children: best held-out acc {100 * result.best_reward:.2f}% -> "
            f"{result.run_dir / 'genotype.yaml'}")


register_strategy(Strategy("random", title="random search", run=random_search, recipe=RandomRecipe,
                           summary=_summary))
