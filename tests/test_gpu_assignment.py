"""Several GPUs (issue 30): `make reproduce-ptb` spreads the profile's runs over the GPUs it sees, one run per
GPU through CUDA_VISIBLE_DEVICES, and hands a GPU out again when its run ends.

The runs are fakes on a simulated clock: each "trains" for its profile minutes, and every poll of the runner
advances the clock by one tick, so the order and the overlap are the runner's, without waiting."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lightning_modules.errors import UserError
from lightning_modules.run_dir import RESULT_FILE
from reproduce.orchestrate import profiles, run_queue
from reproduce.orchestrate.run_queue import Job, parse_gpus, run_jobs, visible_gpus

TICK = 25.0  # simulated minutes per poll of the runner


class Fleet:
    """Fake training processes: each records the GPU it was given and checks that no running one has it."""

    def __init__(self, monkeypatch, minutes: dict[str, float]) -> None:
        self.clock, self.minutes = 0.0, minutes
        self.running: dict[str, str] = {}  # run name -> GPU
        self.starts: list[tuple[float, str, str]] = []  # (time, run, GPU)
        self.shared: list[str] = []
        self.most_at_once = 0
        fleet = self

        class Proc:
            def __init__(self, cmd, env=None, **kwargs):
                self.run_dir = Path(cmd[cmd.index("--run_dir") + 1])
                self.name, self.gpu, self.t0, self.returncode = self.run_dir.name, env["CUDA_VISIBLE_DEVICES"], \
                    fleet.clock, None
                if self.gpu in fleet.running.values():
                    fleet.shared.append(f"{self.name} on {self.gpu} beside {fleet.running}")
                fleet.running[self.name] = self.gpu
                fleet.starts.append((fleet.clock, self.name, self.gpu))
                fleet.most_at_once = max(fleet.most_at_once, len(fleet.running))

            def poll(self):
                if self.returncode is None and fleet.clock >= self.t0 + fleet.minutes[self.name]:
                    self.run_dir.mkdir(parents=True, exist_ok=True)
                    (self.run_dir / RESULT_FILE).write_text("{}")
                    del fleet.running[self.name]
                    self.returncode = 0
                return self.returncode

        def tick(_seconds) -> None:
            self.clock += TICK

        monkeypatch.setattr(run_queue.subprocess, "Popen", Proc)
        monkeypatch.setattr(run_queue.time, "sleep", tick)


def _paper_minutes() -> dict[str, float]:
    return {run.name: run.minutes for run in profiles.profiles_of("ptb")["paper"].runs}


def _longest_chain(minutes: dict[str, float]) -> float:
    """The paper profile's longest chain of runs that wait for each other (large dense, then its fine-tune)."""
    runs = {run.name: run for run in profiles.profiles_of("ptb")["paper"].runs}

    def chain(name: str) -> float:
        return minutes[name] + max((chain(d) for d in runs[name].depends_on()), default=0.0)

    return max(chain(name) for name in runs)


def test_eight_gpus_run_the_paper_profile_one_run_per_gpu_in_about_its_longest_chain(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 8)  # the GPUs are found, not given
    minutes = _paper_minutes()
    fleet = Fleet(monkeypatch, minutes)
    profiles.run_profile("ptb", "paper", str(tmp_path), analyse=False)
    assert not fleet.shared
    assert sorted(name for _, name, _ in fleet.starts) == sorted(minutes)  # every run, once
    assert {gpu for _, _, gpu in fleet.starts} == {str(i) for i in range(8)}  # one GPU each, all of them used
    assert fleet.most_at_once == 8
    refilled = [(t, name, gpu) for t, name, gpu in fleet.starts if t > 0]
    assert refilled and all(gpu in {str(i) for i in range(8)} for _, _, gpu in refilled)  # freed GPUs reused
    # 16 runs on 8 GPUs end with the longest chain (large dense, then its fine-tune: started first), give or
    # take a tick per run of the chain; on one GPU they take the sum of all
    chain = _longest_chain(minutes)
    assert chain <= fleet.clock <= chain + 2 * TICK
    assert fleet.clock < sum(minutes.values()) / 2


def test_one_gpu_runs_the_paper_profile_one_at_a_time(tmp_path, monkeypatch):
    minutes = _paper_minutes()
    fleet = Fleet(monkeypatch, minutes)
    profiles.run_profile("ptb", "paper", str(tmp_path), analyse=False, gpus=["0"])
    assert fleet.most_at_once == 1 and {gpu for _, _, gpu in fleet.starts} == {"0"}
    assert fleet.clock >= sum(minutes.values())


def test_more_runs_side_by_side_than_gpus_are_spread_evenly(tmp_path, monkeypatch):
    """--workers above the GPU count (the GPU window's small plan: 8 runs on its one GPU) shares GPUs evenly."""
    jobs = [Job(f"r{i}", ["train", "--run_dir", str(tmp_path / f"r{i}")], tmp_path / f"r{i}", 1.0) for i in range(6)]
    fleet = Fleet(monkeypatch, {f"r{i}": 100.0 for i in range(6)})
    run_jobs(jobs, workers=4, gpus=["0", "1"])
    first = [gpu for t, _, gpu in fleet.starts if t == 0]
    assert sorted(first) == ["0", "0", "1", "1"]


def test_the_gpus_seen_are_cuda_visible_devices_or_all_that_torch_counts(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, GPU-5e1f")
    assert visible_gpus() == ["3", "GPU-5e1f"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert visible_gpus() == ["0", "1"] == parse_gpus(None)
    assert parse_gpus("4,6") == ["4", "6"] and parse_gpus("none") == []
    with pytest.raises(UserError, match="distinct GPU ids"):
        parse_gpus("1,1")


def test_each_real_process_sees_only_its_gpu(tmp_path):
    """The variable reaches the training process (here a script that writes what it sees into its result)."""
    jobs = []
    for i in range(3):
        run_dir = tmp_path / f"r{i}"
        script = (f"import os, pathlib; p = pathlib.Path({str(run_dir)!r}); p.mkdir(parents=True, exist_ok=True); "
                  f"(p / {RESULT_FILE!r}).write_text(os.environ['CUDA_VISIBLE_DEVICES'])")
        jobs.append(Job(f"r{i}", [sys.executable, "-c", script], run_dir, 1.0))
    run_jobs(jobs, workers=2, gpus=["6", "7"], poll_s=0.05)
    seen = [(job.run_dir / RESULT_FILE).read_text() for job in jobs]
    assert seen[:2] == ["6", "7"] and seen[2] in ("6", "7")


def test_the_profile_command_takes_the_gpus_it_is_given(tmp_path, monkeypatch, capsys):
    from reproduce.__main__ import main

    minutes = {run.name: run.minutes for run in profiles.profiles_of("ptb")["smoke"].runs}
    fleet = Fleet(monkeypatch, minutes)
    assert main(["profile", "ptb", "--profile", "smoke", "--results", str(tmp_path), "--no-analyse",
                 "--gpus", "2,3"]) == 0
    assert {gpu for _, _, gpu in fleet.starts} == {"2", "3"} and not fleet.shared
    assert sorted(name for _, name, _ in fleet.starts) == sorted(minutes)
    assert main(["profile", "ptb", "--profile", "smoke", "--gpus", "1,,1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --gpus '1,,1'")
