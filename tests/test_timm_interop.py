"""``import nasnetzoo.timm``: every entry through timm's own factory, feature wrapper, data config
and optimizer factory (timm's functions, not copies)."""
from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")
import nasnetzoo.timm  # noqa: E402,F401  (registers the zoo)
from timm.optim import create_optimizer_v2  # noqa: E402

import nasnetzoo  # noqa: E402

from backbones import ENTRIES, REPRESENTATIVES, input_size, small_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_entry_is_registered():
    assert sorted(timm.list_models("nasnetzoo_*")) == sorted(f"nasnetzoo_{n}" for n in ENTRIES)


@pytest.mark.parametrize("name", ENTRIES)
def test_create_model_as_a_backbone_with_a_complete_cfg(name):
    model = timm.create_model(f"nasnetzoo_{name}", num_classes=0, global_pool="", **small_config(name))
    assert model.training  # timm's convention
    cfg = model.pretrained_cfg
    entry = nasnetzoo.get_entry(name)
    assert cfg["input_size"] == tuple(entry.input_size) and cfg["mean"] == tuple(entry.data["mean"])
    model.get_submodule(cfg["first_conv"])  # both name real modules
    model.get_submodule(cfg["classifier"])
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == tuple(entry.input_size)
    # pool_size is the final map at the cfg's input size (the widths do not change it)
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, *cfg["input_size"]))
    assert out.shape == (1, model.num_features, *cfg["pool_size"])


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_timm_features_only(name):
    model = timm.create_model(f"nasnetzoo_{name}", features_only=True, out_indices=(-2, -1), **small_config(name))
    size = input_size(name)
    maps = model(torch.randn(2, 3, size, size))
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    assert len(maps) == 2


def test_reset_classifier_and_head():
    model = timm.create_model("nasnetzoo_pcdarts_cifar", num_classes=7, **small_config("pcdarts_cifar"))
    x = torch.randn(2, 3, 16, 16)
    assert model(x).shape == (2, 7)
    model.reset_classifier(3, "max")
    assert model(x).shape == (2, 3)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.head_hidden_size)


@pytest.mark.parametrize("name", ["pcdarts_imagenet", "nasnet_a_mobile"])
def test_layer_decay_groups_follow_the_cells(name):
    model = timm.create_model(f"nasnetzoo_{name}", **small_config(name))
    optimizer = create_optimizer_v2(model, "sgd", lr=0.1, weight_decay=1e-4, layer_decay=0.5)
    scales = sorted({g["lr_scale"] for g in optimizer.param_groups})
    # stem, one group per cell, and the head (scale 1)
    layers = len(model._layers) - model._stem_steps + 2
    assert len(scales) == layers and scales[-1] == 1.0
    stem_param = next(model.get_submodule(model._layers[0][0]).parameters())
    stem_scale = next(g["lr_scale"] for g in optimizer.param_groups if any(p is stem_param for p in g["params"]))
    assert stem_scale == scales[0]
    assert model.no_weight_decay() == set()


def test_grad_checkpointing_through_timm():
    model = timm.create_model("nasnetzoo_pcdarts_cifar", **small_config("pcdarts_cifar"))
    model.set_grad_checkpointing()
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
