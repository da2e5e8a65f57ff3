"""The command line, through click's CliRunner."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import nasnetzoo
from nasnetzoo.cli import cli


@pytest.fixture()
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, list(args), catch_exceptions=False)
    return invoke


def test_list_shows_every_entry(run):
    result = run("list")
    assert result.exit_code == 0
    for name in nasnetzoo.list_models():
        assert name in result.output
    header = result.output.splitlines()[0]
    for column in ("name", "family", "dataset", "params", "MACs", "err", "weights"):
        assert column in header


def test_list_pattern_and_measure(run):
    result = run("list", "*cifar*", "--measure")
    assert result.exit_code == 0, result.output
    assert "pcdarts_cifar" in result.output and "pcdarts_imagenet" not in result.output
    row = next(line for line in result.output.splitlines() if line.startswith("pcdarts_cifar "))
    assert "3.63" in row and "557" in row  # measured params (M) and MACs (M)
    assert "measured" in result.output.splitlines()[0]


def test_list_no_match(run):
    result = run("list", "resnet*")
    assert result.exit_code != 0 and "no model matches 'resnet*'" in result.output


def test_info_reports_measured_reference_and_paper(run):
    result = run("info", "PC-DARTS-ImageNet")
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("pcdarts_imagenet")
    assert "5.342" in out and "5.343" in out  # measured and reference params
    assert "581.6" in out and "597" in out     # measured MACs and the paper's
    assert "24.2 / 7.3" in out and "2.6% above" in out
    assert "PC_DARTS_image" in out


def test_info_explains_darts_imagenet_macs(run):
    out = run("info", "darts_v2_imagenet").output
    assert "574" in out and "not reproduced" in out


def test_info_json_and_dataset(run):
    result = run("info", "pcdarts_cifar", "--dataset", "imagenet", "--json")
    data = json.loads(result.output)
    assert data["dataset"] == "imagenet" and data["reported"]["top1_err"] == 25.1
    assert data["measured"]["params"] == pytest.approx(5.271e6, rel=0.01)


def test_genotype_formats(run):
    out = run("genotype", "darts_v2", "--format", "string").output.strip()
    assert nasnetzoo.Genotype.from_string(out) == nasnetzoo.get_genotype("darts_v2")
    assert "nodes:" in run("genotype", "DARTS").output


def test_plot_writes_file(run, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "cell.svg"
    result = run("plot", "pcdarts_imagenet", "--cell", "reduce", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert target.stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["info", "pcdarts_imagnet"], "unknown model 'pcdarts_imagnet'"),
    (["info", "missing/genotype.yaml"], "does not exist"),
    (["plot", "darts_v2", "-o", "cell.bmp"], ".bmp"),
    (["genotype", "nasnett"], "unknown model 'nasnett'"),
])
def test_user_errors_are_one_line_without_traceback(run, message, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "nasnetzoo", "info", "nope"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip() == ("Error: unknown model 'nope': not a registry name, alias or genotype file. "
                                   "`nasnetzoo list` shows all models.")
