"""DARTS-family primitives (DARTS, PC-DARTS, P-DARTS, SNAS, GDAS).

The modules follow the official DARTS ``cnn/operations.py`` (quark0/darts) so that official
checkpoints map by parameter name: ``SepConv``/``DilConv``/``ReLUConvBN`` keep their layers in
``.op`` (an ``nn.Sequential`` with the same indices) and ``FactorizedReduce`` keeps
``.conv_1``/``.conv_2``/``.bn``.  Two deliberate differences, neither of which changes a key:

* ``FactorizedReduce`` pads its shifted branch by one row/column on odd sizes (as NNI and the old
  GDAS code do), so every op maps ``H`` to ``ceil(H / stride)``; on even sizes it is the
  official op exactly.
* ``pool_bn`` reproduces the pool variants of later code bases: SNAS follows each pool with an
  affine BatchNorm held in ``.op`` (keys ``op.1.*``); old GDAS with a buffers-only BatchNorm in a
  bare Sequential (keys ``1.*``).

Factories are registered in the ``darts`` family and called as
``factory(C, C, stride, affine=True, pool_bn=None, **ignored)``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .registry import register_op

__all__ = [
    "DARTS_PRIMITIVES", "POOL_BN_MODES", "ReLUConvBN", "FactorizedReduce", "SepConv", "DilConv",
    "Zero", "Identity", "PoolBN",
]

# The DARTS search space, in the order of ``PRIMITIVES`` in the official genotypes.py
# (the supernets index their architecture weights by this order).
DARTS_PRIMITIVES = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)

POOL_BN_MODES = (None, "affine", "buffers")


# ==================================================================== building blocks
class ReLUConvBN(nn.Module):
    """ReLU -> Conv (no bias) -> BN, in ``.op`` as in the official code."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN (a single block)."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked ReLU -> depthwise -> pointwise -> BN blocks; only the first is strided."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Identity(nn.Identity):
    """The DARTS identity (``skip_connect`` at stride 1).

    A subclass of ``nn.Identity`` so that one ``isinstance(op, nn.Identity)`` check decides
    where drop path is skipped, as the official ``Cell.forward`` does for its Identity.
    """


class Zero(nn.Module):
    """The ``none`` op: zeros of the strided output shape (``ceil(H / stride)``)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        # mul(0.) rather than zeros_like keeps the graph connected, as the official op does
        # (gradients reaching the input are then exact zeros instead of None).
        return x.mul(0.0)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


class FactorizedReduce(nn.Module):
    """Halves H and W with two 1x1 stride-2 convs, the second shifted by one pixel.

    The official op gives ``conv_2`` the map ``x[:, :, 1:, 1:]``, which is one row/column short
    for odd sizes (so the two halves cannot be concatenated).  Padding that branch right/bottom by
    one when the size is odd gives ``ceil(H / 2)`` everywhere and changes nothing for even sizes.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out (it concatenates two halves), "
                             f"got C_out={C_out}.")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shift_pad_odd(x))], dim=1))


def shift_pad_odd(x: torch.Tensor) -> torch.Tensor:
    """``x`` less its first row and column, padded right/bottom by one on an odd size (so that a
    stride-2 1x1 conv of it has ``ceil(H / 2)`` rows, like the unshifted branch)."""
    shifted = x[:, :, 1:, 1:]
    pad_h, pad_w = x.shape[2] % 2, x.shape[3] % 2
    if pad_h or pad_w:
        shifted = F.pad(shifted, (0, pad_w, 0, pad_h))
    return shifted


# The padding depends on the input's size: fx records one call instead of tracing the branch.
torch.fx.wrap("shift_pad_odd")


class PoolBN(nn.Module):
    """SNAS's pool op: ``.op = Sequential(pool, BatchNorm2d)``, so its keys are ``op.1.*``."""

    def __init__(self, pool: nn.Module, C: int, affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(pool, nn.BatchNorm2d(C, affine=affine))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


# ==================================================================== factories
def _check(name: str, C_in: int, C_out: int, stride: int) -> None:
    if C_in != C_out:
        raise ValueError(f"DARTS op {name!r} keeps the channel count (C_in == C_out); got "
                         f"C_in={C_in}, C_out={C_out}. Change channels in the cell's preprocess "
                         "layers instead.")
    if stride not in (1, 2):
        raise ValueError(f"DARTS op {name!r}: stride must be 1 or 2, got {stride}.")


def _pool(pool: nn.Module, C: int, affine: bool, pool_bn: Optional[str]) -> nn.Module:
    if pool_bn is None:
        return pool
    if pool_bn == "affine":
        return PoolBN(pool, C, affine=affine)
    if pool_bn == "buffers":
        return nn.Sequential(pool, nn.BatchNorm2d(C, affine=False))
    raise ValueError(f"pool_bn={pool_bn!r} is not one of {POOL_BN_MODES}: None (DARTS), "
                     "'affine' (SNAS: pool + affine BN in .op) or 'buffers' (old GDAS: pool + "
                     "BN without affine parameters).")


def _register(name: str):
    """Register ``build(C, stride, affine, pool_bn)`` under ``name`` with the checks added."""
    def decorate(build):
        def factory(C_in: int, C_out: int, stride: int = 1, *, affine: bool = True,
                    pool_bn: Optional[str] = None, **_ignored) -> nn.Module:
            _check(name, C_in, C_out, stride)
            return build(C_in, stride, affine, pool_bn)

        factory.__name__ = f"darts_{name}"
        factory.__doc__ = build.__doc__
        register_op(name, factory, family="darts", overwrite=True)
        return build

    return decorate


@_register("none")
def _none(C, stride, affine, pool_bn):
    return Zero(stride)


@_register("avg_pool_3x3")
def _avg_pool_3x3(C, stride, affine, pool_bn):
    # count_include_pad=False: border averages ignore the zero padding (official and TF SAME).
    return _pool(nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False), C, affine, pool_bn)


@_register("max_pool_3x3")
def _max_pool_3x3(C, stride, affine, pool_bn):
    return _pool(nn.MaxPool2d(3, stride=stride, padding=1), C, affine, pool_bn)


@_register("skip_connect")
def _skip_connect(C, stride, affine, pool_bn):
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)


def _sep_conv(k: int):
    def build(C, stride, affine, pool_bn):
        return SepConv(C, C, k, stride, (k - 1) // 2, affine=affine)
    return build


def _dil_conv(k: int):
    def build(C, stride, affine, pool_bn):
        # dilation 2 with padding k - 1 keeps "same" output size (receptive field 2k - 1).
        return DilConv(C, C, k, stride, k - 1, 2, affine=affine)
    return build


for _k in (3, 5, 7):
    _register(f"sep_conv_{_k}x{_k}")(_sep_conv(_k))
for _k in (3, 5):
    _register(f"dil_conv_{_k}x{_k}")(_dil_conv(_k))


@_register("conv_7x1_1x7")
def _conv_7x1_1x7(C, stride, affine, pool_bn):
    # A bare Sequential as in the official OPS table (keys ``1.weight``, ``2.weight``, ``3.*``);
    # no BN/ReLU between the two factorised convs.
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        nn.BatchNorm2d(C, affine=affine),
    )
