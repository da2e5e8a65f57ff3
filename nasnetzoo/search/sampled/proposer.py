"""What a sampled search's strategy implements: a proposer of architectures, told their rewards.

The pipeline (:mod:`.pipeline`) asks for children whenever workers are free, trains them, and tells
the proposer each reward as soon as that child is done::

    proposer.ask(free) -> [(child index, architecture), ...]   # at most `free`; [] while it waits
    proposer.tell(index, architecture, reward)                  # every child it proposed, once
    proposer.done() -> bool                                     # nothing more to propose
    proposer.state_dict() / load_state_dict(state)              # exact resume, RNG state included

Child indices are the proposer's to give: new, unique, usually 0, 1, 2, ... in the order asked
(each child's training seed derives from its index).  An architecture is what the run's
:class:`~.space.SearchSpace` turns into a genotype: a sequence of integer actions.

Optional, found by name when present:

* ``child_info(index) -> dict``: extra keys for that child's record and its ``top_k.yaml`` entry
  (the RL controller's ``update``, evolution's ``parent`` and ``mutation``);
* ``records() -> list[dict]``: records for ``metrics.jsonl`` made since the last call (one per
  PPO update, say); the pipeline collects them after every ``tell``;
* ``position() -> str``: what the last checkpoint holds, for the interrupt message.

The state a proposer saves must be plain data and tensors (the run envelope reads checkpoints
with the weights-only reader), and its keys must not be the pipeline's (:data:`PIPELINE_KEYS`).
Every checkpoint has a ``model`` entry (the run envelope's mark of one): the proposer's own, or
``{}`` that the pipeline adds, which ``load_state_dict`` then sees and may ignore.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

# The keys the pipeline and the run envelope keep at the top of the checkpoint.
PIPELINE_KEYS = frozenset({"children", "pending", "recipe", "recipe_file", "space", "version", "rng", "logs",
                           "promote", "commits", "kind"})


@runtime_checkable
class Proposer(Protocol):
    def ask(self, free: int) -> list[tuple[int, Any]]: ...

    def tell(self, index: int, arch: Any, reward: float) -> None: ...

    def done(self) -> bool: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


__all__ = ["PIPELINE_KEYS", "Proposer"]
