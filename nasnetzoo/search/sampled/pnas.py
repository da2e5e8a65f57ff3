"""PNAS's proposer: progressive search with a surrogate (Liu et al., ECCV 2018, Alg. 1).

Stage 1 trains every one-block cell (the 136 distinct ones of the paper's 8 ops, see
:mod:`.pnas_cells`) and fits the predictor to their rewards.  Stage ``b + 1`` expands each cell
trained at stage ``b`` (the beam) by one block in every possible way, lets the predictor score every
expansion, trains the ``beam_size`` (K) best-scored ones, and refits the predictor on every cell
trained so far.  The search ends after stage B.  Before a stage's cells are trained their predicted
rewards are kept, so when the stage ends the predictor's Spearman rank correlation on cells it had
not seen is measured and logged: the paper's central claim is that it stays high.

The proposer hands out a stage's cells as workers free up (:meth:`ask`) and waits (``ask`` returns
``[]``) until the whole stage is told, since the next stage depends on all of it.  Architectures
go out as the pipeline's action sequences (:meth:`.ProgressiveSpace.to_actions`).  Its state is
plain data plus the predictor's weights, Adam states and generator, so a resumed search continues
exactly; children handed out but not told when the state was saved stay outstanding (the pipeline
trains them again, with the same numbers, and tells them).  The predictor is fitted on the trained
cells in child-number order, so the order in which workers finish does not change the search.

Departures from the paper (also in ``docs/pnas.md``): the predictor is not refitted after the last
stage (nothing uses it); ties in predicted score are broken by enumeration order; the predictor's
details that we could not check are listed in :mod:`.pnas_predictor`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from .pnas_cells import PNASCell, ProgressiveSpace, cell_from_json
from .pnas_predictor import EnsemblePredictor, PredictorConfig, spearman


def top_k(cells: Sequence[PNASCell], scores: Sequence[float], k: int) -> list[int]:
    """Positions of the ``k`` highest scores, best first; equal scores keep their order in ``cells``."""
    if len(cells) != len(scores):
        raise ValueError(f"{len(cells)} cells but {len(scores)} scores")
    order = sorted(range(len(cells)), key=lambda i: (-float(scores[i]), i))
    return order[:max(0, int(k))]


class PNASProposer:
    """Progressive search over ``space`` with beam size ``beam_size`` (the paper's K)."""

    def __init__(self, space: ProgressiveSpace, *, beam_size: int = 256,
                 predictor: PredictorConfig = PredictorConfig(), seed: int = 0) -> None:
        if int(beam_size) < 1:
            raise ValueError(f"beam_size={beam_size} must be at least 1 (the paper's K is 256)")
        self.space, self.beam_size = space, int(beam_size)
        # Input tokens go up to state B (the last block reads states 0..B).
        self.predictor = EnsemblePredictor(space.num_blocks + 1, len(space.ops), predictor, seed)
        self.stage = 1
        self.queue: list[PNASCell] = space.one_block_cells()
        self.predicted: dict[PNASCell, float] = {}         # this stage's cells, scored before training
        self.outstanding: dict[int, PNASCell] = {}
        self.trained: list[dict] = []                      # every told child: child, cell, stage, reward, predicted
        self.stages: list[dict] = []                       # one record per finished stage
        self.next_index = 0
        self.finished = False
        self._records: list[dict] = []                     # stage records not yet collected by records()

    # ------------------------------------------------------------------ the proposer interface
    def ask(self, free: int) -> list[tuple[int, list[int]]]:
        out: list[tuple[int, list[int]]] = []
        while len(out) < free and self.queue:
            cell = self.queue.pop(0)
            index, self.next_index = self.next_index, self.next_index + 1
            self.outstanding[index] = cell
            out.append((index, self.space.to_actions(cell)))
        return out

    def tell(self, index: int, arch: Any, reward: float) -> None:
        index = int(index)
        if index not in self.outstanding:
            raise ValueError(f"child {index} was not handed out by this PNAS proposer (or was told already)")
        told = self.space.from_actions(arch)
        if told != self.outstanding[index]:
            raise ValueError(f"child {index} is {self.space.describe(self.outstanding[index])}, "
                             f"not {self.space.describe(told)}")
        cell = self.outstanding.pop(index)
        self.trained.append({"child": index, "cell": cell, "stage": self.stage, "reward": float(reward),
                             "predicted": self.predicted.get(cell)})
        if not self.queue and not self.outstanding:
            self._finish_stage()

    def done(self) -> bool:
        return self.finished

    # ------------------------------------------------------------------ one stage's end
    def _finish_stage(self) -> None:
        b = self.stage
        here = sorted((t for t in self.trained if t["stage"] == b), key=lambda t: t["child"])
        rewards = [t["reward"] for t in here]
        record: dict[str, Any] = {"stage": b, "blocks": b, "trained": len(here), "children": len(self.trained),
                                  "best_reward": max(rewards), "reward_mean": sum(rewards) / len(rewards)}
        if b > 1:
            # The central claim: the predictor, fitted on smaller cells, ranks these unseen ones.
            rho = spearman([t["predicted"] for t in here], rewards)
            record["spearman"] = None if math.isnan(rho) else rho   # None: all rewards or scores equal
            record["predicted_mean"] = sum(t["predicted"] for t in here) / len(here)
        if b < self.space.num_blocks:
            data = sorted(self.trained, key=lambda t: t["child"])
            record.update(self.predictor.fit([self.space.tokens(t["cell"]) for t in data],
                                             [t["reward"] for t in data]))
            beam = [t["cell"] for t in here]
            candidates = self.space.expand_all(beam)
            scores = self.predictor.predict([self.space.tokens(c) for c in candidates]).tolist()
            chosen = top_k(candidates, scores, self.beam_size)
            self.queue = [candidates[i] for i in chosen]
            self.predicted = {candidates[i]: float(scores[i]) for i in chosen}
            record.update(expansions=len(candidates), next_stage=len(self.queue))
            self.stage = b + 1
        else:
            self.predicted = {}
            self.finished = True
        self.stages.append(record)
        self._records.append(dict(record))

    # ------------------------------------------------------------------ the pipeline's optional hooks
    def records(self) -> list[dict]:
        """The stage records finished since the last call (for ``metrics.jsonl``)."""
        out, self._records = self._records, []
        return out

    def child_info(self, index: int) -> dict:
        """A child's stage and the reward the predictor gave it before it was trained (None at stage 1)."""
        cell = self.outstanding.get(int(index))
        predicted = self.predicted.get(cell) if cell is not None else None
        return {"stage": self.stage, "predicted": None if predicted is None else round(predicted, 6)}

    def position(self) -> str:
        told = sum(1 for t in self.trained if t["stage"] == self.stage)
        size = told + len(self.outstanding) + len(self.queue)
        if self.finished:
            return f"PNAS search done ({len(self.trained)} children, {self.space.num_blocks} stages)"
        return f"PNAS stage {self.stage}/{self.space.num_blocks}, {told} of its {size} children told"

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        # Not "space": that key is the pipeline's (its PIPELINE_KEYS).
        return {"strategy": "pnas", "stage": self.stage, "beam_size": self.beam_size,
                "pnas_space": self.space.to_dict(),
                "queue": [list(map(list, c)) for c in self.queue],
                "outstanding": [[i, list(map(list, c))] for i, c in sorted(self.outstanding.items())],
                "predicted": [[list(map(list, c)), p] for c, p in self.predicted.items()],
                "trained": [{**t, "cell": list(map(list, t["cell"]))} for t in self.trained],
                "stages": [dict(s) for s in self.stages], "next_index": self.next_index,
                # "model": the run envelope's checkpoint reader wants that entry; the predictor is PNAS's model.
                "finished": self.finished, "model": self.predictor.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("pnas_space") != self.space.to_dict():
            raise ValueError(f"the saved PNAS search ran over {state.get('pnas_space')}; this proposer's space is "
                             f"{self.space.to_dict()}")
        if int(state["beam_size"]) != self.beam_size:
            raise ValueError(f"the saved PNAS search has beam_size={state['beam_size']}, the recipe {self.beam_size}; "
                             "a resume keeps K")
        self.stage = int(state["stage"])
        self.queue = [cell_from_json(c) for c in state["queue"]]
        # Children handed out but not told when the state was saved: the pipeline trains them again.
        self.outstanding = {int(i): cell_from_json(c) for i, c in state["outstanding"]}
        self.predicted = {cell_from_json(c): float(p) for c, p in state["predicted"]}
        self.trained = [{**t, "cell": cell_from_json(t["cell"])} for t in state["trained"]]
        self.stages = [dict(s) for s in state["stages"]]
        self.next_index, self.finished = int(state["next_index"]), bool(state["finished"])
        self.predictor.load_state_dict(state["model"])
        self._records = []


__all__ = ["PNASProposer", "top_k"]
