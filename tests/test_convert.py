"""Converters from the official checkpoints, checked by outputs: converted weights give the logits
of the source network.  No foreign file is downloaded: each test writes a checkpoint in the
source project's layout (``shared/reference/reference_facts.md`` section 4) from random weights."""
from __future__ import annotations

import os
import pickle
import re

import pytest
import torch
from click.testing import CliRunner

import nasnetzoo
from nasnetzoo.cli import cli
from nasnetzoo.export.prepare import calibrate_batchnorm
from nasnetzoo.hub import convert as convert_mod
from nasnetzoo.hub.convert import convert_checkpoint, read_checkpoint
from nasnetzoo.weights import CheckpointError, WeightsError, read_metadata


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics and affine parameters, so BatchNorm is not the identity in eval."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
    return model.eval()


def logits(model, size, seed=1):
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def run_convert(*args):
    result = CliRunner().invoke(cli, ["convert", *map(str, args)], catch_exceptions=False)
    return result


def without_batches_tracked(state):
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


# ============================================================================ timm
@pytest.mark.slow
@pytest.mark.parametrize("timm_name,arch", [("nasnetalarge", "nasnet_a_large"), ("pnasnet5large", "pnasnet5_large")])
def test_timm_large_models_give_timm_logits(tmp_path, timm_name, arch):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    source = randomize(timm.create_model(timm_name, pretrained=False))
    src = tmp_path / f"{timm_name}.pth"
    torch.save(source.state_dict(), src)
    dst = tmp_path / f"{arch}.safetensors"
    # the converter's own check (timm importable) runs at 75 px, odd maps down to 3x3; this test
    # compares at 331 below
    result = run_convert("--from", "timm", src, "-o", dst, "--arch", arch, "--verify-size", 75)
    assert result.exit_code == 0, result.output
    assert f"wrote {dst}" in result.output and "verified: logits" in result.output and "75x75" in result.output
    meta = read_metadata(dst)
    assert meta["config"]["pool_padding"] == "timm" and meta["arch"] == arch
    assert meta["provenance"]["converted_from"] == "timm" and meta["provenance"]["source_file"] == src.name

    ours = nasnetzoo.load(arch, weights=dst)  # rebuilt with pool_padding="timm" from the file
    expected, got = logits(source, 331), logits(ours, 331)
    assert got.shape == (1, 1000)
    assert (got - expected).abs().max().item() < 1e-4


# ============================================================================ Cadene
# Cadene's NASNet-A Mobile layout, written here from reference_facts.md section 4.4 and Cadene's
# nasnet_mobile.py (independently of nasnetzoo.hub.convert): classifier `last_linear`; FirstCell and
# CellStem1 hold path_1/path_2/final_path_bn directly; cells numbered cell_0..3, (reduction_cell_0),
# cell_6..9, (reduction_cell_1), cell_12..15; no num_batches_tracked (ported with old PyTorch).
CADENE_MOBILE_CELLS = {4: 6, 5: 7, 6: 8, 7: 9, 8: 12, 9: 13, 10: 14, 11: 15}


def cadene_mobile_layout(state):
    out = {}
    for key, value in without_batches_tracked(state).items():
        if key.startswith("classifier."):
            key = "last_linear." + key[len("classifier."):]
        key = re.sub(r"\.conv_prev_1x1\.(path_1|path_2|final_path_bn)\.", r".\1.", key)
        match = re.match(r"cell_(\d+)\.", key)
        if match:
            key = f"cell_{CADENE_MOBILE_CELLS.get(int(match.group(1)), int(match.group(1)))}." + key[match.end():]
        out[key] = value
    return out


@pytest.fixture(scope="module")
def mobile():
    torch.manual_seed(0)
    return randomize(nasnetzoo.load("nasnet_a_mobile"))  # pool_padding="tf": Cadene pads as TF does


