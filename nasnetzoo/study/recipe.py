"""Study recipes: which strategies, which seeds, the random baseline, and the one proxy retrain.

A study recipe names recipes of the other kinds rather than repeating their keys::

    name: smoke_study
    search: smoke_search            # the base search recipe (a file, or a bundled recipe's name)
    strategies:                     # each strategy, with keys of its own on top of the base
      pcdarts: {}
      darts: {set: {partial_k: 1, edge_norm: false}}
      parsec: {recipe: parsec_cifar10.yaml, set: {options.samples: 4}}
    seeds: [0, 1, 2]                # one search per strategy and seed (the recipe's `seed` key)
    random_baseline: true           # as many random cells of the same space, retrained alike
    retrain: smoke_train            # the proxy retrain every found cell goes through
    retrain_set: {epochs: 3}

Paths are read relative to the study recipe's folder first, then as ``--recipe`` reads them.
Strategies are names of the strategies table (``search/strategies/``); an unknown one is refused
with the names that are there.  :func:`resolve` turns the recipe into the frozen recipes a study
runs (every search recipe as the mapping it is, the retrain recipe), which the study directory
keeps, so a resumed study runs what it started with whatever happened to the files since.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import ConfigError
from ..recipe_file import RecipeError, RecipeFile, check_choices, from_mapping, read_yaml_mapping, require_finite, \
    resolve_recipe
from ..runs.executors import EXECUTORS
from ..search.api import recipe_class
from ..search.strategies import get_strategy
from ..train.recipe import Recipe

STRATEGY_KEYS = ("recipe", "set")   # what a strategy's entry may hold
# Keys a resume may change: how the study runs and how its report is computed, never what it trains.
RESUME_KEYS = ("executor", "workers", "threads", "ray_address", "bootstrap_samples", "confidence", "bootstrap_seed")


@dataclass
class StudyRecipe(RecipeFile):
    name: str = "custom"
    description: str = ""
    search: str = ""                 # the base search recipe of the strategies (an entry's `recipe` replaces it)
    strategies: dict = field(default_factory=dict)   # name -> {recipe: FILE, set: {key: value}}
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    random_baseline: bool = True     # random cells of the strategies' space, one per seed
    retrain: str = ""                # the proxy retrain recipe
    retrain_set: dict = field(default_factory=dict)   # its keys changed for the study ({epochs: 3})
    # The network whose params and MACs the report gives: {} the retrained proxy; else builder keys
    # (C, layers, num_classes), `dataset` (the zoo network's: cifar10, imagenet) and `image_size`.
    profile: dict = field(default_factory=dict)

    # ---- how it runs
    executor: str = "auto"           # auto | local | process | ray
    workers: int = 0                 # runs at a time (0: one per GPU on a GPU machine, else 1)
    threads: int = 0                 # CPU threads per run (0: the cores split between the workers)
    ray_address: str = ""

    # ---- the report
    bootstrap_samples: int = 10000
    confidence: float = 0.95
    bootstrap_seed: int = 0

    def __post_init__(self) -> None:
        require_finite(self)
        check_choices(self, {"executor": EXECUTORS})
        if not self.retrain:
            raise RecipeError("study recipe key 'retrain' is empty: name the proxy retrain recipe every found cell "
                              "goes through (e.g. retrain: smoke_train).")
        if not self.strategies:
            raise RecipeError("study recipe key 'strategies' is empty: list the strategies to compare, e.g. "
                              "strategies: {pcdarts: {}, darts: {}}.")
        for name, entry in self.strategies.items():
            check_strategy_entry(str(name), entry)
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise RecipeError(f"study recipe key 'seeds' = {self.seeds!r} must be a list of integers, e.g. [0, 1, 2].")
        if len(set(self.seeds)) != len(self.seeds):
            raise RecipeError(f"study recipe key 'seeds' = {self.seeds} repeats a seed; list each seed once.")
        for key in ("workers", "threads"):
            if getattr(self, key) < 0:
                raise RecipeError(f"study recipe key {key!r} = {getattr(self, key)} must not be negative.")
        if self.bootstrap_samples < 100:
            raise RecipeError(f"study recipe key 'bootstrap_samples' = {self.bootstrap_samples} is too few for an "
                              "interval; use at least 100 (10000 is the default).")
        if not 0.5 <= self.confidence < 1.0:
            raise RecipeError(f"study recipe key 'confidence' = {self.confidence} must be in [0.5, 1), e.g. 0.95.")
        unknown = set(self.profile) - {"C", "layers", "num_classes", "dataset", "image_size"}
        if unknown:
            raise RecipeError(f"study recipe key 'profile' has {', '.join(sorted(map(str, unknown)))}; it takes C, "
                              "layers, num_classes, dataset and image_size (or {} for the retrained network).")


def check_strategy_entry(name: str, entry: Any) -> None:
    """A strategy of the table, with an entry of only ``recipe`` and ``set``."""
    try:
        get_strategy(name)
    except ConfigError as err:
        raise RecipeError(f"study recipe key 'strategies': {err}") from None
    if entry is None:
        return
    if not isinstance(entry, Mapping):
        raise RecipeError(f"study recipe key 'strategies.{name}' must be a mapping ({{}} or {{recipe: FILE, set: "
                          f"{{key: value}}}}), got {entry!r}.")
    unknown = set(entry) - set(STRATEGY_KEYS)
    if unknown:
        raise RecipeError(f"study recipe key 'strategies.{name}' has {', '.join(sorted(map(str, unknown)))}; an "
                          "entry takes `recipe` (its base search recipe) and `set` (keys changed on top of it).")
    if not isinstance(entry.get("set") or {}, Mapping):
        raise RecipeError(f"study recipe key 'strategies.{name}.set' must be a mapping of search recipe keys.")


def _locate(value: str, base: Optional[Path]) -> Path:
    """A recipe a study names: beside the study recipe first, else as ``--recipe`` reads it."""
    if base is not None and (base / value).is_file():
        return base / value
    return resolve_recipe(value)


def _merge(data: dict, changes: Mapping[str, Any]) -> dict:
    """``changes`` on top of a recipe mapping; ``a.b: v`` reaches into the mapping ``a``."""
    data = dict(data)
    for key, value in changes.items():
        head, dot, rest = str(key).partition(".")
        if dot:
            inner = data.get(head) or {}
            if not isinstance(inner, Mapping):
                raise RecipeError(f"study key {key!r}: recipe key {head!r} is not a mapping.")
            data[head] = {**inner, rest: value}
        else:
            data[head] = value
    return data


@dataclass(frozen=True)
class Frozen:
    """What a study runs, as plain data: ``searches[strategy]`` is that strategy's search recipe
    (every key written out, the seed left to each run), ``retrain`` the proxy retrain recipe."""
    searches: dict
    retrain: dict
    space: dict   # the random baseline's space: {steps}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Frozen":
        return cls(dict(data["searches"]), dict(data["retrain"]), dict(data["space"]))


def search_recipe(strategy: str, data: Mapping[str, Any], seed: int, where: str = "study") -> Any:
    """The search recipe object of one run: ``strategy``'s recipe class read from ``data`` with ``seed``."""
    cls = recipe_class(get_strategy(strategy))
    return from_mapping(cls, {**data, "seed": seed}, where)


