"""Search step time and saved-for-backward bytes, before (reference mixed op) and after (fused), in one run.

At the configuration of issue 14 (supernet C=16, 8 cells, batch 16, 32 px, 2 threads), for DARTS,
PC-DARTS (K=4, edge normalisation), PARSEC (M=4 samples), GDAS (one sampled op per edge, on the
supernet its entry fixes: its op order, bare pools, BatchNorm + ReLU before the pooling), SNAS
(the relaxed sample with its resource penalty and drop path 0.3) and P-DARTS (DARTS's first-order
step with the alphas' gradient clipped, dropout 0.1 after skip_connect: its stage 1's 8 ops per edge;
``P-DARTS-3ops``: its stage 3's three ops per edge, here sep_conv_3x3, sep_conv_5x5 and skip_connect
on every edge, a stated stand-in for the ops a search keeps):

* **before**: ``SearchNetwork(backend="reference")``, the mixed op as the official code computes it,
  with the official code's optimizer (``torch.optim.SGD``, one update per parameter tensor on the CPU);
* **after**: ``backend="fused"`` (what ``auto`` picks on the CPU in fp32 NCHW: a node's edges side by
  side, ``search/backends/node_mix.py``, with the CPU kernels of ``search/backends/cpu_kernels.py``;
  the bf16 and channels_last variants name it too, where ``auto`` would run the reference) and the search runner's optimizer
  (``runs.optim.build_optimizer``: multi-tensor updates); every after-variant uses it;
* **after-edgewise**: the fused supernet with its edges run one by one (``set_backend("fused", side_by_side=False)``),
  which separates what running them side by side brings;
* **after-kernels**: the fused supernet (edges side by side) on PyTorch's own kernels
  (``set_backend("fused", kernels=False)``, a field of ``backends/policy.py``), which separates what the kernels bring from what the fused mixed op brings;
* **after + checkpoint**: ``memory="checkpoint"`` (each cell recomputed in the backward pass);
* **after + bf16** (``--bf16``): the default supernet under CPU bf16 autocast, as ``amp: bf16`` runs
  it; only meaningful on a CPU with native bf16 (``amx_bf16`` or ``avx512_bf16`` in /proc/cpuinfo);
* **after + channels_last** (``--channels-last``): ``SearchNetwork(channels_last=True)``, the opt-in
  layout (docs/search_speed.md says why it is opt-in).

Step time = one ``strategy.step``: a first-order architecture step + a weight step (GDAS: the weight
step, then the architecture's; SNAS: both from one backward), median over ``--reps`` repetitions that
interleave the variants (before, after, after-edgewise, ..., before, ...), so a load that changes over the run
hits all of them alike.  Two ratios: of the medians, and the median of each repetition's ratio to the
before step beside it (paired), which also cancels a machine speed that drifts between repetitions.
Saved bytes = distinct storages autograd keeps for backward during one weight-step forward (``torch.autograd.graph.saved_tensors_hooks``;
GDAS's and SNAS's forward draws its sample, SNAS's loss includes the penalty); with checkpointing, the cell
inputs the checkpoints hold are counted too.  Both are printed as a table with after/before ratios,
and the numerics check (logits and architecture gradients of before vs after on one batch, GDAS and
SNAS on the same sample).

    OMP_NUM_THREADS=2 python benchmarks/search_vs_baseline.py [--reps 5] [--threads 2] [--json out.json]

About 14 minutes at ``--reps 3`` on a quiet 2-core AMD EPYC for DARTS, PC-DARTS and PARSEC (8 for
``--only DARTS,PC-DARTS``); GDAS, SNAS and P-DARTS add to it.  A last table gives each strategy's saved bytes
as a multiple of DARTS's at the same variant and batch.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from nasnetzoo.ops.darts import DARTS_PRIMITIVES
from nasnetzoo.search.strategies import (DARTSStrategy, GDASStrategy, PARSECStrategy, PCDARTSStrategy,
                                          PDARTSStrategy, SNASStrategy, get_strategy)
from nasnetzoo.search.supernet import SearchCell, SearchNetwork
from nasnetzoo.runs.optim import build_optimizer
from search_memory import saved_activation_bytes  # benchmarks/ is the script's folder

FUSED = dict(backend="fused")
VARIANTS = {"before": dict(backend="reference"), "after": FUSED, "after-edgewise": FUSED, "after-kernels": FUSED,
            "after+checkpoint": dict(FUSED, memory="checkpoint")}
OPTIONAL_VARIANTS = {"after+bf16": FUSED, "after+channels_last": dict(FUSED, channels_last=True)}
# The fused backend's own options (backends/policy.py) per variant.
BACKEND_OPTIONS = {"after-edgewise": dict(side_by_side=False), "after-kernels": dict(kernels=False)}


def strategies():
    yield "DARTS", dict(partial_k=1, edge_norm=False), DARTSStrategy
    yield "PC-DARTS", dict(partial_k=4, edge_norm=True), PCDARTSStrategy
    yield "PARSEC", dict(partial_k=1, edge_norm=False), lambda net: PARSECStrategy(
        net, num_samples=4, generator=torch.Generator().manual_seed(0))
    yield "GDAS", dict(partial_k=1, edge_norm=False, **get_strategy("gdas").network), lambda net: GDASStrategy(
        net, generator=torch.Generator().manual_seed(0))
    yield "SNAS", dict(partial_k=1, edge_norm=False), lambda net: SNASStrategy(
        net, generator=torch.Generator().manual_seed(0))
    yield "P-DARTS", dict(partial_k=1, edge_norm=False, skip_dropout=True), _pdarts
    three = [[DARTS_PRIMITIVES.index(op) for op in ("skip_connect", "sep_conv_3x3", "sep_conv_5x5")]] * 14
    yield "P-DARTS-3ops", dict(partial_k=1, edge_norm=False, skip_dropout=True,
                               edge_ops={"normal": three, "reduce": three}), _pdarts


def _pdarts(net):
    strategy = PDARTSStrategy(net)
    net.skip_dropout_prob = 0.1   # stage 1's rate (the README's first --dropout_rate)
    return strategy


def build(net_kwargs, variant, make, args):
    torch.manual_seed(0)   # the same weights and alphas in every variant
    net = SearchNetwork(C=args.C, layers=args.layers, num_classes=10, **net_kwargs,
                        **{**VARIANTS, **OPTIONAL_VARIANTS}[variant])
    if variant in BACKEND_OPTIONS:
        net.set_backend("fused", **BACKEND_OPTIONS[variant])
    strategy = make(net)
    if variant.endswith("bf16"):   # what the search runner sets for amp: bf16
        strategy.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    sgd = dict(lr=0.01, momentum=0.9, weight_decay=3e-4)
    if variant == "before":   # the official code's optimizer
        return strategy, torch.optim.SGD(net.weight_parameters(), **sgd)
    return strategy, build_optimizer(net.weight_parameters(), "sgd", **sgd)


def saved_bytes(strategy, batch) -> int:
    """Bytes autograd keeps during one weight-step forward (the largest sample's, for PARSEC)."""
    net, (x, y) = strategy.network, batch
    holds = []   # checkpointed cells hold their inputs: count them like saved tensors
    hooks = [m.register_forward_pre_hook(lambda m, args: holds.append(args[:2]))
             for m in net.modules() if isinstance(m, SearchCell)] if net.memory == "checkpoint" else []
    record = []
    passes = strategy.num_samples if isinstance(strategy, PARSECStrategy) else 1
    for _ in range(passes):
        holds.clear()
        with saved_activation_bytes(record, extra=holds), strategy.autocast():
            if passes > 1:
                loss = strategy.loss(net.forward_discrete(x, strategy.sample()[0]), y)
            elif isinstance(strategy, SNASStrategy):
                loss = strategy.losses(batch)[0]
            else:   # the supernet, or GDAS's sampled path
                loss = strategy.loss(strategy.forward(x), y)
        loss.backward()
    for h in hooks:
        h.remove()
    net.zero_grad(set_to_none=True)
    return max(record)


def numerics(before, after, batch) -> dict:
    """Max |difference| of the logits and of the architecture gradients, same weights, same batch."""
    x, y = batch
    out = {}
    for name, strategy in (("before", before), ("after", after)):
        net = copy.deepcopy(strategy.network)
        if isinstance(strategy, PARSECStrategy):
            logits = net.forward_discrete(x, strategy.most_probable())
            grads = []
        else:   # the strategy's forward on the copy; GDAS and SNAS draw the same sample for both
            network, generator = strategy.network, getattr(strategy, "generator", None)
            strategy.network, strategy.generator = net, torch.Generator().manual_seed(0)
            torch.manual_seed(0)   # SNAS's drop-path masks alike too
            try:
                logits = strategy.forward(x)
            finally:
                strategy.network, strategy.generator = network, generator
            grads = torch.autograd.grad(strategy.loss(logits, y), net.arch_parameters())
        out[name] = (logits.detach(), grads)
    (lb, gb), (la, ga) = out["before"], out["after"]
    return {"logits_max_abs_diff": float((lb - la).abs().max()),
            "arch_grad_max_abs_diff": max((float((a - b).abs().max()) for a, b in zip(ga, gb)), default=0.0),
            "arch_grad_max_abs": max((float(b.abs().max()) for b in gb), default=0.0)}


def step(strategy, opt, batch) -> float:
    start = time.perf_counter()
    strategy.step(batch, batch, opt)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per variant (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="",
                        help="comma-separated subset of DARTS,PC-DARTS,PARSEC,GDAS,SNAS,P-DARTS,P-DARTS-3ops")
    parser.add_argument("--bf16", action="store_true", help="add the after+bf16 variant (CPU bf16 autocast)")
    parser.add_argument("--channels-last", action="store_true", help="add the after+channels_last variant")
    parser.add_argument("--variants", default="",
                        help="comma-separated subset of the variants (before and after always run): more "
                             "repetitions of fewer variants in the same time")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    variants = list(VARIANTS) + [v for v, on in (("after+bf16", args.bf16),
                                                  ("after+channels_last", args.channels_last)) if on]
    chosen = {v.strip() for v in args.variants.split(",") if v.strip()} | {"before", "after"}
    if args.variants:
        unknown = chosen - set(variants)
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(variants)}")
        variants = [v for v in variants if v in chosen]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = (torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,)))
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    rows = []
    for name, net_kwargs, make in strategies():
        if only and name not in only:
            continue
        built = {v: build(net_kwargs, v, make, args) for v in variants}
        row = {"strategy": name, **numerics(built["before"][0], built["after"][0], batch)}
        for v, (strategy, _) in built.items():
            row[f"{v}_saved_mb"] = saved_bytes(strategy, batch) / 2**20
        times = {v: [] for v in variants}
        for rep in range(args.reps + 1):
            for v, (strategy, opt) in built.items():
                t = step(strategy, opt, batch)
                if rep:   # the first round warms up
                    times[v].append(t)
        for v in variants:
            row[f"{v}_step_ms"] = 1000 * statistics.median(times[v])
            # each repetition's ratio to the before step next to it in time, so a machine whose
            # speed drifts from one repetition to the next (virtual machines do) cancels out
            row[f"{v}_paired_ratio"] = statistics.median(t / b for t, b in zip(times[v], times["before"]))
        rows.append(row)
        print(f"{name}: done", flush=True)

    print(f"\nsearch step (strategy.step: first-order arch step + weight step), batch {args.batch} x 3 x {args.size}^2, "
          f"C={args.C}, {args.layers} cells, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"median of {args.reps} interleaved reps")
    head = (f"{'strategy':10s} {'variant':19s} {'step ms':>9s} {'x before':>9s} {'paired':>7s} {'saved MB':>9s} "
            f"{'x before':>9s}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        for v in variants:
            print(f"{r['strategy']:10s} {v:19s} {r[f'{v}_step_ms']:9.0f} {r[f'{v}_step_ms'] / r['before_step_ms']:9.2f} "
                  f"{r[f'{v}_paired_ratio']:7.2f} {r[f'{v}_saved_mb']:9.1f} {r[f'{v}_saved_mb'] / r['before_saved_mb']:9.2f}")
    print("x before: ratio of the medians; paired: median of each repetition's ratio to the before step run "
          "beside it")
    darts = next((r for r in rows if r["strategy"] == "DARTS"), None)
    if darts is not None:
        print("\nsaved for backward, x DARTS's at the same variant and batch:")
        for r in rows:
            print(f"  {r['strategy']:10s} " + "  ".join(f"{v} {r[f'{v}_saved_mb'] / darts[f'{v}_saved_mb']:.2f}"
                                                      for v in variants if darts[f"{v}_saved_mb"]))
    print("\nnumerics, after vs before on one batch (fp32):")
    for r in rows:
        print(f"  {r['strategy']:10s} logits max |diff| {r['logits_max_abs_diff']:.2e}   "
              f"arch grads max |diff| {r['arch_grad_max_abs_diff']:.2e} (largest |grad| {r['arch_grad_max_abs']:.2e})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "torch": torch.__version__, "results": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
