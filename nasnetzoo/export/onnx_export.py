"""ONNX export of a zoo network, checked against PyTorch in ONNX Runtime.

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based one.  Checked with
torch 2.14: both exporters give graphs that match PyTorch (tried on PC-DARTS and NASNet-A
mobile), but the dynamo exporter needs the separate ``onnxscript`` package and took 18-19 s per
network where the traced one takes 2-3 s (one CPU thread).  The traced exporter handles every
zoo network (fixed spatial size, TF "SAME" padding as constant ``Pad`` s, strided slices).  Its
deprecation warning and the tracer's "converting a tensor to a Python int" warnings are silenced
on purpose: the spatial size is baked into the graph by design (static shapes; only the batch
can be dynamic).

Checks, in order: ``onnx.checker`` (full, with shape inference) on the exported and the simplified
graph; then ONNX Runtime (CPU) against PyTorch on a random input *different from the one traced*
(so a data-dependent branch baked in by the tracer shows up).

Tolerances (max abs difference of the logits, ``tolerance()``):

* fp32: ``1e-4``, widened by ``16 x eps32`` where ``eps32`` is PyTorch's own float32 error on that
  input (its fp32 logits against a float64 run of the same model).  For a well-conditioned network
  ``eps32`` is ~1e-6 and the bound is 1e-4; a random-init network whose BatchNorm statistics were
  calibrated (see ``calibrate_batchnorm``) amplifies rounding to ``eps32`` ~ 1e-5..5e-3 and
  PyTorch and ONNX Runtime then differ by as much from each other, correctly.  One image's
  ``eps32`` is a noisy estimate: over 30 random-init torchvision mobilenet_v2s at 32 px the ratio
  ``|ORT - PyTorch| / eps32`` had median 1.5 and maximum 14.2, hence the factor 16.  A broken op
  moves calibrated logits by far more than that.
* fp16: the larger of ``1e-2 x max|logit|`` and ``2**13 x eps32``: fp16 keeps 13 fewer mantissa bits
  than fp32, so a network that amplifies fp32 rounding to ``eps32`` amplifies fp16 rounding to
  about ``2**13 eps32`` (measured: 1300-2000x on the zoo).  The outputs must also be finite.
"""
from __future__ import annotations

import copy
import io
import json
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..errors import ConfigError
from .errors import ExportError, ExportVerificationError, require

FORMATS = ("onnx",)
DEFAULT_OPSET = 17
FP32_ATOL = 1e-4
FP32_NOISE_FACTOR = 16.0  # |ORT - PyTorch| / eps32 reached 14.2 (median 1.5) over 30 random mobilenet_v2s
FP16_RTOL = 1e-2          # of max |logit|
FP16_NOISE_FACTOR = 2.0 ** 13
# Exporting a network at more than this factor above the size it was built for (a CIFAR net at
# 224 px: 7x) is refused unless asked for: the MACs grow with the square and the net never saw it.
SIZE_MISMATCH_FACTOR = 2.0
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass
class Verification:
    variant: str
    runtime: str
    batches: list
    max_abs_diff: float
    max_rel_diff: float
    tolerance: str
    passed: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ExportResult:
    name: str
    onnx_path: Path
    report_path: Path
    report: dict
    files: dict = field(default_factory=dict)

    def summary(self) -> str:
        r = self.report
        simplified = (f"{r['nodes']['simplified']} after simplification" if r["nodes"]["simplified"] is not None
                      else "not simplified")
        lines = [f"wrote {self.onnx_path}  ({r['nodes']['exported']} nodes exported, {simplified}; "
                 f"opset {r['opset']})"]
        for v in r["verification"]:
            lines.append(f"  verified {v['variant']}: max |ORT - PyTorch| = {v['max_abs_diff']:.2e} "
                         f"(tolerance {v['tolerance']}; batch {', '.join(map(str, v['batches']))})")
        lines.append(f"  input {r['inputs'][0]['shape']}, MACs {r['macs'] / 1e6:.1f}M, params "
                     f"{r['params'] / 1e6:.3f}M")
        for key, path in self.files.items():
            if key != "onnx":
                lines.append(f"wrote {path}")
        trt = r.get("tensorrt")
        if trt:
            lines.append(f"TensorRT-ready: {len(trt['ops'])} op types, all in the TensorRT {trt['op_list_version']} "
                         "ONNX parser's list; static shapes")
            for cmd in trt["trtexec"].values():
                lines.append(f"  {cmd}")
            lines.append(f"  engine build: {trt['engine']['status']}")
        for w in r.get("warnings", []):
            lines.append(f"warning: {w}")
        lines.append(f"wrote {self.report_path}")
        return "\n".join(lines)


