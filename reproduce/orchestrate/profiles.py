"""Run a whole profile: `python -m reproduce profile ptb --profile smoke|small|paper|auto [--only NAME]`.

The profiles are data, one YAML file per dataset (reproduce/profiles/<dataset>.yaml, whose header
says what each field means); this module loads and checks them and runs them. The pipeline: every
run of the profile (finished ones skipped, unfinished ones resumed), then the measured speed of
each export, then the tables and plots, all under results/<dataset>/<profile>/. Each run is one
training command (reproduce/run/train.py) with its own run dir; a run dir with result.json is
finished.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lightning_modules.errors import UserError
from lightning_modules.run_dir import RESULT_FILE

from ..measure.speed import default_settings, measure_run_dirs
from ..report.report import write_report
from ..report.runs import CPU_PROFILE
from ..run.fetch import DATASETS as FETCHABLE
from ..run.fetch import require_fetched
from .run_queue import Job, parse_gpus, run_jobs, visible_gpus

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "reproduce" / "configs"
PROFILE_DIR = REPO / "reproduce" / "profiles"
DEFAULT_MODULE = "reproduce.train"
# a run dir's name: no path separators, nothing a shell or a table would trip on
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# how the tables (reproduce/report/runs.py SEED_SUFFIX) tell the seeds of one experiment apart
SEED_SUFFIX = re.compile(r"_seed(\d+)$")
# training options that have their own field: an override would hide them from the checks below
OWN_FIELDS = {"--config": "config", "--run_dir": "name", "--profile": "the profile",
              "--seed_everything": "seed", "--model.sizes_from": "sizes_from", "--model.init_from": "init_from"}
PROFILE_KEYS = {"about", "workers", "speed_args", "module", "runs", "fetch"}
RUN_KEYS = {"name", "config", "overrides", "seed", "sizes_from", "init_from", "minutes"}


@dataclass(frozen=True)
class PlannedRun:
    name: str
    config: str  # a file of reproduce/configs/
    minutes: float  # expected on this project's 2-core reference machine, for the ETA
    overrides: tuple[str, ...] = ()  # arguments after the config's (a second lambda of the same config)
    seed: int | None = None  # --seed_everything; None: the config's
    sizes_from: str | None = None  # a run of this profile, or a committed record (repo-relative path)
    init_from: str | None = None  # a run of this profile, or a committed run dir (repo-relative path)

    def depends_on(self) -> list[str]:
        """The runs of its own profile this run needs finished first."""
        return [s for s in (self.sizes_from, self.init_from) if s and not is_path(s)]


@dataclass(frozen=True)
class Profile:
    name: str
    about: str
    workers: int  # runs side by side by default (1 thread each on the 2-core reference machine)
    runs: tuple[PlannedRun, ...]
    speed_args: tuple[str, ...] = ()  # options of `python -m reproduce speed` for its exports
    module: str = DEFAULT_MODULE  # the training entry point of its runs (SQuAD: reproduce.train_squad)
    fetch: str | None = None  # its runs read the Hub files of `python -m reproduce fetch <this>`


def is_path(source: str) -> bool:
    """sizes_from / init_from: a path (a committed record) rather than the name of a run of the profile."""
    return "/" in source


# ---------------------------------------------------------------- loading and checking the files

def datasets() -> list[str]:
    """The datasets that have profiles: the file names, without reading the files."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def profiles_of(dataset: str) -> dict[str, Profile]:
    path = PROFILE_DIR / f"{dataset}.yaml"
    if not path.is_file():
        raise UserError(f"unknown dataset {dataset!r}; available: {', '.join(datasets())} "
                        f"(the files of {_shown(PROFILE_DIR)}/)")
    return _load_once(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=None)
def _load_once(path: Path, mtime_ns: int) -> dict[str, Profile]:
    # read once per version of the file: the sweeps' ETAs and every profile command read it again
    return load_profile_file(path)


