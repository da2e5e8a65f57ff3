"""The first GPU run, prepared: one script, under 8 minutes on one H100 or H200, no network.

Each phase runs in a subprocess of its own under a timeout and writes ``OUT/<phase>.json`` when it
ends; the parent appends one line per phase to ``OUT/phases.jsonl``.  A phase that crashes, hangs
or is killed costs only itself: everything finished before it stays on disk.

* **P0** environment: torch, CUDA, cuDNN, the device, its memory, nasnetzoo's version.
* **P1** first contact: the smoke search of every strategy in the strategies table on the device
  (DARTS, PC-DARTS, PARSEC, GDAS, SNAS, ENAS, and NASNet's RL outside --smoke), a smoke retrain,
  and fused against reference numerics (logits and architecture gradients of one PC-DARTS step on
  the same weights and batch).
* **P2** a PC-DARTS CIFAR-10-shaped search (C=16, 8 cells, K=4, batch 256, synthetic data in GPU
  memory): fp32 reference, fp32 fused, bf16, and compiled (the reference path under torch.compile),
  each with CUDA-synchronised step time, process CPU time, peak memory and the 50-epoch figure.
* **P3** the darts_v2_cifar retrain at batch 96: fp32 eager against bf16 + channels_last + compile,
  with the 600-epoch figure.
* **P4** batch-1 and batch-64 inference of the mobile entries, eager.
* **P5** the compiled inference variants, each in a fresh process (no dynamo state carried over).

On a GPU machine with no network, from a checkout (nothing to install: the machine's torch is used):

    PYTHONPATH=$PWD python benchmarks/gpu_first_run.py --out gpu_first_run

``--smoke`` runs every phase at toy sizes on the CPU in seconds (the tests do).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Seconds each phase may take on the GPU; the sum stays under 8 minutes with the starts.
TIMEOUTS = {"P0": 30, "P1": 100, "P2": 120, "P3": 80, "P4": 50, "P5": 60}
SEARCH_EPOCHS, RETRAIN_EPOCHS = 50, 600
CIFAR_HALF, CIFAR_TRAIN = 25_000, 50_000


def _device(smoke: bool):
    import torch

    return torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")


def _configure(device) -> None:
    from nasnetzoo.train.engine import configure_determinism

    configure_determinism(False, device)


# ---------------------------------------------------------------- the phases
def p0(smoke: bool) -> dict:
    import torch

    import nasnetzoo

    device = _device(smoke)
    facts = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version(), "nasnetzoo": nasnetzoo.__version__, "device": str(device),
             "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                     capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported())
    return facts


# The smoke recipe of each strategy that has its own (the others: smoke_search.yaml with strategy=).
OWN_SMOKE_RECIPES = {"gdas": "smoke_gdas.yaml", "snas": "smoke_snas.yaml", "enas": "smoke_enas.yaml",
                     "pdarts": "smoke_pdarts.yaml", "nasnet_rl": "smoke_nasnet_rl.yaml",
                     "random": "smoke_random.yaml", "evolution": "smoke_evolution.yaml", "pnas": "smoke_pnas.yaml"}
# Overrides a strategy needs on top of the cut: P-DARTS's epochs split into its 3 stages.
EXTRA_OVERRIDES = {"pdarts": ["epochs=3"]}


def smoke_searches(smoke: bool, device: str) -> dict:
    """strategy -> (recipe file, overrides): the smoke search of every strategy in the table, cut to a
    couple of steps on ``device``.  The searches that train sampled children (NASNet's RL, random,
    evolution, PNAS) only outside --smoke (each smoke trains a dozen children or more: minutes on two
    CPU cores) and with their own recipes' sizes."""
    from nasnetzoo.search.strategies import TABLE

    small = ["epochs=1", "max_steps_per_epoch=2", "progress=false", f"device={device}"]
    runs = {}
    for name, entry in TABLE.items():
        recipe = OWN_SMOKE_RECIPES.get(name, "smoke_search.yaml")
        if entry.on_supernet:
            runs[name] = (recipe, [*small, "warmup_epochs=0", f"strategy={name}", *EXTRA_OVERRIDES.get(name, [])]
                          + (["C=4", "layers=3", "max_steps_per_epoch=1"] if smoke else []))
        elif name == "enas":
            runs[name] = (recipe, [*small, "controller_train_steps=2", "derive_samples=2"]
                          + (["max_steps_per_epoch=1"] if smoke else []))
        elif not smoke:   # children train on the device the run is for
            runs[name] = (recipe, ["progress=false", f"child.device={device}"])
    return runs


