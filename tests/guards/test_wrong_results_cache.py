"""Cached files are trusted only while they match the digest written when they were made: a
flipped bit or a cut file in ``<cache>/converted/`` is made again (or refused with the exact
command), and ``download NAME`` only says "verified" of what it checked."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from click.testing import CliRunner

from nasnetzoo import registry
from nasnetzoo.cli import cli
from nasnetzoo.weights import WeightsError, WeightsUnavailableError, pretrained, save_pretrained
from nasnetzoo.weights.sources import select_source

ENTRY = {"tag": "pcv", "url": "http://127.0.0.1:9/darts-0775-fc3171c5.pth.zip", "archive": "zip",
         "member": "darts-0775-fc3171c5.pth", "sha1": "fc3171c5b89b270fc7673dbbb5047f5879d7e774",
         "layout": "pytorchcv"}


@pytest.fixture()
def conversions(weights_env, monkeypatch):
    """A registry entry whose conversion is counted (and cheap: a 2-tensor file)."""
    e = registry.get_entry("darts_v2_imagenet")
    monkeypatch.setitem(registry._zoo()[2], e.name, dataclasses.replace(e, weights=(ENTRY,)))
    made = []

    def convert_source(source, build, target, *, force=False):
        if made and made[-1] == "offline":
            raise WeightsUnavailableError("the source is not downloaded and downloads are off")
        made.append(target)
        return save_pretrained({"w": torch.full((1024,), -0.119)}, target)

    monkeypatch.setattr(pretrained, "convert_source", convert_source)
    return made


def load(source):
    return pretrained.pretrained_file(source, build=None)


def flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40   # the exponent of the last float: -0.119 becomes about -4e37
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_the_converted_cache_is_made_again(conversions):
    source = select_source("darts_v2_imagenet")
    path = load(source)
    assert load(source) == path and len(conversions) == 1     # a sound cache is used as it is
    flip_a_bit(path)
    assert load(source) == path and len(conversions) == 2     # re-made, not trusted
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(path))["w"], torch.full((1024,), -0.119))


def test_a_cache_without_a_digest_is_not_trusted(conversions):
    source = select_source("darts_v2_imagenet")
    path = load(source)
    pretrained.cache_digest.digest_path(path).unlink()
    load(source)
    assert len(conversions) == 2


def test_a_damaged_cache_whose_source_is_gone_is_refused_with_the_command(conversions):
    source = select_source("darts_v2_imagenet")
    path = load(source)
    path.write_bytes(path.read_bytes()[:1000])   # cut
    conversions.append("offline")
    with pytest.raises(WeightsError) as err:
        load(source)
    text = str(err.value)
    assert "\n" not in text and "was damaged (its size is 1000 bytes" in text
    assert "`nasnetzoo download darts_v2_imagenet --tag pcv --force`" in text and not path.exists()


def test_download_does_not_call_a_cut_file_verified(conversions):
    source = select_source("darts_v2_imagenet")
    path = load(source)
    path.write_bytes(path.read_bytes()[:1000])
    result = CliRunner().invoke(cli, ["download", "darts_v2_imagenet"])
    assert result.exit_code == 0 and "sha1 verified" in result.output
    assert len(conversions) == 2 and path.stat().st_size > 1000   # what it reports was checked, then re-made
