"""The command line's one vocabulary: the options and arguments every command spells the same way.

Every command takes its output, dataset, input size, batch size, JSON switch and model argument
from here (``tests/test_cli.py`` walks the group and checks it):

* ``-o/--out``: the output, a file or a folder as the command says;
* ``--dataset``, ``--input-size H W``, ``--batch-size N``, ``--json``;
* a positional ``NAME`` (model, alias, genotype name or file), completed from the registry by the
  shell (``eval "$(_NASNETZOO_COMPLETE=bash_source nasnetzoo)"``).

Spellings of earlier releases (``-o/--output-dir``, ``-o/--output``, ``--data``, ``--image-size``,
``--batch``, ``--arch``) still parse, hidden from ``--help``, for one release: ``aliases=`` adds
them to the same option (``AliasedOption``); where the old spelling took another form (eval's
``--image-size N`` against ``--input-size H W``, ``--arch X`` against the positional) it is its
own hidden option feeding the same parameter.
"""
from __future__ import annotations

import functools
from typing import Iterable, Optional

import click

from .bounds import MAX_IMAGE_SIZE



class AliasedOption(click.Option):
    """An option whose ``aliases`` (old spellings) parse like its names but are not shown in --help."""

    def __init__(self, param_decls, aliases: Iterable[str] = (), **attrs):
        self.aliases = tuple(aliases)
        super().__init__(list(param_decls) + list(self.aliases), **attrs)

    @property
    def visible_opts(self) -> list[str]:
        return [o for o in self.opts + self.secondary_opts if o not in self.aliases]

    def get_help_record(self, ctx):
        saved = self.opts
        self.opts = [o for o in saved if o not in self.aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = saved


def visible_opts(param: click.Parameter) -> list[str]:
    """The option names ``--help`` shows (none for a hidden option or an argument)."""
    if not isinstance(param, click.Option) or param.hidden:
        return []
    return param.visible_opts if isinstance(param, AliasedOption) else param.opts + param.secondary_opts


def option(*decls: str, aliases: Iterable[str] = (), **attrs):
    return click.option(*decls, cls=AliasedOption, aliases=tuple(aliases), **attrs)


def out_option(dest: str = "out", *, aliases: Iterable[str] = (), **attrs):
    """``-o/--out``: the command's output (its help says file or folder)."""
    return option("-o", "--out", dest, aliases=aliases, **attrs)


def dataset_option(dest: str = "dataset", *, aliases: Iterable[str] = (), **attrs):
    from .registry import DATASETS

    attrs.setdefault("type", click.Choice(list(DATASETS)))
    return option("--dataset", dest, aliases=aliases, **attrs)


def batch_size_option(dest: str = "batch_size", *, aliases: Iterable[str] = ("--batch",), **attrs):
    return option("--batch-size", dest, aliases=aliases, **attrs)


def input_size_option(dest: str = "input_size", **attrs):
    """``--input-size H W`` (a tuple)."""
    attrs.setdefault("type", (click.IntRange(1, MAX_IMAGE_SIZE), click.IntRange(1, MAX_IMAGE_SIZE)))
    attrs.setdefault("metavar", "H W")
    attrs.setdefault("default", None)
    return option("--input-size", dest, **attrs)


def square_input_size_option(dest: str, *, help: str, alias: str = "--image-size"):
    """``--input-size H W`` for a command that takes one side (H must equal W), and the old
    ``--image-size N`` hidden beside it; the command receives the side as an int in ``dest``."""
    def square(ctx, param, value):
        if value is None:
            return None
        h, w = value
        if h != w:
            raise click.BadParameter(f"{h} {w}: this command resizes to a square; pass H equal to W.",
                                     ctx=ctx, param=param)
        return h

    return _with_hidden_alias(input_size_option(dest, callback=square, help=help), dest, alias,
                              type=click.IntRange(1, MAX_IMAGE_SIZE))


def _with_hidden_alias(primary, dest: str, alias: str, *, required: bool = False, what: str = "", **attrs):
    """``primary`` (a decorator adding the parameter ``dest``) plus the hidden option ``alias`` of
    another form; the command receives whichever was given in ``dest``."""
    hidden_dest = f"{dest}_old_spelling"

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            old = kwargs.pop(hidden_dest, None)
            if kwargs.get(dest) is None:
                kwargs[dest] = old
            if required and kwargs[dest] is None:
                raise click.UsageError(f"missing {what}.")
            return fn(*args, **kwargs)
        wrapper = click.option(alias, hidden_dest, hidden=True, default=None, **attrs)(wrapper)
        return primary(wrapper)
    return decorate


def json_option(dest: str = "as_json"):
    return click.option("--json", dest, is_flag=True, help="Print machine-readable JSON.")


# ------------------------------------------------------------------ the model argument
def complete_model_names(ctx, param, incomplete: str):
    """Shell completion: registry names, aliases and published genotypes starting with ``incomplete``."""
    from click.shell_completion import CompletionItem

    from .registry import get_entry, list_genotypes, list_models

    names = []
    for name in list_models():
        names.append(name)
        names.extend(get_entry(name).aliases)
    names.extend(list_genotypes())
    low = incomplete.lower()
    return [CompletionItem(n) for n in dict.fromkeys(names) if n.lower().startswith(low)]


def model_argument(dest: str = "name", *, required: bool = True, alias: Optional[str] = None,
                   metavar: str = "NAME", **attrs):
    """The positional NAME (a model, alias, genotype name or file), completed from the registry.

    ``alias`` (``--arch``) keeps an old option spelling working, hidden: then the positional is
    optional on the parser and its absence is refused here, naming both forms."""
    argument = click.argument(dest, required=required and alias is None, metavar=metavar,
                              shell_complete=complete_model_names, **attrs)
    if alias is None:
        return argument
    return _with_hidden_alias(argument, dest, alias, required=required, shell_complete=complete_model_names,
                              what=f"the model: pass {metavar} (a model, alias or genotype file), e.g. pcdarts_cifar")


def resolve_genotype(name: str):
    """The genotype NAME names: a published genotype or a model by name or alias, else a genotype
    file or search run (``factory.resolve``); ``genotype`` and ``plot`` both resolve this way."""
    from .factory import resolve
    from .registry import get_genotype, is_model_name, list_genotypes

    if name in list_genotypes() or is_model_name(name):
        return get_genotype(name)
    return resolve(name).genotype
