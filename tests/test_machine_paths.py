"""No committed file names a folder of the machine it was written on: the records, the measured logs,
the code and the documents read the same on every machine (`python -m reproduce record` writes paths
relative: reproduce/report/records.py, tests/test_records.py)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO

from lightning_modules.run_dir import RECORD_FILES
from reproduce.report.records import ABSOLUTE_PATH

# a checkout or a home folder: where this machine (or the GPU machine) kept the repo and its runs
MACHINE_FOLDER = re.compile(r"^/(?:work|root|home|Users)(?:/|$)")
# a temporary folder: in a record it is where a run dir was (a test's, a scratch run); scripts and
# documents may use /tmp as a scratch folder, which every machine has
TMP_FOLDER = re.compile(r"^/tmp(?:/|$)")
SKIPPED_DIRS = {"__pycache__", ".pytest_cache"}


def committed_text_files() -> list[Path]:
    files = [REPO / "README.md", *sorted((REPO / "docs").rglob("*")), *sorted((REPO / "reproduce").rglob("*"))]
    return [f for f in files if f.is_file() and not SKIPPED_DIRS & set(f.relative_to(REPO).parts)
            and f.suffix not in (".png", ".pyc")]


def machine_paths(text: str, record: bool) -> list[str]:
    found = [m.group(0) for m in ABSOLUTE_PATH.finditer(text) if MACHINE_FOLDER.match(m.group(0))]
    if record:
        found += [m.group(0) for m in ABSOLUTE_PATH.finditer(text) if TMP_FOLDER.match(m.group(0))]
    return found


def test_the_check_finds_machine_paths():
    assert machine_paths('"run_dir": "/work/main/results/ptb/small/l0"', record=False) == [
        "/work/main/results/ptb/small/l0"]
    assert machine_paths("--run_dir /home/alice/x --out=/root/out", record=False) == ["/home/alice/x", "/root/out"]
    assert machine_paths("pip install --target /tmp/site", record=False) == []
    assert machine_paths('"run_dir": "/tmp/pytest-of-x/run"', record=True) == ["/tmp/pytest-of-x/run"]
    assert machine_paths("results/ptb/small/l0, https://example.org/work/x, /usr/lib/x", record=True) == []


def test_no_committed_file_holds_a_path_of_the_machine_it_was_written_on():
    found = []
    for path in committed_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # a binary file
        for p in machine_paths(text, record=path.name in RECORD_FILES):
            found.append(f"{path.relative_to(REPO)}: {p}")
    assert not found, ("absolute paths of a machine in committed files (records: python -m reproduce record "
                       "writes them relative; reproduce.report.records.relative_paths rewrites a file):\n"
                       + "\n".join(found))
