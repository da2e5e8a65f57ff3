"""The runtimes a model is exported to and timed on: one record each, one table.

Export (``--format``), the benchmark (``--runtime``), the mobile report and the CLI help all read
``RUNTIMES``; nothing else lists runtimes.  A record says:

* ``name``: what ``--runtime`` takes; ``format``: the file it runs (``--format``), None for eager;
* ``extra``: the ``nasnetzoo[...]`` extra that installs it, ``modules``: the imports it needs;
* ``gpu``: whether it needs a GPU;
* ``convert(model, x, path, **options)``: write the file for ``model`` traced at input ``x`` (torch)
  and return what the conversion says about it (for ExecuTorch: the XNNPACK partitions and the ops
  outside); ``options`` go to the converter (``split_depthwise`` for the XNNPACK ones,
  ``merge_repeated`` for ExecuTorch);
* ``load(path, threads)``: a function ``numpy input -> numpy logits`` running the written file;
* ``check``: whether its outputs are held to the fp32 bound of ``checks`` (a TensorRT fp32 engine
  uses TF32 and is held to the fp16 bound instead).

The converters and loaders of the mobile runtimes are in ``mobile.py``, ONNX Runtime's below, the
ONNX conversion in ``onnx_export.py`` and TensorRT's in ``trt.py``; they are imported only when a
record is used, so listing the table imports none of those packages.  ``ort_session`` and the
runners are re-exported here for the callers that time a module directly.
"""
from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .errors import ConfigError, ExportError, MissingDependencyError


@dataclass(frozen=True)
class Runtime:
    name: str
    summary: str
    format: Optional[str] = None           # the export format whose file it runs
    suffix: str = ""                       # that file's suffix
    extra: str = ""                        # pip install "nasnetzoo[EXTRA]"
    modules: tuple = ()                    # what it imports (an absent one makes it unavailable)
    gpu: bool = False
    check: str = "fp32"                    # the bound its outputs are held to ("fp32" | "fp16")
    converter: str = ""                    # "module:function" writing the file: (model, x, path, **opts) -> dict
    loader: str = ""                       # "module:function": (path, threads) -> (np.ndarray -> np.ndarray)
    timed: str = ""                        # "module:function": (path, x, threads) -> runner, if not load's
    extra_reason: Optional[Callable[[], Optional[str]]] = field(default=None, compare=False)

    def unavailable_reason(self) -> Optional[str]:
        """None when this runtime can run here, else why not (one line)."""
        missing = [m for m in self.modules if importlib.util.find_spec(m.split(".")[0]) is None]
        if missing:
            return (f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; "
                    f"pip install -c constraints.txt -e \".[{self.extra}]\"")
        return self.extra_reason() if self.extra_reason else None

    def require(self) -> None:
        reason = self.unavailable_reason()
        if reason is not None:
            raise MissingDependencyError(f"the {self.name} runtime is not available: {reason}.")

    def convert(self, model, x, path, **options) -> dict:
        self.require()
        return _resolve(self.converter)(model, x, path, **options)

    def load(self, path, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
        self.require()
        return _resolve(self.loader)(path, threads)

    def runner(self, path, x: np.ndarray, threads: Optional[int] = None) -> Callable[[], object]:
        """A zero-argument callable running one batch (for ``timing.time_interleaved``)."""
        if self.timed:
            self.require()
            return _resolve(self.timed)(path, x, threads)
        run = self.load(path, threads)
        return lambda: run(x)


def _resolve(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module, __package__), attr)


# ------------------------------------------------------------------ availability beyond imports
def _torch_compile_reason() -> Optional[str]:
    import torch
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "torch.compile (Inductor) on CPU needs a C++ compiler; none on PATH"
    return None


def _ort_cuda_reason() -> Optional[str]:
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: "
                f"{', '.join(ort.get_available_providers())}); needs onnxruntime-gpu and a CUDA GPU")
    return None


