"""The gated GRU (gated_rnn.GatedRNN with cell="gru"): the fused masked path against a per-step
cell loop, its expected L0 against Monte Carlo, the neuron removal of its three gate blocks, and
the GRU language model's export."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lightning_modules.errors import UserError
from lightning_modules.lm.export import export_language_model, load_exported_language_model, neurons_kept
from lightning_modules.lm.language_model import LSTMLanguageModel, model_size
from lightning_modules.pruning.gated_rnn import GateConfig, GatedGRU, GatedLSTM, GatedRNN, gate_rows

VOCAB = [f"w{i}" for i in range(30)]


def _randomise_gates(rnn, std=2.0):
    with torch.no_grad():
        for g in rnn.gates():
            g.log_alpha.normal_(0.0, std)


def _gru_cell_loop(layer, x, h, gate_h, reverse=False):
    """PyTorch's GRU equations step by step, the recurrent read of h scaled by `gate_h`:
    n = tanh(W_in x + b_in + r * (W_hn (z h) + b_hn)), with b_hn inside r (not foldable into b_in)."""
    w_ir, w_iz, w_in = layer.weight_ih_l0.chunk(3)
    w_hr, w_hz, w_hn = layer.weight_hh_l0.chunk(3)
    b_ir, b_iz, b_in = layer.bias_ih_l0.chunk(3)
    b_hr, b_hz, b_hn = layer.bias_hh_l0.chunk(3)
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    outs = [None] * x.shape[0]
    for t in steps:
        read = h * gate_h
        r = torch.sigmoid(x[t] @ w_ir.T + b_ir + read @ w_hr.T + b_hr)
        u = torch.sigmoid(x[t] @ w_iz.T + b_iz + read @ w_hz.T + b_hz)
        n = torch.tanh(x[t] @ w_in.T + b_in + r * (read @ w_hn.T + b_hn))
        h = (1 - u) * n + u * h  # the neuron's own memory: raw h, as the fused kernel keeps it
        outs[t] = h
    return torch.stack(outs), h


def reference_forward(rnn: GatedRNN, x, state):
    z_in, z_hid = rnn.gate_values()
    d = rnn.directions
    new_state = []
    for k in range(rnn.num_layers):
        gate_x = z_in[k] if k == 0 else z_in[k] * rnn.layer_output(z_hid, k - 1)
        xk = x * gate_x
        outs, finals = [], []
        for direction in range(d):
            i = k * d + direction
            out, h = _gru_cell_loop(rnn.layers[i], xk, state[k][0][direction], z_hid[i], reverse=direction == 1)
            outs.append(out)
            finals.append(h)
        x = torch.cat(outs, -1)
        new_state.append((torch.stack(finals),))
    return x * rnn.layer_output(z_hid, rnn.num_layers - 1), new_state


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_fused_masked_gru_matches_cell_loop(train, bidirectional):
    torch.manual_seed(0)
    rnn = GatedGRU(5, [7, 6, 4], bidirectional=bidirectional).double().train(train)
    _randomise_gates(rnn)
    x = torch.randn(6, 3, 5, dtype=torch.double)
    d = rnn.directions
    state = [(torch.randn(d, 3, h, dtype=torch.double),) for h in rnn.hidden_sizes]
    torch.manual_seed(7)  # the same gate draw for both paths
    out_fast, st_fast = rnn(x, state)
    loss_fast = (out_fast ** 2).sum() + sum(s[0].sum() for s in st_fast)
    grads_fast = torch.autograd.grad(loss_fast, list(rnn.parameters()))
    torch.manual_seed(7)
    out_ref, st_ref = reference_forward(rnn, x, state)
    loss_ref = (out_ref ** 2).sum() + sum(s[0].sum() for s in st_ref)
    grads_ref = torch.autograd.grad(loss_ref, list(rnn.parameters()))
    assert torch.allclose(out_fast, out_ref, atol=1e-10)
    for a, b in zip(st_fast, st_ref):
        assert torch.allclose(a[0], b[0], atol=1e-10)
    names = [n for n, _ in rnn.named_parameters()]
    for name, a, b in zip(names, grads_fast, grads_ref):
        assert torch.allclose(a, b, atol=1e-9), name
    for name, g in zip(names, grads_fast):
        if name.endswith("log_alpha"):  # every gate gets a gradient from the data term
            assert torch.isfinite(g).all() and (g != 0).any(), name


@pytest.mark.parametrize("cls,module", [(GatedGRU, torch.nn.GRU), (GatedLSTM, torch.nn.LSTM)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_ungated_stack_is_bitwise_the_plain_module(cls, module, bidirectional):
    torch.manual_seed(0)
    rnn = cls(4, [6, 6], gated=False, bidirectional=bidirectional)
    ref = module(4, 6, num_layers=2, bidirectional=bidirectional)
    d = rnn.directions
    with torch.no_grad():
        for k in range(2):
            for direction in range(d):
                suffix = f"_l{k}" + ("_reverse" if direction else "")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, name + suffix).copy_(getattr(rnn.layers[k * d + direction], f"{name}_l0"))
    x = torch.randn(5, 2, 4)
    out, state = rnn(x)
    ref_out, ref_state = ref(x)
    assert torch.equal(out, ref_out)
    ref_h = ref_state[0] if module is torch.nn.LSTM else ref_state
    assert torch.equal(torch.cat([s[0] for s in state]), ref_h)


def _nonzero_weights(rnn, z_in, z_hid):
    """Actual number of non-zero weight_ih / weight_hh entries of the model a gate draw leaves."""
    total, d, b = 0, rnn.directions, rnn.blocks
    for k in range(rnn.num_layers):
        alive_in = z_in[k] > 0
        if k > 0:
            alive_in = alive_in & (rnn.layer_output(z_hid, k - 1) > 0)
        for direction in range(d):
            n_h = int((z_hid[k * d + direction] > 0).sum())
            total += b * n_h * (int(alive_in.sum()) + n_h)
    return total


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gru_expected_l0_matches_monte_carlo(bidirectional):
    torch.manual_seed(0)
    rnn = GatedGRU(6, [8, 5, 4], bidirectional=bidirectional).train()
    _randomise_gates(rnn, std=1.5)
    draws = 8000
    mc = 0.0
    with torch.no_grad():
        for _ in range(draws):
            mc += _nonzero_weights(rnn, *rnn.gate_values())
    expected = rnn.expected_l0("weights").item()
    assert abs(mc / draws - expected) / expected < 0.01
    # three gate blocks: the same gates give 3/4 of an LSTM's expected count
    torch.manual_seed(0)
    lstm = GatedLSTM(6, [8, 5, 4], bidirectional=bidirectional)
    with torch.no_grad():
        for a, b in zip(lstm.gates(), rnn.gates()):
            a.log_alpha.copy_(b.log_alpha)
    assert lstm.expected_l0().item() == pytest.approx(expected * 4 / 3, rel=1e-6)


def test_gate_rows_are_j_h_plus_j_and_2h_plus_j():
    keep = torch.tensor([True, False, True, False, False])
    assert gate_rows(keep, 3).tolist() == [0, 2, 5, 7, 10, 12]


def _gru_lm(emb, hidden, shut, seed):
    torch.manual_seed(seed)
    model = LSTMLanguageModel(len(VOCAB), emb, hidden, cell="gru")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for g in model.rnn.gates():
            g.log_alpha.copy_(torch.randn(g.n, generator=gen) * 2 + 1)
            g.force_shut(torch.randperm(g.n, generator=gen)[: int(shut * g.n)])
    return model.eval()


@pytest.mark.parametrize("emb,hidden,shut", [(10, [12], 0.3), (9, [14, 8], 0.5)])
def test_gru_language_model_export_reloads_and_matches(tmp_path, emb, hidden, shut):
    model = _gru_lm(emb, hidden, shut, seed=len(hidden))
    config = export_language_model(model, VOCAB, tmp_path / "e")
    on_disk = json.loads((tmp_path / "e" / "config.json").read_text())
    assert on_disk["cell"] == "gru" and config["hidden_sizes"] == neurons_kept(model)["hidden"] != hidden
    tensors = load_file(tmp_path / "e" / "model.safetensors")
    for k, h in enumerate(config["hidden_sizes"]):  # the keys as for an LSTM, three gate blocks
        assert tensors[f"lstm.{k}.weight_hh"].shape == (3 * h, h)
        assert tensors[f"lstm.{k}.bias_hh"].shape == (3 * h,)
    assert config["lstm_params"] == model_size(len(VOCAB), config["embedding_dim"], config["hidden_sizes"],
                                               cell="gru")["lstm_params"]
    plain, _ = load_exported_language_model(tmp_path / "e")
    assert isinstance(plain.rnn.layers[0], torch.nn.GRU) and not plain.rnn.gated
    tokens = torch.randint(0, len(VOCAB), (3, 8))
    with torch.no_grad():
        gated_logits, gated_state = model(tokens)
        plain_logits, plain_state = plain(tokens)
        gated_next, _ = model(tokens.flip(1), gated_state)
        plain_next, _ = plain(tokens.flip(1), plain_state)
    assert (gated_logits - plain_logits).abs().max() <= 1e-5
    assert (gated_next - plain_next).abs().max() <= 1e-5


def test_export_without_cell_is_an_lstm_and_unknown_cell_is_refused(tmp_path):
    torch.manual_seed(0)
    model = LSTMLanguageModel(len(VOCAB), 6, [5], gated=False).eval()
    export_language_model(model, VOCAB, tmp_path / "e")
    cfg_file = tmp_path / "e" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    del cfg["cell"]  # an export from before the GRU
    cfg_file.write_text(json.dumps(cfg))
    plain, _ = load_exported_language_model(tmp_path / "e")
    assert isinstance(plain.rnn.layers[0], torch.nn.LSTM)
    cfg_file.write_text(json.dumps({**cfg, "cell": "rnn"}))
    with pytest.raises(UserError, match="cell 'rnn'"):
        load_exported_language_model(tmp_path / "e")


def test_gru_fully_pruned_layer_is_a_clear_error(tmp_path):
    model = _gru_lm(8, [6, 6], 0.0, seed=0)
    model.rnn.hidden_gates[0].force_shut(list(range(6)))
    with pytest.raises(UserError, match="every hidden neuron of GRU layer 0"):
        export_language_model(model, VOCAB, tmp_path / "x")


def test_gru_input_gates_off_and_hidden_gates_off():
    torch.manual_seed(0)
    only_hidden = GatedGRU(4, [5, 3], gate_config=GateConfig(input_gates=False))
    assert len(only_hidden.input_gates) == 0 and len(only_hidden.hidden_gates) == 2
    z_in, _ = only_hidden.gate_values()
    assert [z.tolist() for z in z_in] == [[1.0] * 4, [1.0] * 5]
    only_input = GatedGRU(4, [5, 3], gate_config=GateConfig(hidden_gates=False))
    assert len(only_input.hidden_gates) == 0 and only_input.output_probs() is None
    x = torch.randn(3, 2, 4)
    assert only_input(x)[0].shape == (3, 2, 3) and only_hidden(x)[0].shape == (3, 2, 3)


@pytest.mark.parametrize("layer", [0, 1])
def test_zeroed_gru_iss_group_is_removed_by_export(tmp_path, layer):
    """A dense GRU LM whose ISS group of neuron 3 is all zero (rows 3, H+3, 2H+3 of both matrices,
    column 3 of weight_hh and of its consumer) exports one neuron smaller, exactly: its biases,
    b_hn included, stay non-zero, and nothing reads its output."""
    torch.manual_seed(0)
    model = LSTMLanguageModel(len(VOCAB), 8, [6, 6], gated=False, cell="gru").eval()
    gru = model.rnn.layers[layer]
    consumer = model.rnn.layers[1].weight_ih_l0 if layer == 0 else model.decoder.weight
    rows = [g * 6 + 3 for g in range(3)]
    with torch.no_grad():
        for p in (gru.weight_ih_l0, gru.weight_hh_l0):
            p[rows] = 0
        gru.weight_hh_l0[:, 3] = 0
        consumer[:, 3] = 0
        assert gru.bias_hh_l0[rows].abs().min() > 0
    config = export_language_model(model, VOCAB, tmp_path / "e")
    assert config["hidden_sizes"] == ([5, 6] if layer == 0 else [6, 5])
    plain, _ = load_exported_language_model(tmp_path / "e")
    tokens = torch.randint(0, len(VOCAB), (3, 9))
    with torch.no_grad():
        assert (plain(tokens)[0] - model(tokens)[0]).abs().max() <= 1e-6
