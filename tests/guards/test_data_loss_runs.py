"""No run loses data: a run directory has one writer, holds one run, and a kill inside any kind of write
(or between any two) leaves a directory that resumes to exactly what an uninterrupted run writes."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from nasnetzoo.cli import cli
from nasnetzoo.search.recipe import load_search_recipe
from nasnetzoo.search.rl.recipe import RLSearchRecipe
from nasnetzoo.search.rl.runner import rl_search
from nasnetzoo.search.runner import prepare_resume as prepare_search_resume, search
from nasnetzoo import fileio
from nasnetzoo.runs.envelope import Run, RunDirError
from nasnetzoo.runs.progress import read_jsonl
from nasnetzoo.train.recipe import Recipe
from nasnetzoo.train.runner import prepare_resume, train

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
TINY_TRAIN = ["epochs=2", "max_steps_per_epoch=2", "model.C=4", "model.layers=3", "progress=false", "batch_size=32"]


def _tiny_train(**changes) -> Recipe:
    base = dict(name="tiny", dataset="digits", image_size=16, crop_padding=2, model={"C": 4, "layers": 3},
                auxiliary=True, drop_path=0.2, epochs=2, batch_size=32, lr=0.05, max_steps_per_epoch=2,
                threads=1, progress=False, log_every=1)
    base.update(changes)
    return Recipe(**base)


# ---------------------------------------------------------------------------- one writer
def test_a_second_writer_is_refused_while_the_first_holds_the_directory(tmp_path):
    first = Run("train", tmp_path / "run", recipe={"name": "a"})
    with first:
        with pytest.raises(RunDirError, match=r"in use by another nasnetzoo process \(pid \d+\)"):
            with Run("train", tmp_path / "run", recipe={"name": "a"}):
                pass
    with Run("train", tmp_path / "run", recipe={"name": "a"}):   # released on exit
        pass


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    code = ("import os, signal; from nasnetzoo.runs.envelope import Run\n"
            f"with Run('train', {str(tmp_path / 'run')!r}, recipe={{'name': 'a'}}):\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "run" / ".lock").exists()
    with Run("train", tmp_path / "run", recipe={"name": "a"}):
        pass


def test_two_concurrent_cli_trains_into_one_directory_one_is_refused(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "nasnetzoo", "train", "--recipe", str(RECIPES / "smoke_train.yaml"), "--out",
            str(run), *[a for kv in TINY_TRAIN for a in ("--set", kv)], "--set", "epochs=30"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        import time

        deadline = time.time() + 120
        while time.time() < deadline and not (run / "checkpoints" / "last.pt").exists():
            time.sleep(0.2)
        second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
        assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
        assert "in use by another nasnetzoo process" in second.stderr, second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    epochs = [r["epoch"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "epoch"]
    assert epochs == list(range(1, len(epochs) + 1))   # one run's log, not two interleaved


# ---------------------------------------------------------------------------- one run per directory
def _fake_search_run(run: Path) -> dict[str, bytes]:
    run.mkdir(parents=True)
    files = {"run.json": json.dumps({"kind": "search", "name": "smoke_search", "recipe": "x"}).encode(),
             "metrics.jsonl": b'{"epoch": 0, "val_acc": 50.0}\n', "checkpoint.pt": b"a search checkpoint",
             "recipe.yaml": b"name: smoke_search\n"}
    for name, data in files.items():
        (run / name).write_bytes(data)
    return files


def test_train_out_on_a_search_run_is_refused_and_deletes_nothing(tmp_path):
    run = tmp_path / "search_run"
    files = _fake_search_run(run)
    result = CliRunner().invoke(cli, ["train", "--recipe", str(RECIPES / "smoke_train.yaml"), "--out", str(run),
                                      *[a for kv in TINY_TRAIN for a in ("--set", kv)]])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "holds another run (search of recipe 'smoke_search')" in result.output and "--overwrite" in result.output
    for name, data in files.items():
        assert (run / name).read_bytes() == data, name
    assert sorted(p.name for p in run.iterdir() if p.name != ".lock") == sorted(files)


def test_a_directory_of_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["search", "--recipe", str(RECIPES / "smoke_search.yaml"),
                                      "--out", str(tmp_path)])
    assert result.exit_code != 0 and "holds other files (notes.txt)" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_another_recipe_into_a_run_directory_is_refused_and_overwrite_replaces_it(tmp_path):
    run = tmp_path / "run"
    train(_tiny_train(epochs=1), "pcdarts_cifar", out=run)
    with pytest.raises(RunDirError, match="already holds a training run; resume it with --resume"):
        train(_tiny_train(epochs=1), "pcdarts_cifar", out=run)
    with pytest.raises(RunDirError, match="holds another run"):
        search(load_search_recipe(RECIPES / "smoke_search.yaml", ["progress=false"]), out=run)
    (run / "mine.txt").write_text("not a run file")
    result = train(_tiny_train(epochs=1, lr=0.01), "pcdarts_cifar", out=run, overwrite=True)
    assert result.epochs == 1 and (run / "mine.txt").read_text() == "not a run file"
    assert json.loads((run / "run.json").read_text())["kind"] == "train"


# ---------------------------------------------------------------------------- kill -9 inside any write
class _Killer:
    """In a forked child: the n-th write (half its bytes reach the disk) or n-th rename kills the process."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0
        self.write, self.replace = fileio._write_bytes, os.replace

    def _tick(self) -> bool:
        self.calls += 1
        return self.calls == self.n

    def install(self) -> None:
        def write(handle, payload):
            if self._tick():
                handle.write(payload[: len(payload) // 2])
                handle.flush()
                os._exit(9)
            self.write(handle, payload)

        def replace(src, dst):
            if self._tick():
                os._exit(9)
            self.replace(src, dst)

        fileio._write_bytes = write
        os.replace = replace


def _write_label(kind: str, path) -> str:
    """What a write or rename is of, the same for every epoch: 'write checkpoint.pt',
    'rename epoch_#.yaml' (a temporary file ``.NAME.PID.RANDOM.tmp`` stands for NAME)."""
    name = Path(path).name
    temporary = re.fullmatch(r"\.(.+)\.\d+\.[0-9a-f]+\.tmp", name)
    return f"{kind} {re.sub(r'[0-9]+', '#', temporary.group(1) if temporary else name)}"


def _kill_points(fn) -> tuple[list[int], int]:
    """Where to kill ``fn``, and how many writes and renames it makes in all.

    Every write and rename is a place to kill it; the same write repeated (each epoch's checkpoint,
    each step's log line) takes the same path through the code, so the points are the first and
    the last of each kind: before and after the first checkpoint exists, for every file the run
    writes.  (Run ``fn`` once before: a first run in a process also writes caches, matplotlib's
    font list for one.)"""
    labels = []
    original_write, original_replace = fileio._write_bytes, os.replace
    try:
        fileio._write_bytes = lambda h, p: (labels.append(_write_label("write", h.name)), original_write(h, p))
        os.replace = lambda s, d: (labels.append(_write_label("rename", d)), original_replace(s, d))
        fn()
    finally:
        fileio._write_bytes, os.replace = original_write, original_replace
    first, last = {}, {}
    for n, label in enumerate(labels, 1):
        first.setdefault(label, n)
        last[label] = n
    return sorted(set(first.values()) | set(last.values())), len(labels)


def _killed_at(n: int, fn) -> bool:
    """Run ``fn`` in a forked child killed at kill point ``n``; True when the kill happened."""
    pid = os.fork()
    if pid == 0:   # the child: never returns into pytest
        try:
            _Killer(n).install()
            fn()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 9


def _no_scratch(run: Path) -> None:
    left = [p for p in run.rglob(".*") if p.is_file() and p.name != ".lock"]
    assert not left, left


def _strip(records, keys=("epoch_time", "img_per_s", "elapsed")):
    return [{k: v for k, v in r.items() if k not in keys} for r in records]


def test_train_killed_inside_each_kind_of_write_resumes_to_the_uninterrupted_run(tmp_path):
    recipe = _tiny_train()
    straight = tmp_path / "straight"
    train(recipe, "pcdarts_cifar", out=tmp_path / "warm")
    points, total = _kill_points(lambda: train(recipe, "pcdarts_cifar", out=straight))
    final, best = load_file(str(straight / "weights" / "final.safetensors")), \
        load_file(str(straight / "weights" / "best.safetensors"))
    log = _strip(read_jsonl(straight / "metrics.jsonl"))
    assert total > 15 and len(points) > 5
    for n in points:
        run = tmp_path / f"k{n}"
        assert _killed_at(n, lambda: train(recipe, "pcdarts_cifar", out=run)), n
        if (run / "checkpoints" / "last.pt").exists():
            train(*prepare_resume(run), resume=run)
        else:   # killed before the first checkpoint: the same command starts it again
            train(recipe, "pcdarts_cifar", out=run)
        got = load_file(str(run / "weights" / "final.safetensors"))
        assert all(torch.equal(final[k], got[k]) for k in final), n
        got = load_file(str(run / "weights" / "best.safetensors"))
        assert all(torch.equal(best[k], got[k]) for k in best), n
        assert _strip(read_jsonl(run / "metrics.jsonl")) == log, n
        _no_scratch(run)


TINY_SEARCH = ["image_size=16", "C=4", "layers=3", "steps=1", "batch_size=16", "max_steps_per_epoch=2",
               "progress=false", "epochs=2", "warmup_epochs=0", "threads=1"]   # steps=1: one node per cell, the same writes;
# threads=1: the kill points fork, and a fork after OpenMP ran on two threads (free cores on a quiet
# machine) can leave the child waiting on a lock forever


def test_search_killed_inside_each_kind_of_write_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    from nasnetzoo.search import runner

    monkeypatch.setattr(runner, "plot_history", lambda *args: None)   # seconds per run, and not a record
    recipe = load_search_recipe(RECIPES / "smoke_search.yaml", [*TINY_SEARCH, "max_steps_per_epoch=1"])
    straight = tmp_path / "straight"
    search(recipe, out=tmp_path / "warm")
    points, _ = _kill_points(lambda: search(recipe, out=straight))
    whole = torch.load(straight / "checkpoint.pt", weights_only=True)
    for n in points:
        run = tmp_path / f"k{n}"
        assert _killed_at(n, lambda: search(recipe, out=run)), n
        if (run / "checkpoint.pt").exists():
            search(prepare_search_resume(run), resume=run)
        else:
            search(recipe, out=run)
        got = torch.load(run / "checkpoint.pt", weights_only=True)
        assert all(torch.equal(v, got["model"][k]) for k, v in whole["model"].items()), n
        for name in ("genotype.yaml", "history.json", "genotypes/epoch_001.yaml", "genotypes/epoch_002.yaml"):
            a, b = (straight / name).read_text(), (run / name).read_text()
            assert a.replace(str(straight), "") == b.replace(str(run), ""), (n, name)
        assert read_jsonl(run / "metrics.jsonl") == read_jsonl(straight / "metrics.jsonl"), n
        _no_scratch(run)


def _reward(jobs):
    from nasnetzoo.genotype import Genotype
    from nasnetzoo.search.rl.child import ChildResult

    out = []
    for job in jobs:   # a synthetic reward: the share of separable convolutions
        genotype = Genotype.from_dict(job.genotype)
        ops = [e.op for cell in (genotype.normal, genotype.reduce) for e in cell.edges]
        share = sum(op.startswith("separable") for op in ops) / len(ops)
        out.append(ChildResult(job.index, share, 100 * share, 0.0, 0, 0.0, {"pid": 0}))
    return out


def test_rl_search_killed_inside_each_kind_of_write_resumes_to_the_uninterrupted_run(tmp_path):
    recipe = RLSearchRecipe(name="t", controller_steps=3, children_per_step=2, controller_lr=0.01, top_k=2,
                            temperature=5.0, tanh_constant=2.5, progress=False, seed=5,
                            child={"dataset": "digits", "device": "cpu"})
    straight = tmp_path / "straight"
    rl_search(recipe, out=tmp_path / "warm", evaluate=_reward)
    points, _ = _kill_points(lambda: rl_search(recipe, out=straight, evaluate=_reward))
    for n in points:
        run = tmp_path / f"k{n}"
        assert _killed_at(n, lambda: rl_search(recipe, out=run, evaluate=_reward)), n
        if (run / "controller.pt").exists():
            rl_search(recipe, resume=run, evaluate=_reward)
        else:
            rl_search(recipe, out=run, evaluate=_reward)
        for name in ("children.jsonl", "top_k.yaml"):
            assert (straight / name).read_text() == (run / name).read_text(), (n, name)
        assert _strip(read_jsonl(run / "metrics.jsonl"), ("child_seconds",)) == \
            _strip(read_jsonl(straight / "metrics.jsonl"), ("child_seconds",)), n
        _no_scratch(run)


# ---------------------------------------------------------------------------- --overwrite owns only its run
def test_overwrite_refuses_a_folder_that_holds_no_nasnetzoo_run(tmp_path):
    """The audit's case: a project folder with a checkpoints/ of its own is not a run to replace."""
    proj = tmp_path / "proj"
    (proj / "checkpoints").mkdir(parents=True)
    (proj / "checkpoints" / "resnet_epoch90.pt").write_text("90")
    (proj / "metrics.jsonl").write_text("mine\n")
    result = CliRunner().invoke(cli, ["train", "--recipe", str(RECIPES / "smoke_train.yaml"), "--arch",
                                      "pcdarts_cifar", "--out", str(proj), "--overwrite",
                                      *[a for kv in TINY_TRAIN for a in ("--set", kv)]])
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "holds no nasnetzoo run" in lines[0] and "--out" in lines[0], result.output
    assert (proj / "checkpoints" / "resnet_epoch90.pt").read_text() == "90"
    assert (proj / "metrics.jsonl").read_text() == "mine\n" and not (proj / "run.json").exists()


def test_overwrite_of_a_run_from_before_run_json_is_refused(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"an old search checkpoint")
    with pytest.raises(RunDirError, match="before run.json"):
        with Run("search", run, recipe={"name": "a"}, overwrite=True):
            pass
    assert (run / "checkpoint.pt").read_bytes() == b"an old search checkpoint"


def _real_run(path: Path) -> None:
    with Run("train", path, recipe={"name": "a"}):
        pass
    (path / "weights").mkdir()
    (path / "weights" / "best.safetensors").write_text("w")


def test_overwrite_never_follows_a_link(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    run = tmp_path / "run"
    _real_run(run)
    (run / "checkpoints").symlink_to(elsewhere, target_is_directory=True)   # a run's name, as a link
    with Run("train", run, recipe={"name": "b"}, overwrite=True):
        pass
    assert (elsewhere / "keep.txt").read_text() == "keep" and not (run / "checkpoints").exists()
    assert not (run / "weights").exists()   # the run's own files are gone

    _real_run(tmp_path / "target")
    (tmp_path / "linked").symlink_to(tmp_path / "target", target_is_directory=True)
    with pytest.raises(RunDirError, match="symbolic link"):
        with Run("train", tmp_path / "linked", recipe={"name": "c"}, overwrite=True):
            pass
    assert (tmp_path / "target" / "weights" / "best.safetensors").read_text() == "w"


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(outside)
    with pytest.raises(RunDirError, match=r"\.lock is a symbolic link"):
        with Run("train", run, recipe={"name": "a"}):
            pass
    assert outside.read_text() == "precious"
