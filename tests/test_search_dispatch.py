"""``run_search`` dispatches every strategy through one table, and a strategy registered from
outside the package runs through the library call and the CLI like a bundled one."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

import nasnetzoo
from nasnetzoo.cli import cli
from nasnetzoo.errors import ConfigError
from nasnetzoo.genotype import Cell, Edge, Genotype
from nasnetzoo.search import run_search
from nasnetzoo.search.strategies import TABLE, Strategy, get_strategy, register_strategy
from nasnetzoo.train.recipe import RecipeFile

OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3")


@dataclass
class RandomRecipe(RecipeFile):
    """A toy strategy's own recipe: random search over DARTS cells."""
    name: str = "random"
    strategy: str = "toy_random"
    seed: int = 0
    steps: int = 4


@dataclass
class RandomResult:
    run_dir: Path
    genotype: Genotype


def random_search(recipe: RandomRecipe, *, out=None, resume=None, recipe_path="", overwrite=False) -> RandomResult:
    """The toy pipeline: one seeded random DARTS cell pair, written where `train` and `load` find it."""
    rng = random.Random(recipe.seed)

    def cell() -> Cell:
        nodes = tuple(tuple(Edge(rng.choice(OPS), j) for j in rng.sample(range(i + 2), 2)) for i in range(recipe.steps))
        return Cell(nodes, tuple(range(2, recipe.steps + 2)))

    run_dir = Path(resume if resume is not None else out)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
    genotype = Genotype(cell(), cell(), "darts", f"search_{recipe.name}", {"strategy": recipe.strategy})
    genotype.save(run_dir / "genotype.yaml")
    return RandomResult(run_dir, genotype)


@pytest.fixture
def toy():
    yield register_strategy(Strategy("toy_random", run=random_search, recipe=RandomRecipe,
                                     summary=lambda r: f"random cell -> {r.run_dir / 'genotype.yaml'}"))
    TABLE.pop("toy_random")


def test_every_bundled_strategy_is_in_the_table():
    assert {"darts", "pcdarts", "parsec", "nasnet_rl"} <= set(TABLE)
    assert get_strategy("nasnet_rl").recipe.__name__ == "RLSearchRecipe"
    assert get_strategy("parsec").network == {"edge_norm": False}
    with pytest.raises(ConfigError, match="unknown search strategy 'pcdart'.*Did you mean 'pcdarts'"):
        get_strategy("pcdart")


def test_a_strategy_registered_from_outside_runs_through_run_search_and_the_cli(toy, tmp_path):
    (tmp_path / "toy.yaml").write_text("name: toy\nstrategy: toy_random\nseed: 3\n")
    result = run_search(tmp_path / "toy.yaml", out=tmp_path / "lib", overrides=["steps=3"])
    assert isinstance(result, RandomResult) and len(result.genotype.normal.nodes) == 3
    assert Genotype.from_file(tmp_path / "lib" / "genotype.yaml") == result.genotype

    cli_result = CliRunner().invoke(cli, ["search", "--recipe", str(tmp_path / "toy.yaml"), "--out",
                                          str(tmp_path / "cli"), "--set", "steps=3"])
    assert cli_result.exit_code == 0, cli_result.output
    assert cli_result.output.strip() == f"random cell -> {tmp_path / 'cli' / 'genotype.yaml'}"
    assert Genotype.from_file(tmp_path / "cli" / "genotype.yaml") == result.genotype   # same seed, same cell
    model = nasnetzoo.load(str(tmp_path / "cli" / "genotype.yaml"), C=8, layers=5)
    assert sum(p.numel() for p in model.parameters()) > 0

    with pytest.raises(ConfigError, match="already registered"):
        register_strategy(Strategy("toy_random", run=random_search, recipe=RandomRecipe))
    bad = CliRunner().invoke(cli, ["search", "--recipe", str(tmp_path / "toy.yaml"), "--out", str(tmp_path / "x"),
                                   "--init-distribution", str(tmp_path / "lib")])
    assert bad.exit_code != 0 and "the toy_random search has no such option" in bad.output


def test_strategy_options_old_flat_keys_and_recipes_written_before_the_move(tmp_path):
    from nasnetzoo.recipe_file import RecipeError
    from nasnetzoo.search.recipe import load_search_recipe

    smoke = Path(__file__).resolve().parents[1] / "recipes" / "smoke_search.yaml"
    parsec = ["strategy=parsec", "edge_norm=false"]
    assert load_search_recipe(smoke, [*parsec, "parsec_samples=3"]).strategy_options().samples == 3   # old key
    assert load_search_recipe(smoke, [*parsec, "options.samples=4"]).options == {"samples": 4, "init_distribution": ""}
    with pytest.raises(RecipeError, match=r"'parsec_samples' is an option of strategy 'parsec'.*options: \{samples"):
        load_search_recipe(smoke, ["parsec_samples=3"])
    with pytest.raises(RecipeError, match="has no options of its own"):
        load_search_recipe(smoke, ["options.samples=3"])
    # A pcdarts recipe.yaml written before the move carries PARSEC's keys at their defaults: still read.
    old = tmp_path / "recipe.yaml"
    old.write_text(smoke.read_text() + "parsec_samples: 8\ninit_distribution: ''\nchannels_last: false\n")
    recipe = load_search_recipe(old)
    assert recipe.options == {} and recipe.channels_last == "off"
