"""The training engine: one optimizer step (:meth:`Trainer.train_step`), an epoch, an evaluation.

``Trainer`` owns a model, its optimizer and schedule, and the speed and regularisation options
(bf16 autocast, channels_last, ``torch.compile``, gradient accumulation, clipping, label
smoothing, auxiliary-head weight, drop-path schedule, EMA, DDP).  It knows nothing of recipes,
files or progress bars, so a search loop can call ``train_step`` on its train split and then do
its own architecture step on the validation split::

    trainer = Trainer(model, optimizer, schedule, device=device, grad_clip=5.0)
    for images, labels in loader:
        stats = trainer.train_step([(images, labels)])   # forward, backward, clip, step, schedule

The model's forward may return logits or ``(logits, aux_logits)`` (zoo networks with an
auxiliary head, in training mode); the loss is ``CE(logits) + aux_weight * CE(aux_logits)``.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch
from torch import nn

from ..runs.distributed import DistInfo, all_reduce_sum, unwrap, wrap_model
from ..runs.optim import load_optimizer_state


# ---------------------------------------------------------------------------- drop path
@dataclass
class DropPathSchedule:
    """The drop-path probability over training.

    ``linear``: DARTS, ``p * epoch / epochs`` set at the start of each epoch (0 in the first).
    ``scheduled``: NASNet's ScheduledDropPath, ``p * step / total_steps`` updated every step; the
    per-cell depth factor ``(cell + 1) / cells`` lives in the networks' DropPath modules.
    ``constant``: ``p`` throughout.
    """

    max_prob: float
    kind: str = "linear"
    epochs: int = 1
    steps_per_epoch: int = 1

    def value(self, epoch: int, step: int) -> float:
        if self.max_prob <= 0:
            return 0.0
        if self.kind == "constant":
            return self.max_prob
        if self.kind == "linear":
            return self.max_prob * epoch / max(1, self.epochs)
        total = max(1, self.epochs * self.steps_per_epoch)
        return self.max_prob * min(1.0, step / total)


def set_drop_path(model: nn.Module, p: float) -> None:
    model = unwrap(model)
    if hasattr(type(model), "drop_path_prob") or hasattr(model, "drop_path_prob"):
        model.drop_path_prob = p


# ---------------------------------------------------------------------------- losses
def split_output(output: Any) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    if isinstance(output, (tuple, list)):
        return output[0], (output[1] if len(output) > 1 else None)
    return output, None


def classification_loss(output: Any, target: torch.Tensor, criterion: nn.Module,
                        aux_weight: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, logits)``: CE on the logits plus ``aux_weight`` x CE on the auxiliary logits."""
    logits, aux = split_output(output)
    loss = criterion(logits.float(), target)
    if aux is not None and aux_weight > 0:
        loss = loss + aux_weight * criterion(aux.float(), target)
    return loss, logits


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[torch.Tensor]:
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hits = pred.eq(target[:, None])
    return [hits[:, :min(k, kmax)].any(dim=1).sum() for k in ks]


class StepInfo(dict):
    """``step``, ``images``, ``lr`` at once; ``loss`` and ``acc`` (running epoch averages of this
    process, in %) computed from device tensors on first access, so a progress bar that reads
    them twice a second does not synchronise the GPU every step."""

    def __init__(self, step: int, images: int, lr: float, totals: torch.Tensor) -> None:
        super().__init__(step=step, images=images, lr=lr)
        self._totals = totals

    def __missing__(self, key: str):
        if key not in ("loss", "acc"):
            raise KeyError(key)
        loss_sum, correct, count = (float(v) for v in self._totals.tolist())
        self["loss"], self["acc"] = loss_sum / max(count, 1.0), 100.0 * correct / max(count, 1.0)
        return self[key]


