"""The expected cost of a study, in device-hours, from step times measured on this machine.

    python benchmarks/study_cost.py --recipe recipes/study_cifar10.yaml --json study_cost.json
    python benchmarks/study_cost.py --recipe recipes/smoke_study.yaml --steps 1 2      # a CPU check

Nothing here is a figure until it runs on the device the study is for (a GPU study's on that GPU);
the numbers go into docs/study.md with the device that gave them.

How each run is estimated, with its recipe exactly as the study freezes it (``study.recipe.resolve``)
and the data it names (CIFAR-10 must be in its ``data_dir``; nothing is downloaded if it is there):

* **a search** (every strategy of the table that runs on the supernet): the whole search, every
  epoch as its recipe has them (warm-up epochs without architecture steps, a strategy's stages),
  is run twice with ``max_steps_per_epoch`` cut to k1 and k2 steps (after a warm-up run at k1).  Its time is linear in the
  steps per epoch (each step, and the held-out batches, which are half the steps), so the full
  search takes ``T(k1) + (S - k1) (T(k2) - T(k1)) / (k2 - k1)`` with S the recipe's full steps
  per epoch.  Strategies with a pipeline of their own (not the supernet) are not estimated here.
* **the proxy retrain** of one cell (DARTS V2's normal and reduction cells: a typical cell of the
  space; a cell of more separable convolutions costs more, one of more pools and skips less): one
  epoch at k1 and k2 steps gives the step time t; two epochs at k1 give the rest of an epoch e
  (validation, checkpoint); the retrain takes ``E (S t + e)`` plus the start-up, with E its epochs.
* **the study**: every strategy's search times its seeds, plus one retrain per cell (strategies
  and the random baseline, times the seeds); the random baseline's cells are drawn, not searched.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # run from a checkout without installing


def _timed(fn) -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _search_steps(recipe) -> int:
    """The full steps per epoch of a search recipe: the runner's own count."""
    import torch

    from nasnetzoo.search.data import build_search_data

    data = build_search_data(recipe, micro_batch=recipe.batch_size, device=torch.device("cpu"))
    return min(len(data.weights), len(data.arch))


def search_seconds(name: str, data: dict, seed: int, k1: int, k2: int, scratch: Path) -> dict:
    from nasnetzoo.search.api import run_search
    from nasnetzoo.study.recipe import search_recipe

    def run(k: int) -> float:
        recipe = search_recipe(name, {**data, "max_steps_per_epoch": k, "progress": False}, seed)
        return _timed(lambda: run_search(recipe, out=scratch / f"search-{name}-{k}", overwrite=True))

    full = _search_steps(search_recipe(name, data, seed))
    run(k1)   # a warm-up: the first run of a process pays for loading data, kernels and caches
    t1, t2 = run(k1), run(k2)
    per_step = (t2 - t1) / (k2 - k1)
    return {"steps_per_epoch": full, "epochs": data.get("epochs"), "seconds_at_k1": t1, "seconds_at_k2": t2,
            "seconds_per_step_of_every_epoch": per_step, "seconds": t1 + (full - k1) * per_step}


def retrain_seconds(data: dict, k1: int, k2: int, scratch: Path) -> dict:
    import torch

    from nasnetzoo.data.datasets import build_data
    from nasnetzoo.recipe_file import from_mapping
    from nasnetzoo.train.recipe import Recipe
    from nasnetzoo.train.runner import train

    def run(epochs: int, k: int) -> float:
        recipe = from_mapping(Recipe, {**data, "epochs": epochs, "max_steps_per_epoch": k, "progress": False})
        return _timed(lambda: train(recipe, "darts_v2", out=scratch / f"retrain-{epochs}-{k}", overwrite=True))

    recipe = from_mapping(Recipe, data)
    steps = len(build_data(recipe, micro_batch=recipe.batch_size // recipe.accum_steps,
                           device=torch.device("cpu")).train) // recipe.accum_steps
    if recipe.max_steps_per_epoch:
        steps = min(steps, recipe.max_steps_per_epoch)
    run(1, k1)   # a warm-up, as for the searches
    one_k1, one_k2, two_k1 = run(1, k1), run(1, k2), run(2, k1)
    per_step = (one_k2 - one_k1) / (k2 - k1)
    rest_of_epoch = two_k1 - one_k1 - k1 * per_step
    start = one_k1 - k1 * per_step - rest_of_epoch
    return {"cell": "darts_v2", "steps_per_epoch": steps, "epochs": recipe.epochs, "seconds_per_step": per_step,
            "seconds_per_epoch_besides_steps": rest_of_epoch, "start_seconds": start,
            "seconds": start + recipe.epochs * (steps * per_step + rest_of_epoch)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="a study recipe (recipes/study_cifar10.yaml)")
    parser.add_argument("--steps", type=int, nargs=2, default=(5, 15), metavar=("K1", "K2"),
                        help="the two step counts per epoch the runs are cut to (default 5 15)")
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args(argv)
    k1, k2 = sorted(args.steps)
    if k1 < 1 or k2 == k1:
        parser.error("--steps takes two different step counts of at least 1")

    import torch

    from nasnetzoo.recipe_file import from_mapping, read_yaml_mapping, resolve_recipe
    from nasnetzoo.search.strategies import TABLE, get_strategy
    from nasnetzoo.study.cell import device_name
    from nasnetzoo.study.recipe import StudyRecipe, resolve

    path = resolve_recipe(args.recipe)
    data = read_yaml_mapping(path)
    unknown = [name for name in data.get("strategies", {}) if name not in TABLE]
    if unknown:   # a strategy of another branch: estimated once it is registered
        print(f"not registered here, left out: {', '.join(unknown)}", file=sys.stderr)
        data["strategies"] = {k: v for k, v in data["strategies"].items() if k in TABLE}
    recipe = from_mapping(StudyRecipe, data, str(path))
    frozen = resolve(recipe, path.resolve().parent)
    report = {"recipe": str(path), "device": device_name(), "torch": torch.__version__, "python": platform.python_version(),
              "steps": [k1, k2], "seeds": len(recipe.seeds), "left_out": unknown, "searches": {}}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for name, search in frozen.searches.items():
            if not get_strategy(name).on_supernet:
                report["searches"][name] = {"note": "a pipeline of its own: not estimated by step times"}
                continue
            report["searches"][name] = search_seconds(name, search, recipe.seeds[0], k1, k2, scratch)
            print(f"{name}: {report['searches'][name]['seconds'] / 3600:.3f} h per search", file=sys.stderr)
        report["retrain"] = retrain_seconds(frozen.retrain, k1, k2, scratch)
    cells = (len(frozen.searches) + (1 if recipe.random_baseline else 0)) * len(recipe.seeds)
    searches = sum(s.get("seconds", 0.0) for s in report["searches"].values()) * len(recipe.seeds)
    report["device_hours"] = {"searches": searches / 3600, "retrains": cells * report["retrain"]["seconds"] / 3600}
    report["device_hours"]["study"] = report["device_hours"]["searches"] + report["device_hours"]["retrains"]
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
