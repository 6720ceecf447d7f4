"""SQuAD loading, tokenisation with character offsets, vocabularies, batching and bad input."""

import gzip
import json

import pytest
import torch

from lightning_modules.errors import UserError
from lightning_modules.squad.glove import read_glove
from lightning_modules.squad.squad_data import (
    EMBEDDED_DEV,
    SquadDataModule,
    answer_token_span,
    collate_squad,
    load_squad,
    read_squad_json,
    span_text,
    tokenize_with_offsets,
)

DEV = EMBEDDED_DEV


def _squad_file(path, articles):
    path.write_text(json.dumps({"version": "1.1", "data": articles}))
    return str(path)


def _article(title, context, qas):
    return {"title": title, "paragraphs": [{"context": context, "qas": [
        {"id": qid, "question": q, "answers": [{"text": t, "answer_start": s} for t, s in answers]}
        for qid, q, answers in qas]}]}


def test_tokens_carry_exact_character_spans():
    text = "Denver's  Broncos (AFC) won 24–10, in São Paulo?"
    tokens, spans = tokenize_with_offsets(text)
    assert tokens == ["Denver", "'", "s", "Broncos", "(", "AFC", ")", "won", "24", "–", "10", ",", "in",
                      "São", "Paulo", "?"]
    assert all(text[s:e] == t for t, (s, e) in zip(tokens, spans))


def test_answer_span_covers_stripped_answer_and_mid_token_answers_widen():
    context = "The golden  age of 1990s rock."
    _, offsets = tokenize_with_offsets(context)
    # a gold answer with surrounding spaces maps to exactly its words
    first, last = answer_token_span(offsets, 3, " golden  age ")
    assert span_text(context, offsets, first, last) == "golden  age"
    # an answer that starts or ends inside a token maps to the covering tokens (a superset)
    first, last = answer_token_span(offsets, 4, "gold")
    assert span_text(context, offsets, first, last) == "golden"
    first, last = answer_token_span(offsets, 19, "1990")
    assert span_text(context, offsets, first, last) == "1990s"
    assert answer_token_span(offsets, 11, " ") is None


def test_offsets_reproduce_every_dev_answer():
    """All 34,726 answers of dev-v1.1: the covering tokens give back the answer text exactly, except
    the 76 answers that start or end inside a token, where they give a superset containing it."""
    rows = read_squad_json(DEV)
    assert len(rows) == 10_570
    exact, widened, answers = 0, 0, 0
    for row in rows:
        _, offsets = tokenize_with_offsets(row["context"])
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            answers += 1
            first, last = answer_token_span(offsets, start, text)
            assert first <= last
            got = span_text(row["context"], offsets, first, last)
            if got == text.strip():
                exact += 1
            else:
                # the covering span contains the answer where the answer says it is, and no more
                # than the tokens the answer touches
                lo = offsets[first][0]
                assert row["context"][start: start + len(text)].strip() in got
                assert lo <= start + len(text) - len(text.lstrip())
                widened += 1
    assert answers == 34_726
    assert widened == 76 and exact == answers - 76


def test_read_squad_json_flattens_to_the_hub_schema(tmp_path):
    path = _squad_file(tmp_path / "s.json", [_article("T", "Paris is in France.", [
        ("q1", "Where is Paris?", [("France", 12), ("in France", 9)])])])
    rows = read_squad_json(path)
    assert rows == [{"id": "q1", "title": "T", "context": "Paris is in France.", "question": "Where is Paris?",
                     "answers": {"text": ["France", "in France"], "answer_start": [12, 9]}}]
    gz = tmp_path / "s.json.gz"
    gz.write_bytes(gzip.compress((tmp_path / "s.json").read_bytes()))
    assert read_squad_json(gz) == rows


@pytest.mark.parametrize("content,message", [
    ('{"data": [{"title": "x"}]}', r"data\[0\] has no 'paragraphs' list"),
    ('{"version": "1.1"}', "has no 'data' list"),
    ('[1, 2]', "has no 'data' list"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "q"}]}]}]}',
     r"qas\[0\] needs 'id', 'question' and an 'answers' list"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "q", '
     '"answers": [{"text": "c", "answer_start": "0"}]}]}]}]}', r"answers\[0\] needs 'text'"),
    ('{"data": []}', "holds no questions"),
    ('{"data": [', "is not valid JSON"),
])
def test_not_squad_shaped_json_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_squad_json(path)


def test_missing_and_damaged_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_squad_json(tmp_path / "nope.json")
    (tmp_path / "t.json.gz").write_bytes(gzip.compress(b'{"data": []}' * 50)[:20])
    with pytest.raises(UserError, match="not a readable gzip file"):
        read_squad_json(tmp_path / "t.json.gz")
    with pytest.raises(UserError, match="needs data.validation_file"):
        load_squad("local")


def test_embedded_source_refuses_a_second_dev_file(tmp_path):
    with pytest.raises(UserError, match=r"data\.source=embedded .* cannot take data\.validation_file"):
        load_squad("embedded", validation_file=str(tmp_path / "dev.json"))


def test_hub_source_without_the_files_in_the_cache_names_the_fetch_command(tmp_path):
    with pytest.raises(UserError, match=r"no-such-user/no-such-squad/plain_text/train.* is not in the Hugging Face "
                                        r"cache .*python -m reproduce fetch squad"):
        load_squad("hub", hub_id="no-such-user/no-such-squad", hub_cache_dir=str(tmp_path))


