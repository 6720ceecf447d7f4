"""`python -m reproduce <command>`: the user-facing commands of the suite.

  profile DATASET --profile smoke|small|paper|auto   run every experiment of a profile
  bench                                               speed benchmarks -> results/bench/bench.json
Training one config is `python -m reproduce.train --config reproduce/configs/<name>.yaml`.
"""

from __future__ import annotations

import argparse
import sys

from .user_errors import report_user_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile", help="run every experiment of a profile, skipping finished ones")
    p.add_argument("dataset", choices=["ptb"])
    p.add_argument("--profile", default="auto", help="smoke, small, paper, or auto (paper on a GPU)")
    p.add_argument("--results", default="results", help="root folder of the run dirs")
    b = sub.add_parser("bench", help="GatedLSTM vs nn.LSTM step time; exported vs dense latency")
    b.add_argument("--out", default="results/bench/bench.json")
    b.add_argument("--quick", action="store_true", help="few repeats (a check that it runs)")
    b.add_argument("--compare", nargs=2, metavar=("DENSE_EXPORT", "PRUNED_EXPORT"),
                   help="also time two exported models, e.g. results/ptb/small/{dense,l0}/export")
    args = parser.parse_args(argv)

    def run() -> None:
        if args.command == "profile":
            from .profiles import run_profile

            run_profile(args.dataset, args.profile, args.results)
        elif args.command == "bench":
            from .bench import run_bench

            run_bench(args.out, quick=args.quick, compare=args.compare)

    return report_user_errors(run, "run the same command again: finished runs are skipped")


if __name__ == "__main__":
    sys.exit(main())
