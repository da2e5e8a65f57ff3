"""A retrain run: recipe + architecture -> run directory with logs, checkpoints and weights.

Run directory layout::

    RUN/recipe.yaml              the resolved recipe (after --set), what --resume reads
    RUN/model.json               arch, architecture, builder config and the nasnetzoo.load call
    RUN/genotype.yaml            the trained cell (so nasnetzoo.load("RUN") works too)
    RUN/metrics.jsonl            JSON lines: {"kind": "epoch", "epoch", "val_acc", ...} and step records
    RUN/checkpoints/last.pt      full training state after the latest epoch (atomic)
    RUN/checkpoints/best.pt      the same for the epoch with the best val_acc
    RUN/weights/best.safetensors, RUN/weights/final.safetensors   inference weights

The run directory's lock, resume, RNG states, commits and logs are the run envelope's
(``envelope.py``).  A kill at any point leaves ``last.pt`` of the last finished epoch with the
metrics records up to it and the best weights it refers to; ``--resume RUN`` continues from it and,
on the same hardware and process count, ends with the same weights and log as an uninterrupted run
(model, optimizer, schedule, EMA and every RNG state are restored; data order is a function of
seed and epoch).
"""
from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from ..errors import CheckpointError
from ..threads import CoreShare, share_cores
from ..runs import distributed as D
from .artifacts import builder_defaults, inference_config, load_call, save_weights, write_json
from ..runs.checkpoint import atomic_save, seed_everything
from ..data.datasets import build_data
from .engine import DropPathSchedule, Trainer, configure_determinism, resolve_speed
from ..runs.envelope import (Run, RunInterrupted, RunKind, check_finite, check_resumable, register_run_kind,
                             run_dir_for, sigterm_as_interrupt)
from ..runs.optim import optimizer_from_recipe, schedule_from_recipe
from ..runs.progress import RunProgress, format_seconds, say
from .recipe import Recipe, RecipeError, apply_overrides, read_recipe_file

PathLike = Union[str, Path]
TrainingInterrupted = RunInterrupted   # Ctrl-C or SIGTERM; the message says how to resume
TRAIN_RUN = register_run_kind(RunKind("train", noun="training run", command="train",
                                      checkpoint="checkpoints/last.pt",
                                      artifacts=("model.json", "genotype.yaml", "metrics.jsonl", "checkpoints", "weights")))


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int
    val_acc: Optional[float]
    val_top5: Optional[float]
    best_val_acc: Optional[float]
    best_epoch: Optional[int]
    final_weights: Optional[Path]
    best_weights: Optional[Path]
    load_call: str
    seconds: float
    history: list = field(default_factory=list)


def network_dataset(dataset: str) -> str:
    """The zoo network a dataset trains: CIFAR-sized for CIFAR and digits, ImageNet otherwise."""
    return {"digits": "cifar10"}.get(dataset, dataset)


def model_spec(arch: str, recipe: Recipe, num_classes: int):
    from ..factory import resolve

    overrides = {"num_classes": num_classes, **recipe.model}
    if recipe.auxiliary:
        overrides["auxiliary"] = True
    return resolve(arch, dataset=network_dataset(recipe.dataset), **overrides)


def drop_path_schedule_for(recipe: Recipe, genotype) -> str:
    """``auto``: NASNet's ScheduledDropPath for nasnet-family cells (the TF networks' own schedule),
    DARTS's per-epoch linear ramp for DARTS-family ones."""
    if recipe.drop_path_schedule != "auto":
        return recipe.drop_path_schedule
    return "scheduled" if genotype.family == "nasnet" else "linear"


