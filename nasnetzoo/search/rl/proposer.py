"""NASNet's PPO (or REINFORCE) controller as a proposer of the sample-and-train pipeline.

The controller is synchronous: it samples a batch of ``children_per_step`` architectures at once
(one draw of its generator, as before the pipeline existed), hands them out as workers free up,
waits (``ask`` returns ``[]``) until every reward of the batch is in, then updates once and samples
the next batch.  Rewards are ordered by child, not by arrival, so the update is the same whichever
child finishes first.  Its state adds the batch in progress to the controller trainer's.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .controller import Rollout
from .policy import ControllerTrainer


class PPOProposer:
    def __init__(self, trainer: ControllerTrainer, steps: int, children_per_step: int) -> None:
        self.trainer, self.steps, self.batch = trainer, int(steps), int(children_per_step)
        self.rollout: Optional[Rollout] = None   # the batch in progress
        self.queue: list[int] = []               # its positions not handed out yet
        self.rewards: dict[int, float] = {}      # its positions told so far
        self._records: list[dict] = []

    @property
    def first(self) -> int:
        """The index of the batch's first child: every update trains exactly one batch."""
        return self.trainer.updates * self.batch

    def done(self) -> bool:
        return self.trainer.updates >= self.steps

    def ask(self, free: int) -> list[tuple[int, Any]]:
        if self.rollout is None:
            if self.done():
                return []
            self.rollout = self.trainer.sample(self.batch)
            self.queue, self.rewards = list(range(self.batch)), {}
        out: list[tuple[int, Any]] = []
        while self.queue and len(out) < free:
            i = self.queue.pop(0)
            out.append((self.first + i, self.rollout.actions[i].tolist()))
        return out

    def tell(self, index: int, arch, reward: float) -> None:
        self.rewards[index - self.first] = float(reward)
        if len(self.rewards) == self.batch:
            assert self.rollout is not None, "tell() answers the children of the rollout ask() sampled"
            stats = self.trainer.update(self.rollout, [self.rewards[i] for i in range(self.batch)])
            self._records.append({"update": self.trainer.updates, "children": self.trainer.updates * self.batch,
                                  **stats})
            self.rollout = None

    def child_info(self, index: int) -> dict:
        return {"update": index // self.batch + 1}

    def records(self) -> list[dict]:
        out, self._records = self._records, []
        return out

    def position(self) -> str:
        text = f"controller update {self.trainer.updates}/{self.steps}"
        if self.rollout is not None and self.rewards:
            text += f" and {len(self.rewards)} of the next update's {self.batch} children"
        return text

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        batch = None
        if self.rollout is not None:
            batch = {"actions": self.rollout.actions, "log_probs": self.rollout.log_probs,
                     "entropies": self.rollout.entropies, "queue": list(self.queue),
                     "rewards": [[i, r] for i, r in sorted(self.rewards.items())]}
        return {**self.trainer.state_dict(), "batch": batch}

    def load_state_dict(self, state: dict) -> None:
        self.trainer.load_state_dict(state)
        batch = state.get("batch")   # absent in checkpoints written before the pipeline: between updates
        if batch is None:
            self.rollout, self.queue, self.rewards = None, [], {}
            return
        device = self.trainer.controller.start.device
        self.rollout = Rollout(torch.as_tensor(batch["actions"]).to(device), batch["log_probs"].to(device),
                               batch["entropies"].to(device))
        self.queue = [int(i) for i in batch["queue"]]
        self.rewards = {int(i): float(r) for i, r in batch["rewards"]}


__all__ = ["PPOProposer"]
