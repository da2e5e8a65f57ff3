"""The sample-and-train pipeline: a proposer proposes children, workers train them, rewards go back.

Every search that trains the architectures it samples (NASNet's RL, regularized evolution, random
search, PNAS) runs here; only the proposer (:mod:`.proposer`) differs.  The pipeline owns the rest:

* **dispatch**: asynchronous.  Whenever a worker is free it asks the proposer for the next child;
  each finished child is told to the proposer at once (children finishing together are told in
  index order).  With one worker (``executor: local``) the search is deterministic; with several,
  the order in which children finish (and so what an asynchronous proposer sees) depends on timing.
* **children**: :func:`~.child.train_child` on the executors of :mod:`.executors`; a child that
  fails in PyTorch scores 0 and is logged with its error, and ``failure_window`` failures in a row
  end the search with one line that says how to fix and resume.
* **commits**: after every told child: the proposer's state, every child so far and the children
  still training (which a resume trains again, with the same seeds), through the run envelope
  (``runs/envelope.py``): lock, atomic commits, SIGTERM, exact resume.
* **results**: ``children.jsonl`` (one record per child, in the order they finished),
  ``metrics.jsonl`` (the proposer's own records), ``top_k.yaml`` and ``genotype.yaml`` with
  provenance (rewritten with the commit whenever the top k change, and at the end) and
  ``rewards.png`` at the end.
"""
from __future__ import annotations

import sys
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ..._version import __version__
from ...errors import NasNetZooError
from ...fileio import draw_optional
from ...genotype import Genotype, dump_yaml
from ...runs.checkpoint import atomic_write
from ...runs.envelope import Run, RunKind
from ...runs.progress import say
from .child import ChildConfig, ChildJob, ChildResult
from .plot import plot_rewards
from .proposer import PIPELINE_KEYS, Proposer
from .space import SearchSpace

# Keys of a child record that are the pipeline's; the rest came from the proposer's child_info.
CHILD_KEYS = ("child", "reward", "val_acc", "train_acc", "params", "seconds", "worker", "genotype", "error")


@dataclass
class SampledSearch:
    """What a strategy hands the pipeline: its run kind, space, proposer and how children train.

    ``provenance`` adds keys to ``genotype.yaml``'s provenance after ``strategy``; ``decorate(record,
    children)`` completes each of the proposer's metrics records; ``failure_message(failed)`` words
    the end of a search whose last ``failure_window`` children all failed."""
    kind: RunKind
    name: str                       # the recipe's name
    strategy: str
    space: SearchSpace
    proposer: Proposer
    child: ChildConfig
    seed: int
    top_k: int
    budget: int                     # children in all (the progress bar's total)
    recipe: Mapping[str, Any]       # the resolved recipe (recipe.yaml, run.json's fingerprint)
    recipe_yaml: str
    announce: str = ""
    plot_title: str = "reward over time"
    mean_label: str = "mean per update"   # what the proposer's records' reward_mean is
    provenance: Mapping[str, Any] = field(default_factory=dict)
    decorate: Optional[Callable[[dict, list], dict]] = None
    failure_window: int = 0         # 0: the number of slots, at least 2
    failure_message: Optional[Callable[[list], str]] = None
    progress: bool = True


@dataclass
class SampledResult:
    run_dir: Path
    genotype: Genotype
    best_reward: float
    children: int
    stopped: bool                   # on_record asked to stop before the proposer was done


def child_seed(seed: int, index: int) -> int:
    """A child's training seed: a function of the recipe seed and its number, so resumes repeat it."""
    return seed * 1_000_003 + index


