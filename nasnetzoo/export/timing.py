"""Latency measurement: warm-up, then interleaved timed rounds until every median is stable.

Runners measured together (the runtimes of one model at one batch size) take turns, a round of
each at a time and in rotating order, so that a slow drift of the machine (another process, CPU
frequency) falls on all of them alike instead of on whichever ran last: side by side, in one run.
Each sample is the wall time of one call (``time.perf_counter``), which includes handing the
input to the runtime and getting the output back; the garbage collector is off while timing.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class TimingPolicy:
    iters: Optional[int] = None   # exactly this many timed runs per runner (no stability rule)
    warmup: int = 3               # warm-up runs per runner, at least ...
    warmup_time: float = 0.5      # ... and at least this many seconds (at most 50 runs)
    round_size: int = 5           # timed runs per runner per round
    min_iters: int = 15
    max_iters: int = 400
    rtol: float = 0.02            # the median is stable when it moves less than this ...
    stable_rounds: int = 2        # ... over this many consecutive rounds
    max_time: float = 20.0        # seconds of timed rounds for one group of runners, at most

    def __post_init__(self) -> None:
        from ..safe_paths import check_positive_seconds

        check_positive_seconds("--max-time", self.max_time)   # nan or inf would never stop, 0 never time

    def describe(self) -> str:
        warm = f"warm-up: {self.warmup} runs per runtime and at least {self.warmup_time:g} s (at most 50 runs)"
        if self.iters is not None:
            timed = f"then exactly {self.iters} timed runs per runtime"
        else:
            timed = (f"then timed rounds of {self.round_size} runs per runtime, the runtimes taking turns in "
                     f"rotating order, until each median moved < {self.rtol:.0%} over {self.stable_rounds} "
                     f"consecutive rounds (at least {self.min_iters}, at most {self.max_iters} runs, "
                     f"at most {self.max_time:g} s per model and batch; 'stable: no' marks a stop on a limit)")
        return (f"{warm}; {timed}. A run is the wall time of one forward call at the given batch "
                "(time.perf_counter, input handed over and output returned, GC off); latency = median, "
                "p90 = 90th percentile, throughput = batch / median.")


@dataclass
class Timing:
    samples: list = field(default_factory=list)  # seconds
    warmup_runs: int = 0
    stable: bool = False

    @property
    def iters(self) -> int:
        return len(self.samples)

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.samples)

    @property
    def p90_ms(self) -> float:
        return 1e3 * float(np.percentile(self.samples, 90))

    @property
    def mean_ms(self) -> float:
        return 1e3 * statistics.fmean(self.samples)

    @property
    def min_ms(self) -> float:
        return 1e3 * min(self.samples)

    def throughput(self, batch: int) -> float:
        return batch / (self.median_ms / 1e3)


def time_interleaved(runners: dict[str, Callable[[], object]], policy: TimingPolicy = TimingPolicy(),
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """Time every runner (a zero-argument callable) under ``policy``; see the module docstring."""
    names = list(runners)
    results = {n: Timing() for n in names}
    if not names:
        return results
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for name in names:
            fn, t0, runs = runners[name], clock(), 0
            while runs < policy.warmup or (clock() - t0 < policy.warmup_time and runs < 50):
                fn()
                runs += 1
            results[name].warmup_runs = runs
        prev: dict[str, Optional[float]] = {n: None for n in names}
        streak = {n: 0 for n in names}
        start, rnd = clock(), 0
        while True:
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                fn, samples = runners[name], results[name].samples
                n = policy.round_size if policy.iters is None else \
                    min(policy.round_size, policy.iters - len(samples))
                for _ in range(max(n, 0)):
                    t = clock()
                    fn()
                    samples.append(clock() - t)
            rnd += 1
            if policy.iters is not None:
                if all(results[n].iters >= policy.iters for n in names):
                    for n in names:
                        results[n].stable = True  # a fixed count: nothing to converge
                    break
                continue
            for name in names:
                med = statistics.median(results[name].samples)
                p = prev[name]
                moved = abs(med - p) / p if p else float("inf")
                streak[name] = streak[name] + 1 if moved < policy.rtol and \
                    results[name].iters >= policy.min_iters else 0
                prev[name] = med
                # sticky: a runner that settled keeps being sampled (for fairness) but stays settled
                results[name].stable = results[name].stable or streak[name] >= policy.stable_rounds
            if all(results[n].stable for n in names):
                break
            if clock() - start > policy.max_time or all(results[n].iters >= policy.max_iters for n in names):
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return results
