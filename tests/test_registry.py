"""Every registry entry: builds, runs, matches the reference counts, behaves like a timm model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nasnetzoo
from nasnetzoo import ConfigError, NasNetZooError, UnknownModelError
from nasnetzoo.registry import get_entry

MODELS = nasnetzoo.list_models()
# The figures computed from the official code, with their sources (tests/data/reference_figures.json).
REFERENCE_PATH = Path(__file__).resolve().parent / "data" / "reference_figures.json"
LARGE = {"nasnet_a_large", "pnasnet5_large"}

REQUIRED = ["nasnet_a_mobile", "nasnet_a_large", "nasnet_a_cifar", "amoebanet_a_mobile", "amoebanet_a_cifar",
            "pnasnet5_mobile", "pnasnet5_large", "enas_cifar", "darts_v1_cifar", "darts_v2_cifar",
            "darts_v2_imagenet", "pcdarts_cifar", "pcdarts_imagenet", "pdarts_cifar", "pdarts_imagenet",
            "snas_mild_cifar", "gdas_cifar", "gdas_imagenet"]


# TF-slim's _cifar_stem returns [None, stem], so cell 0 reads the raw 3F-channel stem output as
# its previous input (its ops on it, and the concat of it, project 3F -> F at 32x32). The
# reference emulation projected it once instead; params agree within 1%, MACs are 2.5-3.5% higher.
TF_CIFAR_STEM = {"nasnet_a_cifar", "amoebanet_a_cifar"}


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE_PATH.read_text())


def small_size(name: str) -> int:
    """A quick input size per dataset (the CIFAR nets at their own size)."""
    return 32 if get_entry(name).dataset.startswith("cifar") else 64


def test_required_entries_present():
    assert set(REQUIRED) <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_entry_metadata(name):
    entry = get_entry(name)
    assert entry.reported.get("source"), "every reported figure carries its source"
    for key in ("top1_err", "params_m", "search_cost_gpu_days"):
        assert key in entry.reported, f"{name}: reported.{key} missing"
    # weights only where a publisher hosts a file with a checksum (issue 11; docs/weights.md)
    assert bool(entry.weights) == (name in WITH_WEIGHTS)
    assert entry.genotype.name == entry.genotype_name


WITH_WEIGHTS = {"darts_v2_cifar", "darts_v2_imagenet", "nasnet_a_mobile", "nasnet_a_large", "pnasnet5_large"}


def test_pytorchcv_sources_equal_the_publishers_csv():
    """Every pytorchcv URL and SHA-1 in zoo.yaml equals the installed pytorchcv's own record
    (pytorchcv/models/common/model_metainfos.csv), so the registry cannot drift from it."""
    import csv
    import importlib.util

    from nasnetzoo.weights.sources import published

    spec = importlib.util.find_spec("pytorchcv")
    if spec is None:
        pytest.skip("pytorchcv is not installed (it is in the dev extra)")
    table = Path(spec.origin).parent / "models" / "common" / "model_metainfos.csv"
    with open(table, newline="", encoding="utf-8") as handle:
        rows = {row["model_name"]: row for row in csv.DictReader(handle)}
    checked = set()
    for name, sources in published().items():
        for source in sources:
            if source.layout != "pytorchcv":
                continue
            stem = source.member[: -len(".pth")]
            model_name, error, short = stem.rsplit("-", 2)
            row = rows[model_name]
            assert source.checksum_kind == "sha1" and source.checksum == row["checksum"], name
            assert (error, short) == (row["error_value"], row["checksum"][:8]), name
            assert source.url == (f"https://github.com/osmr/imgclsmob/releases/download/{row['repo_release_tag']}/"
                                  f"{stem}.pth.zip"), name
            assert source.metrics["top5_err"] == int(row["error_value"]) / 100, name
            checked.add(model_name)
    assert checked == {"darts", "nasnet_4a1056", "nasnet_6a4032", "pnasnet5large"}


@pytest.mark.parametrize("name", MODELS)
def test_computed_figures_match_reference_file(name, reference):
    entry = get_entry(name)
    ref = reference[entry.reference_key]
    assert entry.computed["params_m"] == ref["computed_params_m"]
    if "madds_m" in entry.computed:
        assert entry.computed["madds_m"] == ref["computed_madds_m"]


@pytest.mark.parametrize("name", MODELS)
def test_params_and_macs_match_reference(name, reference):
    """The acceptance check: params within 1%, MACs within 2% of the figures computed from the
    official code, at the entry's own input size."""
    entry = get_entry(name)
    ref = reference[entry.reference_key]
    model = nasnetzoo.load(name)
    prof = nasnetzoo.profile(model)
    assert prof.input_size == entry.input_size
    assert prof.params_m == pytest.approx(ref["computed_params_m"], rel=0.01)
    if name in TF_CIFAR_STEM:
        # Literal TF-slim wiring costs more than the reference emulation (see TF_CIFAR_STEM).
        assert ref["computed_madds_m"] < prof.macs_m < 1.04 * ref["computed_madds_m"]
    elif ref.get("computed_madds_m"):
        assert prof.macs_m == pytest.approx(ref["computed_madds_m"], rel=0.02)


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_and_heads(name):
    torch.manual_seed(0)
    model = nasnetzoo.load(name, auxiliary=True, drop_path_rate=0.2, num_classes=7)
    size = small_size(name)
    x = torch.randn(2, 3, size, size)
    # eval: logits only, deterministic despite drop path
    assert not model.training
    with torch.no_grad():
        out1, out2 = model(x), model(x)
    assert out1.shape == (2, 7) and torch.equal(out1, out2)
    # train: (logits, aux_logits), gradients flow
    model.train()
    logits, aux = model(x)
    assert logits.shape == (2, 7) and aux.shape == (2, 7)
    (logits.sum() + 0.4 * aux.sum()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith("auxiliary_head"))
    # drop path is random in training
    with torch.no_grad():
        assert not torch.equal(model(x)[0], model(x)[0])


