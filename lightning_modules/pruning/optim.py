"""How the weights and the L0 gates (log_alpha) are optimised; shared by both tasks.

`gate_update` chooses the gates' optimiser, following one of the references:
  with_weights  log_alpha is one more parameter group of the weights' optimiser (its own lr,
                the same schedule) and sits inside the one global gradient-norm clip: the
                TF tutorial / iss-rnns way (tf.clip_by_global_norm over all trainable variables).
  adam          log_alpha gets Adam (gate_lr, default 1e-3), no lr schedule and no clip: the
                way Louizos et al.'s reference code (AMLab-Amsterdam/L0_regularization) trains
                its gates.
  unclipped     the weights' optimiser, but left out of the clip: this suite's behaviour before
                2026-11-30, kept only to reproduce older runs. With SGD at lr 1 on the
                per-segment objective single log_alpha values jump by 4-6 in one step and
                neurons shut with no penalty at all (tests/test_gate_optimisation.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import UserError

# No config uses `unclipped`; it stays because tests/test_gate_optimisation.py trains with it as the
# reference of the bug it was (neurons shut with no penalty) and checks that the defaults do not.
GATE_UPDATES = ("with_weights", "adam", "unclipped")
DEFAULT_ADAM_GATE_LR = 1e-3


class SGDWithAdamGroups(torch.optim.Optimizer):
    """Plain SGD (no momentum, no decay: Zaremba et al.) for groups whose "algorithm" is "sgd",
    Adam for groups whose "algorithm" is "adam". One optimiser, so that Lightning's automatic
    optimisation, the lr scheduler and the checkpoints see a single object."""

    def __init__(self, groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        super().__init__(groups, {"lr": lr, "algorithm": "sgd", "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable | None = None, fused: bool = False):
        """fused: the closure is a whole training step that updates the parameters itself, with
        these groups' rules (lightning_modules/fused_step.py); this call only runs it, so that
        Lightning's manual optimisation counts the step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if fused:
            return loss
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["algorithm"] == "sgd":
                    p.add_(p.grad, alpha=-lr)
                    continue
                # Adam with bias correction, as torch.optim.Adam (tested against it)
                beta1, beta2 = group["betas"]
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                state["exp_avg"].lerp_(p.grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (state["exp_avg_sq"] / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1 ** t))
        return loss


def optimizer_groups(weights: list[nn.Parameter], gates: list[nn.Parameter], *, lr: float,
                     gate_update: str, gate_lr: float | None) -> list[dict]:
    """Parameter groups: the weights first, then the gates (if any) with their own lr and, for
    gate_update=adam, "algorithm": "adam" and "scheduled": False."""
    if gate_update not in GATE_UPDATES:
        raise UserError(f"model.gate_update must be one of {', '.join(GATE_UPDATES)}, got {gate_update!r}")
    groups = [{"params": weights, "lr": lr, "algorithm": "sgd", "scheduled": True}]
    if gates:
        if gate_update == "adam":
            groups.append({"params": gates, "lr": gate_lr or DEFAULT_ADAM_GATE_LR, "algorithm": "adam",
                           "scheduled": False})
        else:
            groups.append({"params": gates, "lr": gate_lr or lr, "algorithm": "sgd", "scheduled": True})
    return groups


def clipped_parameters(weights: list[nn.Parameter], gates: list[nn.Parameter], gate_update: str) -> list[nn.Parameter]:
    """What the global gradient-norm clip covers."""
    return [*weights, *gates] if gate_update == "with_weights" else list(weights)


def scheduled(factor: Callable[[int], float], groups: list[dict]) -> list[Callable[[int], float]]:
    """One LambdaLR factor per group: the schedule for scheduled groups, a constant 1 otherwise."""
    return [factor if g.get("scheduled", True) else (lambda epoch: 1.0) for g in groups]


def lr_factor(schedule: str, decay: float, start_epoch: int, max_epochs: int) -> Callable[[int], float]:
    """The learning-rate factor of (0-based) epoch e.

    exponential: decay ** max(e + 1 - start_epoch, 0) (the TF tutorial: x0.5 per epoch from epoch 5)
    thirds: decay ** (e // (max_epochs // 3)) (iss-rnns `sparselarge`: x0.1 every 18 of 55 epochs)
    """
    if schedule == "exponential":
        return lambda e: decay ** max(e + 1 - start_epoch, 0)
    if schedule == "thirds":
        every = max(max_epochs // 3, 1)
        return lambda e: decay ** (e // every)
    raise UserError(f"model.lr_schedule must be exponential or thirds, got {schedule!r}")


def clip_(params: list[nn.Parameter], max_norm: float | None) -> None:
    if max_norm is not None and math.isfinite(max_norm):
        torch.nn.utils.clip_grad_norm_(params, max_norm)
