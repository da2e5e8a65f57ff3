"""Writing what the export and benchmark commands produce: atomically, the report last.

An export writes several files (the graph or program, variants, the JSON report that says it was
verified).  They are first written in full to a staging folder inside the output folder; only then
is the old report removed, each file renamed over its target, and the report renamed last.  A
failure before the renames (a full disk, a failed check) leaves the previous export as it was; a
report is never left beside files that it does not describe.  Output folders are checked before
any work starts, so a read-only or file-in-the-way ``-o`` gives one line, not a lost benchmark.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

from ..errors import ConfigError, describe_os_error
from ..fileio import WriteError, atomic_write, save_figure

PathLike = Union[str, Path]


def ensure_output_dir(path: PathLike, what: str = "-o") -> Path:
    """Create ``path`` (and parents) and prove it writable, or raise a one-line ConfigError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a file, not a folder; choose a folder for the output.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".nasnetzoo-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"cannot write to {what} {str(path)!r}: {describe_os_error(err)}.") from None
    return path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def staging(out_dir: PathLike) -> Iterator[Path]:
    """A private folder inside ``out_dir`` to write into; removed afterwards, whatever happens."""
    out_dir = ensure_output_dir(out_dir)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".nasnetzoo-staging-", dir=out_dir))
    except OSError as err:
        raise ConfigError(f"cannot write to -o {str(out_dir)!r}: {describe_os_error(err)}.") from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def commit(staged: dict[Path, Path], report: tuple[Path, Path] | None = None) -> None:
    """Move staged files over their targets (``{staged: target}``), the report ``(staged, target)`` last.

    Renames within one folder are atomic and need no space.  The old report goes first, so that
    between the renames no report vouches for files that it does not describe.
    """
    try:
        if report is not None and report[1].exists():
            report[1].unlink()
        for src, dst in staged.items():
            os.chmod(src, 0o644)
            os.replace(src, dst)
        if report is not None:
            os.chmod(report[0], 0o644)
            os.replace(report[0], report[1])
    except OSError as err:
        raise ConfigError(f"cannot write the export into {str(next(iter(staged.values())).parent)!r}: "
                          f"{describe_os_error(err)}.") from None
    if staged:
        _fsync_dir(next(iter(staged.values())).parent)


def write_staged(path: Path, payload: bytes) -> None:
    """Write into the staging folder; a full disk becomes one line and the old export stays."""
    try:
        with open(path, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise ConfigError(f"cannot write {Path(path).name} into {str(Path(path).parent.parent)!r} "
                          f"({describe_os_error(err)}); the previous export is unchanged.") from None


def write_bytes_atomic(path: PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` through a temporary file beside it and a rename."""
    path = Path(path)
    ensure_output_dir(path.parent, "the folder of")
    try:
        return atomic_write(path, lambda handle: handle.write(payload))
    except WriteError as err:   # its message names the path and the reason
        raise ConfigError(str(err)) from None


def write_text_atomic(path: PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_figure_atomic(fig, path: PathLike, **kwargs) -> Path:
    """``fig.savefig`` rendered in memory, then written atomically to ``path``."""
    path = Path(path)
    ensure_output_dir(path.parent, "the folder of")
    try:
        return save_figure(fig, path, **kwargs)
    except WriteError as err:   # its message names the path and the reason
        raise ConfigError(str(err)) from None
