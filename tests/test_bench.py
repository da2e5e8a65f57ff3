"""Benchmark tooling: the timing loop, the runtimes, the outputs, the mobile report, the script."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nasnetzoo.cli import cli
from nasnetzoo.export.bench import pareto_front
from nasnetzoo.export.timing import TimingPolicy, time_interleaved

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


class FakeClock:
    """A clock that each runner call advances by that runner's fixed cost."""

    def __init__(self):
        self.now = 0.0
        self.calls = []

    def __call__(self):
        return self.now

    def runner(self, name, cost):
        def run():
            self.calls.append(name)
            self.now += cost
        return run


# ------------------------------------------------------------------ timing
def test_fixed_iterations_after_warmup():
    clock = FakeClock()
    runners = {"a": clock.runner("a", 0.01), "b": clock.runner("b", 0.02)}
    policy = TimingPolicy(iters=2, warmup=3, warmup_time=0.0)
    result = time_interleaved(runners, policy, clock=clock)
    assert [result[k].iters for k in "ab"] == [2, 2]
    assert [result[k].warmup_runs for k in "ab"] == [3, 3]
    assert result["a"].median_ms == pytest.approx(10.0) and result["b"].p90_ms == pytest.approx(20.0)
    assert result["b"].throughput(8) == pytest.approx(400.0)
    assert "exactly 2 timed runs" in policy.describe()


def test_adaptive_timing_stops_when_the_medians_settle():
    clock = FakeClock()
    runners = {"a": clock.runner("a", 0.001), "b": clock.runner("b", 0.003)}
    policy = TimingPolicy(warmup=1, warmup_time=0.0, round_size=5, min_iters=15, stable_rounds=2)
    result = time_interleaved(runners, policy, clock=clock)
    for k in "ab":
        assert result[k].stable and 15 <= result[k].iters <= 30
    assert result["b"].median_ms == pytest.approx(3.0)


def test_runtimes_take_turns_in_rotating_order():
    clock = FakeClock()
    runners = {n: clock.runner(n, 0.001) for n in "abc"}
    time_interleaved(runners, TimingPolicy(iters=2, warmup=1, warmup_time=0.0, round_size=1), clock=clock)
    timed = clock.calls[3:]  # after one warm-up call each
    assert timed == ["a", "b", "c", "b", "c", "a"]


