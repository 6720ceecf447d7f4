"""Run a W&B sweep file locally: `python -m reproduce sweep sweeps/<file>.yaml [--workers N]`.

The same YAML drives a W&B agent on a cluster (sweeps/README.md). Here, without a W&B server:
  1. the file is checked against the W&B sweep schema (the keys and parameter forms W&B accepts)
     and against the training command (`--print_config` of the first run: every key must exist);
  2. `grid` and `random` are expanded as the W&B controller does: grid = every combination of
     the parameters sorted by name, in the order their values are listed; random = draws from
     the same distributions, seeded (--seed), `run_cap` (or --run_cap) of them;
  3. each run's command is built as the agent builds it, `${env} ${interpreter} ... ${args}`
     with `${args}` = `--name=value` for every parameter, sorted by name, value as Python's str()
     (the one difference: ${interpreter} is this Python, so the suite's venv runs it); the runner
     adds `--run_dir=results/sweeps/<file stem>/<run name>`, the run name being made of the
     swept values, so a re-invocation finds the same dirs;
  4. the runs go through reproduce.orchestrate.run_queue: finished ones (result.json) are skipped,
     unfinished ones resume from their last checkpoint, N side by side, W&B offline;
  5. the sweep's table and plots are written into results/sweeps/<file stem>/.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import random
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lightning_modules.errors import UserError

from ..report.report import write_report
from ..report.runs import dataset_of
from .run_queue import Job, run_jobs

# Top-level keys of the W&B sweep schema (it forbids any other).
SWEEP_KEYS = {"program", "method", "parameters", "metric", "command", "name", "description", "project", "entity",
              "run_cap", "early_terminate", "controller", "apiVersion", "kind", "job", "image_uri", "metrics",
              "scheduler"}
# distribution -> (required keys, optional keys with W&B's defaults)
DISTRIBUTIONS = {
    "constant": ({"value"}, {}),
    "categorical": ({"values"}, {}),
    "categorical_w_probabilities": ({"values", "probabilities"}, {}),
    "int_uniform": ({"min", "max"}, {}),
    "uniform": ({"min", "max"}, {}),
    "q_uniform": ({"min", "max"}, {"q": 1.0}),
    "log_uniform": ({"min", "max"}, {}),  # min/max are exponents: exp(U(min, max))
    "log_uniform_values": ({"min", "max"}, {}),
    "q_log_uniform": ({"min", "max"}, {"q": 1.0}),
    "q_log_uniform_values": ({"min", "max"}, {"q": 1.0}),
    "inv_log_uniform": ({"min", "max"}, {}),
    "inv_log_uniform_values": ({"min", "max"}, {}),
    "normal": (set(), {"mu": 0.0, "sigma": 1.0}),
    "q_normal": (set(), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "log_normal": (set(), {"mu": 0.0, "sigma": 1.0}),
    "q_log_normal": (set(), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "beta": (set(), {"a": 1.0, "b": 1.0}),
    "q_beta": (set(), {"a": 1.0, "b": 1.0, "q": 1.0}),
}
# W&B's grid takes finite lists only; int_uniform and q_uniform it turns into lists itself
GRID_DISTRIBUTIONS = {"constant", "categorical", "int_uniform", "q_uniform"}
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
MACRO = re.compile(r"^\$\{(\w+)\}$")
ENVVAR = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # the agent's, when none is given
PARAM_HINT = "write each parameter as {value: x}, {values: [...]} or {distribution: ..., min: ..., max: ...}"


@dataclass(frozen=True)
class Sweep:
    path: Path
    config: dict
    params: dict[str, tuple[str, dict]]  # name -> (distribution, its settings with defaults filled in)

    @property
    def name(self) -> str:
        return self.path.stem  # names the output folder, so that it never depends on edits of `name:`

    @property
    def swept(self) -> list[str]:
        return [n for n in sorted(self.params) if self.params[n][0] != "constant"]


# ---------------------------------------------------------------- loading and checking the file

def load_sweep(path: str | Path) -> Sweep:
    """Parse and check a sweep file; every problem is one UserError line naming the file and the key."""
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
    unknown = sorted(set(config) - SWEEP_KEYS)
    if unknown:
        allowed = ", ".join(sorted(SWEEP_KEYS))
        raise UserError(f"{path}: unknown key {unknown[0]!r}; a W&B sweep file has only {allowed}")
    method = config.get("method")
    if method in ("bayes", "custom"):
        raise UserError(f"{path}: method {method} needs the W&B server (it models the finished runs); run it with "
                        "`wandb sweep` + `wandb agent` (sweeps/README.md) or use grid or random locally")
    if method not in ("grid", "random"):
        raise UserError(f"{path}: method must be grid or random (W&B also knows bayes), got {method!r}")
    raw = config.get("parameters")
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: `parameters` must map each parameter name to its values; {PARAM_HINT}")
    params = {name: _check_param(path, name, spec, method) for name, spec in raw.items()}
    if "run_cap" in config and (not isinstance(config["run_cap"], int) or config["run_cap"] < 1):
        raise UserError(f"{path}: run_cap must be a positive integer, got {config['run_cap']!r}")
    _check_metric(path, config.get("metric"))
    _check_command(path, config)
    sweep = Sweep(path, config, params)
    _check_methods(sweep)
    return sweep


def _check_param(path: Path, name: str, spec, method: str) -> tuple[str, dict]:
    where = f"{path}: parameter {name}"
    if not isinstance(name, str) or not PARAM_NAME.match(name):
        raise UserError(f"{where}: not a valid parameter name (letters, digits, _ . -)")
    if not isinstance(spec, dict):
        raise UserError(f"{where}: got {spec!r}; {PARAM_HINT}")
    if "parameters" in spec:
        raise UserError(f"{where}: nested parameters are not used by this suite; name the key in full, e.g. model.x")
    dist = spec.get("distribution")
    if dist is None:  # W&B infers it from the keys present
        if "value" in spec:
            dist = "constant"
        elif "values" in spec:
            dist = "categorical_w_probabilities" if "probabilities" in spec else "categorical"
        elif {"min", "max"} <= set(spec):
            ints = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
            dist = "int_uniform" if ints else "uniform"
        else:
            raise UserError(f"{where}: got {spec!r}; {PARAM_HINT}")
    if dist not in DISTRIBUTIONS:
        raise UserError(f"{where}: unknown distribution {dist!r}; W&B knows {', '.join(DISTRIBUTIONS)}")
    required, defaults = DISTRIBUTIONS[dist]
    missing = sorted(required - set(spec))
    extra = sorted(set(spec) - required - set(defaults) - {"distribution"})
    if missing or extra:
        problem = f"needs {', '.join(missing)}" if missing else f"does not take {', '.join(extra)}"
        raise UserError(f"{where}: distribution {dist} {problem}")
    settings = {**defaults, **{k: v for k, v in spec.items() if k != "distribution"}}
    for key in ("min", "max", "q", "mu", "sigma", "a", "b"):
        value = settings.get(key)
        if key in settings and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            hint = " (YAML reads 1e-8 as text: write 1.0e-8)" if isinstance(value, str) else ""
            raise UserError(f"{where}: {key} must be a number, got {value!r}{hint}")
    if dist == "int_uniform" and not all(isinstance(settings[k], int) for k in ("min", "max")):
        raise UserError(f"{where}: int_uniform needs integer min and max")
    if "min" in settings and settings["min"] >= settings["max"]:
        raise UserError(f"{where}: min {settings['min']} must be below max {settings['max']}")
    if dist.endswith("log_uniform_values") and settings["min"] <= 0:
        raise UserError(f"{where}: {dist} needs min > 0, got {settings['min']}")
    if "values" in settings and (not isinstance(settings["values"], list) or not settings["values"]):
        raise UserError(f"{where}: values must be a non-empty list, got {settings['values']!r}")
    if dist == "categorical_w_probabilities" and len(settings["probabilities"]) != len(settings["values"]):
        raise UserError(f"{where}: probabilities needs one number per value")
    if method == "grid" and dist == "categorical_w_probabilities":
        raise UserError(f"{where}: grid takes no probabilities (W&B refuses them too); drop them or use method: random")
    if method == "grid" and dist not in GRID_DISTRIBUTIONS:
        raise UserError(f"{where}: grid needs a finite list, not a continuous {dist} range (W&B refuses it too); "
                        "list the points with values: [...] or use method: random")
    return dist, settings


def _check_metric(path: Path, metric) -> None:
    if metric is None:
        return
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise UserError(f"{path}: metric must be {{name: <logged metric>, goal: minimize|maximize}}, got {metric!r}")
    if metric.get("goal", "minimize") not in ("minimize", "maximize"):
        raise UserError(f"{path}: metric.goal must be minimize or maximize, got {metric.get('goal')!r}")


def _check_command(path: Path, config: dict) -> None:
    command = config.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(c, (str, int, float)) for c in command):
        raise UserError(f"{path}: command must be a list of strings, e.g. [${{env}}, ${{interpreter}}, -m, "
                        "${program}, ${args}]")
    macros = [m.group(1) for c in command if (m := MACRO.match(str(c)))]
    unsupported = [m for m in macros if m not in ("env", "interpreter", "program", "args")]
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

    if "model.method" not in sweep.params:
        return
    dist, settings = sweep.params["model.method"]
    for value in settings.get("values", [settings.get("value")]):
        if value not in METHODS:
            raise UserError(f"{sweep.path}: parameter model.method: unknown method {value!r}; use one of "
                            f"{', '.join(METHODS)}")


# ---------------------------------------------------------------- expansion, as the W&B controller

def expand(sweep: Sweep, seed: int = 0, run_cap: int | None = None) -> list[dict]:
    """Every run's parameter values (constants included), in the order the controller proposes them."""
    names = sorted(sweep.params)
    if sweep.config["method"] == "grid":
        lists = [_grid_values(*sweep.params[n]) for n in names]
        points, seen = [], set()
        for combo in itertools.product(*lists):
            # W&B skips a combination it has seen (values compared by their YAML dump)
            key = tuple(_value_key(v) for v in combo)
            if key not in seen:
                seen.add(key)
                points.append(dict(zip(names, combo)))
        cap = run_cap or sweep.config.get("run_cap")
        return points[:cap] if cap else points
    count = run_cap or sweep.config.get("run_cap")
    if not count:
        raise UserError(f"{sweep.path}: method random needs run_cap (W&B would draw forever); add run_cap: N to the "
                        "file or pass --run_cap N")
    rng = random.Random(seed)
    return [{n: _draw(rng, *sweep.params[n]) for n in names} for _ in range(count)]


