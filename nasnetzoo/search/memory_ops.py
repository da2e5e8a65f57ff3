"""Layers of the supernet computed with less memory kept for backward, on any device and either backend.

* :func:`max_pool_recomputed` is ``F.max_pool2d`` that keeps no int64 indices (twice the bytes of
  the map) for the backward pass: the argmax is recomputed there from the input, which autograd
  keeps anyway.  Gradients go exactly where PyTorch's go (the first maximum of each window).
* :func:`channel_shuffle` is PC-DARTS's channel shuffle, which keeps a channels_last tensor
  channels_last (no copy back to NCHW).

Nothing here is specific to the CPU fast path (``search/backends/``): the fused backend passes its
CPU forward kernel to :func:`max_pool_recomputed`, the reference computation uses these as they are.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# A forward for the max pool: (x, kernel, stride, padding, ceil_mode) -> output, or None to use PyTorch's.
PoolForward = Callable[[torch.Tensor, list, list, list, bool], Optional[torch.Tensor]]


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D tensor laid out channels_last (and not also plain contiguous, as 1x1 maps are)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups (ShuffleNet's shuffle; a permutation of channels).
    Keeps a channels_last tensor channels_last."""
    b, c, h, w = x.shape
    if is_channels_last(x):
        nhwc = x.permute(0, 2, 3, 1).reshape(b, h, w, groups, c // groups).transpose(3, 4)
        return nhwc.reshape(b, h, w, c).permute(0, 3, 1, 2)
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def max_pool_backward(x: torch.Tensor, grad: torch.Tensor, kernel: list, stride: list, padding: list,
                      ceil_mode: bool) -> torch.Tensor:
    """PyTorch's max-pool backward (no dilation), with the argmax recomputed from the input: a pool
    that keeps no indices pays one more forward in backward instead of an int64 map meanwhile.

    On the CPU both run in channels_last, where PyTorch's kernels are 1.3-5x faster than in NCHW
    (same windows, same first-maximum rule, so the same gradient)."""
    given = torch.channels_last if x.dim() == 4 and is_channels_last(x) else torch.contiguous_format
    layout = torch.channels_last if x.device.type == "cpu" and x.dim() == 4 else given
    x, grad = x.contiguous(memory_format=layout), grad.contiguous(memory_format=layout)
    _, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel, stride, padding, [1, 1], ceil_mode)
    return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, kernel, stride, padding, [1, 1], ceil_mode,
                                                           indices).contiguous(memory_format=given)


class _MaxPoolRecomputed(torch.autograd.Function):
    """``F.max_pool2d`` (no dilation) that keeps no indices: the forward by ``forward`` where it
    gives one (a backend's kernel), else PyTorch's; the backward :func:`max_pool_backward`."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, ceil_mode, forward: Optional[PoolForward]):
        ctx.save_for_backward(x)
        ctx.args = (kernel, stride, padding, ceil_mode)
        fast = None if forward is None else forward(x, kernel, stride, padding, ceil_mode)
        return fast if fast is not None else F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return max_pool_backward(x, grad, *ctx.args), None, None, None, None, None


def max_pool_recomputed(x: torch.Tensor, kernel: list, stride: list, padding: list, ceil_mode: bool,
                        forward: Optional[PoolForward] = None) -> torch.Tensor:
    """``F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode)``, keeping no int64 indices for
    backward (any device); ``forward``: a faster forward kernel to try first (None: PyTorch's)."""
    return _MaxPoolRecomputed.apply(x, kernel, stride, padding, ceil_mode, forward)


def _pair(v) -> list:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def max_pool(pool: nn.MaxPool2d, x: torch.Tensor, forward: Optional[PoolForward] = None) -> torch.Tensor:
    """``pool(x)`` keeping no indices, for a MaxPool2d without dilation or returned indices (and
    under autograd); any other pool runs as is."""
    if pool.return_indices or _pair(pool.dilation) != [1, 1] or not torch.is_grad_enabled():
        return pool(x)
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return max_pool_recomputed(x, _pair(pool.kernel_size), _pair(stride), _pair(pool.padding), pool.ceil_mode,
                               forward)
