"""Search recipes: a validated dataclass read from YAML with ``--set key=value`` overrides.

The reading, type checking and unknown-key errors are the retrain recipes' (``train/recipe.py``);
this module only declares the search's own keys.  Defaults are PC-DARTS's CIFAR-10 protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from ..recipe_file import RecipeError, RecipeFile, check_choices, from_mapping, require_finite
from ..registry import DATASETS
from .backend import BACKEND_NAMES
from .strategies import TABLE

# The strategy choices are the strategies table's names (strategies/__init__.py).
CHOICES = {
    "dataset": tuple(DATASETS),   # the registry's datasets
    "stem": ("cifar", "imagenet"),
    "device": ("auto", "cpu", "cuda"),
    "amp": ("auto", "bf16", "off"),
    "memory": ("default", "checkpoint"),
    "channels_last": ("off", "on"),
    "backend": BACKEND_NAMES,     # search/backend.py's table
}


@dataclass
class SearchRecipe(RecipeFile):
    name: str = "custom"
    description: str = ""
    strategy: str = "pcdarts"     # darts | pcdarts | parsec | any supernet strategy in the table
    second_order: bool = False    # DARTS's unrolled architecture gradient

    # ---- data: the training set is split into a weight half and an architecture half
    dataset: str = "cifar10"      # cifar10 | cifar100 | digits (embedded) | imagenet (ImageFolder subset)
    data_dir: str = "data"
    download: bool = True
    image_size: int = 32          # upsampled size (digits) / train crop (imagenet)
    train_portion: float = 0.5
    crop_padding: int = 4
    hflip: bool = True
    workers: int = 4

    # ---- supernet
    C: int = 16
    layers: int = 8
    steps: int = 4
    stem: str = "cifar"
    partial_k: int = 4            # PC-DARTS's K (1: full channels)
    edge_norm: bool = True        # PC-DARTS's edge normalisation
    memory: str = "default"       # checkpoint: recompute each cell in the backward pass (less memory, ~1 more forward)
    channels_last: str = "off"    # on: the supernet in channels_last (faster convs; see docs/search_speed.md first)
    backend: str = "auto"         # the supernet's computation: auto (fused on CPU fp32 NCHW), reference, fused

    # ---- weights
    epochs: int = 50
    batch_size: int = 256
    lr: float = 0.1
    lr_min: float = 0.0
    lr_warmup_epochs: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0

    # ---- architecture
    arch_lr: float = 6e-4
    arch_betas: list = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    warmup_epochs: int = 15       # weight-only epochs before architecture updates begin
    parsec_samples: int = 8       # PARSEC: architectures sampled per step
    init_distribution: str = ""   # PARSEC: run dir whose learnt distribution warm-starts pi

    # ---- run
    seed: int = 2
    device: str = "auto"
    amp: str = "auto"             # auto: bf16 autocast on a GPU, fp32 on the CPU; bf16: also on the CPU; off: fp32
    threads: int = 0              # CPU intra-op threads (0: the cores others leave free, re-read per step)
    max_steps_per_epoch: int = 0  # cut epochs short (smoke runs); 0: whole epoch
    progress: bool = True

    def __post_init__(self) -> None:
        require_finite(self)
        check_choices(self, {"strategy": tuple(TABLE), **CHOICES})
        if TABLE[self.strategy].build is None:   # a pipeline of its own (NASNet's RL search), with its own keys
            raise RecipeError(f"strategy {self.strategy!r} runs its own pipeline, whose recipe has its own keys: write "
                              "it in the recipe file (see recipes/nasnet_rl_cifar10.yaml), not through --set.")
        if self.threads < 0:
            raise RecipeError(f"recipe key 'threads' = {self.threads} must be 0 (the cores other processes leave "
                              "free) or a thread count.")
        for key in ("epochs", "batch_size", "C", "layers", "steps", "partial_k", "parsec_samples", "image_size"):
            if getattr(self, key) < 1:
                raise RecipeError(f"recipe key {key!r} = {getattr(self, key)} must be at least 1.")
        if not 0.0 < self.train_portion < 1.0:
            raise RecipeError(f"recipe key 'train_portion' = {self.train_portion} must be between 0 and 1 "
                              "(the share of the training set used for the weights; the rest trains the architecture).")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise RecipeError(f"recipe key 'warmup_epochs' = {self.warmup_epochs} must be in 0..epochs ({self.epochs}).")
        if self.strategy == "pcdarts" and not self.edge_norm:
            raise RecipeError("strategy 'pcdarts' uses edge normalisation: set edge_norm: true "
                              "(or strategy: darts with partial_k for partial channels alone).")
        if self.strategy != "parsec" and self.init_distribution:
            raise RecipeError("'init_distribution' warm-starts PARSEC's distribution; it needs strategy: parsec.")


def load_search_recipe(path: Optional[Union[str, Path]], overrides: Sequence[str] = ()) -> SearchRecipe:
    return SearchRecipe.load(path, overrides)


__all__ = ["SearchRecipe", "RecipeError", "load_search_recipe", "from_mapping"]
