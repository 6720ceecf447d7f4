"""`python -m reproduce speed` and the ONNX export it times (short sequences keep the exports fast)."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from lightning_modules.lm.export import export_language_model, load_exported_language_model
from lightning_modules.lm.language_model import LSTMLanguageModel, model_size
from lightning_modules.lm.onnx_export import export_onnx
from reproduce.__main__ import main
from reproduce.measure.speed import default_settings, measure_export, measure_run_dirs, sizes_output
from reproduce.measure.speed_models import Sizes
from reproduce.measure.speed_timing import Settings

VOCAB = [f"w{i}" for i in range(30)]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """--threads sets torch's thread count for the whole process; give the next test the old one."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _pruned_export(path: Path, cell: str = "lstm") -> Path:
    """A gated model with partly open (0 < z < 1) and shut gates, exported: a physically smaller model."""
    torch.manual_seed(1)
    model = LSTMLanguageModel(len(VOCAB), 12, [10, 8], cell=cell)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for gate in [*model.rnn.input_gates, *model.rnn.hidden_gates]:
            gate.log_alpha.copy_(torch.randn(gate.n, generator=gen) * 2 + 1)
            gate.force_shut(list(range(gate.n // 3)))
    export_language_model(model.eval(), VOCAB, path)
    return path


def _run_main(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- ONNX export ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_onnx_export_gives_torch_logits(tmp_path):
    """About 10-20 s, most of it the exporter's one-time setup in a process."""
    model, _ = load_exported_language_model(_pruned_export(tmp_path / "export"))
    assert model.rnn.hidden_sizes != [10, 8]  # something was removed
    seq_len = 6
    info = export_onnx(model, tmp_path / "onnx", seq_len, check_batches=(1, 2))
    assert info["max_abs_diff"]["model"] <= 1e-4
    model_session = ort.InferenceSession(info["model"], providers=["CPUExecutionProvider"])
    lstm_session = ort.InferenceSession(info["lstm"], providers=["CPUExecutionProvider"])
    batch_dim, time_dim = model_session.get_inputs()[0].shape
    assert isinstance(batch_dim, str) and time_dim == seq_len  # any batch, the exported length
    for batch in (1, 2, 5):  # 5: a batch size the export never saw
        tokens = torch.randint(0, len(VOCAB), (batch, seq_len))
        x = torch.randn(seq_len, batch, model.embedding.embedding_dim)
        with torch.no_grad():
            logits = model(tokens)[0].numpy()  # the model's own forward, not the export wrapper
            lstm_out = model.rnn(x)[0].numpy()
        onnx_logits = model_session.run(None, {"tokens": tokens.numpy()})[0]
        onnx_lstm = lstm_session.run(None, {"x": x.numpy()})[0]
        assert onnx_logits.shape == logits.shape == (batch, seq_len, len(VOCAB))
        assert np.abs(onnx_logits - logits).max() <= 1e-4
        assert np.abs(onnx_lstm - lstm_out).max() <= 1e-4


# ---- naming -------------------------------------------------------------------------------------

def test_default_output_name_for_sizes():
    dense, pruned = Sizes(1500, (1500, 1500)), Sizes(373, (373, 315))
    assert sizes_output(dense, pruned, False) == Path("results/speed/sizes_1500-1500_vs_373-315.json")
    assert sizes_output(dense, pruned, True).name == "sizes_1500-1500_vs_373-315_emb1500-373.json"


# ---- the command ----------------------------------------------------------------------------------

def test_speed_sizes_writes_its_json(tmp_path, capsys):
    """Torch only (the ONNX side is checked on an export below, where its files are kept)."""
    out = tmp_path / "speed.json"
    code, stdout, err = _run_main(["speed", "--sizes", "16,16", "8,4", "--quick", "--seq-len", 4,
                                   "--threads", 1, "--backends", "torch", "--out", out], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    for key in ("created", "settings", "hardware", "sizes", "weight_bytes", "flops_ratio", "lstm_flops_ratio",
                "latency", "speedup"):
        assert key in result
    assert result["settings"]["batches"] == [1, 20] and result["settings"]["threads"] == 1
    assert result["settings"]["seq_len"] == 4 and result["settings"]["repeats"] == 3
    assert result["hardware"]["torch_threads"] == 1 and "caches_bytes" in result["hardware"]
    assert result["sizes"]["dense"] == {"embedding_dim": 16, "hidden_sizes": [16, 16]}
    assert result["sizes"]["pruned"]["hidden_sizes"] == [8, 4] and result["sizes"]["pruned"]["embedding_dim"] == 8
    dense, pruned = model_size(10000, 16, [16, 16]), model_size(10000, 8, [8, 4])
    assert result["flops_ratio"] == pytest.approx(dense["flops_per_token"] / pruned["flops_per_token"])
    assert result["weight_bytes"]["dense"]["lstm"] == 4 * dense["lstm_params"]
    assert result["weight_bytes"]["pruned"]["model"] == 4 * pruned["params"]
    assert set(result["speedup"]) == {"torch"}
    for part in ("model", "lstm"):
        assert set(result["speedup"]["torch"][part]) == {"1", "20"}
        cell = result["latency"]["torch"][part]["1"]
        assert set(cell) == {"dense", "pruned", "ratios"}  # no export here, so no plain reference
        assert 0 < cell["pruned"]["median_ms"] and cell["pruned"]["n"] == 3
        assert cell["ratios"]["speedup"]["median"] == result["speedup"]["torch"][part]["1"]
    assert result["export_vs_plain"] is None and result["onnx"] == {}
    assert "| torch | model | 1 |" in stdout and "| torch | lstm | 20 |" in stdout


@pytest.mark.slow
def test_speed_export_writes_speed_json_in_its_run_dir(tmp_path, capsys):
    """Six ONNX exports (three models, whole and LSTM): tens of seconds on 2 loaded cores."""
    run_dir = tmp_path / "run"
    _pruned_export(run_dir / "export")
    (run_dir / "result.json").write_text("{}")
    code, stdout, err = _run_main(["speed", "--export", run_dir / "export", "--quick", "--seq-len", 4,
                                   "--batches", 1, 3, "--threads", 1], capsys)
    assert code == 0, err
    result = json.loads((run_dir / "speed.json").read_text())
    config = json.loads((run_dir / "export" / "config.json").read_text())
    assert result["sizes"]["dense"] == config["original_sizes"]
    assert result["sizes"]["pruned"]["hidden_sizes"] == config["hidden_sizes"]
    assert result["sizes"]["pruned"]["embedding_dim"] == config["embedding_dim"]
    for backend in ("torch", "onnxruntime"):
        for ratio in ("speedup", "export_vs_plain"):
            assert set(result[ratio][backend]["model"]) == {"1", "3"}
            assert result[ratio][backend]["lstm"]["3"] > 0
        assert set(result["latency"][backend]["model"]["3"]) == {"dense", "pruned", "plain_at_pruned_sizes", "ratios"}
    # the export's ONNX files are kept beside speed.json, the dense and plain ones are not
    assert Path(result["onnx"]["pruned"]["model"]) == run_dir / "onnx" / "model.onnx"
    assert (run_dir / "onnx" / "lstm.onnx").is_file()
    assert result["onnx"]["dense"]["model"] is None
    assert result["onnx"]["pruned"]["max_abs_diff"]["model"] <= 1e-4
    assert set(result["onnxruntime_vs_torch"]["onnxruntime"]["lstm"]) == {"1", "3"}
    assert "| onnxruntime | lstm | 3 |" in stdout and "export/plain" in stdout


def test_profile_measures_each_lm_export_once(tmp_path, capsys):
    """The profile runner's entry: run dirs with an LM export and no speed.json yet, nothing else."""
    runs = {name: tmp_path / name for name in ("new", "measured", "unexported", "bidaf")}
    for name in ("new", "measured", "bidaf"):
        _pruned_export(runs[name] / "export")
    runs["unexported"].mkdir()
    (runs["measured"] / "speed.json").write_text('{"kept": true}')
    bidaf_config = runs["bidaf"] / "export" / "config.json"
    bidaf_config.write_text(json.dumps({**json.loads(bidaf_config.read_text()), "format": "neuron-selection-bidaf/1"}))
    settings = Settings(batches=(1,), seq_len=3, repeats=2, warmup=0, threads=1, threads_from="test",
                        backends=("torch",), devices=("cpu",), quick=True)
    torch.set_num_threads(1)
    assert measure_run_dirs(list(runs.values()), settings) == [runs["new"] / "speed.json"]
    assert json.loads((runs["new"] / "speed.json").read_text())["speedup"]["torch"]["model"]["1"] > 0
    assert json.loads((runs["measured"] / "speed.json").read_text()) == {"kept": True}
    assert not (runs["unexported"] / "speed.json").exists() and not (runs["bidaf"] / "speed.json").exists()


def test_arguments_arrive_as_their_types():
    """argparse converts them (no string parsed later by hand); the defaults are of the same types."""
    settings = default_settings("--batches", "5", "1", "5", "--seq-len", "7", "--warmup", "0", "--threads", "1")
    assert settings.batches == (5, 1) and settings.seq_len == 7 and settings.warmup == 0  # duplicates dropped
    assert settings.repeats == 30 and settings.threads == 1 and settings.quick is False
    assert default_settings().batches == (1, 20) and default_settings("--quick").repeats == 3


def test_a_gru_export_is_timed_against_a_gru_original(tmp_path, capsys):
    """The dense original and the plain reference are built with the export's cell, and its FLOPs
    counted for that cell: a GRU has three gate blocks where an LSTM has four."""
    export = _pruned_export(tmp_path / "run" / "export", cell="gru")
    (export.parent / "result.json").write_text("{}")
    settings = Settings(batches=(1,), seq_len=3, repeats=2, warmup=0, threads=1, threads_from="test",
                        backends=("torch",), devices=("cpu",), quick=True)
    torch.set_num_threads(1)
    result = measure_export(export, settings)
    config = json.loads((export / "config.json").read_text())
    pruned_size = model_size(len(VOCAB), config["embedding_dim"], config["hidden_sizes"], config["input_sizes"],
                             cell="gru")
    dense_size = model_size(len(VOCAB), 12, [10, 8], cell="gru")
    assert result["sizes"]["cell"] == "gru"
    assert result["flops_per_token"]["dense"]["lstm"] == dense_size["lstm_flops_per_token"]
    assert result["flops_per_token"]["pruned"]["lstm"] == pruned_size["lstm_flops_per_token"]
    assert result["weight_bytes"]["dense"]["lstm"] == 4 * dense_size["lstm_params"]  # a GRU's, not an LSTM's
    assert "GRU" in capsys.readouterr().out


def test_sizes_take_a_cell(tmp_path, capsys):
    out = tmp_path / "gru.json"
    code, stdout, err = _run_main(["speed", "--sizes", "16,16", "8,4", "--cell", "gru", "--quick", "--seq-len", 2,
                                   "--batches", 1, "--threads", 1, "--backends", "torch", "--out", out], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["sizes"]["cell"] == "gru"
    assert result["weight_bytes"]["dense"]["lstm"] == 4 * model_size(10000, 16, [16, 16], cell="gru")["lstm_params"]


def _not_a_run_dir(tmp_path: Path) -> Path:
    return _pruned_export(tmp_path / "loose" / "export")


def _without_original_sizes(tmp_path: Path) -> Path:
    export = _pruned_export(tmp_path / "old" / "export")
    (export.parent / "result.json").write_text("{}")
    config = json.loads((export / "config.json").read_text())
    del config["original_sizes"]
    (export / "config.json").write_text(json.dumps(config))
    return export


@pytest.mark.parametrize("argv,message", [
    (["speed"], "give either --export"),
    (["speed", "--sizes", "1500,abc", "373,315"], "'1500,abc' is not a comma-separated list"),
    (["speed", "--sizes", "100,100"], "--sizes takes two models"),
    (["speed", "--sizes", "100,100", "50,120"], "pruned layer 1 has 120 units, more than the dense 100"),
    (["speed", "--sizes", "100,100", "50"], "the dense model has 2 layers, the pruned one 1"),
    (["speed", "--sizes", "100,100", "50,50", "--embedding-dims", "100", "101"], "pruned embedding has 101"),
    (["speed", "--sizes", "16,16", "8,4", "--batches", "0"], "--batches: '0' is not an integer >= 1"),
    (["speed", "--sizes", "16,16", "8,4", "--batches", "1", "x"], "--batches: 'x' is not an integer >= 1"),
    (["speed", "--sizes", "16,16", "8,4", "--warmup", "-1"], "--warmup: '-1' is not an integer >= 0"),
    (["speed", "--sizes", "16,16", "8,4", "--seq-len", "3.5"], "--seq-len: '3.5' is not an integer >= 1"),
    (["speed", "--sizes", "16,16", "8,4", "--embedding-dims", "16", "0"], "--embedding-dims: '0' is not an integer"),
    (["speed", "--sizes", "16,16", "8,4", "--cell", "rnn"], "--cell: 'rnn' is not one of lstm, gru"),
    (["speed", "--export", "{tmp}", "--cell", "gru"], "--cell goes with --sizes"),
    (["speed", "--sizes", "16,16", "8,4", "--export", "{tmp}"], "give either --export"),
    (["speed", "--export", "{tmp}/missing"], "no such folder"),
    (["speed", "--export", "{tmp}"], "no config.json there"),
    (["speed", "--export", "{loose}"], "not a run dir"),
    (["speed", "--export", "{old}"], "has no usable original_sizes"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, argv, message):
    makers = {"{loose}": _not_a_run_dir, "{old}": _without_original_sizes, "{tmp}": lambda tmp: tmp}
    for placeholder, make in makers.items():
        if placeholder in argv:
            argv = [a.replace(placeholder, str(make(tmp_path))) for a in argv]
    code, stdout, err = _run_main(argv, capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not list(tmp_path.rglob("speed.json")) and not list(tmp_path.rglob("*.onnx"))  # nothing half done


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_error_line(capsys):
    code, _, err = _run_main(["speed", "--sizes", "16,16", "8,4", "--devices", "cuda"], capsys)
    assert code == 2 and "torch sees no GPU" in err
