"""NASNet's RL search: search space, controller, PPO/REINFORCE, children, executors, runs.

Child training is real but tiny (8 px digits, N=1, F=4, a few steps) except in the end-to-end
smoke test, which runs ``recipes/smoke_nasnet_rl.yaml`` unchanged.  Controller learning is checked
with synthetic rewards, without children.
"""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nasnetzoo
from nasnetzoo.errors import ConfigError, NasNetZooError
from nasnetzoo.genotype import Genotype
from nasnetzoo.models.nasnet import NASNet
from nasnetzoo.search.rl.child import ChildConfig, ChildJob, train_child
from nasnetzoo.search.rl.controller import Controller
from nasnetzoo.search.rl.executors import LocalExecutor, ProcessExecutor, make_executor
from nasnetzoo.search.rl.policy import ControllerTrainer, MovingAverageBaseline, ppo_loss, reinforce_loss
from nasnetzoo.search.rl.recipe import RLSearchRecipe, load_rl_recipe
from nasnetzoo.search.rl.runner import CHECKPOINT, rl_search
from nasnetzoo.search.rl.space import PAPER_OPS, SearchSpace
from nasnetzoo.runs.progress import MetricsLog
from nasnetzoo.train.recipe import RecipeError
from test_search_random import synthetic_reward as _synthetic_reward   # share of separable convs

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
TINY_CHILD = dict(dataset="digits", image_size=8, held_out=200, crop_padding=1, hflip=False, N=1, F=4,
                  epochs=1, batch_size=32, lr=0.1, drop_path=0.2, max_steps_per_epoch=3, device="cpu", threads=1)


