"""Regularized evolution (``strategy: evolution``): aging, tournament selection, the three mutations,
the asynchronous proposer, exact resume and the recipes.

Rewards are synthetic (the share of separable convolutions, from ``test_search_random``); the
slow CLI test trains tiny children and kills the search with SIGTERM.
"""
from __future__ import annotations

import random
from collections import Counter, deque
from pathlib import Path

import pytest
import torch

from nasnetzoo.errors import ConfigError
from nasnetzoo.genotype import Genotype
from nasnetzoo.recipe_file import RecipeError
from nasnetzoo.runs.envelope import RunInterrupted
from nasnetzoo.search.sampled.evolution import (EvolutionProposer, age, hidden_state_mutation, mutate, op_mutation,
                                                tournament)
from nasnetzoo.search.sampled.recipe import EvolutionRecipe
from nasnetzoo.search.sampled.runners import evolution_search
from nasnetzoo.search.sampled.space import AMOEBANET_OPS, SPACES, SearchSpace

from test_search_random import TINY_CHILD, read_jsonl, synthetic_reward

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


# ======================================================================== aging and selection
def test_aging_removes_the_oldest_not_the_worst():
    population = deque([(0, (), 0.9), (1, (), 0.1), (2, (), 0.5)])   # oldest (and best) on the left
    dead = age(population, (3, (), 0.2), size=3)
    assert dead == [(0, (), 0.9)] and [m[0] for m in population] == [1, 2, 3]
    assert age(population, (4, (), 0.0), size=4) == [] and len(population) == 4   # below P: nobody dies


def test_the_proposers_population_is_the_last_p_children_told():
    space = SearchSpace.preset("amoebanet")
    proposer = EvolutionProposer(space, population=4, sample_size=2, children=20, seed=0)
    told = []
    for _ in range(20):
        ((index, arch),) = proposer.ask(1)
        reward = 1.0 if index == 2 else 0.01 * index   # child 2 is the best of all, and gets old
        proposer.tell(index, arch, reward)
        told.append(index)
        assert [m[0] for m in proposer.population] == told[-4:]
    assert proposer.done() and proposer.ask(3) == []


def test_tournament_picks_the_best_of_the_s_it_draws():
    population = [(i, (), r) for i, r in enumerate([0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.4])]
    rng = random.Random(4)
    picks = Counter()
    for _ in range(300):
        replay = random.Random()
        replay.setstate(rng.getstate())
        drawn = [population[replay.randrange(len(population))] for _ in range(3)]
        winner = tournament(population, 3, rng)
        assert winner == max(drawn, key=lambda m: m[2])
        picks[winner[0]] += 1
    # S=3 of P=8 with replacement: the best wins 1 - (7/8)^3 = 33% of tournaments; the worst never
    assert 0.25 < picks[1] / 300 < 0.42 and picks[2] == 0
    assert tournament(population, 200, random.Random(0))[0] == 1   # S >> P: always the best
    with pytest.raises(ConfigError, match="non-empty population"):
        tournament([], 3, rng)


# ======================================================================== mutations
def _diff(a, b) -> list[int]:
    return [t for t, (x, y) in enumerate(zip(a, b)) if x != y]


@pytest.mark.parametrize("name", sorted(SPACES))
def test_each_mutation_changes_exactly_what_it_should_and_gives_a_valid_cell(name):
    """Hidden-state mutation: one input of one element, to another state before its block; op
    mutation: one op of one element, to another op; identity: nothing.  Over many mutations every
    cell, block and element is picked."""
    space = SearchSpace.preset(name)
    rng = random.Random(7)
    hit: dict[str, set] = {"hidden_state": set(), "op": set()}
    for _ in range(400):
        parent = space.sample(rng)
        for kind, slots in (("hidden_state", (0, 1)), ("op", (2, 3))):
            child = mutate(space, parent, kind, rng)
            changed = _diff(parent, child)
            assert len(changed) == 1, (kind, changed)
            t = changed[0]
            decision = space.decisions[t]
            assert t % 5 in slots and decision.kind == ("input" if kind == "hidden_state" else "op")
            assert 0 <= child[t] < decision.num_choices   # an input before the block: no cycle
            genotype = space.to_genotype(child)           # validates every decision
            for b, node in enumerate(genotype.normal.nodes + (() if space.shared else genotype.reduce.nodes)):
                assert all(e.input < 2 + b % space.num_blocks for e in node)
            hit[kind].add((decision.cell, decision.block, t % 5 % 2))
        assert mutate(space, parent, "identity", rng) == tuple(parent)
    cells = len(space.cell_types)
    assert len(hit["hidden_state"]) == len(hit["op"]) == cells * space.num_blocks * 2


def test_a_hidden_state_mutation_of_the_first_block_takes_the_other_input():
    space = SearchSpace.preset("pnas", num_blocks=1)
    rng = random.Random(0)
    for _ in range(20):
        arch = (0, 1, 3, 4, 0)
        child = hidden_state_mutation(space, arch, rng)
        assert child in ((1, 1, 3, 4, 0), (0, 0, 3, 4, 0))
        assert op_mutation(space, arch, rng)[2:4] != (3, 4)


