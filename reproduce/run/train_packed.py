"""Several PTB runs in one process: `python -m reproduce.run.train_packed --run "ARGS" --run "ARGS" ...`.

Each --run is the argument list of one `python -m reproduce.train` command (shell-quoted, e.g.
"--config reproduce/configs/ptb_medium_l0.yaml --run_dir results/ptb/paper/medium_l0"). Every run
is that command, unchanged: its own LightningCLI, trainer, model, data, optimiser, checkpoints and
run dir (config, metrics, gate history, export, result.json), so a packed run resumes alone with
its own command, and `python -m reproduce record` takes it as any other. `--precision fp32|tf32`
(default fp32) is every run's: the flags are process-wide, so each run's command gets it too.

Why one process
---------------
On one GPU, separate processes share the device in time slices (unless MPS runs, and it has
never been seen working on the lent H200): a captured training step of one run never overlaps
another's. Here each run trains in its own thread on its own CUDA stream, and the threads take
turns: a run holds the turn from one training step's end to the next, i.e. while it enqueues one
step (with model.step_impl=graph: one graph replay), then hands it on. The GPU works through the
runs' streams side by side while the host enqueues the next run's step.

Same numbers as alone
---------------------
Only the thread holding the turn runs, and the turn carries the random number generators: on
leaving, a run's torch (CPU and CUDA), NumPy and Python generator states are saved; on taking the
turn again they are put back. Every draw a run makes (initialisation, gate noise, dropout, data
loader seeds) therefore comes from its own stream, exactly as in a process of its own, whatever
the other runs draw in between; the arithmetic is each run's own. tests/test_train_packed.py
checks on the CPU that packed runs give the losses, weights and result metrics of each run
alone, bit for bit.

Signals: SIGTERM/SIGUSR1 (and Ctrl-C) reach the main thread, which tells every run: each writes
its step.ckpt at its next step's end and stops, as a run alone does. The exit status is 0 when
every run finished, else the largest of the runs' (2: a user error, 128 + signal: stopped).
"""

from __future__ import annotations

import argparse
import random
import shlex
import signal
import sys
import threading
import time

import lightning as L
import numpy as np
import torch

from lightning_modules.errors import UserError
from lightning_modules.precision import PRECISIONS
from lightning_modules.run_dir import RESULT_FILE


class Turns:
    """N threads that run one at a time, in a fixed round, each with its own RNG streams."""

    def __init__(self, n: int) -> None:
        self._cond = threading.Condition()
        self._active = list(range(n))
        self._holder = 0
        self._rng: dict[int, tuple] = {}

    def take(self, i: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._holder == i)
        self._restore(i)

    def pass_on(self, i: int) -> None:
        """Hand the turn to the next active run and wait for it to come back."""
        if len(self._active) == 1:
            return
        self._save(i)
        with self._cond:
            self._holder = self._next(i)
            self._cond.notify_all()
        self.take(i)

    def leave(self, i: int) -> None:
        with self._cond:
            nxt = self._next(i)
            self._active.remove(i)
            self._holder = nxt if self._active else -1
            self._cond.notify_all()

    def _next(self, i: int) -> int:
        k = self._active.index(i)
        return self._active[(k + 1) % len(self._active)]

    def _save(self, i: int) -> None:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self._rng[i] = (torch.get_rng_state(), cuda, np.random.get_state(), random.getstate())

    def _restore(self, i: int) -> None:
        saved = self._rng.pop(i, None)
        if saved is None:  # a run's first turn: it seeds its generators itself (seed_everything)
            return
        cpu, cuda, np_state, py_state = saved
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(np_state)
        random.setstate(py_state)


class PackedTurn(L.Callback):
    """Hands the turn on after each training, validation and test step of its run."""

    def __init__(self, turns: Turns, index: int) -> None:
        self.turns, self.index = turns, index
        self.trainer: L.Trainer | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.trainer = trainer

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.turns.pass_on(self.index)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.turns.pass_on(self.index)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.turns.pass_on(self.index)


def with_precision(runs: list[list[str]], precision: str) -> list[list[str]]:
    """Each run's arguments with `--precision=<precision>`: the flags are process-wide, so every run
    applies the same one (a run's own default, fp32, would undo the others'), and each result.json's
    command then reproduces its run alone in the precision it had. A run that asks for another is refused."""
    out = []
    for i, args in enumerate(runs):
        own = [a.split("=", 1)[1] if "=" in a else (args[k + 1] if k + 1 < len(args) else "")
               for k, a in enumerate(args) if a == "--precision" or a.startswith("--precision=")]
        if any(p != precision for p in own):
            raise UserError(f"run {i + 1} asks for --precision {own[-1]}, but packed runs share one precision "
                            f"(a process-wide setting): drop it from --run, or pass --precision {own[-1]} to "
                            "the packed trainer")
        out.append(args if own else [*args, f"--precision={precision}"])
    return out


def run_packed(runs: list[list[str]], echo=sys.stderr, precision: str = "fp32") -> list[int]:
    """Train the runs side by side in this process, all in `precision` (fp32 or tf32); returns each
    run's exit status."""
    from lightning_modules.checkpointing import ResumableCheckpoints

    from .train import train
    from .training_run import run_main

    runs = with_precision(runs, precision)
    turns = Turns(len(runs))
    callbacks = [PackedTurn(turns, i) for i in range(len(runs))]
    codes: list[int | None] = [None] * len(runs)
    started = time.time()

    def one(i: int) -> None:
        turns.take(i)
        try:
            if torch.cuda.is_available():
                # the run's kernels go to a stream of its own, so the GPU overlaps them with the others'
                torch.cuda.set_stream(torch.cuda.Stream())
            codes[i] = run_main(lambda args: train(args, callbacks=(callbacks[i],),
                                                   extra_result={"packed_runs": len(runs)}), runs[i])
        except BaseException as e:  # noqa: BLE001 (one run's crash must not take the others down)
            print(f"run {i + 1} crashed: {type(e).__name__}: {e}", file=echo)
            codes[i] = 1
        finally:
            try:
                if torch.cuda.is_available():
                    torch.cuda.current_stream().synchronize()
            finally:  # whatever happened, the others must get the turn
                turns.leave(i)
            print(f"[packed {time.time() - started:.0f}s] run {i + 1}/{len(runs)} ended with status {codes[i]}: "
                  f"{shlex.join(runs[i])}", file=echo)

    def stop(signum, frame) -> None:
        print(f"[packed] {signal.Signals(signum).name}: every run checkpoints at its next step's end and stops",
              file=echo)
        for cb in callbacks:
            for c in (cb.trainer.callbacks if cb.trainer is not None else []):
                if isinstance(c, ResumableCheckpoints):
                    c.request_stop(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    threads = [threading.Thread(target=one, args=(i,), name=f"run{i + 1}", daemon=True) for i in range(len(runs))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)  # wakes up for signals
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return [c if c is not None else 1 for c in codes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reproduce.run.train_packed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="ARGS",
                        help="the arguments of one `python -m reproduce.train` command, quoted (repeatable)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="float32 matmuls and cuDNN kernels of every run: fp32 (full float32) or tf32; each "
                             f"run's {RESULT_FILE} records the flags in force")
    args = parser.parse_args(argv)
    runs = [shlex.split(r) for r in args.run]
    from ..user_errors import report_user_errors

    codes: list[int] = []
    status = report_user_errors(lambda: codes.extend(run_packed(runs, precision=args.precision)),
                                "run the same command again: each run resumes from its last checkpoint")
    if status:
        return status
    return 0 if all(c == 0 for c in codes) else max(codes)


if __name__ == "__main__":
    sys.exit(main())
