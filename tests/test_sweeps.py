"""Sweep files stay runnable, expand as the W&B controller does, resume, and refuse bad input early."""

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from lightning_modules.errors import UserError
from lightning_modules.run_dir import RESULT_FILE
from reproduce.orchestrate import sweep as sw

SWEEP_FILES = sorted((REPO / "sweeps").glob("*.yaml"))
# the real configs shrunk to a few batches (as tests/test_configs_and_profiles.py does)
SHRINK = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
          "--trainer.limit_test_batches=2", "--trainer.accelerator=cpu", "--model.embedding_dim=8",
          "--model.hidden_sizes=[8,8]", "--wandb=disabled"]
SHRINK_TARGETS = ["--model.target_neurons=[4,4]", "--model.prune_begin_step=0", "--model.prune_end_step=2",
                  "--model.prune_every=1"]
SHRINK_SQUAD = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.accelerator=cpu",
                "--model.word_dim=12", "--model.char_channels=6", "--model.hidden_size=8", "--wandb=disabled",
                "--trainer.enable_progress_bar=false", "--latency_questions=5", "--data.source=embedded",
                "--data.validation_file=null", "--data.dev_split_articles=2",
                "--data.max_train_questions=60", "--data.max_eval_questions=40", "--data.max_context_tokens=120",
                "--data.batch_size=20", "--data.glove_path=null", "--data.word_vectors=random"]
SMOKE_CONFIG = "reproduce/configs/ptb_smoke_l0.yaml"


def write_sweep(tmp_path: Path, text: str, name: str = "test_sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def tiny_sweep(tmp_path: Path, lambdas: str = "[1.0e-7, 1.0e-6, 1.0e-5]") -> Path:
    """A real training command on the smoke config, a few batches per run."""
    fixed = "\n".join(f"  - {a}" for a in [f"--config={SMOKE_CONFIG}", "--data.train_tokens=6000",
                                           "--trainer.max_epochs=1", "--trainer.limit_val_batches=2",
                                           "--trainer.limit_test_batches=2", "--model.embedding_dim=8",
                                           "--model.hidden_sizes=[8,8]"])
    return write_sweep(tmp_path, f"""program: reproduce.train
method: grid
command:
  - ${{env}}
  - ${{interpreter}}
  - -m
  - ${{program}}
{fixed}
  - ${{args}}
parameters:
  model.reg_lambda:
    values: {lambdas}
""")


# ---------------------------------------------------------------- every sweep file

def test_there_are_sweeps_for_every_study_at_small_and_paper_scale():
    names = {p.stem for p in SWEEP_FILES}
    for study in ("l0", "group_lasso", "magnitude", "direct"):
        assert f"ptb_small_{study}" in names
        assert f"ptb_large_{study}" in names
    for study in ("l0", "group_lasso"):
        assert f"squad_smoke_{study}" in names
        assert f"squad_paper_{study}" in names
    assert "ptb_smoke_l0" in names


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_header_says_what_how_many_how_long_and_the_commands(path):
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    sweep = sw.load_sweep(path)
    runs = re.search(r"^# Runs: (\d+)", text, re.M)
    assert runs and int(runs.group(1)) == len(sw.expand(sweep)), "the header's run count is stale"
    assert re.search(r"^# Time per run: CPU .+; one GPU: .+", text, re.M)
    assert f"# Local: python -m reproduce sweep sweeps/{path.name}" in text
    assert "# Cluster: wandb sweep -p " in text and f"sweeps/{path.name}" in text
    assert f"sbatch --array=0-{len(sw.expand(sweep)) - 1} sweeps/slurm/agent.sbatch" in text
    assert sweep.config.get("name") == path.stem  # the W&B display name is the local folder's name


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_every_sweep_file_validates_expands_and_its_first_run_trains(tmp_path, path):
    sweep = sw.load_sweep(path)
    points = sw.expand(sweep)
    names = sw.run_names(sweep, points)
    assert len(set(names)) == len(points) >= 4  # every study spans at least 4 settings
    squad = sweep.config["program"] == "reproduce.train_squad"
    shrink = SHRINK_SQUAD if squad else SHRINK
    cmd = [*sw.build_command(sweep, points[0]), f"--run_dir={tmp_path / names[0]}", *shrink]
    if "model.target_neurons" in points[0]:
        cmd += SHRINK_TARGETS
    if "model.sizes_from" in points[0]:  # another sweep's run: stand in a result of the shrunk sizes
        source = tmp_path / "source_result.json"
        source.write_text(json.dumps({"neurons_kept": {"input": [8, 6], "hidden": [6, 5]}}))
        cmd.append(f"--model.sizes_from={source}")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / names[0] / RESULT_FILE).read_text())
    # the swept value reached the model (unless the shrink above replaced it)
    if "model.reg_lambda" in points[0]:
        assert result["lambda"] == points[0]["model.reg_lambda"]
    if "model.method" in points[0]:
        assert result["method"] == points[0]["model.method"]
    assert result["config_path"] in " ".join(cmd)


