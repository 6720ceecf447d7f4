"""The sweep files under W&B's own code: the real agent builds and starts every file's runs (the
same commands the local runner builds), a preempted SLURM array task is handed back and resumes, and
its offline W&B run reads back. The runs handed out are the ones W&B's controller proposes: the local
runner's expansion is the controller's code itself (the `sweeps` package).

Only the W&B server is stubbed (tests/wandb_stub.py). The agent's run commands are forked from
a process that has the suite imported (wandb_stub.ForkedRun) to keep 30 runs within a minute;
the SLURM test starts them as a cluster does, through sweeps/slurm/agent.sbatch and `wandb agent`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO
from wandb_offline import read_offline_run
from wandb_stub import STATE_ENV, ForkedRun, StubServer, stub_patches

from lightning_modules.run_dir import CHECKPOINT_DIR, GATE_HISTORY_FILE, RESULT_FILE, STEP_CHECKPOINT
from reproduce.orchestrate import sweep as sw

TESTS = Path(__file__).resolve().parent
SWEEP_FILES = sorted((REPO / "sweeps").glob("*.yaml"))
ENTITY, PROJECT = "stub-entity", "stub-project"
# What a forked run finds imported. Not the entry points themselves: `python -m` runs those fresh.
PRELOAD = ["reproduce.run.training_run", "lightning.pytorch.cli", "lightning_modules.lm.lm_task",
           "lightning_modules.lm.ptb_data", "lightning_modules.squad.squad_task", "lightning_modules.squad.squad_data",
           "lightning_modules.lm.export", "datasets", "wandb_stub"]

# The shrink is handed out by the stub controller as parameters of each run, so it reaches the
# training command the way a sweep's own values do: as W&B writes them (`--name=str(value)`,
# hence `False`, `[8, 8]`, `1e-07`).
SHRINK_PTB = {"trainer.max_epochs": 1, "trainer.limit_train_batches": 3, "trainer.limit_val_batches": 2,
              "trainer.limit_test_batches": 2, "trainer.accelerator": "cpu", "trainer.enable_progress_bar": False,
              "model.embedding_dim": 8, "model.hidden_sizes": [8, 8], "data.source": "local", "wandb": "disabled"}
# magnitude pruning aims at sizes of the full model: smaller ones for [8, 8] (one per run, so the
# two runs still differ), pruned from step 0
SHRINK_TARGETS = {"model.prune_begin_step": 0, "model.prune_end_step": 2, "model.prune_every": 1}
SHRUNK_TARGET_NEURONS = [[4, 4], [3, 2]]
SHRINK_SQUAD = {"trainer.max_epochs": 1, "trainer.limit_train_batches": 2, "trainer.accelerator": "cpu",
                "trainer.enable_progress_bar": False, "model.word_dim": 12, "model.char_channels": 6,
                "model.hidden_size": 8, "wandb": "disabled", "latency_questions": 5, "data.source": "embedded",
                # the text "null": W&B writes a None as `--x=None`, which the parser keeps as the text None
                "data.validation_file": "null", "data.glove_path": "null", "data.dev_split_articles": 2,
                "data.max_train_questions": 60, "data.max_eval_questions": 40, "data.max_context_tokens": 120,
                "data.batch_size": 20, "data.word_vectors": "random"}
# what the direct-design sweeps read from their L0 sweep's runs, at the shrunk sizes
STAND_IN_RESULT = {"neurons_kept": {"input": [8, 6], "hidden": [6, 5]}}


def wandb_id(text: str) -> str:
    """An id of W&B's shape (8 characters, lower-case letters and digits), stable per text."""
    return "".join("abcdefghijklmnopqrstuvwxyz0123456789"[b % 36] for b in hashlib.sha1(text.encode()).digest()[:8])


