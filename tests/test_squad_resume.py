"""A SQuAD run killed (SIGKILL) right after a checkpoint in the middle of an epoch ends, after the
same command is run again, exactly where an uninterrupted run ends: the shuffled order of the
training questions, the gates' noise and dropout, the running epoch means and the weight average
all continue where they stood."""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import REPO

from lightning_modules.resumable import ResumableSampler
from reproduce.train_squad import main as train_main

L0 = str(REPO / "reproduce" / "configs" / "squad_smoke_l0.yaml")
DEV = REPO / "lightning_modules" / "squad" / "data" / "squad" / "dev-v1.1.json.gz"
BATCHES_PER_EPOCH = 10  # 60 questions in batches of 6
TINY = ["--config", L0, "--trainer.max_epochs=2", "--model.word_dim=12", "--model.char_channels=6",
        "--model.hidden_size=8", "--wandb=disabled", "--trainer.enable_progress_bar=false", "--latency_questions=0",
        "--data.source=local", f"--data.validation_file={DEV}", "--data.dev_split_articles=2",
        "--data.max_train_questions=60", "--data.max_eval_questions=40", "--data.max_context_tokens=120",
        "--data.batch_size=6", "--checkpoint_every_n_steps=3"]
# l0: the gates draw noise every step, so the RNG must be restored; group_lasso: thresholding
# after every step, so the weights depend on every step's order
METHODS = {"l0": [], "group_lasso": ["--model.method=group_lasso", "--model.reg_lambda=3e-3"]}
# logged once per epoch; lr-* is logged at an epoch's start, which a mid-epoch resume does not redo
EPOCH_KEYS = ("train_loss_epoch", "train/penalty_epoch", "em", "f1", "size/expected_l0", "size/params")


def _kill_when(predicate, proc: subprocess.Popen) -> threading.Thread:
    """SIGKILL `proc` as soon as `predicate` holds, watching from a thread (this one trains)."""
    def watch():
        while proc.poll() is None and not predicate():
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _epoch_rows(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in rows[0] if k in EPOCH_KEYS or k.startswith("kept/")] if rows else []
    picked = [{k: r[k] for k in ["epoch", *keys] if r.get(k)} for r in rows]
    return [r for r in picked if len(r) > 1]


def _outcome(run_dir) -> dict:
    result = json.loads((run_dir / "result.json").read_text())
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    return {"result": {k: result[k] for k in ("metrics", "neurons_kept", "expected_l0", "lstm_weight_sparsity",
                                                "params", "epochs")},
            "epoch_rows": _epoch_rows(run_dir),
            "weights": state}


def _assert_same(resumed: dict, straight: dict) -> None:
    assert resumed["result"] == straight["result"]  # to the last digit
    assert resumed["epoch_rows"] == straight["epoch_rows"]
    assert resumed["weights"].keys() == straight["weights"].keys()
    differing = [k for k in straight["weights"] if not torch.equal(resumed["weights"][k], straight["weights"][k])]
    assert not differing, f"weights differ: {differing[:5]}"


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_sigkill_after_a_mid_epoch_checkpoint_resumes_exactly(tmp_path, capsys, method):
    args = [*TINY, *METHODS[method]]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    step_ckpt = killed / "checkpoints" / "step.ckpt"
    # killed at its first step.ckpt (step 3 of 10 in epoch 0)
    proc = subprocess.Popen([sys.executable, "-m", "reproduce.train_squad", *args, "--run_dir", str(killed)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watcher = _kill_when(step_ckpt.exists, proc)
    try:
        # the uninterrupted run, in this process meanwhile
        straight = tmp_path / "straight"
        assert train_main([*args, "--run_dir", str(straight)]) == 0
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        watcher.join(timeout=5)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed: {err[-2000:]}"
    assert not (killed / "result.json").exists()
    # what the resume starts from: a checkpoint inside epoch 0, the newest in the folder
    saved = torch.load(step_ckpt, weights_only=False)
    assert saved["epoch"] == 0 and 0 < saved["exact_resume"]["batches_done"] < BATCHES_PER_EPOCH
    assert not (killed / "checkpoints" / "last.ckpt").exists()

    capsys.readouterr()
    assert train_main([*args, "--run_dir", str(killed)]) == 0
    assert f"resuming from {step_ckpt}" in capsys.readouterr().err
    _assert_same(_outcome(killed), _outcome(straight))


def test_shuffled_sampler_order_depends_on_seed_and_epoch_only_and_resumes_at_any_item():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    sampler = ResumableSampler(50, shuffle=True, seed=1)
    epoch0 = list(sampler)
    assert sorted(epoch0) == list(range(50)) and epoch0 != list(range(50))
    assert list(sampler) == epoch0  # another pass of the same epoch: the same order
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0
    sampler.resume_at(18)
    assert list(sampler) == epoch1[18:]
    assert list(sampler) == epoch1  # only the pass after resume_at starts late
    assert list(ResumableSampler(50, shuffle=True, seed=2)) != epoch0
    # a fresh sampler (a resumed run's) draws the same order for the same (seed, epoch)
    fresh = ResumableSampler(50, shuffle=True, seed=1)
    fresh.set_epoch(1)
    assert list(fresh) == epoch1
    assert torch.equal(torch.get_rng_state(), before)  # the gates' RNG was not touched
    assert list(ResumableSampler(5)) == [0, 1, 2, 3, 4]  # PTB's: in order
