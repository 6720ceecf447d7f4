"""GloVe word vectors from a local text file (the glove.6B.*d.txt format, plain or .gz).

Each line is a word followed by its d floats, separated by single spaces. Only the words asked
for are parsed, so reading the 400k-word 6B file for a SQuAD vocabulary takes seconds.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from ..errors import UserError


def read_glove(path: str | Path, words: set[str]) -> tuple[dict[str, list[float]], int]:
    """The vectors of those `words` that the file has, and the vector size d."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data.glove_path: {path} not found; give a glove.6B.100d.txt-style file, or leave "
                        "glove_path unset to train the word embeddings from random")
    opener = gzip.open if path.suffix == ".gz" else open
    vectors: dict[str, list[float]] = {}
    dim = None
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.rstrip("\n").rstrip(" ").split(" ")
                if dim is None:
                    dim = len(parts) - 1
                    if dim < 1:
                        raise UserError(f"{path}:{n} is not a GloVe line (a word, then its floats)")
                if len(parts) != dim + 1:
                    raise UserError(f"{path}:{n} has {len(parts) - 1} numbers, the first line has {dim}; "
                                    "the file is not in the GloVe text format or is damaged")
                if parts[0] in words:
                    vectors[parts[0]] = [float(x) for x in parts[1:]]
    except ValueError as e:
        raise UserError(f"{path}: a vector entry is not a number ({e}); the file is damaged") from None
    except (gzip.BadGzipFile, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise UserError(f"{path} cannot be read as GloVe text ({e}); restore it from a clean copy") from None
    if dim is None:
        raise UserError(f"{path} is empty; give a GloVe vector file")
    return vectors, dim
