"""Nothing nasnetzoo reads as weights can run code: a converted checkpoint or a published archive
holding a pickle that would call a function is refused, and the function never runs."""
from __future__ import annotations

import io
import os
import zipfile

import pytest
import torch

from nasnetzoo.hub.convert import convert_checkpoint
from nasnetzoo.weights import CheckpointError
from nasnetzoo.weights.fetch import extracted
from nasnetzoo.weights.layouts import read_checkpoint
from nasnetzoo.weights.sources import WeightsSource

pytestmark = pytest.mark.usefixtures("one_thread")


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_convert_refuses_code_running_pickle(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"stem.0.weight": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused.*never runs code"):
        convert_checkpoint(tmp_path / "evil.pt", tmp_path / "o.safetensors", fmt="darts", arch="darts_v2_cifar")
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()


def test_archive_member_is_read_by_name_only(tmp_path):
    """A zip whose other members try to escape the cache folder: only the named member is copied
    out, to a temporary file of nasnetzoo's choosing; nothing else is written anywhere."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, buffer)
    archive = tmp_path / "cache" / "m.pth.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../../escaped.txt", b"x")
        bundle.writestr("m.pth", buffer.getvalue())
    source = WeightsSource(model="darts_v2_imagenet", tag="t", checksum_kind="sha1", checksum="0" * 40,
                           url="http://127.0.0.1/m.pth.zip", archive="zip", member="m.pth")
    with extracted(archive, source) as member:
        torch.testing.assert_close(read_checkpoint(member), {"w": torch.zeros(1)})
        assert member.parent != archive.parent and member.name == "member"
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    assert sorted(p.name for p in archive.parent.iterdir()) == ["m.pth.zip"]  # the temp folder is gone
