"""PNAS's cell space is one thing whatever searches it: random search, regularized evolution and PNAS
turn the same actions into the same genotype (every block's output concatenated, TF-slim's
``PNasNetNormalCell``) and build it as the same child (PNASNet's layout).

Each search is stopped where it hands the pipeline its space and child settings, so nothing trains."""
from __future__ import annotations

import pytest

from nasnetzoo.genotype import Cell
from nasnetzoo.search.sampled import pnas_runner, runners
from nasnetzoo.search.sampled.child import build_child
from nasnetzoo.search.sampled.pnas_cells import ProgressiveSpace
from nasnetzoo.search.sampled.pnas_recipe import PNASRecipe
from nasnetzoo.search.sampled.recipe import EvolutionRecipe, RandomRecipe
from nasnetzoo.search.sampled.space import PNAS_OPS, SearchSpace

CHILD = dict(dataset="digits", image_size=8, held_out=200, N=1, F=4, epochs=1, device="cpu")
# Three blocks, each in canonical order; block 1 reads block 0 (state 2) and block 2 reads block 1
# (state 3), so "the states no block reads" (NASNet's rule) is only state 4, while every block's
# output is states 2, 3, 4.
ACTIONS = [0, 1, 0, 4, 0,    # sep 3x3 of h_i + identity of h_{i-1}
           1, 2, 6, 1, 0,    # max pool of h_{i-1} + sep 5x5 of block 0
           0, 3, 5, 2, 0]    # avg pool of h_i + sep 7x7 of block 1


class Handed(Exception):
    """Raised in place of the pipeline: carries what the search handed it."""


def handed_spec(monkeypatch, module, search, recipe):
    def stop(spec, *args, **kwargs):
        raise Handed(spec)

    monkeypatch.setattr(module, "run_sampled_search", stop)
    with pytest.raises(Handed) as caught:
        search(recipe)
    return caught.value.args[0]


def test_random_evolution_and_pnas_build_the_same_child_from_the_same_actions(monkeypatch):
    common = dict(num_blocks=3, child=dict(CHILD), progress=False)
    specs = {
        "random": handed_spec(monkeypatch, runners, runners.random_search,
                              RandomRecipe(space="pnas", children=4, **common)),
        "evolution": handed_spec(monkeypatch, runners, runners.evolution_search,
                                 EvolutionRecipe(space="pnas", population=4, sample_size=2, children=8, **common)),
        "pnas": handed_spec(monkeypatch, pnas_runner, pnas_runner.pnas_search,
                            PNASRecipe(ops=list(PNAS_OPS), beam_size=2, **common)),
    }
    genotypes = {name: spec.space.to_genotype(ACTIONS) for name, spec in specs.items()}
    cell = genotypes["pnas"].normal
    assert cell.concat == (2, 3, 4) != Cell(cell.nodes, (0,)).unused_states() == (4,)   # every block, not NASNet's
    progressive = ProgressiveSpace(PNAS_OPS, 3)
    assert progressive.to_genotype(progressive.from_actions(ACTIONS)).normal == cell       # PNAS's own conversion
    for name, genotype in genotypes.items():
        assert genotype.normal == genotype.reduce == cell, name
        assert specs[name].child == specs["pnas"].child, name
    child = specs["pnas"].child
    assert (child.reduction, child.skip_reduction_layer_input) == ("stride", True)        # PNASNet's layout
    nets = {name: build_child(genotypes[name].to_dict(), specs[name].child, 10) for name in specs}
    assert {net.total_num_cells for net in nets.values()} == {3 * 1}                       # 3N cells, no extra reductions
    assert len({sum(p.numel() for p in net.parameters()) for net in nets.values()}) == 1


def test_the_recipes_child_keys_still_choose_the_layout():
    assert RandomRecipe(space="pnas", child={"reduction": "cell"}).child_config.reduction == "cell"
    assert RandomRecipe(space="nasnet").child_config.reduction == "cell"        # NASNet's and AmoebaNet's stay
    assert EvolutionRecipe().child_config.reduction == "cell"
    space = SearchSpace.preset("pnas")
    assert space.encode(space.to_genotype(ACTIONS)) == ACTIONS
