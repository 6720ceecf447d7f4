"""SQuAD v1.1 through Hugging Face `datasets`: loading, tokenisation with character offsets, batching.

Sources (all give the Hub schema: id, title, context, question, answers{text, answer_start}):
  hub       a Hub dataset id (default rajpurkar/squad; needs a network or a warm HF cache)
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
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from ..resumable import ResumableSampler

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


def load_squad(source: str = "hub", hub_id: str = "rajpurkar/squad", train_file: str | None = None,
               validation_file: str | None = None, cache_dir: str | None = None):
    """A `datasets.DatasetDict` with the splits that exist (validation always; train if given)."""
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
        try:
            ds = datasets.load_dataset(hub_id, cache_dir=cache_dir)
        except Exception as e:  # network, auth, unknown id: all user-fixable
            raise UserError(f"cannot load Hub dataset {hub_id!r} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); without a network use "
                            "data.source=local with data.validation_file (and data.train_file), or "
                            "data.source=embedded for the shipped dev set") from None
        if "validation" not in ds or any(c not in ds["validation"].column_names for c in COLUMNS):
            raise UserError(f"Hub dataset {hub_id!r} needs a validation split with columns {list(COLUMNS)}; "
                            f"it has {dict(ds.column_names)}")
        return datasets.DatasetDict({s: ds[s].select_columns(list(COLUMNS)) for s in SPLITS if s in ds})
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


def _loud(message: str) -> None:
    bar = "!" * 78
    print(f"{bar}\n{message}\n{bar}", file=sys.stderr)


class SquadDataModule(L.LightningDataModule):
    def __init__(
        self,
        source: Literal["hub", "local", "embedded"] = "hub",
        hub_id: str = "rajpurkar/squad",
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
        glove_path: str | None = None,
        batch_size: int = 60,
        eval_batch_size: int = 100,
        shuffle_seed: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        """
        Args:
            source: hub (rajpurkar/squad; needs a network), local (official JSON files) or
                embedded (the dev-v1.1 shipped in the package, sha256-checked; no train split).
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
            glove_path: GloVe vectors in the glove.6B.*d.txt format (plain or .gz). Words of any
                split that GloVe knows join the vocabulary; their vectors stay fixed in training.
                Without it the word embeddings are random and trainable.
            batch_size, eval_batch_size: questions per batch (BiDAF: 60).
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
        self.save_hyperparameters()
        self._train_sampler = ResumableSampler(shuffle=True)
        self._ready = False
        self.stats: dict = {}

    # ---- building the splits ------------------------------------------------------------

    def _splits(self):
        hp = self.hparams
        ds = load_squad(hp.source, hp.hub_id, hp.train_file, hp.validation_file, hp.cache_dir)
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

    def _prepare(self) -> None:
        if self._ready:
            return
        hp = self.hparams
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
        self._build_vocabularies(train, evaluation)
        self.train_set = SquadExamples(train, self.word_index, self.char_index, hp.max_word_chars)
        self.eval_set = SquadExamples(evaluation, self.word_index, self.char_index, hp.max_word_chars)
        self._ready = True
        if hp.dev_split_articles is not None:
            _loud(f"SMOKE DATA: training on {len(train)} questions of the first {hp.dev_split_articles} DEV "
                  f"articles, evaluating on {len(evaluation)} questions of the other "
                  f"{len(self.stats['eval_articles'])} dev articles.\nThe SQuAD train split is not used: "
                  "these EM/F1 numbers check the pipeline and are NOT comparable to SQuAD results.")

    def _build_vocabularies(self, train, evaluation) -> None:
        from .glove import read_glove

        hp = self.hparams
        words, chars = Counter(), Counter()
        for tokens in (*train["context_tokens"], *train["question_tokens"]):
            words.update(t.lower() for t in tokens)
            chars.update(c for t in tokens for c in t[: hp.max_word_chars])
        self.glove: dict[str, list[float]] = {}
        self.glove_dim: int | None = None
        if hp.glove_path:
            # BiDAF's rule: every word GloVe knows is in the vocabulary (its vector is fixed), so
            # evaluation words unseen in training are not <unk>
            seen = set(words)
            for tokens in (*evaluation["context_tokens"], *evaluation["question_tokens"]):
                seen.update(t.lower() for t in tokens)
            self.glove, self.glove_dim = read_glove(hp.glove_path, seen)
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

    def word_vectors_note(self) -> str:
        self._prepare()
        if not self.glove:
            return ("no GloVe vectors (data.glove_path not set): word embeddings are randomly initialised "
                    "and trained")
        known = sum(w in self.glove for w in self.word_vocab)
        return (f"GloVe {self.glove_dim}d from {self.hparams.glove_path}: {known} of {len(self.word_vocab)} "
                "vocabulary words, fixed; the others trained from random")

    def setup(self, stage: str | None = None) -> None:
        self._prepare()

    def resume_train_at(self, batches: int) -> None:
        """The next pass over the training set starts after its first `batches` batches (a run
        resumed mid-epoch)."""
        self._train_sampler.resume_at(batches * self.hparams.batch_size)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        self._train_sampler.n = len(self.train_set)
        # seed_everything (LightningCLI) sets PL_GLOBAL_SEED before the data module is built
        self._train_sampler.seed = hp.shuffle_seed if hp.shuffle_seed is not None else int(
            os.environ.get("PL_GLOBAL_SEED", 0))
        # private generators: iterating must not draw from the global RNG (the gates' noise and
        # dropout), which a resumed run restores as it stood at the checkpoint
        return DataLoader(self.train_set, batch_size=hp.batch_size, sampler=self._train_sampler,
                          collate_fn=collate_squad, generator=torch.Generator())

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.eval_set, batch_size=self.hparams.eval_batch_size, shuffle=False,
                          collate_fn=collate_squad, generator=torch.Generator())
