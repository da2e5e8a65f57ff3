"""Issue 15 (data loss): a plot is written atomically, so a failed write keeps the previous file."""
from __future__ import annotations

import errno
import os

import pytest
from click.testing import CliRunner

from nasnetzoo.cli import cli

pytest.importorskip("matplotlib")


def test_full_disk_during_a_plot_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "cell.svg"
    runner = CliRunner()
    assert runner.invoke(cli, ["plot", "darts_v2", "-o", str(target)], catch_exceptions=False).exit_code == 0
    before = target.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    result = runner.invoke(cli, ["plot", "pcdarts_imagenet", "--cell", "reduce", "-o", str(target)],
                           catch_exceptions=False)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0] and "no space left" in lines[0]
    assert "Traceback" not in result.output
    assert target.read_bytes() == before, "the previous plot is untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.svg"], "no temporary file is left behind"


def test_plot_replaces_the_file_in_one_step(tmp_path, monkeypatch):
    """The plot reaches its name only by a rename of a complete file beside it."""
    target = tmp_path / "cell.png"
    renames = []
    real_replace = os.replace

    def recording_replace(src, dst):
        renames.append((os.path.dirname(os.fspath(src)), os.fspath(dst), os.path.getsize(src)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    result = CliRunner().invoke(cli, ["plot", "darts_v2", "-o", str(target)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert renames == [(str(tmp_path), str(target), target.stat().st_size)]
    assert target.read_bytes().startswith(b"\x89PNG")
