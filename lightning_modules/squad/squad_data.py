"""SQuAD v1.1 through Hugging Face `datasets`: loading, tokenisation with character offsets, batching.

Sources (all give the Hub schema: id, title, context, question, answers{text, answer_start}):
  hub       the parquet files of rajpurkar/squad at a pinned commit (hub_files.py), found in the
            Hugging Face cache (`python -m reproduce fetch squad` puts them there), checked by
            sha256 and by their row counts (87,599 train, 10,570 validation); never downloaded here
  local     the official JSON files (train-v1.1.json, dev-v1.1.json), plain or .gz, flattened
            to the Hub schema
  embedded  the official dev-v1.1.json shipped in this package (gzip), sha256-verified at load,
            as validation split; a train split only from data.train_file
Checks: a file that is missing, not gzip, not JSON or not SQuAD-shaped is a UserError naming
the file and the first offending entry. A question with an answer whose `answer_start` does
not point at its text is skipped, counted, and reported in one warning per split.

Tokenisation: `\\w+|[^\\w\\s]` (runs of word characters; every other non-space character
alone), with the character span of each token, so a predicted token span maps back to the
exact context text. Gold answers map to the tokens their (whitespace-stripped) character span
overlaps. On the 34,726 answers of dev-v1.1 the covering tokens reproduce the answer text
exactly for all but 76, whose span starts or ends inside a token (e.g. "gold" in "golden",
"8" in "18"); for those the training target is the covering tokens (a superset of the text).
Words are lower-cased for the word vocabulary (GloVe 6B is lower-case); characters keep case.

Long contexts (policy): every context is cut to its first `max_context_tokens` tokens and
every question to its first `max_question_tokens`, in training and evaluation alike. A
training question whose answer ends beyond the cut is dropped (counted). An evaluation
question is never dropped: its prediction comes from the kept tokens, and an answer beyond
the cut simply scores 0, so EM/F1 are over every question of the evaluation set.

Training batches (`length_buckets=P`): each epoch's shuffled order is cut into pools of P
batches, each pool sorted by context length and cut into batches, and the batches shuffled; so
a batch holds contexts of similar length, padded less. The order is a function of (seed, epoch)
alone, as without buckets, so a run resumed mid-epoch gets the same batches.

Several processes (Lightning DDP, `--trainer.devices=N --trainer.strategy=ddp`): data.batch_size
stays the global batch; each process takes every N-th question of the epoch's order, so step k
of the N processes together sees batch k of a one-process run (the epoch's order is padded from
its start to a multiple of N: its last batch may repeat a question). Evaluation splits the
questions among the processes without padding: EM/F1 count every question exactly once.

Smoke runs (`dev_split_articles=N`): the train split is not needed; the first N articles of
the validation file become the training set and only the other articles are evaluated. Such
a run measures the pipeline, not SQuAD: it says so in its output and result.json.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import sys
import warnings
import zlib
from collections import Counter
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import UserError
from ..hub_data import cached, verified
from ..resumable import ResumableSampler
from .hub_files import (
    GLOVE_MEMBER,
    GLOVE_REVISION,
    GLOVE_ZIP,
    SQUAD_REPO,
    SQUAD_REVISION,
    SQUAD_ROWS,
    STANFORD_GLOVE_ZIP,
    glove_zip,
    squad_files,
)

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1 of both vocabularies
SPLITS = ("train", "validation")
COLUMNS = ("id", "title", "context", "question", "answers")
EMBEDDED_DEV = Path(__file__).parent / "data" / "squad" / "dev-v1.1.json.gz"
# sha256 of the uncompressed official dev-v1.1.json (see data/squad/SOURCES.md)
DEV_SHA256 = "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"


# ---- tokenisation --------------------------------------------------------------------------

def tokenize_with_offsets(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Tokens of `text` and their [start, end) character spans."""
    tokens, spans = [], []
    for m in TOKEN_PATTERN.finditer(text):
        tokens.append(m.group())
        spans.append(m.span())
    return tokens, spans


