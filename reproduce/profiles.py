"""Run a whole profile of experiments: `python -m reproduce profile ptb --profile smoke|small|paper|auto`.

Each run is one training command (reproduce/train.py) with its own run dir under
results/<dataset>/<profile>/. A run dir with result.json is finished and skipped;
one without it is (re)started and resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lightning_modules.errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class PlannedRun:
    name: str
    config: str
    cpu_minutes: float  # expected on this project's 2-core reference machine, for the ETA


PROFILES: dict[str, dict[str, list[PlannedRun]]] = {
    "ptb": {
        "smoke": [PlannedRun("dense", "ptb_smoke_dense.yaml", 1.5),
                  PlannedRun("l0", "ptb_smoke_l0.yaml", 1.5)],
        # kept apart so that `smoke` stays a < 5 min check; `direct` reads smoke/l0's sizes
        "smoke-baselines": [PlannedRun("group_lasso", "ptb_smoke_group_lasso.yaml", 1.5),
                            PlannedRun("lasso", "ptb_smoke_lasso.yaml", 1.5),
                            PlannedRun("magnitude", "ptb_smoke_magnitude.yaml", 1.5),
                            PlannedRun("direct", "ptb_smoke_direct.yaml", 1.5)],
        "small": [PlannedRun("dense", "ptb_small_dense.yaml", 80),
                  PlannedRun("l0", "ptb_small_l0.yaml", 80)],
        "paper": [PlannedRun("medium_dense", "ptb_medium_dense.yaml", 39 * 12),
                  PlannedRun("medium_l0", "ptb_medium_l0.yaml", 39 * 13),
                  PlannedRun("large_dense", "ptb_large_dense.yaml", 55 * 50),
                  PlannedRun("large_l0", "ptb_large_l0.yaml", 55 * 55)],
    },
}


def resolve_profile(profile: str) -> str:
    if profile != "auto":
        return profile
    import torch

    if torch.cuda.is_available():
        return "paper"
    print("No GPU found: running the 'small' profile (Zaremba small, about 80 min per run on "
          "2 CPU cores).\nThe paper-scale runs need a GPU: make reproduce-ptb PROFILE=paper",
          file=sys.stderr)
    return "small"


def _fmt_minutes(minutes: float) -> str:
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"


def run_profile(dataset: str, profile: str, results_root: str = "results",
                extra_args: list[str] | None = None) -> list[dict]:
    if dataset not in PROFILES:
        raise UserError(f"unknown dataset {dataset!r}; available: {', '.join(PROFILES)}")
    profile = resolve_profile(profile)
    if profile not in PROFILES[dataset]:
        raise UserError(f"unknown profile {profile!r} for {dataset}; use "
                        f"{', '.join(PROFILES[dataset])} or auto")
    runs = PROFILES[dataset][profile]
    out_root = Path(results_root) / dataset / profile
    todo = [r for r in runs if not (out_root / r.name / "result.json").exists()]
    print(f"== {dataset} / {profile}: {len(runs)} runs, {len(runs) - len(todo)} finished, "
          f"{len(todo)} to run (about {_fmt_minutes(sum(r.cpu_minutes for r in todo))} "
          "on 2 CPU cores)", file=sys.stderr)
    started = time.time()
    expected_done = 0.0
    for i, run in enumerate(runs, 1):
        run_dir = out_root / run.name
        if (run_dir / "result.json").exists():
            print(f"[{i}/{len(runs)}] {run.name}: finished, skipped ({run_dir}/result.json)",
                  file=sys.stderr)
            continue
        left = sum(r.cpu_minutes for r in todo) - expected_done
        elapsed_min = (time.time() - started) / 60
        # scale the reference estimate by how fast this machine has been so far
        speed = elapsed_min / expected_done if expected_done else 1.0
        print(f"[{i}/{len(runs)}] {run.name}: training ({run.config}); profile ETA "
              f"{_fmt_minutes(left * speed)}", file=sys.stderr)
        config = CONFIG_DIR / run.config
        # recorded in result.json: keep it repo-relative when run from the repo root
        rel = os.path.relpath(config)
        cmd = [sys.executable, "-m", "reproduce.train", "--config", config if rel.startswith("..") else rel,
               "--run_dir", str(run_dir), "--profile", profile, *(extra_args or [])]
        proc = subprocess.run(cmd, env=os.environ.copy())
        if proc.returncode != 0:
            raise UserError(f"run {run.name} failed (exit {proc.returncode}); fix the cause and "
                            "re-run the same command: finished runs are skipped and this one "
                            "resumes from its last checkpoint")
        expected_done += run.cpu_minutes
    results = [json.loads((out_root / r.name / "result.json").read_text()) for r in runs]
    print_summary(runs, results, out_root)
    return results


def print_summary(runs: list[PlannedRun], results: list[dict], out_root: Path) -> None:
    """A plain per-run summary; the full reported-vs-reproduced tables come from `reproduce table`."""
    header = "| run | method | lambda | val ppl | test ppl | hidden kept | params | FLOPs/token | FLOPs speedup |"
    lines = [header, "|---" * 9 + "|"]
    for run, r in zip(runs, results):
        lines.append(
            f"| {run.name} | {r['method']} | {r['lambda']:g} | {r['metrics']['val_ppl']:.2f} | "
            f"{r['metrics']['test_ppl']:.2f} | {r['neurons_kept']['hidden']} | "
            f"{r['params']['after']:,} | {r['flops_per_token']['after']:,} | "
            f"{r['speedup_flops']:.2f}x |")
    text = "\n".join(lines) + "\n"
    from lightning_modules.atomic import atomic_write_text

    atomic_write_text(out_root / "summary.md", text)
    print(text + f"(written to {out_root / 'summary.md'})", file=sys.stderr)


def add_arguments(parser) -> None:
    parser.add_argument("dataset", choices=sorted(PROFILES))
    parser.add_argument("--profile", default="auto", help="smoke, small, paper, or auto (paper on a GPU)")
    parser.add_argument("--results", default="results", help="root folder of the run dirs")


def run(args) -> None:
    run_profile(args.dataset, args.profile, args.results)
