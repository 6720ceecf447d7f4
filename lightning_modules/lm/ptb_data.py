"""Penn Treebank (Mikolov's LM version) through Hugging Face `datasets`, batched as in Zaremba et al.

Sources (all give the same token stream):
  embedded  the exact Mikolov files shipped in this package (gzip), sha256-verified at load
  local     a folder with ptb.{train,valid,test}.txt, plain or .gz
  hub       a Hub dataset id with train/validation/test splits and a text column
            (e.g. `ptb_text_only`, column `sentence`; needs network and a `datasets`
            version that still runs script datasets, or a parquet copy of it)
Tokens: whitespace split, one `<eos>` per line. Vocabulary: the train words plus `<eos>`
(10,000), ordered by frequency then alphabetically, as the TF tutorial does.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections import Counter
from itertools import chain
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from ..resumable import ResumableSampler

EMBEDDED_DIR = Path(__file__).parent / "data" / "ptb"
SPLITS = {"train": "train", "validation": "valid", "test": "test"}
# sha256 of the uncompressed Mikolov files (see data/ptb/SOURCES.md)
SHA256 = {
    "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
EOS = "<eos>"


def _find_split_file(folder: Path, name: str) -> Path:
    for candidate in (folder / f"ptb.{name}.txt", folder / f"ptb.{name}.txt.gz"):
        if candidate.is_file():
            return candidate
    raise UserError(f"{folder}/ptb.{name}.txt(.gz) not found; point data_dir at a folder "
                    "with ptb.train.txt, ptb.valid.txt and ptb.test.txt (plain or .gz)")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(f"{path} is not a readable gzip file ({e}): it is truncated or "
                        "corrupted; restore it from a clean copy") from None


def _check_text(path: Path, verify_sha256: str | None) -> None:
    data = _read_bytes(path)
    if verify_sha256 and hashlib.sha256(data).hexdigest() != verify_sha256:
        raise UserError(f"{path} fails its sha256 check (expected {verify_sha256[:12]}...): "
                        "the file was modified or corrupted; restore it from a clean copy")
    if not data.strip():
        raise UserError(f"{path} is empty; PTB splits need text")


def _split_files(source: str, data_dir: str | None) -> dict[str, str]:
    """The three text files of source embedded (checked against their sha256) or local."""
    if source == "local":
        if not data_dir:
            raise UserError("source=local needs data_dir (a folder with ptb.{train,valid,test}.txt)")
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise UserError(f"data_dir {folder} is not a folder; give the folder holding "
                            "ptb.train.txt, ptb.valid.txt and ptb.test.txt")
    else:
        folder = EMBEDDED_DIR
    files = {}
    for split, name in SPLITS.items():
        path = _find_split_file(folder, name)
        _check_text(path, SHA256[name] if source == "embedded" else None)
        files[split] = str(path)
    return files


def load_ptb_text(source: str = "embedded", data_dir: str | None = None,
                  hub_id: str = "ptb_text_only", hub_text_column: str = "sentence",
                  cache_dir: str | None = None):
    """A `datasets.DatasetDict` with splits train/validation/test and one column `text`."""
    import datasets

    if source in ("embedded", "local"):
        return datasets.load_dataset("text", data_files=_split_files(source, data_dir), cache_dir=cache_dir)
    if source == "hub":
        try:
            ds = datasets.load_dataset(hub_id, cache_dir=cache_dir)
        except Exception as e:  # network, auth, script datasets refused: all user-fixable
            raise UserError(f"cannot load Hub dataset {hub_id!r} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); use source=embedded") from None
        missing = [s for s in SPLITS if s not in ds]
        if missing or hub_text_column not in ds["train"].column_names:
            raise UserError(f"Hub dataset {hub_id!r} needs splits {list(SPLITS)} and a column "
                            f"{hub_text_column!r}; it has {dict(ds.column_names)}")
        return ds.select_columns([hub_text_column]).rename_column(hub_text_column, "text")
    raise UserError(f"unknown PTB source {source!r}; use embedded, local or hub")


def tokenize(text_splits) -> dict[str, list[str]]:
    """Token stream per split: words of each line, then `<eos>` (via `datasets.map`)."""
    tokenized = text_splits.map(
        lambda batch: {"tokens": [line.split() + [EOS] for line in batch["text"]]},
        batched=True, remove_columns=["text"], desc="tokenize",
    )
    return {split: list(chain.from_iterable(tokenized[split]["tokens"])) for split in SPLITS}


def load_ptb_tokens(source: str = "embedded", data_dir: str | None = None, hub_id: str = "ptb_text_only",
                    hub_text_column: str = "sentence", cache_dir: str | None = None) -> dict[str, list[str]]:
    """Token stream per split, through `datasets` where it is installed.

    Without it, the embedded and local files are read directly, line by line, with the same
    tokenisation (tests/test_ptb_data.py checks that both give the same streams): the lent GPU
    image has no `datasets`, and its pyarrow wheel (55 MB) does not fit the 64 MiB the working tree
    travels in (reproduce/measure/gpu/README.md)."""
    try:
        import datasets  # noqa: F401
    except ImportError:
        if source == "hub":
            raise UserError("data.source=hub needs the `datasets` package (pip install datasets)") from None
        return {split: [w for line in _read_bytes(Path(path)).decode("utf-8").splitlines()
                        for w in (*line.split(), EOS)]
                for split, path in _split_files(source, data_dir).items()}
    return tokenize(load_ptb_text(source, data_dir, hub_id, hub_text_column, cache_dir))


def build_vocab(train_tokens: list[str]) -> list[str]:
    counts = Counter(train_tokens)
    return sorted(counts, key=lambda w: (-counts[w], w))


class LMWindows(Dataset):
    """Zaremba batching: the stream as `batch_size` contiguous rows, cut into num_steps windows.

    Item i is (x, y) of shape (batch_size, num_steps) with y = x shifted by one token;
    consecutive items continue each row, so the hidden state carries across them.
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, num_steps: int) -> None:
        row_len = ids.numel() // batch_size
        self.rows = ids[: batch_size * row_len].view(batch_size, row_len)
        self.num_steps = num_steps
        self.num_windows = (row_len - 1) // num_steps
        if self.num_windows < 1:
            raise UserError(f"{ids.numel()} tokens are too few for batch_size={batch_size} and "
                            f"num_steps={num_steps}")

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = i * self.num_steps
        return self.rows[:, s: s + self.num_steps], self.rows[:, s + 1: s + 1 + self.num_steps]


