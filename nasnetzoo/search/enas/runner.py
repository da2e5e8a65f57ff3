"""An ENAS search: per epoch, train the shared weights (one sampled arc per minibatch), train the
controller, sample arcs and keep the best on a held-out batch; resumable.

The run directory holds::

    recipe.yaml             the resolved recipe (what --resume reads)
    checkpoint.pt           shared weights, SGD state, controller + Adam + baseline + sampling
                            generator, RNGs; written atomically after every epoch
    metrics.jsonl           one record per epoch (train loss/acc, lr, controller rewards, baseline,
                            entropy, the derived arc's held-out accuracy)
    genotypes/epoch_NNN.yaml the epoch's derived cell
    rewards.png             the controller's mean accuracy, baseline and the derived arc's accuracy
    genotype.yaml           the last epoch's derived cell, which ``nasnetzoo.load`` accepts

It is not the supernet runner's loop (``search/runner.py``): that one builds a DARTS supernet, steps
the architecture per minibatch on a plain cosine schedule and writes ``darts`` genotypes; ENAS trains
the controller once per epoch, on a cosine schedule with restarts, over ``nasnet`` cells.  One
process (no torchrun).  The lock, resume, commits and Ctrl-C/SIGTERM are the run envelope's.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import torch
import torch.nn.functional as F

from ..._version import __version__
from ...fileio import draw_optional, save_figure
from ...genotype import Genotype
from ...runs.checkpoint import atomic_write, seed_everything
from ...runs.envelope import Run, RunKind, check_finite, register_run_kind, run_dir_for, stamped_run_dir
from ...runs.progress import say
from ..data import build_search_data
from .controller import ENASController, ENASControllerTrainer
from .recipe import ENASRecipe
from .shared import ENAS_OPS, SharedNetwork, arc_to_genotype

PathLike = Union[str, Path]
ENAS_RUN = register_run_kind(RunKind("enas", noun="search", command="search", checkpoint="checkpoint.pt",
                                     artifacts=("metrics.jsonl", "genotypes", "genotype.yaml", "rewards.png")))


@dataclass
class ENASSearchResult:
    run_dir: Path
    genotype: Genotype
    epochs_done: int
    val_acc: float       # the derived arc's held-out accuracy (%), on one batch


def cosine_restart_lr(epoch: int, lr_max: float, lr_min: float, T_0: int, T_mul: int) -> float:
    """SGDR per epoch (``get_train_ops`` with ``lr_cosine``): periods T_0, T_0 T_mul, ...; each starts at lr_max."""
    start, period = 0, T_0
    while epoch - start >= period:
        start, period = start + period, period * T_mul
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * (epoch - start) / period))


@dataclass
class _Search:
    recipe: ENASRecipe
    device: torch.device
    data: object
    network: SharedNetwork
    trainer: ENASControllerTrainer
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int

    def split(self, actions) -> tuple[list, list]:
        n = 4 * self.recipe.num_nodes
        actions = [int(a) for a in actions]
        return actions[:n], actions[n:]


def build(recipe: ENASRecipe) -> _Search:
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    device = torch.device("cuda" if recipe.device != "cpu" and torch.cuda.is_available() else "cpu")
    seed_everything(recipe.seed)
    data = build_search_data(recipe, micro_batch=recipe.batch_size, device=device)
    image_size = recipe.image_size if recipe.dataset == "digits" else 32
    network = SharedNetwork(num_layers=recipe.num_layers, out_filters=recipe.out_filters, num_nodes=recipe.num_nodes,
                            num_classes=data.num_classes, keep_prob=recipe.keep_prob, auxiliary=recipe.aux_heads,
                            img_size=image_size).to(device)
    controller = ENASController(recipe.num_nodes, len(ENAS_OPS), recipe.lstm_size, tanh_constant=recipe.tanh_constant,
                                op_tanh_reduce=recipe.op_tanh_reduce, temperature=recipe.temperature).to(device)
    trainer = ENASControllerTrainer(controller, lr=recipe.controller_lr, entropy_weight=recipe.entropy_weight,
                                    baseline_decay=recipe.baseline_decay, seed=recipe.seed)
    optimizer = torch.optim.SGD(network.weight_parameters(), lr=recipe.lr_max, momentum=recipe.momentum,
                                nesterov=recipe.momentum > 0)
    steps = len(data.weights)
    if recipe.max_steps_per_epoch:
        steps = min(steps, recipe.max_steps_per_epoch)
    return _Search(recipe, device, data, network, trainer, optimizer, steps)


def held_out_batches(loader, epoch: int) -> Iterator:
    """The held-out half, endlessly, in an order fixed by the epoch (so a resumed epoch repeats it)."""
    for k in itertools.count():
        loader.set_epoch(epoch * 1000 + k)
        yield from loader


def train_shared(s: _Search, epoch: int) -> tuple[float, float]:
    """One epoch of shared-weight steps, each on a freshly sampled arc: mean loss and accuracy (%)."""
    r, net, params = s.recipe, s.network, s.optimizer.param_groups[0]["params"]
    s.data.weights.set_epoch(epoch)
    net.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for step, (x, y) in enumerate(s.data.weights):
        if step >= s.steps_per_epoch:
            break
        x, y = x.to(s.device), y.to(s.device)
        normal, reduce = s.split(s.trainer.sample(1).actions[0].tolist())
        loss, logits = shared_step(net, s.optimizer, params, x, y, normal, reduce, r)
        loss_sum += float(loss) * y.numel()
        correct += int((logits.argmax(1) == y).sum())
        seen += y.numel()
    return loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1)


def shared_step(net: SharedNetwork, optimizer: torch.optim.Optimizer, params, x, y, normal, reduce,
                recipe: ENASRecipe) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step of the shared weights on one arc: CE (+ 0.4 aux CE) + l2 sum(w^2), per-tensor clip."""
    logits, aux = net(x, normal, reduce)
    loss = F.cross_entropy(logits, y)
    total = loss + recipe.aux_weight * F.cross_entropy(aux, y) if aux is not None else loss
    if recipe.l2_reg:
        total = total + recipe.l2_reg * sum(p.pow(2).sum() for p in params)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if recipe.grad_clip:
        for p in params:
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_([p], recipe.grad_clip)
    optimizer.step()
    return loss.detach(), logits.detach()


