"""Faster CPU versions of the supernet's depthwise and 1x1 convolutions and 3x3 pools (same function).

A DARTS supernet step on the CPU is thousands of small NCHW kernels, and PyTorch's CPU kernels for
some of them are far slower than the arithmetic needs (PyTorch 2.14.1, 2 threads, batch 16 x 16
channels x 32 x 32; docs/search_speed.md has the measurements):

* **5x5 depthwise convolutions of 4096 values per sample or more, dilated ones of 1024 or more**
  (4 x 32 x 32, 64 x 8 x 8, 16 x 8 x 8; a node's edges side by side make most of them that large):
  PyTorch's NCHW backward computes the input gradient several times slower than a forward conv
  does, and the weight gradient slower still.  Here the input gradient is a depthwise convolution
  of the output gradient with the flipped kernel, and the weight gradient a forward depthwise
  convolution too (each sample's input plane convolved with its output gradient plane):
  1.3-9x less time for forward + backward;
* **dilated depthwise convolutions whose stride is their dilation** (a reduction cell's dil_convs),
  from 4096 values per sample: they read every second pixel of every second row only, so they
  are the undilated stride-1 conv of that subsampled map (the math above); PyTorch's backward of
  the strided dilated conv took 6-12 ms a call at 16 x 64 x 32 x 32;
* **1x1 convolutions, stride 1, grouped or not** (a node's edges side by side are one group each):
  batched matrix products, which oneDNN's NCHW 1x1 convolution is 1.3-3x slower than here;
* **3x3, stride-1 pools** (average pools from 1024 values per sample): PyTorch's NCHW CPU pooling
  kernels are slow here (forward about 6 ms for a max pool, 3 ms for an average pool).  Here a
  pool is two passes of three shifted maxima or sums, and **a strided max pool's forward** (a
  reduction cell's 3x3 stride-2 pools, PC-DARTS's 2x2 bypass) maxima of strided views.  The max
  pool's backward is PyTorch's, with the argmax recomputed (no indices are kept) in channels_last,
  where PyTorch's CPU max pool is several times faster.

Each function computes what the module it replaces computes, within float reordering (the sums run
in another order; maxima are exact).  :func:`fast_layer` falls back to the module itself wherever
that is not established (another device, autocast, channels_last, other strides, paddings or
dilations) and where PyTorch's kernel is as fast (smaller maps, fewer channels, plain 3x3 depthwise
convs).  The convolutions' backward is two autograd nodes, input and weight gradient, so a
backward pass that wants no weight gradient (an architecture step) skips it.  Results are tested
against the modules in ``tests/test_cpu_kernels.py``.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..memory_ops import max_pool_recomputed
from .policy import DEFAULT_POLICY, FastPathPolicy


def _eligible(x: torch.Tensor, policy: FastPathPolicy) -> bool:
    """The tensors these kernels are written and checked for: CPU, fp32/fp64, no autocast, and
    NCHW with each channel's map a row-major block (PC-DARTS's channel slice included, channels_last
    not); none where the policy turns the kernels off."""
    return (policy.kernels and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.dim() == 4
            and x.stride(3) == 1 and x.stride(2) == x.shape[3] and x.stride(1) >= x.shape[2] * x.shape[3]
            and not torch.is_autocast_enabled("cpu"))


# ---------------------------------------------------------------- convolutions with a split backward
class _WeightGrad(torch.autograd.Function):
    """The weight half of a :class:`_Conv`'s backward, as a node of its own.

    Its output is a zero-cost stand-in shaped like the conv's output, which the conv takes as an
    input and passes the output gradient back to.  Being a separate node, it runs only when the
    weight's gradient is wanted: an architecture step (``autograd.grad`` of the alphas) skips it,
    as it skips the weight half of PyTorch's own convolution backward.
    """

    @staticmethod
    def forward(ctx, weight, x, kernel: "_ConvMath", out_shape):
        ctx.save_for_backward(x, weight)
        ctx.kernel = kernel
        return weight.new_zeros(()).expand(out_shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return ctx.kernel.weight_grad(x, grad, weight), None, None, None


class _Conv(torch.autograd.Function):
    """A convolution whose backward here computes only the input gradient (weight half: :class:`_WeightGrad`)."""

    @staticmethod
    def forward(ctx, x, weight, weight_grad_carrier, kernel: "_ConvMath"):
        ctx.save_for_backward(weight)
        ctx.kernel, ctx.x_shape = kernel, x.shape
        return kernel.forward(x, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        grad_x = ctx.kernel.input_grad(grad, weight, ctx.x_shape) if ctx.needs_input_grad[0] else None
        return grad_x, None, grad if ctx.needs_input_grad[2] else None, None


class _ConvMath:
    """forward, input gradient and weight gradient of one kind of convolution."""

    def out_shape(self, x, weight):
        raise NotImplementedError

    def forward(self, x, weight):
        raise NotImplementedError

    def input_grad(self, grad, weight, x_shape):
        raise NotImplementedError

    def weight_grad(self, x, grad, weight):
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        carrier = None
        if weight.requires_grad and torch.is_grad_enabled():
            carrier = _WeightGrad.apply(weight, x.detach(), self, self.out_shape(x, weight))
        return _Conv.apply(x, weight.detach() if carrier is not None else weight, carrier, self)


class _Depthwise(_ConvMath):
    """Stride-1 depthwise conv, square kernel, 'same' padding."""

    def __init__(self, padding: int, dilation: int) -> None:
        self.padding, self.dilation = padding, dilation

    def out_shape(self, x, weight):
        return x.shape

    def forward(self, x, weight):
        return F.conv2d(x, weight, None, 1, self.padding, self.dilation, x.shape[1])

    def input_grad(self, grad, weight, x_shape):
        # The transposed convolution of a stride-1 conv: correlate with the flipped kernel.
        return F.conv2d(grad.contiguous(), weight.flip(-1, -2), None, 1,
                        self.dilation * (weight.shape[-1] - 1) - self.padding, self.dilation, weight.shape[0])

    def weight_grad(self, x, grad, weight):
        """PyTorch's NCHW weight-only backward for undilated 3x3 kernels; for the others, the weight
        gradient posed as a forward depthwise conv (:func:`_weight_grad_as_forward_conv`), which
        took 0.2-0.5 of the time of PyTorch's weight-only backward in either layout (and of its
        polyphase form for dilated kernels) on 8 x 8 and 16 x 16 maps, 0.15-1.1 at 32 x 32, and
        0.93 of the DARTS and PC-DARTS step (docs/search_speed.md)."""
        p, d = self.padding, self.dilation
        if weight.shape[-1] <= 3 and d == 1:
            _, weight_grad, _ = torch.ops.aten.convolution_backward(
                grad.contiguous(), x.contiguous(), weight, None, [1, 1], [p, p], [d, d], False, [0, 0],
                weight.shape[0], [False, True, False])
            return weight_grad
        return _weight_grad_as_forward_conv(x, grad, p, d, weight.shape)


def _weight_grad_as_forward_conv(x: torch.Tensor, grad: torch.Tensor, padding: int, dilation: int,
                                 weight_shape: torch.Size) -> torch.Tensor:
    """The weight gradient of a stride-1 'same' depthwise conv, as a forward depthwise conv.

    Tap (a, b) of channel c is ``sum_n sum_ij x_pad[n, c, d*a + i, d*b + j] * grad[n, c, i, j]``:
    on each of the N * C (sample, channel) planes, the padded input convolved with the output
    gradient as the kernel, at stride d (the dilation), which gives exactly the k x k taps.  So it
    is one depthwise conv of N * C groups, summed over the samples; oneDNN's forward kernel runs it
    far faster than its weight-gradient kernel runs the original problem."""
    n, c, h, w = x.shape
    k = weight_shape[-1]
    padded = F.pad(x, (padding,) * 4).reshape(1, n * c, h + 2 * padding, w + 2 * padding)
    per_sample = F.conv2d(padded, grad.reshape(n * c, 1, h, w), None, dilation, 0, 1, n * c)
    return per_sample.view(n, c, k, k).sum(0).view(weight_shape)


class _StridedDepthwise(_ConvMath):
    """Depthwise conv whose stride equals its dilation d > 1, square kernel, 'same' padding p.

    Output pixel i reads input pixels d * i + d * a - p = d * (i + a - p / d): every d-th pixel of
    every d-th row only.  So it is the undilated stride-1 conv (padding p / d) of that subsampled
    map, on which the stride-1 depthwise math runs; the input gradient is zero elsewhere.  PyTorch's
    CPU backward of the strided dilated conv took 6-12 ms a call at 16 x 64 x 32 x 32; forward +
    backward here, 0.4-0.55 of its time there (docs/search_speed.md).  The subsampled map is made
    again in backward rather than kept: autograd keeps the full input (shared with the edge's other
    ops) instead.
    """

    def __init__(self, padding: int, dilation: int) -> None:
        self.d, self.inner = dilation, _Depthwise(padding // dilation, 1)

    def _subsample(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.d, ::self.d].contiguous()

    def out_shape(self, x, weight):
        n, c, h, w = x.shape
        return torch.Size((n, c, -(-h // self.d), -(-w // self.d)))

    def forward(self, x, weight):
        return self.inner.forward(self._subsample(x), weight)

    def input_grad(self, grad, weight, x_shape):
        grad_x = grad.new_zeros(x_shape)
        grad_x[:, :, ::self.d, ::self.d] = self.inner.input_grad(grad, weight, grad.shape)
        return grad_x

    def weight_grad(self, x, grad, weight):
        return self.inner.weight_grad(self._subsample(x), grad, weight)


class _Pointwise(_ConvMath):
    """1x1 conv of ``groups`` groups as batched matrix products, one per (sample, group)."""

    def __init__(self, groups: int) -> None:
        self.groups = groups

    def _per_group(self, t: torch.Tensor) -> torch.Tensor:
        """(N, groups * C, H, W) -> (N * groups, C, H * W), a view."""
        return t.reshape(t.shape[0] * self.groups, t.shape[1] // self.groups, t.shape[2] * t.shape[3])

    def _weights(self, weight: torch.Tensor, n: int) -> torch.Tensor:
        g = self.groups
        return weight.view(1, g, weight.shape[0] // g, weight.shape[1]).expand(n, -1, -1, -1).reshape(
            n * g, weight.shape[0] // g, weight.shape[1])

    def out_shape(self, x, weight):
        return torch.Size((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]))

    def forward(self, x, weight):
        n, _, h, w = x.shape
        return torch.bmm(self._weights(weight, n), self._per_group(x)).view(n, weight.shape[0], h, w)

    def input_grad(self, grad, weight, x_shape):
        n = grad.shape[0]
        return torch.bmm(self._weights(weight, n).transpose(1, 2), self._per_group(grad.contiguous())).view(x_shape)

    def weight_grad(self, x, grad, weight):
        n, g = x.shape[0], self.groups
        per_sample = torch.bmm(self._per_group(grad.contiguous()), self._per_group(x).transpose(1, 2))
        return per_sample.view(n, g, weight.shape[0] // g, weight.shape[1]).sum(0).view(weight.shape)


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, padding: int, dilation: int) -> torch.Tensor:
    """``F.conv2d(x, weight, padding=padding, dilation=dilation, groups=C)``, stride 1, 'same' size."""
    return _Depthwise(padding, dilation)(x, weight)


def _depthwise_kernel(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor,
                      policy: FastPathPolicy) -> Optional[torch.Tensor]:
    k, (ph, pw), (dh, dw), (sh, sw) = conv.kernel_size, conv.padding, conv.dilation, conv.stride
    if (k[0] != k[1] or ph != pw or dh != dw or sh != sw or 2 * ph != dh * (k[0] - 1)
            or weight.shape[0] != x.shape[1] or weight.shape[1] != 1):
        return None
    values = x.shape[1] * x.shape[2] * x.shape[3]   # per sample
    if sh == dh > 1:   # the reduction cells' dil_convs: 0.4-1.0 of PyTorch's time from 4096 values up
        return _StridedDepthwise(ph, dh)(x, weight) if values >= policy.strided_dilated_min_values else None
    if sh != 1:
        return None
    # Where it pays (policy.py); below, and for plain 3x3 kernels, PyTorch's is about as fast as
    # the extra autograd nodes.
    minimum = policy.dilated_min_values if dh > 1 else policy.depthwise_min_values
    if values < minimum or (k[0] <= 3 and dh == 1):
        return None
    return depthwise_conv(x, weight, ph, dh)


def _pointwise_kernel(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, groups: int) -> Optional[torch.Tensor]:
    """A 1x1 conv of ``groups`` groups as one batched matrix product per sample and group.

    PyTorch's CPU 1x1 convolution (oneDNN, NCHW) takes 1.3-3x the time of the same product as
    ``torch.bmm`` at the supernet's 4-256 channels (forward + backward; docs/search_speed.md)."""
    if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.padding != (0, 0) or not x.is_contiguous():
        return None
    if x.shape[1] % groups or weight.shape[1] != x.shape[1] // groups:
        return None
    return _Pointwise(groups)(x, weight)


