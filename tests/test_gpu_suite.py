"""The prepared GPU suite (benchmarks/gpu_suite.py) runs end to end with --smoke on the CPU."""
from __future__ import annotations

import json
import sys
from pathlib import Path

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
