"""Where independent jobs run: in this process, in a local process pool, or as Ray tasks.

The one set of executors the pipelines share: NASNet's RL search trains its children with them
(``search/rl/executors.py`` binds them to its child trainer) and a study runs its searches and
retrains with them (``study/``).  Each takes the function ``fn`` to run on a job (a picklable,
module-level function) and returns the results in job order; the scheduling is the standard
library's (``concurrent.futures``) or Ray's, never our own.  ``submit(job)`` starts one job and
returns its ``concurrent.futures.Future``, for pipelines that hand out work as soon as one of the
``slots`` (jobs that run at once) is free.

* ``local``: one after another in this process (the simplest, and what one GPU wants).
* ``process``: a ``ProcessPoolExecutor`` of ``workers`` spawned processes.  CPU threads are split
  between the workers (``prepare(job, threads)`` writes the share into a job); with ``devices``
  (GPU indices) there is one worker per device, each seeing only its own GPU.  On Linux a worker
  receives SIGTERM when the process that started it dies (SIGTERM ends a run at its last
  checkpoint) and then exits, so a killed parent leaves no orphan writing into its run directories.
* ``ray``: one Ray task per job on a running cluster (``ray_address``) or a local one, asking for
  ``gpus_per_child`` GPUs (default: one when the cluster has GPUs) and ``cpus_per_child`` CPUs.
  Install with ``pip install "nasnetzoo[ray]"``.
"""
from __future__ import annotations

import functools
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, Callable, Iterator, Optional, Sequence

from ..errors import NasNetZooError

EXECUTORS = ("auto", "local", "process", "ray")
Prepare = Callable[[Any, int], Any]   # (job, threads) -> the job with its thread share written in


def _as_is(job: Any, threads: int) -> Any:
    return job


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux's PR_SET_PDEATHSIG; elsewhere nothing)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)   # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_PARENT = {"pid": None}   # the process that started this pool worker


def _start_worker(devices) -> None:
    """Pool initializer: die with the parent; take one of the GPUs (before CUDA starts in this process)."""
    _PARENT["pid"] = os.getppid()
    _die_with_parent()
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())


def _guarded(fn: Callable[[Any], Any], job: Any) -> Any:
    """A job in a pool worker.  When the parent died during it (its SIGTERM stopped the job's run at
    a checkpoint), the worker exits instead of waiting for jobs that will never come."""
    try:
        return fn(job)
    finally:
        if _PARENT["pid"] is not None and os.getppid() != _PARENT["pid"]:
            os._exit(1)


class LocalExecutor:
    name = "local"
    slots = 1

    def __init__(self, fn: Callable[[Any], Any], prepare: Prepare = _as_is) -> None:
        self.fn, self.prepare = fn, prepare

    def submit(self, job: Any) -> Future:
        """Runs the job now, in this process; the future is done when it returns."""
        future: Future = Future()
        try:
            future.set_result(self.fn(job))
        except Exception as err:   # delivered by future.result(), as a pool would
            future.set_exception(err)
        return future

    def imap(self, jobs: Sequence[Any]) -> Iterator[Any]:
        """The results one by one, in job order, each as soon as it is there."""
        for job in jobs:
            yield self.fn(job)

    def run(self, jobs: Sequence[Any]) -> list:
        return list(self.imap(jobs))

    def close(self, interrupted: bool = False) -> None:
        pass


