"""ENAS (Pham et al., ICML 2018) in the strategies table: a pipeline and recipe of its own
(``search/enas/``): one shared child network, not the DARTS supernet."""
from __future__ import annotations

from ..enas.recipe import ENASRecipe
from ..enas.runner import enas_search
from .registry import Strategy, register_strategy


def _summary(result) -> str:
    return (f"searched {result.epochs_done} epochs: derived arc held-out acc {result.val_acc:.2f}% -> "
            f"{result.run_dir / 'genotype.yaml'}")


register_strategy(Strategy("enas", title="ENAS", run=enas_search, recipe=ENASRecipe, summary=_summary))
