"""The runtimes a model is exported to and timed on: one record each, one table.

Export (``--format``), the benchmark (``--runtime``), the mobile report and the CLI help all read
``RUNTIMES``; nothing else lists runtimes.  A record says:

* ``name``: what ``--runtime`` takes; ``format``: the file it runs (``--format``), None for eager;
* ``extra``: the ``nasnetzoo[...]`` extra that installs it, ``modules``: the imports it needs;
* ``gpu``: whether it needs a GPU;
* ``converter`` and ``options``: ``convert(model, x, path, options, cases)`` writes the file for
  ``model`` traced at input ``x`` (torch) and returns what the conversion says about it (for
  ExecuTorch: the XNNPACK partitions and the ops outside); ``options`` is an instance of the
  record's ``options`` class (``options.py``: ``OnnxOptions``, ``XnnpackOptions``, ``NoOptions``),
  ``preset`` the fields this runtime fixes (TensorRT: ``trt=True``);
* ``load(path, threads)``: a function ``numpy input -> numpy logits`` running the written file;
  the file an export writes is checked by the CPU runtime of its format (``checker``);
* ``check``: whether its outputs are held to the fp32 bound of ``checks`` (a TensorRT fp32 engine
  uses TF32 and is held to the fp16 bound instead);
* ``files``: the suffixes of the files written beside the main one (OpenVINO's ``.bin``);
* ``versions``: the distributions whose versions the export report and the benchmark name.

``pipeline.export`` runs any record: convert, check every written file in its runtime, write the
files and the report.  The converters and loaders of the mobile runtimes are in ``mobile.py``,
ONNX Runtime's in ``ort.py``, the ONNX conversion in ``onnx_export.py`` and TensorRT's in
``trt.py``; they are imported only when a record is used, so listing the table imports none of
those packages.  ``ort_session`` and the runners are re-exported here for the callers that time a
module directly.  A new runtime is one record here plus its converter and loader.
"""
from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .artifact import Artifact  # noqa: F401  (what converters return; re-exported)
from .errors import ConfigError, ExportError, MissingDependencyError
from .options import NoOptions, OnnxOptions, XnnpackOptions


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
    converter: str = ""                    # "module:function": (model, x, path, options, cases) -> dict
    options: type = NoOptions              # the converter's options class (options.py)
    preset: tuple = ()                     # (field, value) pairs this runtime fixes in its options
    loader: str = ""                       # "module:function": (path, threads) -> (np.ndarray -> np.ndarray)
    timed: str = ""                        # "module:function": (path, x, threads) -> runner, if not load's
    files: tuple = ()                      # suffixes of the files written beside the main one
    versions: tuple = ()                   # distributions named in the report
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

    def make_options(self, options=None, **fields):
        """This runtime's options: ``options`` checked for its type, or its class built from
        ``fields``, with the record's ``preset`` applied."""
        import dataclasses

        if options is None:
            options = self.options(**fields)
        elif fields:
            options = dataclasses.replace(options, **fields)
        if not isinstance(options, self.options):
            raise ConfigError(f"the {self.name} runtime takes {self.options.__name__}, not "
                              f"{type(options).__name__}.")
        return dataclasses.replace(options, **dict(self.preset)) if self.preset else options

    @property
    def checker(self) -> "Runtime":
        """The CPU runtime that checks an exported file of this record's format."""
        return RUNTIMES[FORMATS[self.format]] if self.format in FORMATS else self

    def convert(self, model, x, path, options=None, cases=None) -> dict:
        if not self.converter:
            raise ExportError(f"the {self.name} runtime runs the PyTorch module itself; there is no file "
                              f"to export (formats: {', '.join(FORMATS)}).")
        self.require()
        return _resolve(self.converter)(model, x, path, self.make_options(options), cases)

    def written_files(self, path: Path) -> list[Path]:
        """The files a program consists of (OpenVINO: the .xml and its .bin)."""
        return [Path(path)] + [Path(path).with_suffix(s) for s in self.files]

    def installed_versions(self) -> dict:
        from importlib import metadata

        out = {}
        for dist in self.versions:
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                out[dist] = None
        return out

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


_ONNX_VERSIONS = ("onnx", "onnxruntime", "onnxslim")

RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("torch", "PyTorch eager (torch.inference_mode)"),
    Runtime("torch-compile", "torch.compile (Inductor; on CPU it needs a C++ compiler), compile time excluded",
            extra_reason=_torch_compile_reason),
    Runtime("ort-cpu", "ONNX Runtime, CPUExecutionProvider, all graph optimizations", format="onnx",
            suffix=".onnx", extra="export", modules=("onnx", "onnxruntime", "onnxslim"),
            converter=".onnx_export:convert_onnx", options=OnnxOptions, loader=".ort:load_ort_cpu",
            versions=_ONNX_VERSIONS),
    Runtime("ort-cuda", "ONNX Runtime, CUDAExecutionProvider (onnxruntime-gpu and a GPU)", format="onnx",
            suffix=".onnx", extra="export-gpu", modules=("onnx", "onnxruntime"), gpu=True,
            converter=".onnx_export:convert_onnx", options=OnnxOptions, loader=".ort:load_ort_cuda",
            versions=_ONNX_VERSIONS + ("onnxruntime-gpu",), extra_reason=_ort_cuda_reason),
    Runtime("tensorrt", "a TensorRT engine built from the TensorRT-ready graph (tensorrt and a GPU)",
            format="onnx", suffix=".trt.onnx", extra="export-gpu", modules=("onnx", "onnxruntime"), gpu=True,
            check="fp16", converter=".onnx_export:convert_onnx", options=OnnxOptions, preset=(("trt", True),),
            loader=".trt:load_engine", timed=".trt:engine_runner", versions=_ONNX_VERSIONS + ("tensorrt",),
            extra_reason=_tensorrt_reason),
    Runtime("executorch", "ExecuTorch with the XNNPACK delegate (fp32), as on a phone", format="executorch",
            suffix=".pte", extra="mobile", modules=("executorch",), converter=".mobile:convert_executorch",
            options=XnnpackOptions, loader=".mobile:load_executorch", versions=("executorch",)),
    Runtime("litert", "LiteRT (TF-Lite's successor) interpreter, XNNPACK on CPU, fp32", format="tflite",
            suffix=".tflite", extra="mobile", modules=("litert_torch", "ai_edge_litert"),
            converter=".mobile:convert_litert", options=XnnpackOptions, loader=".mobile:load_litert",
            versions=("litert-torch", "ai-edge-litert")),
    Runtime("openvino", "OpenVINO on the CPU, fp32 inference precision", format="openvino", suffix=".xml",
            extra="mobile", modules=("openvino",), converter=".mobile:convert_openvino",
            loader=".mobile:load_openvino", files=(".bin",), versions=("openvino",)),
)}
GPU_RUNTIMES = tuple(n for n, r in RUNTIMES.items() if r.gpu)
# --format NAME -> the CPU runtime that checks the written file
FORMATS: dict[str, str] = {}


def register(runtime: Runtime) -> Runtime:
    """Add a record to the table (a new runtime is this call plus its converter and loader)."""
    if runtime.name in RUNTIMES:
        raise ConfigError(f"a runtime named {runtime.name!r} is already in the table.")
    RUNTIMES[runtime.name] = runtime
    if runtime.format and not runtime.gpu:
        FORMATS.setdefault(runtime.format, runtime.name)
    return runtime


def unregister(name: str) -> None:
    """Remove a record (tests that register a toy runtime)."""
    runtime = RUNTIMES.pop(name)
    if FORMATS.get(runtime.format) == name:
        del FORMATS[runtime.format]


for _r in list(RUNTIMES.values()):
    if _r.format and not _r.gpu:
        FORMATS.setdefault(_r.format, _r.name)


def all_versions() -> tuple[str, ...]:
    """Every distribution a record names, once (the benchmark's machine description)."""
    return tuple(dict.fromkeys(d for r in RUNTIMES.values() for d in r.versions))


def get_runtime(name: str) -> Runtime:
    return RUNTIMES[parse_runtimes(name)[0]]


def export_runtime(value) -> Runtime:
    """What ``export(model, runtime)`` takes: a record, a format (``onnx``: checked in ort-cpu) or
    the name of a runtime that has a converter (``tensorrt``)."""
    if isinstance(value, Runtime):
        return value
    key = str(value).strip().lower()
    if key not in FORMATS and key in RUNTIMES and RUNTIMES[key].converter:
        return RUNTIMES[key]
    return runtime_for_format(key)


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
