"""A gradient strategy from outside the package is its module plus its registration: it declares an
option of its own, runs through ``run_search`` and the CLI, is killed at a chosen step and resumes
exactly, in a run directory the runs package (``Run``) owns.  A pipeline of its own can own one too."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nasnetzoo.cli import cli
from nasnetzoo.recipe_file import RecipeError
from nasnetzoo.runs.envelope import Run, RunInterrupted, RunKind, register_run_kind
from nasnetzoo.search import run_search
from nasnetzoo.search.strategies import TABLE, DARTSStrategy, Strategy, register_strategy
from nasnetzoo.search.strategies.registry import arch_options, supernet_summary

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke_search.yaml"
TINY = ["image_size=16", "C=4", "layers=3", "steps=2", "batch_size=16", "max_steps_per_epoch=2", "epochs=2",
        "warmup_epochs=0", "threads=1", "progress=false", "strategy=every_other", "partial_k=1",
        "edge_norm=false"]
KILL = {"at": None}   # the architecture step that raises Ctrl-C (None: never)


# ---------------------------------------------------------------- the strategy: its whole module
@dataclass
class EveryOptions:
    every: int = 2   # one architecture step in this many weight steps

    def __post_init__(self) -> None:
        if self.every < 1:
            raise RecipeError(f"recipe key 'options.every' = {self.every} must be at least 1.")


class EveryOther(DARTSStrategy):
    """First-order DARTS that updates the architecture on every ``every``-th step only."""
    name = "every_other"

    def __init__(self, network, *, every: int, **kwargs) -> None:
        super().__init__(network, **kwargs)
        self.every, self.calls = every, 0

    def arch_step(self, train_batch, val_batch, w_optimizer) -> dict:
        self.calls += 1
        if KILL["at"] == self.calls:
            raise KeyboardInterrupt
        return super().arch_step(train_batch, val_batch, w_optimizer) if self.calls % self.every == 0 else {}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.calls = int(state["calls"])


@pytest.fixture
def every_other():
    entry = register_strategy(Strategy(
        "every_other", options=EveryOptions, summary=supernet_summary,
        build=lambda recipe, network: EveryOther(network, every=recipe.strategy_options().every,
                                                 **arch_options(recipe))))
    yield entry
    TABLE.pop("every_other")
    KILL["at"] = None


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


def test_an_outside_strategy_runs_is_killed_and_resumes_exactly(every_other, tmp_path):
    run_search(SMOKE, out=tmp_path / "whole", overrides=[*TINY, "options.every=3"])
    assert _state(tmp_path / "whole")["strategy"]["calls"] == 4
    assert _state(tmp_path / "whole")["recipe"]["options"] == {"every": 3}

    KILL["at"] = 3   # the first step of epoch 2: epoch 1's checkpoint is on disk
    cut = CliRunner().invoke(cli, ["search", "--recipe", str(SMOKE), "--out", str(tmp_path / "cut"),
                                   *[a for kv in (*TINY, "options.every=3") for a in ("--set", kv)]])
    assert cut.exit_code != 0 and "Traceback" not in cut.output
    assert f"nasnetzoo search --resume {tmp_path / 'cut'}" in cut.output, cut.output
    KILL["at"] = None
    resumed = CliRunner().invoke(cli, ["search", "--resume", str(tmp_path / "cut")])
    assert resumed.exit_code == 0, resumed.output
    a, b = _state(tmp_path / "whole"), _state(tmp_path / "cut")
    assert b["strategy"]["calls"] == 4 and a["history"] == b["history"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert (tmp_path / "cut" / "genotype.yaml").read_text().split("provenance")[0] == \
        (tmp_path / "whole" / "genotype.yaml").read_text().split("provenance")[0]


def test_an_outside_strategy_checks_its_own_option(every_other, tmp_path):
    result = CliRunner().invoke(cli, ["search", "--recipe", str(SMOKE), "--out", str(tmp_path / "x"),
                                      *[a for kv in (*TINY, "options.every=0") for a in ("--set", kv)]])
    assert result.exit_code != 0 and "'options.every' = 0 must be at least 1" in result.output
    result = CliRunner().invoke(cli, ["search", "--recipe", str(SMOKE), "--out", str(tmp_path / "x"),
                                      *[a for kv in (*TINY, "options.evry=2") for a in ("--set", kv)]])
    assert result.exit_code != 0 and "Did you mean 'every'" in result.output


# ---------------------------------------------------------------- a pipeline of its own
LOOP = register_run_kind(RunKind("outside_loop", noun="outside loop", checkpoint="state.pt", artifacts=("sums.txt",)))


def _loop(path: Path, *, resume: bool = False, stop_at: int = -1, steps: int = 5) -> list:
    with Run(LOOP, path, recipe={"name": "loop", "steps": steps}, resume=resume) as run:
        state = run.load()
        values, start = ([], 0) if state is None else (state["model"]["values"].tolist(), int(state["step"]) + 1)
        if state is not None:
            run.restore_rng(state)
        for step in range(start, steps):
            if step == stop_at:
                raise KeyboardInterrupt
            values.append(float(torch.rand(())))
            run.save({"model": {"values": torch.tensor(values)}, "step": step}, f"step {step + 1}")
        run.write_text("sums.txt", f"{sum(values)}\n")
    return values


def test_an_outside_pipeline_owns_its_run_directory_and_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    whole = _loop(tmp_path / "whole")
    torch.manual_seed(0)
    with pytest.raises(RunInterrupted, match=r"after step 3.*resume="):
        _loop(tmp_path / "cut", stop_at=3)
    torch.manual_seed(123)   # the checkpoint's RNG state, not the process's, continues the run
    assert _loop(tmp_path / "cut", resume=True) == whole
    (tmp_path / "whole" / "mine.txt").write_text("not the loop's")
    with Run(LOOP, tmp_path / "whole", recipe={"name": "other"}, overwrite=True):
        pass
    assert not (tmp_path / "whole" / "sums.txt").exists() and (tmp_path / "whole" / "mine.txt").exists()
