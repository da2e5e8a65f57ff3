"""One export pipeline for every runtime of the table: convert, check the written files, write.

``export(model, runtime, options)`` resolves and prepares the network (``prepare``), calls the
record's converter into a staging folder inside the output folder (``runtimes.RUNTIMES``: ONNX's in
``onnx_export``, the mobile ones in ``mobile``), loads *every written file* back in the CPU runtime
of its format and runs it on inputs other than the one it was traced with (``checks``: its logits
must match PyTorch's within the fp32 or fp16 bound, or nothing is written), then moves the files
into place and writes the JSON report last (``files``).  The report is assembled here, once: the
keys every export has, then the converter's own (ONNX: opset, nodes, the TensorRT section;
ExecuTorch: the XNNPACK partitions).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import first_line
from .checks import check_outputs, make_cases, verification_error
from .errors import ExportError
from .files import commit, ensure_output_dir, staging, write_staged
from .prepare import prepare_export
from .artifact import Artifact
from .options import DEFAULT_OPSET, OnnxOptions
from .runtimes import Runtime, export_runtime

MACS_CONVENTION = ("conv + linear multiply-accumulates for one image, eval mode, aux head excluded "
                   "(nasnetzoo.profile)")


@dataclass
class ExportResult:
    name: str
    path: Path                       # the main file (NAME.onnx, .pte, .tflite, .xml)
    files: dict                      # {key: path} of every file written but the report
    report: dict
    report_path: Path

    @property
    def onnx_path(self) -> Path:
        """The name ``export_onnx``'s result had for ``path`` (kept for callers of 0.x)."""
        return self.path

    def summary(self) -> str:
        r = self.report
        head = f"{r['format']}, {r['runtime']}"
        if "nodes" in r:
            simplified = (f"{r['nodes']['simplified']} after simplification" if r["nodes"]["simplified"] is not None
                          else "not simplified")
            head += f"; {r['nodes']['exported']} nodes exported, {simplified}; opset {r['opset']}"
        lines = [f"wrote {self.path}  ({head})"]
        if "partitions" in r:
            outside = ", ".join(f"{op} x{n}" for op, n in sorted(r["ops_outside_counts"].items())) or "none"
            lines.append(f"  XNNPACK partitions: {r['partitions']}; ops outside the delegate: {outside}")
        if r.get("depthwise_split"):
            lines.append(f"  depthwise convolutions above XNNPACK's 25 taps, split into row bands: {r['depthwise_split']}")
        for v in r["verification"]:
            lines.append(f"  verified {v['variant']} in {v['runtime']}: max |{v['runtime']} - PyTorch| = "
                         f"{v['max_abs_diff']:.2e} (tolerance {v['tolerance']}; batch "
                         f"{', '.join(map(str, v['batches']))})")
        shape = r["inputs"][0]["shape"] if r.get("inputs") else [r["batch"]] + r["input_size"]
        lines.append(f"  input {shape}, MACs {r['macs'] / 1e6:.1f}M, params {r['params'] / 1e6:.3f}M")
        lines += [f"wrote {p}" for p in self.files.values() if p != self.path]
        trt = r.get("tensorrt")
        if trt:
            lines.append(f"TensorRT-ready: {len(trt['ops'])} op types, all in the TensorRT {trt['op_list_version']} "
                         "ONNX parser's list; static shapes")
            lines += [f"  {cmd}" for cmd in trt["trtexec"].values()]
            lines.append(f"  engine build: {trt['engine']['status']}")
        lines += [f"warning: {w}" for w in r.get("warnings", [])]
        lines.append(f"wrote {self.report_path}")
        return "\n".join(lines)