class ProcessExecutor:
    """A pool of spawned worker processes (spawn: safe with threads, CUDA and every platform)."""

    name = "process"

    def __init__(self, fn: Callable[[Any], Any], workers: int, prepare: Prepare = _as_is,
                 devices: Sequence[int] = ()) -> None:
        self.fn, self.prepare = fn, prepare
        self.devices = tuple(int(d) for d in devices)
        self.workers = len(self.devices) if self.devices else max(1, int(workers))
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)
        context = get_context("spawn")
        queue = None
        if self.devices:
            queue = context.Queue()
            for device in self.devices:
                queue.put(device)
        self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=_start_worker,
                                        initargs=(queue,))

    @property
    def slots(self) -> int:
        return self.workers

    def submit(self, job: Any) -> Future:
        return self.pool.submit(_guarded, self.fn, self.prepare(job, self.threads))

    def imap(self, jobs: Sequence[Any]) -> Iterator[Any]:
        return self.pool.map(functools.partial(_guarded, self.fn), [self.prepare(job, self.threads) for job in jobs])

    def run(self, jobs: Sequence[Any]) -> list:
        return list(self.imap(jobs))

    def close(self, interrupted: bool = False) -> None:
        """Wait for the workers to end; ``interrupted``: end them first with SIGTERM (each of their runs
        stops at its last checkpoint), rather than waiting for their jobs to finish."""
        if interrupted:
            # The pool has no public way to stop running jobs before Python 3.14 (terminate_workers).
            for process in list(getattr(self.pool, "_processes", {}).values()):
                if process.is_alive():
                    process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """One Ray task per job; connects to ``address`` or starts a local cluster of ``num_cpus``."""

    name = "ray"

    def __init__(self, fn: Callable[[Any], Any], *, prepare: Prepare = _as_is, address: str = "",
                 num_cpus: Optional[int] = None, gpus_per_child: Optional[float] = None,
                 cpus_per_child: float = 1.0) -> None:
        try:
            import ray
        except ImportError:
            raise NasNetZooError("executor 'ray' needs Ray: pip install \"nasnetzoo[ray]\" (or set executor: "
                                 "process to run in a local process pool).") from None
        self.ray, self.prepare = ray, prepare
        self.started_here = not ray.is_initialized()
        if self.started_here:
            kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus, **kwargs)
        if gpus_per_child is None:   # "one GPU per job" wherever the cluster has GPUs
            gpus_per_child = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        self.gpus_per_child, self.cpus_per_child = float(gpus_per_child), float(cpus_per_child)
        self.remote = ray.remote(num_cpus=self.cpus_per_child, num_gpus=self.gpus_per_child)(fn)

    @property
    def slots(self) -> int:
        """How many jobs the cluster runs at once: its GPUs (or CPUs) over what one job asks for."""
        resources = self.ray.cluster_resources()
        if self.gpus_per_child > 0:
            return max(1, int(resources.get("GPU", 0) / self.gpus_per_child))
        return max(1, int(resources.get("CPU", 1) / max(self.cpus_per_child, 1e-9)))

    def submit(self, job: Any) -> Future:
        return self.remote.remote(self.prepare(job, max(1, int(self.cpus_per_child)))).future()

    def imap(self, jobs: Sequence[Any]) -> Iterator[Any]:
        threads = max(1, int(self.cpus_per_child))
        refs = [self.remote.remote(self.prepare(job, threads)) for job in jobs]
        for ref in refs:
            yield self.ray.get(ref)

    def run(self, jobs: Sequence[Any]) -> list:
        return list(self.imap(jobs))

    def close(self, interrupted: bool = False) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_executor(fn: Callable[[Any], Any], kind: str = "auto", *, workers: int = 1, prepare: Prepare = _as_is,
                  devices: Sequence[int] = (), ray_address: str = "", ray_num_cpus: int = 0,
                  gpus_per_child: Optional[float] = None, cpus_per_child: float = 1.0):
    """``auto``: Ray when ``ray_address`` is set, a process pool when ``workers > 1`` (or more than
    one device is given), else local."""
    if kind not in EXECUTORS:
        raise NasNetZooError(f"executor {kind!r} is not one of {', '.join(EXECUTORS)}.")
    if kind == "auto":
        kind = "ray" if ray_address else "process" if workers > 1 or len(devices) > 1 else "local"
    if kind == "ray":
        return RayExecutor(fn, prepare=prepare, address=ray_address, num_cpus=ray_num_cpus or None,
                           gpus_per_child=gpus_per_child, cpus_per_child=cpus_per_child)
    if kind == "process":
        return ProcessExecutor(fn, max(1, workers), prepare=prepare, devices=devices)
    return LocalExecutor(fn, prepare=prepare)


__all__ = ["EXECUTORS", "LocalExecutor", "ProcessExecutor", "RayExecutor", "make_executor"]