def _tensorrt_reason() -> Optional[str]:
    from .trt import tensorrt_unavailable_reason
    return tensorrt_unavailable_reason()


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("torch", "PyTorch eager (torch.inference_mode)"),
    Runtime("torch-compile", "torch.compile (Inductor; on CPU it needs a C++ compiler), compile time excluded",
            extra_reason=_torch_compile_reason),
    Runtime("ort-cpu", "ONNX Runtime, CPUExecutionProvider, all graph optimizations", format="onnx",
            suffix=".onnx", extra="export", modules=("onnx", "onnxruntime", "onnxslim"),
            loader=".ort:load_ort_cpu"),
    Runtime("ort-cuda", "ONNX Runtime, CUDAExecutionProvider (onnxruntime-gpu and a GPU)", format="onnx",
            suffix=".onnx", extra="export-gpu", modules=("onnx", "onnxruntime"), gpu=True,
            loader=".ort:load_ort_cuda", extra_reason=_ort_cuda_reason),
    Runtime("tensorrt", "a TensorRT engine built from the TensorRT-ready graph (tensorrt and a GPU)",
            format="onnx", suffix=".trt.onnx", extra="export-gpu", modules=("onnx", "onnxruntime"), gpu=True,
            check="fp16", loader=".trt:load_engine", timed=".trt:engine_runner", extra_reason=_tensorrt_reason),
    Runtime("executorch", "ExecuTorch with the XNNPACK delegate (fp32), as on a phone", format="executorch",
            suffix=".pte", extra="mobile", modules=("executorch",),
            converter=".mobile:convert_executorch", loader=".mobile:load_executorch"),
    Runtime("litert", "LiteRT (TF-Lite's successor) interpreter, XNNPACK on CPU, fp32", format="tflite",
            suffix=".tflite", extra="mobile", modules=("litert_torch", "ai_edge_litert"),
            converter=".mobile:convert_litert", loader=".mobile:load_litert"),
    Runtime("openvino", "OpenVINO on the CPU, fp32 inference precision", format="openvino", suffix=".xml",
            extra="mobile", modules=("openvino",),
            converter=".mobile:convert_openvino", loader=".mobile:load_openvino"),
)}
GPU_RUNTIMES = tuple(n for n, r in RUNTIMES.items() if r.gpu)
ONNX_RUNTIMES = tuple(n for n, r in RUNTIMES.items() if r.format == "onnx")
MOBILE_RUNTIMES = tuple(n for n, r in RUNTIMES.items() if r.extra == "mobile")
# --format NAME -> the CPU runtime that checks the written file
FORMATS: dict[str, str] = {}
for _r in RUNTIMES.values():
    if _r.format and not _r.gpu:
        FORMATS.setdefault(_r.format, _r.name)


def get_runtime(name: str) -> Runtime:
    return RUNTIMES[parse_runtimes(name)[0]]


def runtime_for_format(fmt: str) -> Runtime:
    """The runtime that checks a ``--format`` export, or a one-line error naming the formats."""
    key = str(fmt).strip().lower()
    if key in FORMATS:
        return RUNTIMES[FORMATS[key]]
    from ..errors import did_you_mean

    hint = " TensorRT engines are built from the ONNX file: use --format onnx --trt." \
        if key in ("trt", "tensorrt", "engine", "plan") else did_you_mean(key, list(FORMATS))
    raise ExportError(f"unsupported export format {fmt!r}; supported: {', '.join(FORMATS)}.{hint}")


def parse_runtimes(value: str | Sequence[str]) -> list[str]:
    names = [v.strip().lower() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if not names:
        raise ConfigError(f"no runtime given; choose from {', '.join(RUNTIMES)}.")
    for name in names:
        if name not in RUNTIMES:
            from ..errors import did_you_mean
            raise ConfigError(f"unknown runtime {name!r}.{did_you_mean(name, list(RUNTIMES))} "
                              f"Choose from {', '.join(RUNTIMES)} (comma-separated).")
    return list(dict.fromkeys(names))


def unavailable_reason(runtime: str) -> Optional[str]:
    """None when ``runtime`` can run here, else why not (one line, for the report)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}")
    return RUNTIMES[runtime].unavailable_reason()


def help_text() -> str:
    """The runtimes for the CLI help: name, what it is, the extra that installs it."""
    return "; ".join(f"{r.name} ({r.summary}" + (f"; extra [{r.extra}]" if r.extra else "") + ")"
                     for r in RUNTIMES.values())


from .ort import ort_run, ort_runner, ort_session  # noqa: E402,F401  (the ONNX Runtime helpers)


# ------------------------------------------------------------------ PyTorch
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
