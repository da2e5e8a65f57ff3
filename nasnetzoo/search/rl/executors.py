"""Where NASNet's children train, shared by every sampled search: see :mod:`nasnetzoo.search.sampled.executors`."""
from __future__ import annotations

from ..sampled.executors import EXECUTORS, LocalExecutor, ProcessExecutor, RayExecutor, make_executor

__all__ = ["EXECUTORS", "LocalExecutor", "ProcessExecutor", "RayExecutor", "make_executor"]
