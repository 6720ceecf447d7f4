"""Run a W&B sweep file locally: `python -m reproduce sweep sweeps/<file>.yaml [--workers N]`.

The same YAML drives a W&B agent on a cluster (sweeps/README.md). Here, without a W&B server:
  1. the file is checked by W&B's own sweep schema (the `sweeps` package, W&B's controller code),
     then for what this suite adds: `${args}` in the command, the pruning methods, and the training
     command's own parser (`--print_config` of the first run: every key must exist);
  2. the runs are the ones W&B's controller proposes (the `sweeps` package's `next_runs`): grid =
     every combination, in the controller's order; random = its draws, seeded here (--seed) so that
     a re-invocation draws the same runs, `run_cap` (or --run_cap) of them;
  3. each run's command is built by the W&B agent's own code (wandb's sweep command utilities):
     `${env} ${interpreter} ... ${args}` with `${args}` = `--name=value` per parameter (the one
     difference: ${interpreter} is this Python, so the suite's venv runs it); the runner adds
     `--run_dir=results/sweeps/<file stem>/<run name>`, the run name made of the swept values, so
     that a re-invocation finds the same dirs;
  4. the runs go through reproduce.orchestrate.run_queue: finished ones (result.json) are skipped,
     unfinished ones resume from their last checkpoint, N side by side, W&B offline; the ETA is the
     minutes the profiles (reproduce/profiles/) give a run of the same config;
  5. the sweep's table and plots are written into results/sweeps/<file stem>/.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lightning_modules.errors import UserError

from ..report.report import write_report
from ..report.runs import dataset_of
from .profiles import minutes_for_config
from .run_queue import Job, run_jobs

# W&B's server and launch scheduler read run_cap (wandb/sdk/launch/sweeps/scheduler.py), but the
# `sweeps` package's schema predates it and refuses it: checked here, left out of what the package sees
LOCAL_KEYS = ("run_cap",)
# the training command reads --name=value, which is ${args}; the agent's other argument forms
# (${args_json}, ${args_no_hyphens}, ...) would reach it as text it cannot parse
MACROS = ("env", "interpreter", "program", "args")
MACRO = re.compile(r"^\$\{(\w+)\}$")
NUMERIC_KEYS = ("min", "max", "q", "mu", "sigma", "a", "b")
PARAM_HINT = "write each parameter as {value: x}, {values: [...]} or {distribution: ..., min: ..., max: ...}"


@lru_cache(maxsize=None)
def _wandb_sweeps():
    """W&B's controller package; its pydantic v1-style model warns on import under pydantic 2, harmlessly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sweeps.grid_search import yaml_hash  # noqa: F401 (imported here, inside the filter)

        import sweeps
    return sweeps


@dataclass(frozen=True)
class Sweep:
    path: Path
    config: dict

    @property
    def name(self) -> str:
        return self.path.stem  # names the output folder, so that it never depends on edits of `name:`

    @property
    def swept(self) -> list[str]:
        """The parameters that vary (not constants), sorted by name as the controller sorts them."""
        _wandb_sweeps()
        from sweeps.params import HyperParameter, HyperParameterSet

        params = HyperParameterSet.from_config(self.config["parameters"])
        return sorted(p.name for p in params if p.type != HyperParameter.CONSTANT)

    @property
    def config_file(self) -> str | None:
        """The training config the command names (--config=X or --config X), if any."""
        command = [str(c) for c in self.config.get("command") or []]
        for i, chunk in enumerate(command):
            if chunk.startswith("--config="):
                return chunk.removeprefix("--config=")
            if chunk == "--config" and i + 1 < len(command):
                return command[i + 1]
        return None


# ---------------------------------------------------------------- loading and checking the file

