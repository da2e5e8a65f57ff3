"""Converters from the official checkpoints to nasnetzoo weights files.

Formats (``--from``):

* ``darts``, ``pcdarts``, ``pdarts``: the official ``cnn/model.py`` networks.  CIFAR files are a raw
  state dict saved by PyTorch 0.3 (no ``num_batches_tracked``: filled with 0, the value a freshly
  built BatchNorm holds and one that eval mode never reads); ImageNet files are
  ``{'state_dict': ..., 'epoch': ..., ...}`` with DataParallel's ``module.`` prefix.  nasnetzoo's
  DARTS-family module names are the official ones, so keys map one to one; ``C``, ``layers``,
  ``num_classes``, ``auxiliary`` and the P-DARTS aux-head BatchNorm are read off the tensors.
* ``timm``: ``nasnetalarge`` and ``pnasnet5large`` state dicts (``.pth`` or ``.safetensors``).
* ``cadene``: Cadene's ``pretrainedmodels`` ``nasnetamobile``, ``nasnetalarge`` and
  ``pnasnet5large``; their 1001-class heads (row 0 = TF's background class) lose row 0.

Name differences (``reference_facts.md`` section 4.4): the classifier is ``last_linear``; NASNet
cells keep the factorized reduction of their previous input (``path_1``/``path_2``/
``final_path_bn``) on the cell itself where nasnetzoo has it under ``conv_prev_1x1``; PNASNet's stem
conv is ``conv_0``; Cadene's NASNet-A Mobile numbers its cells as if every stage had six
(``cell_0..3, reduction_cell_0, cell_6..9, reduction_cell_1, cell_12..15``).

Padding: timm's stride-2 "same" average pools count the padded zeros (``AvgPool2dSame``), so a
timm conversion records ``pool_padding="timm"``.  Cadene emulates TF's asymmetric SAME padding
with ``ZeroPad2d((1, 0, 1, 0))`` + crop and ``count_include_pad=False`` pools, which equals TF's
padding at the designed input sizes (224 mobile, 331 large), so a Cadene conversion records
``pool_padding="tf"``.  Either way the option is saved in the file's config and ``load`` rebuilds it.

Every foreign file is read with ``torch.load(..., weights_only=True)``: a pickle that would run
code (or build any object beyond tensors and plain containers) is refused, never executed.
Conversions are checked by outputs: when the source model's code is importable (timm, or Cadene's
``pretrainedmodels``) the source and converted networks are run on the same random input.
"""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..weights import CheckpointError, WeightsError, state_dict_mismatch

PathLike = Union[str, Path]

FORMATS = {
    "darts": "official DARTS (quark0/darts cnn/model.py NetworkCIFAR / NetworkImageNet)",
    "pcdarts": "official PC-DARTS (yuhuixu1993/PC-DARTS model.py, the DARTS network)",
    "pdarts": "official P-DARTS (chenxin061/pdarts model.py, aux head with BatchNorm2d(768))",
    "timm": "timm nasnetalarge / pnasnet5large",
    "cadene": "Cadene pretrainedmodels nasnetamobile / nasnetalarge / pnasnet5large",
}
DARTS_FORMATS = ("darts", "pcdarts", "pdarts")

# nasnetzoo registry name -> the source library's model name (for the output check)
TIMM_MODELS = {"nasnet_a_large": "nasnetalarge", "pnasnet5_large": "pnasnet5large"}
CADENE_MODELS = {"nasnet_a_mobile": "nasnetamobile", "nasnet_a_large": "nasnetalarge",
                 "pnasnet5_large": "pnasnet5large"}
CADENE_CELLS_PER_STAGE = 6  # Cadene numbers normal cells as NASNet-A Large's 6 per stage
BACKGROUND_CLASSES = 1001   # TF-slim ImageNet heads: class 0 is "background"


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


# ---------------------------------------------------------------------------- reading
def read_checkpoint(path: PathLike) -> dict[str, torch.Tensor]:
    """A foreign checkpoint's state dict, read without running any pickled code.

    Accepts safetensors files, raw state dicts, and the usual training-checkpoint wrappers
    (``{'state_dict': ...}``, ``{'model': ...}``); DataParallel's ``module.`` prefix is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    if _is_safetensors(path):
        from ..weights import read_state_dict

        return read_state_dict(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(err)
        if "global" in reason.lower():
            raise CheckpointError(
                f"{path} was refused: it is a pickle that would build Python objects beyond tensors and "
                f"plain containers ({reason}), and nasnetzoo never runs code from a checkpoint. If you "
                "trust the file, load it yourself and re-save only the tensors: "
                "torch.save(checkpoint['state_dict'], 'clean.pth').") from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint: the weights-only reader refused it ({reason}). "
            "nasnetzoo never runs code from a checkpoint, so it reads only torch.save files of tensors "
            "and plain containers, and safetensors files.") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({_first_line(err)}); it may "
                              "be truncated or in another format.") from None
    return _strip_prefix(_unwrap(obj, path))


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as handle:  # 8-byte header length, then a JSON header
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 27)


def _unpickler_reason(err: BaseException) -> str:
    """The line of torch's weights-only error that says what it refused."""
    for line in str(err).splitlines():
        line = line.strip()
        if "GLOBAL" in line or line.startswith(("Unsupported", "WeightsUnpickler error: Unsupported")):
            line = line.replace("WeightsUnpickler error: ", "")
            return line.split(" was not an allowed global")[0].rstrip(".")[:200]
    return _first_line(err)


