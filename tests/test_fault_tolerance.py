"""Fault injection: a run killed (SIGKILL), stopped (SIGTERM) or left with a broken checkpoint
ends, after the same command is run again, exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from reproduce.train import main as train_main

L0 = str(REPO / "reproduce" / "configs" / "ptb_smoke_l0.yaml")
# 30 training windows per epoch; L0 gates draw noise every step, so the RNG state matters
TINY = ["--config", L0, "--trainer.max_epochs=2", "--data.train_tokens=12000", "--model.embedding_dim=16",
        "--model.hidden_sizes=[16,12]", "--data.test_batch_size=20", "--model.reg_lambda=3e-6",
        "--wandb=disabled", "--trainer.enable_progress_bar=false", "--model.gate_history_every=1"]


def _command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reproduce.train", *TINY, "--run_dir", str(run_dir), *extra]


def _start(run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(_command(run_dir, *extra), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended before the fault was injected: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, "timed out waiting for the run to get there"
        time.sleep(0.02)


def _steps_recorded(run_dir: Path) -> int:
    history = run_dir / "gate_history.jsonl"
    return len(history.read_text().splitlines()) if history.exists() else 0


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert train_main([*TINY, "--run_dir", str(run_dir)]) == 0
    return _metrics(run_dir)


@pytest.mark.slow
def test_sigkill_after_a_mid_epoch_checkpoint_resumes_exactly(tmp_path, uninterrupted):
    run_dir = tmp_path / "killed"
    # a checkpoint every 7 steps: the first one is in the middle of epoch 0
    proc = _start(run_dir, "--checkpoint_every_n_steps=7")
    _wait_for(lambda: (run_dir / "checkpoints" / "step.ckpt").exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "result.json").exists()
    assert train_main([*TINY, "--run_dir", str(run_dir), "--checkpoint_every_n_steps=7"]) == 0
    assert _metrics(run_dir) == uninterrupted  # to the last digit


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_a_checkpoint_exits_cleanly_and_resumes_exactly(tmp_path, uninterrupted):
    run_dir = tmp_path / "terminated"
    proc = _start(run_dir, "--checkpoint_every_n_steps=0")
    _wait_for(lambda: _steps_recorded(run_dir) >= 12, proc)  # inside epoch 0 (30 steps)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM: checkpoint" in err and "run the same command to resume" in err
    assert "Traceback" not in err
    assert (run_dir / "checkpoints" / "step.ckpt").exists()
    assert train_main([*TINY, "--run_dir", str(run_dir), "--checkpoint_every_n_steps=0"]) == 0
    assert _metrics(run_dir) == uninterrupted


@pytest.mark.slow
def test_truncated_checkpoint_falls_back_to_the_previous_one_or_stops(tmp_path, uninterrupted, capsys):
    run_dir = tmp_path / "broken"
    # one finished epoch: last.ckpt and epoch000.ckpt hold the same state
    assert train_main([*TINY, "--run_dir", str(run_dir), "--trainer.max_epochs=1",
                       "--checkpoint_every_n_steps=0"]) == 0
    (run_dir / "result.json").unlink()  # make it an unfinished 2-epoch run again
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    capsys.readouterr()
    assert train_main([*TINY, "--run_dir", str(run_dir), "--checkpoint_every_n_steps=0"]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {last} is unreadable" in err and "epoch000.ckpt" in err
    assert _metrics(run_dir) == uninterrupted

    # every checkpoint broken: a clear stop, never a silent restart from scratch
    (run_dir / "result.json").unlink()
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(b"not a checkpoint")
    assert train_main([*TINY, "--run_dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "every checkpoint in" in err and "is unreadable" in err
    assert not (run_dir / "result.json").exists()
