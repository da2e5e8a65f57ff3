"""ExecuTorch (XNNPACK), LiteRT and OpenVINO export of the mobile entries, each written file run in
its own runtime and checked against PyTorch; the benchmark on those runtimes (issue 12).

What a converter and a delegate do with a network depends on its ops, not on its depth, width or
input size, while their run time grows with the number of nodes: the entries are exported with
their own cells, stem and reductions but the fewest cells that keep every kind of layer (NASNet
family ``N=1``: one normal cell per stage; DARTS family ``layers=3``: a normal cell and two
reduction cells, the second one fed by the first) and 8 channels, at 64x64 (even down to the last
maps, like 224, so every TF "SAME" layer takes the asymmetric-padding branch it takes at 224).

All seven entries go to all three runtimes.  Three of them, chosen so that together they build
every kind of layer the seven build
(``test_the_default_entries_build_every_layer_the_mobile_entries_build`` keeps that true), also
run under ``-m "not slow"``; the other four are marked slow.  NASNet-A Mobile goes to ExecuTorch
through the CLI, from a weights file.  The full-size entries at 224 are converted, checked and timed by the
mobile report (``nasnetzoo bench --mobile-report``).  CI installs the ``mobile`` extra, so none is
skipped there.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("executorch")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("openvino")

import nasnetzoo  # noqa: E402
from nasnetzoo.cli import cli  # noqa: E402
from nasnetzoo.export import export  # noqa: E402
from nasnetzoo.export.checks import make_cases  # noqa: E402
from nasnetzoo.export.errors import ExportVerificationError  # noqa: E402
from nasnetzoo.export.report import MOBILE_MODELS  # noqa: E402
from nasnetzoo.export.runtimes import RUNTIMES, runtime_for_format  # noqa: E402
from nasnetzoo.export.xnnpack_rewrites import is_large_depthwise  # noqa: E402

SIZE = (64, 64)
FORMATS = ("executorch", "tflite", "openvino")

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = {"nasnet": dict(N=1, F=8), "darts": dict(layers=3, C=8)}


def _small(name):
    """The entry's cells, stem and reductions, few cells, 8 channels."""
    torch.manual_seed(0)
    return nasnetzoo.load(name, **SMALL[nasnetzoo.get_entry(name).family])


def _check_file_against_pytorch(fmt, path, model):
    """An independent check: the written file, loaded afresh, on a new input, the fp32 bound."""
    x = torch.randn((1, 3) + SIZE, generator=torch.Generator().manual_seed(123))
    (case,) = make_cases(model.eval(), [x])
    out = runtime_for_format(fmt).load(path, threads=1)(case.x)
    assert out.shape == case.ref.shape
    assert np.abs(out - case.ref).max() <= case.tolerance(fp16=False)


DEFAULT_ENTRIES = ("amoebanet_a_mobile", "pnasnet5_mobile", "pdarts_imagenet")
# NASNet-A Mobile to ExecuTorch is the CLI test below (the same small network, from a weights file)
CASES = [pytest.param(name, fmt, marks=() if name in DEFAULT_ENTRIES else pytest.mark.slow)
         for name in MOBILE_MODELS for fmt in FORMATS if (name, fmt) != ("nasnet_a_mobile", "executorch")]


def _layer_kinds(model) -> set:
    """What a converter sees of a network's layers: each leaf module's class with its kernel, stride,
    dilation, padding and whether it is depthwise."""
    kinds = set()
    for module in model.modules():
        if next(module.children(), None) is not None:
            continue
        shape = tuple(str(getattr(module, a, "")) for a in ("kernel_size", "stride", "dilation", "padding"))
        depthwise = getattr(module, "groups", 1) > 1
        kinds.add((type(module).__name__, *shape, depthwise))
    return kinds


def test_the_default_entries_build_every_layer_the_mobile_entries_build():
    every = set().union(*(_layer_kinds(_small(name)) for name in MOBILE_MODELS))
    default = set().union(*(_layer_kinds(_small(name)) for name in DEFAULT_ENTRIES))
    assert every - default == set(), "add an entry to DEFAULT_ENTRIES that builds these"
    reductions = {nasnetzoo.get_entry(name).config.get("reduction") for name in MOBILE_MODELS}
    assert reductions <= {nasnetzoo.get_entry(name).config.get("reduction") for name in DEFAULT_ENTRIES}


