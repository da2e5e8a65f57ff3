"""One line naming the value and the fix, never a traceback: numeric environment variables,
a device given as weights, deeply nested metadata, a refused upload, a read-only hub cache,
`bench --max-time nan`, a zip of paths given to `convert`, a corrupt image in an eval folder."""
from __future__ import annotations

import errno
import zipfile

import pytest
import torch
from click.testing import CliRunner

import nasnetzoo
from nasnetzoo.cli import cli
from nasnetzoo.cli_errors import as_user_error
from nasnetzoo.errors import ConfigError, NasNetZooError
from nasnetzoo.weights import WeightsError, fetch, read_metadata
from nasnetzoo.weights.sources import WeightsSource

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("value", ["abc", "inf", "nan", "0", "-3", "1e9"])
def test_download_timeout_names_the_variable_and_the_range(monkeypatch, value):
    monkeypatch.setenv("NASNETZOO_DOWNLOAD_TIMEOUT", value)
    with pytest.raises(ConfigError) as err:
        fetch.timeout_s()
    assert str(err.value).startswith(f"NASNETZOO_DOWNLOAD_TIMEOUT={value!r} ") and "from 1 to 3600" in str(err.value)


def test_download_timeout_default_and_a_sound_value(monkeypatch):
    monkeypatch.delenv("NASNETZOO_DOWNLOAD_TIMEOUT", raising=False)
    assert fetch.timeout_s() == 15.0
    monkeypatch.setenv("NASNETZOO_DOWNLOAD_TIMEOUT", "2.5")
    assert fetch.timeout_s() == 2.5


def test_a_device_given_as_weights_is_not_called_missing():
    with pytest.raises(WeightsError, match="is not a regular file"):
        nasnetzoo.load("darts_v2_cifar", weights="/dev/zero")


def test_deeply_nested_metadata_is_one_line(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "deep.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"config": "[" * 100_000 + "]" * 100_000})
    for call in (lambda: nasnetzoo.load("darts_v2_cifar", weights=path),
                 lambda: read_metadata(path)):
        with pytest.raises(WeightsError, match="nested too deeply"):
            call()
    result = CliRunner().invoke(cli, ["push", "darts_v2_cifar", "--weights", str(path), "--repo", "me/x",
                                      "--dry-run"])
    assert result.exit_code == 1 and "nested too deeply" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_push_to_a_hub_that_refuses_the_connection_is_one_line(tmp_path):
    from nasnetzoo.hub.card import push_weights

    # huggingface_hub 1.x sends with httpx, whose ConnectError is no OSError (stand-in if httpx is absent)
    try:
        from httpx import ConnectError
    except ImportError:
        ConnectError = type("ConnectError", (Exception,), {"__module__": "httpx"})

    model = nasnetzoo.load("darts_v2_cifar", C=8, layers=5)
    weights = nasnetzoo.save_pretrained(model, tmp_path / "w.safetensors", metadata={"license": "mit"})

    class Refused:
        def create_repo(self, *args, **kwargs):
            raise ConnectError("[Errno 111] Connection refused")

    with pytest.raises(NasNetZooError) as err:
        push_weights("darts_v2_cifar", weights, "me/darts", api=Refused())
    assert "Connection refused" in str(err.value) and "check the network" in str(err.value)


def test_a_read_only_hub_cache_says_so(weights_env, monkeypatch):
    import huggingface_hub

    def read_only(*args, local_files_only=False, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", read_only)
    monkeypatch.setattr(fetch, "probe", lambda url, source: None)
    source = WeightsSource(model="nasnet_a_large", tag="t", checksum_kind="sha256", checksum="a" * 64, layout="timm",
                           hub="timm/nasnetalarge.tf_in1k", filename="model.safetensors", revision="1" * 40)
    with pytest.raises(fetch.CacheWriteError) as err:
        fetch.fetch(source)
    text = str(err.value)
    assert "read-only" in text and "not writable" in text and "network" not in text


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_bench_max_time_must_be_positive_and_finite(value):
    result = CliRunner().invoke(cli, ["bench", "darts_v2_cifar", "--max-time", value])
    assert result.exit_code == 1
    line, = result.output.strip().splitlines()
    assert "--max-time" in line and "positive, finite" in line


def test_convert_names_a_zip_of_paths_as_an_archive(tmp_path):
    bad = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad, "w") as bundle:
        bundle.writestr("../evil.txt", "x")
        bundle.writestr("a/data.pkl", "y")
    result = CliRunner().invoke(cli, ["convert", "--from", "darts", str(bad), "-o", str(tmp_path / "o.safetensors"),
                                      "--arch", "darts_v2_cifar"])
    line, = result.output.strip().splitlines()
    assert result.exit_code == 1 and "is a zip archive, not a torch.save checkpoint" in line
    assert "Could this error message be improved" not in line and not (tmp_path.parent / "evil.txt").exists()


def test_a_torch_save_zip_still_reads(tmp_path):
    from nasnetzoo.weights.layouts import read_checkpoint

    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(read_checkpoint(tmp_path / "ok.pt")["w"], torch.ones(2))


def test_a_corrupt_image_in_an_eval_folder_is_named(tmp_path):
    from PIL import Image

    from nasnetzoo.data.datasets import imagenet_dataset

    folder = tmp_path / "val" / "n01"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "good.jpg")
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    dataset = imagenet_dataset(str(tmp_path), "val", transform=None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1)
    with pytest.raises(Exception) as err:
        list(loader)
    line = as_user_error(err.value).message
    assert "bad.jpg" in line and "cannot be read" in line and "DataLoader worker" not in line and "\n" not in line
