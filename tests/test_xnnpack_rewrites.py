"""The XNNPACK rewrites.  Depthwise convolutions above 25 taps, split into row bands:
the same outputs as the whole convolution (float reordering only), at any size, stride, dilation
and padding, and the original model left as it was.  Repeated nodes merged, exactly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import nasnetzoo
from nasnetzoo.export.prepare import calibrate_batchnorm
from nasnetzoo.export.xnnpack_rewrites import (RowBandDepthwise, is_large_depthwise, merge_repeated_nodes,
                                              split_large_depthwise)
from nasnetzoo.ops.padding import Conv2dSame


def _close(a, b):
    return (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("kernel, stride, dilation, padding, bias", [
    (7, 1, 1, 3, False), (7, 2, 1, 3, False), (7, 1, 1, 3, "x2"), ((7, 5), 1, 1, (3, 2), True), (9, 2, 1, 0, False),
    ((6, 5), 1, 2, (5, 4), True), (11, 3, 1, 2, False)])
@pytest.mark.parametrize("size", [(28, 28), (17, 23)])
def test_row_bands_compute_the_whole_depthwise_convolution(kernel, stride, dilation, padding, bias, size):
    torch.manual_seed(0)
    out = 12 if bias == "x2" else 6  # "x2": depth multiplier 2, still one input channel per group
    conv = nn.Conv2d(6, out, kernel, stride, padding, dilation, groups=6, bias=bias is True)
    assert is_large_depthwise(conv)
    banded = RowBandDepthwise(conv)
    assert len(banded.bands) > 1 and all((b - a) * conv.kernel_size[1] <= 25 for a, b in banded.bands)
    x = torch.randn(2, 6, *size)
    with torch.no_grad():
        assert banded(x).shape == conv(x).shape
        assert _close(banded(x), conv(x))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(56, 56), (111, 111), (14, 9)])
def test_row_bands_keep_tf_same_padding(stride, size):
    torch.manual_seed(0)
    conv = Conv2dSame(4, 4, 7, stride, groups=4)
    x = torch.randn(1, 4, *size)
    with torch.no_grad():
        assert _close(RowBandDepthwise(conv)(x), conv(x))


def test_only_large_plain_depthwise_convolutions_are_split():
    assert not is_large_depthwise(nn.Conv2d(8, 8, 5, padding=2, groups=8))      # 25 taps: XNNPACK's own
    assert not is_large_depthwise(nn.Conv2d(8, 8, 7, padding=3, groups=4))      # two input channels per group
    assert not is_large_depthwise(nn.Conv2d(8, 8, 7, padding=3))                # not depthwise
    assert not is_large_depthwise(nn.Conv2d(8, 8, (1, 31), groups=8))          # one row is too long already
    assert not is_large_depthwise(nn.Conv2d(8, 8, 7, padding=3, groups=8, padding_mode="reflect"))
    assert is_large_depthwise(nn.Conv2d(8, 8, 7, padding=3, groups=8))
    plain = nn.Sequential(nn.Conv2d(3, 3, 3, groups=3))
    assert split_large_depthwise(plain) == (plain, 0)


def test_a_nasnet_network_keeps_its_outputs_and_the_original_is_untouched():
    torch.manual_seed(0)
    model = nasnetzoo.load("nasnet_a_mobile", N=1, F=8)
    calibrate_batchnorm(model, (3, 65, 65))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    split, count = split_large_depthwise(model)
    assert count == sum(map(is_large_depthwise, model.modules())) > 0
    assert not any(is_large_depthwise(m) for m in split.modules())
    assert split is not model and all(isinstance(m, Conv2dSame) for n, m in model.named_modules()
                                      if n.endswith("depthwise_conv2d"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.randn(2, 3, 65, 65)
    with torch.no_grad():
        assert _close(split(x), model(x))


class _Repeats(nn.Module):
    """Two branches that each apply their own ReLU and padding to the same input, as NASNet's ops do."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)

    def forward(self, x):
        left = self.a(torch.nn.functional.pad(torch.relu(x), (1, 1, 1, 1)))
        right = self.b(torch.nn.functional.pad(torch.relu(x), (1, 1, 1, 1)))
        return left + right


def _calls(exported, name):
    return [n for n in exported.graph.nodes if n.op == "call_function" and name in str(n.target)]


def test_repeated_nodes_are_merged_and_the_outputs_stay_exactly_the_same():
    torch.manual_seed(0)
    model, x = _Repeats().eval(), torch.randn(1, 3, 9, 9)
    exported = torch.export.export(model, (x,))
    reference = exported.module()(x)
    assert len(_calls(exported, "relu")) == 2 and len(_calls(exported, "pad")) == 2
    assert merge_repeated_nodes(exported) == 2
    assert len(_calls(exported, "relu")) == 1 and len(_calls(exported, "pad")) == 1
    assert len(_calls(exported, "conv")) == 2  # same input, other weights: not a repeat
    assert torch.equal(exported.module()(x), reference)


def test_random_draws_are_never_merged():
    class Noise(nn.Module):
        def forward(self, x):
            return torch.rand_like(x) - torch.rand_like(x)

    exported = torch.export.export(Noise(), (torch.zeros(1000),))
    assert merge_repeated_nodes(exported) == 0
    assert exported.module()(torch.zeros(1000)).abs().max() > 0


def test_the_same_number_of_another_type_is_another_argument():
    class Sums(nn.Module):
        def forward(self, x):
            return x + 1, x + 1.0  # an integer and a float tensor

    exported = torch.export.export(Sums(), (torch.arange(4),))
    assert merge_repeated_nodes(exported) == 0
    as_int, as_float = exported.module()(torch.arange(4))
    assert as_int.dtype == torch.int64 and as_float.dtype == torch.float32
