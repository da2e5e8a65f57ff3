"""``run_search``: the library entry of every search, dispatched through the strategies table.

    from nasnetzoo.search import run_search
    result = run_search("recipes/smoke_search.yaml", out="runs/s1", overrides=["epochs=2", "warmup_epochs=1"])
    result = run_search(None, resume="runs/s1", overrides=["epochs=4"])       # continue it

The recipe's ``strategy`` key picks the table entry (``pcdarts`` when a file names none); the
entry's recipe class reads the file and its pipeline runs the search.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..errors import CheckpointError
from ..recipe_file import RecipeError, apply_overrides, read_yaml_mapping
from ..runs.envelope import check_resume_args
from .strategies import Strategy, get_strategy

PathLike = Union[str, Path]
DEFAULT_STRATEGY = "pcdarts"


def strategy_of(recipe_or_path: Any) -> Strategy:
    """The table entry of a recipe object, or of the ``strategy`` a recipe file names."""
    if isinstance(recipe_or_path, (str, Path)):
        data = read_yaml_mapping(Path(recipe_or_path))
        name = data.get("strategy", DEFAULT_STRATEGY)
        if not isinstance(name, str):
            raise RecipeError(f"recipe key 'strategy' in {recipe_or_path} must be a strategy name, got {name!r}.")
        return get_strategy(name)
    return get_strategy(getattr(recipe_or_path, "strategy", DEFAULT_STRATEGY))


def run_search(recipe_or_path: Any = None, out: Optional[PathLike] = None, resume: Optional[PathLike] = None,
               overrides: Sequence[str] = (), *, overwrite: bool = False) -> Any:
    """Run the search a recipe (object or YAML file) describes into ``out``, or continue the run in
    ``resume`` with its own recipe; ``overrides`` are ``key=value`` strings as ``--set`` takes."""
    recipe_path = ""
    if check_resume_args(resume, {"recipe": recipe_or_path is not None, "out": out, "overwrite": overwrite}, cli=False):
        recipe_or_path = Path(resume) / "recipe.yaml"
        if not recipe_or_path.is_file():
            raise CheckpointError(f"{resume} is not a search run directory (no recipe.yaml); pass the folder "
                                  "that `nasnetzoo search --out` created.")
    elif recipe_or_path is None:
        raise RecipeError("pass a search recipe (file or object), e.g. recipes/smoke_search.yaml, or resume=RUN.")
    entry = strategy_of(recipe_or_path)
    if isinstance(recipe_or_path, (str, Path)):
        recipe = recipe_class(entry).load(recipe_or_path, overrides)
        recipe_path = str(recipe_or_path) if resume is None else ""
    else:
        recipe = apply_overrides(recipe_or_path, overrides)
    kwargs = {"resume": resume} if resume is not None else {"out": out, "recipe_path": recipe_path,
                                                            "overwrite": overwrite}
    run = entry.run
    if run is None:   # the supernet pipeline
        from .runner import search as run
    return run(recipe, **kwargs)


def recipe_class(entry: Strategy) -> type:
    """The recipe dataclass of a strategy: its own, or the supernet's."""
    if entry.recipe is not None:
        return entry.recipe
    from .recipe import SearchRecipe

    return SearchRecipe


def summary(result: Any, recipe_or_path: Any = None, resume: Optional[PathLike] = None) -> str:
    """The line ``nasnetzoo search`` prints at the end."""
    entry = strategy_of(Path(resume) / "recipe.yaml" if resume is not None else recipe_or_path)
    if entry.summary is None:
        return f"search {entry.name} done -> {getattr(result, 'run_dir', '')}"
    return entry.summary(result)


__all__ = ["recipe_class", "run_search", "strategy_of", "summary"]
