"""Compile time and step time of the search step, eager against recipe key ``compile: true``.

Both variants build the search loop as ``nasnetzoo search`` does (``search/runner.py``) from one
recipe (default: ``recipes/smoke_search.yaml``, the reference backend, architecture steps from the
first step), then run search steps (architecture step + weight step) on the recipe's data:

* ``first_step_s``: the first step's wall time; for the compiled variant it holds the compile
  (dynamo's capture, AOTAutograd and inductor's code generation, cold: inductor's on-disk caches
  are off unless ``--warm-cache``);
* ``compile_s``: the compiled first step less the eager median step;
* ``step_ms``: the median of the ``--steps`` steps after it, with the spread (min, max);
* ``graphs``: the graphs dynamo compiled (1 expected: the training-mode supernet).

The JSON gives the torch version, the device and the load average beside the figures: on a shared
CPU the figures say what the machine did under that load, nothing more.

    python benchmarks/search_compile.py --out search_compile.json
    python benchmarks/search_compile.py --smoke --out /tmp/search_compile.json   # tiny, for the tests
    python benchmarks/search_compile.py --device cuda --set C=16 --set layers=8 --set batch_size=256
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SMOKE = ("C=4", "layers=3", "steps=1", "batch_size=16", "image_size=16")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def batches(loop):
    """(train batch, architecture batch) pairs on the device, round and round the epoch."""
    device = loop.info.device
    while True:
        for train, arch in zip(loop.data.weights, loop.data.arch):
            yield tuple(t.to(device) for t in train), tuple(t.to(device) for t in arch)


def measure(recipe, steps: int) -> dict:
    from torch._dynamo.utils import counters

    from nasnetzoo.runs.distributed import DistInfo, pick_device
    from nasnetzoo.search import runner

    torch._dynamo.reset()
    counters.clear()
    loop = runner._build(DistInfo(device=pick_device(recipe.device)), recipe)
    device = loop.info.device
    pairs = batches(loop)
    times = []
    for _ in range(steps + 1):
        train, arch = next(pairs)
        sync(device)
        t0 = time.perf_counter()
        loss, _ = loop.strategy.step(train, arch, loop.optimizer)
        float(loss)   # the step's work is done when its loss is on the host
        sync(device)
        times.append(time.perf_counter() - t0)
    record = {"first_step_s": round(times[0], 3), "step_ms": round(1e3 * statistics.median(times[1:]), 2),
              "step_ms_min": round(1e3 * min(times[1:]), 2), "step_ms_max": round(1e3 * max(times[1:]), 2),
              "graphs": int(counters["stats"]["unique_graphs"]), "backend": loop.network.backend,
              "loss": float(loss)}
    torch._dynamo.reset()
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "smoke_search.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    parser.add_argument("--steps", type=int, default=10, help="timed steps after the first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="a tiny supernet and 2 steps (the tests)")
    parser.add_argument("--warm-cache", action="store_true", help="let inductor reuse its on-disk caches")
    parser.add_argument("--out", default="search_compile.json")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from nasnetzoo.search.recipe import load_search_recipe

    if not args.warm_cache:
        import torch._inductor.config as inductor_config

        inductor_config.force_disable_caches = True
    steps = 2 if args.smoke else args.steps
    common = ["progress=false", "warmup_epochs=0", "max_steps_per_epoch=0", f"device={args.device}",
              *(SMOKE if args.smoke else ()), *args.set]
    results = {}
    for name, extra in (("eager", "backend=reference"), ("compiled", "compile=true")):
        recipe = load_search_recipe(args.recipe, [*common, extra])
        results[name] = measure(recipe, steps)
    eager, compiled = results["eager"], results["compiled"]
    compiled["compile_s"] = round(compiled["first_step_s"] - eager["step_ms"] / 1e3, 3)
    compiled["speedup"] = round(eager["step_ms"] / compiled["step_ms"], 3)
    report = {"torch": torch.__version__, "device": args.device, "platform": platform.platform(),
              "threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
              "recipe": args.recipe, "overrides": common, "steps": steps, "smoke": args.smoke,
              "inductor_caches": "warm" if args.warm_cache else "off", "results": results}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
