"""ENAS search recipes (``strategy: enas``).  Defaults are ``scripts/cifar10_micro_search.sh`` of
melodyguan/enas (and ``src/cifar10/main.py``'s defaults for what the script leaves out); see
``recipes/enas_cifar10.yaml`` for each value's source and ``docs/enas.md`` for the departures."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from ...recipe_file import RecipeError, RecipeFile, check_choices, require_finite

STRATEGY = "enas"
CHOICES = {"strategy": (STRATEGY,), "dataset": ("cifar10", "cifar100", "digits"), "device": ("auto", "cpu", "cuda")}


@dataclass
class ENASRecipe(RecipeFile):
    name: str = "custom"
    description: str = ""
    strategy: str = STRATEGY

    # ---- data: the weights train on train_portion of the training set, the controller's rewards
    # come from the rest (ENAS: 45,000 / 5,000)
    dataset: str = "cifar10"
    data_dir: str = "data"
    download: bool = False
    image_size: int = 32           # digits only
    train_portion: float = 0.9
    crop_padding: int = 4
    hflip: bool = True
    batch_size: int = 160

    # ---- shared child network
    num_layers: int = 6
    out_filters: int = 20
    num_nodes: int = 5             # child_num_cells
    keep_prob: float = 0.9
    aux_heads: bool = True
    aux_weight: float = 0.4
    l2_reg: float = 1e-4           # added to the loss as l2 * sum(w^2)
    grad_clip: float = 5.0         # per-tensor norm; 0: off (see docs/enas.md: the official clip is a no-op)
    momentum: float = 0.9          # Nesterov
    lr_max: float = 0.05
    lr_min: float = 0.0005
    lr_T_0: int = 10               # cosine with warm restarts, per epoch
    lr_T_mul: int = 2
    epochs: int = 150
    max_steps_per_epoch: int = 0   # 0: the whole weight half each epoch

    # ---- controller
    lstm_size: int = 64
    tanh_constant: float = 1.10
    op_tanh_reduce: float = 2.5
    temperature: float = 0.0       # 0: off (the micro script sets none)
    entropy_weight: float = 1e-4
    baseline_decay: float = 0.99
    controller_lr: float = 0.0035
    controller_train_steps: int = 30
    controller_num_aggregate: int = 10
    controller_train_every: int = 1
    derive_samples: int = 10       # arcs sampled and scored on one held-out batch each, per epoch

    device: str = "auto"
    threads: int = 0               # 0: torch's default
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        require_finite(self)
        check_choices(self, CHOICES)
        for key in ("batch_size", "num_nodes", "epochs", "lstm_size", "controller_train_steps",
                    "controller_num_aggregate", "controller_train_every", "derive_samples", "lr_T_0", "lr_T_mul",
                    "image_size"):
            if getattr(self, key) < 1:
                raise RecipeError(f"recipe key {key!r} = {getattr(self, key)} must be at least 1.")
        for key in ("l2_reg", "grad_clip", "tanh_constant", "temperature", "entropy_weight", "aux_weight", "lr_min",
                    "momentum", "num_layers", "max_steps_per_epoch", "threads", "crop_padding"):
            if getattr(self, key) < 0:
                raise RecipeError(f"recipe key {key!r} = {getattr(self, key)} must not be negative.")
        for key in ("lr_max", "controller_lr", "op_tanh_reduce"):
            if getattr(self, key) <= 0:
                raise RecipeError(f"recipe key {key!r} = {getattr(self, key)} must be positive.")
        if self.out_filters < 2 or self.out_filters % 2:
            raise RecipeError(f"recipe key 'out_filters' = {self.out_filters} must be even and at least 2.")
        if not 0.0 < self.train_portion < 1.0:
            raise RecipeError(f"recipe key 'train_portion' = {self.train_portion} must be in (0, 1) (ENAS: 0.9).")
        if not 0.0 < self.keep_prob <= 1.0:
            raise RecipeError(f"recipe key 'keep_prob' = {self.keep_prob} must be in (0, 1].")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise RecipeError(f"recipe key 'baseline_decay' = {self.baseline_decay} must be in [0, 1) (ENAS: 0.99).")


def load_enas_recipe(path: Optional[Union[str, Path]], overrides: Sequence[str] = ()) -> ENASRecipe:
    return ENASRecipe.load(path, overrides)


__all__ = ["ENASRecipe", "STRATEGY", "load_enas_recipe"]
