"""The CPU kernels compute what the modules they replace compute, gradients included."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nasnetzoo.search.backends import cpu_kernels
from nasnetzoo.search.backends.cpu_kernels import fast_layer
from nasnetzoo.search.backends.policy import FastPathPolicy

NATIVE = FastPathPolicy(kernels=False)   # the fused path on PyTorch's own kernels

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from cpu_kernels import LAYERS  # noqa: E402  (benchmarks/cpu_kernels.py: the layers the kernels replace)

SEP5, DIL3, DIL5 = "sep_conv_5x5 depthwise", "dil_conv_3x3 depthwise", "dil_conv_5x5 depthwise"
DIL3_S2, DIL5_S2 = "dil_conv_3x3 depthwise, stride 2", "dil_conv_5x5 depthwise, stride 2"
POINTWISE = "sep/dil_conv pointwise 1x1"
SIZES = {SEP5: [32, 33], DIL3: [32, 33, 12], DIL5: [32, 12], DIL3_S2: [32, 33], DIL5_S2: [23, 32],
         POINTWISE: [5, 32], "max_pool_3x3": [7, 32], "avg_pool_3x3": [12, 16, 19]}  # where each runs
CASES = [(name, size, sliced) for name, sizes in SIZES.items() for size in sizes for sliced in (False, True)
         if not (sliced and name == POINTWISE)]   # a 1x1 conv reads a dw conv's output, never a slice


def outputs_and_grads(layer, x, grad_out):
    x = x.detach().requires_grad_()
    out = fast_layer(layer, x)
    assert out is not None, "the kernel declined a layer it is written for"
    params = list(layer.parameters())
    grads = torch.autograd.grad(out, [x] + params, grad_out)
    return out.detach(), grads


@pytest.mark.parametrize("name,size,sliced", CASES)   # sliced: PC-DARTS hands the ops a channel slice
def test_kernel_equals_module_in_float64(name, size, sliced):
    torch.manual_seed(0)
    layer = LAYERS[name](8).double()
    full = torch.randn(2, 16 if sliced else 8, size, size, dtype=torch.float64)
    x = full[:, :8] if sliced else full
    assert fast_layer(layer, x, NATIVE) is None
    x_ref = x.detach().requires_grad_()
    ref = layer(x_ref)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, [x_ref] + list(layer.parameters()), grad_out)
    out, grads = outputs_and_grads(layer, x, grad_out)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-11)


def test_max_pool_routes_ties_like_pytorch():
    """Windows with several equal maxima: the gradient goes where PyTorch's argmax points."""
    torch.manual_seed(0)
    x = torch.randint(0, 3, (2, 4, 9, 9)).double()
    pool, grad_out = nn.MaxPool2d(3, 1, 1), torch.randn(2, 4, 9, 9, dtype=torch.float64)
    x_ref = x.clone().requires_grad_()
    (ref,) = torch.autograd.grad(pool(x_ref), x_ref, grad_out)
    _, (grad,) = outputs_and_grads(pool, x, grad_out)
    assert torch.allclose(grad, ref, rtol=0, atol=1e-12)   # a misrouted gradient is off by O(1)


@pytest.mark.parametrize("name,math", [(SEP5, "_Depthwise"), (DIL5_S2, "_Depthwise"), (POINTWISE, "_Pointwise")])
def test_architecture_gradients_skip_the_conv_weight_gradient(name, math, monkeypatch):
    """autograd.grad of the input alone (an architecture step) never computes the conv weight's."""
    calls = []
    kind = getattr(cpu_kernels, math)
    real = kind.weight_grad
    monkeypatch.setattr(kind, "weight_grad", lambda *a: calls.append(1) or real(*a))
    conv = LAYERS[name](8)
    x = torch.randn(2, 8, 32, 32, requires_grad=True)
    torch.autograd.grad(fast_layer(conv, x).sum(), x)
    assert calls == []
    fast_layer(conv, x).sum().backward()
    assert calls == [1] and conv.weight.grad is not None


@pytest.mark.parametrize("case", ["channels_last", "stride2", "padding0", "float16", "autocast", "small_map",
                                  "few_channels", "small_dilated", "small_strided", "stride2_undilated_pad",
                                  "plain_3x3"])
