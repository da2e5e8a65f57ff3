"""The ``nasnetzoo`` command line.  It only parses and prints; the work is in library functions.

A user error prints one line (``Error: ...``) and exits non-zero, never a traceback.
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

import click

from ._version import __version__
from .cli_errors import UserErrorGroup, user_errors
from .cli_options import dataset_option, json_option, model_argument, out_option, resolve_genotype
from .text_table import text_table


_user_errors = user_errors  # the subpackages' commands import it from nasnetzoo.cli_errors


def _num(value, fmt: str = "{:g}") -> str:
    return "-" if value is None else fmt.format(value)


def _err(reported: dict) -> str:
    if "top1_err" not in reported:
        return "-"
    text = f"{reported['top1_err']:g}"
    if "top1_err_std" in reported:
        text += f"±{reported['top1_err_std']:g}"
    if "top5_err" in reported:
        text += f" / {reported['top5_err']:g}"
    return text


@click.group(cls=UserErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nasnetzoo")
def cli() -> None:
    """nasnetzoo: NAS-discovered CNNs (NASNet, AmoebaNet, PNASNet, ENAS, DARTS, P-DARTS, PC-DARTS,
    SNAS, GDAS) with their genotypes, reported metrics and builders."""


@cli.command("list")
@click.argument("pattern", required=False)
@click.option("--measure", is_flag=True, help="Build each model and count params/MACs (slower).")
@json_option()
@_user_errors
def list_cmd(pattern: Optional[str], measure: bool, as_json: bool) -> None:
    """List the models, optionally filtered by a shell PATTERN such as '*darts*'.

    Params and MACs are the papers' figures unless --measure is given."""
    from .registry import get_entry, list_models

    names = list_models(pattern)
    if not names:
        raise click.ClickException(f"no model matches {pattern!r}; `nasnetzoo list` shows all models.")
    rows, records = [], []
    for name in names:
        entry = get_entry(name)
        if measure:
            from .factory import load
            from .profile import profile

            prof = profile(load(name))
            params, macs = f"{prof.params_m:.2f}", f"{prof.macs_m:.0f}"
            figures = {"params_m": prof.params_m, "macs_m": prof.macs_m}
        else:
            params, macs = _num(entry.reported.get("params_m")), _num(entry.reported.get("madds_m"))
            figures = {"params_m": entry.reported.get("params_m"), "macs_m": entry.reported.get("madds_m")}
        records.append({"name": name, "aliases": list(entry.aliases), "family": entry.family,
                        "dataset": entry.dataset, "input_size": list(entry.input_size),
                        "figures": "measured" if measure else "reported", **figures,
                        "reported": entry.reported, "weights": bool(entry.has_weights)})
        rows.append([name, entry.family, entry.dataset, "x".join(map(str, entry.input_size[1:])),
                     params, macs, _err(entry.reported), "yes" if entry.has_weights else "no"])
    if as_json:
        click.echo(json.dumps(records, indent=2, default=str))
        return
    kind = "measured" if measure else "reported"
    click.echo(text_table(["name", "family", "dataset", "input", f"params(M,{kind})", f"MACs(M,{kind})",
                       "top-1/top-5 err %", "weights"], rows))


