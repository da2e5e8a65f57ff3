"""ONNX Runtime vs PyTorch eager at batch 1, every ImageNet mobile entry, side by side in one run.

The performance goal of issue 6: on this CPU, ONNX Runtime should have at least 2x lower latency
than PyTorch eager for every mobile entry.  For each model the two runtimes are timed on the same
input, taking turns in rounds (``nasnetzoo.export.timing``), from the same ``nn.Module`` (ORT runs
the graph that ``export_onnx`` exported from it and verified against it).  Each latency is also
set against the model's compute bound: its MACs over this CPU's peak MAC rate, measured here with
a large matmul and a large conv (``nasnetzoo.export.machine.measure_peak_macs``).

    python benchmarks/export_latency.py                     # all 7 entries, adaptive timing
    python benchmarks/export_latency.py --iters 5 --models pcdarts_imagenet   # a quick check

Writes ``export_latency.md`` and ``export_latency.json`` to ``-o`` (default benchmarks/results/).
Needs onnx, onnxruntime and onnxslim (pip install -c constraints.txt onnx onnxruntime onnxslim).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

GOAL_SPEEDUP = 2.0


def parse_args(argv=None) -> argparse.Namespace:
    from nasnetzoo.export.report import MOBILE_MODELS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Method: warm-up, then interleaved timed rounds until each median "
                                       "moves < 2 percent over two rounds (or --iters N runs).")
    p.add_argument("--models", nargs="+", default=list(MOBILE_MODELS),
                   help="Models to time (default: the 7 ImageNet mobile entries).")
    p.add_argument("--threads", type=int, default=None,
                   help="Threads for both runtimes (default: torch.get_num_threads()).")
    p.add_argument("--iters", type=int, default=None,
                   help="Exactly N timed runs per runtime (default: until the median is stable).")
    p.add_argument("--max-time", type=float, default=30.0,
                   help="Seconds of timed runs per model at most (default 30).")
    p.add_argument("--input-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    p.add_argument("--baselines", nargs="*", default=[],
                   help="torchvision models to time as well (e.g. mobilenet_v2).")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("benchmarks/results"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nasnetzoo.errors import NasNetZooError
    from nasnetzoo.export.bench import benchmark
    from nasnetzoo.export.machine import combine_peaks, describe_machine, measure_peak_macs
    from nasnetzoo.export.report import compute_bound_ms

    peak_before = measure_peak_macs(args.threads)
    try:
        bench = benchmark(args.models, runtimes=["torch", "ort-cpu"], batches=[1], threads=args.threads,
                          iters=args.iters, max_time=args.max_time, input_size=tuple(args.input_size),
                          baselines=args.baselines, output_dir=None, echo=print)
    except NasNetZooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    peak = combine_peaks(peak_before, measure_peak_macs(args.threads))
    rate = peak["peak_macs_per_s"]
    rows = []
    for subject in bench.subjects:
        eager = next((r for r in bench.ok("torch") if r.model == subject.name), None)
        ort = next((r for r in bench.ok("ort-cpu") if r.model == subject.name), None)
        bound = compute_bound_ms(subject.macs, rate)
        speedup = eager.median_ms / ort.median_ms if eager and ort else None
        rows.append({
            "model": subject.name, "kind": subject.kind, "macs": subject.macs,
            "torch": None if eager is None else {"median_ms": eager.median_ms, "p90_ms": eager.p90_ms,
                                                 "iters": eager.iters, "stable": eager.stable},
            "ort_cpu": None if ort is None else {"median_ms": ort.median_ms, "p90_ms": ort.p90_ms,
                                                 "iters": ort.iters, "stable": ort.stable},
            "speedup": speedup,
            "goal_met": None if speedup is None else speedup >= GOAL_SPEEDUP,
            "compute_bound_ms": bound,
            "torch_over_bound": eager.median_ms / bound if eager else None,
            "ort_over_bound": ort.median_ms / bound if ort else None,
            "errors": [f"{r.runtime}: {r.reason}" for r in bench.rows if r.model == subject.name and r.status != "ok"],
        })
    zoo = [r for r in rows if r["kind"] == "zoo"]
    met = [r for r in zoo if r["goal_met"]]
    data = {"goal": f"ONNX Runtime latency <= 1/{GOAL_SPEEDUP:g} of PyTorch eager at batch 1 for every mobile entry",
            "goal_met": len(met) == len(zoo) and bool(zoo), "method": bench.method, "machine": bench.machine,
            "peak": peak, "input_size": list(args.input_size), "results": rows}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "export_latency.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    md = render(data, describe_machine(bench.machine))
    (args.output_dir / "export_latency.md").write_text(md)
    print(md)
    print(f"wrote {args.output_dir / 'export_latency.md'} and {args.output_dir / 'export_latency.json'}")
    return 0


def render(data: dict, machine: str) -> str:
    m, peak = data["machine"], data["peak"]
    load = m.get("load_average_1m_at_start")
    f = lambda v, spec="{:.2f}": "-" if v is None else spec.format(v)  # noqa: E731
    lines = ["# ONNX Runtime vs PyTorch eager, batch 1", "",
             f"Goal: {data['goal']}: **{'met' if data['goal_met'] else 'not met'}**.", "",
             f"- Machine: {machine}; torch {m['torch']}, onnxruntime {m.get('onnxruntime')}; {m['date_utc']}; "
             f"1-min load average at start {load}"
             + (" (busy: noisy figures)" if load and load > 0.5 * m["threads"] else ""),
             f"- Input: 1x3x{data['input_size'][0]}x{data['input_size'][1]}, random weights (BatchNorm calibrated)",
             f"- Method: {data['method']}",
             f"- Peak MAC rate: {peak['peak_macs_per_s'] / 1e9:.1f} GMAC/s ({peak['method']}); compute bound = "
             "MACs / peak; `/ bound` = median latency over it" + (f". **{peak['note']}**" if peak.get("note") else ""),
             "",
             "| model | MACs (M) | eager median ms (p90) | ORT median ms (p90) | eager / ORT | >= 2x | "
             "bound ms | eager / bound | ORT / bound |", "|---|---|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        t, o = r["torch"] or {}, r["ort_cpu"] or {}
        name = r["model"] + ("" if r["kind"] == "zoo" else " (torchvision)")
        goal = "-" if r["goal_met"] is None else "yes" if r["goal_met"] else "**no**"
        cells = [name, f"{r['macs'] / 1e6:.0f}", f"{f(t.get('median_ms'))} ({f(t.get('p90_ms'))})",
                 f"{f(o.get('median_ms'))} ({f(o.get('p90_ms'))})", f(r["speedup"], "{:.2f}x"), goal,
                 f(r["compute_bound_ms"]), f(r["torch_over_bound"], "{:.1f}"), f(r["ort_over_bound"], "{:.1f}")]
        lines.append("| " + " | ".join(cells) + " |")
    below = [r["model"] for r in data["results"]
             if any(v is not None and v < 1 for v in (r["torch_over_bound"], r["ort_over_bound"]))]
    if below:
        lines += ["", f"**Measured faster than the compute bound ({', '.join(below)}), which is impossible: the "
                  "load changed between the timings and the peak measurement. Re-run on a quiet machine.**"]
    errors = [e for r in data["results"] for e in r["errors"]]
    if errors:
        lines += ["", "Not measured:"] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
