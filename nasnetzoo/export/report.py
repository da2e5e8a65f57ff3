"""The mobile-regime report: do the NAS papers' "mobile" networks (< 600M multiply-adds) run like
mobile networks?

Every ImageNet mobile entry at 224x224: MACs measured with ``nasnetzoo.profile`` next to the
paper's mult-adds (the 600M check for both), params, and latency on each runtime available here,
next to torchvision's MobileNetV2, MobileNetV3-Large, ShuffleNetV2 1.0 and ResNet-18 on the same
runtimes and inputs.  Each latency is also set against the network's compute bound, MACs over the
CPU's measured peak MAC rate (``machine.measure_peak_macs``).  Writes
``mobile_report_{cpu|gpu}.md``, ``.json`` and ``.png`` (``gpu`` when a GPU runtime was measured).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .bench import BASELINES, BenchResult, benchmark, plot_latency_vs_macs, to_json
from .runtimes import GPU_RUNTIMES

MOBILE_MODELS = ("nasnet_a_mobile", "amoebanet_a_mobile", "pnasnet5_mobile", "darts_v2_imagenet",
                 "pcdarts_imagenet", "pdarts_imagenet", "gdas_imagenet")
MOBILE_MACS_LIMIT_M = 600
REPORT_RUNTIMES = ("torch", "ort-cpu", "ort-cuda", "tensorrt")
REFERENCE_BASELINE = "mobilenet_v2"


@dataclass
class ReportResult:
    files: dict
    data: dict
    markdown: str = field(repr=False, default="")

    def summary(self) -> str:
        return "\n".join(f"wrote {p}" for p in self.files.values())


def compute_bound_ms(macs: int, peak_macs_per_s: Optional[float]) -> Optional[float]:
    return None if not peak_macs_per_s else 1e3 * macs / peak_macs_per_s


def _fmt(v, spec="{:.2f}", none="-"):
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else spec.format(v)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _geomean(values: Sequence[float]) -> Optional[float]:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def mobile_report(output_dir="export", *, runtimes: Sequence[str] = REPORT_RUNTIMES,
                  batches: Sequence[int] = (1,), threads: Optional[int] = None, iters: Optional[int] = None,
                  max_time: float = 20.0, baselines: Sequence[str] = BASELINES,
                  models: Sequence[str] = MOBILE_MODELS, measure_peak: bool = True, policy=None,
                  echo: Optional[Callable[[str], None]] = None) -> ReportResult:
    """Benchmark the mobile entries at 224x224 and write the report (markdown, JSON, plot)."""
    from .machine import combine_peaks, measure_peak_macs

    before = measure_peak_macs(threads) if measure_peak else None
    bench = benchmark(list(models), runtimes=runtimes, batches=batches, threads=threads, iters=iters,
                      max_time=max_time, input_size=(224, 224), baselines=list(baselines), output_dir=None,
                      policy=policy, echo=echo)
    peak = combine_peaks(before, measure_peak_macs(threads)) if measure_peak else None
    gpu = any(r.runtime in GPU_RUNTIMES for r in bench.ok())
    stem = f"mobile_report_{'gpu' if gpu else 'cpu'}"
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out / f"{stem}.md", "json": out / f"{stem}.json", "plot": out / f"{stem}.png"}
    data = {**to_json(bench), "peak": peak, "macs_limit_m": MOBILE_MACS_LIMIT_M,
            "analysis": analyse(bench, peak)}
    plot_latency_vs_macs(bench.rows, files["plot"],
                         title=f"ImageNet mobile networks at 224x224 - {bench.machine['cpu_model']}")
    markdown = render_markdown(bench, peak, data["analysis"], files["plot"].name)
    files["markdown"].write_text(markdown)
    files["json"].write_text(json.dumps(data, indent=2, default=str) + "\n")
    return ReportResult(files, data, markdown)


def analyse(bench: BenchResult, peak: Optional[dict]) -> dict:
    """Per model and runtime: latency, ratio to eager and to MobileNetV2, latency over compute bound."""
    peak_rate = peak["peak_macs_per_s"] if peak else None
    out: dict = {}
    for batch in sorted({r.batch for r in bench.rows}):
        per_model: dict = {}
        ref = {r.runtime: r for r in bench.ok(batch=batch) if r.model == REFERENCE_BASELINE}
        eager = {r.model: r for r in bench.ok("torch", batch)}
        for r in bench.ok(batch=batch):
            bound = compute_bound_ms(r.macs * batch, peak_rate)
            entry = per_model.setdefault(r.model, {"kind": r.kind, "macs": r.macs, "runtimes": {}})
            entry["runtimes"][r.runtime] = {
                "median_ms": r.median_ms, "p90_ms": r.p90_ms, "throughput_ips": r.throughput_ips,
                "stable": r.stable,
                "speedup_over_eager": eager[r.model].median_ms / r.median_ms if r.model in eager else None,
                "vs_mobilenet_v2": r.median_ms / ref[r.runtime].median_ms if r.runtime in ref else None,
                "compute_bound_ms": bound,
                "latency_over_bound": r.median_ms / bound if bound else None,
                "effective_gmacs_per_s": r.macs * batch / r.median_ms / 1e6,
            }
        out[str(batch)] = per_model
    return out


def render_markdown(bench: BenchResult, peak: Optional[dict], analysis: dict, plot_name: str) -> str:
    m = bench.machine
    subjects = {s.name: s for s in bench.subjects}
    zoo = [s for s in bench.subjects if s.kind == "zoo"]
    runtimes = list(dict.fromkeys(r.runtime for r in bench.rows))
    measured = [rt for rt in runtimes if bench.ok(rt)]
    lines = ["# Mobile regime: measured MACs and latency of the NAS mobile networks", "",
             "Generated by `nasnetzoo bench --mobile-report`. All networks have random weights (latency "
             "does not depend on them); BatchNorm statistics are calibrated on random inputs so that "
             "activations have a realistic scale. Input 3x224x224.", "",
             "## Machine", ""]
    load = m.get("load_average_1m_at_start")
    lines += [
        f"- CPU: **{m['cpu_model']}** (family/model/stepping {m['cpu_family_model_stepping']}"
        f"{', virtualized' if m.get('virtualized') else ''}), {m.get('physical_cores') or '?'} physical cores, "
        f"{m['logical_cpus']} logical CPUs; ISA: {', '.join(m['isa']) or '-'}",
        f"- Threads: {m['threads']} (torch.set_num_threads and ONNX Runtime intra-op threads)",
        f"- Software: Python {m['python']}, torch {m['torch']}, torchvision {m.get('torchvision')}, "
        f"onnx {m.get('onnx')}, onnxruntime {m.get('onnxruntime')}, onnxslim {m.get('onnxslim')}; {m['os']}",
        f"- Date: {m['date_utc']}; 1-minute load average at start: {load}"
        + (" (**busy machine: the figures are noisy**)" if load is not None and load > 0.5 * m['threads'] else ""),
    ]
    if m.get("gpu"):
        lines.append(f"- GPU: {m['gpu']}")
    if peak:
        lines += [f"- Peak fp32 MAC rate: **{peak['peak_macs_per_s'] / 1e9:.1f} GMAC/s** (matmul "
                  f"{peak['matmul_macs_per_s'] / 1e9:.1f}, conv {peak['conv_macs_per_s'] / 1e9:.1f}); "
                  f"{peak['method']}" + (f". **Note: {peak['note']}.**" if peak.get("note") else "")]
    lines += ["", "## The 600M mult-add check", "",
              "MACs: conv + linear multiply-accumulates for one 224x224 image in eval mode, auxiliary "
              "head excluded, counted by PyTorch's FLOP counter (`nasnetzoo.profile`); the paper column "
              "is the figure the paper reports, the reference column the same count on the official code "
              "(`nasnetzoo info NAME`).", ""]
    rows = []
    for s in zoo:
        rep = s.reported
        paper = rep.get("madds_m")
        rows.append([s.name, _fmt(paper, "{:g}"), _fmt(rep.get("reference_madds_m"), "{:.1f}"), f"{s.macs / 1e6:.1f}",
                     "-" if paper is None else ("yes" if paper < MOBILE_MACS_LIMIT_M else "**no**"),
                     "yes" if s.macs / 1e6 < MOBILE_MACS_LIMIT_M else "**no**",
                     f"{s.params / 1e6:.2f}", _fmt(rep.get("params_m"), "{:g}"), _fmt(rep.get("top1_err"), "{:g}")])
    for s in bench.subjects:
        if s.kind == "baseline":
            rows.append([f"{s.name} (torchvision)", "-", "-", f"{s.macs / 1e6:.1f}", "-",
                         "yes" if s.macs / 1e6 < MOBILE_MACS_LIMIT_M else "**no**", f"{s.params / 1e6:.2f}", "-",
                         _fmt(s.reported.get("top1_err"), "{:.1f}")])
    lines.append(_md_table(["model", "paper mult-adds (M)", "reference (M)", "measured MACs (M)", "< 600M (paper)",
                            "< 600M (measured)", "params (M)", "paper params (M)", "top-1 err % (reported)"], rows))
    notes = [(s.name, s.reported["notes"]) for s in zoo if "mult-add" in s.reported.get("notes", "")]
    if notes:
        lines += [""] + [f"- {name}: {note}" for name, note in notes]
    lines += ["", "Top-1 errors are the papers' (torchvision's for its own published weights); the "
              "networks timed here have random weights."]
    lines += ["", "## Latency", "", f"Method: {bench.method}", ""]
    if peak:
        lines += ["`latency / bound` is the median latency over the compute bound, MACs / peak MAC rate: "
                  "how many times slower than the CPU's best dense kernel would run the same "
                  "multiply-accumulates.", ""]
    for batch, per_model in analysis.items():
        headers = ["model", "MACs (M)"] + [f"{rt} median ms (p90)" for rt in measured]
        if "torch" in measured:
            headers += [f"eager / {rt}" for rt in measured if rt != "torch"]
        headers += [f"vs MobileNetV2 ({rt})" for rt in measured]
        if peak:
            headers += [f"latency / bound ({rt})" for rt in measured]
        rows = []
        for name in [s.name for s in bench.subjects]:
            entry = per_model.get(name)
            if entry is None:
                continue
            rts = entry["runtimes"]
            row = [name if subjects[name].kind == "zoo" else f"{name} (torchvision)", f"{entry['macs'] / 1e6:.0f}"]
            row += [f"{rts[rt]['median_ms']:.2f} ({rts[rt]['p90_ms']:.2f})" + ("" if rts[rt]["stable"] else "*")
                    if rt in rts else "-" for rt in measured]
            if "torch" in measured:
                row += [_fmt(rts.get(rt, {}).get("speedup_over_eager"), "{:.2f}x") for rt in measured if rt != "torch"]
            row += [_fmt(rts.get(rt, {}).get("vs_mobilenet_v2"), "{:.2f}x") for rt in measured]
            if peak:
                row += [_fmt(rts.get(rt, {}).get("latency_over_bound"), "{:.1f}") for rt in measured]
            rows.append(row)
        lines += [f"### Batch {batch}", "", _md_table(headers, rows), ""]
        if any(not r.stable for r in bench.ok(batch=int(batch))):
            lines += ["`*`: the median had not settled when the time limit was reached.", ""]
        lines += _observations(per_model, measured, zoo)
    skipped = sorted({(r.runtime, r.status, r.reason) for r in bench.rows if r.status != "ok"})
    if skipped:
        lines += ["## Runtimes not measured", ""]
        for runtime, status, reason in skipped:
            models = sorted({r.model for r in bench.rows if (r.runtime, r.reason) == (runtime, reason)})
            which = "" if len(models) == len(bench.subjects) else f" ({', '.join(models)})"
            lines.append(f"- **{runtime}**: {status}{which}: {reason}")
        if any(rt == "tensorrt" for rt, _, _ in skipped):
            lines.append("- TensorRT engines were **not built or timed here**. `nasnetzoo export NAME --trt` "
                         "writes the TensorRT-ready graphs and the `trtexec` commands that build them.")
        lines.append("")
    lines += ["## Plot", "", f"![latency against MACs]({plot_name})", "",
              "Median latency against MACs per runtime; the dashed line joins the Pareto front "
              "(networks that no other network beats on both MACs and latency).", ""]
    return "\n".join(lines)


def _observations(per_model: dict, measured: Sequence[str], zoo) -> list[str]:
    lines = ["Observations:", ""]
    names = [s.name for s in zoo if s.name in per_model]
    over = [s.name for s in zoo if s.macs / 1e6 >= MOBILE_MACS_LIMIT_M]
    lines.append(f"- Measured MACs: {'all under' if not over else 'over'} 600M"
                 + (f" ({', '.join(over)})" if over else f" ({len(names)} of {len(names)} mobile entries)") + ".")
    for rt in measured:
        vs = {n: per_model[n]["runtimes"].get(rt, {}).get("vs_mobilenet_v2") for n in names}
        vs = {n: v for n, v in vs.items() if v}
        if vs:
            lo, hi = min(vs, key=vs.get), max(vs, key=vs.get)
            lines.append(f"- {rt}: the NAS mobile networks take {vs[lo]:.1f}x ({lo}) to {vs[hi]:.1f}x ({hi}) "
                         "the latency of MobileNetV2.")
    for rt in measured:
        if rt == "torch":
            continue
        sp = {n: per_model[n]["runtimes"].get(rt, {}).get("speedup_over_eager") for n in names}
        sp = {n: v for n, v in sp.items() if v}
        if sp:
            lo = min(sp, key=sp.get)
            lines.append(f"- {rt} over PyTorch eager: geometric mean {_geomean(list(sp.values())):.2f}x, "
                         f"lowest {sp[lo]:.2f}x ({lo}); at least 2x for {sum(v >= 2 for v in sp.values())} "
                         f"of {len(sp)}.")
    for rt in measured:
        lb = {n: per_model[n]["runtimes"].get(rt, {}).get("latency_over_bound") for n in per_model}
        zoo_lb = [v for n, v in lb.items() if v and n in names]
        ref = lb.get(REFERENCE_BASELINE)
        if zoo_lb:
            lines.append(f"- {rt}: latency / compute bound {min(zoo_lb):.1f}-{max(zoo_lb):.1f} for the NAS "
                         f"networks" + (f", {ref:.1f} for MobileNetV2." if ref else "."))
        below = sorted(n for n, v in lb.items() if v is not None and v < 1)
        if below:
            lines.append(f"- **{rt}: {', '.join(below)} measured faster than the compute bound, which is "
                         "impossible: the machine's load changed between the timings and the peak "
                         "measurement. Re-run on a quiet machine.**")
    lines.append("")
    return lines
