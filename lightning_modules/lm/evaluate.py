"""The test perplexity of an exported language model, the way training measures it.

Training ends with `trainer.test` on its LanguageModelTask: PTB's test stream in windows of
`data.num_steps` over `data.test_batch_size` rows (the TF tutorial's 1: the whole set as one stream),
the state carried from window to window, and torchmetrics' Perplexity. `ptb_test_perplexity` runs that
same loop on any model with the language model's interface (an fp32 export, or its int8 copy), with the
data settings of the run that trained it, so that an export's number and its int8 copy's number are
comparable with the run's own test_ppl.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from torch import nn

from ..errors import UserError
from ..run_dir import CONFIG_FILE


def ptb_data_of_run(run_dir: str | Path | None, vocab: list[str], what: str):
    """The PTB data module with the settings of the run's config.yaml (its `data:` block), or the
    defaults where there is none (an export outside a run dir); a UserError naming `what` when the
    model's vocabulary is not PTB's (its perplexity there would mean nothing)."""
    import yaml

    from .ptb_data import PTBDataModule

    config_file = Path(run_dir) / CONFIG_FILE if run_dir is not None else None
    settings = {}
    if config_file is not None and config_file.is_file():
        try:
            settings = (yaml.safe_load(config_file.read_text()) or {}).get("data") or {}
        except (OSError, yaml.YAMLError, AttributeError) as e:
            raise UserError(f"{config_file} is not a readable run config ({e}); give the run dir the "
                            f"{CONFIG_FILE} that training wrote") from None
    data = PTBDataModule(**{**settings, "pin_memory": False})
    if list(vocab) != list(data.vocab):
        raise UserError(f"{what}: its vocabulary ({len(vocab)} tokens) is not PTB's ({len(data.vocab)} tokens), "
                        "so its PTB test perplexity means nothing; give an export of a model trained on PTB")
    return data


def ptb_test_perplexity(model: nn.Module, data) -> float:
    """PTB test perplexity of `model` (tokens, state -> logits, state) through the test loop training ends with."""
    import lightning as L

    from .lm_task import LanguageModelTask

    task = LanguageModelTask(vocab_size=data.vocab_size, method="none")
    task.model = model  # the task's own model is replaced: only its test loop and metric are used
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = rank_zero.level
    with warnings.catch_warnings():
        # the windows are built in memory, in order: worker processes would only copy them
        warnings.filterwarnings("ignore", message=r".*does not have many workers")
        # a deprecation inside Lightning itself (training filters it too)
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).? is deprecated")
        rank_zero.setLevel(logging.WARNING)  # "GPU available: False" and tips, once per evaluation
        try:
            return float(trainer.test(task, datamodule=data, verbose=False)[0]["test_ppl"])
        finally:
            rank_zero.setLevel(level)
