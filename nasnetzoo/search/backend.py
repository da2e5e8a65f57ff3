"""Which computation a search supernet runs: the table of backends.

``reference`` is search/supernet.py itself, the papers' and the official code's computation.  A
fast backend gives the forward of a search cell and of an edge (see search/backends/); ``auto``
takes the fused one only where it was measured faster (CPU, fp32, NCHW, no autocast) and the
reference everywhere else, on CUDA included (docs/search_speed.md).  Removing the fast path: delete
search/backends/ and the import and table line below.
"""
from __future__ import annotations

from typing import Optional

from ..errors import ConfigError
from .backends import FusedBackend   # the fast path (search/backends/)

# name -> the class that builds the fast forward (its options are its own); the reference needs none.
FAST_BACKENDS: dict = {"fused": FusedBackend}

BACKEND_NAMES = ("auto", "reference", *FAST_BACKENDS)


def build_backend(name: str, **options) -> Optional[object]:
    """The fast forward for backend ``name`` (None: the reference computation)."""
    if name not in BACKEND_NAMES:
        raise ConfigError(f"unknown search backend {name!r}; use one of {', '.join(BACKEND_NAMES)}.")
    if name == "reference":
        if options:
            raise ConfigError(f"backend 'reference' takes no options, got {', '.join(sorted(options))}.")
        return None
    if name == "auto":
        return FAST_BACKENDS["fused"](auto=True, **options) if "fused" in FAST_BACKENDS else None
    return FAST_BACKENDS[name](**options)