def load_sweep(path: str | Path) -> Sweep:
    """Parse and check a sweep file; every problem is one UserError line naming the file (and the key)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such sweep file; the sweep files are sweeps/*.yaml")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path}: malformed YAML{where} ({getattr(e, 'problem', None) or e}); fix the syntax") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: a sweep file is a mapping (method, parameters, command, ...), got "
                        f"{type(config).__name__}")
    method = config.get("method")
    if method in ("bayes", "custom"):
        raise UserError(f"{path}: method {method} needs the W&B server (it models the finished runs); run it with "
                        "`wandb sweep` + `wandb agent` (sweeps/README.md) or use grid or random locally")
    _check_before_the_schema(path, config)
    _check_schema(path, config)
    _check_command(path, config)
    sweep = Sweep(path, config)
    _check_methods(sweep)
    return sweep


def _check_before_the_schema(path: Path, config: dict) -> None:
    """What the package gets wrong or does not say clearly (each case: why)."""
    if "run_cap" in config and (not isinstance(config["run_cap"], int) or isinstance(config["run_cap"], bool)
                                or config["run_cap"] < 1):
        raise UserError(f"{path}: run_cap must be a positive integer, got {config['run_cap']!r}")
    params = config.get("parameters")
    if not isinstance(params, dict):
        return  # the schema says what is wrong
    for name, spec in params.items():
        where = f"{path}: parameter {name}"
        if not isinstance(spec, dict):  # the package raises a bare ValueError without saying what is expected
            raise UserError(f"{where}: got {spec!r}; {PARAM_HINT}")
        if "parameters" in spec:  # the agent would pass a nested dict as one --name={...} argument
            raise UserError(f"{where}: nested parameters are not used by this suite; name the key in full, "
                            "e.g. model.x")
        for key in NUMERIC_KEYS:  # the package compares min with max and crashes with a TypeError on text
            value = spec.get(key)
            if isinstance(value, str):
                raise UserError(f"{where}: {key} must be a number, got {value!r} (YAML reads 1e-8 as text: "
                                "write 1.0e-8)")


def _check_schema(path: Path, config: dict) -> None:
    """W&B's schema (the `sweeps` package); for grid, the package's own refusal of continuous ranges."""
    sweeps = _wandb_sweeps()
    from sweeps.params import PARAM_DEPRECATION_MAP

    package_config = _package_config(config)
    try:
        violations = sweeps.schema_violations_from_proposed_config(package_config)
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: {e}; {PARAM_HINT}") from None
    # log_uniform & co. (min/max as exponents) are deprecated, not refused by W&B's server: a note
    notes = {v for v in violations if v.endswith(tuple(PARAM_DEPRECATION_MAP.values()))}
    errors = list(dict.fromkeys(v for v in violations if v not in notes))  # the package repeats some
    if errors:
        hint = f"; {PARAM_HINT}" if any("hyperparameter" in e for e in errors) else ""
        raise UserError(f"{path}: {'; '.join(errors)}{hint}")
    for note in sorted(notes):
        print(f"note: {path}: {note}", file=sys.stderr)
    if config["method"] == "grid":
        try:  # the package refuses grids over continuous ranges and probabilities when it expands them
            sweeps.next_runs(package_config, [], validate=False, n=1)
        except ValueError as e:
            raise UserError(f"{path}: {e}; list the points with values: [...] or use method: random") from None


def _package_config(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in LOCAL_KEYS}


def _check_command(path: Path, config: dict) -> None:
    """The package only checks that command is a list; the local runner and the agent fill it in."""
    command = config.get("command")
    if command is None:  # the agent's default, ${env} ${interpreter} ${program} ${args}
        if not isinstance(config.get("program"), str):
            raise UserError(f"{path}: without command:, the agent runs ${{program}}: set program: (a script) or "
                            "give the command, e.g. [${env}, ${interpreter}, -m, ${program}, ${args}]")
        return
    if not all(isinstance(c, (str, int, float)) for c in command):
        raise UserError(f"{path}: command must be a list of strings, e.g. [${{env}}, ${{interpreter}}, -m, "
                        "${program}, ${args}]")
    macros = [m.group(1) for c in command if (m := MACRO.match(str(c)))]
    unsupported = [m for m in macros if m not in MACROS]
    if unsupported:
        raise UserError(f"{path}: command macro ${{{unsupported[0]}}} is not used by this suite: the training "
                        "command reads --name=value, which is ${args}")
    if macros.count("args") != 1:
        raise UserError(f"{path}: command must contain ${{args}} once, or the swept values never reach the training "
                        "command")
    if "program" in macros and not isinstance(config.get("program"), str):
        raise UserError(f"{path}: command uses ${{program}}, so set program: (e.g. program: reproduce.train)")


def _check_methods(sweep: Sweep) -> None:
    """The pruning method is a plain string to the training command's parser: check it here."""
    from lightning_modules.pruning.pruning_methods import METHODS

    spec = sweep.config["parameters"].get("model.method")
    if spec is None:
        return
    for value in spec.get("values", [spec.get("value")]):
        if value not in METHODS:
            raise UserError(f"{sweep.path}: parameter model.method: unknown method {value!r}; use one of "
                            f"{', '.join(METHODS)}")


# ---------------------------------------------------------------- the runs, as W&B's controller proposes them

