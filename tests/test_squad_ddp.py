"""BiDAF under Lightning's DDP with 2 CPU processes (gloo): the same global batch as one process, so the
first steps' losses and the weights after them equal a one-process run's, and the evaluation counts every
dev question exactly once."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from reproduce.train_squad import main as train_main

STEPS = 3
ARGS = ["--config", str(REPO / "reproduce" / "configs" / "squad_smoke_dense.yaml"), "--trainer.max_epochs=1",
        f"--trainer.limit_train_batches={STEPS}", "--trainer.accelerator=cpu", "--trainer.log_every_n_steps=1",
        "--model.word_dim=12", "--model.char_channels=6", "--model.hidden_size=8",
        "--model.dropout=0",  # dropout draws differ between one process and two
        "--wandb=disabled", "--trainer.enable_progress_bar=false", "--latency_questions=0",
        "--data.dev_split_articles=2", "--data.max_train_questions=48", "--data.max_context_tokens=120",
        "--data.max_eval_questions=21",  # odd: the two processes evaluate 11 and 10
        "--data.batch_size=8"]
# A softmax over positions does not change when a constant is added to every score, so these biases
# have a gradient of exactly zero; what is left is rounding noise, which Adam scales up to +-lr.
SHIFT_INVARIANT = ("similarity.bias", "start_pointer.bias", "end_pointer.bias")


def _losses(run_dir) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


@pytest.mark.slow
def test_two_processes_train_and_evaluate_as_one_with_the_same_global_batch(tmp_path):
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the launcher starts the second process by running this same command again
    proc = subprocess.Popen([sys.executable, "-m", "reproduce.train_squad", *ARGS, "--run_dir", str(ddp),
                             "--trainer.devices=2", "--trainer.strategy=ddp"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        one = tmp_path / "one"
        assert train_main([*ARGS, "--run_dir", str(one), "--trainer.devices=1"]) == 0
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]

    assert len(_losses(one)) == STEPS
    assert _losses(ddp) == pytest.approx(_losses(one), rel=1e-5)
    weights = {name: torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
               for name, d in (("one", one), ("ddp", ddp))}
    assert weights["one"].keys() == weights["ddp"].keys()
    compared = [k for k in weights["one"] if not k.endswith(SHIFT_INVARIANT)]
    for k in compared:
        torch.testing.assert_close(weights["ddp"][k], weights["one"][k], rtol=1e-4, atol=1e-5, msg=k)
    assert int(weights["ddp"]["ema_updates"]) == STEPS

    results = {name: json.loads((d / "result.json").read_text()) for name, d in (("one", one), ("ddp", ddp))}
    predictions = {name: json.loads((d / "predictions.json").read_text()) for name, d in (("one", one), ("ddp", ddp))}
    # every question once: all 21 answered, none counted twice (EM/F1 would move if one were)
    assert results["ddp"]["evaluation"]["questions"] == len(predictions["ddp"]) == 21
    assert predictions["ddp"] == predictions["one"]
    assert results["ddp"]["metrics"] == pytest.approx(results["one"]["metrics"], abs=1e-4)


def test_the_language_model_refuses_several_processes_in_one_line(tmp_path, capsys):
    from reproduce.train import main as lm_main

    code = lm_main(["--config", str(REPO / "reproduce" / "configs" / "ptb_smoke_l0.yaml"), "--run_dir",
                    str(tmp_path / "run"), "--wandb=disabled", "--trainer.accelerator=cpu", "--trainer.devices=2",
                    "--trainer.strategy=ddp"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: the language model trains in one process, not 2")
    assert not (tmp_path / "run" / "result.json").exists()
