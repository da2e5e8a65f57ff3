"""A NASNet RL search: sample children, train them in parallel, update the controller, repeat.

The run directory holds::

    recipe.yaml       the resolved recipe (what --resume reads)
    controller.pt     controller, optimizer, baseline, sampling generator and every child so far,
                      written atomically after each controller update; --resume continues exactly
    children.jsonl    one record per trained child: step, reward, params, seconds, worker, genotype
    metrics.jsonl     one record per controller update (rewards, baseline, loss, entropy, KL)
    top_k.yaml        the best ``top_k`` architectures with their rewards (best first)
    rewards.png       every child's reward over the search, with the per-update mean and the best
    genotype.yaml     the best child's cell, which ``nasnetzoo.load`` and ``nasnetzoo train`` accept

``top_k.yaml`` and ``genotype.yaml`` are refreshed with every checkpoint, so a stopped search has them.
The lock, resume, commits, logs and Ctrl-C/SIGTERM are the run envelope's (``runs/envelope.py``).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ..._version import __version__
from ...errors import CheckpointError, NasNetZooError
from ...fileio import draw_optional, save_figure
from ...genotype import Genotype, dump_yaml
from ...runs.checkpoint import atomic_write, seed_everything
from ...runs.envelope import (Run, RunInterrupted, RunKind, check_resumable, register_run_kind, run_dir_for,
                              stamped_run_dir)
from ...runs.progress import say
from .child import ChildJob, ChildResult
from .controller import Controller
from .executors import make_executor
from .policy import ControllerTrainer
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
    return recipe.seed * 1_000_003 + index


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
    run = Run(RL_RUN, run_dir, recipe=recipe.to_dict(), resume=resume is not None, overwrite=overwrite,
              logs=("metrics.jsonl", "children.jsonl"))
    with run:
        state = run.load()
        if state is not None:
            run.restore("controller", lambda: trainer.load_state_dict(state))
            run.restore_rng(state)
            recipe_path = recipe_path or state.get("recipe_file", "")
            run.position = f"controller update {int(state['step']) + 1}/{recipe.controller_steps}"
        else:
            run.write_text("recipe.yaml", recipe.to_yaml())
        children = run.records["children.jsonl"]   # every child so far, numbered (and seeded) in order
        executor = None
        if evaluate is None:
            executor = make_executor(recipe.executor, workers=recipe.workers, ray_address=recipe.ray_address,
                                     ray_num_cpus=recipe.ray_num_cpus, gpus_per_child=recipe.gpus,
                                     cpus_per_child=recipe.cpus_per_child)
            evaluate = executor.run
        _announce(recipe, space, executor, run_dir)
        bar = _progress_bar(recipe.controller_steps * recipe.children_per_step, len(children), recipe.progress)
        done = 0 if state is None else int(state["step"]) + 1   # finished controller updates
        try:
            for step in range(done, recipe.controller_steps):
                record = _update(run, recipe, space, trainer, evaluate, step, recipe_path)
                done = step + 1
                bar.update(recipe.children_per_step)
                bar.set_postfix(mean=f"{100 * record['reward_mean']:.1f}%", best=f"{100 * record['best_reward']:.1f}%")
                if on_step_end is not None and on_step_end(step, record):
                    break
        finally:
            bar.close()
            if executor is not None:
                executor.close()
        if not children:
            raise NasNetZooError(f"{run_dir}: no child was trained (controller_steps={recipe.controller_steps}).")
        best_genotype, best, files = _top_k(run_dir, children, recipe, recipe_path)
        for name, text in files.items():
            run.write_text(name, text)
        draw_optional(lambda: plot_rewards(children, run_dir / "rewards.png", run.records["metrics.jsonl"]),
                      run_dir / "rewards.png", say if recipe.progress else None)
    if recipe.progress:
        say(f"best child {best['child']} (update {best['update']}): held-out acc {best['val_acc']:.2f}%\n"
            f"{best_genotype.to_string()}\nwrote {run_dir / 'genotype.yaml'}")
    return RLSearchResult(run_dir, best_genotype, best["reward"], done, len(children))


def _announce(recipe: RLSearchRecipe, space: SearchSpace, executor, run_dir: Path) -> None:
    if recipe.progress:
        child = recipe.child_config
        where = executor.name if executor is not None else "custom evaluator"
        say(f"NASNet RL search ({recipe.algorithm}): {recipe.controller_steps} updates x {recipe.children_per_step} "
            f"children, space of {len(space.ops)} ops x {space.num_blocks} blocks; children N={child.N} "
            f"F={child.F}, {child.epochs} epochs on {child.dataset}, run on {where}; run dir {run_dir}")


def _update(run: Run, recipe: RLSearchRecipe, space: SearchSpace, trainer: ControllerTrainer, evaluate: Evaluate,
            step: int, recipe_path: str) -> dict:
    """One controller update: sample, train the children, update, commit; its metrics record."""
    children = run.records["children.jsonl"]
    rollout = trainer.sample(recipe.children_per_step)
    genotypes = [space.to_genotype(a) for a in rollout.actions.tolist()]
    first = len(children)
    jobs = [ChildJob(first + i, g.to_dict(), recipe.child_config, child_seed(recipe, first + i))
            for i, g in enumerate(genotypes)]
    t0 = time.perf_counter()
    results = list(evaluate(jobs))
    child_time = time.perf_counter() - t0
    failed = [r for r in results if r.error]
    if len(failed) == len(results):
        raise NasNetZooError(f"every child of controller update {step + 1} failed, e.g. child "
                             f"{failed[0].index}: {failed[0].error}; fix the child settings "
                             f"(--set child.batch_size=..., child.F=...) and --resume {run.path}.")
    if failed and recipe.progress:
        say(f"update {step + 1}: {len(failed)} of {len(results)} children failed (reward 0), e.g. "
            f"child {failed[0].index}: {failed[0].error}")
    stats = trainer.update(rollout, [float(r.reward) for r in results])
    new = [{"update": step + 1, "child": r.index, "reward": r.reward, "val_acc": r.val_acc,
            "train_acc": r.train_acc, "params": r.params, "seconds": round(r.seconds, 3),
            "worker": r.worker, "genotype": g.to_string(), **({"error": r.error} if r.error else {})}
           for r, g in zip(results, genotypes)]
    _, best, files = _top_k(run.path, children + new, recipe, recipe_path)
    record = {"update": step + 1, "children": len(children) + len(new), **stats, "best_reward": best["reward"],
              "failed_children": len(failed), "child_seconds": round(child_time, 3)}
    staged: dict[Union[str, Path], Callable[[Path], object]] = {run.path / name: (lambda text: lambda path: atomic_write(path, lambda f: f.write(text.encode())))(text)
              for name, text in files.items()}
    run.save({**trainer.state_dict(), "step": step, "children": children, "recipe": recipe.to_dict(),
              "recipe_file": recipe_path, "space": space.to_dict(), "version": __version__},
             f"controller update {step + 1}/{recipe.controller_steps}", staged=staged,
             records={"children.jsonl": new, "metrics.jsonl": [record]})
    return record


def _top_k(run_dir: Path, children: list[dict], recipe: RLSearchRecipe,
           recipe_path: str) -> tuple[Genotype, dict, dict[str, str]]:
    """The best child's genotype and record, and the texts of top_k.yaml and genotype.yaml."""
    ranked = sorted(children, key=lambda c: (-c["reward"], c["child"]))
    top = ranked[:recipe.top_k]
    entries = []
    for rank, child in enumerate(top, 1):
        genotype = Genotype.from_string(child["genotype"], family="nasnet")
        entries.append({"rank": rank, "child": child["child"], "update": child["update"],
                        "reward": round(child["reward"], 6), "val_acc": round(child["val_acc"], 3),
                        "params": child["params"], "genotype": _cells(genotype)})
    best = top[0]
    provenance = {"searched_with": f"nasnetzoo {__version__}", "strategy": recipe.strategy,
                  "algorithm": recipe.algorithm, "recipe": recipe.name, "recipe_file": recipe_path,
                  "seed": recipe.seed, "dataset": recipe.child_config.dataset,
                  "child": best["child"], "held_out_acc": round(best["val_acc"], 2),
                  "children_trained": len(children), "run_dir": str(run_dir)}
    genotype = Genotype.from_string(best["genotype"], family="nasnet")
    genotype = Genotype(genotype.normal, genotype.reduce, "nasnet", f"search_{recipe.name}", provenance)
    files = {"top_k.yaml": dump_yaml({"recipe": recipe.name, "children": len(children), "top_k": entries}),
             "genotype.yaml": genotype.to_yaml()}
    return genotype, best, files


