"""The search recipe's speed keys (memory, amp, threads) reach the run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nasnetzoo.search.recipe import load_search_recipe
from nasnetzoo.search.runner import build_network, search
from nasnetzoo.train.recipe import RecipeError

REPO = Path(__file__).resolve().parents[1]
TINY = ["image_size=16", "C=4", "layers=3", "batch_size=16", "max_steps_per_epoch=2", "progress=false",
        "epochs=2", "warmup_epochs=1"]


def test_memory_key_builds_a_checkpointing_supernet():
    recipe = load_search_recipe(REPO / "recipes" / "smoke_search.yaml", [*TINY, "memory=checkpoint"])
    assert build_network(recipe, 10).memory == "checkpoint"
    assert build_network(load_search_recipe(None, TINY), 10).memory == "default"


def test_channels_last_key_builds_a_channels_last_supernet():
    assert build_network(load_search_recipe(None, [*TINY, "channels_last=on"]), 10).channels_last
    assert not build_network(load_search_recipe(None, TINY), 10).channels_last


@pytest.mark.parametrize("bad,match", [("memory=lots", "memory"), ("threads=-1", "threads"),
                                       ("channels_last=yes please", "channels_last")])
def test_bad_speed_keys_are_one_clear_error(bad, match):
    with pytest.raises(RecipeError, match=match):
        load_search_recipe(None, [bad])


def test_checkpoint_bf16_search_on_the_cpu_runs_and_writes_a_genotype(tmp_path):
    recipe = load_search_recipe(REPO / "recipes" / "smoke_search.yaml",
                                [*TINY, "memory=checkpoint", "amp=bf16", "threads=1", "device=cpu"])
    threads = torch.get_num_threads()
    try:
        result = search(recipe, out=tmp_path / "run")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "run" / "genotype.yaml").is_file() and result.epochs_done == 2


def test_off_and_on_read_as_yaml_booleans_still_mean_off_and_on(tmp_path):
    # YAML 1.1 reads an unquoted off/on/no/yes as a boolean: amp: off, --set amp=off
    assert load_search_recipe(None, ["amp=off"]).amp == "off"
    (tmp_path / "r.yaml").write_text("amp: off\nmemory: checkpoint\n")
    assert load_search_recipe(tmp_path / "r.yaml").amp == "off"
    from nasnetzoo.train.recipe import Recipe
    assert Recipe.load(None, ["channels_last=off", "data_on_device=on"]).channels_last == "off"
    with pytest.raises(RecipeError, match="'amp' = 'on' is not one of auto, bf16, off"):
        load_search_recipe(None, ["amp=on"])
