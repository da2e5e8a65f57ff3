"""A retrain run: recipe + architecture -> run directory with logs, checkpoints and weights.

Run directory layout::

    RUN/recipe.yaml              the resolved recipe (after --set), what --resume reads
    RUN/model.json               arch, network, builder config and the nasnetzoo.load call
    RUN/genotype.yaml            the trained cell (so nasnetzoo.load("RUN") works too)
    RUN/metrics.jsonl            JSON lines: {"kind": "epoch", "epoch", "val_acc", ...} and step records
    RUN/checkpoints/last.pt      full training state after the latest epoch (atomic)
    RUN/checkpoints/best.pt      the same for the epoch with the best val_acc
    RUN/weights/best.safetensors, RUN/weights/final.safetensors   inference weights

A kill at any point leaves ``last.pt`` of the last finished epoch; ``--resume RUN`` continues from
it and, on the same hardware and process count, ends with the same weights as an uninterrupted run
(model, optimizer, schedule, EMA and every RNG state are restored; data order is a function of
seed and epoch).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from ..errors import NasNetZooError
from . import distributed as D
from .artifacts import builder_defaults, inference_config, load_call, save_weights, write_json
from .checkpoint import CheckpointError, atomic_save, load_checkpoint, rng_state, seed_everything, set_rng_state
from .data import build_data
from .engine import DropPathSchedule, Trainer, configure_determinism, resolve_speed
from .optim import optimizer_from_recipe, schedule_from_recipe
from .progress import MetricsLog, RunProgress, format_seconds, say
from .recipe import Recipe, RecipeError, apply_overrides, read_recipe_file

PathLike = Union[str, Path]


class TrainingInterrupted(NasNetZooError):
    """Ctrl-C or SIGTERM: the run directory holds the last finished epoch and can be resumed."""


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


@contextlib.contextmanager
def sigterm_as_interrupt():
    """``kill`` (SIGTERM) ends the run like Ctrl-C: between two checkpoints, nothing half-written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _say(info: D.DistInfo, text: str, enabled: bool = True) -> None:
    if info.is_main and enabled:
        say(text)


def _gather_rng(info: D.DistInfo) -> list:
    state = rng_state()
    if not info.distributed:
        return [state]
    gathered: list = [None] * info.world
    torch.distributed.all_gather_object(gathered, state)
    return gathered


def prepare_resume(run_dir: PathLike, overrides: Sequence[str] = ()) -> tuple[Recipe, str]:
    """The recipe (with ``overrides``) and arch recorded in a run directory, checked for resuming."""
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file() or not (run_dir / "model.json").is_file():
        raise CheckpointError(f"{str(run_dir)!r} is not a nasnetzoo training run directory (no recipe.yaml / "
                              "model.json); pass the --out folder of an earlier `nasnetzoo train`.")
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise CheckpointError(f"{run_dir} has no checkpoints/last.pt (it stopped before finishing an epoch); "
                              "start it again without --resume.")
    recipe = apply_overrides(read_recipe_file(Recipe, run_dir / "recipe.yaml"), overrides)
    info = json.loads((run_dir / "model.json").read_text())
    return recipe, info["train_arch"]


def train(recipe: Recipe, arch: Optional[str] = None, *, out: Optional[PathLike] = None,
          resume: Optional[PathLike] = None, on_epoch_end: Optional[Callable[[dict], None]] = None,
          overwrite: bool = False) -> TrainResult:
    """Train ``arch`` (registry name or genotype file) with ``recipe``; see the module docstring.

    ``resume``: a run directory to continue (its recipe.yaml and arch are used; ``recipe``/``arch``
    may be None).  ``on_epoch_end(record)`` runs after each epoch's checkpoint is on disk.
    Under torchrun, every process calls this; rank 0 writes the files.
    """
    info = D.setup(recipe.device if recipe is not None else "auto")
    owns_group = info.distributed
    try:
        with sigterm_as_interrupt():
            return _train(info, recipe, arch, out, resume, on_epoch_end, overwrite)
    finally:
        if owns_group:
            D.teardown()