def default_run_dir(recipe: Recipe, arch: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    tag = Path(arch).stem if ("/" in arch or arch.endswith((".yaml", ".yml"))) else arch
    return Path("runs") / f"train-{recipe.name}-{tag}-{stamp}"


def _say(info: D.DistInfo, text: str, enabled: bool = True) -> None:
    if info.is_main and enabled:
        say(text)


def prepare_resume(run_dir: PathLike, overrides: Sequence[str] = ()) -> tuple[Recipe, str]:
    """The recipe (with ``overrides``) and arch recorded in a run directory, checked for resuming."""
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file() or not (run_dir / "model.json").is_file():
        raise CheckpointError(f"{str(run_dir)!r} is not a nasnetzoo training run directory (no recipe.yaml / "
                              "model.json); pass the --out folder of an earlier `nasnetzoo train`.")
    check_resumable(run_dir, TRAIN_RUN)
    recipe = apply_overrides(read_recipe_file(Recipe, run_dir / "recipe.yaml"), overrides)
    try:
        info = json.loads((run_dir / "model.json").read_text())
        return recipe, str(info["train_arch"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{run_dir}/model.json is damaged (no 'train_arch'); the run cannot be "
                              "resumed.") from None


def train(recipe: Recipe, arch: Optional[str] = None, *, out: Optional[PathLike] = None,
          resume: Optional[PathLike] = None, on_epoch_end: Optional[Callable[[dict], None]] = None,
          overwrite: bool = False) -> TrainResult:
    """Train ``arch`` (registry name or genotype file) with ``recipe``; see the module docstring.

    ``resume``: a run directory to continue (its recipe.yaml and arch are used; ``recipe``/``arch``
    may be None).  ``on_epoch_end(record)`` runs after each epoch's checkpoint is on disk.
    ``overwrite``: replace another run in ``out`` (otherwise refused).
    Under torchrun, every process calls this; rank 0 writes the files.
    """
    if resume is not None and (recipe is None or arch is None):
        recipe, arch = prepare_resume(resume)
    info = D.setup(recipe.device if recipe is not None else "auto")
    owns_group = info.distributed
    try:
        return _train(info, recipe, arch, out, resume, on_epoch_end, overwrite)
    finally:
        if owns_group:
            D.teardown()


@dataclass
class _Loop:
    """What a retrain builds before its first step, and what it tracks across epochs."""
    info: D.DistInfo
    recipe: Recipe
    arch: str
    spec: Any
    data: Any
    trainer: Trainer
    steps_per_epoch: int
    drop_path_kind: str
    cores: Optional[CoreShare] = None   # follows the free cores between steps (None: a fixed thread count)
    best_acc: Optional[float] = None
    best_epoch: Optional[int] = None
    last_val: dict = field(default_factory=dict)

    @property
    def provenance(self) -> dict:
        return {"recipe": self.recipe.name, "seed": self.recipe.seed, "trained_on": self.recipe.dataset,
                "arch": self.arch, "image_size": self.recipe.image_size}   # artifacts moves it to `input`


def _train(info, recipe, arch, out, resume, on_epoch_end, overwrite) -> TrainResult:
    t_start = time.perf_counter()
    if resume is None:
        arch = recipe.arch if arch is None else arch
        if not arch.strip():
            raise RecipeError("no architecture: pass --arch NAME|GENOTYPE_FILE or set `arch:` in the recipe.")
    run_dir = run_dir_for(resume, out, lambda: default_run_dir(recipe, arch))
    run_dir = Path(D.broadcast_object(str(run_dir)))
    loop = _build(info, recipe, arch)
    run = Run(TRAIN_RUN, run_dir, recipe=recipe.replace(arch=arch).to_dict(), resume=resume is not None,
              overwrite=overwrite, info=info)
    with run:
        _start(run, loop)
        trainer = loop.trainer
        progress = RunProgress(recipe.epochs, loop.steps_per_epoch, enabled=recipe.progress and info.is_main,
                               done_steps=trainer.step, world=info.world)
        try:
            while trainer.epoch < recipe.epochs:
                record = _train_epoch(run, loop, progress)
                _commit_epoch(run, loop, record)
                progress.end_epoch(_summary(loop, record))
                if on_epoch_end is not None:
                    on_epoch_end(record)
        finally:
            progress.end_epoch()
        final_path = _finish(run, loop)
    best_path = run_dir / "weights" / "best.safetensors"
    history = [r for r in run.records["metrics.jsonl"] if r.get("kind") == "epoch"] if info.is_main else []
    return TrainResult(run_dir, trainer.epoch, loop.last_val.get("top1"), loop.last_val.get("top5"), loop.best_acc,
                       loop.best_epoch, final_path, best_path if best_path.exists() else None,
                       _load_call(run_dir, loop.spec), time.perf_counter() - t_start, history)


def _build(info: D.DistInfo, recipe: Recipe, arch: str) -> _Loop:
    """Data, model, optimizer, schedule and trainer, checked against the recipe."""
    configure_determinism(recipe.deterministic, info.device)
    cores = share_cores(recipe.threads, info.device, report=say if recipe.progress and info.is_main else None)
    world, accum = info.world, recipe.accum_steps
    if recipe.batch_size % (world * accum):
        raise RecipeError(f"batch_size={recipe.batch_size} is not divisible by processes x accum_steps = "
                          f"{world} x {accum}; pick a batch size that is.")
    micro = recipe.batch_size // (world * accum)
    seed_everything(recipe.seed)   # same initial weights on every rank
    data = build_data(recipe, micro_batch=micro, device=info.device, rank=info.rank, world=world)
    spec = model_spec(arch, recipe, data.num_classes)
    model = spec.build()
    seed_everything(recipe.seed + 7919 * info.rank + 1)   # per-rank stream for augmentation and drop path
    batches = len(data.train)
    if batches < accum:
        raise RecipeError(f"the training set gives {batches} batches of {micro} per process, fewer than "
                          f"accum_steps={accum}; lower batch_size.")
    steps_per_epoch = batches // accum
    if recipe.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, recipe.max_steps_per_epoch)
    optimizer = optimizer_from_recipe(model, recipe)
    schedule = schedule_from_recipe(optimizer, recipe, steps_per_epoch)
    amp, channels_last = resolve_speed(recipe, info.device)
    kind = drop_path_schedule_for(recipe, spec.genotype)
    trainer = Trainer(model, optimizer, schedule, device=info.device, amp=amp, channels_last=channels_last,
                      compile=recipe.compile, grad_clip=recipe.grad_clip, accum_steps=accum,
                      label_smoothing=recipe.label_smoothing,
                      aux_weight=recipe.aux_weight if recipe.auxiliary else 0.0, ema_decay=recipe.ema_decay,
                      drop_path=DropPathSchedule(recipe.drop_path, kind, recipe.epochs, steps_per_epoch),
                      dist=info, sync_bn=recipe.sync_bn)
    return _Loop(info, recipe, arch, spec, data, trainer, steps_per_epoch, kind, cores)


def _weights_arch(run_dir: Path, spec) -> str:
    return str(run_dir / "genotype.yaml") if spec.entry is None else spec.entry.name


def _load_call(run_dir: Path, spec) -> str:
    return load_call(_weights_arch(run_dir, spec), str(run_dir / "weights" / "best.safetensors"),
                     inference_config(spec), builder_defaults(spec))


def _params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("auxiliary_head."))


