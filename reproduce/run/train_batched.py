"""Several PTB runs of one architecture trained as one batched model:
`python -m reproduce.run.train_batched --member "ARGS" --member "ARGS" ...`.

Each --member is the argument list of one `python -m reproduce.train` command (shell-quoted). Each
member is built by that command's own LightningCLI (its config, its seed, hence its initial
weights), and ends as that command ends (reproduce/run/train.py finish_run: validation and test of
the final weights by its own trainer, its export, its result.json), so `record` and `table` take a
member as any run. In between, the members train together: one batched step per window
(lightning_modules/lm/batched.py), captured as one CUDA graph with --step_impl graph.

What members must share: the data (source, batch size, num_steps, train tokens) and the number
of epochs; each keeps its own method, lambda, seed, clip, learning rate and schedule, gate freeze,
magnitude schedule and precision (`--precision` of its command; members of another precision train
in their own group of the same step). result.json says that it was trained batched, and with
which members: a member does not equal its run alone bit for bit (other random draws, batched
sums), only in distribution.

Checkpoints: every --checkpoint_every_n_steps steps, at every epoch end and on SIGTERM/SIGUSR1,
each member writes <run_dir>/checkpoints/batched_steps/stepN.ckpt, then the job writes
<job_dir>/batched_job.json naming step N (atomically): the same command resumes every member there,
also after a SIGKILL. A member whose loss becomes non-finite is named in one line and gets no
result.json; the others train on. Exit status: 0 every member finished, 2 a member diverged or a
user error, 128 + signal when stopped by one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from lightning_modules.atomic import atomic_write_json
from lightning_modules.checkpointing import Preempted
from lightning_modules.errors import UserError
from lightning_modules.run_dir import (
    BATCHED_CHECKPOINT,
    BATCHED_CHECKPOINT_DIR,
    BATCHED_CHECKPOINT_GLOB,
    BATCHED_JOB_FILE,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    RESULT_FILE,
    is_finished,
)

from .train import build_cli, finish_run
from .training_run import git_commit, merge_metrics_parts, quiet_known_warnings, run_main, set_aside_metrics

STEP_IMPLS = ("fused", "graph")


@dataclass
class Job:
    """The members of a batched job, built, checked and (when resuming) restored."""
    clis: list
    args: list[list[str]]
    run_dirs: list[Path]
    members: list  # lightning_modules.lm.batched.Member
    schedulers: list
    job_dir: Path
    device: torch.device


def _member_precision(cli) -> str:
    return str(cli.config.get("precision") or "fp32")


def _data_key(cli) -> dict:
    hp = dict(cli.datamodule.hparams)
    hp.pop("pin_memory", None)
    return hp


def default_job_dir(run_dirs: list[Path]) -> Path:
    """Beside the members' run dirs, named by them: the same members always find the same job."""
    key = hashlib.sha1("\n".join(str(d.resolve()) for d in run_dirs).encode()).hexdigest()[:10]
    return run_dirs[0].parent / f"batched-{key}"


def build_job(member_args: list[list[str]], job_dir: str | None, echo) -> Job | None:
    from lightning_modules.lm.batched import CounterNoise, Member

    clis, args, run_dirs = [], [], []
    for a in member_args:
        cli = build_cli(a)  # seeds the RNG with the member's seed: its initial weights are its run alone's
        run_dir = Path(cli.config["run_dir"])
        if is_finished(run_dir):
            print(f"[batched] {run_dir}: finished already, not trained again", file=echo)
            continue
        clis.append(cli)
        args.append(a)
        run_dirs.append(run_dir)
    if not clis:
        return None
    if len(set(run_dirs)) != len(run_dirs):
        raise UserError("two --member commands share a --run_dir; give each member its own")
    first = clis[0]
    for cli, run_dir in zip(clis, run_dirs):
        if _data_key(cli) != _data_key(first):
            raise UserError(f"member {run_dir}: its data options differ from {run_dirs[0]}'s; batched members "
                            "share the data (source, batch_size, num_steps, train_tokens)")
        if cli.trainer.max_epochs != first.trainer.max_epochs:
            raise UserError(f"member {run_dir}: trainer.max_epochs {cli.trainer.max_epochs} differs from "
                            f"{first.trainer.max_epochs}; batched members train the same number of epochs")
        if cli.model.hparams.cell != "lstm":
            raise UserError(f"member {run_dir}: the batched trainer trains LSTM language models "
                            f"(model.cell=lstm), not {cli.model.hparams.cell}")
    device = first.trainer.strategy.root_device
    members, schedulers = [], []
    for cli, run_dir in zip(clis, run_dirs):
        task = cli.model
        task.trainer = cli.trainer  # configure_optimizers reads max_epochs from it
        task.to(device)
        task.model.train()
        configured = task.configure_optimizers()
        optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
        clipped, max_norm = task.step_clip()
        members.append(Member(
            name=str(run_dir), model=task.model, pruning=task.pruning, optimizer=optimizer,
            clipped=clipped, max_grad_norm=max_norm, loss_metric=task.train_ce, penalty_metric=task.train_penalty,
            noise=CounterNoise(int(cli.config["seed_everything"]), device), precision=_member_precision(cli)))
        schedulers.append(scheduler)
    job = Path(job_dir) if job_dir else default_job_dir(run_dirs)
    return Job(clis, args, run_dirs, members, schedulers, job, device)


