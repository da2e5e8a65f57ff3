"""CPU thread defaults that behave when the cores are shared with other processes.

PyTorch's CPU kernels run on an OpenMP pool (libgomp in the pip wheels) whose threads, by
default, *spin* at every barrier for a while before sleeping.  A supernet step is thousands of
small kernels, each ending in a barrier: when another process takes one of the cores, the
thread that waits spins on the core its partner needs, and a search that should slow by the
share (2x) slowed 16x (issue 14).  ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep at
once; measured with ``benchmarks/search_contention.py`` (see ``docs/search_speed.md``).

libgomp reads the policy once, when PyTorch loads it, so :func:`set_openmp_defaults` must run
before the first ``import torch``: ``nasnetzoo/__init__.py`` calls it first thing.  Values the
user set in the environment are always kept.  :func:`configure_threads` then sets the intra-op
thread count where a recipe asks for one.
"""
from __future__ import annotations

import os
import sys

# The defaults; an explicit environment variable wins over each of them.
OPENMP_DEFAULTS = {
    "OMP_WAIT_POLICY": "PASSIVE",   # libgomp (PyTorch's pip wheels): sleep at barriers, do not spin
    "KMP_BLOCKTIME": "0",           # the same for Intel's OpenMP (conda builds, IPEX)
}


def set_openmp_defaults() -> bool:
    """Put :data:`OPENMP_DEFAULTS` into the environment where unset.  Returns False when torch was
    already imported (the OpenMP runtime has read its settings then: nothing changes for it)."""
    for key, value in OPENMP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return "torch" not in sys.modules


def configure_threads(threads: int = 0) -> int:
    """The OpenMP defaults (if torch is not loaded yet) and ``torch.set_num_threads(threads)`` when
    ``threads > 0``; returns the thread count in use."""
    set_openmp_defaults()
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


__all__ = ["OPENMP_DEFAULTS", "configure_threads", "set_openmp_defaults"]
