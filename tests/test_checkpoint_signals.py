"""Where in the loop a SIGTERM/SIGUSR1 lands decides what ResumableCheckpoints saves.

A signal anywhere among the training steps (inside one, or between two while a batch is
fetched or other callbacks do their step-end work) must end in step.ckpt at the end of the
next step. Before 2026-11-30 one that landed between two steps stopped the run with no
checkpoint; on a real cluster that loses every step since the last periodic checkpoint, and it
made the W&B/SLURM preemption test flaky (the tiny model spends much of its time between steps).
"""

import os
import signal
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from lightning_modules.checkpointing import STEP, Preempted, ResumableCheckpoints


class _SignalAt(L.Callback):
    """SIGTERM to this process at one hook of step `step` (1-based global step)."""

    def __init__(self, step: int, hook: str) -> None:
        self.step, self.hook = step, hook

    def _fire(self, trainer, hook: str, step: int) -> None:
        if hook == self.hook and step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # the handler runs at the next bytecode boundary

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._fire(trainer, "batch_start", trainer.global_step + 1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # listed after ResumableCheckpoints: its step-end work is done, the next batch not fetched
        self._fire(trainer, "between_steps", trainer.global_step)


def _fit(root, *callbacks, val_batches: int = 0, batches: int = 8, epochs: int = 3) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_epochs=epochs, limit_train_batches=batches, limit_val_batches=val_batches,
                        num_sanity_val_steps=0, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
                        callbacks=list(callbacks))
    trainer.fit(BoringModel())
    return trainer


@pytest.fixture(autouse=True)
def _handlers_restored():
    before = signal.getsignal(signal.SIGTERM)
    yield
    assert signal.getsignal(signal.SIGTERM) is before  # the callback puts the old handler back


@pytest.mark.parametrize("hook", ["batch_start", "between_steps"])
def test_a_signal_among_the_steps_checkpoints_at_the_end_of_the_next_step(tmp_path, hook):
    ckpts = tmp_path / "ckpt"
    with pytest.raises(Preempted) as stop:
        _fit(tmp_path, ResumableCheckpoints(ckpts, every_n_steps=0), _SignalAt(5, hook))
    # in step 5: saved as it ends; between steps 5 and 6: saved as step 6 ends
    expected = 5 if hook == "batch_start" else 6
    assert (stop.value.step, stop.value.path) == (expected, ckpts / STEP)
    saved = torch.load(ckpts / STEP, map_location="cpu", weights_only=False)
    assert saved["global_step"] == expected


def test_a_signal_after_the_epochs_last_step_stops_before_validation_without_a_checkpoint(tmp_path):
    """No step is left in the epoch to act on it: validation must not run first, and the signal
    must not wait (lost) until a step of the next epoch."""

    class _Validations(L.Callback):
        count = 0

        def on_validation_start(self, trainer, pl_module) -> None:
            _Validations.count += 1

    ckpts = tmp_path / "ckpt"
    with pytest.raises(Preempted) as stop:
        _fit(tmp_path, ResumableCheckpoints(ckpts, every_n_steps=0), _SignalAt(8, "between_steps"),
             _Validations(), val_batches=2)
    assert stop.value.path is None and not (ckpts / STEP).exists()
    assert _Validations.count == 0  # ResumableCheckpoints is listed first: it stopped the run first
