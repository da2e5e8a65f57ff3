"""``run_study``: every search and retrain of a study, resumable, then its report.

The study directory::

    run.json, recipe.yaml   the study's own (the run envelope's ownership record; the study recipe)
    plan.json               the frozen recipes and the cells; what ``--resume`` runs
    runs/<cell>/            one folder per cell (``study/cell.py``): its search and retrain run directories
    study.md, study.json    the report (``study/report.py``)
    plots/                  accuracy per strategy, the cells found side by side

The study holds its directory as every run does (``runs.envelope.Run``: a lock, ``--overwrite``
semantics, Ctrl-C and SIGTERM ending it with the command that resumes it).  Cells run through the
shared executors (``runs/executors.py``): one after another, in a process pool (one worker per GPU
on a GPU machine) or as Ray tasks.  A resumed study skips every finished cell and stage, resumes
each run that holds a checkpoint and starts the rest.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from ..recipe_file import RecipeError, apply_overrides, parse_assignment, resolve_recipe
from ..runs.envelope import Run, RunKind, check_resumable, check_resume_args, register_run_kind, stamped_run_dir
from ..runs.executors import make_executor
from ..runs.progress import say
from .cell import RANDOM, CellJob, cell_record, read_record, run_cell, with_threads
from .recipe import RESUME_KEYS, Frozen, StudyRecipe, resolve

PathLike = Union[str, Path]
STUDY_RUN = register_run_kind(RunKind("study", noun="study", command="study", checkpoint="plan.json",
                                      artifacts=("plan.json", "runs", "study.md", "study.json", "plots")))


@dataclass
class StudyResult:
    run_dir: Path
    report: dict                 # what study.json holds
    cells: list = field(default_factory=list)    # every cell's record
    failed: list = field(default_factory=list)   # the records of the cells that failed

    @property
    def summary(self) -> str:
        done = sum(c["status"] == "done" for c in self.cells)
        text = f"study {self.report.get('name', '')}: {done}/{len(self.cells)} cells done -> {self.run_dir / 'study.md'}"
        if self.failed:
            first = self.failed[0]
            text += (f"; {len(self.failed)} failed (first: {first['cell']} at its {first['failure']['stage']}: "
                     f"{first['failure']['error']}); `nasnetzoo study --resume {self.run_dir}` runs the failed cells again")
        return text


def plan_jobs(recipe: StudyRecipe, frozen: Frozen, study_dir: Path) -> list[CellJob]:
    """The cells, seed by seed (each seed of every strategy, then the next: a partial study is balanced)."""
    groups = list(frozen.searches) + ([RANDOM] if recipe.random_baseline else [])
    jobs = []
    for seed in recipe.seeds:
        for group in groups:
            jobs.append(CellJob(str(study_dir), f"{group}-seed{seed}", group, int(seed), frozen.searches.get(group),
                                frozen.space, frozen.retrain, dict(recipe.profile), recipe.threads))
    return jobs


def _load(recipe_or_path: Any, overrides: Sequence[str]) -> tuple[StudyRecipe, Optional[Path]]:
    if isinstance(recipe_or_path, (str, Path)):
        path = resolve_recipe(recipe_or_path)
        return StudyRecipe.load(path, overrides), path.resolve().parent
    if not isinstance(recipe_or_path, StudyRecipe):
        raise RecipeError(f"run_study takes a study recipe (a file, or a StudyRecipe), got {type(recipe_or_path).__name__}.")
    return apply_overrides(recipe_or_path, overrides), None


def _resume_overrides(overrides: Sequence[str]) -> None:
    for text in overrides:
        key = parse_assignment(text)[0].partition(".")[0]
        if key not in RESUME_KEYS:
            raise RecipeError(f"--set {text}: a resumed study runs what it started with; on --resume, --set changes "
                              f"only {', '.join(RESUME_KEYS)}. Start a new study (--out) to change {key!r}.")


def _executor(recipe: StudyRecipe):
    """The recipe's executor; ``auto``: one worker per GPU on a GPU machine, else ``workers`` processes."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    workers = recipe.workers or max(gpus, 1)
    devices = list(range(min(workers, gpus))) if gpus > 1 and recipe.executor in ("auto", "process") else []
    return make_executor(run_cell, recipe.executor, workers=workers, prepare=with_threads, devices=devices,
                         ray_address=recipe.ray_address)


