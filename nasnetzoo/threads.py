"""CPU threads for the run loops: every core when the machine is quiet, the free ones when it is shared.

PyTorch's CPU kernels run on an OpenMP pool (libgomp in the pip wheels) whose threads spin at every
barrier for a while before they sleep.  A supernet step is thousands of small kernels, each ending
in a barrier, so that spin decides the speed both ways (issue 14, docs/search_speed.md):

* on a quiet machine it is what makes the second thread pay: sleeping at once instead
  (``OMP_WAIT_POLICY=PASSIVE``) made a DARTS search step 2x slower on a 2-core EPYC;
* when another process holds one of the cores, the waiting thread spins on the core its partner
  needs: a search slowed 16x where sharing two cores explains 2x.

So the run loops keep libgomp's default and choose the thread count instead.  A :class:`CoreShare`
reads, between steps and at most every half second, how much CPU time other processes took on this
process's cores (``/proc/stat`` less this process's own time) and runs on the cores they leave
free: all of them on a quiet machine, fewer when others are busy, down to one thread, which has no
barrier to spin at; never more than a cgroup CPU quota (a container's ``--cpus``) allows.  A fixed
count (recipe ``threads: N``, or ``OMP_NUM_THREADS`` in the environment) turns it off, as does a
platform without ``/proc/stat``.  A different thread count
splits some reductions differently, so a run whose count changed is not bit for bit the run at a
fixed count: pin the count where bit-exact reruns matter.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional, Union

import torch

PROC_STAT = Path("/proc/stat")
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The process's thread count before any run changed it: every run that follows the free cores
# starts from it (not from the count a busy machine left the previous run at).
BASE_THREADS = torch.get_num_threads()


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system   # every thread of this process


class CoreShare:
    """The intra-op thread count for the cores other processes leave free; :meth:`update` between steps.

    ``others`` (cores' worth of CPU time other processes took over the last interval) decides it:
    ``threads = round(cores - others)``, between 1 and ``max_threads`` (so more than half a core taken
    by others is where a 2-core machine goes to one thread).  The first count is measured over ``probe``
    seconds at construction, so a run that starts on a busy machine does not spend its first step
    spinning.
    """

    def __init__(self, max_threads: int, *, interval: float = 0.5, probe: float = 0.2,
                 on_change: Optional[Callable[["CoreShare", int], None]] = None,
                 stat_path: Path = PROC_STAT, own_cpu_seconds: Callable[[], float] = _own_cpu_seconds,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_threads, self.interval, self.on_change = max(1, max_threads), interval, on_change
        self.stat_path, self.own_cpu_seconds, self.clock = stat_path, own_cpu_seconds, clock
        self.cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)} if hasattr(os, "sched_getaffinity") else set()
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.others = 0.0
        self.threads = self.max_threads
        torch.set_num_threads(self.threads)
        self._last = self._sample()
        if probe > 0:
            time.sleep(probe)
        self.update(force=True)

    def _sample(self) -> tuple[float, float, float]:
        """(time, seconds the cores were busy in all, seconds this process ran)."""
        busy = 0
        with open(self.stat_path) as stat:
            for line in stat:
                name, *fields = line.split()
                if name in self.cpus:   # user nice system idle iowait irq softirq steal
                    values = [int(v) for v in fields[:8]]
                    busy += sum(values) - values[3] - values[4]
        return self.clock(), busy / self.ticks, self.own_cpu_seconds()

    def update(self, force: bool = False) -> int:
        """Re-read the load when ``interval`` has passed (or ``force``); set and return the thread count."""
        if not force and self.clock() - self._last[0] < self.interval:
            return self.threads
        now = self._sample()
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        self._last = now
        if t1 <= t0:
            return self.threads
        self.others = max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)
        threads = max(1, min(self.max_threads, int(len(self.cpus) - self.others + 0.5)))
        if threads != self.threads:
            previous, self.threads = self.threads, threads
            torch.set_num_threads(threads)   # the calling thread's OpenMP setting: call from the loop
            if self.on_change is not None:
                self.on_change(self, previous)
        return self.threads

    def describe(self, previous: int) -> str:
        """One line for a change of thread count."""
        return (f"threads {previous} -> {self.threads}: other processes use {self.others:.1f} of this "
                f"run's {len(self.cpus)} cores (`threads: N` in the recipe pins the count, for bit-exact reruns)")


def _quota_in(directory: Path) -> Optional[float]:
    """One cgroup directory's CPU limit in CPUs (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None."""
    try:
        if (directory / "cpu.max").exists():
            quota, period = (directory / "cpu.max").read_text().split()[:2]
        else:
            quota = (directory / "cpu.cfs_quota_us").read_text().strip()
            period = (directory / "cpu.cfs_period_us").read_text().strip()
        return None if quota in ("max", "-1") else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def cpu_quota(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> Optional[float]:
    """How many CPUs' worth of time this process may use under its cgroups' quotas (the tightest of
    its cgroups and their parents, v2 or v1), or None where there is none.  A container limited to
    2 CPUs on a 64-core host still sees 64 cores in its affinity, and 64 spinning threads there
    would be throttled most of each period."""
    try:
        entries = [line.split(":", 2) for line in proc_cgroup.read_text().splitlines()]
    except OSError:
        return None
    limits = []
    for _, controllers, path in (e for e in entries if len(e) == 3):
        if controllers == "":   # v2, mounted at the root or beside the v1 hierarchies
            base = root if (root / "cgroup.controllers").exists() else root / "unified"
        elif "cpu" in controllers.split(","):
            base = root / controllers if (root / controllers).is_dir() else root / "cpu"
        else:
            continue
        directory = base / path.lstrip("/")   # the cgroup, then its parents up to the mount
        while True:
            limit = _quota_in(directory)
            if limit is not None:
                limits.append(limit)
            if directory == base or base not in directory.parents:
                break
            directory = directory.parent
    return min(limits) if limits else None


def share_cores(threads: int = 0, device: Union[str, torch.device] = "cpu",
                report: Optional[Callable[[str], None]] = None) -> Optional[CoreShare]:
    """The thread policy of a run loop on ``device``: ``threads > 0`` fixes the count (None returned);
    0 on the CPU follows the free cores with a :class:`CoreShare`, at most as many threads as a
    cgroup CPU quota allows (:func:`cpu_quota`; None where ``OMP_NUM_THREADS`` fixes the count,
    ``/proc/stat`` cannot be read, or the loop runs on a GPU).  ``report`` (a function that writes
    a line), when given, gets the run's first change of thread count."""
    if threads > 0:
        torch.set_num_threads(threads)
        return None
    if (torch.device(device).type != "cpu" or os.environ.get("OMP_NUM_THREADS")
            or not hasattr(os, "sched_getaffinity")):
        return None
    quota = cpu_quota()   # a container's CPU limit caps the count: more threads would only be throttled
    most = BASE_THREADS if quota is None else max(1, min(BASE_THREADS, int(quota)))
    try:
        return CoreShare(most, on_change=report_first_change(report) if report else None)
    except (OSError, ValueError):
        return None


def report_first_change(write: Callable[[str], None]) -> Callable[[CoreShare, int], None]:
    """An ``on_change`` that writes the run's first change of thread count (and no later one: a
    load that comes and goes would repeat it every half second)."""
    reported = False

    def report(share: CoreShare, previous: int) -> None:
        nonlocal reported
        if not reported:
            reported = True
            write(share.describe(previous) + "; later changes are not reported")
    return report


__all__ = ["CoreShare", "cpu_quota", "report_first_change", "share_cores"]
