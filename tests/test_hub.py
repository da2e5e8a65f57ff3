"""Published weights through the Hugging Face hub cache, with no network: the tests publish files
into a temporary cache laid out as huggingface_hub lays it out, and the registry's weights table
is patched to list them.  (URL sources and foreign layouts: tests/test_pretrained_sources.py.)"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import nasnetzoo
from nasnetzoo import registry
from nasnetzoo.cli import cli
from nasnetzoo.hub.card import push_weights
from nasnetzoo.weights import ChecksumError, WeightsError, WeightsUnavailableError, read_metadata
from nasnetzoo.weights import fetch as download_mod
from nasnetzoo.weights import sources as sources_mod
from nasnetzoo.weights.sources import WeightsSource, docs_row, sources_for as weights_entries

SMALL = dict(C=8, layers=5)
REPO = "nasnetzoo-test/pcdarts_cifar"
FILE = "pcdarts_cifar.safetensors"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """An empty hub cache under HF_HOME, downloads switched off."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home / "hub"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def publish(cache: Path, repo_id: str, filename: str, source: Path, commit: str = COMMIT,
            ref: str = "main") -> Path:
    """Put ``source`` into the cache as hf_hub_download leaves a download: the content in blobs/,
    a relative symlink in snapshots/<commit>/, and refs/<ref> naming the commit."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    blob = folder / "blobs" / sha256(source)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(source.read_bytes())
    link = folder / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / ref).write_text(commit)
    return link


def register(monkeypatch, model: str, *entries: dict) -> None:
    """Give registry entry ``model`` these weights entries (as zoo.yaml `weights:` would)."""
    entry = registry.get_entry(model)
    monkeypatch.setitem(registry._zoo()[2], entry.name, dataclasses.replace(entry, weights=tuple(entries)))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """nasnetzoo's own cache (converted files) in the test's folder, never the user's."""
    monkeypatch.setenv("NASNETZOO_CACHE", str(tmp_path / "nasnetzoo_cache"))


@pytest.fixture()
def weights_file(tmp_path):
    torch.manual_seed(0)
    model = nasnetzoo.load("pcdarts_cifar", **SMALL)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = nasnetzoo.save_pretrained(model, tmp_path / "upload" / FILE, metadata={"metrics": {"top1": 97.1}})
    return model, path


@pytest.fixture()
def published(hub, weights_file, monkeypatch):
    model, path = weights_file
    link = publish(hub, REPO, FILE, path)
    register(monkeypatch, "pcdarts_cifar", {"hub": REPO, "filename": FILE, "revision": COMMIT,
                                            "sha256": sha256(path), "metrics": {"top1": 97.1}})
    return model, link


def _logits(model):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model.eval()(x)


# ---------------------------------------------------------------------------- pretrained=True
def test_pretrained_loads_offline_from_the_cache(published):
    model, link = published
    loaded = nasnetzoo.load("PC-DARTS-CIFAR", pretrained=True)
    assert not loaded.training and loaded.cells[0].preprocess1.op[1].out_channels == 8  # the saved config
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    assert registry.get_entry("pcdarts_cifar").has_weights


def test_pinned_commit_needs_no_ref(hub, weights_file, monkeypatch):
    model, path = weights_file
    link = publish(hub, REPO, FILE, path, commit="f" * 40, ref="unused")
    register(monkeypatch, "pcdarts_cifar", {"hub": REPO, "filename": FILE, "revision": "f" * 40,
                                            "sha256": sha256(path)})
    assert nasnetzoo.factory.pretrained_weights("pcdarts_cifar") == link
    torch.testing.assert_close(_logits(nasnetzoo.load("pcdarts_cifar", pretrained=True)), _logits(model))


def test_flipped_byte_gives_checksum_error_and_leaves_the_cache(published):
    _, link = published
    blob = link.resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    expected = weights_entries("pcdarts_cifar")[0].checksum
    with pytest.raises(ChecksumError) as info:
        nasnetzoo.load("pcdarts_cifar", pretrained=True)
    msg = str(info.value)
    assert f"sha256 is {actual}, expected {expected}" in msg and FILE in msg and REPO in msg
    assert "removed from the cache" in msg and "nasnetzoo download pcdarts_cifar" in msg
    assert not link.exists() and not link.is_symlink() and not blob.exists()
    # the next attempt does not find a "valid" file: offline, it says the file is not cached
    with pytest.raises(WeightsUnavailableError, match="is not in the Hugging Face cache"):
        nasnetzoo.load("pcdarts_cifar", pretrained=True)


