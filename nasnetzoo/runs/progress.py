"""What a long loop shows and records: a tqdm bar (loss, accuracy, images/s, ETA) and JSON lines."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from .. import fileio
from ..fileio import atomic_write


class MetricsLog:
    """Append-only JSON-lines file, one record per line, flushed at once (readable while running)."""

    def __init__(self, path: Union[str, Path], enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(_clean(record), sort_keys=False)
        with open(self.path, "ab") as handle:
            fileio._write_bytes(handle, (line + "\n").encode())
            handle.flush()

    def read(self) -> list[dict]:
        return read_jsonl(self.path)

    def rewrite(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Replace the file by ``records`` (a resume restores the log its checkpoint carries), atomically."""
        if not self.enabled:
            return
        text = "".join(json.dumps(_clean(r)) + "\n" for r in records)
        atomic_write(self.path, lambda handle: handle.write(text.encode()))

    def truncate_after(self, epoch: int, key: str = "epoch") -> None:
        """Drop records whose ``key`` (the epoch) is after ``epoch`` (a resumed run redoes them), atomically."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [r for r in self.read() if int(r.get(key, 0)) <= epoch]
        text = "".join(json.dumps(r) + "\n" for r in keep)
        atomic_write(self.path, lambda handle: handle.write(text.encode()))


def read_jsonl(path: Union[str, Path]) -> list[dict]:
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: the records before it stand
            continue
    return records


def _clean(record: Mapping[str, Any]) -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, float):
            value = None if math.isnan(value) or math.isinf(value) else round(value, 6)
        out[key] = value
    return out


def format_seconds(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class RunProgress:
    """One tqdm bar per epoch; the postfix carries loss, acc, img/s and the whole run's ETA."""

    def __init__(self, total_epochs: int, steps_per_epoch: int, enabled: bool = True,
                 done_steps: int = 0, world: int = 1) -> None:
        self.world = world
        self.total_steps = total_epochs * steps_per_epoch
        self.total_epochs = total_epochs
        self.steps_per_epoch = steps_per_epoch
        self.enabled = enabled
        self.done_at_start = done_steps
        self.done = done_steps
        self.bar = None
        self.start = time.perf_counter()
        self.epoch_start = self.start
        self.images = 0
        self.last_post = 0.0

    def start_epoch(self, epoch: int) -> None:
        self.epoch_start = time.perf_counter()
        self.images = 0
        if not self.enabled:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.total_epochs}",
                        unit="step", leave=False, dynamic_ncols=True, file=sys.stderr,
                        mininterval=0.5 if sys.stderr.isatty() else 10.0)

    def on_step(self, info: Mapping[str, Any]) -> None:
        self.done += 1
        self.images += int(info.get("images", 0))
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last_post < 0.5 and self.bar.n < self.steps_per_epoch:
            return
        self.last_post = now
        rate = self.images * self.world / max(now - self.epoch_start, 1e-9)
        ran = self.done - self.done_at_start
        eta = (now - self.start) / max(ran, 1) * (self.total_steps - self.done)
        self.bar.set_postfix_str(f"loss {info['loss']:.3f}  acc {info['acc']:.1f}%  {rate:.0f} img/s  "
                                 f"lr {info['lr']:.3g}  ETA {format_seconds(eta)}", refresh=False)

    def end_epoch(self, summary: Optional[str] = None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled and summary:
            say(summary)


def say(text: str) -> None:
    """A line on stderr that does not tear a running progress bar."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)
