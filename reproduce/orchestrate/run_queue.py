"""Run a list of training commands, N at a time: the one runner behind profiles and sweeps.

A job whose run dir holds result.json is finished and never started again; any other is
(re)started and resumes from its own last checkpoint (reproduce/run/train.py does that). Each job
writes its output to `<run dir>.log`; the terminal gets one progress line per event. Jobs may
wait for files (e.g. the direct-design run waits for the L0 run's result.json).

On a machine with GPUs the jobs are spread over them: each job starts with CUDA_VISIBLE_DEVICES set
to one GPU, the one running the fewest jobs, and a GPU is handed out again when its job ends. With
no more jobs side by side than GPUs, no two running jobs share one, so N GPUs take about the time of
the longest job (or chain of jobs that wait for each other) where one GPU takes the sum.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lightning_modules.errors import UserError
from lightning_modules.run_dir import RESULT_FILE, is_finished


@dataclass
class Job:
    name: str
    cmd: list[str]
    run_dir: Path
    # on the 2-core reference machine, only for the ETA; None: no estimate (a sweep over a config
    # that no profile runs), left out of the ETA rather than guessed
    expected_minutes: float | None = None
    waits_for: list[Path] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return is_finished(self.run_dir)

    @property
    def log(self) -> Path:
        return self.run_dir.with_name(self.run_dir.name + ".log")


def _fmt(minutes: float) -> str:
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min" if minutes >= 1 else "<1 min"


def _expected(jobs: list[Job]) -> float:
    return sum(j.expected_minutes or 0.0 for j in jobs)


def _unestimated(jobs: list[Job]) -> str:
    n = sum(j.expected_minutes is None for j in jobs)
    return f" + {n} run(s) without an estimate" if n else ""


def visible_gpus() -> list[str]:
    """The GPUs a runner hands out, as CUDA_VISIBLE_DEVICES names them: that variable's entries when it
    is set (indices or UUIDs; empty: none), else 0..n-1 for the n GPUs torch sees (none without CUDA)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def parse_gpus(value: str | None) -> list[str]:
    """--gpus: a comma-separated list of GPUs (as CUDA_VISIBLE_DEVICES names them), `none` for no
    assignment, or None (not given): the GPUs this machine shows (visible_gpus)."""
    if value is None:
        return visible_gpus()
    if value.strip() == "none":
        return []
    gpus = [g.strip() for g in value.split(",") if g.strip()]
    if not gpus or len(set(gpus)) != len(gpus):
        raise UserError(f"--gpus {value!r}: give distinct GPU ids separated by commas (e.g. --gpus 0,1,2,3), "
                        "or --gpus none")
    return gpus


@contextlib.contextmanager
def _signals_deferred():
    """SIGINT/SIGTERM held while a run starts and is registered, then delivered: one arriving in between
    would interrupt the runner after the child exists but before the runner knows it, and the child
    would outlive its runner (seen in tests/test_sweeps.py's kill test)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers are the main thread's; another thread's runner is stopped by its caller
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])


def _chain_minutes(job: Job, jobs: list[Job]) -> float:
    """The job's expected minutes plus the longest chain of the jobs that wait for its result."""
    after = [j for j in jobs if any(_same(need, job.run_dir / RESULT_FILE) for need in j.waits_for)]
    return (job.expected_minutes or 0.0) + max((_chain_minutes(j, jobs) for j in after), default=0.0)


