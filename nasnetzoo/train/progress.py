"""Moved to :mod:`nasnetzoo.runs.progress` (what every pipeline shares); this name keeps old imports working."""
from ..runs.progress import *  # noqa: F401,F403
