"""One prepared GPU suite (issue 14, item 6): search, retrain and inference, fp32 eager vs the fast path.

In one run (under 8 minutes on one H100/H200; sections past ``--budget-s`` are recorded as skipped):

1. **search**: a PC-DARTS CIFAR-10-shaped search epoch (supernet C=16, 8 cells, K=4, batch 256, the
   25,000 / 25,000 split: 98 steps of architecture + weight step) on synthetic device tensors (no
   download); variants ``reference fp32`` (the mixed op as the official code computes it),
   ``fused fp32``, ``fused bf16`` (autocast) and, on a GPU, ``fused bf16 + channels_last``, each
   timed over the whole epoch.
2. **retrain**: ``darts_v2_cifar`` (auxiliary head, drop path 0.2) train steps at batch 96 with the
   package's ``Trainer``; ``fp32 eager``, ``bf16 + channels_last``, and the same ``+ torch.compile``.
3. **inference**: the ImageNet mobile entries at 224 px, batch 1 and 64; ``fp32 eager`` and
   ``bf16 + channels_last`` for all, ``+ torch.compile`` and ``+ CUDA graphs`` (compile mode
   ``reduce-overhead``) for DARTS (V2) and NASNet-A mobile (each model and batch is one compile).

The eager variants run first, the compiled ones last; nothing starts after ``--budget-s`` (360 s).

A variant that fails (say ``torch.compile`` without a working compiler) is recorded with its error,
and the suite goes on.  Everything lands in one JSON (``--out``), with the device and versions.

    python benchmarks/gpu_suite.py --out docs/gpu_suite_h200.json
    python benchmarks/gpu_suite.py --smoke --out /tmp/smoke.json     # tiny sizes, on the CPU, seconds
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import nasnetzoo
from nasnetzoo.search.compiled import compile_supernet
from nasnetzoo.search.strategies import PCDARTSStrategy
from nasnetzoo.search.supernet import SearchNetwork
from nasnetzoo.train.engine import Trainer

MOBILE_MODELS = ("nasnet_a_mobile", "amoebanet_a_mobile", "pnasnet5_mobile", "darts_v2_imagenet",
                 "pcdarts_imagenet", "pdarts_imagenet", "gdas_imagenet")


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


BUDGET = Budget(float("inf"))   # run_suite sets the run's budget; long tasks check it between steps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def peak_mb(device: torch.device):
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def attempt(fn, *args, **kwargs) -> dict:
    """``fn``'s result, or its error as a record: one failing variant does not end the suite."""
    try:
        return fn(*args, **kwargs)
    except Exception as error:   # noqa: BLE001  (compile and CUDA-graph failures vary by setup)
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"}


# ---------------------------------------------------------------- 1. search
def search_epoch(cfg: dict, device: torch.device, fused: bool, bf16: bool, channels_last: bool = False,
                 compile: bool = False) -> dict:
    torch.manual_seed(0)
    net = SearchNetwork(C=cfg["C"], layers=cfg["layers"], num_classes=10, partial_k=4, edge_norm=True,
                        fused=fused, channels_last=channels_last).to(device)
    strategy = PCDARTSStrategy(net)
    if compile:   # what recipe key compile: true runs: the supernet's forward as one graph (reference path)
        strategy.compiled_forward = compile_supernet(net)
    if bf16:
        strategy.autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    b, s = cfg["batch"], cfg["size"]
    # Synthetic CIFAR-shaped halves (weights, architecture), resident on the device like a loader's output.
    data = torch.randn(2, cfg["steps"], b, 3, s, s, device=device)
    labels = torch.randint(0, 10, (2, cfg["steps"], b), device=device)
    warm = (data[0, 0], labels[0, 0])
    for _ in range(2):
        strategy.arch_step(warm, warm, opt)
        strategy.weight_step(warm, opt)
    sync(device)
    reset_peak(device)
    start = time.perf_counter()
    done = 0
    for i in range(cfg["steps"]):
        if done and BUDGET.left() <= 0:   # a long task stops at the budget too, and says how far it got
            break
        strategy.arch_step((data[0, i], labels[0, i]), (data[1, i], labels[1, i]), opt)
        strategy.weight_step((data[0, i], labels[0, i]), opt)
        done += 1
    sync(device)
    seconds = time.perf_counter() - start
    steps = max(done, 1)
    return {"epoch_s": seconds * cfg["steps"] / steps, "steps": done, "cut_by_budget": done < cfg["steps"],
            "step_ms": 1000 * seconds / steps, "images_per_s": 2 * steps * b / seconds, "peak_mb": peak_mb(device),
            "genotype": strategy.derive().to_string(), **compile_stats(compile)}


