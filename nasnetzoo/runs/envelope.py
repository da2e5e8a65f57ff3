"""The envelope every run loop shares: retraining, the gradient search, the NASNet RL search, yours.

A :class:`Run` owns one run directory for the life of a run:

* **ownership**: an ``flock`` on ``RUN/.lock`` keeps a second writer out (the kernel drops it when
  the process dies, so a killed run never blocks the next; never taken through a link);
  ``RUN/run.json`` names the run's kind, recipe and own files, and a new run refuses a directory
  holding another run unless told to overwrite, which replaces only a directory with ``run.json``
  and removes only the files it names, links as links;
* **kinds**: each pipeline declares its :class:`RunKind` (checkpoint, files, resume command) with
  :func:`register_run_kind`; no table here lists them, and a pipeline from outside the package
  declares its own the same way;
* **resume**: the checkpoint is read with the weights-only reader, every RNG state restored, and
  the logs rewritten from the records the checkpoint carries;
* **commits**: :meth:`Run.save` writes files that the checkpoint refers to (best weights) under
  pending names first, then the checkpoint, then moves them into place; a kill at any moment
  leaves a directory that ``--resume`` restores exactly, and stale temporary files are removed;
* **interrupts**: Ctrl-C and SIGTERM end the run with the command that resumes it; OS errors
  (full disk, read-only folder) end it with one line that names the path.

Each loop keeps only its own state (model, optimizer, strategy, controller) and records.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch

from ..errors import CheckpointError, ConfigError, NasNetZooError, describe_os_error, first_line
from ..recipe_file import RecipeError
from . import distributed as D
from .checkpoint import atomic_save, atomic_write, load_checkpoint, rng_state, set_rng_state
from .progress import MetricsLog

PathLike = Union[str, Path]
RUN_FILE = "run.json"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class RunKind:
    """A kind of run, declared by the pipeline that writes it (:func:`register_run_kind`).

    ``noun`` is what messages call it, ``command`` the ``nasnetzoo`` command that resumes it (empty:
    a library pipeline, resumed with its own ``resume=`` argument), ``checkpoint`` its checkpoint's
    path in the run directory and ``artifacts`` every name it writes at the top of the directory:
    ``--overwrite`` removes these (recorded in ``run.json``) and nothing else."""
    name: str
    noun: str = "run"
    command: str = ""
    checkpoint: str = "checkpoint.pt"
    artifacts: tuple = ()

    def own_files(self, logs: Sequence[str] = ()) -> tuple:
        names = {RUN_FILE, "recipe.yaml", self.checkpoint.split("/")[0], *self.artifacts, *logs}
        return tuple(sorted(names))

    def resume_command(self, path: PathLike) -> str:
        return f"nasnetzoo {self.command} --resume {path}" if self.command else f"its pipeline with resume={path}"


_KINDS: dict[str, RunKind] = {}


def register_run_kind(kind: RunKind) -> RunKind:
    """Declare a kind of run (a pipeline does it once, at import); the same declaration again is a no-op."""
    known = _KINDS.get(kind.name)
    if known is not None and known != kind:
        raise ConfigError(f"a run kind named {kind.name!r} is already registered with other files; pick another "
                          "name.")
    _KINDS[kind.name] = kind
    return kind


def run_kind(kind: Union[str, RunKind]) -> RunKind:
    """The registered kind of that name (an unregistered name: a kind with the default files)."""
    if isinstance(kind, RunKind):
        return kind
    return _KINDS.get(kind) or RunKind(kind)


class RunDirError(CheckpointError):
    """A run directory that is taken, holds another run, or cannot be written."""


class RunInterrupted(NasNetZooError):
    """Ctrl-C or SIGTERM: the run directory holds its last checkpoint and can be resumed."""


class NonFiniteLoss(NasNetZooError):
    """The training loss became NaN or infinite; the last good checkpoint stays."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """``kill`` (SIGTERM) ends the run like Ctrl-C: between two checkpoints, nothing half-written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fingerprint(recipe: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_marker(path: Path) -> Optional[dict]:
    """``run.json`` of a run directory; for directories written before it existed, the registered
    kind whose checkpoint file is there (marked ``legacy``: no ``run.json`` to prove ownership)."""
    try:
        marker = json.loads((path / RUN_FILE).read_text())
        if isinstance(marker, dict) and isinstance(marker.get("kind"), str):
            return marker
    except (OSError, ValueError):
        pass
    for kind in _KINDS.values():
        if (path / kind.checkpoint).is_file():
            return {"kind": kind.name, "legacy": True}
    return None


def _kind_of(marker: Mapping[str, Any]) -> RunKind:
    """The kind a marker names: as registered, else as the marker itself describes it."""
    name = marker["kind"]
    if name in _KINDS:
        return _KINDS[name]
    return RunKind(name, noun=str(marker.get("noun", name)), command=str(marker.get("command", "")),
                   checkpoint=str(marker.get("checkpoint", "checkpoint.pt")),
                   artifacts=tuple(str(a) for a in marker.get("artifacts", ()) if isinstance(a, str)))


def check_resumable(path: PathLike, kind: Union[str, RunKind]) -> Path:
    """``path`` holds a run of ``kind`` with a checkpoint (the kind named in the message if not)."""
    path, kind = Path(path), run_kind(kind)
    marker = read_marker(path)
    if marker is not None and marker["kind"] != kind.name:
        other = _kind_of(marker)
        if other.command != kind.command or not kind.command:
            how = f"`{other.resume_command(path)}`" if other.command else other.resume_command(path)
            raise RunDirError(f"{path} holds a {other.noun}, not a {kind.noun}; continue it with {how}.")
    if not (path / kind.checkpoint).is_file():
        raise RunDirError(f"{path} has no {kind.checkpoint} (it stopped before its first checkpoint); start it "
                          "again without --resume.")
    return path


def check_resume_args(resume: Optional[PathLike], conflicts: Mapping[str, Any], *, cli: bool = True) -> bool:
    """A resume continues a run with its own recipe: nothing else that picks a recipe or a directory.

    ``conflicts`` maps each such option, as the caller spells it (``--recipe`` or ``recipe``), to
    its value; True when this is a resume."""
    if resume is None or resume == "":
        return False
    given = [name for name, value in conflicts.items() if value not in (None, False, "", ())]
    if given:
        what, change = ("--resume RUN", "use --set") if cli else ("resume=RUN", "use overrides")
        raise RecipeError(f"{what} continues RUN with its own recipe.yaml; drop {', '.join(given)} ({change} to "
                          "change a key).")
    return True


def stamped_run_dir(*parts: str) -> Path:
    """A new run's default directory: ``runs/<parts>-<date>-<time>``."""
    import time

    return Path("runs") / "-".join((*parts, time.strftime("%Y%m%d-%H%M%S")))


def run_dir_for(resume: Optional[PathLike], out: Optional[PathLike], default: Callable[[], Path]) -> Path:
    """The directory a run uses: the one it resumes, else ``out``, else its pipeline's default."""
    return Path(resume) if resume is not None else Path(out) if out is not None else default()


def _is_scratch(name: str) -> bool:
    """A temporary file a killed writer left (atomic writes, pending commits) or the lock."""
    return name == LOCK_FILE or (name.startswith(".") and (name.endswith(".tmp") or ".pending-" in name))


class Run:
    """One run directory, owned from ``with run:`` to its end (see the module docstring)."""

    def __init__(self, kind: Union[str, RunKind], path: PathLike, *, recipe: Mapping[str, Any], resume: bool = False,
                 overwrite: bool = False, info: Optional[D.DistInfo] = None, logs: Sequence[str] = ("metrics.jsonl",)):
        self.run_kind = run_kind(kind)
        self.kind, self.path, self.resuming, self.overwrite = self.run_kind.name, Path(path), resume, overwrite
        self.recipe = dict(recipe)
        self.rank, self.world = (info.rank, info.world) if info is not None else (0, 1)
        self.is_main, self.distributed = self.rank == 0, info is not None and info.distributed
        self.checkpoint = self.path / self.run_kind.checkpoint
        self.logs = {name: MetricsLog(self.path / name, enabled=self.is_main) for name in logs}
        self.records: dict[str, list] = {name: [] for name in logs}
        self.position = "its start"   # what the last checkpoint holds, for the interrupt message
        self.commits = 0
        self._lock_fd: Optional[int] = None
        self._sigterm = sigterm_as_interrupt()

    # ------------------------------------------------------------------ entering and leaving
    def __enter__(self) -> "Run":
        error = None
        if self.is_main:
            try:
                self._take()
            except NasNetZooError as err:
                error = str(err)
            except OSError as err:
                error = self._os_message(err)
        if self.distributed:   # every rank fails alike instead of waiting for rank 0
            error = D.broadcast_object(error)
        if error:
            self._release()
            raise RunDirError(error)
        self._sigterm.__enter__()
        return self

    def __exit__(self, kind, err, tb) -> bool:
        self._sigterm.__exit__(None, None, None)
        self._release()
        if kind is KeyboardInterrupt:
            if not self.checkpoint.is_file():
                raise RunInterrupted(f"interrupted before the first checkpoint of {self.path}; start it again "
                                     "(the same command) to run it.") from None
            raise RunInterrupted(f"interrupted after {self.position}; the run directory holds its checkpoint: "
                                 f"continue with `{self.resume_command}`.") from None
        if isinstance(err, OSError):
            raise RunDirError(self._os_message(err)) from None
        return False

    @property
    def resume_command(self) -> str:
        return self.run_kind.resume_command(self.path)

    def _os_message(self, err: OSError) -> str:
        text = str(err) if isinstance(err, NasNetZooError) else \
            f"cannot write {err.filename or self.path}: {describe_os_error(err)}"
        text = text.rstrip(".")
        if err.errno in (errno.EEXIST, errno.ENOTDIR) and not self.path.is_dir():
            return f"--out {self.path} is a file, not a directory; pass a directory path."
        if self.checkpoint.is_file():
            return f"{text}. The run directory keeps its last checkpoint; fix that and continue with `{self.resume_command}`."
        return f"{text}; pick a writable --out."

    def _take(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--out {self.path} is a file, not a directory; pass a directory path.")
        if self.resuming:
            if not self.path.is_dir():
                raise RunDirError(f"{self.path} does not exist; pass the run directory to --resume.")
            check_resumable(self.path, self.run_kind)
        self.path.mkdir(parents=True, exist_ok=True)
        try:   # never through a link: the lock is a file of our own
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
            raise RunDirError(f"{self.path / LOCK_FILE} is a symbolic link, not a lock file nasnetzoo wrote; "
                              "remove it (or choose another --out).") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirError(f"{self.path} is in use by another nasnetzoo process (pid {holder}); wait for it "
                              "to end or choose another --out.") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        if not self.resuming:   # (a resume cleans up in load(), after the moves its checkpoint committed to)
            self._claim()
            self._clean_scratch()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)   # closing drops the flock
            self._lock_fd = None

    def _claim(self) -> None:
        """A new run may use an empty directory, restart its own run that never reached a checkpoint,
        or replace another nasnetzoo run (one with ``run.json``) when the user asked to overwrite."""
        present = sorted(p.name for p in self.path.iterdir() if not _is_scratch(p.name))
        marker = read_marker(self.path)
        recipe_id = fingerprint(self.recipe)
        kind = self.run_kind
        same_kind = marker is not None and marker.get("kind") == self.kind
        if present and self.overwrite:
            self._remove_run(marker, present)
        elif present and same_kind and self.checkpoint.is_file():
            raise RunDirError(f"{self.path} already holds a {kind.noun}; resume it with --resume "
                              f"{self.path}, start it again with --overwrite, or choose another --out.")
        elif present and not (same_kind and marker.get("recipe") == recipe_id):
            if marker is not None:
                what = f"another run ({_kind_of(marker).noun}" + \
                       (f" of recipe {marker['name']!r})" if marker.get("name") else ")")
            else:
                what = "other files (" + ", ".join(present[:4]) + (", ..." if len(present) > 4 else "") + ")"
            raise RunDirError(f"{self.path} holds {what}; choose another --out, or pass --overwrite to replace "
                              "the run there.")
        self.write_text(RUN_FILE, json.dumps({"kind": self.kind, "name": self.recipe.get("name", ""),
                                              "recipe": recipe_id, "noun": kind.noun, "command": kind.command,
                                              "checkpoint": kind.checkpoint,
                                              "artifacts": list(kind.own_files(self.logs))}, indent=1) + "\n")
        for name in self.logs:   # this run's own logs from a start that never reached a checkpoint
            self.logs[name].rewrite([])

    def _remove_run(self, marker: Optional[Mapping[str, Any]], present: Sequence[str]) -> None:
        """``--overwrite``: the files of the run that ``run.json`` names, and nothing else; a link is
        removed as a link, never followed."""
        if marker is None or marker.get("legacy"):
            found = "no nasnetzoo run" if marker is None else "a run from before run.json (no ownership record)"
            raise RunDirError(f"--overwrite replaces a nasnetzoo run, and {self.path} holds {found} ("
                              + ", ".join(present[:4]) + (", ..." if len(present) > 4 else "") + "); remove "
                              "those files yourself or choose another --out.")
        if self.path.is_symlink():
            raise RunDirError(f"--out {self.path} is a symbolic link; --overwrite never removes files through a "
                              "link: pass the directory it points to.")
        owned = set(_kind_of(marker).own_files()) | set(marker.get("artifacts") or ()) | {RUN_FILE}
        for name in present:
            if name not in owned or "/" in name or name in (".", ".."):
                continue
            target = self.path / name
            if stat.S_ISDIR(target.lstat().st_mode):
                shutil.rmtree(target)   # rmtree never follows links inside the tree
            else:
                target.unlink()

    def _clean_scratch(self, promote: Iterable[str] = ()) -> None:
        """Finish the moves the last checkpoint committed to, then drop what killed writers left."""
        for pending, final in promote:
            if (self.path / pending).exists():
                os.replace(self.path / pending, self.path / final)
        for file in self.path.rglob(".*"):
            if file.is_file() and file.name != LOCK_FILE and _is_scratch(file.name):
                file.unlink()

    # ------------------------------------------------------------------ checkpoints
    def load(self, map_location: Union[str, torch.device] = "cpu") -> Optional[dict]:
        """The checkpoint to resume from (None for a new run), with the logs rewritten from it."""
        if not self.resuming:
            return None
        state = load_checkpoint(self.checkpoint, map_location=map_location)
        self.commits = int(state.get("commits", 0))
        if self.is_main:
            self._clean_scratch(state.get("promote", ()))
        for name, records in (state.get("logs") or {}).items():
            if name in self.logs:
                self.records[name] = list(records)
                self.logs[name].rewrite(self.records[name])
        return state

    def restore(self, what: str, apply: Callable[[], None]) -> None:
        """Load a checkpoint part; a mismatch (a --set that changes shapes) is one clear line."""
        try:
            apply()
        except (RuntimeError, KeyError, ValueError, IndexError) as err:
            first = first_line(err)
            raise CheckpointError(f"cannot resume {self.path}: its checkpoint does not fit the {what} built from "
                                  f"the recipe ({first[:200]}); on --resume, --set may change only keys that "
                                  "leave the shapes alone (epochs, lr, ...).") from None

    def restore_rng(self, state: Mapping) -> bool:
        """Every RNG as the checkpoint left it; False when the process count changed."""
        rngs = state.get("rng") or []
        if len(rngs) != self.world:
            return False
        set_rng_state(rngs[self.rank])
        return True

    def log(self, record: Mapping[str, Any], name: str = "metrics.jsonl") -> None:
        """Append a record; the next :meth:`save` carries it, so a resume restores it exactly."""
        self.records[name].append(dict(record))
        self.logs[name].write(record)

    def save(self, state: Mapping[str, Any], position: str, *,
             staged: Optional[Mapping[PathLike, Callable[[Path], Any]]] = None,
             records: Optional[Mapping[str, Sequence[Mapping]]] = None) -> None:
        """Commit: ``staged`` files (``{final path: write(to_path)}``) under pending names, the
        checkpoint (``state`` + RNGs + logs with ``records`` added), then the pending files moved
        into place and the records appended to their logs.  Call on every rank (the RNG states are
        gathered); rank 0 writes."""
        rngs = self._gather_rng()
        for name, new in (records or {}).items():
            self.records[name].extend(dict(r) for r in new)
        if self.is_main:
            self.commits += 1
            moves = []
            for final, write in (staged or {}).items():
                final = Path(final)
                pending = final.with_name(f".{final.name}.pending-{self.commits}")
                write(pending)
                moves.append((str(pending.relative_to(self.path)), str(final.relative_to(self.path))))
            atomic_save({**state, "rng": rngs, "logs": self.records, "promote": moves, "commits": self.commits,
                         "kind": self.kind}, self.checkpoint)
            for pending, final in moves:
                os.replace(self.path / pending, self.path / final)
            for name, new in (records or {}).items():
                for record in new:
                    self.logs[name].write(record)
        self.position = position

    def write_text(self, name: PathLike, text: str) -> Path:
        """A file of the run directory, written atomically (rank 0 only)."""
        if not self.is_main:
            return self.path / name
        return atomic_write(self.path / name, lambda handle: handle.write(text.encode()))

    def _gather_rng(self) -> list:
        state = rng_state()
        if not self.distributed:
            return [state]
        gathered: list = [None] * self.world
        torch.distributed.all_gather_object(gathered, state)
        return gathered


def check_finite(loss: float, where: str, run: Run) -> None:
    """Stop on a NaN or infinite loss before anything built from it is written."""
    if loss == loss and abs(loss) != float("inf"):
        return
    kept = (f"the run directory keeps {run.position}; lower the learning rate (or raise grad_clip) and "
            f"continue with `{run.resume_command} --set lr=...`" if run.checkpoint.is_file()
            else "no checkpoint was written; lower the learning rate (or check the data) and start again")
    raise NonFiniteLoss(f"the training loss became {loss} in {where}; {kept}.")


__all__ = ["NonFiniteLoss", "Run", "RunDirError", "RunInterrupted", "RunKind", "check_finite", "check_resumable",
           "check_resume_args", "fingerprint", "read_marker", "register_run_kind", "run_dir_for", "run_kind", "stamped_run_dir",
           "sigterm_as_interrupt"]
