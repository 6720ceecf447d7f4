"""Committed records of reported runs, and the README tables regenerated from them.

  python -m reproduce record RUN_DIR... --to FOLDER     copy finished runs' record files
  python -m reproduce record ptb --profile small        every finished run of results/ptb/small
                                                        into reproduce/measured/ptb_small/<run>/
  python -m reproduce table ptb --runs FOLDER           the table of a records folder
  python -m reproduce table --update-readme             rewrite the README's table blocks

A record holds only lightning_modules.run_dir.RECORD_FILES (config, result, metrics, speed, gate
history; never checkpoints or weights), so results/ can stay untracked while every number the
README reports stays regenerable. It reads the same on any machine: the absolute paths a run wrote
(its command's --run_dir, config_path, sizes_from, speed.json's run_dir) are recorded relative, from
their results/ folder on, else relative to the repo or to the machine's work or home folder
(`relative_paths`); nothing else in a file changes. A README block

    <!-- table: ptb --runs reproduce/measured/ptb_small -->
    ...the Markdown that `python -m reproduce table ptb --runs reproduce/measured/ptb_small` prints...
    <!-- /table -->

names its records folder relative to the README; tests/test_records.py renders each block again
and fails on any difference.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lightning_modules.atomic import atomic_replace_dir, atomic_write_text
from lightning_modules.errors import UserError
from lightning_modules.run_dir import RECORD_FILES, RESULT_FILE, is_finished

from .comparisons import build_report
from .rows import check_dataset, check_scales
from .runs import collect_runs, display_path, read_result, run_dirs, source_run_name
from .tables import PARTS, render_markdown

REPO_ROOT = Path(__file__).resolve().parents[2]
MEASURED_DIR = REPO_ROOT / "reproduce" / "measured"
BLOCK = re.compile(r"<!-- table: (?P<args>[^\n]*?) -->\n(?P<body>.*?)<!-- /table -->", re.DOTALL)

# An absolute path in a record's text: a '/' that starts a word (not one inside a relative path, a
# number pair or a URL), then path characters. Only those under MACHINE_ROOT, the repo or a
# results/ folder are rewritten, so a match that is no path (or a system path: /usr/..., /dev/...)
# stays as it is.
ABSOLUTE_PATH = re.compile(r"(?<![\w./:~-])/[\w.@+%~-]+(?:/[\w.@+%~-]*)*")
# where machines keep checkouts, run dirs and scratch folders: what follows is the part another
# machine can have too
MACHINE_ROOT = re.compile(r"/(?:work|root|tmp|home/[^/]+|Users/[^/]+)/")


# ---- recording -----------------------------------------------------------------------------------

def relative_path(path: str, repo_root: Path = REPO_ROOT) -> str:
    """One absolute path as a record holds it: from its (first) results/ folder on (the run's own
    relative path, as the command that trained it from the repo root names it), else relative to
    the repo, else to the machine root it lies under; any other path unchanged."""
    parts = path.split("/")
    if "results" in parts:
        return "/".join(parts[parts.index("results"):])
    root = repo_root.as_posix().rstrip("/")
    if path == root or path.startswith(root + "/"):
        return path[len(root) + 1:] or "."
    machine = MACHINE_ROOT.match(path + "/")  # "/" added: the machine root itself matches too
    if machine:
        return path[machine.end():] or "."
    return path


def relative_paths(text: str, repo_root: Path = REPO_ROOT) -> str:
    """Every absolute path of `text` made relative (`relative_path`); the rest of the text unchanged."""
    return ABSOLUTE_PATH.sub(lambda m: relative_path(m.group(0), repo_root), text)


def copy_record_file(src: Path, dest: Path) -> None:
    """A record file with its paths made relative, every other byte as the run wrote it (newlines
    included: the file is read and written without translating them)."""
    with open(src, encoding="utf-8", newline="") as f:
        text = f.read()
    with open(dest, "w", encoding="utf-8", newline="") as f:
        f.write(relative_paths(text))


def check_finished(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run dir")
    if not is_finished(run_dir):
        if any(is_finished(d) for d in run_dirs(run_dir)):
            hint = "; it is a folder of runs: record DATASET --profile PROFILE"
        else:
            hint = "; finish it first (run its command again to resume it) or leave it out"
        raise UserError(f"{run_dir}: not a finished run (no {RESULT_FILE}){hint}")


def record_run(run_dir: Path, dest: Path) -> Path:
    """Copy the record files of one finished run into dest/<run name>/, replacing an older record
    whole (a file the run no longer has must not linger). Returns the record's folder."""
    target = dest / run_dir.name
    tmp = dest / f".{run_dir.name}.record-tmp"  # hidden: readers of the folder skip it
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted record
    tmp.mkdir(parents=True)
    try:
        for name in RECORD_FILES:
            if (run_dir / name).is_file():
                copy_record_file(run_dir / name, tmp / name)
        atomic_replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def record_runs(sources: list[Path], dest: Path) -> list[Path]:
    """Record every run of `sources`; all are checked before anything is copied."""
    names: dict[str, Path] = {}
    for src in sources:
        check_finished(src)
        if src.name in names:
            raise UserError(f"{src} and {names[src.name]} would both be recorded as {dest / src.name}; "
                            "record them into different folders")
        if (dest / src.name).resolve() == src.resolve():
            raise UserError(f"{src} is already the record in {dest}; record the run dir it came from")
        names[src.name] = src
    written = [record_run(src, dest) for src in sources]
    refs = {source_run_name(ref) for src in sources for ref in _sources_of(read_result(src / RESULT_FILE))}
    missing = sorted(name for name in refs if not (dest / name).is_dir())
    if missing:  # a direct design's table section and target come from the run it took its sizes from
        print(f"note: {dest} has no record of {', '.join(missing)}, which recorded runs took sizes or weights "
              "from; record those too", file=sys.stderr)
    return written


