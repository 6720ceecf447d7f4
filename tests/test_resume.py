"""A run stopped at an epoch boundary and resumed from its checkpoint ends where an uninterrupted one does."""

import csv
import json
import shutil

import pytest
from conftest import REPO

from reproduce.train import main as train_main

DENSE = str(REPO / "reproduce" / "configs" / "ptb_smoke_dense.yaml")
TINY = ["--data.train_tokens=8000", "--model.embedding_dim=16", "--model.hidden_sizes=[16,16]",
        "--data.test_batch_size=20", "--wandb=disabled", "--trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_resume_from_last_checkpoint_matches_uninterrupted_run(tmp_path, capsys):
    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    assert train_main(["--config", DENSE, "--run_dir", str(straight), "--trainer.max_epochs=2", *TINY]) == 0
    assert train_main(["--config", DENSE, "--run_dir", str(first), "--trainer.max_epochs=1", *TINY]) == 0
    # the first run's checkpoint and log, in a run dir without result.json: an interrupted run
    shutil.copytree(first / "checkpoints", resumed / "checkpoints")
    shutil.copy(first / "metrics.csv", resumed / "metrics.csv")
    capsys.readouterr()
    assert train_main(["--config", DENSE, "--run_dir", str(resumed), "--trainer.max_epochs=2",
                       "--ckpt_path=last", *TINY]) == 0
    a = json.loads((straight / "result.json").read_text())
    b = json.loads((resumed / "result.json").read_text())
    assert b["epochs"] == a["epochs"] == 2
    # dense, no dropout: no randomness in training, so equality is exact
    assert b["metrics"] == a["metrics"]
    # the log of the epoch before the interruption survives the resume
    with open(resumed / "metrics.csv") as f:
        val_epochs = [row["epoch"] for row in csv.DictReader(f) if row.get("val_ppl")]
    assert val_epochs[:2] == ["0", "1"]
    assert not list(resumed.glob("metrics.part-*.csv"))


def test_ckpt_path_last_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    code = train_main(["--config", DENSE, "--run_dir", str(tmp_path / "new"), "--ckpt_path=last", *TINY])
    assert code == 2
    assert "does not exist yet" in capsys.readouterr().err
