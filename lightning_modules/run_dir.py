"""The one owner of a run directory's layout: its file names, and what makes a run finished.

Imports nothing heavy (no torch), so that tables and plots can read run dirs cheaply. No other
module spells these names (tests/test_run_dir_names.py): they import them from here.

    <run_dir>/
      config.yaml          the full resolved config of the run (LightningCLI)
      metrics.csv          per-step / per-epoch metrics (every invocation of a resumed run)
      metrics.part-NNN.csv an earlier invocation's metrics, set aside on resume, merged back at the end
      hparams.yaml         the model's hyperparameters (Lightning's CSV logger writes and names it)
      gate_history.jsonl   gated runs: P(z != 0) of every gate over training
      checkpoints/         step.ckpt, last.ckpt, epochNNN.ckpt; batched_steps/stepNNNNNNNN.ckpt (never committed)
      export/              the exported (pruned) model: config.json + model.safetensors, whose names
                           lightning_modules/export_folder.py owns (the form every export shares)
      predictions.json     SQuAD runs: {question id: answer text} of the evaluation set
      wandb/               W&B's local files (offline runs sync from here)
      speed.json           measured inference speed of export/ (python -m reproduce speed)
      onnx/                the export as ONNX, kept by python -m reproduce speed beside speed.json
      result.json          written last and atomically: the run is finished when it exists
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .export_folder import EXPORT_CONFIG_FILE

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
METRICS_PART_GLOB = "metrics.part-*.csv"
GATE_HISTORY_FILE = "gate_history.jsonl"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_GLOB = "*.ckpt"  # every checkpoint of CHECKPOINT_DIR, whoever wrote it
STEP_CHECKPOINT = "step.ckpt"  # lightning_modules/checkpointing.py's, every N steps and on a signal
LAST_CHECKPOINT = "last.ckpt"  # Lightning's ModelCheckpoint(save_last=True) names it so, at epoch ends
EPOCH_CHECKPOINT = "epoch{epoch:03d}"  # ModelCheckpoint's filename template (it adds .ckpt)
# the batched trainer's (reproduce/run/train_batched.py): one per member and step, in a folder of
# their own (a run resumed alone never takes one for a Lightning checkpoint), and the job's file
# naming the step every member's checkpoint was written at
BATCHED_CHECKPOINT_DIR = "batched_steps"
BATCHED_CHECKPOINT = "step{step:08d}.ckpt"
BATCHED_CHECKPOINT_GLOB = "step*.ckpt"
BATCHED_JOB_FILE = "batched_job.json"
EXPORT_DIR = "export"
PREDICTIONS_FILE = "predictions.json"
WANDB_DIR = "wandb"
SPEED_FILE = "speed.json"
ONNX_DIR = "onnx"
RESULT_FILE = "result.json"

# what a committed record of a reported run holds (never checkpoints or weights)
RECORD_FILES = (CONFIG_FILE, RESULT_FILE, METRICS_FILE, SPEED_FILE, GATE_HISTORY_FILE)


def metrics_part_file(n: int) -> str:
    """The name the n-th set-aside metrics.csv gets (METRICS_PART_GLOB finds them, oldest first)."""
    return METRICS_PART_GLOB.replace("*", f"{n:03d}")


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / RESULT_FILE).is_file()


def finished_export(path: str | Path, option: str) -> Path:
    """The export folder of a finished run, given its run dir or the export folder itself.

    `option` names the setting in the one-line errors (a missing or unfinished run)."""
    path = Path(path)
    if path.name == EXPORT_DIR and (path / EXPORT_CONFIG_FILE).is_file():
        path = path.parent
    if not path.is_dir():
        raise UserError(f"{option}: {path} not found; give the run dir of a finished run")
    if not is_finished(path):
        raise UserError(f"{option}: {path} is not a finished run (no {RESULT_FILE}); "
                        "finish it first (run its command again to resume it)")
    export = path / EXPORT_DIR
    if not (export / EXPORT_CONFIG_FILE).is_file():
        raise UserError(f"{option}: {path} has no exported model in {EXPORT_DIR}/")
    return export
