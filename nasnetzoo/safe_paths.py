"""Guards for the names and paths nasnetzoo writes to, and for the numbers users set by environment.

* Names that become paths or URLs (registry tags, hub repo ids, file names) are checked where
  they enter (the registry, the CLI): a ``../`` can never walk a cache write out of the cache.
* No output may overwrite an input (``convert SRC -o SRC``), and nothing is written through a
  link that nasnetzoo did not make (a lock file planted as a symlink would truncate its target).
* Temporary files a killed writer left beside a target are removed on the next run.
* Numeric environment variables are parsed once, with the variable and its range named.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Iterable, Union

from .errors import ConfigError

PathLike = Union[str, Path]

# A file or tag name: no separators, no leading dot (so never "." or ".."), printable ASCII.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$")
# A Hugging Face repo id: owner/name, each part as the hub allows (no "--" or ".." anywhere).
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def check_name(value: object, what: str) -> str:
    """``value`` as a plain name (one path component, no ``..``, no ``/``), else one ConfigError line."""
    text = str(value)
    if not _NAME.match(text) or ".." in text:
        raise ConfigError(f"{what} {text[:80]!r} is not a plain name: use letters, digits and . _ + - only "
                          "(no '/', no '..', not starting with a dot), because it becomes a file name.")
    return text


def check_relative_file(value: object, what: str) -> str:
    """A file name inside a repo (``model.safetensors`` or ``sub/model.safetensors``): every part a plain name."""
    text = str(value)
    parts = text.split("/")
    if not text or text.startswith("/") or "\\" in text or not all(_NAME.match(p) and ".." not in p for p in parts):
        raise ConfigError(f"{what} {text[:80]!r} is not a plain file name inside the repo: use letters, digits "
                          "and . _ + - in each '/'-separated part (no '..', no leading '/' or dot).")
    return text


def check_repo_id(value: object, what: str = "hub repo id") -> str:
    """``owner/name`` as the Hugging Face hub accepts it, else one ConfigError line."""
    text = str(value)
    parts = text.split("/")
    if (len(parts) != 2 or not all(_REPO_PART.match(p) for p in parts) or ".." in text or "--" in text
            or any(p.endswith(".") for p in parts)):
        raise ConfigError(f"{what} {text[:80]!r} is not 'owner/name' (letters, digits and . _ - in each part, "
                          "no '..' or '--'), e.g. 'my-user/darts-v2-cifar10'.")
    return text


# ---------------------------------------------------------------------------- outputs
def refuse_overwriting_inputs(output: PathLike, *inputs: PathLike, what: str = "output") -> None:
    """Refuse an ``output`` that is one of ``inputs`` (same path, link or hard link to it)."""
    out = Path(output)
    for source in inputs:
        source = Path(source)
        same = False
        try:
            same = out.exists() and source.exists() and os.path.samefile(out, source)
        except OSError:
            pass
        if same or out.resolve() == source.resolve():
            raise ConfigError(f"{what} {str(out)!r} is the input file {str(source)!r}: writing it would destroy "
                              "the input; give another output name (-o).")


def refuse_link(path: PathLike, what: str = "file") -> Path:
    """Refuse a ``path`` that is a symlink: nasnetzoo writes only names it made, never through a link."""
    path = Path(path)
    if path.is_symlink():
        raise ConfigError(f"{what} {str(path)!r} is a symbolic link (to {os.readlink(path)!r}); nasnetzoo never "
                          "writes through a link it did not make: remove the link and run again.")
    return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(target: PathLike, suffixes: Iterable[str] = (".tmp", ".part")) -> list[Path]:
    """Delete ``.NAME.PID.*.tmp`` / ``.NAME.PID.part`` beside ``target`` whose writer (PID) is dead.

    Only names of the pattern nasnetzoo's own writers use are touched, and never through a link.
    """
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    prefix = f".{target.name}."
    for item in target.parent.iterdir():
        name = item.name
        if not name.startswith(prefix) or not name.endswith(tuple(suffixes)):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if item.is_symlink() or item.is_file():
            item.unlink()
            removed.append(item)
    return removed


# ---------------------------------------------------------------------------- environment
def env_float(name: str, default: float, low: float, high: float) -> float:
    """The float in environment variable ``name`` (``default`` when unset or empty), finite and
    within ``[low, high]``, else one ConfigError line naming the variable and the range."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{name}={raw[:40]!r} is not a number of seconds from {low:g} to {high:g}; "
                          f"set it in that range or unset it (default {default:g}).")
    return value


def check_positive_seconds(name: str, value: float) -> float:
    """A finite, positive number of seconds (a flag such as ``--max-time``), else one ConfigError line."""
    if value is None:
        return value
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} {value!r} is not a positive, finite number of seconds; give e.g. {name} 20.")
    return value
