"""The pruning methods, independent of any model: hard concrete gates and the gated RNN (LSTM and
GRU, gated_rnn.py), ISS groups, the methods' one interface, the gate/weight optimisers, and the
public API for pruning the nn.LSTM / nn.GRU modules of any model (docs/PRUNE_YOUR_MODEL.md):

    add_neuron_gates, l0_penalty, remove_pruned_neurons   (neuron_selection.py)
    NeuronSelection                                       (callback.py, a Lightning callback)

Those names load on first use (module __getattr__), and nothing else is imported here, so that
`lightning_modules.pruning.X` loads X and what X needs only (the callback needs Lightning).
"""

import importlib

_LAZY = {
    "add_neuron_gates": "neuron_selection",
    "l0_penalty": "neuron_selection",
    "remove_pruned_neurons": "neuron_selection",
    "gate_parameters": "neuron_selection",
    "constrain_gates": "neuron_selection",
    "neurons_kept": "neuron_selection",
    "GatedRecurrent": "neuron_selection",
    "PrunedRNN": "neuron_selection",
    "NeuronSelection": "callback",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
