"""Neuron-selection pruning of recurrent networks: gates, gated LSTM, models, data, export.

The names below load on first use, so that importing a light submodule (errors, atomic)
does not import torch: `python -m reproduce --help` stays fast.
"""

import importlib

_LAZY = {"GateConfig": "gated_lstm", "GatedLSTM": "gated_lstm", "HardConcreteGate": "hard_concrete",
         "LSTMLanguageModel": "language_model", "model_size": "language_model"}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
