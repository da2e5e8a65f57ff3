"""Regularized evolution (Real, Aggarwal, Huang, Le: "Regularized Evolution for Image Classifier
Architecture Search", AAAI 2019, Algorithm 1) as a proposer of the sample-and-train pipeline.

* The first ``population`` (P) children are drawn uniformly from the space.
* Every later child is bred by **tournament selection**: S members of the current population are
  drawn uniformly at random, with replacement (Algorithm 1 draws "a random element" S times), and
  the one with the highest reward is the parent; the child is the parent mutated once.
* **Aging**: each trained child joins the population on the right; while the population holds more
  than P, the **oldest** (the one that joined first) leaves on the left, whatever its reward.
* **Mutations** (Sec. 3 of the paper): pick the normal or the reduction cell, one of its B pairwise
  combinations (blocks) and one of that block's two elements, each uniformly; the *hidden-state
  mutation* replaces that element's input with another state of the cell, which keeps the cell
  acyclic (a block only reads the cell's inputs and the blocks before it); the *op mutation*
  replaces its op with another op of the space; the *identity* mutation leaves the child equal to
  its parent (the paper keeps it because training is noisy).

Asynchronous, as the paper's workers are: every trained child is told at once (it joins the
population and ages it), and each free worker's next child is bred from the population as it then
stands.  Departures from the paper, stated here and in ``docs/evolution.md``:

* the paper does not give (in what we could check) the probabilities of the three mutations; we
  pick among them with the recipe's ``mutation_weights`` (default equal);
* under asynchrony the population may hold fewer than P members when breeding starts (children of
  the random phase still training); the tournament then draws from those it has, and a worker waits
  (``ask`` returns nothing) while none has finished;
* in a space with add *and* concat (NASNet's; the paper's space adds), a block's combine is
  inherited, never mutated: no mutation of the paper covers it.
"""
from __future__ import annotations

import random
from collections import deque
from typing import Any, Mapping, Optional, Sequence

from ...errors import ConfigError
from .space import DECISIONS_PER_BLOCK, SearchSpace

MUTATIONS = ("hidden_state", "op", "identity")


# ------------------------------------------------------------------------ the maths
def tournament(population: Sequence[Sequence], sample_size: int, rng: random.Random) -> Sequence:
    """The best of ``sample_size`` members drawn uniformly with replacement (members: (index, arch,
    reward)); of equal rewards, the first drawn."""
    if not population:
        raise ConfigError("tournament selection needs a non-empty population.")
    sample = [population[rng.randrange(len(population))] for _ in range(sample_size)]
    return max(sample, key=lambda member: member[2])


def age(population: deque, member: Sequence, size: int) -> list:
    """Add ``member`` on the right; remove (and return) the oldest on the left beyond ``size``."""
    population.append(member)
    dead = []
    while len(population) > size:
        dead.append(population.popleft())
    return dead


def _position(space: SearchSpace, arch: Sequence[int], rng: random.Random) -> tuple[int, int, int, int]:
    """(cell, block, element, offset of the block) chosen as the paper's mutations choose them."""
    blocks = space.blocks_of(arch)
    cell = rng.randrange(len(space.cell_types))
    block = rng.randrange(blocks)
    element = rng.randrange(2)
    return cell, block, element, (cell * blocks + block) * len(DECISIONS_PER_BLOCK)


def hidden_state_mutation(space: SearchSpace, arch: Sequence[int], rng: random.Random) -> tuple[int, ...]:
    """One element of one block reads another state of its cell (one of the 2 + block before it)."""
    child = list(arch)
    _, block, element, offset = _position(space, arch, rng)
    current = child[offset + element]
    child[offset + element] = rng.choice([s for s in range(2 + block) if s != current])
    return tuple(child)


