"""Issue 15 (messages): ordinary input mistakes give one line naming the value, never a traceback.

Each case runs the command line and checks: a non-zero exit, exactly one line on stderr, the bad
value (or path) named in it, and no "Traceback" anywhere.
"""
from __future__ import annotations

import errno
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nasnetzoo.cli import cli
from nasnetzoo.cli_errors import UserErrorGroup

REPO = Path(__file__).resolve().parents[2]
SMOKE_RECIPE = REPO / "recipes" / "smoke_train.yaml"


def fails_in_one_line(args, *named: str, group=cli, exit_codes=(1, 2)):
    """Run the CLI; assert the one-line failure that names every string in ``named``."""
    result = CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code in exit_codes, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def alias_bomb(levels: int = 9, fanout: int = 9) -> list[str]:
    """``levels`` anchors each listing the previous one ``fanout`` times: 9**9 leaves once expanded."""
    lines = [f"  l0: &l0 [{', '.join(['lol'] * fanout)}]"]
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]")
    return lines


@pytest.fixture()
def darts_v2_text() -> str:
    return (REPO / "genotypes" / "darts_v2.yaml").read_text()


@pytest.fixture()
def bomb_genotype(tmp_path, darts_v2_text) -> Path:
    path = tmp_path / "bomb.yaml"
    path.write_text(darts_v2_text.replace("provenance:\n", "provenance:\n" + "\n".join(alias_bomb()) + "\n"))
    return path


@pytest.mark.parametrize("command", [["genotype"], ["info", "--json"], ["plot", "-o", "x.svg"]])
def test_alias_bomb_in_genotype_provenance_fails_fast(command, bomb_genotype, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    line = fails_in_one_line([command[0], bomb_genotype, *command[1:]], str(bomb_genotype), "aliases")
    assert time.monotonic() - start < 10, "refused before expanding anything"
    assert "line " in line


def test_alias_bomb_as_train_arch_fails_fast(bomb_genotype, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails_in_one_line(["train", "--recipe", SMOKE_RECIPE, "--arch", bomb_genotype, "--out", tmp_path / "run"],
                      str(bomb_genotype), "aliases")


def test_alias_bomb_in_recipe_model_fails_fast(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "bomb_recipe.yaml"
    recipe.write_text(SMOKE_RECIPE.read_text().replace("model: {C: 8, layers: 5}",
                                                       "model:\n" + "\n".join(alias_bomb())))
    fails_in_one_line(["train", "--recipe", recipe, "--out", tmp_path / "run"], str(recipe), "aliases")
    assert not (tmp_path / "run").exists()


def test_non_utf8_genotype_file(tmp_path, darts_v2_text, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "latin1.yaml"
    path.write_bytes(darts_v2_text.replace("Second-order", "Caf\u00e9 Second-order").encode("latin-1"))
    for command in (["genotype", path], ["info", path], ["info", path, "--json"]):
        fails_in_one_line(command, str(path), "not UTF-8", "0xe9")


def test_non_utf8_recipe_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "latin1_recipe.yaml"
    recipe.write_bytes(SMOKE_RECIPE.read_text().replace("Smoke retrain", "R\u00e9sum\u00e9").encode("latin-1"))
    fails_in_one_line(["train", "--recipe", recipe, "--out", tmp_path / "run"], str(recipe), "not UTF-8")


@pytest.mark.parametrize("option, value, bound", [
    ("--batch-size", "-5", "x>=1"), ("--batch-size", "0", "x>=1"),
    ("--image-size", "100000", "2048"), ("--image-size", "0", "2048")])
def test_eval_sizes_are_bounded(option, value, bound, tmp_path):
    weights = tmp_path / "w.safetensors"
    fails_in_one_line(["eval", "--arch", "pcdarts_cifar", "--weights", weights, "--data", "digits",
                       option, value], option, value, bound, exit_codes=(2,))


def test_plot_into_a_read_only_directory(tmp_path, monkeypatch):
    """Simulated with EROFS from the file system calls (the suite may run as root, which may write
    anywhere)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real_open = open

    def read_only_open(file, mode="r", *args, **kwargs):
        if Path(file).parent == ro and any(m in mode for m in "wax+"):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only_open)
    target = ro / "cell.svg"
    fails_in_one_line(["plot", "darts_v2", "-o", target], str(target), "read-only")
    assert list(ro.iterdir()) == []


def test_plot_onto_a_directory(tmp_path):
    target = tmp_path / "cell.svg"
    target.mkdir()
    fails_in_one_line(["plot", "darts_v2", "-o", target], str(target), "directory")


def test_plot_below_a_file(tmp_path):
    blocker = tmp_path / "plots"
    blocker.write_text("not a directory")
    target = blocker / "cell.svg"
    fails_in_one_line(["plot", "darts_v2", "-o", target], str(target), "a file is in the way")
    assert blocker.read_text() == "not a directory"


# ------------------------------------------------------------------ the wrapper itself
def _group_raising(exc: BaseException) -> click.Group:
    group = UserErrorGroup()

    @group.command()
    def boom():
        raise exc
    return group


@pytest.mark.parametrize("exc, named", [
    (OSError(errno.ENOSPC, "No space left on device", "runs/r1/last.pt"), ["runs/r1/last.pt", "no space left"]),
    (PermissionError(errno.EACCES, "Permission denied", "/etc/x.onnx"), ["/etc/x.onnx", "permission denied"]),
    (OSError(errno.EROFS, "Read-only file system", "/ro/.w.tmp", None, "/ro/w.safetensors"),
     ["/ro/w.safetensors", "read-only"]),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "out.onnx"), ["out.onnx", "a directory is in the way"]),
    (UnicodeDecodeError("utf-8", b"ab\xff", 2, 3, "invalid start byte"), ["0xff", "UTF-8"]),
    (MemoryError("cannot allocate 72 TB"), ["out of memory", "72 TB"]),
])
def test_wrapper_turns_circumstances_into_one_line(exc, named):
    fails_in_one_line(["boom"], *named, group=_group_raising(exc), exit_codes=(1,))


def test_wrapper_keeps_the_traceback_of_a_bug():
    result = CliRunner().invoke(_group_raising(ZeroDivisionError("a bug")), ["boom"])
    assert isinstance(result.exception, ZeroDivisionError)


def test_weights_metadata_with_a_huge_width_is_refused_before_building(tmp_path):
    """``C=100000`` in a weights file's metadata used to allocate ~120 GB before failing."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    import nasnetzoo

    weights = tmp_path / "w.safetensors"
    nasnetzoo.save_pretrained(nasnetzoo.load("pcdarts_cifar", C=8, layers=5), weights)
    with safe_open(str(weights), "pt") as handle:
        meta = dict(handle.metadata())
    meta["config"] = json.dumps({**json.loads(meta["config"]), "C": 100000})
    save_file(load_file(str(weights)), str(weights), metadata=meta)
    fails_in_one_line(["eval", "--arch", "pcdarts_cifar", "--weights", weights, "--data", "digits",
                       "--data-dir", tmp_path / "data"], "C=100000", "out of range", exit_codes=(1,))
