"""``nasnetzoo bench``: latency of zoo networks on each runtime, next to torchvision's mobile nets.

For every model and batch size, the requested runtimes are timed side by side on the same input
(``timing.time_interleaved``); every runtime other than PyTorch runs the file exported and verified
from the very same ``nn.Module`` by the one export pipeline (``pipeline.export``), as its record in
``runtimes.RUNTIMES`` says.
Runtimes that cannot run here are reported as skipped with the reason; a runtime that fails on one
model is reported as failed for that model.

All networks have random weights.  Their BatchNorm statistics are calibrated on random inputs
(``calibrate_batchnorm``), so activations have a realistic scale (an uncalibrated random network's
activations fade towards zero cell after cell).  MACs are counted with ``nasnetzoo.profile``, one
convention for zoo and baselines alike.
"""
from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import ConfigError, first_line
from ..fileio import draw_optional
from ..text_table import text_table
from .errors import ExportError, require
from .files import ensure_output_dir, save_figure_atomic, write_text_atomic
from .timing import TimingPolicy, time_interleaved

BASELINES = ("mobilenet_v2", "mobilenet_v3_large", "shufflenet_v2_x1_0", "resnet18")
# Baselines that torchvision builds from another name with arguments (the papers' width variants).
BASELINE_VARIANTS = {"mobilenet_v2_1.4": ("mobilenet_v2", {"width_mult": 1.4})}
CSV_FIELDS = ("model", "kind", "runtime", "batch", "status", "reason", "median_ms", "p90_ms", "mean_ms",
              "min_ms", "iters", "warmup_runs", "stable", "throughput_ips", "macs", "params", "input_size",
              "threads", "partitions", "ops_outside")


@dataclass
class Subject:
    """A network to time: a zoo model or a torchvision baseline, at one input size."""

    name: str
    model: object
    size: tuple          # (C, H, W)
    kind: str            # "zoo" | "baseline"
    macs: int
    params: int
    reported: dict = field(default_factory=dict)  # madds_m, params_m, top1_err where known


@dataclass
class Row:
    model: str
    kind: str
    runtime: str
    batch: int
    status: str                       # "ok" | "skipped" | "failed"
    reason: str = ""
    median_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    mean_ms: Optional[float] = None
    min_ms: Optional[float] = None
    iters: int = 0
    warmup_runs: int = 0
    stable: Optional[bool] = None
    throughput_ips: Optional[float] = None
    macs: int = 0
    params: int = 0
    input_size: str = ""
    threads: int = 0
    partitions: Optional[int] = None  # ExecuTorch: XNNPACK partitions of the program timed
    ops_outside: str = ""             # ExecuTorch: ops left outside the delegate (portable kernels)


@dataclass
class BenchResult:
    rows: list
    subjects: list
    method: str
    machine: dict
    files: dict = field(default_factory=dict)

    def ok(self, runtime: Optional[str] = None, batch: Optional[int] = None) -> list:
        return [r for r in self.rows if r.status == "ok" and (runtime is None or r.runtime == runtime)
                and (batch is None or r.batch == batch)]

    def table(self) -> str:
        rows = [[r.model, r.runtime, str(r.batch), f"{r.median_ms:.2f}", f"{r.p90_ms:.2f}",
                 f"{r.throughput_ips:.1f}", str(r.iters), "yes" if r.stable else "no", f"{r.macs / 1e6:.0f}"]
                for r in self.rows if r.status == "ok"]
        text = text_table(["model", "runtime", "batch", "median ms", "p90 ms", "img/s", "runs", "stable",
                       "MACs (M)"], rows) if rows else "(no runtime could be measured)"
        other = {(r.runtime, r.status, r.reason) for r in self.rows if r.status != "ok"}
        for key in sorted(other):
            runtime, status, reason = key
            models = sorted({r.model for r in self.rows if (r.runtime, r.status, r.reason) == key})
            which = "all models" if len(models) == len(self.subjects) else ", ".join(models)
            text += f"\n{runtime}: {status} ({which}): {reason}"
        return text

    def summary(self) -> str:
        lines = [self.table(), "", f"method: {self.method}",
                 f"machine: {self.machine.get('cpu_model')}, {self.machine.get('threads')} threads, torch "
                 f"{self.machine.get('torch')}, onnxruntime {self.machine.get('onnxruntime')}"]
        lines += [f"wrote {p}" for p in self.files.values()]
        return "\n".join(lines)


