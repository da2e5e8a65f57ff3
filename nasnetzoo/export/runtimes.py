"""The runtimes a model can be timed on, each with a plain reason when it is not available here.

``torch``          PyTorch eager, ``torch.inference_mode``.
``torch-compile``  ``torch.compile`` (Inductor; on CPU it needs a C++ compiler); compile time excluded.
``ort-cpu``        ONNX Runtime, CPUExecutionProvider, all graph optimizations.
``ort-cuda``       ONNX Runtime, CUDAExecutionProvider (needs onnxruntime-gpu and a GPU).
``tensorrt``       a TensorRT engine built from the TensorRT-ready graph (needs tensorrt and a GPU).

A runner is a zero-argument callable that runs one batch and returns when the result is ready
(GPU runners synchronise), so the timing loop in ``timing.py`` is the same for all of them.
"""
from __future__ import annotations

import shutil
from typing import Callable, Optional, Sequence

import numpy as np

from .errors import ConfigError

RUNTIMES = ("torch", "torch-compile", "ort-cpu", "ort-cuda", "tensorrt")
GPU_RUNTIMES = ("ort-cuda", "tensorrt")
ONNX_RUNTIMES = ("ort-cpu", "ort-cuda", "tensorrt")


def parse_runtimes(value: str | Sequence[str]) -> list[str]:
    names = [v.strip().lower() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if not names:
        raise ConfigError(f"no runtime given; choose from {', '.join(RUNTIMES)}.")
    for name in names:
        if name not in RUNTIMES:
            from ..errors import did_you_mean
            raise ConfigError(f"unknown runtime {name!r}.{did_you_mean(name, RUNTIMES)} "
                              f"Choose from {', '.join(RUNTIMES)} (comma-separated).")
    return list(dict.fromkeys(names))


def unavailable_reason(runtime: str) -> Optional[str]:
    """None when ``runtime`` can run here, else why not (one line, for the report)."""
    if runtime == "torch":
        return None
    if runtime == "torch-compile":
        import torch
        if not hasattr(torch, "compile"):
            return f"torch {torch.__version__} has no torch.compile"
        if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            return "torch.compile (Inductor) on CPU needs a C++ compiler; none on PATH"
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if runtime == "ort-cpu":
        return None
    if runtime == "ort-cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: "
                    f"{', '.join(ort.get_available_providers())}); needs onnxruntime-gpu and a CUDA GPU")
        return None
    if runtime == "tensorrt":
        from .trt import tensorrt_unavailable_reason
        return tensorrt_unavailable_reason()
    raise ConfigError(f"unknown runtime {runtime!r}")


def ort_session(model, providers: Sequence[str] = ("CPUExecutionProvider",), threads: Optional[int] = None):
    """An ONNX Runtime session on ``model`` (path, bytes or ModelProto) with all graph optimizations.

    ``threads`` sets the intra-op pool (inter-op 1, sequential execution), matching
    ``torch.set_num_threads`` for a like-for-like comparison; None keeps ORT's default.
    """
    import onnxruntime as ort

    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # the constant-folding notes on fp16 graphs are not errors
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(model if isinstance(model, (bytes, str)) else str(model), opts,
                                providers=list(providers))


def ort_run(session, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return session.run(None, {name: x})[0]


# ------------------------------------------------------------------ runners
def torch_runner(model, x: np.ndarray) -> Callable[[], object]:
    import torch

    xt = torch.from_numpy(x)

    def run():
        with torch.inference_mode():
            return model(xt)
    return run


def torch_compile_runner(model, x: np.ndarray) -> Callable[[], object]:
    import torch

    compiled = torch.compile(model)
    xt = torch.from_numpy(x)

    def run():
        with torch.inference_mode():
            return compiled(xt)
    run()  # compile now, so that a failure is reported as "skipped" and compile time is not timed
    return run


def ort_runner(onnx_path: str, x: np.ndarray, *, cuda: bool = False,
               threads: Optional[int] = None) -> Callable[[], object]:
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    session = ort_session(onnx_path, providers, threads)
    if cuda and session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError("onnxruntime fell back to the CPU provider")
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)
