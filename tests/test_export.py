import json

import pytest
import torch
from safetensors.torch import load_file

from lightning_modules.errors import UserError
from lightning_modules.lm.export import export_language_model, load_exported_language_model, neurons_kept
from lightning_modules.lm.language_model import LSTMLanguageModel

VOCAB = [f"w{i}" for i in range(40)]


def _pruned_model(emb, hidden, shut_fraction, seed):
    torch.manual_seed(seed)
    model = LSTMLanguageModel(len(VOCAB), emb, hidden)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for g in [*model.rnn.input_gates, *model.rnn.hidden_gates]:
            # a mix of fully open (test gate 1), partly open (0 < z < 1) and shut gates
            g.log_alpha.copy_(torch.randn(g.n, generator=gen) * 2 + 1)
            shut = torch.randperm(g.n, generator=gen)[: int(shut_fraction * g.n)]
            g.force_shut(shut)
    return model.eval()


@pytest.mark.parametrize("emb,hidden,shut", [
    (16, [12], 0.3),
    (10, [20, 8], 0.5),
    (24, [16, 16, 12], 0.25),
    (8, [30, 30], 0.9),
])
def test_export_reproduces_gated_model(tmp_path, emb, hidden, shut):
    model = _pruned_model(emb, hidden, shut, seed=len(hidden))
    config = export_language_model(model, VOCAB, tmp_path / "export")
    plain, loaded_config = load_exported_language_model(tmp_path / "export")
    assert loaded_config == config
    kept = neurons_kept(model)
    assert config["hidden_sizes"] == kept["hidden"]
    assert config["embedding_dim"] == kept["input"][0]
    assert config["hidden_sizes"] != hidden  # something was physically removed
    tokens = torch.randint(0, len(VOCAB), (4, 9))
    with torch.no_grad():
        gated_logits, gated_state = model(tokens)
        plain_logits, plain_state = plain(tokens)
        # the carried state continues identically into the next segment
        gated_next, _ = model(tokens.flip(1), gated_state)
        plain_next, _ = plain(tokens.flip(1), plain_state)
    assert plain_logits.dtype == torch.float32
    assert (gated_logits - plain_logits).abs().max() <= 1e-4
    assert (gated_next - plain_next).abs().max() <= 1e-4


