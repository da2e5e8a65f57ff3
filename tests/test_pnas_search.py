"""PNAS on the sample-and-train pipeline: the run's files, exact resume after a stop mid-stage, the
recipe's checks, and (slow tier) the shipped smoke recipe through the CLI with real children.

The default-tier runs reward children with a synthetic function (no training), so only the
predictor's fits cost time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import nasnetzoo
from nasnetzoo.errors import CheckpointError
from nasnetzoo.genotype import Genotype
from nasnetzoo.recipe_file import RecipeError
from nasnetzoo.runs.envelope import RunInterrupted
from nasnetzoo.search.sampled.child import ChildResult
from nasnetzoo.search.sampled.pnas_recipe import PNASRecipe, load_pnas_recipe
from nasnetzoo.search.sampled.pnas_runner import PNAS_RUN, children_budget, build_space, pnas_search

ROOT = Path(__file__).resolve().parents[1]
TINY_CHILD = dict(dataset="digits", image_size=8, held_out=200, crop_padding=1, hflip=False, N=1, F=4,
                  epochs=1, batch_size=64, max_steps_per_epoch=2, device="cpu", threads=1)


OP_VALUE = {"separable_3x3_2": 0.5, "max_pool_3x3": 0.3, "none": 0.1}


def synthetic_reward(jobs):
    """Reward from the ops, the inputs and the size of the cell: deterministic, no training."""
    results = []
    for job in jobs:
        cell = Genotype.from_dict(job.genotype).normal
        edges = cell.edges
        reward = (sum(OP_VALUE[e.op] for e in edges) / len(edges) + 0.04 * sum(e.input for e in edges) / len(edges)
                  + 0.05 * len(cell.nodes))
        results.append(ChildResult(job.index, reward, 100 * reward, 0.0, 0, 0.0, {"pid": os.getpid()}))
    return results


def recipe(**overrides) -> PNASRecipe:
    base = dict(name="t", ops=["separable_3x3_2", "max_pool_3x3", "none"], num_blocks=3, beam_size=4,
                predictor=dict(kind="mlp", members=2, embedding=8, hidden=8, epochs=5, batch_size=8), top_k=3,
                child=dict(TINY_CHILD), progress=False, seed=3)
    return PNASRecipe(**{**base, **overrides})


def test_search_writes_its_files_and_logs_the_rank_correlation(tmp_path):
    result = pnas_search(recipe(), out=tmp_path / "r", evaluate=synthetic_reward)
    assert result.children == 21 + 4 + 4 == children_budget(build_space(recipe()), 4)
    run = tmp_path / "r"
    for name in ("recipe.yaml", PNAS_RUN.checkpoint, "children.jsonl", "metrics.jsonl", "top_k.yaml", "genotype.yaml",
                 "rewards.png", "predictions.png"):
        assert (run / name).is_file(), name
    stages = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s["stage"] for s in stages] == [1, 2, 3] and [s["trained"] for s in stages] == [21, 4, 4]
    assert "spearman" not in stages[0] and all(isinstance(s["spearman"], float) for s in stages[1:])
    assert stages[0]["expansions"] == 21 * 45 and stages[1]["expansions"] == 4 * 78
    children = [json.loads(line) for line in (run / "children.jsonl").read_text().splitlines()]
    assert sorted(c["child"] for c in children) == list(range(29))
    assert all((c["predicted"] is None) == (c["stage"] == 1) for c in children)
    genotype = Genotype.from_file(run / "genotype.yaml")
    assert genotype.normal == genotype.reduce
    assert genotype.normal.concat == tuple(range(2, 2 + len(genotype.normal.nodes)))   # every block's output
    assert genotype.provenance["strategy"] == "pnas" and genotype.provenance["beam_size"] == 4
    top = yaml.safe_load((run / "top_k.yaml").read_text())["top_k"]
    assert top[0]["reward"] == pytest.approx(result.best_reward, abs=1e-6) and "stage" in top[0]
    model = nasnetzoo.load(str(run / "genotype.yaml"))
    model(torch.randn(2, 3, 32, 32)).sum().backward()   # it builds, runs and trains


def test_a_stop_mid_stage_resumes_exactly(tmp_path):
    pnas_search(recipe(), out=tmp_path / "full", evaluate=synthetic_reward)

    def stop_at_child_24(jobs):
        if jobs[0].index == 24:      # stage 2 holds children 21..24: three told, one left
            raise KeyboardInterrupt
        return synthetic_reward(jobs)

    with pytest.raises(RunInterrupted):
        pnas_search(recipe(), out=tmp_path / "cut", evaluate=stop_at_child_24)
    saved = torch.load(tmp_path / "cut" / PNAS_RUN.checkpoint, weights_only=True)
    assert saved["stage"] == 2 and len(saved["trained"]) == 24
    pnas_search(recipe(), resume=tmp_path / "cut", evaluate=synthetic_reward)

    def logs(run: str, name: str) -> list:
        rows = [json.loads(line) for line in (tmp_path / run / name).read_text().splitlines()]
        return sorted(({k: v for k, v in r.items() if k not in ("seconds", "worker")} for r in rows),
                      key=lambda r: (r.get("child", -1), r.get("stage", 0)))

    assert logs("cut", "children.jsonl") == logs("full", "children.jsonl")
    assert logs("cut", "metrics.jsonl") == logs("full", "metrics.jsonl")
    a = torch.load(tmp_path / "full" / PNAS_RUN.checkpoint, weights_only=True)
    b = torch.load(tmp_path / "cut" / PNAS_RUN.checkpoint, weights_only=True)
    for net_a, net_b in zip(a["model"]["members"], b["model"]["members"]):
        assert all(torch.equal(net_a[k], net_b[k]) for k in net_a)
    assert a["trained"] == b["trained"] and a["stages"] == b["stages"]
    assert Genotype.from_file(tmp_path / "cut" / "genotype.yaml") == Genotype.from_file(tmp_path / "full" / "genotype.yaml")


def test_recipes_load_and_bad_keys_name_the_fix():
    paper = load_pnas_recipe(ROOT / "recipes" / "pnas_cifar10.yaml")
    assert paper.num_blocks == 5 and paper.beam_size == 256 and len(paper.ops) == 8
    assert paper.predictor_config.kind == "lstm" and paper.predictor_config.members == 5
    assert children_budget(build_space(paper), paper.beam_size) == 136 + 4 * 256
    smoke = load_pnas_recipe(ROOT / "recipes" / "smoke_pnas.yaml")
    assert children_budget(build_space(smoke), smoke.beam_size) == 33
    with pytest.raises(RecipeError, match="'kind' = 'gp' is not one of lstm, mlp"):
        recipe(predictor=dict(kind="gp"))
    with pytest.raises(RecipeError, match="predictor.subset"):
        recipe(predictor=dict(subset=0.0))
    with pytest.raises(RecipeError, match="beam_size"):
        recipe(beam_size=0)
    with pytest.raises(RecipeError, match="unknown recipe key 'epoch' in recipe key 'predictor'"):
        recipe(predictor=dict(epoch=3))
    with pytest.raises(RecipeError, match="recipe key 'ops': .*'sep_conv_3x3' is not a nasnet-family op"):
        recipe(ops=["separable_3x3_2", "sep_conv_3x3"])


def test_children_have_pnasnets_layout_and_the_other_searches_keep_nasnets():
    from nasnetzoo.search.sampled.child import build_child
    from nasnetzoo.search.sampled.recipe import RandomRecipe

    genotype = nasnetzoo.get_genotype("pnasnet5").to_dict()
    pnas = build_child(genotype, recipe().child_config, 10)
    assert pnas.reduction == "stride" and pnas.total_num_cells == 3 * 1            # 3N cells (CIFAR stem: no stem cells)
    assert recipe(child={**TINY_CHILD, "reduction": "cell"}).child_config.reduction == "cell"
    other = build_child(genotype, RandomRecipe(child=dict(TINY_CHILD)).child_config, 10)
    assert other.reduction == "cell" and other.total_num_cells == 3 * 1 + 2          # and 2 reduction cells
    with pytest.raises(RecipeError, match="'reduction' = 'pool' is not one of cell, stride"):
        recipe(child={**TINY_CHILD, "reduction": "pool"})


def test_resume_refuses_another_beam(tmp_path):
    pnas_search(recipe(num_blocks=2), out=tmp_path / "r", evaluate=synthetic_reward)
    with pytest.raises(CheckpointError, match="beam_size=4, the recipe 5"):
        pnas_search(recipe(num_blocks=2, beam_size=5), resume=tmp_path / "r", evaluate=synthetic_reward)


def test_cli_error_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nasnetzoo", "search", "--recipe", str(ROOT / "recipes" / "smoke_pnas.yaml"),
                           "--out", str(tmp_path / "r"), "--set", "ops=[separable_3x3_2,sep_conv_3x3]"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "'sep_conv_3x3' is not a nasnet-family op" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_smoke_recipe_through_the_cli_with_a_kill_and_resume(tmp_path):
    """The shipped smoke recipe, real children: SIGTERM once stage 1 is committed, --resume, done."""
    from cli_runs import ENV as env, SEARCH_CLI as cli, interrupt_when_written

    proc = subprocess.Popen([*cli, "--recipe", str(ROOT / "recipes" / "smoke_pnas.yaml"), "--out", "r"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "r" / "metrics.jsonl"
    returncode, err = interrupt_when_written(proc, metrics, poll=0.5, timeout=600)
    assert returncode == 1 and "--resume" in err, err[-2000:]
    done = subprocess.run([*cli, "--resume", "r"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 33 children over 3 stages" in done.stdout
    assert len(metrics.read_text().splitlines()) == 3
    model = nasnetzoo.load(str(tmp_path / "r" / "genotype.yaml"))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
