"""nasnetzoo's weights format: save_pretrained's metadata, atomic writes, strict loading with the
saved config, and the errors for files that do not fit."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import nasnetzoo
from nasnetzoo.hub import pretrained as pretrained_mod
from nasnetzoo.models.darts import DartsCIFARNetwork
from nasnetzoo.weights import WeightsError, model_metadata, read_metadata, read_state_dict, write_weights

SMALL = dict(C=8, layers=5)  # a DARTS CIFAR network that builds and runs in milliseconds


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _logits(model, size=32):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture()
def cifar100_aux(tmp_path):
    model = _randomize(nasnetzoo.load("pcdarts_cifar", num_classes=100, auxiliary=True, **SMALL))
    path = nasnetzoo.save_pretrained(model, tmp_path / "w.safetensors",
                                     metadata={"metrics": {"top1": 81.5}, "license": "apache-2.0",
                                               "provenance": {"recipe": "recipes/pcdarts_cifar100.yaml"}})
    return model, path


def test_save_pretrained_writes_metadata(cifar100_aux):
    model, path = cifar100_aux
    meta = read_metadata(path)
    assert meta["format"] == "pt" and meta["nasnetzoo_version"] == nasnetzoo.__version__
    assert meta["arch"] == "pcdarts_cifar" and meta["architecture"] == "darts_cifar"
    assert meta["dataset"] == "cifar10"
    assert meta["config"]["num_classes"] == 100 and meta["config"]["auxiliary"] is True
    assert meta["config"]["C"] == 8 and meta["config"]["layers"] == 5
    assert nasnetzoo.Genotype.parse(meta["genotype"]) == nasnetzoo.get_genotype("pcdarts_cifar")
    assert meta["metrics"] == {"top1": 81.5} and meta["license"] == "apache-2.0"
    assert meta["reported"]["top1_err"] == 2.57
    assert meta["provenance"]["recipe"] == "recipes/pcdarts_cifar100.yaml"
    assert "created" in meta["provenance"] and "torch" in meta["provenance"]
    assert set(read_state_dict(path)) == set(model.state_dict())
    assert [p.name for p in path.parent.iterdir()] == ["w.safetensors"]  # no temporary file left


def test_load_rebuilds_the_saved_config(cifar100_aux):
    model, path = cifar100_aux
    loaded = nasnetzoo.load("pcdarts_cifar", weights=path)  # no num_classes / auxiliary / C / layers given
    assert loaded.num_classes == 100 and loaded.auxiliary_head is not None and not loaded.training
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    # options that do not change the tensors are taken on top of the saved config
    assert nasnetzoo.load("PC-DARTS", weights=path, drop_path_rate=0.2).num_classes == 100


def test_load_with_conflicting_override_lists_the_mismatch(cifar100_aux):
    _, path = cifar100_aux
    with pytest.raises(WeightsError) as info:
        nasnetzoo.load("pcdarts_cifar", weights=path, num_classes=10)
    msg = str(info.value)
    assert str(path) in msg and "shape mismatches" in msg
    assert "classifier.weight: file (100, 128) vs model (10, 128)" in msg


def test_load_from_a_genotype_file(tmp_path, cifar100_aux):
    model, path = cifar100_aux
    geno = nasnetzoo.get_genotype("pcdarts_cifar").save(tmp_path / "run" / "genotype.yaml")
    loaded = nasnetzoo.load(geno, weights=path)
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)


def test_weights_of_another_genotype_are_refused(tmp_path):
    path = nasnetzoo.save_pretrained(nasnetzoo.load("darts_v2_cifar", **SMALL), tmp_path / "darts.safetensors")
    with pytest.raises(WeightsError, match=r"genotype 'darts_v2'.*'pcdarts_cifar' uses genotype 'pcdarts_cifar'"
                                           r".*nasnetzoo.load\('darts_v2_cifar'"):
        nasnetzoo.load("pcdarts_cifar", weights=path)


def test_weights_of_another_network_are_refused(tmp_path):
    path = nasnetzoo.save_pretrained(nasnetzoo.load("pcdarts_cifar", **SMALL), tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="'darts_cifar' network.*builds 'darts_imagenet'"):
        nasnetzoo.load("pcdarts_cifar", weights=path, dataset="imagenet")


def test_plain_safetensors_without_metadata_are_refused(tmp_path):
    model = _randomize(nasnetzoo.load("pcdarts_cifar", **SMALL))
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert read_metadata(path) == {}
    # nothing in the file says which network its tensors fit (issue 31 item 8): refused, not loaded silently
    with pytest.raises(WeightsError, match="no nasnetzoo metadata.*save_pretrained"):
        nasnetzoo.load("pcdarts_cifar", weights=path, **SMALL)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = dict(nasnetzoo.load("pcdarts_cifar", **SMALL).state_dict())
    del state["classifier.bias"]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.safetensors"
    write_weights(state, path, model_metadata(nasnetzoo.load("pcdarts_cifar", **SMALL)))
    with pytest.raises(WeightsError) as info:
        nasnetzoo.load("pcdarts_cifar", weights=path, **SMALL)
    msg = str(info.value)
    assert "missing keys (1): classifier.bias" in msg and "unexpected keys (1): extra.weight" in msg
    assert "Build the model the weights were trained with" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_truncated_or_foreign_files(tmp_path, cifar100_aux, damage):
    _, good = cifar100_aux
    data = good.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"PK\x03\x04 not safetensors " * 10,
                     "empty": b""}[damage])
    with pytest.raises(WeightsError, match=r"bad.safetensors is not a readable safetensors file.*nasnetzoo convert"):
        nasnetzoo.load("pcdarts_cifar", weights=bad)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        nasnetzoo.load("pcdarts_cifar", weights=tmp_path / "nope.safetensors")


def test_save_is_atomic(tmp_path, monkeypatch, cifar100_aux):
    _, path = cifar100_aux
    before = path.read_bytes()

    from nasnetzoo import fileio
    from nasnetzoo.weights import format as format_mod

    def crash_midway(target, writer):  # the disk fills up half-way through the one writer
        def half(handle):
            handle.write(b"half")
            raise OSError("disk full")
        return fileio.atomic_write(target, half)

    monkeypatch.setattr(format_mod, "atomic_write", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        nasnetzoo.save_pretrained(nasnetzoo.load("pcdarts_cifar", **SMALL), path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.safetensors"]


def test_save_records_the_current_head(tmp_path):
    model = nasnetzoo.load("pcdarts_cifar", **SMALL)
    model.reset_classifier(7)
    path = nasnetzoo.save_pretrained(model, tmp_path / "w.safetensors")
    assert read_metadata(path)["config"]["num_classes"] == 7
    assert nasnetzoo.load("pcdarts_cifar", weights=path).num_classes == 7


def test_model_without_registry_config_and_state_dicts(tmp_path):
    geno = nasnetzoo.get_genotype("darts_v2")
    model = DartsCIFARNetwork(geno, **SMALL)  # built directly: no pretrained_cfg, so no config
    path = nasnetzoo.save_pretrained(model, tmp_path / "direct.safetensors")
    meta = read_metadata(path)
    assert "config" not in meta and nasnetzoo.Genotype.parse(meta["genotype"]) == geno
    loaded = nasnetzoo.load("darts_v2_cifar", weights=path, **SMALL)
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    # a bare state dict with the config given explicitly
    path2 = nasnetzoo.save_pretrained(model.state_dict(), tmp_path / "sd.safetensors",
                                      metadata={"arch": "darts_v2_cifar", "config": {**SMALL, "num_classes": 10}})
    assert nasnetzoo.load("darts_v2_cifar", weights=path2).cells[0].preprocess1.op[1].out_channels == 8


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(nasnetzoo.ConfigError, match="'metrics'"):
        nasnetzoo.save_pretrained(nasnetzoo.load("pcdarts_cifar", **SMALL), tmp_path / "x.safetensors",
                                  metadata={"metrics": {"top1": object()}})
    assert not list(tmp_path.iterdir())


def test_exported():
    assert nasnetzoo.save_pretrained is pretrained_mod.save_pretrained
    assert "save_pretrained" in nasnetzoo.__all__


def test_weights_package_sits_below_factory():
    """One home for the format, sources and download, importing nothing above it: no module of
    nasnetzoo.weights imports the factory, the hub commands, training or the CLI (at any depth,
    so no cycle through a function-level import either)."""
    import ast

    above = ("nasnetzoo.factory", "nasnetzoo.hub", "nasnetzoo.train", "nasnetzoo.cli", "nasnetzoo.export")
    package = Path(nasnetzoo.__file__).parent / "weights"
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = "nasnetzoo.weights" if node.level == 1 else "nasnetzoo" if node.level == 2 else ""
                names = [f"{base}.{node.module}" if node.module else base] if node.level else [node.module or ""]
                names += [f"{names[0]}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            bad = [n for n in names if n.startswith(above)]
            assert not bad, (path.name, bad)
    factory_src = (Path(nasnetzoo.__file__).parent / "factory.py").read_text()
    assert "hub.pretrained" not in factory_src and "hub.download" not in factory_src