def _start(run: Run, loop: _Loop) -> None:
    """Resume from the checkpoint, or write the new run's description files; then say what runs."""
    info, recipe, trainer, spec, data = loop.info, loop.recipe, loop.trainer, loop.spec, loop.data
    state = run.load("cpu")
    if state is not None:
        run.restore("model", lambda: trainer.load_state_dict(state))
        loop.best_acc, loop.best_epoch = state.get("best_acc"), state.get("best_epoch")
        run.position = f"epoch {trainer.epoch}/{recipe.epochs}"
        if not run.restore_rng(state):
            seed_everything(recipe.seed + 7919 * info.rank + 1 + 104729 * trainer.epoch)
            _say(info, f"note: resuming with {info.world} processes where the run had {len(state.get('rng') or [])}; "
                       "the data order is the same but random augmentation differs from an uninterrupted run.")
        run.write_text("recipe.yaml", recipe.replace(arch=loop.arch).to_yaml())
        _say(info, f"resuming {run.path} after epoch {trainer.epoch}/{recipe.epochs}", recipe.progress)
    else:
        run.write_text("recipe.yaml", recipe.replace(arch=loop.arch).to_yaml())
        run.write_text("genotype.yaml", spec.genotype.to_yaml())
        if info.is_main:
            write_json(run.path / "model.json", {
                "arch": _weights_arch(run.path, spec), "train_arch": loop.arch, "architecture": spec.architecture.name,
                "dataset": spec.dataset, "trained_on": recipe.dataset, "config": inference_config(spec),
                "params": _params(trainer.model), "mean": list(data.mean), "std": list(data.std),
                "image_size": recipe.image_size, "load": _load_call(run.path, spec),
                "weights": {"best": "weights/best.safetensors", "final": "weights/final.safetensors"},
                "note": "weights exclude the auxiliary head (training only); checkpoints/*.pt keep it"})
    D.barrier()
    extras = (f", aux head x{recipe.aux_weight}" if recipe.auxiliary else "") + \
        (f", drop path {recipe.drop_path} ({loop.drop_path_kind})" if recipe.drop_path else "")
    amp, channels_last = resolve_speed(recipe, info.device)
    _say(info, f"train {spec.name} ({_params(trainer.model) / 1e6:.3f}M params, "
               f"{', '.join(f'{k}={v}' for k, v in spec.config.items())}{extras}) "
               f"on {data.description}; {data.train_size} train / {data.val_size} val images, {recipe.epochs} epochs "
               f"x {loop.steps_per_epoch} steps of {recipe.batch_size}; {info.device.type} x{info.world}"
               f"{', bf16' if amp else ''}{', channels_last' if channels_last else ''}"
               f"{', compile' if recipe.compile else ''} -> {run.path}", recipe.progress)


