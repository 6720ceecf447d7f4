"""The registry of reported numbers (reproduce/report/reported.yaml), loaded and checked.

Missing values stay None all the way to the tables: an unknown cell is empty, never 0.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lightning_modules.errors import UserError

REGISTRY = Path(__file__).parent / "reported.yaml"
NUMERIC = {"val_ppl", "test_ppl", "em", "f1", "speedup", "params", "flops_per_token", "lambda"}
KNOWN = NUMERIC | {"id", "model", "method", "hidden_sizes", "epochs", "note", "source", "also",
                   "speedup_hardware", "where"}


def load_reported(path: str | Path = REGISTRY) -> dict[str, list[dict]]:
    """{dataset: [entry, ...]}, every entry validated; raises UserError naming the entry and key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path}: cannot read the registry ({' '.join(str(e).split())})") from None
    sources = data.get("sources") or {}
    out = {}
    for dataset in ("ptb", "squad"):
        entries = data.get(dataset) or []
        seen = set()
        for entry in entries:
            where = f"{path}: {dataset} entry {entry.get('id', '?')!r}"
            unknown = set(entry) - KNOWN
            if unknown:
                raise UserError(f"{where} has unknown keys {sorted(unknown)}; known: {sorted(KNOWN)}")
            if entry.get("id") in seen or not entry.get("id"):
                raise UserError(f"{where}: every entry needs a unique id")
            seen.add(entry["id"])
            for ref in [entry.get("source"), *(entry.get("also") or [])]:
                if ref not in sources:
                    raise UserError(f"{where} cites {ref!r}, which is not under sources:")
            for key in NUMERIC & set(entry):
                value = entry[key]
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise UserError(f"{where}: {key} must be a number or null, got {value!r}")
        out[dataset] = entries
    out["sources"] = sources
    return out
