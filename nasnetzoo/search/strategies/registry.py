"""The strategies table: what ``run_search``, the search recipe and the CLI know of a strategy.

Every strategy registers its own entry, with real imports, in its own module (``darts.py``,
``pcdarts.py``, ``parsec.py``, ``nasnet_rl.py``; one from outside the package calls
:func:`register_strategy` the same way).  An entry carries everything that is the strategy's own:
its options (a dataclass read from the recipe's ``options:`` block, validated by itself), the old
flat recipe keys those options replace, the supernet options it fixes, its checks against the
shared keys, its warm start and its summary line.  Nothing outside ``search/strategies/`` names a
strategy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from ...errors import ConfigError, did_you_mean
from ...recipe_file import RecipeError, from_mapping


@dataclass(frozen=True)
class Strategy:
    """A search strategy as ``run_search`` sees it.

    ``run(recipe, *, out, resume, recipe_path, overwrite)`` is the pipeline of a strategy with its
    own (None: the supernet pipeline, ``search/runner.py``) and ``recipe`` its recipe dataclass
    (None: the supernet recipe, ``SearchRecipe``).  For a supernet strategy: ``build(recipe,
    network)`` makes its ``SearchStrategy``; ``options`` is the dataclass of its own options
    (recipe key ``options:``; ``recipe.strategy_options()`` reads it); ``moved_keys`` maps each
    old flat recipe key to ``(option, its old default)``; ``network`` holds the supernet options it
    fixes; ``check(recipe)`` refuses shared keys it cannot run with; ``warm_start(strategy,
    options)`` runs once at the start of a new search; ``first_network(recipe)`` is the
    ``NetworkChange`` of the first epoch for a strategy that changes the network between epochs
    (None: the recipe's network, the schedule over all epochs).  ``summary(result)`` is the line the
    CLI prints at the end; ``title`` is how messages name it.  ``compiles``: its step goes through
    ``SearchStrategy.forward`` alone, so recipe key ``compile: true`` can compile it."""
    name: str
    run: Optional[Callable[..., Any]] = None
    recipe: Optional[type] = None
    build: Optional[Callable[[Any, Any], Any]] = None
    options: Optional[type] = None
    moved_keys: Mapping[str, tuple] = field(default_factory=dict)
    network: Mapping[str, Any] = field(default_factory=dict)
    check: Optional[Callable[[Any], None]] = None
    warm_start: Optional[Callable[[Any, Any], None]] = None
    first_network: Optional[Callable[[Any], Any]] = None
    summary: Optional[Callable[[Any], str]] = None
    title: str = ""
    compiles: bool = False   # its step runs the continuous supernet forward, which recipe key compile compiles

    @property
    def on_supernet(self) -> bool:
        return self.run is None

    def read_options(self, data: Mapping[str, Any]) -> Any:
        """The strategy's options from the recipe's ``options:`` block (unknown keys refused)."""
        if self.options is None:
            if data:
                raise RecipeError(f"strategy {self.name!r} has no options of its own; drop recipe key 'options' "
                                  f"({', '.join(map(str, data))}).")
            return None
        return from_mapping(self.options, data or {}, f"recipe key 'options' of strategy {self.name!r}")

    def has_option(self, name: str) -> bool:
        return self.options is not None and name in {f.name for f in dataclasses.fields(self.options)}


def check_full_channels_first_order(recipe: Any, strategy: str, runs: str,
                                    second_order: str = "has no second-order architecture step") -> None:
    """The ``check`` of a strategy whose edges see every channel (no PC-DARTS partial channels or
    edge normalisation) and whose architecture step is first order: ``runs`` says how its edges
    run, ``second_order`` why the second-order step is refused (both go in the messages)."""
    if recipe.partial_k != 1 or recipe.edge_norm:
        raise RecipeError(f"strategy {strategy!r} {runs} on full channels: set partial_k: 1 and edge_norm: false "
                          f"(got partial_k: {recipe.partial_k}, edge_norm: {str(recipe.edge_norm).lower()}).")
    if recipe.second_order:
        raise RecipeError(f"strategy {strategy!r} {second_order}: set second_order: false.")


TABLE: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy, *, replace: bool = False) -> Strategy:
    """Add a strategy to the table (``replace=True`` to swap one that is there)."""
    if strategy.name in TABLE and not replace:
        raise ConfigError(f"a search strategy named {strategy.name!r} is already registered; pick another name "
                          "or pass replace=True.")
    TABLE[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    if name not in TABLE:
        raise ConfigError(f"unknown search strategy {name!r}; known: {', '.join(TABLE)}.{did_you_mean(name, TABLE)}")
    return TABLE[name]


def moved_keys() -> dict[str, tuple[str, str, Any]]:
    """Every old flat recipe key of the registered strategies: ``key -> (strategy, option, old default)``."""
    return {key: (entry.name, option, default) for entry in TABLE.values()
            for key, (option, default) in entry.moved_keys.items()}


def supernet_summary(result) -> str:
    """The final line of a supernet search, with the collapse warning of its genotype if it has one."""
    from ..history import collapse_report, collapse_warning

    line = (f"searched {result.epochs_done} epochs: held-out acc {result.val_acc:.2f}% -> "
            f"{result.run_dir / 'genotype.yaml'}")
    warning = collapse_warning(collapse_report(result.genotype))
    return f"{line}  {warning}" if warning else line


def arch_options(recipe) -> dict:
    """The architecture optimizer's keys of the search recipe, as the strategies' constructors take them."""
    return dict(arch_lr=recipe.arch_lr, arch_betas=recipe.arch_betas, arch_weight_decay=recipe.arch_weight_decay,
                grad_clip=recipe.grad_clip or None)


__all__ = ["Strategy", "TABLE", "arch_options", "get_strategy", "moved_keys", "register_strategy", "supernet_summary"]
