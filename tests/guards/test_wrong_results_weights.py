"""Weights that would load silently wrong are refused with one clear line: NaN/Inf tensors, a
non-float tensor where the network holds floats, and saved sizes so large that building the
network would exhaust memory (refused before anything is allocated) - in load, eval and convert."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import nasnetzoo
from nasnetzoo.hub.convert import convert_checkpoint
from nasnetzoo.weights import WeightsError, encode_metadata

SMALL = dict(C=8, layers=5)
pytestmark = pytest.mark.usefixtures("one_thread")


def saved(tmp_path, edit, config=None, name="w.safetensors"):
    """A weights file of the small pcdarts_cifar network after ``edit(state)`` (written by hand, as
    another tool would, so the writer's own refusal does not stop the test)."""
    model = nasnetzoo.load("pcdarts_cifar", **SMALL)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    edit(state)
    path = tmp_path / name
    meta = {"arch": "pcdarts_cifar", "config": config or {**SMALL, "num_classes": 10}}
    save_file(state, str(path), metadata=encode_metadata(meta))
    return path


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def first_conv(state):
    return next(k for k, v in state.items() if k.endswith("weight") and v.dim() == 4)


def test_nan_weights_are_refused_by_load(tmp_path):
    def poison(state):
        state[first_conv(state)][0, 0, 0, 0] = float("nan")
    path = saved(tmp_path, poison)
    with pytest.raises(WeightsError) as err:
        nasnetzoo.load("pcdarts_cifar", weights=path)
    assert "NaN/Inf" in one_line(err) and first_conv(nasnetzoo.load("pcdarts_cifar", **SMALL).state_dict()) in str(err.value)


def test_int64_where_float_expected_is_refused_by_load(tmp_path):
    def to_int(state):
        key = first_conv(state)
        state[key] = state[key].round().to(torch.int64)
    path = saved(tmp_path, to_int)
    with pytest.raises(WeightsError) as err:
        nasnetzoo.load("pcdarts_cifar", weights=path)
    assert "is int64 but the network holds float32" in one_line(err)


def test_eval_refuses_nan_weights(tmp_path):
    from nasnetzoo.train.evaluate import evaluate_weights

    def poison(state):
        state["classifier.weight"][0, 0] = float("inf")
    path = saved(tmp_path, poison)
    with pytest.raises(WeightsError, match="NaN/Inf"):
        evaluate_weights("pcdarts_cifar", path, data="digits", workers=0)


@pytest.mark.parametrize("key,value", [("C", 100000), ("layers", 10**6), ("num_classes", 10**9), ("C", "big"),
                                       ("C", -4)])
def test_absurd_saved_sizes_are_refused_before_building(tmp_path, monkeypatch, key, value):
    path = saved(tmp_path, lambda state: None, config={**SMALL, "num_classes": 10, key: value})
    from nasnetzoo import factory

    built = []
    monkeypatch.setattr(factory.ModelSpec, "build", lambda self: built.append(self) or None)
    with pytest.raises(WeightsError) as err:
        nasnetzoo.load("pcdarts_cifar", weights=path)
    text = one_line(err)
    assert f"{key}=" in text and str(path) in text and "metadata config is refused" in text
    assert built == []  # nothing was allocated


def test_convert_refuses_nan_and_wrong_dtype(tmp_path):
    official = nasnetzoo.load("darts_v2_cifar", **SMALL).state_dict()
    bad = {k: v.clone() for k, v in official.items()}
    bad["classifier.bias"][0] = float("nan")
    torch.save(bad, tmp_path / "nan.pt")
    with pytest.raises(WeightsError, match="NaN/Inf"):
        convert_checkpoint(tmp_path / "nan.pt", tmp_path / "o.safetensors", fmt="darts", arch="darts_v2_cifar")
    bad = {k: v.clone() for k, v in official.items()}
    bad["classifier.weight"] = bad["classifier.weight"].to(torch.int64)
    torch.save(bad, tmp_path / "int.pt")
    with pytest.raises(WeightsError, match="is int64 but the network holds float32"):
        convert_checkpoint(tmp_path / "int.pt", tmp_path / "o.safetensors", fmt="darts", arch="darts_v2_cifar")
    assert not (tmp_path / "o.safetensors").exists()


def test_writer_refuses_nan(tmp_path):
    model = nasnetzoo.load("pcdarts_cifar", **SMALL)
    with torch.no_grad():
        model.classifier.bias[0] = float("nan")
    with pytest.raises(WeightsError, match="NaN/Inf values"):
        nasnetzoo.save_pretrained(model, tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []
