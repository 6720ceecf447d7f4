"""Checkpoints a run can always resume from: every N steps, on SIGTERM/SIGUSR1, and checked on load.

Lightning's ModelCheckpoint writes `last.ckpt` and `epochNNN.ckpt` at epoch ends; this
callback writes `step.ckpt` (temp file, then rename, so a kill at any moment leaves the
previous or the new one) every N steps and on a signal. On resume the newest readable
checkpoint of the folder is used; an unreadable one is reported with its path and the next
older one is tried; with none left the run stops with a message instead of silently
starting from scratch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import lightning as L
import torch

from .errors import UserError
from .run_dir import CHECKPOINT_GLOB
from .run_dir import LAST_CHECKPOINT as LAST  # ModelCheckpoint's, at epoch ends
from .run_dir import STEP_CHECKPOINT as STEP  # this module's, every N steps and on a signal


class Preempted(Exception):
    """Raised after the checkpoint of a SIGTERM/SIGUSR1 is on disk; the caller exits."""

    def __init__(self, signum: int, path: Path | None, step: int) -> None:
        self.signum, self.path, self.step = signum, path, step
        where = f"checkpoint {path} at step {step}" if path else "no new checkpoint (not in a training step)"
        super().__init__(f"stopped by {signal.Signals(signum).name}: {where}")


def atomic_save_checkpoint(trainer: L.Trainer, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(str(tmp), weights_only=False)  # the full state: a resume needs all of it
    os.replace(tmp, path)


class ResumableCheckpoints(L.Callback):
    """step.ckpt every `every_n_steps` training steps (0: off) and when SIGTERM or SIGUSR1 arrives.

    A signal inside the training loop, in a step or between two (a batch being fetched, another
    callback's step-end work), is acted on when the next step ends: the checkpoint then holds
    the exact mid-epoch position. One during validation, test or export stops at once, and one
    still pending when the loop leaves its steps (validation or the epoch's end comes first)
    stops there; the run resumes from the last checkpoint written before it. Under SLURM
    (SLURM_JOB_ID set and `requeue` true) the job is requeued with `scontrol requeue`, as
    Lightning's SLURM plugin does.
    """

    def __init__(self, dirpath: Path, every_n_steps: int = 0, requeue: bool = True) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.requeue = requeue
        self._signum: int | None = None
        self._in_training = False
        self._previous: dict[int, object] = {}

    # registered at train start, after Lightning's own handlers, which would otherwise stop
    # the run at the next step without a checkpoint. Only the main thread may set handlers: a run
    # in a thread of the packed trainer (reproduce/run/train_packed.py) is told by `request_stop`.
    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGUSR1):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def request_stop(self, signum: int) -> None:
        """A signal that reached another thread: acted on where this run's own thread next can (the
        end of its next training step, with a checkpoint, or where it leaves the step loop)."""
        self._signum = signum

    def on_train_end(self, trainer, pl_module) -> None:
        self.restore_handlers()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.restore_handlers()

    def restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum, frame) -> None:
        self._signum = signum
        if not self._in_training:
            self._stop_without_checkpoint()

    def _stop_without_checkpoint(self) -> None:
        self._maybe_requeue(self._signum)
        raise Preempted(self._signum, None, -1)

    # "in training" spans the whole step loop, not each step alone: a signal that arrived
    # between two steps used to stop the run with no checkpoint, which on a small model (where
    # fetching a batch and the step-end callbacks take much of the time) lost every step since
    # the last periodic checkpoint about half the time
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._in_training = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._in_training = True  # after a mid-epoch validation, and on a resume mid-epoch

    def _leave_training(self) -> None:
        self._in_training = False
        if self._signum is not None:  # arrived after the last step's end: no step left to act on it
            self._stop_without_checkpoint()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._leave_training()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._leave_training()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        signum = self._signum
        due = self.every_n_steps and trainer.global_step % self.every_n_steps == 0
        if signum is None and not due:
            return
        path = self.dirpath / STEP
        self.dirpath.mkdir(parents=True, exist_ok=True)
        atomic_save_checkpoint(trainer, path)
        if signum is not None:
            # Lightning calls the module's on_train_batch_end after the callbacks': its share of this
            # step's end (the LM's gate history row) would be lost with the stop, though the
            # checkpoint counts the step as done
            pl_module.on_train_batch_end(outputs, batch, batch_idx)
            self._maybe_requeue(signum)
            raise Preempted(signum, path, trainer.global_step)

    def _maybe_requeue(self, signum: int) -> None:
        job = os.environ.get("SLURM_JOB_ID")
        if self.requeue and job and signum == signal.SIGUSR1:
            array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
            target = f"{array_job}_{task}" if array_job and task else job
            result = subprocess.run(["scontrol", "requeue", target], capture_output=True, text=True)
            print(f"scontrol requeue {target}: {'ok' if result.returncode == 0 else result.stderr.strip()}",
                  file=sys.stderr)


def _readable(path: Path) -> str | None:
    """None if the checkpoint loads (weights only), else why not."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any failure to unpickle means: unusable)
        return " ".join(str(e).split())[:200] or type(e).__name__
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        return "not a Lightning checkpoint (no state_dict)"
    return None


def pick_checkpoint(checkpoint_dir: Path, explicit: str | None) -> str | None:
    """The checkpoint to resume from: `explicit` (a path or "last") or the newest readable one.

    Returns None only when the directory holds no checkpoint at all (a fresh run).
    """
    checkpoint_dir = Path(checkpoint_dir)
    if explicit not in (None, "last"):
        path = Path(explicit)
        if not path.is_file():
            raise UserError(f"checkpoint {path} not found")
        why = _readable(path)
        if why:
            raise UserError(f"checkpoint {path} is unreadable ({why}); give another --ckpt_path")
        return str(path)
    # newest first: every writer renames a finished file into place, so mtime orders them
    candidates = sorted(checkpoint_dir.glob(CHECKPOINT_GLOB), key=lambda p: p.stat().st_mtime, reverse=True)
    if explicit == "last" and not candidates:
        raise UserError(f"--ckpt_path last: {checkpoint_dir / LAST} does not exist yet")
    if not candidates:
        return None
    for path in candidates:
        why = _readable(path)
        if why is None:
            return str(path)
        print(f"warning: checkpoint {path} is unreadable ({why}); trying an older one", file=sys.stderr)
    raise UserError(f"every checkpoint in {checkpoint_dir} is unreadable; delete that folder to start the "
                    "run from scratch, or give --ckpt_path")
