"""GloVe word vectors: the glove.6B.*d.txt text format, plain, .gz, or a member of a .zip read in place.

Each line is a word followed by its d floats, separated by single spaces. Only the words asked
for are parsed, so reading the 400k-word 6B file for a SQuAD vocabulary takes seconds. The 6B
files of glove.6B.zip are read straight from the zip (no 800 MB unpacked) and must hold their
400,000 vectors of the size their name says.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
import zlib
from pathlib import Path

from ..errors import UserError

GLOVE_6B_MEMBER = re.compile(r"^glove\.6B\.(\d+)d\.txt$")
GLOVE_6B_WORDS = 400_000


def _open_text(path: Path, member: str | None):
    if path.suffix == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise UserError(f"{path} is not a readable zip ({e}): it is truncated or corrupted; restore it from "
                            "a clean copy") from None
        if member not in archive.namelist():
            archive.close()
            raise UserError(f"{path} has no member {member!r} (it has {', '.join(archive.namelist()[:6])}); set "
                            "data.glove_member to one of them")
        return io.TextIOWrapper(archive.open(member), encoding="utf-8")
    return (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8")


def read_glove(path: str | Path, words: set[str], member: str | None = None) -> tuple[dict[str, list[float]], int]:
    """The vectors of those `words` that the file (or the zip's `member`) has, and the vector size d."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data.glove_path: {path} not found; give glove.6B.zip (Stanford's or the Hub's) or a "
                        "glove.6B.100d.txt-style file")
    name = f"{path}:{member}" if path.suffix == ".zip" else str(path)
    vectors: dict[str, list[float]] = {}
    dim = None
    n = 0
    try:
        with _open_text(path, member) as f:
            for n, line in enumerate(f, 1):
                parts = line.rstrip("\n").rstrip(" ").split(" ")
                if dim is None:
                    dim = len(parts) - 1
                    if dim < 1:
                        raise UserError(f"{name}:{n} is not a GloVe line (a word, then its floats)")
                if len(parts) != dim + 1:
                    raise UserError(f"{name}:{n} has {len(parts) - 1} numbers, the first line has {dim}; "
                                    "the file is not in the GloVe text format or is damaged")
                if parts[0] in words:
                    vectors[parts[0]] = [float(x) for x in parts[1:]]
    except ValueError as e:
        raise UserError(f"{name}: a vector entry is not a number ({e}); the file is damaged") from None
    except (gzip.BadGzipFile, EOFError, zlib.error, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise UserError(f"{name} cannot be read as GloVe text ({e}); restore it from a clean copy") from None
    if dim is None:
        raise UserError(f"{name} is empty; give a GloVe vector file")
    m = GLOVE_6B_MEMBER.match(member or "") if path.suffix == ".zip" else None
    if m and (n, dim) != (GLOVE_6B_WORDS, int(m.group(1))):
        raise UserError(f"{name} holds {n:,} vectors of {dim} numbers, not GloVe 6B's {GLOVE_6B_WORDS:,} of "
                        f"{m.group(1)}: the file is damaged; restore it from a clean copy")
    return vectors, dim
