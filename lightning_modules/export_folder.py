"""The on-disk form every export shares: a folder with config.json and model.safetensors.

Written into a temp folder and renamed into place, so a reader never sees half an export;
read back with one clear error for each way the folder can be broken.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_replace_dir, atomic_write_json
from .errors import UserError

if TYPE_CHECKING:
    import torch

# the folder's two files; run_dir.py and the speed command read them by these names, so this module
# imports torch and safetensors only where it writes or reads weights (run_dir.py stays torch-free)
EXPORT_CONFIG_FILE = "config.json"
EXPORT_WEIGHTS_FILE = "model.safetensors"


def write_export_folder(out_dir: str | Path, tensors: dict[str, torch.Tensor], config: dict, fmt: str) -> None:
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    save_file(tensors, str(tmp / EXPORT_WEIGHTS_FILE), metadata={"format": fmt})
    atomic_write_json(tmp / EXPORT_CONFIG_FILE, config)
    atomic_replace_dir(tmp, out_dir)


def read_export_folder(path: str | Path, what: str) -> tuple[dict[str, torch.Tensor], dict, Path, Path]:
    """(tensors, config, config file, weights file) of an export folder; `what` names it in errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file, weights = path / EXPORT_CONFIG_FILE, path / EXPORT_WEIGHTS_FILE
    for f in (cfg_file, weights):
        if not f.is_file():
            raise UserError(f"{f} not found: is {path} an exported {what} folder?")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_file} is not valid JSON ({e}); re-export the model") from None
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights} cannot be read ({e}); re-export the model") from None
    return tensors, config, cfg_file, weights
