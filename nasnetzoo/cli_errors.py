"""How every command reports a user's mistake: one line (``Error: ...``), a non-zero exit, no traceback.

Its own module so that the command modules of the subpackages can import it while ``nasnetzoo.cli``
imports them.  Besides the library's own errors, three kinds of failure are the user's
circumstances rather than bugs, and are reported the same way: OS errors (a read-only or full
disk, a file or directory in the way), undecodable text files and running out of memory; a missing
optional package is one line naming the extra that installs it.  Any
other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno
import functools
import sys
from typing import Optional

import click

from .errors import NasNetZooError, first_line, os_error_line


# the optional extras a command can need: the top-level module -> the extra that installs it
EXTRAS = {"matplotlib": "plot", "sklearn": "train", "onnx": "export", "onnxruntime": "export",
          "onnxslim": "export", "ray": "ray", "executorch": "mobile", "litert_torch": "mobile",
          "ai_edge_litert": "mobile", "openvino": "mobile"}


def missing_extra_line(err: BaseException) -> Optional[str]:
    """One line naming the extra to install, for an ImportError of an optional package (or None)."""
    seen = err
    while seen is not None:
        if isinstance(seen, ImportError):
            module = (getattr(seen, "name", None) or "").split(".")[0]
            if module in EXTRAS:
                return (f"{module} is not installed; it comes with the {EXTRAS[module]!r} extra: "
                        f"pip install 'nasnetzoo[{EXTRAS[module]}]'")
        seen = seen.__cause__
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    torch = sys.modules.get("torch")  # only if a command already imported it
    if torch is not None and isinstance(err, getattr(torch, "OutOfMemoryError", ())):
        return True
    # PyTorch's CPU allocator raises a RuntimeError for a failed allocation.
    return isinstance(err, RuntimeError) and ("DefaultCPUAllocator" in str(err)
                                              or "can't allocate memory" in str(err))


def _from_worker(err: BaseException) -> Optional[str]:
    """A DataLoader worker's error arrives as "Caught X in DataLoader worker process N" and the
    worker's traceback: the line the user needs is the original message at its end."""
    text = str(err)
    if not text.startswith("Caught ") or "DataLoader worker process" not in text.split("\n", 1)[0]:
        return None
    if not isinstance(err, (NasNetZooError, OSError)):
        return None
    last = [line for line in text.strip().splitlines() if line.strip()][-1].strip()
    name, _, message = last.partition(": ")
    return _one_line(message if message and "Error" in name else last)


def as_user_error(err: BaseException) -> Optional[click.ClickException]:
    """The one-line error for a failure the user can fix, or None for a bug."""
    worker = _from_worker(err)
    if worker:
        return click.ClickException(worker)
    if isinstance(err, NasNetZooError):
        return click.ClickException(str(err))
    if isinstance(err, OSError) and err.errno != errno.EPIPE:  # click handles a closed pipe itself
        return click.ClickException(_one_line(os_error_line(err)))
    if isinstance(err, UnicodeDecodeError):
        return click.ClickException(_one_line(
            f"cannot decode {err.encoding} text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            "save the file as UTF-8."))
    extra = missing_extra_line(err)  # an optional package a command needs: the extra to install
    if extra is not None:
        return click.ClickException(extra)
    if _is_out_of_memory(err):
        return click.ClickException(_one_line(
            f"out of memory ({first_line(err)}); use a smaller batch, image size or model."))
    return None


def user_errors(fn):
    """Turn the failures a user can fix into click's one-line error (see :func:`as_user_error`)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as err:  # noqa: BLE001 - re-raised unless it is the user's
            converted = as_user_error(err)
            if converted is None:
                raise
            raise converted from None
    return wrapper


class _BadValue(click.ClickException):
    exit_code = 2  # click's status for a bad option value


class UserErrorGroup(click.Group):
    """A command group that applies :func:`user_errors` to every command it runs (including any a
    subpackage forgot to decorate), and prints a bad option value (``--batch-size -5``) as one line
    naming the option and the value instead of click's usage text around it."""

    def invoke(self, ctx: click.Context):
        try:
            return user_errors(super().invoke)(ctx)
        except click.BadParameter as err:
            raise _BadValue(_one_line(err.format_message())) from None
