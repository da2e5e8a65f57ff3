"""NASNet RL search recipes (``strategy: nasnet_rl``): controller, search space, children, workers.

Defaults follow the paper (Zoph et al. 2018, appendix A) where it states a value: a one-layer
LSTM of 100 units, PPO with learning rate 0.00035, entropy weight 1e-5, a reward baseline that is
a moving average with weight 0.95, 20 architectures per controller update and 20,000 children in
all (1,000 updates), children with N=2 trained 20 epochs on 45,000 CIFAR-10 images and scored on
the other 5,000 with a cosine learning rate.  Values it leaves open are ours and say so: the PPO
clip (0.2, PPO's default) and epochs per batch, the sampling temperature and tanh constant, the
children's F, batch size and learning rate.

The ``child`` mapping holds :class:`~.child.ChildConfig` keys; ``--set child.epochs=2`` reaches it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from ...recipe_file import RecipeError, RecipeFile, check_choices, require_finite
from ..sampled.child import ChildConfig
from ..sampled.executors import EXECUTORS
from ..sampled.recipe import child_config_from
from .policy import ALGORITHMS
from .space import PAPER_OPS

STRATEGY = "nasnet_rl"
CHOICES = {"strategy": (STRATEGY,), "algorithm": ALGORITHMS, "executor": EXECUTORS}


@dataclass
class RLSearchRecipe(RecipeFile):
    name: str = "custom"
    description: str = ""
    strategy: str = STRATEGY

    # ---- search space
    num_blocks: int = 5
    ops: list = field(default_factory=lambda: list(PAPER_OPS))
    combines: list = field(default_factory=lambda: ["add", "concat"])

    # ---- controller
    controller_hidden: int = 100
    algorithm: str = "ppo"           # ppo | reinforce
    controller_lr: float = 3.5e-4
    entropy_weight: float = 1e-5
    baseline_decay: float = 0.95
    ppo_clip: float = 0.2
    ppo_epochs: int = 4
    temperature: float = 1.0
    tanh_constant: float = 0.0       # 0: off
    controller_grad_clip: float = 0.0

    # ---- search length
    controller_steps: int = 1000     # controller updates
    children_per_step: int = 20      # architectures per update
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

    def __post_init__(self) -> None:
        require_finite(self)
        check_choices(self, CHOICES)
        for key in ("num_blocks", "controller_hidden", "ppo_epochs", "controller_steps", "children_per_step",
                    "top_k", "workers"):
            if getattr(self, key) < 1:
                raise RecipeError(f"recipe key {key!r} = {getattr(self, key)} must be at least 1.")
        for key in ("controller_lr", "temperature", "cpus_per_child"):
            if getattr(self, key) <= 0:
                raise RecipeError(f"recipe key {key!r} = {getattr(self, key)} must be positive.")
        for key in ("entropy_weight", "tanh_constant", "controller_grad_clip", "ray_num_cpus"):
            if getattr(self, key) < 0:
                raise RecipeError(f"recipe key {key!r} = {getattr(self, key)} must not be negative.")
        if not 0.0 < self.ppo_clip < 1.0:
            raise RecipeError(f"recipe key 'ppo_clip' = {self.ppo_clip} must be in (0, 1) (PPO's usual 0.2).")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise RecipeError(f"recipe key 'baseline_decay' = {self.baseline_decay} must be in [0, 1).")
        if self.children_per_step < 2:
            raise RecipeError("recipe key 'children_per_step' must be at least 2: the advantage compares "
                              "children with the baseline, and one child per update learns little.")
        self.child_config   # validates the child section

    @property
    def child_config(self) -> ChildConfig:
        return child_config_from(self.child)



def load_rl_recipe(path: Optional[Union[str, Path]], overrides: Sequence[str] = ()) -> RLSearchRecipe:
    return RLSearchRecipe.load(path, overrides)


__all__ = ["RLSearchRecipe", "STRATEGY", "load_rl_recipe"]