def answer_token_span(offsets: list[tuple[int, int]], answer_start: int, answer_text: str) -> tuple[int, int] | None:
    """(first, last) token, inclusive, covering the answer's whitespace-stripped character span.

    None when no token overlaps it (an answer of whitespace only).
    """
    start = answer_start + len(answer_text) - len(answer_text.lstrip())
    end = answer_start + len(answer_text.rstrip())
    covering = [i for i, (s, e) in enumerate(offsets) if e > start and s < end]
    if not covering:
        return None
    return covering[0], covering[-1]


def span_text(context: str, offsets: list[tuple[int, int]], first: int, last: int) -> str:
    """The exact context text of tokens first..last (inclusive)."""
    return context[offsets[first][0]: offsets[last][1]]


# ---- reading the official JSON ----------------------------------------------------------

def _read_json(path: Path, verify_sha256: str | None = None):
    if not path.is_file():
        raise UserError(f"{path} not found; give the path of an official SQuAD v1.1 JSON file "
                        "(e.g. dev-v1.1.json or dev-v1.1.json.gz)")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(f"{path} is not a readable gzip file ({e}): it is truncated or corrupted; "
                        "restore it from a clean copy") from None
    if verify_sha256 and hashlib.sha256(data).hexdigest() != verify_sha256:
        raise UserError(f"{path} fails its sha256 check (expected {verify_sha256[:12]}...): the file was "
                        "modified or corrupted; restore it from a clean copy (reinstall the package)")
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); give an official SQuAD v1.1 file") from None


def _require(cond: bool, path: Path, where: str, what: str) -> None:
    if not cond:
        raise UserError(f"{path} is not SQuAD v1.1 JSON: {where} {what}; give an official "
                        "SQuAD v1.1 file ({'version': ..., 'data': [{'title', 'paragraphs': "
                        "[{'context', 'qas': [{'id', 'question', 'answers'}]}]}]})")


def read_squad_json(path: str | Path, verify_sha256: str | None = None) -> list[dict]:
    """Flatten an official SQuAD v1.1 file into Hub-schema rows, one per question."""
    path = Path(path).expanduser()
    doc = _read_json(path, verify_sha256)
    _require(isinstance(doc, dict) and isinstance(doc.get("data"), list), path, "the top level",
             "has no 'data' list")
    rows = []
    for a, article in enumerate(doc["data"]):
        where = f"data[{a}]"
        _require(isinstance(article, dict) and isinstance(article.get("paragraphs"), list), path, where,
                 "has no 'paragraphs' list")
        title = str(article.get("title", ""))
        for p, para in enumerate(article["paragraphs"]):
            where = f"data[{a}].paragraphs[{p}]"
            _require(isinstance(para, dict) and isinstance(para.get("context"), str)
                     and isinstance(para.get("qas"), list), path, where, "needs a 'context' string and a 'qas' list")
            for q, qa in enumerate(para["qas"]):
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                _require(isinstance(qa, dict) and isinstance(qa.get("id"), str)
                         and isinstance(qa.get("question"), str) and isinstance(qa.get("answers"), list),
                         path, where, "needs 'id', 'question' and an 'answers' list")
                for n, ans in enumerate(qa["answers"]):
                    _require(isinstance(ans, dict) and isinstance(ans.get("text"), str)
                             and isinstance(ans.get("answer_start"), int), path, f"{where}.answers[{n}]",
                             "needs 'text' (string) and 'answer_start' (integer)")
                rows.append({"id": qa["id"], "title": title, "context": para["context"],
                             "question": qa["question"],
                             "answers": {"text": [x["text"] for x in qa["answers"]],
                                         "answer_start": [x["answer_start"] for x in qa["answers"]]}})
    if not rows:
        raise UserError(f"{path} holds no questions; give an official SQuAD v1.1 file")
    return rows


