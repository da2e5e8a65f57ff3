"""The ONNX runtimes' converter (``runtimes.RUNTIMES``: ort-cpu, ort-cuda, tensorrt), run by
``pipeline.export`` and checked there against PyTorch in ONNX Runtime.

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based one.  Checked with
torch 2.14: both exporters give graphs that match PyTorch (tried on PC-DARTS and NASNet-A
mobile), but the dynamo exporter needs the separate ``onnxscript`` package and took 18-19 s per
network where the traced one takes 2-3 s (one CPU thread).  The traced exporter handles every
zoo network (fixed spatial size, TF "SAME" padding as constant ``Pad`` s, strided slices).  Its
deprecation warning and the tracer's "converting a tensor to a Python int" warnings are silenced
on purpose: the spatial size is baked into the graph by design (static shapes; only the batch
can be dynamic).

Checks: ``onnx.checker`` (full, with shape inference) on the exported and the simplified graph
here; then, in the pipeline, every written graph in ONNX Runtime (CPU) against PyTorch on a random
input *different from the one traced* (so a data-dependent branch baked in by the tracer shows
up), under the bounds of ``checks``.  Files are moved into place only once every check passed,
the JSON report last (``files``).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

from ..errors import first_line
from .artifact import Artifact
from .checks import (FP16_NOISE_FACTOR, FP16_RTOL, FP32_ATOL, FP32_NOISE_FACTOR, Case,  # noqa: F401
                     Verification, check_outputs, compare, make_cases, verification_error, verify_onnx)
from .errors import ExportError
from .files import write_staged
from .options import DEFAULT_OPSET, OnnxOptions
from .prepare import (SIZE_MISMATCH_FACTOR, calibrate_batchnorm, prepare_export,  # noqa: F401
                      resolve_input_size, resolve_model, safe_filename)

INPUT_NAME, OUTPUT_NAME = "input", "logits"


# ------------------------------------------------------------------ export
def torch_to_onnx(model, x, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False) -> bytes:
    """The raw export (TorchScript exporter) as bytes; ``model`` must be in eval mode."""
    import torch

    buf = io.BytesIO()
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer + legacy-exporter notices; see the module docstring
        try:
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=int(opset),
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
        except Exception as err:
            first = first_line(err)
            raise ExportError(f"torch.onnx.export failed at opset {opset}: {first}. The default "
                              f"opset is {DEFAULT_OPSET}.") from err
    return buf.getvalue()


def convert_onnx(model, x, path, options: OnnxOptions, cases) -> dict:
    """The ONNX runtimes' converter: ``path`` (``NAME.onnx``, simplified unless ``options.simplify``
    is off) and, with ``fp16``, ``NAME.fp16.onnx``; with ``trt``, ``NAME.trt.onnx`` and
    ``NAME.trt.fp16.onnx`` (see ``nasnetzoo.export.trt``; its engine build compares with ``cases``).

    Each graph passes ``onnx.checker`` (full, with shape inference) here; the pipeline then runs
    every file in ONNX Runtime against PyTorch.  Returns the report's ONNX keys and the artifacts.
    """
    import onnx
    import torch

    path = Path(path)
    stem = path.name[:-len(".onnx")]
    out_dir = path.parent
    raw = onnx.load_from_string(torch_to_onnx(model, x, opset=options.opset, dynamic_batch=options.dynamic_batch))
    onnx.checker.check_model(raw, full_check=True)
    if options.simplify:
        from .onnx_graph import simplify as simplify_graph
        final, simplifier = simplify_graph(raw)
        onnx.checker.check_model(final, full_check=True)
    else:
        final, simplifier = raw, None
    protos = [(Artifact("onnx", path, "fp32"), final)]
    if options.fp16:
        from .onnx_graph import to_fp16
        fp16_model = to_fp16(final)
        onnx.checker.check_model(fp16_model, full_check=True)
        protos.append((Artifact("onnx_fp16", out_dir / f"{stem}.fp16.onnx", "fp16", fp16=True), fp16_model))
    trt_section = None
    if options.trt:
        from .onnx_graph import simplify as simplify_graph
        from .trt import prepare_tensorrt
        # TensorRT-ready means simplified, whatever --no-simplify says about NAME.onnx
        trt_source = final if options.simplify else simplify_graph(raw)[0]
        trt_section, trt_models = prepare_tensorrt(trt_source, name=stem, stem=stem, out_dir=out_dir, cases=cases)
        for key, (trt_path, proto) in trt_models.items():
            fp16 = "fp16" in key
            protos.append((Artifact(key, trt_path, "tensorrt-ready fp16" if fp16 else "tensorrt-ready fp32",
                                    fp16=fp16), proto))
    for artifact, proto in protos:
        _write_staged(artifact.path, proto.SerializeToString())

    from .onnx_graph import describe_io, op_counts
    inputs, outputs = describe_io(final)
    info = {
        "opset": int(options.opset),
        "exporter": f"torch.onnx.export (TorchScript, dynamo=False), torch {torch.__version__}",
        "simplifier": simplifier,
        "inputs": inputs,
        "outputs": outputs,
        "nodes": {"exported": len(raw.graph.node), "simplified": len(final.graph.node) if options.simplify else None},
        "ops": op_counts(final),
        "artifacts": [a for a, _ in protos],
    }
    if trt_section is not None:
        info["tensorrt"] = trt_section
    return info


_write_staged = write_staged  # the converter's writer (the data-loss tests replace it)
