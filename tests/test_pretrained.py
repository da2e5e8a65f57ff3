"""pretrained=True end to end against publishers' layouts, with no network: a loopback HTTP server
on 127.0.0.1 serves zips of random-weight models saved as the publisher saves them (pytorchcv's
``darts``: a state dict in a ``.pth`` inside a ``.pth.zip``, checksummed by the SHA-1 of the
``.pth``), and the registry entry is patched to point at it."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import pytest
import torch

import nasnetzoo
from nasnetzoo import registry
from nasnetzoo.export.prepare import calibrate_batchnorm
from nasnetzoo.weights import CheckpointError, ChecksumError, WeightsUnavailableError, read_metadata

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- loopback server
class Files(http.server.ThreadingHTTPServer):
    """Serves ``files`` ({path: bytes}); ``short`` paths announce their full length but send half."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.short: set[str] = set()
        self.hits: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.hits.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path in self.server.short else body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    srv = Files()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def caches(weights_env):
    return weights_env


# ---------------------------------------------------------------------------- publisher files
def pytorchcv_zip(state: dict, name: str = "darts", error: str = "0775") -> tuple[bytes, str, str]:
    """(zip bytes, member name, SHA-1 of the member) as pytorchcv publishes a model."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    pth = buffer.getvalue()
    sha1 = hashlib.sha1(pth).hexdigest()
    member = f"{name}-{error}-{sha1[:8]}.pth"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr(member, pth)
    return out.getvalue(), member, sha1


@pytest.fixture(scope="module")
def pcv_darts():
    """pytorchcv's own DARTS ImageNet model, random weights, BN statistics calibrated on noise
    (so the logits are of order 1 and a wrong mapping shows)."""
    pytorchcv = pytest.importorskip("pytorchcv.model_provider")
    torch.manual_seed(0)
    model = pytorchcv.get_model("darts", pretrained=False)
    calibrate(model, 224)
    return model, pytorchcv_zip(model.state_dict())


def calibrate(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """BatchNorm statistics from random images (nasnetzoo's own calibration), then eval mode."""
    return calibrate_batchnorm(model, (3, size, size), batches=2, seed=11).eval()


def register(monkeypatch, model: str, *entries: dict) -> None:
    entry = registry.get_entry(model)
    monkeypatch.setitem(registry._zoo()[2], entry.name, dataclasses.replace(entry, weights=tuple(entries)))


def publish_darts(server, monkeypatch, pcv_darts, **changes) -> dict:
    _, (body, member, sha1) = pcv_darts
    server.files[f"/v0.0.485/{member}.zip"] = body
    entry = {"tag": "pytorchcv", "url": f"{server.url}/v0.0.485/{member}.zip", "archive": "zip",
             "member": member, "sha1": sha1, "layout": "pytorchcv", "license": "MIT",
             "metrics": {"top1_err": 25.31, "top5_err": 7.75, "source": "test"}, **changes}
    register(monkeypatch, "darts_v2_imagenet", entry)
    return entry


X = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))


def logits(model):
    with torch.no_grad():
        return model.eval()(X)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


# ---------------------------------------------------------------------------- the normal path
def test_first_load_downloads_verifies_converts_caches_then_second_needs_no_network(
        server, monkeypatch, pcv_darts, caches):
    reference, (_, member, sha1) = pcv_darts
    entry = publish_darts(server, monkeypatch, pcv_darts)
    model = nasnetzoo.load("darts_v2_imagenet", pretrained=True)
    assert len(server.hits) == 1
    torch.testing.assert_close(logits(model), logits(reference), rtol=0, atol=1e-5)  # mapped by name
    converted = caches / "converted" / f"darts_v2_imagenet-pytorchcv-sha1-{sha1}.safetensors"
    assert files_under(caches) == [f"converted/{converted.name}", f"converted/{converted.name}.sha256",
                                   f"sources/{member}.zip"]
    meta = read_metadata(converted)
    assert meta["provenance"]["source_checksum"] == f"sha1:{sha1}" and meta["license"] == "MIT"
    assert meta["metrics"]["publisher_top1_err"] == 25.31 and meta["arch"] == "darts_v2_imagenet"
    assert oct(converted.stat().st_mode & 0o777) == oct(0o666 & ~_umask())

    server.shutdown()  # the second load: no server, no conversion
    (caches / "sources" / f"{member}.zip").unlink()
    again = nasnetzoo.load("darts_v2_imagenet", pretrained=True)
    torch.testing.assert_close(logits(again), logits(model), rtol=0, atol=0)
    assert len(server.hits) == 1 and entry["tag"] == "pytorchcv"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_offline_names_the_url_and_the_path_and_a_placed_file_loads(server, monkeypatch, pcv_darts, caches):
    reference, (body, member, _) = pcv_darts
    entry = publish_darts(server, monkeypatch, pcv_darts)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        nasnetzoo.load("darts_v2_imagenet", pretrained=True)
    msg = str(info.value)
    where = caches / "sources" / f"{member}.zip"
    assert entry["url"] in msg and f"put the file at {where}" in msg and "\n" not in msg
    assert server.hits == []
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_bytes(body)  # the user copies the file there: verified and converted offline
    torch.testing.assert_close(logits(nasnetzoo.load("darts_v2_imagenet", pretrained=True)), logits(reference),
                               rtol=0, atol=1e-5)


