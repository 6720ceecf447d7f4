"""lightning_modules/run_dir.py is the only place that spells a run dir's file names: every other module
under lightning_modules/ and reproduce/ imports them, so that renaming one is a one-line change and no
reader looks for a file under an old name.

The names are read from run_dir.py itself (every upper-case string constant it defines), so a name
added there is checked from then on. What counts as spelling one, in any string constant that is not a docstring:
  - a file name (it has a '.': result.json, step.ckpt, ...) anywhere in the string, messages included
    (a message that names an old file misleads as much as a path does);
  - a pattern (metrics.part-*.csv, *.ckpt, epoch{epoch:03d}): its fixed start where that has a '.'
    (metrics.part-), else the whole pattern;
  - a bare word (export, checkpoints, onnx, wandb): the whole string, unless it is a dict key or a
    subscript (a JSON or config key: speed.json's "onnx" block, the --wandb option), or a path
    component ending a longer string's word ("a run dir's export/", "results/x/export"; not the
    ratio "export/plain").
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

import lightning_modules.run_dir as run_dir

OWNER = REPO / "lightning_modules" / "run_dir.py"
SCANNED = ("lightning_modules", "reproduce")

# (file relative to the repo, the string) -> why that string is not a run dir's file name
ALLOWED = {
    ("reproduce/measure/speed_models.py", "export"):
        "speed.json's source.kind: what was timed (an export, or --sizes), a word of its format",
}


def names() -> list[str]:
    """The upper-case string constants run_dir.py defines (not those it imports: the export folder's
    file names belong to lightning_modules/export_folder.py, whose format other exports share)."""
    tree = ast.parse(OWNER.read_text())
    return sorted(node.value.value for node in tree.body
                  if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                  and isinstance(node.value.value, str)
                  and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets))


def _needle(name: str) -> tuple[str, str]:
    """(kind, text): how a name is looked for ('token' anywhere, 'word' as the docstring says)."""
    wildcard = re.search(r"[*{]", name)
    if wildcard is None:
        return ("token", name) if "." in name else ("word", name)
    fixed = name[:wildcard.start()]
    return ("token", fixed) if "." in fixed else ("token", name)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that stand alone as statements: docstrings and their like."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)}


def _keys(tree: ast.AST) -> set[int]:
    """ids of the string constants used as dict keys or subscripts (JSON and config keys)."""
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys |= {id(k) for k in node.keys if k is not None}
        elif isinstance(node, ast.Subscript):
            keys.add(id(node.slice))
    return keys


def spelled_names(path: Path, source: str) -> list[str]:
    """'file:line: 'string' spells NAME' for every string constant of `source` that spells a run-dir name."""
    tree = ast.parse(source)
    skip, keys = _docstrings(tree), _keys(tree)
    needles = [(name, *_needle(name)) for name in names()]
    found = []
    for node in sorted(ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in skip:
            continue
        text = node.value
        for name, kind, needle in needles:
            if kind == "token":
                hit = needle in text
            else:
                component = rf"(?<![\w.-]){re.escape(needle)}/(?!\w)|/{re.escape(needle)}(?![\w.-])"
                hit = (text == needle and id(node) not in keys) or (
                    text != needle and re.search(component, text) is not None)
            if hit and (path.as_posix(), text) not in ALLOWED:
                found.append(f"{path}:{node.lineno}: {text!r} spells {name!r}")
    return found


def test_the_checker_sees_each_kind_of_spelling():
    source = ('"""result.json in a docstring is fine"""\n'
              'a = run / "result.json"\n'
              'b = f"metrics.part-{n:03d}.csv"\n'
              'c = run / "export"\n'
              'd = {"onnx": 1}["onnx"]\n'
              'e = "no config.yaml there"\n'
              'f = "a run dir\'s export/"\n'
              'g = "exporting the model, export/plain"\n')
    found = spelled_names(Path("x.py"), source)
    assert [line.split(":")[1] for line in found] == ["2", "3", "4", "6", "7"], found


def test_the_names_include_every_kind():
    kinds = {_needle(name)[0] for name in names()}
    assert kinds == {"token", "word"}
    assert {run_dir.RESULT_FILE, run_dir.CHECKPOINT_DIR, run_dir.EXPORT_DIR} <= set(names())


def test_only_run_dir_py_spells_a_run_dir_file_name():
    found = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            if path != OWNER:
                found += spelled_names(path.relative_to(REPO), path.read_text())
    assert not found, ("import these names from lightning_modules/run_dir.py instead of spelling them:\n"
                       + "\n".join(found))


def test_every_allowed_exception_is_still_needed():
    """An exception whose string went away must leave the list, or it would hide a new spelling."""
    stale = []
    for (file, text), _why in ALLOWED.items():
        tree = ast.parse((REPO / file).read_text()) if (REPO / file).is_file() else ast.Module([], [])
        if not any(isinstance(n, ast.Constant) and n.value == text for n in ast.walk(tree)):
            stale.append(f"{file}: {text!r}")
    assert not stale, stale