def test_export_contract_keys_and_plain_torch_modules(tmp_path):
    model = _pruned_model(12, [10, 7], 0.4, seed=3)
    config = export_language_model(model, VOCAB, tmp_path / "e")
    tensors = load_file(tmp_path / "e" / "model.safetensors")
    expected = {"embedding.weight", "decoder.weight", "decoder.bias"} | {
        f"lstm.{k}.{n}" for k in range(2) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    assert set(tensors) == expected
    on_disk = json.loads((tmp_path / "e" / "config.json").read_text())
    for key in ("vocab_size", "embedding_dim", "hidden_sizes", "input_sizes", "tie_weights", "vocab"):
        assert key in on_disk
    assert on_disk["vocab"] == VOCAB
    # a user rebuilds it from torch.nn only, as DESIGN.md promises
    emb = torch.nn.Embedding.from_pretrained(tensors["embedding.weight"])
    lstms = []
    for k, (i, h) in enumerate(zip(config["input_sizes"], config["hidden_sizes"])):
        lstm = torch.nn.LSTM(i, h)
        lstm.load_state_dict({f"{n}_l0": tensors[f"lstm.{k}.{n}"]
                              for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        lstms.append(lstm)
    dec = torch.nn.Linear(config["hidden_sizes"][-1], config["vocab_size"])
    dec.load_state_dict({"weight": tensors["decoder.weight"], "bias": tensors["decoder.bias"]})
    tokens = torch.randint(0, len(VOCAB), (3, 5))
    with torch.no_grad():
        x = emb(tokens.t())
        for lstm in lstms:
            x, _ = lstm(x)
        logits = dec(x).transpose(0, 1)
        assert (logits - model(tokens)[0]).abs().max() <= 1e-4


def test_dense_export_is_lossless(tmp_path):
    torch.manual_seed(0)
    model = LSTMLanguageModel(len(VOCAB), 8, [6, 6], gated=False).eval()
    config = export_language_model(model, VOCAB, tmp_path / "d")
    assert config["hidden_sizes"] == [6, 6] and config["embedding_dim"] == 8
    plain, _ = load_exported_language_model(tmp_path / "d")
    tokens = torch.randint(0, len(VOCAB), (2, 7))
    with torch.no_grad():
        assert torch.equal(plain(tokens)[0], model(tokens)[0])


def test_fully_pruned_layer_is_a_clear_error(tmp_path):
    model = _pruned_model(8, [6, 6], 0.0, seed=0)
    model.rnn.hidden_gates[1].force_shut(list(range(6)))
    with pytest.raises(UserError, match="every hidden neuron of LSTM layer 1"):
        export_language_model(model, VOCAB, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_loader_rejects_vocab_mismatch_and_missing_files(tmp_path):
    model = _pruned_model(8, [6], 0.0, seed=0)
    export_language_model(model, VOCAB, tmp_path / "e")
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    cfg["vocab"] = cfg["vocab"][:-1]
    (tmp_path / "e" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="vocab"):
        load_exported_language_model(tmp_path / "e")
    with pytest.raises(UserError, match="not found"):
        load_exported_language_model(tmp_path / "nothing")
    # a weights file without a tensor the config implies
    model = _pruned_model(8, [6], 0.0, seed=0)
    export_language_model(model, VOCAB, tmp_path / "f")
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tmp_path / "f" / "model.safetensors"))
    del tensors["lstm.0.bias_hh"]
    save_file(tensors, str(tmp_path / "f" / "model.safetensors"))
    with pytest.raises(UserError, match=r"lacks the tensors \['lstm.0.bias_hh'\]"):
        load_exported_language_model(tmp_path / "f")


@pytest.mark.parametrize("layer", [0, 1])
def test_zeroed_iss_group_is_removed_by_export_and_outputs_are_unchanged(tmp_path, layer):
    """A dense model whose ISS group (neuron 3 of a layer) is all zero exports one neuron smaller.
    The group holds weights only (iss-rnns): the neuron's biases stay non-zero, and removing it
    is still exact, because nothing reads its output."""
    torch.manual_seed(0)
    model = LSTMLanguageModel(len(VOCAB), 8, [6, 6], gated=False).eval()
    lstm, consumer = model.rnn.layers[layer], (model.rnn.layers[1].weight_ih_l0 if layer == 0 else
                                               model.decoder.weight)
    rows = [g * 6 + 3 for g in range(4)]
    with torch.no_grad():
        for p in (lstm.weight_ih_l0, lstm.weight_hh_l0):
            p[rows] = 0
        lstm.weight_hh_l0[:, 3] = 0
        consumer[:, 3] = 0
        assert lstm.bias_ih_l0[rows].abs().min() > 0
        model.rnn.layers[0].weight_ih_l0[:, 2] = 0  # and one embedding dimension nobody reads
    config = export_language_model(model, VOCAB, tmp_path / "e")
    assert config["hidden_sizes"] == ([5, 6] if layer == 0 else [6, 5]) and config["embedding_dim"] == 7
    plain, _ = load_exported_language_model(tmp_path / "e")
    tokens = torch.randint(0, len(VOCAB), (3, 11))
    with torch.no_grad():
        assert (plain(tokens)[0] - model(tokens)[0]).abs().max() <= 1e-6


def test_export_tensors_of_a_loaded_export_are_its_file(tmp_path):
    """What hub.py saves of a loaded export is the export's own weights file, tensor for tensor."""
    from lightning_modules.lm.export import export_tensors

    export_language_model(_pruned_model(10, [12, 7], 0.3, seed=5), VOCAB, tmp_path / "e")
    plain, _ = load_exported_language_model(tmp_path / "e")
    on_disk = load_file(tmp_path / "e" / "model.safetensors")
    saved = export_tensors(plain)
    assert set(saved) == set(on_disk) and all(torch.equal(saved[k], on_disk[k]) for k in on_disk)