def p1(smoke: bool, out: Path) -> dict:
    import torch

    from nasnetzoo.search import run_search
    from nasnetzoo.search.strategies import PCDARTSStrategy
    from nasnetzoo.search.supernet import SearchNetwork
    from nasnetzoo.train.recipe import load_recipe
    from nasnetzoo.train.runner import train

    device = _device(smoke)
    recipes = HERE.parent / "recipes"
    results: dict = {}
    for strategy, (recipe_file, overrides) in smoke_searches(smoke, device.type).items():
        start = time.perf_counter()
        try:
            result = run_search(recipes / recipe_file, out=out / f"search_{strategy}", overwrite=True,
                                overrides=overrides)
            record = {"seconds": time.perf_counter() - start}
            if hasattr(result, "genotype"):
                record["genotype"] = result.genotype.to_string()
            if hasattr(result, "best_reward"):
                record["best"] = result.best_reward
            results[f"search {strategy}"] = record
        except Exception as error:  # noqa: BLE001  (record and go on: this is first contact)
            results[f"search {strategy}"] = {"error": f"{type(error).__name__}: {error}"}
    start = time.perf_counter()
    try:
        recipe = load_recipe(recipes / "smoke_train.yaml", ["epochs=1", "max_steps_per_epoch=2", "progress=false",
                                                            f"device={device.type}", "model.C=4", "model.layers=3"])
        train(recipe, "pcdarts_cifar", out=out / "retrain", overwrite=True)
        results["retrain smoke"] = {"seconds": time.perf_counter() - start}
    except Exception as error:  # noqa: BLE001
        results["retrain smoke"] = {"error": f"{type(error).__name__}: {error}"}
    # Fused against reference on this device: same weights, same batch, one PC-DARTS step's tensors.
    torch.manual_seed(0)
    ref = SearchNetwork(C=8, layers=5, num_classes=10, partial_k=4, edge_norm=True, fused=False).to(device)
    fused = SearchNetwork(C=8, layers=5, num_classes=10, partial_k=4, edge_norm=True, fused=True).to(device)
    fused.load_state_dict(ref.state_dict())
    x, y = torch.randn(16, 3, 32, 32, device=device), torch.randint(0, 10, (16,), device=device)
    record = {}
    for name, net in (("reference", ref), ("fused", fused)):
        torch.manual_seed(1)   # PC-DARTS's channel shuffle draws nothing, but keep both streams alike
        logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, list(net.arch_parameters()))
        record[name] = (logits.detach(), [g.detach() for g in grads])
    results["fused vs reference"] = {
        "max_abs_logits": float((record["fused"][0] - record["reference"][0]).abs().max()),
        "max_abs_arch_grad": max(float((a - b).abs().max()) for a, b in zip(record["fused"][1], record["reference"][1])),
        "strategy": PCDARTSStrategy.name}
    return results


def p2(smoke: bool) -> dict:
    import gpu_suite

    device = _device(smoke)
    _configure(device)
    cfg = dict(gpu_suite.SMOKE["search"] if smoke else gpu_suite.FULL["search"])
    gpu_suite.BUDGET = gpu_suite.Budget(TIMEOUTS["P2"] - 15)
    variants = {"reference fp32": (False, False, False), "fused fp32": (True, False, False),
                "reference bf16": (False, True, False), "reference fp32 compiled": (False, False, True)}
    if smoke:   # a CPU compile is minutes, and CPU bf16 is slow without native support
        variants = {k: v for k, v in variants.items() if not (v[1] or v[2])}
    results = {}
    for name, (fused, bf16, compiled) in variants.items():
        cpu_start = time.process_time()
        record = gpu_suite.attempt(_timed_search, gpu_suite, cfg, device, fused, bf16, compiled)
        record["cpu_s"] = time.process_time() - cpu_start
        if "step_ms" in record:
            steps_per_epoch = CIFAR_HALF // 256
            record["epochs_50_min"] = SEARCH_EPOCHS * steps_per_epoch * record["step_ms"] / 60_000
        results[name] = record
    return results


def _timed_search(gpu_suite, cfg, device, fused, bf16, compiled) -> dict:
    import torch

    if compiled:
        torch._dynamo.reset()
    if device.type != "cuda":
        return gpu_suite.search_epoch(cfg, device, fused, bf16, compile=compiled)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    record = gpu_suite.search_epoch(cfg, device, fused, bf16, compile=compiled)
    end.record()
    torch.cuda.synchronize()
    record["cuda_event_ms_whole_task"] = start.elapsed_time(end)
    return record