def same(a, b) -> bool:
    """Equal and of the same JSON type (False is not 0, 1e-07 is not the text '1e-07')."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tiny_ptb(tmp_path_factory) -> Path:
    """600 PTB training lines (valid and test drawn from them): loading the full corpus costs 2.5 s a run."""
    lines = gzip.open(REPO / "lightning_modules" / "lm" / "data" / "ptb" / "ptb.train.txt.gz", "rt").read().splitlines()
    folder = tmp_path_factory.mktemp("tiny_ptb")
    for split, part in (("train", lines[:600]), ("valid", lines[:100]), ("test", lines[100:200])):
        (folder / f"ptb.{split}.txt").write_text("\n".join(part) + "\n")
    return folder


@pytest.fixture(scope="module")
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def submit_dir(tmp_path: Path) -> Path:
    """The folder a cluster user submits from: the repo's code and configs, its own results/."""
    workdir = tmp_path / "submit"
    workdir.mkdir()
    for name in ("reproduce", "lightning_modules", "sweeps"):
        (workdir / name).symlink_to(REPO / name)
    return workdir


def controller_points(path: Path, n: int, scratch: Path) -> list[dict]:
    """The first n runs the W&B grid controller proposes for the file (reproduce.orchestrate.sweep.expand,
    which is the controller's code), read from a copy whose command cannot fail the local checks:
    the controller never reads the command, and a broken one must still get its runs."""
    config = yaml.safe_load(path.read_text())
    scratch.mkdir(parents=True, exist_ok=True)
    neutral = scratch / path.name
    neutral.write_text(yaml.safe_dump({**config, "command": ["${args}"]}))
    return sw.expand(sw.load_sweep(neutral))[:n]


def shrunk(point: dict, index: int, program: str, tiny_ptb: Path) -> dict:
    if program == "reproduce.train_squad":
        extra = dict(SHRINK_SQUAD)
    else:
        extra = {**SHRINK_PTB, "data.data_dir": str(tiny_ptb)}
        if "model.target_neurons" in point:
            extra.update(SHRINK_TARGETS, **{"model.target_neurons": SHRUNK_TARGET_NEURONS[index]})
    # sorted by name, as W&B's controller hands them out (sweeps.params.HyperParameterSet)
    return dict(sorted({**point, **extra}.items()))


def stand_in_sizes_from(workdir: Path, path: Path, points: list[dict]) -> None:
    """A result.json wherever the runs read one (the sweep's values or its config's default): on a
    cluster those are other runs' results under the submit dir, which a fresh one lacks."""
    sources = [p["model.sizes_from"] for p in points if p.get("model.sizes_from")]
    for arg in yaml.safe_load(path.read_text())["command"]:
        if str(arg).startswith("--config="):
            config = yaml.safe_load((REPO / str(arg).removeprefix("--config=")).read_text())
            sources.append((config.get("model") or {}).get("sizes_from"))
    for source in filter(None, sources):
        (workdir / source).parent.mkdir(parents=True, exist_ok=True)
        (workdir / source).write_text(json.dumps(STAND_IN_RESULT))


# ---------------------------------------------------------------- the real agent, in-process

def drive_agent(path: Path, workdir: Path, points: list[dict], forkserver, monkeypatch) -> dict:
    """`wandb.agent` on a stub sweep of the file that hands out `points`, one run each, until done."""
    import wandb
    from wandb import wandb_agent

    config = yaml.safe_load(path.read_text())
    sweep_id = wandb_id(f"sweep {path}")
    server = StubServer.create(workdir / "sweep-state.json", path.read_text(), config.get("program"))
    run_ids = [wandb_id(f"{path} run {i}") for i in range(len(points))]
    for run_id, point in zip(run_ids, points):
        server.enqueue(run_id, point)

    def refuse_unless_values_reach_the_command(record: dict) -> str | None:
        handed = next(h for h in server.state()["handed"] if h["run_id"] == record["run_id"])
        missing = [f"--{k}={v['value']}" for k, v in handed["args"].items()
                   if f"--{k}={v['value']}" not in record["command"]]
        if missing:  # do not train the full-size config of a file whose values never arrive
            return f"handed values not in the command (refused): {missing[:3]}; command {record['command']}"
        return None

    launcher = ForkedRun(forkserver, refuse_unless_values_reach_the_command, workdir / "run-logs", deadline_s=150)
    for obj, name, value in stub_patches(server):
        monkeypatch.setattr(obj, name, value)
    monkeypatch.setattr(wandb_agent, "subprocess", SimpleNamespace(
        Popen=launcher, PIPE=subprocess.PIPE, TimeoutExpired=subprocess.TimeoutExpired))
    monkeypatch.chdir(workdir)
    saved_env = dict(os.environ)  # the agent sets WANDB_SWEEP_ID, WANDB_RUN_ID, WANDB_DIR, ... for good
    try:
        wandb.agent(f"{ENTITY}/{PROJECT}/{sweep_id}", count=len(points))
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return {"path": path, "workdir": workdir, "sweep_id": sweep_id, "run_ids": run_ids,
            "launched": launcher.launched, "state": server.state()}


