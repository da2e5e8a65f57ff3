"""The pretrained cfg of each published weights file: its publisher's preprocessing, with sources."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import nasnetzoo
from nasnetzoo.errors import ConfigError
from nasnetzoo.factory import pretrained_cfg
from nasnetzoo.weights.cfg import NETWORKS, pool_size
from nasnetzoo.weights.sources import WeightsSource, published

SOURCES = [s for sources in published().values() for s in sources]
PREPROCESSING = ("input_size", "crop_pct", "interpolation", "mean", "std")


def test_every_published_file_has_its_own_cfg_and_source():
    assert SOURCES
    for source in SOURCES:
        assert source.cfg_source, source.model
        assert set(PREPROCESSING) <= set(source.cfg), (source.model, source.tag)
        cfg = pretrained_cfg(source.model, tag=source.tag)
        for key in PREPROCESSING:
            assert cfg["cfg_sources"][key] == source.cfg_source
        assert cfg["tag"] == source.tag
        assert cfg["num_classes"] == (10 if source.model.endswith("cifar") else 1000)


@pytest.mark.parametrize("source", [s for s in SOURCES if s.layout == "timm"], ids=lambda s: s.model)
def test_timm_files_match_timms_own_pretrained_cfg(source):
    """Offline: the installed timm's cfg for the same hub weights."""
    timm_models = pytest.importorskip("timm.models")
    theirs = timm_models.get_pretrained_cfg(source.hub.split("/", 1)[1]).to_dict()
    ours = pretrained_cfg(source.model, tag=source.tag)
    for key in ("input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std", "num_classes", "pool_size"):
        assert ours[key] == theirs[key], key
    assert ours["hf_hub_id"] == theirs["hf_hub_id"]


def _pytorchcv_metainfo() -> dict:
    pytorchcv = pytest.importorskip("pytorchcv")
    path = Path(pytorchcv.__file__).parent / "models" / "common" / "model_metainfos.csv"
    if not path.is_file():
        pytest.skip("this pytorchcv has no model_metainfos.csv")
    with open(path, newline="") as handle:
        return {row["model_name"]: row for row in csv.DictReader(handle)}


@pytest.mark.parametrize("source", [s for s in SOURCES if s.layout == "pytorchcv"], ids=lambda s: s.model)
def test_pytorchcv_files_match_pytorchcvs_metainfo(source):
    """img_size and img_scale of the installed pytorchcv's model_metainfos.csv (the row whose
    checksum is this file's), and imgclsmob's ImageNet1KMetaInfo mean/std/bilinear/ceil."""
    rows = [r for r in _pytorchcv_metainfo().values() if r["checksum"] == source.checksum]
    assert len(rows) == 1, source.checksum
    ours = pretrained_cfg(source.model, tag=source.tag)
    assert ours["input_size"] == (3, int(rows[0]["img_size"]), int(rows[0]["img_size"]))
    assert ours["crop_pct"] == pytest.approx(float(rows[0]["img_scale"]))
    assert (ours["mean"], ours["std"]) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (ours["interpolation"], ours["resize_rounding"]) == ("bilinear", "ceil")


TINY = {"darts_cifar": ("darts_v2_cifar", dict(C=4, layers=3), 32),
        "darts_imagenet": ("darts_v2_imagenet", dict(C=4, layers=3), 64),
        "nasnet_cifar": ("nasnet_a_cifar", dict(N=1, F=4), 32),
        "nasnet_imagenet": ("pnasnet5_large", dict(N=1, F=4), 67),
        "enas_cifar": ("enas_cifar", dict(num_layers=3, out_filters=4), 32)}


@pytest.mark.parametrize("architecture", sorted(NETWORKS))
def test_first_conv_classifier_and_pool_size_name_the_network(architecture):
    name, config, size = TINY[architecture]
    model = nasnetzoo.load(name, **config)
    cfg = dict(model.pretrained_cfg)
    modules = dict(model.named_modules())
    assert isinstance(modules[cfg["first_conv"]], torch.nn.Conv2d)
    assert isinstance(modules[cfg["classifier"]], torch.nn.Linear)
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, size, size))
    assert pool_size(architecture, (3, size, size)) == tuple(features.shape[-2:])


def test_reset_classifier_updates_the_cfg():
    model = nasnetzoo.load("darts_v2_cifar", C=4, layers=3)
    assert model.pretrained_cfg["num_classes"] == 10
    model.reset_classifier(5)
    assert model.pretrained_cfg["num_classes"] == 5
    assert model.pretrained_cfg["cfg_sources"]["num_classes"] == "reset_classifier"


@pytest.mark.parametrize("cfg, message", [
    ({"mean": [0.5, 0.5]}, "mean"), ({"std": [0.5, 0.0, 0.5]}, "std"), ({"crop_pct": 1.5}, "crop_pct"),
    ({"interpolation": "lanczos7"}, "interpolation"), ({"input_size": [3, 224]}, "input_size"),
    ({"colour": 1}, "unknown cfg field")])
def test_a_wrong_cfg_in_the_registry_is_refused_with_one_line(cfg, message):
    entry = {"url": "https://example.invalid/w.pth", "sha256": "0" * 64, "cfg": cfg, "cfg_source": "here"}
    with pytest.raises(ConfigError, match=message):
        WeightsSource.parse("darts_v2_cifar", entry, 0)


def test_a_cfg_without_its_source_is_refused():
    entry = {"url": "https://example.invalid/w.pth", "sha256": "0" * 64, "cfg": {"crop_pct": 0.9}}
    with pytest.raises(ConfigError, match="cfg_source"):
        WeightsSource.parse("darts_v2_cifar", entry, 0)