def _grid_values(dist: str, s: dict) -> list:
    if dist == "constant":
        return [s["value"]]
    if dist == "int_uniform":
        return list(range(s["min"], s["max"] + 1))
    if dist == "q_uniform":  # numpy's arange, as W&B: max itself excluded
        import numpy as np

        return np.arange(s["min"], s["max"], s["q"]).tolist()
    return list(s["values"])


def _value_key(value) -> str:
    import yaml

    if isinstance(value, float) and value.is_integer():
        value = int(value)  # W&B compares 3.0 and 3 as equal
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=True)


def _quantize(x: float, q) -> float | int:
    r = round(x / q) * q
    return int(r) if isinstance(q, int) else r


def _draw(rng: random.Random, dist: str, s: dict):
    """One sample of a W&B distribution (same definitions; W&B's own draws differ, being unseeded)."""
    if dist == "constant":
        return s["value"]
    if dist == "categorical":
        return rng.choice(s["values"])
    if dist == "categorical_w_probabilities":
        return rng.choices(s["values"], weights=s["probabilities"])[0]
    if dist == "int_uniform":
        return rng.randint(s["min"], s["max"])
    lo, hi = s.get("min"), s.get("max")
    samplers = {
        "uniform": lambda: rng.uniform(lo, hi),
        "q_uniform": lambda: _quantize(rng.uniform(lo, hi), s["q"]),
        "log_uniform": lambda: math.exp(rng.uniform(lo, hi)),
        "log_uniform_values": lambda: math.exp(rng.uniform(math.log(lo), math.log(hi))),
        "q_log_uniform": lambda: _quantize(math.exp(rng.uniform(lo, hi)), s["q"]),
        "q_log_uniform_values": lambda: _quantize(math.exp(rng.uniform(math.log(lo), math.log(hi))), s["q"]),
        "inv_log_uniform": lambda: math.exp(-rng.uniform(lo, hi)),
        "inv_log_uniform_values": lambda: 1.0 / math.exp(rng.uniform(math.log(1 / hi), math.log(1 / lo))),
        "normal": lambda: rng.gauss(s.get("mu"), s.get("sigma")),
        "q_normal": lambda: _quantize(rng.gauss(s.get("mu"), s.get("sigma")), s.get("q")),
        "log_normal": lambda: math.exp(rng.gauss(s.get("mu"), s.get("sigma"))),
        "q_log_normal": lambda: _quantize(math.exp(rng.gauss(s.get("mu"), s.get("sigma"))), s.get("q")),
        "beta": lambda: rng.betavariate(s.get("a"), s.get("b")),
        "q_beta": lambda: _quantize(rng.betavariate(s.get("a"), s.get("b")), s.get("q")),
    }
    return samplers[dist]()