@pytest.mark.parametrize("name, fmt", CASES)
def test_mobile_entry_exports_and_matches(name, fmt, tmp_path):
    model = _small(name)
    result = export(model, fmt, output_dir=tmp_path, name=name, input_size=SIZE, calibrate_bn=True, threads=1)
    report = json.loads(result.report_path.read_text())
    assert report["format"] == fmt and report["runtime"] == runtime_for_format(fmt).name
    (check,) = report["verification"]
    assert check["passed"] and check["finite"]
    assert check["max_abs_diff"] <= 1e-4 + 16 * report["pytorch_fp32_error_vs_fp64"]
    if fmt == "executorch":
        # the goal of issue 12: one XNNPACK partition, nothing left to the portable kernels
        assert report["partitions"] == 1 and report["ops_outside"] == [], report["ops_outside_counts"]
    if fmt in ("executorch", "tflite"):  # XNNPACK: every 7x7 depthwise conv split into row bands
        assert report["depthwise_split"] == sum(map(is_large_depthwise, model.modules()))
    if fmt == "openvino":
        assert (tmp_path / f"{name}.bin").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*report["files"].values(), f"{name}.json"])
    _check_file_against_pytorch(fmt, result.path, model)


def test_nasnet_a_mobile_weights_to_executorch_through_the_cli(tmp_path):
    """A user's weights file (here the small NASNet-A Mobile) exported by name: one partition."""
    weights = nasnetzoo.save_pretrained(_small("nasnet_a_mobile"), tmp_path / "mine.safetensors")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", "nasnet_a_mobile", "--weights", str(weights), "--format",
                                      "executorch", "--input-size", "64", "64", "--allow-size-mismatch",
                                      "--threads", "1", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'nasnet_a_mobile.pte'}" in result.output
    assert "XNNPACK partitions: 1; ops outside the delegate: none" in result.output
    report = json.loads((out / "nasnet_a_mobile.json").read_text())
    assert report["input_size"] == [3, 64, 64] and report["verification"][0]["passed"]
    assert report["params"] == sum(p.numel() for p in _small("nasnet_a_mobile").parameters())


class Tiny(torch.nn.Module):
    """A conv, a TF "SAME" average pool and a classifier: converts in seconds on every runtime."""

    def __init__(self):
        super().__init__()
        from nasnetzoo.ops.padding import Pool2dSame
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.pool = Pool2dSame("avg", 3, 2)
        self.global_pool = torch.nn.AdaptiveAvgPool2d(1)  # as the zoo's heads; x.mean((2, 3)) made a 2nd partition
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.global_pool(self.pool(torch.relu(self.conv(x)))).flatten(1))


def test_a_program_that_disagrees_with_pytorch_is_not_written(tmp_path, monkeypatch):
    runtime = RUNTIMES["openvino"]
    real_load = type(runtime).load

    def off_by_one(self, path, threads=None):
        run = real_load(self, path, threads)
        return lambda x: run(x) + 1.0
    monkeypatch.setattr(type(runtime), "load", off_by_one)
    with pytest.raises(ExportVerificationError, match="beyond the tolerance"):
        export(Tiny(), "openvino", output_dir=tmp_path, name="tiny", input_size=(16, 16), threads=1)
    assert not list(tmp_path.iterdir())


def test_onnx_only_options_are_refused_for_mobile_formats(tmp_path):
    result = CliRunner().invoke(cli, ["export", "pcdarts_cifar", "--format", "tflite", "--trt", "-o", str(tmp_path)])
    assert result.exit_code == 1 and "--trt" in result.output and "--format onnx" in result.output


def test_bench_on_every_cpu_runtime_at_one_thread(tmp_path):
    """Every CPU runtime timed side by side on one network, from the files checked against it."""
    from nasnetzoo.export.bench import Subject, _make_runners
    from nasnetzoo.export.timing import TimingPolicy, time_interleaved

    names = ["torch", "ort-cpu", "executorch", "litert", "openvino"]
    subject = Subject("tiny", Tiny().eval(), (3, 16, 16), "zoo", 0, 0)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32)
    runners, problems, programs = _make_runners(subject, 1, names, {}, x, tmp_path, threads=1)
    assert problems == {} and sorted(runners) == sorted(names)
    assert programs["executorch"]["partitions"] == 1, programs["executorch"]
    assert programs["executorch"]["ops_outside"] == [], programs["executorch"]
    timings = time_interleaved(runners, TimingPolicy(iters=2))
    assert all(t.iters == 2 and t.median_ms > 0 for t in timings.values())
    # the CLI with the mobile runtimes: one line per runtime that cannot run, none here
    result = CliRunner().invoke(cli, ["bench", "pcdarts_cifar", "--runtime", "torch,openvino", "--threads", "1",
                                      "--iters", "2", "--no-baselines", "-o", str(tmp_path / "out")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert {r["runtime"] for r in data["results"] if r["status"] == "ok"} == {"torch", "openvino"}
    assert data["machine"]["threads"] == 1 and data["machine"]["openvino"] == "2026.4.1"