# ---------------------------------------------------------------- 2. retrain
def retrain_steps(cfg: dict, device: torch.device, bf16: bool, channels_last: bool, compile: bool) -> dict:
    torch.manual_seed(0)
    model = nasnetzoo.load("darts_v2_cifar", auxiliary=True, drop_path_rate=0.2, **cfg.get("model", {}))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    trainer = Trainer(model, opt, device=device, amp=bf16, channels_last=channels_last, compile=compile,
                      grad_clip=5.0)
    b, s = cfg["batch"], cfg["size"]
    x, y = torch.randn(b, 3, s, s, device=device), torch.randint(0, 10, (b,), device=device)
    for _ in range(cfg["warmup"]):
        trainer.train_step([(x, y)])
    sync(device)
    reset_peak(device)
    times = []
    for _ in range(cfg["steps"]):
        if times and BUDGET.left() <= 0:
            break
        start = time.perf_counter()
        trainer.train_step([(x, y)])
        sync(device)
        times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return {"step_ms": 1000 * step, "images_per_s": b / step, "peak_mb": peak_mb(device), "steps": len(times),
            "cut_by_budget": len(times) < cfg["steps"], **compile_stats(compile)}


# ---------------------------------------------------------------- 3. inference
def inference(name: str, cfg: dict, batch: int, device: torch.device, bf16: bool, channels_last: bool,
              mode: str) -> dict:
    model = nasnetzoo.load(name, **cfg.get("model", {})).to(device).eval()
    x = torch.randn(batch, 3, cfg["size"], cfg["size"], device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    run = model
    if mode == "compile":
        run = torch.compile(model, dynamic=False)
    elif mode == "cudagraphs":
        run = torch.compile(model, mode="reduce-overhead", dynamic=False)
    with torch.inference_mode(), autocast(device, bf16):
        for _ in range(cfg["warmup"]):
            run(x)
        sync(device)
        times = []
        for _ in range(cfg["iters"]):
            start = time.perf_counter()
            run(x)
            sync(device)
            times.append(time.perf_counter() - start)
    ms = 1000 * statistics.median(times)
    return {"ms": ms, "images_per_s": 1000 * batch / ms, **compile_stats(mode != "eager")}


def compile_stats(compiled: bool) -> dict:
    """What dynamo did for a compiled variant, so its label cannot lie: every zoo network shares
    one ``CellNetwork.forward``, so without the reset before each variant (run_suite) a variant
    inherits the cache and automatic-dynamic history of the ones before it, and past dynamo's
    recompile limit it runs eager under its compiled label."""
    if not compiled:
        return {}
    from torch._dynamo.utils import counters

    return {"dynamo_graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values()))}


# ---------------------------------------------------------------- the suite
FULL = {
    "search": {"C": 16, "layers": 8, "batch": 256, "size": 32, "steps": 25000 // 256},
    "retrain": {"batch": 96, "size": 32, "warmup": 5, "steps": 30},
    "inference": {"size": 224, "batches": (1, 64), "warmup": 10, "iters": 50, "models": MOBILE_MODELS,
                  "compile_models": ("darts_v2_imagenet", "nasnet_a_mobile")},
}
SMOKE = {
    "search": {"C": 4, "layers": 3, "batch": 4, "size": 8, "steps": 2},
    "retrain": {"batch": 4, "size": 16, "warmup": 1, "steps": 2, "model": {"C": 4, "layers": 3}},
    "inference": {"size": 32, "batches": (1, 2), "warmup": 1, "iters": 2, "models": ("darts_v2_imagenet",),
                  "model": {"C": 8, "layers": 3}},
}


def run_suite(cfg: dict, device: torch.device, budget: Budget, compile_ok: bool, log, save=lambda results: None) -> dict:
    """Every eager variant first, then the compiled ones (slow to build: the budget cuts them first).
    ``save(results)`` runs after every task, so a kill keeps everything finished before it."""
    global BUDGET
    BUDGET = budget
    tasks = []   # (compiled?, section, key, fn, args)
    search = [("reference fp32", False, False, False), ("fused fp32", True, False, False),
              ("fused bf16", True, True, False)]
    if device.type == "cuda":   # NHWC is opt-in for the supernet (see docs/search_speed.md)
        search.append(("fused bf16 + channels_last", True, True, True))
    for name, fused, bf16, cl in search:
        tasks.append((False, "search", name, search_epoch, (cfg["search"], device, fused, bf16, cl)))
    retrain = [("fp32 eager", False, False, False), ("bf16 + channels_last", True, True, False)]
    if compile_ok:
        retrain.append(("bf16 + channels_last + compile", True, True, True))
    for name, bf16, cl, comp in retrain:
        tasks.append((comp, "retrain", name, retrain_steps, (cfg["retrain"], device, bf16, cl, comp)))
    icfg = cfg["inference"]
    modes = [("fp32 eager", False, False, "eager"), ("bf16 + channels_last", True, True, "eager")]
    if compile_ok:   # compiled variants for a few entries only: each model and batch is one compile
        modes.append(("bf16 + channels_last + compile", True, True, "compile"))
        if device.type == "cuda":
            modes.append(("bf16 + channels_last + CUDA graphs", True, True, "cudagraphs"))
    for model in icfg["models"]:
        for batch in icfg["batches"]:
            for name, bf16, cl, mode in modes:
                if mode != "eager" and model not in icfg.get("compile_models", ()):
                    continue
                tasks.append((mode != "eager", "inference", f"{model} b{batch} {name}", inference,
                              (model, icfg, batch, device, bf16, cl, mode)))

    results: dict = {"search": {}, "retrain": {}, "inference": {}}
    for compiled, section, key, fn, args in sorted(tasks, key=lambda t: t[0]):
        if budget.left() <= 0:
            results[section][key] = {"skipped": "time budget spent"}
        else:
            if compiled:   # a fresh dynamo per variant (see compile_stats)
                torch._dynamo.reset()
                torch._dynamo.utils.counters.clear()
            results[section][key] = attempt(fn, *args)
        log(f"{section:9s} {key:45s} {json.dumps(results[section][key])[:150]}")
        save(results)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_suite.json", help="where the JSON goes")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (for the tests)")
    parser.add_argument("--device", default=None, help="default: cuda when available (cpu with --smoke)")
    parser.add_argument("--budget-s", type=float, default=360.0, help="skip what would start after this many seconds")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile / CUDA-graph variants")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True   # "fp32" on the GPU = PyTorch's usual TF32 convs/matmuls
        torch.backends.cudnn.allow_tf32 = True
    started = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(results: dict, final: bool = False) -> dict:
        report = describe(args, device, started, results, final)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, out)   # atomic: a reader never sees half a file
        return report

    results = run_suite(SMOKE if args.smoke else FULL, device, Budget(args.budget_s),
                        compile_ok=not (args.no_compile or args.smoke),
                        log=lambda line: print(line, file=sys.stderr, flush=True), save=save)
    report = save(results, final=True)
    print(f"wrote {out} ({report['wall_s']} s)")
    return 0


def describe(args, device: torch.device, started: float, results: dict, final: bool) -> dict:
    return {
        "suite": "nasnetzoo gpu_suite (issue 14)", "smoke": args.smoke, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "wall_s": round(time.perf_counter() - started, 1),
        "config": {k: {kk: list(vv) if isinstance(vv, tuple) else vv for kk, vv in v.items()}
                   for k, v in (SMOKE if args.smoke else FULL).items()},
        "complete": final, "results": results,
    }


if __name__ == "__main__":
    raise SystemExit(main())
