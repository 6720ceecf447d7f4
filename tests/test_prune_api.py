"""The public API for pruning any model's nn.LSTM / nn.GRU (lightning_modules.pruning):
add_neuron_gates, l0_penalty, remove_pruned_neurons and the NeuronSelection callback, and the
example in docs/PRUNE_YOUR_MODEL.md."""

import logging
import math
import re
import sys
import types

import lightning as L
import pytest
import torch
from conftest import REPO
from torch import nn

from lightning_modules.errors import UserError
from lightning_modules.pruning import NeuronSelection, add_neuron_gates, l0_penalty, remove_pruned_neurons
from lightning_modules.pruning.gated_rnn import GatedRNN
from lightning_modules.pruning.hard_concrete import LOUIZOS_LOG_ALPHA_RANGE, HardConcreteGate
from lightning_modules.pruning.neuron_selection import (
    GatedRecurrent,
    PrunedRNN,
    constrain_gates,
    gate_parameters,
    neurons_kept,
)

# ---- models that are not this suite's --------------------------------------------------------

class Tagger(nn.Module):
    """An RNN over the sequence, then a per-step head: LayerNorm (cannot shrink) or Linear."""

    def __init__(self, rnn: nn.Module, width: int, head: str) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.LayerNorm(width) if head == "layernorm" else nn.Linear(width, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out)