def test_cadene_nasnet_mobile_layout_converts(tmp_path, mobile):
    layout = cadene_mobile_layout(mobile.state_dict())
    # the facts of the reference: 1318 keys with num_batches_tracked (192 BatchNorms), these modules
    assert len(layout) == 1318 - 192
    modules = {k.split(".")[0] for k in layout if k.startswith("cell_")}
    assert modules == {f"cell_{i}" for i in (0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15)} | {"cell_stem_0", "cell_stem_1"}
    assert layout["conv0.conv.weight"].shape == (32, 3, 3, 3) and layout["last_linear.weight"].shape == (1000, 1056)
    assert {"cell_0.path_1.conv.weight", "cell_6.path_2.conv.weight", "cell_stem_1.final_path_bn.running_var",
            "cell_7.conv_prev_1x1.conv.weight", "reduction_cell_0.conv_prev_1x1.bn.weight"} <= set(layout)
    src = tmp_path / "nasnetamobile.pth"
    torch.save(layout, src)
    dst = tmp_path / "nasnet_a_mobile.safetensors"
    result = run_convert("--from", "cadene", src, "-o", dst, "--arch", "NASNet-A-Mobile")
    assert result.exit_code == 0, result.output
    assert "filled 192 num_batches_tracked" in result.output
    assert read_metadata(dst)["config"]["pool_padding"] == "tf"
    loaded = nasnetzoo.load("nasnet_a_mobile", weights=dst)
    assert (logits(loaded, 224) - logits(mobile, 224)).abs().max().item() < 1e-6


def test_cadene_background_row_is_dropped(tmp_path, mobile):
    layout = cadene_mobile_layout(mobile.state_dict())
    layout["last_linear.weight"] = torch.cat([torch.full((1, 1056), 9.0), layout["last_linear.weight"]])
    layout["last_linear.bias"] = torch.cat([torch.tensor([9.0]), layout["last_linear.bias"]])
    src = tmp_path / "with_background.pth"
    torch.save(layout, src)
    result = convert_checkpoint(src, tmp_path / "out.safetensors", fmt="cadene", arch="nasnet_a_mobile")
    assert any("background" in note for note in result.notes) and result.config["num_classes"] == 1000
    loaded = nasnetzoo.load("nasnet_a_mobile", weights=result.path)
    assert (logits(loaded, 224) - logits(mobile, 224)).abs().max().item() < 1e-6


def test_verification_failure_writes_nothing(tmp_path, mobile, monkeypatch):
    src = tmp_path / "nasnetamobile.pth"
    torch.save(cadene_mobile_layout(mobile.state_dict()), src)

    class Shifted(torch.nn.Module):  # a "source model" whose logits are off by 1
        def forward(self, x):
            return mobile(x) + 1.0

        def load_state_dict(self, state, strict=True):
            return torch.nn.modules.module._IncompatibleKeys([], [])

    monkeypatch.setattr(convert_mod, "_reference_model", lambda fmt, arch, n: (Shifted(), "shifted"))
    dst = tmp_path / "out.safetensors"
    with pytest.raises(WeightsError, match=r"differ from the source model's by 1 .*nothing was written"):
        convert_checkpoint(src, dst, fmt="cadene", arch="nasnet_a_mobile", verify_size=64)
    assert not dst.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name,arch,classes", [("nasnetamobile", "nasnet_a_mobile", 1000),
                                               ("nasnetalarge", "nasnet_a_large", 1001),
                                               ("pnasnet5large", "pnasnet5_large", 1001)])
def test_real_cadene_models(tmp_path, name, arch, classes):
    """With Cadene's own code importable (not a test dependency), its models are the reference."""
    pretrainedmodels = pytest.importorskip("pretrainedmodels")
    torch.manual_seed(0)
    source = randomize(getattr(pretrainedmodels, name)(num_classes=classes, pretrained=None))
    src = tmp_path / f"{name}.pth"
    torch.save(without_batches_tracked(source.state_dict()), src)
    result = convert_checkpoint(src, tmp_path / f"{arch}.safetensors", fmt="cadene", arch=arch, verify=True)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    size = nasnetzoo.get_entry(arch).input_size[-1]
    expected = logits(source, size)[:, classes - 1000:]
    assert (logits(nasnetzoo.load(arch, weights=result.path), size) - expected).abs().max().item() < 1e-4


