"""Cell primitives: the registry and the two built-in families (DARTS and TF-slim NASNet)."""
from .registry import FAMILIES, build_op, get_op_factory, op_names, register_op, unregister_op
from . import darts as _darts  # noqa: F401  (registers the DARTS primitives)
from . import tf as _tf  # noqa: F401  (registers the NASNet-family primitives)

__all__ = ["FAMILIES", "build_op", "get_op_factory", "op_names", "register_op", "unregister_op"]