def _sources_of(result: dict) -> list[str]:
    hp = result.get("model_hparams") or {}
    return [hp[key] for key in ("sizes_from", "init_from") if isinstance(hp.get(key), str) and hp[key]]


def profile_sources(results: Path, dataset: str, profile: str) -> list[Path]:
    """The finished runs of results/<dataset>/<profile>; the unfinished ones are named and left out."""
    check_dataset(dataset)
    folder = results / dataset / profile
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder of runs; run the profile first "
                        f"(python -m reproduce profile {dataset} --profile {profile})")
    subs = run_dirs(folder)
    finished = [d for d in subs if is_finished(d)]
    unfinished = [d.name for d in subs if not is_finished(d)]
    if not finished:
        raise UserError(f"{folder}: no finished run (a {RESULT_FILE}) to record")
    if unfinished:
        print(f"not recorded (unfinished, no {RESULT_FILE}): {', '.join(unfinished)}", file=sys.stderr)
    return finished


def default_destination(dataset: str, profile: str) -> Path:
    return MEASURED_DIR / f"{dataset}_{profile}"


# ---- README blocks ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    args: str  # what follows `table:`: the arguments of `python -m reproduce table`
    body: str  # the Markdown between the markers, as the README holds it
    start: int
    end: int


def readme_blocks(text: str) -> list[Block]:
    """The `<!-- table: ... -->` ... `<!-- /table -->` blocks of a README, in order."""
    return [Block(m["args"].strip(), m["body"], m.start(), m.end()) for m in BLOCK.finditer(text)]