@pytest.mark.parametrize("name", [n for n in MODELS if n not in LARGE])
def test_timm_style_interface(name):
    model = nasnetzoo.load(name, in_chans=1)
    size = small_size(name)
    x = torch.randn(1, 1, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features
        assert model.forward_head(feats).shape == (1, model.num_classes)
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)
        model.reset_classifier(5)
        assert model(x).shape == (1, 5) and model.num_classes == 5
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)
    assert model.pretrained_cfg["name"] == name


@pytest.mark.parametrize("name", [n for n in MODELS if n not in LARGE])
def test_odd_input_sizes(name):
    model = nasnetzoo.load(name)
    sizes = [(33, 31), (17, 45)] if get_entry(name).dataset.startswith("cifar") else [(97, 97), (65, 71)]
    for h, w in sizes:
        with torch.no_grad():
            assert model(torch.randn(1, 3, h, w)).shape == (1, model.num_classes)


def test_no_drop_path_in_eval_after_training():
    model = nasnetzoo.load("pcdarts_cifar", C=8, layers=5, drop_path_rate=0.5)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    model(x)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_aliases_are_case_and_separator_insensitive():
    for alias, name in [("NASNet-A", "nasnet_a_mobile"), ("nasnet-a-large", "nasnet_a_large"),
                        ("DARTS", "darts_v2_cifar"), ("darts_v2", "darts_v2_cifar"),
                        ("PC-DARTS-CIFAR", "pcdarts_cifar"), ("pc_darts_imagenet", "pcdarts_imagenet"),
                        ("PC DARTS ImageNet", "pcdarts_imagenet"), ("P-DARTS", "pdarts_cifar"),
                        ("PNASNet-5-Large", "pnasnet5_large"), ("GDAS", "gdas_cifar"), ("ENAS", "enas_cifar")]:
        assert get_entry(alias).name == name, alias


