"""Where children train: in this process, in a local process pool, or as Ray tasks.

All three take a batch of :class:`~.child.ChildJob` and return their results in job order; the
scheduling is the standard library's (``concurrent.futures``) or Ray's, never our own.

* ``local``: one after another in this process (the simplest, and what one GPU wants).
* ``process``: a ``ProcessPoolExecutor`` of ``workers`` spawned processes; each keeps its dataset
  between children, and CPU threads are split between the workers.
* ``ray``: one Ray task per child on a running cluster (``ray_address``) or a local one, asking for
  ``gpus_per_child`` GPUs (default: one when the cluster has GPUs) and ``cpus_per_child`` CPUs.
  Install with ``pip install "nasnetzoo[ray]"``.
"""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Optional, Sequence

from ...errors import NasNetZooError
from .child import ChildJob, ChildResult, train_child

EXECUTORS = ("auto", "local", "process", "ray")


def _with_threads(job: ChildJob, threads: int) -> ChildJob:
    if job.config.threads:
        return job
    return dataclasses.replace(job, config=dataclasses.replace(job.config, threads=max(1, threads)))


class LocalExecutor:
    name = "local"

    def run(self, jobs: Sequence[ChildJob]) -> list[ChildResult]:
        return [train_child(job) for job in jobs]

    def close(self) -> None:
        pass


class ProcessExecutor:
    """A pool of spawned worker processes (spawn: safe with threads, CUDA and every platform)."""

    name = "process"

    def __init__(self, workers: int) -> None:
        self.workers = int(workers)
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)
        self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn"))

    def run(self, jobs: Sequence[ChildJob]) -> list[ChildResult]:
        return list(self.pool.map(train_child, [_with_threads(job, self.threads) for job in jobs]))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """One Ray task per child; connects to ``address`` or starts a local cluster of ``num_cpus``."""

    name = "ray"

    def __init__(self, *, address: str = "", num_cpus: Optional[int] = None, gpus_per_child: Optional[float] = None,
                 cpus_per_child: float = 1.0) -> None:
        try:
            import ray
        except ImportError:
            raise NasNetZooError("executor 'ray' needs Ray: pip install \"nasnetzoo[ray]\" (or set executor: "
                                 "process to train children in a local process pool).") from None
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus, **kwargs)
        if gpus_per_child is None:   # "one GPU per child" wherever the cluster has GPUs
            gpus_per_child = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        self.gpus_per_child, self.cpus_per_child = float(gpus_per_child), float(cpus_per_child)
        self.remote = ray.remote(num_cpus=self.cpus_per_child, num_gpus=self.gpus_per_child)(train_child)

    def run(self, jobs: Sequence[ChildJob]) -> list[ChildResult]:
        threads = max(1, int(self.cpus_per_child))
        return self.ray.get([self.remote.remote(_with_threads(job, threads)) for job in jobs])

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_executor(kind: str = "auto", *, workers: int = 1, ray_address: str = "", ray_num_cpus: int = 0,
                  gpus_per_child: Optional[float] = None, cpus_per_child: float = 1.0):
    """``auto``: Ray when ``ray_address`` is set, a process pool when ``workers > 1``, else local."""
    if kind not in EXECUTORS:
        raise NasNetZooError(f"executor {kind!r} is not one of {', '.join(EXECUTORS)}.")
    if kind == "auto":
        kind = "ray" if ray_address else "process" if workers > 1 else "local"
    if kind == "ray":
        return RayExecutor(address=ray_address, num_cpus=ray_num_cpus or None, gpus_per_child=gpus_per_child,
                           cpus_per_child=cpus_per_child)
    if kind == "process":
        return ProcessExecutor(max(1, workers))
    return LocalExecutor()


__all__ = ["EXECUTORS", "LocalExecutor", "ProcessExecutor", "RayExecutor", "make_executor"]
