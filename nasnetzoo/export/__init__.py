"""Deployment: ONNX / TensorRT-ready / ExecuTorch / LiteRT / OpenVINO export, each checked against
PyTorch in its own runtime, and latency benchmarks on every runtime of ``runtimes.RUNTIMES``.

    >>> from nasnetzoo.export import OnnxOptions, benchmark, export
    >>> export("pcdarts_imagenet", "onnx", OnnxOptions(trt=True), output_dir="out/")  # .onnx, .trt.onnx, .json
    >>> export("nasnet_a_mobile", "executorch", output_dir="out/")   # out/nasnet_a_mobile.pte + .json
    >>> benchmark(["pcdarts_imagenet"], runtimes=["torch", "ort-cpu", "executorch"], batches=[1])

Needs the optional packages of the ``export`` extra (onnx, onnxruntime, onnxslim) or the ``mobile``
extra (executorch, litert-torch, ai-edge-litert, openvino); plots need matplotlib.  Nothing here is
imported by ``import nasnetzoo``.
"""
from __future__ import annotations


def export_onnx(model_or_name, output_dir=".", **kwargs):
    """``export(model, "onnx", OnnxOptions(...))`` with the options as keywords; see
    :func:`nasnetzoo.export.pipeline.export_onnx`."""
    from .pipeline import export_onnx as _export_onnx
    return _export_onnx(model_or_name, output_dir, **kwargs)


def export(model_or_name, runtime="onnx", options=None, **kwargs):
    """Export for ``runtime`` (a format of ``runtimes.FORMATS``: onnx, executorch, tflite, openvino;
    a runtime with a converter such as tensorrt; or a ``Runtime`` record) with its ``options``
    (``OnnxOptions``...), checked in its runtime: one pipeline for all, see
    :func:`nasnetzoo.export.pipeline.export`.  Returns ``ExportResult(path, files, report, report_path)``."""
    from .pipeline import export as _export
    return _export(model_or_name, runtime, options, **kwargs)


def benchmark(names, **kwargs):
    """See :func:`nasnetzoo.export.bench.benchmark`."""
    from .bench import benchmark as _benchmark
    return _benchmark(names, **kwargs)


def mobile_report(output_dir="export", **kwargs):
    """See :func:`nasnetzoo.export.report.mobile_report`."""
    from .report import mobile_report as _mobile_report
    return _mobile_report(output_dir, **kwargs)


from .options import NoOptions, OnnxOptions, XnnpackOptions  # noqa: E402  (light: no runtime imported)

__all__ = ["NoOptions", "OnnxOptions", "XnnpackOptions", "benchmark", "export", "export_onnx", "mobile_report"]
