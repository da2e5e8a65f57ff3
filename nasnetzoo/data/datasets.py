"""Datasets and loaders: CIFAR-10/100 (torchvision), ImageNet (ImageFolder), embedded digits.

Two kinds of loader, both iterables of ``(images, labels)`` with ``len()`` and ``set_epoch(e)``:

* :class:`EpochDataLoader` wraps a torchvision dataset in a ``DataLoader`` with a
  ``DistributedSampler`` (also for one process, so the order of an epoch depends only on the seed
  and the epoch: a resumed run sees the same batches) and per-epoch worker seeds.
* :class:`TensorLoader` holds a whole small dataset as one tensor on the training device (a GPU for
  CIFAR, the CPU for digits) and augments batches there (:class:`~.augment.BatchAugment`), with no
  DataLoader workers.  Shards exactly like ``DistributedSampler``.

The embedded dataset, ``digits``, is scikit-learn's copy of the UCI "Optical Recognition of
Handwritten Digits" test set: 1,797 real 8x8 grey-scale scans of handwritten digits (10 classes)
shipped inside the scikit-learn wheel, so a smoke run needs no download.  Images are upsampled
bilinearly to ``image_size`` (32 by default) and repeated to 3 channels; the split is fixed: per
class, a seeded 20 % goes to validation (1,438 train / 359 val images).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..errors import NasNetZooError
from .augment import BatchAugment, Cutout, describe

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "digits": 10}
MEAN_STD = {
    # DARTS utils._data_transforms_cifar10 / cifar100
    "cifar10": ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class DataError(NasNetZooError):
    """A dataset that cannot be found, read or downloaded."""


@dataclass
class DataBundle:
    train: Optional[Any]   # a loader, or None for evaluation-only bundles
    val: Any
    num_classes: int
    mean: tuple
    std: tuple
    train_size: int
    val_size: int
    description: str


# ---------------------------------------------------------------------------- samplers
class ShardSampler(Sampler):
    """Evaluation sharding without padding: rank r takes items r, r + world, ... (sums are reduced)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def train_indices(n: int, *, seed: int, epoch: int, rank: int, world: int, shuffle: bool = True) -> list[int]:
    """This rank's share of an epoch, exactly as ``DistributedSampler`` orders it."""
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


# ---------------------------------------------------------------------------- loaders
class TensorLoader:
    """Batches of an in-memory dataset, indexed and augmented on the tensors' device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, augment: BatchAugment,
                 train: bool, rank: int = 0, world: int = 1, seed: int = 0, drop_last: Optional[bool] = None) -> None:
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.augment = augment
        self.train = train
        self.rank, self.world, self.seed = rank, world, seed
        self.drop_last = train if drop_last is None else drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        n = len(self.labels)
        if self.train:
            return train_indices(n, seed=self.seed, epoch=self.epoch, rank=self.rank, world=self.world)
        return list(range(self.rank, n, self.world))

    def __len__(self) -> int:
        n = len(self.labels)
        per_rank = math.ceil(n / self.world) if self.train else len(range(self.rank, n, self.world))
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = torch.tensor(self._indices(), dtype=torch.long, device=self.images.device)
        for i in range(len(self)):
            take = idx[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.augment(self.images[take], train=self.train), self.labels[take]


def _seed_worker(worker_id: int) -> None:
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class EpochDataLoader:
    """A ``DataLoader`` whose order and worker seeds are functions of (seed, epoch, rank)."""

    def __init__(self, dataset: Dataset, batch_size: int, *, train: bool, workers: int, rank: int = 0,
                 world: int = 1, seed: int = 0, pin_memory: bool = False) -> None:
        self.dataset = dataset
        self.seed, self.rank = seed, rank
        self.sampler = (DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
                        if train else ShardSampler(len(dataset), rank, world))
        self.generator = torch.Generator()
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
                                 pin_memory=pin_memory, drop_last=train, generator=self.generator,
                                 worker_init_fn=_seed_worker if workers > 0 else None,
                                 persistent_workers=False)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)
        self.generator.manual_seed((self.seed * 1_000_003 + epoch * 1009 + self.rank) % 2**63)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


# ---------------------------------------------------------------------------- datasets
def digits_tensors(image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits, upsampled to ``image_size`` x ``image_size`` RGB in [0, 1], fixed split.

    Returns ``(train_images, train_labels, val_images, val_labels)``.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the embedded 'digits' dataset comes from scikit-learn, which is not installed; "
                        "pip install scikit-learn (or nasnetzoo[train]).") from None
    import numpy as np

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).div_(16.0).unsqueeze(1)   # (N, 1, 8, 8)
    labels = torch.tensor(digits.target, dtype=torch.long)
    if image_size != 8:
        images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                                 align_corners=False).clamp_(0.0, 1.0)
    images = images.expand(-1, 3, -1, -1).contiguous()
    rng = np.random.RandomState(DIGITS_SPLIT_SEED)
    val_mask = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(digits.target == c)
        val_mask[rng.permutation(members)[:round(len(members) * DIGITS_VAL_FRACTION)]] = True
    val = torch.from_numpy(val_mask)
    return images[~val], labels[~val], images[val], labels[val]


def digits_mean_std(train_images: torch.Tensor) -> tuple[tuple, tuple]:
    mean = train_images.mean(dim=(0, 2, 3))
    std = train_images.std(dim=(0, 2, 3))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def _cifar_class(dataset: str):
    from torchvision import datasets

    return datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100


def cifar_dataset(dataset: str, data_dir: str, train: bool, download: bool, transform=None):
    """torchvision's CIFAR-10/100 (the ``cifar-10-batches-py`` / ``cifar-100-python`` pickles)."""
    cls = _cifar_class(dataset)
    try:
        return cls(root=data_dir, train=train, download=download, transform=transform)
    except RuntimeError as err:
        folder = "cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"
        raise DataError(f"{dataset} not found in data_dir={data_dir!r} (expected {folder}/ there): {err}. "
                        "Set download: true in the recipe (nasnetzoo eval: --download) or point "
                        "data_dir at the folder that holds it.") from None
    except OSError as err:  # URLError is an OSError: no network
        raise DataError(f"could not download {dataset} into {data_dir!r} ({err}); download it on a machine "
                        "with network access and set data_dir, with download: false.") from None


