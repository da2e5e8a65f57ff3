"""Deployment: ONNX / TensorRT-ready export checked against PyTorch, and latency benchmarks.

    >>> from nasnetzoo.export import export_onnx, benchmark
    >>> export_onnx("pcdarts_imagenet", "out/", trt=True)      # out/pcdarts_imagenet.onnx + .json
    >>> benchmark(["pcdarts_imagenet"], runtimes=["torch", "ort-cpu"], batches=[1])

Needs the optional packages onnx, onnxruntime and onnxslim (plots: matplotlib); nothing here is
imported by ``import nasnetzoo``.
"""
from __future__ import annotations


def export_onnx(model_or_name, output_dir=".", **kwargs):
    """See :func:`nasnetzoo.export.onnx_export.export_onnx`."""
    from .onnx_export import export_onnx as _export_onnx
    return _export_onnx(model_or_name, output_dir, **kwargs)


def export(model_or_name, format="onnx", **kwargs):
    """See :func:`nasnetzoo.export.onnx_export.export`."""
    from .onnx_export import export as _export
    return _export(model_or_name, format, **kwargs)


def benchmark(names, **kwargs):
    """See :func:`nasnetzoo.export.bench.benchmark`."""
    from .bench import benchmark as _benchmark
    return _benchmark(names, **kwargs)


def mobile_report(output_dir="export", **kwargs):
    """See :func:`nasnetzoo.export.report.mobile_report`."""
    from .report import mobile_report as _mobile_report
    return _mobile_report(output_dir, **kwargs)


__all__ = ["benchmark", "export", "export_onnx", "mobile_report"]
