"""Search strategies behind one interface (``SearchStrategy``), and the one table that runs them.

Each entry of :data:`TABLE` says what a strategy needs: its recipe class, the pipeline that runs it
(the supernet pipeline, ``search/runner.py``, for the gradient strategies; NASNet's RL search has
its own), and for supernet strategies how to build the strategy and which supernet options it
fixes.  ``nasnetzoo.search.run_search`` and ``nasnetzoo search`` dispatch through it, so adding a
strategy is its class plus one :func:`register_strategy` call (see ``docs/search_strategies.md``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

import torch

from ...errors import did_you_mean
from .base import SearchStrategy, derive_from_weights
from .darts import DARTSStrategy
from .parsec import PARSECStrategy
from .pcdarts import PCDARTSStrategy

STRATEGIES = {"darts": DARTSStrategy, "pcdarts": PCDARTSStrategy, "parsec": PARSECStrategy}
SUPERNET = "nasnetzoo.search.runner:search"          # the gradient strategies' pipeline
SUPERNET_RECIPE = "nasnetzoo.search.recipe:SearchRecipe"

Ref = Union[str, Callable, type]


@dataclass(frozen=True)
class Strategy:
    """A search strategy as ``run_search`` sees it.

    ``run(recipe, *, out, resume, recipe_path, overwrite)`` runs (or resumes) a search and returns
    its result; ``recipe`` is the recipe dataclass (a ``RecipeFile``); both may be given as
    ``"module:name"`` so the table imports a pipeline only when it is used.  ``build(recipe,
    network)`` makes the ``SearchStrategy`` of a supernet pipeline; ``network`` holds the supernet
    options it fixes; ``summary(result)`` is the line the CLI prints at the end."""
    name: str
    run: Ref = SUPERNET
    recipe: Ref = SUPERNET_RECIPE
    build: Optional[Callable[[Any, Any], SearchStrategy]] = None
    network: Mapping[str, Any] = field(default_factory=dict)
    summary: Optional[Callable[[Any], str]] = None

    def run_fn(self) -> Callable:
        return _resolve(self.run)

    def recipe_class(self) -> type:
        return _resolve(self.recipe)


def _resolve(ref: Ref):
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _common(recipe) -> dict:
    return dict(arch_lr=recipe.arch_lr, arch_betas=recipe.arch_betas, arch_weight_decay=recipe.arch_weight_decay,
                grad_clip=recipe.grad_clip or None)


def _gradient(cls: type) -> Callable:
    return lambda recipe, network: cls(network, second_order=recipe.second_order, **_common(recipe))


def _parsec(recipe, network) -> PARSECStrategy:
    # Its own generator, seeded alike on every rank: all ranks sample the same architectures.
    generator = torch.Generator(device="cpu").manual_seed(recipe.seed)
    return PARSECStrategy(network, num_samples=recipe.parsec_samples, generator=generator, **_common(recipe))


def _supernet_summary(result) -> str:
    return (f"searched {result.epochs_done} epochs: held-out acc {result.val_acc:.2f}% -> "
            f"{result.run_dir / 'genotype.yaml'}")


def _rl_summary(result) -> str:
    return (f"trained {result.children} children over {result.steps_done} controller updates: best held-out acc "
            f"{100 * result.best_reward:.2f}% -> {result.run_dir / 'genotype.yaml'}")


TABLE: dict[str, Strategy] = {
    "darts": Strategy("darts", build=_gradient(DARTSStrategy), summary=_supernet_summary),
    "pcdarts": Strategy("pcdarts", build=_gradient(PCDARTSStrategy), summary=_supernet_summary),
    # PARSEC samples whole architectures: no edge normalisation in its supernet.
    "parsec": Strategy("parsec", build=_parsec, network={"edge_norm": False}, summary=_supernet_summary),
    "nasnet_rl": Strategy("nasnet_rl", run="nasnetzoo.search.rl.runner:rl_search",
                          recipe="nasnetzoo.search.rl.recipe:RLSearchRecipe", summary=_rl_summary),
}


def register_strategy(strategy: Strategy, *, replace: bool = False) -> Strategy:
    """Add a strategy to the table (``replace=True`` to swap one that is there)."""
    from ...errors import ConfigError

    if strategy.name in TABLE and not replace:
        raise ConfigError(f"a search strategy named {strategy.name!r} is already registered; pick another name "
                          "or pass replace=True.")
    TABLE[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    from ...errors import ConfigError

    if name not in TABLE:
        raise ConfigError(f"unknown search strategy {name!r}; known: {', '.join(TABLE)}.{did_you_mean(name, TABLE)}")
    return TABLE[name]


__all__ = ["STRATEGIES", "TABLE", "DARTSStrategy", "PARSECStrategy", "PCDARTSStrategy", "SearchStrategy",
           "Strategy", "derive_from_weights", "get_strategy", "register_strategy"]