# ------------------------------------------------------------------ subjects
def _load_zoo(name: str, input_size, calibrate: bool) -> Subject:
    from ..factory import load_with_spec
    from ..profile import profile
    from .prepare import calibrate_batchnorm, resolve_input_size

    spec, model = load_with_spec(name)
    info = {"native_input_size": list(spec.data["input_size"]), "dataset": spec.dataset}
    size, _ = resolve_input_size(spec.name, info, input_size, allow_size_mismatch=False)
    if calibrate:
        calibrate_batchnorm(model, size)
    model.eval()
    prof = profile(model, size)
    reported = {}
    if spec.entry is not None:
        rep = spec.entry.reported
        reported = {k: rep[k] for k in ("madds_m", "params_m", "top1_err") if k in rep}
        if "source" in rep:
            reported["source"] = rep["source"]
        if "madds_m" in spec.entry.computed:
            reported["reference_madds_m"] = spec.entry.computed["madds_m"]
        if spec.entry.notes:
            reported["notes"] = spec.entry.notes
    return Subject(spec.name, model, size, "zoo", prof.macs, prof.params, reported)


def load_baseline(name: str, size: Sequence[int], calibrate: bool = True) -> Subject:
    """A torchvision network with random weights (``weights=None``), BN calibrated like the zoo's.

    ``name`` is a torchvision model name or one of ``BASELINE_VARIANTS`` (``mobilenet_v2_1.4``)."""
    import torchvision

    from ..profile import profile
    from .prepare import calibrate_batchnorm

    base, kwargs = BASELINE_VARIANTS.get(name, (name, {}))
    if base not in torchvision.models.list_models(module=torchvision.models):
        from ..errors import did_you_mean
        known = list(BASELINES) + list(BASELINE_VARIANTS)
        raise ConfigError(f"unknown baseline {name!r}.{did_you_mean(name, known)} Baselines: "
                          f"{', '.join(known)} (any torchvision classification model name works).")
    model = torchvision.models.get_model(base, weights=None, **kwargs)
    size = tuple(int(v) for v in size)
    if calibrate:
        calibrate_batchnorm(model, size)
    model.eval()
    prof = profile(model, size)
    reported = {}
    try:  # the accuracy torchvision publishes for its own weights, for context only
        if kwargs:
            raise LookupError("no published weights for this width")
        meta = torchvision.models.get_model_weights(base).DEFAULT.meta
        acc = meta["_metrics"]["ImageNet-1K"]["acc@1"]
        reported = {"top1_err": round(100 - acc, 3), "source": f"torchvision {name} DEFAULT weights meta (acc@1 {acc})"}
    except Exception:
        pass
    return Subject(name, model, size, "baseline", prof.macs, prof.params, reported)


# ------------------------------------------------------------------ runners
def _make_runners(subject: Subject, batch: int, runtimes: Sequence[str], reasons: dict, x: np.ndarray,
                  tmp: Path, threads: int) -> tuple[dict, dict]:
    """({runtime: runner}, {runtime: (status, reason)}, {runtime: conversion info}) for one subject
    and batch."""
    from .runtimes import RUNTIMES, torch_compile_runner, torch_runner

    runners, problems, files, programs = {}, {}, {}, {}
    for name in runtimes:
        if reasons.get(name):
            problems[name] = ("skipped", reasons[name])
            continue
        runtime = RUNTIMES[name]
        try:
            if name == "torch":
                runners[name] = torch_runner(subject.model, x)
            elif name == "torch-compile":
                runners[name] = torch_compile_runner(subject.model, x)
            else:
                key = (runtime.converter, runtime.preset, runtime.suffix)  # ort-cpu and ort-cuda: one file
                if key not in files:
                    files[key], programs[name] = _export(subject, batch, tmp, threads, runtime)
                runners[name] = runtime.runner(files[key], x, threads)
        except Exception as err:  # one runtime failing on one model must not stop the others
            msg = first_line(err)
            status = "skipped" if name == "torch-compile" else "failed"
            problems[name] = (status, f"{type(err).__name__}: {msg[:300]}")
    return runners, problems, programs


def _export(subject: Subject, batch: int, tmp: Path, threads: int, runtime) -> tuple[Path, dict]:
    """The file ``runtime`` runs, exported from the subject's module by the one pipeline and checked
    against it, and what the conversion said (ExecuTorch: partitions, ops outside the delegate)."""
    from .pipeline import export

    fields = {"batch": batch} if "batch" in runtime.options.field_names() else {}
    if not fields and batch != 1:
        raise ExportError(f"{runtime.name} programs are exported at batch 1 here; time it with --batch-size 1")
    stem = f"{subject.name}_b{batch}"
    result = export(subject.model, runtime, output_dir=tmp / runtime.name, name=stem, input_size=subject.size[1:],
                    allow_size_mismatch=True, calibrate_bn=False, threads=threads, **fields)
    path = result.report_path.parent / f"{stem}{runtime.suffix}"
    keep = ("name", "source", "weights", "dataset", "runtime_versions", "torch", "input_size",
            "native_input_size", "params", "macs", "macs_convention", "verification", "verification_input",
            "pytorch_fp32_error_vs_fp64", "files", "warnings", "format", "runtime", "batch")
    return path, {k: v for k, v in result.report.items() if k not in keep}