# ---------------------------------------------------------------- commands and run names

def build_command(sweep: Sweep, point: dict, interpreter: str = sys.executable) -> list[str]:
    """The command the W&B agent runs for these values (${interpreter}: this Python, not PATH's)."""
    replacements = {
        "env": ["/usr/bin/env"],
        "interpreter": [interpreter],
        "program": [str(sweep.config.get("program"))],
        # the agent's `f"--{name}={value}"`, parameters sorted by name as the controller sends them
        "args": [f"--{name}={point[name]}" for name in sorted(point)],
    }
    command = []
    for chunk in sweep.config.get("command", DEFAULT_COMMAND):
        chunk = ENVVAR.sub(lambda m: os.environ.get(m.group(1), m.group(1)), str(chunk))
        macro = MACRO.match(chunk)
        command += replacements[macro.group(1)] if macro else [chunk]
    return command


def run_names(sweep: Sweep, points: list[dict]) -> list[str]:
    """A folder name per run made of its swept values (readable, and the same at every invocation)."""
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


def expected_minutes(sweep: Sweep) -> float:
    """The CPU minutes per run that the file's header states (the ETA until a run has finished)."""
    for line in sweep.path.read_text().splitlines():
        if not line.startswith("#"):
            break
        m = re.search(r"Time per run:.*?CPU\D*?([\d.]+)\s*(min|h)", line)
        if m:
            return float(m.group(1)) * (60 if m.group(2) == "h" else 1)
    return 1.0


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
    """Direct design reads other runs' result.json: they must exist before this sweep starts."""
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
    named = [n for n in sweep.params if f"--{n}=" in message or f'"{n}"' in message or f"'{n}'" in message]
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
