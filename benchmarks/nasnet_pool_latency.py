"""NASNet-A Mobile against MobileNetV2 under ExecuTorch's XNNPACK delegate at 1 thread, before and
after the NASNet-family ops and their export were rewritten for the mobile runtimes (issue 12).

Four NASNet programs, each a step further:

1. "previous ops": NASNet built with the previous ops, restored here by ``legacy_ops()``: the TF
   "SAME" stride-2 average pool as sum / count through ``avg_pool2d(divisor_override=1)``
   (XNNPACK's partitioner refuses it) and the factorized reduction's shift as a strided slice of
   a padded copy.
2. "ops rewritten": NASNet as ``nasnetzoo`` builds it now (one XNNPACK partition), exported as it
   was then: XNNPACK runs its 7x7 depthwise convolutions (49 taps, above its 25-tap depthwise
   kernels) as general grouped convolutions, and the ReLUs and paddings that several ops of a cell
   apply to the same input are repeated.
3. "+ 7x7 depthwise split": those convolutions split into row bands
   (``nasnetzoo.export.xnnpack_rewrites``).
4. "nasnet_a_mobile": as ``nasnetzoo export`` writes it now, the repeated nodes merged as well.

All are exported to ``.pte`` files (XNNPACK partitioner, fp32), checked against PyTorch, and timed
with MobileNetV2 (torchvision, random weights, BatchNorm calibrated as in ``nasnetzoo bench``) side
by side in one run, the programs taking turns in rounds (``nasnetzoo.export.timing``) so that a
drift of the machine falls on all of them alike.  The published phone figure: 183 ms / 75 ms =
2.44 (MobileNetV2 paper, Pixel 1, TF-Lite, one large core); the goal here is a ratio of at most 3.0.

    python benchmarks/nasnet_pool_latency.py                 # 224x224, adaptive timing
    python benchmarks/nasnet_pool_latency.py --smoke --size 64 --iters 3 -o /tmp/x   # checks the script

Needs ``pip install -c constraints.txt -e ".[mobile]"``.  Writes ``nasnet_pool_latency.md`` and
``.json`` to ``-o`` (default benchmarks/results/).  Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

PUBLISHED_RATIO = 183 / 75
GOAL_RATIO = 3.0


# ------------------------------------------------------------------ the previous ops
def legacy_avg_pool_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """The previous TF "SAME" average pool: window sums over window counts (divisor_override)."""
    from nasnetzoo.ops.padding import same_pad_arg

    pad = same_pad_arg(x.shape[-2:], kernel, stride)
    summed = F.avg_pool2d(F.pad(x, pad), kernel, stride, divisor_override=1)
    ones = x.new_ones((1, 1) + tuple(x.shape[-2:]))
    count = F.avg_pool2d(F.pad(ones, pad), kernel, stride, divisor_override=1)
    return summed / count


def legacy_factorized_reduction(module, x: torch.Tensor) -> torch.Tensor:
    """The previous factorized reduction: strided slices of x and of x shifted by one pixel."""
    x = module.act(x)
    if module.stride == 1:
        return module.bn(module.conv(x))
    shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
    p1 = F.conv2d(x[:, :, ::2, ::2], module.path_1.conv.weight)
    p2 = F.conv2d(shifted[:, :, ::2, ::2], module.path_2.conv.weight)
    return module.final_path_bn(torch.cat([p1, p2], 1))


@contextlib.contextmanager
def legacy_ops():
    """Models built or run inside use the previous pool and factorized reduction."""
    from nasnetzoo.ops.padding import Pool2dSame, avg_pool_same_exclude_pad, same_pad_arg
    from nasnetzoo.ops.tf import FactorizedReduction

    new_pool_forward, new_fr_forward = Pool2dSame.forward, FactorizedReduction.forward

    def pool_forward(self, x):
        if self.kind == "avg" and not self._static and not self.count_pad and \
                any(same_pad_arg(x.shape[-2:], self.kernel_size, self.stride)):
            return legacy_avg_pool_same(x, self.kernel_size, self.stride)
        return new_pool_forward(self, x)

    assert avg_pool_same_exclude_pad  # the op replaced here
    Pool2dSame.forward = pool_forward
    FactorizedReduction.forward = legacy_factorized_reduction
    try:
        yield
    finally:
        Pool2dSame.forward, FactorizedReduction.forward = new_pool_forward, new_fr_forward


class Legacy(torch.nn.Module):
    """Runs ``model`` with the previous ops (also while torch.export traces it)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        with legacy_ops():
            return self.model(x)


