"""Multi-scale features (timm's definitions), torch.fx tracing and gradient checkpointing, for every
registry entry (tiny widths: ``tests/backbones.py``).  The costlier checks run on one entry per
builder family by default and on every entry in the slow tier (``-m slow``)."""
from __future__ import annotations

import pytest
import torch
import torch.fx

import nasnetzoo
from nasnetzoo import ConfigError

from backbones import ENTRIES, REPRESENTATIVES, every_entry, input_size, small_config

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name: str, **kwargs):
    torch.manual_seed(0)
    return nasnetzoo.load(name, **small_config(name), **kwargs)


def image(name: str, batch: int = 2) -> torch.Tensor:
    size = input_size(name)
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ENTRIES)
def test_feature_info_describes_the_maps(name):
    model, x = tiny(name), image(name)
    info = model.feature_info
    reductions = info.reduction()
    imagenet = nasnetzoo.get_entry(name).architecture.data != "cifar"
    expected = [4, 8, 16, 32] if imagenet else [1, 2, 4]
    assert reductions[-len(expected):] == expected and reductions == sorted(set(reductions))
    # each map is the output of the module feature_info names (so a forward hook there sees it)
    hooked = {}
    for f in info:
        model.get_submodule(f["module"]).register_forward_hook(
            lambda m, args, out, key=f["module"]: hooked.__setitem__(key, out))
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        features = model.forward_features(x)
    assert torch.equal(final, features) and torch.equal(maps[-1], features)
    assert len(maps) == len(info)
    for f, m in zip(info, maps):
        assert m.shape[:2] == (2, f["num_chs"])
        assert all(abs(side - x.shape[-1] / f["reduction"]) <= 1 for side in m.shape[-2:]), (f, m.shape)
        assert torch.equal(hooked[f["module"]], m)


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_forward_intermediates_indices(name):
    model, x = tiny(name), image(name)
    n = len(model.feature_info)
    with torch.no_grad():
        _, every = model.forward_intermediates(x)
        assert [t.shape for t in model.forward_intermediates(x, indices=2, intermediates_only=True)] == \
            [t.shape for t in every[-2:]]
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        assert torch.equal(picked[0], every[0]) and torch.equal(picked[1], every[-1])
        final, maps = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(final, every[1]) and torch.equal(maps[0], every[1])
        nhwc = model.forward_intermediates(x, indices=[1], output_fmt="NHWC", intermediates_only=True)[0]
        assert torch.equal(nhwc, every[1].permute(0, 2, 3, 1))
    for bad in (n + 1, [n], 0, [-n - 1]):
        with pytest.raises(ConfigError, match="out of range"):
            model.forward_intermediates(x, indices=bad)


@pytest.mark.parametrize("name", every_entry())
def test_load_features_only_prunes_and_returns_the_maps(name):
    x = image(name)
    with torch.no_grad():
        every = tiny(name).forward_intermediates(x, intermediates_only=True)
    full = tiny(name)
    extractor = tiny(name, features_only=True, out_indices=(0, 1))
    assert not extractor.training
    assert extractor.feature_info.channels() == full.feature_info.channels()[:2]
    with torch.no_grad():
        maps = extractor(x)
    assert len(maps) == 2 and all(torch.equal(a, b) for a, b in zip(maps, every[:2]))
    # the cells after map 1 are gone, and so is the classifier
    kept = sum(p.numel() for p in extractor.parameters())
    assert kept < sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in full.classifier.parameters())
    assert len(extractor.model._layers) == full.feature_info[1]["index"]
    with pytest.raises(ConfigError, match="features_only=True"):
        nasnetzoo.load(name, out_indices=(0,), **small_config(name))


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_prune_intermediate_layers_keeps_the_maps(name):
    x = image(name)
    model = tiny(name)
    with torch.no_grad():
        every = model.forward_intermediates(x, intermediates_only=True)
        assert model.prune_intermediate_layers([-2]) == [len(every) - 2]
        final, maps = model.forward_intermediates(x, indices=[-1])
        assert torch.equal(maps[0], every[-2]) and torch.equal(final, every[-2])
        assert model.num_features == model.head_hidden_size == every[-2].shape[1]
        assert model(x).shape == (2, every[-2].shape[1], *every[-2].shape[-2:])  # no pool, no classifier


@pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing")  # train vs eval graphs
@pytest.mark.parametrize("name", every_entry())
def test_fx_trace_and_feature_extractor_equal_eager(name):
    from torchvision.models.feature_extraction import create_feature_extractor

    model, x = tiny(name), image(name)
    graph = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))
        maps = model.forward_intermediates(x, intermediates_only=True)
    nodes = {f["module"]: str(i) for i, f in enumerate(model.feature_info)}
    extractor = create_feature_extractor(model, nodes)  # traces the train and the eval graph
    with torch.no_grad():
        out = extractor(x)
    assert all(torch.equal(out[str(i)], m) for i, m in enumerate(maps))


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_fx_trace_in_training_mode_with_the_auxiliary_head(name):
    model, x = tiny(name, auxiliary=True), image(name)
    model.train()
    graph = torch.fx.symbolic_trace(model)
    logits, aux = model(x)
    traced_logits, traced_aux = graph(x)
    assert torch.allclose(logits, traced_logits, atol=1e-6) and torch.allclose(aux, traced_aux, atol=1e-6)


def _grads(model, x):
    model.zero_grad()
    model(x).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", every_entry())
def test_grad_checkpointing_recomputes_each_cell_and_keeps_gradients(name):
    model, x = tiny(name).train(), image(name)
    plain = _grads(model, x)
    calls = []
    last_cell = model.get_submodule(model._layers[-1][0])
    forward = last_cell.forward  # counted here: the recomputation runs no forward hooks
    last_cell.forward = lambda *args: (calls.append(1), forward(*args))[1]
    model.set_grad_checkpointing()
    checkpointed = _grads(model, x)
    assert len(calls) == 2  # run once forward and once again in backward
    assert plain.keys() == checkpointed.keys()
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-5) for k in plain)
    model.set_grad_checkpointing(False)
    calls.clear()
    _grads(model, x)
    assert len(calls) == 1


def test_num_classes_zero_at_build_and_reset_classifier_global_pool():
    name = "pcdarts_cifar"
    model, x = tiny(name, num_classes=0), image(name)
    with torch.no_grad():
        assert model(x).shape == (2, model.num_features)
        model.reset_classifier(0, "")
        assert model(x).shape == model.forward_features(x).shape
        model.reset_classifier(5, "max")
        assert model(x).shape == (2, 5)
        assert torch.equal(model.forward_head(model.forward_features(x), pre_logits=True),
                           model.forward_features(x).amax((2, 3)))
    assert model.head_hidden_size == model.num_features
    with pytest.raises(ConfigError, match="needs num_classes=0"):
        model.reset_classifier(5, "")
    with pytest.raises(ConfigError, match="global_pool='token'"):
        model.reset_classifier(0, "token")


@pytest.mark.slow
@pytest.mark.parametrize("name", ENTRIES)
def test_full_size_feature_info(name):
    """The published widths: channels and reductions as declared, at a small input."""
    model = nasnetzoo.load(name)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
    for f, m in zip(model.feature_info, maps):
        assert m.shape[1] == f["num_chs"]
        assert all(abs(side - 64 / f["reduction"]) <= 1 for side in m.shape[-2:])
    graph = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))
