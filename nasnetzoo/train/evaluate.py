"""Evaluate weights on a dataset: top-1/top-5, with the paper's figure beside where the zoo has one."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from ..runs import distributed as D
from ..weights.format import read_metadata, saved_image_size
from .artifacts import load_trained
from ..data.datasets import build_data
from .engine import evaluate_model
from .recipe import Recipe, RecipeError


@dataclass
class EvalResult:
    arch: str
    dataset: str
    top1: float
    top5: float
    loss: float
    count: int
    paper_top1: Optional[float] = None
    paper_top5: Optional[float] = None
    paper_source: str = ""

    def line(self) -> str:
        text = (f"{self.arch} on {self.dataset} ({self.count} images): top-1 {self.top1:.2f}%  "
                f"top-5 {self.top5:.2f}%")
        if self.paper_top1 is not None:
            paper = f"top-1 {self.paper_top1:.2f}%"
            if self.paper_top5 is not None:
                paper += f"  top-5 {self.paper_top5:.2f}%"
            text += f"  | paper: {paper}"
        else:
            text += "  | paper: no figure for this dataset"
        return text


def paper_figures(model: torch.nn.Module, dataset: str) -> tuple[Optional[float], Optional[float], str]:
    """The paper's top-1/top-5 accuracy (%) for ``model`` on ``dataset``, from the registry."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("dataset") != dataset:
        return None, None, ""
    reported = cfg.get("reported") or {}
    top1 = 100.0 - reported["top1_err"] if "top1_err" in reported else None
    top5 = 100.0 - reported["top5_err"] if "top5_err" in reported else None
    return top1, top5, str(reported.get("source", ""))


def evaluate_weights(arch: str, weights: Union[str, Path], *, data: str = "cifar10", data_dir: str = "data",
                     batch_size: int = 256, image_size: Optional[int] = None, download: bool = False,
                     workers: int = 4, device: str = "auto", overrides: Optional[Mapping[str, Any]] = None
                     ) -> EvalResult:
    """Load ``weights`` into ``arch`` (config from the file's metadata, then ``overrides``) and
    measure top-1/top-5 on the validation split of ``data``."""
    if data not in ("cifar10", "cifar100", "imagenet", "digits"):
        raise RecipeError(f"--data {data!r} is not one of cifar10, cifar100, imagenet, digits.")
    weights = Path(weights)
    info = D.setup(device)
    try:
        model = load_trained(arch, weights, **dict(overrides or {}))
        if image_size is None:  # the weights' own metadata, never the run folder around them
            image_size = saved_image_size(read_metadata(weights), weights)
        if image_size is None:
            image_size = 224 if data == "imagenet" else 32
        recipe = Recipe(dataset=data, data_dir=data_dir, download=download, image_size=image_size,
                        workers=workers, data_on_device="off" if data == "imagenet" else "auto")
        bundle = build_data(recipe, micro_batch=batch_size, device=info.device, rank=info.rank,
                            world=info.world, train=False, eval_batch=batch_size)
        model_classes = getattr(model, "num_classes", bundle.num_classes)
        if model_classes != bundle.num_classes:
            raise RecipeError(f"{weights} has a {model_classes}-class head but {data} has {bundle.num_classes} "
                              "classes; evaluate on the dataset the weights were trained for.")
        model = model.to(info.device)
        amp = info.device.type == "cuda"
        metrics = evaluate_model(model, bundle.val, device=info.device, channels_last=amp,
                                 autocast=(lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else
                                 contextlib.nullcontext)
        top1, top5, source = paper_figures(model, data)
        return EvalResult(str(arch), data, metrics["top1"], metrics["top5"], metrics["loss"], metrics["count"],
                          top1, top5, source)
    finally:
        if info.distributed:
            D.teardown()