def _first_line(err: BaseException) -> str:
    text = [line for line in str(err).strip().splitlines() if line.strip()]
    return text[0].strip()[:300] if text else type(err).__name__


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if _is_state_dict(obj.get(key)):
                return dict(obj[key])
        keys = ", ".join(repr(k) for k in list(obj)[:10])
        raise CheckpointError(f"{path} holds a dict ({keys}) with no state dict of tensors under "
                              "'state_dict' or 'model'; save the network's state_dict().")
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict; save the network's "
                          "state_dict() (a whole pickled module is not accepted).")


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


# ---------------------------------------------------------------------------- key mapping
_CELL = re.compile(r"^cell_(\d+)\.")
_PATHS = re.compile(r"^((?:cell_stem_\d+|cell_\d+|reduction_cell_\d+))\.conv_prev_1x1\."
                    r"(path_1|path_2|final_path_bn)\.")


def _nasnet_source_key(key: str, *, fmt: str, pnas: bool, cells_per_stage: int,
                       reduction_indices: list[int]) -> str:
    """nasnetzoo's parameter name -> the timm/Cadene one."""
    if key.startswith("classifier."):
        return "last_linear." + key[len("classifier."):]
    if pnas:
        return "conv_0." + key[len("conv0."):] if key.startswith("conv0.") else key
    key = _PATHS.sub(r"\1.\2.", key)
    match = _CELL.match(key)
    if fmt == "cadene" and match and cells_per_stage != CADENE_CELLS_PER_STAGE:
        index = int(match.group(1))
        stage = sum(index >= r for r in reduction_indices)
        key = f"cell_{index + (CADENE_CELLS_PER_STAGE - cells_per_stage) * stage}." + key[match.end():]
    return key


def source_key_map(model: nn.Module, fmt: str) -> dict[str, str]:
    """{nasnetzoo key: source key} for every entry of ``model``'s state dict."""
    if fmt in DARTS_FORMATS:
        return {k: k for k in model.state_dict()}
    pnas = getattr(model, "reduction", "cell") == "stride"
    kwargs = dict(fmt=fmt, pnas=pnas, cells_per_stage=getattr(model, "N", CADENE_CELLS_PER_STAGE),
                  reduction_indices=list(getattr(model, "reduction_indices", [])))
    return {k: _nasnet_source_key(k, **kwargs) for k in model.state_dict()}


def map_state_dict(source: Mapping[str, torch.Tensor], model: nn.Module, fmt: str
                   ) -> tuple[dict[str, torch.Tensor], int, list[str]]:
    """Rename ``source`` to nasnetzoo's keys; fill missing num_batches_tracked; drop background rows.

    Returns (state dict, number of buffers filled, notes).  Source keys that map to nothing keep
    their name, so a mismatch report shows them as unexpected.
    """
    key_map = source_key_map(model, fmt)
    by_source = {src: ours for ours, src in key_map.items()}
    state = {by_source.get(k, k): v for k, v in source.items()}
    own = model.state_dict()
    filled = 0
    for key, value in own.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            prefix = key[: -len("num_batches_tracked")]
            if prefix + "running_mean" in state:
                state[key] = torch.zeros_like(value)
                filled += 1
    notes = []
    weight = state.get("classifier.weight")
    if (fmt in ("timm", "cadene") and weight is not None and weight.shape[0] == BACKGROUND_CLASSES
            and own.get("classifier.weight") is not None
            and own["classifier.weight"].shape[0] == BACKGROUND_CLASSES - 1):
        state["classifier.weight"] = weight[1:].clone()
        if "classifier.bias" in state:
            state["classifier.bias"] = state["classifier.bias"][1:].clone()
        notes.append("dropped row 0 (TF's background class) of the 1001-class classifier")
    return state, filled, notes


# ---------------------------------------------------------------------------- config inference
def _cell_count(source: Mapping[str, torch.Tensor]) -> Optional[int]:
    indices = [int(m.group(1)) for k in source if (m := re.match(r"^cells\.(\d+)\.", k))]
    return max(indices) + 1 if indices else None


