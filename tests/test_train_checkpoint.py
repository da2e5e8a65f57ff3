"""Checkpoints survive a crash mid-write; schedules, augmentations and the engine's pieces."""
import math

import pytest
import torch

import nasnetzoo

from nasnetzoo import fileio
from nasnetzoo.runs import checkpoint as ckpt
from nasnetzoo.data.augment import BatchAugment, Cutout, cutout, random_crop
from nasnetzoo.train.engine import DropPathSchedule, classification_loss, topk_correct
from nasnetzoo.runs.optim import LRSchedule, build_optimizer, load_optimizer_state


def test_crash_while_writing_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    ckpt.atomic_save({"model": {"w": torch.ones(3)}, "epoch": 1}, path)

    def crash(handle, payload):
        handle.write(payload[: len(payload) // 2])   # half the bytes reach the disk, then the process dies
        raise OSError("simulated crash mid-write")

    monkeypatch.setattr(fileio, "_write_bytes", crash)
    with pytest.raises(OSError, match="simulated"):
        ckpt.atomic_save({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    state = ckpt.load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]   # no temporary file left behind


def test_torn_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="cannot be read"):
        ckpt.load_checkpoint(path)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_round_trip():
    state = ckpt.rng_state()
    a = torch.rand(4)
    ckpt.set_rng_state(state)
    assert torch.equal(torch.rand(4), a)


def _opt():
    return build_optimizer([torch.nn.Parameter(torch.zeros(1))], "sgd", lr=1.0)


@pytest.mark.parametrize("name, kwargs", [("sgd", dict(momentum=0.9, weight_decay=3e-4)),
                                          ("sgd", dict(momentum=0.9, nesterov=True)),
                                          ("adamw", dict(weight_decay=0.05))])
def test_multi_tensor_updates_match_per_tensor_ones_bit_for_bit(name, kwargs):
    torch.manual_seed(0)
    shapes = [(16, 4, 1, 1), (16,), (48, 1, 5, 5), (10, 64)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt = build_optimizer(ours, name, lr=0.1, **kwargs)
    kind = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[name]
    ref = kind(theirs, lr=0.1, foreach=False, **kwargs)
    assert opt.param_groups[0]["foreach"] is True
    for _ in range(3):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape)
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_resuming_an_older_optimizer_state_keeps_the_multi_tensor_path():
    """A state saved on the per-tensor path (foreach None) brings back its momentum and lr, not its path."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    saved = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    for p in params:
        p.grad = torch.randn(p.shape)
    saved.step()
    resumed = build_optimizer(params, "sgd", lr=0.1, momentum=0.9)
    load_optimizer_state(resumed, saved.state_dict())
    group = resumed.param_groups[0]
    assert group["foreach"] is True and group["lr"] == 0.05
    assert all(torch.equal(resumed.state[p]["momentum_buffer"], saved.state[p]["momentum_buffer"]) for p in params)
    plain = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    plain.load_state_dict(saved.state_dict())
    assert plain.param_groups[0]["foreach"] is None   # what PyTorch alone would have resumed with


def test_schedules():
    cos = LRSchedule(_opt(), kind="cosine", base_lr=0.025, total_steps=100, steps_per_epoch=10)
    assert cos.lr_at(0) == pytest.approx(0.025) and cos.lr_at(50) == pytest.approx(0.0125)
    assert cos.lr_at(100) == pytest.approx(0.0, abs=1e-12)
    step = LRSchedule(_opt(), kind="step", base_lr=0.1, total_steps=1000, steps_per_epoch=10, gamma=0.97)
    assert step.lr_at(9) == pytest.approx(0.1) and step.lr_at(25) == pytest.approx(0.1 * 0.97 ** 2)
    warm = LRSchedule(_opt(), kind="linear", base_lr=0.5, total_steps=250, steps_per_epoch=1, warmup_steps=5)
    assert [round(warm.lr_at(s), 3) for s in range(5)] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert warm.lr_at(5) == pytest.approx(0.5) and warm.lr_at(250) == pytest.approx(0.0, abs=1e-12)
    warm.step(); warm.step()
    again = LRSchedule(_opt(), kind="linear", base_lr=0.5, total_steps=250, steps_per_epoch=1, warmup_steps=5)
    again.load_state_dict(warm.state_dict())
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(0.3)


def test_drop_path_schedules():
    darts = DropPathSchedule(0.2, "linear", epochs=600, steps_per_epoch=10)
    assert darts.value(0, 0) == 0 and darts.value(300, 3000) == pytest.approx(0.1)
    nasnet = DropPathSchedule(0.4, "scheduled", epochs=10, steps_per_epoch=10)
    assert nasnet.value(5, 25) == pytest.approx(0.1) and nasnet.value(9, 100) == pytest.approx(0.4)


def test_augmentations_keep_shapes_and_cut_the_right_area():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16)
    assert random_crop(x, 4).shape == x.shape
    assert torch.equal(random_crop(x, 0), x)
    holes = (cutout(torch.ones(64, 3, 32, 32), 16) == 0).flatten(1).sum(1) // 3
    assert holes.max() == 256 and holes.min() >= 64          # 16x16, clipped at the border
    single = Cutout(16)(torch.ones(3, 32, 32))
    assert 64 * 3 <= int((single == 0).sum()) <= 256 * 3
    aug = BatchAugment((0.5,) * 3, (0.5,) * 3, crop_padding=2, hflip=True, cutout=4)
    out = aug(torch.full((4, 3, 8, 8), 0.5), train=False)
    assert torch.allclose(out, torch.zeros_like(out))


def test_losses_with_auxiliary_head_and_topk():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 3.0]])
    target = torch.tensor([0, 1])
    plain, _ = classification_loss(logits, target, torch.nn.CrossEntropyLoss())
    both, main = classification_loss((logits, logits), target, torch.nn.CrossEntropyLoss(), aux_weight=0.4)
    assert torch.allclose(both, 1.4 * plain) and main is logits
    top1, top5 = topk_correct(logits, target)
    assert int(top1) == 1 and int(top5) == 2
    assert not math.isnan(float(plain))


def test_auto_drop_path_schedule_is_scheduled_for_nasnet_cells_and_linear_for_darts():
    from nasnetzoo.train.recipe import Recipe
    from nasnetzoo.train.runner import drop_path_schedule_for

    recipe = Recipe(drop_path=0.2)
    assert recipe.drop_path_schedule == "auto"
    assert drop_path_schedule_for(recipe, nasnetzoo.get_genotype("nasnet_a")) == "scheduled"
    assert drop_path_schedule_for(recipe, nasnetzoo.get_genotype("amoebanet_a")) == "scheduled"
    assert drop_path_schedule_for(recipe, nasnetzoo.get_genotype("pcdarts")) == "linear"
    assert drop_path_schedule_for(recipe.replace(drop_path_schedule="constant"),
                                  nasnetzoo.get_genotype("nasnet_a")) == "constant"
