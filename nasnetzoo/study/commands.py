"""``nasnetzoo study``: a study recipe in, a run directory per search and retrain and one report out."""
from __future__ import annotations

from typing import Optional, Sequence

import click

from ..cli_errors import user_errors as _user_errors
from ..cli_options import out_option


@click.command("study")
@click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False),
              help="Study recipe YAML (recipes/smoke_study.yaml, study_cifar10.yaml) or a bundled recipe's name.")
@out_option(type=click.Path(file_okay=False), help="Study directory to create (default runs/study-...).")
@click.option("--resume", type=click.Path(file_okay=False),
              help="Continue the study in this directory (finished runs are not run again).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a study recipe key (repeatable): --set seeds=[0,1] --set retrain_set.epochs=1; on "
                   "--resume only the keys of how it runs (executor, workers, threads, ...).")
@click.option("--overwrite", is_flag=True, help="Replace another run that --out holds (its files are removed).")
@_user_errors
def study_cmd(recipe_path: Optional[str], out: Optional[str], resume: Optional[str], overrides: Sequence[str],
              overwrite: bool) -> None:
    """Compare search strategies over several seeds against random cells of the same space: every
    search and proxy retrain is a run directory of its own; writes DIR/study.md, study.json and plots."""
    from ..recipe_file import RecipeError, resolve_recipe
    from ..runs.envelope import check_resume_args
    from .runner import run_study

    if check_resume_args(resume, {"--recipe": recipe_path, "--out": out, "--overwrite": overwrite}):
        result = run_study(None, resume=resume, overrides=overrides)
    else:
        if not recipe_path:
            raise RecipeError("pass --recipe FILE or NAME (e.g. smoke_study) or --resume STUDY_DIR.")
        result = run_study(resolve_recipe(recipe_path), out=out, overrides=overrides, overwrite=overwrite)
    click.echo(result.summary)
    if result.failed:
        raise SystemExit(1)


COMMANDS = [study_cmd]
