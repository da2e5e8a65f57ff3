"""NASNet's RL search (Zoph et al., CVPR 2018) in the strategies table: a pipeline and recipe of its own
(``search/rl/``), not the supernet's."""
from __future__ import annotations

from ..rl.recipe import RLSearchRecipe
from ..rl.runner import rl_search
from .registry import Strategy, register_strategy


def _summary(result) -> str:
    return (f"trained {result.children} children over {result.steps_done} controller updates: best held-out acc "
            f"{100 * result.best_reward:.2f}% -> {result.run_dir / 'genotype.yaml'}")


register_strategy(Strategy("nasnet_rl", title="NASNet's RL search", run=rl_search, recipe=RLSearchRecipe,
                           summary=_summary))