# ------------------------------------------------------------------ the benchmark
def benchmark(names: Sequence[str], *, runtimes: Sequence[str] = ("torch", "ort-cpu"),
              batches: Sequence[int] = (1,), threads: Optional[int] = None, iters: Optional[int] = None,
              max_time: float = 20.0, input_size=None, baselines: Sequence[str] = BASELINES,
              output_dir=None, policy: Optional[TimingPolicy] = None, plot: bool = True,
              echo: Optional[Callable[[str], None]] = None, seed: int = 0,
              file_stem: str = "bench") -> BenchResult:
    """Time ``names`` (and ``baselines`` at the same input sizes) on ``runtimes`` at ``batches``.

    Writes ``bench.csv``, ``bench.json`` and ``bench.png`` (latency against MACs per runtime, the
    Pareto front marked) to ``output_dir`` when it is given.
    """
    import torch

    from .machine import machine_info
    from .runtimes import parse_runtimes, unavailable_reason

    runtimes = parse_runtimes(runtimes)
    if output_dir is not None:
        ensure_output_dir(output_dir)  # a bad -o fails now, not after minutes of timing
    batches = [int(b) for b in batches]
    if not batches or min(batches) < 1:
        raise ConfigError(f"batch sizes {batches} must be positive integers.")
    policy = policy or TimingPolicy(iters=iters, max_time=max_time)
    say = echo or (lambda _msg: None)
    old_threads = torch.get_num_threads()
    threads = int(threads or old_threads)
    if threads < 1:
        raise ConfigError(f"--threads {threads} is not a positive integer.")
    torch.set_num_threads(threads)
    try:
        reasons = {rt: unavailable_reason(rt) for rt in runtimes}
        torch.manual_seed(seed)   # the same random weights every run, so a rerun times (and checks) the same models
        subjects = [_load_zoo(n, input_size, calibrate=True) for n in names]
        for size in dict.fromkeys(s.size for s in subjects):
            subjects += [load_baseline(b, size) for b in baselines]
        machine = machine_info(threads)
        rows: list[Row] = []
        rng = np.random.default_rng(seed)
        with tempfile.TemporaryDirectory(prefix="nasnetzoo-bench-") as tmp:
            for i, subject in enumerate(subjects, 1):
                for batch in batches:
                    x = rng.standard_normal((batch,) + tuple(subject.size), dtype=np.float32)
                    say(f"[{i}/{len(subjects)}] {subject.name} ({'x'.join(map(str, subject.size))}, batch {batch}): "
                        f"preparing {', '.join(rt for rt in runtimes if not reasons[rt]) or 'nothing'}")
                    runners, problems, programs = _make_runners(subject, batch, runtimes, reasons, x, Path(tmp),
                                                                threads)
                    timings = time_interleaved(runners, policy)
                    common = dict(model=subject.name, kind=subject.kind, batch=batch, macs=subject.macs,
                                  params=subject.params, input_size="x".join(map(str, subject.size)),
                                  threads=threads)
                    for runtime in runtimes:
                        if runtime in problems:
                            status, reason = problems[runtime]
                            rows.append(Row(runtime=runtime, status=status, reason=reason, **common))
                            continue
                        t = timings[runtime]
                        prog = programs.get(runtime, {})
                        rows.append(Row(runtime=runtime, status="ok", median_ms=t.median_ms, p90_ms=t.p90_ms,
                                        mean_ms=t.mean_ms, min_ms=t.min_ms, iters=t.iters,
                                        warmup_runs=t.warmup_runs, stable=t.stable,
                                        throughput_ips=t.throughput(batch), partitions=prog.get("partitions"),
                                        ops_outside=", ".join(prog.get("ops_outside", [])), **common))
                        say(f"    {runtime:<13} median {t.median_ms:8.2f} ms  p90 {t.p90_ms:8.2f} ms  "
                            f"({t.iters} runs{'' if t.stable else ', not stable'})")
                    for runtime, (status, reason) in problems.items():
                        if status == "failed":
                            say(f"    {runtime:<13} failed: {reason}")
    finally:
        torch.set_num_threads(old_threads)
    result = BenchResult(rows, subjects, policy.describe(), machine)
    if output_dir is not None:
        write_outputs(result, Path(output_dir), stem=file_stem, plot=plot, note=say)
    return result


# ------------------------------------------------------------------ outputs
def to_json(result: BenchResult) -> dict:
    return {
        "method": result.method,
        "machine": result.machine,
        "models": [{"name": s.name, "kind": s.kind, "input_size": list(s.size), "macs": s.macs,
                    "params": s.params, "reported": s.reported} for s in result.subjects],
        "results": [asdict(r) for r in result.rows],
    }


