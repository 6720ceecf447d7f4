"""The gated LSTM stack of the language model and BiDAF: `GatedRNN` with LSTM layers.

The gating itself (forward, gate values, expected L0) lives in gated_rnn.py, shared with the GRU
and with the public API for any nn.LSTM / nn.GRU (neuron_selection.py). This module keeps the
names the rest of the suite and older code import.
"""

from __future__ import annotations

import torch
from torch import nn

from .gated_rnn import GateConfig, GatedLSTM, GatedRNN, State, run_layer

__all__ = ["GateConfig", "GatedLSTM", "GatedRNN", "State", "lstm_with_weights"]


def lstm_with_weights(lstm: nn.LSTM, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
                      weight_hh: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """A single-layer, unidirectional `lstm` run with its recurrent weight replaced by `weight_hh`
    (gated_rnn.run_layer: the kernel nn.LSTM.forward calls)."""
    weights = [lstm.weight_ih_l0, weight_hh, lstm.bias_ih_l0, lstm.bias_hh_l0]
    return run_layer("lstm", x, state, weights, has_biases=True, bidirectional=False, train=lstm.training)