# ======================================================================== search space
def test_space_has_the_papers_decisions():
    space = SearchSpace()
    assert len(PAPER_OPS) == 13 and "avg_pool_5x5" not in PAPER_OPS
    assert space.num_decisions == 2 * 5 * 5
    kinds = [d.kind for d in space.decisions[:5]]
    assert kinds == ["input", "input", "op", "op", "combine"]
    assert [d.num_choices for d in space.decisions if d.kind == "input"][:10] == [2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    assert [d.cell for d in space.decisions] == ["normal"] * 25 + ["reduce"] * 25


def test_published_nasnet_a_cell_is_in_the_space_and_round_trips():
    space = SearchSpace(ops=PAPER_OPS)
    nasnet_a = nasnetzoo.get_genotype("nasnet_a")
    sampled = space.to_genotype(space.encode(nasnet_a))
    assert sampled.normal.nodes == nasnet_a.normal.nodes and sampled.reduce.nodes == nasnet_a.reduce.nodes
    # The space concatenates the unused states (the paper's rule).  The released cells concatenate
    # one used state more, because TF-slim hard-codes used_hiddenstates: h_{i-1} (state 1) in the
    # normal cell, state 3 in the reduction cell.
    assert sampled.normal.concat == (2, 3, 4, 5, 6) and nasnet_a.normal.concat == (1, 2, 3, 4, 5, 6)
    assert sampled.reduce.concat == (4, 5, 6) and nasnet_a.reduce.concat == (3, 4, 5, 6)


def test_space_rejects_unknown_ops_and_bad_actions():
    with pytest.raises(ConfigError, match="'sep_conv_3x3' is not a nasnet-family op"):
        SearchSpace(ops=["none", "sep_conv_3x3"])
    space = SearchSpace()
    with pytest.raises(ConfigError, match="has 50 decisions"):
        space.to_genotype([0] * 10)
    bad = [0] * 50
    bad[0] = 2   # block 0 may only read states 0 and 1
    with pytest.raises(ConfigError, match="decision 0 \\(normal cell, block 0, input\\) is 2"):
        space.to_genotype(bad)


@pytest.mark.parametrize("temperature, tanh_constant, seed", [(1.0, 0.0, 0), (5.0, 2.5, 1), (0.3, 0.0, 2)])
def test_controller_samples_are_always_valid_genotypes(temperature, tanh_constant, seed):
    """Property test: every sample is a valid nasnet-family genotype of the space that maps back to
    the same actions, and (for a subset) builds and runs as a NASNet."""
    torch.manual_seed(seed)
    space = SearchSpace(ops=(*PAPER_OPS, "avg_pool_5x5"))
    controller = Controller(space, temperature=temperature, tanh_constant=tanh_constant)
    rollout = controller.sample(300, generator=torch.Generator().manual_seed(seed))
    for i, actions in enumerate(rollout.actions.tolist()):
        genotype = space.to_genotype(actions)   # validates: inputs in range, ops known, combine
        assert genotype.family == "nasnet"
        for cell in (genotype.normal, genotype.reduce):
            assert cell.concat == cell.unused_states() and len(cell.nodes) == 5
        assert space.encode(genotype) == actions
        assert Genotype.from_dict(genotype.to_dict()) == genotype
        if i < 6:
            net = NASNet(genotype, N=1, F=4, stem="cifar", num_classes=10, img_size=8).eval()
            out = net(torch.randn(2, 3, 9, 9))   # odd size on purpose
            assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert torch.isfinite(rollout.log_probs).all() and (rollout.log_probs <= 0).all()


def test_scoring_reproduces_the_sampled_log_probs():
    torch.manual_seed(0)
    controller = Controller(SearchSpace(num_blocks=3), temperature=2.0, tanh_constant=1.5)
    rollout = controller.sample(16, generator=torch.Generator().manual_seed(3))
    scored = controller(actions=rollout.actions)
    torch.testing.assert_close(scored.log_probs, rollout.log_probs)
    torch.testing.assert_close(scored.entropies, rollout.entropies)


def test_tanh_constant_bounds_the_logits():
    torch.manual_seed(0)
    controller = Controller(SearchSpace(), tanh_constant=1.1)
    for p in controller.heads.parameters():
        torch.nn.init.normal_(p, std=50.0)   # huge raw logits
    rollout = controller.sample(64, generator=torch.Generator().manual_seed(0))
    # each logit lies in [-1.1, 1.1], so no choice among n is below e^-2.2 / n
    floor = min(math.log(math.exp(-2.2) / d.num_choices) for d in controller.space.decisions)
    assert rollout.log_probs.min() >= floor - 1e-5


# ======================================================================== PPO / REINFORCE
def test_ppo_loss_matches_hand_computed_value():
    old = torch.log(torch.tensor([0.5, 0.25, 0.2]))
    new = torch.log(torch.tensor([0.7, 0.225, 0.2])).requires_grad_()
    advantage = torch.tensor([1.0, -2.0, 0.5])
    entropy = torch.tensor([2.0, 3.0, 4.0])
    # ratios 1.4, 0.9, 1.0; clip 0.2 -> surrogates min(1.4, 1.2) = 1.2, min(-1.8, -1.8) = -1.8, 0.5
    # loss = -(1.2 - 1.8 + 0.5) / 3 - 0.1 * mean(2, 3, 4) = 1/30 - 0.3
    loss = ppo_loss(new, old, advantage, entropy, clip=0.2, entropy_weight=0.1)
    assert loss.item() == pytest.approx(1 / 30 - 0.3, abs=1e-6)
    loss.backward()
    # the clipped sample passes no gradient; the others get -ratio * A / M
    torch.testing.assert_close(new.grad, torch.tensor([0.0, 0.6, -1 / 6]))


def test_reinforce_loss_and_baseline_match_hand_computed_values():
    baseline = MovingAverageBaseline(decay=0.9)
    first = baseline.advantages(torch.tensor([0.2, 0.4]))       # b = mean of the first batch
    torch.testing.assert_close(first, torch.tensor([-0.1, 0.1]))
    assert baseline.value == pytest.approx(0.3)
    second = baseline.advantages(torch.tensor([0.5, 0.7]))      # scored against b = 0.3
    torch.testing.assert_close(second, torch.tensor([0.2, 0.4]))
    assert baseline.value == pytest.approx(0.9 * 0.3 + 0.1 * 0.6)
    log_prob = torch.tensor([-2.0, -1.0])
    loss = reinforce_loss(log_prob, torch.tensor([0.2, 0.4]), torch.tensor([1.0, 3.0]), entropy_weight=0.5)
    assert float(loss) == pytest.approx(-(-0.4 - 0.4) / 2 - 0.5 * 2.0)


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_controller_learns_to_favour_the_rewarded_op(algorithm):
    """Synthetic reward = share of op decisions that chose separable_5x5_2; no child training."""
    torch.manual_seed(0)
    space = SearchSpace()
    trainer = ControllerTrainer(Controller(space, temperature=5.0, tanh_constant=2.5), algorithm=algorithm,
                                lr=0.005, seed=1)
    target = space.ops.index("separable_5x5_2")
    op_steps = [t for t, d in enumerate(space.decisions) if d.kind == "op"]

    def probability() -> float:
        return float(trainer.controller.op_probabilities(generator=torch.Generator().manual_seed(0))[target])

    before = probability()
    assert before == pytest.approx(1 / 13, abs=0.03)
    for _ in range(30):
        rollout = trainer.sample(20)
        trainer.update(rollout, (rollout.actions[:, op_steps] == target).float().mean(1))
    after = probability()
    assert after > 0.3 and after > 3 * before, (before, after)


def test_controller_trainer_state_round_trips():
    torch.manual_seed(0)
    space = SearchSpace(num_blocks=2)
    a = ControllerTrainer(Controller(space), lr=0.01, seed=4)
    r = a.sample(4)
    a.update(r, [0.1, 0.2, 0.3, 0.4])
    b = ControllerTrainer(Controller(space), lr=0.01, seed=99)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.sample(8).actions, b.sample(8).actions)
    assert b.baseline.value == a.baseline.value and b.updates == 1


