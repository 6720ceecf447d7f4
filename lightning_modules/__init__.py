"""Neuron-selection pruning of recurrent networks: gates, gated LSTM, models, data, export."""

from .gated_lstm import GateConfig, GatedLSTM
from .hard_concrete import HardConcreteGate
from .language_model import LSTMLanguageModel, model_size

__all__ = ["GateConfig", "GatedLSTM", "HardConcreteGate", "LSTMLanguageModel", "model_size"]
