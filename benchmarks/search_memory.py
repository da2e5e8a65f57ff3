"""Activation memory and step time of one search step: DARTS vs PC-DARTS (K = 2, 4, 8) vs PARSEC.

Side by side in one run, on the same supernet size, batch and input:

* activation memory = bytes of the tensors autograd saves for the backward pass during one weight
  step (each storage counted once), read with ``torch.autograd.graph.saved_tensors_hooks``.  That is
  the memory the supernet's size and partial channels change; on a GPU the script also reports
  ``torch.cuda.max_memory_allocated`` of the whole step.  For PARSEC it is the largest of its M
  sample passes (they run one after another, so one architecture's activations are alive at a time).
* step time = median wall time of a weight step plus an architecture step (first order).

    python benchmarks/search_memory.py [--batch 32] [--size 32] [--C 16] [--layers 8] [--steps 5] [--device cpu]

Expected: PC-DARTS's activation memory near 1/K of DARTS's; PARSEC near one sampled architecture.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager

import torch

from nasnetzoo.search.strategies import DARTSStrategy, PARSECStrategy, PCDARTSStrategy
from nasnetzoo.search.supernet import SearchNetwork


@contextmanager
def saved_activation_bytes(record: list, extra: list = ()):
    """Sum the bytes of distinct storages autograd saves for backward inside the block, plus those of
    the tensors in ``extra`` (tuples of tensors something else holds for the backward pass, such as
    the inputs of checkpointed blocks), each storage once."""
    seen = set()
    total = [0]

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen and t.device.type != "meta":
            seen.add(key)
            total[0] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield
        for tensors in extra:
            for t in tensors:
                if isinstance(t, torch.Tensor):
                    pack(t)
    record.append(total[0])


def configs():
    yield "DARTS", dict(partial_k=1, edge_norm=False), DARTSStrategy
    for k in (2, 4, 8):
        yield f"PC-DARTS K={k}", dict(partial_k=k, edge_norm=True), PCDARTSStrategy
    yield "PARSEC (M=4)", dict(partial_k=1, edge_norm=False), lambda net: PARSECStrategy(net, num_samples=4)


def measure(name, net_kwargs, make_strategy, args, device):
    torch.manual_seed(0)
    net = SearchNetwork(C=args.C, layers=args.layers, num_classes=10, **net_kwargs).to(device)
    strategy = make_strategy(net)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    batch = (x, y)

    # activation memory of one weight step's forward
    record: list = []
    if isinstance(strategy, PARSECStrategy):
        for _ in range(strategy.num_samples):
            choice, _ = strategy.sample()
            with saved_activation_bytes(record):
                loss = strategy.loss(net.forward_discrete(x, choice), y)
            loss.backward()
        activation = max(record)
    else:
        with saved_activation_bytes(record):
            loss = strategy.loss(net(x), y)
        loss.backward()
        activation = record[0]
    opt.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.steps + 1):
        start = time.perf_counter()
        strategy.arch_step(batch, batch, opt)
        strategy.weight_step(batch, opt)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return {"name": name, "activation_mb": activation / 2**20, "step_s": statistics.median(times),
            "cuda_peak_mb": None if peak is None else peak / 2**20,
            "weights_m": sum(p.numel() for p in net.weight_parameters()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per strategy (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [measure(name, kw, make, args, device) for name, kw, make in configs()]
    base = rows[0]["activation_mb"]
    print(f"search step, batch {args.batch} x 3 x {args.size} x {args.size}, supernet C={args.C}, {args.layers} cells, "
          f"{device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'strategy':16s} {'activations MB':>15s} {'vs DARTS':>9s} {'step s':>8s} {'cuda peak MB':>13s}")
    for r in rows:
        peak = "-" if r["cuda_peak_mb"] is None else f"{r['cuda_peak_mb']:.0f}"
        print(f"{r['name']:16s} {r['activation_mb']:15.1f} {r['activation_mb'] / base:9.3f} {r['step_s']:8.3f} {peak:>13s}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "results": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
