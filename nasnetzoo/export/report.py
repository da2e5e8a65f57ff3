"""The mobile-regime report: do the NAS papers' "mobile" networks (< 600M multiply-adds) run like
mobile networks, on the runtimes phones use?

Every ImageNet mobile entry at 224x224: MACs measured with ``nasnetzoo.profile`` next to the
paper's mult-adds (the 600M check for both), params, and latency on every runtime of the table in
``runtimes`` (PyTorch eager, ONNX Runtime, ExecuTorch with XNNPACK, LiteRT, OpenVINO; the GPU ones
where a GPU is present), by default at one thread (a phone's single large core, as the papers
timed), next to torchvision's MobileNetV2, MobileNetV2 1.4 (the same-MACs hand-designed control),
MnasNet and MobileNetV3-Large on the same runtimes and inputs.  Each network's latency ratio to
MobileNetV2 is set beside the ratio published on a phone; each latency against the network's
compute bound (MACs over the CPU's measured peak MAC rate, ``machine.measure_peak_macs``); and
each network's graph is described by what costs time beyond MACs: its op count and the bytes its
ops write (``graph_stats``).  Writes ``mobile_report_{cpu|gpu}.md``, ``.png`` and ``.json`` (last).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from .bench import BenchResult, benchmark, plot_latency_vs_macs, to_json
from .errors import require
from .files import ensure_output_dir, write_text_atomic
from .runtimes import GPU_RUNTIMES, RUNTIMES

MOBILE_MODELS = ("nasnet_a_mobile", "amoebanet_a_mobile", "pnasnet5_mobile", "darts_v2_imagenet",
                 "pcdarts_imagenet", "pdarts_imagenet", "gdas_imagenet")
MOBILE_MACS_LIMIT_M = 600
# Every runtime of the table but torch.compile (a compiler, not a deployment runtime).
REPORT_RUNTIMES = tuple(n for n in RUNTIMES if n != "torch-compile")
REPORT_BASELINES = ("mobilenet_v2", "mobilenet_v2_1.4", "mnasnet1_0", "mobilenet_v3_large")
REPORT_THREADS = 1
REFERENCE_BASELINE = "mobilenet_v2"
# Latency on one large core of a Pixel 1 phone, TF-Lite, batch 1, 224x224 (ms), as published.
PUBLISHED_PHONE_MS = {
    "mobilenet_v2": (75, "MobileNetV2 paper (Sandler et al. 2018), Table 4"),
    "mobilenet_v2_1.4": (143, "MobileNetV2 paper, Table 4: MobileNetV2 (1.4)"),
    "nasnet_a_mobile": (183, "MobileNetV2 paper, Table 4: NASNet-A"),
    "mnasnet1_0": (78, "MnasNet paper (Tan et al. 2019): MnasNet-A1; torchvision's mnasnet1_0 is the B1 "
                       "variant (no squeeze-and-excitation), so compare loosely"),
}


def published_ratio(name: str) -> Optional[float]:
    """The published phone latency of ``name`` over MobileNetV2's, or None."""
    if name not in PUBLISHED_PHONE_MS:
        return None
    return PUBLISHED_PHONE_MS[name][0] / PUBLISHED_PHONE_MS[REFERENCE_BASELINE][0]


