"""Search strategies behind one interface (``SearchStrategy``)."""
from .base import SearchStrategy, derive_from_weights
from .darts import DARTSStrategy
from .parsec import PARSECStrategy
from .pcdarts import PCDARTSStrategy

STRATEGIES = {"darts": DARTSStrategy, "pcdarts": PCDARTSStrategy, "parsec": PARSECStrategy}

__all__ = ["STRATEGIES", "DARTSStrategy", "PARSECStrategy", "PCDARTSStrategy", "SearchStrategy",
           "derive_from_weights"]
