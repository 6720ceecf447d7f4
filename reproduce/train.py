"""`python -m reproduce.train`: kept at this path because recorded commands, result.json files and the
W&B sweep files use it. The code is reproduce/run/train.py."""

import sys

from .run.train import build_cli, main, train  # noqa: F401 (their old import path too)

if __name__ == "__main__":
    sys.exit(main())