def _cells(genotype: Genotype) -> dict:
    data = genotype.to_dict()
    return {"family": data["family"], "normal": data["normal"], "reduce": data["reduce"]}


def plot_rewards(children: Sequence[dict], path: PathLike, updates: Sequence[dict] = ()) -> Path:
    """Reward of every child against its number, the mean per update, the baseline and the best so far."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    index = [c["child"] for c in children]
    reward = [100 * c["reward"] for c in children]
    ax.scatter(index, reward, s=10, alpha=0.5, color="#4c72b0", label="child")
    best, running = [], float("-inf")
    for r in reward:
        running = max(running, r)
        best.append(running)
    ax.plot(index, best, color="#c44e52", linewidth=1.5, label="best so far")
    if updates:
        ends = [u["children"] - 1 for u in updates]
        ax.plot(ends, [100 * u["reward_mean"] for u in updates], color="#55a868", linewidth=1.5, marker="o",
                markersize=3, label="mean per update")
        base = [(e, 100 * u["baseline"]) for e, u in zip(ends, updates) if u.get("baseline") is not None]
        if base:
            ax.plot(*zip(*base), color="#8172b2", linestyle="--", linewidth=1.2, label="baseline (EMA)")
    ax.set_xlabel("child")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("NASNet RL search: reward over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="child", desc="search", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)



__all__ = ["RLSearchResult", "SearchInterrupted", "build_controller_trainer", "build_space", "child_seed",
           "plot_rewards", "prepare_resume", "rl_search"]
