"""Which runs of the paper profile a GPU window trains (reproduce/measure/gpu/window.sh reads them here):
`python -m reproduce.orchestrate.gpu_window medium|large --records DIR [--rerun]` prints one line per
run, its name, config, precision and the arguments after the config (its seed and overrides; last, as
they may be none), tab-separated, in the profile's order.

The window has no list of its own: the runs are the paper profile's (reproduce/profiles/ptb.yaml), so
the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightning_modules.run_dir import is_finished

from .profiles import PlannedRun, profiles_of


def window_runs(kind: str, records: Path, rerun: bool = False) -> tuple[list[PlannedRun], list[str]]:
    """(the paper profile's runs of this plan a window trains, in the profile's order; the names left
    out because their record is committed). A window trains only runs that need no other run (no
    init_from or sizes_from), so that none waits; a run recorded in `records`
    (reproduce/measured/ptb_<kind>/<run>/: an earlier window finished it) is not trained again unless
    `rerun`, so each window takes the next runs of the order."""
    runs = [run for run in profiles_of("ptb")["paper"].runs
            if run.name.startswith(kind + "_") and not run.init_from and not run.sizes_from]
    recorded = [] if rerun else [run.name for run in runs if is_finished(records / run.name)]
    return [run for run in runs if run.name not in recorded], recorded


def run_arguments(run: PlannedRun) -> list[str]:
    """What follows the config in the run's command: its seed (if the profile gives one), its overrides."""
    return [*([f"--seed_everything={run.seed}"] if run.seed is not None else []), *run.overrides]


def run_precision(run: PlannedRun) -> str:
    """The precision the run trains in: its --precision override, else fp32 (the training default)."""
    given = [a.split("=", 1)[1] for a in run.overrides if a.startswith("--precision=")]
    return given[-1] if given else "fp32"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("medium", "large"))
    parser.add_argument("--records", type=Path, required=True, help="the committed records of this plan")
    parser.add_argument("--rerun", action="store_true", help="train recorded runs again")
    args = parser.parse_args(argv)
    runs, recorded = window_runs(args.kind, args.records, args.rerun)
    for run in runs:
        print(run.name, run.config, run_precision(run), " ".join(run_arguments(run)), sep="\t")
    if recorded:
        print(f"recorded in {args.records}, not trained again: {' '.join(recorded)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
