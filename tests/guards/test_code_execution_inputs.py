"""Issue 15 (code execution): YAML tags that would build Python objects are refused, never run."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nasnetzoo.cli import cli

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/new:os.system",
                                 "!!python/name:os.system"])
def test_python_tags_in_a_genotype_or_recipe_do_not_run(tag, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    payload = f"{tag} ['touch {marker}']"
    genotype = tmp_path / "evil_genotype.yaml"
    genotype.write_text((REPO / "genotypes" / "darts_v2.yaml").read_text()
                        .replace("provenance:\n", f"provenance:\n  evil: {payload}\n"))
    recipe = tmp_path / "evil_recipe.yaml"
    recipe.write_text((REPO / "recipes" / "smoke_train.yaml").read_text()
                      .replace("model: {C: 8, layers: 5}", f"model: {payload}"))
    runner = CliRunner()
    for args, path in ((["genotype", str(genotype)], genotype),
                       (["train", "--recipe", str(recipe), "--out", str(tmp_path / "run")], recipe)):
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and "python/" in lines[0]
        assert "Traceback" not in result.output
    assert not marker.exists()
