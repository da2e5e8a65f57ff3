"""What every export starts from: the model (name, genotype file or ``nn.Module``), the input size
it is exported at, its BatchNorm statistics, and the file stem.

Shared by the ONNX and mobile exports and the benchmarks; nothing here writes a file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import ConfigError, first_line
from ..registry import DATASETS

# Exporting a network at more than this factor above the size it was built for (a CIFAR net at
# 224 px: 7x) is refused unless asked for: the MACs grow with the square and the net never saw it.
SIZE_MISMATCH_FACTOR = 2.0


def resolve_model(model_or_name, weights, dataset, name):
    """(model, name, info) for a registry name / genotype file / nn.Module."""
    from torch import nn

    if isinstance(model_or_name, nn.Module):
        if weights is not None:
            raise ConfigError("weights= applies to a model name or genotype file; load the weights into "
                              "your nn.Module before exporting it.")
        model = model_or_name
        cfg = getattr(model, "pretrained_cfg", None) or {}
        name = name or cfg.get("name") or type(model).__name__.lower()
        return model, name, {"source": "nn.Module", "dataset": cfg.get("dataset"),
                             "native_input_size": cfg.get("input_size"), "weights": None}
    from ..factory import load_with_spec

    spec, model = load_with_spec(model_or_name, weights=weights, dataset=dataset)
    classes = getattr(model, "num_classes", None)
    if dataset is not None and weights is not None and classes is not None and classes != DATASETS[dataset][1]:
        # the weights' saved config wins over --dataset: never label their graph as another dataset
        raise ConfigError(f"--dataset {dataset} needs a {DATASETS[dataset][1]}-class network, but the weights "
                          f"{str(weights)!r} hold a {classes}-class classifier; drop --dataset to export them "
                          f"as they are, or pass weights trained on {dataset}.")
    if name is None:
        name = spec.name
        if spec.entry is None and Path(str(model_or_name)).is_file() and name in ("custom", ""):
            name = Path(str(model_or_name)).stem
    return model, name, {"source": str(model_or_name) if spec.entry is None else f"registry:{spec.name}",
                         "dataset": spec.dataset, "native_input_size": list(spec.data["input_size"]),
                         "weights": str(weights) if weights else None}


def _imagenet_suggestion(name: str) -> str:
    from ..registry import get_entry, is_model_name, list_models

    base = name.split("@")[0]
    generic = f"build the cell's ImageNet network (--dataset imagenet, load({base!r}, dataset='imagenet'))"
    if not is_model_name(base):
        return generic
    entry = get_entry(base)
    same_cell = sorted((n for n in list_models() if get_entry(n).genotype_name == entry.genotype_name
                        and get_entry(n).dataset == "imagenet"), key=lambda n: "mobile" not in n)
    named_alike = [n for n in (entry.name.replace("_cifar", "_imagenet"), entry.name.replace("_cifar", "_mobile"))
                   if n != entry.name and is_model_name(n)]
    hits = same_cell or named_alike
    return f"use {hits[0]!r}" if hits else generic


def resolve_input_size(name: str, info: dict, input_size, allow_size_mismatch: bool,
                       in_chans: int = 3) -> tuple[tuple[int, int, int], list[str]]:
    """(C, H, W) to export at, and warnings; refuses a large upsizing (a CIFAR net at 224 px)."""
    native = info.get("native_input_size")
    warns = []
    if input_size is None:
        if native is None:
            raise ConfigError(f"{name}: no input size known; pass input_size=(H, W) (--input-size H W).")
        return tuple(int(v) for v in native), warns
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    size = tuple(int(v) for v in input_size)
    if len(size) == 3:
        size = size[1:]
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"input size {input_size!r} is not H W (two positive ints), e.g. --input-size 224 224.")
    c = int(native[0]) if native else in_chans
    if native:
        nh, nw = int(native[1]), int(native[2])
        if size[0] > SIZE_MISMATCH_FACTOR * nh or size[1] > SIZE_MISMATCH_FACTOR * nw:
            if not allow_size_mismatch:
                ds = info.get("dataset") or "its"
                raise ConfigError(
                    f"{name} is a {ds} network built for {nh}x{nw} inputs; exporting it at "
                    f"{size[0]}x{size[1]} is almost surely a mistake ({size[0] * size[1] / (nh * nw):.0f}x "
                    f"the MACs, a size it never saw). For ImageNet, {_imagenet_suggestion(name)}; or pass "
                    "--allow-size-mismatch (allow_size_mismatch=True) to export it at that size anyway.")
            warns.append(f"exported at {size[0]}x{size[1]}, {SIZE_MISMATCH_FACTOR:g}x+ above the "
                         f"{nh}x{nw} the network was built for")
        elif (size[0], size[1]) != (nh, nw):
            warns.append(f"exported at {size[0]}x{size[1]}, not the {nh}x{nw} the network was built for")
    return (c, size[0], size[1]), warns


def safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def calibrate_batchnorm(model, input_size: Sequence[int], *, batches: int = 1, batch_size: int = 2,
                        seed: int = 0):
    """Set every BatchNorm's running statistics from random inputs (in place; returns the model).

    A randomly initialised zoo network (running mean 0, variance 1 after ReLU -> conv stacks that
    shrink the signal) computes activations that fade towards zero cell after cell: its logits are
    little more than the classifier's bias, so comparing two runtimes on them proves little (a
    wrongly padded pool moves them by 1e-7).  With statistics measured on random inputs every BN
    output has unit scale and the logits depend on every op.  Weights are left untouched; use it
    on random-init models only (trained statistics are what a trained model should keep).
    """
    import torch
    from torch import nn

    size = tuple(int(v) for v in input_size)
    if len(size) == 2:
        size = (getattr(model, "in_chans", 3),) + size
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    saved = [(m, m.momentum) for m in bns]
    was_training = model.training
    gen = torch.Generator().manual_seed(seed)
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        model.train()
        with torch.no_grad():
            for _ in range(batches):
                model(torch.randn((batch_size,) + size, generator=gen))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
    return model


@dataclass
class Prepared:
    """A model ready to export: eval mode, input size fixed, the check's cases computed."""

    model: Any
    name: str
    stem: str
    info: dict
    size: tuple          # (C, H, W)
    warnings: list
    calibrated: bool
    x_trace: Any         # the input traced / exported with (torch)
    cases: list          # checks.Case, on inputs other than x_trace

    @property
    def weights_label(self) -> str:
        if self.info["weights"]:
            return self.info["weights"]
        if self.calibrated:
            return "random init, BatchNorm statistics calibrated on random inputs"
        return "as given (nn.Module)" if self.info["source"] == "nn.Module" else "random init"


