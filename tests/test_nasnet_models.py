"""NASNet-family (TF-slim) primitives and networks: NASNet-A, AmoebaNet-A, PNASNet-5, ENAS.

Parameter counts are checked against the reference emulations of the official TF code
(``tests/data/reference_figures.json``, ``computed_params_m``) and, exactly, against timm's
``nasnetalarge`` / ``pnasnet5large``.  The large models are built once per module and run forward
only at a small input (the timm logits check); everything else runs small models on small inputs.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nasnetzoo.errors import ConfigError
from nasnetzoo.genotype import Genotype
from nasnetzoo.models.enas import ENASNet
from nasnetzoo.models.layers import DropPath
from nasnetzoo.models.nasnet import NASNet, calc_reduction_layers
from nasnetzoo.ops.padding import Pool2dSame, pad_same, same_pad_arg, same_pads
from nasnetzoo.ops.registry import build_op, op_names
from nasnetzoo.ops.tf import ActConvBn, Bottleneck, FactorizedReduction, StackedSeparable

GENOTYPES = Path(__file__).resolve().parents[1] / "genotypes"


def genotype(name: str) -> Genotype:
    return Genotype.from_file(GENOTYPES / f"{name}.yaml")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("auxiliary_head."))


# name -> (genotype, builder kwargs, computed_params_m of reference_facts.json)
CONFIGS = {
    "nasnet_a_mobile": ("nasnet_a", dict(N=4, F=44), 5.288),
    "nasnet_a_cifar": ("nasnet_a", dict(N=6, F=32, stem="cifar", stem_multiplier=3.0, num_classes=10), 3.328),
    "amoebanet_a_mobile": ("amoebanet_a", dict(N=4, F=50), 5.087),
    "amoebanet_a_cifar": ("amoebanet_a", dict(N=6, F=36, stem="cifar", stem_multiplier=3.0, num_classes=10),
                          3.207),
    "pnasnet5_mobile": ("pnasnet5", dict(N=3, F=54, reduction="stride", skip_reduction_layer_input=True), 5.064),
}
LARGE = {
    "nasnet_a_large": ("nasnet_a", dict(N=6, F=168, stem_multiplier=3.0, skip_reduction_layer_input=True),
                       88.748, "nasnetalarge"),
    "pnasnet5_large": ("pnasnet5", dict(N=4, F=216, stem_multiplier=3.0, reduction="stride",
                                        skip_reduction_layer_input=True), 86.056, "pnasnet5large"),
}


def build(name: str, **overrides) -> NASNet:
    geno, kwargs, _ = CONFIGS[name]
    return NASNet(genotype(geno), **{**kwargs, **overrides})


pytestmark = pytest.mark.usefixtures("one_thread")


# ======================================================================== padding helpers
@pytest.mark.parametrize("size,kernel,stride,dilation,expected", [
    (224, 3, 2, 1, (0, 1)),   # even size, stride 2: the extra row goes to the bottom (TF)
    (111, 3, 2, 1, (1, 1)),
    (112, 7, 2, 1, (2, 3)),
    (64, 5, 2, 1, (1, 2)),
    (65, 5, 2, 1, (2, 2)),
    (14, 1, 2, 1, (0, 0)),    # strided 1x1 never pads
    (10, 3, 1, 2, (2, 2)),    # dilated: effective kernel 5
    (8, 2, 1, 1, (0, 1)),     # even kernel (ENAS aux conv)
    (5, 7, 1, 1, (3, 3)),
])
def test_same_pads_match_hand_computed_tf(size, kernel, stride, dilation, expected):
    assert same_pads(size, kernel, stride, dilation) == expected
    # and the output size is ceil(size / stride)
    before, after = expected
    assert (size + before + after - dilation * (kernel - 1) - 1) // stride + 1 == -(-size // stride)


def test_same_pad_arg_order_and_pad_same():
    assert same_pad_arg((224, 65), 3, 2) == (1, 1, 0, 1)  # (left, right, top, bottom)
    x = torch.ones(1, 1, 4, 4)
    y = pad_same(x, 3, 2)
    assert y.shape == (1, 1, 5, 5) and y[0, 0, -1].sum() == 0 and y[0, 0, :, -1].sum() == 0 and y.sum() == 16


def test_avg_pool_same_excludes_padding_like_tf():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = Pool2dSame("avg", 3, 2)(x)
    # TF: pads (0, 1) on each axis; windows rows/cols {0,1,2} and {2,3}
    expected = torch.tensor([[x[0, 0, 0:3, 0:3].mean(), x[0, 0, 0:3, 2:4].mean()],
                             [x[0, 0, 2:4, 0:3].mean(), x[0, 0, 2:4, 2:4].mean()]])
    torch.testing.assert_close(out[0, 0], expected)
    # timm's AvgPool2dSame counts the padded zeros
    out_timm = Pool2dSame("avg", 3, 2, count_pad=True)(x)
    assert torch.isclose(out_timm[0, 0, 1, 1], x[0, 0, 2:4, 2:4].sum() / 9)
    # stride 1: padding excluded either way
    torch.testing.assert_close(Pool2dSame("avg", 3, 1)(x), Pool2dSame("avg", 3, 1, count_pad=True)(x))
    assert Pool2dSame("avg", 3, 1)(x)[0, 0, 0, 0] == x[0, 0, 0:2, 0:2].mean()


def test_max_pool_same_pads_with_minus_inf():
    x = -torch.ones(1, 1, 4, 4)
    assert (Pool2dSame("max", 3, 2)(x) == -1).all()


# ======================================================================== ops
def test_nasnet_op_names_registered():
    names = set(op_names("nasnet"))
    expected = {"none", "separable_3x3_2", "separable_5x5_2", "separable_7x7_2", "avg_pool_3x3", "avg_pool_5x5",
                "avg_pool_7x7", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7", "1x7_7x1", "1x3_3x1",
                "dilated_3x3", "conv_1x1", "conv_3x3"}
    assert expected <= names


@pytest.mark.parametrize("op", ["none", "separable_3x3_2", "separable_5x5_2", "separable_7x7_2", "avg_pool_3x3",
                                "max_pool_5x5", "avg_pool_7x7", "1x7_7x1", "1x3_3x1", "dilated_3x3",
                                "conv_1x1", "conv_3x3"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("C_in,C_out", [(8, 8), (12, 8)])
@pytest.mark.parametrize("size", [9, 10])
def test_op_output_shape(op, stride, C_in, C_out, size):
    module = build_op(op, C_in, C_out, stride, family="nasnet", bn_eps=1e-3, unknown_option=1)
    y = module(torch.randn(2, C_in, size, size))
    assert y.shape == (2, C_out, -(-size // stride), -(-size // stride))


def test_none_at_stride_2_is_relu_conv1x1_bn_not_factorized():
    op = build_op("none", 8, 8, 2, family="nasnet")
    assert isinstance(op, ActConvBn) and op.conv.stride == (2, 2) and op.conv.kernel_size == (1, 1)
    op.eval()
    x = torch.randn(2, 8, 7, 7)
    expected = op.bn(nn.functional.conv2d(torch.relu(x), op.conv.weight, stride=2))
    torch.testing.assert_close(op(x), expected)
    assert isinstance(build_op("none", 8, 8, 1, family="nasnet"), nn.Identity)
    assert isinstance(build_op("none", 8, 16, 1, family="nasnet"), ActConvBn)
    enas = build_op("none", 8, 8, 2, family="nasnet", identity_reduce="factorized")
    assert isinstance(enas, FactorizedReduction) and enas(x).shape == (2, 8, 4, 4)


def test_separable_first_pointwise_maps_to_c_out():
    op = build_op("separable_5x5_2", 96, 42, 2, family="nasnet")
    assert isinstance(op, StackedSeparable)
    assert op.separable_1.depthwise_conv2d.weight.shape == (96, 1, 5, 5)
    assert op.separable_1.pointwise_conv2d.weight.shape == (42, 96, 1, 1)
    assert op.separable_2.depthwise_conv2d.weight.shape == (42, 1, 5, 5)


def test_pool_projection_only_on_channel_mismatch():
    assert not any(True for _ in build_op("avg_pool_3x3", 8, 8, 2, family="nasnet").parameters())
    proj = build_op("max_pool_3x3", 96, 54, 2, family="nasnet")
    assert [n for n, _ in proj.named_parameters()][:1] == ["conv.weight"] and isinstance(proj.act, nn.Identity)
    assert isinstance(build_op("max_pool_3x3", 96, 54, 1, family="nasnet", pool_proj_act=True).act, nn.ReLU)


def test_amoeba_bottleneck_layout():
    op = build_op("1x7_7x1", 40, 40, 2, family="nasnet")
    assert isinstance(op, Bottleneck)
    assert op.pre_1x1.weight.shape == (10, 40, 1, 1) and op.post_1x1.weight.shape == (40, 10, 1, 1)
    assert op.op.conv_1x7.stride == (1, 2) and op.op.conv_7x1.stride == (2, 1)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in op.modules()) == 4
    assert build_op("1x3_3x1", 40, 40, 1, family="nasnet").pre_1x1.weight.shape[0] == 15  # int(3 * 40 / 8)
    assert not build_op("conv_3x3", 2, 2, 1, family="nasnet").has_bottleneck  # int(2 / 4) == 0


@pytest.mark.parametrize("size", [7, 8, 65])
@pytest.mark.parametrize("C_out", [10, 27])
def test_factorized_reduction_odd_sizes_and_widths(size, C_out):
    fr = FactorizedReduction(6, C_out, 2).eval()
    x = torch.randn(1, 6, size, size)
    y = fr(x)
    assert y.shape == (1, C_out, -(-size // 2), -(-size // 2))
    # path 1 reads the even rows/columns, path 2 the odd ones, zero-padded where the input ends
    pad = size % 2
    p1 = nn.functional.conv2d(x[:, :, ::2, ::2], fr.path_1.conv.weight)
    p2 = nn.functional.conv2d(nn.functional.pad(x[:, :, 1::2, 1::2], (0, pad, 0, pad)), fr.path_2.conv.weight)
    assert p1.shape[1] == C_out // 2 and p2.shape[1] == C_out - C_out // 2  # TF's odd-width rule
    torch.testing.assert_close(y, fr.final_path_bn(torch.cat([p1, p2], 1)))


# ======================================================================== networks: structure
def test_calc_reduction_layers_matches_tf():
    assert calc_reduction_layers(18, 2) == [6, 12]
    assert calc_reduction_layers(12, 2) == [4, 8]
    assert calc_reduction_layers(9, 2) == [3, 6]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_param_counts_within_1pct_of_reference(name):
    model = build(name)
    ref = CONFIGS[name][2]
    assert abs(count_params(model) / 1e6 / ref - 1) < 0.01, (name, count_params(model), ref)


def test_enas_param_count():
    model = ENASNet(genotype("enas"))
    assert abs(count_params(model) / 1e6 / 3.894 - 1) < 0.01
    assert model.classifier.bias is None
    assert model.pool_layers == [5, 11]


def test_nasnet_mobile_matches_cadene_exactly():
    # Cadene's nasnetamobile: 5 289 978 parameters (1000 classes), reference_facts §4.4.
    assert count_params(build("nasnet_a_mobile")) == 5_289_978


def test_wiring_names_and_skip_reduction_input():
    mobile = build("nasnet_a_mobile")
    plan = mobile.wiring()
    assert plan["cell_stem_0"] == ("conv0", None)
    assert plan["cell_stem_1"] == ("cell_stem_0", "conv0")
    assert plan["reduction_cell_0"] == ("cell_3", "cell_2")
    assert plan["cell_4"] == ("reduction_cell_0", "cell_3")  # skip_reduction_layer_input=0
    assert plan["cell_5"] == ("cell_4", "reduction_cell_0")
    large = NASNet(genotype("nasnet_a"), N=6, F=8, stem_multiplier=3.0, skip_reduction_layer_input=True)
    plan = large.wiring()
    assert plan["cell_6"] == ("reduction_cell_0", "cell_4")    # timm: cell_6(x_reduction_cell_0, x_cell_4)
    assert plan["cell_12"] == ("reduction_cell_1", "cell_10")
    assert plan["reduction_cell_1"] == ("cell_11", "cell_10")
    pnas = build("pnasnet5_mobile")
    plan = pnas.wiring()
    assert plan["cell_3"] == ("cell_2", "cell_1") and pnas.cell_3.stride == 2
    assert plan["cell_4"] == ("cell_3", "cell_2") and pnas.cell_4.stride == 1
    assert not hasattr(pnas, "reduction_cell_0")


def test_cell_input_handling():
    model = build("nasnet_a_mobile")
    assert not model.cell_stem_0.has_prev                                    # prev None -> raw input
    assert isinstance(model.cell_stem_1.conv_prev_1x1, FactorizedReduction)  # resolution mismatch
    assert isinstance(model.cell_0.conv_prev_1x1, FactorizedReduction)
    assert isinstance(model.cell_1.conv_prev_1x1, ActConvBn)                  # channel mismatch
    # NASNet-A normal cell: 6 F channels; reduction: 4 F
    assert model.cell_0.out_channels == 6 * 44 and model.reduction_cell_0.out_channels == 4 * 88
    assert model.num_features == 6 * 4 * 44 == 1056


def test_concat_combine_doubles_a_nodes_channels():
    d = genotype("nasnet_a").to_dict()
    d["normal"]["combine"] = ["add", "concat", "add", "add", "add"]   # node 3 = cat(sep5(p), sep3(p))
    model = NASNet(Genotype.from_dict(d), N=1, F=8, stem="cifar", num_classes=10).eval()
    cell = model.cell_0
    assert cell.concat_nodes == [False, True, False, False, False]
    # output = [p, n2, n3, n4, n5, n6]: n3 has 2F channels and the last state F, so n3 is projected
    # back to F by the output combine (TF's _combine_unused_states), the others are not.
    assert cell.out_channels == 6 * 8
    assert cell.reduced == [False, False, True, False, False, False]
    x = torch.randn(2, 3, 12, 12)
    assert model(x).shape == (2, 10)
    d["normal"]["combine"] = ["add", "add", "add", "add", "concat"]   # the last node: 2F, others reduced
    model = NASNet(Genotype.from_dict(d), N=1, F=8, stem="cifar", num_classes=10).eval()
    assert model.cell_0.out_channels == 6 * 16 and model(x).shape == (2, 10)


def test_scheduled_drop_path_scales_and_none_edges():
    model = build("nasnet_a_mobile")
    assert model.total_num_cells == 16
    assert model.cell_stem_0.drop_path.scale == pytest.approx(1 / 16)
    assert model.reduction_cell_0.drop_path.scale == pytest.approx(7 / 16)
    assert model.cell_11.drop_path.scale == pytest.approx(1.0)
    # normal cell: nodes 4 (avg_pool, none) and 6 (separable, none) skip drop path on the identity
    assert model.cell_0.drops[2] == (True, False) and model.cell_0.drops[4] == (True, False)
    model.drop_path_prob = 0.3
    assert {m.p for m in model.modules() if isinstance(m, DropPath)} == {0.3}


def test_bad_arguments():
    with pytest.raises(ConfigError):
        NASNet(genotype("nasnet_a"), N=2, F=8, stem="mnist")
    with pytest.raises(ConfigError):
        NASNet(genotype("nasnet_a"), N=2, F=8, reduction="pool")
    with pytest.raises(ConfigError):
        NASNet(genotype("darts_v2"), N=2, F=8)


# ======================================================================== networks: forward
def test_nasnet_mobile_forward_backward_64():
    model = build("nasnet_a_mobile", num_classes=7, auxiliary=True, drop_path_rate=0.2, drop_rate=0.5).train()
    x = torch.randn(2, 3, 64, 64)
    logits, aux = model(x)
    assert logits.shape == (2, 7) and aux.shape == (2, 7)
    (logits.sum() + 0.4 * aux.sum()).backward()
    assert model.conv0.conv.weight.grad is not None
    assert model.cell_stem_0.comb_iter_0_left.separable_1.depthwise_conv2d.weight.grad is not None
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert isinstance(a, torch.Tensor) and a.shape == (2, 7)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # nothing random in eval


@pytest.mark.parametrize("name,size", [("amoebanet_a_mobile", 65), ("pnasnet5_mobile", 97),
                                       ("nasnet_a_mobile", 97), ("nasnet_a_cifar", 33)])
def test_odd_input_sizes(name, size):
    model = build(name, N=1, auxiliary=True).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, model.num_classes)
    feats = model.forward_features(torch.randn(1, 3, size, size))
    assert feats.shape[1] == model.num_features


@pytest.mark.parametrize("name", ["nasnet_a_cifar", "amoebanet_a_cifar"])
def test_cifar_models_train_step_with_aux(name):
    model = build(name, N=2, F=8, auxiliary=True, drop_path_rate=0.3).train()
    logits, aux = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)
    logits.mean().backward()
    model.eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_aux_head_adapts_to_other_input_sizes():
    model = build("nasnet_a_mobile", N=1, F=8, auxiliary=True).train()
    assert model.auxiliary_head.conv.kernel_size == (4, 4)  # 14x14 at 224 -> 4x4 after the 5/3 pool
    for size in (32, 224, 97):
        _, aux = model(torch.randn(2, 3, size, size))
        assert aux.shape == (2, 1000)


def test_enas_forward_aux_and_eval():
    model = ENASNet(genotype("enas"), num_layers=3, out_filters=8, auxiliary=True, drop_path_rate=0.4,
                    drop_rate=0.2).train()
    logits, aux = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)
    (logits.sum() + aux.sum()).backward()
    assert model.layer_0.conv_cur_calib.conv.weight.grad is not None  # ENAS' pool_y calibration
    model.eval()
    x = torch.randn(2, 3, 35, 35)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    full = ENASNet(genotype("enas"), auxiliary=True)
    assert full._plan[full._aux_index - 2][0] == "layer_12"
    assert full.auxiliary_head.conv.kernel_size == (2, 2)


def test_reset_classifier():
    model = build("pnasnet5_mobile", N=1, F=8, auxiliary=True)
    model.reset_classifier(5)
    model.train()
    logits, aux = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == aux.shape == (2, 5)


# ======================================================================== large models vs timm
def _randomize(model: nn.Module) -> None:
    """Random BN statistics and affine parameters, so BN is not a no-op in eval."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def _to_timm_key(key: str, timm_name: str) -> str:
    """Our parameter names -> timm's (``reference_facts`` §4.4)."""
    key = key.replace("classifier.", "last_linear.", 1) if key.startswith("classifier.") else key
    if timm_name == "pnasnet5large":
        return "conv_0." + key[len("conv0."):] if key.startswith("conv0.") else key
    # timm's nasnetalarge keeps the factorized reduction of the previous input on the cell itself
    return key.replace(".conv_prev_1x1.path_", ".path_").replace(".conv_prev_1x1.final_path_bn",
                                                                   ".final_path_bn")


