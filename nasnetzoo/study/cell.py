"""One cell of a study: a search (or a random draw), then the proxy retrain of the cell it found,
then params and MACs; each stage in a folder of its own, each resumed where it stopped.

The folder of a cell (``STUDY/runs/<id>/``)::

    search/          the search's run directory (run_search); for the random baseline, sample/
    search.json      the search stage's record: genotype, held-out accuracy, wall time, device
    retrain/         the proxy retrain's run directory (the retrain engine)
    retrain.json     the retrain stage's record: accuracy, wall time, device, params, MACs
    *.clock.json     the wall-clock segments of a stage (a killed segment counts up to its last checkpoint)
    failed.json      the last failure of the cell (removed when it is run again)

A stage whose record exists is done and never run again.  A stage with a run directory that holds
a checkpoint is resumed (its pipeline's own ``resume``); otherwise it starts.  :func:`run_cell` is
what an executor runs: a module-level function of plain data, in this process or another.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import NasNetZooError, first_line
from ..fileio import write_text
from ..genotype import Genotype
from ..recipe_file import from_mapping
from ..runs.envelope import RunInterrupted, read_marker, run_kind

RANDOM = "random_baseline"   # the group of the random baseline (its cells are drawn, not searched)


@dataclass(frozen=True)
class CellJob:
    """Everything one cell needs, as plain data (it crosses into worker processes)."""
    study_dir: str
    cell_id: str
    group: str                  # a strategy name, or RANDOM
    seed: int
    search: Optional[dict]      # the strategy's frozen search recipe (None for the baseline)
    space: dict                 # the baseline's space ({steps})
    retrain: dict               # the frozen proxy retrain recipe
    profile: dict               # the network params and MACs are counted on ({}: the proxy)
    threads: int = 0            # CPU threads per run (0: the recipe's own)

    @property
    def folder(self) -> Path:
        return cell_folder(self.study_dir, self.cell_id)


def cell_folder(study_dir: Any, cell_id: str) -> Path:
    return Path(study_dir) / "runs" / cell_id


def with_threads(job: CellJob, threads: int) -> CellJob:
    """The executors' hook: a pool worker's share of the cores (a thread count the study pins wins)."""
    return job if job.threads else dataclasses.replace(job, threads=max(1, threads))


def read_record(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=1, default=str) + "\n")


# ---------------------------------------------------------------- wall clock
class Clock:
    """A stage's wall-clock segments in ``NAME.clock.json``.  A segment that a kill left open is
    closed at its run's last checkpoint: the work after it is done again, and counted then."""

    def __init__(self, path: Path, checkpoint: Optional[Path]) -> None:
        self.path = path
        record = read_record(path) or {}
        self.segments = [list(s) for s in record.get("segments", []) if isinstance(s, list) and len(s) == 2]
        if self.segments and self.segments[-1][1] is None:
            start = self.segments[-1][0]
            kept = checkpoint.stat().st_mtime if checkpoint is not None and checkpoint.is_file() else start
            self.segments[-1][1] = max(start, kept)

    def start(self) -> None:
        self.segments.append([time.time(), None])
        _write_json(self.path, {"segments": self.segments})

    def stop(self) -> float:
        self.segments[-1][1] = time.time()
        _write_json(self.path, {"segments": self.segments})
        return self.seconds

    @property
    def seconds(self) -> float:
        return sum(end - start for start, end in self.segments if end is not None)


def device_name(device: str = "auto") -> str:
    """The device a run of this process uses, as a report names it (the GPU's name, or the CPU's)."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.cuda.current_device())
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return "CPU: " + line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return "CPU: " + (platform.processor() or platform.machine())


def _checkpoint_of(run_dir: Path) -> Optional[Path]:
    """The checkpoint of the run in ``run_dir`` (any kind: the kind its ``run.json`` names), if written."""
    marker = read_marker(run_dir) if run_dir.is_dir() else None
    if marker is None:
        return None
    path = run_dir / run_kind(marker["kind"]).checkpoint
    return path if path.is_file() else None


def _pinned(data: dict, threads: int) -> dict:
    """A run recipe of the study: quiet (the study reports), with the worker's threads if unpinned."""
    data = dict(data)
    if "progress" in data:
        data["progress"] = False
    if threads and "threads" in data and not data["threads"]:
        data["threads"] = threads
    return data


