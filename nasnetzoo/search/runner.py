"""A search run: recipe -> data -> supernet + strategy -> genotype file (+ history), resumable.

The run directory holds::

    recipe.yaml          the resolved recipe
    metrics.jsonl        one record per epoch (train loss/acc, held-out acc, lr, collapse guard)
    history.json         per epoch: the architecture distribution (alphas/betas or pi) and genotype
    genotypes/epoch_NNN.yaml
    alphas.png           op weights per edge over the epochs
    checkpoint.pt        written atomically after every epoch; ``--resume`` continues exactly
    genotype.yaml        the final genotype, which ``nasnetzoo.load`` and ``nasnetzoo train`` accept

Under torchrun every rank computes, gradients of weights and architecture parameters are averaged
across ranks, and rank 0 writes the files.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
import torch.distributed as dist

from .. import __version__
from ..threads import configure_threads
from ..errors import NasNetZooError
from ..genotype import Genotype
from ..train import distributed as D
from ..train.checkpoint import CheckpointError, atomic_save, load_checkpoint, rng_state, seed_everything, set_rng_state
from ..train.optim import LRSchedule, build_optimizer
from ..train.progress import MetricsLog, RunProgress, say
from .data import build_search_data
from .history import SearchHistory, plot_history
from .recipe import SearchRecipe, load_search_recipe
from .strategies import STRATEGIES, SearchStrategy
from .supernet import SearchNetwork

PathLike = Union[str, Path]
CHECKPOINT = "checkpoint.pt"


@dataclass
class SearchResult:
    run_dir: Path
    genotype: Genotype
    epochs_done: int
    val_acc: float


def default_run_dir(recipe: SearchRecipe) -> Path:
    return Path("runs") / f"search-{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_strategy(recipe: SearchRecipe, network: SearchNetwork) -> SearchStrategy:
    common = dict(arch_lr=recipe.arch_lr, arch_betas=recipe.arch_betas, arch_weight_decay=recipe.arch_weight_decay,
                  grad_clip=recipe.grad_clip or None)
    if recipe.strategy == "parsec":
        # Its own generator, seeded alike on every rank: all ranks sample the same architectures.
        generator = torch.Generator(device="cpu").manual_seed(recipe.seed)
        return STRATEGIES["parsec"](network, num_samples=recipe.parsec_samples, generator=generator, **common)
    return STRATEGIES[recipe.strategy](network, second_order=recipe.second_order, **common)


def build_network(recipe: SearchRecipe, num_classes: int) -> SearchNetwork:
    return SearchNetwork(C=recipe.C, layers=recipe.layers, num_classes=num_classes, steps=recipe.steps,
                         stem=recipe.stem, partial_k=recipe.partial_k,
                         edge_norm=recipe.edge_norm and recipe.strategy != "parsec", memory=recipe.memory)


def _broadcast_parameters(network: torch.nn.Module) -> None:
    if dist.is_initialized():
        for t in list(network.parameters()) + list(network.buffers()):
            dist.broadcast(t.data, src=0)


def search(recipe: SearchRecipe, *, out: Optional[PathLike] = None, resume: Optional[PathLike] = None,
           recipe_path: str = "", on_epoch_end: Optional[Callable[[int], bool]] = None) -> SearchResult:
    """Run (or resume) a search.  ``on_epoch_end(epoch)`` may return True to stop after that epoch."""
    configure_threads(recipe.threads)
    info = D.setup(recipe.device)
    try:
        return _search(info, recipe, out, resume, recipe_path, on_epoch_end)
    finally:
        D.teardown()


def prepare_resume(run_dir: PathLike, overrides: Sequence[str] = ()) -> SearchRecipe:
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise CheckpointError(f"{run_dir} is not a search run directory (no recipe.yaml); pass the folder "
                              "that `nasnetzoo search --out` created.")
    return load_search_recipe(run_dir / "recipe.yaml", overrides)


def _search(info, recipe, out, resume, recipe_path, on_epoch_end) -> SearchResult:
    device = info.device
    run_dir = Path(resume) if resume is not None else Path(out) if out is not None else default_run_dir(recipe)
    run_dir = Path(D.broadcast_object(str(run_dir)))
    checkpoint_path = run_dir / CHECKPOINT
    if resume is None and checkpoint_path.exists():
        raise NasNetZooError(f"{run_dir} already holds a search; resume it with --resume {run_dir} or choose "
                             "another --out.")
    if info.world > 1 and recipe.batch_size % info.world:
        raise NasNetZooError(f"batch_size {recipe.batch_size} does not split over {info.world} processes; "
                             f"use a multiple of {info.world}.")
    seed_everything(recipe.seed)
    data = build_search_data(recipe, micro_batch=recipe.batch_size // info.world, device=device,
                             rank=info.rank, world=info.world)
    network = build_network(recipe, data.num_classes).to(device)
    _broadcast_parameters(network)
    strategy = build_strategy(recipe, network)
    if recipe.amp == "bf16" or (recipe.amp == "auto" and device.type == "cuda"):
        strategy.autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    optimizer = build_optimizer(network.weight_parameters(), "sgd", lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    steps_per_epoch = min(len(data.weights), len(data.arch))
    if recipe.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, recipe.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise NasNetZooError(f"batch_size {recipe.batch_size} is larger than each half of the {recipe.dataset} "
                             "training split; lower it (--set batch_size=...).")
    schedule = LRSchedule(optimizer, kind="cosine", base_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch,
                          steps_per_epoch=steps_per_epoch, lr_min=recipe.lr_min,
                          warmup_steps=int(round(recipe.lr_warmup_epochs * steps_per_epoch)))

    history, start_epoch = SearchHistory(), 0
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=info.is_main)
    if resume is not None:
        state = load_checkpoint(checkpoint_path, map_location=device)
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        strategy.load_state_dict(state["strategy"])
        history = SearchHistory(state["history"])
        start_epoch = int(state["epoch"]) + 1
        set_rng_state(state["rng"][info.rank] if info.rank < len(state["rng"]) else None)
        log.truncate_after(start_epoch - 1)
    else:
        if recipe.init_distribution:
            source = load_checkpoint(Path(recipe.init_distribution) / CHECKPOINT)
            strategy.init_distribution(source["strategy"]["pi"])
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
    D.barrier()

    progress = RunProgress(recipe.epochs, steps_per_epoch, enabled=recipe.progress and info.is_main,
                           done_steps=start_epoch * steps_per_epoch, world=info.world)
    if info.is_main and recipe.progress:
        say(f"search {recipe.strategy} on {data.description}; {sum(p.numel() for p in network.weight_parameters()) / 1e6:.2f}M "
             f"supernet weights; run dir {run_dir}")
    genotype, val_acc = (Genotype.from_dict(history.records[-1]["genotype"]) if history.records else None), 0.0
    for epoch in range(start_epoch, recipe.epochs):
        data.set_epoch(epoch)
        progress.start_epoch(epoch)
        train_loss, train_correct, seen = 0.0, 0, 0
        for step, (train_batch, arch_batch) in enumerate(zip(data.weights, data.arch)):
            if step >= steps_per_epoch:
                break
            train_batch = tuple(t.to(device, non_blocking=True) for t in train_batch)
            if epoch >= recipe.warmup_epochs:
                arch_batch = tuple(t.to(device, non_blocking=True) for t in arch_batch)
                strategy.arch_step(train_batch, arch_batch, optimizer)
            loss, logits = strategy.weight_step(train_batch, optimizer)
            schedule.step()
            n = train_batch[1].shape[0]
            correct = int((logits.argmax(1) == train_batch[1]).sum())
            train_loss, train_correct, seen = train_loss + float(loss) * n, train_correct + correct, seen + n
            progress.on_step({"loss": float(loss), "acc": 100.0 * correct / n, "lr": schedule.lr, "images": n})
        val_acc = _held_out_accuracy(strategy, data.arch, device, max_batches=max(1, steps_per_epoch // 2))
        genotype = strategy.derive(name=f"{recipe.name}_epoch{epoch + 1}")
        record = history.add(epoch, strategy.distribution(), genotype,
                             {"train_loss": train_loss / max(seen, 1), "train_acc": 100.0 * train_correct / max(seen, 1),
                              "val_acc": val_acc})
        rngs = _gather_rng(info)
        if info.is_main:
            genotype.save(run_dir / "genotypes" / f"epoch_{epoch + 1:03d}.yaml")
            history.save(run_dir / "history.json")
            atomic_save({"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                         "schedule": schedule.state_dict(), "strategy": strategy.state_dict(),
                         "history": history.records, "epoch": epoch, "rng": rngs, "recipe": recipe.to_dict()},
                        checkpoint_path)
        # Logged after the checkpoint, so the log never claims an epoch a resume cannot start from.
        log.write({"epoch": epoch, "train_loss": train_loss / max(seen, 1), "train_acc": 100.0 * train_correct / max(seen, 1),
                   "val_acc": val_acc, "lr": schedule.lr, "arch_updates": epoch >= recipe.warmup_epochs,
                   **record["collapse"], "genotype": genotype.to_string()})
        summary = (f"epoch {epoch + 1}/{recipe.epochs}: train acc {100.0 * train_correct / max(seen, 1):.1f}%  "
                   f"held-out acc {val_acc:.1f}%  normal cell: {record['collapse']['param_free_ops']} parameter-free ops")
        if record["collapse"]["collapse_warning"]:
            summary += (f"  WARNING: {record['collapse']['skip_connects']} skip connections in the normal cell "
                        "(the DARTS collapse); consider early stopping or fewer epochs")
        progress.end_epoch(summary)
        D.barrier()
        if on_epoch_end is not None and on_epoch_end(epoch):
            return SearchResult(run_dir, genotype, epoch + 1, val_acc)

    final = _final_genotype(recipe, genotype, val_acc, recipe_path, run_dir)
    if info.is_main:
        final.save(run_dir / "genotype.yaml")
        with contextlib.suppress(ImportError):
            plot_history(history, run_dir / "alphas.png", list(network.primitives))
        if recipe.progress:
            say(f"genotype: {final.to_string()}\nwrote {run_dir / 'genotype.yaml'}; train it with "
                 f"`nasnetzoo train --recipe recipes/retrain_cifar10.yaml --arch {run_dir / 'genotype.yaml'}`")
    return SearchResult(run_dir, final, recipe.epochs, val_acc)


def _final_genotype(recipe: SearchRecipe, genotype: Genotype, val_acc: float, recipe_path: str,
                    run_dir: Path) -> Genotype:
    provenance = {"searched_with": f"nasnetzoo {__version__}", "strategy": recipe.strategy,
                  "recipe": recipe.name, "recipe_file": recipe_path, "seed": recipe.seed,
                  "dataset": recipe.dataset, "epochs": recipe.epochs, "held_out_acc": round(val_acc, 2),
                  "run_dir": str(run_dir)}
    return Genotype(genotype.normal, genotype.reduce, "darts", f"search_{recipe.name}", provenance)


@torch.no_grad()
def _held_out_accuracy(strategy: SearchStrategy, loader, device, max_batches: int) -> float:
    network = strategy.network
    network.eval()
    correct = torch.zeros((), device=device)
    total = torch.zeros((), device=device)
    try:
        for i, (x, y) in enumerate(loader):
            if i >= max_batches:
                break
            x, y = x.to(device), y.to(device)
            correct += (strategy.predict(x).argmax(1) == y).sum()
            total += y.numel()
    finally:
        network.train()
    D.all_reduce_sum(correct)
    D.all_reduce_sum(total)
    return float(100.0 * correct / total.clamp(min=1))


def _gather_rng(info) -> list:
    state = rng_state()
    if not info.distributed:
        return [state]
    states = [None] * info.world
    dist.all_gather_object(states, state)
    return states

