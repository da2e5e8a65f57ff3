"""ONNX Runtime sessions: the CPU check of every ONNX export, and the ``ort-cpu``/``ort-cuda``
loaders of the runtime table (``runtimes.RUNTIMES``)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np


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


def _ort_loader(path, threads: Optional[int], cuda: bool):
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    session = ort_session(str(path), providers, threads)
    if cuda and session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError("onnxruntime fell back to the CPU provider")
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def load_ort_cpu(path, threads: Optional[int] = None):
    return _ort_loader(path, threads, cuda=False)


def load_ort_cuda(path, threads: Optional[int] = None):
    return _ort_loader(path, threads, cuda=True)


def ort_runner(onnx_path: str, x: np.ndarray, *, cuda: bool = False,
               threads: Optional[int] = None) -> Callable[[], object]:
    run = _ort_loader(onnx_path, threads, cuda)
    return lambda: run(x)
