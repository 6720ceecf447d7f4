"""One timing harness and one hardware probe, for every measured time in the suite.

`python -m reproduce speed` (inference latency of exports), `python -m reproduce bench` (the
gates' training-step overhead) and the SQuAD export's latency check all compare models run
back to back, so they share the way the runs are ordered, summarised and set against the
machine: a number from one is read the same way as a number from another.

Why the runs take turns: a machine drifts (clock boost, thermal throttling, other work), so
timing A for a while and then B for a while measures the drift as much as the models. Run in
turn, A and B see the same machine state, and a ratio taken pair by pair cancels the drift
that medians taken apart would keep.

Light on purpose: torch is imported inside the functions that need it, because
reproduce/measure/speed.py imports this module at load time and `python -m reproduce --help` must not
load torch.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

CACHES_DIR = Path("/sys/devices/system/cpu/cpu0/cache")


# ---- the harness ---------------------------------------------------------------------------------

def time_interleaved(fns: dict[str, Callable], repeats: int, warmup: int,
                     inputs: Sequence | None = None) -> dict[str, list[float]]:
    """Seconds per call of each function, the functions run in turn on every repeat.

    The starting function moves by one each repeat (A B C, B C A, C A B), so none always
    runs right after the same neighbour (which may leave the caches or the clock in its state).
    Without `inputs` the functions take no argument; with it, every function of timed repeat r
    is called on inputs[r % len(inputs)], so each pair compares the models on the same input
    (the warm-up repeats take the last inputs).
    """
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + repeats):
        shift = r % len(names)
        args = () if inputs is None else (inputs[(r - warmup) % len(inputs)],)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name](*args)
            elapsed = time.perf_counter() - start
            if r >= warmup:
                samples[name].append(elapsed)
    return samples


def stats(samples: list[float], scale: float = 1000.0, unit: str = "_ms") -> dict:
    """Median and quartiles (scaled: seconds -> ms by default)."""
    q = statistics.quantiles(samples, n=4) if len(samples) >= 4 else [min(samples), 0.0, max(samples)]
    return {f"median{unit}": statistics.median(samples) * scale, f"q1{unit}": q[0] * scale,
            f"q3{unit}": q[2] * scale, "n": len(samples)}


def paired_ratio(numerator: list[float], denominator: list[float]) -> dict:
    """Statistics of a / b over back-to-back pairs: slow drifts of the machine cancel out of each ratio."""
    return stats([a / b for a, b in zip(numerator, denominator)], scale=1.0, unit="")


# ---- the machine ---------------------------------------------------------------------------------

def cpu_model() -> str:
    # platform.processor() is empty or just "x86_64" on most Linux machines; /proc/cpuinfo names the part
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_caches() -> dict:
    """Cache sizes in bytes as one core sees them (Linux sysfs), e.g. {'L1d': 32768, 'L2': ..., 'L3': ...}."""
    caches = {}
    for index in sorted(CACHES_DIR.glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        multiplier = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(size[-1:], 1)
        caches[f"L{level}{suffix}"] = int(size.rstrip("KMG")) * multiplier
    return caches


def smallest_cache_holding(nbytes: int, caches: dict) -> str:
    # at batch 1 every weight is read once per token: whether they fit in a cache, not the FLOPs, sets the time
    for name in ("L1d", "L2", "L3"):
        if name in caches and nbytes <= caches[name]:
            return name
    return "none (main memory)" if caches else "unknown"


def hardware() -> dict:
    """What a measured time depends on: CPU model, cores, caches, torch threads and version, the GPU."""
    import torch

    return {"cpu": cpu_model(), "machine": platform.machine(), "os": platform.platform(),
            "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "caches_bytes": cpu_caches(),
            "caches_source": f"{CACHES_DIR} (one core's view; L3 is shared)",
            "python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


GPU_MARK = "(CUDA)"  # ends the summary of work that ran on a GPU: tables label such runs by it


def trained_on_gpu(summary: str) -> bool:
    return summary.endswith(GPU_MARK)


def hardware_summary(device: str | None = None, info: dict | None = None) -> str:
    """One line for a result file: the GPU when the work ran on one (device None: whenever torch
    sees one), else the CPU with its cores, torch version and threads."""
    info = info or hardware()
    if info["gpu"] and device in (None, "cuda"):
        return f"{info['gpu']} {GPU_MARK}"
    return (f"{info['cpu']}, {info['logical_cores']} CPU cores, torch {info['torch']}, "
            f"{info['torch_threads']} threads")
