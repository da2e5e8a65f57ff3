"""A PNAS search: the progressive proposer (:mod:`.pnas`) on the sample-and-train pipeline.

The run directory holds::

    recipe.yaml       the resolved recipe (what --resume reads; it rebuilds the progressive space)
    pnas.pt           the proposer (stage, beam, predictions, trained cells, predictor weights, Adam
                      states and generator) and every child so far, written atomically after each
                      child; --resume continues exactly
    children.jsonl    one record per trained child: stage, predicted reward, reward, params, genotype
    metrics.jsonl     one record per finished stage: rewards, the predictor's fit, the number of
                      expansions scored and the Spearman rank correlation of the stage's predictions
    top_k.yaml        the best ``top_k`` architectures with their rewards (best first)
    rewards.png       every child's reward, the best so far and the mean per stage
    genotype.yaml     the best child's cell, which ``nasnetzoo.load`` and ``nasnetzoo train`` accept
    predictions.png   each stage's predicted rewards against the trained ones, with its Spearman

The pipeline turns the proposer's actions into cells with the sampled searches' ``pnas`` preset
(:attr:`.ProgressiveSpace.pipeline_space`), as a random search or evolution over ``space: pnas``
does, so the same actions give the same child whichever strategy proposed them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ...errors import CheckpointError
from ...fileio import draw_optional
from ...genotype import Genotype
from ...runs.envelope import RunKind, check_resumable, register_run_kind, run_dir_for, stamped_run_dir
from ...runs.progress import say
from .child import ChildJob, ChildResult
from .executors import executor_for
from .pipeline import SampledSearch, run_sampled_search
from .pnas import PNASProposer
from .pnas_cells import ProgressiveSpace
from .pnas_plot import plot_predictions
from .pnas_recipe import PNASRecipe, load_pnas_recipe

PathLike = Union[str, Path]
Evaluate = Callable[[Sequence[ChildJob]], Sequence[ChildResult]]
PNAS_RUN = register_run_kind(RunKind("pnas", noun="search", command="search", checkpoint="pnas.pt",
                                     artifacts=("metrics.jsonl", "children.jsonl", "top_k.yaml", "genotype.yaml",
                                                "rewards.png", "predictions.png")))


@dataclass
class PNASResult:
    run_dir: Path
    genotype: Genotype
    best_reward: float
    children: int
    stages: list = field(default_factory=list)   # the proposer's stage records


def build_space(recipe: PNASRecipe) -> ProgressiveSpace:
    return ProgressiveSpace(recipe.ops, recipe.num_blocks)


def build_proposer(recipe: PNASRecipe) -> PNASProposer:
    return PNASProposer(build_space(recipe), beam_size=recipe.beam_size, predictor=recipe.predictor_config,
                        seed=recipe.seed)


def children_budget(space: ProgressiveSpace, beam_size: int) -> int:
    """How many children the search trains: every one-block cell, then at most K per stage."""
    beam = total = space.num_cells(1)
    for b in range(1, space.num_blocks):
        beam = min(beam_size, beam * space.num_blocks_at(b))
        total += beam
    return total


def prepare_resume(run_dir: PathLike, overrides: Sequence[str] = ()) -> PNASRecipe:
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file() or not (run_dir / PNAS_RUN.checkpoint).is_file():
        raise CheckpointError(f"{run_dir} is not a PNAS search directory with a trained child (no recipe.yaml / "
                              f"{PNAS_RUN.checkpoint}); start it again without --resume.")
    check_resumable(run_dir, PNAS_RUN)
    return load_pnas_recipe(run_dir / "recipe.yaml", overrides)


def pnas_search(recipe: PNASRecipe, *, out: Optional[PathLike] = None, resume: Optional[PathLike] = None,
                recipe_path: str = "", overwrite: bool = False, evaluate: Optional[Evaluate] = None,
                on_record: Optional[Callable[[dict], bool]] = None) -> PNASResult:
    """Run (or resume) the search.  ``evaluate(jobs) -> results`` replaces child training (tests,
    custom rewards); ``on_record(stage_record)`` may return True to stop after that stage's commit."""
    run_dir = run_dir_for(resume, out, lambda: stamped_run_dir("search", recipe.name))
    proposer = build_proposer(recipe)
    space, child = proposer.space, recipe.child_config
    budget = children_budget(space, recipe.beam_size)
    announce = (f"PNAS search: B={space.num_blocks} stages over {len(space.ops)} ops, beam K={recipe.beam_size}, "
                f"{recipe.predictor_config.kind}-ensemble of {recipe.predictor_config.members}, {budget} children "
                f"(N={child.N}, F={child.F}, {child.epochs} epochs on {child.dataset})")
    spec = SampledSearch(
        kind=PNAS_RUN, name=recipe.name, strategy="pnas", space=space.pipeline_space,
        proposer=proposer, child=child, seed=recipe.seed, top_k=recipe.top_k, budget=budget,
        recipe=recipe.to_dict(), recipe_yaml=recipe.to_yaml(), announce=announce,
        plot_title="PNAS: reward of every child", mean_label="mean per stage",
        provenance={"num_blocks": space.num_blocks, "beam_size": recipe.beam_size,
                    "predictor": recipe.predictor_config.kind},
        progress=recipe.progress)

    result = run_sampled_search(spec, run_dir, resume=resume is not None, overwrite=overwrite,
                                recipe_path=recipe_path, make_executor=lambda: executor_for(recipe, evaluate), on_record=on_record)
    draw_optional(lambda: plot_predictions(proposer.trained, proposer.stages, result.run_dir / "predictions.png"),
                  result.run_dir / "predictions.png", say if recipe.progress else None)   # matplotlib is an extra
    return PNASResult(result.run_dir, result.genotype, result.best_reward, result.children,
                      [dict(s) for s in proposer.stages])


__all__ = ["PNASResult", "PNAS_RUN", "build_proposer", "build_space", "children_budget",
           "pnas_search", "prepare_resume"]