def prepare_export(model_or_name, *, name=None, weights=None, dataset=None, input_size=None,
                   allow_size_mismatch: bool = False, batch: int = 1, extra_batch: bool = False,
                   seed: int = 0, calibrate_bn: Optional[bool] = None) -> Prepared:
    """Resolve, size, calibrate and put the model in eval mode; draw the traced and checked inputs.

    ``calibrate_bn`` (default: True for a model built here without weights) first sets the
    BatchNorm statistics from random inputs (see :func:`calibrate_batchnorm`).  ``extra_batch``
    adds a check at ``batch + 1`` (a dynamic batch dimension).  The model is left in eval mode:
    logits only, no auxiliary head, no drop path.
    """
    import torch

    from .checks import make_cases
    from .errors import ExportError

    model, name, info = resolve_model(model_or_name, weights, dataset, name)
    size, warns = resolve_input_size(name, info, input_size, allow_size_mismatch, getattr(model, "in_chans", 3))
    if calibrate_bn is None:
        calibrate_bn = info["source"] != "nn.Module" and info["weights"] is None
    try:
        if calibrate_bn:
            calibrate_batchnorm(model, size, seed=seed)
        model.eval()
        gen = torch.Generator().manual_seed(seed)
        x_trace = torch.randn((batch,) + size, generator=gen)
        inputs = [torch.randn((batch,) + size, generator=gen)]
        if extra_batch:
            inputs.append(torch.randn((batch + 1,) + size, generator=gen))
        cases = make_cases(model, inputs)
    except (RuntimeError, ValueError) as err:
        raise ExportError(f"{name} cannot run at {size[1]}x{size[2]}: {first_line(err)}; "
                          "choose another --input-size.") from None
    if not all(c.finite for c in cases):  # nothing to check an export against: say so before converting
        from .errors import ExportVerificationError
        raise ExportVerificationError(
            f"{name}: non-finite outputs (NaN or Inf logits) from PyTorch itself at {size[1]}x{size[2]}; nothing "
            "was written. Check the weights for NaN/Inf values and the input size (a network run far below "
            "its own size can divide by zero).")
    return Prepared(model, name, safe_filename(name), info, size, warns, bool(calibrate_bn), x_trace, cases)
