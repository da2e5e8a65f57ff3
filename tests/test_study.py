"""``nasnetzoo study``: a reduced study (1 epoch, 2 seeds, two strategies and the random baseline)
runs through run_search and the retrain engine, is interrupted, resumes without redoing finished
cells, resumes a half-done stage through its own run's checkpoint, and reports every seed; its
recipe refuses bad values in one line; the executors put one run on each GPU."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nasnetzoo.cli import cli
from nasnetzoo.recipe_file import RecipeError, from_mapping
from nasnetzoo.runs import executors
from nasnetzoo.runs.envelope import RunDirError, RunInterrupted
from nasnetzoo.search.strategies import TABLE
from nasnetzoo.study import run_study
from nasnetzoo.study.recipe import StudyRecipe, resolve

REPO = Path(__file__).resolve().parents[1]
TINY_SEARCH = {"image_size": 8, "C": 4, "layers": 3, "steps": 2, "batch_size": 32, "epochs": 1, "warmup_epochs": 0,
               "max_steps_per_epoch": 2, "threads": 1}
TINY_STUDY = {
    "name": "tiny_study", "search": "smoke_search",
    "strategies": {"pcdarts": {"set": TINY_SEARCH},
                   "darts": {"set": {**TINY_SEARCH, "partial_k": 1, "edge_norm": False}}},
    "seeds": [0, 1], "retrain": "smoke_train",
    "retrain_set": {"epochs": 1, "image_size": 8, "max_steps_per_epoch": 2, "batch_size": 32,
                    "model": {"C": 4, "layers": 2}, "auxiliary": False},
    "executor": "local", "bootstrap_samples": 200,
}
CELLS = ["pcdarts-seed0", "darts-seed0", "random_baseline-seed0", "pcdarts-seed1", "darts-seed1",
         "random_baseline-seed1"]


def write_study(folder: Path, **changes) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({**TINY_STUDY, **changes}, sort_keys=False))
    return path


def _stamps(study: Path, cell: str) -> dict:
    folder = study / "runs" / cell
    files = [folder / "search.json", folder / "retrain.json", folder / "retrain" / "checkpoints" / "last.pt"]
    files += [folder / "search" / "checkpoint.pt"] if (folder / "search").is_dir() else []
    return {str(f): f.stat().st_mtime_ns for f in files}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The reduced study, interrupted after two cells and resumed: (its folder, the cells each call ran,
    the files of the first two cells as the interrupt left them)."""
    folder = tmp_path_factory.mktemp("study")
    recipe = write_study(folder)
    first: list = []

    def stop_after_two(record):
        first.append(record["cell"])
        if len(first) == 2:
            raise KeyboardInterrupt   # Ctrl-C between two cells

    with pytest.raises(RunInterrupted, match=r"after 2/6 cells.*nasnetzoo study --resume"):
        run_study(recipe, out=folder / "s", on_cell_done=stop_after_two)
    stamps = {cell: _stamps(folder / "s", cell) for cell in first}
    second: list = []
    result = run_study(None, resume=folder / "s", on_cell_done=lambda record: second.append(record["cell"]))
    return folder / "s", result, first, second, stamps


def test_a_reduced_study_resumes_without_redoing_finished_cells(study):
    folder, result, first, second, stamps = study
    assert first == CELLS[:2] and second == CELLS[2:]          # the resume ran only the four left
    for cell, before in stamps.items():
        assert _stamps(folder, cell) == before, cell            # nothing of a finished cell rewritten
    assert [c["status"] for c in result.cells] == ["done"] * 6 and not result.failed
    for cell in CELLS:   # every search and retrain is a run directory of its own
        runs = folder / "runs" / cell
        assert json.loads((runs / "retrain" / "run.json").read_text())["kind"] == "train"
        if not cell.startswith("random"):
            assert json.loads((runs / "search" / "run.json").read_text())["kind"] == "search"


