"""Click commands of this subpackage; nasnetzoo.cli adds every command listed in COMMANDS.

``export`` (ONNX / TensorRT-ready graphs, ExecuTorch, LiteRT and OpenVINO programs, each checked
against PyTorch in its runtime) and ``bench`` (latency on each runtime next to torchvision's mobile
networks; ``--mobile-report`` for the mobile-regime report).  The formats and runtimes offered, and
their help, come from the one table in ``runtimes``.  The commands only parse and print: the work
is in ``onnx_export``, ``trt``, ``mobile``, ``bench`` and ``report``, which import the runtimes'
packages only when a command runs.
"""
from __future__ import annotations

from typing import Optional

import click

from ..cli_errors import user_errors as _user_errors
from ..registry import DATASETS
from .runtimes import FORMATS, RUNTIMES, help_text


def _int_list(value: str, what: str) -> list[int]:
    from ..errors import ConfigError

    try:
        items = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        items = []
    if not items or min(items) < 1:
        raise ConfigError(f"{what} {value!r} is not a comma-separated list of positive integers, e.g. 1,8,32.")
    return items


@click.command("export")
@click.argument("name")
@click.option("--format", "fmt", default="onnx", show_default=True,
              help="Export format: " + ", ".join(f"{f} (checked in {RUNTIMES[r].name}"
                                                  + (f"; extra [{RUNTIMES[r].extra}]" if RUNTIMES[r].extra else "")
                                                  + ")" for f, r in FORMATS.items())
                   + ". TensorRT-ready ONNX graphs with --format onnx --trt.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="A weights file (.safetensors) to load strictly before exporting (default: random init).")
@click.option("--dataset", type=click.Choice(list(DATASETS)), default=None,
              help="Build the cell's network for this dataset (e.g. a CIFAR cell on ImageNet).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset.")
@click.option("--batch", type=int, default=None, help="Static batch size (default 1).")
@click.option("--dynamic-batch", is_flag=True, help="Leave the batch dimension dynamic (spatial size stays static).")
@click.option("--input-size", type=(int, int), default=None, metavar="H W",
              help="Spatial size (default: the entry's, 224x224 ImageNet / 32x32 CIFAR).")
@click.option("--allow-size-mismatch", is_flag=True,
              help="Allow an input size more than 2x the one the network was built for (a CIFAR net at 224).")
@click.option("--fp16", is_flag=True, help="Also write NAME.fp16.onnx (fp16 weights/activations, fp32 I/O), checked.")
@click.option("--trt", is_flag=True,
              help="Also write TensorRT-ready graphs NAME.trt.onnx and NAME.trt.fp16.onnx and the trtexec commands.")
@click.option("--no-simplify", is_flag=True, help="Keep the exporter's graph (no onnxslim pass).")
@click.option("--threads", type=int, default=None, help="The runtime's threads for the numeric check.")
@click.option("-o", "--output-dir", default=".", show_default=True,
              help="Folder for NAME.onnx (.pte, .tflite, .xml + .bin) and the NAME.json report.")
@_user_errors
def export_cmd(name: str, fmt: str, weights: Optional[str], dataset: Optional[str], opset: int,
               batch: Optional[int], dynamic_batch: bool, input_size, allow_size_mismatch: bool, fp16: bool,
               trt: bool, no_simplify: bool, threads: Optional[int], output_dir: str) -> None:
    """Export NAME (a model, alias or genotype file), checked against PyTorch in the format's runtime.

    \b
    Examples:
      nasnetzoo export pcdarts_imagenet --format onnx -o out/
      nasnetzoo export pcdarts_imagenet --weights w.safetensors --trt --batch 1 -o out/
      nasnetzoo export pcdarts_cifar --dynamic-batch -o out/
      nasnetzoo export nasnet_a_mobile --format executorch -o out/   # XNNPACK partitions reported

    The network is exported in eval mode (logits only, no auxiliary head, no drop path) at a static
    spatial size.  The written file, run in its own runtime, must reproduce PyTorch's logits within
    1e-4 (fp32; see NAME.json for the exact bound) or nothing is written and the command fails.
    """
    from . import export
    from ..errors import ConfigError
    from .runtimes import runtime_for_format

    runtime = runtime_for_format(fmt)
    if runtime.format == "onnx":
        result = export(name, "onnx", output_dir=output_dir, weights=weights, dataset=dataset, opset=opset,
                        batch=batch, dynamic_batch=dynamic_batch, input_size=input_size, fp16=fp16, trt=trt,
                        simplify=not no_simplify, allow_size_mismatch=allow_size_mismatch, threads=threads)
    else:
        onnx_only = [opt for opt, used in (("--opset", opset != 17), ("--batch", batch is not None),
                                           ("--dynamic-batch", dynamic_batch), ("--fp16", fp16), ("--trt", trt),
                                           ("--no-simplify", no_simplify)) if used]
        if onnx_only:
            raise ConfigError(f"{', '.join(onnx_only)} apply to --format onnx only; drop them for "
                              f"--format {runtime.format} (a batch-1 fp32 program).")
        result = export(name, runtime.format, output_dir=output_dir, weights=weights, dataset=dataset,
                        input_size=input_size, allow_size_mismatch=allow_size_mismatch, threads=threads)
    click.echo(result.summary())


@click.command("bench")
@click.argument("names", nargs=-1)
@click.option("--runtime", "runtimes", default="torch,ort-cpu", show_default=True,
              help="Comma-separated runtimes: " + help_text() + ". Unavailable ones are reported as "
                   "skipped, with the reason. --mobile-report defaults to every runtime.")
@click.option("--batch", "batches", default="1", show_default=True, help="Comma-separated batch sizes, e.g. 1,8,32.")
@click.option("--threads", type=int, default=None,
              help="Threads for every runtime (torch.set_num_threads, ORT's intra-op pool, XNNPACK's pool, "
                   "LiteRT's and OpenVINO's; default: all cores as torch sees them). 1 = a phone's single "
                   "large core, as the papers timed; --mobile-report defaults to 1.")
@click.option("--iters", type=int, default=None,
              help="Exactly N timed runs per measurement (default: until the median is stable).")
@click.option("--max-time", type=float, default=20.0, show_default=True,
              help="Seconds of timed runs per model and batch at most (adaptive mode).")
@click.option("--input-size", type=(int, int), default=None, metavar="H W",
              help="Spatial size (default: each model's own).")
@click.option("--baselines/--no-baselines", default=True, show_default=True,
              help="Time torchvision's mobilenet_v2, mobilenet_v3_large, shufflenet_v2_x1_0 and resnet18 "
                   "(random weights) on the same runtimes and inputs.")
@click.option("--baseline-models", default=None,
              help="Comma-separated torchvision baselines (default: the four above; --mobile-report: "
                   "mobilenet_v2, mobilenet_v2_1.4, mnasnet1_0, mobilenet_v3_large).")
@click.option("--mobile-report", is_flag=True,
              help="The mobile-regime report: every ImageNet mobile entry at 224 (or --input-size) next to "
                   "the baselines, on every runtime, 1 thread unless --threads; writes "
                   "mobile_report_{cpu|gpu}.md/.png/.json (NAMES are not needed).")
@click.option("-o", "--output-dir", default=None,
              help="Folder for the CSV/JSON/plot (default: bench_results/, or export/ for --mobile-report).")
@_user_errors
def bench_cmd(names, runtimes: str, batches: str, threads: Optional[int], iters: Optional[int],
              max_time: float, input_size, baselines: bool, baseline_models: Optional[str],
              mobile_report: bool, output_dir: Optional[str]) -> None:
    """Time NAMES (models, aliases or genotype files) on each runtime, next to torchvision baselines.

    \b
    Examples:
      nasnetzoo bench pcdarts_imagenet nasnet_a_mobile --runtime torch,ort-cpu --batch 1,8
      nasnetzoo bench --mobile-report -o export/

    Method (printed with the results): warm-up, then the runtimes of one model take turns in timed
    rounds until every median is stable; median, p90 and throughput per runtime.
    """
    from ..errors import ConfigError
    from .bench import BASELINES, benchmark
    from .runtimes import parse_runtimes

    runtime_list = parse_runtimes(runtimes)
    batch_list = _int_list(batches, "--batch")
    if iters is not None and iters < 1:
        raise ConfigError(f"--iters {iters} is not a positive integer.")
    chosen = None
    if baseline_models:
        chosen = [b.strip() for b in baseline_models.split(",") if b.strip()]
    if not baselines:
        chosen = []
    if mobile_report:
        from .report import REPORT_BASELINES, REPORT_RUNTIMES, REPORT_THREADS, mobile_report as make_report

        source = click.get_current_context().get_parameter_source("runtimes")
        if source is not None and source.name == "DEFAULT":
            runtime_list = list(REPORT_RUNTIMES)  # every runtime, so the report says which could not run

        if names:
            raise ConfigError("--mobile-report times the fixed list of ImageNet mobile entries; drop the "
                              f"model names ({', '.join(names)}) or drop --mobile-report.")
        result = make_report(output_dir or "export", runtimes=runtime_list, batches=batch_list,
                             threads=REPORT_THREADS if threads is None else threads, iters=iters,
                             max_time=max_time, input_size=input_size or (224, 224),
                             baselines=REPORT_BASELINES if chosen is None else chosen, echo=click.echo)
        click.echo(result.summary())
        return
    if not names:
        raise ConfigError("name at least one model to benchmark (e.g. nasnetzoo bench pcdarts_imagenet), "
                          "or pass --mobile-report.")
    result = benchmark(list(names), runtimes=runtime_list, batches=batch_list, threads=threads, iters=iters,
                       max_time=max_time, input_size=input_size,
                       baselines=BASELINES if chosen is None else chosen,
                       output_dir=output_dir or "bench_results", echo=click.echo)
    click.echo(result.summary())


COMMANDS: list = [export_cmd, bench_cmd]
