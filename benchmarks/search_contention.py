"""How much a search slows when another PyTorch process shares its cores: old vs new thread defaults.

For each setting, N search steps (PC-DARTS, first-order architecture step + weight step, a small
supernet) are timed in a fresh process, first alone, then while a competing process runs a
2-thread PyTorch convolution loop on the same cores (itself started with PyTorch's defaults,
like any other user's job).  Settings:

* ``old``: PyTorch's defaults (libgomp spins at barriers; threads = cores), as before issue 14;
* ``new``: nasnetzoo's defaults (``nasnetzoo/threads.py``: ``OMP_WAIT_POLICY=PASSIVE``);
* ``new, 1 thread``: the same with ``threads: 1`` in the recipe.

Slowdown = contended / alone; sharing two cores with one other busy process explains about 2x.

    python benchmarks/search_contention.py [--steps 6] [--threads 2]

About 2-3 minutes on a quiet 2-core machine.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

SETTINGS = {            # name: (environment, threads)
    "old": ({"OMP_WAIT_POLICY": None, "KMP_BLOCKTIME": None}, 0),
    "new": ({}, 0),
    "new, 1 thread": ({}, 1),
}


def worker(steps: int, threads: int, old: bool) -> None:
    """Time ``steps`` search steps; print the seconds."""
    if old:
        import torch  # noqa: F401  (loaded before nasnetzoo: its OpenMP defaults cannot apply)
    from nasnetzoo.threads import configure_threads

    configure_threads(threads)
    import torch

    from nasnetzoo.search.strategies import PCDARTSStrategy
    from nasnetzoo.search.supernet import SearchNetwork

    torch.manual_seed(0)
    net = SearchNetwork(C=8, layers=5, num_classes=10, partial_k=4, edge_norm=True)
    strategy = PCDARTSStrategy(net)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    batch = (torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,)))
    strategy.arch_step(batch, batch, opt)   # warm-up
    strategy.weight_step(batch, opt)
    start = time.perf_counter()
    for _ in range(steps):
        strategy.arch_step(batch, batch, opt)
        strategy.weight_step(batch, opt)
    print(f"{time.perf_counter() - start:.4f}")


def competitor() -> None:
    """Another user's 2-thread PyTorch job: convolutions until killed (PyTorch's own defaults)."""
    import torch

    torch.set_num_threads(2)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1)
    x = torch.randn(8, 32, 32, 32, requires_grad=True)
    while True:
        conv(x).sum().backward()


def run_worker(setting: str, steps: int, threads: int) -> float:
    env_changes, setting_threads = SETTINGS[setting]
    env = dict(os.environ)
    for key, value in env_changes.items():
        env.pop(key, None) if value is None else env.__setitem__(key, value)
    args = [sys.executable, __file__, "--worker", "--steps", str(steps),
            "--threads", str(setting_threads or threads)] + (["--old"] if setting == "old" else [])
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--competitor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--old", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.steps, args.threads, args.old)
    if args.competitor:
        return competitor()

    alone = {s: run_worker(s, args.steps, args.threads) for s in SETTINGS}
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    rival = subprocess.Popen([sys.executable, __file__, "--competitor"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)   # let it start its pool
        shared = {s: run_worker(s, args.steps, args.threads) for s in SETTINGS}
    finally:
        rival.kill()
        rival.wait()
    print(f"{args.steps} PC-DARTS search steps (C=8, 5 cells, batch 16, 16 px), {args.threads} threads "
          f"unless stated; a competing 2-thread PyTorch process in the 'shared' column")
    head = f"{'setting':16s} {'alone s':>9s} {'shared s':>9s} {'slowdown':>9s}"
    print(head + "\n" + "-" * len(head))
    for s in SETTINGS:
        print(f"{s:16s} {alone[s]:9.2f} {shared[s]:9.2f} {shared[s] / alone[s]:8.1f}x")


if __name__ == "__main__":
    main()
