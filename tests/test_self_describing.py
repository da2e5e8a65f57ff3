"""Weights that describe themselves: load by file, folder or hub id; eval reads them, not the run folder."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import nasnetzoo
from nasnetzoo.errors import NasNetZooError
from nasnetzoo.weights.format import read_metadata, saved_image_size

TINY = dict(C=4, layers=3, num_classes=7)


@pytest.fixture
def folder(tmp_path):
    model = nasnetzoo.load("darts_v2_cifar", **TINY)
    nasnetzoo.save_pretrained(model, tmp_path / "w")
    return tmp_path / "w", model


def _same_outputs(a, b):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_save_pretrained_to_a_folder_writes_the_three_files(folder):
    path, model = folder
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["arch"] == "darts_v2_cifar" and config["config"]["num_classes"] == 7
    assert config["genotype"]["name"] == "darts_v2" and config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["input"] == {"dataset": "cifar10", "image_size": 32, "in_chans": 3, "num_classes": 7}


def test_load_a_file_or_a_folder_by_itself(folder):
    path, model = folder
    for target in (path, path / "model.safetensors", str(path)):
        loaded = nasnetzoo.load(target)
        assert loaded.num_classes == 7 and _same_outputs(model, loaded)


def _hub_cache(root, repo, weights):
    """The real cache layout: refs/main -> a commit, snapshots/<commit>/model.safetensors."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    (repo_dir / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(weights, repo_dir / "snapshots" / commit / "model.safetensors")


def test_load_hub_ids_from_a_local_cache_offline(folder, tmp_path, monkeypatch):
    path, model = folder
    cache = tmp_path / "hub"
    _hub_cache(cache, "someone/tiny-darts", path / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for target in ("hf-hub:someone/tiny-darts", "someone/tiny-darts"):
        assert _same_outputs(model, nasnetzoo.load(target))
    with pytest.raises(NasNetZooError, match="not in the Hugging Face cache"):
        nasnetzoo.load("hf-hub:someone/absent")


def test_metadata_naming_another_arch_or_none_is_refused(folder, tmp_path):
    path, model = folder
    # same genotype and network (NASNet-A on ImageNet), another entry: the saved config would build it silently
    mobile = nasnetzoo.save_pretrained(nasnetzoo.load("nasnet_a_mobile", N=1, F=4), tmp_path / "mobile.safetensors")
    with pytest.raises(NasNetZooError, match="holds weights for 'nasnet_a_mobile' .*not 'nasnet_a_large'"):
        nasnetzoo.load("nasnet_a_large", weights=mobile)
    bare = tmp_path / "bare.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))   # no metadata at all
    with pytest.raises(NasNetZooError, match="no nasnetzoo metadata"):
        nasnetzoo.load("darts_v2_cifar", weights=bare, **TINY)
    with pytest.raises(NasNetZooError, match="no nasnetzoo metadata"):
        nasnetzoo.load(bare)


def test_a_wrong_image_size_in_the_metadata_is_refused(tmp_path):
    assert saved_image_size({"input": {"image_size": 16}}, "w") == 16
    assert saved_image_size({}, "w") is None
    for bad in ({"input": {"image_size": "16"}}, {"input": {"image_size": 0}}, {"input": [16]}):
        with pytest.raises(NasNetZooError, match="input.image_size"):
            saved_image_size(bad, "w")


def test_the_image_size_travels_with_the_file(folder):
    path, _ = folder
    assert read_metadata(path / "model.safetensors")["input"]["image_size"] == 32


def test_eval_takes_the_image_size_from_the_weights_not_the_run_folder(tmp_path, monkeypatch):
    """Issue 31 item 6: the same file, copied out of its run folder, is evaluated at the same size."""
    from nasnetzoo.factory import resolve
    from nasnetzoo.train import evaluate
    from nasnetzoo.train.artifacts import save_weights

    spec = resolve("pcdarts_cifar", C=4, layers=3)
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    (run / "model.json").write_text(json.dumps({"image_size": 24}))   # what the run folder says: ignored
    weights = save_weights(spec.build(), run / "weights" / "best.safetensors", spec,
                           provenance={"image_size": 16})
    elsewhere = tmp_path / "copy.safetensors"
    shutil.copy(weights, elsewhere)
    seen = []

    class Stop(Exception):
        pass

    def build_data(recipe, **kwargs):
        seen.append(recipe.image_size)
        raise Stop

    monkeypatch.setattr(evaluate, "build_data", build_data)
    for path in (weights, elsewhere):
        with pytest.raises(Stop):
            evaluate.evaluate_weights("pcdarts_cifar", path, data="digits", device="cpu", workers=0)
    assert seen == [16, 16]