def graph_stats(model, size) -> dict:
    """Ops and activation bytes of one forward pass (batch 1, eval mode), from ``torch.export``.

    ``ops``: the aten calls of the exported graph (views and getitem excluded); ``activation_mb``:
    the megabytes those ops write (fp32), a floor on the memory traffic beyond the weights.
    """
    import torch

    x = torch.zeros((1,) + tuple(size))
    graph = torch.export.export(model.eval(), (x,), strict=False).run_decompositions({}).graph
    ops, written = 0, 0
    for node in graph.nodes:
        if node.op != "call_function" or "getitem" in str(node.target):
            continue
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            if val.untyped_storage().nbytes() == 0 and val.numel():
                continue
            if any(k in str(node.target) for k in ("view", "reshape", "expand", "unsqueeze", "squeeze",
                                                   "permute", "transpose", "alias")):
                continue
            written += val.numel() * val.element_size()
        ops += 1
    return {"ops": ops, "activation_mb": written / 1e6}


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
                  batches: Sequence[int] = (1,), threads: Optional[int] = REPORT_THREADS,
                  iters: Optional[int] = None, max_time: float = 20.0,
                  baselines: Sequence[str] = REPORT_BASELINES, models: Sequence[str] = MOBILE_MODELS,
                  input_size: Sequence[int] = (224, 224), measure_peak: bool = True, policy=None,
                  echo: Optional[Callable[[str], None]] = None) -> ReportResult:
    """Benchmark the mobile entries at ``input_size`` (224x224) and write the report (markdown, plot,
    then JSON).  ``threads`` defaults to 1, a phone's large core."""
    from .machine import combine_peaks, measure_peak_macs

    out = ensure_output_dir(output_dir)  # before minutes of timing
    require("matplotlib", "The mobile report's figure", "matplotlib", extra="plot")   # so is the figure's
    before = measure_peak_macs(threads) if measure_peak else None
    bench = benchmark(list(models), runtimes=runtimes, batches=batches, threads=threads, iters=iters,
                      max_time=max_time, input_size=tuple(input_size), baselines=list(baselines),
                      output_dir=None, policy=policy, echo=echo)
    peak = combine_peaks(before, measure_peak_macs(threads)) if measure_peak else None
    stats = {s.name: graph_stats(s.model, s.size) for s in bench.subjects}
    gpu = any(r.runtime in GPU_RUNTIMES for r in bench.ok())
    stem = f"mobile_report_{'gpu' if gpu else 'cpu'}"
    files = {"markdown": out / f"{stem}.md", "plot": out / f"{stem}.png", "json": out / f"{stem}.json"}
    analysis = analyse(bench, peak)
    data = {**to_json(bench), "peak": peak, "macs_limit_m": MOBILE_MACS_LIMIT_M, "graph_stats": stats,
            "published_phone_ms": {k: {"ms": v[0], "source": v[1]} for k, v in PUBLISHED_PHONE_MS.items()},
            "analysis": analysis}
    size = "x".join(map(str, input_size))
    plot_latency_vs_macs(bench.rows, files["plot"],
                         title=f"ImageNet mobile networks at {size}, {bench.machine['threads']} thread(s) - "
                               f"{bench.machine['cpu_model']}")
    markdown = render_markdown(bench, peak, analysis, files["plot"].name, stats)
    write_text_atomic(files["markdown"], markdown)
    write_text_atomic(files["json"], json.dumps(data, indent=2, default=str) + "\n")
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


