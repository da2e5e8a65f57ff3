"""Exceptions a user can cause. Each message names the bad value and what would be right."""
from __future__ import annotations

import difflib
from typing import Iterable


class NasNetZooError(Exception):
    """Base class of every error that bad user input can raise; the CLI prints it without a traceback."""


class GenotypeError(NasNetZooError, ValueError):
    """A genotype that cannot be parsed or does not describe a valid cell."""


class UnknownModelError(NasNetZooError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnknownOpError(GenotypeError):
    """An op name that is not in the op registry."""


class ConfigError(NasNetZooError, ValueError):
    """A bad builder argument (dataset, input size, channel count, ...)."""


def close_matches(value: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``value`` (case-insensitive), best first."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(value.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def did_you_mean(value: str, candidates: Iterable[str]) -> str:
    hits = close_matches(value, candidates)
    return f" Did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""