def test_adaptive_timing_gives_up_at_the_time_limit():
    clock = FakeClock()
    state = {"i": 0}

    def noisy():  # alternates 1 ms and 10 ms in growing runs: the median keeps moving
        state["i"] += 1
        clock.now += 0.001 if (state["i"] // 7) % 2 else 0.01 * (1 + state["i"] / 50)
    policy = TimingPolicy(warmup=1, warmup_time=0.0, max_time=1.0, max_iters=10_000)
    result = time_interleaved({"n": noisy}, policy, clock=clock)
    assert not result["n"].stable and result["n"].iters > 15


def test_pareto_front():
    points = [(300, 10.0), (550, 30.0), (560, 9.0), (1800, 20.0), (580, 50.0), (100, 40.0)]
    assert pareto_front(points) == [5, 0, 2]


# ------------------------------------------------------------------ bench command
def _importable(*names):
    import importlib.util
    return all(importlib.util.find_spec(n) is not None for n in names)


needs_export_deps = pytest.mark.skipif(not _importable("onnx", "onnxruntime", "onnxslim", "matplotlib"),
                                       reason="needs onnx, onnxruntime, onnxslim and matplotlib")


def _one_line_error(result):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    return lines[0]


@needs_export_deps
def test_bench_writes_table_csv_json_and_plot(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "pcdarts_cifar", "--runtime", "torch,ort-cpu,ort-cuda,tensorrt",
                                      "--iters", "2", "--baseline-models", "mobilenet_v2", "--threads", "1",
                                      "-o", str(tmp_path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output  # (stdout and stderr: with --json the table and progress go to stderr)
    assert json.loads(result.stdout) == json.loads((tmp_path / "bench.json").read_text())
    assert "method: warm-up" in out and "exactly 2 timed runs" in out
    header = next(line for line in out.splitlines() if line.startswith("model "))
    assert "median ms" in header and "p90 ms" in header and "img/s" in header
    for path in ("bench.csv", "bench.json", "bench.png"):
        assert (tmp_path / path).stat().st_size > 0
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert {(r["model"], r["runtime"]) for r in rows} == {
        (m, rt) for m in ("pcdarts_cifar", "mobilenet_v2") for rt in ("torch", "ort-cpu", "ort-cuda", "tensorrt")}
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["model"], r["runtime"]) for r in ok} >= {("pcdarts_cifar", "torch"), ("pcdarts_cifar", "ort-cpu"),
                                                        ("mobilenet_v2", "torch"), ("mobilenet_v2", "ort-cpu")}
    assert all(r["iters"] == "2" and float(r["median_ms"]) > 0 and r["input_size"] == "3x32x32" for r in ok)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["machine"]["threads"] == 1 and data["machine"]["cpu_model"]
    models = {m["name"]: m for m in data["models"]}
    assert models["pcdarts_cifar"]["macs"] == pytest.approx(556.7e6, rel=1e-3)
    assert models["mobilenet_v2"]["kind"] == "baseline"
    skipped = [r for r in data["results"] if r["status"] == "skipped"]
    try:
        import onnxruntime
        has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        assert any(r["runtime"] == "ort-cuda" and "CUDAExecutionProvider" in r["reason"] for r in skipped)
        assert "ort-cuda: skipped (all models)" in out


@needs_export_deps
def test_bench_errors_are_one_line(tmp_path):
    runner = CliRunner()
    line = _one_line_error(runner.invoke(cli, ["bench", "pcdarts_cifar", "--runtime", "ort-gpu"]))
    assert "'ort-gpu'" in line and "ort-cpu" in line
    line = _one_line_error(runner.invoke(cli, ["bench"]))
    assert "--mobile-report" in line
    line = _one_line_error(runner.invoke(cli, ["bench", "pcdarts_cifar", "--batch", "1,x"]))
    assert "'1,x'" in line
    line = _one_line_error(runner.invoke(cli, ["bench", "pcdarts_cifar", "--input-size", "224", "224", "--iters", "1"]))
    assert "--allow-size-mismatch" in line or "32x32" in line
    line = _one_line_error(runner.invoke(cli, ["bench", "pcdarts_cifar", "--baseline-models", "mobilenet_v9",
                                               "--iters", "1", "--runtime", "torch", "-o", str(tmp_path)]))
    assert "'mobilenet_v9'" in line


@needs_export_deps
def test_mobile_report(tmp_path):
    from nasnetzoo.export.report import mobile_report

    result = mobile_report(tmp_path, models=["pcdarts_imagenet"], baselines=["mobilenet_v2"],
                           runtimes=["torch", "ort-cpu", "tensorrt"], iters=2, threads=1)
    md = result.files["markdown"]
    assert md.name == "mobile_report_cpu.md" and result.files["plot"].stat().st_size > 0
    text = md.read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    assert cpu in text and "onnxruntime" in text and "Peak fp32 MAC rate" in text
    assert "| pcdarts_imagenet | 597 | 581.6 | 581.6 | yes | yes |" in text
    assert "mobilenet_v2 (torchvision)" in text and "eager / ort-cpu" in text and "latency / bound" in text
    assert "TensorRT engines were **not built or timed here**" in text or "tensorrt median" in text
    # second edition: published phone ratios, what the graphs cost beyond MACs, the claims per runtime
    assert "vs MobileNetV2 (phone, published)" in text and "## What the graphs cost beyond MACs" in text
    assert "## Which claims hold, on which runtime" in text and "- **ort-cpu**: " in text
    assert "Threads: 1 " in text
    data = json.loads(result.files["json"].read_text())
    entry = data["analysis"]["1"]["pcdarts_imagenet"]["runtimes"]["ort-cpu"]
    assert entry["vs_mobilenet_v2"] > 0 and entry["latency_over_bound"] > 0
    assert data["peak"]["peak_macs_per_s"] > 1e8
    stats = data["graph_stats"]
    assert stats["pcdarts_imagenet"]["ops"] > 3 * stats["mobilenet_v2"]["ops"] > 0
    assert data["published_phone_ms"]["nasnet_a_mobile"]["ms"] == 183


@needs_export_deps
def test_export_latency_script(tmp_path):
    help_text = subprocess.run([sys.executable, str(REPO / "benchmarks" / "export_latency.py"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--iters" in help_text and "--threads" in help_text
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import export_latency
    finally:
        sys.path.pop(0)
    code = export_latency.main(["--models", "pcdarts_cifar", "--input-size", "32", "32", "--iters", "2",
                                "--threads", "1", "-o", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "export_latency.json").read_text())
    (row,) = data["results"]
    assert row["model"] == "pcdarts_cifar" and row["speedup"] > 0 and row["compute_bound_ms"] > 0
    assert row["torch"]["iters"] == 2 and row["ort_cpu"]["iters"] == 2
    text = (tmp_path / "export_latency.md").read_text()
    assert "eager / ORT" in text and "Peak MAC rate" in text


# The export package's import structure is checked by tests/test_import_graph.py (the one checker).


def test_library_code_does_not_import_the_cli_nor_switch_the_plot_backend(tmp_path):
    code = (
        "import sys, matplotlib\n"
        "matplotlib.use('svg')\n"
        "import nasnetzoo.export.bench as b, nasnetzoo.export.report, nasnetzoo.export.pipeline\n"
        "from nasnetzoo.export.bench import Row, BenchResult, plot_latency_vs_macs\n"
        "rows = [Row('m', 'zoo', 'torch', 1, 'ok', median_ms=1.0, p90_ms=1.0, throughput_ips=1.0, macs=10)]\n"
        f"plot_latency_vs_macs(rows, __import__('pathlib').Path({str(tmp_path / 'p.png')!r}))\n"
        "BenchResult(rows, [], '', {}).table()\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'nasnetzoo.cli' not in sys.modules\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n")
    pytest.importorskip("matplotlib")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_nasnet_pool_latency_script_help():
    """The before/after benchmark of issue 12 (run on a quiet machine; see its docstring)."""
    help_text = subprocess.run([sys.executable, str(REPO / "benchmarks" / "nasnet_pool_latency.py"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--threads" in help_text and "--size" in help_text and "XNNPACK" in help_text


def test_search_step_benchmark_reports_both_ratios(tmp_path):
    """benchmarks/search_vs_baseline.py at a toy size: ratios of medians and paired ratios, saved bytes."""
    out = tmp_path / "steps.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "search_vs_baseline.py"), "--C", "4", "--layers", "3",
                    "--batch", "2", "--size", "8", "--reps", "2", "--threads", "1", "--only", "PC-DARTS",
                    "--variants", "before,after", "--json", str(out)],
                   cwd=REPO / "benchmarks", capture_output=True, text=True, timeout=300, check=True)
    (row,) = json.loads(out.read_text())["results"]
    assert row["strategy"] == "PC-DARTS" and row["before_paired_ratio"] == 1.0
    assert 0 < row["after_paired_ratio"] < 10 and row["after_saved_mb"] < row["before_saved_mb"]
    assert row["logits_max_abs_diff"] < 1e-5