def answers_match_context(row: dict) -> bool:
    """Every answer's answer_start points at its text (and there is at least one answer)."""
    answers = row["answers"]
    return bool(answers["text"]) and all(
        row["context"][s: s + len(t)] == t for s, t in zip(answers["answer_start"], answers["text"]))


def load_squad(source: str = "hub", hub_id: str = SQUAD_REPO, train_file: str | None = None,
               validation_file: str | None = None, cache_dir: str | None = None,
               hub_revision: str = SQUAD_REVISION, hub_cache_dir: str | None = None):
    """A `datasets.DatasetDict` with the splits that exist (validation always; train if given).

    cache_dir: datasets' own cache (the parquet files read as Arrow); hub_cache_dir: the Hugging
    Face Hub cache the pinned files are found in (None: HF_HOME's)."""
    import datasets

    if source == "embedded":
        # two dev sets at once would leave unclear which one a run evaluated on
        if validation_file:
            raise UserError(f"data.source=embedded evaluates on the shipped dev-v1.1 and cannot take "
                            f"data.validation_file={validation_file}; drop it, or use data.source=local")
        splits = {"validation": read_squad_json(EMBEDDED_DEV, DEV_SHA256),
                  **({"train": read_squad_json(train_file)} if train_file else {})}
        return datasets.DatasetDict({split: datasets.Dataset.from_list(rows) for split, rows in splits.items()})
    if source == "local":
        if not validation_file:
            raise UserError("data.source=local needs data.validation_file (dev-v1.1.json, plain or .gz); "
                            "data.source=embedded uses the dev set shipped in the package")
        files = {"validation": validation_file, **({"train": train_file} if train_file else {})}
        return datasets.DatasetDict({split: datasets.Dataset.from_list(read_squad_json(f))
                                     for split, f in files.items()})
    if source == "hub":
        # every file found and checked before datasets derives anything from any of them
        files = {split: str(verified(cached(spec, hub_cache_dir), spec))
                 for split, spec in squad_files(hub_revision, hub_id).items()}
        ds = datasets.load_dataset("parquet", data_files=files, cache_dir=cache_dir)
        for split in SPLITS:
            missing = [c for c in COLUMNS if c not in ds[split].column_names]
            if missing:
                raise UserError(f"{files[split]} ({hub_id}) has no column {missing[0]!r}; SQuAD's parquet files have "
                                f"{list(COLUMNS)}")
            if hub_id == SQUAD_REPO and len(ds[split]) != SQUAD_ROWS[split]:
                raise UserError(f"{files[split]}: {len(ds[split]):,} {split} questions, not SQuAD v1.1's "
                                f"{SQUAD_ROWS[split]:,}; data.hub_revision={hub_revision} is not the SQuAD v1.1 "
                                "export; set it to a commit that is")
        return datasets.DatasetDict({s: ds[s].select_columns(list(COLUMNS)) for s in SPLITS})
    raise UserError(f"unknown SQuAD source {source!r}; use hub, local or embedded")


# ---- vocabularies and encoding --------------------------------------------------------------

def build_vocab(counts: Counter, min_count: int, extra: set[str] = frozenset()) -> list[str]:
    """PAD, UNK, then words by frequency (ties alphabetical); `extra` words (e.g. known to GloVe) too."""
    kept = {w for w, c in counts.items() if c >= min_count} | set(extra)
    return [PAD, UNK, *sorted(kept, key=lambda w: (-counts.get(w, 0), w))]


def _tokenize_batch(batch: dict, max_context: int, max_question: int) -> dict:
    out = {"context_tokens": [], "context_offsets": [], "question_tokens": [], "answer_span": []}
    for context, question, answers in zip(batch["context"], batch["question"], batch["answers"]):
        tokens, offsets = tokenize_with_offsets(context)
        span = answer_token_span(offsets, answers["answer_start"][0], answers["text"][0])
        out["context_tokens"].append(tokens[:max_context])
        out["context_offsets"].append([list(o) for o in offsets[:max_context]])
        out["question_tokens"].append(tokenize_with_offsets(question)[0][:max_question])
        # the first answer is the training target (the train split has exactly one)
        out["answer_span"].append(list(span) if span else [-1, -1])
    return out


