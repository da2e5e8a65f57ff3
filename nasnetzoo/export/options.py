"""The typed options a runtime's converter takes (``Runtime.options`` names the class).

Every options class says the batch the file is exported at (``batch_size``) and whether its batch
dimension is left dynamic, so the pipeline draws the traced and checked inputs the same way for
every runtime.  ``validate()`` refuses a contradiction in one line before any work starts.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from ..errors import ConfigError

DEFAULT_OPSET = 17


class Options:
    """What every options class answers."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class NoOptions(Options):
    """A converter without options: batch 1, static shapes."""

    @property
    def batch_size(self) -> int:
        return 1

    @property
    def dynamic_batch(self) -> bool:
        return False

    def validate(self) -> "NoOptions":
        return self


@dataclass(frozen=True)
class XnnpackOptions(NoOptions):
    """The XNNPACK converters (ExecuTorch, LiteRT): ``False`` keeps a rewrite off, for a
    before/after measurement (``benchmarks/nasnet_pool_latency.py``)."""

    split_depthwise: bool = True   # depthwise convolutions above XNNPACK's 25 taps -> row bands
    merge_repeated: bool = True    # ExecuTorch only: merge the exported program's repeated nodes


@dataclass(frozen=True)
class OnnxOptions(Options):
    """ONNX export: opset, a static ``batch`` (default 1) or a ``dynamic_batch``, the checked fp16
    variant, the TensorRT-ready graphs (``trt``) and the onnxslim pass (``simplify``)."""

    opset: int = DEFAULT_OPSET
    batch: Optional[int] = None
    dynamic_batch: bool = False
    fp16: bool = False
    trt: bool = False
    simplify: bool = True

    @property
    def batch_size(self) -> int:
        return 1 if self.batch is None else int(self.batch)

    def validate(self, newest_opset: Optional[int] = None) -> "OnnxOptions":
        if self.dynamic_batch and self.batch is not None:
            raise ConfigError("pass either a fixed batch (--batch-size N) or --dynamic-batch, not both.")
        if self.trt and self.dynamic_batch:
            raise ConfigError("a TensorRT-ready graph has static shapes; export it with --batch-size N (one "
                              "engine per batch size) instead of --dynamic-batch.")
        if self.batch_size < 1:
            raise ConfigError(f"batch {self.batch} is not a positive integer.")
        if newest_opset is None:
            import onnx
            newest_opset = onnx.defs.onnx_opset_version()
        if not 9 <= int(self.opset) <= newest_opset:
            raise ConfigError(f"opset {self.opset} is out of range; use 9-{newest_opset} (default "
                              f"{DEFAULT_OPSET}; TensorRT-ready graphs need at most 17).")
        return self
