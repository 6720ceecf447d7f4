import pytest
import torch

from lightning_modules.pruning.gated_lstm import GateConfig, GatedLSTM


def _randomise_gates(rnn, std=2.0):
    with torch.no_grad():
        for g in [*rnn.input_gates, *rnn.hidden_gates]:
            g.log_alpha.normal_(0.0, std)


def reference_forward(rnn: GatedLSTM, x, state):
    """Slow reference: a per-timestep LSTM cell loop that gates x and h explicitly."""
    z_in, z_hid = rnn.gate_values()
    new_state = []
    for k, lstm in enumerate(rnn.layers):
        gate_x = z_in[k] if k == 0 else z_in[k] * z_hid[k - 1]
        h, c = state[k][0][0], state[k][1][0]
        outs = []
        for t in range(x.shape[0]):
            pre = ((x[t] * gate_x) @ lstm.weight_ih_l0.T + lstm.bias_ih_l0
                   + (h * z_hid[k]) @ lstm.weight_hh_l0.T + lstm.bias_hh_l0)
            i, f, g, o = pre.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        x = torch.stack(outs)
        new_state.append((h[None], c[None]))
    return x * z_hid[-1], new_state


@pytest.mark.parametrize("inner_input_gates", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_fused_masked_path_matches_cell_loop(train, inner_input_gates):
    torch.manual_seed(0)
    rnn = GatedLSTM(7, [9, 6, 5], dropout=0.0,
                    gate_config=GateConfig(inner_input_gates=inner_input_gates)).double().train(train)
    _randomise_gates(rnn)
    x = torch.randn(8, 3, 7, dtype=torch.double)
    state = [(torch.randn(1, 3, h, dtype=torch.double), torch.randn(1, 3, h, dtype=torch.double))
             for h in rnn.hidden_sizes]
    torch.manual_seed(123)  # the same gate draw for both paths
    out_fast, st_fast = rnn(x, state)
    grads_fast = torch.autograd.grad((out_fast ** 2).sum() + sum(c.sum() for _, c in st_fast),
                                     list(rnn.parameters()))
    torch.manual_seed(123)
    out_ref, st_ref = reference_forward(rnn, x, state)
    grads_ref = torch.autograd.grad((out_ref ** 2).sum() + sum(c.sum() for _, c in st_ref),
                                    list(rnn.parameters()))
    assert torch.allclose(out_fast, out_ref, atol=1e-10)
    for (h1, c1), (h2, c2) in zip(st_fast, st_ref):
        assert torch.allclose(h1, h2, atol=1e-10) and torch.allclose(c1, c2, atol=1e-10)
    names = [n for n, _ in rnn.named_parameters()]
    for name, a, b in zip(names, grads_fast, grads_ref):
        assert torch.allclose(a, b, atol=1e-9), name
    # every gate gets a gradient from the data term
    for name, g in zip(names, grads_fast):
        if name.endswith("log_alpha"):
            assert torch.isfinite(g).all() and (g != 0).any(), name


def test_state_carries_across_segments():
    torch.manual_seed(0)
    rnn = GatedLSTM(4, [5, 3]).eval()
    x = torch.randn(10, 2, 4)
    full, _ = rnn(x)
    first, state = rnn(x[:6])
    second, _ = rnn(x[6:], state)
    assert torch.allclose(torch.cat([first, second]), full, atol=1e-6)


def test_ungated_is_plain_lstm_stack():
    torch.manual_seed(0)
    rnn = GatedLSTM(4, [6, 6], gated=False)
    assert not hasattr(rnn, "input_gates") and rnn.gate_parameters() == []
    ref = torch.nn.LSTM(4, 6, num_layers=2)
    with torch.no_grad():
        for k, layer in enumerate(rnn.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{k}").copy_(getattr(layer, f"{name}_l0"))
    x = torch.randn(5, 2, 4)
    assert torch.allclose(rnn(x)[0], ref(x)[0], atol=1e-6)


def _nonzero_weights(rnn, z_in, z_hid):
    """Actual number of non-zero LSTM weights of the model a gate draw leaves."""
    total = 0
    for k in range(rnn.num_layers):
        n_h = int((z_hid[k] > 0).sum())
        alive_in = z_in[k] > 0
        if k > 0:
            alive_in = alive_in & (z_hid[k - 1] > 0)
        total += 4 * n_h * (int(alive_in.sum()) + n_h)
    return total


@pytest.mark.parametrize("inner_input_gates", [True, False])
def test_expected_l0_matches_monte_carlo(inner_input_gates):
    torch.manual_seed(0)
    rnn = GatedLSTM(6, [8, 5, 4], gate_config=GateConfig(inner_input_gates=inner_input_gates)).train()
    _randomise_gates(rnn, std=1.5)
    draws = 20000
    mc_weights = mc_neurons = 0.0
    with torch.no_grad():
        for _ in range(draws):
            z_in, z_hid = rnn.gate_values()
            mc_weights += _nonzero_weights(rnn, z_in, z_hid)
            # only real gates count (inner_input_gates=False: inputs above layer 0 have none)
            mc_neurons += sum(int((z > 0).sum()) for z in [*z_in[:len(rnn.input_gates)], *z_hid])
    expected = rnn.expected_l0("weights").item()
    assert abs(mc_weights / draws - expected) / expected < 0.01
    expected_n = rnn.expected_l0("neurons").item()
    assert abs(mc_neurons / draws - expected_n) / expected_n < 0.01


def test_expected_l0_gradient_reaches_every_gate():
    torch.manual_seed(0)
    rnn = GatedLSTM(6, [8, 5])
    rnn.expected_l0("weights").backward()
    for g in [*rnn.input_gates, *rnn.hidden_gates]:
        assert (g.log_alpha.grad > 0).all()


def test_ungated_expected_l0_is_the_dense_count():
    rnn = GatedLSTM(6, [8, 5], gated=False)
    assert rnn.expected_l0().item() == 4 * 8 * (6 + 8) + 4 * 5 * (8 + 5)
