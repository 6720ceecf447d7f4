"""Tables, then plots, then the table printed: what `table`, `profile` and `sweep` write for a
folder of runs (or a W&B project). The one place that puts reproduce/report/tables.py and
reproduce/report/plots.py together; both render one report (reproduce/report/comparisons.py), built
once here from the runs of reproduce/report/runs.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from lightning_modules.atomic import atomic_write_text
from lightning_modules.run_dir import RESULT_FILE

from .comparisons import build_report
from .plots import write_plots
from .rows import check_dataset
from .runs import collect_runs, display_path
from .tables import EQUAL_FLOPS_CSV, TABLE_CSV, TABLE_MD, render_csv, render_equal_flops_csv, render_markdown


def write_report(dataset: str, runs_dir: str | Path, out_dir: str | Path | None = None, *,
                 wandb_project: str | None = None, profile: str | None = None, where: str | None = None,
                 heading_level: int = 1, scales: tuple[str, ...] | None = None, part: str = "all",
                 echo: TextIO | None = None) -> dict:
    """table.md, table.csv, equal_flops.csv and the plots of the finished runs of runs_dir (or of a W&B project,
    keeping `profile`'s runs) in out_dir (default: runs_dir); the Markdown is printed to `echo`
    (default: stdout; `part`: only that part of it), what was written to stderr. Returns the report,
    its rows, the printed text and the paths written."""
    check_dataset(dataset)
    runs_dir = Path(runs_dir)
    out_dir = Path(out_dir) if out_dir is not None else runs_dir
    runs, unfinished = collect_runs(dataset, runs_dir, wandb_project, profile)
    report = build_report(dataset, runs, unfinished, where or display_path(runs_dir), wandb_project, heading_level,
                          scales)
    # the files always hold the whole table; --part only chooses what is printed (a README block's text)
    markdown = render_markdown(report)
    paths = {"markdown": out_dir / TABLE_MD, "csv": out_dir / TABLE_CSV, "equal_flops_csv": out_dir / EQUAL_FLOPS_CSV}
    for key, text in (("markdown", markdown), ("csv", render_csv(report)),
                      ("equal_flops_csv", render_equal_flops_csv(report))):
        atomic_write_text(paths[key], text)
    plots = write_plots(dataset, report.rows, out_dir)
    printed = markdown if part == "all" else render_markdown(report, part)
    print(printed, file=echo or sys.stdout)
    if unfinished:
        print(f"unfinished (no {RESULT_FILE}, skipped): {', '.join(unfinished)}", file=sys.stderr)
    for path in (*paths.values(), *plots):
        print(f"wrote {path}", file=sys.stderr)
    return {"report": report, "rows": report.rows, "not_run": report.not_run, "runs": report.runs,
            "unfinished": unfinished, "text": printed, **paths, "plots": plots}