# ============================================================================ DARTS family
def official_cifar_checkpoint(path, arch="darts_v2_cifar", **kwargs):
    """A raw state dict as DARTS' utils.save wrote it with PyTorch 0.3.1: legacy (non-zip)
    serialization, no num_batches_tracked."""
    torch.manual_seed(0)
    model = randomize(nasnetzoo.load(arch, auxiliary=True, **kwargs))
    state = without_batches_tracked(model.state_dict())
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return model, state


def test_darts_cifar_checkpoint_converts_and_loads_strictly(tmp_path):
    model, state = official_cifar_checkpoint(tmp_path / "cifar10_model.pt")
    # the official layout (reference_facts.md 4.1): 1650 keys in a modern state dict
    assert len(state) + sum(1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)) == 1650
    assert state["stem.0.weight"].shape == (108, 3, 3, 3) and state["classifier.weight"].shape == (10, 576)
    assert {"cells.7.preprocess0.conv_1.weight", "cells.14.preprocess0.bn.running_mean",
            "cells.0._ops.0.op.7.weight"} <= set(state)
    assert state["auxiliary_head.features.5.weight"].shape == (768, 128, 2, 2)
    dst = tmp_path / "darts_v2_cifar.safetensors"
    result = run_convert("--from", "darts", tmp_path / "cifar10_model.pt", "-o", dst, "--arch", "DARTS")
    assert result.exit_code == 0, result.output
    assert "filled" in result.output and "not verified by outputs: the official darts code" in result.output
    meta = read_metadata(dst)
    assert meta["config"]["auxiliary"] is True and meta["config"]["num_classes"] == 10
    assert meta["config"]["C"] == 36 and meta["config"]["layers"] == 20
    loaded = nasnetzoo.load("darts_v2_cifar", weights=dst)
    assert loaded.auxiliary_head is not None
    torch.testing.assert_close(logits(loaded, 32), logits(model, 32), rtol=0, atol=0)
    loaded.train()  # the auxiliary head's weights came along too
    model.train()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x)[1], model(x)[1])


def test_pcdarts_imagenet_checkpoint_with_module_prefix(tmp_path):
    torch.manual_seed(0)
    model = randomize(nasnetzoo.load("pcdarts_imagenet", auxiliary=True))
    state = without_batches_tracked(model.state_dict())
    assert not any(k.startswith("auxiliary_head.features.6") for k in state)  # DARTS/PC-DARTS: no BN there
    checkpoint = {"epoch": 249, "best_acc_top1": 75.8,
                  "state_dict": {"module." + k: v for k, v in state.items()},
                  "optimizer": {"state": {}, "param_groups": [{"lr": 0.5, "momentum": 0.9, "params": [0, 1]}]}}
    src = tmp_path / "checkpoint.pth.tar"
    torch.save(checkpoint, src)
    dst = tmp_path / "pcdarts_imagenet.safetensors"
    result = run_convert("--from", "pcdarts", src, "-o", dst, "--arch", "PC-DARTS-ImageNet")
    assert result.exit_code == 0, result.output
    config = read_metadata(dst)["config"]
    assert config["auxiliary"] is True and config["aux_bn"] is False and config["num_classes"] == 1000
    loaded = nasnetzoo.load("pcdarts_imagenet", weights=dst)
    torch.testing.assert_close(logits(loaded, 224), logits(model, 224), rtol=0, atol=0)


def test_pdarts_imagenet_aux_bn_and_channels_are_read_from_the_tensors(tmp_path):
    torch.manual_seed(0)
    model = randomize(nasnetzoo.load("pdarts_imagenet", auxiliary=True, C=16, layers=8))
    state = {"module." + k: v for k, v in without_batches_tracked(model.state_dict()).items()}
    assert "module.auxiliary_head.features.6.running_mean" in state
    src = tmp_path / "pdarts.pth"
    torch.save({"state_dict": state}, src)
    result = convert_checkpoint(src, tmp_path / "pdarts.safetensors", fmt="pdarts", arch="pdarts_imagenet")
    assert (result.config["C"], result.config["layers"], result.config["aux_bn"]) == (16, 8, True)
    loaded = nasnetzoo.load("P-DARTS-ImageNet", weights=result.path)
    torch.testing.assert_close(logits(loaded, 96), logits(model, 96), rtol=0, atol=0)


