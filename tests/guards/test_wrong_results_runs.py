"""NaN and Inf never reach a run's outputs: recipes require finite numbers, and a loss that
becomes non-finite stops the run before anything built from it is written."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from nasnetzoo.cli import cli
from nasnetzoo.search.recipe import load_search_recipe
from nasnetzoo.search.rl.recipe import load_rl_recipe
from nasnetzoo.runs.progress import read_jsonl
from nasnetzoo.train.recipe import RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
TINY = ["epochs=3", "max_steps_per_epoch=2", "model.C=4", "model.layers=3", "progress=false", "batch_size=32",
        "log_every=1"]


@pytest.mark.parametrize("load, recipe, override, key", [
    (load_recipe, "smoke_train.yaml", "lr=.nan", "'lr'"),
    (load_recipe, "smoke_train.yaml", "lr=.inf", "'lr'"),
    (load_recipe, "smoke_train.yaml", "weight_decay=.inf", "'weight_decay'"),
    (load_recipe, "smoke_train.yaml", "betas=[0.9, .nan]", "'betas[1]'"),
    (load_recipe, "smoke_train.yaml", "model.drop_prob=-.inf", "'model.drop_prob'"),
    (load_search_recipe, "smoke_search.yaml", "arch_lr=.nan", "'arch_lr'"),
    (load_search_recipe, "smoke_search.yaml", "lr=1e400", "'lr'"),
    (load_rl_recipe, "smoke_nasnet_rl.yaml", "controller_lr=.inf", "'controller_lr'"),
    (load_rl_recipe, "smoke_nasnet_rl.yaml", "child.lr=.nan", "'child.lr'"),
])
def test_non_finite_recipe_numbers_are_refused_naming_the_key(load, recipe, override, key):
    with pytest.raises(RecipeError, match=f"recipe key {re.escape(key)} = .* is not a finite number"):
        load(RECIPES / recipe, [override])


def test_non_finite_numbers_in_a_recipe_file_are_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text((RECIPES / "smoke_train.yaml").read_text().replace("lr: 0.1", "lr: .nan"))
    with pytest.raises(RecipeError, match="recipe key 'lr' = nan is not a finite number"):
        load_recipe(path)


def _args(*extra: str) -> list:
    return [a for kv in (*TINY, *extra) for a in ("--set", kv)]


def test_a_loss_that_becomes_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    runner = CliRunner()
    ok = runner.invoke(cli, ["train", "--recipe", str(RECIPES / "smoke_train.yaml"), "--arch", "pcdarts_cifar",
                             "--out", str(run), *_args("epochs=1")])
    assert ok.exit_code == 0, ok.output
    best_before = (run / "weights" / "best.safetensors").read_bytes()
    (run / "weights" / "final.safetensors").unlink()
    # An absurd learning rate without clipping: the weights blow up within the next epoch.
    bad = runner.invoke(cli, ["train", "--resume", str(run), "--set", "epochs=3", "--set", "lr=1e30",
                              "--set", "grad_clip=0"])
    assert bad.exit_code != 0
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "the training loss became" in lines[0] and "epoch 2" in lines[0], bad.output
    assert f"--resume {run}" in lines[0]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values()
                                       if v.is_floating_point())
    assert (run / "weights" / "best.safetensors").read_bytes() == best_before
    assert not (run / "weights" / "final.safetensors").exists()
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "epoch"] == [1]
    weights = load_file(str(run / "weights" / "best.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_a_nan_loss_in_the_first_epoch_writes_no_weights(tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--recipe", str(RECIPES / "smoke_train.yaml"), "--arch",
                                      "pcdarts_cifar", "--out", str(run), *_args("lr=1e30", "grad_clip=0")])
    assert result.exit_code != 0 and "the training loss became" in result.output
    assert "no checkpoint was written" in result.output
    assert not (run / "weights").exists() and not (run / "checkpoints").exists()


def test_a_search_whose_loss_becomes_nan_stops(tmp_path):
    tiny = ["image_size=16", "C=4", "layers=3", "batch_size=16", "max_steps_per_epoch=2", "progress=false",
            "epochs=2", "lr=1e30", "grad_clip=0", "warmup_epochs=0"]
    result = CliRunner().invoke(cli, ["search", "--recipe", str(RECIPES / "smoke_search.yaml"), "--out",
                                      str(tmp_path / "run"), *[a for kv in tiny for a in ("--set", kv)]])
    assert result.exit_code != 0 and "the training loss became" in result.output, result.output
    assert not (tmp_path / "run" / "genotype.yaml").exists()
