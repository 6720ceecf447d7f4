import json

import pytest
import torch

from lightning_modules.export import export_language_model
from lightning_modules.language_model import LSTMLanguageModel
from reproduce.bench import run_bench


@pytest.mark.slow
def test_quick_bench_writes_its_json(tmp_path):
    torch.manual_seed(0)
    vocab = [str(i) for i in range(10000)]
    dense = LSTMLanguageModel(10000, 32, [32, 32], gated=False).eval()
    gated = LSTMLanguageModel(10000, 32, [32, 32]).eval()
    gated.rnn.hidden_gates[0].force_shut(list(range(16)))
    export_language_model(dense, vocab, tmp_path / "dense")
    export_language_model(gated, vocab, tmp_path / "pruned")
    result = run_bench(str(tmp_path / "bench.json"), quick=True,
                       compare=[str(tmp_path / "dense"), str(tmp_path / "pruned")])
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert [r["hidden"] for r in on_disk["train_step"]] == [200, 650]
    assert all(r["ratio"] > 0 for r in on_disk["train_step"])
    compared = [r for r in on_disk["inference"] if "vs" in r["source"]]
    assert [r["batch"] for r in compared] == [1, 20]
    assert compared[0]["pruned_sizes"] == [16, 32] and compared[0]["dense_sizes"] == [32, 32]
    assert compared[0]["flops_ratio"] > 1
