"""``nasnetzoo convert``: a foreign checkpoint -> a nasnetzoo weights file, checked by outputs.

The layout table and the one :func:`~nasnetzoo.weights.convert.convert` (rename, check, load), which
``pretrained=True`` uses too, are in :mod:`nasnetzoo.weights.convert`; this module infers the
builder options from the tensors, builds the network, converts through that one path, compares the logits
of the source library's own model (timm, Cadene's ``pretrainedmodels``, pytorchcv) with the
converted network's when that library is importable, and writes through the one weights writer.

Padding: timm's stride-2 "same" average pools count the padded zeros (``AvgPool2dSame``), so a
timm conversion records ``pool_padding="timm"``; Cadene and pytorchcv emulate TF's SAME padding
(equal to TF's at the designed input sizes), so they record ``pool_padding="tf"``.  The option is
saved in the file's config and ``load`` rebuilds it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..safe_paths import refuse_overwriting_inputs
from ..weights.format import WeightsError, check_config_bounds
from ..weights.convert import LAYOUTS, Reference as _Reference, convert, reference_model  # noqa: F401 (old name)
from ..weights.layouts import (BACKGROUND_CLASSES, DARTS_FORMATS, as_base_layout, map_state_dict,  # noqa: F401
                               read_checkpoint, source_key_map)

PathLike = Union[str, Path]

# The layout table lives in nasnetzoo.weights.convert (one record per layout); these names stay for imports.
FORMATS = {name: layout.description for name, layout in LAYOUTS.items() if name != "nasnetzoo"}
REFERENCES = {name: layout.reference for name, layout in LAYOUTS.items() if layout.reference is not None}
TIMM_MODELS, CADENE_MODELS, PYTORCHCV_MODELS, NNI_MODELS = (
    dict(REFERENCES[name].models) for name in ("timm", "cadene", "pytorchcv", "nni"))


@dataclass
class ConversionResult:
    """What ``convert_checkpoint`` did: where it wrote, for which network, and how it checked."""

    path: Path
    arch: str
    config: dict
    num_tensors: int
    filled: int = 0                                     # num_batches_tracked buffers added
    notes: list = field(default_factory=list)           # e.g. the background row dropped
    max_abs_diff: Optional[float] = None                # source vs converted logits
    verify_note: str = ""

    def summary(self) -> str:
        lines = [f"wrote {self.path} ({self.arch}, {self.num_tensors} tensors; config: "
                 + ", ".join(f"{k}={v}" for k, v in self.config.items()) + ")"]
        if self.filled:
            lines.append(f"filled {self.filled} num_batches_tracked buffers the source lacked")
        lines.extend(self.notes)
        if self.max_abs_diff is not None:
            lines.append(f"verified: logits of the source and converted models differ by at most "
                         f"{self.max_abs_diff:.3g} ({self.verify_note})")
        elif self.verify_note:
            lines.append(f"not verified by outputs: {self.verify_note}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- config inference
def _cell_count(source: Mapping[str, torch.Tensor]) -> Optional[int]:
    indices = [int(m.group(1)) for k in source if (m := re.match(r"^cells\.(\d+)\.", k))]
    return max(indices) + 1 if indices else None


def _pytorchcv_darts_config(source: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    stem = source.get("features.stem1_unit.conv2.conv.weight")
    units = {m.group(0) for k in source if (m := re.match(r"^features\.stage\d+\.unit\d+\.", k))}
    config: dict[str, Any] = {"auxiliary": False}
    if stem is not None and stem.dim() == 4:
        config["C"] = int(stem.shape[0])
    if units:
        config["layers"] = len(units)
    return config


def infer_config(source: Mapping[str, torch.Tensor], spec, fmt: str) -> dict[str, Any]:
    """Builder options read off the tensors, for ``spec``'s network and format ``fmt``."""
    builder = spec.architecture.builder
    config: dict[str, Any] = {}
    if fmt == "pytorchcv" and spec.genotype.family == "darts":
        if not builder.endswith("DartsImageNetNetwork"):
            raise ConfigError(f"--from pytorchcv converts pytorchcv's ImageNet DARTS (darts_v2_imagenet); "
                              f"{spec.name!r} is built by {builder}.")
        config = _pytorchcv_darts_config(source)
        head = source.get("output.weight")
    elif fmt in DARTS_FORMATS:
        if spec.genotype.family != "darts" or not builder.startswith("nasnetzoo.models.darts:"):
            raise ConfigError(f"--from {fmt} converts DARTS-family networks; {spec.name!r} is a "
                              f"{spec.genotype.family}-family network ({spec.architecture.name}). Pick a DARTS-family "
                              "--arch (e.g. darts_v2_cifar, pcdarts_imagenet) or its genotype file.")
        imagenet = builder.endswith("DartsImageNetNetwork")
        stem = source.get("stem0.3.weight" if imagenet else "stem.0.weight")
        if stem is not None and stem.dim() == 4:
            config["C"] = int(stem.shape[0]) if imagenet else int(stem.shape[0]) // 3
        layers = _cell_count(source)
        if layers:
            config["layers"] = layers
        config["auxiliary"] = any(k.startswith("auxiliary_head.") for k in source)
        if imagenet and config["auxiliary"]:
            config["aux_bn"] = "auxiliary_head.features.6.running_mean" in source
        head = source.get("classifier.weight")
    else:
        if spec.genotype.family != "nasnet" or not builder.endswith(":NASNet"):
            raise ConfigError(f"--from {fmt} converts NASNet-A and PNASNet-5 networks (nasnet_a_mobile, "
                              f"nasnet_a_large, pnasnet5_large); {spec.name!r} is built by {builder}.")
        config["auxiliary"] = False
        config["pool_padding"] = "timm" if fmt == "timm" else "tf"
        head = source.get("output.fc.weight" if fmt == "pytorchcv" else "last_linear.weight")
        if head is not None and head.dim() == 2 and head.shape[0] == BACKGROUND_CLASSES:
            head = head[1:]
    if head is not None and head.dim() == 2:
        config["num_classes"] = int(head.shape[0])
    return config


