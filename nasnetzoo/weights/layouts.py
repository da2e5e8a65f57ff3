"""Foreign checkpoints: read without running code, renamed to nasnetzoo's module names.

Layouts (the ``layout`` of a registry source, the ``--from`` of ``nasnetzoo convert``):

* ``darts``, ``pcdarts``, ``pdarts``: the official DARTS-family ``model.py`` networks, whose module
  names nasnetzoo keeps, so keys map one to one (CIFAR files from PyTorch 0.3 lack
  ``num_batches_tracked``: filled with 0, a value eval mode never reads).
* ``timm``, ``cadene``: ``nasnetalarge`` / ``pnasnet5large`` / ``nasnetamobile``; the classifier is
  ``last_linear``, a cell's factorized reduction of its previous input sits on the cell itself
  (``path_1``/``path_2``/``final_path_bn``), PNASNet's stem conv is ``conv_0``; Cadene numbers
  NASNet-A Mobile's cells as if every stage had six.  1001-class heads (row 0 = TF's background)
  lose row 0.
* ``nni``: NNI's DARTS space with a fixed architecture (``nni.nas.hub.pytorch.DARTS``, NNI's
  ``darts-v2-5465b0d2.pth``): ``stages.{s}.{j}`` cells (a stage starts at a reduction cell),
  ``preprocessor.pre{0,1}`` and ``ops.{node}.{k}`` inside a cell, the official DARTS ops' own
  ``Sequential`` indices.  Renamed to the official DARTS names (``nni_to_darts``), then read as
  ``darts``.  NNI made the file from the authors' tensors by taking, for each of its keys in
  order, the first unused tensor of equal shape; both networks register their modules in the
  same order, so that matching pairs every tensor with its namesake (tests/test_pretrained.py
  replays it).
* ``pytorchcv``: osmr's imgclsmob models ``darts``, ``nasnet_4a1056``, ``nasnet_6a4032``,
  ``pnasnet5large``: ``features.stem{1,2}_unit`` / ``features.stage{s}.unit{u}`` in forward order,
  ``comb{k}_{left,right}.conv{j}.conv.{dw,pw}_conv`` for the separable convolutions, ``output``
  (``output.fc``) for the classifier.  Shapes and parameter counts equal nasnetzoo's, but copying
  by position gives wrong outputs: every key is mapped by name.

Every pickle is read with ``torch.load(..., weights_only=True)``: a file that would build any
object beyond tensors and plain containers is refused, never executed.
"""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping, Union

import torch
from torch import nn

from ..errors import CheckpointError, first_line, unpickler_refusal
from .format import read_state_dict

PathLike = Union[str, Path]

DARTS_FORMATS = ("darts", "pcdarts", "pdarts")
CADENE_CELLS_PER_STAGE = 6  # Cadene numbers normal cells as NASNet-A Large's 6 per stage
BACKGROUND_CLASSES = 1001   # TF-slim ImageNet heads: class 0 is "background"


# ---------------------------------------------------------------------------- reading
def read_checkpoint(path: PathLike) -> dict[str, torch.Tensor]:
    """A foreign checkpoint's state dict, read without running any pickled code.

    Accepts safetensors files, raw state dicts, and the usual training-checkpoint wrappers
    (``{'state_dict': ...}``, ``{'model': ...}``); DataParallel's ``module.`` prefix is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} " + ("is not a regular file (a device, pipe or folder)."
                                                              if path.exists() else "does not exist."))
    if _is_safetensors(path):
        return read_state_dict(path)
    refuse_foreign_zip(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = unpickler_refusal(err)
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
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({first_line(err)[:300]}); it may "
                              "be truncated or in another format.") from None
    return _strip_prefix(_unwrap(obj, path))


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as handle:  # 8-byte header length, then a JSON header
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 27)


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


# ---------------------------------------------------------------------------- nni
_NNI_CELL = re.compile(r"^stages\.(\d+)\.(\d+)\.(.*)$")
_NNI_OP = re.compile(r"^ops\.(\d+)\.(\d+)\.(.*)$")
_NNI_PRE = re.compile(r"^preprocessor\.pre([01])\.(.*)$")
NNI_OPS_PER_NODE = 2


def _official_part(tail: str) -> str:
    """The official ops keep their layers in ``.op`` (a Sequential); FactorizedReduce names them."""
    return f"op.{tail}" if tail[:1].isdigit() else tail


def _nni_cell_key(rest: str) -> str:
    op = _NNI_OP.match(rest)
    if op:
        edge = NNI_OPS_PER_NODE * int(op.group(1)) + int(op.group(2))
        return f"_ops.{edge}.{_official_part(op.group(3))}"
    pre = _NNI_PRE.match(rest)
    if pre:
        return f"preprocess{pre.group(1)}.{_official_part(pre.group(2))}"
    return rest


def nni_to_darts(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NNI's DARTS-space names -> the official DARTS ``model.py`` names (which nasnetzoo keeps).

    Keys that are not NNI cell keys (``stem``, ``classifier``) are the same in both."""
    cells_in_stage: dict[int, int] = {}
    for key in state:
        if (m := _NNI_CELL.match(key)):
            stage, index = int(m.group(1)), int(m.group(2))
            cells_in_stage[stage] = max(cells_in_stage.get(stage, 0), index + 1)
    first_cell = {s: sum(n for t, n in cells_in_stage.items() if t < s) for s in cells_in_stage}
    out = {}
    for key, value in state.items():
        m = _NNI_CELL.match(key)
        if m:
            key = f"cells.{first_cell[int(m.group(1))] + int(m.group(2))}.{_nni_cell_key(m.group(3))}"
        out[key] = value
    return out


