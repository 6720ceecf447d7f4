"""The runner behind profiles and sweeps, on real subprocesses that only write a result.json."""

import sys
from pathlib import Path

import pytest

from lightning_modules.errors import UserError
from lightning_modules.run_dir import RESULT_FILE
from reproduce.orchestrate.run_queue import Job, run_jobs


def _job(tmp_path: Path, name: str, code: str = "pass", waits: list[Path] | None = None,
         minutes: float | None = 1.0) -> Job:
    run_dir = tmp_path / name
    script = (f"import pathlib; p = pathlib.Path({str(run_dir)!r}); p.mkdir(parents=True, exist_ok=True); "
              f"{code}; (p / {RESULT_FILE!r}).write_text('{{}}')")
    return Job(name, [sys.executable, "-c", script], run_dir, minutes, waits_for=waits or [])


def test_runs_unfinished_jobs_side_by_side_and_skips_finished(tmp_path):
    jobs = [_job(tmp_path, f"r{i}") for i in range(3)]
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / RESULT_FILE).write_text("{}")
    done = run_jobs(jobs, workers=2)
    assert sorted(j.name for j in done) == ["r0", "r2"]
    assert all(j.finished for j in jobs)
    assert run_jobs(jobs, workers=2) == []  # all finished: nothing starts


def test_a_job_waits_for_the_file_another_job_writes(tmp_path):
    first = _job(tmp_path, "first", code="import time; time.sleep(0.5)")
    second = _job(tmp_path, "second", waits=[tmp_path / "first" / RESULT_FILE],
                  code=f"assert pathlib.Path({str(tmp_path / 'first' / RESULT_FILE)!r}).exists()")
    done = run_jobs([second, first], workers=2)
    assert [j.name for j in done] == ["first", "second"]


def test_failure_is_reported_with_the_log_and_dependents_do_not_start(tmp_path, capsys):
    bad = _job(tmp_path, "bad", code="raise SystemExit('boom: bad input')")
    dependent = _job(tmp_path, "dependent", waits=[tmp_path / "bad" / RESULT_FILE])
    fine = _job(tmp_path, "fine")
    with pytest.raises(UserError, match=r"2 run\(s\) failed \(bad, dependent\)"):
        run_jobs([bad, dependent, fine], workers=1)
    err = capsys.readouterr().err
    assert "boom: bad input" in err  # the tail of the failed run's log
    assert fine.finished and not dependent.finished and not dependent.log.exists()


def test_a_dependency_nobody_writes_is_an_error_before_anything_starts(tmp_path):
    orphan = _job(tmp_path, "orphan", waits=[tmp_path / "nowhere" / RESULT_FILE])
    other = _job(tmp_path, "other")
    with pytest.raises(UserError, match="no run of this list writes"):
        run_jobs([other, orphan])
    assert not other.log.exists()


def test_the_eta_is_the_runs_minutes_and_leaves_out_runs_without_an_estimate(tmp_path, capsys):
    """The minutes are data (the profiles'); a run without them is named, not guessed at."""
    jobs = [_job(tmp_path, "a", minutes=30), _job(tmp_path, "b", minutes=90), _job(tmp_path, "c", minutes=None)]
    run_jobs(jobs, workers=2)
    first = capsys.readouterr().err.splitlines()[0]
    assert first == "== runs: 3 runs, 0 finished, 3 to run (about 60 min + 1 run(s) without an estimate on 2 CPU cores)"
