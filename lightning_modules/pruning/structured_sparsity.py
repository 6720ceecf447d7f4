"""Building blocks of the Lasso-type baselines: ISS group norms, penalties, thresholding, schedules.

ISS component of hidden neuron k of LSTM layer l (Wen et al. 2018, "intrinsic sparse
structures"): every weight that only exists because neuron k exists, i.e.
  - row k of each of the four gate blocks (i, f, g, o) of weight_ih and weight_hh (the three
    blocks r, z, n of a GRU, which the same groups cover),
  - column k of weight_hh (its recurrent output),
  - column k of its consumer: the next layer's weight_ih, or the decoder.
Each weight belongs to the group once (row k and column k of weight_hh share 4 entries).
As in iss-rnns, the groups hold weights only, no biases: a neuron whose group is all zeros is
read by nothing (its recurrent and consumer columns are zero), so it is removable whatever its
biases are, and export drops them with it.

A model other than the stacked LM (BiDAF: bidirectional LSTMs whose outputs are read by
several matrices) describes its LSTMs as `ISSUnit`s: each single-layer LSTM with the weight
columns that read each of its hidden neurons. The LM's layers are `lm_units(layers, decoder)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .gated_rnn import gate_blocks


def _safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    # the norm of an all-zero group has no gradient; use 0 (a subgradient) instead of NaN
    positive = sq > 0
    return torch.where(positive, sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt(), torch.zeros_like(sq))


@dataclass
class ISSUnit:
    """One single-layer LSTM (or GRU) and its consumers: hidden neuron j is read by
    `weight[:, cols[j]]` for every (weight, cols) pair, cols a (hidden_size, k) index tensor."""

    lstm: nn.LSTM | nn.GRU
    consumers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    name: str = ""


def lm_units(layers: list[nn.LSTM], decoder_weight: torch.Tensor) -> list[ISSUnit]:
    """A stack: layer k is read by column j of the next layer's weight_ih, or of the decoder."""
    units = []
    for k, lstm in enumerate(layers):
        consumer = layers[k + 1].weight_ih_l0 if k + 1 < len(layers) else decoder_weight
        cols = torch.arange(lstm.hidden_size, device=consumer.device)[:, None]
        units.append(ISSUnit(lstm, [(consumer, cols)], name=f"layer{k}"))
    return units


def unit_group_squares(units: list[ISSUnit]) -> list[torch.Tensor]:
    """Sum of squares of each hidden neuron's ISS group, one tensor of size H per unit."""
    out = []
    for unit in units:
        lstm = unit.lstm
        hidden, blocks = lstm.hidden_size, gate_blocks(lstm)
        w_ih, w_hh = lstm.weight_ih_l0, lstm.weight_hh_l0
        rows = (w_ih.view(blocks, hidden, -1).square().sum((0, 2))
                + w_hh.view(blocks, hidden, hidden).square().sum((0, 2)))
        recurrent_cols = w_hh.square().sum(0)
        overlap = torch.diagonal(w_hh.view(blocks, hidden, hidden), dim1=1, dim2=2).square().sum(0)
        consumed = sum(weight.square().sum(0)[cols.to(weight.device)].sum(1) for weight, cols in unit.consumers)
        out.append(rows + recurrent_cols - overlap + consumed)
    return out


def unit_group_norms(units: list[ISSUnit]) -> list[torch.Tensor]:
    return [_safe_sqrt(sq) for sq in unit_group_squares(units)]


def unit_zero_groups(units: list[ISSUnit]) -> list[torch.Tensor]:
    """Boolean mask per unit of the hidden neurons whose ISS group is entirely zero."""
    with torch.no_grad():
        return [sq == 0 for sq in unit_group_squares(units)]


def group_lasso_penalty(units: list[ISSUnit]) -> torch.Tensor:
    """Sum over the ISS groups of every unit of their L2 norms (times lambda at the call site):
    group Lasso's penalty (pruning_methods.GroupLasso), for the LM (`lm_units`) and BiDAF alike."""
    return sum(norms.sum() for norms in unit_group_norms(units))


def lstm_weight_matrices(layers: list[nn.LSTM]) -> list[torch.Tensor]:
    return [w for lstm in layers for w in (lstm.weight_ih_l0, lstm.weight_hh_l0)]


def l1_penalty(weights: list[torch.Tensor]) -> torch.Tensor:
    return sum(w.abs().sum() for w in weights)


@torch.no_grad()
def threshold_(weights: list[torch.Tensor], threshold: float) -> int:
    """Set every weight with |w| < threshold to exactly 0 (in place); returns how many are zero."""
    zeros = 0
    for w in weights:
        w.masked_fill_(w.abs() < threshold, 0.0)
        zeros += int((w == 0).sum())
    return zeros


def zero_groups(layers: list[nn.LSTM], decoder_weight: torch.Tensor) -> list[torch.Tensor]:
    """Boolean mask per layer of the hidden neurons whose ISS group is entirely zero."""
    return unit_zero_groups(lm_units(layers, decoder_weight))


def zhu_gupta_sparsity(step: int, begin_step: int, end_step: int, final_sparsity: float,
                       initial_sparsity: float = 0.0) -> float:
    """Gradual pruning schedule (Zhu & Gupta 2017): a cubic ramp from initial to final sparsity.

    s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3 for t0 <= t <= t1,
    s_i before t0 and s_f after t1.
    """
    if not 0.0 <= initial_sparsity <= final_sparsity < 1.0:
        raise ValueError(f"need 0 <= initial ({initial_sparsity}) <= final ({final_sparsity}) < 1")
    if end_step <= begin_step:
        raise ValueError(f"end_step ({end_step}) must come after begin_step ({begin_step})")
    if step <= begin_step:
        return initial_sparsity
    if step >= end_step:
        return final_sparsity
    progress = (step - begin_step) / (end_step - begin_step)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3


def scheduled_neuron_count(step: int, begin_step: int, end_step: int, total: int, target: int) -> int:
    """Neurons to keep at `step` when removing (total - target) neurons on the cubic schedule."""
    if not 0 < target <= total:
        raise ValueError(f"target neurons must be in 1..{total}, got {target}")
    sparsity = zhu_gupta_sparsity(step, begin_step, end_step, 1.0 - target / total)
    return max(target, round(total * (1.0 - sparsity)))
