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

``top_k.yaml`` and ``genotype.yaml`` are refreshed after every update, so a stopped search has them.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ... import __version__
from ...errors import NasNetZooError
from ...genotype import Genotype, dump_yaml
from ...train.checkpoint import CheckpointError, atomic_save, atomic_write, load_checkpoint, seed_everything
from ...train.progress import MetricsLog, say
from ...train.runner import sigterm_as_interrupt
from ..runner import default_run_dir
from .child import ChildJob, ChildResult
from .controller import Controller
from .executors import make_executor
from .policy import ControllerTrainer
from .recipe import RLSearchRecipe, load_rl_recipe
from .space import SearchSpace

PathLike = Union[str, Path]
CHECKPOINT = "controller.pt"
Evaluate = Callable[[Sequence[ChildJob]], Sequence[ChildResult]]


class SearchInterrupted(NasNetZooError):
    """Ctrl-C or SIGTERM: the run directory holds the last finished update and can be resumed."""


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
    return load_rl_recipe(run_dir / "recipe.yaml", overrides)


def rl_search(recipe: RLSearchRecipe, *, out: Optional[PathLike] = None, resume: Optional[PathLike] = None,
              recipe_path: str = "", evaluate: Optional[Evaluate] = None,
              on_step_end: Optional[Callable[[int, dict], bool]] = None) -> RLSearchResult:
    """Run (or resume) the search.  ``evaluate(jobs) -> results`` replaces child training (tests,
    custom rewards); ``on_step_end(step, record)`` may return True to stop after that update."""
    if resume is not None:
        run_dir = Path(resume)
    else:
        run_dir = Path(out) if out is not None else default_run_dir(recipe)
        if (run_dir / CHECKPOINT).exists():
            raise NasNetZooError(f"{run_dir} already holds a search; resume it with --resume {run_dir} or choose "
                                 "another --out.")
    space = build_space(recipe)
    trainer = build_controller_trainer(recipe, space)
    child_config = recipe.child_config
    children: list[dict] = []
    start_step = 0
    metrics, child_log = MetricsLog(run_dir / "metrics.jsonl"), MetricsLog(run_dir / "children.jsonl")
    if resume is not None:
        state = load_checkpoint(run_dir / CHECKPOINT)
        trainer.load_state_dict(state)
        children = list(state["children"])
        start_step = int(state["step"]) + 1
        recipe_path = recipe_path or state.get("recipe_file", "")
        # a resumed run redoes the updates after the checkpoint's: drop their records
        metrics.truncate_after(start_step, key="update")
        child_log.truncate_after(start_step, key="update")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
        for log in (metrics, child_log):
            if log.path.exists():
                log.path.unlink()

    executor = None
    if evaluate is None:
        executor = make_executor(recipe.executor, workers=recipe.workers, ray_address=recipe.ray_address,
                                 ray_num_cpus=recipe.ray_num_cpus, gpus_per_child=recipe.gpus,
                                 cpus_per_child=recipe.cpus_per_child)
        evaluate = executor.run
    total = recipe.controller_steps * recipe.children_per_step
    bar = _progress_bar(total, len(children), recipe.progress)
    if recipe.progress:
        where = executor.name if executor is not None else "custom evaluator"
        say(f"NASNet RL search ({recipe.algorithm}): {recipe.controller_steps} updates x {recipe.children_per_step} "
             f"children, space of {len(space.ops)} ops x {space.num_blocks} blocks; children N={child_config.N} "
             f"F={child_config.F}, {child_config.epochs} epochs on {child_config.dataset}, run on {where}; "
             f"run dir {run_dir}")
    step, done = start_step - 1, start_step   # done: finished controller updates
    try:
        with sigterm_as_interrupt():
            for step in range(start_step, recipe.controller_steps):
                rollout = trainer.sample(recipe.children_per_step)
                genotypes = [space.to_genotype(a) for a in rollout.actions.tolist()]
                first = len(children)   # children are numbered (and seeded) in order over the whole search
                jobs = [ChildJob(first + i, g.to_dict(), child_config, child_seed(recipe, first + i))
                        for i, g in enumerate(genotypes)]
                t0 = time.perf_counter()
                results = list(evaluate(jobs))
                child_time = time.perf_counter() - t0
                failed = [r for r in results if r.error]
                if len(failed) == len(results):
                    raise NasNetZooError(f"every child of controller update {step + 1} failed, e.g. child "
                                         f"{failed[0].index}: {failed[0].error}; fix the child settings "
                                         f"(--set child.batch_size=..., child.F=...) and --resume {run_dir}.")
                if failed and recipe.progress:
                    say(f"update {step + 1}: {len(failed)} of {len(results)} children failed (reward 0), e.g. "
                         f"child {failed[0].index}: {failed[0].error}")
                rewards = [float(r.reward) for r in results]
                stats = trainer.update(rollout, rewards)
                new = [{"update": step + 1, "child": r.index, "reward": r.reward, "val_acc": r.val_acc,
                        "train_acc": r.train_acc, "params": r.params, "seconds": round(r.seconds, 3),
                        "worker": r.worker, "genotype": g.to_string(), **({"error": r.error} if r.error else {})}
                       for r, g in zip(results, genotypes)]
                children += new
                atomic_save({**trainer.state_dict(), "step": step, "children": children,
                             "recipe": recipe.to_dict(), "recipe_file": recipe_path, "space": space.to_dict(),
                             "version": __version__},
                            run_dir / CHECKPOINT)
                # Logged after the checkpoint: the logs never claim an update a resume would redo.
                for record in new:
                    child_log.write(record)
                best = max(children, key=lambda c: c["reward"])
                record = {"update": step + 1, "children": len(children), **stats, "best_reward": best["reward"],
                          "failed_children": len(failed), "child_seconds": round(child_time, 3)}
                metrics.write(record)
                done = step + 1
                _write_top_k(run_dir, children, recipe, recipe_path)
                bar.update(len(new))
                bar.set_postfix(mean=f"{100 * stats['reward_mean']:.1f}%", best=f"{100 * best['reward']:.1f}%")
                if on_step_end is not None and on_step_end(step, record):
                    break
    except KeyboardInterrupt:
        bar.close()
        raise SearchInterrupted(f"interrupted after controller update {done}/{recipe.controller_steps}; "
                                f"continue with `nasnetzoo search --resume {run_dir}`.") from None
    finally:
        bar.close()
        if executor is not None:
            executor.close()

    if not children:
        raise NasNetZooError(f"{run_dir}: no child was trained (controller_steps={recipe.controller_steps}).")
    best_genotype, best = _write_top_k(run_dir, children, recipe, recipe_path)
    with contextlib.suppress(ImportError):
        plot_rewards(children, run_dir / "rewards.png", metrics.read())
    if recipe.progress:
        say(f"best child {best['child']} (update {best['update']}): held-out acc {best['val_acc']:.2f}%\n"
             f"{best_genotype.to_string()}\nwrote {run_dir / 'genotype.yaml'}")
    return RLSearchResult(run_dir, best_genotype, best["reward"], done, len(children))