def as_base_layout(source: Mapping[str, torch.Tensor], fmt: str) -> tuple[Mapping[str, torch.Tensor], str]:
    """A layout that is another one under other names, renamed to that one: ``(state, layout)``."""
    if fmt == "nni":
        return nni_to_darts(source), "darts"
    return source, fmt


def source_key_map(model: nn.Module, fmt: str) -> dict[str, str]:
    """{nasnetzoo key: source key} for every entry of ``model``'s state dict."""
    if fmt in DARTS_FORMATS or fmt == "nasnetzoo":
        return {k: k for k in model.state_dict()}
    if fmt == "pytorchcv":
        return pytorchcv_key_map(model)
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
    source, fmt = as_base_layout(source, fmt)
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
    if (fmt in ("timm", "cadene", "pytorchcv") and weight is not None and weight.shape[0] == BACKGROUND_CLASSES
            and own.get("classifier.weight") is not None
            and own["classifier.weight"].shape[0] == BACKGROUND_CLASSES - 1):
        state["classifier.weight"] = weight[1:].clone()
        if "classifier.bias" in state:
            state["classifier.bias"] = state["classifier.bias"][1:].clone()
        notes.append("dropped row 0 (TF's background class) of the 1001-class classifier")
    return state, filled, notes


# ---------------------------------------------------------------------------- pytorchcv
def _pytorchcv_units(model: nn.Module) -> dict[str, str]:
    """nasnetzoo cell module -> pytorchcv unit prefix, by forward order and stage boundaries."""
    if hasattr(model, "cells"):  # DARTS family: stages start at the reduction cells
        units, stage, unit = {}, 1, 0
        for i, cell in enumerate(model.cells):
            if cell.reduction and i > 0:
                stage, unit = stage + 1, 0
            unit += 1
            units[f"cells.{i}"] = f"features.stage{stage}.unit{unit}"
        return units
    names = [n for n in model.cell_names if n != "conv0"]
    stems = [n for n in names if n.startswith("cell_stem_")]
    cells = [n for n in names if not n.startswith("cell_stem_")]
    units = {"conv0": "features.init_block"}
    pnas = getattr(model, "reduction", "cell") == "stride"
    if pnas:  # pytorchcv's PNASNet has one stem unit; the second stem cell opens stage 1
        units[stems[0]] = "features.stem1_unit"
        cells = stems[1:] + cells
        boundaries = {f"cell_{r}" for r in model.reduction_indices}
    else:
        units.update({name: f"features.stem{i + 1}_unit" for i, name in enumerate(stems)})
        boundaries = {n for n in cells if n.startswith("reduction_cell_")}
    stage, unit = 1, 0
    for name in cells:
        if name in boundaries:
            stage, unit = stage + 1, 0
        unit += 1
        units[name] = f"features.stage{stage}.unit{unit}"
    return units


_DARTS_STEM = {"stem0.0.": "features.stem1_unit.conv1.conv.", "stem0.1.": "features.stem1_unit.conv1.bn.",
               "stem0.3.": "features.stem1_unit.conv2.conv.", "stem0.4.": "features.stem1_unit.conv2.bn.",
               "stem1.1.": "features.stem2_unit.conv.", "stem1.2.": "features.stem2_unit.bn."}
