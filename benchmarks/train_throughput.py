"""Training throughput (images/s) of darts_v2_cifar (C=36, 20 cells, aux head, batch 96, 32x32):
nasnetzoo's speed paths against the same network in plain fp32 eager PyTorch, side by side.

    python benchmarks/train_throughput.py                       # this machine (CPU or GPU)
    python benchmarks/train_throughput.py --steps 20 --json out.json
    python benchmarks/train_throughput.py --modes eager,bf16_cl --device cuda

Modes (each a fresh model from the same seed, a warm-up, then timed optimizer steps):

  eager     plain PyTorch: fp32, NCHW, forward + CE (+0.4 aux) + backward + clip 5 + SGD step;
            written out here without nasnetzoo's Trainer, the baseline.
  trainer   nasnetzoo's Trainer with the recipe defaults for the device ("auto": channels_last
            everywhere, bf16 autocast on a GPU, fp32 on the CPU).
  nchw      Trainer, fp32, NCHW (channels_last off): the engine's own overhead against eager.
  cl        Trainer, fp32 + channels_last.
  bf16      Trainer, bf16 autocast (on the CPU it uses AMX/AVX512-BF16 where the CPU has them).
  bf16_cl   Trainer, bf16 autocast + channels_last.
  compile   Trainer, bf16 + channels_last + torch.compile (the first steps compile; excluded).

Synthetic CIFAR-shaped data already on the device, so the figure is the model's, not the loader's.
On a GPU, steps are timed with CUDA synchronisation; TF32 is enabled for the fp32 modes as
nasnetzoo's engine does (pass --no-tf32 to time strict fp32).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
from torch import nn

import nasnetzoo
from nasnetzoo.train.engine import Trainer, classification_loss
from nasnetzoo.runs.optim import build_optimizer

ALL_MODES = ("eager", "trainer", "nchw", "cl", "bf16", "bf16_cl", "compile")


def build(device: torch.device, C: int, layers: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nasnetzoo.load("darts_v2_cifar", num_classes=10, C=C, layers=layers, auxiliary=True).train()
    model.drop_path_prob = 0.2 * 0.5     # mid-training DARTS drop path (linear ramp to 0.2)
    return model.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, device: torch.device, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def run_mode(mode: str, args, device: torch.device) -> dict:
    model = build(device, args.C, args.layers)
    images = torch.randn(args.batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    optimizer = build_optimizer(model.parameters(), "sgd", lr=0.025, momentum=0.9, weight_decay=3e-4)
    warmup = args.warmup + (args.compile_warmup if mode == "compile" else 0)
    if mode == "eager":
        criterion = nn.CrossEntropyLoss()

        def step():
            loss, _ = classification_loss(model(images), labels, criterion, 0.4)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
    else:
        gpu = device.type == "cuda"
        amp = {"trainer": gpu, "nchw": False, "cl": False, "bf16": True, "bf16_cl": True, "compile": True}[mode]
        cl = {"trainer": True, "nchw": False, "cl": True, "bf16": False, "bf16_cl": True, "compile": True}[mode]
        trainer = Trainer(model, optimizer, device=device, amp=amp, channels_last=cl, compile=mode == "compile",
                          grad_clip=5.0, aux_weight=0.4)

        def step():
            trainer.train_step([(images, labels)])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_steps(step, device, warmup, args.steps)
    med = statistics.median(times)
    out = {"mode": mode, "img_per_s": args.batch_size / med, "step_s_median": med,
           "step_s_all": [round(t, 4) for t in times]}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", default=None, help=f"comma list of {', '.join(ALL_MODES)}")
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--C", type=int, default=36)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 3 CPU, 30 GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 1 CPU, 5 GPU)")
    parser.add_argument("--compile-warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch default)")
    parser.add_argument("--no-tf32", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.steps = args.steps or (30 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    modes = args.modes.split(",") if args.modes else (list(ALL_MODES) if gpu else ["eager", "nchw", "trainer", "bf16_cl"])
    if args.threads:
        torch.set_num_threads(args.threads)
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32
        torch.backends.cudnn.allow_tf32 = not args.no_tf32
    where = torch.cuda.get_device_name(device) if gpu else f"{platform.processor() or platform.machine()} CPU, " \
                                                            f"{torch.get_num_threads()} threads"
    print(f"darts_v2_cifar C={args.C} layers={args.layers} batch {args.batch_size}, train step, {where}, "
          f"torch {torch.__version__}", file=sys.stderr)
    results = []
    for mode in modes:
        if mode not in ALL_MODES:
            parser.error(f"unknown mode {mode!r}; use {', '.join(ALL_MODES)}")
        try:
            res = run_mode(mode, args, device)
        except Exception as err:  # a mode that cannot run here (e.g. compile without a compiler)
            res = {"mode": mode, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        results.append(res)
        print(json.dumps(res), file=sys.stderr)
    base = next((r["img_per_s"] for r in results if r["mode"] == "eager" and "img_per_s" in r), None)
    print(f"{'mode':10s} {'img/s':>9s} {'step s':>8s} {'vs eager':>9s}")
    for r in results:
        if "error" in r:
            print(f"{r['mode']:10s} {'-':>9s} {'-':>8s} {'-':>9s}  {r['error']}")
            continue
        ratio = f"{r['img_per_s'] / base:.2f}x" if base else "-"
        print(f"{r['mode']:10s} {r['img_per_s']:9.1f} {r['step_s_median']:8.3f} {ratio:>9s}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": where, "torch": torch.__version__, "args": vars(args), "results": results}, handle,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
