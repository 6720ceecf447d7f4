"""Tables, then plots, then the table printed: what `table`, `profile` and `sweep` write for a
folder of runs (or a W&B project). The one place that puts reproduce/report/tables.py and
reproduce/report/plots.py together; both render the records of reproduce/report/runs.py, read once here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from lightning_modules.run_dir import RESULT_FILE

from .plots import write_plots
from .runs import collect_runs, display_path
from .tables import build_table, check_dataset, save_table


def write_report(dataset: str, runs_dir: str | Path, out_dir: str | Path | None = None, *,
                 wandb_project: str | None = None, profile: str | None = None, where: str | None = None,
                 heading_level: int = 1, scales: tuple[str, ...] | None = None, part: str = "all",
                 echo: TextIO | None = None) -> dict:
    """table.md, table.csv, equal_flops.csv and the plots of the finished runs of runs_dir (or of a W&B project,
    keeping `profile`'s runs) in out_dir (default: runs_dir); the Markdown is printed to `echo`
    (default: stdout; `part`: only that part of it), what was written to stderr. Returns the table with
    `plots` added."""
    check_dataset(dataset)
    runs_dir = Path(runs_dir)
    out_dir = Path(out_dir) if out_dir is not None else runs_dir
    runs, unfinished = collect_runs(dataset, runs_dir, wandb_project, profile)
    table = save_table(build_table(dataset, runs, unfinished, where or display_path(runs_dir), wandb_project,
                                   heading_level, scales), out_dir)
    plots = write_plots(dataset, table["runs"], out_dir)
    # the files always hold the whole table; --part only chooses what is printed (a README block's text)
    printed = table["text"] if part == "all" else build_table(
        dataset, runs, unfinished, where or display_path(runs_dir), wandb_project, heading_level, scales, part)["text"]
    print(printed, file=echo or sys.stdout)
    if unfinished:
        print(f"unfinished (no {RESULT_FILE}, skipped): {', '.join(unfinished)}", file=sys.stderr)
    for path in (table["markdown"], table["csv"], table["equal_flops_csv"], *plots):
        print(f"wrote {path}", file=sys.stderr)
    return {**table, "plots": plots}
