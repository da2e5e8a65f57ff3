"""The run loops' thread count follows the cores other processes leave free (nasnetzoo/threads.py)."""
from __future__ import annotations

import os

import pytest
import torch

import nasnetzoo.search.runner as search_runner
import nasnetzoo.threads
import nasnetzoo.train.runner as train_runner
from nasnetzoo.threads import BASE_THREADS, CoreShare, cpu_quota, report_first_change, share_cores
from test_search_run import tiny_recipe
from test_train_run import _tiny

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
pytestmark = pytest.mark.skipif(len(CPUS) < 2, reason="needs two cores in this process's affinity")
TICKS = os.sysconf("SC_CLK_TCK")


class FakeMachine:
    """A /proc/stat file and this process's CPU time, advanced by hand (one tick = 1 / SC_CLK_TCK s)."""

    def __init__(self, path, cpus):
        self.path, self.cpus = path, cpus
        self.now, self.own = 100.0, 0.0
        self.busy = {c: 0 for c in cpus}   # busy ticks per cpu
        self.busy["cpu9999"] = 0           # a core outside this process's affinity
        self.write()

    def write(self):
        lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
        for name, busy in self.busy.items():   # user nice system idle iowait irq softirq steal guest guest_nice
            lines.append(f"{name} {busy} 0 0 {10**6 - busy} 0 0 0 0 0 0")
        self.path.write_text("\n".join(lines) + "\nintr 0\n")

    def run(self, seconds, own_cores, other_cores, outside=0.0):
        """``seconds`` pass; this process keeps ``own_cores`` busy, others ``other_cores``, spread evenly."""
        self.now += seconds
        self.own += own_cores * seconds
        per_cpu = (own_cores + other_cores) * seconds * TICKS / len(self.cpus)
        for c in self.cpus:
            self.busy[c] += round(per_cpu)
        self.busy["cpu9999"] += round(outside * seconds * TICKS)
        self.write()

    def share(self, on_change=None):
        return CoreShare(len(self.cpus), probe=0, on_change=on_change, stat_path=self.path,
                         own_cpu_seconds=lambda: self.own, clock=lambda: self.now)


@pytest.fixture
def machine(tmp_path):
    threads = torch.get_num_threads()
    yield FakeMachine(tmp_path / "stat", [f"cpu{i}" for i in CPUS])
    torch.set_num_threads(threads)


def test_every_core_while_the_machine_is_quiet_and_fewer_while_others_use_them(machine):
    share, n = machine.share(), len(machine.cpus)
    machine.run(1.0, own_cores=n, other_cores=0.05)
    assert share.update() == n and share.others == pytest.approx(0.05, abs=0.02)
    machine.run(1.0, own_cores=n - 1, other_cores=1.3)    # a competitor arrives
    assert share.update() == n - 1 and torch.get_num_threads() == n - 1
    machine.run(1.0, own_cores=n - 1, other_cores=0.4)    # less than half a core: not worth a thread
    assert share.update() == n


def test_the_first_change_is_reported_with_the_load_and_how_to_pin_the_count(machine):
    lines = []
    share, n = machine.share(on_change=report_first_change(lines.append)), len(machine.cpus)
    for others in (1.3, 0.0, 1.3):   # down, up, down again
        machine.run(1.0, own_cores=1.0, other_cores=others)
        share.update()
    assert lines == [f"threads {n} -> {n - 1}: other processes use 1.3 of this run's {n} cores (`threads: N` in "
                     "the recipe pins the count, for bit-exact reruns); later changes are not reported"]


def test_the_load_is_reread_only_after_the_interval(machine):
    share, n = machine.share(), len(machine.cpus)
    machine.run(0.2, own_cores=1.0, other_cores=1.6)
    assert share.update() == n and share.others == 0.0    # 0.2 s < 0.5 s: not re-read yet
    machine.run(0.4, own_cores=1.0, other_cores=1.6)
    assert share.update() == max(1, n - 2)                # 0.6 s since the last reading


def test_busy_cores_outside_the_affinity_and_own_time_do_not_count(machine):
    share, n = machine.share(), len(machine.cpus)
    machine.run(1.0, own_cores=n, other_cores=0.0, outside=1.0)
    assert share.update() == n and share.others == pytest.approx(0.0, abs=0.02)


def test_a_fixed_count_or_a_gpu_turns_it_off(monkeypatch):
    monkeypatch.setattr(nasnetzoo.threads, "cpu_quota", lambda: None)   # whatever machine runs the tests
    threads = torch.get_num_threads()
    try:
        assert share_cores(1) is None and torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert share_cores(0, "cuda") is None
        share = share_cores(0)                                # reads the real /proc/stat
        assert isinstance(share, CoreShare)
        torch.set_num_threads(1)                              # as a busy machine left the last run
        assert share_cores(0).max_threads == share.max_threads == BASE_THREADS
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert share_cores(0) is None
    finally:
        torch.set_num_threads(threads)


class CountingShare:
    def __init__(self):
        self.updates = 0

    def update(self):
        self.updates += 1
        return 1


@pytest.mark.parametrize("loop", ["search", "train"])
def test_the_run_loops_reread_the_load_every_step(loop, monkeypatch, tmp_path):
    share = CountingShare()
    runner = search_runner if loop == "search" else train_runner
    monkeypatch.setattr(runner, "share_cores", lambda threads, device, report: share)
    if loop == "search":
        search_runner.search(tiny_recipe("epochs=1", "warmup_epochs=0", "max_steps_per_epoch=2", "threads=0"),
                             out=tmp_path / "run")
    else:
        train_runner.train(_tiny(epochs=1, max_steps_per_epoch=2, threads=0), "pcdarts_cifar", out=tmp_path / "run")
    assert share.updates == 2


def _cgroup(tmp_path, lines, files):
    """A /proc/self/cgroup file and a cgroup tree: ``files`` maps paths under the root to contents."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "proc_cgroup").write_text("\n".join(lines) + "\n")
    for name, text in files.items():
        (tmp_path / "cg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cg" / name).write_text(text)
    return dict(proc_cgroup=tmp_path / "proc_cgroup", root=tmp_path / "cg")


def test_cpu_quotas_of_cgroup_v2_and_v1_the_tightest_on_the_way_up(tmp_path):
    v2 = _cgroup(tmp_path / "a", ["0::/job/step"], {"cgroup.controllers": "cpu", "cpu.max": "max 100000",
                                                     "job/cpu.max": "250000 100000",
                                                     "job/step/cpu.max": "max 100000"})
    assert cpu_quota(**v2) == pytest.approx(2.5)
    v1 = _cgroup(tmp_path / "b", ["4:memory:/x", "2:cpu,cpuacct:/docker/abc", "0::/"],
                 {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000",
                  "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000",
                  "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"})
    assert cpu_quota(**v1) == pytest.approx(1.5)
    unlimited = _cgroup(tmp_path / "c", ["0::/"], {"cgroup.controllers": "cpu", "cpu.max": "max 100000"})
    assert cpu_quota(**unlimited) is None
    assert cpu_quota(proc_cgroup=tmp_path / "missing", root=tmp_path) is None


def test_a_cpu_quota_caps_the_thread_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    saved = torch.get_num_threads()
    try:
        monkeypatch.setattr(nasnetzoo.threads, "cpu_quota", lambda: 1.5)   # a container with --cpus=1.5
        assert share_cores(0).max_threads == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(nasnetzoo.threads, "cpu_quota", lambda: 64.0)
        assert share_cores(0).max_threads == BASE_THREADS
    finally:
        torch.set_num_threads(saved)