# ---- checkpoints ------------------------------------------------------------------------------

def _checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINT_DIR / BATCHED_CHECKPOINT_DIR / BATCHED_CHECKPOINT.format(step=step)


def save_job(job: Job, step_fn, *, step: int, epoch: int, window: int, train_s: float) -> None:
    """Every member's checkpoint at `step`, then the job file naming it, then older checkpoints go."""
    from lightning_modules.task_base import metric_state

    for i, (cli, run_dir, m, sched) in enumerate(zip(job.clis, job.run_dirs, job.members, job.schedulers)):
        task = cli.model
        state = step_fn.member_state(i)
        payload = {
            "task": task.state_dict(), "optimizer": m.optimizer.state_dict(), "scheduler": sched.state_dict(),
            "lr": [float(t) for t in m.update.lr], "alive": m.alive,
            "hidden": [tuple(t.cpu() for t in s) for s in state] if state is not None else None,
            "train_ce": metric_state(task.train_ce), "train_penalty": metric_state(task.train_penalty),
            "step": step, "epoch": epoch, "window": window, "train_s": train_s,
        }
        path = _checkpoint_path(run_dir, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(payload, tmp)
        tmp.replace(path)
    job.job_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job.job_dir / BATCHED_JOB_FILE, {
        "step": step, "epoch": epoch, "window": window, "train_s": train_s,
        "members": [str(d) for d in job.run_dirs]})
    for run_dir in job.run_dirs:
        for old in (run_dir / CHECKPOINT_DIR / BATCHED_CHECKPOINT_DIR).glob(BATCHED_CHECKPOINT_GLOB):
            if old.name != BATCHED_CHECKPOINT.format(step=step):
                old.unlink()


