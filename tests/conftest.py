import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# No test may reach the network: the Hub is unreachable here and W&B stays local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")  # Lightning's, not ours
# Tiny models: a second thread only adds synchronisation, and on a busy 2-core CI machine
# spinning OpenMP threads make in-process runs many times slower. Set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <args>` from the repo root the way a user would."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture(scope="session")
def ptb():
    from lightning_modules.lm.ptb_data import PTBDataModule

    dm = PTBDataModule()
    dm.setup()
    return dm


@pytest.fixture(autouse=True)
def _lightning_logs_to_current_stderr():
    """Lightning's loggers keep the stderr of the moment they were imported; under capsys that
    stream is closed by the next test ("--- Logging error ---"). Point them at the current one."""
    import logging

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.stream = sys.stderr  # not setStream: it flushes the old, closed stream
    yield
