"""Search data: the training set split into a weight half and an architecture half (DARTS's
``train_portion``), both augmented like the retraining data.  The held-out half is also where the
search reports its accuracy; the test set is never seen."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from ..data.augment import BatchAugment
from ..data.datasets import (MEAN_STD, NUM_CLASSES, EpochDataLoader, TensorLoader, cifar_dataset, cifar_tensors,
                          digits_mean_std, digits_tensors, imagenet_dataset, use_device_data, _imagenet_transforms)


@dataclass
class SearchData:
    weights: Any      # loader of the weight half
    arch: Any         # loader of the architecture half
    num_classes: int
    description: str

    def set_epoch(self, epoch: int) -> None:
        self.weights.set_epoch(epoch)
        self.arch.set_epoch(epoch)


def build_search_data(recipe, *, micro_batch: int, device: torch.device, rank: int = 0, world: int = 1) -> SearchData:
    name = recipe.dataset
    if name == "imagenet":
        return _imagenet(recipe, micro_batch, device, rank, world)
    if name == "digits":
        images, labels, _, _ = digits_tensors(recipe.image_size)
        mean, std = digits_mean_std(images)
        desc = f"digits (scikit-learn, {recipe.image_size}px)"
    else:
        ds = cifar_dataset(name, recipe.data_dir, True, recipe.download)
        images, labels = cifar_tensors(ds)
        mean, std = MEAN_STD[name]
        desc = f"{name} (torchvision)"
    where = device if use_device_data(name, "auto", device) else torch.device("cpu")
    split = int(len(labels) * recipe.train_portion)
    augment = BatchAugment(mean, std, crop_padding=recipe.crop_padding, hflip=recipe.hflip)

    def loader(part: slice, seed: int) -> TensorLoader:
        return TensorLoader(images[part].to(where), labels[part].to(where), micro_batch, augment=augment,
                            train=True, rank=rank, world=world, seed=seed)

    desc += f", {split} images train the weights, {len(labels) - split} the architecture"
    return SearchData(loader(slice(0, split), recipe.seed), loader(slice(split, None), recipe.seed + 1),
                      NUM_CLASSES[name], desc)


def _imagenet(recipe, micro_batch, device, rank, world) -> SearchData:
    """``data_dir/train`` and ``data_dir/arch`` as made by ``nasnetzoo imagenet-subset`` (PC-DARTS's
    per-class 10% / 2.5%); without ``arch/``, ``train/`` is split by ``train_portion``."""
    mean, std = MEAN_STD["imagenet"]
    train_tf, _ = _imagenet_transforms(mean, std, recipe.image_size, recipe.hflip, 0.0)
    pin = device.type == "cuda"

    def loader(dataset, seed):
        return EpochDataLoader(dataset, micro_batch, train=True, workers=recipe.workers, rank=rank,
                               world=world, seed=seed, pin_memory=pin)

    ds = imagenet_dataset(recipe.data_dir, "train", train_tf)
    if (Path(recipe.data_dir) / "arch").is_dir():
        arch = imagenet_dataset(recipe.data_dir, "arch", train_tf)
        weights_part, arch_part = ds, arch
        desc = f"{len(ds)} images train the weights, {len(arch)} (arch/) the architecture"
    else:
        split = int(len(ds) * recipe.train_portion)
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(recipe.seed)).tolist()
        weights_part, arch_part = Subset(ds, order[:split]), Subset(ds, order[split:])
        desc = f"{split} images train the weights, {len(ds) - split} the architecture"
    return SearchData(loader(weights_part, recipe.seed), loader(arch_part, recipe.seed + 1), len(ds.classes),
                      f"imagenet subset (ImageFolder {recipe.data_dir}, {len(ds.classes)} classes), {desc}")
