"""Optimizers and learning-rate schedules, as factories that other loops (search) reuse.

The schedule is a function of the optimizer step, so it resumes from a single integer:

* ``cosine``: ``lr_min + (lr - lr_min) * (1 + cos(pi * t)) / 2`` (DARTS, PC-DARTS CIFAR);
* ``step``: ``lr * gamma ** floor(epoch / step_epochs)`` (DARTS ImageNet: x0.97 every epoch);
* ``linear``: ``lr_min + (lr - lr_min) * (1 - t)`` (PC-DARTS ImageNet);
* ``constant``.

``t`` runs from 0 to 1 over the steps after warm-up (fractional epochs, so the curve is smooth per
step rather than per epoch as in the official code: the same curve sampled finer).  Warm-up
raises the lr linearly from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` steps.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import nn

from ..recipe_file import RecipeError


def build_optimizer(params: Iterable, name: str = "sgd", *, lr: float, momentum: float = 0.9,
                    nesterov: bool = False, weight_decay: float = 0.0,
                    betas: Sequence[float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    # foreach: one multi-tensor op per update term instead of a few ops per parameter tensor.
    # PyTorch picks it by default only on GPUs, but a supernet's ~1400 small tensors make the
    # per-tensor loop thousands of dispatches a step on the CPU too; the arithmetic is the same.
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               weight_decay=weight_decay, foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, foreach=True)
    raise RecipeError(f"optimizer {name!r} is not one of sgd, adamw.")


# How an optimizer computes its update, not what it computes: these come from the optimizer built
# for this run, never from a checkpoint.
_IMPLEMENTATION_KEYS = ("foreach", "fused")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimizer's own implementation choice
    (``foreach``, ``fused``).  PyTorch restores every saved group key, so a run saved by an optimizer
    on the per-tensor path (``foreach`` None, as before ``build_optimizer`` asked for it) would
    resume on it: the same numbers, a slower step."""
    kept = [{k: group[k] for k in _IMPLEMENTATION_KEYS if k in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, keys in zip(optimizer.param_groups, kept):
        group.update(keys)


def optimizer_from_recipe(model: nn.Module, recipe) -> torch.optim.Optimizer:
    # DARTS decays every parameter, BatchNorm's included; so do we.
    return build_optimizer(model.parameters(), recipe.optimizer, lr=recipe.lr, momentum=recipe.momentum,
                           nesterov=recipe.nesterov, weight_decay=recipe.weight_decay, betas=recipe.betas)


class LRSchedule:
    """Sets every param group's lr from the optimizer step count; ``state_dict`` is that count."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, kind: str, base_lr: float, total_steps: int,
                 steps_per_epoch: int, warmup_steps: int = 0, lr_min: float = 0.0, gamma: float = 0.97,
                 step_epochs: float = 1.0) -> None:
        if kind not in ("cosine", "step", "linear", "constant"):
            raise RecipeError(f"schedule {kind!r} is not one of cosine, step, linear, constant.")
        self.optimizer = optimizer
        self.kind = kind
        self.base_lr = base_lr
        self.total_steps = max(1, total_steps)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.warmup_steps = max(0, min(warmup_steps, self.total_steps))
        self.lr_min = lr_min
        self.gamma = gamma
        self.step_epochs = step_epochs
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.base_lr
        if self.kind == "step":
            epoch = step / self.steps_per_epoch
            return self.base_lr * self.gamma ** math.floor(epoch / self.step_epochs + 1e-9)
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "cosine":
            return self.lr_min + (self.base_lr - self.lr_min) * (1 + math.cos(math.pi * t)) / 2
        return self.lr_min + (self.base_lr - self.lr_min) * (1 - t)

    @property
    def lr(self) -> float:
        return self.lr_at(self.step_count)

    def _apply(self) -> None:
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


def schedule_from_recipe(optimizer: torch.optim.Optimizer, recipe, steps_per_epoch: int) -> LRSchedule:
    return LRSchedule(optimizer, kind=recipe.schedule, base_lr=recipe.lr,
                      total_steps=steps_per_epoch * recipe.epochs, steps_per_epoch=steps_per_epoch,
                      warmup_steps=int(round(recipe.warmup_epochs * steps_per_epoch)), lr_min=recipe.lr_min,
                      gamma=recipe.step_gamma, step_epochs=recipe.step_epochs)
