"""`python -m reproduce <command>`: the user-facing commands of the suite.

  profile DATASET --profile P   every run of a profile, then speed, tables and plots
  table DATASET                 reported-vs-reproduced tables (Markdown + CSV) and plots
  record RUN_DIR... --to DIR    copy finished runs' record files (no weights) to commit them
  speed                         measured inference speedup of exports, or of plain sizes
  sweep sweeps/FILE.yaml        a W&B sweep file run locally (offline), resumable
  bench                         training speed: gates overhead; --steps: eager vs fused vs graph steps
  fetch squad                   SQuAD and GloVe, pinned, into the Hugging Face cache (a cluster's login node)
Training one config is `python -m reproduce.train --config reproduce/configs/<name>.yaml`.
Each command's module defines `add_arguments(parser)` and `run(args)`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .user_errors import report_user_errors

# command -> (module in this package, one-line help)
COMMANDS = {
    "profile": ("orchestrate.profiles", "a profile's experiments (finished ones skipped), then speed, tables, plots"),
    "table": ("report.table_command", "reported-vs-reproduced tables and plots: run dirs, records or a W&B project"),
    "record": ("report.records", "copy finished runs' result, config, metrics, speed files (no weights) to commit"),
    "speed": ("measure.speed", "inference latency of pruned exports or plain sizes: torch eager and ONNX Runtime"),
    "sweep": ("orchestrate.sweep", "run a W&B sweep YAML locally, offline, skipping finished runs"),
    "bench": ("measure.bench", "training speed: the gates' overhead, or (--steps) eager vs fused vs graph steps"),
    "verify": ("orchestrate.verify", "re-run a record's training command, compare each epoch's val ppl with it"),
    "fetch": ("run.fetch", "SQuAD v1.1 and GloVe at pinned revisions into the Hugging Face cache, checked"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"reproduce.{module}")
        mod.add_arguments(sub.add_parser(name, help=help_text, description=mod.__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    mod = importlib.import_module(f"reproduce.{COMMANDS[args.command][0]}")
    return report_user_errors(lambda: mod.run(args), "run the same command again: finished work is skipped")


if __name__ == "__main__":
    sys.exit(main())
