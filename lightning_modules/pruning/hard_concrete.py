"""Hard concrete gates (Louizos, Welling & Kingma 2018, arXiv 1712.01312).

One gate per neuron. A gate value z in [0, 1] multiplies the neuron's output
wherever it is consumed; z == 0 exactly means the neuron can be removed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Louizos et al.'s reference code (AMLab-Amsterdam/L0_regularization) clamps log_alpha to
# [ln 0.01, ln 100] after each step.
LOUIZOS_LOG_ALPHA_RANGE = (math.log(0.01), math.log(100.0))


class HardConcreteGate(nn.Module):
    """A vector of `n` hard concrete gates with learnable `log_alpha`.

    Training mode draws one gate vector per call (one sample shared by the whole
    batch, because the gates mask weights, not activations of one example).
    Eval mode is deterministic: z = clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1).
    """

    def __init__(
        self,
        n: int,
        beta: float = 2.0 / 3.0,
        gamma: float = -0.1,
        zeta: float = 1.1,
        log_alpha_init_mean: float = 1.0,
        log_alpha_init_std: float = 0.1,
        log_alpha_range: tuple[float, float] | None = LOUIZOS_LOG_ALPHA_RANGE,
    ) -> None:
        super().__init__()
        if not (gamma < 0.0 and zeta > 1.0):
            raise ValueError(f"hard concrete needs gamma < 0 and zeta > 1, got {gamma=}, {zeta=}")
        if beta <= 0:
            raise ValueError(f"hard concrete needs beta > 0, got {beta=}")
        if log_alpha_range is not None and not log_alpha_range[0] < log_alpha_range[1]:
            raise ValueError(f"log_alpha_range needs low < high, got {log_alpha_range}")
        self.n = n
        self.beta = beta
        self.gamma = gamma
        self.zeta = zeta
        self.log_alpha = nn.Parameter(torch.empty(n))
        self.log_alpha_init_mean = log_alpha_init_mean
        self.log_alpha_init_std = log_alpha_init_std
        self.log_alpha_range = tuple(log_alpha_range) if log_alpha_range is not None else None
        # Frozen: training uses the test-time gate too, with no noise and no gradient to log_alpha
        # (the "select, then fine-tune" phase). Not saved: the task sets it from the epoch.
        self.frozen = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.log_alpha.normal_(self.log_alpha_init_mean, self.log_alpha_init_std)
        self.constrain_()

    @torch.no_grad()
    def constrain_(self) -> None:
        """Clamp log_alpha to its range (after every optimizer step, as Louizos et al.'s code).

        The lower end keeps a closed gate reachable: at ln 0.01, P(z != 0) is still about 5 %,
        so the data can reopen it; unclamped, an lr-1 step can push log_alpha to -9, where no
        gradient ever comes back."""
        if self.log_alpha_range is not None:
            self.log_alpha.clamp_(*self.log_alpha_range)

    def extra_repr(self) -> str:
        return f"n={self.n}, beta={self.beta:.4g}, gamma={self.gamma}, zeta={self.zeta}"

    def _stretch_and_clamp(self, s: torch.Tensor) -> torch.Tensor:
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def sample(self, u: torch.Tensor | None = None) -> torch.Tensor:
        """One stochastic gate vector (reparameterised, differentiable in log_alpha).

        `u` is the uniform noise, drawn here unless given (tests pass it to compare devices)."""
        # Keep u away from 0 and 1 so that log(u) - log(1-u) stays finite.
        eps = 1e-6
        u = torch.rand_like(self.log_alpha) if u is None else u.to(self.log_alpha)
        u = u.clamp(eps, 1.0 - eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        return self._stretch_and_clamp(s)

    def deterministic(self) -> torch.Tensor:
        """The test-time gate vector."""
        return self._stretch_and_clamp(torch.sigmoid(self.log_alpha))

    def forward(self, u: torch.Tensor | None = None) -> torch.Tensor:
        """The gate vector: frozen or eval, the test-time one; training, a draw (from `u` if given:
        the batched trainer's per-member noise, lightning_modules/lm/batched.py)."""
        if self.frozen:
            return self.deterministic().detach()
        return self.sample(u) if self.training else self.deterministic()

    def prob_nonzero(self) -> torch.Tensor:
        """P(z != 0) per gate, the closed form of the L0 relaxation."""
        return torch.sigmoid(self.log_alpha - self.beta * math.log(-self.gamma / self.zeta))

    def expected_open(self) -> torch.Tensor:
        """Expected number of non-zero gates (differentiable)."""
        return self.prob_nonzero().sum()

    def kept_mask(self) -> torch.Tensor:
        """Boolean mask of the neurons that survive at test time."""
        return self.deterministic().detach() > 0

    def num_kept(self) -> int:
        return int(self.kept_mask().sum())

    @torch.no_grad()
    def force_shut(self, index: torch.Tensor | list[int]) -> None:
        """Close gates for good (test gate exactly 0); used by tests and the bench."""
        self.log_alpha[index] = -20.0
