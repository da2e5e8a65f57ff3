"""The recipe keys every sampled search shares: the space, the child budget, the children, the workers.

A strategy's recipe subclasses :class:`SampledRecipe` with its own keys (evolution's population and
sample size) and its strategy name.  ``space`` picks NASNet's, AmoebaNet's or PNAS's cell space
(:data:`~.space.SPACES`); ``ops`` and ``combines``, when given, replace the space's.  The ``child``
mapping holds :class:`~.child.ChildConfig` keys (``--set child.epochs=2`` reaches them); the keys it
leaves out of the space's layout (PNAS's: ``reduction: stride``, ``skip_reduction_layer_input: true``)
come from the space.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ...errors import ConfigError
from ...recipe_file import RecipeError, RecipeFile, check_choices, from_mapping, require_finite
from ...registry import DATASETS
from .child import ChildConfig
from .evolution import MUTATIONS
from .executors import EXECUTORS
from .space import SPACES, SearchSpace

# Children train on the CIFAR-sized datasets of the registry.
CHILD_CHOICES = {"dataset": tuple(name for name, (preset, _) in DATASETS.items() if preset == "cifar"),
                 "device": ("auto", "cpu", "cuda"), "amp": ("auto", "bf16", "off"),
                 "channels_last": ("auto", "on", "off"), "reduction": ("cell", "stride")}


def child_config_from(data: Mapping[str, Any], layout: Optional[Mapping[str, Any]] = None) -> ChildConfig:
    """A recipe's ``child`` mapping as a :class:`ChildConfig`, every key checked; ``layout`` (the
    space's, :attr:`~.space.SearchSpace.layout`) gives the defaults of the keys ``data`` leaves out."""
    config = from_mapping(ChildConfig, {**(layout or {}), **data}, "recipe key 'child'")
    check_choices(config, CHILD_CHOICES)
    for key in ("image_size", "held_out", "N", "F", "epochs", "batch_size"):
        if getattr(config, key) < 1:
            raise RecipeError(f"recipe key 'child.{key}' = {getattr(config, key)} must be at least 1.")
    if not 0.0 <= config.drop_path < 1.0:
        raise RecipeError(f"recipe key 'child.drop_path' = {config.drop_path} must be in [0, 1).")
    return config


def check_worker_keys(recipe) -> None:
    """The keys of where children run (every sampled search's recipe has them)."""
    if recipe.cpus_per_child <= 0:
        raise RecipeError(f"recipe key 'cpus_per_child' = {recipe.cpus_per_child} must be positive.")
    if recipe.ray_num_cpus < 0:
        raise RecipeError(f"recipe key 'ray_num_cpus' = {recipe.ray_num_cpus} must not be negative.")


@dataclass
class SampledRecipe(RecipeFile):
    name: str = "custom"
    description: str = ""
    strategy: str = ""

    # ---- search space
    space: str = "nasnet"            # nasnet | amoebanet | pnas
    num_blocks: int = 5
    ops: list = field(default_factory=list)        # empty: the space's own
    combines: list = field(default_factory=list)   # empty: the space's own

    # ---- search length
    children: int = 1000             # children trained in all
    top_k: int = 10                  # architectures kept in top_k.yaml

    # ---- children and where they run
    child: dict = field(default_factory=dict)
    executor: str = "auto"           # auto | local | process | ray
    workers: int = 1                 # process pool size
    ray_address: str = ""            # a running Ray cluster ("auto" or host:port); empty: local
    ray_num_cpus: int = 0            # local Ray cluster size (0: all cores)
    gpus_per_child: float = -1.0     # Ray: -1 means one per child when the cluster has GPUs
    cpus_per_child: float = 1.0

    seed: int = 0
    progress: bool = True

    STRATEGY = ""                    # the subclass's strategy name

    def __post_init__(self) -> None:
        if not self.strategy:
            self.strategy = self.STRATEGY
        require_finite(self)
        check_choices(self, {"strategy": (self.STRATEGY,), "executor": EXECUTORS, "space": tuple(SPACES)})
        for key in ("num_blocks", "children", "top_k", "workers"):
            if getattr(self, key) < 1:
                raise RecipeError(f"recipe key {key!r} = {getattr(self, key)} must be at least 1.")
        check_worker_keys(self)
        try:
            self.build_space()
        except ConfigError as err:
            raise RecipeError(str(err)) from None
        self.child_config   # validates the child section (its defaults come from the space)

    @property
    def child_config(self) -> ChildConfig:
        # The space's layout (PNASNet's for space: pnas) unless the recipe's child keys say otherwise.
        return child_config_from(self.child, layout=self.build_space().layout)


    def build_space(self) -> SearchSpace:
        return SearchSpace.preset(self.space, ops=self.ops or None, num_blocks=self.num_blocks,
                                  combines=self.combines or None)


@dataclass
class RandomRecipe(SampledRecipe):
    """``strategy: random``: ``children`` architectures drawn uniformly from the space."""

    STRATEGY = "random"


@dataclass
class EvolutionRecipe(SampledRecipe):
    """``strategy: evolution``: regularized evolution (Real et al. 2019).  The paper's CIFAR-10 search:
    P=100, S=25, 20,000 children; the mutation weights are ours (the paper gives none we could check)."""

    STRATEGY = "evolution"
    space: str = "amoebanet"
    population: int = 100            # P
    sample_size: int = 25            # S
    mutation_weights: dict = field(default_factory=lambda: {"hidden_state": 1.0, "op": 1.0, "identity": 1.0})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.population < 1 or self.sample_size < 1:
            raise RecipeError(f"recipe keys 'population' = {self.population} and 'sample_size' = {self.sample_size} "
                              "must be at least 1 (the paper: P=100, S=25).")
        if self.sample_size > self.population:
            raise RecipeError(f"recipe key 'sample_size' = {self.sample_size} exceeds 'population' = "
                              f"{self.population}; a tournament samples S of the P members (the paper: S=25, P=100).")
        weights = self.mutation_weights
        bad = [k for k in weights if k not in MUTATIONS]
        if bad:
            raise RecipeError(f"recipe key 'mutation_weights' names {bad[0]!r}; the mutations are "
                              f"{', '.join(MUTATIONS)}.")
        if any(not isinstance(w, (int, float)) or w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
            raise RecipeError(f"recipe key 'mutation_weights' = {weights} needs non-negative numbers, not all 0.")


__all__ = ["CHILD_CHOICES", "EvolutionRecipe", "RandomRecipe", "SampledRecipe", "check_worker_keys", "child_config_from"]