class Stacked(nn.Module):
    """Two single-layer LSTMs one after the other, then a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.LSTM(5, 8)
        self.second = nn.LSTM(8, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        h, _ = self.first(x)
        h, _ = self.second(h)
        return self.fc(h)


def lstm_tagger(head):  # 2 layers, bidirectional, batch_first
    return Tagger(nn.LSTM(5, 8, num_layers=2, bidirectional=True, batch_first=True), 16, head)


def gru_tagger(head):  # 2 layers, bidirectional, time-major
    return Tagger(nn.GRU(5, 8, num_layers=2, bidirectional=True), 16, head)


CASES = {"lstm_layernorm": lambda: lstm_tagger("layernorm"), "lstm_linear": lambda: lstm_tagger("linear"),
         "gru_layernorm": lambda: gru_tagger("layernorm"), "gru_linear": lambda: gru_tagger("linear"),
         "stacked_lstms": Stacked}


def _inputs(seed=0, batch=4, steps=7, width=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, steps, width, generator=g), torch.randn(batch, steps, 3, generator=g)


def _time_major(model):
    return isinstance(model, Stacked) or (isinstance(model, Tagger) and not model.rnn.batch_first)


def _run(model, x):
    out = model(x.transpose(0, 1) if _time_major(model) else x)
    return out.transpose(0, 1) if _time_major(model) else out


def _rnn_params(model):
    return sum(p.numel() for m in model.modules() if isinstance(m, (nn.LSTM, nn.GRU)) for p in m.parameters())


def _count(model):
    return sum(p.numel() for p in model.parameters())


# ---- a freshly gated model is the original ---------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_freshly_gated_model_is_exactly_the_original(case):
    torch.manual_seed(0)
    model = CASES[case]().eval()
    x, _ = _inputs()
    before = _run(model, x)
    gated = add_neuron_gates(model)
    assert gated is model
    rnns = [m for n, m in model.named_modules() if n in ("rnn", "first", "second")]
    assert rnns and all(isinstance(m, GatedRecurrent) for m in rnns)
    gates = [m for m in model.modules() if isinstance(m, HardConcreteGate)]
    assert gates and all(bool((g.deterministic() == 1).all()) for g in gates)  # N(3, 0.1) > ln 11
    assert torch.equal(_run(model, x), before)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("bias", [True, False])
def test_freshly_gated_module_matches_with_a_given_state_unbatched_and_without_biases(cls, bias):
    torch.manual_seed(1)
    rnn = cls(4, 5, num_layers=3, bidirectional=True, batch_first=True, bias=bias).eval()
    x = torch.randn(2, 6, 4)
    h0 = torch.randn(6, 2, 5)
    hx = (h0, torch.randn(6, 2, 5)) if cls is nn.LSTM else h0
    expected = rnn(x, hx)
    expected_unbatched = rnn(x[0], tuple(t[:, 0] for t in hx) if cls is nn.LSTM else h0[:, 0])
    gated = add_neuron_gates(rnn)
    assert isinstance(gated, GatedRecurrent) and gated.bias == bias
    got = gated(x, hx)
    got_unbatched = gated(x[0], tuple(t[:, 0] for t in hx) if cls is nn.LSTM else h0[:, 0])
    for a, b in ((got, expected), (got_unbatched, expected_unbatched)):
        assert torch.equal(a[0], b[0])
        for s, t in zip(torch.utils._pytree.tree_leaves(a[1]), torch.utils._pytree.tree_leaves(b[1])):
            assert torch.equal(s, t)
    # the Parameters are the original's (an optimiser built before holds them) and no random
    # numbers went into copies of them
    assert {id(p) for p in rnn.parameters()} <= {id(p) for p in gated.parameters()}


def test_gating_errors_name_the_module():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 6, proj_size=3)

    with pytest.raises(UserError, match=r"encoder\.lstm is an LSTM with proj_size=3") as e:
        add_neuron_gates(nn.ModuleDict({"encoder": Encoder()}))
    assert "\n" not in str(e.value)
    model = nn.ModuleDict({"encoder": Encoder(), "gru": nn.GRU(3, 3)})
    add_neuron_gates(model, skip=["encoder.lstm"])  # leaving it out works
    assert isinstance(model["encoder"].lstm, nn.LSTM) and isinstance(model["gru"], GatedRecurrent)
    with pytest.raises(UserError, match="no nn.LSTM or nn.GRU"):
        add_neuron_gates(nn.Linear(2, 2))
    with pytest.raises(UserError, match="has no gated RNN"):
        l0_penalty(nn.Linear(2, 2))
    with pytest.raises(UserError, match="PackedSequence"):
        packed = nn.utils.rnn.pack_padded_sequence(torch.randn(3, 2, 3), [3, 2])
        model["gru"](packed)


# ---- training until some neurons close, then removing them ----------------------------------

def _set_some_gates(model, seed):
    """Per gate vector: a few shut (at the clamp's floor: test-time gate 0), a few partly open
    (0 < z < 1, so export has gate values to fold), the rest open."""
    g = torch.Generator().manual_seed(seed)
    low = LOUIZOS_LOG_ALPHA_RANGE[0]
    with torch.no_grad():
        for gate in (m for m in model.modules() if isinstance(m, HardConcreteGate)):
            order = torch.randperm(gate.n, generator=g)
            shut = 1 + int(torch.randint(0, max(gate.n // 3, 1), (1,), generator=g))
            gate.log_alpha[order[:shut]] = low
            gate.log_alpha[order[shut:shut + 2]] = torch.rand(2, generator=g) * 1.5 - 0.5


def _train(model, x, y, steps, reg_lambda, lr=1e-2):
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        out = _run(model, x)[..., :y.shape[-1]]  # a LayerNorm head is wider than the target
        loss = (out - y).square().mean() + reg_lambda * l0_penalty(model)
        loss.backward()
        opt.step()
        constrain_gates(model)  # as this suite does after every step
    return model.eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_trained_then_removed_model_is_smaller_plain_and_computes_the_same(case, caplog):
    torch.manual_seed(2)
    original = CASES[case]()
    dense_params, dense_rnn_params = _count(original), _rnn_params(original)
    model = add_neuron_gates(original)
    _set_some_gates(model, seed=3)
    x, y = _inputs(seed=4)
    _train(model, x, y, steps=25, reg_lambda=1e-3)
    kept = neurons_kept(model)
    for name, k in kept.items():  # some but not all neurons closed, in every module
        total = model.get_submodule(name).hidden_size
        assert all(0 < n < total for n in k["hidden"]), (name, k)

    with caplog.at_level(logging.WARNING, logger="lightning_modules.pruning.neuron_selection"):
        pruned = remove_pruned_neurons(model)
    assert not any(isinstance(m, (GatedRNN, HardConcreteGate)) for m in pruned.modules())
    rnns = [m for m in pruned.modules() if isinstance(m, nn.RNNBase)]
    assert rnns and all(type(m) in (nn.LSTM, nn.GRU) for m in rnns)
    assert _count(pruned) < dense_params and _rnn_params(pruned) < dense_rnn_params
    with torch.no_grad():
        expected, got = _run(model, x), _run(pruned.eval(), x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5
    # the gated model was not touched: it still trains
    assert any(isinstance(m, GatedRecurrent) for m in model.modules())

    if case.endswith("linear"):  # the Linear shrank with the RNN's last layer
        last = kept["rnn"]["hidden"][-2:]
        assert pruned.head.in_features == sum(last) < 16
        assert not any("scattered" in r.message for r in caplog.records)
    if case.endswith("layernorm"):  # the output keeps its width, and a log line says why
        assert pruned.head.normalized_shape == (16,)
        lines = [r.message for r in caplog.records if "scattered into zeros" in r.message]
        assert len(lines) == 1 and "LayerNorm" in lines[0]
    if case == "stacked_lstms":  # the second LSTM reads only the first one's kept neurons
        second = pruned.second
        width = second.input_size if isinstance(second, nn.LSTM) else second.layers[0].input_size
        assert width <= kept["first"]["hidden"][0] < 8
        assert pruned.fc.in_features == kept["second"]["hidden"][0]


def test_state_in_and_out_matches_and_keeps_the_original_layout():
    torch.manual_seed(5)
    rnn = add_neuron_gates(nn.LSTM(4, 6, num_layers=2, bidirectional=True))
    _set_some_gates(rnn, seed=6)
    rnn.eval()
    pruned = remove_pruned_neurons(rnn)
    assert isinstance(pruned, PrunedRNN)
    x = torch.randn(5, 3, 4)
    hx = (torch.randn(4, 3, 6), torch.randn(4, 3, 6))
    with torch.no_grad():
        out_g, (h_g, c_g) = rnn(x, hx)
        out_p, (h_p, c_p) = pruned(x, hx)
        # the state carries into the next segment identically
        next_g, _ = rnn(x.flip(0), (h_g, c_g))
        next_p, _ = pruned(x.flip(0), (h_p, c_p))
    assert h_p.shape == h_g.shape == (4, 3, 6)
    for a, b in ((out_g, out_p), (h_g, h_p), (c_g, c_p), (next_g, next_p)):
        assert (a - b).abs().max() <= 1e-5
    removed = ~torch.stack([g.deterministic() > 0 for g in rnn.hidden_gates])[:, None, :].expand_as(h_p)
    assert removed.any() and (h_p[removed] == 0).all() and (h_g[removed] == 0).all()  # no state


def test_uniform_closures_export_one_plain_module():
    torch.manual_seed(7)
    model = add_neuron_gates(gru_tagger("linear"), input_gates=False)
    with torch.no_grad():
        for gate in model.rnn.hidden_gates:  # two neurons shut in every layer and direction
            gate.log_alpha[torch.randperm(8)[:2]] = -10.0
    model.eval()
    pruned = remove_pruned_neurons(model)
    assert type(pruned.rnn) is nn.GRU
    assert (pruned.rnn.hidden_size, pruned.rnn.num_layers, pruned.rnn.bidirectional) == (6, 2, True)
    x, _ = _inputs(seed=8)
    with torch.no_grad():
        assert (_run(pruned, x) - _run(model, x)).abs().max() <= 1e-5


def test_consumer_rules_residual_tied_weights_untraceable_and_override():
    class Residual(nn.Module):  # the output is read twice: cannot shrink
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = nn.GRU(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out) + out

    class Untraceable(Residual):  # data-dependent control flow: torch.fx cannot trace it
        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out) if x.sum() > -1e9 else out

    x = torch.randn(5, 2, 4)
    for cls, kwargs, shrinks in ((Residual, {}, False), (Untraceable, {}, False),
                                 (Untraceable, {"consumers": {"rnn": "fc"}}, True)):
        torch.manual_seed(9)
        model = add_neuron_gates(cls())
        model.rnn.hidden_gates[0].force_shut([1])
        model.eval()
        pruned = remove_pruned_neurons(model, **kwargs)
        assert pruned.fc.in_features == (3 if shrinks else 4), cls
        with torch.no_grad():
            assert (pruned(x) - model(x)).abs().max() <= 1e-5
    with pytest.raises(UserError, match="consumers: 'nope' is not one of the model's RNNs"):
        remove_pruned_neurons(model, consumers={"nope": "fc"})
    with pytest.raises(UserError, match="'norm' is a LayerNorm; a consumer that shrinks is an nn.Linear"):
        remove_pruned_neurons(add_neuron_gates(nn.ModuleDict({"a": nn.GRU(2, 2), "norm": nn.LayerNorm(2)})),
                              consumers={"a": "norm"})

    class Tied(nn.Module):  # the Linear's weight is shared with another module: cannot shrink
        def __init__(self):
            super().__init__()
            self.rnn, self.fc, self.back = nn.LSTM(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
            self.back.weight = self.fc.weight

        def forward(self, x):
            out, _ = self.rnn(self.back(x))
            return self.fc(out)

    model = add_neuron_gates(Tied())
    model.rnn.hidden_gates[0].force_shut([0])
    pruned = remove_pruned_neurons(model.eval())
    assert pruned.fc.in_features == 4 and pruned.fc.weight is pruned.back.weight
    with torch.no_grad():
        assert (pruned(x) - model(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("pool,shrinks", [("mean_over_time", True), ("max_over_time", True),
                                         ("last_step", True), ("softmax_over_features", False)])
def test_ops_between_the_rnn_and_its_linear(pool, shrinks):
    """Per-feature ops with a non-negative gate passing through keep the Linear shrinkable; an op
    that mixes the features does not (and the export stays exact either way)."""
    ops = {"mean_over_time": lambda out: out.mean(1), "max_over_time": lambda out: torch.amax(out, dim=1),
           "last_step": lambda out: out[:, -1], "softmax_over_features": lambda out: out.softmax(-1)}

    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.fc = nn.LSTM(3, 5, batch_first=True), nn.Linear(5, 2)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.fc(ops[pool](out))

    torch.manual_seed(17)
    model = add_neuron_gates(Pooled())
    _set_some_gates(model, seed=18)
    pruned = remove_pruned_neurons(model.eval())
    kept = neurons_kept(model)["lstm"]["hidden"][0]
    assert pruned.fc.in_features == (kept if shrinks else 5) and kept < 5
    x = torch.randn(4, 6, 3)
    with torch.no_grad():
        assert (pruned(x) - model(x)).abs().max() <= 1e-5


def test_a_fully_closed_layer_is_a_clear_error():
    model = add_neuron_gates(lstm_tagger("linear"))
    model.rnn.hidden_gates[3].force_shut(list(range(8)))
    with pytest.raises(UserError, match=r"every hidden neuron of rnn's layer 1 \(reverse\) is closed") as e:
        remove_pruned_neurons(model)
    assert "\n" not in str(e.value)


# ---- the penalty and the gates' gradients ---------------------------------------------------

def _randomise(model, seed, std=1.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gate_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def test_penalty_is_the_weight_count_of_the_removed_model():
    """With every gate surely open or surely shut, the expected count is the exported count:
    the penalty's units are non-zero RNN weights (weight_ih and weight_hh entries), and the second
    LSTM's columns read from the first one's shut neurons are not counted."""
    torch.manual_seed(10)
    model = add_neuron_gates(Stacked())
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in gate_parameters(model):
            p.copy_(torch.where(torch.rand(p.shape, generator=g) < 0.3, -30.0, 30.0))
            p[0] = 30.0  # no layer entirely shut
    pruned = remove_pruned_neurons(model.eval())
    exported = sum(p.numel() for m in pruned.modules() if isinstance(m, nn.RNNBase)
                   for n, p in m.named_parameters() if n.startswith("weight"))
    assert l0_penalty(model).item() == pytest.approx(exported, rel=1e-6)


def test_penalty_matches_monte_carlo_over_gate_draws():
    torch.manual_seed(12)
    model = add_neuron_gates(Stacked()).train()
    _randomise(model, seed=13)
    first, second = model.first, model.second
    draws, total = 3000, 0.0
    with torch.no_grad():
        for _ in range(draws):
            z1_in, z1_h = first.gate_values()
            z2_in, z2_h = second.gate_values()
            n1, n2 = int((z1_h[0] > 0).sum()), int((z2_h[0] > 0).sum())
            inputs2 = int(((z2_in[0] > 0) & (z1_h[0] > 0)).sum())  # read only if produced
            total += 4 * n1 * (int((z1_in[0] > 0).sum()) + n1) + 4 * n2 * (inputs2 + n2)
    expected = l0_penalty(model).item()
    assert abs(total / draws - expected) / expected < 0.02


def test_gate_gradients_match_finite_differences():
    """Autograd's gradient of (data loss + penalty) in every log_alpha against central
    differences, the gates' noise held fixed (the reparameterisation), in float64."""
    torch.manual_seed(14)
    model = add_neuron_gates(gru_tagger("linear")).double().train()
    _randomise(model, seed=15, std=1.0)
    x, y = (t.double() for t in _inputs(seed=16))

    def objective():
        torch.manual_seed(99)  # the same uniform noise for every gate on every call
        return (_run(model, x) - y).square().mean() + 1e-3 * l0_penalty(model)

    params = gate_parameters(model)
    grads = torch.autograd.grad(objective(), params)
    eps = 1e-6
    with torch.no_grad():
        for p, grad in zip(params, grads):
            for i in range(p.numel()):
                old = p.view(-1)[i].item()
                p.view(-1)[i] = old + eps
                up = objective().item()
                p.view(-1)[i] = old - eps
                down = objective().item()
                p.view(-1)[i] = old
                assert (up - down) / (2 * eps) == pytest.approx(grad.view(-1)[i].item(), rel=1e-4, abs=1e-8)
    assert all((g != 0).any() for g in grads)


def test_the_suites_models_run_the_same_gating_code():
    from lightning_modules.lm.language_model import LSTMLanguageModel
    from lightning_modules.squad.bidaf import LSTM_NAMES, BiDAF

    torch.manual_seed(0)
    lm = LSTMLanguageModel(20, 6, [5, 4])
    assert isinstance(lm.rnn, GatedRNN) and l0_penalty(lm).item() == lm.expected_l0("weights").item()
    gru_lm = LSTMLanguageModel(20, 6, [5, 4], cell="gru")
    assert isinstance(gru_lm.rnn.layers[0], nn.GRU)
    bidaf = BiDAF(30, 20, word_dim=4, char_dim=3, char_channels=4, char_kernel=3, hidden_size=5)
    assert all(isinstance(bidaf.lstm(n), GatedRNN) for n in LSTM_NAMES)
    assert issubclass(GatedRecurrent, GatedRNN)


# ---- the Lightning callback -------------------------------------------------------------------

class Regressor(L.LightningModule):
    """A module written with no pruning in mind. Only the first input feature matters: the
    penalty should close the other inputs."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 6, num_layers=2, batch_first=True)
        self.out = nn.Linear(6, 1)

    def forward(self, x):
        h, _ = self.gru(x)
        return self.out(h)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return (self(x) - y).square().mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def _lightning_module():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, 4, generator=g)
    y = torch.cumsum(x[..., :1], 1) / 3  # a running sum of feature 0
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    return Regressor(), data


@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's notes on this tiny setup
def test_neuron_selection_callback_prunes_freezes_and_exports(tmp_path):
    torch.manual_seed(0)
    module, data = _lightning_module()
    callback = NeuronSelection(reg_lambda=1e-2, export_dir=tmp_path / "pruned", freeze_epoch=13)
    trainer = L.Trainer(max_epochs=15, callbacks=[callback], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        gradient_clip_val=5.0)
    trainer.fit(module, data)
    assert isinstance(module.gru, GatedRecurrent)
    gates = module.gru.input_gates[0]
    assert gates.frozen  # frozen from epoch 13 on
    kept = neurons_kept(module)["gru"]
    # the penalty alone closed the three useless inputs, kept the one that matters, and some
    # (not all) hidden neurons
    assert kept["input"][0] == 1 and bool(gates.deterministic()[0] > 0)
    assert all(0 < n < 6 for n in kept["hidden"])
    assert "neuron_selection/expected_l0" in trainer.callback_metrics
    assert any(k.startswith("kept/gru/") for k in trainer.callback_metrics)

    loaded = torch.load(tmp_path / "pruned" / "model.pt", weights_only=False)
    assert (tmp_path / "pruned" / "model.safetensors").is_file()
    assert _count(loaded) < _count(module) - len(gate_parameters(module))
    x = next(iter(data))[0]
    module.eval()
    with torch.no_grad():
        assert (loaded.eval()(x) - module(x)).abs().max() <= 1e-5
        assert (callback.pruned(x) - module(x)).abs().max() <= 1e-5


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_neuron_selection_callback_adam_takes_the_gates_out_of_the_optimizer():
    torch.manual_seed(0)
    module, data = _lightning_module()
    callback = NeuronSelection(reg_lambda=1e-3, gate_update="adam", gate_lr=0.05)
    trainer = L.Trainer(max_epochs=1, callbacks=[callback], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, data)
    gate_ids = {id(p) for p in gate_parameters(module)}
    in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not gate_ids & in_optimizer
    assert "gate_optimizer" in callback.state_dict()
    assert all(math.isfinite(float(p.sum())) for p in gate_parameters(module))
    with pytest.raises(UserError, match="gate_update must be one of"):
        NeuronSelection(reg_lambda=1.0, gate_update="unclipped")


# ---- the documented example runs ----------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's notes on the tiny example
def test_docs_example_runs(monkeypatch, capsys):
    text = (REPO / "docs" / "PRUNE_YOUR_MODEL.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3, "docs/PRUNE_YOUR_MODEL.md: the plain and the Lightning example, then 8 bits"
    # a module of its own, as a user's script is, so that the callback's torch.save can pickle
    # the example's classes by name
    module = types.ModuleType("prune_your_model_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile("\n".join(blocks), "docs/PRUNE_YOUR_MODEL.md", "exec"), module.__dict__)
    # the example asserts that the pruned model computes what the gated one does
    assert module.pruned_params < module.dense_params
    assert module.small.head.in_features < 32  # read through a mean over time: the Linear shrank
    printed = capsys.readouterr().out
    assert f"parameters: {module.dense_params} -> {module.pruned_params}" in printed
    assert "config.json" in printed and "model.pt" in printed
    assert "DynamicQuantizedGRU" in printed and module.accuracy_int8 >= module.accuracy - 0.05