def expand(sweep: Sweep, seed: int = 0, run_cap: int | None = None) -> list[dict]:
    """Every run's parameter values (constants included, sorted by name), in the controller's order."""
    sweeps = _wandb_sweeps()
    config = _package_config(sweep.config)
    cap = run_cap or sweep.config.get("run_cap")
    if sweep.config["method"] == "grid":
        # the controller proposes runs until the grid is done (a None), so n is only the cap
        runs = sweeps.next_runs(config, [], validate=False, n=cap or sys.maxsize)
    else:
        if not cap:
            raise UserError(f"{sweep.path}: method random needs run_cap (W&B would draw forever); add run_cap: N "
                            "to the file or pass --run_cap N")
        # the package draws from the global `random` module, unseeded; seeded here (and the state put
        # back) so that a re-invocation draws the same runs and finds their run dirs
        state = random.getstate()
        random.seed(seed)
        try:
            runs = sweeps.next_runs(config, [], validate=False, n=cap)
        finally:
            random.setstate(state)
    return [{name: _plain(spec["value"]) for name, spec in run.config.items()} for run in runs if run is not None]


def _plain(value):
    """numpy scalars (the package's draws) as Python's: the server hands the agent JSON values, and the
    commands and run names must be the agent's."""
    import numpy as np

    return value.tolist() if isinstance(value, (np.generic, np.ndarray)) else value


# ---------------------------------------------------------------- commands and run names

def build_command(sweep: Sweep, point: dict, interpreter: str = sys.executable) -> list[str]:
    """The command the W&B agent runs for these values (${interpreter}: this Python, not PATH's)."""
    from wandb.sdk.launch.sweeps import utils as agent_utils  # what wandb/wandb_agent.py builds it with

    template = agent_utils.create_sweep_command(  # ${envvar:NAME} filled in; it edits the list: a copy
        [str(c) for c in sweep.config.get("command") or agent_utils.DEFAULT_SWEEP_COMMAND])
    # `--name=value` per parameter, sorted by name as the controller sends them
    values = agent_utils.create_sweep_command_args({"args": {n: {"value": point[n]} for n in sorted(point)}})
    values.update(env=["/usr/bin/env"], interpreter=[interpreter], program=[str(sweep.config.get("program"))])
    # the agent's own macro substitution (Agent._command_run), which wandb does not expose as a function
    command = []
    for chunk in template:
        macro = MACRO.match(chunk)
        command += (values.get(macro.group(1)) or []) if macro else [chunk]
    return command


def run_names(sweep: Sweep, points: list[dict]) -> list[str]:
    """A folder name per run made of its swept values (readable, and the same at every invocation).
    W&B names runs on its server; the local runner needs names it can find again itself."""
    swept = sweep.swept
    labels = {n: _labels([p[n] for p in points]) for n in swept}
    names = []
    for i, point in enumerate(points):
        parts = [f"{n}={labels[n][_value_key(point[n])]}" for n in swept] or ["run"]
        name = "__".join(parts)
        if sweep.config["method"] == "random":
            name = f"{i:03d}_{name}"  # random draws may repeat a value
        if len(name) > 100:
            name = f"{name[:80]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
        names.append(name)
    for name in set(names):
        if names.count(name) > 1:
            raise UserError(f"{sweep.path}: two runs would share the run dir name {name!r}; make their values differ")
    return names


def _value_key(value) -> str:
    """Two values get one label when the controller takes them for one (its grid tells values apart so)."""
    _wandb_sweeps()
    from sweeps.grid_search import yaml_hash

    return yaml_hash(value)


def _labels(values: list) -> dict[str, str]:
    """value -> text; of paths (direct design's sizes_from), only the components that differ."""
    texts = {_value_key(v): str(v) for v in values}
    paths = [t for t in texts.values() if "/" in t]
    if len(paths) == len(texts) > 1:
        split = [t.split("/") for t in texts.values()]
        n = min(len(s) for s in split)
        pre = next((i for i in range(n) if len({s[i] for s in split}) > 1), n)
        suf = next((i for i in range(n - pre) if len({s[-1 - i] for s in split}) > 1), n - pre)
        texts = {k: "/".join(s[pre:len(s) - suf]) or t for (k, t), s in zip(texts.items(), split)}
    return {k: _sanitize(t) for k, t in texts.items()}


def _sanitize(text: str) -> str:
    text = re.sub(r"[\[\]\s'\"]", "", text).replace("/", "_")
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)


def expected_minutes(sweep: Sweep) -> float | None:
    """Minutes per run on the 2-core reference machine: the profiles' for the same config (the data
    every ETA of this suite comes from); None when no profile runs the config."""
    return minutes_for_config(sweep.config_file) if sweep.config_file else None


def sweep_jobs(sweep: Sweep, points: list[dict], sweep_dir: Path) -> list[Job]:
    minutes = expected_minutes(sweep)
    jobs = []
    for name, point in zip(run_names(sweep, points), points):
        run_dir = sweep_dir / name
        cmd = [*build_command(sweep, point), f"--run_dir={run_dir}"]
        needs = [Path(point["model.sizes_from"])] if point.get("model.sizes_from") else []
        jobs.append(Job(name, cmd, run_dir, minutes, needs))
    return jobs


