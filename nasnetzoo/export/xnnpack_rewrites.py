"""Rewrites that keep a network's outputs but suit XNNPACK (ExecuTorch, LiteRT), measured on NASNet.

**Large depthwise convolutions.**  XNNPACK runs a depthwise convolution with its depthwise
kernels only up to 25 taps (5x5).  A larger one, such as the 7x7 of NASNet-A's, AmoebaNet's and
PNASNet's separable convolutions, falls to a general grouped convolution: on a 2-core Intel Xeon
(AVX-512), one 7x7 depthwise conv on 44 channels at 28x28 took 1.0-1.8 ms, 7-13x a 5x5 (0.14 ms)
for twice the taps.  ``split_large_depthwise`` replaces each such conv by a sum of convolutions
over bands of kernel rows, each band within 25 taps (7x7: rows 0-2, 3-5 and 6), reading the
matching rows of the once-padded input (0.23-0.38 ms for that conv).  The result is the same sum
in another order (float reordering only); the original module is left untouched.

**Repeated nodes.**  A NASNet-family cell applies each op's own ReLU (and TF "SAME" padding) to
the same input several times: NASNet-A Mobile's exported graph has 192 ReLUs on 132 distinct
inputs.  ONNX Runtime and OpenVINO merge such repeats when they optimize a graph; ExecuTorch
lowers what it is given.  ``merge_repeated_nodes`` merges them in the exported program (same op,
same inputs, same arguments: exactly the same outputs).

``benchmarks/nasnet_pool_latency.py`` measures both on NASNet-A Mobile against MobileNetV2.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.padding import Conv2dSame, pad_same

# The largest depthwise kernel, in taps, that XNNPACK runs with its depthwise kernels.
XNNPACK_MAX_DEPTHWISE_TAPS = 25


def is_large_depthwise(module: nn.Module, max_taps: int = XNNPACK_MAX_DEPTHWISE_TAPS) -> bool:
    """A depthwise ``nn.Conv2d`` or ``Conv2dSame`` (one input channel per group, zero padding) with
    more than ``max_taps`` taps whose rows fit in ``max_taps``."""
    if type(module) not in (nn.Conv2d, Conv2dSame) or module.padding_mode != "zeros" \
            or isinstance(module.padding, str):
        return False
    kh, kw = module.kernel_size
    return (module.groups == module.in_channels and module.weight.shape[1] == 1
            and kh * kw > max_taps and kw <= max_taps)


class RowBandDepthwise(nn.Module):
    """A depthwise convolution computed as the sum of convolutions over bands of its kernel rows.

    The input is padded once (the conv's symmetric ``padding``, or TF "SAME" for a size-dependent
    ``Conv2dSame``); band ``[a, b)`` of the kernel then reads the padded input from row
    ``a * dilation``, so the bands' outputs line up and add to the full convolution's.  The bands'
    weights are copies: constants of the exported program, as XNNPACK needs them.
    """

    def __init__(self, conv: nn.Conv2d, max_taps: int = XNNPACK_MAX_DEPTHWISE_TAPS) -> None:
        super().__init__()
        kh, kw = conv.kernel_size
        rows = max(1, max_taps // kw)
        self.kernel_size = (kh, kw)
        self.bands = [(a, min(a + rows, kh)) for a in range(0, kh, rows)]
        self.weights = nn.ParameterList(nn.Parameter(conv.weight.detach()[:, :, a:b].clone(), requires_grad=False)
                                        for a, b in self.bands)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.stride, self.dilation, self.groups = tuple(conv.stride), tuple(conv.dilation), conv.groups
        self.same = isinstance(conv, Conv2dSame) and not conv._static
        ph, pw = conv.padding
        self.pad = (pw, pw, ph, ph)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        elif any(self.pad):
            x = F.pad(x, self.pad)
        (sh, _), (dh, _) = self.stride, self.dilation
        out_rows = (x.shape[-2] - dh * (self.kernel_size[0] - 1) - 1) // sh + 1
        out = None
        for (a, b), weight in zip(self.bands, self.weights):
            rows = x[:, :, a * dh:a * dh + (out_rows - 1) * sh + (b - a - 1) * dh + 1]
            y = F.conv2d(rows, weight, None, self.stride, 0, self.dilation, self.groups)
            out = y if out is None else out + y
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, bands={self.bands}, stride={self.stride}, dilation={self.dilation}"


def split_large_depthwise(model: nn.Module, max_taps: int = XNNPACK_MAX_DEPTHWISE_TAPS) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every depthwise conv above ``max_taps`` taps split into row bands,
    and how many were split (``model`` itself, untouched, when there are none)."""
    targets = [name for name, m in model.named_modules() if is_large_depthwise(m, max_taps)]
    if not targets:
        return model, 0
    model = copy.deepcopy(model)  # same module names in the copy
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, RowBandDepthwise(getattr(parent, attr), max_taps))
    return model, len(targets)


def merge_repeated_nodes(exported):
    """Merge the calls in a ``torch.export`` program that repeat an earlier one (same op, same
    inputs and arguments), in place; returns how many were merged.  Ops with side effects or
    random draws are left alone."""
    graph = exported.graph_module.graph
    first: dict = {}
    merged = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.is_impure(impure_random=True):  # side effects or random draws
            continue
        key = (node.target, _hashable(node.args), _hashable(node.kwargs))
        if key in first:
            node.replace_all_uses_with(first[key])
            graph.erase_node(node)
            merged += 1
        else:
            first[key] = node
    if merged:
        exported.graph_module.recompile()
    return merged


def _hashable(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, slice):
        return ("slice", value.start, value.stop, value.step)
    if isinstance(value, (bool, int, float, complex)):
        return (type(value), value)  # add(x, 1) and add(x, 1.0) differ for an integer x
    return value
