"""A pickle planted in a run directory never runs: train/search resume and PARSEC's warm start
read checkpoints with the weights-only unpickler and refuse anything else in one line."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nasnetzoo.cli import cli
from nasnetzoo.search.recipe import load_search_recipe
from nasnetzoo.search.rl.recipe import load_rl_recipe
from nasnetzoo.train.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
TINY_SEARCH = ["image_size=16", "C=4", "layers=3", "steps=1", "batch_size=16", "max_steps_per_epoch=2",
               "progress=false", "epochs=4", "warmup_epochs=1"]   # the smoke recipe's 8 and 5 are for a person


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "epoch": 0, "step": 0, "strategy": {"pi": Payload(marker)},
                "rng": [Payload(marker)]}, path)


def test_the_payload_is_live(tmp_path):
    """The planted file does run code when read the unsafe way, so the tests below can fail."""
    marker = tmp_path / "ran"
    plant(tmp_path / "x.pt", marker)
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert marker.exists()


def _train_run(run: Path) -> None:
    run.mkdir(parents=True)
    recipe = load_recipe(RECIPES / "smoke_train.yaml", ["progress=false", "model.C=4", "model.layers=3"])
    (run / "recipe.yaml").write_text(recipe.to_yaml())
    (run / "model.json").write_text(json.dumps({"train_arch": "pcdarts_cifar", "arch": "pcdarts_cifar"}))


def _search_run(run: Path, *extra: str) -> None:
    run.mkdir(parents=True)
    recipe = load_search_recipe(RECIPES / "smoke_search.yaml", [*TINY_SEARCH, *extra])
    (run / "recipe.yaml").write_text(recipe.to_yaml())


def _rl_run(run: Path) -> None:
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(load_rl_recipe(RECIPES / "smoke_nasnet_rl.yaml", ["progress=false"]).to_yaml())


PARSEC = ["strategy=parsec", "edge_norm=false", "partial_k=1", "parsec_samples=2", "epochs=1", "warmup_epochs=0"]


def _case(kind: str, tmp_path: Path, marker: Path) -> list[str]:
    run = tmp_path / "run"
    if kind == "train --resume":
        _train_run(run)
        plant(run / "checkpoints" / "last.pt", marker)
        return ["train", "--resume", str(run)]
    if kind == "search --resume":
        _search_run(run)
        plant(run / "checkpoint.pt", marker)
        return ["search", "--resume", str(run)]
    if kind == "rl search --resume":
        _rl_run(run)
        plant(run / "controller.pt", marker)
        return ["search", "--resume", str(run)]
    assert kind == "search --init-distribution"
    source = tmp_path / "someone_elses_run"
    _search_run(source, *PARSEC)
    plant(source / "checkpoint.pt", marker)
    return ["search", "--recipe", str(RECIPES / "smoke_search.yaml"), "--out", str(tmp_path / "mine"),
            "--init-distribution", str(source), *[a for kv in (*TINY_SEARCH, *PARSEC) for a in ("--set", kv)]]


@pytest.mark.parametrize("kind", ["train --resume", "search --resume", "rl search --resume",
                                  "search --init-distribution"])
def test_planted_pickle_is_refused_in_one_line_and_never_runs(kind, tmp_path):
    marker = tmp_path / "code_ran"
    args = _case(kind, tmp_path, marker)
    result = CliRunner().invoke(cli, args)
    assert not marker.exists(), f"{kind}: the planted pickle ran"
    assert result.exit_code != 0, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert "refused" in lines[0] and "never runs code" in lines[0] and "posix.system" in lines[0], lines[0]
