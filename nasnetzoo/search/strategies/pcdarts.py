"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections + edge normalisation.

The memory saving and the edge weights live in the supernet (``SearchNetwork(partial_k=K,
edge_norm=True)``); the architecture step is DARTS's first-order one.  Derivation ranks each
node's incoming edges by edge weight x best non-``none`` op weight (``derive_from_weights``).
"""
from __future__ import annotations

from ..supernet import SearchNetwork
from ...recipe_file import RecipeError
from .darts import DARTSStrategy
from .registry import Strategy, arch_options, register_strategy, supernet_summary


class PCDARTSStrategy(DARTSStrategy):
    name = "pcdarts"

    def __init__(self, network: SearchNetwork, *, arch_lr: float = 6e-4, arch_betas=(0.5, 0.999),
                 arch_weight_decay: float = 1e-3, second_order: bool = False, grad_clip: float = 5.0) -> None:
        if not network.edge_norm:
            from ...errors import ConfigError

            raise ConfigError("PC-DARTS needs a supernet with edge normalisation (edge_norm=True).")
        super().__init__(network, arch_lr=arch_lr, arch_betas=arch_betas, arch_weight_decay=arch_weight_decay,
                         second_order=second_order, grad_clip=grad_clip)


def _check(recipe) -> None:
    if not recipe.edge_norm:
        raise RecipeError("strategy 'pcdarts' uses edge normalisation: set edge_norm: true "
                          "(or strategy: darts with partial_k for partial channels alone).")


register_strategy(Strategy(
    "pcdarts", title="PC-DARTS", summary=supernet_summary, check=_check, compiles=True,
    build=lambda recipe, network: PCDARTSStrategy(network, second_order=recipe.second_order, **arch_options(recipe))))
