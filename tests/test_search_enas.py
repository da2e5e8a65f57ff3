"""ENAS (strategy: enas): the REINFORCE update, the baseline, weight sharing, one step touching only
the sampled path, an end-to-end search, exact resume and the derived genotype."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import nasnetzoo
from nasnetzoo.genotype import Genotype
from nasnetzoo.models.enas import ENASNet
from nasnetzoo.recipe_file import RecipeError
from nasnetzoo.search import run_search
from nasnetzoo.search.enas.controller import ENASController, ENASControllerTrainer, moved_baseline
from nasnetzoo.search.enas.recipe import ENASRecipe
from nasnetzoo.search.enas.runner import cosine_restart_lr, enas_search, shared_step
from nasnetzoo.search.enas.shared import SharedCell, SharedNetwork, arc_to_genotype, unused_states


def _recipe(**overrides) -> ENASRecipe:
    values = dict(name="t_enas", dataset="digits", image_size=8, batch_size=32, train_portion=0.8, crop_padding=1,
                  hflip=False, num_layers=0, out_filters=4, aux_heads=False, epochs=3, max_steps_per_epoch=2,
                  controller_train_steps=2, controller_num_aggregate=2, derive_samples=2, lr_T_0=1, device="cpu",
                  threads=1, progress=False)
    values.update(overrides)
    return ENASRecipe(**values)


# ------------------------------------------------------------------ controller maths
def test_reinforce_gradient_matches_the_formula_in_float64():
    """grad = mean_k -(R_k - b_k) grad log pi(a_k), R_k = acc_k + w H_k (H held constant), b_k the
    baseline after folding in R_k -- computed here by hand from autograd on each log-prob."""
    torch.manual_seed(0)
    controller = ENASController(num_nodes=2, num_ops=5, lstm_size=8).double()
    w, decay, accs = 0.3, 0.7, [0.25, 0.75, 0.5]
    trainer = ENASControllerTrainer(controller, entropy_weight=w, baseline_decay=decay, seed=3)
    trainer.baseline = 0.2
    trainer.optimizer.step = lambda: None   # keep the gradient the update leaves
    seen = []

    def score(actions):
        seen.append(actions)
        return accs[len(seen) - 1]

    trainer.update(score, num_aggregate=3)
    params = [p for p in controller.parameters()]
    expected = [torch.zeros_like(p) for p in params]
    b = 0.2
    for acc, actions in zip(accs, seen):
        rollout = controller(actions=[actions])
        reward = acc + w * float(rollout.entropy[0].detach())
        b = b - (1 - decay) * (b - reward)
        grads = torch.autograd.grad(rollout.log_prob[0], params, allow_unused=True)
        for e, g in zip(expected, grads):
            if g is not None:
                e -= (reward - b) * g / 3
    assert math.isclose(trainer.baseline, b, rel_tol=0, abs_tol=1e-12)
    for p, e in zip(params, expected):
        got = p.grad if p.grad is not None else torch.zeros_like(p)
        assert torch.allclose(got, e, rtol=1e-10, atol=1e-12)
    assert any(e.abs().sum() > 0 for e in expected)


def test_baseline_is_the_moving_average_of_rewards_starting_at_zero():
    decay, rewards = 0.9, [0.5, 0.1, 0.8, 0.3]
    b = 0.0
    for r in rewards:
        b = moved_baseline(b, r, decay)
    closed = sum((1 - decay) * decay ** (len(rewards) - 1 - k) * r for k, r in enumerate(rewards))
    assert math.isclose(b, closed, rel_tol=1e-12)
    trainer = ENASControllerTrainer(ENASController(num_nodes=2, lstm_size=8), entropy_weight=0.0, baseline_decay=decay)
    it = iter(rewards)
    trainer.update(lambda actions: next(it), num_aggregate=len(rewards))
    assert math.isclose(trainer.baseline, closed, rel_tol=1e-6)


def test_scoring_given_actions_gives_the_sampled_log_probs():
    controller = ENASController(num_nodes=3, lstm_size=16)
    rollout = controller.sample(4, torch.Generator().manual_seed(1))
    assert rollout.actions.shape == (4, 24)
    assert torch.allclose(controller(actions=rollout.actions).log_prob, rollout.log_prob, atol=1e-5)
    for arc in rollout.actions.tolist():   # every input id is a state the node can read
        for cell in (arc[:12], arc[12:]):
            assert all(cell[4 * b + k] < b + 2 for b in range(3) for k in (0, 2))


# ------------------------------------------------------------------ weight sharing
def test_two_arcs_that_pick_the_same_input_and_op_share_its_weights():
    torch.manual_seed(0)
    cell = SharedCell((4, 0), (4, 0), 4, num_nodes=2)
    a = [1, 0, 0, 4, 2, 2, 0, 3]   # node 0 slot x: state 1, sep 3x3
    b = [1, 0, 1, 1, 0, 4, 2, 0]   # the same, different elsewhere
    h0, h1 = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    out_a, out_b = cell(h0, h1, a), cell(h0, h1, b)
    shared = cell.convs[SharedCell.conv_key(0, "x", 1, 0)]
    only_b = cell.convs[SharedCell.conv_key(0, "y", 1, 1)]
    with torch.no_grad():
        saved = shared.separable_1.pointwise_conv2d.weight.clone()
        shared.separable_1.pointwise_conv2d.weight.mul_(3.0)
        assert not torch.allclose(cell(h0, h1, a), out_a) and not torch.allclose(cell(h0, h1, b), out_b)
        shared.separable_1.pointwise_conv2d.weight.copy_(saved)
        only_b.separable_1.pointwise_conv2d.weight.mul_(3.0)
        assert torch.allclose(cell(h0, h1, a), out_a) and not torch.allclose(cell(h0, h1, b), out_b)


def test_one_shared_step_updates_only_the_sampled_paths_weights():
    torch.manual_seed(0)
    net = SharedNetwork(num_layers=0, out_filters=4, num_nodes=2, num_classes=3, auxiliary=False, img_size=8)
    recipe = _recipe(l2_reg=0.0, num_nodes=2)
    normal, reduce = [1, 0, 0, 2, 2, 1, 1, 4], [0, 1, 1, 3, 0, 0, 2, 4]
    params = net.weight_parameters()
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    shared_step(net, optimizer, params, torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,)), normal, reduce, recipe)
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k]) and "running" not in k
               and "num_batches" not in k}
    # net.cells: two cells (both reduction layers, as num_layers=0), both reading ``reduce``.
    arc = reduce
    on_path = {f"cells.{c}.convs.{SharedCell.conv_key(b, slot, arc[4 * b + 2 * i], arc[4 * b + 2 * i + 1])}"
               for c in range(2) for b in range(2) for i, slot in enumerate("xy") if arc[4 * b + 2 * i + 1] in (0, 1)}
    conv_changed = {".".join(k.split(".")[:4]) for k in changed if ".convs." in k}
    assert conv_changed == on_path
    keep = unused_states(arc, 2)
    for c in range(2):
        w0, w1 = before[f"cells.{c}.final_weight"], after[f"cells.{c}.final_weight"]
        for i in range(4):
            assert torch.equal(w0[i], w1[i]) == (i not in keep), (c, i)


# ------------------------------------------------------------------ schedule and recipe
def test_cosine_schedule_restarts_at_T0_then_T0_Tmul():
    lr = [cosine_restart_lr(e, 0.05, 0.0005, 10, 2) for e in range(31)]
    assert lr[0] == lr[10] == lr[30] == 0.05
    assert lr[9] < lr[5] < lr[0] and lr[29] < lr[20] < lr[10]
    assert math.isclose(lr[5], 0.0005 + 0.5 * 0.0495, rel_tol=1e-12)
    assert math.isclose(lr[20], 0.0005 + 0.5 * 0.0495 * (1 + math.cos(math.pi / 2)), rel_tol=1e-12)


def test_recipe_refuses_bad_values_naming_the_key():
    with pytest.raises(RecipeError, match="out_filters"):
        _recipe(out_filters=5)
    with pytest.raises(RecipeError, match="baseline_decay"):
        _recipe(baseline_decay=1.0)


def test_official_recipe_holds_the_scripts_values():
    recipe = ENASRecipe.from_file(Path(__file__).resolve().parents[1] / "recipes" / "enas_cifar10.yaml")
    assert (recipe.batch_size, recipe.epochs, recipe.num_layers, recipe.out_filters, recipe.num_nodes) == (160, 150, 6,
                                                                                                          20, 5)
    assert (recipe.controller_train_steps, recipe.controller_num_aggregate, recipe.lstm_size) == (30, 10, 64)
    assert (recipe.tanh_constant, recipe.op_tanh_reduce, recipe.entropy_weight) == (1.10, 2.5, 1e-4)


# ------------------------------------------------------------------ end to end
def test_search_end_to_end_writes_a_genotype_that_loads_and_builds(tmp_path):
    result = run_search(_recipe(epochs=2), out=tmp_path / "r")
    assert result.epochs_done == 2
    for name in ("recipe.yaml", "checkpoint.pt", "metrics.jsonl", "genotype.yaml", "genotypes/epoch_002.yaml"):
        assert (tmp_path / "r" / name).is_file(), name
    genotype = Genotype.from_file(tmp_path / "r" / "genotype.yaml")
    assert genotype == result.genotype
    assert genotype.family == "nasnet" and genotype.provenance["strategy"] == "enas"
    model = nasnetzoo.load(tmp_path / "r" / "genotype.yaml")
    assert model(torch.randn(1, 3, 32, 32)).shape[-1] == 10
    enas = ENASNet(result.genotype, num_layers=1, out_filters=8).eval()
    assert enas(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_genotype_swaps_enas_state_ids_into_tf_order():
    arc = [0, 4, 1, 0, 2, 2, 0, 3]
    g = arc_to_genotype(arc, arc, 2)
    (l0, r0), (l1, r1) = g.normal.nodes
    assert (l0.op, l0.input, r0.op, r0.input) == ("none", 1, "separable_3x3_2", 0)
    assert (l1.op, l1.input, r1.op, r1.input) == ("avg_pool_3x3", 2, "max_pool_3x3", 1)
    assert tuple(g.normal.concat) == (3,)


def test_resumed_search_matches_an_uninterrupted_one(tmp_path):
    enas_search(_recipe(), out=tmp_path / "full")
    stopped = enas_search(_recipe(), out=tmp_path / "cut", on_epoch_end=lambda epoch: epoch == 0)
    assert stopped.epochs_done == 1
    resumed = run_search(resume=tmp_path / "cut")
    assert resumed.epochs_done == 3
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, value in a["controller"]["model"].items():
        assert torch.equal(value, b["controller"]["model"][key]), key
    assert a["controller"]["baseline"] == b["controller"]["baseline"]
    assert torch.equal(a["controller"]["generator"], b["controller"]["generator"])
    assert (tmp_path / "full" / "metrics.jsonl").read_text() == (tmp_path / "cut" / "metrics.jsonl").read_text()
    assert a["genotype"] == b["genotype"]


def test_sigterm_stops_after_an_epoch_and_resume_matches_an_uninterrupted_run(tmp_path):
    import subprocess

    import yaml
    from cli_runs import ENV as env, SEARCH_CLI as cli, interrupt_when_written

    recipe = {**_recipe(epochs=6).to_dict(), "progress": True}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    subprocess.run([*cli, "--recipe", "r.yaml", "--out", "full"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=600)
    proc = subprocess.Popen([*cli, "--recipe", "r.yaml", "--out", "cut"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    returncode, err = interrupt_when_written(proc, metrics, poll=0.05)
    done = len(metrics.read_text().splitlines())
    assert returncode != 0 and 1 <= done < 6, (returncode, done, err[-2000:])
    subprocess.run([*cli, "--resume", "cut"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=600)
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    assert Genotype.from_file(tmp_path / "cut" / "genotype.yaml").normal == \
        Genotype.from_file(tmp_path / "full" / "genotype.yaml").normal