# ------------------------------------------------------------------ convert, run the files, check
def convert_and_check(runtime: Runtime, model, path, size, *, options=None, cases=None,
                      threads: Optional[int] = None, name: str = "model", seed: int = 0,
                      x_trace=None) -> dict:
    """Convert ``model`` (eval mode) to ``path`` and check every written file against PyTorch.

    ``options`` are the runtime's (``XnnpackOptions(split_depthwise=False, merge_repeated=False)``:
    the XNNPACK conversion without its rewrites, for a before/after measurement).  Returns the
    conversion's information with ``artifacts``, ``max_abs_diff`` and ``verification`` (one check
    per file run); raises ``ExportVerificationError`` when outputs differ (the caller then keeps
    nothing).
    """
    import torch

    options = runtime.make_options(options)
    if cases is None or x_trace is None:
        gen = torch.Generator().manual_seed(seed)
        x_trace = torch.randn((options.batch_size,) + tuple(size), generator=gen)
        cases = make_cases(model, [torch.randn((options.batch_size,) + tuple(size), generator=gen)])
    t0 = time.perf_counter()
    try:
        info = runtime.convert(model, x_trace, path, options, cases)
    except ExportError:
        raise
    except Exception as err:  # a converter's own error: say which runtime, in one line
        first = first_line(err)[:300]
        raise ExportError(f"{name}: conversion to {runtime.format} ({runtime.name}) failed: "
                          f"{type(err).__name__}: {first}") from err
    info["convert_seconds"] = round(time.perf_counter() - t0, 2)
    artifacts = info.pop("artifacts", None) or [
        Artifact(p.suffix.lstrip("."), p, "fp32" if i == 0 else None, runtime.check == "fp16")
        for i, p in enumerate(runtime.written_files(path))]
    checker = runtime.checker
    checks = []
    for artifact in artifacts:
        if artifact.variant is None:
            continue
        run = checker.load(artifact.path, threads)
        check = check_outputs(artifact.variant, checker.name, cases, [run(c.x) for c in cases],
                              fp16=artifact.fp16)
        if not check.passed:
            raise verification_error(name, check, checker.name, hint=(
                "The model probably has input-dependent Python control flow that tracing baked in, or the "
                f"{runtime.format} converter lowers an op differently; if not, report the model and the versions."))
        checks.append(check.to_dict())
    info["artifacts"] = artifacts
    info["max_abs_diff"] = checks[0]["max_abs_diff"]
    info["verification"] = checks
    return info