def test_the_report_shows_every_strategy_every_seed_and_the_random_baseline(study):
    folder, result, *_ = study
    report = json.loads((folder / "study.json").read_text())
    assert [g["label"] for g in report["groups"]] == ["PC-DARTS", "DARTS", "random (baseline)"]
    cells = {c["cell"]: c for c in report["cells"]}
    for group in report["groups"]:
        values = group["accuracy"]["values"]
        assert [v["seed"] for v in values] == [0, 1]
        assert [v["acc"] for v in values] == [cells[f"{group['group']}-seed{s}"]["proxy_acc"] for s in (0, 1)]
        assert group["search_cost"]["device_hours"] and group["params"]["mean"] > 0 and group["macs"]["mean"] > 0
        assert group["similarity"]["pairs"] == 1
    random_mean = report["groups"][2]["accuracy"]["mean"]
    for group in report["groups"][:2]:
        assert group["vs_random"]["difference"] == pytest.approx(group["accuracy"]["mean"] - random_mean)
        low, high = group["vs_random"]["interval"]
        assert low <= group["vs_random"]["difference"] <= high
    text = (folder / "study.md").read_text()
    for cell in CELLS:
        assert f"| {cell} |" in text
    for label in ("PC-DARTS", "DARTS", "random (baseline)"):
        assert f"| {label} |" in text
    pytest.importorskip("matplotlib")
    assert {p: (folder / f).is_file() for p, f in report["plots"].items()} == \
        {"accuracy": True, "cells_normal": True, "cells_reduce": True}


def test_a_half_done_stage_resumes_through_its_own_runs_checkpoint(study):
    folder, *_ = study
    cell = folder / "runs" / "darts-seed1"
    before = json.loads((cell / "search.json").read_text())
    checkpoint = (cell / "search" / "checkpoint.pt").stat().st_mtime_ns
    (cell / "search.json").unlink()    # as if killed after the search's last checkpoint, before its record
    (cell / "retrain.json").unlink()
    ran: list = []
    run_study(None, resume=folder, on_cell_done=lambda record: ran.append(record["cell"]))
    assert ran == ["darts-seed1"]
    after = json.loads((cell / "search.json").read_text())
    assert after["genotype"] == before["genotype"]                       # the same search, continued
    assert (cell / "search" / "checkpoint.pt").stat().st_mtime_ns == checkpoint   # no epoch run again
    clock = json.loads((cell / "search.clock.json").read_text())["segments"]
    assert len(clock) == 2 and all(end >= start for start, end in clock)


def test_a_study_directory_is_owned_and_a_resume_changes_only_how_it_runs(study, tmp_path):
    folder, *_ = study
    with pytest.raises(RunDirError, match="already holds a study; resume it with --resume"):
        run_study(write_study(tmp_path), out=folder)
    with pytest.raises(RecipeError, match="on --resume, --set changes only"):
        run_study(None, resume=folder, overrides=["seeds=[0]"])
    out = CliRunner().invoke(cli, ["study", "--resume", str(folder), "--set", "workers=1"])
    assert out.exit_code == 0, out.output
    assert "6/6 cells done" in out.output
    out = CliRunner().invoke(cli, ["study", "--resume", str(folder), "--recipe", "x.yaml"])
    assert out.exit_code != 0 and "drop --recipe" in out.output


# ---------------------------------------------------------------- the recipe
@pytest.mark.parametrize("changes, message", [
    ({"strategies": {"pdarts_typo": {}}}, "unknown search strategy 'pdarts_typo'; known: "),
    ({"strategies": {"darts": {"sett": {}}}}, "has sett; an entry takes `recipe`"),
    ({"seeds": [0, 0]}, "repeats a seed"),
    ({"retrain": ""}, "'retrain' is empty"),
    ({"executor": "slurm"}, "'executor' = 'slurm' is not one of"),
    ({"profile": {"width": 3}}, "'profile' has width"),
    ({"strategies": {"darts": {"set": {"C": "wide"}}}}, "recipe key 'C' in the darts search of the study"),
])
def test_a_bad_study_recipe_is_one_line(tmp_path, changes, message):
    out = CliRunner().invoke(cli, ["study", "--recipe", str(write_study(tmp_path, **changes)), "--out",
                                   str(tmp_path / "s")])
    assert out.exit_code != 0 and message in out.output, out.output
    assert "Traceback" not in out.output and not (tmp_path / "s").exists()


