"""Re-check a committed record: `python -m reproduce verify reproduce/measured/ptb_small/l0 --epochs 2`.

Re-runs the record's own training command (result.json's `command`) in a temporary run dir, for its
first K epochs (--epochs K) or all of them, and compares each epoch's validation perplexity with the
record's metrics.csv: it prints "identical" or the largest difference. Then it names what differs
between the record and this re-run: the commit, the CPU model, the torch version and the threads.

Why the comparison says how far apart rather than failing: CPU training at one thread is
deterministic on one CPU model (docs/RESULTS.md: a re-run of a record on the CPU model that trained
it, identical to the last digit), but not across CPU models, whose kernels round differently; a
row's seed spread in the tables mixes both.

The first K epochs are cut by the trainer's step limit, not by max_epochs: a learning-rate schedule
that reads max_epochs (lr_schedule thirds) then runs as it did in the record.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lightning_modules.errors import UserError
from lightning_modules.run_dir import METRICS_FILE, RESULT_FILE, SPEED_FILE

from ..report.runs import read_result, read_speed

REPO_ROOT = Path(__file__).resolve().parents[2]
VAL_METRIC = "val_ppl"
# options of the recorded command that name where its outputs went or how it logged: replaced here
REPLACED_OPTIONS = ("--run_dir", "--wandb", "--trainer.max_steps")
# hardware_summary's CPU line: "<cpu>, <n> CPU cores, torch <version>, <threads> threads"; results
# written before it named the CPU model: "<machine>, <n> CPU cores, torch threads <threads>"
NEW_SUMMARY = re.compile(r"^(?P<cpu>.+), \d+ CPU cores, torch (?P<torch>\S+), (?P<threads>\d+) threads$")
OLD_SUMMARY = re.compile(r"^(?P<machine>[^,]+), \d+ CPU cores, torch threads (?P<threads>\d+)$")


@dataclass(frozen=True)
class Setting:
    """What a run's numbers depend on beyond its command; None where the result does not say."""
    commit: str | None
    cpu: str | None
    torch: str | None
    threads: int | None


def setting_of(result: dict, speed_cpu: str | None = None) -> Setting:
    """The setting a result.json records. An old result names no CPU model: the one its speed.json
    was measured on (`speed_cpu`) is given with that said, since the speed ran where it trained."""
    hardware = str(result.get("hardware") or "")
    new, old = NEW_SUMMARY.match(hardware), OLD_SUMMARY.match(hardware)
    if new:
        return Setting(result.get("git_commit"), new["cpu"], new["torch"], int(new["threads"]))
    cpu = f"{speed_cpu} (from its {SPEED_FILE}; {RESULT_FILE} names none)" if speed_cpu else None
    return Setting(result.get("git_commit"), hardware if hardware and not old else cpu, None,
                   int(old["threads"]) if old else None)


def val_by_epoch(path: Path) -> dict[int, float]:
    """Each epoch's validation metric in a metrics.csv: the first value logged for that epoch (the
    end-of-training validation repeats the last one)."""
    found: dict[int, float] = {}
    with open(path, newline="") as f:
        for line in csv.DictReader(f):
            epoch, value = line.get("epoch"), line.get(VAL_METRIC)
            if epoch and value:
                found.setdefault(int(float(epoch)), float(value))
    return found


def last_step_of_epoch(path: Path, epoch: int) -> int:
    """The trainer's step count at the end of `epoch` (0-based): the step its validation row was
    logged at, plus one (Lightning logs it at the last batch's step)."""
    with open(path, newline="") as f:
        for line in csv.DictReader(f):
            if line.get("epoch") and int(float(line["epoch"])) == epoch and line.get(VAL_METRIC):
                return int(float(line["step"])) + 1
    raise UserError(f"{path}: no {VAL_METRIC} logged for epoch {epoch + 1}; give a smaller --epochs")


def rerun_command(command: str, run_dir: Path, max_steps: int | None) -> list[str]:
    """The recorded command as argv for this Python, its run dir and W&B replaced, cut at max_steps."""
    words = shlex.split(command)
    if words[:2] != ["python", "-m"] or len(words) < 3 or not words[2].startswith("reproduce."):
        raise UserError(f"the recorded command {command!r} is not a `python -m reproduce.<entry point>` "
                        "training command; verify re-runs only those")
    args, skip = [], False
    for word in words[3:]:
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in REPLACED_OPTIONS:
            skip = "=" not in word
            continue
        args.append(word)
    args += ["--run_dir", str(run_dir), "--wandb", "disabled", "--trainer.enable_progress_bar=false"]
    if max_steps is not None:
        args.append(f"--trainer.max_steps={max_steps}")
    return [sys.executable, "-m", words[2], *args]


def check_sources(result: dict, record: Path) -> list[str]:
    """Options that point the re-run at the record's siblings: a direct design's sizes come from its
    source run's result.json, which the records folder holds. Weights (init_from) are in no record."""
    hp = result.get("model_hparams") or {}
    extra = []
    init_from = hp.get("init_from")
    if init_from and not (REPO_ROOT / init_from).exists():
        raise UserError(f"{record}: trained from the weights of {init_from} (model.init_from), which no record "
                        "holds; train that run first with its record's command, or verify a run trained from "
                        "scratch")
    sizes_from = hp.get("sizes_from")
    if sizes_from and not (REPO_ROOT / sizes_from).exists():
        sibling = record.parent / Path(sizes_from).parent.name / RESULT_FILE
        if not sibling.is_file():
            raise UserError(f"{record}: takes its sizes from {sizes_from} (model.sizes_from), and neither it nor "
                            f"{sibling} exists; record that run next to it")
        extra.append(f"--model.sizes_from={sibling.resolve()}")
    return extra


def differences(then: Setting, now: Setting) -> list[str]:
    """What differs between the record and the re-run, one line each; the same named too."""
    lines = []
    for name in ("commit", "cpu", "torch", "threads"):
        a, b = getattr(then, name), getattr(now, name)
        label = {"cpu": "CPU model", "torch": "torch version"}.get(name, name)
        if a is None:
            lines.append(f"{label}: not recorded, now {b}")
        elif str(a).split(" (from")[0] == str(b):
            inferred = f"; the record's {str(a)[len(str(b)) + 2:-1]}" if str(a) != str(b) else ""
            lines.append(f"{label}: same ({b}{inferred})")
        else:
            lines.append(f"{label}: {a} then, {b} now")
    return lines


def compare_epochs(then: dict[int, float], now: dict[int, float], epochs: list[int]) -> tuple[list[str], str]:
    """One line per epoch and the verdict: identical, or the largest difference."""
    lines, worst = [], None
    for e in epochs:
        a, b = then[e], now.get(e)
        if b is None:
            lines.append(f"epoch {e + 1}: record {a:.4f}, re-run has none")
            worst = (float("inf"), e) if worst is None or worst[0] != float("inf") else worst
            continue
        diff = b - a
        lines.append(f"epoch {e + 1}: record {a:.4f}, re-run {b:.4f}" + ("" if diff == 0 else
                                                                          f", {diff:+.4f} ({diff / a:+.3%})"))
        if diff and (worst is None or abs(diff) > abs(worst[0])):
            worst = (diff, e)
    if worst is None:
        return lines, f"identical: {VAL_METRIC} of all {len(epochs)} epochs compared, to the last digit"
    if worst[0] == float("inf"):
        return lines, f"the re-run logged no {VAL_METRIC} for epoch {worst[1] + 1}"
    return lines, (f"largest difference: {worst[0]:+.4f} {VAL_METRIC} at epoch {worst[1] + 1} "
                   f"({worst[0] / then[worst[1]]:+.3%})")


def verify(record: Path, epochs: int | None = None, keep: Path | None = None, echo=sys.stdout) -> bool:
    """Re-run a record for its first `epochs` epochs (None: all) and print the comparison; True when
    every compared epoch is identical."""
    record = Path(record)
    result_path, metrics_path = record / RESULT_FILE, record / METRICS_FILE
    for path in (result_path, metrics_path):
        if not path.is_file():
            raise UserError(f"{path}: missing; give a record folder (e.g. reproduce/measured/ptb_small/l0)")
    result = read_result(result_path)
    # the validation after training is logged at epoch `epochs` (one past the last): not an epoch of its own
    then_vals = {e: v for e, v in val_by_epoch(metrics_path).items()
                 if not isinstance(result.get("epochs"), int) or e < result["epochs"]}
    if not then_vals:
        raise UserError(f"{metrics_path}: no {VAL_METRIC} per epoch; verify compares PTB language-model records")
    recorded = sorted(then_vals)
    if epochs is not None and not 1 <= epochs <= len(recorded):
        raise UserError(f"--epochs {epochs}: the record has {len(recorded)} epochs; give 1 to {len(recorded)}")
    compared = recorded[:epochs] if epochs is not None else recorded
    max_steps = last_step_of_epoch(metrics_path, compared[-1]) if epochs is not None else None
    speed = read_speed(record) or {}
    then = setting_of(result, speed.get("cpu"))
    if keep and Path(keep).exists():
        raise UserError(f"--keep {keep}: already exists; give a new folder (the re-run must start from scratch)")
    run_dir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="verify-")) / record.name
    argv = rerun_command(str(result.get("command") or ""), run_dir, max_steps) + check_sources(result, record)
    env = dict(os.environ)
    if then.threads:  # torch reads it at start: the re-run computes with the record's thread count
        env["OMP_NUM_THREADS"] = str(then.threads)
    print(f"re-running {record} ({'all ' + str(len(compared)) if epochs is None else f'first {epochs} of'}"
          f" {len(recorded)} epochs) in {run_dir}:\n  python {shlex.join(argv[1:])}", file=echo, flush=True)
    try:
        proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            raise UserError(f"the re-run of {record} failed ({tail}); run the command above to see why")
        now_vals = val_by_epoch(run_dir / METRICS_FILE)
        now_result = read_result(run_dir / RESULT_FILE)
    finally:
        if not keep:
            shutil.rmtree(run_dir.parent, ignore_errors=True)
    now = setting_of(now_result)
    lines, verdict = compare_epochs(then_vals, now_vals, compared)
    print("\n".join(lines), file=echo)
    print(verdict, file=echo)
    print("then and now:\n" + "\n".join(f"  {line}" for line in differences(then, now)), file=echo)
    return verdict.startswith("identical")


def add_arguments(parser) -> None:
    parser.add_argument("record", help=f"a record folder ({RESULT_FILE}, {METRICS_FILE}), e.g. "
                        "reproduce/measured/ptb_small/l0")
    parser.add_argument("--epochs", type=int, default=None, metavar="K",
                        help="re-run and compare the first K epochs only (default: all of them)")
    parser.add_argument("--keep", default=None, metavar="DIR",
                        help="train in DIR and keep it (default: a temporary folder, deleted at the end)")


def run(args) -> None:
    verify(Path(args.record), args.epochs, Path(args.keep) if args.keep else None)
