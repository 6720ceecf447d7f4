"""Reported-vs-reproduced tables: `python -m reproduce table ptb|squad` (also `make tables`).

Reads the finished runs (subfolders holding result.json) of results/<dataset>/<profile>/, or
of another folder (--runs: a sweep's results/sweeps/<name>/, or a committed records folder
such as reproduce/measured/ptb_small/), or the same result dicts from a W&B project (--wandb
ENTITY/PROJECT); --scale keeps one model scale's runs and reported rows. Writes table.md (the
rows, their Pareto fronts with the seeds' noise, the metric at equal FLOPs), table.csv,
equal_flops.csv and the plots into that folder (or --out) and prints the Markdown
(reproduce/report/tables.py, reproduce/report/fronts.py, reproduce/report/plots.py).

`python -m reproduce table --update-readme [README.md]` rewrites the README's
`<!-- table: ... -->` blocks from their records folders (reproduce/report/records.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lightning_modules.errors import UserError

from .records import update_readme
from .report import write_report
from .rows import check_dataset
from .runs import display_path, profile_folder
from .tables import PARTS


def add_arguments(parser) -> None:
    parser.add_argument("dataset", nargs="?", help="ptb or squad")
    parser.add_argument("--profile", default="auto",
                        help="smoke, smoke-baselines, small, paper, or auto (paper on a GPU, else small); "
                             "names the folder RESULTS/DATASET/PROFILE; with --wandb, keeps that profile's runs")
    parser.add_argument("--results", default="results", help="root folder of the run dirs (default: results)")
    parser.add_argument("--runs", default=None, metavar="DIR",
                        help="read the run dirs under DIR instead, e.g. results/sweeps/<name> or a records "
                             "folder such as reproduce/measured/ptb_small")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where table.md, table.csv, equal_flops.csv and the PNGs go (default: the runs folder)")
    parser.add_argument("--wandb", default=None, metavar="ENTITY/PROJECT",
                        help="read the runs' results from this W&B project instead of run dirs "
                             "(default output: RESULTS/DATASET/wandb-PROJECT)")
    parser.add_argument("--heading-level", type=int, default=1, choices=range(1, 5), metavar="N",
                        help="Markdown level of the table's title, its sections one below (default 1)")
    parser.add_argument("--scale", action="append", default=None, metavar="SCALE",
                        help="PTB: only the runs and reported rows of this model scale (small, medium or large; "
                        "repeatable), e.g. a records folder of medium runs shown without the small model's "
                        "reported rows as 'not yet run'")
    parser.add_argument("--part", default="all", choices=PARTS,
                        help="what to print: the whole table (default), only the metric at equal FLOPs, or only "
                        "the verdict lines read from its comparisons; "
                        "the files written always hold everything")
    parser.add_argument("--update-readme", nargs="?", const=" ".join(DOCUMENTS_WITH_TABLES), default=None,
                        metavar="FILE", help="rewrite the table blocks of FILE (default: README.md and "
                        "docs/RESULTS.md) from their records folders, instead of writing a table")


# the Markdown files that hold table blocks regenerated from committed records (tests/test_records.py)
DOCUMENTS_WITH_TABLES = ("README.md", "docs/RESULTS.md")


def run(args) -> None:
    if args.update_readme:
        if args.dataset or args.runs or args.wandb or args.scale or args.part != "all":
            raise UserError("--update-readme takes no dataset, --runs, --wandb, --scale or --part: each README "
                            "block names its own")
        for name in args.update_readme.split():
            blocks, changed = update_readme(Path(name))
            print(f"{name}: {blocks} table block{'s' * (blocks != 1)}, {len(changed)} changed"
                  + "".join(f"\n  table: {c}" for c in changed), file=sys.stderr)
        return
    if not args.dataset:
        raise UserError("give a dataset (ptb or squad), or --update-readme")
    check_dataset(args.dataset)
    profile = None
    if args.wandb:
        profile = None if args.profile == "auto" else args.profile
        # nothing is read from disk; this folder only names where the tables go (unless --out)
        runs_dir = Path(args.results) / args.dataset / f"wandb-{args.wandb.split('/')[-1]}"
    elif args.runs:
        runs_dir = Path(args.runs)
    else:
        runs_dir = Path(args.results) / args.dataset / profile_folder(args.profile, args.dataset)
    write_report(args.dataset, runs_dir, args.out, wandb_project=args.wandb, profile=profile,
                 where=display_path(runs_dir), heading_level=args.heading_level, scales=args.scale,
                 part=args.part)