def conv_kernel(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, groups: int,
                policy: FastPathPolicy = DEFAULT_POLICY) -> Optional[torch.Tensor]:
    """``F.conv2d(x, weight, groups=groups)`` with ``conv``'s kernel size, stride, padding and
    dilation, computed here (``weight`` and ``groups`` may be several edges' convs side by side);
    None where no kernel of this module applies or pays."""
    if not _eligible(x, policy) or conv.bias is not None or conv.padding_mode != "zeros":
        return None
    if groups == x.shape[1] and conv.groups == conv.in_channels == conv.out_channels:
        return _depthwise_kernel(conv, x, weight, policy)
    if conv.dilation == (1, 1):
        return _pointwise_kernel(conv, x, weight, groups)
    return None


# ---------------------------------------------------------------- 3x3 stride-1 pools
def _shifted(x: torch.Tensor, combine, dim: int, k: int = 3, stride: int = 1,
             n: Optional[int] = None) -> torch.Tensor:
    """``combine`` of the ``k`` neighbours along ``dim`` of an already padded map, for ``n`` windows
    ``stride`` apart (by default every window that fits)."""
    n = (x.shape[dim] - k) // stride + 1 if n is None else n
    index = [slice(None)] * x.dim()
    out = None
    for a in range(k):
        index[dim] = slice(a, a + (n - 1) * stride + 1, stride)
        out = x[tuple(index)] if out is None else combine(out, x[tuple(index)])
    return out


