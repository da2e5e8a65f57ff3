"""One export pipeline: a runtime is one record of ``runtimes.RUNTIMES`` plus its converter.

A toy runtime (TorchScript: ``torch.jit.trace`` writes the file, ``torch.jit.load`` runs it) is
registered here and exported through the same ``export()`` as ONNX and the mobile formats, through
the CLI's ``--format``, and timed by the benchmark: no other file knows of it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nasnetzoo.cli import cli
from nasnetzoo.errors import ConfigError
from nasnetzoo.export import NoOptions, OnnxOptions, export
from nasnetzoo.export.errors import ExportVerificationError
from nasnetzoo.export.runtimes import RUNTIMES, Runtime, register, unregister

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class ScriptOptions(NoOptions):
    freeze: bool = True


def convert_script(model, x, path, options, cases):
    traced = torch.jit.trace(model, x)
    if options.freeze:
        traced = torch.jit.freeze(traced)
    traced.save(str(path))
    return {"frozen": options.freeze}


def load_script(path, threads=None):
    module = torch.jit.load(str(path))

    def run(x):
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    return run


def load_script_wrong(path, threads=None):
    run = load_script(path, threads)
    return lambda x: run(x) + 1.0


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.fixture()
def toy():
    record = register(Runtime("torchscript", "TorchScript (torch.jit), a toy record", format="torchscript",
                              suffix=".ts", converter=f"{__name__}:convert_script", options=ScriptOptions,
                              loader=f"{__name__}:load_script", versions=("torch",)))
    yield record
    unregister(record.name)


def test_a_registered_runtime_exports_through_the_one_pipeline(toy, tmp_path):
    result = export(Tiny(), "torchscript", ScriptOptions(freeze=False), output_dir=tmp_path, name="tiny",
                    input_size=(8, 8), threads=1)
    assert result.path == tmp_path / "tiny.ts" and result.files == {"ts": tmp_path / "tiny.ts"}
    report = json.loads(result.report_path.read_text())
    assert report == result.report
    assert report["format"] == "torchscript" and report["runtime"] == "torchscript"
    assert report["frozen"] is False and report["runtime_versions"] == {"torch": metadata.version("torch")}
    (check,) = report["verification"]
    assert check["passed"] and check["runtime"] == "torchscript" and check["max_abs_diff"] < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.ts"]
    out = load_script(result.path)(np.zeros((1, 3, 8, 8), np.float32))
    assert out.shape == (1, 5)
    assert "verified fp32 in torchscript" in result.summary()
    # its options are its own type; another runtime's are refused in one line
    with pytest.raises(ConfigError, match="takes ScriptOptions, not OnnxOptions"):
        export(Tiny(), "torchscript", OnnxOptions(), output_dir=tmp_path, input_size=(8, 8))


def test_a_registered_runtime_that_disagrees_writes_nothing(tmp_path):
    record = register(Runtime("torchscript-wrong", "a loader that adds 1", format="torchscript-wrong",
                              suffix=".ts", converter=f"{__name__}:convert_script", options=ScriptOptions,
                              loader=f"{__name__}:load_script_wrong"))
    try:
        with pytest.raises(ExportVerificationError, match="beyond the tolerance"):
            export(Tiny(), record, output_dir=tmp_path, name="tiny", input_size=(8, 8), threads=1)
    finally:
        unregister(record.name)
    assert not list(tmp_path.iterdir())


def test_a_registered_runtime_is_a_cli_format_and_a_bench_runtime(toy, tmp_path):
    result = CliRunner().invoke(cli, ["export", "pcdarts_cifar", "--format", "torchscript", "--input-size", "16",
                                      "16", "--allow-size-mismatch", "--threads", "1", "-o", str(tmp_path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pcdarts_cifar.ts").is_file()
    assert json.loads((tmp_path / "pcdarts_cifar.json").read_text())["frozen"] is True
    result = CliRunner().invoke(cli, ["export", "pcdarts_cifar", "--format", "torchscript", "--fp16",
                                      "-o", str(tmp_path)])
    assert result.exit_code == 1 and "--fp16 apply to --format onnx only" in result.output

    from nasnetzoo.export.bench import Subject, _make_runners
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8), dtype=np.float32)
    runners, problems, _ = _make_runners(Subject("tiny", Tiny().eval(), (3, 8, 8), "zoo", 0, 0), 1,
                                         ["torch", "torchscript"], {}, x, tmp_path / "bench", threads=1)
    assert problems == {} and sorted(runners) == ["torch", "torchscript"]
    assert "torchscript" in RUNTIMES