def __getattr__(name: str):
    # PROFILES (dataset -> profile name -> Profile), read on first use rather than at import: a
    # malformed file is then a one-line error of the command that reads it, and does not break
    # `python -m reproduce table`, whose parser imports this module too
    if name == "PROFILES":
        return {dataset: profiles_of(dataset) for dataset in datasets()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_profile_file(path: str | Path) -> dict[str, Profile]:
    """Every profile of one file; any problem is one UserError line naming the file and the entry."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise UserError(f"{_shown(path)}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{_shown(path)}: malformed YAML{where} ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{_shown(path)}: a profile file maps each profile name to its about, workers and runs")
    return {str(name): _profile(path, str(name), spec) for name, spec in data.items()}


def _profile(path: Path, name: str, spec) -> Profile:
    where = f"{_shown(path)}: profile {name}"
    if not isinstance(spec, dict):
        raise UserError(f"{where}: got {spec!r}; a profile is a mapping with {', '.join(sorted(PROFILE_KEYS))}")
    _known_keys(where, spec, PROFILE_KEYS, "a profile")
    about, workers = spec.get("about"), spec.get("workers")
    if not isinstance(about, str) or not about.strip():
        raise UserError(f"{where}: about must be a line of text (what the profile is for)")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise UserError(f"{where}: workers must be a positive integer (runs side by side), got {workers!r}")
    speed_args = spec.get("speed_args", [])
    if not isinstance(speed_args, list) or not all(isinstance(a, str) for a in speed_args):
        raise UserError(f"{where}: speed_args must be a list of options of `python -m reproduce speed`")
    module = spec.get("module", DEFAULT_MODULE)
    if not isinstance(module, str) or importlib.util.find_spec(module) is None:
        raise UserError(f"{where}: module {module!r} is not a training entry point (reproduce.train or "
                        "reproduce.train_squad)")
    fetch = spec.get("fetch")
    if fetch is not None and fetch not in FETCHABLE:
        raise UserError(f"{where}: fetch must be one of {', '.join(FETCHABLE)} (what `python -m reproduce fetch` "
                        f"fetches), got {fetch!r}")
    runs = spec.get("runs")
    if not isinstance(runs, list) or not runs:
        raise UserError(f"{where}: runs must be a non-empty list of runs (name, config, minutes, ...)")
    planned: list[PlannedRun] = []
    for i, run in enumerate(runs):
        planned.append(_run(where, i, run, planned))
    return Profile(name, about.strip(), workers, tuple(planned), tuple(speed_args), module, fetch)


def _run(profile_where: str, index: int, spec, before: list[PlannedRun]) -> PlannedRun:
    label = spec.get("name") if isinstance(spec, dict) and isinstance(spec.get("name"), str) else f"#{index + 1}"
    where = f"{profile_where}, run {label}"
    if not isinstance(spec, dict):
        raise UserError(f"{where}: got {spec!r}; a run is a mapping with {', '.join(sorted(RUN_KEYS))}")
    _known_keys(where, spec, RUN_KEYS, "a run")
    missing = [k for k in ("name", "config", "minutes") if k not in spec]
    if missing:
        raise UserError(f"{where}: {', '.join(missing)} missing (a run needs name, config and minutes)")
    name, config, minutes = spec["name"], spec["config"], spec["minutes"]
    if not isinstance(name, str) or not RUN_NAME.match(name):
        raise UserError(f"{where}: name must be a folder name (letters, digits, . _ + -), got {name!r}")
    if name in {r.name for r in before}:
        raise UserError(f"{where}: a second run named {name}; every run needs its own run dir")
    if not isinstance(config, str) or not (CONFIG_DIR / config).is_file():
        raise UserError(f"{where}: config {config!r} is not a file of {_shown(CONFIG_DIR)}/")
    if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or minutes <= 0:
        raise UserError(f"{where}: minutes must be a positive number (expected on the 2-core reference "
                        f"machine), got {minutes!r}")
    overrides = spec.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(a, str) for a in overrides):
        raise UserError(f"{where}: overrides must be a list of --name=value arguments")
    for arg in overrides:
        key = arg.split("=", 1)[0]
        if not arg.startswith("--") or "=" not in arg:
            raise UserError(f"{where}: override {arg!r} is not of the form --name=value")
        if key in OWN_FIELDS:
            raise UserError(f"{where}: override {arg!r}: set it with the run's {OWN_FIELDS[key]} field")
    seed = spec.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise UserError(f"{where}: seed must be an integer, got {seed!r}")
    _check_seed_in_name(where, name, seed, config)
    sources = {}
    for key in ("sizes_from", "init_from"):
        source = spec.get(key)
        if source is None:
            continue
        if not isinstance(source, str) or not source:
            raise UserError(f"{where}: {key} must be a run name of this profile or a committed record path")
        if is_path(source):
            wanted = (REPO / source).is_file() if key == "sizes_from" else (REPO / source).is_dir()
            if not wanted:
                kind = RESULT_FILE if key == "sizes_from" else "run dir"
                raise UserError(f"{where}: {key} {source} is not a committed {kind} (paths are relative to the "
                                "repo root)")
        elif source not in {r.name for r in before}:
            raise UserError(f"{where}: {key} {source!r} is not a run listed before it in this profile "
                            "(a run name, or a committed record path)")
        sources[key] = source
    return PlannedRun(name, config, float(minutes), tuple(overrides), seed, **sources)


def _check_seed_in_name(where: str, name: str, seed: int | None, config: str) -> None:
    """The tables group runs that differ only in the seed by the name's _seed<N>: name and seed must agree."""
    import yaml

    own = (yaml.safe_load((CONFIG_DIR / config).read_text()) or {}).get("seed_everything", 1)
    m = SEED_SUFFIX.search(name)
    if m and seed != int(m.group(1)):
        raise UserError(f"{where}: the name says seed {m.group(1)} but seed is {seed}; set seed: {m.group(1)}")
    if seed is not None and seed != own and not m:
        raise UserError(f"{where}: seed {seed} is not the config's ({own}): end the name with _seed{seed}, "
                        "which the tables read")


def _known_keys(where: str, spec: dict, known: set[str], what: str) -> None:
    unknown = sorted(str(k) for k in set(spec) - known)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; {what} has {', '.join(sorted(known))}")


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when under it."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


# ---------------------------------------------------------------- what other commands read

def minutes_for_config(config: str) -> float | None:
    """The expected minutes of a run of this config (file name) in any profile: what a sweep over the
    same config expects per run. A run without overrides wins (a second lambda may take longer)."""
    runs = [run for dataset in datasets() for profile in profiles_of(dataset).values() for run in profile.runs
            if run.config == Path(config).name]
    plain = [r for r in runs if not r.overrides and r.seed is None]
    return (plain or runs)[0].minutes if runs else None


def resolve_profile(profile: str, dataset: str = "ptb") -> str:
    if profile != "auto":
        return profile
    import torch

    if torch.cuda.is_available():
        return "paper"
    fallback = CPU_PROFILE[dataset]
    print(f"No GPU found: running the {fallback!r} profile ({profiles_of(dataset)[fallback].about}).\n"
          f"The paper-scale runs need a GPU: make reproduce-{dataset} PROFILE=paper", file=sys.stderr)
    return fallback


def get_profile(dataset: str, profile: str) -> tuple[str, Profile]:
    specs = profiles_of(dataset)
    profile = resolve_profile(profile, dataset)
    if profile not in specs:
        raise UserError(f"unknown profile {profile!r} for {dataset}; use {', '.join(specs)} or auto")
    return profile, specs[profile]


def select_runs(spec: Profile, only: list[str] | None) -> list[PlannedRun]:
    """The runs whose names match any of the globs, with the runs of the profile they need (a
    fine-tuning run needs its dense run), in the profile's order; all of them without globs."""
    if not only:
        return list(spec.runs)
    by_name = {r.name: r for r in spec.runs}
    chosen: set[str] = set()
    for pattern in only:
        matched = [r.name for r in spec.runs if fnmatch.fnmatchcase(r.name, pattern)]
        if not matched:
            raise UserError(f"--only {pattern}: no run of profile {spec.name} has such a name; its runs: "
                            f"{', '.join(by_name)}")
        chosen.update(matched)
    todo = list(chosen)
    while todo:  # the runs they need, and the runs those need
        for need in by_name[todo.pop()].depends_on():
            if need not in chosen:
                chosen.add(need)
                todo.append(need)
    return [r for r in spec.runs if r.name in chosen]


def _cli_path(path: Path) -> str:
    # recorded in result.json: repo-relative when run from the repo root, as the configs' own
    # `# Command:` lines and the committed records have it
    return _shown(path)


def profile_jobs(dataset: str, profile: str, out_root: Path, extra_args: list[str] | None = None,
                 only: list[str] | None = None) -> list[Job]:
    spec = profiles_of(dataset)[profile]
    jobs = []
    for run in select_runs(spec, only):
        cmd = [sys.executable, "-m", spec.module, "--config", _cli_path(CONFIG_DIR / run.config),
               "--run_dir", str(out_root / run.name), "--profile", profile]
        if run.seed is not None:
            cmd.append(f"--seed_everything={run.seed}")
        waits = []
        if run.sizes_from:
            if is_path(run.sizes_from):  # a committed record: there already (checked when loading)
                cmd.append(f"--model.sizes_from={_cli_path(REPO / run.sizes_from)}")
            else:
                source = out_root / run.sizes_from / RESULT_FILE
                cmd.append(f"--model.sizes_from={source}")
                waits.append(source)
        if run.init_from:
            if is_path(run.init_from):
                cmd.append(f"--model.init_from={_cli_path(REPO / run.init_from)}")
            else:
                cmd.append(f"--model.init_from={out_root / run.init_from}")
                waits.append(out_root / run.init_from / RESULT_FILE)
        # a run's own overrides come last but for the caller's: they win over the config
        jobs.append(Job(run.name, [*cmd, *run.overrides, *(extra_args or [])], out_root / run.name, run.minutes,
                        waits))
    return jobs


def run_profile(dataset: str, profile: str, results_root: str = "results", workers: int | None = None,
                extra_args: list[str] | None = None, analyse: bool = True, only: list[str] | None = None,
                gpus: list[str] | None = None) -> Path:
    """Runs, then speed, tables and plots; returns the profile's folder. `gpus`: the GPUs the runs are
    spread over, one run per GPU (None: every GPU this machine shows; []: none). Without --workers, as
    many runs go side by side as there are GPUs, or the profile's workers if that is more."""
    profile, spec = get_profile(dataset, profile)
    gpus = visible_gpus() if gpus is None else gpus
    out_root = Path(results_root) / dataset / profile
    print(f"{dataset} / {profile}: {spec.about}", file=sys.stderr)
    if spec.fetch and not any(a.startswith("--data.") for a in extra_args or []):
        # before any run: without the files every run would stop with the same error, one after the
        # other (with --train-arg=--data.* the runs may read other files: each checks its own)
        require_fetched(spec.fetch)
    jobs = profile_jobs(dataset, profile, out_root, extra_args, only)
    if only:
        print(f"--only {' '.join(only)}: {len(jobs)} of {len(spec.runs)} runs ({', '.join(j.name for j in jobs)})",
              file=sys.stderr)
    run_jobs(jobs, workers or max(spec.workers, len(gpus)), label=f"{dataset} / {profile}", gpus=gpus)
    if analyse:
        analyse_runs(dataset, out_root, spec.speed_args)
    return out_root


def analyse_runs(dataset: str, runs_dir: Path, speed_args: tuple[str, ...] = ()) -> None:
    """Measured speed of every finished export that has none yet, then tables and plots."""
    if dataset == "ptb":  # a BiDAF run times its export against the dense model itself (batch 1)
        print(f"== speed of the exports under {runs_dir}", file=sys.stderr)
        measure_run_dirs(sorted(p.parent for p in runs_dir.glob(f"*/{RESULT_FILE}")),
                         default_settings(*speed_args))
    write_report(dataset, runs_dir, echo=sys.stderr)


def add_arguments(parser) -> None:
    parser.add_argument("dataset", choices=datasets(), help=f"a file of {_shown(PROFILE_DIR)}/")
    parser.add_argument("--profile", default="auto", help="smoke, small, paper, or auto (paper on a GPU, else small)")
    parser.add_argument("--results", default="results", help="root folder of the run dirs")
    parser.add_argument("--workers", type=int, default=None,
                        help="runs side by side (default: the profile's, 2 for the CPU profiles, or the number of "
                             "GPUs if that is more)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="only the runs of this name (a glob; repeatable), with the runs they need, e.g. "
                             "--only '*_seed[23]' for the small profile's seeds 2 and 3")
    parser.add_argument("--train-arg", action="append", default=[], metavar="ARG", dest="train_args",
                        help="one more argument for every training command, after the profile's own "
                             "(repeatable; with '=', as the value starts with --), e.g. "
                             "--train-arg=--model.step_impl=graph")
    parser.add_argument("--gpus", default=None, metavar="IDS",
                        help="GPUs to spread the runs over, one run per GPU (CUDA_VISIBLE_DEVICES of each run), "
                             "comma-separated, e.g. 0,1,2,3; 'none': no assignment (default: every GPU this "
                             "machine shows: CUDA_VISIBLE_DEVICES if set, else all that torch sees); without "
                             "--workers, as many runs side by side as GPUs")
    parser.add_argument("--no-analyse", action="store_true",
                        help="only the runs: no speed measurement, tables or plots afterwards")


def run(args) -> None:
    run_profile(args.dataset, args.profile, args.results, workers=args.workers, extra_args=args.train_args,
                analyse=not args.no_analyse, only=args.only, gpus=parse_gpus(args.gpus))
