import json

import pytest
import torch

from reproduce.__main__ import main
from reproduce.bench import run_bench


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
    assert "inference" not in on_disk  # inference speed is the speed command's job


def test_bench_no_longer_times_exports(capsys):
    """One way to time inference: `python -m reproduce speed`; bench refuses the old --compare."""
    try:
        code = main(["bench", "--compare", "a", "b"])
    except SystemExit as e:  # argparse rejects an unknown option before the command runs
        code = e.code
    assert code == 2
    assert "unrecognized arguments: --compare" in capsys.readouterr().err
