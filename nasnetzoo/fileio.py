"""Atomic file writes: a temporary file beside the target, flushed, fsynced, then renamed over it.

A crash or kill at any moment leaves either the previous file or the new one, never a torn file.
The file gets the mode ``open()`` gives (0644 under the usual umask 022), whoever writes it.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable, Union

PathLike = Union[str, Path]


def atomic_write(path: PathLike, writer: Callable[[Any], None]) -> Path:
    """Run ``writer(file)`` on a temporary file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # pid + random part: two processes (or threads) writing the same target never share a temp file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path