# ======================================================================== children
def _job(index: int, seed: int = 0, **child) -> ChildJob:
    genotype = SearchSpace().to_genotype([0] * 50)   # every block: identity(h_i) + identity(h_i), add
    return ChildJob(index, genotype.to_dict(), ChildConfig(**{**TINY_CHILD, **child}), seed)


def test_child_trains_and_reports_a_reward_from_held_out_training_images():
    job = ChildJob(0, nasnetzoo.get_genotype("nasnet_a").to_dict(), ChildConfig(**TINY_CHILD), seed=3)
    result = train_child(job)
    assert 0.0 <= result.reward <= 1.0 and result.val_acc == pytest.approx(100 * result.reward)
    assert result.params > 0 and result.worker["pid"] == os.getpid()
    assert train_child(job).reward == result.reward   # deterministic for a seed on the CPU


def test_children_train_with_scheduled_drop_path(monkeypatch):
    """The drop probability rises linearly with the optimizer step up to child.drop_path, and each
    cell's DropPath scales it by the cell's depth (ScheduledDropPath)."""
    import nasnetzoo.train.engine as engine
    from nasnetzoo.models.layers import DropPath

    seen: list[tuple[float, list[float]]] = []
    real = engine.set_drop_path

    def record(model, p):
        real(model, p)
        seen.append((p, sorted({m.p * m.scale for m in model.modules() if isinstance(m, DropPath)})))

    monkeypatch.setattr(engine, "set_drop_path", record)
    train_child(_job(0, drop_path=0.3, epochs=2, max_steps_per_epoch=3))
    probs = [p for p, _ in seen]
    assert len(probs) == 6 and probs == pytest.approx([0.3 * step / 6 for step in range(6)])
    last_cells = seen[-1][1]     # N=1: 3 normal + 2 reduction cells, scale (i + 1) / 5
    assert last_cells == pytest.approx([0.25 * (i + 1) / 5 for i in range(5)])


def test_child_config_errors_name_the_key():
    with pytest.raises(RecipeError, match="unknown recipe key 'epoch'.*Did you mean 'epochs'"):
        RLSearchRecipe(child={"epoch": 2})
    with pytest.raises(RecipeError, match="child.N"):
        RLSearchRecipe(child={"N": 0})
    with pytest.raises(RecipeError, match="'dataset' = 'imagenet'"):
        RLSearchRecipe(child={"dataset": "imagenet"})
    with pytest.raises(NasNetZooError, match="held_out = 5000 must be between 1 and"):
        train_child(_job(0, held_out=5000))


def test_a_child_that_fails_in_pytorch_scores_zero_and_says_why(monkeypatch):
    import nasnetzoo.search.sampled.child as child_module   # where train_child looks build_child up

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(child_module, "build_child", out_of_memory)
    result = train_child(_job(7))
    assert result.index == 7 and result.reward == 0.0
    assert result.error == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_search_goes_on_past_failed_children_but_not_when_all_fail(tmp_path):
    def half_fail(jobs):
        return [dataclasses.replace(r, reward=0.0, error="RuntimeError: boom") if r.index % 2 else r
                for r in _synthetic_reward(jobs)]

    result = rl_search(_recipe(controller_steps=2), out=tmp_path / "half", evaluate=half_fail)
    records = MetricsLog(tmp_path / "half" / "metrics.jsonl").read()
    assert [r["failed_children"] for r in records] == [2, 2] and result.children == 8
    children = MetricsLog(tmp_path / "half" / "children.jsonl").read()
    assert [c.get("error", "") for c in children[:2]] == ["", "RuntimeError: boom"]

    def all_fail(jobs):
        return [dataclasses.replace(r, reward=0.0, error="RuntimeError: boom") for r in _synthetic_reward(jobs)]

    with pytest.raises(NasNetZooError, match="every child of controller update 1 failed, e.g. child 0: "
                                             "RuntimeError: boom"):
        rl_search(_recipe(controller_steps=2), out=tmp_path / "all", evaluate=all_fail)