def _small_module(tmp_path, **kwargs):
    articles = [
        _article("A1", "Alpha beta gamma delta. The answer is forty two.",
                 [("a1", "What is the answer?", [("forty two", 38)]),
                  ("a2", "Which letter?", [("gamma", 11)]),
                  ("bad", "Broken offset?", [("delta", 0)])]),  # answer_start does not point at its text
        _article("A2", "Tokyo is the capital of Japan.", [("b1", "Capital of Japan?", [("Tokyo", 0)])]),
        _article("A3", "Rivers flow into the sea near Lisbon.",
                 [("c1", "Where?", [("Lisbon", 30), ("near Lisbon", 25)])]),
    ]
    path = _squad_file(tmp_path / "dev.json", articles)
    return SquadDataModule(source="local", validation_file=path,
                           **{"word_vectors": "glove" if kwargs.get("glove_path") else "random", **kwargs})


def test_dev_split_trains_on_some_articles_evaluates_on_the_others_and_says_so(tmp_path, capsys):
    dm = _small_module(tmp_path, dev_split_articles=1, batch_size=2)
    with pytest.warns(UserWarning, match=r"1 question\(s\) skipped because an answer_start does not point"):
        dm.setup()
    assert dm.stats["train_skipped_answer_mismatch"] == 1
    assert [r["id"] for r in dm.train_set.rows] == ["a1", "a2"]
    assert [r["id"] for r in dm.eval_set.rows] == ["b1", "c1"]
    assert dm.train_on_dev and dm.stats["train_articles"] == ["A1"] and dm.stats["eval_articles"] == ["A2", "A3"]
    err = capsys.readouterr().err
    assert "SMOKE DATA" in err and "NOT comparable to SQuAD results" in err
    batch = collate_squad([dm.train_set[0], dm.train_set[1]])
    # the training target's tokens give back the gold answer
    for b in range(2):
        first, last = int(batch["start"][b]), int(batch["end"][b])
        assert span_text(batch["context"][b], batch["offsets"][b], first, last) == batch["answers"][b]["text"][0]
    assert batch["context_mask"].sum(1).tolist() == [11, 11]
    assert batch["question_mask"].tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert (batch["question_words"][1, 3:] == 0).all() and (batch["question_chars"][1, 3:] == 0).all()
    assert batch["context_chars"].shape[2] == max(len(t) for t in ("Alpha", "answer", "gamma", "delta"))


def test_context_cap_drops_training_answers_beyond_it_but_never_evaluation_questions(tmp_path):
    dm = _small_module(tmp_path, dev_split_articles=1, max_context_tokens=5)
    with pytest.warns(UserWarning):
        dm.setup()
    assert [r["id"] for r in dm.train_set.rows] == ["a2"]  # "forty two" ends at token 9
    assert dm.stats["train_dropped_answer_beyond_cap"] == 1
    assert len(dm.eval_set) == 2  # "Lisbon" is token 6, beyond the cap, and still evaluated
    assert all(len(r["context_offsets"]) <= 5 for r in dm.eval_set.rows)


def test_no_train_split_without_dev_split_is_a_clear_error(tmp_path):
    dm = _small_module(tmp_path)
    with pytest.raises(UserError, match="no training data: give data.train_file"):
        dm.setup()
    with pytest.raises(UserError, match="leaves no article to evaluate on"):
        _small_module(tmp_path, dev_split_articles=3).setup()


def test_glove_words_join_the_vocabulary_and_give_fixed_vectors(tmp_path):
    glove = tmp_path / "glove.txt"
    glove.write_text("the 0.1 0.2 0.3\ntokyo 1 2 3\nlisbon 4 5 6\nunused 7 8 9\n")
    dm = _small_module(tmp_path, dev_split_articles=1, glove_path=str(glove))
    with pytest.warns(UserWarning):
        dm.setup()
    # "lisbon" and "tokyo" occur only in evaluation articles, and join through GloVe
    assert {"lisbon", "tokyo", "the"} <= set(dm.word_vocab) and "unused" not in dm.word_vocab
    vectors, known = dm.pretrained_word_vectors()
    assert int(known.sum()) == 3
    assert torch.equal(vectors[dm.word_vocab.index("lisbon")], torch.tensor([4.0, 5.0, 6.0]))
    assert "GloVe 3d" in dm.word_vectors_note()
    assert dm.word_vocab[:2] == ["<pad>", "<unk>"]


def test_without_glove_the_run_says_embeddings_are_random(tmp_path):
    dm = _small_module(tmp_path, dev_split_articles=1)
    with pytest.warns(UserWarning):
        dm.setup()
    assert dm.pretrained_word_vectors() is None
    assert "RANDOM word vectors" in dm.word_vectors_note() and "NOT comparable" in dm.word_vectors_note()


@pytest.mark.parametrize("content,message", [
    ("the 0.1 0.2\ncat 0.3\n", "has 1 numbers, the first line has 2"),
    ("the 0.1 x\n", "not a number"),
    ("", "is empty"),
])
def test_damaged_glove_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "g.txt"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_glove(path, {"the", "cat"})
    with pytest.raises(UserError, match="not found"):
        read_glove(tmp_path / "missing.txt", {"the"})