def render_markdown(bench: BenchResult, peak: Optional[dict], analysis: dict, plot_name: str,
                    stats: Optional[dict] = None) -> str:
    m = bench.machine
    subjects = {s.name: s for s in bench.subjects}
    zoo = [s for s in bench.subjects if s.kind == "zoo"]
    runtimes = list(dict.fromkeys(r.runtime for r in bench.rows))
    measured = [rt for rt in runtimes if bench.ok(rt)]
    stats = stats or {}
    size = "x".join(map(str, bench.subjects[0].size)) if bench.subjects else "3x224x224"
    lines = ["# Mobile regime: measured MACs and latency of the NAS mobile networks", "",
             "Generated by `nasnetzoo bench --mobile-report` (second edition: the runtimes phones use, "
             "ExecuTorch with XNNPACK, LiteRT and OpenVINO, beside PyTorch and ONNX Runtime). All networks "
             "have random weights (latency does not depend on them); BatchNorm statistics are calibrated "
             f"on random inputs so that activations have a realistic scale. Input {size}, batch as below.",
             "", "## Machine", ""]
    load = m.get("load_average_1m_at_start")
    lines += [
        f"- CPU: **{m['cpu_model']}** (family/model/stepping {m['cpu_family_model_stepping']}"
        f"{', virtualized' if m.get('virtualized') else ''}), {m.get('physical_cores') or '?'} physical cores, "
        f"{m['logical_cpus']} logical CPUs; ISA: {', '.join(m['isa']) or '-'}",
        f"- Threads: {m['threads']} (every runtime's own setting: torch.set_num_threads, ONNX Runtime's "
        "intra-op pool, XNNPACK's thread pool, LiteRT's num_threads, OpenVINO's INFERENCE_NUM_THREADS)",
        f"- Software: Python {m['python']}, torch {m['torch']}, torchvision {m.get('torchvision')}, "
        f"onnx {m.get('onnx')}, onnxruntime {m.get('onnxruntime')}, onnxslim {m.get('onnxslim')}, "
        f"executorch {m.get('executorch')}, litert-torch {m.get('litert-torch')}, ai-edge-litert "
        f"{m.get('ai-edge-litert')}, openvino {m.get('openvino')}; {m['os']}",
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
        headers += [f"vs MobileNetV2 ({rt})" for rt in measured] + ["vs MobileNetV2 (phone, published)"]
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
            row.append(_fmt(published_ratio(name), "{:.2f}x"))
            if peak:
                row += [_fmt(rts.get(rt, {}).get("latency_over_bound"), "{:.1f}") for rt in measured]
            rows.append(row)
        lines += [f"### Batch {batch}", "", _md_table(headers, rows), ""]
        if any(not r.stable for r in bench.ok(batch=int(batch))):
            lines += ["`*`: the median had not settled when the time limit was reached.", ""]
        lines += _observations(per_model, measured, zoo)
    lines += _graph_section(bench, stats)
    lines += _claims_section(bench, analysis, stats)
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


def _graph_section(bench: BenchResult, stats: dict) -> list[str]:
    """Per network: MACs, ops, activation bytes, and ExecuTorch's XNNPACK partitions."""
    if not stats:
        return []
    parts = {r.model: r for r in bench.rows if r.runtime == "executorch" and r.partitions is not None}
    rows = []
    for s in bench.subjects:
        st = stats.get(s.name, {})
        p = parts.get(s.name)
        rows.append([s.name if s.kind == "zoo" else f"{s.name} (torchvision)", f"{s.macs / 1e6:.0f}",
                     str(st.get("ops", "-")), _fmt(st.get("activation_mb"), "{:.1f}"),
                     "-" if p is None else str(p.partitions), "-" if p is None else (p.ops_outside or "none")])
    return ["## What the graphs cost beyond MACs", "",
            "`ops`: aten calls in the exported graph (views excluded); `activation MB`: what those ops write "
            "for one image (fp32), a floor on memory traffic; XNNPACK partitions and the ops left outside "
            "the delegate (run as ExecuTorch portable kernels) in the program timed.", "",
            _md_table(["model", "MACs (M)", "ops", "activation MB", "XNNPACK partitions", "ops outside XNNPACK"],
                      rows), ""]


def _claims_section(bench: BenchResult, analysis: dict, stats: dict) -> list[str]:
    """A plain paragraph per runtime: does the published phone ratio hold, and what explains it."""
    per_model = analysis.get("1") or (next(iter(analysis.values())) if analysis else {})
    subjects = {s.name: s for s in bench.subjects}
    ref = subjects.get(REFERENCE_BASELINE)
    if ref is None or not per_model:
        return []
    lines = ["## Which claims hold, on which runtime", ""]
    runtimes = [rt for rt in dict.fromkeys(r.runtime for r in bench.ok())]
    for rt in runtimes:
        said = []
        for name, (ms, _) in PUBLISHED_PHONE_MS.items():
            if name == REFERENCE_BASELINE or name not in per_model:
                continue
            measured = per_model[name]["runtimes"].get(rt, {}).get("vs_mobilenet_v2")
            if measured is None:
                continue
            pub = published_ratio(name)
            verdict = "the phone's ratio holds here" if measured <= 1.25 * pub else \
                "more than 25% above the phone's ratio"
            said.append(f"{name} takes {measured:.2f}x MobileNetV2's latency, {pub:.2f}x on the phone ({verdict})")
        zoo = [n for n in MOBILE_MODELS if n in per_model and per_model[n]["runtimes"].get(rt)]
        if zoo:
            ratios = {n: per_model[n]["runtimes"][rt]["vs_mobilenet_v2"] for n in zoo
                      if per_model[n]["runtimes"][rt].get("vs_mobilenet_v2")}
            if ratios:
                lo, hi = min(ratios, key=ratios.get), max(ratios, key=ratios.get)
                said.append(f"the NAS entries measured span {ratios[lo]:.2f}x ({lo}) to {ratios[hi]:.2f}x ({hi})")
        why = []
        for n in zoo[:1] + [n for n in zoo[1:] if n == "nasnet_a_mobile"]:
            st, rs = stats.get(n), stats.get(REFERENCE_BASELINE)
            if st and rs and rs["ops"] and rs["activation_mb"]:
                why.append(f"{n} has {subjects[n].macs / ref.macs:.2f}x MobileNetV2's MACs but {st['ops'] / rs['ops']:.1f}x "
                           f"its ops and {st['activation_mb'] / rs['activation_mb']:.1f}x its activation bytes")
        part = [r for r in bench.rows if r.runtime == rt and r.partitions is not None and r.kind == "zoo"]
        if part:
            split = sorted(r.model for r in part if r.partitions != 1 or r.ops_outside)
            why.append("every NAS entry lowers to one XNNPACK partition with no op outside" if not split else
                       f"{', '.join(split)} split into several XNNPACK partitions or leave ops outside")
        if said or why:
            lines.append(f"- **{rt}**: " + "; ".join(said + why) + ".")
    lines += ["", "How to read this: MACs count multiply-accumulates only. A NAS cell adds many small ops "
              "(separable convolutions, pools, additions, concatenations), each reading and writing a whole "
              "feature map, so on a runtime that runs op by op its latency grows with the op count and the "
              "activation bytes above rather than with its MACs; a runtime that fuses ops or takes the whole "
              "graph into one delegate partition narrows that gap. The published ratios were measured with "
              "TF-Lite on one Pixel 1 core; a desktop core has other caches and vector widths, so each "
              "runtime's line says whether a ratio survives here.", ""]
    return lines
