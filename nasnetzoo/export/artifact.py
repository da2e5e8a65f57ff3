"""What a converter says it wrote (its own module: converters import it, not the runtime table)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Artifact:
    """One file a converter wrote: its key in the report's ``files``, and the check it gets.

    ``variant`` labels the check (``fp32``, ``fp16``, ``tensorrt-ready fp32``); None for a file that
    is part of another one's program and is not run alone (OpenVINO's ``.bin``).  A converter that
    writes more than its main file lists them all, the main one first, under ``info["artifacts"]``.
    """
    key: str
    path: Path
    variant: Optional[str] = "fp32"
    fp16: bool = False
