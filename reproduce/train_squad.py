"""`python -m reproduce.train_squad`: kept at this path because recorded commands, result.json files and the
W&B sweep files use it. The code is reproduce/run/train_squad.py."""

import sys

from .run.train_squad import main

if __name__ == "__main__":
    sys.exit(main())
