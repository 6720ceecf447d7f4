import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from reproduce.measure.bench import run_bench, run_step_bench, train_steps


@pytest.fixture
def one_thread():
    """A test checks that the bench runs, not how fast: one thread keeps it quick on a busy machine
    (two OpenMP threads on two cores shared with other work wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_quick_bench_writes_its_json(tmp_path, one_thread):
    result = run_bench(str(tmp_path / "bench.json"), quick=True, hidden=(8, 16))
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert [r["hidden"] for r in on_disk["train_step"]] == [8, 16]
    for r in on_disk["train_step"]:
        assert r["gated"]["n"] == r["plain"]["n"] == 5
        assert r["gated"]["q1_ms"] <= r["gated"]["median_ms"] <= r["gated"]["q3_ms"]
        assert r["ratio"] == r["ratio_q1_q3"]["median"] > 0
        assert r["ratio_q1_q3"]["q1"] <= r["ratio"] <= r["ratio_q1_q3"]["q3"] and r["ratio_q1_q3"]["n"] == 5
    # the machine the times belong to: the CPU (the bench never uses a GPU), its threads, torch
    assert on_disk["hardware"].endswith(f"torch {torch.__version__}, 1 threads")
    assert "inference" not in on_disk  # inference speed is the speed command's job


def test_the_gated_step_pays_for_what_training_does(one_thread):
    """The ratio means "gates cost this much" only if the timed gated step does a training step's
    gate work: fresh noise every step, the masks and the expected-L0 penalty in the backward."""
    steps = train_steps(hidden=8, batch=2)
    gated, plain, x = steps["models"]["gated"], steps["models"]["plain"], steps["input"]
    gates = gated.gate_parameters()
    assert gated.training and gates
    with torch.no_grad():
        assert not torch.equal(gated(x)[0], gated(x)[0])  # sampled gates: two forwards differ

    torch.manual_seed(1)
    steps["gated"]()
    with_penalty = [p.grad.clone() for p in gates]
    assert all(g.abs().sum() > 0 for g in with_penalty)  # the masks are in the graph
    gated.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same noise, the loss without the penalty
    gated(x)[0].square().mean().backward()
    assert any(not torch.equal(a, p.grad) for a, p in zip(with_penalty, gates))  # the penalty is too
    assert all(p.grad is not None for p in gated.parameters())

    steps["plain"]()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in plain.parameters())


def test_quick_step_bench_times_each_step_impl_and_a_floor(tmp_path, one_thread):
    """`bench --steps --quick`: whole training steps of the tiny LM through Lightning's loop, for
    each step_impl this machine has (graph needs CUDA), with the matmul/bandwidth floor."""
    out = tmp_path / "steps.json"
    result = run_step_bench(str(out), quick=True, methods=["dense", "l0"])
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(result))
    impls = ["eager", "fused"] + (["graph"] if torch.cuda.is_available() else [])
    assert [(r["method"], r["impl"]) for r in on_disk["steps"]] == [(m, i) for m in ("dense", "l0") for i in impls]
    for r in on_disk["steps"]:
        assert r["size"] == "tiny" and r["n"] == on_disk["chunks"] == 3
        assert 0 < r["q1_ms"] <= r["median_ms"] <= r["q3_ms"]
        assert r["s_per_epoch"] == pytest.approx(r["median_ms"] * ((929_589 // 4 - 1) // 10) / 1e3)
        assert r["ran_as"] == r["impl"]
    floor = on_disk["floor"]
    assert floor["flops_per_s"] > 0 and floor["bytes_per_s"] > 0
    tiny = floor["per_size"]["tiny"]
    # 3 x the forward's matmul FLOPs: 2 LSTM layers 16 -> 16 and the decoder to 500 words, 40 tokens
    assert tiny["flops_per_step"] == 3 * 2 * (2 * 4 * 16 * 32 + 500 * 16) * 40
    assert tiny["floor_ms"] == max(tiny["compute_ms"], tiny["memory_ms"]) > 0


def test_step_bench_refuses_unknown_names():
    from argparse import Namespace

    from lightning_modules.errors import UserError
    from reproduce.measure.bench import run

    with pytest.raises(UserError, match="bench --methods: unknown"):
        run(Namespace(steps=True, out=None, quick=True, sizes=None, methods="dense,sideways", impls=None,
                      precision="fp32"))


def test_gpu_window_scripts_parse():
    """reproduce/measure/gpu: the window's scripts are valid bash, the concurrency script starts. (The
    window's dry run, WINDOW_DRY_RUN=1 bash reproduce/measure/gpu/window.sh, takes minutes: not here.)"""
    for script in ("window.sh", "fetch_wheels.sh"):
        path = REPO / "reproduce" / "measure" / "gpu" / script
        checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
    usage = subprocess.run([sys.executable, str(REPO / "reproduce" / "measure" / "gpu" / "concurrency.py"), "--help"],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "per 10 minutes" in usage.stdout and "--counts" in usage.stdout
    probe = subprocess.run([sys.executable, str(REPO / "reproduce" / "measure" / "gpu" / "probe.py"), "plan", "--help"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and "--seconds" in probe.stdout, probe.stderr
