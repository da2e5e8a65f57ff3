"""What a run leaves for users: inference weights (safetensors), the model config, the load call.

``save_weights`` writes ``model.state_dict()`` without the auxiliary head (a training-only device
that eval mode never runs), with metadata in nasnetzoo's weights schema (``arch``,
``architecture``, ``dataset``, ``genotype``, ``config``, ``metrics``, ``provenance``; JSON strings)
so that a metadata-aware ``nasnetzoo.load`` rebuilds the trained size without being told.  The
lead can swap the body for ``nasnetzoo.hub.pretrained.save_pretrained`` without changing callers.

``model.json`` in the run directory holds the same config and the exact ``nasnetzoo.load`` call.
"""
from __future__ import annotations

import datetime as _dt
import inspect
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from .checkpoint import atomic_write

PathLike = Union[str, Path]
AUX_PREFIX = "auxiliary_head."
TRAINING_ONLY = {"auxiliary": False, "drop_path_rate": 0.0}


def inference_config(spec) -> dict:
    """The builder config of the saved weights: the trained one, minus training-only parts."""
    config = dict(spec.config)
    params = inspect.signature(spec.arch.builder_fn()).parameters
    for key, value in TRAINING_ONLY.items():
        if key in config or key in params:
            config[key] = value
    return config


def inference_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if not k.startswith(AUX_PREFIX)}


def weights_metadata(spec, config: Mapping[str, Any], metrics: Optional[Mapping] = None,
                     provenance: Optional[Mapping] = None) -> dict[str, str]:
    from .. import __version__

    meta: dict[str, Any] = {
        "format": "pt", "nasnetzoo_format": "1", "nasnetzoo_version": __version__,
        "arch": spec.name, "architecture": spec.arch.name, "dataset": spec.dataset,
        "genotype": spec.genotype.to_dict(), "config": dict(config),
        "provenance": {"created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                       "torch": torch.__version__, **dict(provenance or {})},
    }
    if metrics:
        meta["metrics"] = dict(metrics)
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in meta.items()}


def save_weights(model: nn.Module, path: PathLike, spec, *, metrics: Optional[Mapping] = None,
                 provenance: Optional[Mapping] = None) -> Path:
    """Atomically write ``model``'s inference weights to ``path`` (safetensors + metadata)."""
    from safetensors.torch import save as save_bytes

    payload = save_bytes(inference_state(model),
                         metadata=weights_metadata(spec, inference_config(spec), metrics, provenance))
    return atomic_write(path, lambda handle: handle.write(payload))


def read_config(weights: PathLike) -> dict:
    """The builder config stored in a weights file's metadata ({} when there is none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception:
        return {}
    try:
        config = json.loads(meta.get("config", "{}"))
    except json.JSONDecodeError:
        return {}
    return config if isinstance(config, dict) else {}


def load_call(arch: str, weights: str, config: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """The ``nasnetzoo.load`` call for these weights: num_classes plus what differs from the defaults."""
    args = [repr(arch), f"weights={weights!r}"]
    for key, value in config.items():
        if key == "num_classes" or defaults.get(key, object()) != value:
            if key in TRAINING_ONLY and value == TRAINING_ONLY[key] and key not in defaults:
                continue
            args.append(f"{key}={value!r}")
    return f"nasnetzoo.load({', '.join(args)})"


def builder_defaults(spec) -> dict:
    params = inspect.signature(spec.arch.builder_fn()).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    from ..factory import resolve

    base = resolve(spec.entry.name if spec.entry is not None else spec.genotype, dataset=spec.dataset).config
    defaults.update(base)
    return defaults


def load_trained(arch: str, weights: PathLike, **overrides: Any) -> nn.Module:
    """``nasnetzoo.load(arch, weights=...)`` with the builder config saved in the weights file."""
    from ..factory import load

    return load(arch, weights=str(weights), **{**read_config(weights), **overrides})


def write_json(path: PathLike, data: Mapping[str, Any]) -> Path:
    text = json.dumps(dict(data), indent=2, default=str) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))
