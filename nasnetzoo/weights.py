"""Reading weights into a zoo network: strict, with errors that say what does not fit.

A nasnetzoo weights file is a safetensors file whose metadata (string -> string) describes the
network the tensors belong to; ``nasnetzoo.hub.pretrained`` writes it.  The keys this module
reads are listed in ``METADATA_KEYS``; JSON-encoded values are decoded by :func:`read_metadata`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from .errors import NasNetZooError

PathLike = Union[str, Path]

# metadata key -> whether its value is JSON (else a plain string)
METADATA_KEYS = {
    "format": False,            # "pt", as the Hugging Face tools expect
    "nasnetzoo_format": False,  # version of this layout
    "nasnetzoo_version": False,
    "arch": False,              # registry name (or the genotype's name / "custom")
    "architecture": False,      # the macro-architecture (zoo.yaml `architectures`)
    "dataset": False,
    "genotype": True,           # Genotype.to_dict()
    "config": True,             # the builder's keyword arguments (num_classes, auxiliary, C, ...)
    "metrics": True,            # measured metrics of these weights
    "reported": True,           # the papers' figures for the architecture
    "provenance": True,         # who made the weights and how (recipe, source checkpoint, converter)
    "license": False,
}


class WeightsError(NasNetZooError):
    """A weights file that is missing, corrupt, or made for another architecture."""


class ChecksumError(WeightsError):
    """A downloaded file whose sha256 is not the one the registry publishes."""


class WeightsUnavailableError(WeightsError):
    """No published weights, or published weights that cannot be fetched (offline, no network)."""


class CheckpointError(WeightsError):
    """A foreign checkpoint that cannot be read or converted (including unsafe pickles)."""


def _not_safetensors(path: Path, err: Exception) -> WeightsError:
    return WeightsError(f"{path} is not a readable safetensors file ({err}); it may be truncated "
                        "or in another format: convert checkpoints with `nasnetzoo convert`.")


def _existing(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist.")
    return path


def read_state_dict(path: PathLike) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _existing(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise _not_safetensors(path, err) from None


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The metadata of a safetensors file ({} when it has none), JSON values decoded.

    Reads only the header, so it is cheap; a file whose header cannot be parsed (truncated, not
    safetensors) raises :class:`WeightsError`.
    """
    from safetensors import SafetensorError, safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise _not_safetensors(path, err) from None
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        if METADATA_KEYS.get(key, False):
            try:
                meta[key] = json.loads(value)
            except json.JSONDecodeError as err:
                raise WeightsError(f"{path}: metadata field {key!r} is not valid JSON ({err}); "
                                   "rewrite the file with nasnetzoo.save_pretrained.") from None
        else:
            meta[key] = value
    return meta


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
                        ) -> Optional[str]:
    """None if ``given`` has exactly the keys and shapes of ``expected``, else what differs."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    misshapen = sorted(f"{k}: file {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
                       for k in set(expected) & set(given) if expected[k].shape != given[k].shape)
    if not (missing or unexpected or misshapen):
        return None

    def show(keys):
        return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

    return "; ".join(f"{label} ({len(keys)}): {show(keys)}" for label, keys in
                     (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", misshapen))
                     if keys)


def check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], source: Any) -> None:
    """Raise WeightsError naming missing/unexpected keys and shape mismatches of ``state``."""
    problems = state_dict_mismatch(model.state_dict(), state)
    if problems:
        raise WeightsError(f"{source} does not fit this architecture; {problems}. Build the model the "
                           "weights were trained with (same genotype, num_classes, auxiliary, C/layers).")


def load_weights(model: nn.Module, path: PathLike) -> nn.Module:
    """Load ``path`` into ``model`` strictly; a mismatch lists missing, unexpected and misshapen keys."""
    state = read_state_dict(path)
    check_fits(model, state, path)
    model.load_state_dict(state, strict=True)
    return model
