"""8-bit exports (lightning_modules/lm/quantize.py), `python -m reproduce speed --quantize int8`, and sharing
an export through huggingface_hub (lightning_modules/lm/hub.py). Shrunk models built here; the Hub itself
is never reached (a local folder stands in for it)."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from lightning_modules.lm.evaluate import ptb_data_of_run, ptb_test_perplexity
from lightning_modules.lm.export import export_language_model, load_exported_language_model
from lightning_modules.lm.hub import PrunedLanguageModel
from lightning_modules.lm.language_model import LSTMLanguageModel
from lightning_modules.lm.onnx_export import (
    OnnxRuntimeLanguageModel,
    export_onnx,
    export_onnx_with_state,
    ort_session,
)
from lightning_modules.lm.quantize import (
    INT8_RELATIVE_TOLERANCE,
    check_int8,
    load_int8_language_model,
    quantize_int8,
    quantize_onnx_int8,
    relative_difference,
)
from reproduce.__main__ import main

VOCAB = [f"w{i}" for i in range(50)]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _gated(vocab_size: int, cell: str, seed: int = 1) -> LSTMLanguageModel:
    """A gated model with partly open and shut gates: its export is physically smaller."""
    torch.manual_seed(seed)
    model = LSTMLanguageModel(vocab_size, 12, [16, 10], cell=cell)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in [*model.rnn.input_gates, *model.rnn.hidden_gates]:
            gate.log_alpha.copy_(torch.randn(gate.n, generator=gen) * 2 + 1)
            gate.force_shut(list(range(gate.n // 3)))
    return model.eval()


def _export(path: Path, cell: str = "lstm", vocab: list[str] = VOCAB) -> tuple[LSTMLanguageModel, Path]:
    model = _gated(len(vocab), cell)
    export_language_model(model, vocab, path, extra={"method": "l0", "reg_lambda": 1e-6})
    return model, path


def _tokens(batch: int = 3, steps: int = 9, vocab_size: int = len(VOCAB)) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, steps), generator=torch.Generator().manual_seed(7))


# ---- torch ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_int8_logits_stay_within_the_bound_and_a_wrong_scale_fails_it(tmp_path, cell):
    """The int8 copy of a pruned export is close to it; the same int8 weights read with a wrong scale
    (the decoder's doubled) are caught by the same bound."""
    _, export = _export(tmp_path / "export", cell)
    fp32, _ = load_exported_language_model(export)
    int8 = quantize_int8(fp32)
    assert type(int8.decoder).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert all(type(layer).__module__.startswith("torch.ao.nn.quantized.dynamic") for layer in int8.rnn.layers)
    tokens = _tokens()
    with torch.no_grad():
        expected, good = fp32(tokens)[0], int8(tokens)[0]
        difference = check_int8(expected, good, "int8")
        assert 0 < difference <= INT8_RELATIVE_TOLERANCE  # quantized (not a copy), and close
        weight, bias = int8.decoder._weight_bias()
        wrong = torch._make_per_tensor_quantized_tensor(weight.int_repr(), weight.q_scale() * 2, weight.q_zero_point())
        int8.decoder.set_weight_bias(wrong, bias)
        broken = int8(tokens)[0]
    assert relative_difference(expected, broken) > INT8_RELATIVE_TOLERANCE
    with pytest.raises(RuntimeError, match="the quantization is broken"):
        check_int8(expected, broken, "int8")


def test_quantizing_leaves_the_fp32_model_alone(tmp_path):
    fp32, _ = load_exported_language_model(_export(tmp_path / "export")[1])
    before = {k: v.clone() for k, v in fp32.state_dict().items()}
    quantize_int8(fp32)
    assert all(torch.equal(before[k], v) for k, v in fp32.state_dict().items())
    assert type(fp32.decoder) is torch.nn.Linear


# ---- torch and ONNX Runtime, from the export folder ----------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_int8_export_of_a_pruned_model_runs_in_torch_and_onnxruntime(tmp_path, cell):
    """The export folder, loaded as int8 in plain PyTorch and quantized to an int8 ONNX file: both
    give the gated model's logits within the int8 bound. ONNX Runtime's int8 LSTM is
    DynamicQuantizeLSTM; it has no int8 GRU, so a GRU's decoder alone is int8 there."""
    gated, export = _export(tmp_path / "export", cell)
    int8, config = load_int8_language_model(export)
    assert config["hidden_sizes"] != [16, 10]  # pruned
    seq_len = 6
    tokens = _tokens(steps=seq_len)
    with torch.no_grad():
        expected = gated(tokens)[0]
        check_int8(expected, int8(tokens)[0], "torch int8")
    files = export_onnx(load_exported_language_model(export)[0], tmp_path / "onnx", seq_len)
    int8_file = quantize_onnx_int8(files["model"])
    assert int8_file == tmp_path / "onnx" / "model_int8.onnx"
    ops = {node.op_type for node in onnx.load(str(int8_file)).graph.node}
    assert "MatMulInteger" in ops
    assert ("DynamicQuantizeLSTM" in ops) == (cell == "lstm")
    session = ort_session(int8_file, threads=1)
    for batch in (1, 3):
        tokens = _tokens(batch, seq_len)
        got = session.run(None, {"tokens": tokens.numpy()})[0]
        with torch.no_grad():
            assert got.shape == (batch, seq_len, len(VOCAB))
            check_int8(gated(tokens)[0], got, f"onnxruntime int8, batch {batch}")
    assert not np.array_equal(got, gated(tokens)[0].detach().numpy())
    # the form a text stream runs on: the state carried from one window into the next
    stream = OnnxRuntimeLanguageModel(quantize_onnx_int8(export_onnx_with_state(
        load_exported_language_model(export)[0], tmp_path / "onnx", seq_len)), cell)
    first, second = _tokens(2, seq_len), _tokens(2, seq_len).flip(1)
    with torch.no_grad():
        expected, state = gated(first)
        got, ort_state = stream(first)
        check_int8(expected, got, "first window")
        check_int8(gated(second, state)[0], stream(second, ort_state)[0], "second window, carried state")
        assert relative_difference(gated(second)[0], stream(second, ort_state)[0]) > 0  # the state matters


# ---- the command ---------------------------------------------------------------------------------

def test_speed_sizes_times_a_gru_in_int8(tmp_path, capsys):
    out = tmp_path / "gru.json"
    code = main(["speed", "--sizes", "16,16", "8,4", "--cell", "gru", "--quantize", "int8", "--quick",
                 "--seq-len", "3", "--threads", "1", "--backends", "torch", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    int8 = result["int8"]
    assert int8["engine"] == torch.backends.quantized.engine
    assert int8["test_ppl"] == {"torch": None, "onnxruntime": None} and int8["test_ppl_fp32"] is None  # random weights
    for block in ("speedup", "dense_int8_speedup"):
        assert set(int8[block]) == {"torch"} and set(int8[block]["torch"]["model"]) == {"1", "20"}
    cell = result["latency"]["torch"]["model"]["20"]
    assert set(cell) == {"dense", "pruned", "dense_int8", "pruned_int8", "ratios"}
    assert int8["speedup"]["torch"]["model"]["20"] == cell["ratios"]["int8_speedup"]["median"]
    assert result["hardware"]["quantized_engine"] == int8["engine"]
    assert result["settings"]["quantize"] == "int8"
    assert "int8 (" in capsys.readouterr().out


def test_speed_without_quantize_writes_no_int8_fields(tmp_path):
    out = tmp_path / "fp32.json"
    assert main(["speed", "--sizes", "16,16", "8,4", "--quick", "--seq-len", "2", "--batches", "1",
                 "--threads", "1", "--backends", "torch", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "int8" not in result and "quantize" not in result["settings"]
    assert set(result["latency"]["torch"]["model"]["1"]) == {"dense", "pruned", "ratios"}


@pytest.mark.slow
def test_speed_export_quantize_int8_in_both_backends(tmp_path, capsys):
    """A PTB-vocabulary export in a run dir: int8 timed beside fp32 in torch and ONNX Runtime, and its
    test perplexity measured through training's own test loop (the run's config.yaml sets the test
    rows, here 20 for speed). The fp32 number equals the gated model's, as training would report it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("data:\n  test_batch_size: 20\n  num_steps: 35\n")
    (run_dir / "result.json").write_text("{}")
    from lightning_modules.lm.ptb_data import PTBDataModule

    gated, export = _export(run_dir / "export", vocab=PTBDataModule().vocab)
    data = ptb_data_of_run(run_dir, PTBDataModule().vocab, "test")
    code = main(["speed", "--export", str(export), "--quantize", "int8", "--quick", "--seq-len", "4",
                 "--batches", "1", "20", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((run_dir / "speed.json").read_text())
    int8 = result["int8"]
    assert set(int8) == {"engine", "test_ppl", "test_ppl_fp32", "speedup", "dense_int8_speedup"}
    assert int8["test_ppl_fp32"] == pytest.approx(ptb_test_perplexity(gated, data), rel=1e-5)
    assert int8["test_ppl"]["torch"] == pytest.approx(int8["test_ppl_fp32"], rel=0.01)
    assert int8["test_ppl"]["torch"] != int8["test_ppl_fp32"]
    assert int8["test_ppl"]["onnxruntime"] == pytest.approx(int8["test_ppl"]["torch"], rel=0.01)
    assert Path(result["onnx"]["pruned_int8"]["model_with_state"]) == run_dir / "onnx" / "model_with_state_int8.onnx"
    for backend in ("torch", "onnxruntime"):
        assert set(int8["speedup"][backend]["model"]) == {"1", "20"}
        assert int8["speedup"][backend]["model"]["1"] > 0
        assert set(result["latency"][backend]["lstm"]["1"]) >= {"dense_int8", "pruned_int8", "plain_at_pruned_sizes"}
    assert set(int8["dense_int8_speedup"]["torch"]["model"]) == {"1", "20"}
    checks = result["int8_checks"]
    assert checks["test_data"] == {"source": "embedded", "num_steps": 35, "test_batch_size": 20}
    assert max(checks["relative_difference_vs_fp32"].values()) <= INT8_RELATIVE_TOLERANCE
    assert set(checks["relative_difference_vs_fp32"]) == {f"{b}_{m}" for b in ("torch", "onnxruntime")
                                                        for m in ("dense_int8", "pruned_int8")}
    # the export's int8 ONNX files are kept beside its fp32 ones
    assert Path(result["onnx"]["pruned_int8"]["model"]) == run_dir / "onnx" / "model_int8.onnx"
    assert (run_dir / "onnx" / "lstm_int8.onnx").is_file() and result["onnx"]["dense_int8"]["model"] is None
    assert result["speedup"]["torch"]["model"]["1"] > 0  # the fp32 fields as before


# ---- the Hub ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("quantize", [None, "int8"])
def test_save_pretrained_and_from_pretrained_round_trip(tmp_path, quantize):
    gated, export = _export(tmp_path / "run" / "export")
    (tmp_path / "run" / "result.json").write_text(json.dumps({
        "method": "l0", "lambda": 1e-6, "metrics": {"test_ppl": 111.62},
        "command": "python -m reproduce.train --config reproduce/configs/ptb_small_l0.yaml"}))
    (tmp_path / "run" / "speed.json").write_text(json.dumps({"int8": {"test_ppl": {"torch": 112.05}}}))
    model = PrunedLanguageModel.from_export(export, quantize=quantize)
    model.save_pretrained(tmp_path / "shared")
    assert {p.name for p in (tmp_path / "shared").iterdir()} == {"config.json", "model.safetensors", "README.md"}
    loaded = PrunedLanguageModel.from_pretrained(tmp_path / "shared")
    tokens = _tokens()
    with torch.no_grad():
        assert torch.equal(loaded(tokens)[0], model(tokens)[0])  # the same model, int8 or not
        bound = INT8_RELATIVE_TOLERANCE if quantize else 1e-5
        assert relative_difference(gated(tokens)[0], loaded(tokens)[0]) <= bound
    assert (type(loaded.model.decoder) is torch.nn.Linear) == (quantize is None)
    # the folder is the export contract: the plain loader reads it without this wrapper
    plain, config = load_exported_language_model(tmp_path / "shared")
    assert config["quantization"] == quantize and config["hidden_sizes"] == plain.rnn.hidden_sizes
    card = (tmp_path / "shared" / "README.md").read_text()
    kept = f"| hidden sizes kept | {config['hidden_sizes']} of [16, 10] |"
    for fact in ("| method | l0 |", "| lambda | 1e-06 |", kept,
                 "| test perplexity (fp32) | 111.62 |", "ptb_small_l0.yaml", "arxiv.org/abs/1906.06847"):
        assert fact in card
    assert ("| test perplexity (int8) | 112.05 |" in card) == (quantize == "int8")
    # saved again from what was loaded: the card keeps its facts
    loaded.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "README.md").read_text() == card


def test_quantize_of_an_export_not_trained_on_ptb_is_one_error_line_before_any_work(tmp_path, capsys):
    _, export = _export(tmp_path / "run" / "export")  # a 50-word vocabulary
    (tmp_path / "run" / "result.json").write_text("{}")
    code = main(["speed", "--export", str(export), "--quantize", "int8", "--quick"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "vocabulary (50 tokens) is not PTB's" in err and "--quantize with --export" in err
    assert not list(tmp_path.rglob("speed.json")) and not list(tmp_path.rglob("*.onnx"))