def run_dir_of(outcome: dict, run_id: str) -> Path:
    """training_run.default_run_dir: results/sweeps/<WANDB_SWEEP_ID>/<WANDB_RUN_ID> under the agent's cwd."""
    return outcome["workdir"] / "results" / "sweeps" / outcome["sweep_id"] / run_id


def agent_problems(outcome: dict) -> list[str]:
    """Everything that would go wrong on a cluster, one line each (empty: all is well)."""
    path, state = outcome["path"], outcome["state"]
    problems = [f"stub server: {e}" for e in state["errors"]]
    handed = [h["run_id"] for h in state["handed"]]
    if handed != outcome["run_ids"]:
        problems.append(f"the agent took runs {handed}, not {outcome['run_ids']}")
    config = yaml.safe_load(path.read_text())
    for run in state["handed"]:
        run_id, point = run["run_id"], {k: v["value"] for k, v in run["args"].items()}
        launched = [r for r in outcome["launched"] if r["run_id"] == run_id]
        if len(launched) != 1:
            problems.append(f"{run_id}: the agent started {len(launched)} processes")
            continue
        record = launched[0]
        if record["sweep_id"] != outcome["sweep_id"]:
            problems.append(f"{run_id}: WANDB_SWEEP_ID {record['sweep_id']!r}, not {outcome['sweep_id']!r}")
        if record["refused"]:
            problems.append(f"{run_id}: {record['refused']}")
            continue
        # the local runner (python -m reproduce sweep) claims to build exactly the agent's command
        local = sw.build_command(sw.Sweep(path, config), point, interpreter="python")
        if record["command"] != local:
            problems.append(f"{run_id}: the agent ran {record['command']}, the local runner builds {local}")
        log = outcome["workdir"] / "run-logs" / f"{run_id}.log"
        if record["exitcode"] != 0:
            tail = log.read_text()[-1500:] if log.exists() else ""
            problems.append(f"{run_id}: exit status {record['exitcode']}: {tail}")
            continue
        result_file = run_dir_of(outcome, run_id) / RESULT_FILE
        if not result_file.exists():
            found = sorted(str(p.relative_to(outcome["workdir"])) for p in outcome["workdir"].rglob(RESULT_FILE))
            problems.append(f"{run_id}: no {result_file.relative_to(outcome['workdir'])} (found: {found})")
            continue
        result = json.loads(result_file.read_text())
        hparams = result["model_hparams"]
        if "model.target_neurons" in point and result["neurons_kept"]["hidden"] != point["model.target_neurons"]:
            problems.append(f"{run_id}: pruned to {result['neurons_kept']['hidden']} hidden neurons, not to the "
                            f"model.target_neurons handed out, {point['model.target_neurons']}")
        for name, value in point.items():
            if name == "model.hidden_sizes" and hparams.get("sizes_from"):
                continue  # sizes_from replaces the hidden sizes, by design
            if name.startswith("model.") and not same(hparams.get(name[len("model."):]), value):
                problems.append(f"{run_id}: {name} handed out as {value!r} reached the model as "
                                f"{hparams.get(name[len('model.'):])!r}")
    return problems