# ---------------------------------------------------------------- expansion and commands

def test_grid_runs_are_the_controllers_in_its_order_with_the_agents_commands(tmp_path):
    """The `sweeps` package (W&B's controller) proposes the runs, wandb's agent code builds the commands:
    this pins what they do that the runner relies on (the order, repeated values, int ranges, the form
    of an argument), so that a release that changes it shows up here."""
    path = write_sweep(tmp_path, """program: reproduce.train
method: grid
command: ["${env}", "${interpreter}", "-m", "${program}", "--config=c.yaml", "${args}"]
parameters:
  model.reg_lambda: {values: [1.0e-7, 1.0e-6]}
  data.num_steps: {min: 20, max: 21}
  model.method: {value: l0}
  model.dropout: {values: [0.5, 0.5, 0.0]}
""")
    sweep = sw.load_sweep(path)
    points = sw.expand(sweep)
    # names sorted; the product's last name varies fastest; a repeated value runs once; int_uniform = range
    assert [(p["data.num_steps"], p["model.dropout"], p["model.reg_lambda"]) for p in points] == [
        (20, 0.5, 1e-7), (20, 0.5, 1e-6), (20, 0.0, 1e-7), (20, 0.0, 1e-6),
        (21, 0.5, 1e-7), (21, 0.5, 1e-6), (21, 0.0, 1e-7), (21, 0.0, 1e-6)]
    assert all(p["model.method"] == "l0" for p in points)
    assert sweep.swept == ["data.num_steps", "model.dropout", "model.reg_lambda"]  # not the constant
    cmd = sw.build_command(sweep, points[0], interpreter="python")
    # the agent's form: /usr/bin/env python -m PROGRAM fixed args, then --name=str(value) sorted by name
    assert cmd == ["/usr/bin/env", "python", "-m", "reproduce.train", "--config=c.yaml", "--data.num_steps=20",
                   "--model.dropout=0.5", "--model.method=l0", "--model.reg_lambda=1e-07"]
    names = sw.run_names(sweep, points)
    assert names[0] == "data.num_steps=20__model.dropout=0.5__model.reg_lambda=1e-07"
    assert sw.run_names(sweep, sw.expand(sw.load_sweep(path))) == names  # the same dirs on every invocation
    assert len(sw.expand(sweep, run_cap=3)) == 3


