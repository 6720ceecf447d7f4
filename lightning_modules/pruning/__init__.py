"""The pruning methods, independent of any model: hard concrete gates and the gated LSTM,
ISS groups, the methods' one interface, and the gate/weight optimisers.

Nothing is imported here, so that `lightning_modules.pruning.X` loads X and what X needs only.
"""