class _BlockArguments(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit the process; a bad block is the README's error
        raise ValueError(message)


def _block_parser() -> argparse.ArgumentParser:
    parser = _BlockArguments(prog="table:", add_help=False)
    parser.add_argument("dataset")
    parser.add_argument("--runs", required=True)
    parser.add_argument("--heading-level", type=int, default=1, choices=range(1, 5))
    parser.add_argument("--scale", action="append", default=None)
    parser.add_argument("--part", default="all", choices=PARTS)
    return parser


class BlockArgs(NamedTuple):
    dataset: str
    runs: str  # the records folder, relative to the README's folder
    heading_level: int
    scales: tuple[str, ...] | None  # None: every scale
    part: str  # tables.PARTS


def parse_block_args(args: str) -> BlockArgs:
    """What a block asks for. Only a committed folder of records (--runs) can be regenerated by
    anyone, so nothing else (--profile, --wandb) is accepted."""
    try:
        ns, extra = _block_parser().parse_known_args(shlex.split(args))
    except ValueError as e:
        raise UserError(f"README block `table: {args}`: {e}; write it as `table: DATASET --runs FOLDER`") from None
    if extra:
        raise UserError(f"README block `table: {args}`: {' '.join(extra)} not allowed; a README table is "
                        "regenerated from a committed records folder: `table: DATASET --runs FOLDER`")
    if Path(ns.runs).is_absolute():
        raise UserError(f"README block `table: {args}`: --runs must be relative to the README's folder")
    check_dataset(ns.dataset)
    try:
        scales = check_scales(ns.dataset, ns.scale)
    except UserError as e:
        raise UserError(f"README block `table: {args}`: {e}") from None
    return BlockArgs(ns.dataset, Path(ns.runs).as_posix(), ns.heading_level, scales, ns.part)


def render_block(args: str, root: Path) -> str:
    """The Markdown that `python -m reproduce table ARGS` prints when run from `root` (the
    README's folder): the same reader and renderer, the folder named as the block names it."""
    block = parse_block_args(args)
    found, unfinished = collect_runs(block.dataset, Path(root) / block.runs)
    report = build_report(block.dataset, found, unfinished, block.runs, heading_level=block.heading_level,
                          scales=block.scales)
    return render_markdown(report, block.part)


def block_text(args: str, markdown: str) -> str:
    # blank lines around the table: Markdown ends an HTML comment's block at its line
    return f"<!-- table: {args} -->\n\n{markdown.strip()}\n\n<!-- /table -->"


def update_readme(path: Path) -> tuple[int, list[str]]:
    """Rewrite every table block of a README from its records: (blocks, args of those changed)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    text = path.read_text()
    blocks = readme_blocks(text)
    if not blocks:
        raise UserError(f"{path}: no `<!-- table: DATASET --runs FOLDER -->` ... `<!-- /table -->` block to update")
    out, pos, changed = [], 0, []
    for block in blocks:
        rendered = render_block(block.args, path.parent)
        if block.body.strip() != rendered.strip():
            changed.append(block.args)
        out += [text[pos:block.start], block_text(block.args, rendered)]
        pos = block.end
    new = "".join(out) + text[pos:]
    if new != text:
        atomic_write_text(path, new)
    return len(blocks), changed


# ---- the command ----------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("sources", nargs="+", metavar="RUN_DIR",
                        help="finished run dirs; with --profile, one dataset (ptb or squad) instead")
    parser.add_argument("--to", default=None, metavar="FOLDER",
                        help="records folder (default with --profile: reproduce/measured/DATASET_PROFILE)")
    parser.add_argument("--profile", default=None,
                        help="record every finished run of RESULTS/DATASET/PROFILE (the unfinished are left out)")
    parser.add_argument("--results", default="results", help="root folder of the run dirs (default: results)")


def run(args) -> None:
    if args.profile:
        if len(args.sources) != 1:
            raise UserError(f"with --profile give one dataset (ptb or squad), got {' '.join(args.sources)}")
        sources = profile_sources(Path(args.results), args.sources[0], args.profile)
        dest = Path(args.to) if args.to else default_destination(args.sources[0], args.profile)
    else:
        if not args.to:
            raise UserError("give --to FOLDER (e.g. reproduce/measured/ptb_small), or DATASET --profile PROFILE")
        sources, dest = [Path(s) for s in args.sources], Path(args.to)
    written = record_runs(sources, dest)
    print(f"recorded {len(written)} run{'s' * (len(written) != 1)} into {display_path(dest)}: "
          f"{', '.join(p.name for p in written)}", file=sys.stderr)
    print(f"its table: python -m reproduce table {read_result(sources[0] / RESULT_FILE).get('dataset', 'ptb')} "
          f"--runs {display_path(dest)}", file=sys.stderr)
