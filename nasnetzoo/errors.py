"""Exceptions a user can cause. Each message names the bad value and what would be right."""
from __future__ import annotations

import difflib
import errno
from typing import Iterable


class NasNetZooError(Exception):
    """Base class of every error that bad user input can raise; the CLI prints it without a traceback."""


class GenotypeError(NasNetZooError, ValueError):
    """A genotype that cannot be parsed or does not describe a valid cell."""


class UnknownModelError(NasNetZooError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnknownOpError(GenotypeError):
    """An op name that is not in the op registry."""


class ConfigError(NasNetZooError, ValueError):
    """A bad builder argument (dataset, input size, channel count, ...)."""


class CheckpointError(NasNetZooError):
    """A checkpoint (a run's own, or a foreign one to convert) that is missing, unreadable, refused
    because it would build Python objects (nasnetzoo never runs code from a checkpoint), or not
    the kind of checkpoint expected."""


def close_matches(value: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``value`` (case-insensitive), best first."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(value.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def did_you_mean(value: str, candidates: Iterable[str], n: int = 3) -> str:
    """``" Did you mean 'a', 'b'?"`` for the closest candidates, or ``""``: append it to a message."""
    return hint_for(close_matches(value, candidates, n=n))


def hint_for(hits: Iterable[str]) -> str:
    """The did-you-mean sentence for matches found some other way (``""`` when there are none)."""
    hits = list(hits)
    return f" Did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def unpickler_refusal(err: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` refused, from its error: the line naming the global or
    the unsupported operation, without the unpickler's prefix."""
    for line in str(err).splitlines():
        line = line.strip()
        if "GLOBAL" in line or line.startswith(("Unsupported", "WeightsUnpickler error: Unsupported")):
            line = line.replace("WeightsUnpickler error: ", "")
            return line.split(" was not an allowed global")[0].rstrip(".")[:200]
    return first_line(err)[:300]


# What went wrong with a path, and what to do about it, by errno.
_OS_REASONS = {
    errno.ENOSPC: "no space left on the device; free some space or choose another location",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.EACCES: "permission denied; choose a location you may use",
    errno.EPERM: "operation not permitted; choose a location you may use",
    errno.EISDIR: "a directory is in the way; give a file name",
    errno.ENOTDIR: "a file is in the way where a directory is needed; choose another path",
    errno.EEXIST: "a file is in the way; choose another path",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "the name is too long",
}
if hasattr(errno, "EDQUOT"):
    _OS_REASONS[errno.EDQUOT] = "the disk quota is exceeded; free some space or choose another location"


def describe_os_error(err: OSError) -> str:
    """A short reason and fix for an OS error (its path is named by the caller)."""
    return _OS_REASONS.get(err.errno) or (err.strerror or first_line(err)).rstrip(".")


def os_error_line(err: OSError) -> str:
    """One line for an OS error that names the path it concerns."""
    path = err.filename2 if err.filename2 is not None else err.filename  # os.replace: the target
    if path is None:
        return f"{describe_os_error(err)}."
    return f"{str(path)!r}: {describe_os_error(err)}."