def _train(info, recipe, arch, out, resume, on_epoch_end, overwrite) -> TrainResult:
    t_start = time.perf_counter()
    if resume is not None:
        run_dir = Path(resume)
        if recipe is None or arch is None:
            recipe, arch = prepare_resume(run_dir)
    else:
        arch = arch or recipe.arch
        if not arch:
            raise RecipeError("no architecture: pass --arch NAME|GENOTYPE_FILE or set `arch:` in the recipe.")
        run_dir = Path(out) if out is not None else default_run_dir(recipe, arch)
        run_dir = Path(D.broadcast_object(str(run_dir)))
        if (run_dir / "checkpoints" / "last.pt").exists() and not overwrite:
            raise CheckpointError(f"{run_dir} already holds a training run; continue it with --resume {run_dir} "
                                  "or pass another --out.")

    configure_determinism(recipe.deterministic, info.device)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
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
    drop_path_kind = drop_path_schedule_for(recipe, spec.genotype)
    trainer = Trainer(model, optimizer, schedule, device=info.device, amp=amp, channels_last=channels_last,
                      compile=recipe.compile, grad_clip=recipe.grad_clip, accum_steps=accum,
                      label_smoothing=recipe.label_smoothing,
                      aux_weight=recipe.aux_weight if recipe.auxiliary else 0.0, ema_decay=recipe.ema_decay,
                      drop_path=DropPathSchedule(recipe.drop_path, drop_path_kind, recipe.epochs, steps_per_epoch),
                      dist=info, sync_bn=recipe.sync_bn)

    ckpt_dir, weights_dir = run_dir / "checkpoints", run_dir / "weights"
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=info.is_main)
    config = inference_config(spec)
    weights_arch = str(run_dir / "genotype.yaml") if spec.entry is None else spec.entry.name
    call = load_call(weights_arch, str(weights_dir / "best.safetensors"), config, builder_defaults(spec))
    best_acc, best_epoch = None, None
    if resume is not None:
        state = load_checkpoint(ckpt_dir / "last.pt", map_location="cpu")
        trainer.load_state_dict(state)
        best_acc, best_epoch = state.get("best_acc"), state.get("best_epoch")
        rngs = state.get("rng") or []
        if len(rngs) == world:
            set_rng_state(rngs[info.rank])
        else:
            seed_everything(recipe.seed + 7919 * info.rank + 1 + 104729 * trainer.epoch)
            _say(info, f"note: resuming with {world} processes where the run had {len(rngs)}; the data order "
                       "is the same but random augmentation differs from an uninterrupted run.")
        log.truncate_after(trainer.epoch)
        if info.is_main:
            (run_dir / "recipe.yaml").write_text(recipe.replace(arch=arch).to_yaml())
        _say(info, f"resuming {run_dir} after epoch {trainer.epoch}/{recipe.epochs}", recipe.progress)
    elif info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(recipe.replace(arch=arch).to_yaml())
        (run_dir / "genotype.yaml").write_text(spec.genotype.to_yaml())
        if log.path.exists():
            log.path.unlink()
        n_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("auxiliary_head."))
        write_json(run_dir / "model.json", {
            "arch": weights_arch, "train_arch": arch, "network": spec.arch.name, "dataset": spec.dataset,
            "trained_on": recipe.dataset, "config": config, "params": n_params,
            "mean": list(data.mean), "std": list(data.std), "image_size": recipe.image_size,
            "load": call, "weights": {"best": "weights/best.safetensors", "final": "weights/final.safetensors"},
            "note": "weights exclude the auxiliary head (training only); checkpoints/*.pt keep it"})
    D.barrier()

    n_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("auxiliary_head."))
    extras = (f", aux head x{recipe.aux_weight}" if recipe.auxiliary else "") + \
        (f", drop path {recipe.drop_path} ({drop_path_kind})" if recipe.drop_path else "")
    _say(info, f"train {spec.name} ({n_params / 1e6:.3f}M params, {', '.join(f'{k}={v}' for k, v in spec.config.items())}"
               f"{extras}) "
               f"on {data.description}; {data.train_size} train / {data.val_size} val images, {recipe.epochs} epochs "
               f"x {steps_per_epoch} steps of {recipe.batch_size}; {info.device.type} x{world}"
               f"{', bf16' if amp else ''}{', channels_last' if channels_last else ''}"
               f"{', compile' if recipe.compile else ''} -> {run_dir}", recipe.progress)
    progress = RunProgress(recipe.epochs, steps_per_epoch, enabled=recipe.progress and info.is_main,
                           done_steps=trainer.step, world=world)
    provenance = {"recipe": recipe.name, "seed": recipe.seed, "trained_on": recipe.dataset, "run": str(run_dir),
                  "arch": arch}
    history = [r for r in log.read() if r.get("kind") == "epoch"] if info.is_main else []
    last_val: dict = {}
    interrupted = False
    try:
        while trainer.epoch < recipe.epochs:
            epoch = trainer.epoch
            progress.start_epoch(epoch)
            drop_path = trainer.drop_path.value(epoch, trainer.step)

            def on_step(step_info: dict) -> None:
                progress.on_step(step_info)
                if info.is_main and step_info["step"] % recipe.log_every == 0:
                    log.write({"kind": "step", "epoch": epoch + 1, "step": step_info["step"],
                               "loss": step_info["loss"], "acc": step_info["acc"], "lr": step_info["lr"]})

            lr = trainer.lr
            stats = trainer.train_epoch(data.train, max_steps=steps_per_epoch, on_step=on_step)
            record: dict[str, Any] = {"kind": "epoch", "epoch": trainer.epoch, "step": trainer.step, "lr": lr,
                                      "drop_path": drop_path, **{k: stats[k] for k in
                                                                 ("train_loss", "train_acc", "epoch_time",
                                                                  "img_per_s")}}
            if trainer.epoch % recipe.eval_every == 0 or trainer.epoch == recipe.epochs:
                last_val = trainer.evaluate(data.val)
                record.update(val_loss=last_val["loss"], val_acc=last_val["top1"], val_top5=last_val["top5"])
                if trainer.ema is not None:
                    ema_val = trainer.evaluate(data.val, trainer.ema.module)
                    record.update(ema_val_acc=ema_val["top1"], ema_val_top5=ema_val["top5"])
            is_best = "val_acc" in record and (best_acc is None or record["val_acc"] > best_acc)
            if is_best:
                best_acc, best_epoch = record["val_acc"], trainer.epoch
            record["best_val_acc"] = best_acc
            record["elapsed"] = time.perf_counter() - t_start
            rngs = _gather_rng(info)
            if info.is_main:
                history.append(record)
                state = {**trainer.state_dict(), "rng": rngs, "best_acc": best_acc, "best_epoch": best_epoch,
                         "recipe": recipe.to_dict(), "arch": arch, "world": world}
                atomic_save(state, ckpt_dir / "last.pt")
                if is_best:
                    atomic_save(state, ckpt_dir / "best.pt")
                    save_weights(trainer.model, weights_dir / "best.safetensors", spec,
                                 metrics={"val_acc": record["val_acc"], "val_top5": record["val_top5"],
                                          "epoch": trainer.epoch, "dataset": recipe.dataset},
                                 provenance=provenance)
                # Logged only once its checkpoint is on disk: a kill in between never leaves a log
                # that claims an epoch the run directory cannot resume from.
                log.write(record)
            val_text = (f"val_acc {record['val_acc']:.2f}% (top-5 {record['val_top5']:.2f}%)"
                        if "val_acc" in record else "no validation")
            progress.end_epoch(f"epoch {trainer.epoch}/{recipe.epochs}: loss {stats['train_loss']:.4f} "
                               f"acc {stats['train_acc']:.2f}%  {val_text}  {stats['img_per_s']:.0f} img/s  "
                               f"{format_seconds(stats['epoch_time'])}")
            if on_epoch_end is not None:
                on_epoch_end(record)
    except KeyboardInterrupt:
        interrupted = True
        progress.end_epoch()
    if interrupted:
        raise TrainingInterrupted(f"interrupted after epoch {trainer.epoch}/{recipe.epochs}; the run directory "
                                  f"holds its checkpoint: continue with `nasnetzoo train --resume {run_dir}`.")

    if not last_val:   # resumed after the last epoch, or eval_every skipped it
        last_val = trainer.evaluate(data.val)
    final_path = weights_dir / "final.safetensors"
    if info.is_main:
        metrics = {"val_acc": last_val.get("top1"), "val_top5": last_val.get("top5"), "epoch": trainer.epoch,
                   "dataset": recipe.dataset}
        save_weights(trainer.model, final_path, spec, metrics=metrics, provenance=provenance)
        if trainer.ema is not None:
            save_weights(trainer.ema.module, weights_dir / "final_ema.safetensors", spec, provenance=provenance)
    D.barrier()
    best_path = weights_dir / "best.safetensors"
    return TrainResult(run_dir, trainer.epoch, last_val.get("top1"), last_val.get("top5"), best_acc, best_epoch,
                       final_path, best_path if best_path.exists() else None, call,
                       time.perf_counter() - t_start, history)


__all__ = ["TrainResult", "TrainingInterrupted", "drop_path_schedule_for", "model_spec", "network_dataset",
           "prepare_resume", "sigterm_as_interrupt", "train"]