def test_no_network_gives_the_same_line(monkeypatch, pcv_darts, caches):
    _, (_, member, sha1) = pcv_darts
    register(monkeypatch, "darts_v2_imagenet", {"url": f"http://127.0.0.1:9/{member}.zip", "archive": "zip",
                                                "member": member, "sha1": sha1, "layout": "pytorchcv"})
    with pytest.raises(WeightsUnavailableError, match=r"could not be downloaded \(.*refused.*put the file at "):
        nasnetzoo.load("darts_v2_imagenet", pretrained=True)
    assert files_under(caches) == []


# ---------------------------------------------------------------------------- failures lose nothing
def test_wrong_checksum_names_both_digests_and_keeps_nothing(server, monkeypatch, pcv_darts, caches):
    _, (_, member, sha1) = pcv_darts
    publish_darts(server, monkeypatch, pcv_darts, sha1="0" * 40)
    with pytest.raises(ChecksumError) as info:
        nasnetzoo.load("darts_v2_imagenet", pretrained=True)
    msg = str(info.value)
    assert f"sha1 is {sha1}, expected {'0' * 40}" in msg and member in msg and "\n" not in msg
    assert files_under(caches) == []  # nothing that could pass as valid later
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="is not downloaded yet"):
        nasnetzoo.load("darts_v2_imagenet", pretrained=True)


def test_truncated_download_keeps_nothing(server, monkeypatch, pcv_darts, caches):
    entry = publish_darts(server, monkeypatch, pcv_darts)
    server.short.add(entry["url"][len(server.url):])
    with pytest.raises(WeightsUnavailableError, match=r"it stopped at \d+ of \d+ bytes\); nothing was kept"):
        nasnetzoo.load("darts_v2_imagenet", pretrained=True)
    assert files_under(caches) == []


def test_truncated_archive_from_the_publisher_is_refused(server, monkeypatch, pcv_darts, caches):
    entry = publish_darts(server, monkeypatch, pcv_darts)
    path = entry["url"][len(server.url):]
    server.files[path] = server.files[path][: len(server.files[path]) // 2]  # a complete download of a cut file
    with pytest.raises(ChecksumError, match="is not a readable zip"):
        nasnetzoo.load("darts_v2_imagenet", pretrained=True)
    assert files_under(caches) == []


class Payload:
    """A pickle that would run code when loaded without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_archive_with_code_running_pickle_is_refused_and_runs_nothing(server, monkeypatch, tmp_path, caches):
    marker = tmp_path / "pwned"
    body, member, sha1 = pytorchcv_zip({"features.stem1_unit.conv1.conv.weight": Payload(marker)})
    server.files[f"/{member}.zip"] = body
    register(monkeypatch, "darts_v2_imagenet", {"url": f"{server.url}/{member}.zip", "archive": "zip",
                                                "member": member, "sha1": sha1, "layout": "pytorchcv"})
    with pytest.raises(CheckpointError, match="refused") as info:
        nasnetzoo.load("darts_v2_imagenet", pretrained=True)
    assert "never runs code" in str(info.value) and not marker.exists()
    assert not (caches / "converted").exists() or files_under(caches / "converted") == []


def test_two_processes_loading_at_once_both_succeed(server, monkeypatch, pcv_darts, caches, tmp_path):
    entry = publish_darts(server, monkeypatch, pcv_darts)
    script = textwrap.dedent("""
        import dataclasses, json, sys, torch, nasnetzoo
        from nasnetzoo import registry
        entry = registry.get_entry("darts_v2_imagenet")
        registry._zoo()[2][entry.name] = dataclasses.replace(entry, weights=(json.loads(sys.argv[1]),))
        model = nasnetzoo.load("darts_v2_imagenet", pretrained=True)
        x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            print(float(model(x).sum()))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script, json.dumps(entry)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0]
    assert len(server.hits) == 1  # they took turns: one download, one conversion