class PTBDataModule(L.LightningDataModule):
    def __init__(
        self,
        source: Literal["embedded", "local", "hub"] = "embedded",
        data_dir: str | None = None,
        hub_id: str = "ptb_text_only",
        hub_text_column: str = "sentence",
        batch_size: int = 20,
        num_steps: int = 20,
        val_batch_size: int | None = None,
        test_batch_size: int = 1,
        train_tokens: int | None = None,
        eval_tokens: int | None = None,
        cache_dir: str | None = None,
        pin_memory: bool = True,
    ) -> None:
        """
        Args:
            batch_size: rows of the training stream (Zaremba: 20).
            num_steps: truncated-BPTT length (small 20, medium/large 35).
            val_batch_size: rows for validation (default: batch_size, as the TF tutorial).
            test_batch_size: rows for test (TF tutorial: 1, the whole test set as one stream).
            train_tokens: use only the first N training tokens (smoke runs); the vocabulary
                and the valid/test sets stay full.
            eval_tokens: use only the first N tokens of the valid and test sets (tests of the
                pipeline, whose full evaluation would cost more than their training); null: all.
            pin_memory: on a CUDA machine, windows come in page-locked memory, so that copying
                one to the GPU does not wait for the GPU's queued work (a copy from pageable
                memory does: a host sync per step).
        """
        super().__init__()
        for name, value in (("batch_size", batch_size), ("num_steps", num_steps),
                            ("test_batch_size", test_batch_size)):
            if value < 1:
                raise UserError(f"data.{name} must be at least 1, got {value}")
        for name, value in (("train_tokens", train_tokens), ("eval_tokens", eval_tokens)):
            if value is not None and value < 2:
                raise UserError(f"data.{name} must be at least 2, got {value}")
        self.save_hyperparameters()
        self._ids: dict[str, torch.Tensor] | None = None
        self._train_sampler = ResumableSampler()  # in order: the hidden state carries across windows
        self._vocab: list[str] | None = None

    def _load(self) -> None:
        if self._ids is not None:
            return
        hp = self.hparams
        streams = load_ptb_tokens(hp.source, hp.data_dir, hp.hub_id, hp.hub_text_column, hp.cache_dir)
        if not streams["train"] or not streams["validation"] or not streams["test"]:
            raise UserError("a PTB split is empty; check the data files")
        self._vocab = build_vocab(streams["train"])
        index = {w: i for i, w in enumerate(self._vocab)}
        ids = {}
        for split, tokens in streams.items():
            unknown = next((w for w in tokens if w not in index), None)
            if unknown is not None:
                raise UserError(f"the {split} split has word {unknown!r} that is not in the "
                                "train vocabulary; PTB's valid/test must use train words only")
            ids[split] = torch.tensor([index[w] for w in tokens], dtype=torch.long)
        if hp.train_tokens is not None:
            ids["train"] = ids["train"][: hp.train_tokens]
        if hp.eval_tokens is not None:
            for split in ("validation", "test"):
                ids[split] = ids[split][: hp.eval_tokens]
        self._ids = ids

    @property
    def vocab(self) -> list[str]:
        self._load()
        return self._vocab

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_ids(self, split: str) -> torch.Tensor:
        self._load()
        return self._ids[split]

    def setup(self, stage: str | None = None) -> None:
        self._load()

    def resume_train_at(self, window: int) -> None:
        """The next pass over the training windows starts at `window` (a run resumed mid-epoch)."""
        self._train_sampler.resume_at(window)

    def _loader(self, split: str, batch_size: int, sampler: ResumableSampler | None = None) -> DataLoader:
        windows = LMWindows(self.token_ids(split), batch_size, self.hparams.num_steps)
        if sampler is not None:
            sampler.n = len(windows)
        # batch_size=None: each item already is a (batch, num_steps) window; order matters.
        # A private generator: iterating must not draw from the global RNG (the gates' noise),
        # or a run resumed at an epoch boundary would see other noise than an uninterrupted one.
        return DataLoader(windows, batch_size=None, sampler=sampler or range(len(windows)),
                          generator=torch.Generator(),
                          pin_memory=self.hparams.pin_memory and torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.batch_size, self._train_sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.hparams.val_batch_size or self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.test_batch_size)