def test_fast_layer_declines_what_it_was_not_written_for(case):
    conv, x = LAYERS[SEP5](8), torch.randn(2, 8, 32, 32)
    if case == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif case == "stride2":
        conv = nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=8, bias=False)
    elif case == "padding0":
        conv = nn.Conv2d(8, 8, 5, padding=0, groups=8, bias=False)
    elif case == "float16":
        x = x.half()
    elif case == "small_map":
        x = torch.randn(2, 8, 16, 16)
    elif case == "few_channels":
        conv, x = LAYERS[SEP5](2), torch.randn(2, 2, 32, 32)   # 2048 values per sample
    elif case == "small_dilated":   # 8 x 10 x 10 = 800 values per sample
        conv, x = LAYERS[DIL5](8), torch.randn(2, 8, 10, 10)
    elif case == "small_strided":   # 8 x 16 x 16 = 2048 values per sample
        conv, x = LAYERS[DIL3_S2](8), torch.randn(2, 8, 16, 16)
    elif case == "stride2_undilated_pad":   # stride 2 = dilation 2, but not 'same' padding
        conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, dilation=2, groups=8, bias=False)
    elif case == "plain_3x3":
        conv = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    if case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fast_layer(conv, x) is None
    else:
        assert fast_layer(conv, x) is None
    assert fast_layer(nn.MaxPool2d(3, 2, 1), torch.randn(2, 4, 8, 8)) is None
    assert fast_layer(nn.AvgPool2d(3, 1, 1), torch.randn(2, 4, 16, 16)) is None   # count_include_pad=True
    assert fast_layer(LAYERS["avg_pool_3x3"](8), torch.randn(2, 8, 8, 8)) is None   # 512 values per sample
    assert fast_layer(nn.Conv2d(4, 8, 1, bias=True), torch.randn(2, 4, 32, 32)) is None
    assert fast_layer(nn.Conv2d(4, 8, 1, stride=2, bias=False), torch.randn(2, 4, 32, 32)) is None
    assert fast_layer(nn.Conv2d(4, 8, 1, bias=False), torch.randn(2, 8, 32, 32)[:, :4]) is None   # not contiguous


def test_grouped_pointwise_conv_is_the_grouped_matrix_product():
    """The 1x1 conv of several edges side by side (groups = edges) equals F.conv2d's, gradients included."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, 1, bias=False).double()
    x = torch.randn(2, 18, 5, 7, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(12, 6, 1, 1, dtype=torch.float64, requires_grad=True)
    out = cpu_kernels.conv_kernel(conv, x, weight, 3)
    ref = torch.nn.functional.conv2d(x, weight, groups=3)
    grad = torch.randn_like(ref)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(out, [x, weight], grad), torch.autograd.grad(ref, [x, weight], grad)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-11)


def test_benchmark_script_runs():
    script = REPO / "benchmarks" / "cpu_kernels.py"
    out = subprocess.run([sys.executable, str(script), "--reps", "1", "--threads", "1", "--shapes", "2,8,32,32",
                          "2,8,8,8"], capture_output=True, text=True, timeout=120, check=True).stdout
    rows = {tuple(line.split()[:3]): line for line in out.splitlines() if line.startswith("dil_conv_5x5")}
    assert len(rows[("dil_conv_5x5", "depthwise", "2,8,32,32")].split()) == 8   # four times and a ratio
    assert "declines this shape" in rows[("dil_conv_5x5", "depthwise", "2,8,8,8")]


@pytest.mark.parametrize("kernel,stride,padding,ceil_mode", [(2, 2, 0, True), (2, 2, 0, False), (3, 2, 1, False),
                                                             (3, 2, 1, True), (3, 3, 0, True),
                                                             (3, 3, 1, True)])   # the last: a window left out
@pytest.mark.parametrize("size,sliced", [(32, False), (33, True), (17, False)])
def test_strided_max_pool_forward_is_pytorchs_to_the_bit(kernel, stride, padding, ceil_mode, size, sliced):
    """A reduction cell's stride-2 max pools and PC-DARTS's 2x2 bypass pools: same values (maxima are
    exact), same output size (ceil_mode's last-window rule), and through fused.max_pool the same gradient."""
    from nasnetzoo.search.backends.fused import max_pool
    torch.manual_seed(0)
    full = torch.randn(2, 32 if sliced else 16, size, size, dtype=torch.float64)
    x = full[:, :16] if sliced else full   # PC-DARTS's bypass is a channel slice
    args = ([kernel] * 2, [stride] * 2, [padding] * 2, ceil_mode)
    out = cpu_kernels.max_pool_forward(x, *args)
    assert out is not None
    ref = nn.functional.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode)
    assert out.shape == ref.shape and torch.equal(out, ref)
    pool = nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad_out = torch.randn_like(ref)
    (grad,) = torch.autograd.grad(max_pool(pool, x_fast), x_fast, grad_out)
    (grad_ref,) = torch.autograd.grad(pool(x_ref), x_ref, grad_out)
    assert torch.equal(grad, grad_ref)


def test_strided_max_pool_leaves_small_maps_to_pytorch():
    small = torch.randn(2, 8, 16, 16)   # 2048 values per sample
    assert cpu_kernels.max_pool_forward(small, [3, 3], [2, 2], [1, 1], False) is None
    assert cpu_kernels.max_pool_forward(torch.randn(2, 16, 32, 32), [2, 2], [2, 2], [0, 0], True, NATIVE) is None
