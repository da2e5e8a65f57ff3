"""Parameters and multiply-accumulates, counted one way for the whole zoo.

The convention (the one the NAS papers' "mult-adds" use and the reference figures follow):

* MACs are the multiply-accumulates of convolutions and linear layers, counted by PyTorch's own
  FLOP counter (``torch.utils.flop_counter``; one MAC = two FLOPs) on one image in eval mode.
  BatchNorm, activations, pooling, additions and bias terms are not counted.
* The auxiliary head is excluded from both counts: it runs only in training and is discarded.

Where a paper reports a different figure (DARTS-family ImageNet models report ~574M where conv +
linear counting gives ~530M), the registry keeps both and ``nasnetzoo info`` says why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .bounds import check_image_size
from .errors import ConfigError

AUX_PREFIX = "auxiliary_head"


@dataclass(frozen=True)
class Profile:
    params: int           # trainable parameters, auxiliary head excluded
    params_with_aux: int  # all parameters
    macs: int             # conv + linear multiply-accumulates for one image
    input_size: tuple[int, int, int]

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def macs_m(self) -> float:
        return self.macs / 1e6


def count_params(model: nn.Module, include_aux: bool = False) -> int:
    return sum(p.numel() for name, p in model.named_parameters()
               if include_aux or not name.startswith(AUX_PREFIX))


def _input_size(model: nn.Module, input_size) -> tuple[int, int, int]:
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        if "input_size" not in cfg:
            raise ConfigError("profile() needs input_size=(C, H, W) for a model without pretrained_cfg.")
        return tuple(cfg["input_size"])
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    size = tuple(int(s) for s in input_size)
    if len(size) == 2:
        size = (getattr(model, "in_chans", 3),) + size
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(f"input_size {input_size!r} is not (C, H, W), (H, W) or an int.")
    check_image_size(size[1:], "input_size")  # one image of 100000x100000 would need 120 GB
    return size


def count_macs(model: nn.Module, input_size: Union[int, Sequence[int], None] = None) -> int:
    size = _input_size(model, input_size)
    was_training = model.training
    model.eval()  # no aux head, no drop path
    try:
        param = next(model.parameters(), None)
        x = torch.zeros((1,) + size, device=param.device if param is not None else "cpu")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def profile(model: nn.Module, input_size: Union[int, Sequence[int], None] = None) -> Profile:
    """Params and MACs of ``model`` at ``input_size`` ((C, H, W), (H, W) or an int; defaults to the
    registry's input size for models built by ``nasnetzoo.load``)."""
    size = _input_size(model, input_size)
    return Profile(count_params(model), count_params(model, include_aux=True),
                   count_macs(model, size), size)
