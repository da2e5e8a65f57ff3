"""Training recipes: the validated ``Recipe`` dataclass of a retrain run.

A recipe is flat (one key per hyperparameter) except ``model``, the builder's keyword arguments
(``C``, ``layers``, ...), which ``--set model.C=16`` reaches.  Reading, type checks, unknown-key
errors and overrides are the shared recipe machinery's (``nasnetzoo/recipe_file.py``), re-exported
here for the modules that import them from this one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from ..recipe_file import (RecipeError, RecipeFile, apply_overrides, check_choices, from_mapping, parse_assignment,
                           read_recipe_file, read_yaml_mapping, require_finite)
from ..registry import DATASETS

CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": tuple(DATASETS),   # the registry's datasets
    "optimizer": ("sgd", "adamw"),
    "schedule": ("cosine", "step", "linear", "constant"),
    "drop_path_schedule": ("auto", "linear", "scheduled", "constant"),
    "amp": ("auto", "bf16", "off"),
    "channels_last": ("auto", "on", "off"),
    "data_on_device": ("auto", "on", "off"),
    "device": ("auto", "cpu", "cuda"),
}


@dataclass
class Recipe(RecipeFile):
    """Every hyperparameter of a retrain run.  Defaults are the DARTS CIFAR-10 protocol's."""

    name: str = "custom"
    description: str = ""
    arch: str = ""                # registry name or genotype file; `nasnetzoo train --arch` overrides it

    # ---- data
    dataset: str = "cifar10"      # cifar10 | cifar100 | imagenet (ImageFolder) | digits (embedded)
    data_dir: str = "data"
    download: bool = True         # CIFAR only: fetch into data_dir when it is not there
    image_size: int = 32          # train crop (ImageNet), upsampled size (digits)
    crop_padding: int = 4         # CIFAR/digits random crop padding (0: no crop)
    hflip: bool = True
    cutout: int = 0               # cutout square side in pixels (0: off)
    color_jitter: float = 0.0     # ImageNet: ColorJitter(b, c, s, hue=b/2); 0: off
    data_on_device: str = "auto"  # keep the whole dataset in (GPU) memory and augment there
    workers: int = 4              # DataLoader workers (unused when data_on_device)

    # ---- model
    model: dict = field(default_factory=dict)   # builder overrides: C, layers, num_classes, ...
    auxiliary: bool = False
    aux_weight: float = 0.4
    drop_path: float = 0.0
    drop_path_schedule: str = "auto"     # linear: DARTS p*epoch/epochs; scheduled: NASNet's per step;
                                         # auto: scheduled for nasnet-family cells, linear for DARTS ones

    # ---- optimisation
    epochs: int = 600
    batch_size: int = 96          # global batch per optimizer step (all processes, all micro-batches)
    accum_steps: int = 1          # gradient accumulation: micro-batches per optimizer step
    optimizer: str = "sgd"
    lr: float = 0.025
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "cosine"      # cosine | step (gamma per step_epochs) | linear (to 0) | constant
    lr_min: float = 0.0
    step_gamma: float = 0.97
    step_epochs: float = 1.0
    warmup_epochs: float = 0.0    # linear warm-up from 0, per optimizer step
    grad_clip: float = 5.0        # max gradient norm (0: off)
    label_smoothing: float = 0.0
    ema_decay: float = 0.0        # EMA of weights (0: off), e.g. 0.9999

    # ---- speed
    amp: str = "auto"             # auto: bf16 autocast on a GPU, fp32 on the CPU
    channels_last: str = "auto"   # auto: on (NHWC is faster on GPUs and on oneDNN CPUs); off: NCHW
    compile: bool = False         # torch.compile the model

    # ---- run
    seed: int = 0
    deterministic: bool = False   # torch.use_deterministic_algorithms (CPU runs are deterministic anyway)
    device: str = "auto"
    threads: int = 0              # CPU intra-op threads (0: the cores others leave free, re-read per step)
    sync_bn: bool = False         # SyncBatchNorm under DDP (GPU only)
    eval_every: int = 1           # epochs between validations (the last epoch always validates)
    log_every: int = 50           # optimizer steps between step records in metrics.jsonl
    max_steps_per_epoch: int = 0  # cut epochs short (smoke tests); 0: whole epoch
    progress: bool = True         # tqdm progress bar

    def __post_init__(self) -> None:
        validate(self)

    # ---------------------------------------------------------------- io
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "recipe") -> "Recipe":
        return from_mapping(cls, data, where)

    def replace(self, **changes: Any) -> "Recipe":
        return from_mapping(type(self), {**self.to_dict(), **changes}, "recipe")


def validate(recipe: Recipe) -> None:
    require_finite(recipe)
    check_choices(recipe, CHOICES)
    positive = ("epochs", "batch_size", "accum_steps", "image_size", "eval_every", "log_every")
    for key in positive:
        if getattr(recipe, key) < 1:
            raise RecipeError(f"recipe key {key!r} = {getattr(recipe, key)} must be at least 1.")
    non_negative = ("lr", "lr_min", "weight_decay", "momentum", "grad_clip", "label_smoothing", "aux_weight",
                    "crop_padding", "cutout", "color_jitter", "warmup_epochs", "workers", "max_steps_per_epoch",
                    "threads")
    for key in non_negative:
        if getattr(recipe, key) < 0:
            raise RecipeError(f"recipe key {key!r} = {getattr(recipe, key)} must not be negative.")
    if not 0.0 <= recipe.drop_path < 1.0:
        raise RecipeError(f"recipe key 'drop_path' = {recipe.drop_path} must be in [0, 1).")
    if not 0.0 <= recipe.ema_decay < 1.0:
        raise RecipeError(f"recipe key 'ema_decay' = {recipe.ema_decay} must be in [0, 1) (0 turns EMA off).")
    if not 0.0 <= recipe.label_smoothing < 1.0:
        raise RecipeError(f"recipe key 'label_smoothing' = {recipe.label_smoothing} must be in [0, 1).")
    if len(recipe.betas) != 2:
        raise RecipeError(f"recipe key 'betas' = {recipe.betas} must be two numbers, e.g. [0.9, 0.999].")
    if recipe.step_gamma <= 0 or recipe.step_epochs <= 0:
        raise RecipeError("recipe keys 'step_gamma' and 'step_epochs' must be positive.")
    if recipe.warmup_epochs > recipe.epochs:
        raise RecipeError(f"recipe key 'warmup_epochs' = {recipe.warmup_epochs} exceeds 'epochs' = {recipe.epochs}.")
    for key in ("auxiliary", "drop_path_rate"):
        if key in recipe.model:
            right = "auxiliary" if key == "auxiliary" else "drop_path"
            raise RecipeError(f"recipe key 'model.{key}': set the top-level key {right!r} instead "
                              "(the trainer schedules it).")


def load_recipe(path: Optional[Union[str, Path]], overrides: Sequence[str] = ()) -> Recipe:
    """A recipe file (or the defaults when ``path`` is None) with ``--set`` overrides applied."""
    return Recipe.load(path, overrides)


__all__ = ["CHOICES", "Recipe", "RecipeError", "RecipeFile", "apply_overrides", "check_choices", "from_mapping",
           "load_recipe", "parse_assignment", "read_recipe_file", "read_yaml_mapping", "require_finite", "validate"]
