"""Child networks: build a sampled cell as a small NASNet, train it briefly, score it on held-out data.

The paper trains each child for 20 epochs (N=2) on 45,000 CIFAR-10 training images and scores it
on the other 5,000, with a cosine learning rate; the reward is that held-out accuracy.  Here the
network is :class:`~nasnetzoo.models.nasnet.NASNet` with the CIFAR stem, trained by the retrain
engine's :class:`~nasnetzoo.train.engine.Trainer` with ScheduledDropPath (the drop probability
rises linearly with the optimizer step and is scaled by each cell's depth).  The held-out images
come from the training set (a fixed split); the test set is never seen.

:func:`train_child` is a plain top-level function of picklable arguments, so a process pool or a
Ray task can run it.  Each worker process loads the dataset once and keeps it.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import NasNetZooError, first_line

DATA_SPLIT_SEED = 20170721   # fixed: every child sees the same held-out images


@dataclass(frozen=True)
class ChildConfig:
    """How every child is built and trained (a recipe's ``child`` section)."""

    dataset: str = "cifar10"       # cifar10 | cifar100 | digits (embedded)
    data_dir: str = "data"
    download: bool = True
    image_size: int = 32           # digits only: upsampled size
    held_out: int = 5000           # training images kept aside for the reward (the paper: 5,000)
    crop_padding: int = 4
    hflip: bool = True
    N: int = 2                     # normal cells per stage (the paper's search: N=2)
    F: int = 32                    # filters of the first stage (not stated in the paper)
    stem_multiplier: float = 3.0
    reduction: str = "cell"        # cell: an extra reduction cell between stages (NASNet); stride: the stage's first cell strided (PNASNet)
    skip_reduction_layer_input: bool = False   # TF-slim's flag (PNASNet sets it)
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.05
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0
    drop_path: float = 0.0         # ScheduledDropPath's final probability (0: off)
    max_steps_per_epoch: int = 0   # cut epochs short (smoke runs)
    device: str = "auto"           # auto: the GPU a worker was given, else the CPU
    amp: str = "auto"              # auto: bf16 autocast on a GPU
    channels_last: str = "auto"    # auto|on: NHWC (faster on GPUs and on the CPU: 1.2x for the smoke children); off
    threads: int = 0               # CPU threads per child (0: PyTorch's default)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ChildJob:
    index: int                     # the child's number in the search (0, 1, 2, ...)
    genotype: dict                 # Genotype.to_dict()
    config: ChildConfig
    seed: int


@dataclass
class ChildResult:
    index: int
    reward: float                  # held-out accuracy as a fraction
    val_acc: float                 # the same in %
    train_acc: float
    params: int
    seconds: float
    worker: dict = field(default_factory=dict)   # pid, host, device (and Ray's task id under Ray)
    error: str = ""                # why the child failed (reward 0); empty when it trained

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------ data
_DATA: dict = {}


def child_data(config: ChildConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple, tuple, int]:
    """``(train_x, train_y, held_x, held_y, mean, std, num_classes)`` from the training split, cached."""
    key = (config.dataset, config.data_dir, config.image_size, config.held_out)
    if key in _DATA:
        return _DATA[key]
    from ...data.datasets import (MEAN_STD, NUM_CLASSES, cifar_dataset, cifar_tensors, digits_mean_std,
                               digits_tensors)

    if config.dataset == "digits":
        images, labels, _, _ = digits_tensors(config.image_size)   # the fixed train split only
        mean, std = digits_mean_std(images)
    elif config.dataset in ("cifar10", "cifar100"):
        ds = cifar_dataset(config.dataset, config.data_dir, True, config.download)
        images, labels = cifar_tensors(ds)
        mean, std = MEAN_STD[config.dataset]
    else:
        raise NasNetZooError(f"child dataset {config.dataset!r} is not cifar10, cifar100 or digits.")
    if not 0 < config.held_out < len(labels):
        raise NasNetZooError(f"child.held_out = {config.held_out} must be between 1 and {len(labels) - 1} "
                             f"({config.dataset} has {len(labels)} training images).")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DATA_SPLIT_SEED))
    train, held = order[:-config.held_out], order[-config.held_out:]
    _DATA[key] = (images[train], labels[train], images[held], labels[held], mean, std,
                  NUM_CLASSES[config.dataset])
    return _DATA[key]