# ---------------------------------------------------------------- checks that need the training command

def check_inputs_exist(sweep: Sweep, jobs: list[Job]) -> None:
    """Direct design reads other runs' results: they must exist before this sweep starts."""
    for job in jobs:
        for need in job.waits_for:
            if not need.exists():
                producer = Path("sweeps") / f"{need.parent.parent.name}.yaml"
                hint = f"run {producer} first" if producer.exists() else "run the sweep that writes it first"
                raise UserError(f"{sweep.path}: model.sizes_from {need} does not exist yet; {hint}")


def check_with_training_command(sweep: Sweep, job: Job) -> None:
    """The first run's command with --print_config: the training command's parser checks every key and value."""
    proc = subprocess.run([*job.cmd, "--print_config"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, timeout=600)
    if proc.returncode == 0:
        return
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    message = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "")
    message = message.removeprefix("error:").strip()
    params = sweep.config["parameters"]
    named = [n for n in params if f"--{n}=" in message or f'"{n}"' in message or f"'{n}'" in message]
    key = f" (parameter {named[0]})" if named else ""
    raise UserError(f"{sweep.path}: the training command rejects the first run{key}: {message}; fix the sweep file")


# ---------------------------------------------------------------- the runner

def run_sweep(path: str | Path, results: str | Path = "results", workers: int = 1, count: int | None = None,
              seed: int = 0, run_cap: int | None = None, analyse: bool = True) -> list[Job]:
    """Run the sweep's unfinished runs (at most `count` of them); returns the jobs finished in this call."""
    sweep = load_sweep(path)
    points = expand(sweep, seed, run_cap)
    sweep_dir = Path(results) / "sweeps" / sweep.name
    jobs = sweep_jobs(sweep, points, sweep_dir)
    todo = [j for j in jobs if not j.finished]
    chosen = todo[:count] if count else todo
    print(f"== sweep {sweep.name} ({sweep.config['method']}, {len(jobs)} runs) -> {sweep_dir}: "
          f"{len(jobs) - len(todo)} finished, {len(todo)} left"
          + (f", {len(chosen)} of them now (--count {count})" if len(chosen) < len(todo) else ""), file=sys.stderr)
    done, failure = [], None
    if chosen:
        check_inputs_exist(sweep, chosen)
        check_with_training_command(sweep, chosen[0])
        finished = [j for j in jobs if j.finished]
        try:
            done = run_jobs([*finished, *chosen], workers, label=f"sweep {sweep.name}")
        except UserError as e:  # some runs failed: the table of the others is still worth having
            failure = e
    if analyse and any(j.finished for j in jobs):
        write_sweep_tables(sweep_dir)
    if failure:
        raise failure
    return done


def write_sweep_tables(sweep_dir: Path) -> None:
    write_report(dataset_of(sweep_dir), sweep_dir, echo=sys.stderr)


def add_arguments(parser) -> None:
    parser.add_argument("sweep_file", help="a W&B sweep YAML, e.g. sweeps/ptb_smoke_l0.yaml")
    parser.add_argument("--workers", type=int, default=1,
                        help="runs side by side; with N > 1 each gets OMP_NUM_THREADS = cores / N unless it is set")
    parser.add_argument("--results", default="results", help="root folder; runs go to RESULTS/sweeps/<file stem>/")
    parser.add_argument("--count", type=int, default=None,
                        help="start at most this many runs now (as `wandb agent --count`); the rest on the next call")
    parser.add_argument("--run_cap", type=int, default=None, help="number of runs (overrides the file's run_cap)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random method's draws (default 0)")
    parser.add_argument("--wandb", choices=["offline", "disabled"], default=None,
                        help="W&B mode of the runs (default: disabled if WANDB_MODE=disabled, else offline); "
                             "upload later with `wandb sync` (sweeps/README.md)")
    parser.add_argument("--no-tables", dest="analyse", action="store_false",
                        help="skip the table and plots at the end")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args) -> None:
    # `kill` stops the runs as Ctrl-C does (run_queue ends them; each resumes on the next call),
    # instead of leaving them running on without their runner
    signal.signal(signal.SIGTERM, _interrupt)
    # inherited by every run; a local sweep never logs online (it is not a W&B sweep: `wandb sync` later)
    os.environ["WANDB_MODE"] = args.wandb or ("disabled" if os.environ.get("WANDB_MODE") == "disabled" else "offline")
    if args.count is not None and args.count < 1:
        raise UserError(f"--count must be >= 1, got {args.count}")
    run_sweep(args.sweep_file, args.results, args.workers, args.count, args.seed, args.run_cap, args.analyse)
