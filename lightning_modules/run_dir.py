"""The one owner of a run directory's layout: its file names, and what makes a run finished.

Imports nothing heavy (no torch), so that tables and plots can read run dirs cheaply.

    <run_dir>/
      config.yaml          the full resolved config of the run (LightningCLI)
      metrics.csv          per-step / per-epoch metrics (every invocation of a resumed run)
      gate_history.jsonl   gated runs: P(z != 0) of every gate over training
      checkpoints/         step.ckpt, last.ckpt, epochNNN.ckpt (never committed)
      export/              the exported (pruned) model: config.json + model.safetensors
      speed.json           measured inference speed of export/ (python -m reproduce speed)
      result.json          written last and atomically: the run is finished when it exists
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
GATE_HISTORY_FILE = "gate_history.jsonl"
CHECKPOINT_DIR = "checkpoints"
EXPORT_DIR = "export"
SPEED_FILE = "speed.json"
RESULT_FILE = "result.json"

# what a committed record of a reported run holds (never checkpoints or weights)
RECORD_FILES = (CONFIG_FILE, RESULT_FILE, METRICS_FILE, SPEED_FILE, GATE_HISTORY_FILE)


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / RESULT_FILE).is_file()


def finished_export(path: str | Path, option: str) -> Path:
    """The export folder of a finished run, given its run dir or the export folder itself.

    `option` names the setting in the one-line errors (a missing or unfinished run)."""
    path = Path(path)
    if path.name == EXPORT_DIR and (path / "config.json").is_file():
        path = path.parent
    if not path.is_dir():
        raise UserError(f"{option}: {path} not found; give the run dir of a finished run")
    if not is_finished(path):
        raise UserError(f"{option}: {path} is not a finished run (no {RESULT_FILE}); "
                        "finish it first (run its command again to resume it)")
    export = path / EXPORT_DIR
    if not (export / "config.json").is_file():
        raise UserError(f"{option}: {path} has no exported model in {EXPORT_DIR}/")
    return export