def test_envvar_macros_and_the_default_command_are_filled_in_as_the_agent_does(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_TEST_CONFIG", "reproduce/configs/ptb_smoke_l0.yaml")
    path = write_sweep(tmp_path, """program: reproduce/train.py
method: grid
parameters:
  model.reg_lambda: {values: [1.0e-6]}
""")
    assert sw.build_command(sw.load_sweep(path), {"model.reg_lambda": 1e-6}, interpreter="py") == [
        "/usr/bin/env", "py", "reproduce/train.py", "--model.reg_lambda=1e-06"]
    path = write_sweep(tmp_path, """program: reproduce.train
method: grid
command: ["${env}", "${interpreter}", "-m", "${program}", "--config=${envvar:SWEEP_TEST_CONFIG}", "${args}"]
parameters:
  model.reg_lambda: {values: [1.0e-6]}
""")
    sweep = sw.load_sweep(path)
    assert sw.build_command(sweep, {"model.reg_lambda": 1e-6})[4] == "--config=reproduce/configs/ptb_smoke_l0.yaml"
    assert sweep.config["command"][4] == "--config=${envvar:SWEEP_TEST_CONFIG}"  # the file's list untouched


def test_time_per_run_is_the_profiles_minutes_for_the_same_config(tmp_path, monkeypatch):
    """No time in a comment is read: a sweep over a config of a profile expects that run's minutes, one
    over any other config has no estimate (the ETA leaves it out rather than guessing)."""
    monkeypatch.chdir(REPO)
    assert sw.expected_minutes(sw.load_sweep("sweeps/ptb_small_l0.yaml")) == 80
    assert sw.expected_minutes(sw.load_sweep("sweeps/ptb_large_magnitude.yaml")) == 2750  # the dense config's
    gru = tiny_sweep(tmp_path).read_text().replace(SMOKE_CONFIG, "reproduce/configs/ptb_small_gru_l0.yaml")
    assert sw.expected_minutes(sw.load_sweep(write_sweep(tmp_path, gru, "gru.yaml"))) == 60
    # a user's own config (every config of the suite is in a profile): no estimate
    own = tmp_path / "my_l0.yaml"
    own.write_text((REPO / SMOKE_CONFIG).read_text())
    other = tiny_sweep(tmp_path).read_text().replace(SMOKE_CONFIG, str(own))
    sweep = sw.load_sweep(write_sweep(tmp_path, other, "own.yaml"))
    assert sweep.config_file == str(own)
    assert sw.expected_minutes(sweep) is None
    jobs = sw.sweep_jobs(sweep, sw.expand(sweep), tmp_path / "out")
    assert [j.expected_minutes for j in jobs] == [None] * 3


def test_list_and_path_values_give_readable_run_names(tmp_path):
    path = write_sweep(tmp_path, """program: reproduce.train
method: grid
command: ["${env}", "${interpreter}", "-m", "${program}", "${args}"]
parameters:
  model.target_neurons: {values: [[150, 150], [75, 70]]}
  model.sizes_from: {values: [results/sweeps/a/model.reg_lambda=1e-07/result.json,
                              results/sweeps/a/model.reg_lambda=1e-06/result.json]}
""")
    sweep = sw.load_sweep(path)
    points = sw.expand(sweep)
    assert sw.build_command(sweep, points[0])[-1] == "--model.target_neurons=[150, 150]"
    assert sw.run_names(sweep, points)[0] == ("model.sizes_from=model.reg_lambda=1e-07__"
                                              "model.target_neurons=150,150")


def test_random_draws_are_seeded_within_bounds_and_capped(tmp_path):
    path = write_sweep(tmp_path, """program: reproduce.train
method: random
run_cap: 6
command: ["${env}", "${interpreter}", "-m", "${program}", "${args}"]
parameters:
  model.reg_lambda: {distribution: log_uniform_values, min: 1.0e-8, max: 1.0e-6}
  model.dropout: {values: [0.0, 0.5]}
  data.num_steps: {min: 10, max: 12}
""")
    sweep = sw.load_sweep(path)
    points = sw.expand(sweep, seed=3)
    state = random.getstate()
    assert len(points) == 6 and points == sw.expand(sweep, seed=3)
    assert random.getstate() == state  # the seeding of the package's draws does not leak
    assert points != sw.expand(sweep, seed=4)
    # plain Python values, as the agent gets them from the server's JSON (the package draws numpy's)
    assert all(type(p["model.reg_lambda"]) is float and type(p["data.num_steps"]) is int for p in points)
    assert all(1e-8 <= p["model.reg_lambda"] <= 1e-6 for p in points)
    assert all(p["data.num_steps"] in (10, 11, 12) and p["model.dropout"] in (0.0, 0.5) for p in points)
    assert len(sw.expand(sweep, run_cap=2)) == 2
    assert sw.run_names(sweep, points)[0].startswith("000_")


# ---------------------------------------------------------------- bad input: one line, before any run

BAD = {
    "malformed YAML": ("method: grid\nparameters: [unclosed\n", r"malformed YAML at line \d+"),
    "not a mapping": ("- a\n- b\n", "a sweep file is a mapping"),
    "unknown top-level key": ("method: grid\nparamters: {}\n",
                              r"Additional properties are not allowed \('paramters' was unexpected\)"),
    "bayes": ("method: bayes\nparameters: {a: {values: [1]}}\n", "method bayes needs the W&B server"),
    "grid over a continuous range": (
        "method: grid\ncommand: ['${args}']\nparameters:\n  model.reg_lambda: "
        "{distribution: log_uniform_values, min: 1.0e-8, max: 1.0e-6}\n",
        "Parameter model.reg_lambda is a disallowed type with grid search.*list the points with values"),
    "bad method": ("method: grid\ncommand: ['${args}']\nparameters:\n  model.method: {values: [l0, lol]}\n",
                   "parameter model.method: unknown method 'lol'"),
    "number written as text": (
        "method: random\nrun_cap: 2\ncommand: ['${args}']\nparameters:\n  model.reg_lambda: "
        "{distribution: log_uniform_values, min: 1e-8, max: 1.0e-6}\n", r"write 1\.0e-8"),
    "no ${args}": ("method: grid\ncommand: [python, train.py]\nparameters: {a: {values: [1]}}\n",
                   r"must contain \$\{args\} once"),
    "random without run_cap": ("method: random\ncommand: ['${args}']\nparameters: {a: {values: [1]}}\n",
                               "method random needs run_cap"),
    "unknown distribution key": ("method: grid\ncommand: ['${args}']\nparameters: {a: {values: [1], q: 2}}\n",
                                 r"not valid under any of the given schemas; invalid hyperparameter configuration: "
                                 r"a; write each parameter as"),
    "min above max": ("method: random\nrun_cap: 2\ncommand: ['${args}']\nparameters: {a: {min: 3, max: 1}}\n",
                      "a: min 3 is not less than max 1$"),
    "probabilities of another length": (
        "method: random\nrun_cap: 2\ncommand: ['${args}']\nparameters:\n  a: {values: [1, 2], probabilities: [1.0]}\n",
        "values \\[1, 2\\] and probabilities \\[1.0\\] are not the same length"),
    "a parameter that is a list": ("method: grid\ncommand: ['${args}']\nparameters: {a: [1, 2]}\n",
                                   r"parameter a: got \[1, 2\]; write each parameter as"),
    "nested parameters": ("method: grid\ncommand: ['${args}']\nparameters: {a: {parameters: {b: {value: 1}}}}\n",
                          "nested parameters are not used"),
    "a macro the training command cannot read": (
        "method: grid\ncommand: ['${args_json}', '${args}']\nparameters: {a: {values: [1]}}\n",
        r"command macro \$\{args_json\} is not used"),
    "run_cap not a count": ("method: random\nrun_cap: 0\ncommand: ['${args}']\nparameters: {a: {values: [1]}}\n",
                            "run_cap must be a positive integer"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_sweep_files_are_one_clear_error(tmp_path, case):
    text, message = BAD[case]
    path = write_sweep(tmp_path, text)
    with pytest.raises(UserError, match=message) as info:
        sw.expand(sw.load_sweep(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_deprecated_distribution_is_a_note_not_an_error(tmp_path, capsys):
    """W&B's schema flags log_uniform (min/max as exponents) as deprecated; its server still runs it."""
    path = write_sweep(tmp_path, """method: random
run_cap: 3
command: ['${args}']
parameters:
  model.reg_lambda: {distribution: log_uniform, min: -16.0, max: -13.0}
""")
    points = sw.expand(sw.load_sweep(path))
    assert "note:" in capsys.readouterr().err
    assert len(points) == 3 and all(math.exp(-16) <= p["model.reg_lambda"] <= math.exp(-13) for p in points)


@pytest.mark.slow
def test_cli_rejects_unknown_parameter_and_malformed_file_before_any_run(tmp_path):
    bad_key = tiny_sweep(tmp_path).read_text().replace("model.reg_lambda:", "model.regg_lambda:")
    path = write_sweep(tmp_path, bad_key, "bad_key.yaml")
    proc = run_cli("reproduce", "sweep", str(path), "--results", str(tmp_path / "out"))
    assert proc.returncode == 2
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and "Traceback" not in proc.stderr
    assert str(path) in err_lines[0] and "model.regg_lambda" in err_lines[0]
    assert not list((tmp_path / "out").glob("sweeps/bad_key/*"))  # nothing started

    broken = write_sweep(tmp_path, "method: grid\nparameters: {a: [1, 2\n", "broken.yaml")
    proc = run_cli("reproduce", "sweep", str(broken), "--results", str(tmp_path / "out"))
    assert proc.returncode == 2 and proc.stderr.strip().startswith(f"error: {broken}: malformed YAML")


def test_direct_design_without_its_l0_runs_says_which_sweep_to_run_first(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the sweep file's paths are repo-relative
    sweep = sw.load_sweep("sweeps/ptb_large_direct.yaml")
    jobs = sw.sweep_jobs(sweep, sw.expand(sweep), tmp_path)
    if all(need.exists() for job in jobs for need in job.waits_for):
        pytest.skip("the large L0 sweep has been run in this checkout")
    with pytest.raises(UserError, match=r"does not exist yet; run sweeps/ptb_large_l0\.yaml first"):
        sw.check_inputs_exist(sweep, jobs)


# ---------------------------------------------------------------- interruption and resume

def _started(stderr: str) -> list[str]:
    return re.findall(r"\] (\S+): started", stderr)


@pytest.mark.slow
def test_interrupted_sweep_reinvoked_runs_exactly_the_remaining_runs(tmp_path):
    path = tiny_sweep(tmp_path)
    out = tmp_path / "out"
    sweep_dir = out / "sweeps" / path.stem
    names = sw.run_names(sw.load_sweep(path), sw.expand(sw.load_sweep(path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "reproduce", "sweep", str(path), "--results", str(out), "--no-tables"]
    # Ctrl-C (SIGINT to the whole process group) as soon as the first run has finished; SIGINT's default
    # handling is restored in the child, since a pytest started in the background passes it on ignored
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (sweep_dir / names[0] / RESULT_FILE).exists():
        assert first.poll() is None and time.time() < deadline, first.stderr.read()[-3000:]
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGINT)
    _, err1 = first.communicate(timeout=120)
    assert first.returncode == 130, err1[-3000:]
    assert "interrupted" in err1
    assert not (sweep_dir / names[1] / RESULT_FILE).exists()
    first_result = (sweep_dir / names[0] / RESULT_FILE).stat().st_mtime_ns
    # after the crash, the sweep's table holds the finished run and none of the unfinished ones
    from fixtures.run_dirs import write_table

    table = write_table("ptb", sweep_dir)
    assert [row.names for row in table["rows"]] == [[names[0]]]
    rows_text = "".join(line for line in table["markdown"].read_text().splitlines() if line.startswith("| r"))
    assert names[1] not in rows_text
    if (sweep_dir / names[1]).is_dir():  # it had started: listed as unfinished
        assert names[1] in table["unfinished"]

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "1 finished, 2 left" in second.stderr
    assert _started(second.stderr) == names[1:]  # exactly the two that had not finished
    assert (sweep_dir / names[0] / RESULT_FILE).stat().st_mtime_ns == first_result
    assert all((sweep_dir / n / RESULT_FILE).exists() for n in names)

    third = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and _started(third.stderr) == [] and "3 finished, 0 left" in third.stderr


def test_count_runs_only_that_many_and_the_rest_next_time(tmp_path, monkeypatch):
    """--count N (as `wandb agent --count`), with the run queue replaced by one that only records."""
    path = tiny_sweep(tmp_path)
    started = []

    def fake_run_jobs(jobs, workers, label):
        todo = [j for j in jobs if not j.finished]
        for job in todo:
            started.append(job.name)
            job.run_dir.mkdir(parents=True)
            (job.run_dir / RESULT_FILE).write_text("{}")
        return todo

    monkeypatch.setattr(sw, "run_jobs", fake_run_jobs)
    monkeypatch.setattr(sw, "check_with_training_command", lambda sweep, job: None)
    names = sw.run_names(sw.load_sweep(path), sw.expand(sw.load_sweep(path)))
    done = sw.run_sweep(path, tmp_path / "out", count=1, analyse=False)
    assert [j.name for j in done] == started == names[:1]
    done = sw.run_sweep(path, tmp_path / "out", analyse=False)
    assert [j.name for j in done] == names[1:] and started == names


def test_failed_runs_still_get_the_table_of_the_others_then_the_error(tmp_path, monkeypatch):
    path = tiny_sweep(tmp_path)
    names = sw.run_names(sw.load_sweep(path), sw.expand(sw.load_sweep(path)))
    tables = []

    def one_fails(jobs, workers, label):
        jobs[0].run_dir.mkdir(parents=True)
        (jobs[0].run_dir / RESULT_FILE).write_text("{}")
        raise UserError(f"{label}: 1 run(s) failed ({jobs[1].name})")

    monkeypatch.setattr(sw, "run_jobs", one_fails)
    monkeypatch.setattr(sw, "check_with_training_command", lambda sweep, job: None)
    monkeypatch.setattr(sw, "write_sweep_tables", tables.append)
    with pytest.raises(UserError, match=re.escape(f"1 run(s) failed ({names[1]})")):
        sw.run_sweep(path, tmp_path / "out")
    assert tables == [tmp_path / "out" / "sweeps" / path.stem]


@pytest.mark.slow
def test_kill_stops_the_runs_like_ctrl_c(tmp_path):
    """SIGTERM to the runner alone (`kill PID`) must not leave its training processes running on."""
    path = tiny_sweep(tmp_path, "[1.0e-7]")
    log = tmp_path / "out" / "sweeps" / path.stem / "model.reg_lambda=1e-07.log"
    cmd = [sys.executable, "-m", "reproduce", "sweep", str(path), "--results", str(tmp_path / "out"), "--no-tables"]
    runner = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not log.exists():  # the run has started
        assert runner.poll() is None and time.time() < deadline, runner.stderr.read()[-3000:]
        time.sleep(0.2)
    runner.terminate()
    _, err = runner.communicate(timeout=120)
    assert runner.returncode == 130 and "interrupted" in err, err[-3000:]
    run_dir = str(log.with_suffix(""))
    assert not _processes_mentioning(run_dir), "the training process outlived its runner"


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains text (read from /proc, nothing is signalled)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids
