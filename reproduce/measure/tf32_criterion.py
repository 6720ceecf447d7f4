"""Whether TF32 may train the paper-scale runs: the criterion of reproduce/measure/gpu/README.md, judged by code.

  python -m reproduce.measure.tf32_criterion \\
      --fp32 reproduce/measured/ptb_medium/medium_dense results/window/medium_l0 \\
      --tf32 results/window/medium_dense_tf32 results/window/medium_dense_tf32_seed2 \\
             results/window/medium_l0_tf32 results/window/medium_l0_tf32_seed2

Each argument is a finished run dir (or a committed record); which part of the criterion a run is for
is read from its result.json (method, seed, precision), not from its name. The criterion, fixed before
any TF32 control ran (issue 30):
  * dense: TF32 seed 1's final test perplexity is within max(0.5, |TF32 seed 1 - TF32 seed 2|)
    perplexity points of fp32 seed 1's;
  * L0: in every layer, TF32 seed 1's kept hidden size is within |TF32 seed 1 - TF32 seed 2| of fp32
    seed 1's (the same lambda).
TF32 is accepted when both parts pass, rejected when a part fails, and undecided while a run is missing.
Exit status: 0 accepted, 1 rejected or undecided, 2 a user error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightning_modules.errors import UserError
from lightning_modules.run_dir import RESULT_FILE

from ..report.runs import read_result

PPL_FLOOR = 0.5  # perplexity points: the least tolerance, whatever the two TF32 seeds' spread
PARTS = {"dense": "none", "l0": "l0"}  # part of the criterion: the method of its runs
SEEDS = (1, 2)  # TF32 seeds; the fp32 reference is seed 1


def _precision(result: dict) -> str:
    """The precision a record trained in. A record without the field predates issue 30; the medium
    dense record is one, and it ran as fp32 (its first epoch equals the probe's explicit fp32 arm)."""
    return (result.get("precision") or {}).get("precision", "fp32 (not recorded)")


def sort_runs(fp32: list[Path], tf32: list[Path]) -> dict:
    """{part: {"fp32": result, "tf32": {seed: result}}} from the run dirs; a run that does not fit the
    criterion (another method, seed or precision; a second run for one place) is a one-line error."""
    runs: dict = {part: {"fp32": None, "tf32": {}} for part in PARTS}
    for precision, dirs in (("fp32", fp32), ("tf32", tf32)):
        for run_dir in dirs:
            path = Path(run_dir) / RESULT_FILE
            if not path.is_file():
                raise UserError(f"{run_dir}: no {RESULT_FILE}; give finished runs only (an unfinished one "
                                "leaves its part undecided: leave it out)")
            result = read_result(path)
            part = next((p for p, method in PARTS.items() if result.get("method") == method), None)
            seed, recorded = result.get("seed"), _precision(result)
            if part is None:
                raise UserError(f"{run_dir}: method {result.get('method')!r}; the criterion takes dense "
                                "(method none) and L0 runs")
            trained = recorded.split()[0]  # fp32, tf32 or mixed
            if trained != precision:
                fix = f"pass it with --{trained}" if trained in ("fp32", "tf32") else "it is no control of either"
                raise UserError(f"{run_dir}: trained in {recorded} precision, given with --{precision}; {fix}")
            if seed not in (SEEDS if precision == "tf32" else SEEDS[:1]):
                raise UserError(f"{run_dir}: seed {seed}; the criterion takes {precision} "
                                f"seed{'s 1 and 2' if precision == 'tf32' else ' 1'}")
            place = runs[part][precision]
            if (place is not None and precision == "fp32") or (precision == "tf32" and seed in place):
                raise UserError(f"{run_dir}: a second {part} {precision} run of seed {seed}; give one")
            if precision == "fp32":
                runs[part]["fp32"] = result
            else:
                place[seed] = result
    lambdas = {r["lambda"] for r in [runs["l0"]["fp32"], *runs["l0"]["tf32"].values()] if r is not None}
    if len(lambdas) > 1:
        raise UserError(f"the L0 runs have different lambdas ({', '.join(map(str, sorted(lambdas)))}); "
                        "the criterion compares one lambda")
    return runs


def judge(runs: dict) -> dict:
    """The verdict and the numbers it rests on, per part."""
    parts = {}
    dense = runs["dense"]
    if dense["fp32"] is not None and set(dense["tf32"]) == set(SEEDS):
        ref = dense["fp32"]["metrics"]["test_ppl"]
        t1, t2 = (dense["tf32"][s]["metrics"]["test_ppl"] for s in SEEDS)
        gap, spread = abs(t1 - ref), abs(t1 - t2)
        tolerance = max(PPL_FLOOR, spread)
        parts["dense"] = {"fp32_test_ppl": ref, "tf32_test_ppl": [t1, t2], "gap": gap, "spread": spread,
                          "tolerance": tolerance, "passed": gap <= tolerance}
    l0 = runs["l0"]
    if l0["fp32"] is not None and set(l0["tf32"]) == set(SEEDS):
        ref = l0["fp32"]["neurons_kept"]["hidden"]
        k1, k2 = (l0["tf32"][s]["neurons_kept"]["hidden"] for s in SEEDS)
        gap = [abs(a - b) for a, b in zip(k1, ref)]
        spread = [abs(a - b) for a, b in zip(k1, k2)]
        parts["l0"] = {"lambda": l0["fp32"]["lambda"], "fp32_hidden_kept": ref, "tf32_hidden_kept": [k1, k2],
                       "gap": gap, "spread": spread, "passed": all(g <= s for g, s in zip(gap, spread))}
    missing = [part for part in PARTS if part not in parts]
    if any(not p["passed"] for p in parts.values()):
        verdict = "rejected"
    else:
        verdict = "undecided" if missing else "accepted"
    return {"verdict": verdict, "parts": parts, "missing": missing}


def report(verdict: dict) -> list[str]:
    lines = []
    d = verdict["parts"].get("dense")
    if d:
        lines.append(f"dense, final test ppl: fp32 seed 1 {d['fp32_test_ppl']:.2f}; tf32 seed 1 "
                     f"{d['tf32_test_ppl'][0]:.2f}, seed 2 {d['tf32_test_ppl'][1]:.2f}; |tf32 - fp32| {d['gap']:.2f} "
                     f"{'<=' if d['passed'] else '>'} max({PPL_FLOOR}, spread {d['spread']:.2f}) = "
                     f"{d['tolerance']:.2f}: {'pass' if d['passed'] else 'FAIL'}")
    l0 = verdict["parts"].get("l0")
    if l0:
        lines.append(f"L0 (lambda {l0['lambda']:g}), hidden kept: fp32 seed 1 {l0['fp32_hidden_kept']}; tf32 seed 1 "
                     f"{l0['tf32_hidden_kept'][0]}, seed 2 {l0['tf32_hidden_kept'][1]}; |tf32 - fp32| {l0['gap']} "
                     f"{'<=' if l0['passed'] else 'not <='} spread {l0['spread']} per layer: "
                     f"{'pass' if l0['passed'] else 'FAIL'}")
    for part in verdict["missing"]:
        lines.append(f"{part}: not judged (needs fp32 seed 1 and tf32 seeds 1 and 2, finished)")
    lines.append(f"TF32: {verdict['verdict']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reproduce.measure.tf32_criterion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp32", nargs="+", type=Path, default=[], metavar="RUN_DIR",
                        help="the fp32 references: dense and L0, seed 1")
    parser.add_argument("--tf32", nargs="+", type=Path, default=[], metavar="RUN_DIR",
                        help="the TF32 controls: dense and L0, seeds 1 and 2")
    args = parser.parse_args(argv)
    from ..user_errors import report_user_errors

    verdict: dict = {}
    status = report_user_errors(lambda: verdict.update(judge(sort_runs(args.fp32, args.tf32))),
                                "run the same command again")
    if status:
        return status
    print("\n".join(report(verdict)))
    return 0 if verdict["verdict"] == "accepted" else 1


if __name__ == "__main__":
    sys.exit(main())