def _random_space(searches: Mapping[str, dict]) -> dict:
    """The DARTS space the strategies search (its node count), which the random baseline draws from."""
    steps = {name: data["steps"] for name, data in searches.items() if get_strategy(name).on_supernet}
    if not steps:
        raise RecipeError("random_baseline draws cells of the DARTS space, and no strategy of the study searches "
                          "it (none runs on the supernet); set random_baseline: false.")
    if len(set(steps.values())) > 1:
        raise RecipeError("the strategies of the study search cells of different sizes ("
                          + ", ".join(f"{n}: steps={v}" for n, v in steps.items()) + "); give them one `steps` so "
                          "that their cells and the random baseline's come from one space.")
    return {"steps": next(iter(steps.values()))}


def resolve(recipe: StudyRecipe, base: Optional[Path] = None) -> Frozen:
    """Read every recipe the study names and check each search and the retrain as they will run."""
    searches = {}
    for name, entry in recipe.strategies.items():
        entry = entry or {}
        if not (entry.get("recipe") or recipe.search):
            raise RecipeError(f"the study names no search recipe for strategy {name!r}: set `search:` (the base "
                              f"recipe of the strategies) or `strategies.{name}.recipe`.")
        path = _locate(str(entry.get("recipe") or recipe.search), base)
        data = _merge(read_yaml_mapping(path), {**(entry.get("set") or {}), "strategy": name})
        where = f"the {name} search of the study ({path})"
        searches[name] = search_recipe(name, data, recipe.seeds[0], where).to_dict()
    retrain_path = _locate(recipe.retrain, base)
    retrain = from_mapping(Recipe, _merge(read_yaml_mapping(retrain_path), recipe.retrain_set),
                           f"the study's retrain recipe ({retrain_path})")
    space = {}
    if recipe.random_baseline:
        space = _random_space(searches)
    return Frozen(searches, retrain.to_dict(), space)


__all__ = ["Frozen", "RESUME_KEYS", "StudyRecipe", "check_strategy_entry", "resolve", "search_recipe"]