def _box_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over each 3x3 window, zero padding, same size."""
    return _shifted(_shifted(F.pad(x, (1, 1, 1, 1)), torch.add, 3), torch.add, 2)


def _pooled_size(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """PyTorch's output size of a pool (no dilation)."""
    out = (size + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:   # the last window must start inside the map or its left padding
        out -= 1
    return out


def max_pool_forward(x: torch.Tensor, kernel: list, stride: list, padding: list, ceil_mode: bool,
                     policy: FastPathPolicy = DEFAULT_POLICY) -> Optional[torch.Tensor]:
    """``F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode)`` (no dilation) as maxima of
    strided views, or None where PyTorch's kernel is used (not a fast-kernel tensor, or a strided
    pool under ``policy.strided_max_pool_min_values`` values per sample).  The normal cells' 3x3 stride-1 pools run here at any size
    (PyTorch's NCHW forward took about 6 ms at 16 x 16 x 32 x 32).  A reduction cell's 3x3 stride-2
    pools and PC-DARTS's 2x2 bypass pools ran 3.7-8x faster this way at 16 x 24-64 x 32 x 32
    (PyTorch's NCHW CPU max pool: 1.1 ms for a 2x2 pool of 16 x 24 x 32 x 32, 0.14 ms here); in
    the step the gain is within the noise.  Maxima are exact, so the output is PyTorch's to the bit."""
    same_3x3 = (kernel, stride, padding, ceil_mode) == ([3, 3], [1, 1], [1, 1], False)
    if not _eligible(x, policy) or (not same_3x3 and x.shape[1] * x.shape[2] * x.shape[3]
                                    < policy.strided_max_pool_min_values):
        return None
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    h, w = x.shape[2:]
    oh, ow = _pooled_size(h, kh, sh, ph, ceil_mode), _pooled_size(w, kw, sw, pw, ceil_mode)
    # -inf padding: on the left as asked, on the right as far as the last window reaches (ceil_mode).
    right, bottom = max((ow - 1) * sw + kw - w - pw, 0), max((oh - 1) * sh + kh - h - ph, 0)
    if pw or ph or right or bottom:
        x = F.pad(x, (pw, right, ph, bottom), value=float("-inf"))
    return _shifted(_shifted(x, torch.maximum, 3, kw, sw, ow), torch.maximum, 2, kh, sh, oh)


class _AvgPool3x3(torch.autograd.Function):
    """``F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)``: window sums over valid counts."""

    @staticmethod
    def forward(ctx, x):
        inv_count = 1.0 / _box_sum(x.new_ones(1, 1, x.shape[2], x.shape[3]))
        ctx.save_for_backward(inv_count)
        return _box_sum(x) * inv_count

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (inv_count,) = ctx.saved_tensors
        return _box_sum(grad * inv_count)   # the 3x3 window is symmetric: its adjoint is itself


def _is_3x3_same(pool: nn.Module) -> bool:
    size, stride, pad = (getattr(pool, a) for a in ("kernel_size", "stride", "padding"))
    return size in (3, (3, 3)) and stride in (1, (1, 1)) and pad in (1, (1, 1)) and not pool.ceil_mode


def max_pool_kernel(policy: FastPathPolicy) -> Callable:
    """:func:`max_pool_forward` under ``policy``, as the forward of :func:`.memory_ops.max_pool_recomputed`."""
    return partial(max_pool_forward, policy=policy)


def _max_pool(pool: nn.MaxPool2d, x: torch.Tensor,
              policy: FastPathPolicy) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    if not _is_3x3_same(pool) or pool.return_indices or pool.dilation not in (1, (1, 1)):
        return None
    return lambda t: max_pool_recomputed(t, [3, 3], [1, 1], [1, 1], False, max_pool_kernel(policy))


def _avg_pool(pool: nn.AvgPool2d, x: torch.Tensor,
              policy: FastPathPolicy) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    if not _is_3x3_same(pool) or pool.count_include_pad or pool.divisor_override is not None:
        return None
    # PyTorch's NCHW average pool is 1.2-3x slower from 1024 values per sample up (16 x 8 x 8:
    # 0.84 of its forward + backward time, 64 x 8 x 8: 0.41); below, it is the faster one.
    if x.shape[1] * x.shape[2] * x.shape[3] < policy.avg_pool_min_values:
        return None
    return _AvgPool3x3.apply


# ---------------------------------------------------------------- dispatch
def fast_layer(layer: nn.Module, x: torch.Tensor,
               policy: FastPathPolicy = DEFAULT_POLICY) -> Optional[torch.Tensor]:
    """``layer(x)`` computed by a kernel of this module, or None where none applies (or ``policy``
    turns the kernels off)."""
    kind = type(layer)
    if kind is nn.Conv2d:   # conv_kernel checks the tensor itself (node_mix calls it directly)
        return conv_kernel(layer, x, layer.weight, layer.groups, policy)
    if not _eligible(x, policy):
        return None
    if kind is nn.MaxPool2d:
        run = _max_pool(layer, x, policy)
    elif kind is nn.AvgPool2d:
        run = _avg_pool(layer, x, policy)
    else:
        return None
    return None if run is None else run(x)