def test_the_random_baseline_draws_from_the_strategies_space(tmp_path):
    recipe = StudyRecipe.load(write_study(tmp_path))
    assert resolve(recipe, tmp_path).space == {"steps": 2}
    mixed = {"pcdarts": {"set": TINY_SEARCH}, "darts": {"set": {**TINY_SEARCH, "steps": 3, "partial_k": 1,
                                                                "edge_norm": False}}}
    with pytest.raises(RecipeError, match="cells of different sizes"):
        resolve(StudyRecipe.load(write_study(tmp_path, strategies=mixed)), tmp_path)


def test_the_bundled_smoke_study_reads_and_checks_every_recipe_it_names():
    recipe = StudyRecipe.load(REPO / "recipes" / "smoke_study.yaml")
    frozen = resolve(recipe, REPO / "recipes")
    assert list(frozen.searches) == ["pcdarts", "darts"] and recipe.seeds == [0, 1, 2] and recipe.random_baseline
    assert frozen.searches["darts"]["partial_k"] == 1 and frozen.retrain["epochs"] == 3


CIFAR_STUDY = yaml.safe_load((REPO / "recipes" / "study_cifar10.yaml").read_text())


@pytest.mark.parametrize("strategy", list(CIFAR_STUDY["strategies"]))
def test_the_cifar10_study_recipe_reads_for_each_registered_strategy(strategy):
    """pdarts, gdas and snas are registered by their own branch (issue 33); until then they skip."""
    if strategy not in TABLE:
        pytest.skip(f"strategy {strategy!r} is not registered yet (known: {', '.join(TABLE)})")
    recipe = from_mapping(StudyRecipe, {**CIFAR_STUDY, "strategies": {strategy: CIFAR_STUDY["strategies"][strategy]}})
    frozen = resolve(recipe, REPO / "recipes")
    assert frozen.searches[strategy]["dataset"] == "cifar10" and frozen.retrain["epochs"] == 100
    assert frozen.retrain["model"] == {"C": 36, "layers": 20} and recipe.seeds == [0, 1, 2, 3]


# ---------------------------------------------------------------- executors
def test_one_worker_per_gpu(monkeypatch):
    import torch

    from nasnetzoo.study.runner import _executor

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    pool = _executor(from_mapping(StudyRecipe, {**TINY_STUDY, "executor": "auto"}))
    try:
        assert (pool.name, pool.devices, pool.workers) == ("process", (0, 1, 2, 3), 4)
    finally:
        pool.close()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert _executor(from_mapping(StudyRecipe, {**TINY_STUDY, "executor": "auto"})).name == "local"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pool = _executor(from_mapping(StudyRecipe, {**TINY_STUDY, "executor": "auto", "workers": 2}))
    try:
        assert (pool.name, pool.devices, pool.workers) == ("process", (), 2)
    finally:
        pool.close()


def test_a_pool_worker_takes_one_gpu_of_its_own(monkeypatch):
    import queue

    devices = queue.Queue()
    for d in (3, 5):
        devices.put(d)
    monkeypatch.setattr(executors, "_die_with_parent", lambda: None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5")
    executors._start_worker(devices)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    executors._start_worker(devices)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


@pytest.mark.slow
def test_a_study_killed_by_sigkill_resumes(tmp_path):
    """A real kill -9 of the study process (its pool workers stop with it) and a resume from the shell."""
    recipe = write_study(tmp_path, executor="process", workers=2)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "nasnetzoo", "study", "--recipe", str(recipe), "--out", str(tmp_path / "s")]
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "s" / "runs").glob("*/retrain.json")):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = {p.parent.name for p in (tmp_path / "s" / "runs").glob("*/retrain.json")}
    assert done
    time.sleep(2)   # the workers end with their parent (SIGTERM at their run's checkpoint)
    out = subprocess.run([sys.executable, "-m", "nasnetzoo", "study", "--resume", str(tmp_path / "s")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    ran = {line.split("] ")[1].split(":")[0] for line in out.stderr.splitlines() if line.startswith("[")}
    assert ran and not ran & done and ran | done == set(CELLS)