def op_mutation(space: SearchSpace, arch: Sequence[int], rng: random.Random) -> tuple[int, ...]:
    """One element of one block applies another op of the space."""
    if len(space.ops) < 2:
        raise ConfigError("the op mutation needs a space of at least two ops.")
    child = list(arch)
    _, _, element, offset = _position(space, arch, rng)
    current = child[offset + 2 + element]
    child[offset + 2 + element] = rng.choice([o for o in range(len(space.ops)) if o != current])
    return tuple(child)


def mutate(space: SearchSpace, arch: Sequence[int], kind: str, rng: random.Random) -> tuple[int, ...]:
    if kind == "hidden_state":
        return hidden_state_mutation(space, arch, rng)
    if kind == "op":
        return op_mutation(space, arch, rng)
    if kind == "identity":
        return tuple(arch)
    raise ConfigError(f"mutation {kind!r} is not one of {', '.join(MUTATIONS)}.")


# ------------------------------------------------------------------------ the proposer
class EvolutionProposer:
    def __init__(self, space: SearchSpace, *, population: int, sample_size: int, children: int, seed: int,
                 mutation_weights: Optional[Mapping[str, float]] = None) -> None:
        weights = dict(mutation_weights or {m: 1.0 for m in MUTATIONS})
        unknown = set(weights) - set(MUTATIONS)
        if unknown or not all(w >= 0 for w in weights.values()) or not sum(weights.values()) > 0:
            raise ConfigError(f"mutation_weights {weights} must give non-negative weights to "
                              f"{', '.join(MUTATIONS)} (not all zero).")
        self.space, self.size, self.sample_size, self.total = space, int(population), int(sample_size), int(children)
        self.weights = [float(weights.get(m, 0.0)) for m in MUTATIONS]
        self.rng = random.Random(seed)
        self.population: deque = deque()   # (index, arch, reward), oldest on the left
        self.next = 0                       # the next child's index
        self.told = 0
        self.lineage: dict[int, list] = {}  # children asked, not yet told: index -> [parent, mutation]

    def done(self) -> bool:
        return self.next >= self.total

    def ask(self, free: int) -> list[tuple[int, Any]]:
        out = []
        while len(out) < free and not self.done():
            if self.next < self.size:   # the random initial population
                arch, lineage = self.space.sample(self.rng), [-1, "random"]
            elif not self.population:   # every child so far still training: wait for one
                break
            else:
                parent = tournament(list(self.population), self.sample_size, self.rng)
                kind = self.rng.choices(MUTATIONS, weights=self.weights)[0]
                arch, lineage = mutate(self.space, parent[1], kind, self.rng), [parent[0], kind]
            self.lineage[self.next] = lineage
            out.append((self.next, arch))
            self.next += 1
        return out

    def tell(self, index: int, arch, reward: float) -> None:
        age(self.population, (int(index), tuple(int(a) for a in arch), float(reward)), self.size)
        self.lineage.pop(int(index), None)
        self.told += 1

    def child_info(self, index: int) -> dict:
        parent, mutation = self.lineage[index]
        return {"mutation": mutation} if parent < 0 else {"parent": parent, "mutation": mutation}

    def records(self) -> list[dict]:
        """The population after every P-th trained child."""
        if self.told % self.size:
            return []
        rewards = [m[2] for m in self.population]
        return [{"children": self.told, "population": len(rewards), "reward_mean": sum(rewards) / len(rewards),
                 "reward_max": max(rewards), "oldest": self.population[0][0]}]

    def state_dict(self) -> dict:
        return {"evolution_rng": self.rng.getstate(), "population": [[i, list(a), r] for i, a, r in self.population],
                "next": self.next, "told": self.told,
                "lineage": [[i, p, m] for i, (p, m) in sorted(self.lineage.items())]}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["evolution_rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.population = deque((int(i), tuple(int(x) for x in a), float(r)) for i, a, r in state["population"])
        self.next, self.told = int(state["next"]), int(state["told"])
        self.lineage = {int(i): [int(p), str(m)] for i, p, m in state["lineage"]}


__all__ = ["MUTATIONS", "EvolutionProposer", "age", "hidden_state_mutation", "mutate", "op_mutation", "tournament"]
