"""Where children train: in this process, in a local process pool, or as Ray tasks.

The executors are the shared ones (``nasnetzoo/runs/executors.py``), bound here to the child
trainer: each takes a batch of :class:`~.child.ChildJob` and returns their results in job order,
or starts one child with ``submit`` (the pipeline's asynchronous dispatch).

* ``local``: one after another in this process (the simplest, and what one GPU wants).
* ``process``: a ``ProcessPoolExecutor`` of ``workers`` spawned processes; each keeps its dataset
  between children, and CPU threads are split between the workers.
* ``ray``: one Ray task per child on a running cluster (``ray_address``) or a local one, asking for
  ``gpus_per_child`` GPUs (default: one when the cluster has GPUs) and ``cpus_per_child`` CPUs.
  Install with ``pip install "nasnetzoo[ray]"``.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from typing import Callable, Optional, Sequence

from ...runs import executors as shared
from ...runs.executors import EXECUTORS
from .child import ChildJob, ChildResult, train_child


def _with_threads(job: ChildJob, threads: int) -> ChildJob:
    if job.config.threads:
        return job
    return dataclasses.replace(job, config=dataclasses.replace(job.config, threads=max(1, threads)))


class LocalExecutor(shared.LocalExecutor):
    def __init__(self) -> None:
        super().__init__(train_child)


class ProcessExecutor(shared.ProcessExecutor):
    def __init__(self, workers: int) -> None:
        super().__init__(train_child, workers, prepare=_with_threads)


class RayExecutor(shared.RayExecutor):
    def __init__(self, **kwargs) -> None:
        super().__init__(train_child, prepare=_with_threads, **kwargs)


class FunctionExecutor:
    """A batch function ``evaluate(jobs) -> results`` (tests, custom rewards) run one child at a time."""

    name = "custom evaluator"
    slots = 1

    def __init__(self, evaluate: Callable[[Sequence[ChildJob]], Sequence[ChildResult]]) -> None:
        self.evaluate = evaluate

    def submit(self, job: ChildJob) -> Future:
        future: Future = Future()
        try:
            (result,) = self.evaluate([job])
            future.set_result(result)
        except Exception as err:
            future.set_exception(err)
        return future

    def close(self, interrupted: bool = False) -> None:
        pass


def make_executor(kind: str = "auto", *, workers: int = 1, ray_address: str = "", ray_num_cpus: int = 0,
                  gpus_per_child: Optional[float] = None, cpus_per_child: float = 1.0):
    """``auto``: Ray when ``ray_address`` is set, a process pool when ``workers > 1``, else local."""
    return shared.make_executor(train_child, kind, workers=workers, prepare=_with_threads, ray_address=ray_address,
                                ray_num_cpus=ray_num_cpus, gpus_per_child=gpus_per_child,
                                cpus_per_child=cpus_per_child)


def executor_for(recipe, evaluate: Optional[Callable[[Sequence[ChildJob]], Sequence[ChildResult]]] = None):
    """The executor a sampled search's recipe asks for (its keys ``executor``, ``workers``,
    ``ray_address``, ``ray_num_cpus``, ``gpus_per_child`` (-1: one per child when the cluster has
    GPUs), ``cpus_per_child``), or ``evaluate(jobs) -> results`` in its place."""
    if evaluate is not None:
        return FunctionExecutor(evaluate)
    return make_executor(recipe.executor, workers=recipe.workers, ray_address=recipe.ray_address,
                         ray_num_cpus=recipe.ray_num_cpus,
                         gpus_per_child=None if recipe.gpus_per_child < 0 else recipe.gpus_per_child,
                         cpus_per_child=recipe.cpus_per_child)


__all__ = ["EXECUTORS", "FunctionExecutor", "LocalExecutor", "ProcessExecutor", "RayExecutor", "executor_for",
           "make_executor"]
