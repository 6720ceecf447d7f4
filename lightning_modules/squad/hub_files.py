"""The Hub files a paper-scale SQuAD run reads, pinned in this one place.

SQuAD v1.1 is the parquet export of `rajpurkar/squad` (87,599 train and 10,570 validation
questions); the word vectors are BiDAF's, GloVe 6B 100d (allenai/bi-att-flow's defaults), the
member `glove.6B.100d.txt` of `glove.6B.zip` in `stanfordnlp/glove`, read from the zip.

The revisions and the Hub zip's size and sha256 (its LFS object) are those that public code pins
for these repos; they could NOT be confirmed from the machine this was written on (it cannot reach
the Hub). A revision that does not resolve stops `python -m reproduce fetch squad` with a line
naming the options that override it (fetch --squad-revision / --glove-revision, and the runs'
data.hub_revision / data.glove_revision). The SQuAD parquet
files are checked against the sha256 that the Hub gives as their LFS object id, and by row count.
"""

from __future__ import annotations

from ..hub_data import PinnedFile

FETCH_COMMAND = "python -m reproduce fetch squad"

SQUAD_REPO = "rajpurkar/squad"
SQUAD_REVISION = "7b6d24c440a36b6815f21b70d25016731768db1f"
SQUAD_PARQUET = {"train": "plain_text/train-00000-of-00001.parquet",
                 "validation": "plain_text/validation-00000-of-00001.parquet"}
SQUAD_ROWS = {"train": 87_599, "validation": 10_570}

GLOVE_REPO = "stanfordnlp/glove"
GLOVE_REVISION = "1db2080b2d94def6e5b0386a523102f9d8849e9d"
GLOVE_ZIP = PinnedFile(GLOVE_REPO, "model", "glove.6B.zip", GLOVE_REVISION, "data.glove_revision", FETCH_COMMAND,
                       "--glove-revision", size=862_182_753,
                       digest=("sha256", "6471382cdd837544bf3ac72497a38715e845897d265b2b424b4761832009c837"))
# Stanford's own download (nlp.stanford.edu/data/glove.6B.zip) is another file than the Hub copy:
# a user who has it passes it as data.glove_path and it is checked by its own size and md5
STANFORD_GLOVE_ZIP = PinnedFile("nlp.stanford.edu", "file", "glove.6B.zip", "-", "data.glove_path", FETCH_COMMAND,
                                "-", size=862_182_613, digest=("md5", "056ea991adb4740ac6bf1b6d9b50408b"))
GLOVE_MEMBER = "glove.6B.100d.txt"


def squad_files(revision: str = SQUAD_REVISION, repo_id: str = SQUAD_REPO) -> dict[str, PinnedFile]:
    """The parquet file of each split at `revision`."""
    return {split: PinnedFile(repo_id, "dataset", name, revision, "data.hub_revision", FETCH_COMMAND,
                              "--squad-revision")
            for split, name in SQUAD_PARQUET.items()}


def glove_zip(revision: str = GLOVE_REVISION) -> PinnedFile:
    return GLOVE_ZIP.at(revision)
