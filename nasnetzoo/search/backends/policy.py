"""When the fast path's pieces run: every size threshold and switch of ``search/backends/`` in one place.

The thresholds are "values per sample" (channels x height x width of a layer's input) from which a
CPU kernel of :mod:`.cpu_kernels` was measured faster than PyTorch's NCHW kernel (2 threads, batch
16, PyTorch 2.14.1; docs/search_speed.md has the measurements).  Below them PyTorch's kernel runs.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FastPathPolicy:
    # False: PyTorch's own kernels inside the fused path (the ``after-kernels`` benchmark variant).
    kernels: bool = True
    # False: a node's edges one by one, each fused (``after-edgewise``); True: side by side (node_mix).
    side_by_side: bool = True
    # 5x5 depthwise convs: PyTorch's NCHW backward takes 1.4-3x this one's from 4 x 32 x 32 / 64 x 8 x 8 up.
    depthwise_min_values: int = 4096
    # dilated depthwise convs, stride 1: 1.1-1.4x from 16 x 8 x 8 (PC-DARTS's small nodes) and more above.
    dilated_min_values: int = 1024
    # dilated depthwise convs whose stride is their dilation (a reduction cell's dil_convs): 0.4-1.0 of PyTorch's time.
    strided_dilated_min_values: int = 4096
    # max pools other than 3x3 stride 1 (stride-2 pools, PC-DARTS's 2x2 bypass): 3.7-8x at 16 x 24-64 x 32 x 32.
    strided_max_pool_min_values: int = 4096
    # 3x3 stride-1 average pools: PyTorch's is 1.2-3x slower from 16 x 8 x 8 up, the faster one below.
    avg_pool_min_values: int = 1024


DEFAULT_POLICY = FastPathPolicy()
