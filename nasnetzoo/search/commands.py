"""``nasnetzoo search``: recipe in, genotype file out."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import click

from ..cli_errors import user_errors as _user_errors
from ..cli_options import out_option


@click.command("search")
@click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False),
              help="Search recipe YAML: recipes/<strategy>_cifar10.yaml at the paper's protocol (cifar10.yaml "
                   "is PC-DARTS's; also pcdarts_imagenet.yaml), smoke_<strategy>.yaml on the embedded digits "
                   "(smoke_search.yaml is PC-DARTS's).")
@out_option(type=click.Path(file_okay=False), help="Run directory to create (default runs/search-...).")
@click.option("--resume", type=click.Path(file_okay=False), help="Continue the search in this directory.")
@click.option("--init-distribution", type=click.Path(file_okay=False),
              help="Warm-start the architecture distribution from this run directory (recipe key "
                   "options.init_distribution of a strategy that has it: parsec).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key (repeatable): --set epochs=10 --set partial_k=2.")
@click.option("--overwrite", is_flag=True, help="Replace another run that --out holds (its files are removed).")
@_user_errors
def search_cmd(recipe_path: Optional[str], out: Optional[str], resume: Optional[str],
               init_distribution: Optional[str], overrides: Sequence[str], overwrite: bool) -> None:
    """Search a cell with the strategy its recipe names (darts, pcdarts, pdarts, gdas, snas, parsec on the
    supernet; enas with weight sharing; nasnet_rl, evolution, random, pnas training sampled children);
    writes RUN/genotype.yaml for `load` and `train`.

    The supernet searches work under `torchrun --nproc-per-node N -m nasnetzoo search ...`; the
    sampled searches train their children in a process pool or on Ray (recipe keys executor, workers)."""
    from ..recipe_file import RecipeError, resolve_recipe
    from ..runs.envelope import check_resume_args
    from .api import run_search, strategy_of, summary
    from ..recipe_file import parse_assignment
    from .strategies import TABLE, get_strategy

    if check_resume_args(resume, {"--recipe": recipe_path, "--out": out, "--init-distribution": init_distribution,
                                  "--overwrite": overwrite}):
        result = run_search(None, resume=resume, overrides=overrides)
    else:
        if not recipe_path:
            raise RecipeError("pass --recipe FILE or NAME (e.g. smoke_search) or --resume RUN_DIR.")
        recipe_path = str(resolve_recipe(recipe_path))  # a bundled recipe's name, or a file
        if init_distribution:   # a shorthand for the option of the strategies that have one
            entry = strategy_of(recipe_path)
            for text in overrides:   # a --set strategy=... picks the strategy too
                key, value = parse_assignment(text)
                entry = get_strategy(str(value)) if key == "strategy" else entry
            if not entry.has_option("init_distribution"):
                holders = [e.title or e.name for e in TABLE.values() if e.has_option("init_distribution")]
                raise RecipeError(f"--init-distribution warm-starts {' or '.join(holders) or 'a distribution'}; the "
                                  f"{entry.name} search has no such option.")
            overrides = (*overrides, f"options.init_distribution={init_distribution}")
        result = run_search(recipe_path, out=out, overrides=overrides, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(summary(result, recipe_path, resume))


@click.command("imagenet-subset")
@click.argument("src", type=click.Path(file_okay=False, exists=True))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--train-fraction", default=0.1, show_default=True, help="Share of each class for the weights.")
@click.option("--arch-fraction", default=0.025, show_default=True, help="Share of each class for the architecture.")
@click.option("--seed", default=0, show_default=True)
@click.option("--copy", is_flag=True, help="Copy the images instead of linking them.")
@_user_errors
def imagenet_subset_cmd(src: str, dst: str, train_fraction: float, arch_fraction: float, seed: int, copy: bool) -> None:
    """Make PC-DARTS's ImageNet search subsets: DST/train and DST/arch from SRC/train (ImageFolder)."""
    from .subset import make_imagenet_subset

    counts = make_imagenet_subset(src, dst, train_fraction=train_fraction, arch_fraction=arch_fraction,
                                  seed=seed, copy=copy)
    click.echo(f"{counts['classes']} classes: {counts['train']} images in {dst}/train, {counts['arch']} in {dst}/arch")


COMMANDS = [search_cmd, imagenet_subset_cmd]