def export(model_or_name, format: str = "onnx", **kwargs) -> ExportResult:
    """Export in ``format`` (only ``"onnx"``; TensorRT through ``trt=True``)."""
    fmt = str(format).lower()
    if fmt not in FORMATS:
        hint = " TensorRT engines are built from the ONNX file: use --format onnx --trt." \
            if fmt in ("trt", "tensorrt", "engine", "plan") else ""
        raise ExportError(f"unsupported export format {format!r}; supported: {', '.join(FORMATS)}.{hint}")
    return export_onnx(model_or_name, **kwargs)


# ------------------------------------------------------------------ model and size
def _resolve_model(model_or_name, weights, dataset, name):
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
    from ..factory import load, resolve

    spec = resolve(model_or_name, dataset=dataset)
    model = load(model_or_name, weights=weights, dataset=dataset)
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


# ------------------------------------------------------------------ export
def torch_to_onnx(model, x, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False) -> bytes:
    """The raw export (TorchScript exporter) as bytes; ``model`` must be in eval mode."""
    import torch

    buf = io.BytesIO()
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer + legacy-exporter notices; see the module docstring
        try:
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=int(opset),
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportError(f"torch.onnx.export failed at opset {opset}: {first}. The default "
                              f"opset is {DEFAULT_OPSET}.") from err
    return buf.getvalue()


def _reference(model, x):
    import torch

    with torch.no_grad():
        out = model(x)
    if not isinstance(out, torch.Tensor):
        raise ExportError(f"the model returned {type(out).__name__} in eval mode; export needs a model "
                          "whose forward returns one logits tensor.")
    return out.float().numpy()


@dataclass
class Case:
    """One verification input with PyTorch's fp32 output and that output's own float32 error."""

    x: np.ndarray
    ref: np.ndarray
    eps32: float  # max |PyTorch fp32 - PyTorch fp64| on x[:2] (0 when the float64 run is impossible)

    def tolerance(self, fp16: bool) -> float:
        if fp16:
            return max(FP16_RTOL * float(np.max(np.abs(self.ref))), FP16_NOISE_FACTOR * self.eps32)
        return FP32_ATOL + FP32_NOISE_FACTOR * self.eps32


def make_cases(model, inputs) -> list[Case]:
    """Cases for ``inputs`` (torch tensors); the float64 copy measures PyTorch's own rounding."""
    import torch

    refs = [_reference(model, x) for x in inputs]
    try:
        model64 = copy.deepcopy(model).double()
        with torch.no_grad():  # two images show the network's rounding as well as a large batch
            refs64 = [model64(x[:2].double()).numpy() for x in inputs]
        del model64
    except Exception:  # an op without a float64 kernel: fall back to the plain bound
        refs64 = [r[:2] for r in refs]
    return [Case(x.numpy(), r, float(np.max(np.abs(r[:2] - r64))) if r.size else 0.0)
            for x, r, r64 in zip(inputs, refs, refs64)]


