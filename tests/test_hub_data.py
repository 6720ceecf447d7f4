"""SQuAD v1.1 and GloVe from the Hugging Face Hub at pinned revisions, with no network: a cache in the
Hub's own layout (datasets--ORG--NAME/, models--ORG--NAME/, each with blobs/, snapshots/<sha>/, refs/)
built in a temporary folder, holding tiny files of the real formats. The cache folder is passed as
an argument: huggingface_hub reads its environment variables once, at import."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import REPO

import lightning_modules.squad.glove as glove_module
import lightning_modules.squad.hub_files as hub_files
from lightning_modules import hub_data
from lightning_modules.errors import UserError
from lightning_modules.squad import squad_data
from lightning_modules.squad.squad_data import SquadDataModule, load_squad
from reproduce.__main__ import main as reproduce_main
from reproduce.train_squad import main as train_main

WORDS = {"tokyo": 1.0, "lisbon": 2.0, "rivers": 3.0}  # the tiny GloVe file: 3 words of 100 dimensions


def _squad_rows(prefix: str) -> list[dict]:
    rows = []
    for t, (context, answer) in enumerate([("Tokyo is the capital of Japan.", "Tokyo"),
                                           ("Rivers flow into the sea near Lisbon.", "Lisbon")]):
        for q in range(3):
            rows.append({"id": f"{prefix}{t}{q}", "title": f"T{t}", "context": context, "question": "What?",
                         "answers": {"text": [answer], "answer_start": [context.index(answer)]}})
    return rows


def _parquet(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def _glove_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("glove.6B.100d.txt", "".join(f"{w} {' '.join([str(v)] * 100)}\n" for w, v in WORDS.items()))
        z.writestr("glove.6B.50d.txt", "".join(f"{w} {' '.join([str(v)] * 50)}\n" for w, v in WORDS.items()))
    return buffer.getvalue()


def _put(cache: Path, repo_type: str, repo_id: str, revision: str, filename: str, data: bytes) -> Path:
    """One file, as hf_hub_download leaves it: a blob named by its sha256 (the LFS object id), a
    snapshot symlink to it, and refs/main."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = repo / "snapshots" / revision / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return blob


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A Hub cache holding the pinned revisions of rajpurkar/squad and stanfordnlp/glove, tiny."""
    cache = tmp_path / "hub"
    blobs = {split: _put(cache, "dataset", hub_files.SQUAD_REPO, hub_files.SQUAD_REVISION, name,
                         _parquet(_squad_rows(split[0])))
             for split, name in hub_files.SQUAD_PARQUET.items()}
    zip_bytes = _glove_zip()
    blobs["glove"] = _put(cache, "model", hub_files.GLOVE_REPO, hub_files.GLOVE_REVISION, "glove.6B.zip", zip_bytes)
    # the tiny files' own size, hash and counts stand in for the real ones
    monkeypatch.setattr(hub_files, "GLOVE_ZIP", replace(hub_files.GLOVE_ZIP, size=len(zip_bytes),
                                                        digest=("sha256", hashlib.sha256(zip_bytes).hexdigest())))
    monkeypatch.setitem(hub_files.SQUAD_ROWS, "train", 6)
    monkeypatch.setitem(hub_files.SQUAD_ROWS, "validation", 6)
    monkeypatch.setattr(glove_module, "GLOVE_6B_WORDS", len(WORDS))
    return cache, blobs


def _module(hub_cache: Path, tmp_path: Path, **kwargs) -> SquadDataModule:
    return SquadDataModule(source="hub", hub_cache_dir=str(hub_cache), cache_dir=str(tmp_path / "datasets"),
                           max_context_tokens=50, **kwargs)


def test_at_the_pinned_revision_offline_the_loader_returns_the_tiny_data_and_vectors(hub, tmp_path, monkeypatch):
    cache, blobs = hub
    dm = _module(cache, tmp_path)
    dm.setup()
    assert sorted(r["id"] for r in dm.train_set.rows) == sorted(r["id"] for r in _squad_rows("t"))
    assert len(dm.eval_set) == 6 and not dm.train_on_dev
    vectors, known = dm.pretrained_word_vectors()
    assert int(known.sum()) == 3  # every GloVe word occurs in the data
    assert torch.equal(vectors[dm.word_vocab.index("lisbon")], torch.full((100,), 2.0))
    assert "GloVe 100d" in dm.word_vectors_note() and "glove.6B.zip:glove.6B.100d.txt" in dm.word_vectors_note()
    # each file passed once and is remembered: a second load does not hash again
    assert all(Path(f"{b}.verified").is_file() for b in blobs.values())
    monkeypatch.setattr(hub_data, "file_digest", lambda *a, **k: pytest.fail("hashed a checked file again"))
    _module(cache, tmp_path).setup()


@pytest.mark.parametrize("which", ["train", "glove"])
def test_a_corrupted_blob_is_a_checksum_error_and_nothing_is_derived_from_it(hub, tmp_path, which):
    cache, blobs = hub
    data = bytearray(blobs[which].read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the hash can tell
    blobs[which].write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"fails its sha256 checksum .* corrupted; delete .* and fetch it again "
                                        r"\(python -m reproduce fetch squad\)"):
        _module(cache, tmp_path).setup()
    assert not Path(f"{blobs[which]}.verified").exists()
    assert not (tmp_path / "datasets").exists()  # datasets' Arrow cache: never written from an unchecked file


def test_a_truncated_glove_zip_fails_its_size_check(hub, tmp_path):
    cache, blobs = hub
    blobs["glove"].write_bytes(blobs["glove"].read_bytes()[:-10])
    with pytest.raises(UserError, match=r"has [\d,]+ bytes, not [\d,]+: it fails its size and checksum check"):
        _module(cache, tmp_path).setup()


@pytest.mark.parametrize("missing", ["validation", "glove"])
def test_a_missing_file_names_the_fetch_command(hub, tmp_path, missing):
    cache, blobs = hub
    repo = cache / ("models--stanfordnlp--glove" if missing == "glove" else "datasets--rajpurkar--squad")
    name = "glove.6B.zip" if missing == "glove" else hub_files.SQUAD_PARQUET["validation"]
    (repo / "snapshots" / (hub_files.GLOVE_REVISION if missing == "glove" else hub_files.SQUAD_REVISION)
     / name).unlink()
    with pytest.raises(UserError, match=r"is not in the Hugging Face cache .*: python -m reproduce fetch squad"):
        _module(cache, tmp_path).setup()


@pytest.mark.parametrize("option,fetch_option", [("hub_revision", "--squad-revision"),
                                                ("glove_revision", "--glove-revision")])
def test_a_revision_that_is_not_in_the_cache_is_refused(hub, tmp_path, option, fetch_option):
    cache, _ = hub
    with pytest.raises(UserError, match=rf"revision {'b' * 40} of .* is not in the Hugging Face cache .* "
                                        rf"python -m reproduce fetch squad {fetch_option}={'b' * 40}, or set "
                                        rf"data\.{option} to a cached one"):
        _module(cache, tmp_path, **{option: "b" * 40}).setup()


def test_a_wrong_row_count_is_refused(hub, tmp_path, monkeypatch):
    monkeypatch.setitem(hub_files.SQUAD_ROWS, "train", 87_599)
    with pytest.raises(UserError, match=r"6 train questions, not SQuAD v1.1's 87,599; data.hub_revision="):
        load_squad("hub", hub_cache_dir=str(hub[0]), cache_dir=str(tmp_path / "datasets"))


def test_a_glove_member_of_the_wrong_count_is_refused(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(glove_module, "GLOVE_6B_WORDS", 400_000)
    with pytest.raises(UserError, match=r"holds 3 vectors of 100 numbers, not GloVe 6B's 400,000 of 100"):
        _module(hub[0], tmp_path).setup()


def test_stanfords_own_zip_is_accepted_by_its_size_and_md5_not_the_hub_sha256(hub, tmp_path, monkeypatch):
    cache, blobs = hub
    own = tmp_path / "glove.6B.zip"
    own.write_bytes(blobs["glove"].read_bytes())
    stanford = replace(hub_files.STANFORD_GLOVE_ZIP, size=own.stat().st_size,
                       digest=("md5", hashlib.md5(own.read_bytes()).hexdigest()))
    monkeypatch.setattr(squad_data, "STANFORD_GLOVE_ZIP", stanford)
    monkeypatch.setattr(squad_data, "GLOVE_ZIP", replace(hub_files.GLOVE_ZIP, size=1))  # not mistaken for the Hub's
    dm = _module(cache, tmp_path, glove_path=str(own), glove_member="glove.6B.50d.txt")
    dm.setup()
    assert dm.glove_dim == 50 and "tokyo" in dm.glove
    monkeypatch.setattr(squad_data, "STANFORD_GLOVE_ZIP", replace(stanford, digest=("md5", "0" * 32)))
    own.touch()  # a changed file is checked again
    os.utime(own, ns=(1, 1))
    with pytest.raises(UserError, match=r"data.glove_path \(nlp.stanford.edu's glove.6B.zip\): .* fails its md5 "
                                        r"checksum .* restore .* from a clean copy"):
        _module(cache, tmp_path, glove_path=str(own), glove_member="glove.6B.50d.txt").setup()


def test_fetch_check_finds_everything_then_names_what_is_missing(hub, tmp_path, capsys):
    cache, blobs = hub
    assert reproduce_main(["fetch", "squad", "--cache-dir", str(cache), "--check"]) == 0
    assert "every file is in the Hugging Face cache" in capsys.readouterr().err
    blobs["glove"].unlink()
    assert reproduce_main(["fetch", "squad", "--cache-dir", str(cache), "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "python -m reproduce fetch squad" in err[-1]
    # without --check it would download; offline (the tests' HF_HUB_OFFLINE=1) that is one clear line
    assert reproduce_main(["fetch", "squad", "--cache-dir", str(cache)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: cannot download stanfordnlp/glove/glove.6B.zip") and "network" in last


def test_the_paper_profile_stops_before_any_run_without_the_files(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    assert reproduce_main(["profile", "squad", "--profile", "paper", "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert sum(line.startswith("error: ") for line in err) == 1
    assert err[-1].startswith("error: ") and "python -m reproduce fetch squad" in err[-1]
    assert not (tmp_path / "results").exists()


def test_a_paper_config_run_without_the_files_is_one_line_and_leaves_no_result(tmp_path, capsys):
    config = REPO / "reproduce" / "configs" / "squad_paper_l0.yaml"
    code = train_main(["--config", str(config), "--run_dir", str(tmp_path / "run"), "--wandb=disabled",
                       f"--data.hub_cache_dir={tmp_path / 'empty_hub'}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ") and "python -m reproduce fetch squad" in err
    assert not (tmp_path / "run" / "result.json").exists()


def test_a_blob_kept_in_the_shared_xet_store_is_checked_by_its_etag_not_the_store_name(hub, tmp_path):
    """huggingface_hub may keep a Xet file once per cache, at blobs/<2 hex>/<xet hash>, with the
    repo's blobs/<etag> a link to it: the sha256 to check is the etag's, not the store's name."""
    cache, blobs = hub
    store = cache / "blobs" / "ab" / ("ab" + "0" * 62)
    store.parent.mkdir(parents=True)
    blobs["train"].rename(store)
    blobs["train"].symlink_to(os.path.relpath(store, blobs["train"].parent))
    _module(cache, tmp_path).setup()
    assert Path(f"{blobs['train']}.verified").is_file()


def test_a_pin_that_does_not_resolve_on_the_hub_names_the_options_to_set(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError, RevisionNotFoundError

    class Missing(RevisionNotFoundError):  # as the Hub answers an unknown revision (its HTTP response aside)
        def __init__(self):
            Exception.__init__(self, "404 Revision Not Found")

    def hub_answers(repo_id, filename, local_files_only=False, **kwargs):
        if local_files_only:  # the empty cache
            raise LocalEntryNotFoundError("not cached")
        raise Missing()

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub_answers)
    assert reproduce_main(["fetch", "squad", "--cache-dir", str(tmp_path), "--squad-revision", "c" * 40]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: revision {'c' * 40} does not resolve in the Hub repo rajpurkar/squad")
    assert "as --squad-revision here and data.hub_revision in the runs" in last