@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_the_wandb_agent_runs_two_runs_of_every_sweep_file(path, tmp_path, forkserver, tiny_ptb, monkeypatch):
    program = yaml.safe_load(path.read_text())["program"]
    proposed = controller_points(path, 2, tmp_path / "controller")
    points = [shrunk(p, i, program, tiny_ptb) for i, p in enumerate(proposed)]
    workdir = submit_dir(tmp_path)
    stand_in_sizes_from(workdir, path, points)
    outcome = drive_agent(path, workdir, points, forkserver, monkeypatch)
    problems = agent_problems(outcome)
    assert not problems, "\n".join(problems)
    commands = [r["command"] for r in outcome["launched"]]
    assert len(commands) == 2 and commands[0] != commands[1]
    for command, point in zip(commands, points):
        assert command[:4] == ["/usr/bin/env", "python", "-m", program]
        assert "--trainer.enable_progress_bar=False" in command  # a bool as W&B writes it
        for name in ("model.reg_lambda", "model.target_neurons", "model.hidden_sizes"):
            if name in point:  # floats as repr (1e-07), lists as Python prints them ([8, 8])
                assert f"--{name}={point[name]!r}" in command


def test_a_command_template_without_args_fails_the_agent_check(tmp_path, forkserver, tiny_ptb, monkeypatch):
    """The check above, on a copy of a sweep file whose command lost `${args}`: it must fail."""
    original = REPO / "sweeps" / "ptb_smoke_l0.yaml"
    broken = tmp_path / original.name
    broken.write_text(original.read_text().replace("  - ${args}\n", ""))
    assert broken.read_text() != original.read_text()
    points = [shrunk(p, i, "reproduce.train", tiny_ptb)
              for i, p in enumerate(controller_points(broken, 2, tmp_path / "controller"))]
    outcome = drive_agent(broken, submit_dir(tmp_path), points, forkserver, monkeypatch)
    problems = agent_problems(outcome)
    assert len(problems) == 2 and all("handed values not in the command" in p for p in problems), problems
    assert not (outcome["workdir"] / "results").exists()  # refused before anything trained


def test_a_preempted_run_is_marked_preempting_and_ends_with_the_signals_exit_code():
    """The W&B server hands a run back to the sweep (same id) only if it was marked preempting and
    its W&B run ended with a non-zero exit code (docs.wandb.ai/models/sweeps/signal-handling-sweep-runs)."""
    from lightning.pytorch.loggers import WandbLogger

    from reproduce.run import training_run

    calls = []

    def run(mode: str) -> SimpleNamespace:
        return SimpleNamespace(offline=mode == "offline", mark_preempting=lambda: calls.append((mode, "preempting")),
                               finish=lambda exit_code: calls.append((mode, exit_code)))

    trainer = SimpleNamespace(loggers=[WandbLogger(experiment=run("online")), WandbLogger(experiment=run("offline"))])
    training_run._mark_wandb_preempting(trainer, signal.SIGUSR1)
    # offline there is no server to tell; the exit code is kept for `wandb sync`
    assert calls == [("online", "preempting"), ("online", 138), ("offline", 138)]


# ---------------------------------------------------------------- a SLURM array task: preempted, requeued, resumed

# the variables sbatch sets for `--array=0-4 --nodes=1 --ntasks-per-node=1` that Lightning and our
# requeue read (with SLURM_NTASKS, Lightning's SLURMEnvironment is active, as on a cluster)
SLURM_ENV = {"SLURM_JOB_ID": "4243", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "3",
             "SLURM_JOB_NAME": "nsr-sweep", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
             "SLURM_CPUS_PER_TASK": "1"}


