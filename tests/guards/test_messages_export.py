"""Ordinary mistakes with export and bench output paths give one line, and bench checks its output
folder before it measures anything (issue 15)."""
from __future__ import annotations

import tempfile

import pytest
from click.testing import CliRunner

from nasnetzoo.cli import cli
from nasnetzoo.export import bench as bench_mod

pytestmark = pytest.mark.usefixtures("one_thread")


def _one_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture()
def in_the_way(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


@pytest.fixture()
def never_measure(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("measured before checking -o")
    monkeypatch.setattr(bench_mod, "time_interleaved", fail)
    monkeypatch.setattr(bench_mod, "_load_zoo", fail)


@pytest.fixture()
def read_only(monkeypatch):
    """A folder the process may not write (root ignores permission bits, so the OS call is refused
    here the way a read-only mount refuses it)."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)


@pytest.mark.parametrize("fmt", ["onnx", "executorch"])
def test_export_to_a_file_in_the_way(in_the_way, fmt):
    for target in (in_the_way, in_the_way / "sub"):
        line = _one_line(CliRunner().invoke(cli, ["export", "pcdarts_cifar", "--format", fmt, "-o", str(target)]))
        assert str(in_the_way) in line
    assert in_the_way.read_text() == "not a folder"


def test_export_to_a_read_only_folder(tmp_path, read_only):
    pytest.importorskip("onnx")
    line = _one_line(CliRunner().invoke(cli, ["export", "pcdarts_cifar", "-o", str(tmp_path)]))
    assert str(tmp_path) in line and "permission denied" in line


def test_bench_checks_its_output_folder_before_measuring(in_the_way, tmp_path, never_measure):
    line = _one_line(CliRunner().invoke(cli, ["bench", "pcdarts_cifar", "--runtime", "torch", "-o",
                                              str(in_the_way)]))
    assert str(in_the_way) in line and "not a folder" in line
    line = _one_line(CliRunner().invoke(cli, ["bench", "--mobile-report", "--runtime", "torch", "-o",
                                              str(in_the_way / "sub")]))
    assert str(in_the_way) in line


def test_bench_to_a_read_only_folder(tmp_path, never_measure, read_only):
    line = _one_line(CliRunner().invoke(cli, ["bench", "pcdarts_cifar", "--runtime", "torch", "-o",
                                              str(tmp_path / "new")]))
    assert "permission denied" in line


def test_a_missing_runtime_names_its_extra(monkeypatch, tmp_path):
    from nasnetzoo.export import runtimes

    real = runtimes.importlib.util.find_spec
    monkeypatch.setattr(runtimes.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("executorch", "openvino", "litert_torch") else real(name, *a))
    for fmt, extra in (("executorch", "mobile"), ("openvino", "mobile"), ("tflite", "mobile")):
        line = _one_line(CliRunner().invoke(cli, ["export", "pcdarts_cifar", "--format", fmt, "-o", str(tmp_path)]))
        assert f'.[{extra}]' in line
    assert not list(tmp_path.iterdir())
