"""Checkpoints: written atomically, read back with every RNG state for an exact resume.

A checkpoint is a ``torch.save`` dict (model, optimizer, schedule, EMA, epoch, step, best metric,
RNG states of Python, NumPy, torch CPU and CUDA) of tensors and plain values only, so it is read
with ``torch.load(weights_only=True)``: a file planted in a run directory cannot run code.  :func:`atomic_save` writes it to a temporary
file in the same folder, flushes and fsyncs it, then ``os.replace``-s it over the target: a crash
or kill at any moment leaves either the previous checkpoint or the new one, never a torn file.
"""
from __future__ import annotations

import io
import pickle
import random
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from ..errors import CheckpointError, first_line, unpickler_refusal
from ..fileio import WriteError, atomic_write  # noqa: F401  (re-exported: their home is nasnetzoo.fileio)

PathLike = Union[str, Path]


def atomic_save(obj: Any, path: PathLike) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    return atomic_write(path, lambda handle: handle.write(payload))


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict:
    """A run-directory checkpoint, read with the weights-only unpickler (tensors and plain values)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:   # it names a Python object to build: never run it
        raise CheckpointError(f"checkpoint {path} was refused: it would build Python objects beyond tensors and "
                              f"plain values ({unpickler_refusal(err)}), and nasnetzoo never runs code from a "
                              "checkpoint; it is not a checkpoint nasnetzoo wrote.") from None
    except Exception as err:  # torn or foreign file
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {first_line(err)}); it is "
                              "not a nasnetzoo training checkpoint or it is damaged.") from None
    if not isinstance(state, Mapping) or "model" not in state:
        raise CheckpointError(f"{path} is not a nasnetzoo training checkpoint (no 'model' entry).")
    return dict(state)


# ---------------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """Every RNG state as tensors and plain values (what the weights-only reader accepts)."""
    import numpy as np

    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Optional[Mapping]) -> None:
    if not state:
        return
    import numpy as np

    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