def run_study(recipe_or_path: Any = None, out: Optional[PathLike] = None, resume: Optional[PathLike] = None,
              overrides: Sequence[str] = (), *, overwrite: bool = False,
              on_cell_done: Optional[Callable[[dict], None]] = None) -> StudyResult:
    """Run the study a recipe (file or :class:`StudyRecipe`) describes into ``out``, or continue the one
    in ``resume``; ``overrides`` are ``key=value`` strings as ``--set`` takes (on a resume, only the keys
    of how it runs).  ``on_cell_done(record)`` runs after each cell this call ran."""
    base: Optional[Path] = None
    frozen: Optional[Frozen] = None
    if check_resume_args(resume, {"recipe": recipe_or_path is not None, "out": out, "overwrite": overwrite}, cli=False):
        study_dir = Path(resume)
        if not study_dir.is_dir():
            raise RecipeError(f"{study_dir} does not exist; pass the folder that `nasnetzoo study --out` created.")
        check_resumable(study_dir, STUDY_RUN)
        _resume_overrides(overrides)
        recipe = StudyRecipe.load(study_dir / "recipe.yaml", overrides)
    else:
        if recipe_or_path is None:
            raise RecipeError("pass a study recipe (file or object), e.g. recipes/smoke_study.yaml, or resume=DIR.")
        recipe, base = _load(recipe_or_path, overrides)
        frozen = resolve(recipe, base)   # every recipe it names is read and checked before anything is written
        study_dir = Path(out) if out is not None else stamped_run_dir("study", recipe.name)
    run = Run(STUDY_RUN, study_dir, recipe=recipe.to_dict(), resume=resume is not None, overwrite=overwrite, logs=())
    with run:
        if frozen is not None:
            run.write_text("recipe.yaml", recipe.to_yaml())
            run.write_text("plan.json", json.dumps({"frozen": frozen.to_dict()}, indent=1) + "\n")
        else:
            plan = read_record(study_dir / "plan.json")
            if plan is None or "frozen" not in plan:
                raise RecipeError(f"{study_dir}/plan.json is damaged; the study cannot be resumed (start it again "
                                  "with --overwrite).")
            frozen = Frozen.from_dict(plan["frozen"])
        jobs = plan_jobs(recipe, frozen, study_dir)
        _run_cells(run, recipe, jobs, on_cell_done)
        cells = [cell_record(job) for job in jobs]
        from .report import write_report

        report = write_report(study_dir, recipe, frozen, cells)
    return StudyResult(study_dir, report, cells, [c for c in cells if c["status"] == "failed"])


def _run_cells(run: Run, recipe: StudyRecipe, jobs: list, on_cell_done) -> None:
    pending = [job for job in jobs if cell_record(job)["status"] != "done"]
    done = len(jobs) - len(pending)
    run.position = f"{done}/{len(jobs)} cells"
    if not pending:
        return
    say(f"study {recipe.name}: {len(pending)} of {len(jobs)} cells to run -> {run.path}")
    executor = _executor(recipe)
    try:
        for record in executor.imap(pending):
            done += record["status"] == "done"
            run.position = f"{done}/{len(jobs)} cells"
            say(_cell_line(record, done, len(jobs)))
            if on_cell_done is not None:
                on_cell_done(record)
    except BaseException:   # Ctrl-C, SIGTERM, a worker that died: stop the others at their checkpoints
        executor.close(interrupted=True)
        raise
    executor.close()


def _cell_line(record: dict, done: int, total: int) -> str:
    if record["status"] != "done":
        failure = record["failure"]
        return f"[{done}/{total}] {record['cell']} FAILED at its {failure['stage']}: {failure['error']}"
    search, retrain = record["search"], record["retrain"]
    acc = retrain.get("val_acc")
    return (f"[{done}/{total}] {record['cell']}: proxy acc {acc:.2f}% (search {search['seconds']:.0f} s, "
            f"retrain {retrain['seconds']:.0f} s)" if acc is not None else f"[{done}/{total}] {record['cell']} done")


__all__ = ["STUDY_RUN", "StudyResult", "plan_jobs", "run_study"]