class SquadExamples(Dataset):
    """Encoded questions: word ids and character ids of context and question, the answer's tokens."""

    def __init__(self, rows, words: dict[str, int], chars: dict[str, int], max_word_chars: int) -> None:
        self.rows = rows  # a tokenised `datasets.Dataset`
        self.words, self.chars, self.max_word_chars = words, chars, max_word_chars

    def __len__(self) -> int:
        return len(self.rows)

    def _encode(self, tokens: list[str]) -> tuple[list[int], list[list[int]]]:
        word_ids = [self.words.get(t.lower(), 1) for t in tokens]
        char_ids = [[self.chars.get(c, 1) for c in t[: self.max_word_chars]] for t in tokens]
        return word_ids, char_ids

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        cw, cc = self._encode(row["context_tokens"])
        qw, qc = self._encode(row["question_tokens"])
        return {"context_words": cw, "context_chars": cc, "question_words": qw, "question_chars": qc,
                "span": row["answer_span"], "id": row["id"], "context": row["context"],
                "offsets": row["context_offsets"], "answers": row["answers"]}


def _pad_words(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), length, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, ids != 0


def _pad_chars(seqs: list[list[list[int]]]) -> torch.Tensor:
    length = max(len(s) for s in seqs)
    width = max(len(w) for s in seqs for w in s)
    ids = torch.zeros(len(seqs), length, width, dtype=torch.long)
    for b, s in enumerate(seqs):
        for t, w in enumerate(s):
            ids[b, t, : len(w)] = torch.tensor(w, dtype=torch.long)
    return ids


def collate_squad(items: list[dict]) -> dict:
    """Pad a list of examples into a batch (masks: True on real tokens). Text fields stay lists,
    so that decoding maps token spans back to context text."""
    cw, c_mask = _pad_words([it["context_words"] for it in items])
    qw, q_mask = _pad_words([it["question_words"] for it in items])
    return {
        "context_words": cw, "context_mask": c_mask,
        "context_chars": _pad_chars([it["context_chars"] for it in items]),
        "question_words": qw, "question_mask": q_mask,
        "question_chars": _pad_chars([it["question_chars"] for it in items]),
        "start": torch.tensor([it["span"][0] for it in items], dtype=torch.long),
        "end": torch.tensor([it["span"][1] for it in items], dtype=torch.long),
        "id": [it["id"] for it in items], "context": [it["context"] for it in items],
        "offsets": [it["offsets"] for it in items], "answers": [it["answers"] for it in items],
    }


# ---- the order of the questions ---------------------------------------------------------------

