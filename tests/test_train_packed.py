"""The packed trainer (reproduce/run/train_packed.py): runs packed in one process give, bit for bit,
the losses, weights and result metrics of each run alone, and a packed run stopped by a signal
resumes alone to the same end.

Tolerance: none. Each run's arithmetic is its own and its random draws come from its own
generator states (carried with the turn), so any difference means the runs leaked into each
other: a shared generator, a shared buffer, a callback of one run acting on another.
"""

from __future__ import annotations

import csv
import json
import os
import signal

import lightning as L
import pytest
from safetensors.torch import load_file

from reproduce.run.train import train
from reproduce.run.train_packed import main as packed_main
from reproduce.run.train_packed import run_packed

# tiny and fast, but with everything that draws random numbers: gate noise, dropout
SHRINK = ["--data.train_tokens=2400", "--model.embedding_dim=12", "--model.hidden_sizes=[12,10]",
          "--trainer.max_epochs=2", "--data.test_batch_size=20", "--data.val_batch_size=20", "--wandb=disabled",
          "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=2", "--model.dropout=0.2",
          "--model.gate_history_every=3"]
RUNS = {
    "l0_fused": ["--config", "reproduce/configs/ptb_smoke_l0.yaml", "--model.step_impl=fused",
                 "--model.gates_freeze_epoch=1"],
    "iss_eager": ["--config", "reproduce/configs/ptb_smoke_group_lasso.yaml", "--seed_everything=2"],
    "magnitude_fused": ["--config", "reproduce/configs/ptb_smoke_magnitude.yaml", "--model.step_impl=fused",
                        "--model.prune_begin_step=2", "--model.prune_end_step=8", "--model.prune_every=2",
                        "--model.target_neurons=[8,6]"],
}


def _args(name: str, root) -> list[str]:
    return [*RUNS[name], "--run_dir", str(root / name), *SHRINK]


def _losses(run_dir) -> list[tuple[str, str, str]]:
    """Every logged training loss, penalty and validation perplexity, with its step (exact text)."""
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(r["step"], r.get("train/loss", ""), r.get("val_ppl", "")) for r in rows
            if r.get("train/loss") or r.get("val_ppl")]


def _assert_same_run(a, b) -> None:
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert ra["metrics"] == rb["metrics"]
    assert ra["neurons_kept"] == rb["neurons_kept"]
    assert _losses(a) == _losses(b)
    wa, wb = (load_file(str(d / "export" / "model.safetensors")) for d in (a, b))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].equal(wb[key]), key
    if (a / "gate_history.jsonl").exists():
        assert (a / "gate_history.jsonl").read_text() == (b / "gate_history.jsonl").read_text()


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    root = tmp_path_factory.mktemp("alone")
    for name in RUNS:
        train(_args(name, root))
    return root


def test_packed_runs_equal_each_run_alone(alone, tmp_path):
    codes = run_packed([_args(name, tmp_path) for name in RUNS])
    assert codes == [0, 0, 0]
    for name in RUNS:
        _assert_same_run(alone / name, tmp_path / name)
        result = json.loads((tmp_path / name / "result.json").read_text())
        assert result["packed_runs"] == 3 and result["precision"]["precision"] == "fp32"
        # the command recorded is the run's own: it reproduces the run alone
        assert result["command"].startswith("python -m reproduce.train --config")


class _SigtermAt(L.Callback):
    """Sends this process SIGTERM once, after training step `step` of the run it is given to."""

    def __init__(self, step: int) -> None:
        self.step, self.sent = step, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_packed_run_stopped_by_sigterm_resumes_alone_to_the_same_end(alone, tmp_path, monkeypatch):
    """SIGTERM reaches the main thread; every run checkpoints at its next step's end and stops
    (exit 143); each then resumes with its own command, alone, and ends where it would have."""
    from reproduce.run import train as train_module  # run_packed looks train up there when it starts

    names = ["l0_fused", "iss_eager"]
    original = train_module.train

    def with_sigterm(args, callbacks=(), extra_result=None):
        extra = (_SigtermAt(2),) if "l0_fused" in " ".join(args) else ()
        return original(args, callbacks=(*callbacks, *extra), extra_result=extra_result)

    monkeypatch.setattr(train_module, "train", with_sigterm)
    codes = run_packed([_args(name, tmp_path) for name in names])
    monkeypatch.setattr(train_module, "train", original)
    assert codes == [128 + signal.SIGTERM] * 2
    for name in names:
        assert (tmp_path / name / "checkpoints" / "step.ckpt").exists()
        assert not (tmp_path / name / "result.json").exists()
        train(_args(name, tmp_path))  # alone, the same command: resumes from step.ckpt
        _assert_same_run(alone / name, tmp_path / name)


def test_the_command_line_packs_runs_and_reports_a_bad_one(tmp_path, capsys):
    """A run that fails (here: an unknown option) ends with its one-line error and status 2; the
    other still finishes."""
    good = " ".join(_args("l0_fused", tmp_path))
    code = packed_main(["--run", good, "--run", f"{good} --model.no_such_option=1".replace(
        str(tmp_path / "l0_fused"), str(tmp_path / "bad"))])
    assert code == 2
    assert (tmp_path / "l0_fused" / "result.json").exists()
    assert not (tmp_path / "bad" / "result.json").exists()
    err = capsys.readouterr().err
    assert "error:" in err and "no_such_option" in err