def compare(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(max abs difference, that over max |ref|)."""
    out = np.asarray(out, dtype=np.float32)
    if out.shape != ref.shape:
        return float("inf"), float("inf")
    diff = float(np.max(np.abs(out - ref))) if ref.size else 0.0
    return diff, diff / max(float(np.max(np.abs(ref))), 1e-12)


def verify(model_proto, variant: str, cases: Sequence[Case], *, fp16: bool,
           threads: Optional[int] = None) -> Verification:
    """Run ``model_proto`` in ONNX Runtime (CPU) on each case; see the module docstring for the bounds."""
    from .runtimes import ort_run, ort_session

    session = ort_session(model_proto, threads=threads)
    return check_outputs(variant, "onnxruntime CPUExecutionProvider", cases,
                         [ort_run(session, c.x) for c in cases], fp16=fp16)


def check_outputs(variant: str, runtime: str, cases: Sequence[Case], outputs, *, fp16: bool) -> Verification:
    worst_abs, worst_rel, worst_ratio, passed = 0.0, 0.0, 0.0, True
    limit = 0.0
    for case, out in zip(cases, outputs):
        abs_diff, rel = compare(case.ref, out)
        limit = case.tolerance(fp16)
        passed &= bool(np.all(np.isfinite(out))) and abs_diff <= limit
        if abs_diff / limit >= worst_ratio:
            worst_ratio, limit_shown, eps = abs_diff / limit, limit, case.eps32
        worst_abs, worst_rel = max(worst_abs, abs_diff), max(worst_rel, rel)
    if fp16:
        tol = (f"{limit_shown:.2e} (fp16: max of {FP16_RTOL:g} x max|logit| and 2^13 x {eps:.1e}, "
               "PyTorch's own fp32 error vs fp64)")
    else:
        tol = (f"{limit_shown:.2e} (fp32: {FP32_ATOL:g} + {FP32_NOISE_FACTOR:g} x {eps:.1e}, PyTorch's own "
               "fp32 error vs fp64)")
    return Verification(variant, runtime, [int(c.x.shape[0]) for c in cases], worst_abs, worst_rel, tol,
                        bool(passed))


def _fail(name: str, v: Verification) -> ExportVerificationError:
    return ExportVerificationError(
        f"{name}: the exported {v.variant} graph differs from PyTorch in ONNX Runtime by "
        f"{v.max_abs_diff:.3g} (max abs over the logits, batch {', '.join(map(str, v.batches))}), beyond the "
        f"tolerance {v.tolerance}; nothing was written. The model probably has input-dependent Python "
        "control flow that tracing baked in, or an op the exporter lowers differently.")


def export_onnx(model_or_name: Union[str, Path, Any], output_dir: Union[str, Path] = ".", *,
                name: Optional[str] = None, weights: Optional[Union[str, Path]] = None,
                dataset: Optional[str] = None, opset: int = DEFAULT_OPSET, batch: Optional[int] = None,
                dynamic_batch: bool = False, input_size=None, fp16: bool = False, trt: bool = False,
                simplify: bool = True, allow_size_mismatch: bool = False, seed: int = 0,
                calibrate_bn: Optional[bool] = None, threads: Optional[int] = None) -> ExportResult:
    """Export a zoo network (name, alias, genotype file or ``nn.Module``) to ``output_dir/NAME.onnx``.

    The network is exported in eval mode (logits only: no auxiliary head, no drop path) at a static
    spatial size, by default the entry's own (224 for ImageNet entries, 32 for CIFAR ones).  Writes
    ``NAME.onnx`` (simplified), ``NAME.json`` (the report) and, with ``fp16``, ``NAME.fp16.onnx``;
    with ``trt``, ``NAME.trt.onnx`` and ``NAME.trt.fp16.onnx`` (see ``nasnetzoo.export.trt``).
    Raises ``ExportVerificationError`` (and writes nothing) if ONNX Runtime disagrees with PyTorch.

    ``calibrate_bn`` (default: True for a model built here without weights, else False) first sets
    the BatchNorm statistics from random inputs, see :func:`calibrate_batchnorm`: without it the
    numeric check of a random-init network compares near-constant logits.  ``threads`` sets ONNX
    Runtime's thread count for the check.
    """
    onnx = require("onnx", "ONNX export")
    require("onnxruntime", "Checking an ONNX export")
    import torch

    if dynamic_batch and batch is not None:
        raise ConfigError("pass either a fixed batch (--batch N) or --dynamic-batch, not both.")
    if trt and dynamic_batch:
        raise ConfigError("a TensorRT-ready graph has static shapes; export it with --batch N (one engine "
                          "per batch size) instead of --dynamic-batch.")
    batch = 1 if batch is None else int(batch)
    if batch < 1:
        raise ConfigError(f"batch {batch} is not a positive integer.")
    newest = onnx.defs.onnx_opset_version()
    if not 9 <= int(opset) <= newest:
        raise ConfigError(f"opset {opset} is out of range; use 9-{newest} (default {DEFAULT_OPSET}; "
                          f"TensorRT-ready graphs need at most 17).")

    model, name, info = _resolve_model(model_or_name, weights, dataset, name)
    size, warns = resolve_input_size(name, info, input_size, allow_size_mismatch,
                                     getattr(model, "in_chans", 3))
    if calibrate_bn is None:
        calibrate_bn = info["source"] != "nn.Module" and info["weights"] is None
    if calibrate_bn:
        calibrate_batchnorm(model, size, seed=seed)
    out_dir = Path(output_dir)
    stem = safe_filename(name)

    was_training = model.training
    model.eval()  # logits only: no auxiliary head, no drop path, BN running statistics
    try:
        gen = torch.Generator().manual_seed(seed)
        x_trace = torch.randn((batch,) + size, generator=gen)
        inputs = [torch.randn((batch,) + size, generator=gen)]
        if dynamic_batch:
            inputs.append(torch.randn((batch + 1,) + size, generator=gen))
        try:
            cases = make_cases(model, inputs)
        except (RuntimeError, ValueError) as err:
            raise ExportError(f"{name} cannot run at {size[1]}x{size[2]}: {str(err).splitlines()[0]}; "
                              "choose another --input-size.") from err

        t0 = time.perf_counter()
        raw = onnx.load_from_string(torch_to_onnx(model, x_trace, opset=opset, dynamic_batch=dynamic_batch))
        export_s = time.perf_counter() - t0
        onnx.checker.check_model(raw, full_check=True)
        nodes_exported = len(raw.graph.node)
        if simplify:
            from .onnx_graph import simplify as simplify_graph
            final, simplifier = simplify_graph(raw)
            onnx.checker.check_model(final, full_check=True)
        else:
            final, simplifier = raw, None
        checks = [verify(final, "fp32", cases, fp16=False, threads=threads)]
        if not checks[0].passed:
            raise _fail(name, checks[0])

        fp16_model = None
        if fp16:
            from .onnx_graph import to_fp16
            fp16_model = to_fp16(final)
            onnx.checker.check_model(fp16_model, full_check=True)
            checks.append(verify(fp16_model, "fp16", cases, fp16=True, threads=threads))
            if not checks[-1].passed:
                raise _fail(name, checks[-1])

        trt_section = trt_models = None
        if trt:
            from .onnx_graph import simplify as simplify_graph
            from .trt import prepare_tensorrt
            # TensorRT-ready means simplified, whatever --no-simplify says about NAME.onnx
            trt_source = final if simplify else simplify_graph(raw)[0]
            trt_section, trt_models, trt_checks = prepare_tensorrt(
                trt_source, name=name, stem=stem, out_dir=out_dir, cases=cases, threads=threads)
            checks.extend(trt_checks)

        from ..profile import profile
        prof = profile(model, size)
    finally:
        model.train(was_training)

    # Everything checked: write.
    from .onnx_graph import describe_io, op_counts
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"onnx": out_dir / f"{stem}.onnx"}
    onnx.save(final, str(files["onnx"]))
    if fp16_model is not None:
        files["onnx_fp16"] = out_dir / f"{stem}.fp16.onnx"
        onnx.save(fp16_model, str(files["onnx_fp16"]))
    if trt_models:
        for key, (path, proto) in trt_models.items():
            files[key] = path
            onnx.save(proto, str(path))
    inputs, outputs = describe_io(final)
    report = {
        "name": name,
        "source": info["source"],
        "weights": info["weights"] or ("random init, BatchNorm statistics calibrated on random inputs"
                                       if calibrate_bn else "as given (nn.Module)" if info["source"] == "nn.Module"
                                       else "random init"),
        "dataset": info["dataset"],
        "format": "onnx",
        "opset": int(opset),
        "exporter": f"torch.onnx.export (TorchScript, dynamo=False), torch {torch.__version__}",
        "onnx_version": onnx.__version__,
        "onnxruntime_version": __import__("onnxruntime").__version__,
        "simplifier": simplifier,
        "input_size": list(size),
        "native_input_size": info["native_input_size"],
        "batch": "dynamic" if dynamic_batch else batch,
        "inputs": inputs,
        "outputs": outputs,
        "nodes": {"exported": nodes_exported, "simplified": len(final.graph.node) if simplify else None},
        "ops": op_counts(final),
        "params": prof.params,
        "macs": prof.macs,
        "macs_convention": "conv + linear multiply-accumulates for one image, eval mode, aux head excluded "
                           "(nasnetzoo.profile)",
        "verification": [c.to_dict() for c in checks],
        "verification_input": f"standard normal, seed {seed}, a different draw from the traced input",
        "pytorch_fp32_error_vs_fp64": max(c.eps32 for c in cases),
        "export_seconds": round(export_s, 2),
        "files": {k: p.name for k, p in files.items()},
        "warnings": warns,
    }
    if trt_section is not None:
        report["tensorrt"] = trt_section
    report_path = out_dir / f"{stem}.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return ExportResult(name, files["onnx"], report_path, report, files)


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
