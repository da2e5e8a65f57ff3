"""Click commands of this subpackage; nasnetzoo.cli adds every command listed in COMMANDS."""
from __future__ import annotations

from typing import Optional, Sequence

import click

from ..cli_errors import user_errors as _user_errors
from ..cli_options import (batch_size_option, dataset_option, json_option, model_argument, out_option,
                           square_input_size_option)


@click.command("train")
@click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False),
              help="Recipe YAML (recipes/retrain_cifar10.yaml, retrain_imagenet.yaml, smoke_train.yaml).")
@model_argument("arch", required=False, alias="--arch", metavar="[NAME]")
@out_option(type=click.Path(file_okay=False), help="Run directory to create (default runs/train-...).")
@click.option("--resume", type=click.Path(file_okay=False), help="Continue the run in this directory.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key (repeatable): --set epochs=10 --set model.C=16.")
@click.option("--overwrite", is_flag=True, help="Replace another run that --out holds (its files are removed).")
@_user_errors
def train_cmd(recipe_path: Optional[str], arch: Optional[str], out: Optional[str], resume: Optional[str],
              overrides: Sequence[str], overwrite: bool) -> None:
    """Train ARCH with a recipe; writes logs, checkpoints and safetensors weights to a run directory.

    Works under `torchrun --nproc-per-node N -m nasnetzoo train ...` (DDP)."""
    from ..recipe_file import resolve_recipe
    from .recipe import RecipeError, load_recipe
    from ..runs.envelope import check_resume_args
    from .runner import prepare_resume, train

    if check_resume_args(resume, {"--recipe": recipe_path, "--arch": arch is not None, "--out": out,
                                  "--overwrite": overwrite}):
        recipe, arch = prepare_resume(resume, overrides)
        result = train(recipe, arch, resume=resume)
    else:
        if not recipe_path:
            raise RecipeError("pass --recipe FILE or NAME (e.g. smoke_train) or --resume RUN_DIR.")
        recipe_path = str(resolve_recipe(recipe_path))  # a bundled recipe's name, or a file
        if arch is not None and not arch.strip():
            raise RecipeError("--arch is empty; pass a registry name (e.g. pcdarts_cifar) or a genotype file, "
                              "or leave --arch out to train the recipe's `arch:`.")
        recipe = load_recipe(recipe_path, overrides)
        result = train(recipe, arch, out=out, overwrite=overwrite)
    import os

    if int(os.environ.get("RANK", "0")) != 0:   # under torchrun, rank 0 alone reports
        return
    acc = "-" if result.val_acc is None else f"{result.val_acc:.2f}%"
    best = "-" if result.best_val_acc is None else f"{result.best_val_acc:.2f}% (epoch {result.best_epoch})"
    click.echo(f"trained {result.epochs} epochs in {result.seconds:.0f}s: val_acc {acc}, best {best} -> "
               f"{result.run_dir}; load with {result.load_call}")


@click.command("eval")
@model_argument("arch", alias="--arch")
@click.option("--weights", type=click.Path(dir_okay=False), help="A safetensors weights file.")
@click.option("--pretrained", is_flag=True,
              help="The entry's published weights (--tag picks a file), preprocessed as their cfg says.")
@click.option("--tag", default=None, help="With --pretrained: the published file with this tag (`nasnetzoo info`).")
@dataset_option("data", aliases=("--data",), default=None,
                help="Validation set (default: cifar10; with --pretrained, the weights' own).")
@click.option("--data-dir", default="data", show_default=True, help="Where the dataset lives (an ImageFolder "
              "of the ImageNet validation set for --pretrained ImageNet weights).")
@click.option("--download", is_flag=True, help="Download CIFAR into --data-dir if it is not there.")
@batch_size_option("batch_size", default=256, show_default=True, type=click.IntRange(min=1))
@square_input_size_option("image_size", help="Input size H W, square (default: the weights' own, from their "
                          "metadata or cfg).")
@click.option("--crop", "crop_pct", type=click.FloatRange(0, 1, min_open=True),
              help="With --pretrained: crop fraction instead of the cfg's crop_pct.")
@click.option("--interpolation", type=click.Choice(["bilinear", "bicubic", "nearest"]),
              help="With --pretrained: resize interpolation instead of the cfg's.")
@click.option("--class-map", default=None,
              help="With --pretrained: folder -> class index (JSON or 'folder index' lines), or `synsets` for "
                   "a folder holding a subset of ImageNet's synsets.")
@out_option("results_file", aliases=("--results-file",), type=click.Path(dir_okay=False),
            help="Write the results to this file: JSON (.json) or one-row CSV (.csv).")
@json_option()
@click.option("--workers", default=4, show_default=True, type=int)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Builder option not saved in the weights file, e.g. --set C=16 --set layers=8.")
@_user_errors
def eval_cmd(arch: str, weights: Optional[str], pretrained: bool, tag: Optional[str], data: Optional[str],
             data_dir: str, download: bool, batch_size: int, image_size: Optional[int], crop_pct: Optional[float],
             interpolation: Optional[str], class_map: Optional[str], results_file: Optional[str], as_json: bool,
             workers: int, overrides: Sequence[str]) -> None:
    """Top-1/top-5 accuracy of NAME (a model, alias or genotype file) with --weights (or --pretrained)
    on a validation set, with the publisher's and the paper's figures beside it."""
    import json

    from .recipe import RecipeError, parse_assignment

    if pretrained == bool(weights):
        raise RecipeError("pass --weights FILE or --pretrained (with --tag for another published file).")
    if results_file and not results_file.endswith((".json", ".csv")):   # before the evaluation, not after
        raise RecipeError(f"-o/--out {results_file!r} must end in .json or .csv.")
    if pretrained:
        from .pretrained_eval import evaluate_pretrained, write_results

        if overrides or download:
            raise RecipeError("--set and --download do not apply to --pretrained (the published file fixes the "
                              "network; put the dataset in --data-dir).")
        result = evaluate_pretrained(arch, data_dir, tag=tag, input_size=image_size, crop_pct=crop_pct,
                                     interpolation=interpolation, class_map=class_map, batch_size=batch_size,
                                     workers=workers, dataset=data)
        if results_file:
            write_results(result, results_file)
        click.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True) if as_json else "\n".join(result.lines()))
        return
    if tag or crop_pct is not None or interpolation or class_map:
        raise RecipeError("--tag, --crop, --interpolation and --class-map go with --pretrained.")
    from .evaluate import evaluate_weights

    options = dict(parse_assignment(text) for text in overrides)
    result = evaluate_weights(arch, weights, data=data or "cifar10", data_dir=data_dir, batch_size=batch_size,
                              image_size=image_size, download=download, workers=workers, overrides=options)
    if results_file or as_json:
        row = {k: v for k, v in vars(result).items()}
        if results_file:
            from .pretrained_eval import write_row

            write_row(row, results_file)
        if as_json:
            click.echo(json.dumps(row, indent=2))
            return
    click.echo(result.line())


COMMANDS: list = [train_cmd, eval_cmd]
