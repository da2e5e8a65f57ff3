"""What a run leaves for users: inference weights (safetensors), the model config, the load call.

``save_weights`` writes ``model.state_dict()`` without the auxiliary head (a training-only device
that eval mode never runs) through nasnetzoo's one weights writer
(:func:`nasnetzoo.weights.write_weights`), with the metadata ``nasnetzoo.load`` reads to rebuild the
trained size without being told (``arch``, ``architecture``, ``dataset``, ``genotype``, ``config``,
``metrics``, ``provenance``).

``model.json`` in the run directory holds the same config and the exact ``nasnetzoo.load`` call.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from ..weights.format import created_provenance, input_record, write_weights
from ..fileio import atomic_write

PathLike = Union[str, Path]
AUX_PREFIX = "auxiliary_head."
TRAINING_ONLY = {"auxiliary": False, "drop_path_rate": 0.0}


def inference_config(spec) -> dict:
    """The builder config of the saved weights: the trained one, minus training-only parts."""
    config = dict(spec.config)
    params = inspect.signature(spec.architecture.builder_fn()).parameters
    for key, value in TRAINING_ONLY.items():
        if key in config or key in params:
            config[key] = value
    return config


def inference_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if not k.startswith(AUX_PREFIX)}


def weights_metadata(spec, config: Mapping[str, Any], metrics: Optional[Mapping] = None,
                     provenance: Optional[Mapping] = None) -> dict[str, Any]:
    """The weights-format metadata of a trained ``spec`` (the writer adds the format fields)."""
    provenance = dict(provenance or {})
    meta: dict[str, Any] = {
        "arch": spec.name, "architecture": spec.architecture.name, "dataset": spec.dataset,
        "genotype": spec.genotype.to_dict(), "config": dict(config),
        "input": input_record(spec, config, provenance.pop("image_size", None)),
        "provenance": created_provenance(provenance),
    }
    if metrics:
        meta["metrics"] = dict(metrics)
    return meta


def save_weights(model: nn.Module, path: PathLike, spec, *, metrics: Optional[Mapping] = None,
                 provenance: Optional[Mapping] = None) -> Path:
    """Atomically write ``model``'s inference weights to ``path`` (safetensors + metadata)."""
    return write_weights(inference_state(model), path,
                         weights_metadata(spec, inference_config(spec), metrics, provenance))


def read_config(weights: PathLike) -> dict:
    """The builder config stored in a weights file's metadata ({} when it has none); an
    unreadable file raises WeightsError instead of passing as config-less."""
    from ..weights.format import read_metadata

    config = read_metadata(weights).get("config")
    return dict(config) if isinstance(config, Mapping) else {}


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
    params = inspect.signature(spec.architecture.builder_fn()).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    from ..factory import resolve

    base = resolve(spec.entry.name if spec.entry is not None else spec.genotype, dataset=spec.dataset).config
    defaults.update(base)
    return defaults


def load_trained(arch: str, weights: PathLike, **overrides: Any) -> nn.Module:
    """``nasnetzoo.load(arch, weights=...)``: load reads the builder config saved in the file."""
    from ..factory import load

    return load(arch, weights=str(weights), **overrides)


def write_json(path: PathLike, data: Mapping[str, Any]) -> Path:
    text = json.dumps(dict(data), indent=2, default=str) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))
