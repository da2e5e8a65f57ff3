"""Deployment: ONNX / TensorRT-ready / ExecuTorch / LiteRT / OpenVINO export, each checked against
PyTorch in its own runtime, and latency benchmarks on every runtime of ``runtimes.RUNTIMES``.

    >>> from nasnetzoo.export import export, export_onnx, benchmark
    >>> export_onnx("pcdarts_imagenet", "out/", trt=True)      # out/pcdarts_imagenet.onnx + .json
    >>> export("nasnet_a_mobile", "executorch", output_dir="out/")   # out/nasnet_a_mobile.pte + .json
    >>> benchmark(["pcdarts_imagenet"], runtimes=["torch", "ort-cpu", "executorch"], batches=[1])

Needs the optional packages of the ``export`` extra (onnx, onnxruntime, onnxslim) or the ``mobile``
extra (executorch, litert-torch, ai-edge-litert, openvino); plots need matplotlib.  Nothing here is
imported by ``import nasnetzoo``.
"""
from __future__ import annotations


def export_onnx(model_or_name, output_dir=".", **kwargs):
    """See :func:`nasnetzoo.export.onnx_export.export_onnx`."""
    from .onnx_export import export_onnx as _export_onnx
    return _export_onnx(model_or_name, output_dir, **kwargs)


def export(model_or_name, format="onnx", **kwargs):
    """Export in ``format`` (``runtimes.FORMATS``: onnx, executorch, tflite, openvino), checked in
    its runtime; see :func:`nasnetzoo.export.onnx_export.export_onnx` (``trt=True`` for the
    TensorRT-ready graphs) and :func:`nasnetzoo.export.mobile_export.export_mobile`."""
    from .runtimes import runtime_for_format

    runtime = runtime_for_format(format)
    if runtime.format == "onnx":
        from .onnx_export import export_onnx as _export_onnx
        return _export_onnx(model_or_name, **kwargs)
    from .mobile_export import export_mobile
    return export_mobile(model_or_name, runtime.format, **kwargs)


def benchmark(names, **kwargs):
    """See :func:`nasnetzoo.export.bench.benchmark`."""
    from .bench import benchmark as _benchmark
    return _benchmark(names, **kwargs)


def mobile_report(output_dir="export", **kwargs):
    """See :func:`nasnetzoo.export.report.mobile_report`."""
    from .report import mobile_report as _mobile_report
    return _mobile_report(output_dir, **kwargs)


__all__ = ["benchmark", "export", "export_onnx", "mobile_report"]
