"""The layout of reproduce/: one room per job, imports one way, and the run dir's file names spelled
in one place."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

ROOMS = ("run", "orchestrate", "measure", "report")
# which rooms a room may import: orchestrate drives the others; measure reads records; run and
# report stand alone (the package top level holds only the command dispatcher and the user-error
# wrapper, which every room may use)
ALLOWED = {"run": set(), "report": set(), "measure": {"report"}, "orchestrate": {"run", "measure", "report"}}


def _imported_rooms(path: Path, room: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("reproduce."):
                parts = node.module.split(".")
            elif node.level == 2 and node.module:  # from ..x import (inside a room)
                parts = ["reproduce", *node.module.split(".")]
            elif node.level == 2:  # from .. import x
                parts = ["reproduce", *(a.name for a in node.names)]
            else:
                continue
            if len(parts) > 1 and parts[1] in ROOMS and parts[1] != room:
                found.add(parts[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "reproduce" and len(parts) > 1 and parts[1] in ROOMS and parts[1] != room:
                    found.add(parts[1])
    return found


def test_imports_run_one_way():
    bad = []
    for room in ROOMS:
        for path in sorted((REPO / "reproduce" / room).rglob("*.py")):
            for other in _imported_rooms(path, room) - ALLOWED[room]:
                bad.append(f"{path.relative_to(REPO)} imports reproduce.{other}")
    assert not bad, bad


def test_the_package_top_level_holds_only_the_dispatcher_and_the_entry_point_shims():
    top = sorted(p.name for p in (REPO / "reproduce").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "train.py", "train_squad.py", "user_errors.py"]
