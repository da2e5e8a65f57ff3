"""Training recipes: a validated dataclass read from YAML, with ``--set key=value`` overrides.

A recipe is flat (one key per hyperparameter) except ``model``, the builder's keyword arguments
(``C``, ``layers``, ...), which ``--set model.C=16`` reaches.  Every key is checked: an unknown or
misspelt one raises :class:`RecipeError` naming it, the closest valid keys and all valid keys; a
value of the wrong type or outside its choices names the key, the value and what would be right.

The helpers (:func:`from_mapping`, :func:`apply_overrides`, :func:`parse_assignment`) work on
any dataclass, so the search recipes reuse them with their own fields.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from ..errors import NasNetZooError, close_matches
from ..yamlio import dump_plain_yaml, load_yaml, read_yaml


class RecipeError(NasNetZooError, ValueError):
    """A recipe file or override that is missing, malformed, misspelt or out of range."""


# Choices of the string-valued keys; validated on construction.
CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": ("cifar10", "cifar100", "imagenet", "digits"),
    "optimizer": ("sgd", "adamw"),
    "schedule": ("cosine", "step", "linear", "constant"),
    "drop_path_schedule": ("auto", "linear", "scheduled", "constant"),
    "amp": ("auto", "bf16", "off"),
    "channels_last": ("auto", "on", "off"),
    "data_on_device": ("auto", "on", "off"),
    "device": ("auto", "cpu", "cuda"),
}


class RecipeFile:
    """Reading and writing, shared by the retrain and search recipe dataclasses."""

    @classmethod
    def load(cls, path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()):
        """The recipe in ``path`` (the defaults when None) with ``--set key=value`` overrides applied."""
        return apply_overrides(cls() if path is None else read_recipe_file(cls, path), overrides)

    @classmethod
    def from_file(cls, path: Union[str, Path], overrides: Sequence[str] = ()):
        return apply_overrides(read_recipe_file(cls, path), overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return dump_plain_yaml(self.to_dict())


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
    threads: int = 0              # CPU intra-op threads (0: PyTorch's default, one per core)
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


# ---------------------------------------------------------------------------- validation
def _non_finite(value: Any) -> Optional[str]:
    """Where a NaN or infinity hides in ``value`` (a number, list or mapping), e.g. ``"[1]"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, (list, tuple)) \
        else ()
    for key, item in items:
        where = _non_finite(item)
        if where is not None:
            return (f".{key}" if isinstance(value, Mapping) else f"[{key}]") + where
    return None


def require_finite(recipe: Any) -> None:
    """Every number of a recipe dataclass is finite: a NaN or infinite lr, decay or size is refused."""
    for f in dataclasses.fields(recipe):
        where = _non_finite(getattr(recipe, f.name))
        if where is not None:
            raise RecipeError(f"recipe key {f.name + where!r} = {getattr(recipe, f.name)!r} is not a finite "
                              "number; give a finite value.")


def check_choices(recipe: Any, choices: Mapping[str, Sequence[str]]) -> None:
    """Every string-valued key of ``recipe`` named in ``choices`` holds one of its values."""
    for key, allowed in choices.items():
        value = getattr(recipe, key, None)
        if value is not None and value not in allowed:
            hits = close_matches(str(value), allowed)
            hint = f" Did you mean {hits[0]!r}?" if hits else ""
            raise RecipeError(f"recipe key {key!r} = {value!r} is not one of {', '.join(allowed)}.{hint}")


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


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key(key: str, valid: Iterable[str], where: str) -> RecipeError:
    valid = list(valid)
    hits = close_matches(key, valid)
    hint = f" Did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""
    return RecipeError(f"unknown recipe key {key!r} in {where}.{hint} Valid keys: {', '.join(valid)}.")


def _coerce(key: str, value: Any, kind: Any, where: str) -> Any:
    """Check ``value`` against the field type; ints are accepted for floats, nothing else converts."""
    def wrong(expected: str) -> RecipeError:
        return RecipeError(f"recipe key {key!r} in {where} must be {expected}, got {value!r} "
                           f"({type(value).__name__}).")

    origin = typing.get_origin(kind) or kind
    if origin is Union:  # Optional[...]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if value is None else _coerce(key, value, args[0], where)
    if kind is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise wrong("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise wrong("a list")
        return list(value)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise wrong("a mapping")
        return dict(value)
    return value


def from_mapping(cls: type, data: Mapping[str, Any], where: str = "recipe"):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and ill-typed values."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"{where} must be a mapping of recipe keys, got {type(data).__name__}.")
    types = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types:
            raise _unknown_key(str(key), types, where)
        kwargs[key] = _coerce(key, value, types[key], where)
    return cls(**kwargs)


def read_recipe_file(cls: type, path: Union[str, Path]):
    path = Path(path)
    if not path.is_file():
        bundled = sorted(p.name for p in Path("recipes").glob("*.yaml")) if Path("recipes").is_dir() else []
        hint = f" Recipes here: {', '.join(bundled)}." if bundled else ""
        raise RecipeError(f"recipe file {str(path)!r} does not exist.{hint}")
    data = read_yaml(path, RecipeError, "recipe file")
    if data is None:   # not the defaults: an empty file is a mistake (a training run on CIFAR-10 surprises)
        raise RecipeError(f"recipe file {path} is empty; write the recipe's keys in it (see recipes/*.yaml), "
                          "or pass one of the bundled recipes.")
    return from_mapping(cls, data, str(path))


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"lr=0.1"`` -> ``("lr", 0.1)``; values are read as YAML (numbers, true/false, lists)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"override {text!r} is not of the form key=value (e.g. --set lr=0.05).")
    try:
        value = load_yaml(raw, f"--set {key}", RecipeError) if raw.strip() else ""
    except RecipeError:
        value = raw
    return key, value


def apply_overrides(recipe, overrides: Sequence[str]):
    """Apply ``key=value`` strings (``model.C=16`` reaches into the ``model`` mapping)."""
    if not overrides:
        return recipe
    data = dataclasses.asdict(recipe)
    types = _field_types(type(recipe))
    for text in overrides:
        key, value = parse_assignment(text)
        head, dot, rest = key.partition(".")
        if head not in types:
            raise _unknown_key(head, types, f"--set {text}")
        if dot:
            if typing.get_origin(types[head]) is not dict and types[head] is not dict:
                raise RecipeError(f"--set {text}: recipe key {head!r} is not a mapping; use --set {head}=VALUE.")
            data[head] = {**(data[head] or {}), rest: value}
        else:
            data[head] = value
    return from_mapping(type(recipe), data, "--set")


def load_recipe(path: Optional[Union[str, Path]], overrides: Sequence[str] = ()) -> Recipe:
    """A recipe file (or the defaults when ``path`` is None) with ``--set`` overrides applied."""
    return Recipe.load(path, overrides)
