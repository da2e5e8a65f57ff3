"""nasnetzoo's weights format: the one reader and the one writer.

A nasnetzoo weights file is a safetensors file whose metadata (string -> string) says which network
the tensors fit: registry name, genotype, builder config, dataset, metrics, provenance.  Training
runs, ``convert``, ``pretrained=True`` and ``push`` all write through :func:`write_weights` and read
through :func:`read_weights` / :func:`read_metadata`, so the schema and its checks live here only.

Reading refuses what would load silently wrong or exhaust memory: non-floating-point tensors where
the network has floats, NaN/Inf values, and a saved config whose sizes are absurd (checked by
:func:`check_config_bounds` before anything is allocated).
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from ..errors import ConfigError, NasNetZooError
from .._version import __version__
from ..fileio import atomic_write

PathLike = Union[str, Path]

FORMAT_VERSION = "1"

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
    "input": True,              # what the network is fed: image_size, in_chans, dataset, num_classes
    "pretrained_cfg": True,     # the preprocessing (weights/cfg.py), with where each value came from
}

class WeightsError(NasNetZooError):
    """A weights file that is missing, corrupt, or made for another architecture."""


class ChecksumError(WeightsError):
    """A downloaded file whose checksum is not the one its publisher recorded."""


class WeightsUnavailableError(WeightsError):
    """No published weights, or published weights that cannot be fetched (offline, no network)."""


# ---------------------------------------------------------------------------- reading
def _not_safetensors(path: Path, err: Exception) -> WeightsError:
    return WeightsError(f"{path} is not a readable safetensors file ({err}); it may be truncated "
                        "or in another format: convert checkpoints with `nasnetzoo convert`.")


def _existing(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        if path.exists():  # /dev/zero, a pipe, a folder: never read it as weights
            raise WeightsError(f"weights file {str(path)!r} is not a regular file (a device, pipe or folder); "
                               "give a .safetensors file.")
        raise WeightsError(f"weights file {str(path)!r} does not exist.")
    return path


def read_state_dict(path: PathLike) -> dict:
    """The tensors of a safetensors file (no checks beyond the file being readable)."""
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
            except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: absurdly deep nesting
                err = err if isinstance(err, json.JSONDecodeError) else "nested too deeply"
                raise WeightsError(f"{path}: metadata field {key!r} is not valid JSON ({err}); "
                                   "rewrite the file with nasnetzoo.save_pretrained.") from None
        else:
            meta[key] = value
    return meta


def check_config_bounds(config: Mapping[str, Any], source: Any) -> None:
    """Refuse a saved builder config whose sizes are not whole numbers or are absurd (C=100000
    would ask for about 120 GB), naming the file, before anything is built (``nasnetzoo.bounds``)."""
    from ..bounds import check_model_config

    try:
        check_model_config(config)
    except ConfigError as err:
        raise WeightsError(f"{source}: its metadata config is refused: {err} The file's metadata is damaged "
                           "or not from nasnetzoo; pass the right value to load() to override it.") from None


def check_tensors(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: Any) -> None:
    """Refuse tensors that would load silently wrong: a non-float where the network holds floats
    (an int64 weight would be cast without a word), and NaN or Inf values."""
    for key, tensor in state.items():
        want = expected.get(key)
        if want is None:
            continue
        if want.is_floating_point() and not tensor.is_floating_point():
            raise WeightsError(f"{source}: tensor {key!r} is {str(tensor.dtype).replace('torch.', '')} but "
                               f"the network holds {str(want.dtype).replace('torch.', '')}; the file is damaged "
                               "or was written by another tool: re-create it with `nasnetzoo convert`.")
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise WeightsError(f"{source}: tensor {key!r} holds {bad} NaN/Inf value(s); these weights "
                               "would produce NaN outputs (a diverged run or a damaged file).")


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
    """Raise WeightsError naming missing/unexpected keys, shape mismatches, wrong dtypes, NaN/Inf."""
    expected = model.state_dict()
    problems = state_dict_mismatch(expected, state)
    if problems:
        raise WeightsError(f"{source} does not fit this architecture; {problems}. Build the model the "
                           "weights were trained with (same genotype, num_classes, auxiliary, C/layers).")
    check_tensors(state, expected, source)


def load_weights(model: nn.Module, path: PathLike) -> nn.Module:
    """Load ``path`` into ``model`` strictly; a mismatch lists missing, unexpected and misshapen keys."""
    state = read_state_dict(path)
    check_fits(model, state, path)
    model.load_state_dict(state, strict=True)
    return model


# ---------------------------------------------------------------------------- writing
def model_metadata(model: nn.Module) -> dict[str, Any]:
    """What the model itself knows: registry name, architecture, dataset, config, genotype."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    meta: dict[str, Any] = {}
    for key, field in (("arch", "name"), ("architecture", "architecture"), ("dataset", "dataset")):
        if cfg.get(field):
            meta[key] = cfg[field]
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
    if cfg.get("input_size"):
        size = tuple(cfg["input_size"])
        meta["input"] = {"image_size": int(size[-1]), "in_chans": int(size[0]), "dataset": cfg.get("dataset"),
                         "num_classes": int(getattr(model, "num_classes", cfg.get("num_classes")) or 0)}
        meta["pretrained_cfg"] = {k: cfg[k] for k in ("input_size", "crop_pct", "crop_mode", "interpolation", "mean",
                                                     "std", "resize_rounding", "num_classes", "first_conv",
                                                     "classifier", "pool_size", "tag", "hf_hub_id", "cfg_sources")
                                  if cfg.get(k) is not None}
    genotype = getattr(model, "genotype", None)
    if genotype is not None and hasattr(genotype, "to_dict"):
        meta["genotype"] = genotype.to_dict()
    return meta


