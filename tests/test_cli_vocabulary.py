"""One CLI vocabulary (issue 30): every command of the group spells its output, dataset, input size,
batch size, JSON switch and model argument the same way, and the old spellings still parse.

Walks ``nasnetzoo.cli.cli`` by click's own introspection, so a new command is checked without
being listed here.
"""
from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from nasnetzoo.cli import cli
from nasnetzoo.cli_options import AliasedOption, complete_model_names, visible_opts

# what a visible option may not be called, and what to call it instead
RETIRED = {"--output-dir": "-o/--out", "--output": "-o/--out", "--batch": "--batch-size",
           "--image-size": "--input-size", "--data": "--dataset", "--arch": "a positional NAME"}
MEANING = {"-o": "--out"}   # a short name means one thing everywhere
JSON_COMMANDS = ("list", "info", "eval", "bench")


def _commands():
    ctx = click.Context(cli)
    return {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}


def test_every_command_uses_the_same_flag_names():
    problems = []
    for name, command in _commands().items():
        for param in command.params:
            shown = visible_opts(param)
            for opt in shown:
                if opt in RETIRED:
                    problems.append(f"{name}: {opt} (use {RETIRED[opt]})")
                if opt in MEANING and MEANING[opt] not in shown:
                    problems.append(f"{name}: {opt} is {'/'.join(shown)}, not {MEANING[opt]}")
            if "--out" in shown and "-o" not in shown:
                problems.append(f"{name}: --out without -o")
            if "--input-size" in shown and param.nargs != 2:
                problems.append(f"{name}: --input-size takes H W")
    assert problems == []


def test_the_old_spellings_parse_and_are_hidden():
    commands = _commands()
    found = set()
    for name, command in commands.items():
        for param in command.params:
            old = set(param.opts) & set(RETIRED)
            if param.name.endswith("_old_spelling"):   # a hidden option of the old form
                assert param.hidden, (name, param.opts)
                found |= old
                continue
            if old:
                assert isinstance(param, AliasedOption) or param.hidden, (name, param.opts)
                found |= old
            record = param.get_help_record(click.Context(command, info_name=name))
            if old and record is not None:
                assert not set(record[0].replace(",", " ").split()) & old, (name, record)
    assert {"--output-dir", "--output", "--batch", "--arch", "--data", "--image-size"} <= found


def test_json_on_list_info_eval_and_bench():
    commands = _commands()
    for name in JSON_COMMANDS:
        assert any("--json" in visible_opts(p) for p in commands[name].params), name
    out = CliRunner().invoke(cli, ["list", "*pcdarts*", "--json"])
    assert out.exit_code == 0, out.output
    records = json.loads(out.output)
    assert {r["name"] for r in records} >= {"pcdarts_cifar", "pcdarts_imagenet"}
    assert all(r["figures"] == "reported" for r in records)


def test_a_model_argument_completes_names():
    commands = _commands()
    for name in ("info", "genotype", "plot", "export", "push", "eval", "train"):
        (arg,) = [p for p in commands[name].params if isinstance(p, click.Argument)]
        items = arg.shell_complete(click.Context(commands[name]), "pcdarts_c")
        assert [i.value for i in items] == ["pcdarts_cifar"], name
    assert "darts_v2" in [i.value for i in complete_model_names(None, None, "darts_v")]


def test_genotype_and_plot_resolve_a_name_the_same_way(tmp_path):
    # a model alias: both commands take it (plot used to resolve it otherwise than genotype)
    run = CliRunner()
    geno = run.invoke(cli, ["genotype", "pcdarts_cifar", "--format", "string"])
    assert geno.exit_code == 0, geno.output
    bad = [run.invoke(cli, [cmd, "pcdartz_cifar", *extra]) for cmd, extra in
           (("genotype", []), ("plot", ["-o", str(tmp_path / "x.svg")]))]
    assert [r.output for r in bad][0] == [r.output for r in bad][1]


def test_the_old_output_spelling_still_writes(tmp_path):
    pytest.importorskip("matplotlib")
    run = CliRunner()
    for flag, path in (("--output", tmp_path / "a.svg"), ("--out", tmp_path / "b.svg"), ("-o", tmp_path / "c.svg")):
        result = run.invoke(cli, ["plot", "pcdarts_cifar", flag, str(path)])
        assert result.exit_code == 0 and path.is_file(), result.output


