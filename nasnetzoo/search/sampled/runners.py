"""The sampled searches of a recipe: random search and regularized evolution, each its proposer on the pipeline.

A run directory holds ``recipe.yaml``, ``search.pt`` (the proposer's state, every child so far and
the children still training; written atomically after every child), ``children.jsonl`` (in the
order children finished), ``metrics.jsonl`` (the proposer's records), ``top_k.yaml``,
``genotype.yaml`` and ``rewards.png``; ``nasnetzoo search --resume RUN`` continues it exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ...genotype import Genotype
from ...runs.envelope import RunKind, register_run_kind, run_dir_for, stamped_run_dir
from .child import ChildJob, ChildResult
from .evolution import EvolutionProposer
from .executors import executor_for
from .pipeline import SampledSearch, run_sampled_search
from .random_search import RandomProposer
from .recipe import EvolutionRecipe, RandomRecipe, SampledRecipe

PathLike = Union[str, Path]
Evaluate = Callable[[Sequence[ChildJob]], Sequence[ChildResult]]
ARTIFACTS = ("metrics.jsonl", "children.jsonl", "top_k.yaml", "genotype.yaml", "rewards.png")
RANDOM_RUN = register_run_kind(RunKind("random", noun="search", command="search", checkpoint="search.pt",
                                       artifacts=ARTIFACTS))
EVOLUTION_RUN = register_run_kind(RunKind("evolution", noun="search", command="search", checkpoint="search.pt",
                                          artifacts=ARTIFACTS))


@dataclass
class SampledSearchResult:
    run_dir: Path
    genotype: Genotype
    best_reward: float
    children: int


def run_proposer(recipe: SampledRecipe, kind: RunKind, proposer, title: str, announce: str, *, out=None, resume=None,
                 recipe_path: str = "", overwrite: bool = False, evaluate: Optional[Evaluate] = None,
                 on_record: Optional[Callable[[dict], bool]] = None,
                 mean_label: str = "mean per update") -> SampledSearchResult:
    """Any proposer on the pipeline, with the keys of a :class:`SampledRecipe` (a strategy's recipe
    subclasses it): ``title`` and ``announce`` name the search in messages and its plot."""
    run_dir = run_dir_for(resume, out, lambda: stamped_run_dir("search", recipe.name))
    space = recipe.build_space()
    child = recipe.child_config
    spec = SampledSearch(
        kind=kind, name=recipe.name, strategy=recipe.strategy, space=space, proposer=proposer, child=child,
        seed=recipe.seed, top_k=recipe.top_k, budget=recipe.children, recipe=recipe.to_dict(),
        recipe_yaml=recipe.to_yaml(), progress=recipe.progress, plot_title=f"{title}: reward over time",
        provenance={"space": recipe.space}, mean_label=mean_label,
        announce=(f"{title}: {announce}, {recipe.children} children, {recipe.space} space of {len(space.ops)} ops x "
                  f"{space.num_blocks} blocks; children N={child.N} F={child.F}, {child.epochs} epochs on "
                  f"{child.dataset}"))

    result = run_sampled_search(spec, run_dir, resume=resume is not None, overwrite=overwrite,
                                recipe_path=recipe_path, make_executor=lambda: executor_for(recipe, evaluate), on_record=on_record)
    return SampledSearchResult(run_dir, result.genotype, result.best_reward, result.children)


def random_search(recipe: RandomRecipe, *, out: Optional[PathLike] = None, resume: Optional[PathLike] = None,
                  recipe_path: str = "", overwrite: bool = False, evaluate: Optional[Evaluate] = None,
                  on_record: Optional[Callable[[dict], bool]] = None) -> SampledSearchResult:
    """Run (or resume) a random search; ``evaluate(jobs) -> results`` replaces child training."""
    proposer = RandomProposer(recipe.build_space(), recipe.children, recipe.seed)
    return run_proposer(recipe, RANDOM_RUN, proposer, "random search", "uniform samples", out=out, resume=resume,
                recipe_path=recipe_path, overwrite=overwrite, evaluate=evaluate, on_record=on_record)


def evolution_search(recipe: EvolutionRecipe, *, out: Optional[PathLike] = None, resume: Optional[PathLike] = None,
                     recipe_path: str = "", overwrite: bool = False, evaluate: Optional[Evaluate] = None,
                     on_record: Optional[Callable[[dict], bool]] = None) -> SampledSearchResult:
    """Run (or resume) regularized evolution; ``evaluate(jobs) -> results`` replaces child training;
    ``on_record(record)`` (one per P children) may return True to stop there."""
    proposer = EvolutionProposer(recipe.build_space(), population=recipe.population, sample_size=recipe.sample_size,
                                 children=recipe.children, seed=recipe.seed,
                                 mutation_weights=recipe.mutation_weights)
    return run_proposer(recipe, EVOLUTION_RUN, proposer, "regularized evolution",
                f"P={recipe.population}, S={recipe.sample_size}", out=out, resume=resume, recipe_path=recipe_path,
                overwrite=overwrite, evaluate=evaluate, on_record=on_record,
                mean_label=f"population mean (every {recipe.population} children)")


__all__ = ["EVOLUTION_RUN", "RANDOM_RUN", "SampledSearchResult", "evolution_search", "random_search", "run_proposer"]