class SquadTrainSampler(DistributedSampler):
    """The training questions of an epoch, for process `rank` of `num_replicas` (see the module doc).

    The shuffled order and mid-epoch resume are ResumableSampler's (`resume_at` counts questions
    of the global batches). A DistributedSampler only by type: Lightning's DDP then keeps it, where
    it would wrap any other sampler in one that draws its own order.
    """

    def __init__(self) -> None:  # DistributedSampler.__init__ would ask for a process group
        self.base = ResumableSampler(shuffle=True)
        self.lengths: list[int] = []
        self.batch_size, self.pool_batches = 1, None
        self.num_replicas, self.rank = 1, 0
        self.shuffle, self.drop_last = True, False

    def configure(self, lengths: list[int], batch_size: int, pool_batches: int | None, seed: int,
                  rank: int = 0, num_replicas: int = 1) -> None:
        self.lengths, self.batch_size, self.pool_batches = lengths, batch_size, pool_batches
        self.base.n, self.base.seed = len(lengths), seed
        self.rank, self.num_replicas = rank, num_replicas

    @property
    def seed(self) -> int:
        return self.base.seed

    @property
    def epoch(self) -> int:
        return self.base.epoch

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def resume_at(self, items: int) -> None:
        self.base.resume_at(items)

    def order(self, epoch: int) -> list[int]:
        """The whole epoch, all processes together, as batches of batch_size laid end to end."""
        order = self.base.order(epoch)
        if self.pool_batches:
            size = self.batch_size
            pool = size * self.pool_batches
            batches = []
            for p in range(0, len(order), pool):
                by_length = sorted(order[p: p + pool], key=self.lengths.__getitem__)  # stable: ties keep the order
                batches += [by_length[i: i + size] for i in range(0, len(by_length), size)]
            # only the last pool can end in a short batch; it stays last, so batches stay aligned
            short = batches.pop() if len(batches[-1]) < size else None
            seed = np.random.SeedSequence([self.base.seed, epoch, 1]).generate_state(1, dtype=np.uint64)[0]
            shuffled = torch.randperm(len(batches), generator=torch.Generator().manual_seed(int(seed))).tolist()
            order = [i for b in [*(batches[k] for k in shuffled), *([short] if short else [])] for i in b]
        return order + order[: -len(order) % self.num_replicas]

    def __len__(self) -> int:
        return -(-self.base.n // self.num_replicas)

    def __iter__(self):
        # drawn at the first batch, as ResumableSampler's (a resumed run sets the epoch late)
        start, self.base.start = self.base.start, 0
        yield from self.order(self.base.epoch)[start + self.rank:: self.num_replicas]


class EvalShardSampler(DistributedSampler):
    """Evaluation questions rank, rank + N, ...: every question in exactly one process, none
    repeated (DistributedSampler would pad with repeats, which EM/F1 would count twice)."""

    def __init__(self, n: int, rank: int = 0, num_replicas: int = 1) -> None:  # no process group needed
        self.n, self.rank, self.num_replicas = n, rank, num_replicas
        self.shuffle, self.drop_last, self.epoch, self.seed = False, False, 0, 0

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))

    def __iter__(self):
        return iter(range(self.rank, self.n, self.num_replicas))


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Of the context positions of these batches (each padded to its longest), the share that is padding."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / padded


def _loud(message: str) -> None:
    bar = "!" * 78
    print(f"{bar}\n{message}\n{bar}", file=sys.stderr)