def test_process_pool_children_match_in_process_ones():
    jobs = [_job(i, seed=i) for i in range(2)]
    local = LocalExecutor().run(jobs)
    pool = ProcessExecutor(2)
    try:
        remote = pool.run(jobs)
    finally:
        pool.close()
    assert [r.index for r in remote] == [0, 1]
    assert all(r.worker["pid"] != os.getpid() for r in remote)
    assert [r.reward for r in remote] == [r.reward for r in local]


def test_children_run_as_ray_tasks_on_a_local_two_cpu_cluster(tmp_path):
    import json

    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    executor = make_executor("ray", ray_num_cpus=2)
    try:
        assert ray.cluster_resources()["CPU"] == 2 and executor.gpus_per_child == 0
        results = executor.run([_job(i, seed=i) for i in range(3)])
        # a whole search with executor: ray joins the running cluster (and leaves it up)
        rl_search(_recipe(controller_steps=1, children_per_step=2, executor="ray"), out=tmp_path / "r")
        assert ray.is_initialized()
    finally:
        executor.close()
    assert [r.index for r in results] == [0, 1, 2]
    assert all(r.worker.get("ray_task_id") for r in results)
    assert all(r.worker["pid"] != os.getpid() for r in results)
    assert not ray.is_initialized()
    children = [json.loads(line) for line in (tmp_path / "r" / "children.jsonl").read_text().splitlines()]
    assert len(children) == 2 and all(c["worker"].get("ray_task_id") for c in children)


def test_executor_errors():
    with pytest.raises(NasNetZooError, match="executor 'slurm' is not one of"):
        make_executor("slurm")
    assert make_executor("auto", workers=1).name == "local"


# ======================================================================== runs

def _recipe(**overrides) -> RLSearchRecipe:
    base = dict(name="t", controller_steps=4, children_per_step=4, controller_lr=0.01, top_k=3,
                temperature=5.0, tanh_constant=2.5, child=dict(TINY_CHILD), progress=False, seed=5)
    return RLSearchRecipe(**{**base, **overrides})


def test_resumed_search_continues_exactly(tmp_path):
    full = rl_search(_recipe(), out=tmp_path / "full", evaluate=_synthetic_reward)
    stopped = rl_search(_recipe(), out=tmp_path / "cut", evaluate=_synthetic_reward,
                        on_step_end=lambda step, record: step == 1)
    assert stopped.steps_done == 2 and stopped.children == 8
    resumed = rl_search(_recipe(), resume=tmp_path / "cut", evaluate=_synthetic_reward)
    assert resumed.steps_done == 4 and resumed.children == 16
    a = torch.load(tmp_path / "full" / CHECKPOINT, weights_only=False)
    b = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["children"] == b["children"] and a["baseline"] == b["baseline"]
    assert torch.equal(a["generator"], b["generator"])
    assert full.genotype == resumed.genotype
    for name in ("children.jsonl", "top_k.yaml"):
        assert (tmp_path / "full" / name).read_text() == (tmp_path / "cut" / name).read_text(), name

    def updates(run: str) -> list[dict]:   # wall-clock time aside, the logs agree
        records = MetricsLog(tmp_path / run / "metrics.jsonl").read()
        return [{k: v for k, v in r.items() if k != "child_seconds"} for r in records]

    assert updates("full") == updates("cut") and len(updates("cut")) == 4


def test_a_finished_search_cannot_be_overwritten(tmp_path):
    rl_search(_recipe(controller_steps=1), out=tmp_path / "r", evaluate=_synthetic_reward)
    with pytest.raises(NasNetZooError, match="already holds a search; resume it"):
        rl_search(_recipe(controller_steps=1), out=tmp_path / "r", evaluate=_synthetic_reward)


def test_recipe_validation_names_the_key():
    with pytest.raises(RecipeError, match="'algorithm' = 'a2c' is not one of ppo, reinforce"):
        RLSearchRecipe(algorithm="a2c")
    with pytest.raises(RecipeError, match="children_per_step"):
        RLSearchRecipe(children_per_step=1)
    with pytest.raises(RecipeError, match="ppo_clip"):
        RLSearchRecipe(ppo_clip=1.5)
    paper = load_rl_recipe(ROOT / "recipes" / "nasnet_rl_cifar10.yaml")
    assert paper.controller_steps * paper.children_per_step == 20000
    assert tuple(paper.ops) == PAPER_OPS and paper.child_config.N == 2 and paper.child_config.epochs == 20
    assert load_rl_recipe(ROOT / "recipes" / "nasnet_rl_cifar10.yaml", ["child.epochs=5"]).child_config.epochs == 5


