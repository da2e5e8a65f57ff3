"""DARTS-family primitives and networks: shapes, key layouts, parameter counts, drop path.

Full-size networks are only built (cheap) to count parameters and check keys; forward passes
use small C / layers so the file runs in well under a minute on two CPU cores.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nasnetzoo.errors import ConfigError
from nasnetzoo.genotype import Genotype
from nasnetzoo.models.darts import (AuxiliaryHeadCIFAR, AuxiliaryHeadImageNet, DartsCIFARNetwork,
                                    DartsImageNetNetwork)
from nasnetzoo.models.layers import DropPath
from nasnetzoo.ops.darts import (DARTS_PRIMITIVES, FactorizedReduce, Identity, ReLUConvBN,
                                 Zero)
from nasnetzoo.ops.registry import build_op, op_names, register_op, unregister_op

REPO = Path(__file__).resolve().parents[1]
GENOTYPES = REPO / "genotypes"
REFERENCE = REPO / "tests" / "data" / "reference_figures.json"  # figures with their sources

DARTS_GENOTYPES = ["darts_v1", "darts_v2", "pcdarts_cifar", "pcdarts_imagenet", "pdarts",
                   "snas_mild", "gdas_v1"]
ALL_OPS = list(DARTS_PRIMITIVES) + ["sep_conv_7x7", "conv_7x1_1x7"]

# Small but structurally complete: two reductions, aux head after a reduction cell.
SMALL = dict(C=8, layers=5)


def genotype(name: str) -> Genotype:
    return Genotype.from_file(GENOTYPES / f"{name}.yaml")


def count_params(model: nn.Module, skip_aux: bool = True) -> int:
    return sum(p.numel() for n, p in model.named_parameters()
               if not (skip_aux and n.startswith("auxiliary_head.")))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


# ==================================================================== ops
def test_all_primitives_registered():
    assert set(ALL_OPS) <= set(op_names("darts"))


@pytest.mark.parametrize("pool_bn", [None, "affine", "buffers"])
@pytest.mark.parametrize("size", [8, 7, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_op_output_shapes(stride, size, pool_bn):
    x = torch.randn(2, 4, size, size + 2)
    for name in ALL_OPS:
        op = build_op(name, 4, 4, stride, pool_bn=pool_bn, unknown_option=1)
        y = op(x)
        assert y.shape == (2, 4, math.ceil(size / stride), math.ceil((size + 2) / stride)), name


def test_none_op_is_zero_with_strided_shape():
    x = torch.randn(2, 3, 9, 5)
    y = Zero(2)(x)
    assert y.shape == (2, 3, 5, 3) and not y.any()
    assert Zero(1)(x).shape == x.shape


def test_skip_connect_is_identity_or_factorized_reduce():
    assert isinstance(build_op("skip_connect", 6, 6, 1), Identity)
    assert isinstance(build_op("skip_connect", 6, 6, 2), FactorizedReduce)


def test_factorized_reduce_equals_official_on_even_sizes():
    torch.manual_seed(0)
    fr = FactorizedReduce(6, 8).eval()
    with torch.no_grad():
        fr.bn.running_mean.uniform_(-1, 1)
        fr.bn.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 6, 10, 12)
    with torch.no_grad():
        r = torch.relu(x)  # official: cat(conv_1(x), conv_2(x[:, :, 1:, 1:])), then BN
        expected = fr.bn(torch.cat([fr.conv_1(r), fr.conv_2(r[:, :, 1:, 1:])], dim=1))
        torch.testing.assert_close(fr(x), expected)
        assert fr(torch.randn(2, 6, 7, 9)).shape == (2, 8, 4, 5)


def test_op_argument_errors():
    with pytest.raises(ValueError, match="C_in == C_out"):
        build_op("sep_conv_3x3", 4, 8, 1)
    with pytest.raises(ValueError, match="pool_bn"):
        build_op("max_pool_3x3", 4, 4, 1, pool_bn="bogus")
    with pytest.raises(ValueError, match="even C_out"):
        FactorizedReduce(4, 5)


def test_op_key_layouts_match_official():
    keys = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()
                      if not k.endswith("num_batches_tracked")}
    sep = keys(build_op("sep_conv_5x5", 4, 4, 2))
    assert sep["op.1.weight"] == (4, 1, 5, 5) and sep["op.2.weight"] == (4, 4, 1, 1)
    assert {k.rsplit(".", 1)[0] for k in sep} == {f"op.{i}" for i in (1, 2, 3, 5, 6, 7)}
    dil = keys(build_op("dil_conv_3x3", 4, 4, 1))
    assert {k.rsplit(".", 1)[0] for k in dil} == {"op.1", "op.2", "op.3"}
    assert set(keys(build_op("skip_connect", 4, 4, 2))) == {
        "conv_1.weight", "conv_2.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"}
    assert keys(ReLUConvBN(6, 4, 1, 1, 0))["op.1.weight"] == (4, 6, 1, 1)
    assert set(keys(build_op("conv_7x1_1x7", 4, 4, 1))) >= {"1.weight", "2.weight", "3.weight"}
    for name in ("max_pool_3x3", "avg_pool_3x3", "none"):
        assert not build_op(name, 4, 4, 2).state_dict()
    # SNAS pools carry an affine BN in .op; old GDAS pools a buffers-only BN.
    assert set(keys(build_op("avg_pool_3x3", 4, 4, 1, pool_bn="affine"))) == {
        "op.1.weight", "op.1.bias", "op.1.running_mean", "op.1.running_var"}
    assert set(keys(build_op("max_pool_3x3", 4, 4, 1, pool_bn="buffers"))) == {
        "1.running_mean", "1.running_var"}
    # affine=False (search supernets) removes every BN weight/bias: only conv weights remain.
    for name in ("sep_conv_3x3", "dil_conv_5x5", "skip_connect"):
        assert all(p.dim() == 4 for p in build_op(name, 4, 4, 2, affine=False).parameters())


# ==================================================================== networks: every genotype
@pytest.mark.parametrize("name", DARTS_GENOTYPES)
@pytest.mark.parametrize("builder,size", [(DartsCIFARNetwork, 32), (DartsImageNetNetwork, 112)])
def test_genotype_builds_forward_backward(name, builder, size):
    torch.manual_seed(0)
    kwargs = {"pool_bn": "affine"} if name == "snas_mild" else {}
    model = builder(genotype(name), num_classes=7, auxiliary=True, drop_path_rate=0.2,
                    **SMALL, **kwargs).train()
    assert model.genotype == genotype(name)
    logits, aux = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 7) and aux.shape == (2, 7)
    (logits.sum() + 0.4 * aux.sum()).backward()
    first_conv = model.stem[0] if builder is DartsCIFARNetwork else model.stem0[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert model.auxiliary_head.classifier.weight.grad is not None


# ==================================================================== parameter counts
PARAM_CASES = [
    ("DARTS_V1_cifar", DartsCIFARNetwork, "darts_v1", {}),
    ("DARTS_V2_cifar", DartsCIFARNetwork, "darts_v2", {}),
    ("PC-DARTS_cifar", DartsCIFARNetwork, "pcdarts_cifar", {}),
    ("P-DARTS_cifar", DartsCIFARNetwork, "pdarts", {}),
    ("SNAS_mild_cifar", DartsCIFARNetwork, "snas_mild", {"pool_bn": "affine"}),
    ("GDAS_cifar", DartsCIFARNetwork, "gdas_v1", {"C": 36, "layers": 20}),
    ("DARTS_V2_imagenet", DartsImageNetNetwork, "darts_v2", {}),
    ("PC-DARTS_imagenet", DartsImageNetNetwork, "pcdarts_imagenet", {}),
    ("PC-DARTS_cifar_genotype_on_imagenet", DartsImageNetNetwork, "pcdarts_cifar", {}),
    ("P-DARTS_imagenet", DartsImageNetNetwork, "pdarts", {"aux_bn": True}),
    ("GDAS_imagenet", DartsImageNetNetwork, "gdas_v1", {"C": 50, "layers": 14}),
]


@pytest.mark.parametrize("key,builder,name,kwargs", PARAM_CASES, ids=[c[0] for c in PARAM_CASES])
def test_param_count_matches_reference(reference, key, builder, name, kwargs):
    model = builder(genotype(name), auxiliary=True, **kwargs)
    expected = reference[key]["computed_params_m"] * 1e6
    measured = count_params(model)
    assert abs(measured - expected) / expected < 0.01, (key, measured, expected)
    assert count_params(builder(genotype(name), auxiliary=False, **kwargs), skip_aux=False) == measured


def test_darts_v2_cifar_macs_match_reference(reference):
    from torch.utils.flop_counter import FlopCounterMode

    model = DartsCIFARNetwork(genotype("darts_v2"), auxiliary=True).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    macs_m = counter.get_total_flops() / 2 / 1e6
    expected = reference["DARTS_V2_cifar"]["computed_madds_m"]
    assert abs(macs_m - expected) / expected < 0.01


# ==================================================================== key layouts (reference §4)
def shapes(model: nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_darts_v2_cifar_official_layout():
    model = DartsCIFARNetwork(genotype("darts_v2"), auxiliary=True)
    sd = shapes(model)
    assert count_params(model, skip_aux=False) == 3_825_768
    assert count_params(model) == 3_349_342
    assert len(sd) == 1650
    assert sd["stem.0.weight"] == (108, 3, 3, 3)
    assert sd["cells.0.preprocess0.op.1.weight"] == (36, 108, 1, 1)
    assert sd["cells.0._ops.0.op.1.weight"] == (36, 1, 3, 3)  # sep_conv_3x3 depthwise
    assert sd["cells.0._ops.7.op.1.weight"] == (36, 1, 3, 3)  # dil_conv_3x3 depthwise
    for i in (7, 14):  # cells after a reduction read state 0 through a FactorizedReduce
        assert f"cells.{i}.preprocess0.conv_1.weight" in sd and f"cells.{i}.preprocess0.bn.weight" in sd
    assert sd["auxiliary_head.features.2.weight"] == (128, 576, 1, 1)
    assert sd["auxiliary_head.features.5.weight"] == (768, 128, 2, 2)
    assert sd["auxiliary_head.features.6.weight"] == (768,)
    assert sd["classifier.weight"] == (10, 576)
    assert list(sd)[-2:] == ["classifier.weight", "classifier.bias"]  # official key order


def test_darts_v2_imagenet_official_layout():
    model = DartsImageNetNetwork(genotype("darts_v2"), auxiliary=True)
    sd = shapes(model)
    assert len(sd) == 1124
    assert sd["stem0.0.weight"] == (24, 3, 3, 3)
    assert sd["stem0.3.weight"] == (48, 24, 3, 3)
    assert sd["stem1.1.weight"] == (48, 48, 3, 3)
    for i in (0, 5, 10):
        assert f"cells.{i}.preprocess0.conv_1.weight" in sd
    assert sd["auxiliary_head.features.2.weight"] == (128, 768, 1, 1)
    assert sd["auxiliary_head.features.5.weight"] == (768, 128, 2, 2)
    assert not any(k.startswith("auxiliary_head.features.6") for k in sd)  # DARTS/PC-DARTS typo
    assert sd["classifier.weight"] == (1000, 768)
    # A stride-2 skip_connect is a FactorizedReduce (PC-DARTS ImageNet reduce edge 1).
    pc = shapes(DartsImageNetNetwork(genotype("pcdarts_imagenet")))
    assert pc["cells.4._ops.1.conv_1.weight"] == (48, 96, 1, 1)
    pdarts = shapes(DartsImageNetNetwork(genotype("pdarts"), auxiliary=True, aux_bn=True))
    assert pdarts["auxiliary_head.features.6.weight"] == (768,) and len(pdarts) == 1157


def test_snas_pools_carry_bn():
    sd = shapes(DartsCIFARNetwork(genotype("snas_mild"), auxiliary=True, pool_bn="affine"))
    assert sd["cells.6._ops.0.op.1.weight"] == (72,)  # stride-2 max pool of the first reduction
    assert len(sd) == 1210


# ==================================================================== behaviour
def small_cifar(**kwargs) -> DartsCIFARNetwork:
    torch.manual_seed(0)
    return DartsCIFARNetwork(genotype("darts_v2"), **{**SMALL, **kwargs})


def test_aux_logits_only_in_training():
    model = small_cifar(auxiliary=True)
    x = torch.randn(2, 3, 32, 32)
    out = model.train()(x)
    assert isinstance(out, tuple) and len(out) == 2
    out = model.eval()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    assert isinstance(small_cifar(auxiliary=False).train()(x), torch.Tensor)


def test_eval_is_deterministic_with_drop_path():
    model = small_cifar(auxiliary=True, drop_path_rate=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_drop_path_active_in_training():
    model = small_cifar(drop_path_rate=0.3)
    drop_paths = [m for m in model.modules() if isinstance(m, DropPath)]
    non_identity = sum(not isinstance(op, nn.Identity) for cell in model.cells for op in cell._ops)
    assert len(drop_paths) == non_identity and all(m.p == 0.3 for m in drop_paths)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))
        model.drop_path_prob = 0.0
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    # DropPath modules hold no state: the keys are those of a model without drop path.
    assert model.state_dict().keys() == small_cifar().state_dict().keys()


@pytest.mark.parametrize("size", [33, 17, 8, 3])
def test_cifar_odd_and_small_inputs(size):
    model = DartsCIFARNetwork(genotype("pcdarts_cifar"), C=8, layers=8, auxiliary=True).train()
    logits, aux = model(torch.randn(2, 3, size, size))
    assert logits.shape == aux.shape == (2, 10)


@pytest.mark.parametrize("size", [225, 97, 40])
def test_imagenet_odd_and_small_inputs(size):
    model = DartsImageNetNetwork(genotype("darts_v2"), C=8, layers=5, auxiliary=True).train()
    logits, aux = model(torch.randn(2, 3, size, size))
    assert logits.shape == aux.shape == (2, 1000)


def test_aux_pool_is_official_pool_at_designed_sizes():
    cifar, imagenet = AuxiliaryHeadCIFAR(16, 10), AuxiliaryHeadImageNet(16, 10)
    x8, x7 = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 7, 7)
    torch.testing.assert_close(cifar.features[1](x8),
                               nn.AvgPool2d(5, stride=3, count_include_pad=False)(x8))
    torch.testing.assert_close(imagenet.features[1](x7),
                               nn.AvgPool2d(5, stride=2, count_include_pad=False)(x7))
    assert cifar.eval()(x8).shape == imagenet.eval()(x7).shape == (2, 10)


def test_reset_classifier():
    model = small_cifar(auxiliary=True)
    model.reset_classifier(5)
    logits, aux = model.train()(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 5)
    model.reset_classifier(0)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, model.num_features)


def test_in_chans_1():
    model = small_cifar(in_chans=1).eval()
    assert model.stem[0].weight.shape[1] == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    net = DartsImageNetNetwork(genotype("darts_v2"), in_chans=1, **SMALL).eval()
    assert net(torch.randn(2, 1, 64, 64)).shape == (2, 1000)


def test_cell_channels_follow_concat():
    data = genotype("darts_v2").to_dict()
    data["normal"]["concat"] = [1, 3, 5]  # 3 states instead of 4, one of them a cell input
    net = DartsCIFARNetwork(Genotype.from_dict(data), C=4, layers=4).eval()
    assert net.num_features == 4 * 4 * 3  # last cell is normal: C doubled twice, 3 states
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    # Genotype files and 'Genotype(...)' strings are accepted as well.
    assert DartsCIFARNetwork(str(GENOTYPES / "darts_v2.yaml"), **SMALL).genotype == genotype("darts_v2")
    assert DartsCIFARNetwork(genotype("darts_v2").to_string(), **SMALL).genotype == genotype("darts_v2")


def test_rejects_bad_configs():
    g = genotype("darts_v2")
    with pytest.raises(ConfigError):
        DartsCIFARNetwork(g, layers=0)
    with pytest.raises(ConfigError):
        DartsCIFARNetwork(g, C=0)
    with pytest.raises(ConfigError, match="pool_bn"):
        DartsCIFARNetwork(g, pool_bn="bogus")
    with pytest.raises(ConfigError, match="even C"):
        DartsImageNetNetwork(g, C=9)
    with pytest.raises(ConfigError):
        DartsCIFARNetwork(g, drop_path_rate=1.0)
    with pytest.raises(ConfigError):
        DartsCIFARNetwork(42)
    data = g.to_dict()
    data["reduce"]["concat"] = [0, 2, 3]
    with pytest.raises(ConfigError, match="reduce cell concat"):
        DartsCIFARNetwork(Genotype.from_dict(data))


def test_rejects_nasnet_family_genotype():
    register_op("_test_nasnet_op", lambda *a, **k: nn.Identity(), family="nasnet", overwrite=True)
    try:
        cell = {"nodes": [[["_test_nasnet_op", 0], ["_test_nasnet_op", 1]]], "concat": [2]}
        g = Genotype.from_dict({"family": "nasnet", "normal": cell, "reduce": cell})
        with pytest.raises(ConfigError, match="family"):
            DartsCIFARNetwork(g)
        with pytest.raises(ConfigError, match="family"):
            DartsImageNetNetwork(g)
    finally:
        unregister_op("_test_nasnet_op", family="nasnet")
