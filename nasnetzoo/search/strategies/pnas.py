"""PNAS (Liu et al., ECCV 2018) in the strategies table: the progressive proposer on the sample-and-train
pipeline (``search/sampled/pnas*.py``)."""
from __future__ import annotations

from ..sampled.pnas_recipe import PNASRecipe
from ..sampled.pnas_runner import pnas_search
from .registry import Strategy, register_strategy


def _summary(result) -> str:
    rho = ", ".join(f"b={s['stage']}: {s['spearman']:.2f}" if s.get("spearman") is not None else f"b={s['stage']}: n/a"
                    for s in result.stages if s["stage"] > 1)
    return (f"trained {result.children} children over {len(result.stages)} stages: best held-out acc "
            f"{100 * result.best_reward:.2f}%; predictor rank correlation on unseen cells {rho or 'n/a'} -> "
            f"{result.run_dir / 'genotype.yaml'}")


register_strategy(Strategy("pnas", title="PNAS", run=pnas_search, recipe=PNASRecipe, summary=_summary))