# ---------------------------------------------------------------------------- other layouts
def _nni_name(key: str, first_cell_of_stage: list[int]) -> str:
    """The name NNI's DARTS space (nni/nas/hub/pytorch/nasnet.py, nni/nas/nn/pytorch/cell.py) gives
    the official network's tensor ``key``: a stage is a Sequential of cells starting at a reduction
    cell, a cell holds ``preprocessor.pre0/pre1`` and ``ops[node][k]``, two ops per node."""
    match = re.match(r"^cells\.(\d+)\.(.*)$", key)
    if not match:
        return key
    cell, rest = int(match.group(1)), match.group(2)
    stage = sum(cell >= first for first in first_cell_of_stage[1:])
    rest = re.sub(r"^preprocess([01])\.(?:op\.)?", r"preprocessor.pre\1.", rest)
    rest = re.sub(r"^_ops\.(\d+)\.(?:op\.)?", lambda m: f"ops.{int(m.group(1)) // 2}.{int(m.group(1)) % 2}.", rest)
    return f"stages.{stage}.{cell - first_cell_of_stage[stage]}.{rest}"


def _nni_file(official: torch.nn.Module) -> dict:
    """NNI's darts-v2 file made as NNI made it (ultmaster/spacehub-conversion darts.py): the authors'
    state dict without the auxiliary head (PyTorch 0.3: no num_batches_tracked), then for each key
    of NNI's network in NNI's order, the first unused tensor of equal shape."""
    authors = {k: v for k, v in official.state_dict().items()
               if not k.startswith("auxiliary_head.") and not k.endswith("num_batches_tracked")}
    first = [0] + [i for i, cell in enumerate(official.cells) if cell.reduction]
    nni_keys = sorted(official.state_dict(), key=lambda k: _nni_order(_nni_name(k, first)))
    nni_keys = [_nni_name(k, first) for k in nni_keys if not k.startswith("auxiliary_head.")]
    shapes = {_nni_name(k, first): v.shape for k, v in official.state_dict().items()}
    remaining, out = dict(authors), {}
    for key in nni_keys:
        hit = next((k for k, v in remaining.items() if v.shape == shapes[key]), None)
        if hit is not None:
            out[key] = remaining.pop(hit)
    assert not remaining
    return out


def _nni_order(key: str):
    """NNI registers the stem, then each stage's cells (preprocessor before ops), then the classifier."""
    match = re.match(r"^stages\.(\d+)\.(\d+)\.(preprocessor|ops)\.(.*)$", key)
    if key.startswith("stem"):
        return (0,)
    if match:
        return (1, int(match.group(1)), int(match.group(2)), match.group(3) == "ops")
    return (2,)


def test_nni_file_with_a_sha256_prefix_loads_the_authors_network(server, monkeypatch, caches):
    """NNI's darts-v2 file (NNI's module names, the sha256 prefix in its name, as NNI's downloader
    checks it) is renamed to the official DARTS names and gives the authors' network exactly."""
    torch.manual_seed(1)
    official = nasnetzoo.load("darts_v2_cifar", C=8, layers=5, auxiliary=True)
    calibrate(official, 32)
    state = _nni_file(official)
    assert "stages.1.1.preprocessor.pre0.conv_1.weight" in state and "stages.2.1.ops.3.1.1.weight" in state
    buffer = io.BytesIO()
    torch.save(state, buffer)
    body = buffer.getvalue()
    prefix = hashlib.sha256(body).hexdigest()[:8]
    server.files[f"/nashub/darts-v2-{prefix}.pth"] = body
    register(monkeypatch, "darts_v2_cifar", {"tag": "nni", "url": f"{server.url}/nashub/darts-v2-{prefix}.pth",
                                             "sha256_prefix": prefix, "layout": "nni",
                                             "config": {"C": 8, "layers": 5, "auxiliary": False}})
    model = nasnetzoo.load("darts_v2_cifar", pretrained=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model(x), official.eval()(x), rtol=0, atol=0)
    from nasnetzoo.weights.sources import describe

    assert any("a weaker check" in line for line in describe("darts_v2_cifar"))

    server.files[f"/nashub/darts-v2-{prefix}.pth"] = body[:-1] + b"x"   # one byte changed: refused
    (caches / "converted").rename(caches / "old")
    for source in (caches / "sources").iterdir():
        source.unlink()
    with pytest.raises(ChecksumError, match=f"expected {prefix}"):
        nasnetzoo.load("darts_v2_cifar", pretrained=True)