# ------------------------------------------------------------------ the export
def export(model_or_name: Union[str, Path, Any], runtime: Union[str, Runtime] = "onnx", options=None, *,
           output_dir: Union[str, Path] = ".", name: Optional[str] = None, weights=None,
           dataset: Optional[str] = None, input_size=None, allow_size_mismatch: bool = False, seed: int = 0,
           calibrate_bn: Optional[bool] = None, threads: Optional[int] = None, **option_fields) -> ExportResult:
    """Export a zoo network (name, alias, genotype file or ``nn.Module``) for ``runtime``.

    ``runtime``: a format (``onnx``, ``executorch``, ``tflite``, ``openvino``), a runtime with a
    converter (``tensorrt``) or a ``Runtime`` record.  ``options``: that record's options class
    (``OnnxOptions(opset, batch, dynamic_batch, fp16, trt, simplify)``, ``XnnpackOptions``), or
    its fields as keywords (``fp16=True``).  Writes ``output_dir/NAME<suffix>`` (and the files
    the converter adds: ``NAME.fp16.onnx``, ``NAME.trt.onnx``, OpenVINO's ``.bin``) and the report
    ``NAME.json``; raises ``ExportVerificationError`` (and writes nothing) if a written file,
    run in its runtime, disagrees with PyTorch.

    The network is exported in eval mode (logits only: no auxiliary head, no drop path) at a
    static spatial size, by default the entry's own (224 for ImageNet entries, 32 for CIFAR ones).
    ``calibrate_bn`` (default: True for a model built here without weights, else False) first sets
    the BatchNorm statistics from random inputs (``prepare.calibrate_batchnorm``): without it the
    check of a random-init network compares near-constant logits.  ``threads`` sets the checking
    runtime's thread count.
    """
    import torch

    runtime = export_runtime(runtime)
    out_dir = ensure_output_dir(output_dir)  # a bad -o or a missing runtime: one line, before any work
    runtime.require()
    runtime.checker.require()
    options = runtime.make_options(options, **option_fields).validate()
    prep = prepare_export(model_or_name, name=name, weights=weights, dataset=dataset, input_size=input_size,
                          allow_size_mismatch=allow_size_mismatch, batch=options.batch_size,
                          extra_batch=options.dynamic_batch, seed=seed, calibrate_bn=calibrate_bn)
    from ..profile import profile

    report_path = out_dir / f"{prep.stem}.json"
    with staging(out_dir) as tmp:
        info = convert_and_check(runtime, prep.model, tmp / f"{prep.stem}{runtime.suffix}", prep.size,
                                 options=options, cases=prep.cases, x_trace=prep.x_trace, threads=threads,
                                 name=prep.name)
        prof = profile(prep.model, prep.size)
        artifacts, verification = info.pop("artifacts"), info.pop("verification")
        info.pop("max_abs_diff")
        info = _relocated(info, str(tmp), str(out_dir))
        staged = {a.path: out_dir / a.path.name for a in artifacts}
        files = {a.key: out_dir / a.path.name for a in artifacts}
        report = {
            "name": prep.name, "source": prep.info["source"], "weights": prep.weights_label,
            "dataset": prep.info["dataset"], "format": runtime.format, "runtime": runtime.name,
            "runtime_versions": runtime.installed_versions(), "torch": torch.__version__,
            "input_size": list(prep.size), "native_input_size": prep.info["native_input_size"],
            "batch": "dynamic" if options.dynamic_batch else options.batch_size,
            **info,
            "params": prof.params, "macs": prof.macs, "macs_convention": MACS_CONVENTION,
            "verification": verification,
            "verification_input": f"standard normal, seed {seed}, a different draw from the traced input",
            "pytorch_fp32_error_vs_fp64": max(c.eps32 for c in prep.cases),
            "files": {k: p.name for k, p in files.items()},
            "warnings": prep.warnings,
        }
        staged_report = tmp / report_path.name
        write_staged(staged_report, (json.dumps(report, indent=2) + "\n").encode())
        commit(staged, (staged_report, report_path))
    main = files[artifacts[0].key]
    return ExportResult(prep.name, main, files, report, report_path)



def export_onnx(model_or_name: Union[str, Path, Any], output_dir: Union[str, Path] = ".", *,
                name: Optional[str] = None, weights: Optional[Union[str, Path]] = None,
                dataset: Optional[str] = None, opset: int = DEFAULT_OPSET, batch: Optional[int] = None,
                dynamic_batch: bool = False, input_size=None, fp16: bool = False, trt: bool = False,
                simplify: bool = True, allow_size_mismatch: bool = False, seed: int = 0,
                calibrate_bn: Optional[bool] = None, threads: Optional[int] = None):
    """``export(model, "onnx", OnnxOptions(...))`` with the options as keywords (the 0.x call);
    see :func:`export`."""
    options = OnnxOptions(opset=opset, batch=batch, dynamic_batch=dynamic_batch, fp16=fp16, trt=trt,
                          simplify=simplify)
    return export(model_or_name, "onnx", options, output_dir=output_dir, name=name, weights=weights,
                  dataset=dataset, input_size=input_size, allow_size_mismatch=allow_size_mismatch, seed=seed,
                  calibrate_bn=calibrate_bn, threads=threads)


def _relocated(value, staged: str, final: str):
    """The converter's information with the staged files' paths (TensorRT's trtexec commands) named
    where the files are moved to."""
    if isinstance(value, dict):
        return {k: _relocated(v, staged, final) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_relocated(v, staged, final) for v in value)
    if isinstance(value, Path):
        return Path(_relocated(str(value), staged, final))
    return value.replace(staged, final) if isinstance(value, str) else value