def _write_top_k(run_dir: Path, children: list[dict], recipe: RLSearchRecipe,
                 recipe_path: str) -> tuple[Genotype, dict]:
    ranked = sorted(children, key=lambda c: (-c["reward"], c["child"]))
    top = ranked[:recipe.top_k]
    entries = []
    for rank, child in enumerate(top, 1):
        genotype = Genotype.from_string(child["genotype"], family="nasnet")
        entries.append({"rank": rank, "child": child["child"], "update": child["update"],
                        "reward": round(child["reward"], 6), "val_acc": round(child["val_acc"], 3),
                        "params": child["params"], "genotype": _cells(genotype)})
    text = dump_yaml({"recipe": recipe.name, "children": len(children), "top_k": entries})
    atomic_write(run_dir / "top_k.yaml", lambda handle: handle.write(text.encode()))
    best = top[0]
    provenance = {"searched_with": f"nasnetzoo {__version__}", "strategy": recipe.strategy,
                  "algorithm": recipe.algorithm, "recipe": recipe.name, "recipe_file": recipe_path,
                  "seed": recipe.seed, "dataset": recipe.child_config.dataset,
                  "child": best["child"], "held_out_acc": round(best["val_acc"], 2),
                  "children_trained": len(children), "run_dir": str(run_dir)}
    genotype = Genotype.from_string(best["genotype"], family="nasnet")
    genotype = Genotype(genotype.normal, genotype.reduce, "nasnet", f"search_{recipe.name}", provenance)
    genotype.save(run_dir / "genotype.yaml")
    return genotype, best


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
    path = Path(path)
    fig.savefig(path)
    return path


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="child", desc="search", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)



__all__ = ["RLSearchResult", "SearchInterrupted", "build_controller_trainer", "build_space", "child_seed",
           "plot_rewards", "prepare_resume", "rl_search"]
