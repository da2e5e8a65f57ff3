"""Names that become paths or URLs are checked where they enter: a registry tag, hub id or file
name with '../' is refused in one line (so no cache write can leave the cache), and so is
`push --repo ../../x`, with and without --dry-run, before anything is read or sent."""
from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from nasnetzoo import registry
from nasnetzoo.cli import cli
from nasnetzoo.errors import ConfigError
from nasnetzoo.weights.sources import sources_for

HUB = {"hub": "timm/nasnetalarge.tf_in1k", "filename": "model.safetensors",
       "revision": "2188423afb58a54ecc6eb20e22179f24bfb92275", "sha256": "a" * 64, "layout": "timm"}


@pytest.mark.parametrize("change, field", [
    ({"tag": "../../../escaped"}, "tag"),
    ({"hub": "../../evil"}, "hub"),
    ({"hub": "owner/na--me"}, "hub"),
    ({"filename": "../../outside.safetensors"}, "filename"),
    ({"filename": "/etc/passwd"}, "filename"),
    ({"hub": None, "filename": None, "revision": None, "url": "https://example.org/a/.."}, "url's file name"),
])
def test_registry_names_that_would_escape_are_refused(monkeypatch, weights_env, change, field):
    e = registry.get_entry("nasnet_a_large")
    monkeypatch.setitem(registry._zoo()[2], e.name, dataclasses.replace(e, weights=({**HUB, **change},)))
    with pytest.raises(ConfigError) as err:
        sources_for("nasnet_a_large")
    text = str(err.value)
    assert "\n" not in text and text.startswith("zoo.yaml models.nasnet_a_large.weights[0]") and field in text
    assert not any(weights_env.parent.glob("escaped*")) and not (weights_env.parent / "hf").exists()


def test_a_sound_hub_entry_in_a_subfolder_still_parses(monkeypatch):
    e = registry.get_entry("nasnet_a_large")
    monkeypatch.setitem(registry._zoo()[2], e.name,
                        dataclasses.replace(e, weights=({**HUB, "filename": "sub/model.safetensors"},)))
    assert sources_for("nasnet_a_large")[0].filename == "sub/model.safetensors"


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("repo", ["../../x", "owner/../x", "owner", "a/b/c", "owner/na..me"])
def test_push_refuses_a_repo_id_that_is_a_path(tmp_path, monkeypatch, dry_run, repo):
    import huggingface_hub

    def no_upload(*args, **kwargs):
        raise AssertionError("nothing is sent")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", no_upload)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not read: the repo id is refused first")
    result = CliRunner().invoke(cli, ["push", "darts_v2_cifar", "--weights", str(weights), "--repo", repo]
                                + (["--dry-run"] if dry_run else []))
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    line, = result.output.strip().splitlines()
    assert "is not 'owner/name'" in line and repr(repo) in line
