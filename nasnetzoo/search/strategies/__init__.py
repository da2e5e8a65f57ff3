"""Search strategies behind one interface (``SearchStrategy``), each registered in the one table.

Importing this package registers the bundled strategies (each module registers its own entry:
``darts``, ``pcdarts``, ``parsec``, ``nasnet_rl``, ``gdas``, ``snas``, ``enas``, ``pdarts``,
``evolution``, ``random``, ``pnas``); ``nasnetzoo.search.run_search`` and
``nasnetzoo search`` dispatch through :data:`TABLE`.  A new strategy is its module plus its
:func:`register_strategy` call (see ``docs/search_strategies.md``).
"""
from __future__ import annotations

from . import darts, nasnet_rl, parsec, pcdarts  # noqa: F401  (each registers its entry)
from . import gdas, snas  # noqa: F401  (each registers its entry)
from . import enas  # noqa: F401  (registers its entry)
from . import pdarts  # noqa: F401  (registers its entry)
from . import evolution, random_search  # noqa: F401  (each registers its entry)
from . import pnas  # noqa: F401  (registers its entry)
from .base import SearchStrategy, derive_from_weights
from .darts import DARTSStrategy
from .gdas import GDASStrategy
from .parsec import PARSECOptions, PARSECStrategy
from .pcdarts import PCDARTSStrategy
from .registry import TABLE, Strategy, get_strategy, register_strategy
from .pdarts import PDARTSStrategy
from .snas import SNASStrategy

__all__ = ["TABLE", "DARTSStrategy", "PARSECOptions", "PARSECStrategy", "PCDARTSStrategy", "SearchStrategy",
           "Strategy", "derive_from_weights", "get_strategy", "register_strategy"]
__all__ += ["GDASStrategy", "PDARTSStrategy", "SNASStrategy"]