def test_mutation_and_weight_errors_name_the_fix():
    space = SearchSpace.preset("amoebanet")
    with pytest.raises(ConfigError, match="mutation 'crossover' is not one of hidden_state, op, identity"):
        mutate(space, space.sample(random.Random(0)), "crossover", random.Random(0))
    with pytest.raises(ConfigError, match="not all zero"):
        EvolutionProposer(space, population=4, sample_size=2, children=8, seed=0,
                          mutation_weights={"hidden_state": 0, "op": 0, "identity": 0})
    with pytest.raises(RecipeError, match="'sample_size' = 30 exceeds 'population' = 20"):
        EvolutionRecipe(population=20, sample_size=30)
    with pytest.raises(RecipeError, match="names 'crossover'"):
        EvolutionRecipe(mutation_weights={"crossover": 1.0})


# ======================================================================== the asynchronous proposer
def test_random_phase_then_children_bred_from_the_population_as_it_stands():
    space = SearchSpace.preset("amoebanet")
    proposer = EvolutionProposer(space, population=3, sample_size=2, children=10, seed=1,
                                 mutation_weights={"op": 1.0})
    first = proposer.ask(4)   # two workers more than P: the fourth must wait for a result
    assert [i for i, _ in first] == [0, 1, 2] and [proposer.child_info(i)["mutation"] for i in range(3)] == \
        ["random"] * 3
    proposer.tell(1, first[1][1], 0.5)   # child 1 finishes first: the only member to breed from
    ((index, arch),) = proposer.ask(1)
    assert index == 3 and proposer.child_info(3) == {"parent": 1, "mutation": "op"}
    assert len(_diff(first[1][1], arch)) == 1


def _recipe(**overrides) -> EvolutionRecipe:
    base = dict(name="t", children=24, population=6, sample_size=3, top_k=3, space="amoebanet",
                child=dict(TINY_CHILD), progress=False, seed=2, executor="local")
    return EvolutionRecipe(**{**base, **overrides})


def test_evolution_improves_the_synthetic_reward(tmp_path):
    result = evolution_search(_recipe(children=36), out=tmp_path / "r", evaluate=synthetic_reward)
    children = read_jsonl(tmp_path / "r" / "children.jsonl")
    first, last = children[:6], children[-6:]
    assert sum(c["reward"] for c in last) > sum(c["reward"] for c in first) + 0.5
    assert result.best_reward == max(c["reward"] for c in children)
    bred = [c for c in children if c["mutation"] != "random"]
    assert len(bred) == 30 and {c["mutation"] for c in bred} == {"hidden_state", "op", "identity"}
    records = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert [r["children"] for r in records] == list(range(6, 37, 6)) and records[-1]["oldest"] == 30


def test_evolution_resumes_exactly_after_a_kill(tmp_path):
    def stop_at(n):
        def evaluate(jobs):
            if jobs[0].index == n:
                raise KeyboardInterrupt   # what SIGTERM becomes inside a run
            return synthetic_reward(jobs)
        return evaluate

    full = evolution_search(_recipe(), out=tmp_path / "full", evaluate=synthetic_reward)
    with pytest.raises(RunInterrupted, match="interrupted after child 11/24"):
        evolution_search(_recipe(), out=tmp_path / "cut", evaluate=stop_at(11))
    resumed = evolution_search(_recipe(), resume=tmp_path / "cut", evaluate=synthetic_reward)
    assert resumed.genotype == full.genotype and resumed.children == 24

    def children(run):
        return [{k: v for k, v in c.items() if k not in ("seconds", "worker")}
                for c in read_jsonl(tmp_path / run / "children.jsonl")]

    assert children("cut") == children("full")
    for name in ("top_k.yaml", "metrics.jsonl"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "full" / name).read_text(), name
    a, b = (torch.load(tmp_path / run / "search.pt", weights_only=True) for run in ("full", "cut"))
    for key in ("evolution_rng", "population", "next", "told", "lineage"):
        assert a[key] == b[key], key


def test_protocol_and_smoke_recipes():
    paper = EvolutionRecipe.load(ROOT / "recipes" / "evolution_cifar10.yaml")
    assert (paper.population, paper.sample_size, paper.children) == (100, 25, 20000)
    assert paper.build_space().ops == AMOEBANET_OPS and paper.build_space().combines == ("add",)
    smoke = EvolutionRecipe.load(ROOT / "recipes" / "smoke_evolution.yaml")
    assert smoke.child_config.dataset == "digits" and smoke.children > smoke.population >= smoke.sample_size


@pytest.mark.slow
def test_sigterm_mid_search_then_resume_matches_an_uninterrupted_run(tmp_path):
    import json
    import subprocess

    import yaml
    from cli_runs import ENV as env, SEARCH_CLI as cli, interrupt_when_written

    recipe = {**_recipe(children=10, population=4, sample_size=2).to_dict(), "progress": True}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    subprocess.run([*cli, "--recipe", "r.yaml", "--out", "full"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=600)
    proc = subprocess.Popen([*cli, "--recipe", "r.yaml", "--out", "cut"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    returncode, err = interrupt_when_written(proc, tmp_path / "cut" / "children.jsonl", 3)
    assert returncode == 1 and "interrupted after child" in err, err[-2000:]
    subprocess.run([*cli, "--resume", "cut"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)

    def children(run: str) -> list:
        return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "worker")}
                for line in (tmp_path / run / "children.jsonl").read_text().splitlines()]

    assert children("cut") == children("full") and len(children("full")) == 10
    assert Genotype.from_file(tmp_path / "cut" / "genotype.yaml") == Genotype.from_file(tmp_path / "full" / "genotype.yaml")