class SquadDataModule(L.LightningDataModule):
    def __init__(
        self,
        source: Literal["hub", "local", "embedded"] = "hub",
        hub_id: str = SQUAD_REPO,
        hub_revision: str = SQUAD_REVISION,
        hub_cache_dir: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        dev_split_articles: int | None = None,
        max_train_questions: int | None = None,
        max_eval_questions: int | None = None,
        max_context_tokens: int = 400,
        max_question_tokens: int = 30,
        max_word_chars: int = 16,
        word_min_count: int = 1,
        char_min_count: int = 1,
        word_vectors: Literal["glove", "random"] = "glove",
        glove_path: str | None = None,
        glove_revision: str = GLOVE_REVISION,
        glove_member: str = GLOVE_MEMBER,
        batch_size: int = 60,
        eval_batch_size: int = 100,
        length_buckets: int | None = 100,
        shuffle_seed: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        """
        Args:
            source: hub (rajpurkar/squad's parquet files at hub_revision, from the Hugging Face
                cache: `python -m reproduce fetch squad`), local (official JSON files) or
                embedded (the dev-v1.1 shipped in the package, sha256-checked; no train split).
            hub_revision: the commit of hub_id read (default: the pin of hub_files.py).
            hub_cache_dir: the Hugging Face Hub cache (default: HF_HOME's).
            train_file, validation_file: the official JSON files for source=local (.json or .json.gz);
                source=embedded takes train_file only.
            dev_split_articles: smoke runs only: train on the first N articles of the validation
                file and evaluate on the others (no train file needed). Not SQuAD results.
            max_train_questions, max_eval_questions: a fixed random sample (seed 0) of that many
                questions (None: all).
            max_context_tokens, max_question_tokens: caps (see the long-context policy above).
            max_word_chars: characters per word seen by the char CNN (BiDAF: 16).
            word_min_count, char_min_count: training-set frequency a word / character needs to
                get its own id (others are <unk>).
            word_vectors: glove (BiDAF's: words of any split that GloVe knows join the vocabulary;
                their vectors stay fixed in training) or random (trained from random; results and
                tables say so: not comparable with BiDAF's).
            glove_path: the GloVe file: glove.6B.zip (the Hub's or Stanford's, each checked by its
                size and hash), or a text file in the glove.6B.*d.txt format (plain or .gz).
                Default: glove.6B.zip of stanfordnlp/glove at glove_revision, from the Hugging Face
                cache (`python -m reproduce fetch squad`).
            glove_member: the file of the zip read, in place (BiDAF: glove.6B.100d.txt).
            batch_size, eval_batch_size: questions per batch (BiDAF: 60); with several processes
                (DDP) batch_size is the global batch, split evenly among them.
            length_buckets: batches per pool sorted by context length (see above); null: plain
                shuffled batches.
            shuffle_seed: the training questions come in a new order every epoch, a function of
                (shuffle_seed, epoch) alone, so that a run resumed mid-epoch sees the same
                batches (default: the run's seed_everything).
        """
        super().__init__()
        for name, value in (("max_context_tokens", max_context_tokens), ("max_question_tokens", max_question_tokens),
                            ("max_word_chars", max_word_chars), ("batch_size", batch_size),
                            ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise UserError(f"data.{name} must be at least 1, got {value}")
        for name, value in (("dev_split_articles", dev_split_articles),
                            ("max_train_questions", max_train_questions),
                            ("max_eval_questions", max_eval_questions)):
            if value is not None and value < 1:
                raise UserError(f"data.{name} must be at least 1 (or null), got {value}")
        if shuffle_seed is not None and shuffle_seed < 0:
            raise UserError(f"data.shuffle_seed must be >= 0 (or null), got {shuffle_seed}")
        if length_buckets is not None and length_buckets < 1:
            raise UserError(f"data.length_buckets must be at least 1 (or null), got {length_buckets}")
        if word_vectors == "random" and glove_path:
            raise UserError(f"data.word_vectors=random with data.glove_path={glove_path}: drop one of them")
        self.save_hyperparameters()
        self._train_sampler = SquadTrainSampler()
        self._ready = False
        self.stats: dict = {}

    # ---- building the splits ------------------------------------------------------------

    def _splits(self):
        hp = self.hparams
        ds = load_squad(hp.source, hp.hub_id, hp.train_file, hp.validation_file, hp.cache_dir, hp.hub_revision,
                        hp.hub_cache_dir)
        if hp.dev_split_articles is not None:
            titles = list(dict.fromkeys(ds["validation"]["title"]))  # article order of the file
            if hp.dev_split_articles >= len(titles):
                raise UserError(f"data.dev_split_articles={hp.dev_split_articles} leaves no article to "
                                f"evaluate on: the validation file has {len(titles)} articles")
            train_titles = set(titles[: hp.dev_split_articles])
            self.stats["train_articles"] = titles[: hp.dev_split_articles]
            self.stats["eval_articles"] = titles[hp.dev_split_articles:]
            return (ds["validation"].filter(lambda r: r["title"] in train_titles),
                    ds["validation"].filter(lambda r: r["title"] not in train_titles))
        if "train" not in ds:
            raise UserError("no training data: give data.train_file (train-v1.1.json), use data.source=hub, "
                            "or, for a smoke run only, data.dev_split_articles=N (trains on dev articles)")
        return ds["train"], ds["validation"]

    def _drop_mismatched_answers(self, rows, split: str):
        kept = rows.filter(answers_match_context)
        skipped = len(rows) - len(kept)
        self.stats[f"{split}_skipped_answer_mismatch"] = skipped
        if skipped:
            first = next(r["id"] for r in rows if not answers_match_context(r))
            warnings.warn(f"{split}: {skipped} question(s) skipped because an answer_start does not point "
                          f"at its answer text (first: id {first})", UserWarning, stacklevel=2)
        return kept

    @staticmethod
    def _sample(rows, n: int | None):
        return rows if n is None or n >= len(rows) else rows.shuffle(seed=0).select(range(n))

    def glove_file(self) -> Path | None:
        """The GloVe file to read, checked (None: random vectors); without it, a UserError naming
        the fetch command."""
        hp = self.hparams
        if hp.word_vectors == "random":
            return None
        if not hp.glove_path:
            spec = glove_zip(hp.glove_revision)
            return verified(cached(spec, hp.hub_cache_dir), spec)
        path = Path(hp.glove_path).expanduser()
        size = path.stat().st_size if path.is_file() else None
        for known in (GLOVE_ZIP, STANFORD_GLOVE_ZIP):  # told apart by size, each then by its own hash
            if path.suffix == ".zip" and size == known.size:
                return verified(path, known, shown_as=f"data.glove_path ({known.repo_id}'s glove.6B.zip)")
        return path

    def _prepare(self) -> None:
        if self._ready:
            return
        hp = self.hparams
        glove_file = self.glove_file()  # before the data: a missing file stops the run at once
        train, evaluation = self._splits()
        train = self._sample(self._drop_mismatched_answers(train, "train"), hp.max_train_questions)
        evaluation = self._sample(self._drop_mismatched_answers(evaluation, "eval"), hp.max_eval_questions)
        tok = {"batched": True, "fn_kwargs": {"max_context": hp.max_context_tokens,
                                              "max_question": hp.max_question_tokens}}
        train = train.map(_tokenize_batch, desc="tokenize train", **tok)
        evaluation = evaluation.map(_tokenize_batch, desc="tokenize eval", **tok)
        n = len(train)
        train = train.filter(lambda r: r["answer_span"][0] >= 0 and r["answer_span"][1] < hp.max_context_tokens)
        self.stats.update(train_dropped_answer_beyond_cap=n - len(train), train_questions=len(train),
                          eval_questions=len(evaluation))
        if not len(train) or not len(evaluation):
            raise UserError(f"{len(train)} training and {len(evaluation)} evaluation questions are left; "
                            "raise data.max_context_tokens or the question counts")
        self._build_vocabularies(train, evaluation, glove_file)
        self.train_set = SquadExamples(train, self.word_index, self.char_index, hp.max_word_chars)
        self.eval_set = SquadExamples(evaluation, self.word_index, self.char_index, hp.max_word_chars)
        self._ready = True
        if hp.dev_split_articles is not None:
            _loud(f"SMOKE DATA: training on {len(train)} questions of the first {hp.dev_split_articles} DEV "
                  f"articles, evaluating on {len(evaluation)} questions of the other "
                  f"{len(self.stats['eval_articles'])} dev articles.\nThe SQuAD train split is not used: "
                  "these EM/F1 numbers check the pipeline and are NOT comparable to SQuAD results.")

    def _build_vocabularies(self, train, evaluation, glove_file: Path | None) -> None:
        from .glove import read_glove

        hp = self.hparams
        words, chars = Counter(), Counter()
        for tokens in (*train["context_tokens"], *train["question_tokens"]):
            words.update(t.lower() for t in tokens)
            chars.update(c for t in tokens for c in t[: hp.max_word_chars])
        self.glove: dict[str, list[float]] = {}
        self.glove_dim: int | None = None
        if glove_file is not None:
            # BiDAF's rule: every word GloVe knows is in the vocabulary (its vector is fixed), so
            # evaluation words unseen in training are not <unk>
            seen = set(words)
            for tokens in (*evaluation["context_tokens"], *evaluation["question_tokens"]):
                seen.update(t.lower() for t in tokens)
            self.glove, self.glove_dim = read_glove(glove_file, seen, hp.glove_member)
            self._glove_source = (f"{glove_file}:{hp.glove_member}" if glove_file.suffix == ".zip"
                                  else str(glove_file))
        self.word_vocab = build_vocab(words, hp.word_min_count, set(self.glove))
        self.char_vocab = build_vocab(chars, hp.char_min_count)
        self.word_index = {w: i for i, w in enumerate(self.word_vocab)}
        self.char_index = {c: i for i, c in enumerate(self.char_vocab)}

    # ---- what the model and the reports need ----------------------------------------------

    @property
    def word_vocab_size(self) -> int:
        self._prepare()
        return len(self.word_vocab)

    @property
    def char_vocab_size(self) -> int:
        self._prepare()
        return len(self.char_vocab)

    @property
    def train_on_dev(self) -> bool:
        return self.hparams.dev_split_articles is not None

    def pretrained_word_vectors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(vectors (V, d), known (V,) bool) for the GloVe words of the vocabulary; None without GloVe."""
        self._prepare()
        if not self.glove:
            return None
        vectors = torch.zeros(len(self.word_vocab), self.glove_dim)
        known = torch.zeros(len(self.word_vocab), dtype=torch.bool)
        for i, w in enumerate(self.word_vocab):
            if w in self.glove:
                vectors[i] = torch.tensor(self.glove[w])
                known[i] = True
        return vectors, known

    @property
    def random_word_vectors(self) -> bool:
        return self.hparams.word_vectors == "random"

    def word_vectors_note(self) -> str:
        self._prepare()
        if self.random_word_vectors:
            return ("RANDOM word vectors (data.word_vectors=random, no GloVe): word embeddings are randomly "
                    "initialised and trained; NOT comparable with BiDAF's results, which use GloVe 6B 100d")
        known = sum(w in self.glove for w in self.word_vocab)
        return (f"GloVe {self.glove_dim}d from {self._glove_source}: {known} of {len(self.word_vocab)} "
                "vocabulary words, fixed; the others trained from random")

    def setup(self, stage: str | None = None) -> None:
        self._prepare()

    def resume_train_at(self, batches: int) -> None:
        """The next pass over the training set starts after its first `batches` batches (a run
        resumed mid-epoch; global batches, the same count in every process)."""
        self._train_sampler.resume_at(batches * self.hparams.batch_size)

    def _processes(self) -> tuple[int, int]:
        """(this process's rank, the number of processes): (0, 1) outside a distributed trainer."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_lengths(self) -> list[int]:
        return [len(tokens) for tokens in self.train_set.rows["context_tokens"]]

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        rank, world = self._processes()
        if hp.batch_size % world:
            raise UserError(f"data.batch_size={hp.batch_size} (the global batch) does not split evenly among "
                            f"{world} processes; set data.batch_size to a multiple of {world}")
        # seed_everything (LightningCLI) sets PL_GLOBAL_SEED before the data module is built
        seed = hp.shuffle_seed if hp.shuffle_seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        self._train_sampler.configure(self.train_lengths(), hp.batch_size, hp.length_buckets, seed, rank, world)
        # private generators: iterating must not draw from the global RNG (the gates' noise and
        # dropout), which a resumed run restores as it stood at the checkpoint
        return DataLoader(self.train_set, batch_size=hp.batch_size // world, sampler=self._train_sampler,
                          collate_fn=collate_squad, generator=torch.Generator())

    def val_dataloader(self) -> DataLoader:
        rank, world = self._processes()
        return DataLoader(self.eval_set, batch_size=self.hparams.eval_batch_size,
                          sampler=EvalShardSampler(len(self.eval_set), rank, world),
                          collate_fn=collate_squad, generator=torch.Generator())
