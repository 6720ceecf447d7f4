"""Run a whole profile: `python -m reproduce profile ptb --profile smoke|small|paper|auto`.

The pipeline: every run of the profile (finished ones skipped, unfinished ones resumed),
then the measured speed of each export, then the tables and plots, all under
results/<dataset>/<profile>/. Each run is one training command (reproduce/run/train.py) with
its own run dir; a run dir with result.json is finished.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from lightning_modules.errors import UserError
from lightning_modules.run_dir import RESULT_FILE

from ..measure.speed import default_settings, measure_run_dirs
from ..report.report import write_report
from ..report.runs import CPU_PROFILE
from .run_queue import Job, run_jobs

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class PlannedRun:
    name: str
    config: str
    cpu_minutes: float  # expected on this project's 2-core reference machine, for the ETA
    sizes_from: str | None = None  # direct design / magnitude: the run of this profile whose kept sizes it takes
    init_from: str | None = None  # fine-tuning: the run of this profile whose trained weights it starts from
    module: str = "reproduce.train"  # the training entry point (SQuAD: reproduce.train_squad)
    args: tuple[str, ...] = ()  # overrides of the config (a second lambda of the same config)


@dataclass(frozen=True)
class Profile:
    runs: list[PlannedRun]
    workers: int  # runs side by side by default (1 thread each on the 2-core reference machine)
    about: str
    speed_args: tuple[str, ...] = ()  # options of `python -m reproduce speed` for its exports


def _ptb(scale: str, minutes: float, methods: list[str]) -> list[PlannedRun]:
    return [PlannedRun(m, f"ptb_{scale}_{m}.yaml", minutes, sizes_from="l0" if m == "direct" else None)
            for m in methods]


# lambdas of the small comparison; the first is the config's own (that run has the plain name)
SMALL_L0_LAMBDAS = ("1e-6", "5e-7", "2e-6")
SMALL_ISS_LAMBDAS = ("1e-4", "2e-4")
# pruning the trained dense model on the short schedule needs stronger lambdas (its config's header)
SMALL_L0_FT_SHORT_LAMBDAS = ("5e-6", "1e-5")
SMALL_ISS_FT_SHORT_LAMBDAS = ("1e-3", "2e-3")


def _lambdas(name: str, config: str, lambdas: tuple[str, ...], init_from: str | None = None,
             minutes: float = 80) -> list[PlannedRun]:
    return [PlannedRun(name if i == 0 else f"{name}_lambda{lam}", config, minutes, init_from=init_from,
                       args=() if i == 0 else (f"--model.reg_lambda={lam}",))
            for i, lam in enumerate(lambdas)]


def _squad(scale: str, minutes: float, methods: list[str]) -> list[PlannedRun]:
    return [PlannedRun(m, f"squad_{scale}_{m}.yaml", minutes, module="reproduce.train_squad") for m in methods]


PROFILES: dict[str, dict[str, Profile]] = {
    "ptb": {
        # every method on a 2x64 LSTM and 100k training tokens: a < 5 min pipeline check
        "smoke": Profile(_ptb("smoke", 1.5, ["l0", "dense", "group_lasso", "lasso", "magnitude", "direct"]),
                         workers=2, about="pipeline check, not the paper's numbers",
                         speed_args=("--quick", "--backends", "torch")),  # ONNX export is in the tests
        # In the order the runs are worth having: dense; L0 at three lambdas; ISS at two; both again
        # fine-tuned from the dense run (also on a short, gentler schedule); magnitude pruning and
        # the direct design at L0's sizes.
        # The unnamed lambda of each method is its config's; the others are overrides.
        "small": Profile([PlannedRun("dense", "ptb_small_dense.yaml", 80),
                          *_lambdas("l0", "ptb_small_l0.yaml", SMALL_L0_LAMBDAS),
                          *_lambdas("group_lasso", "ptb_small_group_lasso.yaml", SMALL_ISS_LAMBDAS),
                          *_lambdas("l0_ft", "ptb_small_l0_finetune.yaml", SMALL_L0_LAMBDAS, init_from="dense"),
                          *_lambdas("group_lasso_ft", "ptb_small_group_lasso_finetune.yaml", SMALL_ISS_LAMBDAS,
                                    init_from="dense"),
                          *_lambdas("l0_ft_short", "ptb_small_l0_finetune_short.yaml", SMALL_L0_FT_SHORT_LAMBDAS,
                                    init_from="dense", minutes=35),
                          *_lambdas("group_lasso_ft_short", "ptb_small_group_lasso_finetune_short.yaml",
                                    SMALL_ISS_FT_SHORT_LAMBDAS, init_from="dense", minutes=40),
                          PlannedRun("magnitude", "ptb_small_magnitude.yaml", 80, sizes_from="l0"),
                          PlannedRun("direct", "ptb_small_direct.yaml", 80, sizes_from="l0")],
                         workers=2, about="Zaremba small (2x200) on full PTB: the CPU-sized comparison"),
        "paper": Profile([PlannedRun("medium_dense", "ptb_medium_dense.yaml", 39 * 12),
                          PlannedRun("medium_l0", "ptb_medium_l0.yaml", 39 * 13),
                          PlannedRun("large_dense", "ptb_large_dense.yaml", 55 * 50),
                          PlannedRun("large_l0", "ptb_large_l0.yaml", 55 * 55),
                          PlannedRun("large_group_lasso", "ptb_large_group_lasso.yaml", 55 * 55),
                          PlannedRun("large_group_lasso_ft", "ptb_large_group_lasso_finetune.yaml", 55 * 55,
                                     init_from="large_dense"),
                          PlannedRun("large_direct", "ptb_large_direct.yaml", 55 * 15, sizes_from="large_l0")],
                         workers=1, about="Zaremba medium and large: GPU scale"),
    },
    "squad": {
        "smoke": Profile(_squad("smoke", 4, ["dense", "l0"]), workers=2,
                         about="pipeline check: trains on 12 DEV articles, evaluates on 500 questions of the "
                               "other 36; NOT comparable to SQuAD results"),
        "paper": Profile(_squad("paper", 1700, ["dense", "l0", "group_lasso"]), workers=1,
                         about="BiDAF at paper scale: needs the SQuAD train split, --data.glove_path and a GPU"),
    },
}


def resolve_profile(profile: str, dataset: str = "ptb") -> str:
    if profile != "auto":
        return profile
    import torch

    if torch.cuda.is_available():
        return "paper"
    fallback = CPU_PROFILE[dataset]
    print(f"No GPU found: running the {fallback!r} profile ({PROFILES[dataset][fallback].about}).\n"
          f"The paper-scale runs need a GPU: make reproduce-{dataset} PROFILE=paper", file=sys.stderr)
    return fallback


def get_profile(dataset: str, profile: str) -> tuple[str, Profile]:
    if dataset not in PROFILES:
        raise UserError(f"unknown dataset {dataset!r}; available: {', '.join(PROFILES)}")
    profile = resolve_profile(profile, dataset)
    if profile not in PROFILES[dataset]:
        raise UserError(f"unknown profile {profile!r} for {dataset}; use {', '.join(PROFILES[dataset])} or auto")
    return profile, PROFILES[dataset][profile]


def profile_jobs(dataset: str, profile: str, out_root: Path, extra_args: list[str] | None = None) -> list[Job]:
    jobs = []
    for run in PROFILES[dataset][profile].runs:
        config = CONFIG_DIR / run.config
        # recorded in result.json: keep it repo-relative when run from the repo root
        rel = os.path.relpath(config)
        cmd = [sys.executable, "-m", run.module, "--config", str(config) if rel.startswith("..") else rel,
               "--run_dir", str(out_root / run.name), "--profile", profile]
        waits = []
        if run.sizes_from:
            source = out_root / run.sizes_from / RESULT_FILE
            cmd.append(f"--model.sizes_from={source}")
            waits.append(source)
        if run.init_from:
            cmd.append(f"--model.init_from={out_root / run.init_from}")
            waits.append(out_root / run.init_from / RESULT_FILE)
        # a run's own overrides come last but for the caller's: they win over the config
        jobs.append(Job(run.name, [*cmd, *run.args, *(extra_args or [])], out_root / run.name, run.cpu_minutes,
                        waits))
    return jobs


def run_profile(dataset: str, profile: str, results_root: str = "results", workers: int | None = None,
                extra_args: list[str] | None = None, analyse: bool = True) -> Path:
    """Runs, then speed, tables and plots; returns the profile's folder."""
    profile, spec = get_profile(dataset, profile)
    out_root = Path(results_root) / dataset / profile
    print(f"{dataset} / {profile}: {spec.about}", file=sys.stderr)
    run_jobs(profile_jobs(dataset, profile, out_root, extra_args), workers or spec.workers,
             label=f"{dataset} / {profile}")
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
    parser.add_argument("dataset", choices=sorted(PROFILES))
    parser.add_argument("--profile", default="auto", help="smoke, small, paper, or auto (paper on a GPU, else small)")
    parser.add_argument("--results", default="results", help="root folder of the run dirs")
    parser.add_argument("--workers", type=int, default=None,
                        help="runs side by side (default: the profile's, 2 for the CPU profiles)")
    parser.add_argument("--train-arg", action="append", default=[], metavar="ARG", dest="train_args",
                        help="one more argument for every training command, after the profile's own "
                             "(repeatable; with '=', as the value starts with --), e.g. "
                             "--train-arg=--model.step_impl=graph")
    parser.add_argument("--no-analyse", action="store_true",
                        help="only the runs: no speed measurement, tables or plots afterwards")


def run(args) -> None:
    run_profile(args.dataset, args.profile, args.results, workers=args.workers, extra_args=args.train_args,
                analyse=not args.no_analyse)
