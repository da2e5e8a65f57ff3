"""The per-class ImageNet subsets of PC-DARTS's ImageNet search (10% of each class's training
images for the weights, 2.5% for the architecture), made as folders of symbolic links."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Union

from ..errors import NasNetZooError

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}


def make_imagenet_subset(src: Union[str, Path], dst: Union[str, Path], *, train_fraction: float = 0.1,
                         arch_fraction: float = 0.025, seed: int = 0, copy: bool = False) -> dict:
    """Write ``dst/train/<class>/`` and ``dst/arch/<class>/`` from ``src/train/<class>/`` (ImageFolder
    layout).  Each class contributes ``round(fraction * n)`` images (at least one) to each split,
    disjointly, chosen by ``seed``.  Returns the image counts."""
    src, dst = Path(src), Path(dst)
    root = src / "train" if (src / "train").is_dir() else src
    classes = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise NasNetZooError(f"{str(root)!r} holds no class folders; pass the ImageNet folder whose train/ has "
                             "one sub-folder of images per class.")
    if not (0 < train_fraction and 0 < arch_fraction and train_fraction + arch_fraction <= 1):
        raise NasNetZooError(f"fractions {train_fraction} + {arch_fraction} must be positive and sum to at most 1.")
    if (dst / "train").exists() or (dst / "arch").exists():
        raise NasNetZooError(f"{dst} already holds a subset (train/ or arch/); choose another destination.")
    rng = random.Random(seed)
    counts = {"classes": len(classes), "train": 0, "arch": 0}
    for cls in classes:
        images = sorted(p for p in cls.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        rng.shuffle(images)
        n_train = max(1, round(train_fraction * len(images)))
        n_arch = max(1, round(arch_fraction * len(images)))
        for split, chosen in (("train", images[:n_train]), ("arch", images[n_train:n_train + n_arch])):
            folder = dst / split / cls.name
            folder.mkdir(parents=True, exist_ok=True)
            for image in chosen:
                target = folder / image.name
                if copy:
                    shutil.copy2(image, target)
                else:
                    os.symlink(image.resolve(), target)
            counts[split] += len(chosen)
    return counts