# ------------------------------------------------------------------ the measurement
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=224, help="Input size H = W (default 224, the papers').")
    p.add_argument("--threads", type=int, default=1, help="XNNPACK threads (default 1, one phone core).")
    p.add_argument("--iters", type=int, default=None,
                   help="Exactly N timed runs per program (default: until the medians are stable).")
    p.add_argument("--max-time", type=float, default=60.0, help="Seconds of timed rounds at most (default 60).")
    p.add_argument("--smoke", action="store_true",
                   help="Check the script, not the claim: NASNet with one normal cell per stage and 8 channels.")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("benchmarks/results"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import tempfile

    import numpy as np

    import nasnetzoo
    from nasnetzoo.errors import NasNetZooError
    from nasnetzoo.export.bench import load_baseline
    from nasnetzoo.export.machine import describe_machine, machine_info
    from nasnetzoo.export.options import XnnpackOptions
    from nasnetzoo.export.pipeline import convert_and_check
    from nasnetzoo.export.onnx_export import calibrate_batchnorm
    from nasnetzoo.export.runtimes import get_runtime
    from nasnetzoo.export.timing import TimingPolicy, time_interleaved

    machine = machine_info(args.threads)  # the load average before this script's own work
    size = (3, args.size, args.size)
    torch.manual_seed(0)
    nasnet = nasnetzoo.load("nasnet_a_mobile", **(dict(N=1, F=8) if args.smoke else {}))
    calibrate_batchnorm(nasnet, size)
    nasnet.eval()
    mnv2 = load_baseline("mobilenet_v2", size).model
    as_then = XnnpackOptions(split_depthwise=False, merge_repeated=False)
    subjects = {"nasnet_a_mobile (previous ops)": (Legacy(nasnet), as_then),
                "nasnet_a_mobile (ops rewritten)": (nasnet, as_then),
                "nasnet_a_mobile (+ 7x7 depthwise split)": (nasnet, XnnpackOptions(merge_repeated=False)),
                "nasnet_a_mobile": (nasnet, None), "mobilenet_v2": (mnv2, None)}
    runtime = get_runtime("executorch")
    x = np.random.default_rng(0).standard_normal((1,) + size, dtype=np.float32)
    runners, programs = {}, {}
    try:
        with tempfile.TemporaryDirectory(prefix="nasnet-pool-") as tmp:
            for i, (name, (model, options)) in enumerate(subjects.items()):
                path = Path(tmp) / f"m{i}.pte"
                info = convert_and_check(runtime, model, path, size, threads=args.threads, name=name,
                                         options=options)
                programs[name] = info
                runners[name] = runtime.runner(path, x, args.threads)
                print(f"{name}: {info['partitions']} XNNPACK partition(s), ops outside: "
                      f"{', '.join(info['ops_outside']) or 'none'}; max |diff| {info['max_abs_diff']:.2e}")
            policy = TimingPolicy(iters=args.iters, max_time=args.max_time)
            timings = time_interleaved(runners, policy)
    except NasNetZooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    med = {n: t.median_ms for n, t in timings.items()}
    ref = med["mobilenet_v2"]
    rows = [{"model": n, "median_ms": t.median_ms, "p90_ms": t.p90_ms, "iters": t.iters, "stable": t.stable,
             "ratio_to_mobilenet_v2": t.median_ms / ref, **programs[n]} for n, t in timings.items()]
    after = med["nasnet_a_mobile"] / ref
    data = {"input_size": list(size), "threads": args.threads, "smoke": args.smoke, "method": policy.describe(),
            "machine": machine, "published_ratio": PUBLISHED_RATIO, "goal_ratio": GOAL_RATIO,
            "ratio_before": med["nasnet_a_mobile (previous ops)"] / ref,
            "ratio_ops_rewritten": med["nasnet_a_mobile (ops rewritten)"] / ref,
            "ratio_depthwise_split": med["nasnet_a_mobile (+ 7x7 depthwise split)"] / ref, "ratio_after": after,
            "goal_met": after <= GOAL_RATIO, "results": rows}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    from nasnetzoo.export.files import write_text_atomic

    md = render(data, describe_machine(machine))
    write_text_atomic(args.output_dir / "nasnet_pool_latency.md", md)
    write_text_atomic(args.output_dir / "nasnet_pool_latency.json", json.dumps(data, indent=2, default=str) + "\n")
    print(md)
    print(f"wrote {args.output_dir / 'nasnet_pool_latency.md'} and .json")
    return 0


def render(data: dict, machine: str) -> str:
    m = data["machine"]
    load = m.get("load_average_1m_at_start")
    lines = ["# NASNet-A Mobile / MobileNetV2 under XNNPACK (ExecuTorch), before and after the op and export rewrites",
             "",
             f"- Machine: {machine}; torch {m['torch']}; {m['date_utc']}; 1-min load average at start {load}"
             + (" (busy: noisy figures)" if load and load > 0.5 * max(1, m.get("logical_cpus") or 1) else ""),
             f"- Input 1x{'x'.join(map(str, data['input_size']))}, {data['threads']} thread(s); {data['method']}",
             f"- Published (Pixel 1, TF-Lite, one core): 183 / 75 ms = {data['published_ratio']:.2f}; goal <= "
             f"{data['goal_ratio']:g}: **{'met' if data['goal_met'] else 'not met'}** "
             f"(previous ops {data['ratio_before']:.2f}, ops rewritten {data['ratio_ops_rewritten']:.2f}, "
             f"+ 7x7 depthwise split {data['ratio_depthwise_split']:.2f}, now {data['ratio_after']:.2f})",
             *(["- **Smoke run (--smoke, a reduced NASNet): checks the script, measures nothing.**"]
               if data.get("smoke") else []),
             "",
             "| program | XNNPACK partitions | ops outside the delegate | depthwise convs split | median ms (p90) "
             "| / MobileNetV2 |",
             "|---|---|---|---|---|---|"]
    for r in data["results"]:
        lines.append(f"| {r['model']} | {r['partitions']} | {', '.join(r['ops_outside']) or '-'} | "
                     f"{r.get('depthwise_split', 0)} | "
                     f"{r['median_ms']:.2f} ({r['p90_ms']:.2f}){'' if r['stable'] else '*'} | "
                     f"{r['ratio_to_mobilenet_v2']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