def _without_matplotlib(monkeypatch):
    import builtins
    import importlib
    import sys

    real_import, real_import_module = builtins.__import__, importlib.import_module

    def refuse(name):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    def no_matplotlib(name, *args, **kwargs):
        refuse(name)
        return real_import(name, *args, **kwargs)

    def no_matplotlib_module(name, *args, **kwargs):
        refuse(name)
        return real_import_module(name, *args, **kwargs)
    for mod in [m for m in sys.modules if m.split(".")[0] == "matplotlib" or m == "nasnetzoo.plot"]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr(importlib, "import_module", no_matplotlib_module)


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path):
    _without_matplotlib(monkeypatch)
    result = CliRunner().invoke(cli, ["plot", "pcdarts_cifar", "-o", str(tmp_path / "x.svg")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'nasnetzoo[plot]'" in lines[0], result.output


def test_a_positional_name_and_the_old_arch_option_reach_the_same_parameter(tmp_path):
    """train NAME and train --arch NAME (0.x) are one parameter: --resume refuses both alike."""
    run = CliRunner()
    new = run.invoke(cli, ["train", "pcdarts_cifar", "--resume", str(tmp_path)])
    old = run.invoke(cli, ["train", "--arch", "pcdarts_cifar", "--resume", str(tmp_path)])
    assert new.exit_code == old.exit_code == 1
    assert new.output == old.output and "--resume RUN continues RUN" in new.output
    missing = run.invoke(cli, ["convert", "--from", "darts", str(tmp_path / "x.pt"), "-o", str(tmp_path / "y")])
    assert missing.exit_code == 2 and "missing the model" in missing.output


def test_eval_takes_the_shared_flags_and_its_old_spellings_alike(tmp_path):
    """eval NAME --dataset --input-size H W --batch-size -o, and eval --arch --data --image-size --batch
    --results-file (0.x), evaluate the same weights to the same figures, each written where it is told."""
    import nasnetzoo

    weights = tmp_path / "w.safetensors"
    nasnetzoo.save_pretrained(nasnetzoo.load("pcdarts_cifar", num_classes=10, C=4, layers=3), weights)
    common = ["--weights", str(weights), "--data-dir", str(tmp_path / "data"), "--workers", "0"]
    run = CliRunner()
    new = run.invoke(cli, ["eval", "pcdarts_cifar", *common, "--dataset", "digits", "--input-size", "8", "8",
                           "--batch-size", "512", "-o", str(tmp_path / "new.json"), "--json"])
    old = run.invoke(cli, ["eval", "--arch", "pcdarts_cifar", *common, "--data", "digits", "--image-size", "8",
                           "--batch", "512", "--results-file", str(tmp_path / "old.json")])
    assert new.exit_code == 0 and old.exit_code == 0, (new.output, old.output)
    printed, written = json.loads(new.output), json.loads((tmp_path / "new.json").read_text())
    assert printed == written == json.loads((tmp_path / "old.json").read_text())
    assert printed["dataset"] == "digits" and printed["count"] > 0
    assert old.output.startswith("pcdarts_cifar on digits (")
    as_csv = run.invoke(cli, ["eval", "pcdarts_cifar", *common, "--dataset", "digits", "-o", str(tmp_path / "r.csv")])
    assert as_csv.exit_code == 0, as_csv.output
    header, values = (tmp_path / "r.csv").read_text().splitlines()
    assert header.split(",")[:3] == ["arch", "dataset", "top1"] and values.startswith("pcdarts_cifar,digits,")
    wrong = run.invoke(cli, ["eval", "pcdarts_cifar", *common, "--dataset", "digits", "-o", str(tmp_path / "r.txt")])
    assert wrong.exit_code == 1 and "must end in .json or .csv" in wrong.output
    not_square = run.invoke(cli, ["eval", "pcdarts_cifar", *common, "--input-size", "8", "16"])
    assert not_square.exit_code == 2 and "pass H equal to W" in not_square.output
    missing = run.invoke(cli, ["eval", *common])
    assert missing.exit_code == 2 and "missing the model" in missing.output


def test_a_figure_left_out_for_want_of_matplotlib_is_one_line_naming_the_plot_extra(monkeypatch, tmp_path):
    """A search (alphas.png) and a benchmark (bench.png) go on without their figure and say so in one
    line; the mobile report, whose figure is part of it, refuses before minutes of timing."""
    from nasnetzoo.fileio import draw_optional

    _without_matplotlib(monkeypatch)
    notes = []

    def draw():
        import matplotlib  # noqa: F401
    assert draw_optional(draw, tmp_path / "alphas.png", notes.append) is False
    assert notes == ["alphas.png not drawn: matplotlib is not installed; it comes with the 'plot' extra: "
                     "pip install 'nasnetzoo[plot]'"]
    with pytest.raises(ZeroDivisionError):   # any other failure is not hidden
        draw_optional(lambda: 1 / 0, tmp_path / "x.png", notes.append)
    tiny = ["epochs=1", "warmup_epochs=0", "max_steps_per_epoch=1", "image_size=8", "C=4", "layers=3", "batch_size=16"]
    result = CliRunner().invoke(cli, ["search", "--recipe", "smoke_search", "-o", str(tmp_path / "run"),
                                      *[a for kv in tiny for a in ("--set", kv)]])
    assert result.exit_code == 0, result.output
    assert "alphas.png not drawn: matplotlib is not installed" in result.output
    assert not (tmp_path / "run" / "alphas.png").exists() and (tmp_path / "run" / "genotype.yaml").is_file()
    report = CliRunner().invoke(cli, ["bench", "--mobile-report", "-o", str(tmp_path / "export")])
    assert report.exit_code == 1
    lines = report.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'nasnetzoo[plot]'" in lines[0], report.output