def test_unknown_name_suggests_closest():
    with pytest.raises(UnknownModelError, match="unknown model 'pcdarts_imagnet'.*'pcdarts_imagenet'"):
        nasnetzoo.load("pcdarts_imagnet")
    with pytest.raises(UnknownModelError, match="nasnet_a_mobile"):
        get_entry("nasnet_mobile")


def test_list_models_filter():
    darts = nasnetzoo.list_models("*darts*")
    assert "pcdarts_imagenet" in darts and "nasnet_a_mobile" not in darts
    assert nasnetzoo.list_models("PNASNET*") == ["pnasnet5_large", "pnasnet5_mobile"]


def test_cell_on_another_dataset():
    """The PC-DARTS paper's 25.1% row: the CIFAR cell in the ImageNet network."""
    model = nasnetzoo.load("pcdarts_cifar", dataset="imagenet")
    cfg = model.pretrained_cfg
    assert cfg["dataset"] == "imagenet" and tuple(cfg["input_size"]) == (3, 224, 224) and model.num_classes == 1000
    assert cfg["reported"]["top1_err"] == 25.1
    assert nasnetzoo.profile(model).params_m == pytest.approx(5.271, rel=0.01)
    cifar100 = nasnetzoo.load("pcdarts_imagenet", dataset="cifar100")
    assert cifar100.num_classes == 100 and tuple(cifar100.pretrained_cfg["input_size"]) == (3, 32, 32)
    # a registry entry exists for the NASNet-A cell on CIFAR: use its network
    assert nasnetzoo.load("nasnet_a_mobile", dataset="cifar10").pretrained_cfg["name"] == "nasnet_a_cifar"


def test_load_genotype_file_and_run_dir(tmp_path):
    g = nasnetzoo.get_genotype("darts_v2")
    run = tmp_path / "run"
    g.save(run / "genotype.yaml")
    for target in (run / "genotype.yaml", str(run / "genotype.yaml"), run):
        model = nasnetzoo.load(target, dataset="cifar10", C=8, layers=5)
        assert model.genotype == g and model.num_classes == 10
    assert nasnetzoo.load(g.to_string(), C=8, layers=5).num_classes == 10


def test_bad_arguments_are_clear():
    with pytest.raises(ConfigError, match=r"unknown option 'layer'.*Did you mean 'layers'"):
        nasnetzoo.load("pcdarts_cifar", layer=8)
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'"):
        nasnetzoo.load("pcdarts_cifar", dataset="cifar")
    with pytest.raises(NasNetZooError, match="pcdarts_cifar has no published weights"):
        nasnetzoo.load("pcdarts_cifar", pretrained=True)
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        nasnetzoo.load("pcdarts_cifar", C=8, layers=5)(torch.randn(1, 4, 32, 32))


def test_weights_round_trip_and_mismatch(tmp_path):
    from safetensors.torch import save_file

    model = nasnetzoo.load("pcdarts_cifar", C=8, layers=5)
    path = tmp_path / "w.safetensors"
    from nasnetzoo.weights import encode_metadata

    meta = encode_metadata({"config": {"C": 8, "layers": 5, "num_classes": 10}})   # no arch: loads into either cell
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    again = nasnetzoo.load("pcdarts_cifar", C=8, layers=5, weights=path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    with pytest.raises(NasNetZooError, match=r"does not fit this architecture.*shape mismatches"):
        nasnetzoo.load("pcdarts_cifar", C=8, layers=5, num_classes=100, weights=path)
    with pytest.raises(NasNetZooError, match=r"missing keys"):
        nasnetzoo.load("darts_v2_cifar", C=8, layers=5, weights=path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(NasNetZooError, match="not a readable safetensors file"):
        nasnetzoo.load("pcdarts_cifar", C=8, layers=5, weights=path)
