"""The NASNet RL smoke search follows the trajectory recorded before the sample-and-train refactor.

``tests/data/nasnet_rl_trajectory.json`` was recorded (``python tests/test_rl_trajectory.py
--record``) from ``recipes/smoke_nasnet_rl.yaml`` reduced to run in seconds: children trained in
this process (``executor: local``) for 2 steps of one epoch.  The controller, the PPO settings, the
3 updates x 4 children and the seed are the recipe's.  The search must give, bit for bit, the same
children (genotype, reward), the same per-update metrics, the same ``top_k.yaml`` and the same
controller state (a SHA-256 digest of every tensor: weights, Adam state, sampling generator).

The digests hold for this CPU build of PyTorch; a new PyTorch version may need ``--record`` again
(run it from the commit before any change to the search, then apply the change).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "nasnet_rl_trajectory.json"
REDUCED = ["executor=local", "child.epochs=1", "child.max_steps_per_epoch=2", "progress=false"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _digest(value) -> object:
    """Nested state with every tensor replaced by ``dtype shape sha256``."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return f"{t.dtype} {tuple(value.shape)} {hashlib.sha256(raw).hexdigest()}"
    if isinstance(value, dict):
        return {str(k): _digest(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_digest(v) for v in value]
    return value


def trajectory(run_dir: Path) -> dict:
    from nasnetzoo.search.rl.recipe import load_rl_recipe
    from nasnetzoo.search.rl.runner import CHECKPOINT, rl_search

    recipe = load_rl_recipe(ROOT / "recipes" / "smoke_nasnet_rl.yaml", REDUCED)
    rl_search(recipe, out=run_dir)
    state = torch.load(run_dir / CHECKPOINT, weights_only=False)
    children = [json.loads(line) for line in (run_dir / "children.jsonl").read_text().splitlines()]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "children": [{k: c[k] for k in ("update", "child", "reward", "val_acc", "train_acc", "params", "genotype")}
                     for c in children],
        "metrics": [{k: v for k, v in m.items() if k != "child_seconds"} for m in metrics],
        "top_k": (run_dir / "top_k.yaml").read_text(),
        "controller": _digest({"model": state["model"], "optimizer": state["optimizer"],
                               "baseline": state["baseline"], "generator": state["generator"],
                               "updates": state["updates"]}),
    }


def test_rl_smoke_search_follows_the_recorded_trajectory(tmp_path):
    expected = json.loads(FIXTURE.read_text())
    got = json.loads(json.dumps(trajectory(tmp_path / "run")))   # the same JSON round trip as the fixture
    assert got["children"] == expected["children"]
    assert got["metrics"] == expected["metrics"]
    assert got["top_k"] == expected["top_k"]
    assert got["controller"] == expected["controller"]


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        FIXTURE.write_text(json.dumps(trajectory(Path(tmp) / "run"), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
