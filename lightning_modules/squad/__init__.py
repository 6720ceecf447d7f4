"""BiDAF on SQuAD v1.1: model, data (the dev set shipped in data/squad, sha256-checked), GloVe,
the LightningModule, and the export to a smaller dense BiDAF.

Nothing is imported here, so that `lightning_modules.squad.X` loads X and what X needs only.
"""
