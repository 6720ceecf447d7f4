"""The one timing harness and hardware probe behind `speed`, `bench` and the SQuAD export's latency."""

import subprocess
import sys

from conftest import REPO

from lightning_modules.timing import (
    hardware,
    hardware_summary,
    paired_ratio,
    smallest_cache_holding,
    stats,
    time_interleaved,
)


def test_models_take_turns_and_warmup_is_not_kept():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    samples = time_interleaved(fns, repeats=3, warmup=1)
    assert calls == list("abc" "bca" "cab" "abc")  # each repeat starts one model later
    assert {name: len(s) for name, s in samples.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for s in samples.values() for t in s)


def test_both_models_of_a_repeat_get_the_same_input():
    calls = []
    fns = {name: (lambda x, name=name: calls.append((name, x))) for name in "ab"}
    samples = time_interleaved(fns, repeats=4, warmup=1, inputs=["q0", "q1", "q2"])
    timed = calls[2:]  # the warm-up repeat comes first
    assert timed == [("b", "q0"), ("a", "q0"), ("a", "q1"), ("b", "q1"),
                     ("b", "q2"), ("a", "q2"), ("a", "q0"), ("b", "q0")]
    assert {name: len(s) for name, s in samples.items()} == {"a": 4, "b": 4}


def test_ratios_are_medians_of_pairs():
    # medians alone would give 6 / 3 = 2; the pairs give 10, 1 and 3 -> 3
    assert paired_ratio([10.0, 2.0, 6.0], [1.0, 2.0, 2.0])["median"] == 3.0


def test_statistics_are_in_ms_with_quartiles():
    s = stats([0.001, 0.002, 0.003, 0.004, 0.005])
    assert s["n"] == 5 and s["median_ms"] == 3.0
    assert s["q1_ms"] <= s["median_ms"] <= s["q3_ms"]
    assert stats([0.5, 1.5], scale=1.0, unit="") == {"median": 1.0, "q1": 0.5, "q3": 1.5, "n": 2}


def test_hardware_probe_names_what_a_time_depends_on():
    import torch

    info = hardware()
    assert info["cpu"] and info["torch"] == torch.__version__
    assert info["torch_threads"] == torch.get_num_threads() and info["logical_cores"] >= 1
    assert isinstance(info["caches_bytes"], dict)
    assert info["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    cpu_line = hardware_summary("cpu", info)
    assert info["cpu"] in cpu_line and f"torch {torch.__version__}" in cpu_line
    assert hardware_summary("cuda", {**info, "gpu": "H200"}) == "H200 (CUDA)"
    assert hardware_summary(None, {**info, "gpu": None}) == cpu_line  # no GPU: the CPU, whatever was asked


def test_smallest_cache_holding():
    caches = {"L1d": 32 * 1024, "L2": 1024 ** 2, "L3": 32 * 1024 ** 2}
    assert smallest_cache_holding(1000, caches) == "L1d"
    assert smallest_cache_holding(2 * 1024 ** 2, caches) == "L3"
    assert smallest_cache_holding(64 * 1024 ** 2, caches) == "none (main memory)"
    assert smallest_cache_holding(1, {}) == "unknown"


def test_light_modules_import_without_torch():
    """`python -m reproduce --help` loads every command module (speed imports the timing module at
    load time): none may pull torch in, or the help takes seconds."""
    code = ("import sys; import lightning_modules.timing, lightning_modules.errors, lightning_modules.atomic, "
            "lightning_modules.run_dir, lightning_modules.pruning, lightning_modules.lm, lightning_modules.squad; "
            "import importlib, reproduce.__main__ as cli; "
            "[importlib.import_module(f'reproduce.{module}') for module, _ in cli.COMMANDS.values()]; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