def run_sampled_search(spec: SampledSearch, run_dir: Path, *, resume: bool, overwrite: bool, recipe_path: str,
                       make_executor: Callable[[], Any],
                       on_record: Optional[Callable[[dict], bool]] = None) -> SampledResult:
    """Run (or resume, ``resume=True``) the search in ``run_dir``.  ``make_executor()`` builds the
    executor once the run directory is ours; ``on_record(record)`` sees each metrics record after
    its commit and may return True to stop there."""
    proposer = spec.proposer
    run = Run(spec.kind, run_dir, recipe=dict(spec.recipe), resume=resume, overwrite=overwrite,
              logs=("metrics.jsonl", "children.jsonl"))
    with run:
        state = run.load()
        pending: list = []   # [index, arch, info] of children asked for and not yet told
        if state is not None:
            own = {k: v for k, v in state.items() if k not in PIPELINE_KEYS}   # "model": {} when it has none
            run.restore("proposer", lambda: proposer.load_state_dict(own))
            run.restore_rng(state)
            recipe_path = recipe_path or state.get("recipe_file", "")
            pending = [list(p) for p in state.get("pending", [])]
            run.position = _position(proposer, len(run.records["children.jsonl"]), spec.budget)
        else:
            run.write_text("recipe.yaml", spec.recipe_yaml)
        loop = _Loop(spec, run, recipe_path)
        executor = make_executor()
        if spec.progress:
            say(f"{spec.announce}; children run on {executor.name}; run dir {run_dir}")
        stopped, interrupted = False, True
        bar = _progress_bar(spec.budget, len(run.records["children.jsonl"]), spec.progress)
        try:
            stopped = loop.dispatch(executor, pending, bar, on_record)
            interrupted = stopped
        finally:
            bar.close()
            executor.close(interrupted=interrupted)
        children = run.records["children.jsonl"]
        if not children:
            raise NasNetZooError(f"{run_dir}: no child was trained (the proposer proposed none).")
        genotype, best, files = top_k_files(run_dir, children, spec, recipe_path)
        for name, text in files.items():
            run.write_text(name, text)
        draw_optional(lambda: plot_rewards(children, run_dir / "rewards.png", run.records["metrics.jsonl"],
                                           title=spec.plot_title, mean_label=spec.mean_label),
                      run_dir / "rewards.png", say if spec.progress else None)
    if spec.progress:
        say(f"best child {best['child']}: held-out acc {best['val_acc']:.2f}%\n{genotype.to_string()}\n"
            f"wrote {run_dir / 'genotype.yaml'}")
    return SampledResult(run_dir, genotype, best["reward"], len(children), stopped)


class _Loop:
    """Ask, train, tell, commit: the dispatch loop of one run."""

    def __init__(self, spec: SampledSearch, run: Run, recipe_path: str) -> None:
        self.spec, self.run, self.recipe_path = spec, run, recipe_path
        self.proposer = spec.proposer
        children = run.records["children.jsonl"]
        self.seen = {c["child"] for c in children}
        self.failed: list[dict] = []   # the failures since the last child that trained
        self.top: tuple = ()           # (child, reward) of the top k last written
        for c in children:
            self.failed = self.failed + [c] if c.get("error") else []

    def dispatch(self, executor, pending: list, bar, on_record) -> bool:
        running: dict[Future, list] = {}
        for entry in pending:   # children the last checkpoint left training: the same jobs again
            running[self._submit(executor, entry)] = entry
        slots = executor.slots   # read once: Ray's asks the cluster
        window = self.spec.failure_window or max(2, slots)
        while True:
            free = slots - len(running)
            if free > 0 and not self.proposer.done():
                for entry in self._ask(free):
                    running[self._submit(executor, entry)] = entry
            if not running:
                if self.proposer.done():
                    return False
                raise NasNetZooError(f"the {self.spec.strategy} proposer proposed no child while none was "
                                     "training and is not done (a bug in the proposer).")
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: running[f][0]):
                entry = running.pop(future)
                result: ChildResult = future.result()
                records = self._tell(entry, result, running, window)
                bar.update(1)
                bar.set_postfix(best=f"{100 * self.best:.1f}%")
                if on_record is not None and any(on_record(r) for r in records):
                    return True

    def _ask(self, free: int) -> list[list]:
        asked = list(self.proposer.ask(free))
        if len(asked) > free:
            raise NasNetZooError(f"the {self.spec.strategy} proposer returned {len(asked)} children for {free} "
                                 "free workers (a bug in the proposer).")
        entries = []
        for index, arch in asked:
            index, arch = int(index), [int(a) for a in arch]
            if index in self.seen:
                raise NasNetZooError(f"the {self.spec.strategy} proposer gave child index {index} twice "
                                     "(a bug in the proposer).")
            self.spec.space.check_actions(arch)
            self.seen.add(index)
            info = getattr(self.proposer, "child_info", lambda i: {})(index)
            entries.append([index, arch, dict(info)])
        return entries

    def _submit(self, executor, entry: list) -> Future:
        index, arch, _ = entry
        genotype = self.spec.space.to_genotype(arch)
        return executor.submit(ChildJob(index, genotype.to_dict(), self.spec.child,
                                        child_seed(self.spec.seed, index)))

    @property
    def best(self) -> float:
        return max((c["reward"] for c in self.run.records["children.jsonl"]), default=0.0)

    def _tell(self, entry: list, result: ChildResult, running: Mapping[Future, list], window: int) -> list[dict]:
        index, arch, info = entry
        genotype = self.spec.space.to_genotype(arch)
        record = {**info, "child": index, "reward": result.reward, "val_acc": result.val_acc,
                  "train_acc": result.train_acc, "params": result.params, "seconds": round(result.seconds, 3),
                  "worker": result.worker, "genotype": genotype.to_string(),
                  **({"error": result.error} if result.error else {})}
        if result.error:
            self.failed.append(record)
            if len(self.failed) >= window:   # before the commit: the checkpoint keeps the run before it
                raise NasNetZooError(self._failure_text())
            if self.spec.progress:
                say(f"child {index} failed (reward 0): {result.error}")
        else:
            self.failed = []
        self.proposer.tell(index, arch, float(result.reward))
        children = self.run.records["children.jsonl"] + [record]
        records = list(getattr(self.proposer, "records", lambda: [])())
        if self.spec.decorate is not None:
            records = [self.spec.decorate(r, children) for r in records]
        self._commit(record, records, running)
        return records

    def _failure_text(self) -> str:
        if self.spec.failure_message is not None:
            return self.spec.failure_message(self.failed)
        first = self.failed[0]
        return (f"the last {len(self.failed)} children all failed, e.g. child {first['child']}: {first['error']}; fix "
                f"the child settings (--set child.batch_size=..., child.F=...) and --resume {self.run.path}.")

    def _commit(self, record: dict, records: list[dict], running: Mapping[Future, list]) -> None:
        state = self.proposer.state_dict()
        clash = PIPELINE_KEYS & set(state)
        if clash:
            raise NasNetZooError(f"the {self.spec.strategy} proposer's state uses the pipeline's keys "
                                 f"{sorted(clash)}; rename them.")
        children = self.run.records["children.jsonl"] + [record]
        # top_k.yaml and genotype.yaml are rewritten when the top k change (YAML takes ~0.1 s a time)
        top = tuple((c["child"], c["reward"]) for c in _ranked(children)[:self.spec.top_k])
        staged = {}
        if top != self.top:
            _, _, files = top_k_files(self.run.path, children, self.spec, self.recipe_path)
            staged = {self.run.path / name: (lambda text: lambda path: atomic_write(path, lambda f: f.write(text.encode())))(text)
                      for name, text in files.items()}
            self.top = top
        pending = sorted(running.values(), key=lambda e: e[0])
        self.run.save({"model": {}, **state, "children": children, "pending": pending, "recipe": dict(self.spec.recipe),
                       "recipe_file": self.recipe_path, "space": self.spec.space.to_dict(), "version": __version__},
                      _position(self.proposer, len(children), self.spec.budget), staged=staged,
                      records={"children.jsonl": [record], "metrics.jsonl": records})


