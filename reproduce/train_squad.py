"""`python -m reproduce.train_squad`: kept at this path because recorded commands, result.json files and the
W&B sweep files use it. The code is reproduce/run/train_squad.py."""

import sys

from .run.train_squad import build_cli, main, train  # noqa: F401 (their old import path too)

if __name__ == "__main__":
    sys.exit(main())
