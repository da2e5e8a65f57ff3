"""Trust on use for nasnetzoo's own cached files: a digest written beside each one when it is
made, checked each time it is used.

``<cache>/converted/<key>.safetensors`` gets ``<key>.safetensors.sha256`` (``SHA256 SIZE``).  A
file whose size or sha256 no longer matches, or that has no digest (an older cache, a write killed
between the two files), is not used: it is removed and made again from the verified source.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..fileio import write_text


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def record(path: Path) -> Path:
    """Write ``path``'s sha256 and size beside it (atomically)."""
    from .fetch import file_digest

    write_text(digest_path(path), f"{file_digest(path, 'sha256')} {path.stat().st_size}\n")
    return path


def damage(path: Path) -> Optional[str]:
    """None if ``path`` matches its recorded digest, else what is wrong (in words)."""
    from .fetch import file_digest

    if path.is_symlink() or not path.is_file():
        return "it is missing or not a plain file"
    sidecar = digest_path(path)
    try:
        recorded, size = sidecar.read_text(encoding="ascii").split()
        size = int(size)
    except (OSError, ValueError, UnicodeDecodeError):
        return f"it has no readable digest ({sidecar.name})"
    actual_size = path.stat().st_size
    if actual_size != size:
        return f"its size is {actual_size} bytes, {size} were written"
    actual = file_digest(path, "sha256")
    if actual != recorded:
        return f"its sha256 is {actual}, {recorded} was written"
    return None


def discard(path: Path) -> None:
    for item in (path, digest_path(path)):
        if item.is_symlink() or item.exists():
            item.unlink()
