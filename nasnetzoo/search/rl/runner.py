"""A NASNet RL search: the PPO controller as the proposer of the sample-and-train pipeline.

The controller samples a batch of children, the pipeline (``search/sampled/pipeline.py``) trains
them in parallel and tells the rewards back, the controller updates, and so on.  The run directory
holds::

    recipe.yaml       the resolved recipe (what --resume reads)
    controller.pt     controller, optimizer, baseline, sampling generator, the batch in progress and
                      every child so far, written atomically after each child; --resume continues exactly
    children.jsonl    one record per trained child: update, reward, params, seconds, worker, genotype
    metrics.jsonl     one record per controller update (rewards, baseline, loss, entropy, KL)
    top_k.yaml        the best ``top_k`` architectures with their rewards (best first)
    rewards.png       every child's reward over the search, with the per-update mean and the best
    genotype.yaml     the best child's cell, which ``nasnetzoo.load`` and ``nasnetzoo train`` accept

``top_k.yaml`` and ``genotype.yaml`` are refreshed with every checkpoint, so a stopped search has them.
The lock, resume, commits, logs and Ctrl-C/SIGTERM are the run envelope's (``runs/envelope.py``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ...errors import CheckpointError
from ...genotype import Genotype
from ...runs.checkpoint import seed_everything
from ...runs.envelope import RunInterrupted, RunKind, check_resumable, register_run_kind, run_dir_for, stamped_run_dir
from ..sampled import pipeline
from ..sampled.child import ChildJob, ChildResult
from ..sampled.executors import executor_for
from ..sampled.pipeline import SampledSearch, run_sampled_search
from ..sampled.plot import plot_rewards
from .controller import Controller
from .policy import ControllerTrainer
from .proposer import PPOProposer
from .recipe import RLSearchRecipe, load_rl_recipe
from .space import SearchSpace

PathLike = Union[str, Path]
RL_RUN = register_run_kind(RunKind("nasnet_rl", noun="search", command="search", checkpoint="controller.pt",
                                   artifacts=("metrics.jsonl", "children.jsonl", "top_k.yaml", "genotype.yaml",
                                              "rewards.png")))
CHECKPOINT = RL_RUN.checkpoint
Evaluate = Callable[[Sequence[ChildJob]], Sequence[ChildResult]]
SearchInterrupted = RunInterrupted   # Ctrl-C or SIGTERM; the message says how to resume


@dataclass
class RLSearchResult:
    run_dir: Path
    genotype: Genotype
    best_reward: float
    steps_done: int
    children: int


def build_space(recipe: RLSearchRecipe) -> SearchSpace:
    return SearchSpace(recipe.ops, recipe.num_blocks, recipe.combines)


def build_controller_trainer(recipe: RLSearchRecipe, space: SearchSpace) -> ControllerTrainer:
    seed_everything(recipe.seed)   # the controller's initial weights
    controller = Controller(space, recipe.controller_hidden, temperature=recipe.temperature,
                            tanh_constant=recipe.tanh_constant)
    return ControllerTrainer(controller, algorithm=recipe.algorithm, lr=recipe.controller_lr,
                             entropy_weight=recipe.entropy_weight, baseline_decay=recipe.baseline_decay,
                             ppo_clip=recipe.ppo_clip, ppo_epochs=recipe.ppo_epochs,
                             grad_clip=recipe.controller_grad_clip, seed=recipe.seed)


def child_seed(recipe: RLSearchRecipe, index: int) -> int:
    """A child's training seed: a function of the recipe seed and its number, so resumes repeat it."""
    return pipeline.child_seed(recipe.seed, index)


def prepare_resume(run_dir: PathLike, overrides: Sequence[str] = ()) -> RLSearchRecipe:
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file() or not (run_dir / CHECKPOINT).is_file():
        raise CheckpointError(f"{run_dir} is not a NASNet RL search directory with a finished controller update "
                              f"(no recipe.yaml / {CHECKPOINT}); start it again without --resume.")
    check_resumable(run_dir, RL_RUN)
    return load_rl_recipe(run_dir / "recipe.yaml", overrides)


def rl_search(recipe: RLSearchRecipe, *, out: Optional[PathLike] = None, resume: Optional[PathLike] = None,
              recipe_path: str = "", evaluate: Optional[Evaluate] = None,
              on_step_end: Optional[Callable[[int, dict], bool]] = None, overwrite: bool = False) -> RLSearchResult:
    """Run (or resume) the search.  ``evaluate(jobs) -> results`` replaces child training (tests,
    custom rewards); ``on_step_end(step, record)`` may return True to stop after that update;
    ``overwrite`` replaces another run that ``out`` holds (otherwise refused)."""
    run_dir = run_dir_for(resume, out, lambda: stamped_run_dir("search", recipe.name))
    space = build_space(recipe)
    trainer = build_controller_trainer(recipe, space)
    proposer = PPOProposer(trainer, recipe.controller_steps, recipe.children_per_step)
    child = recipe.child_config
    spec = SampledSearch(
        kind=RL_RUN, name=recipe.name, strategy=recipe.strategy, space=space, proposer=proposer, child=child,
        seed=recipe.seed, top_k=recipe.top_k, budget=recipe.controller_steps * recipe.children_per_step,
        recipe=recipe.to_dict(), recipe_yaml=recipe.to_yaml(), progress=recipe.progress,
        announce=(f"NASNet RL search ({recipe.algorithm}): {recipe.controller_steps} updates x "
                  f"{recipe.children_per_step} children, space of {len(space.ops)} ops x {space.num_blocks} blocks; "
                  f"children N={child.N} F={child.F}, {child.epochs} epochs on {child.dataset}"),
        plot_title="NASNet RL search: reward over time", provenance={"algorithm": recipe.algorithm},
        decorate=_update_record(), failure_window=recipe.children_per_step,
        failure_message=lambda failed: _all_failed(failed, run_dir))

    def on_record(record: dict) -> bool:
        return on_step_end is not None and bool(on_step_end(record["update"] - 1, record))

    result = run_sampled_search(spec, run_dir, resume=resume is not None, overwrite=overwrite,
                                recipe_path=recipe_path, make_executor=lambda: executor_for(recipe, evaluate), on_record=on_record)
    return RLSearchResult(run_dir, result.genotype, result.best_reward, trainer.updates, result.children)


def _update_record() -> Callable[[dict, list], dict]:
    """Completes the controller's record of an update with the search's view of it."""
    clock = {"last": time.perf_counter()}

    def decorate(record: dict, children: list) -> dict:
        now = time.perf_counter()
        failed = sum(1 for c in children if c.get("update") == record["update"] and c.get("error"))
        out = {**record, "best_reward": max(c["reward"] for c in children), "failed_children": failed,
               "child_seconds": round(now - clock["last"], 3)}
        clock["last"] = now
        return out

    return decorate


def _all_failed(failed: list, run_dir: Path) -> str:
    updates = {c.get("update") for c in failed}
    first = failed[0]
    what = (f"every child of controller update {first['update']} failed" if len(updates) == 1 else
            f"the last {len(failed)} children (as many as one controller update) failed")
    return (f"{what}, e.g. child {first['child']}: {first['error']}; fix the child settings "
            f"(--set child.batch_size=..., child.F=...) and --resume {run_dir}.")


__all__ = ["RLSearchResult", "SearchInterrupted", "build_controller_trainer", "build_space", "child_seed",
           "plot_rewards", "prepare_resume", "rl_search"]