def test_smoke_recipe_end_to_end_through_the_cli(tmp_path):
    """`nasnetzoo search --recipe recipes/smoke_nasnet_rl.yaml --out RUN`, then load it: the shipped
    recipe, with its children trained one epoch instead of two (half the time; ``--set`` reaching
    into the child mapping is part of what this checks)."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "nasnetzoo", "search", "--recipe",
                           str(ROOT / "recipes" / "smoke_nasnet_rl.yaml"), "--out", str(run), "--set", "child.epochs=1"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained 12 children over 3 controller updates" in proc.stdout
    for name in ("recipe.yaml", CHECKPOINT, "children.jsonl", "metrics.jsonl", "top_k.yaml", "rewards.png",
                 "genotype.yaml"):
        assert (run / name).is_file(), name
    model = nasnetzoo.load(str(run / "genotype.yaml"))
    assert isinstance(model, NASNet) and model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    import yaml

    top = yaml.safe_load((run / "top_k.yaml").read_text())["top_k"]
    rewards = [entry["reward"] for entry in top]
    assert len(top) == 5 and rewards == sorted(rewards, reverse=True)
    assert Genotype.from_dict(top[0]["genotype"]) == Genotype.from_file(run / "genotype.yaml")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    import json

    children = [json.loads(line) for line in (run / "children.jsonl").read_text().splitlines()]
    # children.jsonl lists the children as they finished (asynchronous dispatch): each one once
    assert sorted(c["child"] for c in children) == list(range(12))
    assert 1 <= len({c["worker"]["pid"] for c in children}) <= 2   # the recipe's 2-process pool


def test_sigterm_stops_after_an_update_and_resume_matches_an_uninterrupted_run(tmp_path):
    import json

    import yaml
    from cli_runs import ENV as env, SEARCH_CLI as cli, interrupt_when_written

    recipe = {**_recipe(controller_steps=5, children_per_step=2, executor="local").to_dict(), "progress": True}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    subprocess.run([*cli, "--recipe", "r.yaml", "--out", "full"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=600)
    proc = subprocess.Popen([*cli, "--recipe", "r.yaml", "--out", "cut"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    returncode, err = interrupt_when_written(proc, metrics, poll=0.2)
    assert returncode == 1 and "interrupted after controller update" in err, err[-2000:]
    done = len(metrics.read_text().splitlines())
    assert 1 <= done < 5
    subprocess.run([*cli, "--resume", "cut"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)

    def children(run: str) -> list:
        return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "worker")}
                for line in (tmp_path / run / "children.jsonl").read_text().splitlines()]

    assert children("cut") == children("full") and len(children("full")) == 10
    assert Genotype.from_file(tmp_path / "cut" / "genotype.yaml") == Genotype.from_file(tmp_path / "full" / "genotype.yaml")


@pytest.mark.parametrize("args, message", [
    (["--set", "child.epoch=3"], "unknown recipe key 'epoch' in recipe key 'child'. Did you mean 'epochs'?"),
    (["--set", "algorithm=ppo2"], "'algorithm' = 'ppo2' is not one of ppo, reinforce. Did you mean 'ppo'?"),
    (["--set", "ops=[none,sep_conv_3x3]"], "'sep_conv_3x3' is not a nasnet-family op"),
    (["--init-distribution", "x"], "--init-distribution warm-starts PARSEC"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    from click.testing import CliRunner

    from nasnetzoo.cli import cli

    result = CliRunner().invoke(cli, ["search", "--recipe", str(ROOT / "recipes" / "smoke_nasnet_rl.yaml"),
                                      "--out", str(tmp_path / "r"), *args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_a_misspelt_strategy_points_to_nasnet_rl(tmp_path):
    from nasnetzoo.search.recipe import load_search_recipe

    (tmp_path / "r.yaml").write_text("strategy: nasnet-rl\n")
    with pytest.raises(RecipeError, match="Did you mean 'nasnet_rl'"):
        load_search_recipe(tmp_path / "r.yaml")
    with pytest.raises(RecipeError, match="write it in the recipe file"):
        load_search_recipe(None, ["strategy=nasnet_rl"])