def imagenet_dataset(data_dir: str, split: str, transform):
    from torchvision import datasets

    root = Path(data_dir) / split
    if not root.is_dir():
        raise DataError(f"ImageNet split folder {str(root)!r} does not exist; data_dir must hold train/ and "
                        "val/ in ImageFolder layout (one sub-folder of images per class).")
    return datasets.ImageFolder(str(root), transform=transform, loader=load_image)


def load_image(path: str):
    """torchvision's image loader, with an unreadable file (a corrupt JPEG) named in one line."""
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except (OSError, SyntaxError, ValueError) as err:  # PIL: UnidentifiedImageError, truncated file
        raise DataError(f"image {path!r} cannot be read ({str(err).splitlines()[0] if str(err) else type(err).__name__});"
                        " replace or remove the file.") from None


def cifar_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision CIFAR dataset as ``(uint8 images (N, 3, 32, 32), int64 labels)``."""
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()   # uint8 (N, 3, 32, 32)
    return images, torch.tensor(ds.targets, dtype=torch.long)


def _cifar_transforms(mean, std, crop_padding: int, hflip: bool, cutout_len: int):
    from torchvision import transforms as T

    train = []
    if crop_padding:
        train.append(T.RandomCrop(32, padding=crop_padding))
    if hflip:
        train.append(T.RandomHorizontalFlip())
    train += [T.ToTensor(), T.Normalize(mean, std)]
    if cutout_len:
        train.append(Cutout(cutout_len))
    return T.Compose(train), T.Compose([T.ToTensor(), T.Normalize(mean, std)])


def _imagenet_transforms(mean, std, size: int, hflip: bool, jitter: float):
    from torchvision import transforms as T

    train = [T.RandomResizedCrop(size)]
    if hflip:
        train.append(T.RandomHorizontalFlip())
    if jitter:
        train.append(T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter / 2))
    train += [T.ToTensor(), T.Normalize(mean, std)]
    resize = int(round(size / 0.875))
    val = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    return T.Compose(train), val


def use_device_data(dataset: str, choice: str, device: torch.device) -> bool:
    if dataset == "imagenet":
        if choice == "on":
            from ..recipe_file import RecipeError

            raise RecipeError("data_on_device: on is for small datasets (cifar10, cifar100, digits); ImageNet "
                              "streams from disk: set data_on_device: auto.")
        return False
    if choice != "auto":
        return choice == "on"
    return dataset == "digits" or device.type == "cuda"


def build_data(recipe, *, micro_batch: int, device: torch.device, rank: int = 0, world: int = 1,
               train: bool = True, eval_batch: Optional[int] = None) -> DataBundle:
    """The loaders a recipe asks for; ``micro_batch`` is this process's batch per forward pass."""
    name = recipe.dataset
    eval_batch = eval_batch or max(micro_batch, 64)
    on_device = use_device_data(name, recipe.data_on_device, device)
    seed = recipe.seed
    if name == "digits":
        xtr, ytr, xva, yva = digits_tensors(recipe.image_size)
        mean, std = digits_mean_std(xtr)
        return _tensor_bundle(recipe, xtr, ytr, xva, yva, mean, std, micro_batch, eval_batch, device,
                              rank, world, train, on_device,
                              f"digits (scikit-learn, {recipe.image_size}px)")
    if name in ("cifar10", "cifar100"):
        mean, std = MEAN_STD[name]
        if on_device:
            tr = cifar_dataset(name, recipe.data_dir, True, recipe.download) if train else None
            va = cifar_dataset(name, recipe.data_dir, False, recipe.download)
            xtr, ytr = cifar_tensors(tr) if tr is not None else (None, None)
            xva, yva = cifar_tensors(va)
            return _tensor_bundle(recipe, xtr, ytr, xva, yva, mean, std, micro_batch, eval_batch, device,
                                  rank, world, train, True, f"{name} (torchvision, on {device.type})")
        train_tf, val_tf = _cifar_transforms(mean, std, recipe.crop_padding, recipe.hflip, recipe.cutout)
        tr = cifar_dataset(name, recipe.data_dir, True, recipe.download, train_tf) if train else None
        va = cifar_dataset(name, recipe.data_dir, False, recipe.download, val_tf)
        desc = f"{name} (torchvision), aug: " + describe(recipe.crop_padding, recipe.hflip, recipe.cutout)
    else:
        mean, std = MEAN_STD["imagenet"]
        train_tf, val_tf = _imagenet_transforms(mean, std, recipe.image_size, recipe.hflip, recipe.color_jitter)
        tr = imagenet_dataset(recipe.data_dir, "train", train_tf) if train else None
        va = imagenet_dataset(recipe.data_dir, "val", val_tf)
        desc = (f"imagenet (ImageFolder {recipe.data_dir}), aug: RandomResizedCrop({recipe.image_size})"
                + (" + h-flip" if recipe.hflip else "")
                + (f" + ColorJitter({recipe.color_jitter})" if recipe.color_jitter else ""))
    pin = device.type == "cuda"
    workers = recipe.workers
    train_loader = (EpochDataLoader(tr, micro_batch, train=True, workers=workers, rank=rank, world=world,
                                    seed=seed, pin_memory=pin) if tr is not None else None)
    val_loader = EpochDataLoader(va, eval_batch, train=False, workers=workers, rank=rank, world=world,
                                 seed=seed, pin_memory=pin)
    return DataBundle(train_loader, val_loader, NUM_CLASSES[name], tuple(mean), tuple(std),
                      len(tr) if tr is not None else 0, len(va), desc)


def _tensor_bundle(recipe, xtr, ytr, xva, yva, mean, std, micro_batch, eval_batch, device, rank, world,
                   train, on_device, desc) -> DataBundle:
    where = device if on_device else torch.device("cpu")
    aug = BatchAugment(mean, std, crop_padding=recipe.crop_padding, hflip=recipe.hflip, cutout=recipe.cutout)
    train_loader = None
    if train and xtr is not None:
        train_loader = TensorLoader(xtr.to(where), ytr.to(where), micro_batch, augment=aug, train=True,
                                    rank=rank, world=world, seed=recipe.seed)
    val_loader = TensorLoader(xva.to(where), yva.to(where), eval_batch, augment=aug, train=False,
                              rank=rank, world=world, seed=recipe.seed)
    desc += ", aug: " + describe(recipe.crop_padding, recipe.hflip, recipe.cutout)
    return DataBundle(train_loader, val_loader, NUM_CLASSES[recipe.dataset], tuple(mean), tuple(std),
                      len(ytr) if (train and ytr is not None) else 0, len(yva), desc)
