"""Bounds on the sizes a user can type, so that a typo is a clear error and not a 72 TB allocation.

The upper bounds are far above every published configuration (the widest is AmoebaNet-A large,
F=448; the deepest DARTS' 20 cells; images up to 331 px) and still small enough that one image
or one network fits in the memory of an ordinary machine.
"""
from __future__ import annotations

from typing import Any, Mapping

from .errors import ConfigError

MAX_IMAGE_SIZE = 2048      # pixels per side
MAX_CLASSES = 100_000      # ImageNet-21k has 21,841
MAX_CHANNELS_IN = 1024     # hyperspectral images have a few hundred bands
MAX_WIDTH = 2048           # C / F / out_filters: channels of the first cells
MAX_DEPTH = 200            # layers / N / num_layers

# Builder options -> (low, high, how to fix a bad value).
MODEL_BOUNDS: dict[str, tuple[int, int, str]] = {
    "num_classes": (0, MAX_CLASSES, " num_classes=0 builds the network without a classifier "
                                    "(forward returns pooled features)."),
    "in_chans": (1, MAX_CHANNELS_IN, " Use in_chans=3 for RGB images, 1 for grey ones."),
    "C": (1, MAX_WIDTH, ""),
    "F": (1, MAX_WIDTH, ""),
    "out_filters": (1, MAX_WIDTH, ""),
    "layers": (1, MAX_DEPTH, ""),
    "N": (1, MAX_DEPTH, ""),
    "num_layers": (1, MAX_DEPTH, ""),
}


def check_int(name: str, value: Any, low: int, high: int, fix: str = "") -> int:
    """``value`` as an int within ``[low, high]``, else a ConfigError naming it and the bounds."""
    if isinstance(value, bool) or not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise ConfigError(f"{name}={value!r} is not a whole number; give one from {low} to {high}.{fix}")
        value = int(value)
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range: it must be from {low} to {high}.{fix}")
    return value


def check_model_config(config: Mapping[str, Any]) -> None:
    """Refuse out-of-range sizes in a builder config (user overrides or a weights file's metadata)."""
    for key, (low, high, fix) in MODEL_BOUNDS.items():
        if config.get(key) is not None:
            check_int(key, config[key], low, high, fix)


def check_image_size(size: Any, name: str = "input size") -> None:
    """Every side of an image size within ``[1, MAX_IMAGE_SIZE]``."""
    for side in (size if isinstance(size, (list, tuple)) else [size]):
        check_int(name, side, 1, MAX_IMAGE_SIZE)
