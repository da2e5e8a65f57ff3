"""nasnetzoo's weights format: safetensors whose metadata says which network the tensors fit.

``save_pretrained(model, path)`` writes the state dict with the network's registry name, genotype,
builder config (num_classes, auxiliary, C/layers, pool padding, ...), dataset, metrics and
provenance; ``nasnetzoo.load(name_or_genotype, weights=path)`` reads that config back so weights
trained with another head or depth load without the user repeating the options.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..weights import METADATA_KEYS, WeightsError, read_metadata

FORMAT_VERSION = "1"


def _version() -> str:
    from .. import __version__

    return __version__


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """What the model itself knows: registry name, architecture, dataset, config, genotype."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    meta: dict[str, Any] = {}
    if cfg.get("name"):
        meta["arch"] = cfg["name"]
    if cfg.get("architecture"):
        meta["architecture"] = cfg["architecture"]
    if cfg.get("dataset"):
        meta["dataset"] = cfg["dataset"]
    config = dict(cfg.get("config") or {})
    if config:
        # What the module is now, not what it was built as: reset_classifier changes the head.
        if "num_classes" in config and hasattr(model, "num_classes"):
            config["num_classes"] = int(model.num_classes)
        if "auxiliary" in config or getattr(model, "auxiliary_head", None) is not None:
            config["auxiliary"] = getattr(model, "auxiliary_head", None) is not None
        meta["config"] = config
    if cfg.get("reported"):
        meta["reported"] = dict(cfg["reported"])
    genotype = getattr(model, "genotype", None)
    if genotype is not None and hasattr(genotype, "to_dict"):
        meta["genotype"] = genotype.to_dict()
    return meta


def encode_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    """safetensors metadata is str -> str: JSON-encode the structured fields."""
    out: dict[str, str] = {}
    for key, value in meta.items():
        if value is None:
            continue
        if not isinstance(key, str):
            raise ConfigError(f"metadata keys must be strings, got {key!r}.")
        if METADATA_KEYS.get(key, False) or not isinstance(value, str):
            try:
                out[key] = json.dumps(value, sort_keys=True, default=_jsonable)
            except TypeError as err:
                raise ConfigError(f"metadata field {key!r} cannot be written as JSON ({err}).") from None
        else:
            out[key] = value
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _tensors(model_or_state: Union[nn.Module, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ConfigError(f"state dict entry {key!r} is a {type(tensor).__name__}, not a tensor.")
        tensor = tensor.detach().cpu().contiguous()
        # safetensors refuses tensors that share memory (tied weights): give each its own copy.
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if tensor.numel() and ident in seen:
            tensor = tensor.clone()
        seen.add(ident)
        out[key] = tensor
    return out


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: Union[str, Path],
                      metadata: Mapping[str, str]) -> Path:
    """Write atomically: a temporary file beside ``path``, then ``os.replace``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_pretrained(model: Union[nn.Module, Mapping[str, torch.Tensor]], path: Union[str, Path], *,
                    metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``model``'s weights to ``path`` (safetensors) with the metadata ``load`` needs.

    The metadata records the registry name (``arch``), the genotype, the builder config
    (``num_classes``, ``auxiliary``, ``C``/``layers``, ...), the dataset, the papers' figures, the
    nasnetzoo version and a creation date; ``metadata`` adds or overrides fields, typically
    ``metrics`` (``{"top1": 97.4}``), ``provenance`` (recipe, run, source checkpoint) and
    ``license``.  A model not built by ``nasnetzoo.load`` (or a bare state dict) has no config of
    its own: pass ``metadata={"config": {...}, "arch": ...}`` so the file can be loaded by name.

    The file is written atomically: an interrupted save never leaves a half-written ``path``.
    """
    meta: dict[str, Any] = {"format": "pt", "nasnetzoo_format": FORMAT_VERSION,
                            "nasnetzoo_version": _version()}
    if isinstance(model, nn.Module):
        meta.update(model_metadata(model))
    provenance = {"created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                  "torch": torch.__version__}
    extra = dict(metadata or {})
    provenance.update(extra.pop("provenance", None) or {})
    meta["provenance"] = provenance
    meta.update(extra)
    return write_safetensors(_tensors(model), path, encode_metadata(meta))


# ---------------------------------------------------------------------------- loading side
def spec_for_weights(name_or_genotype: Any, path: Union[str, Path], *, dataset: Optional[str],
                     overrides: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None):
    """The ModelSpec to build for weights file ``path``.

    The file's saved config is the base and the user's keyword arguments override it (so
    ``load("pcdarts_cifar", weights=w)`` rebuilds a 100-class, auxiliary-head network when ``w``
    was saved from one).  A file saved for another genotype or network raises WeightsError naming
    both and the call that would load it.
    """
    from ..factory import resolve
    from ..registry import DATASETS

    meta = read_metadata(path) if meta is None else meta
    saved_config = meta.get("config")
    if saved_config is not None and not isinstance(saved_config, Mapping):
        raise WeightsError(f"{path}: metadata 'config' is not a mapping; rewrite it with save_pretrained.")
    saved_dataset = meta.get("dataset")
    if dataset is None and saved_dataset in DATASETS:
        dataset = saved_dataset
    config = {**(saved_config or {}), **overrides}
    spec = resolve(name_or_genotype, dataset=dataset, **config)
    _check_same_network(spec, meta, path)
    return spec


def _check_same_network(spec, meta: Mapping[str, Any], path) -> None:
    from ..genotype import Genotype
    from ..registry import is_model_name

    saved = meta.get("genotype")
    arch = meta.get("arch")
    if isinstance(arch, str) and is_model_name(arch):
        fix = f"Load it with nasnetzoo.load({arch!r}, weights={str(path)!r})"
    else:
        fix = "Load it with the genotype file it was trained from"
    if isinstance(saved, Mapping):
        try:
            saved_genotype = Genotype.parse(dict(saved))
        except Exception as err:  # a damaged field should not hide the weights
            raise WeightsError(f"{path}: metadata 'genotype' cannot be parsed ({err}).") from None
        if saved_genotype != spec.genotype:
            raise WeightsError(
                f"{path} holds weights for genotype {saved_genotype.name or '(custom)'!r}, but "
                f"{spec.name!r} uses genotype {spec.genotype.name or '(custom)'!r}, a different cell. "
                f"{fix}.")
    saved_arch = meta.get("architecture")
    if saved_arch and saved_arch != spec.arch.name:
        raise WeightsError(
            f"{path} holds weights for the {saved_arch!r} network, but {spec.name!r} builds "
            f"{spec.arch.name!r}. {fix}, or pass the dataset it was trained on "
            f"({meta.get('dataset') or 'see its metadata'}).")
