"""A clone alone must work: no tracked file may lean on a folder beside the repo, and the data
the offline runs need (the SQuAD v1.1 dev set here; PTB in test_ptb_data.py) ships in the package."""

import gzip
import shutil
import subprocess

import pytest
from conftest import REPO

from lightning_modules.errors import UserError
from lightning_modules.squad import squad_data
from lightning_modules.squad.squad_data import SquadDataModule, load_squad, read_squad_json

# built in pieces so that this file does not match its own search
SIBLING_FOLDER = ".." + "/" + "shared"


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (e.g. an installed package): nothing tracked to check")
    return [name for name in out.decode().split("\0") if name]


def test_no_tracked_file_refers_to_a_folder_beside_the_repo():
    offenders = []
    for name in _tracked_files():
        path = REPO / name
        if not path.is_file():  # deleted in the working tree, or a submodule
            continue
        data = path.read_bytes()
        if b"\0" in data:  # binary (the gzip data files)
            continue
        for lineno, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if SIBLING_FOLDER in line:
                offenders.append(f"{name}:{lineno}: {line.strip()}")
    assert not offenders, (f"users have no {SIBLING_FOLDER}: ship the data in the package or cite "
                           "docs/REFERENCES.md / docs/CONTRACTS.md instead\n" + "\n".join(offenders))


def test_embedded_squad_dev_set_has_the_official_counts():
    validation = load_squad("embedded")["validation"]
    assert len(validation) == 10_570
    assert len(set(validation["id"])) == 10_570
    titles = list(dict.fromkeys(validation["title"]))
    assert len(titles) == 48 and titles[0] == "Super_Bowl_50"
    assert len(set(zip(validation["title"], validation["context"]))) == 2_067  # paragraphs
    assert sum(len(a["text"]) for a in validation["answers"]) == 34_726


def test_smoke_split_of_the_embedded_dev_set_needs_no_file():
    dm = SquadDataModule(source="embedded", dev_split_articles=12, max_train_questions=50,
                         max_eval_questions=20, word_vectors="random")
    dm.setup()
    assert dm.train_on_dev and len(dm.stats["eval_articles"]) == 36
    assert len(dm.train_set) <= 50 and len(dm.eval_set) == 20


def _corrupt_copy(tmp_path, monkeypatch):
    copy = tmp_path / squad_data.EMBEDDED_DEV.name
    shutil.copy(squad_data.EMBEDDED_DEV, copy)
    monkeypatch.setattr(squad_data, "EMBEDDED_DEV", copy)
    with gzip.open(copy, "rb") as f:
        text = f.read()
    # still valid SQuAD JSON: only the checksum can tell
    with gzip.open(copy, "wb") as f:
        f.write(text.replace(b"Super Bowl 50", b"Super Bowl 51", 1))
    return copy


def test_a_modified_embedded_dev_set_is_refused_in_one_line(tmp_path, monkeypatch):
    copy = _corrupt_copy(tmp_path, monkeypatch)
    assert len(read_squad_json(copy)) == 10_570  # without the check it would load silently
    with pytest.raises(UserError) as info:
        load_squad("embedded")
    message = str(info.value)
    assert "\n" not in message
    assert str(copy) in message and "dev-v1.1.json.gz fails its sha256 check" in message
