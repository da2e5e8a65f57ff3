"""How much a search slows when another PyTorch process shares its cores, under each thread policy.

For each setting, N search steps (PC-DARTS, first-order architecture step + weight step, a small
supernet) are timed in a fresh process, first alone, then while a competing process runs a
2-thread PyTorch convolution loop on the same cores (itself started with PyTorch's defaults,
like any other user's job).  Settings:

* ``spinning``: PyTorch's defaults (libgomp spins at barriers, then sleeps; threads = cores), as
  before issue 14;
* ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once), nasnetzoo's default until the
  thread count followed the load;
* ``free cores``: nasnetzoo's default (``nasnetzoo/threads.py``): libgomp's own policy, the thread
  count re-read between steps from what other processes use (``threads: 0``), as the run loops do;
* ``1 thread``: ``threads: 1`` in the recipe.

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

SETTINGS = {            # name: (environment, threads; 0: follow the free cores)
    "spinning": ({}, None),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "free cores": ({}, 0),
    "1 thread": ({}, 1),
}


def worker(steps: int, threads: int) -> None:
    """Time ``steps`` search steps as the search loop runs them; print the seconds."""
    import torch

    from nasnetzoo.search.strategies import PCDARTSStrategy
    from nasnetzoo.search.supernet import SearchNetwork
    from nasnetzoo.threads import share_cores

    cores = share_cores(threads)
    torch.manual_seed(0)
    net = SearchNetwork(C=8, layers=5, num_classes=10, partial_k=4, edge_norm=True)
    strategy = PCDARTSStrategy(net)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    batch = (torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,)))
    strategy.arch_step(batch, batch, opt)   # warm-up
    strategy.weight_step(batch, opt)
    start = time.perf_counter()
    for _ in range(steps):
        if cores is not None:
            cores.update()
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
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS")}
    env.update(env_changes)
    threads = threads if setting_threads is None else setting_threads
    args = [sys.executable, __file__, "--worker", "--steps", str(steps), "--threads", str(threads)]
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--competitor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.steps, args.threads)
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
    print(f"{args.steps} PC-DARTS search steps (C=8, 5 cells, batch 16, 16 px), {args.threads} threads for "
          f"'spinning' and 'passive'; a competing 2-thread PyTorch process in the 'shared' column")
    head = f"{'setting':16s} {'alone s':>9s} {'shared s':>9s} {'slowdown':>9s}"
    print(head + "\n" + "-" * len(head))
    for s in SETTINGS:
        print(f"{s:16s} {alone[s]:9.2f} {shared[s]:9.2f} {shared[s] / alone[s]:8.1f}x")


if __name__ == "__main__":
    main()