def make_scorer(s: _Search, batches: Iterator) -> Callable:
    @torch.no_grad()
    def score(actions) -> float:
        """Accuracy of one arc on the next held-out batch (training-mode BN and dropout, as ENAS)."""
        x, y = next(batches)
        x, y = x.to(s.device), y.to(s.device)
        normal, reduce = s.split(actions)
        logits, _ = s.network(x, normal, reduce, aux=False)
        return float((logits.argmax(1) == y).float().mean())
    return score


def enas_search(recipe: ENASRecipe, *, out: Optional[PathLike] = None, resume: Optional[PathLike] = None,
                recipe_path: str = "", overwrite: bool = False,
                on_epoch_end: Optional[Callable[[int], bool]] = None) -> ENASSearchResult:
    """Run (or resume) an ENAS search; ``on_epoch_end(epoch)`` may return True to stop after that epoch."""
    run_dir = run_dir_for(resume, out, lambda: stamped_run_dir("search", recipe.name))
    s = build(recipe)
    run = Run(ENAS_RUN, run_dir, recipe=recipe.to_dict(), resume=resume is not None, overwrite=overwrite)
    with run:
        state = run.load(map_location=s.device)
        start = 0
        if state is not None:
            def restore() -> None:
                s.network.load_state_dict(state["model"])
                s.optimizer.load_state_dict(state["optimizer"])
                s.trainer.load_state_dict(state["controller"])

            run.restore("shared network and controller", restore)
            run.restore_rng(state)
            recipe_path = recipe_path or state.get("recipe_file", "")
            start = int(state["epoch"]) + 1
            run.position = f"epoch {start}/{recipe.epochs}"
        else:
            run.write_text("recipe.yaml", recipe.to_yaml())
        if recipe.progress:
            weights = sum(p.numel() for p in s.network.weight_parameters())
            say(f"ENAS search on {s.data.description}; {weights / 1e6:.2f}M shared weights, {recipe.epochs} epochs x "
                f"{s.steps_per_epoch} steps; run dir {run_dir}")
        records = run.records["metrics.jsonl"]
        genotype = Genotype.from_dict(state["genotype"]) if state is not None else None
        done = start
        for epoch in range(start, recipe.epochs):
            record, genotype = _epoch(s, epoch)
            check_finite(record["train_loss"], f"ENAS epoch {epoch + 1}", run)
            text = genotype.to_yaml()
            staged = {run.path / "genotypes" / f"epoch_{epoch + 1:03d}.yaml":
                      lambda path, text=text: atomic_write(path, lambda f: f.write(text.encode()))}
            run.save({"model": s.network.state_dict(), "optimizer": s.optimizer.state_dict(),
                      "controller": s.trainer.state_dict(), "epoch": epoch, "genotype": genotype.to_dict(),
                      "recipe": recipe.to_dict(), "recipe_file": recipe_path, "version": __version__},
                     f"epoch {epoch + 1}/{recipe.epochs}", staged=staged, records={"metrics.jsonl": [record]})
            done = epoch + 1
            if recipe.progress:
                say(f"epoch {epoch + 1}/{recipe.epochs}: train acc {record['train_acc']:.1f}%  controller acc "
                    f"{100 * record['controller_acc']:.1f}%  baseline {record['baseline']:.3f}  derived arc "
                    f"{record['val_acc']:.1f}% held-out")
            if on_epoch_end is not None and on_epoch_end(epoch):
                break
        val_acc = records[-1]["val_acc"] if records else 0.0
        final = _final_genotype(recipe, genotype, val_acc, recipe_path, run_dir, done)
        run.write_text("genotype.yaml", final.to_yaml())
        draw_optional(lambda: plot_rewards(records, run_dir / "rewards.png"), run_dir / "rewards.png",
                      say if recipe.progress else None)
    if recipe.progress:
        say(f"genotype: {final.to_string()}\nwrote {run_dir / 'genotype.yaml'}")
    return ENASSearchResult(run_dir, final, done, val_acc)


