"""The pretrained cfg: how a weights file expects its images, in timm's field names.

Each published file in ``zoo.yaml`` carries a ``cfg:`` (input size, crop, interpolation, mean and
std, as its publisher evaluated it) and a ``cfg_source:`` that says where those values were read.
Fields a file does not set come from its entry's data preset (``zoo.yaml`` ``data:``), and the
network's own fields (``first_conv``, ``classifier``, ``pool_size``) from its macro-architecture.
The resolved cfg records, in ``cfg_sources``, where every value came from.

``resize_rounding`` is the one field timm lacks: timm resizes to ``floor(size / crop_pct)``,
osmr's imgclsmob evaluation to ``ceil(size / crop_pct)`` (379 px, not 378, before a 331 crop).

This module imports only ``nasnetzoo.errors``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from ..errors import ConfigError

# The fields a weights entry's `cfg:` may set (the publisher's preprocessing).
PREPROCESSING = ("input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std", "resize_rounding")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
ROUNDINGS = ("floor", "ceil")

# macro-architecture -> (first conv, classifier, total stride of the feature map): the module
# names of nasnetzoo's networks (tests/test_weights_cfg.py checks them on built networks).
NETWORKS = {
    "darts_cifar": ("stem.0", "classifier", 4),
    "darts_imagenet": ("stem0.0", "classifier", 32),
    "nasnet_cifar": ("conv0.conv", "classifier", 4),
    "nasnet_imagenet": ("conv0.conv", "classifier", 32),
    "enas_cifar": ("stem.conv", "classifier", 4),
}


class CfgError(ConfigError):
    """A `cfg:` value that is not one a transform can be built from."""


def check_preprocessing(cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``cfg`` with tuples for sizes and colours; a wrong field or value raises CfgError naming it."""
    unknown = sorted(set(cfg) - set(PREPROCESSING))
    if unknown:
        raise CfgError(f"{where}: unknown cfg field(s) {', '.join(unknown)}; known: {', '.join(PREPROCESSING)}.")
    out = dict(cfg)
    if "input_size" in out:
        size = out["input_size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 3 and all(isinstance(v, int) and 0 < v <= 4096
                                                                           for v in size)):
            raise CfgError(f"{where}: input_size {size!r} is not [channels, height, width] (whole numbers).")
        out["input_size"] = tuple(size)
    for key in ("mean", "std"):
        if key in out:
            value = out[key]
            if not (isinstance(value, (list, tuple)) and len(value) in (1, 3)
                    and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
                    and (key == "mean" or all(v > 0 for v in value))):
                raise CfgError(f"{where}: {key} {value!r} is not three finite numbers"
                               f"{' above 0' if key == 'std' else ''}.")
            out[key] = tuple(float(v) for v in value)
    if "crop_pct" in out and not (isinstance(out["crop_pct"], (int, float)) and 0 < out["crop_pct"] <= 1):
        raise CfgError(f"{where}: crop_pct {out['crop_pct']!r} is not a fraction in (0, 1].")
    if "interpolation" in out and out["interpolation"] not in INTERPOLATIONS:
        raise CfgError(f"{where}: interpolation {out['interpolation']!r} is not one of {', '.join(INTERPOLATIONS)}.")
    if "resize_rounding" in out and out["resize_rounding"] not in ROUNDINGS:
        raise CfgError(f"{where}: resize_rounding {out['resize_rounding']!r} is not floor or ceil.")
    if out.get("crop_mode", "center") != "center":
        raise CfgError(f"{where}: crop_mode {out['crop_mode']!r}: only 'center' is evaluated here.")
    return out


def pool_size(architecture: str, input_size) -> Optional[tuple[int, int]]:
    """The last feature map's size at ``input_size`` (stride-2 stages pad as TF's SAME: ceil)."""
    stride = NETWORKS.get(architecture, (None, None, None))[2]
    if stride is None:
        return None
    return tuple(-(-int(v) // stride) for v in input_size[1:])


def network_cfg(architecture: str, data: Mapping[str, Any], num_classes: Optional[int], preset: str
                ) -> dict[str, Any]:
    """The cfg of a network built from its registry entry (no weights chosen yet)."""
    data = check_preprocessing({k: v for k, v in data.items() if k in PREPROCESSING}, f"zoo.yaml {preset}")
    first_conv, classifier, _ = NETWORKS.get(architecture, (None, None, None))
    cfg: dict[str, Any] = {"crop_mode": "center", "resize_rounding": "floor", **data, "num_classes": num_classes,
                           "first_conv": first_conv, "classifier": classifier}
    cfg["pool_size"] = pool_size(architecture, cfg["input_size"]) if "input_size" in cfg else None
    origin = f"zoo.yaml {preset} (the entry's default preprocessing)"
    cfg["cfg_sources"] = {**{k: origin for k in data},
                          **{k: "timm's default" for k in ("crop_mode", "resize_rounding") if k not in data},
                          "first_conv": "nasnetzoo's module names", "classifier": "nasnetzoo's module names",
                          "pool_size": "input size / the network's total stride", "num_classes": "the network's head"}
    return cfg


def with_source(cfg: Mapping[str, Any], architecture: str, source_cfg: Mapping[str, Any], origin: str,
                **extra: Any) -> dict[str, Any]:
    """``cfg`` overlaid with a published file's own preprocessing (``source_cfg``, read from ``origin``)."""
    out = dict(cfg)
    values = check_preprocessing(source_cfg, origin)
    out.update(values)
    out["pool_size"] = pool_size(architecture, out["input_size"])
    sources = dict(out.get("cfg_sources") or {})
    sources.update({k: origin for k in values})
    out["cfg_sources"] = sources
    out.update({k: v for k, v in extra.items() if v})
    return out


def timm_view(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The fields timm's ``resolve_data_config`` reads, as timm spells them."""
    keys = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "num_classes", "pool_size",
            "first_conv", "classifier")
    return {k: cfg[k] for k in keys if k in cfg}
