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
(so a data-dependent branch baked in by the tracer shows up), under the bounds of ``checks``.
Files are written only once every check passed, atomically and the JSON report last (``files``).
"""
from __future__ import annotations

import io
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import ConfigError, describe_os_error, first_line
from .checks import (FP16_NOISE_FACTOR, FP16_RTOL, FP32_ATOL, FP32_NOISE_FACTOR, Case,  # noqa: F401
                     Verification, check_outputs, compare, make_cases, verification_error, verify_onnx)
from .errors import ExportError, require
from .files import commit, ensure_output_dir, staging
from .prepare import (SIZE_MISMATCH_FACTOR, calibrate_batchnorm, prepare_export,  # noqa: F401
                      resolve_input_size, resolve_model, safe_filename)

DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


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
            first = first_line(err)
            raise ExportError(f"torch.onnx.export failed at opset {opset}: {first}. The default "
                              f"opset is {DEFAULT_OPSET}.") from err
    return buf.getvalue()


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

    out_dir = ensure_output_dir(output_dir)  # a bad -o fails now, not after the export
    prep = prepare_export(model_or_name, name=name, weights=weights, dataset=dataset, input_size=input_size,
                          allow_size_mismatch=allow_size_mismatch, batch=batch, extra_batch=dynamic_batch,
                          seed=seed, calibrate_bn=calibrate_bn)
    model, name, stem, size, cases = prep.model, prep.name, prep.stem, prep.size, prep.cases
    was_training = model.training
    model.eval()
    try:
        t0 = time.perf_counter()
        raw = onnx.load_from_string(torch_to_onnx(model, prep.x_trace, opset=opset, dynamic_batch=dynamic_batch))
        export_s = time.perf_counter() - t0
        onnx.checker.check_model(raw, full_check=True)
        nodes_exported = len(raw.graph.node)
        if simplify:
            from .onnx_graph import simplify as simplify_graph
            final, simplifier = simplify_graph(raw)
            onnx.checker.check_model(final, full_check=True)
        else:
            final, simplifier = raw, None
        checks = [verify_onnx(final, "fp32", cases, fp16=False, threads=threads)]
        if not checks[0].passed:
            raise verification_error(name, checks[0])

        fp16_model = None
        if fp16:
            from .onnx_graph import to_fp16
            fp16_model = to_fp16(final)
            onnx.checker.check_model(fp16_model, full_check=True)
            checks.append(verify_onnx(fp16_model, "fp16", cases, fp16=True, threads=threads))
            if not checks[-1].passed:
                raise verification_error(name, checks[-1])

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

    # Everything checked: write (staged, then renamed into place, the report last).
    from .onnx_graph import describe_io, op_counts
    protos = {"onnx": (out_dir / f"{stem}.onnx", final)}
    if fp16_model is not None:
        protos["onnx_fp16"] = (out_dir / f"{stem}.fp16.onnx", fp16_model)
    for key, (path, proto) in (trt_models or {}).items():
        protos[key] = (path, proto)
    files = {k: path for k, (path, _) in protos.items()}
    inputs, outputs = describe_io(final)
    report = {
        "name": name,
        "source": prep.info["source"],
        "weights": prep.weights_label,
        "dataset": prep.info["dataset"],
        "format": "onnx",
        "opset": int(opset),
        "exporter": f"torch.onnx.export (TorchScript, dynamo=False), torch {torch.__version__}",
        "onnx_version": onnx.__version__,
        "onnxruntime_version": __import__("onnxruntime").__version__,
        "simplifier": simplifier,
        "input_size": list(size),
        "native_input_size": prep.info["native_input_size"],
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
        "warnings": prep.warnings,
    }
    if trt_section is not None:
        report["tensorrt"] = trt_section
    report_path = out_dir / f"{stem}.json"
    with staging(out_dir) as tmp:
        staged = {}
        for key, (path, proto) in protos.items():
            staged[tmp / path.name] = path
            _write_staged(tmp / path.name, proto.SerializeToString())
        _write_staged(tmp / report_path.name, (json.dumps(report, indent=2) + "\n").encode())
        commit(staged, (tmp / report_path.name, report_path))
    return ExportResult(name, files["onnx"], report_path, report, files)


def _write_staged(path: Path, payload: bytes) -> None:
    """Write into the staging folder; a full disk becomes one line and the old export stays."""
    try:
        with open(path, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise ExportError(f"cannot write {path.name} into {str(path.parent.parent)!r} "
                          f"({describe_os_error(err)}); the previous export is unchanged.") from None
