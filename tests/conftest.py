"""Shared test fixtures, and one core per test process.

The suite runs on pytest-xdist workers, one per core (``-n auto`` in pyproject.toml).  Each worker
and every process it starts gets one OpenMP thread, set before torch loads: two workers with two
threads each on two cores would fight for them (issue 14 measured a 16x slowdown, not 2x).
"""
from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")   # before torch loads (nasnetzoo imports it)

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: its models are small and bound by per-op overhead, and a
    second thread spin-waits (burning the other core) whenever the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def weights_env(tmp_path, monkeypatch):
    """nasnetzoo's cache and the Hugging Face cache in the test's folder, downloads allowed with a
    short timeout: a weights test never reads or fills the user's caches, nor waits long."""
    monkeypatch.setenv("NASNETZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("NASNETZOO_DOWNLOAD_TIMEOUT", "5")
    return tmp_path / "cache"
