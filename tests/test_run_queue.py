"""The runner behind profiles and sweeps, on real subprocesses that only write a result.json."""

import sys
from pathlib import Path

import pytest

from lightning_modules.errors import UserError
from reproduce.orchestrate.run_queue import Job, run_jobs


def _job(tmp_path: Path, name: str, code: str = "pass", waits: list[Path] | None = None) -> Job:
    run_dir = tmp_path / name
    script = (f"import pathlib; p = pathlib.Path({str(run_dir)!r}); p.mkdir(parents=True, exist_ok=True); "
              f"{code}; (p / 'result.json').write_text('{{}}')")
    return Job(name, [sys.executable, "-c", script], run_dir, waits_for=waits or [])


def test_runs_unfinished_jobs_side_by_side_and_skips_finished(tmp_path):
    jobs = [_job(tmp_path, f"r{i}") for i in range(3)]
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "result.json").write_text("{}")
    done = run_jobs(jobs, workers=2)
    assert sorted(j.name for j in done) == ["r0", "r2"]
    assert all(j.finished for j in jobs)
    assert run_jobs(jobs, workers=2) == []  # all finished: nothing starts


def test_a_job_waits_for_the_file_another_job_writes(tmp_path):
    first = _job(tmp_path, "first", code="import time; time.sleep(0.5)")
    second = _job(tmp_path, "second", waits=[tmp_path / "first" / "result.json"],
                  code=f"assert pathlib.Path({str(tmp_path / 'first' / 'result.json')!r}).exists()")
    done = run_jobs([second, first], workers=2)
    assert [j.name for j in done] == ["first", "second"]


def test_failure_is_reported_with_the_log_and_dependents_do_not_start(tmp_path, capsys):
    bad = _job(tmp_path, "bad", code="raise SystemExit('boom: bad input')")
    dependent = _job(tmp_path, "dependent", waits=[tmp_path / "bad" / "result.json"])
    fine = _job(tmp_path, "fine")
    with pytest.raises(UserError, match=r"2 run\(s\) failed \(bad, dependent\)"):
        run_jobs([bad, dependent, fine], workers=1)
    err = capsys.readouterr().err
    assert "boom: bad input" in err  # the tail of the failed run's log
    assert fine.finished and not dependent.finished and not dependent.log.exists()


def test_a_dependency_nobody_writes_is_an_error_before_anything_starts(tmp_path):
    orphan = _job(tmp_path, "orphan", waits=[tmp_path / "nowhere" / "result.json"])
    other = _job(tmp_path, "other")
    with pytest.raises(UserError, match="no run of this list writes"):
        run_jobs([other, orphan])
    assert not other.log.exists()