def p3(smoke: bool) -> dict:
    import gpu_suite

    device = _device(smoke)
    _configure(device)
    cfg = gpu_suite.SMOKE["retrain"] if smoke else gpu_suite.FULL["retrain"]
    gpu_suite.BUDGET = gpu_suite.Budget(TIMEOUTS["P3"] - 10)
    results = {}
    for name, (bf16, channels_last, compiled) in {"fp32 eager": (False, False, False),
                                                   "bf16 + channels_last + compile": (True, True, not smoke)}.items():
        import torch

        torch._dynamo.reset()
        record = gpu_suite.attempt(gpu_suite.retrain_steps, cfg, device, bf16, channels_last, compiled)
        if "step_ms" in record:
            record["epochs_600_h"] = RETRAIN_EPOCHS * (CIFAR_TRAIN // 96) * record["step_ms"] / 3_600_000
        results[name] = record
    if all("step_ms" in r for r in results.values()):
        results["speedup"] = results["fp32 eager"]["step_ms"] / results["bf16 + channels_last + compile"]["step_ms"]
    return results


def p4(smoke: bool, compiled_model: str = "") -> dict:
    import gpu_suite

    device = _device(smoke)
    _configure(device)
    cfg = gpu_suite.SMOKE["inference"] if smoke else gpu_suite.FULL["inference"]
    mode = "compile" if compiled_model else "eager"
    models = (compiled_model,) if compiled_model else cfg["models"]
    results = {}
    for model in models:
        for batch in cfg["batches"]:
            for name, bf16, channels_last in (("fp32", False, False), ("bf16 + channels_last", True, True)):
                results[f"{model} b{batch} {name} {mode}"] = gpu_suite.attempt(
                    gpu_suite.inference, model, cfg, batch, device, bf16, channels_last, mode)
    return results


# ---------------------------------------------------------------- the parent
def _phases(smoke: bool) -> list[tuple[str, list[str]]]:
    import gpu_suite

    phases = [(p, []) for p in ("P0", "P1", "P2", "P3", "P4")]
    cfg = gpu_suite.SMOKE["inference"] if smoke else gpu_suite.FULL["inference"]
    for model in cfg.get("compile_models", ()) if not smoke else ():
        phases.append(("P5", ["--compiled-model", model]))
    return phases


def run_phase(phase: str, smoke: bool, out: Path, compiled_model: str) -> dict:
    sys.path.insert(0, str(HERE))   # gpu_suite
    if smoke:   # beside other processes (the test suite), a second spinning thread slows a CPU run many times
        import torch

        torch.set_num_threads(1)
    if phase == "P0":
        return p0(smoke)
    if phase == "P1":
        return p1(smoke, out / "p1_runs")
    if phase == "P2":
        return p2(smoke)
    if phase == "P3":
        return p3(smoke)
    return p4(smoke, compiled_model)


def write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_first_run", help="folder for the phases' JSON files")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (the tests)")
    parser.add_argument("--phases", default="P0,P1,P2,P3,P4,P5", help="which phases to run (comma-separated)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)            # the child's side
    parser.add_argument("--compiled-model", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.phase:
        name = args.phase + (f"_{args.compiled_model}" if args.compiled_model else "")
        write_json(out / f"{name}.json", {"phase": name, "results": run_phase(args.phase, args.smoke, out,
                                                                             args.compiled_model)})
        return 0
    sys.path.insert(0, str(HERE))
    wanted = set(args.phases.split(","))
    for phase, extra in _phases(args.smoke):
        if phase not in wanted:
            continue
        name = phase + (f"_{extra[1]}" if extra else "")
        command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--out", str(out), *extra]
        if args.smoke:
            command.append("--smoke")
        # The timeouts are the GPU run's; --smoke runs on a CPU that tests share (three times as long).
        limit = TIMEOUTS[phase] * (3 if args.smoke else 1)
        start = time.perf_counter()
        try:
            done = subprocess.run(command, timeout=limit, capture_output=True, text=True)
            status = {"rc": done.returncode, "stderr_tail": done.stderr[-2000:] if done.returncode else ""}
        except subprocess.TimeoutExpired:
            status = {"rc": None, "timed_out_after_s": limit}
        status.update(phase=name, wall_s=round(time.perf_counter() - start, 1),
                      file=str(out / f"{name}.json") if (out / f"{name}.json").is_file() else None)
        with open(out / "phases.jsonl", "a") as log:
            log.write(json.dumps(status) + "\n")
        print(json.dumps(status)[:300], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
