import math

import torch

from lightning_modules.pruning.hard_concrete import HardConcreteGate


def _gate(log_alphas):
    g = HardConcreteGate(len(log_alphas))
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor(log_alphas))
    return g


def test_sampled_statistics_match_closed_form():
    torch.manual_seed(0)
    g = _gate([-3.0, -1.0, 0.0, 0.5, 1.0, 2.5]).train()
    samples = torch.stack([g() for _ in range(40000)])
    assert samples.min() >= 0 and samples.max() <= 1
    p_nonzero = (samples > 0).float().mean(0)
    assert torch.allclose(p_nonzero, g.prob_nonzero().detach(), atol=0.01)
    # P(z == 1) = sigmoid(log_alpha - beta * log((1 - gamma) / (zeta - 1)))
    p_one = torch.sigmoid(g.log_alpha - g.beta * math.log((1 - g.gamma) / (g.zeta - 1))).detach()
    assert torch.allclose((samples == 1).float().mean(0), p_one, atol=0.01)


def test_closed_form_values_at_defaults():
    g = _gate([0.0])
    # log(-gamma/zeta) = log(0.1/1.1); P = sigmoid(2/3 * log 11)
    assert abs(g.prob_nonzero().item() - 1 / (1 + 11 ** (-2 / 3))) < 1e-6
    assert abs(g.expected_open().item() - g.prob_nonzero().item()) < 1e-7


def test_train_samples_vary_eval_is_deterministic():
    torch.manual_seed(0)
    g = _gate([0.0] * 64)
    g.train()
    assert not torch.equal(g(), g())
    g.eval()
    z1, z2 = g(), g()
    assert torch.equal(z1, z2)
    expected = (torch.sigmoid(torch.zeros(64)) * 1.2 - 0.1).clamp(0, 1)
    assert torch.allclose(z1, expected)


def test_kept_count_and_force_shut():
    g = _gate([3.0, -3.0, 0.0, -2.3, -2.5])
    # test gate > 0  <=>  sigmoid(log_alpha) > 1/12  <=>  log_alpha > -log(11) = -2.398
    assert g.kept_mask().tolist() == [True, False, True, True, False]
    assert g.num_kept() == 3
    g.force_shut([0])
    assert g.num_kept() == 2 and g.eval()()[0] == 0


def test_gradient_reaches_log_alpha_in_both_modes():
    for train in (True, False):
        torch.manual_seed(1)
        g = _gate([0.0, 1.0, -1.0]).train(train)
        (g() * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
        assert g.log_alpha.grad is not None and torch.isfinite(g.log_alpha.grad).all()
        assert (g.log_alpha.grad != 0).any()
    g = _gate([0.0, 1.0])
    g.expected_open().backward()
    p = g.prob_nonzero().detach()
    assert torch.allclose(g.log_alpha.grad, p * (1 - p))


def test_configurable_parameters_and_init():
    torch.manual_seed(0)
    g = HardConcreteGate(10000, beta=0.5, gamma=-0.2, zeta=1.2, log_alpha_init_mean=2.0,
                         log_alpha_init_std=0.5)
    assert abs(g.log_alpha.mean().item() - 2.0) < 0.05
    assert abs(g.log_alpha.std().item() - 0.5) < 0.05
    expected = torch.sigmoid(g.log_alpha - 0.5 * math.log(0.2 / 1.2))
    assert torch.allclose(g.prob_nonzero(), expected)


def test_given_noise_reproduces_the_drawn_sample():
    gate = HardConcreteGate(64)
    torch.manual_seed(7)
    drawn = gate.sample()
    torch.manual_seed(7)
    u = torch.rand(64)
    assert torch.equal(gate.sample(u=u), drawn)  # the same draw, passed in
    # and it is the stretched, clamped concrete sample of that noise
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + gate.log_alpha) / gate.beta)
    assert torch.allclose(gate.sample(u=u), (s * (gate.zeta - gate.gamma) + gate.gamma).clamp(0, 1))