def _position(proposer, children: int, budget: int) -> str:
    own = getattr(proposer, "position", None)
    return own() if own is not None else f"child {children}/{budget}"


def top_k_files(run_dir: Path, children: Sequence[dict], spec: SampledSearch,
                recipe_path: str) -> tuple[Genotype, dict, dict[str, str]]:
    """The best child's genotype and record, and the texts of top_k.yaml and genotype.yaml."""
    top = _ranked(children)[:spec.top_k]
    entries = []
    for rank, child in enumerate(top, 1):
        genotype = Genotype.from_string(child["genotype"], family="nasnet")
        info = {k: v for k, v in child.items() if k not in CHILD_KEYS}
        entries.append({"rank": rank, "child": child["child"], **info, "reward": round(child["reward"], 6),
                        "val_acc": round(child["val_acc"], 3), "params": child["params"],
                        "genotype": _cells(genotype)})
    best = top[0]
    provenance = {"searched_with": f"nasnetzoo {__version__}", "strategy": spec.strategy, **spec.provenance,
                  "recipe": spec.name, "recipe_file": recipe_path, "seed": spec.seed, "dataset": spec.child.dataset,
                  "child": best["child"], "held_out_acc": round(best["val_acc"], 2),
                  "children_trained": len(children), "run_dir": str(run_dir)}
    genotype = Genotype.from_string(best["genotype"], family="nasnet")
    genotype = Genotype(genotype.normal, genotype.reduce, "nasnet", f"search_{spec.name}", provenance)
    files = {"top_k.yaml": dump_yaml({"recipe": spec.name, "children": len(children), "top_k": entries}),
             "genotype.yaml": genotype.to_yaml()}
    return genotype, best, files


def _ranked(children: Sequence[dict]) -> list[dict]:
    return sorted(children, key=lambda c: (-c["reward"], c["child"]))


def _cells(genotype: Genotype) -> dict:
    data = genotype.to_dict()
    return {"family": data["family"], "normal": data["normal"], "reduce": data["reduce"]}


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="child", desc="search", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


__all__ = ["CHILD_KEYS", "SampledResult", "SampledSearch", "child_seed", "run_sampled_search", "top_k_files"]
