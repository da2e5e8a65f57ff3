"""Ordinary mistakes around a run give one line that names the value and the fix, never a traceback."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nasnetzoo import fileio
from nasnetzoo.cli import cli
from nasnetzoo.search.recipe import load_search_recipe
from nasnetzoo.search.runner import search
from nasnetzoo.runs.envelope import RunDirError, RunInterrupted
from nasnetzoo.runs.progress import read_jsonl

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
TINY = ["max_steps_per_epoch=2", "model.C=4", "model.layers=3", "progress=false", "batch_size=32"]
TINY_SEARCH = ["image_size=16", "C=4", "layers=3", "steps=1", "batch_size=16", "max_steps_per_epoch=2",
               "progress=false", "epochs=4", "warmup_epochs=1"]   # the smoke recipe's 8 and 5 are for a person


def _one_line(result) -> str:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def _train(*args: str, epochs: int = 1):
    sets = [a for kv in (*TINY, f"epochs={epochs}") for a in ("--set", kv)]
    return CliRunner().invoke(cli, ["train", "--recipe", str(RECIPES / "smoke_train.yaml"), *args, *sets])


def test_resume_with_a_shape_changing_set_is_one_line(tmp_path):
    run = tmp_path / "run"
    assert _train("--out", str(run)).exit_code == 0
    line = _one_line(CliRunner().invoke(cli, ["train", "--resume", str(run), "--set", "model.C=16",
                                              "--set", "epochs=2"]))
    assert f"cannot resume {run}" in line and "does not fit the model" in line and "--set may change only" in line


def test_empty_arch_is_refused():
    line = _one_line(_train("--arch", ""))
    assert "--arch is empty" in line


@pytest.mark.parametrize("command", ["train", "search"])
def test_an_empty_recipe_file_is_refused(command, tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    line = _one_line(CliRunner().invoke(cli, [command, "--recipe", str(tmp_path / "empty.yaml"),
                                              "--out", str(tmp_path / "run")]))
    assert "is empty" in line and not (tmp_path / "run").exists()


def test_out_below_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    line = _one_line(_train("--out", str(tmp_path / "file" / "run")))
    assert str(tmp_path / "file") in line


def test_out_that_is_a_file_is_refused_by_the_library(tmp_path):
    from nasnetzoo.runs.envelope import Run

    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        with Run("train", tmp_path / "file", recipe={}):
            pass


def test_read_only_out_is_one_line(tmp_path, monkeypatch):
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):   # root ignores chmod, so the refusal is simulated
        if self == tmp_path / "ro" or tmp_path / "ro" in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    line = _one_line(_train("--out", str(tmp_path / "ro" / "run")))
    assert "permission denied" in line and str(tmp_path / "ro") in line and "writable --out" in line


def test_a_full_disk_during_training_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert _train("--out", str(run)).exit_code == 0
    real = fileio._write_bytes

    def full(handle, payload):
        if len(payload) > 100_000:   # the next checkpoint (the small log lines still fit)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(handle, payload)

    monkeypatch.setattr(fileio, "_write_bytes", full)
    line = _one_line(CliRunner().invoke(cli, ["train", "--resume", str(run), "--set", "epochs=3"]))
    assert "no space left on the device" in line and f"--resume {run}" in line
    monkeypatch.setattr(fileio, "_write_bytes", real)
    assert [p.name for p in (run / "checkpoints").iterdir()] and not list(run.rglob(".*.tmp"))
    result = CliRunner().invoke(cli, ["train", "--resume", str(run), "--set", "epochs=2"])
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "epoch"] == [1, 2]


def test_ctrl_c_in_a_search_gives_the_resume_command(tmp_path):
    recipe = load_search_recipe(RECIPES / "smoke_search.yaml", [*TINY_SEARCH, "epochs=3"])

    def ctrl_c(epoch):
        raise KeyboardInterrupt

    with pytest.raises(RunInterrupted, match=rf"interrupted after epoch 1/3; .*nasnetzoo search --resume "
                                             rf"{tmp_path / 'run'}"):
        search(recipe, out=tmp_path / "run", on_epoch_end=ctrl_c)


def test_sigterm_stops_a_search_with_the_resume_command(tmp_path):
    run = tmp_path / "run"
    args = [a for kv in (*TINY_SEARCH, "epochs=200") for a in ("--set", kv)]
    proc = subprocess.Popen([sys.executable, "-m", "nasnetzoo", "search", "--recipe",
                             str(RECIPES / "smoke_search.yaml"), "--out", str(run), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    deadline = time.time() + 120
    while time.time() < deadline and not read_jsonl(run / "metrics.jsonl"):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "interrupted after epoch" in err and f"nasnetzoo search --resume {run}" in err
