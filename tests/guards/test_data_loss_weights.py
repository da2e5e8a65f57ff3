"""Weights files get the mode every other file nasnetzoo writes gets (0644 under umask 022, not
0600), whoever writes them: save_pretrained, convert, a training run, pretrained=True's cache."""
from __future__ import annotations

import os

import pytest
import torch

import nasnetzoo
from nasnetzoo.hub.convert import convert_checkpoint

SMALL = dict(C=8, layers=5)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_save_pretrained_and_convert_write_0644(tmp_path, umask_022):
    model = nasnetzoo.load("darts_v2_cifar", **SMALL)
    saved = nasnetzoo.save_pretrained(model, tmp_path / "w.safetensors")
    torch.save(model.state_dict(), tmp_path / "official.pt")
    converted = tmp_path / "c.safetensors"
    convert_checkpoint(tmp_path / "official.pt", converted, fmt="darts", arch="darts_v2_cifar")
    from nasnetzoo.runs.checkpoint import atomic_save

    training = atomic_save({"x": 1}, tmp_path / "ckpt.pt")
    assert mode(saved) == mode(converted) == mode(training) == 0o644


def test_training_weights_go_through_the_same_writer(tmp_path, umask_022):
    from nasnetzoo.factory import resolve
    from nasnetzoo.train.artifacts import save_weights
    from nasnetzoo.weights import read_metadata

    spec = resolve("pcdarts_cifar", **SMALL)
    path = save_weights(spec.build(), tmp_path / "final.safetensors", spec, metrics={"top1": 50.0})
    meta = read_metadata(path)
    assert mode(path) == 0o644 and meta["nasnetzoo_format"] == "1" and meta["metrics"] == {"top1": 50.0}
    assert nasnetzoo.load("pcdarts_cifar", weights=path) is not None
