"""Neuron-selection pruning of recurrent networks, by concern:

  pruning/   gates, GatedLSTM, ISS groups, the pruning methods, gate/weight optimisers (no model)
  lm/        the PTB language model, its data, task, export and ONNX export
  squad/     BiDAF, SQuAD data, GloVe, its task and export
  here       what both tasks share: task base, checkpointing, exact resume, run dirs, export
             folders, atomic writes, timing and hardware probe, UserError

The names below load on first use, so that importing a light submodule (errors, atomic, run_dir)
does not import torch: `python -m reproduce --help` stays fast.
"""

import importlib

_LAZY = {"GateConfig": "pruning.gated_lstm", "GatedLSTM": "pruning.gated_lstm",
         "HardConcreteGate": "pruning.hard_concrete",
         "LSTMLanguageModel": "lm.language_model", "model_size": "lm.language_model"}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