def test_cifar100_checkpoint_records_the_dataset(tmp_path):
    model, _ = official_cifar_checkpoint(tmp_path / "c100.pt", "pcdarts_cifar", dataset="cifar100", C=8, layers=5)
    result = convert_checkpoint(tmp_path / "c100.pt", tmp_path / "c100.safetensors", fmt="pcdarts",
                                arch="pcdarts_cifar")
    meta = read_metadata(result.path)
    assert meta["dataset"] == "cifar100" and meta["config"]["num_classes"] == 100
    loaded = nasnetzoo.load("pcdarts_cifar", weights=result.path)
    torch.testing.assert_close(logits(loaded, 32), logits(model, 32), rtol=0, atol=0)


def test_wrong_architecture_lists_missing_and_unexpected_keys(tmp_path):
    official_cifar_checkpoint(tmp_path / "darts.pt", C=8, layers=5)
    dst = tmp_path / "out.safetensors"
    result = run_convert("--from", "pcdarts", tmp_path / "darts.pt", "-o", dst, "--arch", "pcdarts_cifar")
    assert result.exit_code == 1 and not dst.exists()
    line, = result.output.strip().splitlines()
    assert line.startswith("Error: ") and "does not fit pcdarts_cifar" in line
    assert re.search(r"missing keys \(\d+\): cells\.", line) and re.search(r"unexpected keys \(\d+\): cells\.", line)
    assert "Check --arch" in line


def test_format_and_arch_must_agree(tmp_path):
    official_cifar_checkpoint(tmp_path / "darts.pt", C=8, layers=5)
    result = run_convert("--from", "timm", tmp_path / "darts.pt", "-o", tmp_path / "o.safetensors", "--arch",
                         "darts_v2_cifar")
    assert result.exit_code == 1 and "--from timm converts NASNet-A and PNASNet-5" in result.output
    result = run_convert("--from", "darts", tmp_path / "darts.pt", "-o", tmp_path / "o.safetensors", "--arch",
                         "nasnet_a_mobile")
    assert result.exit_code == 1 and "--from darts converts DARTS-family networks" in result.output
    result = run_convert("--from", "darts", tmp_path / "darts.pt", "-o", tmp_path / "o.pth", "--arch", "darts_v2_cifar")
    assert result.exit_code == 1 and "must end in .safetensors" in result.output
    result = run_convert("--from", "darts", tmp_path / "darts.pt", "-o", tmp_path / "o.safetensors", "--arch",
                         "darts_v2_cifar", "--verify")
    assert result.exit_code == 1 and "cannot verify the conversion by outputs" in result.output
    result = run_convert("--from", "onnx", tmp_path / "darts.pt", "-o", tmp_path / "o.safetensors", "--arch", "x")
    assert result.exit_code == 2 and "'onnx' is not one of" in result.output


# ============================================================================ unsafe and broken files
class Exploit:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_code_executing_pickle_is_refused(tmp_path, how):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pth"
    payload = {"state_dict": {"stem.0.weight": torch.zeros(1)}, "args": Exploit(marker)}
    if how == "torch.save":
        torch.save(payload, src)
    else:
        with open(src, "wb") as handle:
            pickle.dump(payload, handle)
    result = run_convert("--from", "darts", src, "-o", tmp_path / "o.safetensors", "--arch", "darts_v2_cifar")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "evil.pth" in result.output and "refused" in result.output and "never runs code" in result.output
    if how == "torch.save":
        assert "was refused" in result.output and "GLOBAL posix.system" in result.output
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(src)
    assert not marker.exists()


