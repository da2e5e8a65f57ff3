"""PNAS search recipes (``strategy: pnas``): the progressive space, the beam, the surrogate, children.

Not a :class:`~.recipe.SampledRecipe`: PNAS has one space (``ops`` and ``num_blocks`` shape it)
and no ``children`` budget of its own (B, K and the ops fix it); the child and worker keys are the
same as the other sampled searches'.

From the paper (Liu et al., ECCV 2018) as we could check it: B=5 blocks, the 8 ops of
:data:`~.space.PNAS_OPS`, add only, one cell type; a beam of K=256 (the value the task
states; the paper's Sec. 5 uses it); an ensemble of 5 predictors (the task's value); the
predictor an LSTM.  The predictor's sizes and training, and the children's settings beyond
N=2 and 20 epochs, are our choices (``docs/pnas.md`` lists which is which).

The ``predictor`` mapping holds :class:`~.pnas_predictor.PredictorConfig` keys and ``child`` the
:class:`~.child.ChildConfig` keys; ``--set predictor.kind=mlp`` or ``--set child.epochs=2``
reach them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from ...errors import ConfigError
from ...recipe_file import RecipeError, RecipeFile, check_choices, from_mapping, require_finite
from .child import ChildConfig
from .executors import EXECUTORS
from .pnas_cells import ProgressiveSpace
from .pnas_predictor import KINDS, PredictorConfig
from .recipe import check_worker_keys, child_config_from
from .space import PNAS_OPS, SPACES

STRATEGY = "pnas"
CHOICES = {"strategy": (STRATEGY,), "executor": EXECUTORS}


@dataclass
class PNASRecipe(RecipeFile):
    name: str = "custom"
    description: str = ""
    strategy: str = STRATEGY

    # ---- the progressive space
    num_blocks: int = 5              # B: the last stage trains B-block cells
    ops: list = field(default_factory=lambda: list(PNAS_OPS))

    # ---- the search
    beam_size: int = 256             # K: cells trained at each stage after the first
    predictor: dict = field(default_factory=dict)
    top_k: int = 10                  # architectures kept in top_k.yaml

    # ---- children and where they run
    child: dict = field(default_factory=dict)
    executor: str = "auto"           # auto | local | process | ray
    workers: int = 1
    ray_address: str = ""
    ray_num_cpus: int = 0
    gpus_per_child: float = -1.0     # Ray: -1 means one per child when the cluster has GPUs
    cpus_per_child: float = 1.0

    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        require_finite(self)
        check_choices(self, CHOICES)
        for key in ("num_blocks", "beam_size", "top_k", "workers"):
            if getattr(self, key) < 1:
                raise RecipeError(f"recipe key {key!r} = {getattr(self, key)} must be at least 1.")
        check_worker_keys(self)
        try:
            ProgressiveSpace(self.ops, self.num_blocks)   # op names and repeats, checked at load
        except ConfigError as err:
            raise RecipeError(f"recipe key 'ops': {err} (the paper's ops: {', '.join(PNAS_OPS)})") from None
        self.predictor_config   # validates the predictor section
        self.child_config       # validates the child section

    @property
    def predictor_config(self) -> PredictorConfig:
        config = from_mapping(PredictorConfig, self.predictor, "recipe key 'predictor'")
        check_choices(config, {"kind": KINDS})
        for key in ("members", "embedding", "hidden", "epochs", "batch_size"):
            if getattr(config, key) < 1:
                raise RecipeError(f"recipe key 'predictor.{key}' = {getattr(config, key)} must be at least 1.")
        if config.lr <= 0:
            raise RecipeError(f"recipe key 'predictor.lr' = {config.lr} must be positive.")
        if not 0.0 < config.subset <= 1.0:
            raise RecipeError(f"recipe key 'predictor.subset' = {config.subset} must be in (0, 1] "
                              "(each member's share of the trained cells; 0.8 here).")
        if config.weight_decay < 0:
            raise RecipeError(f"recipe key 'predictor.weight_decay' = {config.weight_decay} must not be negative.")
        return config

    @property
    def child_config(self) -> ChildConfig:
        # The pnas space's layout (PNASNet's) unless the recipe's child keys say otherwise.
        return child_config_from(self.child, layout=SPACES["pnas"].layout)



def load_pnas_recipe(path: Optional[Union[str, Path]], overrides: Sequence[str] = ()) -> PNASRecipe:
    return PNASRecipe.load(path, overrides)


__all__ = ["PNASRecipe", "STRATEGY", "load_pnas_recipe"]
