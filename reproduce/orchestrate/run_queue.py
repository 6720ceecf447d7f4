"""Run a list of training commands, N at a time: the one runner behind profiles and sweeps.

A job whose run dir holds result.json is finished and never started again; any other is
(re)started and resumes from its own last checkpoint (reproduce/run/train.py does that). Each job
writes its output to `<run dir>.log`; the terminal gets one progress line per event. Jobs may
wait for files (e.g. the direct-design run waits for the L0 run's result.json).
"""

from __future__ import annotations

import os
import subprocess
import sys
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


def run_jobs(jobs: list[Job], workers: int = 1, label: str = "runs", poll_s: float = 0.5) -> list[Job]:
    """Run every unfinished job; returns the jobs that finished in this call (raises if any failed)."""
    names = [j.run_dir for j in jobs]
    if len(set(names)) != len(names):
        raise UserError(f"{label}: two jobs share a run dir; every run needs its own")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    todo = [j for j in jobs if not j.finished]
    print(f"== {label}: {len(jobs)} runs, {len(jobs) - len(todo)} finished, {len(todo)} to run "
          f"(about {_fmt(_expected(todo) / workers)}{_unestimated(todo)} on 2 CPU cores)", file=sys.stderr)
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {**os.environ}
    if workers > 1:
        env.setdefault("OMP_NUM_THREADS", threads)  # side-by-side runs must not fight over cores
    running: dict[subprocess.Popen, tuple[Job, float]] = {}
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
                log = open(job.log, "a")  # appended: a resumed run keeps its earlier output
                proc = subprocess.Popen(job.cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                log.close()
                running[proc] = (job, time.time())
                progress(f"{job.name}: started (log: {job.log})")
            for proc in list(running):
                if proc.poll() is None:
                    continue
                job, t0 = running.pop(proc)
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


def _same(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").replace("\r", "\n")
    except OSError:
        return "  (no log)"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join("  " + line for line in kept)
