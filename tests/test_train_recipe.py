"""Recipes: validation of keys and values, --set overrides, the shipped recipes' protocols."""
from pathlib import Path

import pytest
from click.testing import CliRunner

from nasnetzoo.cli import cli
from nasnetzoo.errors import NasNetZooError
from nasnetzoo.train.recipe import Recipe, RecipeError, apply_overrides, load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_misspelt_key_in_file_names_it_and_lists_valid_keys(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("epochs: 3\nweight_decya: 0.1\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "'weight_decya'" in message and "Did you mean 'weight_decay'" in message
    assert "Valid keys:" in message and "label_smoothing" in message and "batch_size" in message
    assert isinstance(info.value, NasNetZooError)


def test_misspelt_override_names_it():
    with pytest.raises(RecipeError, match=r"unknown recipe key 'lr_shedule'.*Valid keys: .*schedule"):
        apply_overrides(Recipe(), ["lr_shedule=cosine"])


def test_overrides_are_typed_and_reach_model_options():
    recipe = apply_overrides(Recipe(), ["epochs=7", "lr=1e-2", "model.C=16", "hflip=false", "betas=[0.5, 0.9]"])
    assert recipe.epochs == 7 and recipe.lr == 0.01 and recipe.model == {"C": 16} and recipe.hflip is False
    assert recipe.betas == [0.5, 0.9]
    with pytest.raises(RecipeError, match="'epochs'.*must be an integer.*'ten'"):
        apply_overrides(Recipe(), ["epochs=ten"])
    with pytest.raises(RecipeError, match="'schedule' = 'cosin' is not one of .*Did you mean 'cosine'"):
        apply_overrides(Recipe(), ["schedule=cosin"])
    with pytest.raises(RecipeError, match="key=value"):
        apply_overrides(Recipe(), ["epochs"])
    with pytest.raises(RecipeError, match="top-level key 'auxiliary'"):
        apply_overrides(Recipe(), ["model.auxiliary=true"])


def test_cli_prints_one_line_for_a_misspelt_key(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--recipe", str(RECIPES / "smoke_train.yaml"), "--arch",
                                      "pcdarts_cifar", "--out", str(tmp_path / "run"), "--set", "epoch=2"])
    assert result.exit_code != 0
    assert "unknown recipe key 'epoch'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_shipped_recipes_follow_the_papers():
    cifar = load_recipe(RECIPES / "retrain_cifar10.yaml")
    assert (cifar.epochs, cifar.batch_size, cifar.lr, cifar.schedule, cifar.weight_decay) == (600, 96, 0.025, "cosine", 3e-4)
    assert (cifar.cutout, cifar.auxiliary, cifar.aux_weight, cifar.drop_path, cifar.grad_clip) == (16, True, 0.4, 0.2, 5.0)
    assert cifar.model == {"C": 36, "layers": 20} and cifar.momentum == 0.9
    imagenet = load_recipe(RECIPES / "retrain_imagenet.yaml")
    assert (imagenet.epochs, imagenet.batch_size, imagenet.lr, imagenet.warmup_epochs) == (250, 1024, 0.5, 5)
    assert (imagenet.label_smoothing, imagenet.aux_weight, imagenet.weight_decay) == (0.1, 0.4, 3e-5)
    assert imagenet.model == {"C": 48, "layers": 14} and imagenet.dataset == "imagenet"
    smoke = load_recipe(RECIPES / "smoke_train.yaml")
    assert smoke.dataset == "digits" and smoke.arch == "pcdarts_cifar"