def run_jobs(jobs: list[Job], workers: int = 1, label: str = "runs", poll_s: float = 0.5,
             gpus: list[str] | None = None) -> list[Job]:
    """Run every unfinished job; returns the jobs that finished in this call (raises if any failed).
    `gpus`: spread the jobs over these GPUs (CUDA_VISIBLE_DEVICES of each job: one of them)."""
    names = [j.run_dir for j in jobs]
    if len(set(names)) != len(names):
        raise UserError(f"{label}: two jobs share a run dir; every run needs its own")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    todo = [j for j in jobs if not j.finished]
    print(f"== {label}: {len(jobs)} runs, {len(jobs) - len(todo)} finished, {len(todo)} to run "
          f"(about {_fmt(_expected(todo) / workers)}{_unestimated(todo)} on 2 CPU cores)", file=sys.stderr)
    gpus = list(gpus or [])
    if gpus:
        print(f"   {workers} side by side on {len(gpus)} GPU(s) ({','.join(gpus)}), each run on one "
              f"(CUDA_VISIBLE_DEVICES){'' if workers <= len(gpus) else '; some GPUs run several'}", file=sys.stderr)
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {**os.environ}
    if workers > 1:
        env.setdefault("OMP_NUM_THREADS", threads)  # side-by-side runs must not fight over cores
    running: dict[subprocess.Popen, tuple[Job, float, str | None]] = {}
    done, failed = [], []
    started = time.time()
    expected_done = 0.0

    def progress(event: str) -> None:
        left = [j for j in todo if j not in done and j not in failed]
        # scale the reference estimate by how fast this machine has been so far
        pace = (time.time() - started) / 60 / expected_done if expected_done else 1.0
        print(f"[{len(done)} done / {len(running)} running / {len(left) - len(running)} waiting] {event}; "
              f"ETA {_fmt(_expected(left) * pace / workers)}{_unestimated(left)}", file=sys.stderr)

    produced = [j.run_dir / RESULT_FILE for j in jobs]
    for job in todo:
        for need in job.waits_for:
            if not need.exists() and not any(_same(need, p) for p in produced):
                raise UserError(f"{job.name} needs {need}, which no run of this list writes; "
                                "run the profile or sweep that makes it first")
    pending = list(todo)
    if len(gpus) > 1:
        # a fleet finishes in about its longest chain only if the longest chains start first (large dense
        # and the fine-tune waiting for it); on one GPU or CPU the profile's own order stands
        pending.sort(key=lambda job: -_chain_minutes(job, todo))
    try:
        while pending or running:
            for job in list(pending):
                if len(running) >= workers:
                    break
                blocked = [p for p in job.waits_for if not p.exists()]
                if any(_same(p, d.run_dir / RESULT_FILE) for d in failed for p in blocked):
                    pending.remove(job)
                    failed.append(job)
                    progress(f"{job.name}: not started, it needs {blocked[0]} from a run that failed")
                    continue
                if blocked:
                    continue
                pending.remove(job)
                job.run_dir.parent.mkdir(parents=True, exist_ok=True)
                gpu = _least_used(gpus, [g for _, _, g in running.values()]) if gpus else None
                with _signals_deferred():
                    log = open(job.log, "a")  # appended: a resumed run keeps its earlier output
                    proc = subprocess.Popen(job.cmd, stdout=log, stderr=subprocess.STDOUT,
                                            env=env if gpu is None else {**env, "CUDA_VISIBLE_DEVICES": gpu})
                    log.close()
                    running[proc] = (job, time.time(), gpu)
                progress(f"{job.name}: started{'' if gpu is None else f' on GPU {gpu}'} (log: {job.log})")
            for proc in list(running):
                if proc.poll() is None:
                    continue
                job, t0, _ = running.pop(proc)  # its GPU is free again
                if proc.returncode == 0 and job.finished:
                    done.append(job)
                    expected_done += job.expected_minutes or 0.0
                    progress(f"{job.name}: finished in {_fmt((time.time() - t0) / 60)}")
                else:
                    failed.append(job)
                    progress(f"{job.name}: FAILED (exit {proc.returncode}); last lines of {job.log}:\n"
                             + _tail(job.log))
            time.sleep(poll_s)
    except KeyboardInterrupt:
        for proc in running:
            proc.terminate()  # SIGTERM: each run saves a checkpoint and exits
        for proc in running:
            proc.wait()
        raise
    if failed:
        raise UserError(f"{label}: {len(failed)} run(s) failed ({', '.join(j.name for j in failed)}); fix the "
                        "cause and run the same command again: finished runs are skipped, the others resume")
    return done


def _least_used(gpus: list[str], in_use: list[str | None]) -> str:
    """The GPU running the fewest jobs; the first listed among equals."""
    return min(gpus, key=lambda g: in_use.count(g))


def _same(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").replace("\r", "\n")
    except OSError:
        return "  (no log)"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join("  " + line for line in kept)