def test_offline_with_empty_cache_says_how_to_prefetch(hub, monkeypatch):
    register(monkeypatch, "pcdarts_cifar", {"hub": REPO, "filename": FILE, "revision": COMMIT, "sha256": "a" * 64})
    with pytest.raises(WeightsUnavailableError) as info:
        nasnetzoo.load("pcdarts_cifar", pretrained=True)
    msg = str(info.value)
    assert f"the weights file {FILE} (hub repo {REPO}, revision {COMMIT})" in msg
    assert "HF_HUB_OFFLINE" in msg and "`nasnetzoo download pcdarts_cifar`" in msg
    where = hub / "models--nasnetzoo-test--pcdarts_cifar" / "snapshots" / COMMIT / FILE
    assert str(where) in msg and "weights='path/to/pcdarts_cifar.safetensors'" in msg


def test_truncated_download_is_a_checksum_error(hub, weights_file, monkeypatch):
    _, path = weights_file
    short = path.with_name("short.safetensors")
    short.write_bytes(path.read_bytes()[:1000])
    publish(hub, REPO, FILE, short)
    register(monkeypatch, "pcdarts_cifar", {"hub": REPO, "filename": FILE, "revision": COMMIT, "sha256": sha256(path)})
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        nasnetzoo.load("pcdarts_cifar", pretrained=True)


def test_published_file_of_another_architecture(hub, tmp_path, monkeypatch):
    other = nasnetzoo.save_pretrained(nasnetzoo.load("darts_v2_cifar", **SMALL), tmp_path / FILE)
    publish(hub, REPO, FILE, other)
    register(monkeypatch, "pcdarts_cifar", {"hub": REPO, "filename": FILE, "revision": COMMIT, "sha256": sha256(other)})
    with pytest.raises(WeightsError, match="holds weights for genotype 'darts_v2'"):
        nasnetzoo.load("pcdarts_cifar", pretrained=True)


def test_published_file_with_wrong_keys(hub, tmp_path, monkeypatch):

    from nasnetzoo.weights.format import write_weights

    state = {k: v.contiguous() for k, v in nasnetzoo.load("pcdarts_cifar", **SMALL).state_dict().items()}
    state["extra"] = torch.zeros(1)
    bad = tmp_path / FILE
    write_weights(state, bad, {"arch": "pcdarts_cifar"})  # no config: the entry's defaults, which the keys do not fit
    publish(hub, REPO, FILE, bad)
    register(monkeypatch, "pcdarts_cifar", {"hub": REPO, "filename": FILE, "revision": COMMIT, "sha256": sha256(bad)})
    with pytest.raises(WeightsError, match=r"does not fit this architecture; missing keys \(\d+\).*unexpected keys"):
        nasnetzoo.load("pcdarts_cifar", pretrained=True)


def test_no_published_weights_lists_the_models_that_have(published):
    with pytest.raises(WeightsUnavailableError) as info:
        nasnetzoo.load("pdarts_cifar", pretrained=True)
    msg = str(info.value)
    others = ", ".join(sources_mod.published())  # the real entries and the one this test publishes
    assert "pcdarts_cifar" in others and "nasnet_a_large" in others
    assert f"pdarts_cifar has no published weights (models with weights: {others})" in msg
    assert "weights='file.safetensors'" in msg and "nasnetzoo convert" in msg
    with pytest.raises(WeightsUnavailableError, match="pcdarts_cifar has no published weights for cifar100"):
        nasnetzoo.load("pcdarts_cifar", pretrained=True, dataset="cifar100")
    with pytest.raises(nasnetzoo.ConfigError, match="pretrained=True needs a registry name"):
        nasnetzoo.load(nasnetzoo.get_genotype("pcdarts_cifar"), pretrained=True)
    with pytest.raises(nasnetzoo.ConfigError, match="not both"):
        nasnetzoo.load("pcdarts_cifar", pretrained=True, weights="w.safetensors")


def test_bad_registry_weights_entries(monkeypatch):
    register(monkeypatch, "pcdarts_cifar", {"hub": REPO, "filename": FILE, "sha256": "xyz"})
    with pytest.raises(nasnetzoo.ConfigError, match=r"weights\[0\]: sha256 'xyz' is not 64 hexadecimal"):
        weights_entries("pcdarts_cifar")
    register(monkeypatch, "pcdarts_cifar", {"hub": REPO, "sha256": "a" * 64, "sha": "x"})
    with pytest.raises(nasnetzoo.ConfigError, match="unknown weights field"):
        weights_entries("pcdarts_cifar")
    register(monkeypatch, "pcdarts_cifar", {"hub": REPO, "sha256": "a" * 64})
    with pytest.raises(nasnetzoo.ConfigError, match="lacks filename"):
        weights_entries("pcdarts_cifar")


