"""The prepared GPU suite (benchmarks/gpu_suite.py) runs end to end with --smoke on the CPU."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_suite  # noqa: E402


def test_gpu_suite_smoke_writes_one_json(tmp_path):
    out = tmp_path / "suite.json"
    assert gpu_suite.main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["smoke"] and report["device"] == "cpu"
    results = report["results"]
    assert set(results["search"]) == {"reference fp32", "fused fp32", "fused bf16"}
    for section in ("search", "retrain", "inference"):
        assert results[section], section
        for name, record in results[section].items():
            assert "error" not in record and "skipped" not in record, (section, name, record)
    assert all(r["step_ms"] > 0 and r["genotype"].startswith("Genotype(") for r in results["search"].values())
    assert {"darts_v2_imagenet b1 fp32 eager", "darts_v2_imagenet b2 bf16 + channels_last"} <= set(results["inference"])
    assert results["retrain"]["fp32 eager"]["images_per_s"] > 0


def test_a_failing_variant_is_recorded_not_fatal():
    def broken():
        raise RuntimeError("no compiler\nsecond line")

    assert gpu_suite.attempt(broken) == {"error": "RuntimeError: no compiler"}


def _first_run(tmp_path, phases: str) -> dict:
    import gpu_first_run

    assert gpu_first_run.main(["--smoke", "--out", str(tmp_path), "--phases", phases]) == 0
    statuses = [json.loads(line) for line in (tmp_path / "phases.jsonl").read_text().splitlines()]
    assert [s["phase"] for s in statuses] == phases.split(",")
    assert all(s["rc"] == 0 and s["file"] for s in statuses), statuses
    return {s["phase"]: json.loads(Path(s["file"]).read_text())["results"] for s in statuses}


def test_the_first_gpu_run_writes_each_phase_as_it_ends(tmp_path):
    """Each phase is a subprocess that leaves its own JSON file and a status line (cheap phases here;
    the whole --smoke run is in the slow tier)."""
    results = _first_run(tmp_path, "P0,P3,P4")
    assert results["P0"]["torch"] and results["P0"]["device"] == "cpu"
    assert results["P3"]["fp32 eager"]["epochs_600_h"] > 0
    assert results["P4"] and all("error" not in r for r in results["P4"].values())


@pytest.mark.slow
def test_the_whole_first_gpu_run_in_smoke_mode(tmp_path):
    results = _first_run(tmp_path, "P0,P1,P2,P3,P4")
    assert all("error" not in r for r in results["P1"].values()), results["P1"]
    assert results["P1"]["fused vs reference"]["max_abs_logits"] < 1e-4
    assert {"search gdas", "search snas", "search enas"} <= set(results["P1"])
    assert results["P2"]["reference fp32"]["epochs_50_min"] > 0


@pytest.mark.slow
def test_the_search_compile_benchmark_in_smoke_mode(tmp_path):
    """benchmarks/search_compile.py: eager and compiled search steps of one recipe (a real inductor
    compile: minutes on a loaded CPU)."""
    import search_compile

    out = tmp_path / "compile.json"
    assert search_compile.main(["--smoke", "--warm-cache", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert results["eager"]["graphs"] == 0 and results["compiled"]["graphs"] == 1
    assert results["compiled"]["backend"] == results["eager"]["backend"] == "reference"
    assert results["compiled"]["compile_s"] > 0 and results["compiled"]["step_ms"] > 0


def test_the_suite_saves_after_every_task_and_resets_dynamo_before_each_compiled_one(monkeypatch):
    """Defects 2 and 3 of the GPU-readiness issue: the report is rewritten after each task (a kill
    in the cold compiles at the end kept no file), and every compiled variant starts from a reset
    dynamo (the zoo's shared forward carried cache and dynamic-shape history between variants)."""
    events = []

    def fake(section):
        def task(*args):
            events.append(("run", section, args[-1]))
            return {"ok": True}
        return task

    monkeypatch.setattr(gpu_suite, "search_epoch", fake("search"))
    monkeypatch.setattr(gpu_suite, "retrain_steps", fake("retrain"))
    monkeypatch.setattr(gpu_suite, "inference", fake("inference"))
    monkeypatch.setattr(gpu_suite.torch._dynamo, "reset", lambda: events.append(("reset",)))
    saved = []
    results = gpu_suite.run_suite(gpu_suite.SMOKE, gpu_suite.torch.device("cpu"), gpu_suite.Budget(60),
                                  compile_ok=True, log=lambda line: None,
                                  save=lambda r: saved.append(sum(len(v) for v in r.values())))
    runs = [e for e in events if e[0] == "run"]
    assert saved == list(range(1, len(runs) + 1))            # one save per finished task
    compiled = [i for i, e in enumerate(events) if e[0] == "run" and e[2] in (True, "compile")]
    assert compiled and all(events[i - 1] == ("reset",) for i in compiled)
    assert sum(e == ("reset",) for e in events) == len(compiled)
    assert all(r == {"ok": True} for section in results.values() for r in section.values())


def test_a_long_search_task_stops_at_the_budget_and_says_how_far_it_got(monkeypatch):
    monkeypatch.setattr(gpu_suite, "BUDGET", gpu_suite.Budget(0))
    cfg = {**gpu_suite.SMOKE["search"], "steps": 3}
    record = gpu_suite.search_epoch(cfg, gpu_suite.torch.device("cpu"), fused=False, bf16=False)
    assert record["steps"] == 1 and record["cut_by_budget"] and record["epoch_s"] > 0


def test_first_contact_runs_the_smoke_search_of_every_strategy():
    """P1 covers every strategy in the table on the device (GDAS's and SNAS's samplers are the ones
    a CPU generator would break on CUDA); the searches that train sampled children, minutes on the
    CPU, outside --smoke only."""
    import gpu_first_run

    from nasnetzoo.search.strategies import TABLE

    assert set(gpu_first_run.smoke_searches(False, "cuda")) == set(TABLE)
    sampled = {name for name, entry in TABLE.items() if not entry.on_supernet and name != "enas"}
    assert sampled == {"nasnet_rl", "random", "evolution", "pnas"}
    assert set(gpu_first_run.smoke_searches(True, "cpu")) == set(TABLE) - sampled
    for recipe, overrides in gpu_first_run.smoke_searches(False, "cuda").values():
        assert (gpu_first_run.HERE.parent / "recipes" / recipe).is_file()
        assert "device=cuda" in overrides or "child.device=cuda" in overrides