def test_registered_nni_source_is_the_file_nni_names():
    (source,) = registry.get_entry("darts_v2_cifar").weights
    assert source["url"] == "https://nni.blob.core.windows.net/nashub/darts-v2-5465b0d2.pth"
    assert source["sha256_prefix"] == "5465b0d2" and source["layout"] == "nni"


def test_tag_picks_the_other_file(server, monkeypatch, pcv_darts):
    entry = publish_darts(server, monkeypatch, pcv_darts)
    other = dict(entry, tag="second")
    register(monkeypatch, "darts_v2_imagenet", {**entry, "sha1": "1" * 40}, other)
    assert nasnetzoo.load("darts_v2_imagenet", pretrained=True, tag="second") is not None
    with pytest.raises(WeightsUnavailableError, match=r"no weights tagged 'secnd'\. Did you mean 'second'"):
        nasnetzoo.load("darts_v2_imagenet", pretrained=True, tag="secnd")


def test_entry_without_weights_says_why_and_the_two_ways_forward():
    with pytest.raises(WeightsUnavailableError) as info:
        nasnetzoo.load("pcdarts_cifar", pretrained=True)
    msg = str(info.value)
    assert "never published by its authors" in msg and "nasnetzoo convert" in msg
    assert "nasnetzoo train --recipe recipes/retrain_cifar10.yaml --arch pcdarts_cifar" in msg


def test_cli_info_and_list_show_the_sources():
    from click.testing import CliRunner

    from nasnetzoo.cli import cli

    out = CliRunner().invoke(cli, ["info", "nasnet_a_large"], catch_exceptions=False).output
    assert "timm (default): https://huggingface.co/timm/nasnetalarge.tf_in1k/resolve/2188423a" in out
    assert "checksum sha256 a9852852" in out and "checksum sha1 f354d28f" in out
    assert "publisher's figures: top-1/top-5 error 17.374 / 3.958 %" in out and "paper: top-1/top-5 error 17.3 / 3.8 %" in out
    listing = CliRunner().invoke(cli, ["list"], catch_exceptions=False).output
    with_weights = {line.split()[0] for line in listing.splitlines() if line.rstrip().endswith(" yes")}
    assert with_weights == {"darts_v2_cifar", "darts_v2_imagenet", "nasnet_a_mobile", "nasnet_a_large",
                           "pnasnet5_large"}


def test_hub_file_in_timm_layout_from_the_local_hub_cache(tmp_path, monkeypatch, caches):
    """timm's layout (nasnetalarge's keys, a safetensors file on the hub) through a local hub cache
    with downloads off: converted once with pool_padding=timm, then served from nasnetzoo's cache
    even after the hub cache is gone.  (A narrow NASNet-A Large, F=8, to stay fast.)"""
    timm_nasnet = pytest.importorskip("timm.models.nasnet")
    from safetensors.torch import save_file

    torch.manual_seed(2)
    reference = calibrate(timm_nasnet.NASNetALarge(num_classes=1000, num_features=24 * 8), 96)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    commit = "2188423afb58a54ecc6eb20e22179f24bfb92275"
    folder = tmp_path / "hf" / "hub" / "models--timm--nasnetalarge.tf_in1k"
    blob = folder / "blobs" / digest
    blob.parent.mkdir(parents=True)
    blob.write_bytes(path.read_bytes())
    link = folder / "snapshots" / commit / "model.safetensors"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    register(monkeypatch, "nasnet_a_large", {"tag": "timm", "hub": "timm/nasnetalarge.tf_in1k",
                                             "filename": "model.safetensors", "revision": commit,
                                             "sha256": digest, "layout": "timm",
                                             "config": {"F": 8, "pool_padding": "timm"}})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    model = nasnetzoo.load("nasnet_a_large", pretrained=True)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-4)
    assert model.pretrained_cfg["config"]["pool_padding"] == "timm"
    import shutil

    shutil.rmtree(tmp_path / "hf")
    with torch.no_grad():
        torch.testing.assert_close(nasnetzoo.load("nasnet_a_large", pretrained=True)(x), model(x), rtol=0, atol=0)