# ---------------------------------------------------------------------------- trainer
class Trainer:
    """Steps, epochs and evaluation for one model; see the module docstring."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any = None, *,
                 device: torch.device = torch.device("cpu"), amp: bool = False,
                 channels_last: bool = False, compile: bool = False, grad_clip: float = 0.0,
                 accum_steps: int = 1, label_smoothing: float = 0.0, aux_weight: float = 0.4,
                 ema_decay: float = 0.0, drop_path: Optional[DropPathSchedule] = None,
                 dist: Optional[DistInfo] = None, sync_bn: bool = False) -> None:
        self.device = torch.device(device)
        self.dist = dist or DistInfo(device=self.device)
        self.amp_dtype = torch.bfloat16 if amp else None
        self.channels_last = channels_last
        self.grad_clip = grad_clip
        self.accum_steps = max(1, accum_steps)
        self.aux_weight = aux_weight
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.eval_criterion = nn.CrossEntropyLoss(reduction="sum")
        self.drop_path = drop_path
        self.optimizer = optimizer
        self.schedule = schedule
        self.step = 0          # optimizer steps taken
        self.epoch = 0         # epochs completed

        model = model.to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model                                  # the plain module (weights, eval, saving)
        wrapped = wrap_model(model, self.dist, sync_bn)     # DDP when several processes
        self.module = torch.compile(wrapped) if compile else wrapped   # what training calls
        self.ema = None
        if ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)

    # ------------------------------------------------------------ helpers
    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels

    def current_drop_path(self) -> float:
        return unwrap(self.model).drop_path_prob if hasattr(unwrap(self.model), "drop_path_prob") else 0.0

    def _apply_drop_path(self) -> None:
        if self.drop_path is not None:
            set_drop_path(self.model, self.drop_path.value(self.epoch, self.step))

    # ------------------------------------------------------------ one step
    def train_step(self, micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """Forward/backward every micro-batch (accumulating), clip, step, advance schedules.

        Returns device tensors: ``loss_sum`` (sum over images), ``correct``, ``count``.
        """
        self.module.train()
        if self.drop_path is not None and self.drop_path.kind == "scheduled":
            self._apply_drop_path()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        count = 0
        n_micro = len(micro_batches)
        ddp = isinstance(self.module, nn.parallel.DistributedDataParallel) or \
            isinstance(getattr(self.module, "_orig_mod", None), nn.parallel.DistributedDataParallel)
        for i, (images, labels) in enumerate(micro_batches):
            images, labels = self.prepare(images, labels)
            sync = contextlib.nullcontext()
            if ddp and i < n_micro - 1:
                ddp_module = self.module if isinstance(self.module, nn.parallel.DistributedDataParallel) \
                    else self.module._orig_mod
                sync = ddp_module.no_sync()
            with sync:
                with self.autocast():
                    output = self.module(images)
                loss, logits = classification_loss(output, labels, self.criterion, self.aux_weight)
                (loss / n_micro).backward()
            loss_sum += loss.detach() * labels.shape[0]
            correct += logits.detach().argmax(1).eq(labels).sum()
            count += labels.shape[0]
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.schedule is not None:
            self.schedule.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return {"loss_sum": loss_sum, "correct": correct, "count": count}

    # ------------------------------------------------------------ one epoch
    def train_epoch(self, loader: Iterable, *, max_steps: int = 0,
                    on_step: Optional[Callable[[dict], None]] = None) -> dict:
        """One pass over ``loader`` (micro-batches grouped by ``accum_steps``).

        ``on_step`` gets a :class:`StepInfo` after every optimizer step; its ``loss``/``acc`` (this
        process's running epoch averages) cost a host-device sync only when read.  Returns the
        epoch's averages over all processes.
        """
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch)
        if self.drop_path is not None and self.drop_path.kind != "scheduled":
            self._apply_drop_path()
        totals = torch.zeros(3, device=self.device, dtype=torch.float64)   # loss_sum, correct, count
        group: list = []
        steps = 0
        start = time.perf_counter()
        for batch in loader:
            group.append(batch)
            if len(group) < self.accum_steps:
                continue
            stats = self.train_step(group)
            group = []
            steps += 1
            totals[0] += stats["loss_sum"].double()
            totals[1] += stats["correct"].double()
            totals[2] += stats["count"]
            if on_step is not None:
                on_step(StepInfo(self.step, stats["count"], self.lr, totals.clone()))
            if max_steps and steps >= max_steps:
                break
        elapsed = time.perf_counter() - start
        local_images = float(totals[2])
        all_reduce_sum(totals)
        self.epoch += 1
        n = max(1.0, float(totals[2]))
        return {"train_loss": float(totals[0]) / n, "train_acc": 100.0 * float(totals[1]) / n,
                "steps": steps, "images": int(totals[2]), "epoch_time": elapsed,
                "img_per_s": local_images * self.dist.world / max(elapsed, 1e-9)}

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, loader: Iterable, model: Optional[nn.Module] = None) -> dict:
        """Top-1/top-5 accuracy (%) and mean CE loss over ``loader``, summed over all processes."""
        return evaluate_model(model if model is not None else self.model, loader, device=self.device,
                              autocast=self.autocast, channels_last=self.channels_last,
                              criterion=self.eval_criterion)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "step": self.step, "epoch": self.epoch}
        if self.schedule is not None:
            state["schedule"] = self.schedule.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: Mapping) -> None:
        self.model.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        if self.schedule is not None and "schedule" in state:
            self.schedule.load_state_dict(state["schedule"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: Iterable, *, device: torch.device,
                   autocast: Callable = contextlib.nullcontext, channels_last: bool = False,
                   criterion: Optional[nn.Module] = None) -> dict:
    """Top-1/top-5 accuracy (%) and mean CE of ``model`` over ``loader`` (all processes summed)."""
    criterion = criterion or nn.CrossEntropyLoss(reduction="sum")
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, device=device, dtype=torch.float64)   # loss_sum, top1, top5, count
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits, _ = split_output(model(images))
        logits = logits.float()
        top1, top5 = topk_correct(logits, labels)
        totals[0] += criterion(logits, labels).double()
        totals[1] += top1.double()
        totals[2] += top5.double()
        totals[3] += labels.shape[0]
    all_reduce_sum(totals)
    model.train(was_training)
    n = max(1.0, float(totals[3]))
    return {"loss": float(totals[0]) / n, "top1": 100.0 * float(totals[1]) / n,
            "top5": 100.0 * float(totals[2]) / n, "count": int(totals[3])}


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_speed(recipe, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast?, channels_last?) for this recipe on this device."""
    amp = recipe.amp == "bf16" or (recipe.amp == "auto" and device.type == "cuda")
    # NHWC is the fast layout for cuDNN (tensor cores) and for oneDNN on the CPU alike
    # (benchmarks/train_throughput.py: 1.6-3.4x over NCHW on a Xeon), so "auto" means on.
    cl = recipe.channels_last in ("on", "auto")
    return amp, cl


__all__ = ["DropPathSchedule", "StepInfo", "Trainer", "classification_loss", "configure_determinism", "evaluate_model",
           "resolve_speed", "set_drop_path", "split_output", "topk_correct"]
