"""Network trouble gives one line, fast: a refused connection or a host that accepts and never
answers fails within the short timeout with no retry storm, for URL and hub sources alike; an
unknown name in `nasnetzoo download` gets a did-you-mean."""
from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time

import pytest
from click.testing import CliRunner

import nasnetzoo
from nasnetzoo import registry
from nasnetzoo.cli import cli
from nasnetzoo.weights import WeightsUnavailableError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def env(weights_env, monkeypatch):
    monkeypatch.setenv("NASNETZOO_DOWNLOAD_TIMEOUT", "2")   # the host that never answers fails fast


@pytest.fixture()
def silent_host():
    """Accepts connections on 127.0.0.1 and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def register(monkeypatch, model, entry):
    e = registry.get_entry(model)
    monkeypatch.setitem(registry._zoo()[2], e.name, dataclasses.replace(e, weights=(entry,)))


URL_SOURCE = {"archive": "zip", "member": "darts-0775-fc3171c5.pth",
              "sha1": "fc3171c5b89b270fc7673dbbb5047f5879d7e774", "layout": "pytorchcv"}


@pytest.mark.parametrize("host", ["refused", "silent"])
def test_url_source_fails_fast_in_one_line(monkeypatch, silent_host, caplog, host):
    base = silent_host if host == "silent" else f"http://127.0.0.1:{closed_port()}"
    register(monkeypatch, "darts_v2_imagenet", {"url": f"{base}/darts-0775-fc3171c5.pth.zip", **URL_SOURCE})
    start = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(WeightsUnavailableError) as err:
        nasnetzoo.load("darts_v2_imagenet", pretrained=True)
    elapsed = time.monotonic() - start
    text = str(err.value)
    assert "\n" not in text and base in text and "put the file at" in text
    assert ("no answer within 2 s" if host == "silent" else "refused") in text
    assert elapsed < 10 and "Retrying" not in caplog.text


@pytest.mark.parametrize("host", ["refused", "silent"])
def test_hub_source_fails_fast_in_one_line(monkeypatch, silent_host, caplog, capfd, host):
    from huggingface_hub import constants

    base = silent_host if host == "silent" else f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", base)
    register(monkeypatch, "nasnet_a_large", {"hub": "timm/nasnetalarge.tf_in1k", "filename": "model.safetensors",
                                             "revision": "2188423afb58a54ecc6eb20e22179f24bfb92275",
                                             "sha256": "a" * 64, "layout": "timm"})
    start = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(WeightsUnavailableError) as err:
        nasnetzoo.load("nasnet_a_large", pretrained=True)
    elapsed = time.monotonic() - start
    text = str(err.value)
    assert "\n" not in text and "hub repo timm/nasnetalarge.tf_in1k" in text and "snapshots/2188423a" in text
    assert elapsed < 10
    assert "Retrying" not in caplog.text and "Retrying" not in capfd.readouterr().err


def test_download_unknown_name_gets_did_you_mean():
    result = CliRunner().invoke(cli, ["download", "pcdart_cifar"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'pcdart_cifar'" in lines[0] and "Did you mean 'pcdarts_cifar'" in lines[0]


def test_download_entry_without_weights_says_why():
    result = CliRunner().invoke(cli, ["download", "pcdarts_cifar"])
    assert result.exit_code == 1
    line, = result.output.strip().splitlines()
    assert "never published by its authors" in line and "nasnetzoo convert" in line and "nasnetzoo train" in line
