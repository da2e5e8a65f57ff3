"""Moved to :mod:`nasnetzoo.runs.optim` (what every pipeline shares); this name keeps old imports working."""
from ..runs.optim import *  # noqa: F401,F403
