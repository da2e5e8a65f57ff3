"""Data: CIFAR-10 read from its real on-disk format, the embedded digits set, sharding."""
import pickle

import numpy as np
import pytest
import torch

from nasnetzoo.data.datasets import (DataError, MEAN_STD, TensorLoader, build_data, digits_tensors,
                                  train_indices)
from nasnetzoo.data.augment import BatchAugment
from nasnetzoo.train.recipe import Recipe

N_PER_BATCH, N_TEST = 4, 6


def _image(i: int) -> np.ndarray:
    """A recognisable 3x32x32 uint8 image: channel c, row r holds (7 * i + 3 * c + r) % 256."""
    c, r = np.meshgrid(np.arange(3), np.arange(32), indexing="ij")
    plane = (7 * i + 3 * c + r) % 256
    return np.repeat(plane[:, :, None], 32, axis=2).astype(np.uint8)


def write_cifar10(root):
    """Tiny CIFAR-10 in torchvision's on-disk layout: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    index = 0
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        count = N_TEST if name == "test_batch" else N_PER_BATCH
        ids = list(range(index, index + count))
        index += count
        entry = {"batch_label": name, "labels": [i % 10 for i in ids],
                 "data": np.stack([_image(i).reshape(-1) for i in ids]), "filenames": [f"{i}.png" for i in ids]}
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_cases_per_batch": N_PER_BATCH}, handle)


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    write_cifar10(tmp_path)
    # Our files are not the real ones, so their md5 sums differ; everything else is torchvision's code.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    return tmp_path


@pytest.mark.parametrize("on_device", ["off", "on"])
def test_cifar10_loader_reads_the_real_format(cifar_dir, on_device):
    recipe = Recipe(dataset="cifar10", data_dir=str(cifar_dir), download=False, crop_padding=0, hflip=False,
                    workers=0, data_on_device=on_device)
    data = build_data(recipe, micro_batch=4, device=torch.device("cpu"))
    assert (data.train_size, data.val_size, data.num_classes) == (5 * N_PER_BATCH, N_TEST, 10)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in MEAN_STD["cifar10"])
    images, labels = next(iter(data.val))          # validation is in file order
    images, labels = images[:4], labels[:4]
    expected = torch.stack([torch.from_numpy(_image(20 + i)).float() / 255 for i in range(4)])
    assert torch.allclose(images * std + mean, expected, atol=1e-5)
    assert labels.tolist() == [(20 + i) % 10 for i in range(4)]
    seen = []
    for images, labels in data.train:
        assert images.shape == (4, 3, 32, 32)
        pixel = torch.round((images * std + mean)[:, 0, 0, 0] * 255).long()   # = 7 i mod 256
        seen += [(int(p) * 183) % 256 for p in pixel]                           # 183 = 7^-1 mod 256
        assert [(i % 10) for i in seen[-4:]] == labels.tolist()
    assert sorted(seen) == list(range(20))


def test_missing_cifar_without_download_says_what_to_do(tmp_path):
    recipe = Recipe(dataset="cifar10", data_dir=str(tmp_path), download=False, workers=0)
    with pytest.raises(DataError, match="cifar-10-batches-py.*download: true"):
        build_data(recipe, micro_batch=4, device=torch.device("cpu"))


def test_digits_split_is_fixed_and_real():
    xtr, ytr, xva, yva = digits_tensors(16)
    assert xtr.shape == (1438, 3, 16, 16) and xva.shape == (359, 3, 16, 16)
    assert sorted(set(ytr.tolist())) == list(range(10)) and 34 <= int((yva == 3).sum()) <= 38
    again = digits_tensors(16)
    assert torch.equal(again[3], yva) and torch.equal(again[2], xva)
    assert 0.0 <= float(xtr.min()) and float(xtr.max()) <= 1.0


def test_tensor_loader_shards_like_distributed_sampler():
    n = 50
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    labels = torch.arange(n)
    aug = BatchAugment((0.0,) * 3, (1.0,) * 3)
    single = TensorLoader(images, labels, 10, augment=aug, train=True, seed=3)
    single.set_epoch(2)
    order = [i for _, y in single for i in y.tolist()]
    assert order == train_indices(n, seed=3, epoch=2, rank=0, world=1)[:50]
    shards = []
    for rank in range(2):
        loader = TensorLoader(images, labels, 5, augment=aug, train=True, rank=rank, world=2, seed=3)
        loader.set_epoch(2)
        shards.append([y.tolist() for _, y in loader])
    # the union of the two ranks' batch k is the one-process batch k (global batch 10)
    for k, (a, b) in enumerate(zip(*shards)):
        assert sorted(a + b) == sorted(order[10 * k:10 * k + 10])


def test_eval_command_reports_top1_top5_beside_the_paper(cifar_dir, tmp_path):
    from click.testing import CliRunner

    import nasnetzoo
    from nasnetzoo.cli import cli
    from nasnetzoo.factory import resolve
    from nasnetzoo.train.artifacts import save_weights

    spec = resolve("pcdarts_cifar", num_classes=10, C=4, layers=3)
    weights = save_weights(spec.build(), tmp_path / "w.safetensors", spec)
    result = CliRunner().invoke(cli, ["eval", "--arch", "pcdarts_cifar", "--weights", str(weights), "--data",
                                      "cifar10", "--data-dir", str(cifar_dir), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("pcdarts_cifar on cifar10 (6 images): top-1 ")
    assert "top-5" in result.output and "| paper: top-1 97.43%" in result.output
    assert nasnetzoo.load("pcdarts_cifar", weights=str(weights), num_classes=10, C=4, layers=3) is not None
