"""Export to the runtimes phones use, checked against PyTorch: ExecuTorch (XNNPACK), LiteRT, OpenVINO.

Each format is converted from the eval-mode ``nn.Module`` at a static input size (the record's
converter in ``runtimes.RUNTIMES``, implemented in ``mobile``), written to a staging folder, loaded
back *from the written file* in its own runtime and run on inputs other than the one it was
traced with; its logits must match PyTorch's within the fp32 bound of ``checks`` (the one the ONNX
export uses) or nothing is written.  Then the files are moved into place and the JSON report is
written last (``files``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .checks import check_outputs, verification_error
from ..errors import first_line
from .errors import ExportError
from .files import commit, ensure_output_dir, staging
from .prepare import prepare_export
from .runtimes import Runtime, runtime_for_format


def companion_files(runtime: Runtime, path: Path) -> list[Path]:
    """The files a runtime's program consists of (OpenVINO: the .xml and its .bin)."""
    return [path, path.with_suffix(".bin")] if runtime.name == "openvino" else [path]


# ------------------------------------------------------------------ convert, run the file, check
def convert_and_check(runtime: Runtime, model, path, size, *, cases=None, threads: Optional[int] = None,
                      name: str = "model", seed: int = 0, x_trace=None, convert_options=None) -> dict:
    """Convert ``model`` (eval mode) to ``path`` and check the written file against PyTorch.

    ``convert_options`` go to the runtime's converter (``split_depthwise=False``,
    ``merge_repeated=False``: the XNNPACK conversion without its rewrites, for a before/after
    measurement).

    Returns the conversion's information with ``max_abs_diff`` and the ``verification``;
    raises ``ExportVerificationError`` when the outputs differ (the caller then keeps nothing).
    """
    import torch

    from .checks import make_cases

    if cases is None or x_trace is None:
        gen = torch.Generator().manual_seed(seed)
        x_trace = torch.randn((1,) + tuple(size), generator=gen)
        cases = make_cases(model, [torch.randn((1,) + tuple(size), generator=gen)])
    t0 = time.perf_counter()
    try:
        info = runtime.convert(model, x_trace, path, **(convert_options or {}))
    except ExportError:
        raise
    except Exception as err:  # a converter's own error: say which runtime, in one line
        first = first_line(err)[:300]
        raise ExportError(f"{name}: conversion to {runtime.format} ({runtime.name}) failed: "
                          f"{type(err).__name__}: {first}") from err
    info["convert_seconds"] = round(time.perf_counter() - t0, 2)
    run = runtime.load(path, threads)
    check = check_outputs(runtime.format, runtime.name, cases, [run(c.x) for c in cases],
                          fp16=runtime.check == "fp16")
    if not check.passed:
        raise verification_error(name, check, runtime.name, hint=f"The {runtime.name} program computes "
                                 "something else than PyTorch; report the model and the versions.")
    info["max_abs_diff"] = check.max_abs_diff
    info["verification"] = check.to_dict()
    return info


@dataclass
class MobileExportResult:
    name: str
    path: Path
    report_path: Path
    report: dict
    files: dict = field(default_factory=dict)

    def summary(self) -> str:
        r = self.report
        v = r["verification"][0]
        lines = [f"wrote {self.path}  ({r['format']}, {r['runtime']})"]
        if "partitions" in r:
            outside = ", ".join(f"{op} x{n}" for op, n in sorted(r["ops_outside_counts"].items())) or "none"
            lines.append(f"  XNNPACK partitions: {r['partitions']}; ops outside the delegate: {outside}")
        if r.get("depthwise_split"):
            lines.append(f"  depthwise convolutions above XNNPACK's 25 taps, split into row bands: {r['depthwise_split']}")
        lines.append(f"  verified {v['variant']} in {v['runtime']}: max |{r['runtime']} - PyTorch| = "
                     f"{v['max_abs_diff']:.2e} (tolerance {v['tolerance']})")
        lines.append(f"  input {[1] + r['input_size']}, MACs {r['macs'] / 1e6:.1f}M, params {r['params'] / 1e6:.3f}M")
        lines += [f"wrote {p}" for k, p in self.files.items() if p != self.path]
        lines += [f"warning: {w}" for w in r.get("warnings", [])]
        lines.append(f"wrote {self.report_path}")
        return "\n".join(lines)


def export_mobile(model_or_name: Union[str, Path, Any], format: str, output_dir: Union[str, Path] = ".", *,
                  name: Optional[str] = None, weights=None, dataset: Optional[str] = None, input_size=None,
                  allow_size_mismatch: bool = False, seed: int = 0, calibrate_bn: Optional[bool] = None,
                  threads: Optional[int] = None) -> MobileExportResult:
    """Export to ``format`` (executorch, tflite or openvino), checked in its runtime; see the module doc."""
    import torch

    runtime = runtime_for_format(format)
    out_dir = ensure_output_dir(output_dir)  # a bad -o or a missing runtime: one line, before any work
    runtime.require()
    prep = prepare_export(model_or_name, name=name, weights=weights, dataset=dataset, input_size=input_size,
                          allow_size_mismatch=allow_size_mismatch, seed=seed, calibrate_bn=calibrate_bn)
    from ..profile import profile

    target = out_dir / f"{prep.stem}{runtime.suffix}"
    report_path = out_dir / f"{prep.stem}.json"
    with staging(out_dir) as tmp:
        staged_path = tmp / target.name
        info = convert_and_check(runtime, prep.model, staged_path, prep.size, cases=prep.cases,
                                 x_trace=prep.x_trace, threads=threads, name=prep.name)
        prof = profile(prep.model, prep.size)
        verification = info.pop("verification")
        info.pop("max_abs_diff")
        staged = {p: out_dir / p.name for p in companion_files(runtime, staged_path)}
        files = {p.suffix.lstrip("."): dst for p, dst in staged.items()}
        report = {
            "name": prep.name, "source": prep.info["source"], "weights": prep.weights_label,
            "dataset": prep.info["dataset"], "format": runtime.format, "runtime": runtime.name,
            "runtime_versions": _versions(runtime), "torch": torch.__version__,
            "input_size": list(prep.size), "native_input_size": prep.info["native_input_size"], "batch": 1,
            **info,
            "params": prof.params, "macs": prof.macs,
            "verification": [verification],
            "verification_input": f"standard normal, seed {seed}, a different draw from the traced input",
            "pytorch_fp32_error_vs_fp64": max(c.eps32 for c in prep.cases),
            "files": {k: p.name for k, p in files.items()},
            "warnings": prep.warnings,
        }
        staged_report = tmp / report_path.name
        staged_report.write_text(json.dumps(report, indent=2) + "\n")
        commit(staged, (staged_report, report_path))
    return MobileExportResult(prep.name, target, report_path, report, files)


def _versions(runtime: Runtime) -> dict:
    from importlib import metadata

    names = {"executorch": ["executorch"], "litert": ["litert-torch", "ai-edge-litert"],
             "openvino": ["openvino"]}.get(runtime.name, [])
    out = {}
    for dist in names:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out
