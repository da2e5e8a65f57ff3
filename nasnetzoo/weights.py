"""Reading weights into a zoo network: strict, with errors that say what does not fit."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from torch import nn

from .errors import NasNetZooError


class WeightsError(NasNetZooError):
    """A weights file that is missing, corrupt, or made for another architecture."""


def read_state_dict(path: Union[str, Path]) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path} is not a readable safetensors file ({err}); it may be truncated "
                           "or in another format: convert checkpoints with `nasnetzoo convert`.") from None


def load_weights(model: nn.Module, path: Union[str, Path]) -> nn.Module:
    """Load ``path`` into ``model`` strictly; a mismatch lists missing, unexpected and misshapen keys."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                       for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or misshapen:
        def show(keys):
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = [f"{label} ({len(keys)}): {show(keys)}" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", misshapen))
                 if keys]
        raise WeightsError(f"{path} does not fit this architecture; " + "; ".join(parts) +
                           ". Build the model the weights were trained with (same genotype, num_classes, "
                           "auxiliary, C/layers).")
    model.load_state_dict(state, strict=True)
    return model
