"""Training: one PTB or SQuAD config (`python -m reproduce.train`, `reproduce.train_squad`), several PTB
runs packed in one process (`python -m reproduce.run.train_packed`), and what the entry points share.

Imports run one way: orchestrate -> {run, measure, report}; measure -> report; run and report import
no other room."""
