"""Atomic file writes: a temporary file beside the target, flushed, fsynced, then renamed over it.

A crash or kill at any moment leaves either the previous file or the new one, never a torn file.
The file gets the mode ``open()`` gives (0644 under the usual umask 022), whoever writes it.  A
temporary file that a killed writer leaves is named ``.NAME.PID.RANDOM.tmp``, so the run envelope
recognises and removes it.
"""
from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Union

from .errors import NasNetZooError, describe_os_error

PathLike = Union[str, Path]


class WriteError(NasNetZooError, OSError):
    """A file that could not be written (full disk, read-only folder); the message names it."""

    def __str__(self) -> str:
        return str(self.strerror)


def _write_bytes(handle, payload: bytes) -> None:
    """The one place bytes hit the disk (tests replace it to simulate a crash or kill mid-write)."""
    handle.write(payload)


class _Sink:
    """What ``atomic_write``'s writer writes to: every byte goes through :func:`_write_bytes`."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def write(self, payload: bytes) -> int:
        _write_bytes(self.handle, payload)
        return len(payload)


def atomic_write(path: PathLike, writer: Callable[[Any], None]) -> Path:
    """Run ``writer(file)`` on a temporary file beside ``path``, then move it into place."""
    path = Path(path)
    # pid + random part: two processes (or threads) writing the same target never share a temp file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            writer(_Sink(handle))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if isinstance(err, WriteError):
            raise
        raise WriteError(err.errno, f"cannot write {str(path)!r}: {describe_os_error(err)}.") from None
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


def write_text(path: PathLike, text: str) -> Path:
    """``text`` as UTF-8, atomically."""
    payload = text.encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(payload))


def draw_optional(draw: Callable[[], object], path: PathLike, note: Optional[Callable[[str], None]]) -> bool:
    """Draw an optional figure to ``path`` with ``draw()``.  Without matplotlib (the 'plot' extra) it
    is left out and ``note`` (None: nothing) gets one line saying so, naming the extra; any other
    failure is raised."""
    from .cli_errors import missing_extra_line

    try:
        draw()
    except ImportError as err:
        line = missing_extra_line(err)
        if line is None:
            raise
        if note is not None:
            note(f"{Path(path).name} not drawn: {line}")
        return False
    return True


def save_figure(fig, path: PathLike, **savefig_kwargs: Any) -> Path:
    """Render a matplotlib figure in memory (its format from the suffix), then write it atomically."""
    path = Path(path)
    buffer = io.BytesIO()   # matplotlib wants a seekable file; the atomic writer takes bytes
    fig.savefig(buffer, format=path.suffix.lower().lstrip(".") or "png", **savefig_kwargs)
    payload = buffer.getvalue()
    return atomic_write(path, lambda handle: handle.write(payload))
