"""Checkpoints: written atomically, read back with every RNG state for an exact resume.

A checkpoint is a ``torch.save`` dict (model, optimizer, schedule, EMA, epoch, step, best metric,
RNG states of Python, NumPy, torch CPU and CUDA).  :func:`atomic_save` writes it to a temporary
file in the same folder, flushes and fsyncs it, then ``os.replace``-s it over the target: a crash
or kill at any moment leaves either the previous checkpoint or the new one, never a torn file.
"""
from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch

from ..errors import NasNetZooError
from ..fileio import atomic_write  # noqa: F401  (re-exported: its home is nasnetzoo.fileio)

PathLike = Union[str, Path]


class CheckpointError(NasNetZooError):
    """A checkpoint or run directory that is missing or unreadable."""


def _write_bytes(handle, payload: bytes) -> None:
    """The one place bytes hit the disk (tests replace it to simulate a crash mid-write)."""
    handle.write(payload)


def atomic_save(obj: Any, path: PathLike) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    return atomic_write(path, lambda handle: _write_bytes(handle, payload))


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    try:
        # weights_only=False: the file holds RNG states and numpy arrays; it is our own file.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torn or foreign file
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); it is "
                              "not a nasnetzoo training checkpoint or it is damaged.") from None
    if not isinstance(state, Mapping) or "model" not in state:
        raise CheckpointError(f"{path} is not a nasnetzoo training checkpoint (no 'model' entry).")
    return dict(state)


# ---------------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Optional[Mapping]) -> None:
    if not state:
        return
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
