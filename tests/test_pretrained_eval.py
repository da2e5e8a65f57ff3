"""`eval --pretrained`: each file's transform is its publisher's; labels of a folder are never mis-scored."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torchvision import transforms as T

from nasnetzoo.cli import cli
from nasnetzoo.errors import ConfigError
from nasnetzoo.factory import pretrained_cfg
from nasnetzoo.train.pretrained_eval import evaluate_pretrained, imagenet_synsets, write_results
from nasnetzoo.weights.preprocess import preprocessing
from nasnetzoo.weights.sources import published

SOURCES = [s for sources in published().values() for s in sources]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _images(sizes=((400, 350), (350, 500), (331, 331))):
    gen = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(h, w, 3, generator=gen) * 255).to(torch.uint8).numpy()) for w, h in sizes]


def _same(ours, theirs, images) -> bool:
    return all(torch.allclose(ours(im), theirs(im), atol=1e-6) for im in images)


@pytest.mark.parametrize("source", [s for s in SOURCES if s.layout == "timm"], ids=lambda s: s.model)
def test_timm_files_get_timms_own_transform(source):
    timm_data = pytest.importorskip("timm.data")
    from timm.models import get_pretrained_cfg

    theirs_cfg = timm_data.resolve_data_config(pretrained_cfg=get_pretrained_cfg(source.hub.split("/", 1)[1]).to_dict())
    theirs = timm_data.create_transform(**theirs_cfg)
    ours = preprocessing(pretrained_cfg(source.model, tag=source.tag)).transform()
    assert _same(ours, theirs, _images())


def _imgclsmob_val_transform(size: int, scale: float):
    """osmr/imgclsmob imagenet_val_transform: Resize(ceil(size / scale)), CenterCrop, ToTensor, Normalize."""
    return T.Compose([T.Resize(int(math.ceil(size / scale)), interpolation=T.InterpolationMode.BILINEAR),
                      T.CenterCrop(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


@pytest.mark.parametrize("source", [s for s in SOURCES if s.layout == "pytorchcv"], ids=lambda s: s.model)
def test_pytorchcv_files_get_imgclsmobs_transform(source):
    size = source.cfg["input_size"][1]
    ours = preprocessing(pretrained_cfg(source.model, tag=source.tag)).transform()
    assert _same(ours, _imgclsmob_val_transform(size, 0.875), _images())


def test_the_darts_cifar_file_gets_the_darts_test_transform():
    """quark0/darts cnn/utils.py valid_transform: ToTensor, Normalize(CIFAR_MEAN, CIFAR_STD)."""
    theirs = T.Compose([T.ToTensor(), T.Normalize([0.49139968, 0.48215827, 0.44653124],
                                                  [0.24703233, 0.24348505, 0.26158768])])
    ours = preprocessing(pretrained_cfg("darts_v2_cifar")).transform()
    assert _same(ours, theirs, _images(((32, 32), (32, 32))))


def test_a_wrong_mean_is_caught_by_the_comparison():
    cfg = dict(pretrained_cfg("nasnet_a_large", tag="pytorchcv"), mean=(0.5, 0.456, 0.406))
    assert not _same(preprocessing(cfg).transform(), _imgclsmob_val_transform(331, 0.875), _images())


def test_overrides_change_the_transform_and_say_so():
    prep = preprocessing(pretrained_cfg("nasnet_a_large", tag="timm"), input_size=224, crop_pct=0.875,
                         interpolation="bilinear")
    assert prep.resize == 256 and prep.input_size == (3, 224, 224)
    assert set(prep.overridden) == {"input_size", "crop_pct", "interpolation"}
    assert "overridden: input_size" in prep.describe()
    assert preprocessing(pretrained_cfg("nasnet_a_large", tag="pytorchcv")).resize == 379   # ceil(331 / 0.875)


# ---------------------------------------------------------------------------- a tiny ImageFolder
class AlwaysClass(torch.nn.Module):
    """Predicts ImageNet class ``k`` for every image (a 1000-class head)."""

    def __init__(self, k: int, cfg: dict):
        super().__init__()
        self.k = k
        self.pretrained_cfg = cfg
        self.bias = torch.nn.Parameter(torch.zeros(1000))

    def forward(self, x):
        logits = self.bias.expand(x.shape[0], -1).clone()
        logits[:, self.k] = 1.0
        return logits


def _folder(root, names, per_class=2):
    gen = torch.Generator().manual_seed(1)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = (torch.rand(20, 24, 3, generator=gen) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / name / f"{i}.JPEG")
    return root


@pytest.fixture(scope="module")
def synsets():
    found = imagenet_synsets()
    if found is None:
        pytest.skip("timm (the synset list) is not installed")
    return found


def _run(root, **kwargs):
    cfg = pretrained_cfg("nasnet_a_large", tag="timm")
    return evaluate_pretrained("nasnet_a_large", root, tag="timm", input_size=16, workers=0, progress=False,
                               model=AlwaysClass(10, cfg), **kwargs)


def test_a_subset_of_synsets_is_scored_against_imagenet_indices(tmp_path, synsets):
    """Folders for ImageNet classes 10 and 11, a model that always says 10: top-1 is 50 %, not 0."""
    root = _folder(tmp_path / "val", [synsets[10], synsets[11]])
    result = _run(root, class_map="synsets")
    assert result.count == 4 and result.top1 == pytest.approx(50.0)
    assert result.classes == "2 of 1000 classes" and result.img_size == 16
    assert result.publisher["top1"] == pytest.approx(82.626) and "timm" in result.publisher["source"]
    assert result.paper["top1"] == pytest.approx(82.7)
    text = "\n".join(result.lines())
    assert " * Acc@1 50.000 (50.000)" in text and "param_count" in text and "interpolation bicubic" in text
    write_results(result, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["top1_err"] == pytest.approx(50.0)
    write_results(result, tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as handle:
        assert float(next(csv.DictReader(handle))["top1"]) == pytest.approx(50.0)


def test_a_class_map_file_maps_other_names(tmp_path, synsets):
    root = _folder(tmp_path / "val", ["cat", "dog"])
    (tmp_path / "map.txt").write_text(f"cat 10\ndog {synsets[11]}\n")
    assert _run(root, class_map=tmp_path / "map.txt").top1 == pytest.approx(50.0)


def test_a_subset_without_a_class_map_is_refused(tmp_path, synsets):
    root = _folder(tmp_path / "val", [synsets[10], synsets[11]])
    with pytest.raises(ConfigError, match="2 classes but the weights' head has 1000"):
        _run(root)


def test_the_cli_refuses_names_that_are_not_synsets_with_one_line(tmp_path):
    root = _folder(tmp_path / "val", ["cat", "dog"], per_class=1)
    result = CliRunner().invoke(cli, ["eval", "--arch", "nasnet_a_large", "--pretrained", "--tag", "timm",
                                       "--data-dir", str(root), "--class-map", "synsets", "--workers", "0"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "not one of ImageNet-1k's 1000 synsets" in result.output
    result = CliRunner().invoke(cli, ["eval", "--arch", "nasnet_a_large", "--data-dir", str(root)])
    assert result.exit_code != 0 and "--weights FILE or --pretrained" in result.output
