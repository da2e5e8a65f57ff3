"""Helpers for the tests that kill a search run through the CLI and resume it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SEARCH_CLI = [sys.executable, "-m", "nasnetzoo", "search"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def interrupt_when_written(proc: subprocess.Popen, path: Path, lines: int = 1, *, poll: float = 0.1,
                           timeout: float = 300) -> tuple[int, str]:
    """Wait (up to ``timeout`` s) until ``path`` holds ``lines`` lines, then SIGTERM ``proc``:
    its return code and stderr once it has stopped."""
    deadline = time.time() + timeout
    while time.time() < deadline and not (path.is_file() and len(path.read_text().splitlines()) >= lines):
        time.sleep(poll)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err
