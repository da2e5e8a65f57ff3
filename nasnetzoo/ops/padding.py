"""TensorFlow ``"SAME"`` padding, computed from the actual input size.

TF pads ``total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)`` cells along a
dimension of size ``n``, ``total // 2`` before and the rest after: for stride 2 on an even size
the extra cell goes to the bottom/right, which a symmetric PyTorch ``padding=`` cannot express.

The helpers take plain Python ints (the shapes of an eagerly run or statically exported
model), so the padding lowers to one ``F.pad`` with constant ints.  ``torch.fx`` keeps the
size-dependent ones (``pad_same``, ``avg_pool_same``) as single calls (``torch.fx.wrap``).  When the padding does not
depend on the input size (stride 1 and an odd effective kernel) the layers below use PyTorch's
own symmetric ``padding=`` instead, which costs nothing.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

IntPair = Union[int, Tuple[int, int]]


def _pair(v: IntPair) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def same_pads(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> Tuple[int, int]:
    """TF "SAME" ``(before, after)`` padding of one dimension of ``size`` cells.

    >>> same_pads(224, 3, 2)   # even size, stride 2: the extra cell goes after
    (0, 1)
    >>> same_pads(65, 3, 2)
    (1, 1)
    >>> same_pads(14, 7, 1)
    (3, 3)
    """
    out = -(-size // stride)  # ceil without floats
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def same_pad_arg(size_hw: Sequence[int], kernel: IntPair, stride: IntPair = 1,
                 dilation: IntPair = 1) -> Tuple[int, int, int, int]:
    """The ``F.pad`` argument ``(left, right, top, bottom)`` for TF "SAME" on an ``(H, W)`` input."""
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    top, bottom = same_pads(int(size_hw[0]), kh, sh, dh)
    left, right = same_pads(int(size_hw[1]), kw, sw, dw)
    return left, right, top, bottom


def is_static_same(kernel: IntPair, stride: IntPair = 1, dilation: IntPair = 1) -> bool:
    """Whether "SAME" padding is symmetric and independent of the input size."""
    return all(s == 1 and (d * (k - 1)) % 2 == 0
               for k, s, d in zip(_pair(kernel), _pair(stride), _pair(dilation)))


def static_same_padding(kernel: IntPair, dilation: IntPair = 1) -> Tuple[int, int]:
    kh, kw = _pair(kernel)
    dh, dw = _pair(dilation)
    return dh * (kh - 1) // 2, dw * (kw - 1) // 2


def pad_same(x: torch.Tensor, kernel: IntPair, stride: IntPair = 1, dilation: IntPair = 1,
             value: float = 0.0) -> torch.Tensor:
    """Pad ``x`` (``..., H, W``) as TF "SAME" would for the given kernel/stride/dilation."""
    pad = same_pad_arg(x.shape[-2:], kernel, stride, dilation)
    if not any(pad):
        return x
    return F.pad(x, pad, value=value)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF "SAME" padding; its parameters are those of a plain ``nn.Conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 dilation: IntPair = 1, groups: int = 1, bias: bool = False) -> None:
        self._static = is_static_same(kernel_size, stride, dilation)
        padding = static_same_padding(kernel_size, dilation) if self._static else 0
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        self._same_args = (_pair(kernel_size), _pair(stride), _pair(dilation))  # pairs, as pad_same types them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._static:
            x = pad_same(x, *self._same_args)
        return super().forward(x)


class Pool2dSame(nn.Module):
    """TF ``avg_pool2d`` / ``max_pool2d`` with ``padding="SAME"``.

    ``max``: padded cells are ``-inf`` (never selected), as in TF.
    ``avg``: TF divides by the number of *valid* cells in each window (padding excluded).  With
    ``count_pad=True`` the zeros of a size-dependent (stride > 1 or even-kernel) padding are
    counted instead, which is what timm's ``AvgPool2dSame`` does in ``nasnetalarge``; stride-1
    odd-kernel pools exclude the padding either way (timm uses a static ``count_include_pad=False``
    pool there).
    """

    def __init__(self, kind: str, kernel_size: int, stride: int = 1, count_pad: bool = False) -> None:
        super().__init__()
        if kind not in ("avg", "max"):
            raise ValueError(f"pool kind {kind!r} is not 'avg' or 'max'.")
        self.kind = kind
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.count_pad = bool(count_pad)
        self._static = is_static_same(self.kernel_size, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        if self.kind == "max":
            if self._static:
                return F.max_pool2d(x, k, s, padding=k // 2)
            return F.max_pool2d(pad_same(x, k, s, value=float("-inf")), k, s)
        if self._static:
            return F.avg_pool2d(x, k, s, padding=k // 2, count_include_pad=False)
        return avg_pool_same(x, k, s, self.count_pad)

    def extra_repr(self) -> str:
        return (f"{self.kind}, kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"
                + (", count_pad=True" if self.count_pad else ""))


def avg_pool_same(x: torch.Tensor, kernel: int, stride: int, count_pad: bool) -> torch.Tensor:
    """TF "SAME" average pool of a size-dependent padding; ``count_pad`` counts the padded zeros."""
    pad = same_pad_arg(x.shape[-2:], kernel, stride)
    if not any(pad) or count_pad:
        # no implicit padding left: count_include_pad=False says nothing here, but the XNNPACK
        # partitioner refuses a pool that declares it counts padding
        return F.avg_pool2d(F.pad(x, pad) if any(pad) else x, kernel, stride, count_include_pad=False)
    return avg_pool_same_exclude_pad(x, kernel, stride)


# These pad by an amount computed from the input's size: torch.fx records one call to each
# instead of tracing into the branches (which a symbolic shape cannot decide).
torch.fx.wrap("pad_same")
torch.fx.wrap("avg_pool_same")


# ------------------------------------------------------------------ TF "SAME" average pool
def _axis_pieces(size: int, kernel: int, stride: int) -> list[tuple[int, int, int, int]]:
    """How TF "SAME" average pooling along one axis splits into plain pools, padding excluded.

    Returns ``(start, kernel, stride, pad)`` pieces whose outputs, concatenated, are TF's: a pool
    of the input from ``start`` with symmetric ``pad`` excluded from the count (what every runtime's
    average pool does natively).  TF pads ``before`` cells first and ``before`` or ``before + 1``
    after; in the second case the symmetric pool gives all windows but the last, and the last
    window is the mean of the cells it still covers, one more pool over the input's tail.
    """
    before, after = same_pads(size, kernel, stride)
    out = -(-size // stride)
    if after == before:
        return [(0, kernel, stride, before)]
    pieces = [(0, kernel, stride, before)] if out > 1 else []
    tail = max((out - 1) * stride - before, 0)  # first real cell of the last window
    return pieces + [(tail, size - tail, 1, 0)]


def avg_pool_same_exclude_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TF ``avg_pool2d(padding="SAME")``: the mean of each window's real cells, at any size.

    Built from plain ``avg_pool2d(..., count_include_pad=False)``, slices and concatenations, which
    XNNPACK, LiteRT and OpenVINO all run (a ``divisor_override`` pool, the obvious sum / count, is
    refused by XNNPACK's partitioner and OpenVINO's PyTorch frontend).  Each output cell is the
    same sum divided by the same count as TF's.
    """
    rows = _axis_pieces(int(x.shape[-2]), kernel, stride)
    cols = _axis_pieces(int(x.shape[-1]), kernel, stride)
    bands = []
    for r0, rk, rs, rp in rows:
        parts = [F.avg_pool2d(x[:, :, r0:, c0:] if (r0 or c0) else x, (rk, ck), (rs, cs), (rp, cp),
                              count_include_pad=False)
                 for c0, ck, cs, cp in cols]
        bands.append(parts[0] if len(parts) == 1 else torch.cat(parts, -1))
    return bands[0] if len(bands) == 1 else torch.cat(bands, -2)