def test_pickled_module_is_refused(tmp_path):
    src = tmp_path / "model.pth"
    torch.save(nasnetzoo.load("pcdarts_cifar", C=8, layers=5), src)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(src)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_unreadable_checkpoints(tmp_path, content):
    src = tmp_path / "broken.pt"
    src.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pt is not a readable PyTorch checkpoint"):
        read_checkpoint(src)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_without_a_state_dict(tmp_path):
    src = tmp_path / "opt.pth"
    torch.save({"epoch": 3, "optimizer": {"state": {}}}, src)
    with pytest.raises(CheckpointError, match=r"'epoch', 'optimizer'.*no state dict"):
        read_checkpoint(src)


def test_safetensors_source(tmp_path):
    from safetensors.torch import save_file

    model, state = official_cifar_checkpoint(tmp_path / "unused.pt", C=8, layers=5)
    src = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(src))
    result = convert_checkpoint(src, tmp_path / "out.safetensors", fmt="darts", arch="darts_v2_cifar")
    torch.testing.assert_close(logits(nasnetzoo.load("darts_v2_cifar", weights=result.path), 32), logits(model, 32))


# ============================================================================ pytorchcv
def calibrated(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """Random weights with BatchNorm statistics calibrated on random images (nasnetzoo's own
    calibration), so every layer's output is of order 1 and a mis-mapped tensor shows in the logits."""
    return calibrate_batchnorm(model, (3, size, size), batches=2, seed=7).eval()


PYTORCHCV = [("darts", "darts_v2_imagenet", 224), ("nasnet_4a1056", "nasnet_a_mobile", 224),
             pytest.param("nasnet_6a4032", "nasnet_a_large", 331, marks=pytest.mark.slow),
             pytest.param("pnasnet5large", "pnasnet5_large", 331, marks=pytest.mark.slow)]


@pytest.mark.parametrize("pcv_name,arch,size", PYTORCHCV)
def test_pytorchcv_models_give_pytorchcv_logits(tmp_path, pcv_name, arch, size):
    """`nasnetzoo convert --from pytorchcv` maps every key by name: max |logits difference| against
    pytorchcv's own model is at most 1e-4 (the converter checks it too, at the same input size)."""
    provider = pytest.importorskip("pytorchcv.model_provider")
    torch.manual_seed(0)
    source = calibrated(provider.get_model(pcv_name, pretrained=False), size)
    src = tmp_path / f"{pcv_name}.pth"
    torch.save(source.state_dict(), src)
    dst = tmp_path / f"{arch}.safetensors"
    result = run_convert("--from", "pytorchcv", src, "-o", dst, "--arch", arch, "--verify")
    assert result.exit_code == 0, result.output
    assert "verified: logits" in result.output and f"pytorchcv {pcv_name}" in result.output
    meta = read_metadata(dst)
    assert meta["provenance"]["converted_from"] == "pytorchcv"
    assert meta["provenance"]["verified_max_abs_diff"] <= 1e-4
    if arch != "darts_v2_imagenet":
        assert meta["config"]["pool_padding"] == "tf"
    ours = nasnetzoo.load(arch, weights=dst)
    expected, got = logits(source, size), logits(ours, size)
    assert expected.abs().max().item() > 0.05  # calibrated: not a vanishing signal
    assert (got - expected).abs().max().item() <= 1e-4


def test_pytorchcv_by_position_would_be_wrong(tmp_path):
    """Shapes and counts agree, but the orders do not: copying by position breaks the outputs,
    which is why the converter maps by name."""
    provider = pytest.importorskip("pytorchcv.model_provider")
    torch.manual_seed(0)
    source = calibrated(provider.get_model("nasnet_4a1056", pretrained=False), 224)
    ours = nasnetzoo.load("nasnet_a_mobile", pool_padding="tf")
    theirs, mine = source.state_dict(), ours.state_dict()
    positional = {k: v for k, v in zip(mine, theirs.values())}
    if all(positional[k].shape == mine[k].shape for k in mine):
        ours.load_state_dict(positional)
        assert (logits(ours, 224) - logits(source, 224)).abs().max().item() > 1e-2
    else:  # the orders differ so much that even the shapes do not line up
        assert any(positional[k].shape != mine[k].shape for k in mine)