@cli.command()
@model_argument("name")
@dataset_option(help="Build the cell for another dataset (e.g. a CIFAR cell on ImageNet).")
@json_option()
@_user_errors
def info(name: str, dataset: Optional[str], as_json: bool) -> None:
    """Describe NAME (a model, alias or genotype file): genotype, config, measured and reported figures."""
    from .factory import resolve
    from .profile import profile

    from .weights.sources import as_json as weights_json

    spec = resolve(name, dataset=dataset)
    model = spec.build().eval()
    prof = profile(model, spec.data["input_size"])
    cfg = model.pretrained_cfg
    reported, computed = cfg.get("reported", {}), cfg.get("computed", {})
    if as_json:
        click.echo(json.dumps({**cfg, "genotype_spec": spec.genotype.to_dict(), "config": spec.config,
                               "measured": {"params": prof.params, "params_with_aux": prof.params_with_aux,
                                            "macs": prof.macs, "input_size": list(prof.input_size)},
                               "notes": spec.entry.notes if spec.entry else "",
                               "weights": weights_json(spec.entry.name) if spec.entry else []},
                              indent=2, default=str))
        return
    entry = spec.entry
    lines = [f"{spec.name}  ({spec.genotype.family} family, {spec.dataset}, {spec.architecture.name})"]
    if entry is not None and entry.aliases:
        lines.append(f"aliases:   {', '.join(entry.aliases)}")
    lines.append(f"genotype:  {spec.genotype.name or '(custom)'}  {spec.genotype.to_string()}")
    source = spec.genotype.provenance
    if source:
        lines.append(f"source:    {source.get('repo', '')} {source.get('file', '')} {source.get('symbol', '')}".rstrip())
    lines.append("config:    " + ", ".join(f"{k}={v}" for k, v in spec.config.items()))
    lines.append(f"input:     {'x'.join(map(str, cfg['input_size']))}, mean {cfg['mean']}, std {cfg['std']}, "
                 f"crop {cfg['crop_pct']}, {cfg['interpolation']}")
    lines.append("")
    rows = [["params (M)", f"{prof.params_m:.3f}", _num(computed.get("params_m"), "{:.3f}"),
             _num(reported.get("params_m"))],
            ["MACs (M)", f"{prof.macs_m:.1f}", _num(computed.get("madds_m"), "{:.1f}"),
             _num(reported.get("madds_m"))]]
    lines.append(text_table(["", "measured", "reference (official code)", "paper"], rows))
    aux = (f"{prof.params_with_aux / 1e6:.3f}M with it" if prof.params_with_aux != prof.params
           else "not built; load with auxiliary=True for training")
    lines.append(f"(params exclude the auxiliary head ({aux}); MACs are conv + linear "
                 "multiply-accumulates for one image at the input size above)")
    if reported:
        lines.append("")
        lines.append(f"reported:  top-1/top-5 error {_err(reported)} %" +
                     (f", search cost {reported['search_cost_gpu_days']:g} GPU-days"
                      if "search_cost_gpu_days" in reported else ""))
        if "source" in reported:
            lines.append(f"           source: {reported['source']}")
    if entry is not None and entry.notes:
        lines.append(f"notes:     {entry.notes}")
    if entry is not None:
        from .weights.sources import describe

        lines.extend(describe(entry.name))
    click.echo("\n".join(lines))


@cli.command()
@model_argument("name")
@click.option("--format", "fmt", type=click.Choice(["yaml", "string", "json"]), default="yaml",
              show_default=True, help="yaml: the genotypes/ file format; string: the DARTS Genotype(...) form.")
@_user_errors
def genotype(name: str, fmt: str) -> None:
    """Print the genotype of NAME (a model, alias, genotype name or file)."""
    geno = resolve_genotype(name)
    text = {"yaml": geno.to_yaml, "string": geno.to_string,
            "json": lambda: json.dumps(geno.to_dict(), indent=2)}[fmt]()
    click.echo(text.rstrip("\n"))


@cli.command()
@model_argument("name")
@click.option("--cell", type=click.Choice(["normal", "reduce", "both"]), default="normal", show_default=True)
@out_option("output", aliases=("--output",), required=True, type=click.Path(dir_okay=False),
            help="Output file: .svg, .png or .pdf.")
@_user_errors
def plot(name: str, cell: str, output: str) -> None:
    """Draw a cell of NAME (a model, alias, genotype name or file) to the file -o names.

    Needs the 'plot' extra (matplotlib)."""
    geno = resolve_genotype(name)  # a bad name fails before matplotlib is looked for
    from .plot import plot_cell, plot_genotype
    if cell == "both":
        plot_genotype(geno, output)
    else:
        plot_cell(geno, cell, output)
    click.echo(f"wrote {output}")


def _add_subpackage_commands() -> None:
    """The weights, export and training commands live beside their code."""
    from .export.commands import COMMANDS as export_commands
    from .hub.commands import COMMANDS as hub_commands
    from .search.commands import COMMANDS as search_commands
    from .study.commands import COMMANDS as study_commands
    from .train.commands import COMMANDS as train_commands

    for command in (*hub_commands, *export_commands, *train_commands, *search_commands, *study_commands):
        cli.add_command(command)


_add_subpackage_commands()


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(args=argv, prog_name="nasnetzoo")


if __name__ == "__main__":
    main()
