"""Issue 15 (wrong results): inputs that used to be accepted and silently gave another result."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import nasnetzoo
from nasnetzoo import ConfigError, GenotypeError
from nasnetzoo.cli import cli
from nasnetzoo.train.recipe import RecipeError, load_recipe
from nasnetzoo.yamlio import load_yaml

REPO = Path(__file__).resolve().parents[2]


def test_duplicate_key_in_a_genotype_is_refused(tmp_path):
    """Two ``reduce:`` mappings used to keep the second one without a word."""
    text = (REPO / "genotypes" / "darts_v2.yaml").read_text()
    reduce = text[text.index("reduce:\n"):text.index("provenance:\n")]
    path = tmp_path / "twice.yaml"
    path.write_text(text.replace("provenance:\n", reduce.replace("max_pool_3x3", "avg_pool_3x3") + "provenance:\n"))
    with pytest.raises(GenotypeError, match=r"line 1[0-9]: key 'reduce' is given twice \(first on line 1[0-9]\)"):
        nasnetzoo.Genotype.from_file(path)
    result = CliRunner().invoke(cli, ["genotype", str(path)], catch_exceptions=False)
    assert result.exit_code == 1 and "'reduce' is given twice" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_duplicate_key_in_a_recipe_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text((REPO / "recipes" / "smoke_train.yaml").read_text() + "lr: 10.0\n")
    with pytest.raises(RecipeError, match=r"twice.yaml'?: line \d+: key 'lr' is given twice"):
        load_recipe(path)


def test_duplicate_key_in_a_flow_mapping_is_refused():
    with pytest.raises(ValueError, match="key 'C' is given twice"):
        load_yaml("model: {C: 8, C: 16}", "r.yaml")


@pytest.mark.parametrize("option, value", [("num_classes", -1), ("num_classes", -3), ("in_chans", 0),
                                           ("num_classes", 10 ** 9), ("C", 100000), ("layers", 0),
                                           ("num_classes", 2.5)])
def test_builder_sizes_out_of_range_are_refused(option, value):
    with pytest.raises(ConfigError, match=rf"{option}={value!r}"):
        nasnetzoo.load("pcdarts_cifar", **{option: value})


def test_profile_refuses_a_huge_input_size():
    model = nasnetzoo.load("pcdarts_cifar", C=8, layers=5)
    with pytest.raises(ConfigError, match="input_size=100000 is out of range"):
        nasnetzoo.profile(model, (100000, 100000))


def test_written_yaml_has_no_aliases_and_reads_back():
    """A value shared by two keys would be written as an anchor, which the reader refuses."""
    from nasnetzoo.genotype import dump_yaml

    shared = [2, 3, 4, 5]
    data = {"a": shared, "b": shared, "c": {"d": shared}}
    assert "&" not in dump_yaml(data)
    assert load_yaml(dump_yaml(data)) == data
    recipe = load_recipe(REPO / "recipes" / "smoke_train.yaml")
    assert "&" not in recipe.to_yaml()
    assert load_yaml(recipe.to_yaml()) == recipe.to_dict()


@pytest.mark.parametrize("path", sorted((REPO / "genotypes").glob("*.yaml")) + sorted((REPO / "recipes").glob("*.yaml"))
                         + [REPO / "nasnetzoo" / "zoo.yaml"], ids=lambda p: p.name)
def test_committed_yaml_files_read_the_same_as_before(path):
    import yaml

    from nasnetzoo.yamlio import read_yaml

    assert read_yaml(path) == yaml.safe_load(path.read_text(encoding="utf-8"))