def _slurm_submit_dir(tmp_path: Path) -> tuple[Path, dict]:
    """A submit dir whose .venv/bin/activate puts a `wandb` with the stub server first on PATH, and an
    `scontrol` that only records (agent.sbatch is run unchanged)."""
    workdir = submit_dir(tmp_path)
    venv_bin = workdir / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "activate").write_text(f'export PATH="{venv_bin}:{Path(sys.executable).parent}:$PATH"\n')
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    scripts = {venv_bin / "wandb": f'#!/bin/sh\nexec "{sys.executable}" "{TESTS / "wandb_stub.py"}" "$@"\n',
               fake_bin / "scontrol": f'#!/bin/sh\necho "$*" >> "{tmp_path / "scontrol.log"}"\n'}
    for script, text in scripts.items():
        script.write_text(text)
        script.chmod(0o755)
    env = {**os.environ, **SLURM_ENV, "SLURM_SUBMIT_DIR": str(workdir), "PATH": f"{fake_bin}:{os.environ['PATH']}",
           STATE_ENV: str(tmp_path / "sweep-state.json"), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return workdir, env


def _array_task(workdir: Path, env: dict, sweep_path: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(["bash", str(REPO / "sweeps" / "slurm" / "agent.sbatch"), sweep_path], cwd=workdir,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture(scope="module")
def preempted_sweep(tmp_path_factory, tiny_ptb) -> dict:
    """ptb_smoke_l0's first run through agent.sbatch: SIGUSR1 mid-epoch, then the requeued task."""
    tmp_path = tmp_path_factory.mktemp("slurm")
    workdir, env = _slurm_submit_dir(tmp_path)
    path = REPO / "sweeps" / "ptb_smoke_l0.yaml"
    sweep_id, run_id = wandb_id("slurm sweep"), wandb_id("slurm run")
    # 620 steps an epoch (rows of 2, ten-token windows): the signal travels batch shell -> agent ->
    # run, and with fewer steps (62 were tried) a loaded machine let training end before it
    # arrived (the run then stops outside a training step, with no new checkpoint); a
    # gate-history line a step shows where training is; W&B logs offline (WANDB_MODE), as on a
    # cluster node without a login
    point = {**controller_points(path, 1, tmp_path / "controller")[0], "trainer.max_epochs": 2,
             "trainer.limit_val_batches": 2, "trainer.limit_test_batches": 2, "trainer.enable_progress_bar": False,
             "model.embedding_dim": 8, "model.hidden_sizes": [8, 8], "model.gate_history_every": 1,
             "data.source": "local", "data.data_dir": str(tiny_ptb), "data.num_steps": 10, "data.batch_size": 2}
    point = dict(sorted(point.items()))
    server = StubServer.create(env[STATE_ENV], path.read_text(), "reproduce.train")
    server.enqueue(run_id, point)
    run_dir = workdir / "results" / "sweeps" / sweep_id / run_id
    logs = [tmp_path / "task-first.out", tmp_path / "task-requeued.out"]

    first = _array_task(workdir, env, f"{ENTITY}/{PROJECT}/{sweep_id}", logs[0])
    try:
        deadline = time.monotonic() + 150
        while _lines(run_dir / GATE_HISTORY_FILE) < 3:
            assert first.poll() is None and time.monotonic() < deadline, logs[0].read_text()[-3000:]
            time.sleep(0.02)
        first.send_signal(signal.SIGUSR1)  # what `#SBATCH --signal=B:USR1@120` does: to the batch shell only
        first_status = first.wait(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    after_first = {"status": first_status, "log": logs[0].read_text(), "state": server.state(),
                   "step_ckpt": (run_dir / CHECKPOINT_DIR / STEP_CHECKPOINT).exists(),
                   "result": (run_dir / RESULT_FILE).exists(),
                   "scontrol": (tmp_path / "scontrol.log").read_text() if (tmp_path / "scontrol.log").exists() else ""}

    # what the server does with a run marked preempting: hand it to the next agent, same id
    server.enqueue(run_id, point, kind="resume")
    second = _array_task(workdir, env, f"{ENTITY}/{PROJECT}/{sweep_id}", logs[1])
    try:
        second_status = second.wait(timeout=240)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    return {"first": after_first, "second_status": second_status, "second_log": logs[1].read_text(),
            "state": server.state(), "run_dir": run_dir, "run_id": run_id, "sweep_id": sweep_id, "point": point,
            "scontrol": (tmp_path / "scontrol.log").read_text() if (tmp_path / "scontrol.log").exists() else ""}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigusr1_to_the_array_task_checkpoints_requeues_and_the_run_resumes_under_its_id(preempted_sweep):
    s, first = preempted_sweep, preempted_sweep["first"]
    assert first["status"] == 0, first["log"][-3000:]  # the agent ends normally after its one run
    assert "SIGUSR1 (time limit near): forwarding to the run" in first["log"]  # agent.sbatch's trap
    assert "stopped by SIGUSR1: checkpoint" in first["log"] and first["step_ckpt"], first["log"][-3000:]
    assert not first["result"]
    # one requeue, of this array task: ours; Lightning's SLURM handler (also SIGUSR1) did not fire too
    assert first["scontrol"].splitlines() == ["requeue 4240_3"]
    assert not list(s["run_dir"].glob("hpc_ckpt_*.ckpt"))
    # the requeued task's agent got the same run back and resumed it in the same dir
    assert [(h["type"], h["run_id"]) for h in s["state"]["handed"]] == [("run", s["run_id"]), ("resume", s["run_id"])]
    assert s["second_status"] == 0, s["second_log"][-3000:]
    step_ckpt = Path("results") / "sweeps" / s["sweep_id"] / s["run_id"] / CHECKPOINT_DIR / STEP_CHECKPOINT
    assert f"resuming from {step_ckpt}" in s["second_log"], s["second_log"][-3000:]
    result = json.loads((s["run_dir"] / RESULT_FILE).read_text())
    assert result["lambda"] == s["point"]["model.reg_lambda"]
    assert s["scontrol"] == first["scontrol"]  # a finished run requeues nothing
    assert list(s["run_dir"].parent.iterdir()) == [s["run_dir"]]  # one run dir for the run, both times


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_offline_wandb_run_reads_back_with_config_commit_epochs_neurons_and_result(preempted_sweep):
    s = preempted_sweep
    result = json.loads((s["run_dir"] / RESULT_FILE).read_text())
    folders = sorted((s["run_dir"] / "wandb").glob("offline-run-*"))
    # one folder per invocation, both the agent's run id: the resumed run continues the same W&B run
    assert len(folders) == 2 and all(f.name.endswith(f"-{s['run_id']}") for f in folders)
    runs = [read_offline_run(f) for f in folders]
    assert {r.run_id for r in runs} == {s["run_id"]}
    preempted, resumed = runs
    for run in runs:
        assert run.config["model"]["reg_lambda"] == s["point"]["model.reg_lambda"]
        assert run.config["run_dir"] == str(Path("results") / "sweeps" / s["sweep_id"] / s["run_id"])
        assert run.config["git_commit"] == result["git_commit"] is not None
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert result["git_commit"].startswith(head)
    rows = [row for run in runs for row in run.history]
    for metric in ("kept/hidden_0", "kept/hidden_1", "kept/input_0", "size/expected_l0", "train_ppl"):
        assert {row["epoch"] for row in rows if metric in row} == {0, 1}, metric
    # each epoch's validation, then the final one train.py runs on the final weights (logged as epoch 2)
    assert {row["epoch"] for row in rows if "val_ppl" in row} == {0, 1, 2}
    assert [row["test_ppl"] for row in rows if "test_ppl" in row] == [result["metrics"]["test_ppl"]]
    assert resumed.summary["result"] == result
    last_epoch = max((row for row in resumed.history if "kept/hidden_0" in row), key=lambda row: row["epoch"])
    assert [last_epoch[f"kept/hidden_{k}"] for k in (0, 1)] == result["neurons_kept"]["hidden"]
    assert resumed.summary["val_ppl"] == result["metrics"]["val_ppl"]
    # the code W&B's requeue rule reads: 128 + SIGUSR1 for the preempted part, 0 for the finished one
    assert (preempted.exit_code, resumed.exit_code) == (128 + signal.SIGUSR1, 0)
