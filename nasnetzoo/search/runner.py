"""A search run: recipe -> data -> supernet + strategy -> genotype file (+ history), resumable.

The run directory holds::

    recipe.yaml          the resolved recipe
    metrics.jsonl        one record per epoch (train loss/acc, held-out acc, lr, collapse guard)
    history.json         per epoch: the architecture distribution (alphas/betas or pi) and genotype
    genotypes/epoch_NNN.yaml
    alphas.png           op weights per edge over the epochs
    checkpoint.pt        written atomically after every epoch; ``--resume`` continues exactly
    genotype.yaml        the final genotype, which ``nasnetzoo.load`` and ``nasnetzoo train`` accept

The lock, resume, RNG states, commits, logs and Ctrl-C/SIGTERM are the run envelope's
(``runs/envelope.py``); this module keeps the search's own steps.

A strategy that changes the network between epochs (``SearchStrategy.network_change``, P-DARTS's
stages) gets a new supernet, weight optimizer and schedule before the epoch it names; the
checkpoint carries the network's options, so a resumed run rebuilds the network it saved.

Under torchrun every rank computes, gradients of weights and architecture parameters are averaged
across ranks (in flat buckets), every rank draws its own augmentation while the architecture stays the
same on all of them, and rank 0 writes the files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
import torch.distributed as dist

from .._version import __version__
from ..errors import CheckpointError, NasNetZooError
from ..genotype import Genotype
from ..threads import CoreShare, share_cores
from ..runs import distributed as D
from ..runs.checkpoint import atomic_write, seed_everything
from ..runs.envelope import (Run, RunInterrupted, RunKind, check_finite, check_resumable, register_run_kind,
                             run_dir_for, stamped_run_dir)
from ..runs.optim import LRSchedule, build_optimizer, load_optimizer_state
from ..fileio import draw_optional
from ..runs.progress import RunProgress, say
from ..train.engine import configure_determinism
from .compiled import compile_supernet
from .data import build_search_data
from .history import SearchHistory, collapse_warning, plot_history
from .recipe import SearchRecipe, load_search_recipe
from .strategies import SearchStrategy, get_strategy
from .strategies.base import NetworkChange
from .supernet import SearchNetwork

PathLike = Union[str, Path]
SEARCH_RUN = register_run_kind(RunKind("search", noun="search", command="search", checkpoint="checkpoint.pt",
                                       artifacts=("metrics.jsonl", "history.json", "genotypes", "genotype.yaml",
                                                  "alphas.png")))
CHECKPOINT = SEARCH_RUN.checkpoint
SearchInterrupted = RunInterrupted   # Ctrl-C or SIGTERM; the message says how to resume


@dataclass
class SearchResult:
    run_dir: Path
    genotype: Genotype
    epochs_done: int
    val_acc: float


def default_run_dir(recipe: SearchRecipe) -> Path:
    return stamped_run_dir("search", recipe.name)


def build_strategy(recipe: SearchRecipe, network: SearchNetwork) -> SearchStrategy:
    """The recipe's strategy, built as its entry in the strategies table says."""
    entry = get_strategy(recipe.strategy)
    if not entry.on_supernet or entry.build is None:
        raise NasNetZooError(f"strategy {recipe.strategy!r} does not run on the supernet; run it with "
                             "nasnetzoo.search.run_search or `nasnetzoo search`.")
    return entry.build(recipe, network)


def build_network(recipe: SearchRecipe, num_classes: int, change: Optional[dict] = None) -> SearchNetwork:
    """The supernet, with the options the recipe's strategy fixes (its entry's ``network``) and
    those of a strategy's network change (``change``)."""
    options = dict(C=recipe.C, layers=recipe.layers, num_classes=num_classes, steps=recipe.steps, stem=recipe.stem,
                   partial_k=recipe.partial_k, edge_norm=recipe.edge_norm, memory=recipe.memory,
                   channels_last=recipe.channels_last == "on",
                   backend="reference" if recipe.compile else recipe.backend)   # compile: one graph, on the reference
    options.update(get_strategy(recipe.strategy).network)
    options.update(change or {})
    return SearchNetwork(**options)


def augmentation_seed(seed: int, rank: int) -> int:
    """The global RNG's seed on ``rank`` after the build (crops, flips): distinct per rank, as the
    retrain's per-rank stream, and ``seed`` itself on rank 0."""
    return seed + 7919 * rank


def _broadcast_parameters(network: torch.nn.Module) -> None:
    if dist.is_initialized():
        for t in list(network.parameters()) + list(network.buffers()):
            dist.broadcast(t.data, src=0)


def search(recipe: SearchRecipe, *, out: Optional[PathLike] = None, resume: Optional[PathLike] = None,
           recipe_path: str = "", on_epoch_end: Optional[Callable[[int], bool]] = None,
           overwrite: bool = False) -> SearchResult:
    """Run (or resume) a search.  ``on_epoch_end(epoch)`` may return True to stop after that epoch;
    ``overwrite`` replaces another run that ``out`` holds (otherwise refused)."""
    info = D.setup(recipe.device)
    try:
        return _search(info, recipe, out, resume, recipe_path, on_epoch_end, overwrite)
    finally:
        D.teardown()


def prepare_resume(run_dir: PathLike, overrides: Sequence[str] = ()) -> SearchRecipe:
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise CheckpointError(f"{run_dir} is not a search run directory (no recipe.yaml); pass the folder "
                              "that `nasnetzoo search --out` created.")
    check_resumable(run_dir, SEARCH_RUN)
    return load_search_recipe(run_dir / "recipe.yaml", overrides)


@dataclass
class _Loop:
    """What a search builds before its first step."""
    info: D.DistInfo
    recipe: SearchRecipe
    data: object
    network: SearchNetwork
    strategy: SearchStrategy
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    steps_per_epoch: int
    history: SearchHistory
    cores: Optional[CoreShare]   # follows the free cores between steps (None: a fixed thread count)
    change: NetworkChange        # the strategy's network options and schedule length (empty: the recipe's)


def _search(info, recipe, out, resume, recipe_path, on_epoch_end, overwrite) -> SearchResult:
    run_dir = run_dir_for(resume, out, lambda: default_run_dir(recipe))
    run_dir = Path(D.broadcast_object(str(run_dir)))
    if info.world > 1 and recipe.batch_size % info.world:
        raise NasNetZooError(f"batch_size {recipe.batch_size} does not split over {info.world} processes; "
                             f"use a multiple of {info.world}.")
    loop = _build(info, recipe)
    run = Run(SEARCH_RUN, run_dir, recipe=recipe.to_dict(), resume=resume is not None, overwrite=overwrite, info=info)
    with run:
        start_epoch = _start(run, loop)
        progress = RunProgress(recipe.epochs, loop.steps_per_epoch, enabled=recipe.progress and info.is_main,
                               done_steps=start_epoch * loop.steps_per_epoch, world=info.world)
        if info.is_main and recipe.progress:
            weights = sum(p.numel() for p in loop.network.weight_parameters())
            say(f"search {recipe.strategy} on {loop.data.description}; {weights / 1e6:.2f}M supernet weights; "
                f"run dir {run_dir}")
        records = loop.history.records
        genotype = Genotype.from_dict(records[-1]["genotype"]) if records else None
        val_acc = records[-1]["metrics"]["val_acc"] if records else 0.0
        try:
            for epoch in range(start_epoch, recipe.epochs):
                change = loop.strategy.network_change(epoch, recipe.epochs) if epoch else None
                if change is not None:
                    _rebuild(loop, change)
                    if info.is_main and recipe.progress:
                        weights = sum(p.numel() for p in loop.network.weight_parameters())
                        say(f"epoch {epoch + 1}: a new supernet ({loop.network.layers} cells, "
                            f"{loop.network.alphas_normal.shape[1]} ops per edge, {weights / 1e6:.2f}M weights)")
                progress.start_epoch(epoch)
                train_loss, train_acc = _search_epoch(run, loop, epoch, progress)
                val_acc = _held_out_accuracy(loop.strategy, loop.data.arch, info.device,
                                             max_batches=max(1, loop.steps_per_epoch // 2))
                genotype = loop.strategy.derive(name=f"{recipe.name}_epoch{epoch + 1}")
                progress.end_epoch(_commit_epoch(run, loop, epoch, genotype, train_loss, train_acc, val_acc))
                D.barrier()
                if on_epoch_end is not None and on_epoch_end(epoch):
                    return SearchResult(run_dir, genotype, epoch + 1, val_acc)
        finally:
            progress.end_epoch()
        final = _final_genotype(recipe, genotype, val_acc, recipe_path, run_dir)
        if info.is_main:
            run.write_text("genotype.yaml", final.to_yaml())
            draw_optional(lambda: plot_history(loop.history, run_dir / "alphas.png", list(loop.network.primitives)),
                          run_dir / "alphas.png", say if recipe.progress else None)
            if recipe.progress:
                say(f"genotype: {final.to_string()}\nwrote {run_dir / 'genotype.yaml'}; train it with "
                    f"`nasnetzoo train --recipe recipes/retrain_cifar10.yaml --arch {run_dir / 'genotype.yaml'}`")
    return SearchResult(run_dir, final, recipe.epochs, val_acc)


def _build(info: D.DistInfo, recipe: SearchRecipe) -> _Loop:
    cores = share_cores(recipe.threads, info.device, report=say if recipe.progress and info.is_main else None)
    seed_everything(recipe.seed)
    configure_determinism(recipe.deterministic, info.device)   # cudnn.benchmark and TF32, as the retrain
    data = build_search_data(recipe, micro_batch=recipe.batch_size // info.world, device=info.device,
                             rank=info.rank, world=info.world)
    steps_per_epoch = min(len(data.weights), len(data.arch))
    if recipe.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, recipe.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise NasNetZooError(f"batch_size {recipe.batch_size} is larger than each half of the {recipe.dataset} "
                             "training split; lower it (--set batch_size=...).")
    first_network = get_strategy(recipe.strategy).first_network
    change = (first_network(recipe) if first_network is not None else None) or NetworkChange()
    loop = _Loop(info, recipe, data, None, None, None, None, steps_per_epoch, SearchHistory(), cores, change)
    _rebuild(loop, change)
    # The supernet and the strategies' samplers (their own generators) are seeded alike on every
    # rank; what draws from the global RNG from here on is the augmentation, which each rank draws
    # for its own shard.  Rank 0 keeps the recipe's stream, so one process searches as before.  (A
    # later network change builds from these streams, but _broadcast_parameters makes it rank 0's.)
    if info.rank:
        seed_everything(augmentation_seed(recipe.seed, info.rank))
    return loop


def _rebuild(loop: _Loop, change: NetworkChange) -> None:
    """The supernet of ``change``, its strategy, a fresh weight optimizer and learning-rate schedule
    (over ``change.epochs``, or the run's epochs)."""
    recipe, info = loop.recipe, loop.info
    network = build_network(recipe, loop.data.num_classes, change.options).to(info.device)
    _broadcast_parameters(network)
    strategy = build_strategy(recipe, network)
    if recipe.compile:
        strategy.compiled_forward = compile_supernet(network)
    if recipe.amp == "bf16" or (recipe.amp == "auto" and info.device.type == "cuda"):
        strategy.autocast = lambda: torch.autocast(info.device.type, dtype=torch.bfloat16)
    optimizer = build_optimizer(network.weight_parameters(), "sgd", lr=recipe.lr, momentum=recipe.momentum,
                                nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    spe = loop.steps_per_epoch
    schedule = LRSchedule(optimizer, kind="cosine", base_lr=recipe.lr, total_steps=(change.epochs or recipe.epochs) * spe,
                          steps_per_epoch=spe, lr_min=recipe.lr_min,
                          warmup_steps=int(round(recipe.lr_warmup_epochs * spe)))
    loop.network, loop.strategy, loop.optimizer, loop.schedule, loop.change = network, strategy, optimizer, schedule, change


def _start(run: Run, loop: _Loop) -> int:
    """Resume from the checkpoint (the first epoch to run), or start, warm-started when asked."""
    recipe = loop.recipe
    state = run.load(map_location=loop.info.device)
    if state is not None:
        def restore() -> None:
            saved = state.get("network")   # the network a strategy changed to (P-DARTS's stage)
            if saved is not None and (saved["options"], saved["epochs"]) != (loop.change.options, loop.change.epochs):
                _rebuild(loop, NetworkChange(saved["options"], saved["epochs"]))
            loop.network.load_state_dict(state["model"])
            load_optimizer_state(loop.optimizer, state["optimizer"])
            loop.schedule.load_state_dict(state["schedule"])
            loop.strategy.load_state_dict(state["strategy"])

        run.restore("supernet", restore)
        loop.history = SearchHistory(state["history"])
        run.restore_rng(state)
        run.position = f"epoch {int(state['epoch']) + 1}/{recipe.epochs}"
        return int(state["epoch"]) + 1
    warm_start = get_strategy(recipe.strategy).warm_start
    if warm_start is not None:
        warm_start(loop.strategy, recipe.strategy_options())
    run.write_text("recipe.yaml", recipe.to_yaml())
    D.barrier()
    return 0


def _search_epoch(run: Run, loop: _Loop, epoch: int, progress: RunProgress) -> tuple[float, float]:
    """One epoch of weight (and, after the warm-up, architecture) steps: mean loss and accuracy."""
    recipe, strategy, device = loop.recipe, loop.strategy, loop.info.device
    loop.data.set_epoch(epoch)
    strategy.start_epoch(epoch, recipe.epochs)
    trains_arch = strategy.trains_architecture(epoch, recipe.warmup_epochs)
    # Sums stay on the device (a float() per step would sync with a GPU every step); the progress
    # bar reads them only when it redraws, and the epoch syncs once at its end.
    train_loss, train_correct, seen = torch.zeros((), dtype=torch.float64, device=device), 0, 0
    for step, (train_batch, arch_batch) in enumerate(zip(loop.data.weights, loop.data.arch)):
        if step >= loop.steps_per_epoch:
            break
        if loop.cores is not None:
            loop.cores.update()
        train_batch = tuple(t.to(device, non_blocking=True) for t in train_batch)
        arch_batch = (tuple(t.to(device, non_blocking=True) for t in arch_batch)
                      if trains_arch else None)   # None: a warm-up step, weights only
        loss, logits = strategy.step(train_batch, arch_batch, loop.optimizer)
        loop.schedule.step()
        n = train_batch[1].shape[0]
        correct = (logits.argmax(1) == train_batch[1]).sum()
        train_loss, train_correct, seen = train_loss + loss.detach().double() * n, train_correct + correct, seen + n
        progress.on_step({"loss": loss, "acc": 100.0 * correct / n, "lr": loop.schedule.lr, "images": n})
    train_loss, train_correct = float(train_loss), int(train_correct)
    check_finite(train_loss, f"search epoch {epoch + 1}", run)
    return train_loss / max(seen, 1), 100.0 * train_correct / max(seen, 1)


def _commit_epoch(run: Run, loop: _Loop, epoch: int, genotype: Genotype, train_loss: float, train_acc: float,
                  val_acc: float) -> str:
    """The checkpoint with the epoch's record, its genotype and history staged with it; the summary line."""
    recipe, strategy = loop.recipe, loop.strategy
    record = loop.history.add(epoch, strategy.distribution(), genotype,
                              {"train_loss": train_loss, "train_acc": train_acc, "val_acc": val_acc})
    history_text, genotype_text = json.dumps(loop.history.records), genotype.to_yaml()
    staged = {run.path / "history.json": lambda path: atomic_write(path, lambda f: f.write(history_text.encode())),
              run.path / "genotypes" / f"epoch_{epoch + 1:03d}.yaml":
                  lambda path: atomic_write(path, lambda f: f.write(genotype_text.encode()))}
    state = {"model": loop.network.state_dict(), "optimizer": loop.optimizer.state_dict(),
             "schedule": loop.schedule.state_dict(), "strategy": strategy.state_dict(),
             "history": loop.history.records, "epoch": epoch, "recipe": recipe.to_dict(),
             "network": {"options": loop.change.options, "epochs": loop.change.epochs}}
    metrics = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_acc": val_acc,
               "lr": loop.schedule.lr, "arch_updates": strategy.trains_architecture(epoch, recipe.warmup_epochs), **record["collapse"],
               "genotype": genotype.to_string()}
    run.save(state, f"epoch {epoch + 1}/{recipe.epochs}", staged=staged, records={"metrics.jsonl": [metrics]})
    summary = (f"epoch {epoch + 1}/{recipe.epochs}: train acc {train_acc:.1f}%  held-out acc {val_acc:.1f}%  "
               f"normal cell: {record['collapse']['param_free_ops']} parameter-free ops")
    warning = collapse_warning(record["collapse"])
    if warning:
        summary += "  " + warning
    return summary


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
