"""Click commands of this subpackage; nasnetzoo.cli adds every command listed in COMMANDS.

``convert`` (official checkpoints -> nasnetzoo weights), ``download`` (pre-fetch, verify and
convert published weights) and ``push`` (upload weights with a model card).  They only parse and
print; the work is in ``nasnetzoo.hub.convert``, ``nasnetzoo.weights`` and ``nasnetzoo.hub.card``.
"""
from __future__ import annotations

from typing import Optional

import click

from ..cli_errors import user_errors as _user_errors
from ..cli_options import complete_model_names, dataset_option, model_argument, out_option
from ..errors import NasNetZooError
from .convert import FORMATS


@click.command("convert")
@click.option("--from", "fmt", required=True, type=click.Choice(list(FORMATS)),
              help="Checkpoint format: the official DARTS / PC-DARTS / P-DARTS code, timm, Cadene's "
                   "pretrainedmodels, pytorchcv (osmr's imgclsmob), or NNI's DARTS space.")
@click.argument("src", type=click.Path(dir_okay=False))
@model_argument("arch", alias="--arch")  # NAME: the network the checkpoint holds (registry name or genotype file)
@out_option("output", aliases=("--output",), required=True, type=click.Path(dir_okay=False),
            help="Output weights file (.safetensors).")
@dataset_option(default=None, help="Build the cell's network for this dataset (default: the entry's; CIFAR-100 is "
                "recognised from a 100-class head).")
@click.option("--verify/--no-verify", default=None,
              help="Compare the logits of the source model (timm / Cadene / pytorchcv / NNI code) and the converted one. "
                   "Default: when that code is importable.")
@click.option("--verify-size", type=int, default=None,
              help="Input size for --verify (default: the entry's, e.g. 331 for the large models).")
@_user_errors
def convert(fmt: str, src: str, output: str, arch: str, dataset: Optional[str], verify: Optional[bool],
            verify_size: Optional[int]) -> None:
    """Convert the official checkpoint SRC into a nasnetzoo weights file.

    \b
    Examples:
      nasnetzoo convert --from darts cifar10_model.pt -o darts_v2_cifar.safetensors --arch darts_v2_cifar
      nasnetzoo convert --from pcdarts checkpoint.pth.tar -o pcdarts_in.safetensors --arch pcdarts_imagenet
      nasnetzoo convert --from timm nasnetalarge.pth -o nasnet_a_large.safetensors --arch nasnet_a_large
      nasnetzoo convert --from pytorchcv darts-0775-fc3171c5.pth -o d.safetensors --arch darts_v2_imagenet
      nasnetzoo convert --from nni darts-v2-5465b0d2.pth -o darts_v2_cifar.safetensors --arch darts_v2_cifar

    Checkpoints are read with torch.load(weights_only=True): a pickle that would run code is refused.
    Load the result with nasnetzoo.load(ARCH, weights=OUTPUT).
    """
    from .convert import convert_checkpoint

    result = convert_checkpoint(src, output, fmt=fmt, arch=arch, dataset=dataset, verify=verify,
                                verify_size=verify_size)
    click.echo(result.summary())


@click.command("download")
@click.argument("names", nargs=-1, shell_complete=complete_model_names)
@click.option("--all", "all_models", is_flag=True, help="Every model with published weights.")
@click.option("--tag", default=None, help="The file with this tag (see `nasnetzoo info NAME`); default: the first.")
@dataset_option(default=None, help="The weights for this dataset (when an entry publishes several).")
@click.option("--force", is_flag=True, help="Download and convert again even if cached.")
@_user_errors
def download(names: tuple, all_models: bool, tag: Optional[str], dataset: Optional[str], force: bool) -> None:
    """Pre-fetch, verify and convert the published weights of NAMES for machines without network.

    URL sources land in ~/.cache/nasnetzoo (NASNETZOO_CACHE), hub files in the Hugging Face cache
    (HF_HUB_CACHE or $HF_HOME/hub); copy both to the offline machine: load(NAME, pretrained=True)
    then reads the converted file with no network.
    """
    from ..factory import pretrained_weights
    from ..registry import get_entry
    from ..weights.sources import published, select_source

    if all_models:
        names = tuple(published())
    if not names:
        raise click.UsageError("name a model (see `nasnetzoo list`, column 'weights') or pass --all.")
    failed = []
    for name in names:
        try:
            entry = get_entry(name)  # an unknown name fails here, with the closest names
            source = select_source(entry.name, tag=tag, dataset=dataset)
            path = pretrained_weights(entry.name, tag=source.tag, dataset=dataset, force=force)
        except NasNetZooError as err:
            if len(names) == 1:
                raise
            click.echo(f"{name}: failed: {err}", err=True)  # the others still get fetched
            failed.append(name)
            continue
        label = f"{entry.name} [{source.tag}]" if tag else entry.name
        click.echo(f"{label}: {path} ({source.checksum_kind} verified)")
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(names)} downloads failed: {', '.join(failed)}.")


@click.command("push")
@model_argument("name")
@click.option("--weights", "weights_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="The nasnetzoo weights file (.safetensors, from save_pretrained or convert).")
@click.option("--repo", "repo_id", required=True, help="Hugging Face repo id, owner/name.")
@click.option("--license", "license_", default=None,
              help="License of the weights (default: the one recorded in the file).")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--dry-run", is_flag=True, help="Check the file and print the model card; upload nothing.")
@_user_errors
def push(name: str, weights_path: str, repo_id: str, license_: Optional[str], private: bool,
         dry_run: bool) -> None:
    """Upload weights of NAME to a hub repo with a model card, and print the zoo.yaml entry.

    The file must load strictly into NAME.  Credentials: `hf auth login` or HF_TOKEN.
    """
    from .card import push_weights

    result = push_weights(name, weights_path, repo_id, license=license_, private=private, dry_run=dry_run)
    if dry_run:
        click.echo(result.card)
        return
    click.echo(f"uploaded {result.filename}, config.json and README.md to {repo_id} (revision {result.revision}, "
               f"sha256 {result.sha256})")
    click.echo("add to nasnetzoo/zoo.yaml:")
    click.echo(result.entry_yaml().rstrip("\n"))
    click.echo("and this row to the table in docs/weights.md:")
    click.echo(result.docs_row())


COMMANDS: list = [convert, download, push]