def restore_job(job: Job) -> dict | None:
    """Load every member's checkpoint at the step the job file names; None for a fresh job."""
    from lightning_modules.task_base import load_metric_state

    path = job.job_dir / BATCHED_JOB_FILE
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        step = int(saved["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e!r}); delete it to start the batched job from scratch") from None
    for cli, run_dir, m, sched in zip(job.clis, job.run_dirs, job.members, job.schedulers):
        ckpt = _checkpoint_path(run_dir, step)
        if not ckpt.exists():
            raise UserError(f"{ckpt} not found: {path} resumes every member at step {step}; delete {path} to "
                            "start the batched job from scratch")
        payload = torch.load(ckpt, map_location="cpu", weights_only=False)
        task = cli.model
        task.load_state_dict(payload["task"])
        m.optimizer.load_state_dict(payload["optimizer"])
        sched.load_state_dict(payload["scheduler"])
        load_metric_state(task.train_ce, payload["train_ce"])
        load_metric_state(task.train_penalty, payload["train_penalty"])
        m.alive = bool(payload["alive"])
        m.extra = {"hidden": payload["hidden"], "lr": payload["lr"]}
    return saved


# ---- the training loop ------------------------------------------------------------------------

class _Stop:
    """SIGTERM/SIGUSR1/SIGINT: the loop checkpoints at the next step's end and stops."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {s: signal.signal(s, self._on) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}

    def _on(self, signum, frame) -> None:
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


def _log(cli, metrics: dict, step: int) -> None:
    logger = cli.trainer.loggers[0]  # the CSV logger: the run dir's metrics.csv
    logger.log_metrics(metrics, step=step)
    logger.save()


def _epoch_metrics(task, val_ppl: float, lr: float, train_s: float, epoch: int) -> dict:
    """The per-epoch row a run alone logs (lm_task.py on_train_epoch_end and validation)."""
    report = task.size_report()
    metrics = {"epoch": epoch, "val_ppl": val_ppl, "size/expected_l0": report["expected_l0"],
               "size/params": float(report["params"]["after"]),
               "size/flops_per_token": float(report["flops_per_token"]["after"]), "lr": lr, "time/train_s": train_s}
    if task.train_ce.update_count:
        metrics["train_ppl"] = math.exp(min(float(task.train_ce.compute()), 50.0))
    if task.train_penalty.update_count:
        metrics["train/penalty_epoch"] = float(task.train_penalty.compute())
    for kind in ("input", "hidden"):
        for k, n in enumerate(report["neurons_kept"][kind]):
            metrics[f"kept/{kind}_{k}"] = float(n)
    return metrics


def _check_members(job: Job, step_fn, echo) -> None:
    """Name each member whose objective became non-finite (once) and stop writing it."""
    for m, bad in zip(job.members, step_fn.nonfinite()):
        if bad is not None and m.alive:
            m.alive = False
            print(f"error: member {m.name} diverged: its training loss became {bad[1]} at step {bad[0]}, so it gets "
                  f"no {RESULT_FILE}; lower its model.lr or model.reg_lambda and train it again (the other members "
                  "train on)", file=echo)


def train_job(job: Job, *, step_impl: str, checkpoint_every: int, echo) -> dict:
    from lightning_modules.lm.batched import BatchedLMTrainStep, batched_eval_nll
    from lightning_modules.precision import apply_precision

    saved = restore_job(job)
    for run_dir in job.run_dirs:
        run_dir.mkdir(parents=True, exist_ok=True)
        if saved is not None:
            set_aside_metrics(run_dir)  # the CSV logger starts a new metrics.csv; merged back at the end
    for cli, run_dir in zip(job.clis, job.run_dirs):
        cli.parser.save(cli.config, str(run_dir / CONFIG_FILE), skip_none=False, overwrite=True)
    step_fn = BatchedLMTrainStep(job.members, mode=step_impl, device=job.device, set_precision=apply_precision)
    for i, m in enumerate(job.members):
        if m.extra.get("lr") is not None:
            m.update.set_lr(m.extra["lr"])
        if m.extra.get("hidden") is not None:
            step_fn.load_member_state(i, m.extra["hidden"])
    apply_precision(step_fn.groups[0][0])
    data = job.clis[0].datamodule
    data.setup("fit")
    max_epochs = job.clis[0].trainer.max_epochs
    epoch, window = (int(saved["epoch"]), int(saved["window"])) if saved else (0, 0)
    global_step = int(saved["step"]) if saved else 0
    train_s = float(saved["train_s"]) if saved else 0.0
    log_every = job.clis[0].trainer.log_every_n_steps or 0
    stop = _Stop()
    try:
        while epoch < max_epochs:
            started = time.perf_counter()
            for cli in job.clis:
                cli.model.pruning.on_train_epoch_start(cli.model.model, epoch)
            if window == 0:
                step_fn.reset_state()
                for cli in job.clis:
                    cli.model.train_ce.reset()
                    cli.model.train_penalty.reset()
            loader = data.train_dataloader()
            windows = len(loader)
            for w, (x, y) in enumerate(loader):
                if w < window:
                    continue  # the windows this epoch already trained on (a resumed job)
                global_step += 1
                step_fn(x.to(job.device, non_blocking=True), y.to(job.device, non_blocking=True), global_step)
                if log_every and global_step % log_every == 0:
                    _check_members(job, step_fn, echo)
                    losses = step_fn.last_loss.tolist()
                    for cli, m, loss in zip(job.clis, job.members, losses):
                        if m.alive:
                            _log(cli, {"train/loss": loss}, global_step)
                due = checkpoint_every and global_step % checkpoint_every == 0 and w + 1 < windows
                if stop.signum is not None or due:  # (the epoch's end checkpoints after validation)
                    elapsed = train_s + time.perf_counter() - started
                    save_job(job, step_fn, step=global_step, epoch=epoch, window=w + 1, train_s=elapsed)
                    if stop.signum is not None:
                        raise Preempted(stop.signum, job.job_dir / BATCHED_JOB_FILE, global_step)
            _check_members(job, step_fn, echo)
            for sched in job.schedulers:
                sched.step()  # the epoch's lr schedule step, after its last optimizer step
            train_s += time.perf_counter() - started
            for name, idx, lm in step_fn.groups:
                apply_precision(name)
                for m in lm.members:
                    m.eval()
                totals = batched_eval_nll(lm, data.val_dataloader(), job.device).tolist()
                for m in lm.members:
                    m.train()
                for i, (nll, count) in zip(idx, totals):
                    cli, m = job.clis[i], job.members[i]
                    if m.alive:
                        lr = m.optimizer.param_groups[0]["lr"]
                        ppl = math.exp(nll / count) if nll / count < 700 else math.inf
                        _log(cli, _epoch_metrics(cli.model, ppl, lr, train_s, epoch), global_step)
                        cli.model._append_gate_history(epoch=epoch, step=global_step)
            apply_precision(step_fn.groups[0][0])
            epoch, window = epoch + 1, 0
            save_job(job, step_fn, step=global_step, epoch=epoch, window=0, train_s=train_s)
    finally:
        stop.restore()
    return {"train_s": train_s, "epochs": epoch, "step": global_step}


def run_batched(member_args: list[list[str]], *, step_impl: str = "graph", checkpoint_every: int = 500,
                job_dir: str | None = None, echo=None) -> int:
    echo = echo or sys.stderr  # looked up now: a test's captured stderr
    started = time.time()
    commit = git_commit()
    quiet_known_warnings()
    warnings.filterwarnings("ignore", message=r".*does not have many workers")
    # each member's CLI parses its --member string, not this process's argv, by design
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
    # the members' optimisers update through the step's learning-rate tensors (TensorLRUpdate), never
    # through optimizer.step(), whose call count the scheduler's check reads
    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
    if step_impl not in STEP_IMPLS:
        raise UserError(f"--step_impl must be one of {', '.join(STEP_IMPLS)}, got {step_impl!r}")
    job = build_job(member_args, job_dir, echo)
    if job is None:
        print("[batched] every member has finished", file=echo)
        return 0
    done = train_job(job, step_impl=step_impl, checkpoint_every=checkpoint_every, echo=echo)
    from lightning_modules.precision import apply_precision

    batched = {"members": [str(d) for d in job.run_dirs], "job_dir": str(job.job_dir), "step_impl": step_impl,
               "note": "trained as one member of a batched model (reproduce/run/train_batched.py): its own "
                       "weights, method, schedule and seed, but counter-based random draws and batched sums, so "
                       "it equals its run alone in distribution, not bit for bit"}
    code = 0
    for cli, args, run_dir, m in zip(job.clis, job.args, job.run_dirs, job.members):
        if not m.alive:
            code = 2
            continue
        cli.model.train_wall_time_s = done["train_s"]
        # the trainer's loop never ran: its counters say where training ended, so that the final
        # validation and test rows of metrics.csv carry the epoch and step a run alone's do
        cli.trainer.fit_loop.epoch_progress.current.completed = done["epochs"]
        cli.trainer.fit_loop.epoch_loop._batches_that_stepped = done["step"]
        apply_precision(m.precision)  # the member's final validation and test run in its own precision
        merge_metrics_parts(run_dir)
        try:
            finish_run(cli, run_dir, args=args, commit=commit, started=started, epochs=done["epochs"],
                       extra_result={"trained_batched": batched})
        except UserError as e:  # one member's end (e.g. a validation perplexity that overflowed) is its own
            print(f"error: member {run_dir}: {e}", file=echo)
            code = 2
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reproduce.run.train_batched", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--member", action="append", required=True, metavar="ARGS",
                        help="the arguments of one `python -m reproduce.train` command, quoted (repeatable)")
    parser.add_argument("--step_impl", default="graph", choices=STEP_IMPLS,
                        help="graph: the batched step captured as one CUDA graph (fused without CUDA); fused: eager")
    parser.add_argument("--checkpoint_every_n_steps", type=int, default=500,
                        help="also checkpoint every member every N steps (0: at epoch ends and on a signal only)")
    parser.add_argument("--job_dir", default=None,
                        help=f"where {BATCHED_JOB_FILE} goes (default: beside the first member's run dir, named "
                             "by the members)")
    args = parser.parse_args(argv)
    members = [shlex.split(m) for m in args.member]
    return run_main(lambda _: run_batched(members, step_impl=args.step_impl,
                                          checkpoint_every=args.checkpoint_every_n_steps, job_dir=args.job_dir),
                    None)


if __name__ == "__main__":
    sys.exit(main())