def _dataset_for(spec, num_classes: Optional[int]) -> Optional[str]:
    """CIFAR-100 weights given for a CIFAR-10 entry: build (and record) the cifar100 network."""
    from ..registry import DATASETS

    preset = DATASETS[spec.dataset][0]
    if num_classes is None or DATASETS[spec.dataset][1] == num_classes:
        return None
    hits = [d for d, (p, n) in DATASETS.items() if p == preset and n == num_classes]
    return hits[0] if hits else None


# ---------------------------------------------------------------------------- output check
_reference_model = reference_model   # looked up at call time (tests replace it)


def compare_outputs(reference: nn.Module, source_state: Mapping[str, torch.Tensor], converted: nn.Module,
                    input_size: tuple[int, int, int], *, drop_background: bool, seed: int = 0
                    ) -> tuple[float, float]:
    """(max abs difference, max abs logit) of the eval-mode logits of ``reference`` (loaded with
    ``source_state``) and ``converted`` on one random image."""
    incompatible = reference.load_state_dict(dict(source_state), strict=False)
    missing = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or incompatible.unexpected_keys:
        raise CheckpointError(f"the source checkpoint does not fit its own model class: missing "
                              f"{missing[:5]}, unexpected {incompatible.unexpected_keys[:5]}.")
    reference.eval()
    converted.eval()
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = reference(x)
        got = converted(x)
    if drop_background and expected.shape[1] == got.shape[1] + 1:
        expected = expected[:, 1:]
    return (expected - got).abs().max().item(), expected.abs().max().item()


# ---------------------------------------------------------------------------- conversion
def convert_checkpoint(src: PathLike, dst: PathLike, *, fmt: str, arch: Any, dataset: Optional[str] = None,
                       verify: Optional[bool] = None, verify_size: Optional[int] = None,
                       tolerance: float = 1e-4, metadata: Optional[Mapping[str, Any]] = None
                       ) -> ConversionResult:
    """Convert the ``fmt`` checkpoint ``src`` for network ``arch`` (registry name or genotype file)
    into the nasnetzoo weights file ``dst`` (safetensors with metadata).

    ``verify``: compare the logits of the source model (its own code: timm, Cadene's
    ``pretrainedmodels`` or pytorchcv) and the converted one on a random ``verify_size`` image (default: the
    entry's input size); ``None`` verifies when that code is importable, ``True`` requires it.  A
    difference above ``tolerance`` (relative to the largest logit, at least 1) writes nothing.
    """
    from ..factory import resolve
    from ..weights.format import save_pretrained

    if fmt not in FORMATS:
        raise ConfigError(f"unknown checkpoint format {fmt!r}; use one of {', '.join(FORMATS)}.")
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise ConfigError(f"output {str(dst)!r} must end in .safetensors (nasnetzoo writes safetensors).")
    refuse_overwriting_inputs(dst, src)   # `convert SRC -o SRC` would replace the source with its conversion
    raw = read_checkpoint(src)
    source, layout = as_base_layout(raw, fmt)   # e.g. NNI's file: the official DARTS names, read as `darts`
    base = resolve(arch, dataset=dataset)
    config = infer_config(source, base, layout)
    check_config_bounds(config, src)
    if dataset is None:
        dataset = _dataset_for(base, config.get("num_classes"))
    spec = resolve(arch, dataset=dataset, **config)
    model = spec.build()
    done = convert(source, model, layout, source=f"{src} (--from {fmt})", target=spec.name,
                   fix="Check --arch (the genotype the checkpoint was trained with) and --from.")
    result = ConversionResult(dst, spec.name, dict(spec.config), len(done.state), done.filled, done.notes)

    if verify is not False:
        reference, why = _reference_model(fmt, spec.name, int(source_rows(source, layout) or 0))
        if reference is None:
            if verify:
                raise ConfigError(f"cannot verify the conversion by outputs: {why}.")
            result.verify_note = why
        else:
            size = spec.data["input_size"]
            if verify_size:
                size = (size[0], int(verify_size), int(verify_size))
            diff, scale = compare_outputs(reference, raw, model, tuple(size), drop_background=True)
            del reference
            result.max_abs_diff = diff
            result.verify_note = f"{why}, eval mode, one random {size[1]}x{size[2]} image"
            if not diff <= tolerance * max(1.0, scale):
                raise WeightsError(f"{src}: the converted network's logits differ from the source model's "
                                   f"by {diff:.3g} (tolerance {tolerance:g}); nothing was written. The "
                                   f"checkpoint may be for another configuration than {spec.name}.")
    provenance: dict[str, object] = {"converted_from": fmt, "source_file": src.name, "converter": "nasnetzoo.hub.convert"}
    if result.max_abs_diff is not None:
        provenance["verified_max_abs_diff"] = result.max_abs_diff
    meta = dict(metadata or {})
    provenance.update(meta.pop("provenance", None) or {})
    save_pretrained(model, dst, metadata={"provenance": provenance, **meta})
    return result


def source_rows(source: Mapping[str, torch.Tensor], fmt: str) -> Optional[int]:
    key = {"pytorchcv": "output.weight" if "output.weight" in source else "output.fc.weight"}.get(
        fmt, "classifier.weight" if fmt in DARTS_FORMATS else "last_linear.weight")
    head = source.get(key)
    return int(head.shape[0]) if head is not None and head.dim() == 2 else None
