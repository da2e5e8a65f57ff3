"""Tiny versions of every registry entry (same stem, same reductions, a few narrow cells), shared by
the features / fx / timm tests, which run over the whole registry and so must stay cheap."""
from __future__ import annotations

import nasnetzoo

SMALL = {
    "darts_cifar": dict(C=8, layers=5),
    "darts_imagenet": dict(C=8, layers=5),
    "nasnet_cifar": dict(N=1, F=8),
    "nasnet_imagenet": dict(N=1, F=8),
    "enas_cifar": dict(num_layers=2, out_filters=4),
}
ENTRIES = nasnetzoo.list_models()
# One entry per builder family, for the checks that need not run on all of them.
REPRESENTATIVES = ["pcdarts_cifar", "pcdarts_imagenet", "nasnet_a_cifar",
                   "pnasnet5_mobile", "enas_cifar"]


def small_config(name: str) -> dict:
    entry = nasnetzoo.get_entry(name)
    config = dict(SMALL[entry.architecture.name])
    if entry.config.get("reduction") == "stride":
        config["N"] = 2  # PNASNet with N=1 has two strided cells in a row (refused, as in TF)
    return config


def input_size(name: str) -> int:
    """Small, and enough for every reduction (1/32 of 32 px is 1 pixel)."""
    return 16 if nasnetzoo.get_entry(name).architecture.data == "cifar" else 32


def every_entry() -> list:
    """Every entry as pytest params, the representatives in the default tier and the rest slow."""
    import pytest

    return [pytest.param(name, marks=() if name in REPRESENTATIVES else pytest.mark.slow) for name in ENTRIES]