def input_record(spec, config: Mapping[str, Any], image_size: Optional[int] = None) -> dict[str, Any]:
    """The ``input`` metadata of a network built from ``spec``: fed ``image_size`` px images (default:
    its data preset's), with its channels, dataset and class count."""
    size = tuple(spec.data["input_size"])
    return {"image_size": int(image_size or size[-1]), "in_chans": int(size[0]), "dataset": spec.dataset,
            "num_classes": config.get("num_classes")}


def saved_image_size(meta: Mapping[str, Any], path: Any) -> Optional[int]:
    """The image size a weights file records (``input.image_size``), None when it records none."""
    record = meta.get("input")
    if record is None:
        return None
    size = record.get("image_size") if isinstance(record, Mapping) else None
    if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= 4096):
        raise WeightsError(f"{path}: metadata input.image_size is {size!r}, not a whole number of pixels (1..4096); "
                           "pass --input-size, or rewrite the file with nasnetzoo.save_pretrained.")
    return size


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


def _finite_or_raise(tensors: Mapping[str, torch.Tensor], path: PathLike) -> None:
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"refusing to write {path}: tensor {key!r} holds NaN/Inf values (the run "
                               "diverged); nothing was written.")


def write_weights(tensors: Mapping[str, torch.Tensor], path: PathLike, meta: Mapping[str, Any]) -> Path:
    """The one writer: ``tensors`` and ``meta`` (format fields added) as safetensors, atomically.

    NaN/Inf tensors are refused; the file gets the same mode as every other file nasnetzoo writes.
    """
    from safetensors.torch import save as to_bytes

    tensors = _tensors(tensors)
    _finite_or_raise(tensors, path)
    full = {"format": "pt", "nasnetzoo_format": FORMAT_VERSION, "nasnetzoo_version": __version__, **meta}
    payload = to_bytes(tensors, metadata=encode_metadata(full))
    return atomic_write(path, lambda handle: handle.write(payload))


def created_provenance(extra: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Creation date and torch version, plus ``extra``."""
    return {"created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "torch": torch.__version__, **dict(extra or {})}


def save_pretrained(model: Union[nn.Module, Mapping[str, torch.Tensor]], path: PathLike, *,
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
    meta: dict[str, Any] = model_metadata(model) if isinstance(model, nn.Module) else {}
    extra = dict(metadata or {})
    meta["provenance"] = created_provenance(extra.pop("provenance", None))
    meta.update(extra)
    folder = Path(path)
    if folder.is_dir() or not folder.suffix:   # a folder: the hub's layout (model.safetensors + config.json + card)
        return save_folder(model, folder, meta)
    return write_weights(model.state_dict() if isinstance(model, nn.Module) else model, path, meta)


FOLDER_FILES = ("model.safetensors", "config.json", "README.md")


def folder_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json`` of a weights folder: what load() needs, readable without safetensors."""
    keys = ("arch", "architecture", "dataset", "genotype", "config", "input", "pretrained_cfg", "metrics",
            "reported", "license")
    return {"library_name": "nasnetzoo", "nasnetzoo_format": FORMAT_VERSION, "nasnetzoo_version": __version__,
            **{k: meta[k] for k in keys if meta.get(k) is not None}}


def save_folder(model: Union[nn.Module, Mapping[str, torch.Tensor]], folder: Path, meta: Mapping[str, Any]) -> Path:
    """``folder/model.safetensors``, ``folder/config.json`` and ``folder/README.md``; returns the weights path."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} exists and is not a folder; give a new folder or a .safetensors path.")
    folder.mkdir(parents=True, exist_ok=True)
    weights = write_weights(model.state_dict() if isinstance(model, nn.Module) else model,
                            folder / FOLDER_FILES[0], meta)
    config = folder_config(meta)
    atomic_write(folder / FOLDER_FILES[1],
                 lambda h: h.write((json.dumps(config, indent=2, sort_keys=True, default=_jsonable) + "\n").encode()))
    arch = meta.get("arch") or "custom"
    lines = ["---", "library_name: nasnetzoo", "tags: [image-classification, nasnetzoo]", "---", "",
             f"# {arch}", "", "```python", "import nasnetzoo", f"model = nasnetzoo.load({str(folder)!r})", "```", "",
             "`config.json` records the network (arch, genotype, builder config) and its preprocessing "
             "(pretrained_cfg); `model.safetensors` carries the same in its metadata.", ""]
    atomic_write(folder / FOLDER_FILES[2], lambda h: h.write("\n".join(lines).encode()))
    return weights

