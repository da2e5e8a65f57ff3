"""The envelope every run loop shares: retraining, the gradient search and the NASNet RL search.

A :class:`Run` owns one run directory for the life of a run:

* **ownership**: an ``flock`` on ``RUN/.lock`` keeps a second writer out (the kernel drops it when
  the process dies, so a killed run never blocks the next); ``RUN/run.json`` names the run's kind
  and recipe, and a new run refuses a directory holding another run unless told to overwrite;
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
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch

from ..errors import CheckpointError, NasNetZooError, describe_os_error, first_line
from . import distributed as D
from .checkpoint import atomic_save, atomic_write, load_checkpoint, rng_state, set_rng_state
from .progress import MetricsLog

PathLike = Union[str, Path]
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
# The kinds of run, what a message calls them and the command that resumes them.
KINDS = {"train": ("training run", "train"), "search": ("search", "search"), "nasnet_rl": ("search", "search")}
CHECKPOINTS = {"train": "checkpoints/last.pt", "search": "checkpoint.pt", "nasnet_rl": "controller.pt"}
# Every name a run writes at the top of its directory; --overwrite removes these and nothing else.
ARTIFACTS = ("run.json", "recipe.yaml", "model.json", "genotype.yaml", "metrics.jsonl", "children.jsonl",
             "history.json", "genotypes", "checkpoints", "weights", "checkpoint.pt", "controller.pt",
             "top_k.yaml", "alphas.png", "rewards.png")


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
    """``run.json`` of a run directory; for directories written before it existed, the kind its
    checkpoint file names."""
    try:
        marker = json.loads((path / RUN_FILE).read_text())
        return marker if isinstance(marker, dict) else None
    except (OSError, ValueError):
        pass
    for kind, name in CHECKPOINTS.items():
        if (path / name).is_file():
            return {"kind": kind}
    return None


def check_resumable(path: PathLike, kind: str) -> Path:
    """``path`` holds a run of ``kind`` with a checkpoint (the kind named in the message if not)."""
    path = Path(path)
    marker = read_marker(path) or {}
    other = marker.get("kind")
    if other and other != kind and KINDS[other][1] != KINDS[kind][1]:
        raise RunDirError(f"{path} holds a {KINDS[other][0]}, not a {KINDS[kind][0]}; continue it with "
                          f"`nasnetzoo {KINDS[other][1]} --resume {path}`.")
    if not (path / CHECKPOINTS[kind]).is_file():
        raise RunDirError(f"{path} has no {CHECKPOINTS[kind]} (it stopped before its first checkpoint); start it "
                          "again without --resume.")
    return path


def _is_scratch(name: str) -> bool:
    """A temporary file a killed writer left (atomic writes, pending commits) or the lock."""
    return name == LOCK_FILE or (name.startswith(".") and (name.endswith(".tmp") or ".pending-" in name))


class Run:
    """One run directory, owned from ``with run:`` to its end (see the module docstring)."""

    def __init__(self, kind: str, path: PathLike, *, recipe: Mapping[str, Any], resume: bool = False,
                 overwrite: bool = False, info: Optional[D.DistInfo] = None, logs: Sequence[str] = ("metrics.jsonl",)):
        self.kind, self.path, self.resuming, self.overwrite = kind, Path(path), resume, overwrite
        self.recipe = dict(recipe)
        self.rank, self.world = (info.rank, info.world) if info is not None else (0, 1)
        self.is_main, self.distributed = self.rank == 0, info is not None and info.distributed
        self.checkpoint = self.path / CHECKPOINTS[kind]
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
        return f"nasnetzoo {KINDS[self.kind][1]} --resume {self.path}"

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
            check_resumable(self.path, self.kind)
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
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
        or replace another run when the user asked to overwrite."""
        present = sorted(p.name for p in self.path.iterdir() if not _is_scratch(p.name))
        marker = read_marker(self.path)
        recipe_id = fingerprint(self.recipe)
        same_kind = marker is not None and marker.get("kind") == self.kind
        if present and self.overwrite:
            for name in present:
                if name in ARTIFACTS:
                    target = self.path / name
                    if target.is_dir():
                        import shutil

                        shutil.rmtree(target)
                    else:
                        target.unlink()
        elif present and same_kind and self.checkpoint.is_file():
            raise RunDirError(f"{self.path} already holds a {KINDS[self.kind][0]}; resume it with --resume "
                              f"{self.path}, start it again with --overwrite, or choose another --out.")
        elif present and not (same_kind and marker.get("recipe") == recipe_id):
            if marker is not None:
                what = f"another run ({KINDS[marker['kind']][0]}" + \
                       (f" of recipe {marker['name']!r})" if marker.get("name") else ")")
            else:
                what = "other files (" + ", ".join(present[:4]) + (", ..." if len(present) > 4 else "") + ")"
            raise RunDirError(f"{self.path} holds {what}; choose another --out, or pass --overwrite to replace "
                              "the run there.")
        self.write_text(RUN_FILE, json.dumps({"kind": self.kind, "name": self.recipe.get("name", ""),
                                              "recipe": recipe_id}, indent=1) + "\n")
        for name in self.logs:   # this run's own logs from a start that never reached a checkpoint
            self.logs[name].rewrite([])

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


__all__ = ["ARTIFACTS", "CHECKPOINTS", "NonFiniteLoss", "Run", "RunDirError", "RunInterrupted", "check_finite",
           "check_resumable", "fingerprint", "read_marker", "sigterm_as_interrupt"]
