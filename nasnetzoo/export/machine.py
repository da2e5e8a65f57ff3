"""The machine a benchmark ran on, and its measured peak multiply-accumulate rate.

The compute bound of a network is ``MACs / peak MAC rate``: the time it would take if every
multiply-accumulate ran at the speed of the best dense kernel this CPU has.  The peak is measured,
not taken from a datasheet (a VM's vCPUs, turbo and the BLAS in use all change it): the best of
several runs of a large fp32 matrix product (``torch.mm``, MKL) and of a large 3x3 convolution
(``torch.nn.functional.conv2d``, oneDNN), at the thread count of the benchmark.
"""
from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from typing import Optional

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def _cpuinfo() -> list[dict[str, str]]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return []
    blocks = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        blocks.append(entry)
    return blocks


def machine_info(threads: Optional[int] = None) -> dict:
    """CPU model (/proc/cpuinfo), cores, ISA flags, library versions, load: what a report must name."""
    import torch

    cpus = _cpuinfo()
    first = cpus[0] if cpus else {}
    physical = {(c.get("physical id"), c.get("core id")) for c in cpus if "core id" in c}
    flags = set(first.get("flags", "").split())
    info = {
        "cpu_model": first.get("model name") or platform.processor() or platform.machine(),
        "cpu_family_model_stepping": "/".join(first.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "logical_cpus": os.cpu_count(),
        "physical_cores": len(physical) or None,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "virtualized": "hypervisor" in flags,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    from importlib import metadata

    from .runtimes import all_versions

    for pkg in ("torchvision",) + all_versions():
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def describe_machine(info: dict) -> str:
    cores = f"{info['physical_cores']} physical cores, " if info.get("physical_cores") else ""
    virt = ", virtualized" if info.get("virtualized") else ""
    return (f"{info['cpu_model']} (family/model/stepping {info['cpu_family_model_stepping']}{virt}; "
            f"{cores}{info['logical_cpus']} logical CPUs; ISA {', '.join(info['isa']) or 'baseline'}), "
            f"{info['threads']} threads used")


def measure_peak_macs(threads: Optional[int] = None, repeats: int = 5, size: int = 2048) -> dict:
    """Peak fp32 MAC/s: the best of ``repeats`` runs of an ``size``^3 matmul and of a 3x3 conv
    (256 -> 256 channels, 56x56, batch 4), at ``threads`` threads."""
    import torch
    import torch.nn.functional as F

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        gen = torch.Generator().manual_seed(0)
        a, b = torch.randn(size, size, generator=gen), torch.randn(size, size, generator=gen)
        x = torch.randn(4, 256, 56, 56, generator=gen)
        w = torch.randn(256, 256, 3, 3, generator=gen)
        with torch.inference_mode():
            def best(fn, macs):
                fn()  # warm-up (kernel selection, page faults)
                times = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t)
                return macs / min(times)
            mm = best(lambda: torch.mm(a, b), size ** 3)
            conv = best(lambda: F.conv2d(x, w, padding=1), 4 * 256 * 256 * 9 * 56 * 56)
    finally:
        torch.set_num_threads(old)
    return {
        "matmul_macs_per_s": mm,
        "conv_macs_per_s": conv,
        "peak_macs_per_s": max(mm, conv),
        "threads": threads or old,
        "method": (f"best of {repeats} runs of a {size}x{size}x{size} fp32 matmul (torch.mm) and of a 3x3 "
                   "conv 256->256 channels on 4x56x56 (F.conv2d), after one warm-up run each, at the "
                   "benchmark's thread count; peak = the faster of the two"),
    }


def combine_peaks(before: dict, after: dict) -> dict:
    """One peak from measurements taken before and after a benchmark: the higher (what the CPU can
    do), with both kept and a note when they differ by more than 10% (the load changed meanwhile)."""
    best = before if before["peak_macs_per_s"] >= after["peak_macs_per_s"] else after
    lo, hi = sorted((before["peak_macs_per_s"], after["peak_macs_per_s"]))
    out = dict(best, peak_before_macs_per_s=before["peak_macs_per_s"],
               peak_after_macs_per_s=after["peak_macs_per_s"])
    out["method"] = best["method"] + "; measured before and after the timings, the higher kept"
    if hi > 1.1 * lo:
        out["note"] = (f"the peak measured before ({before['peak_macs_per_s'] / 1e9:.1f} GMAC/s) and after "
                       f"({after['peak_macs_per_s'] / 1e9:.1f} GMAC/s) the timings differ by more than 10%: "
                       "the machine's load changed during the run")
    return out