# ---------------------------------------------------------------- the stages
def _search_stage(job: CellJob) -> dict:
    from ..search.api import run_search
    from .recipe import search_recipe

    folder = job.folder
    if job.group == RANDOM:
        from ..search.sampling import sample_genotype

        started = time.time()
        genotype = sample_genotype(job.seed, steps=int(job.space.get("steps", 4)), name=f"random_seed{job.seed}")
        path = genotype.save(folder / "sample" / "genotype.yaml")
        return {"genotype": genotype.to_dict(), "genotype_file": str(path.relative_to(folder)), "held_out_acc": None,
                "seconds": time.time() - started, "device": "none (drawn, not searched)", "epochs": 0}
    run_dir = folder / "search"
    checkpoint = _checkpoint_of(run_dir)
    clock = Clock(folder / "search.clock.json", checkpoint)
    recipe = search_recipe(job.group, _pinned(job.search, job.threads), job.seed, f"the {job.cell_id} search")
    clock.start()
    if checkpoint is not None:
        result = run_search(None, resume=run_dir)
    else:
        result = run_search(recipe, out=run_dir)
    seconds = clock.stop()
    genotype = getattr(result, "genotype", None) or Genotype.from_file(run_dir / "genotype.yaml")
    held_out = getattr(result, "val_acc", None)
    return {"genotype": genotype.to_dict(), "genotype_file": "search/genotype.yaml",
            "held_out_acc": None if held_out is None else float(held_out), "seconds": seconds,
            "device": device_name(getattr(recipe, "device", "auto")), "epochs": getattr(recipe, "epochs", None)}


def _retrain_stage(job: CellJob, search: dict) -> dict:
    from ..train.recipe import Recipe
    from ..train.runner import train

    folder = job.folder
    run_dir = folder / "retrain"
    checkpoint = _checkpoint_of(run_dir)
    clock = Clock(folder / "retrain.clock.json", checkpoint)
    recipe = from_mapping(Recipe, _pinned(job.retrain, job.threads), f"the {job.cell_id} retrain")
    arch = str(folder / search["genotype_file"])
    clock.start()
    if checkpoint is not None:
        result = train(recipe, arch, resume=run_dir)
    else:
        result = train(recipe, arch, out=run_dir)
    seconds = clock.stop()
    return {"val_acc": result.val_acc, "best_val_acc": result.best_val_acc, "best_epoch": result.best_epoch,
            "epochs": result.epochs, "seconds": seconds, "device": device_name(recipe.device),
            **_profile(job, recipe, arch, run_dir)}


def _profile(job: CellJob, recipe, arch: str, run_dir: Path) -> dict:
    """Params and MACs of the cell's network: the retrained one, or the one ``profile`` names."""
    from ..factory import load
    from ..profile import profile
    from ..train.runner import network_dataset

    model_info = read_record(run_dir / "model.json") or {}
    config = dict(model_info.get("config") or {})
    wanted = dict(job.profile)
    dataset = str(wanted.pop("dataset", "") or model_info.get("dataset") or network_dataset(recipe.dataset))
    size = int(wanted.pop("image_size", 0) or recipe.image_size)
    if job.profile:
        config = {k: v for k, v in config.items() if k not in ("C", "layers")} | wanted
    model = load(arch, dataset=dataset, **config)
    counted = profile(model, (3, size, size))
    return {"params": counted.params, "macs": counted.macs,
            "profiled": {"dataset": dataset, "image_size": size,
                         **{k: config[k] for k in ("C", "layers", "num_classes") if k in config}}}


def run_cell(job: CellJob) -> dict:
    """Run what is left of one cell; its record (``status``: done or failed, with every stage's record).

    A failure of the cell's own runs (a bad value, a NaN loss, a full disk) is recorded, not raised,
    so the other cells go on; an interrupt (Ctrl-C, SIGTERM) ends the study at the runs' checkpoints."""
    folder = job.folder
    folder.mkdir(parents=True, exist_ok=True)
    stage = "search"
    try:
        search = read_record(folder / "search.json")
        if search is None:
            search = _search_stage(job)
            _write_json(folder / "search.json", search)
        stage = "retrain"
        retrain = read_record(folder / "retrain.json")
        if retrain is None:
            retrain = _retrain_stage(job, search)
            _write_json(folder / "retrain.json", retrain)
    except (RunInterrupted, KeyboardInterrupt):
        raise
    except (NasNetZooError, OSError, RuntimeError, ValueError) as err:
        failure = {"stage": stage, "error": first_line(err)[:500], "type": type(err).__name__}
        _write_json(folder / "failed.json", failure)
        return {**_identity(job), "status": "failed", "failure": failure}
    if (folder / "failed.json").exists():
        os.unlink(folder / "failed.json")
    return {**_identity(job), "status": "done", "search": search, "retrain": retrain}


def _identity(job: CellJob) -> dict:
    return {"cell": job.cell_id, "group": job.group, "seed": job.seed}


def cell_record(job: CellJob) -> dict:
    """What the folder of a cell holds now, without running anything (``status``: done, failed or pending)."""
    folder = job.folder
    search, retrain = read_record(folder / "search.json"), read_record(folder / "retrain.json")
    if search is not None and retrain is not None:
        return {**_identity(job), "status": "done", "search": search, "retrain": retrain}
    failure = read_record(folder / "failed.json")
    if failure is not None:
        return {**_identity(job), "status": "failed", "failure": failure}
    return {**_identity(job), "status": "pending"}


__all__ = ["CellJob", "Clock", "RANDOM", "cell_folder", "cell_record", "device_name", "read_record", "run_cell",
           "with_threads"]
