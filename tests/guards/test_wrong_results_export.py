"""Exports never label or check wrong results silently (issue 15): non-finite logits are named, not
compared; weights for another class count are not exported under another dataset's name."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxslim")

from nasnetzoo.cli import cli  # noqa: E402
from nasnetzoo.export import export_onnx  # noqa: E402
from nasnetzoo.export.checks import Case, check_outputs  # noqa: E402
from nasnetzoo.export.errors import ExportVerificationError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def _one_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_nan_weights_are_reported_as_non_finite_outputs(tmp_path):
    model = Tiny()
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    with pytest.raises(ExportVerificationError, match="non-finite outputs") as err:
        export_onnx(model, tmp_path, name="tiny", input_size=(8, 8), threads=1)
    assert "\n" not in str(err.value) and "UnboundLocalError" not in str(err.value)
    assert not list(tmp_path.iterdir())


def test_check_outputs_with_nan_on_either_side_fails_without_a_crash():
    ref = Case(x=torch.zeros(1, 3).numpy(), ref=torch.ones(1, 5).numpy(), eps32=0.0)
    bad = torch.ones(1, 5).numpy()
    bad[0, 2] = float("nan")
    check = check_outputs("fp32", "test", [ref], [bad], fp16=False)
    assert not check.passed and not check.finite
    nan_ref = Case(x=ref.x, ref=bad, eps32=0.0)
    check = check_outputs("fp32", "test", [nan_ref], [torch.ones(1, 5).numpy()], fp16=False)
    assert not check.passed and not check.finite
    assert check_outputs("fp32", "test", [ref], [ref.ref], fp16=False).passed


def test_export_at_one_pixel_gives_one_line(tmp_path):
    line = _one_line(CliRunner().invoke(cli, ["export", "pcdarts_cifar", "--input-size", "1", "1",
                                              "--threads", "1", "-o", str(tmp_path / "out")]))
    assert "UnboundLocalError" not in line and "limit_shown" not in line
    assert not (tmp_path / "out" / "pcdarts_cifar.json").exists()


def test_ten_class_weights_are_not_exported_as_cifar100(tmp_path):
    import nasnetzoo
    from nasnetzoo.hub.pretrained import save_pretrained

    weights = save_pretrained(nasnetzoo.load("pcdarts_cifar"), tmp_path / "w10.safetensors")
    line = _one_line(CliRunner().invoke(cli, ["export", "pcdarts_cifar", "--weights", str(weights), "--dataset",
                                              "cifar100", "-o", str(tmp_path / "out")]))
    assert "cifar100" in line and "100-class" in line and "10-class" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
