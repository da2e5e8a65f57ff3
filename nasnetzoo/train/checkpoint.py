"""Moved to :mod:`nasnetzoo.runs.checkpoint` (what every pipeline shares); this name keeps old imports working."""
from ..runs.checkpoint import *  # noqa: F401,F403