def _train_epoch(run: Run, loop: _Loop, progress: RunProgress) -> dict:
    """One epoch of training (and validation when due): its metrics record."""
    recipe, trainer = loop.recipe, loop.trainer
    epoch = trainer.epoch
    progress.start_epoch(epoch)
    drop_path = trainer.drop_path.value(epoch, trainer.step)

    def on_step(step_info) -> None:
        if loop.cores is not None:
            loop.cores.update()
        progress.on_step(step_info)
        if loop.info.is_main and step_info["step"] % recipe.log_every == 0:
                run.log({"kind": "step", "epoch": epoch + 1, "step": step_info["step"], "loss": step_info["loss"],
                         "acc": step_info["acc"], "lr": step_info["lr"]})

    lr = trainer.lr
    stats = trainer.train_epoch(loop.data.train, max_steps=loop.steps_per_epoch, on_step=on_step)
    check_finite(stats["train_loss"], f"epoch {epoch + 1}", run)
    record: dict[str, Any] = {"kind": "epoch", "epoch": trainer.epoch, "step": trainer.step, "lr": lr,
                              "drop_path": drop_path, **{k: stats[k] for k in
                                                         ("train_loss", "train_acc", "epoch_time", "img_per_s")}}
    if trainer.epoch % recipe.eval_every == 0 or trainer.epoch == recipe.epochs:
        loop.last_val = trainer.evaluate(loop.data.val)
        record.update(val_loss=loop.last_val["loss"], val_acc=loop.last_val["top1"], val_top5=loop.last_val["top5"])
        if trainer.ema is not None:
            ema_val = trainer.evaluate(loop.data.val, trainer.ema.module)
            record.update(ema_val_acc=ema_val["top1"], ema_val_top5=ema_val["top5"])
    return record


def _commit_epoch(run: Run, loop: _Loop, record: dict) -> None:
    """The checkpoint with the epoch's record; a new best's files are staged with it."""
    trainer, recipe = loop.trainer, loop.recipe
    is_best = "val_acc" in record and (loop.best_acc is None or record["val_acc"] > loop.best_acc)
    if is_best:
        loop.best_acc, loop.best_epoch = record["val_acc"], trainer.epoch
    record["best_val_acc"] = loop.best_acc
    state = {**trainer.state_dict(), "best_acc": loop.best_acc, "best_epoch": loop.best_epoch,
             "recipe": recipe.to_dict(), "arch": loop.arch, "world": loop.info.world}
    staged = {}
    if is_best:
        metrics = {"val_acc": record["val_acc"], "val_top5": record["val_top5"], "epoch": trainer.epoch,
                   "dataset": recipe.dataset}
        staged[run.path / "checkpoints" / "best.pt"] = lambda path: atomic_save(state, path)
        staged[run.path / "weights" / "best.safetensors"] = lambda path: save_weights(
            trainer.model, path, loop.spec, metrics=metrics, provenance={**loop.provenance, "run": str(run.path)})
    run.save(state, f"epoch {trainer.epoch}/{recipe.epochs}", staged=staged, records={"metrics.jsonl": [record]})


def _summary(loop: _Loop, record: dict) -> str:
    val = (f"val_acc {record['val_acc']:.2f}% (top-5 {record['val_top5']:.2f}%)" if "val_acc" in record
           else "no validation")
    return (f"epoch {record['epoch']}/{loop.recipe.epochs}: loss {record['train_loss']:.4f} "
            f"acc {record['train_acc']:.2f}%  {val}  {record['img_per_s']:.0f} img/s  "
            f"{format_seconds(record['epoch_time'])}")


def _finish(run: Run, loop: _Loop) -> Path:
    """The final weights (and the EMA's), after the last epoch."""
    trainer, recipe = loop.trainer, loop.recipe
    if not loop.last_val:   # resumed after the last epoch, or eval_every skipped it
        loop.last_val = trainer.evaluate(loop.data.val)
    final_path = run.path / "weights" / "final.safetensors"
    provenance = {**loop.provenance, "run": str(run.path)}
    if loop.info.is_main:
        metrics = {"val_acc": loop.last_val.get("top1"), "val_top5": loop.last_val.get("top5"),
                   "epoch": trainer.epoch, "dataset": recipe.dataset}
        save_weights(trainer.model, final_path, loop.spec, metrics=metrics, provenance=provenance)
        if trainer.ema is not None:
            save_weights(trainer.ema.module, run.path / "weights" / "final_ema.safetensors", loop.spec,
                         provenance=provenance)
    D.barrier()
    return final_path


__all__ = ["TrainResult", "TrainingInterrupted", "drop_path_schedule_for", "model_spec", "network_dataset",
           "prepare_resume", "sigterm_as_interrupt", "train"]
