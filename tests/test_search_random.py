"""Random search (``strategy: random``) and the sample-and-train pipeline under it: the spaces'
uniform samples, asynchronous dispatch, exact resume with the proposer's state, the CLI entry.

Rewards are synthetic (the share of separable convolutions) except in the CLI test, which trains
two tiny children of ``recipes/smoke_random.yaml``.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import nasnetzoo
from nasnetzoo.errors import ConfigError, NasNetZooError
from nasnetzoo.genotype import Genotype
from nasnetzoo.runs.envelope import RunInterrupted
from nasnetzoo.search.sampled.child import ChildResult
from nasnetzoo.search.sampled.random_search import RandomProposer
from nasnetzoo.search.sampled.recipe import RandomRecipe
from nasnetzoo.search.sampled.runners import random_search
from nasnetzoo.search.sampled.space import AMOEBANET_OPS, PAPER_OPS, PNAS_OPS, SPACES, SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
TINY_CHILD = dict(dataset="digits", image_size=8, held_out=200, crop_padding=1, hflip=False, N=1, F=4,
                  epochs=1, batch_size=32, lr=0.1, max_steps_per_epoch=2, device="cpu", threads=1)


def synthetic_reward(jobs):
    """Reward = share of separable convolutions in the cells; deterministic, no training."""
    results = []
    for job in jobs:
        genotype = Genotype.from_dict(job.genotype)
        ops = [e.op for cell in (genotype.normal, genotype.reduce) for e in cell.edges]
        share = sum(op.startswith("separable") for op in ops) / len(ops)
        results.append(ChildResult(job.index, share, 100 * share, 0.0, 0, 0.0, {"pid": os.getpid()}))
    return results


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ======================================================================== the spaces
def test_presets_are_the_papers_spaces():
    nasnet, amoeba, pnas = (SearchSpace.preset(name) for name in ("nasnet", "amoebanet", "pnas"))
    assert nasnet.ops == PAPER_OPS and len(nasnet.ops) == 13 and nasnet.combines == ("add", "concat")
    assert len(AMOEBANET_OPS) == 8 and amoeba.combines == ("add",) and not amoeba.shared
    assert len(PNAS_OPS) == 8 and pnas.combines == ("add",) and pnas.shared and pnas.min_blocks == 1
    assert nasnet.num_decisions == 50 and pnas.num_decisions == 25
    with pytest.raises(ConfigError, match="'amoeba' is not one of nasnet, amoebanet, pnas"):
        SearchSpace.preset("amoeba")


def test_a_pnas_cell_serves_as_both_cells_and_may_have_fewer_blocks():
    space = SearchSpace.preset("pnas")
    one_block = [0, 1, 0, 4, 0]   # h_i with sep 3x3 + h_{i-1} with identity, added
    genotype = space.to_genotype(one_block)
    assert genotype.normal == genotype.reduce and len(genotype.normal.nodes) == 1
    assert space.encode(genotype) == one_block
    with pytest.raises(ConfigError, match="5 decisions per block"):
        space.to_genotype([0] * 7)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_random_samples_are_valid_and_cover_the_space(name):
    """Every sample is a valid genotype of the space that encodes back to itself, and over 600
    samples every choice of every decision turns up, each about as often as uniform sampling gives."""
    space = SearchSpace.preset(name)
    proposer = RandomProposer(space, 600, seed=1)
    asked = proposer.ask(600)
    assert [i for i, _ in asked] == list(range(600)) and proposer.done() and proposer.ask(1) == []
    counts: Counter = Counter()
    for _, arch in asked:
        genotype = space.to_genotype(arch)
        assert space.encode(genotype) == list(arch)
        for b, node in enumerate(genotype.normal.nodes):
            assert all(0 <= e.input < 2 + b for e in node)   # reads only states before it: acyclic
        counts.update((t, a) for t, a in enumerate(arch))
    for t, d in enumerate(space.decisions):
        seen = [counts[(t, c)] for c in range(d.num_choices)]
        expected = 600 / d.num_choices
        assert min(seen) > 0.5 * expected and max(seen) < 1.6 * expected, (t, d, seen)


def test_random_proposer_state_round_trips_through_a_checkpoint(tmp_path):
    space = SearchSpace.preset("amoebanet")
    a = RandomProposer(space, 50, seed=3)
    a.ask(7)
    torch.save(a.state_dict(), tmp_path / "p.pt")
    b = RandomProposer(space, 50, seed=99)
    b.load_state_dict(torch.load(tmp_path / "p.pt", weights_only=True))   # the envelope's reader
    assert a.ask(5) == b.ask(5)


# ======================================================================== the pipeline
class _SlowFirstExecutor:
    """Two worker threads; child 0 finishes once the other five are in children.jsonl."""

    name, slots = "threads", 2

    def __init__(self, log: Path) -> None:
        self.pool = ThreadPoolExecutor(2)
        self.started: list[int] = []
        self.log = log

    def submit(self, job):
        self.started.append(job.index)

        def work():
            deadline = time.time() + 30
            while job.index == 0 and time.time() < deadline and \
                    (not self.log.is_file() or len(self.log.read_text().splitlines()) < 5):
                time.sleep(0.01)
            return synthetic_reward([job])[0]
        return self.pool.submit(work)

    def close(self, interrupted: bool = False) -> None:
        self.pool.shutdown(wait=True)


def test_a_free_worker_takes_the_next_child_at_once(tmp_path, monkeypatch):
    """Asynchronous dispatch: while child 0 trains, the other worker trains 1, 2, 3, ... one after
    another, each told (and committed) as soon as it is done."""
    import nasnetzoo.search.sampled.runners as runners

    executor = _SlowFirstExecutor(tmp_path / "r" / "children.jsonl")
    monkeypatch.setattr(runners, "executor_for", lambda recipe, evaluate=None: executor)
    random_search(_recipe(children=6), out=tmp_path / "r")
    order = [c["child"] for c in read_jsonl(tmp_path / "r" / "children.jsonl")]
    assert order == [1, 2, 3, 4, 5, 0] and executor.started == [0, 1, 2, 3, 4, 5]


def _recipe(**overrides) -> RandomRecipe:
    base = dict(name="t", children=12, top_k=3, space="amoebanet", child=dict(TINY_CHILD), progress=False, seed=5,
                executor="local")
    return RandomRecipe(**{**base, **overrides})


def _stop_at(n: int):
    def evaluate(jobs):
        if jobs[0].index == n:
            raise KeyboardInterrupt   # what SIGTERM becomes inside a run
        return synthetic_reward(jobs)
    return evaluate


def _without_timing(run: Path) -> list[dict]:
    return [{k: v for k, v in c.items() if k not in ("seconds", "worker")} for c in read_jsonl(run / "children.jsonl")]


def test_random_search_resumes_exactly_after_a_kill(tmp_path):
    full = random_search(_recipe(), out=tmp_path / "full", evaluate=synthetic_reward)
    with pytest.raises(RunInterrupted, match="interrupted after child 7/12"):
        random_search(_recipe(), out=tmp_path / "cut", evaluate=_stop_at(7))
    assert len(read_jsonl(tmp_path / "cut" / "children.jsonl")) == 7
    resumed = random_search(_recipe(), resume=tmp_path / "cut", evaluate=synthetic_reward)
    assert resumed.children == full.children == 12 and resumed.genotype == full.genotype
    assert _without_timing(tmp_path / "cut") == _without_timing(tmp_path / "full")
    assert (tmp_path / "cut" / "top_k.yaml").read_text() == (tmp_path / "full" / "top_k.yaml").read_text()
    a, b = (torch.load(tmp_path / run / "search.pt", weights_only=True) for run in ("full", "cut"))
    assert a["sampler"] == b["sampler"] and a["next"] == b["next"] == 12 and b["pending"] == []


def test_a_proposer_that_stalls_or_repeats_an_index_is_named(tmp_path):
    from nasnetzoo.search.sampled import runners

    class Stalls(RandomProposer):
        def ask(self, free):
            return []

    class Repeats(RandomProposer):
        def ask(self, free):
            return [(0, self.space.sample(self.sampler))]

    for cls, message in ((Stalls, "proposed no child while none was training"), (Repeats, "child index 0 twice")):
        recipe = _recipe(children=3)
        proposer = cls(recipe.build_space(), 3, 0)
        with pytest.raises(NasNetZooError, match=message):
            runners.run_proposer(recipe, runners.RANDOM_RUN, proposer, "t", "t", out=tmp_path / cls.__name__, resume=None,
                         recipe_path="", overwrite=False, evaluate=synthetic_reward, on_record=None)


def test_cli_runs_the_smoke_recipe_and_its_genotype_loads(tmp_path):
    """`nasnetzoo search --recipe recipes/smoke_random.yaml` with two tiny children, in process."""
    from click.testing import CliRunner

    from nasnetzoo.cli import cli

    sets = ["children=2", "executor=local", *[f"child.{k}={v}" for k, v in TINY_CHILD.items()]]
    result = CliRunner().invoke(cli, ["search", "--recipe", str(ROOT / "recipes" / "smoke_random.yaml"), "--out",
                                      str(tmp_path / "r"), *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert "trained 2 children: best held-out acc" in result.output
    genotype = Genotype.from_file(tmp_path / "r" / "genotype.yaml")
    assert genotype.provenance["strategy"] == "random" and genotype.provenance["children_trained"] == 2
    model = nasnetzoo.load(str(tmp_path / "r" / "genotype.yaml"))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert (tmp_path / "r" / "rewards.png").is_file()
    bad = CliRunner().invoke(cli, ["search", "--recipe", str(ROOT / "recipes" / "smoke_random.yaml"), "--out",
                                   str(tmp_path / "b"), "--set", "space=amoeba"])
    assert bad.exit_code != 0 and "'space' = 'amoeba' is not one of nasnet, amoebanet, pnas" in bad.output
    assert "Traceback" not in bad.output


def test_protocol_recipe_has_the_evolution_budget():
    from nasnetzoo.search.sampled.recipe import EvolutionRecipe

    rnd = RandomRecipe.load(ROOT / "recipes" / "random_cifar10.yaml")
    evo = EvolutionRecipe.load(ROOT / "recipes" / "evolution_cifar10.yaml")
    assert rnd.children == evo.children == 20000 and rnd.space == evo.space == "amoebanet"
    assert rnd.child_config == evo.child_config