def write_outputs(result: BenchResult, out_dir: Path, stem: str = "bench", plot: bool = True,
                  note: Optional[Callable[[str], None]] = None) -> dict:
    """CSV, plot, then JSON (last), each written atomically.  Without matplotlib the plot is left
    out and ``note`` gets one line naming the 'plot' extra."""
    import io

    out_dir = ensure_output_dir(out_dir)
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(row).items()})
    write_text_atomic(csv_path, buf.getvalue())
    result.files["csv"] = csv_path
    if plot:
        png = out_dir / f"{stem}.png"
        if draw_optional(lambda: plot_latency_vs_macs(result.rows, png), png, note):
            result.files["plot"] = png
    write_text_atomic(json_path, json.dumps(to_json(result), indent=2, default=str) + "\n")
    result.files["json"] = json_path
    return result.files


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both minimised), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best_y = [], float("inf")
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def plot_latency_vs_macs(rows: Sequence[Row], path: Path, title: str = "") -> Path:
    """Median latency against MACs, one panel per (batch, runtime); the Pareto front (fewest MACs
    and lowest latency: no other network is both cheaper and faster) is joined and ringed."""
    require("matplotlib", "The latency plot", "matplotlib", extra="plot")

    ok = [r for r in rows if r.status == "ok"]
    runtimes = list(dict.fromkeys(r.runtime for r in ok))
    batches = sorted({r.batch for r in ok})
    if not ok:
        fig, axes = _figure(1, 1, (6, 3))
        ax = axes[0][0]
        ax.axis("off")
        ax.text(0.5, 0.5, "no runtime could be measured\n" + "\n".join(
            sorted({f"{r.runtime}: {r.reason[:70]}" for r in rows})), ha="center", va="center", fontsize=8)
        return save_figure_atomic(fig, path, dpi=120, bbox_inches="tight")
    # One panel per (batch, runtime), wrapped two to a row: a report page is about two panels wide.
    panels = [(batch, runtime) for batch in batches for runtime in runtimes]
    cols = min(len(panels), 2)
    rows_n = -(-len(panels) // cols)
    fig, axes = _figure(rows_n, cols, (5.6 * cols, 4.2 * rows_n))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for ax, (batch, runtime) in zip(axes.flat, panels):
        sel = [r for r in ok if r.runtime == runtime and r.batch == batch]
        pts = [(r.macs / 1e6, r.median_ms) for r in sel]
        for r, (mx, ms) in zip(sel, pts):
            zoo = r.kind == "zoo"
            ax.scatter(mx, ms, marker="o" if zoo else "s", s=36,
                       color="tab:blue" if zoo else "tab:orange", zorder=3)
        _label_points(ax, [r.model for r in sel], pts)
        front = pareto_front(pts)
        if front:
            fx, fy = zip(*[pts[i] for i in front])
            ax.plot(fx, fy, "--", color="tab:green", lw=1.2, zorder=2, label="Pareto front")
            ax.scatter(fx, fy, s=130, facecolors="none", edgecolors="tab:green", lw=1.4, zorder=4)
        ax.scatter([], [], marker="o", color="tab:blue", label="nasnetzoo")
        ax.scatter([], [], marker="s", color="tab:orange", label="torchvision baseline")
        ax.set_xlabel("MACs (M, conv + linear)")
        ax.set_ylabel("median latency (ms)")
        ax.set_title(f"{runtime}, batch {batch}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure_atomic(fig, path, dpi=120, bbox_inches="tight")


def _label_points(ax, names: Sequence[str], pts: Sequence[tuple[float, float]], gap_pt: float = 9.0) -> None:
    """Name each point, the labels stacked upwards so that no two overlap (networks of similar MACs
    and latency crowd together); a thin leader joins a label pushed away from its point."""
    ax.autoscale_view()
    to_points = 72.0 / ax.figure.dpi
    ys = [ax.transData.transform(p)[1] * to_points for p in pts]
    placed: list[tuple[float, float]] = []  # (x in points, label y in points) of labels so far
    for i in sorted(range(len(pts)), key=lambda i: ys[i]):
        x = ax.transData.transform(pts[i])[0] * to_points
        y = ys[i] + 3
        for px, py in sorted(placed, key=lambda p: p[1]):
            if abs(px - x) < 90 and abs(py - y) < gap_pt:  # a label about as wide, too close
                y = py + gap_pt
        placed.append((x, y))
        dy = y - ys[i]
        ax.annotate(names[i], pts[i], textcoords="offset points", xytext=(6, dy), fontsize=7, va="bottom",
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="0.5") if dy > gap_pt else None)


def _figure(rows: int, cols: int, figsize):
    """A matplotlib Figure with its own canvas: no pyplot, so the caller's backend is left alone."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=False)