def _epoch(s: _Search, epoch: int) -> tuple[dict, Genotype]:
    r = s.recipe
    lr = cosine_restart_lr(epoch, r.lr_max, r.lr_min, r.lr_T_0, r.lr_T_mul)
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    train_loss, train_acc = train_shared(s, epoch)
    score = make_scorer(s, held_out_batches(s.data.arch, epoch))
    stats = []
    if (epoch + 1) % r.controller_train_every == 0:   # main.py: after epochs where epoch % every == 0
        stats = [s.trainer.update(score, r.controller_num_aggregate) for _ in range(r.controller_train_steps)]
    # The paper's derivation: sample several arcs, keep the best on a held-out minibatch.
    rollout = s.trainer.sample(r.derive_samples)
    scored = [(score(a), i, a) for i, a in enumerate(rollout.actions.tolist())]
    best_acc, _, best = max(scored, key=lambda t: (t[0], -t[1]))
    normal, reduce = s.split(best)
    genotype = arc_to_genotype(normal, reduce, r.num_nodes, name=f"{r.name}_epoch{epoch + 1}")
    mean = (lambda key: sum(st[key] for st in stats) / len(stats)) if stats else (lambda key: None)
    record = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
              "controller_updates": s.trainer.updates, "controller_acc": mean("acc_mean"),
              "controller_reward": mean("reward_mean"), "entropy": mean("entropy"), "baseline": s.trainer.baseline,
              "sampled_acc_mean": 100.0 * sum(t[0] for t in scored) / len(scored), "val_acc": 100.0 * best_acc,
              "normal_arc": normal, "reduce_arc": reduce, "genotype": genotype.to_string()}
    if record["controller_acc"] is None:
        record["controller_acc"] = 0.0
    return record, genotype


def _final_genotype(recipe: ENASRecipe, genotype: Genotype, val_acc: float, recipe_path: str, run_dir: Path,
                    epochs: int) -> Genotype:
    provenance = {"searched_with": f"nasnetzoo {__version__}", "strategy": recipe.strategy, "recipe": recipe.name,
                  "recipe_file": recipe_path, "seed": recipe.seed, "dataset": recipe.dataset, "epochs": epochs,
                  "held_out_acc": round(val_acc, 2), "run_dir": str(run_dir),
                  "derived_as": f"best of {recipe.derive_samples} controller samples on one held-out batch"}
    return Genotype(genotype.normal, genotype.reduce, "nasnet", f"search_{recipe.name}", provenance)


def plot_rewards(records, path: PathLike) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    epochs = [rec["epoch"] + 1 for rec in records]
    ax.plot(epochs, [100 * rec["controller_acc"] for rec in records], marker="o", label="controller samples (mean)")
    ax.plot(epochs, [100 * rec["baseline"] for rec in records], linestyle="--", label="baseline (EMA of reward)")
    ax.plot(epochs, [rec["val_acc"] for rec in records], marker="s", label="derived arc")
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("ENAS search: rewards")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["ENASSearchResult", "cosine_restart_lr", "enas_search", "plot_rewards", "shared_step"]
