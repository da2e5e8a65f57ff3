"""NASNet-family primitives with TF-slim semantics (family ``"nasnet"``).

Sources: tf-slim ``research/slim/nets/nasnet/nasnet_utils.py`` (NASNet-A, PNASNet-5),
tensorflow/tpu ``models/official/amoeba_net/network_utils.py`` (AmoebaNet's conv ops) and
melodyguan/enas ``src/cifar10/micro_child.py`` (ENAS, through options).  Every op maps
``(B, C_in, H, W)`` to ``(B, C_out, ceil(H / stride), ceil(W / stride))`` with TF "SAME" padding
computed from the actual input size (see :mod:`.padding`), so odd sizes work.

Ops (factory ``(C_in, C_out, stride, **options)``):

* ``none``: identity; when ``stride > 1`` or ``C_in != C_out`` it is ReLU -> 1x1 conv (stride) ->
  BN, as in TF (*not* a factorized reduction).  Option ``identity_reduce="factorized"`` makes the
  strided case a factorized reduction instead (ENAS).
* ``separable_{3,5,7}x{k}_2``: two stacked [ReLU -> depthwise kxk -> pointwise -> BN]; the stride
  is in the first depthwise conv only, and the first pointwise conv maps ``C_in -> C_out`` (as
  ``slim.separable_conv2d(net, filter_size, ...)`` does).
* ``avg_pool_{3,5,7}x{k}`` / ``max_pool_{3,5,7}x{k}``: TF "SAME" pools (avg excludes the padding;
  option ``avg_pool_count_pad=True`` counts the zeros of size-dependent padding, like timm's
  ``AvgPool2dSame``), followed by 1x1 conv -> BN when ``C_in != C_out`` (option
  ``pool_proj_act=True`` puts a ReLU before that conv, as ENAS does).
* AmoebaNet's conv ops (``network_utils.BaseCell._apply_operation``), which the NASNet paper's
  search space also lists: ``1x7_7x1`` (ReLU -> 1x1 to C/4 -> BN -> ReLU -> [1x7 (stride 1,s) -> BN ->
  ReLU -> 7x1 (stride s,1)] -> BN -> ReLU -> 1x1 to C -> BN), ``1x3_3x1`` (the same with a 3C/8
  bottleneck), ``conv_3x3`` (C/4 bottleneck around a 3x3 conv), ``dilated_3x3`` (C/4 bottleneck
  around a 3x3 conv of rate 2; ``dilated_3x3_rate_{2,4,6}`` name the rate) and ``conv_1x1`` (ReLU ->
  1x1 conv (stride) -> BN, always applied).  When the bottleneck would have fewer than one channel
  the op is ReLU -> conv -> BN without it, as in TF.  (TF refuses a dilated conv with stride 2;
  here it simply runs, with "SAME" padding.)

Options every factory understands: ``bn_eps`` (default 1e-3, the TF ports' value).  Drop path is
not part of the ops: the cell adds it after every op except ``none``.  Module attribute names
follow the Cadene/timm ports (``act_1``, ``separable_1.depthwise_conv2d``, ``bn_sep_1``,
``path_1.conv``, ``final_path_bn``, ``act``/``conv``/``bn``) so weights map by name.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
import torch.fx
from torch import nn

from .padding import Conv2dSame, Pool2dSame
from .registry import register_op

FAMILY = "nasnet"
DEFAULT_BN_EPS = 1e-3


def _bn(channels: int, bn_eps: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=bn_eps)


# ======================================================================== building blocks
class ActConvBn(nn.Module):
    """ReLU -> conv ("SAME", no bias) -> BN; ``act=False`` leaves the ReLU out."""

    def __init__(self, C_in: int, C_out: int, kernel_size=1, stride=1, *, bn_eps: float = DEFAULT_BN_EPS,
                 act: bool = True, dilation=1) -> None:
        super().__init__()
        self.act = nn.ReLU() if act else nn.Identity()
        self.conv = Conv2dSame(C_in, C_out, kernel_size, stride, dilation=dilation)
        self.bn = _bn(C_out, bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.act(x)))


class SeparableConv2d(nn.Module):
    """``slim.separable_conv2d`` with depth multiplier 1: depthwise kxk (stride) then pointwise 1x1."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise_conv2d = Conv2dSame(C_in, C_in, kernel_size, stride, groups=C_in)
        self.pointwise_conv2d = nn.Conv2d(C_in, C_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv2d(self.depthwise_conv2d(x))


class StackedSeparable(nn.Module):
    """TF ``_stacked_separable_conv``: ``num_layers`` x [ReLU -> separable conv -> BN]."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int = 1, num_layers: int = 2, *,
                 bn_eps: float = DEFAULT_BN_EPS) -> None:
        super().__init__()
        self.num_layers = num_layers
        for i in range(1, num_layers + 1):
            self.add_module(f"act_{i}", nn.ReLU())
            self.add_module(f"separable_{i}", SeparableConv2d(C_in if i == 1 else C_out, C_out, kernel_size,
                                                              stride if i == 1 else 1))
            self.add_module(f"bn_sep_{i}", _bn(C_out, bn_eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.num_layers + 1):
            x = getattr(self, f"act_{i}")(x)
            x = getattr(self, f"separable_{i}")(x)
            x = getattr(self, f"bn_sep_{i}")(x)
        return x


class FactorizedReduction(nn.Module):
    """TF ``factorized_reduction``: halve H and W without dropping pixels.

    ``stride=2``: path 1 = subsample -> 1x1 conv to ``C_out // 2``; path 2 = shift by one ->
    subsample -> 1x1 conv to the rest (``C_out // 2 + C_out % 2``, TF's odd-width rule); concat ->
    BN.  Output ``ceil(H / 2)``, also for odd ``H``.  ``stride=1``: 1x1 conv -> BN.  ``act=True``
    puts a ReLU first (``_reduce_prev_layer`` applies one, ``_combine_unused_states`` does not).
    """

    def __init__(self, C_in: int, C_out: int, stride: int = 2, *, act: bool = False,
                 bn_eps: float = DEFAULT_BN_EPS) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"factorized reduction supports stride 1 or 2, got {stride}.")
        self.stride = stride
        self.act = nn.ReLU() if act else nn.Identity()
        if stride == 1:
            self.conv = nn.Conv2d(C_in, C_out, 1, bias=False)
            self.bn = _bn(C_out, bn_eps)
            return
        half = C_out // 2
        # Path 1 reads the even rows/columns (a 1x1 conv of stride 2), path 2 the odd ones: the
        # same stride-2 conv on the input less its first row and column, zero-padded right/bottom
        # when the size is odd (TF: ``pad(x)[:, 1:, 1:]`` then a 1x1 stride-2 VALID pool).  One
        # slice and one pad of the small output, no strided slicing: every runtime lowers it whole.
        self.path_1 = nn.Sequential(OrderedDict([("conv", nn.Conv2d(C_in, half, 1, stride=2, bias=False))]))
        self.path_2 = nn.Sequential(OrderedDict([("conv", nn.Conv2d(C_in, C_out - half, 1, stride=2, bias=False))]))
        self.final_path_bn = _bn(C_out, bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        if self.stride == 1:
            return self.bn(self.conv(x))
        shifted = pad_shifted_output(self.path_2(shift_input(x)), x)
        return self.final_path_bn(torch.cat([self.path_1(x), shifted], 1))


def shift_input(x: torch.Tensor) -> torch.Tensor:
    """Path 2's input: ``x`` less its first row and column (padded first where a side is 1 pixel:
    nothing would be left after the shift along that axis, so path 2 reads the padding)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if min(h, w) == 1:
        return nn.functional.pad(x[:, :, 1:, 1:], (0, w % 2, 0, h % 2))
    return x[:, :, 1:, 1:]


def pad_shifted_output(shifted: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Path 2's output padded right/bottom to path 1's ``ceil(H / 2)`` on an odd-sized ``x``."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if min(h, w) == 1 or not (h % 2 or w % 2):
        return shifted
    return nn.functional.pad(shifted, (0, w % 2, 0, h % 2))


# Size-dependent padding: fx records one call each instead of tracing the branches.
torch.fx.wrap("shift_input")
torch.fx.wrap("pad_shifted_output")


class PoolProject(nn.Module):
    """A pool followed by 1x1 conv -> BN (TF's pool when ``C_in != C_out``); ENAS adds a ReLU."""

    def __init__(self, pool: Pool2dSame, C_in: int, C_out: int, *, bn_eps: float = DEFAULT_BN_EPS,
                 act: bool = False) -> None:
        super().__init__()
        self.pool_name = f"{pool.kind}_pool"
        self.add_module(self.pool_name, pool)  # ``max_pool`` / ``avg_pool``, as in timm's pnasnet stem
        self.act = nn.ReLU() if act else nn.Identity()
        self.conv = nn.Conv2d(C_in, C_out, 1, bias=False)
        self.bn = _bn(C_out, bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.act(getattr(self, self.pool_name)(x))))


class Bottleneck(nn.Module):
    """AmoebaNet's conv ops: ReLU -> 1x1 (C_mid) -> BN -> ReLU -> ``op`` -> BN -> ReLU -> 1x1 (C_out) -> BN.

    ``mid=None`` drops the bottleneck: ReLU -> ``op`` (``C_in -> C_out``) -> BN.
    """

    def __init__(self, kind: str, C_in: int, C_out: int, stride: int, mid: Optional[int], *,
                 bn_eps: float = DEFAULT_BN_EPS, dilation: int = 1) -> None:
        super().__init__()
        self.has_bottleneck = mid is not None
        c_op_in, c_op_out = (mid, mid) if mid is not None else (C_in, C_out)
        if mid is not None:
            self.pre_act = nn.ReLU()
            self.pre_1x1 = nn.Conv2d(C_in, mid, 1, bias=False)
            self.pre_bn = _bn(mid, bn_eps)
        self.act = nn.ReLU()
        self.op: nn.Module
        if kind in ("1x7_7x1", "1x3_3x1"):
            k = int(kind[2])
            self.op = nn.Sequential(OrderedDict([
                (f"conv_1x{k}", Conv2dSame(c_op_in, c_op_out, (1, k), (1, stride))),
                (f"bn_1x{k}_{k}x1", _bn(c_op_out, bn_eps)),
                ("act", nn.ReLU()),
                (f"conv_{k}x1", Conv2dSame(c_op_out, c_op_out, (k, 1), (stride, 1))),
            ]))
        elif kind == "3x3":
            self.op = Conv2dSame(c_op_in, c_op_out, 3, stride, dilation=dilation)
        else:
            raise ValueError(f"unknown bottleneck op kind {kind!r}.")
        self.bn = _bn(c_op_out, bn_eps)
        if mid is not None:
            self.post_act = nn.ReLU()
            self.post_1x1 = nn.Conv2d(mid, C_out, 1, bias=False)
            self.post_bn = _bn(C_out, bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_bottleneck:
            x = self.pre_bn(self.pre_1x1(self.pre_act(x)))
        x = self.bn(self.op(self.act(x)))
        if self.has_bottleneck:
            x = self.post_bn(self.post_1x1(self.post_act(x)))
        return x


# ======================================================================== registered ops
def _eps(options) -> float:
    return float(options.get("bn_eps", DEFAULT_BN_EPS))


@register_op("none", family=FAMILY)
def _none(C_in: int, C_out: int, stride: int, **options) -> nn.Module:
    if stride == 1 and C_in == C_out:
        return nn.Identity()
    if stride > 1 and options.get("identity_reduce", "conv") == "factorized":
        return FactorizedReduction(C_in, C_out, stride, act=False, bn_eps=_eps(options))
    return ActConvBn(C_in, C_out, 1, stride, bn_eps=_eps(options))


def _separable_factory(kernel: int, num_layers: int):
    def factory(C_in: int, C_out: int, stride: int, **options) -> nn.Module:
        return StackedSeparable(C_in, C_out, kernel, stride, num_layers, bn_eps=_eps(options))
    factory.__name__ = f"separable_{kernel}x{kernel}_{num_layers}"
    return factory


def _pool_factory(kind: str, kernel: int):
    def factory(C_in: int, C_out: int, stride: int, **options) -> nn.Module:
        pool = Pool2dSame(kind, kernel, stride,
                          count_pad=kind == "avg" and bool(options.get("avg_pool_count_pad", False)))
        if C_in == C_out:
            return pool
        return PoolProject(pool, C_in, C_out, bn_eps=_eps(options),
                           act=bool(options.get("pool_proj_act", False)))
    factory.__name__ = f"{kind}_pool_{kernel}x{kernel}"
    return factory


def _bottleneck_factory(kind: str, ratio: float, dilation: int = 1):
    def factory(C_in: int, C_out: int, stride: int, **options) -> nn.Module:
        mid = int(ratio * C_out)
        return Bottleneck(kind, C_in, C_out, stride, mid if mid >= 1 else None, bn_eps=_eps(options),
                          dilation=dilation)
    return factory


for _k in (3, 5, 7):
    register_op(f"separable_{_k}x{_k}_2", _separable_factory(_k, 2), family=FAMILY)
for _kind in ("avg", "max"):
    for _k in (3, 5, 7):
        register_op(f"{_kind}_pool_{_k}x{_k}", _pool_factory(_kind, _k), family=FAMILY)

register_op("1x7_7x1", _bottleneck_factory("1x7_7x1", 1 / 4), family=FAMILY)
register_op("1x3_3x1", _bottleneck_factory("1x3_3x1", 3 / 8), family=FAMILY)
register_op("conv_3x3", _bottleneck_factory("3x3", 1 / 4), family=FAMILY)
register_op("dilated_3x3", _bottleneck_factory("3x3", 1 / 4, dilation=2), family=FAMILY)
for _rate in (2, 4, 6):
    register_op(f"dilated_3x3_rate_{_rate}", _bottleneck_factory("3x3", 1 / 4, dilation=_rate), family=FAMILY)


@register_op("conv_1x1", family=FAMILY)
def _conv_1x1(C_in: int, C_out: int, stride: int, **options) -> nn.Module:
    return ActConvBn(C_in, C_out, 1, stride, bn_eps=_eps(options))
