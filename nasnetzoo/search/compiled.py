"""The search step under ``torch.compile`` (recipe key ``compile: true``).

What is compiled is the supernet's continuous forward, on the reference backend, where it traces
as one graph (the fused backend's own kernels and host-side choices break it into several graphs
per cell, so the recipe refuses it).  AOTAutograd compiles its backward with it, so both the
architecture step (held-out loss, gradients of alpha and beta) and the weight step run the
compiled graphs; the optimizers, the gradient averaging and the clipping stay eager.  A handful of
graphs come out of a search: training and evaluation mode (the held-out accuracy), with and
without gradients.  ``dynamic=False``: the batch shape is fixed (``drop_last``), and a
dynamic-shape graph would be slower.

The compiled wrapper shares the module's parameters and buffers; the module is what the optimizer,
the checkpoints and the derived genotype read, so a compiled run resumes from, and into, the same
checkpoint as an eager one.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

# Inductor: the default, and what gives the speed.  The default-tier test swaps in dynamo's "eager"
# backend (the same capture, no code generation) to stay cheap.
COMPILE_BACKEND = "inductor"


def compile_supernet(network: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``network``'s forward compiled, sharing its state."""
    return torch.compile(network, backend=COMPILE_BACKEND, dynamic=False)
