"""The word-level LSTM language model on Penn Treebank: model, data (PTB shipped in data/ptb,
sha256-checked), the LightningModule, and the export to a smaller dense model and to ONNX.

Nothing is imported here, so that `lightning_modules.lm.X` loads X and what X needs only.
"""
