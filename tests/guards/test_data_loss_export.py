"""A failed re-export never replaces a good export nor leaves its "verified" JSON beside other files
(issue 15): files are staged, renamed into place, the JSON report last; the old report goes first."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxslim")

from nasnetzoo.errors import NasNetZooError  # noqa: E402
from nasnetzoo.export import export_onnx  # noqa: E402
from nasnetzoo.export import onnx_export  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def _export(tmp_path, seed=0):
    return export_onnx(Tiny(seed), tmp_path, name="tiny", input_size=(8, 8), threads=1)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_full_disk_during_a_re_export_keeps_the_previous_export(tmp_path, monkeypatch):
    _export(tmp_path)
    before = _snapshot(tmp_path)

    def full_disk(path, payload):
        raise NasNetZooError("cannot write tiny.onnx (No space left on device)")
    monkeypatch.setattr(onnx_export, "_write_staged", full_disk)
    with pytest.raises(NasNetZooError, match="No space left"):
        _export(tmp_path, seed=1)
    assert _snapshot(tmp_path) == before  # same files, same bytes, no temporary left behind


def test_a_disk_error_while_writing_gives_one_line_and_keeps_the_previous_export(tmp_path, monkeypatch):
    _export(tmp_path)
    before = _snapshot(tmp_path)
    real_open = open

    def enospc_open(path, mode="r", *args, **kwargs):
        if "w" in mode and ".nasnetzoo-staging-" in str(path):
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr("builtins.open", enospc_open)
    with pytest.raises(NasNetZooError, match="no space left on the device") as err:
        _export(tmp_path, seed=1)
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before


def test_no_stale_verified_json_beside_a_new_graph(tmp_path, monkeypatch):
    """Killed (here: failing) between the graph's rename and the report's: the old report is gone,
    not left vouching for a graph it does not describe."""
    first = _export(tmp_path)
    old_report = first.report_path.read_text()
    real_replace = os.replace

    def fail_on_report(src, dst):
        if str(dst).endswith(".json"):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", fail_on_report)
    with pytest.raises(NasNetZooError):
        _export(tmp_path, seed=1)
    monkeypatch.undo()
    report = tmp_path / "tiny.json"
    assert not report.exists() or report.read_text() != old_report
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # staging removed


def test_a_re_export_that_fails_its_check_writes_nothing(tmp_path):
    _export(tmp_path)
    before = _snapshot(tmp_path)
    model = Tiny(1)
    with torch.no_grad():
        model.fc.bias[0] = float("inf")
    with pytest.raises(NasNetZooError, match="non-finite"):
        export_onnx(model, tmp_path, name="tiny", input_size=(8, 8), threads=1)
    assert _snapshot(tmp_path) == before
    assert json.loads((tmp_path / "tiny.json").read_text())["verification"][0]["passed"]


def test_written_files_are_world_readable(tmp_path):
    result = _export(tmp_path)
    for path in (result.onnx_path, result.report_path):
        assert os.stat(path).st_mode & 0o777 == 0o644