def test_zoo_yaml_weights_are_valid_and_documented():
    """Every weights entry of zoo.yaml parses (repo, file, 64-hex sha256) and has its row in
    docs/weights.md, the one table of published files (empty until real files are published)."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text()
    for name, entries in sources_mod.published().items():
        for weights in entries:
            assert f"`{weights.file_name}`" in docs and weights.checksum in docs, (name, weights.file_name)
            assert docs_row(weights) in docs, (name, weights.tag)
    for name in nasnetzoo.list_models():
        weights_entries(name)


# ---------------------------------------------------------------------------- online path (mocked)
def test_online_download_goes_through_hf_hub_download(hub, weights_file, monkeypatch):
    """With downloads allowed, hf_hub_download is asked for the pinned file in HF_HOME's cache."""
    import huggingface_hub

    _, path = weights_file
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    register(monkeypatch, "pcdarts_cifar", {"hub": REPO, "filename": FILE, "revision": COMMIT, "sha256": sha256(path)})
    calls = []

    from huggingface_hub.errors import LocalEntryNotFoundError

    def fake_download(repo_id, filename, **kwargs):
        if kwargs.get("local_files_only"):  # the cache lookup that comes first
            raise LocalEntryNotFoundError("not cached")
        calls.append((repo_id, filename, kwargs))
        return str(publish(Path(kwargs["cache_dir"]), repo_id, filename, path, commit=kwargs["revision"]))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(download_mod, "probe", lambda url, source: None)  # no network in tests
    result = CliRunner().invoke(cli, ["download", "pcdarts_cifar"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "sha256 verified" in result.output and FILE in result.output
    (repo_id, filename, kwargs), = calls
    assert (repo_id, filename) == (REPO, FILE)
    assert kwargs["revision"] == COMMIT and kwargs["local_files_only"] is False
    assert Path(kwargs["cache_dir"]) == hub


def test_network_failure_message(hub, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    register(monkeypatch, "pcdarts_cifar", {"hub": REPO, "filename": FILE, "revision": COMMIT, "sha256": "a" * 64})

    def no_network(*args, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(download_mod, "probe", lambda url, source: None)
    with pytest.raises(WeightsUnavailableError, match="could not be downloaded .*check the network"):
        nasnetzoo.load("pcdarts_cifar", pretrained=True)


def test_hub_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert download_mod.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert download_mod.hub_cache_dir() == tmp_path / "cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download_mod.is_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not download_mod.is_offline()


# ---------------------------------------------------------------------------- CLI
def test_download_cli(published):
    _, link = published
    runner = CliRunner()
    result = runner.invoke(cli, ["download", "pcdarts_cifar"], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.strip() == f"pcdarts_cifar: {link} (sha256 verified)"
    only_ours = {"pcdarts_cifar": weights_entries("pcdarts_cifar")}  # the real files need the network
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources_mod, "published", lambda: only_ours)
        result = runner.invoke(cli, ["download", "--all"], catch_exceptions=False)
    assert result.exit_code == 0 and "pcdarts_cifar:" in result.output
    result = runner.invoke(cli, ["download", "pdarts_cifar"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: pdarts_cifar has no published weights")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert runner.invoke(cli, ["download"]).exit_code == 2


def test_list_shows_published_weights(published):
    out = CliRunner().invoke(cli, ["list", "*pcdarts*"], catch_exceptions=False).output
    row = next(line for line in out.splitlines() if line.startswith("pcdarts_cifar "))
    assert row.rstrip().endswith("yes")


@pytest.mark.parametrize("command", ["convert", "download", "push"])
def test_help(command):
    result = CliRunner().invoke(cli, [command, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f" {command} [OPTIONS]" in result.output.splitlines()[0]


# ---------------------------------------------------------------------------- push
class FakeApi:
    """Records HfApi calls; nothing leaves the machine."""

    def __init__(self):
        self.calls = []
        self.uploads = {}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, **kwargs):
        data = path_or_fileobj if isinstance(path_or_fileobj, bytes) else Path(path_or_fileobj).read_bytes()
        self.uploads[path_in_repo] = data
        self.calls.append(("upload_file", repo_id, path_in_repo))
        return type("CommitInfo", (), {"oid": "c" * 40})()


@pytest.fixture()
def fake_api(monkeypatch):
    import huggingface_hub

    api = FakeApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: api)
    return api


def test_push_uploads_weights_and_card(tmp_path, fake_api):
    model = nasnetzoo.load("pcdarts_cifar", **SMALL)
    path = nasnetzoo.save_pretrained(model, tmp_path / FILE, metadata={
        "metrics": {"top1": 97.1, "top1_err": 2.9},
        "provenance": {"recipe": "recipes/pcdarts_cifar.yaml", "run": "runs/r1", "seed": 2}})
    result = CliRunner().invoke(cli, ["push", "PC-DARTS", "--weights", str(path), "--repo", REPO,
                                      "--license", "apache-2.0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    digest = sha256(path)
    assert [c[0] for c in fake_api.calls] == ["create_repo", "upload_file", "upload_file", "upload_file"]
    config = json.loads(fake_api.uploads["config.json"])
    assert config["arch"] == "pcdarts_cifar" and config["genotype"]["name"] == "pcdarts_cifar"
    assert config["config"]["layers"] == 5 and config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert fake_api.calls[0][1] == REPO and fake_api.calls[0][2]["exist_ok"] is True
    assert fake_api.uploads[FILE] == path.read_bytes()
    card = fake_api.uploads["README.md"].decode()
    assert card.startswith("---\nlicense: apache-2.0\n") and "library_name: nasnetzoo" in card
    assert nasnetzoo.get_genotype("pcdarts_cifar").to_string() in card            # genotype
    assert "| top1_err | 2.9 | 2.57 |" in card and "| top1 | 97.1 | - |" in card    # metrics vs paper
    front = yaml.safe_load(card.split("---\n")[1])
    result_0 = front["model-index"][0]["results"][0]       # measured only, with its source; no paper figure
    assert result_0["metrics"] == [{"type": "top1_accuracy", "name": "top-1 accuracy", "value": 97.1}]
    assert "runs/r1" in result_0["source"]["name"] and "2.57" not in json.dumps(front["model-index"])
    assert "recipes/pcdarts_cifar.yaml" in card and "- run: runs/r1" in card       # recipe, provenance
    assert digest in card and "## License" in card and '"layers": 5' in card
    # the registry entry to paste, pinned to the upload's commit
    assert f"sha256: {digest}" in result.output and f"revision: {'c' * 40}" in result.output
    assert f"hub: {REPO}" in result.output and "pcdarts_cifar:" in result.output
    assert f"| pcdarts_cifar | `{FILE}` | {REPO} | {'c' * 40} | {digest} | top1 97.1, top1_err 2.9 |" in result.output


def test_push_checks_before_uploading(tmp_path, fake_api):
    path = nasnetzoo.save_pretrained(nasnetzoo.load("darts_v2_cifar", **SMALL), tmp_path / FILE)
    result = CliRunner().invoke(cli, ["push", "pcdarts_cifar", "--weights", str(path), "--repo", REPO,
                                      "--license", "mit"], catch_exceptions=False)
    assert result.exit_code == 1 and "holds weights for genotype 'darts_v2'" in result.output
    path = nasnetzoo.save_pretrained(nasnetzoo.load("pcdarts_cifar", **SMALL), tmp_path / "p.safetensors")
    result = CliRunner().invoke(cli, ["push", "pcdarts_cifar", "--weights", str(path), "--repo", REPO],
                                catch_exceptions=False)
    assert result.exit_code == 1 and "pass --license" in result.output
    assert fake_api.calls == []


def test_push_dry_run_prints_the_card(tmp_path, fake_api):
    path = nasnetzoo.save_pretrained(nasnetzoo.load("pcdarts_cifar", **SMALL), tmp_path / FILE,
                                     metadata={"license": "cc-by-4.0"})
    result = push_weights("pcdarts_cifar", path, REPO, dry_run=True)
    assert fake_api.calls == [] and result.revision is None
    assert "license: cc-by-4.0" in result.card and read_metadata(path)["license"] == "cc-by-4.0"
    parsed = WeightsSource.parse("pcdarts_cifar", {**result.entry, "revision": COMMIT}, 0)
    assert parsed.checksum == sha256(path) and parsed.checksum_kind == "sha256"
