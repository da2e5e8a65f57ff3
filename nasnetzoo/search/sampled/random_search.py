"""Random search as a proposer: every child drawn uniformly from the space, independently of rewards.

The baseline of Li & Talwalkar (2019) and Sciuto et al. (2020): with the same child budget, the
same children and the same pipeline as the other sampled searches, any gain of a search strategy
over it is the strategy's.  Each decision of an architecture is drawn uniformly from its choices
(:meth:`~.space.SearchSpace.sample`), so every architecture of the space (as an action sequence)
is equally likely; in a space with ``min_blocks < num_blocks`` (PNAS's) the cells have all
``num_blocks`` blocks.
"""
from __future__ import annotations

import random
from typing import Any

from .space import SearchSpace


class RandomProposer:
    def __init__(self, space: SearchSpace, children: int, seed: int) -> None:
        self.space, self.total = space, int(children)
        self.sampler = random.Random(seed)
        self.next = 0      # the next child's index
        self.told = 0

    def ask(self, free: int) -> list[tuple[int, Any]]:
        out = []
        while len(out) < free and self.next < self.total:
            out.append((self.next, self.space.sample(self.sampler)))
            self.next += 1
        return out

    def tell(self, index: int, arch, reward: float) -> None:
        self.told += 1

    def done(self) -> bool:
        return self.next >= self.total

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.getstate(), "next": self.next, "told": self.told}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["sampler"]
        self.sampler.setstate((version, tuple(internal), gauss))
        self.next, self.told = int(state["next"]), int(state["told"])


__all__ = ["RandomProposer"]
