"""Child throughput of the NASNet RL search: in-process vs a process pool vs Ray, side by side.

The same batch of children (sampled once from a fresh controller; the smoke recipe's child
settings unless overridden) is trained by each executor in turn, on a quiet machine:

* ``local``: one after another in this process, with all cores' threads;
* ``process``: a ``ProcessPoolExecutor`` of ``--workers`` spawned processes, threads split;
* ``ray``: one Ray task per child on a local cluster of ``--workers`` CPUs (skipped without Ray);
* ``process-nchw``: the process pool again with ``child.channels_last`` off (the layout's gain).

For each: start-up (pool / cluster) seconds, seconds for the batch, children per minute, and the
batch time's ratio to ``local``.  Children are seeded by their number, so executors that give a
child the same number of CPU threads (``process`` and ``ray``: one each) must report the same
rewards; ``local`` uses all cores' threads, which reorders float sums, so its rewards differ by the
training noise of a short child (the script prints that spread too).

    python benchmarks/rl_children.py [--children 8] [--workers 2] [--epochs 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import torch

from nasnetzoo.search.rl.child import ChildConfig, ChildJob
from nasnetzoo.search.rl.controller import Controller
from nasnetzoo.search.rl.executors import make_executor
from nasnetzoo.search.rl.recipe import load_rl_recipe
from nasnetzoo.search.rl.space import SearchSpace


def jobs_for(n: int, config: ChildConfig, seed: int) -> list[ChildJob]:
    torch.manual_seed(seed)
    space = SearchSpace()
    rollout = Controller(space, temperature=5.0, tanh_constant=2.5).sample(
        n, generator=torch.Generator().manual_seed(seed))
    return [ChildJob(i, space.to_genotype(a).to_dict(), config, seed * 1000 + i)
            for i, a in enumerate(rollout.actions.tolist())]


def measure(kind: str, jobs: list[ChildJob], workers: int, label: str = "") -> dict:
    t0 = time.perf_counter()
    executor = make_executor(kind, workers=workers, ray_num_cpus=workers)
    startup = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        results = executor.run(jobs)
        batch = time.perf_counter() - t1
    finally:
        executor.close()
    return {"executor": label or kind, "startup_s": round(startup, 2), "batch_s": round(batch, 2),
            "children_per_min": round(60 * len(jobs) / batch, 2),
            "rewards": [round(r.reward, 6) for r in results],
            "workers_seen": len({(r.worker["host"], r.worker["pid"]) for r in results})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/smoke_nasnet_rl.yaml", help="child settings come from here")
    parser.add_argument("--children", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=0, help="override child.epochs (0: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    config = load_rl_recipe(args.recipe).child_config
    changes = {"threads": 0, "device": "cpu"}   # local: all cores; pools split them per worker
    if args.epochs:
        changes["epochs"] = args.epochs
    config = dataclasses.replace(config, **changes)
    jobs = jobs_for(args.children, config, args.seed)
    kinds = ["local", "process"]
    try:
        import ray  # noqa: F401
        kinds.append("ray")
    except ImportError:
        print("ray is not installed: skipping the Ray executor")
    rows = [measure(kind, jobs, args.workers) for kind in kinds]
    # the same pool with the NCHW layout, to measure what channels_last buys the children
    nchw = [dataclasses.replace(job, config=dataclasses.replace(job.config, channels_last="off")) for job in jobs]
    rows.append(measure("process", nchw, args.workers, label="process-nchw"))
    base = rows[0]["batch_s"]
    print(f"{args.children} children (N={config.N}, F={config.F}, {config.epochs} epochs on {config.dataset} "
          f"{config.image_size}px), {args.workers} workers, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"{'executor':<14}{'start-up s':>12}{'batch s':>10}{'children/min':>14}{'vs local':>10}{'workers':>9}")
    for row in rows:
        row["speedup_vs_local"] = round(base / row["batch_s"], 2)
        print(f"{row['executor']:<14}{row['startup_s']:>12.2f}{row['batch_s']:>10.2f}{row['children_per_min']:>14.2f}"
              f"{row['speedup_vs_local']:>9.2f}x{row['workers_seen']:>9}")
    pooled = [row for row in rows if row["executor"] in ("process", "ray")]
    same = all(row["rewards"] == pooled[0]["rewards"] for row in pooled)
    print(f"rewards identical across {', '.join(r['executor'] for r in pooled)} (one thread per child): {same}")
    spread = sum(abs(a - b) for a, b in zip(rows[0]["rewards"], pooled[0]["rewards"])) / len(jobs)
    print(f"mean |reward difference| local ({os.cpu_count()} threads) vs one thread: {100 * spread:.1f} points")
    print(f"channels_last over NCHW in the process pool: {rows[-1]['batch_s'] / rows[1]['batch_s']:.2f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "pooled_rewards_identical": same, "thread_count_spread": spread,
                       "children": args.children,
                       "workers": args.workers, "child": config.to_dict()}, handle, indent=2)


if __name__ == "__main__":
    main()