@pytest.fixture(scope="module")
def large_pairs():
    """Ours (pool_padding='timm') and timm's randomly initialised large models, weights mapped."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    pairs = {}
    for name, (geno, kwargs, ref, timm_name) in LARGE.items():
        theirs = timm.create_model(timm_name, pretrained=False)
        _randomize(theirs)
        ours = NASNet(genotype(geno), pool_padding="timm", **kwargs)
        pairs[name] = (ours, theirs)
    return pairs


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LARGE))
def test_large_param_counts(name, large_pairs):
    ours, theirs = large_pairs[name]
    ref = LARGE[name][2]
    assert abs(count_params(ours) / 1e6 / ref - 1) < 0.01
    assert count_params(ours) == sum(p.numel() for p in theirs.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LARGE))
def test_large_models_match_timm_logits(name, large_pairs):
    """Same wiring as timm/Cadene: identical eval logits after mapping timm's weights by name.

    75x75 gives odd feature maps (37, 19, 5, 3) so the asymmetric/symmetric SAME paths and the
    factorized reductions on odd sizes are all exercised.
    """
    ours, theirs = large_pairs[name]
    timm_name = LARGE[name][3]
    theirs_sd = theirs.state_dict()
    mapping = {k: _to_timm_key(k, timm_name) for k in ours.state_dict()}
    assert sorted(mapping.values()) == sorted(theirs_sd)
    ours.load_state_dict({k: theirs_sd[v] for k, v in mapping.items()})
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 3, 75, 75)
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
    assert (got - expected).abs().max().item() < 1e-4
    if name == "nasnet_a_large":  # the check can see the one TF/timm difference: stride-2 avg pools
        tf_model = NASNet(genotype("nasnet_a"), pool_padding="tf", **LARGE[name][1]).eval()
        tf_model.load_state_dict(ours.state_dict())
        with torch.no_grad():
            assert (tf_model(x) - expected).abs().max().item() > 1e-4
