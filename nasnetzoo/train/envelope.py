"""Moved to :mod:`nasnetzoo.runs.envelope` (what every pipeline shares); this name keeps old imports working."""
from ..runs.envelope import *  # noqa: F401,F403
