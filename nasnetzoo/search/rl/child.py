"""The children of NASNet's search, which every sampled search trains: see :mod:`nasnetzoo.search.sampled.child`."""
from __future__ import annotations

from ..sampled.child import DATA_SPLIT_SEED, ChildConfig, ChildJob, ChildResult, build_child, child_data, train_child

__all__ = ["DATA_SPLIT_SEED", "ChildConfig", "ChildJob", "ChildResult", "build_child", "child_data", "train_child"]