def infer_config(source: Mapping[str, torch.Tensor], spec, fmt: str) -> dict[str, Any]:
    """Builder options read off the tensors, for ``spec``'s network and format ``fmt``."""
    builder = spec.arch.builder
    config: dict[str, Any] = {}
    if fmt in DARTS_FORMATS:
        if spec.genotype.family != "darts" or not builder.startswith("nasnetzoo.models.darts:"):
            raise ConfigError(f"--from {fmt} converts DARTS-family networks; {spec.name!r} is a "
                              f"{spec.genotype.family}-family network ({spec.arch.name}). Pick a DARTS-family "
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
        head = source.get("last_linear.weight")
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
def _reference_model(fmt: str, arch: str, num_classes: int) -> tuple[Optional[nn.Module], str]:
    """The source library's model (random init), or None and why not."""
    if fmt == "timm":
        name = TIMM_MODELS.get(arch)
        if name is None:
            return None, f"timm has no model for {arch}"
        try:
            import timm
        except ImportError:
            return None, "timm is not installed (pip install timm)"
        return timm.create_model(name, pretrained=False, num_classes=num_classes), f"timm {name}"
    if fmt == "cadene":
        name = CADENE_MODELS.get(arch)
        if name is None:
            return None, f"Cadene's pretrainedmodels has no model for {arch}"
        try:
            import pretrainedmodels
        except Exception:  # ImportError, or its own missing dependencies
            return None, "Cadene's pretrainedmodels is not importable (pip install pretrainedmodels)"
        return getattr(pretrainedmodels, name)(num_classes=num_classes, pretrained=None), f"Cadene {name}"
    return None, (f"the official {fmt} code is research code, not an importable package; keys and shapes "
                  "were matched strictly by name")


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

    ``verify``: compare the logits of the source model (its own code: timm or Cadene's
    ``pretrainedmodels``) and the converted one on a random ``verify_size`` image (default: the
    entry's input size); ``None`` verifies when that code is importable, ``True`` requires it.  A
    difference above ``tolerance`` (relative to the largest logit, at least 1) writes nothing.
    """
    from ..factory import resolve
    from .pretrained import save_pretrained

    if fmt not in FORMATS:
        raise ConfigError(f"unknown checkpoint format {fmt!r}; use one of {', '.join(FORMATS)}.")
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise ConfigError(f"output {str(dst)!r} must end in .safetensors (nasnetzoo writes safetensors).")
    source = read_checkpoint(src)
    base = resolve(arch, dataset=dataset)
    config = infer_config(source, base, fmt)
    if dataset is None:
        dataset = _dataset_for(base, config.get("num_classes"))
    spec = resolve(arch, dataset=dataset, **config)
    model = spec.build()
    state, filled, notes = map_state_dict(source, model, fmt)
    problems = state_dict_mismatch(model.state_dict(), state)
    if problems:
        raise WeightsError(f"{src} (--from {fmt}) does not fit {spec.name}; {problems}. Check --arch (the "
                           "genotype the checkpoint was trained with) and --from.")
    model.load_state_dict(state, strict=True)
    result = ConversionResult(dst, spec.name, dict(spec.config), len(state), filled, notes)

    if verify is not False:
        reference, why = _reference_model(fmt, spec.name, int(source_rows(source, fmt) or 0))
        if reference is None:
            if verify:
                raise ConfigError(f"cannot verify the conversion by outputs: {why}.")
            result.verify_note = why
        else:
            size = spec.data["input_size"]
            if verify_size:
                size = (size[0], int(verify_size), int(verify_size))
            diff, scale = compare_outputs(reference, source, model, tuple(size), drop_background=True)
            del reference
            result.max_abs_diff = diff
            result.verify_note = f"{why}, eval mode, one random {size[1]}x{size[2]} image"
            if not diff <= tolerance * max(1.0, scale):
                raise WeightsError(f"{src}: the converted network's logits differ from the source model's "
                                   f"by {diff:.3g} (tolerance {tolerance:g}); nothing was written. The "
                                   f"checkpoint may be for another configuration than {spec.name}.")
    provenance = {"converted_from": fmt, "source_file": src.name, "converter": "nasnetzoo.hub.convert"}
    if result.max_abs_diff is not None:
        provenance["verified_max_abs_diff"] = result.max_abs_diff
    meta = dict(metadata or {})
    provenance.update(meta.pop("provenance", None) or {})
    save_pretrained(model, dst, metadata={"provenance": provenance, **meta})
    return result


def source_rows(source: Mapping[str, torch.Tensor], fmt: str) -> Optional[int]:
    head = source.get("classifier.weight" if fmt in DARTS_FORMATS else "last_linear.weight")
    return int(head.shape[0]) if head is not None and head.dim() == 2 else None