_DARTS_SEP = {"1": "conv1.conv.dw_conv", "2": "conv1.conv.pw_conv", "3": "conv1.bn",
              "5": "conv2.conv.dw_conv", "6": "conv2.conv.pw_conv", "7": "conv2.bn"}
_DARTS_DIL = {"1": "conv.dw_conv", "2": "conv.pw_conv", "3": "bn"}


def _pytorchcv_darts_key(key: str, units: Mapping[str, str], own: Mapping[str, Any]) -> str:
    for ours, theirs in _DARTS_STEM.items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    if key.startswith("classifier."):
        return "output." + key[len("classifier."):]
    match = re.match(r"^(cells\.\d+)\.(.*)$", key)
    if not match:
        return key
    prefix, rest = units[match.group(1)], match.group(2)
    pre = re.match(r"^preprocess([01])\.(conv_1|conv_2|bn|op\.1|op\.2)\.(.*)$", rest)
    if pre:
        side = "preprocess_prev" if pre.group(1) == "0" else "preprocess"
        part = {"conv_1": "conv1", "conv_2": "conv2", "bn": "bn", "op.1": "conv", "op.2": "bn"}[pre.group(2)]
        return f"{prefix}.{side}.{part}.{pre.group(3)}"
    op = re.match(r"^_ops\.(\d+)\.op\.(\d)\.(.*)$", rest)
    if op:
        separable = f"{match.group(1)}._ops.{op.group(1)}.op.5.weight" in own
        part = (_DARTS_SEP if separable else _DARTS_DIL).get(op.group(2))
        if part:
            return f"{prefix}.body.ops.{op.group(1)}.{part}.{op.group(3)}"
    return f"{prefix}.{rest}"


def _pytorchcv_nasnet_key(key: str, units: Mapping[str, str], pnas: bool, factorized: set) -> str:
    if key.startswith("classifier."):
        return "output.fc." + key[len("classifier."):]
    cell, _, rest = key.partition(".")
    if cell not in units:
        return key
    rest = re.sub(r"^comb_iter_(\d+)_(left|right)\.", r"comb\1_\2.", rest)
    rest = re.sub(r"separable_(\d)\.depthwise_conv2d\.", r"conv\1.conv.dw_conv.", rest)
    rest = re.sub(r"separable_(\d)\.pointwise_conv2d\.", r"conv\1.conv.pw_conv.", rest)
    rest = re.sub(r"bn_sep_(\d)\.", r"conv\1.bn.", rest)
    rest = re.sub(r"^conv_prev_1x1\.path_(\d)\.", r"conv_prev_1x1.path\1.", rest)
    rest = re.sub(r"^conv_prev_1x1\.final_path_bn\.", "conv_prev_1x1.bn.", rest)
    if not pnas:  # pytorchcv's NASNet: conv1x1, path (factorized previous input), conv1x1_prev
        rest = re.sub(r"^conv_1x1\.", "conv1x1.", rest)
        if cell in factorized:
            rest = re.sub(r"^conv_prev_1x1\.", "path.", rest)
        else:
            rest = re.sub(r"^conv_prev_1x1\.", "conv1x1_prev.", rest)
    return f"{units[cell]}.{rest}"


def pytorchcv_key_map(model: nn.Module) -> dict[str, str]:
    """{nasnetzoo key: pytorchcv key} for every entry of ``model``'s state dict, by name."""
    own = model.state_dict()
    units = _pytorchcv_units(model)
    if hasattr(model, "cells"):
        return {k: _pytorchcv_darts_key(k, units, own) for k in own}
    pnas = getattr(model, "reduction", "cell") == "stride"
    factorized = {k.split(".", 1)[0] for k in own if ".conv_prev_1x1.path_1." in k}
    return {k: _pytorchcv_nasnet_key(k, units, pnas, factorized) for k in own}


def refuse_foreign_zip(path: Path) -> None:
    """A zip that is not a ``torch.save`` archive (one top folder holding ``data.pkl``), such as a
    publisher's download, is named as such; nothing in it is read, let alone extracted."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as bundle:
            names = bundle.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        names = []
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and f"{next(iter(tops))}/data.pkl" in names and ".." not in tops:
        return
    shown = ", ".join(repr(n) for n in names[:4]) + (" ..." if len(names) > 4 else "")
    raise CheckpointError(f"{path} is a zip archive, not a torch.save checkpoint (it holds {shown or 'nothing readable'});"
                          " extract the checkpoint file from it yourself and convert that file (nasnetzoo never "
                          "unpacks paths from an archive).")
