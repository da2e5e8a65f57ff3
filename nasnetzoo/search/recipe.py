"""Search recipes: a validated dataclass read from YAML with ``--set key=value`` overrides.

The reading, type checking and unknown-key errors are the retrain recipes' (``train/recipe.py``);
this module only declares the search's own keys.  Defaults are PC-DARTS's CIFAR-10 protocol.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..recipe_file import RecipeError, RecipeFile, check_choices, from_mapping, require_finite
from ..registry import DATASETS
from .backend import BACKEND_NAMES
from .strategies import TABLE, get_strategy
from .strategies.registry import moved_keys

# The strategy choices are the strategies table's names (search/strategies/).
CHOICES = {
    "dataset": tuple(DATASETS),   # the registry's datasets
    "stem": ("cifar", "imagenet"),
    "device": ("auto", "cpu", "cuda"),
    "amp": ("auto", "bf16", "off"),
    "memory": ("default", "checkpoint"),
    "channels_last": ("auto", "off", "on"),
    "backend": BACKEND_NAMES,     # search/backend.py's table
}


@dataclass
class SearchRecipe(RecipeFile):
    name: str = "custom"
    description: str = ""
    strategy: str = "pcdarts"     # darts | pcdarts | parsec | any supernet strategy in the table
    options: dict = field(default_factory=dict)   # the strategy's own keys (its options dataclass)
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
    channels_last: str = "auto"   # auto|off: NCHW (where the CPU path was measured); on: NHWC (docs/search_speed.md)
    backend: str = "auto"         # the supernet's computation: auto (fused on CPU fp32 NCHW), reference, fused
    compile: bool = False         # torch.compile the supernet's forward (reference backend; darts, pcdarts)

    # ---- weights
    epochs: int = 50
    batch_size: int = 256
    lr: float = 0.1
    lr_min: float = 0.0
    lr_warmup_epochs: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False        # Nesterov momentum (GDAS's search)
    weight_decay: float = 3e-4
    grad_clip: float = 5.0

    # ---- architecture
    arch_lr: float = 6e-4
    arch_betas: list = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    warmup_epochs: int = 15       # weight-only epochs before architecture updates begin

    # ---- run
    seed: int = 2
    device: str = "auto"
    # off (the default): fp32, as the papers search; bf16 / auto (bf16 on a GPU) are opt-in: on the
    # CPU, bf16 autocast changed the smoke search's genotype (docs/gpu.md).
    amp: str = "off"
    deterministic: bool = False   # cudnn.benchmark off and deterministic kernels (slower on a GPU)
    threads: int = 0              # CPU intra-op threads (0: the cores others leave free, re-read per step)
    max_steps_per_epoch: int = 0  # cut epochs short (smoke runs); 0: whole epoch
    progress: bool = True

    def __post_init__(self) -> None:
        require_finite(self)
        check_choices(self, {"strategy": tuple(TABLE), **CHOICES})
        entry = get_strategy(self.strategy)
        if not entry.on_supernet:   # a pipeline of its own (NASNet's RL search), with its own keys
            raise RecipeError(f"strategy {self.strategy!r} runs its own pipeline, whose recipe has its own keys: write "
                              "it in the recipe file (see recipes/nasnet_rl_cifar10.yaml), not through --set.")
        options = entry.read_options(self.options)
        self.options = dataclasses.asdict(options) if options is not None else {}
        if self.threads < 0:
            raise RecipeError(f"recipe key 'threads' = {self.threads} must be 0 (the cores other processes leave "
                              "free) or a thread count.")
        for key in ("epochs", "batch_size", "C", "layers", "steps", "partial_k", "image_size"):
            if getattr(self, key) < 1:
                raise RecipeError(f"recipe key {key!r} = {getattr(self, key)} must be at least 1.")
        if not 0.0 < self.train_portion < 1.0:
            raise RecipeError(f"recipe key 'train_portion' = {self.train_portion} must be between 0 and 1 "
                              "(the share of the training set used for the weights; the rest trains the architecture).")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise RecipeError(f"recipe key 'warmup_epochs' = {self.warmup_epochs} must be in 0..epochs ({self.epochs}).")
        if self.compile:
            self._check_compile(entry)
        if entry.check is not None:
            entry.check(self)

    def _check_compile(self, entry) -> None:
        if self.backend == "fused":
            raise RecipeError("recipe key 'compile' compiles the reference supernet (the fused backend breaks into "
                              "several graphs per cell): set backend: reference (or auto), or compile: false.")
        if self.memory == "checkpoint":   # dynamo (torch 2.14.1) cannot trace the recomputation's context_fn
            raise RecipeError("recipe key 'compile' does not run with memory: checkpoint (torch.compile cannot trace "
                              "its recomputation); set memory: default or compile: false.")
        if not entry.compiles:
            able = ", ".join(name for name, e in TABLE.items() if e.compiles)
            raise RecipeError(f"strategy {self.strategy!r} has no compiled step (recipe key 'compile' runs with "
                              f"strategy {able}); set compile: false.")

    def strategy_options(self) -> Any:
        """The strategy's options dataclass (None for a strategy without options)."""
        return get_strategy(self.strategy).read_options(self.options)

    @classmethod
    def moved_keys(cls) -> dict:
        return moved_keys()

    @classmethod
    def upgrade_keys(cls, data: dict, where: str) -> dict:
        """Old flat keys of a strategy's options (``parsec_samples: 8``) read into ``options:``; a
        recipe.yaml written before the move carries every strategy's keys at their defaults: dropped."""
        strategy = data.get("strategy", cls.strategy)
        for key, (owner, option, default) in moved_keys().items():
            if key not in data:
                continue
            value = data.pop(key)
            if owner == strategy:
                options = data.get("options")
                data["options"] = {**(options if isinstance(options, dict) else {}), option: value}
            elif value != default:
                raise RecipeError(f"{where}: recipe key {key!r} is an option of strategy {owner!r}; write it as "
                                  f"`options: {{{option}: ...}}` with strategy: {owner}.")
        return data


def load_search_recipe(path: Optional[Union[str, Path]], overrides: Sequence[str] = ()) -> SearchRecipe:
    return SearchRecipe.load(path, overrides)


__all__ = ["SearchRecipe", "RecipeError", "load_search_recipe", "from_mapping"]
