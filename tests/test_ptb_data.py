import gzip
import shutil

import pytest
import torch

from lightning_modules.errors import UserError
from lightning_modules.lm import ptb_data
from lightning_modules.lm.ptb_data import LMWindows, PTBDataModule


def test_counts_match_the_known_figures(ptb):
    assert ptb.token_ids("train").numel() == 929_589
    assert ptb.token_ids("validation").numel() == 73_760
    assert ptb.token_ids("test").numel() == 82_430
    assert ptb.vocab_size == 10_000
    assert "<eos>" in ptb.vocab and "<unk>" in ptb.vocab and "N" in ptb.vocab
    assert ptb.vocab[0] == "the"  # most frequent first, as the TF tutorial orders it


def test_local_sources_give_the_same_stream(ptb, tmp_path):
    # the shipped files double as a local .gz folder: the local reader must agree with embedded
    gz = PTBDataModule(source="local", data_dir=str(ptb_data.EMBEDDED_DIR))
    for name in ("train", "valid", "test"):
        with gzip.open(ptb_data.EMBEDDED_DIR / f"ptb.{name}.txt.gz", "rb") as f:
            (tmp_path / f"ptb.{name}.txt").write_bytes(f.read())
    plain = PTBDataModule(source="local", data_dir=str(tmp_path))
    for split in ("train", "validation", "test"):
        assert torch.equal(gz.token_ids(split), ptb.token_ids(split))
        assert torch.equal(plain.token_ids(split), ptb.token_ids(split))
    assert plain.vocab == ptb.vocab


def test_windows_follow_zaremba_batching():
    ids = torch.arange(103)
    w = LMWindows(ids, batch_size=4, num_steps=5)
    # 103 // 4 = 25 per row; (25 - 1) // 5 = 4 windows
    assert len(w) == 4
    x, y = w[1]
    assert x.shape == (4, 5) and torch.equal(x[0], torch.arange(5, 10))
    assert torch.equal(x[1], torch.arange(30, 35)) and torch.equal(y, x + 1)
    x_next, _ = w[2]
    assert torch.equal(x_next[:, 0], x[:, -1] + 1)  # each row continues: state can carry over


def test_train_slice_keeps_full_vocab_and_eval_sets(ptb):
    dm = PTBDataModule(train_tokens=5000)
    assert dm.token_ids("train").numel() == 5000
    assert dm.vocab == ptb.vocab
    assert dm.token_ids("test").numel() == 82_430


def _copy_embedded(tmp_path, monkeypatch):
    for f in ptb_data.EMBEDDED_DIR.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setattr(ptb_data, "EMBEDDED_DIR", tmp_path)


def test_checksum_refuses_a_modified_file(tmp_path, monkeypatch):
    _copy_embedded(tmp_path, monkeypatch)
    path = tmp_path / "ptb.valid.txt.gz"
    with gzip.open(path, "rb") as f:
        text = f.read()
    with gzip.open(path, "wb") as f:
        f.write(text.replace(b" the ", b" teh ", 1))
    with pytest.raises(UserError, match=r"ptb\.valid\.txt\.gz fails its sha256 check"):
        PTBDataModule().setup()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_gzip_is_reported_with_its_path(tmp_path, monkeypatch, damage):
    _copy_embedded(tmp_path, monkeypatch)
    path = tmp_path / "ptb.test.txt.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not gzip" + data[8:])
    with pytest.raises(UserError, match=r"ptb\.test\.txt\.gz is not a readable gzip file"):
        PTBDataModule().setup()


def test_missing_folder_and_files_are_clear(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        PTBDataModule(source="local", data_dir=str(tmp_path / "nope")).setup()
    with pytest.raises(UserError, match="ptb.train.txt"):
        PTBDataModule(source="local", data_dir=str(tmp_path)).setup()


def test_without_datasets_the_files_give_the_same_token_streams(monkeypatch):
    """The fallback for a machine without `datasets` (the lent GPU image) reads the same tokens."""
    import builtins

    from lightning_modules.lm.ptb_data import load_ptb_text, load_ptb_tokens, tokenize

    with_datasets = tokenize(load_ptb_text("embedded"))
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    without = load_ptb_tokens("embedded")
    assert without.keys() == with_datasets.keys()
    for split in without:
        assert without[split] == with_datasets[split], split
    assert len(without["train"]) == 929589  # words and one <eos> per line: the known PTB count
