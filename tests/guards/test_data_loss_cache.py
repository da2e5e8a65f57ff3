"""A full or read-only disk is the disk's fault: the publisher's file is kept and the line says so
(never "truncated download"); no output replaces an input; nothing is written through a planted
link; what a killed writer left is cleaned on the next run."""
from __future__ import annotations

import errno
import os
import zipfile

import pytest
from click.testing import CliRunner

from nasnetzoo.cli import cli
from nasnetzoo.weights import fetch
from nasnetzoo.weights.sources import WeightsSource

SOURCE = WeightsSource(model="darts_v2_imagenet", tag="t", checksum_kind="sha1", checksum="0" * 40,
                       url="http://127.0.0.1:9/pub.zip", archive="zip", member="m.pth", layout="pytorchcv")


def publisher_zip(weights_env):
    path = weights_env / "sources" / "pub.zip"
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("m.pth", b"\0" * (3 << 20))   # several blocks: the disk fills after the first
    return path


class FullDisk:
    """A file whose writes fail as a full (or read-only) disk's do, after ``room`` bytes."""

    def __init__(self, handle, code, room=1 << 20):
        self.handle, self.code, self.room = handle, code, room

    def write(self, data):
        if self.room < len(data):
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return self.handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_full_disk_while_extracting_keeps_the_zip_and_says_disk(weights_env, monkeypatch, code):
    archive = publisher_zip(weights_env)
    before = archive.read_bytes()
    real_open = open
    monkeypatch.setattr(fetch, "open", lambda p, mode="r", *a, **k: FullDisk(real_open(p, mode, *a, **k), code),
                        raising=False)
    with pytest.raises(fetch.CacheWriteError) as err:
        with fetch.extracted(archive, SOURCE):
            pass
    text = str(err.value)
    assert "\n" not in text and "truncated" not in text and "--force" not in text
    assert ("no space left" if code == errno.ENOSPC else "read-only") in text and "pub.zip was kept" in text
    assert archive.read_bytes() == before   # a source file is deleted only when its checksum fails
    assert [p.name for p in archive.parent.iterdir()] == ["pub.zip"]   # the work folder went too


def test_a_corrupt_zip_is_still_called_corrupt_and_removed(weights_env):
    archive = publisher_zip(weights_env)
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(fetch.ChecksumError, match="not a readable zip"):
        with fetch.extracted(archive, SOURCE):
            pass
    assert not archive.exists()


def test_convert_refuses_to_write_over_its_input(tmp_path):
    src = tmp_path / "w.safetensors"
    src.write_bytes(b"the user's only copy")
    os.link(src, tmp_path / "hard.safetensors")
    for output in (src, tmp_path / "hard.safetensors"):
        result = CliRunner().invoke(cli, ["convert", "--from", "darts", str(src), "-o", str(output),
                                          "--arch", "darts_v2_cifar"])
        assert result.exit_code == 1 and "is the input file" in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert src.read_bytes() == b"the user's only copy"


def test_a_planted_lock_link_is_refused_and_its_target_untouched(weights_env, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    precious = tmp_path / "thesis.tex"
    precious.write_text("years of work")
    (weights_env / "sources").mkdir(parents=True)
    (weights_env / "sources" / "pub.zip.lock").symlink_to(precious)
    with pytest.raises(Exception, match="is a symbolic link"):
        fetch.fetch(SOURCE)
    assert precious.read_text() == "years of work"


def dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            pass
        pid -= 1


def test_temporaries_of_a_killed_writer_are_cleaned_on_the_next_run(weights_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = weights_env / "sources"
    folder.mkdir(parents=True)
    pid = dead_pid()
    stale = [folder / f".pub.zip.{pid}.part", folder / f".pub.zip.{pid}.ab12cd34.tmp"]
    for item in stale:
        item.write_bytes(b"half")
    (folder / f"nasnetzoo-{pid}-xyz").mkdir()
    live = folder / f".pub.zip.{os.getpid()}.part"   # our own (a live writer's): kept
    live.write_bytes(b"live")
    other = folder / "notes.part"                    # not a name nasnetzoo writes: kept
    other.write_bytes(b"mine")
    with pytest.raises(fetch.WeightsUnavailableError):
        fetch.fetch(SOURCE)                           # offline: it fails, but after cleaning
    assert not any(p.exists() for p in stale) and not (folder / f"nasnetzoo-{pid}-xyz").exists()
    assert live.exists() and other.exists()


def test_full_disk_while_downloading_says_disk_not_network(weights_env, monkeypatch):
    import http.server
    import threading

    class Publisher(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = b"\0" * (3 << 20)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Publisher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = WeightsSource(model="darts_v2_imagenet", tag="t", checksum_kind="sha1", checksum="0" * 40,
                               url=f"http://127.0.0.1:{server.server_address[1]}/pub.pth", layout="pytorchcv")
        real_open = open
        monkeypatch.setattr(fetch, "open", lambda p, mode="r", *a, **k:
                            FullDisk(real_open(p, mode, *a, **k), errno.ENOSPC), raising=False)
        with pytest.raises(fetch.CacheWriteError) as err:
            fetch.fetch(source)
    finally:
        server.shutdown()
        server.server_close()
    text = str(err.value)
    assert "no space left" in text and "check the network" not in text and "\n" not in text
    assert [p.name for p in (weights_env / "sources").iterdir() if not p.name.endswith(".lock")] == []