def _device(config: ChildConfig) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _worker_info(device: torch.device) -> dict:
    info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "device": str(device)}
    try:
        import ray

        if ray.is_initialized() and ray.get_runtime_context().get_task_id():
            info["ray_task_id"] = ray.get_runtime_context().get_task_id()
    except Exception:   # no Ray, or not inside a Ray worker
        pass
    return info


# ------------------------------------------------------------------------ training
def build_child(genotype: dict, config: ChildConfig, num_classes: int) -> torch.nn.Module:
    from ...models.nasnet import NASNet

    return NASNet(genotype, N=config.N, F=config.F, stem="cifar", stem_multiplier=config.stem_multiplier,
                  num_classes=num_classes, img_size=config.image_size, reduction=config.reduction,
                  skip_reduction_layer_input=config.skip_reduction_layer_input)


def train_child(job: ChildJob) -> ChildResult:
    """Train one child and return its reward; deterministic on the CPU for a given ``job.seed``.

    A child that fails in PyTorch (out of memory on its GPU, say) scores 0 with ``error`` set, so one
    bad child does not end a search of thousands; configuration errors (``NasNetZooError``) raise.
    """
    start = time.perf_counter()
    try:
        return _train_child(job, start)
    except NasNetZooError:
        raise
    except (RuntimeError, MemoryError) as err:   # torch.OutOfMemoryError is a RuntimeError
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        device = _device(job.config)
        return ChildResult(job.index, 0.0, 0.0, 0.0, 0, time.perf_counter() - start, _worker_info(device),
                           error=f"{type(err).__name__}: {first_line(err)}")


def _train_child(job: ChildJob, start: float) -> ChildResult:
    from ...data.augment import BatchAugment
    from ...runs.checkpoint import seed_everything
    from ...data.datasets import TensorLoader
    from ...train.engine import DropPathSchedule, Trainer
    from ...runs.optim import LRSchedule, build_optimizer

    config = job.config
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _device(config)
    xtr, ytr, xho, yho, mean, std, num_classes = child_data(config)
    seed_everything(job.seed)
    model = build_child(job.genotype, config, num_classes)
    params = sum(p.numel() for p in model.parameters())
    augment = BatchAugment(mean, std, crop_padding=config.crop_padding, hflip=config.hflip)
    train = TensorLoader(xtr.to(device), ytr.to(device), config.batch_size, augment=augment, train=True,
                         seed=job.seed)
    held = TensorLoader(xho.to(device), yho.to(device), max(config.batch_size, 256), augment=augment, train=False)
    steps = len(train) if not config.max_steps_per_epoch else min(len(train), config.max_steps_per_epoch)
    if steps == 0:
        raise NasNetZooError(f"child batch_size {config.batch_size} exceeds the {len(ytr)} child training images.")
    optimizer = build_optimizer(model.parameters(), "sgd", lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    schedule = LRSchedule(optimizer, kind="cosine", base_lr=config.lr, total_steps=config.epochs * steps,
                          steps_per_epoch=steps, lr_min=config.lr_min)
    amp = device.type == "cuda" and config.amp in ("auto", "bf16")
    trainer = Trainer(model, optimizer, schedule, device=device, amp=amp, channels_last=config.channels_last != "off",
                      grad_clip=config.grad_clip,
                      drop_path=DropPathSchedule(config.drop_path, "scheduled", config.epochs, steps))
    stats: dict = {"train_acc": 0.0}
    for _ in range(config.epochs):
        stats = trainer.train_epoch(train, max_steps=steps)
    val = trainer.evaluate(held)
    return ChildResult(job.index, val["top1"] / 100.0, val["top1"], stats["train_acc"], params,
                       time.perf_counter() - start, _worker_info(device))


__all__ = ["ChildConfig", "ChildJob", "ChildResult", "build_child", "child_data", "train_child"]
