"""A weights file's evaluation transform, built from its pretrained cfg (weights/cfg.py).

The steps are those of timm's ``transforms_imagenet_eval`` in its ``center`` crop mode, which is
also what osmr's imgclsmob and the DARTS family's test scripts do: resize the shorter side to
``size / crop_pct`` (rounded down as timm does, or up as imgclsmob does: ``resize_rounding``),
centre crop ``size``, scale to [0, 1], normalise with the cfg's mean and std.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .cfg import INTERPOLATIONS, CfgError, check_preprocessing


@dataclass(frozen=True)
class EvalPreprocessing:
    """What an evaluation feeds the network, and which values the user changed."""

    input_size: tuple
    crop_pct: float
    interpolation: str
    mean: tuple
    std: tuple
    resize_rounding: str = "floor"
    overridden: dict = field(default_factory=dict)   # field -> (cfg's value, the user's)

    @property
    def resize(self) -> int:
        side = self.input_size[1] / self.crop_pct
        return math.ceil(side) if self.resize_rounding == "ceil" else math.floor(side)

    def transform(self):
        from torchvision import transforms

        mode = getattr(transforms.InterpolationMode, self.interpolation.upper())
        return transforms.Compose([
            transforms.Resize(self.resize, interpolation=mode),
            transforms.CenterCrop(tuple(self.input_size[1:])),
            transforms.ToTensor(),
            transforms.Normalize(mean=list(self.mean), std=list(self.std)),
        ])

    def describe(self) -> str:
        text = (f"image size {self.input_size[1]}x{self.input_size[2]}, resize {self.resize} "
                f"({self.interpolation}), crop_pct {self.crop_pct:g}, mean {_fmt(self.mean)}, std {_fmt(self.std)}")
        if self.overridden:
            text += "; overridden: " + ", ".join(f"{k} {_fmt(old)} -> {_fmt(new)}"
                                                 for k, (old, new) in self.overridden.items())
        return text


def _fmt(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + ")"
    return f"{value:g}" if isinstance(value, float) else str(value)


def preprocessing(cfg: Mapping[str, Any], *, input_size: Optional[int] = None, crop_pct: Optional[float] = None,
                  interpolation: Optional[str] = None) -> EvalPreprocessing:
    """The evaluation preprocessing of ``cfg``; the keyword arguments override it (and say so)."""
    values = check_preprocessing({k: cfg[k] for k in ("input_size", "crop_pct", "interpolation", "mean", "std",
                                                       "resize_rounding") if k in cfg}, "the weights' cfg")
    missing = [k for k in ("input_size", "mean", "std") if k not in values]
    if missing:
        raise CfgError(f"the weights' cfg lacks {', '.join(missing)}; cannot build its transform.")
    values.setdefault("crop_pct", 0.875)   # timm's DEFAULT_CROP_PCT
    values.setdefault("interpolation", "bilinear")
    changes = {}
    if input_size is not None:
        changes["input_size"] = (values["input_size"][0], int(input_size), int(input_size))
    if crop_pct is not None:
        changes["crop_pct"] = float(crop_pct)
    if interpolation is not None:
        if interpolation not in INTERPOLATIONS:
            raise CfgError(f"--interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}.")
        changes["interpolation"] = interpolation
    check_preprocessing(changes, "the overrides")
    overridden = {k: (values[k], v) for k, v in changes.items() if values[k] != v}
    values.update(changes)
    return EvalPreprocessing(input_size=tuple(values["input_size"]), crop_pct=float(values["crop_pct"]),
                             interpolation=values["interpolation"], mean=tuple(values["mean"]),
                             std=tuple(values["std"]), resize_rounding=values.get("resize_rounding", "floor"),
                             overridden=overridden)
