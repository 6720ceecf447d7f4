import json

import pytest
import torch

from reproduce.bench import run_bench, train_steps


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
