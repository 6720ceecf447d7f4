"""The Lasso-type baselines' building blocks against brute-force definitions."""

import pytest
import torch

from lightning_modules.pruning.structured_sparsity import (
    group_lasso_penalty,
    l1_penalty,
    lm_units,
    lstm_weight_matrices,
    scheduled_neuron_count,
    threshold_,
    unit_group_norms,
    zero_groups,
    zhu_gupta_sparsity,
)


def _stack(sizes=(5, 4, 3), inp=6, vocab=7, seed=0):
    torch.manual_seed(seed)
    ins = [inp, *sizes[:-1]]
    layers = [torch.nn.LSTM(i, h).double() for i, h in zip(ins, sizes)]
    decoder = torch.nn.Parameter(torch.randn(vocab, sizes[-1], dtype=torch.double))
    return layers, decoder


def _params(layers, decoder):
    named = {}
    for k, lstm in enumerate(layers):
        for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            named[f"{k}.{n}"] = getattr(lstm, n)
    named["decoder"] = decoder
    return named


def _membership(layers, decoder, layer, neuron):
    """Brute force: a 0/1 mask per parameter marking the ISS group of (layer, neuron)."""
    masks = {name: torch.zeros_like(p) for name, p in _params(layers, decoder).items()}
    hidden = layers[layer].hidden_size
    rows = [g * hidden + neuron for g in range(4)]
    for n in ("weight_ih_l0", "weight_hh_l0"):  # iss-rnns: weights only, the biases are in no group
        masks[f"{layer}.{n}"][rows] = 1
    masks[f"{layer}.weight_hh_l0"][:, neuron] = 1
    consumer = f"{layer + 1}.weight_ih_l0" if layer + 1 < len(layers) else "decoder"
    masks[consumer][:, neuron] = 1
    return masks


def test_group_norms_match_brute_force():
    layers, decoder = _stack()
    params = _params(layers, decoder)
    norms = unit_group_norms(lm_units(layers, decoder))
    for layer, lstm in enumerate(layers):
        for neuron in range(lstm.hidden_size):
            masks = _membership(layers, decoder, layer, neuron)
            brute = sum((params[n] * m).square().sum() for n, m in masks.items()).sqrt()
            assert torch.allclose(norms[layer][neuron], brute)


def test_group_lasso_gradient_matches_analytic_form():
    """d/dw sum_g ||g|| = sum over the groups holding w of w / ||g|| (groups overlap at consumers)."""
    layers, decoder = _stack(seed=1)
    params = _params(layers, decoder)
    group_lasso_penalty(lm_units(layers, decoder)).backward()
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    norms = unit_group_norms(lm_units(layers, decoder))
    for layer, lstm in enumerate(layers):
        for neuron in range(lstm.hidden_size):
            for n, m in _membership(layers, decoder, layer, neuron).items():
                expected[n] += m * params[n].detach() / norms[layer][neuron].detach()
    for n, p in params.items():
        grad = p.grad if p.grad is not None else torch.zeros_like(p)  # biases: in no group
        assert torch.allclose(grad, expected[n]), n


def test_zero_group_is_detected_and_has_a_finite_gradient():
    layers, decoder = _stack(seed=2)
    with torch.no_grad():
        for n, m in _membership(layers, decoder, 1, 2).items():
            p = _params(layers, decoder)[n]
            p.mul_(1 - m)
    flags = zero_groups(layers, decoder)
    assert flags[1].tolist() == [False, False, True, False]
    assert not flags[0].any() and not flags[2].any()
    group_lasso_penalty(lm_units(layers, decoder)).backward()
    assert all(torch.isfinite(p.grad).all() for p in _params(layers, decoder).values() if p.grad is not None)


def test_thresholding_leaves_nothing_between_zero_and_threshold():
    torch.manual_seed(0)
    weights = [torch.randn(50, 40) * 1e-3, torch.randn(30, 30) * 1e-3]
    before = [w.clone() for w in weights]
    zeros = threshold_(weights, 1e-3)
    for w, b in zip(weights, before):
        assert ((w == 0) | (w.abs() >= 1e-3)).all()
        kept = w != 0
        assert torch.equal(w[kept], b[kept])  # survivors untouched
    assert zeros == sum(int((w == 0).sum()) for w in weights) > 0


def test_l1_penalty_value_and_gradient():
    layers, _ = _stack(seed=3)
    weights = lstm_weight_matrices(layers)
    value = l1_penalty(weights)
    assert torch.allclose(value, sum(w.detach().abs().sum() for w in weights))
    value.backward()
    for w in weights:
        assert torch.equal(w.grad, torch.sign(w.detach()))


def test_zhu_gupta_schedule_hits_its_targets():
    kw = {"begin_step": 100, "end_step": 1100, "final_sparsity": 0.8, "initial_sparsity": 0.1}
    assert zhu_gupta_sparsity(0, **kw) == 0.1
    assert zhu_gupta_sparsity(100, **kw) == 0.1
    assert zhu_gupta_sparsity(1100, **kw) == pytest.approx(0.8)
    assert zhu_gupta_sparsity(5000, **kw) == 0.8
    assert zhu_gupta_sparsity(600, **kw) == pytest.approx(0.8 - 0.7 * 0.5 ** 3)
    values = [zhu_gupta_sparsity(s, **kw) for s in range(0, 1200, 10)]
    assert values == sorted(values)
    assert scheduled_neuron_count(0, 0, 10, total=200, target=50) == 200
    assert scheduled_neuron_count(10, 0, 10, total=200, target=50) == 50
    assert scheduled_neuron_count(5, 0, 10, total=200, target=50) == round(200 * (1 - 0.75 * (1 - 0.125)))
    with pytest.raises(ValueError):
        zhu_gupta_sparsity(5, 10, 10, 0.5)
