"""SQuAD metrics against the official v1.1 rules, and the training command end to end (tiny budget)."""

import io
import json
import re
import string
from collections import Counter

import pytest
import torch
from conftest import REPO

from lightning_modules.squad.squad_data import EMBEDDED_DEV, SquadDataModule, collate_squad, span_text
from lightning_modules.squad.squad_export import load_exported_bidaf
from reproduce.train_squad import main as train_main

CONFIGS = REPO / "reproduce" / "configs"
DEV = EMBEDDED_DEV
TINY_DATA = [f"--data.validation_file={DEV}", "--data.source=local", "--data.dev_split_articles=2",
             "--data.max_train_questions=60", "--data.max_eval_questions=40", "--data.max_context_tokens=120",
             "--data.batch_size=20"]
TINY = ["--trainer.max_epochs=2", "--model.word_dim=12", "--model.char_channels=6", "--model.hidden_size=8",
        "--wandb=disabled", "--trainer.enable_progress_bar=false", "--latency_questions=5", *TINY_DATA]


# ---- the official v1.1 scoring, re-implemented plainly from its definition ---------------------

def _normalise(text: str) -> str:
    """Lower case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(prediction: str, gold: str) -> float:
    pred, ref = _normalise(prediction).split(), _normalise(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def official_scores(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    """EM and F1 in percent: per question the best over its gold answers, averaged over questions."""
    em = [max(float(_normalise(predictions[q]) == _normalise(g)) for g in golds[q]) for q in golds]
    f1 = [max(_f1(predictions[q], g) for g in golds[q]) for q in golds]
    return {"em": 100 * sum(em) / len(em), "f1": 100 * sum(f1) / len(f1)}


FIXTURES = [
    ("the Denver Broncos", ["Denver Broncos", "Broncos"]),
    ("Denver Broncos!", ["denver broncos"]),
    ("An apple a day", ["apple day", "a pear"]),
    ("Broncos of Denver", ["Denver Broncos"]),
    ("", ["something"]),
    ("theater", ["ater"]),
    ("\u201cquoted\u201d", ["quoted"]),  # typographic quotes are not in string.punctuation
    ("1,000", ["1000"]),
    ("Paris and Lyon", ["Paris", "France", "Paris, France"]),
    ("one two two three", ["two two two"]),
    ("A", ["the answer"]),
]


def test_torchmetrics_squad_agrees_with_the_official_rules():
    from torchmetrics.text import SQuAD

    metric = SQuAD()
    preds = [{"prediction_text": p, "id": str(i)} for i, (p, _) in enumerate(FIXTURES)]
    targets = [{"answers": {"text": g, "answer_start": [0] * len(g)}, "id": str(i)}
               for i, (_, g) in enumerate(FIXTURES)]
    metric.update(preds[:5], targets[:5])  # batches accumulate
    metric.update(preds[5:], targets[5:])
    got = metric.compute()
    want = official_scores({str(i): p for i, (p, _) in enumerate(FIXTURES)},
                           {str(i): g for i, (_, g) in enumerate(FIXTURES)})
    assert float(got["exact_match"]) == pytest.approx(want["em"], abs=1e-4)
    assert float(got["f1"]) == pytest.approx(want["f1"], abs=1e-4)
    # the fixtures exercise partial credit, not only all-or-nothing
    assert 0 < want["em"] < want["f1"] < 100


def test_the_one_known_difference_a_prediction_and_gold_that_both_normalise_to_nothing():
    """The official v1.1 F1 is 0 when nothing is left after normalisation ("the" vs "."); torchmetrics
    gives 100 (SQuAD 2.0's rule). EM agrees (both empty strings are equal). In dev-v1.1 only 3 of
    34,726 gold answers normalise to nothing (all "."), so F1 can differ by at most 3/10,570 of a point
    x 100; the official evaluator run on predictions.json is the reference."""
    from torchmetrics.functional.text.squad import squad

    got = squad([{"prediction_text": "the", "id": "q"}], [{"answers": {"text": ["."], "answer_start": [0]}, "id": "q"}])
    assert official_scores({"q": "the"}, {"q": ["."]}) == {"em": 100.0, "f1": 0.0}
    assert float(got["exact_match"]) == 100.0 and float(got["f1"]) == 100.0


# ---- end to end ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    runs = {}
    for name in ("dense", "l0"):
        run_dir = tmp_path_factory.mktemp("squad") / name
        code = train_main(["--config", str(CONFIGS / f"squad_smoke_{name}.yaml"), "--run_dir", str(run_dir), *TINY])
        assert code == 0
        runs[name] = run_dir
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dense", "l0"])
def test_run_writes_result_predictions_and_an_export_that_reproduces_them(finished_runs, name):
    run_dir = finished_runs[name]
    result = json.loads((run_dir / "result.json").read_text())
    for key in ("method", "lambda", "seed", "dataset", "profile", "git_commit", "config_path", "metrics",
                "neurons_kept", "neurons_total", "params", "flops_per_question", "wall_time_s", "export_path",
                "predictions_path", "evaluation", "word_vectors", "latency_batch1", "expected_l0"):
        assert key in result, key
    assert result["dataset"] == "squad" and result["method"] == ("none" if name == "dense" else "l0")
    assert result["evaluation"]["train_on_dev"] and "NOT comparable" in result["evaluation"]["note"]
    assert "RANDOM word vectors" in result["word_vectors"] and result["evaluation"]["random_word_vectors"]
    kept = result["neurons_kept"]
    assert len(kept["hidden"]) == len(kept["input"]) == 8 and kept["lstm_names"][0] == "contextual.fwd"
    assert result["params"]["after"] <= result["params"]["before"]
    assert result["latency_batch1"]["questions"] == 5

    # predictions.json: every evaluated question, scored by the official rules as result.json says
    predictions = json.loads((run_dir / result["predictions_path"]).read_text())
    dm = SquadDataModule(source="local", validation_file=str(DEV), dev_split_articles=2, max_train_questions=60,
                         max_eval_questions=40, max_context_tokens=120, word_vectors="random")
    dm.setup()
    golds = {r["id"]: r["answers"]["text"] for r in dm.eval_set.rows}
    assert set(predictions) == set(golds)
    scores = official_scores(predictions, golds)
    assert scores["em"] == pytest.approx(result["metrics"]["em"], abs=1e-3)
    assert scores["f1"] == pytest.approx(result["metrics"]["f1"], abs=1e-3)

    # the export alone, as plain PyTorch, answers every question the same way
    from lightning_modules.squad.bidaf import decode_spans

    model, config = load_exported_bidaf(run_dir / result["export_path"])
    assert [config["hidden_sizes"][n] for n in kept["lstm_names"]] == kept["hidden"]
    assert config["params"] == result["params"]["after"] == sum(p.numel() for p in model.parameters())
    assert config["word_vocab"] == dm.word_vocab
    for start in range(0, len(dm.eval_set), 16):
        batch = collate_squad([dm.eval_set[i] for i in range(start, min(start + 16, len(dm.eval_set)))])
        with torch.no_grad():
            first, last = decode_spans(*model(batch), batch["context_mask"], config["max_answer_tokens"])
        for b, qid in enumerate(batch["id"]):
            assert span_text(batch["context"][b], batch["offsets"][b], int(first[b]), int(last[b])) == predictions[qid]

    # the checkpoint holds the weight average that evaluation used
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert any(k.startswith("ema_model.") for k in checkpoint["state_dict"])
    assert int(checkpoint["state_dict"]["ema_updates"]) == checkpoint["global_step"] > 0


@pytest.mark.slow
def test_rerun_of_a_finished_run_is_refused(finished_runs, capsys):
    code = train_main(["--config", str(CONFIGS / "squad_smoke_dense.yaml"), "--run_dir", str(finished_runs["dense"]),
                       *TINY])
    assert code == 2 and "already holds a finished run" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(CONFIGS.glob("squad_paper_*.yaml")), ids=lambda p: p.stem)
def test_paper_configs_run_shrunk(tmp_path, config):
    header = [line for line in config.read_text().splitlines() if line.startswith("#")]
    assert any(line.startswith("# Command: python -m reproduce.train_squad") for line in header)
    extra = ["--model.target_neurons=[4,4,4,4,4,4]"] if "magnitude" in config.stem else []
    code = train_main(["--config", str(config), "--run_dir", str(tmp_path / "run"), *TINY,
                       "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--data.word_vectors=random",
                       "--model.word_dim=12", *extra])
    assert code == 0
    assert json.loads((tmp_path / "run" / "result.json").read_text())["config_path"] == str(config)


@pytest.mark.slow
def test_resume_continues_training_and_the_weight_average(tmp_path):
    """A run stopped after one epoch resumes from last.ckpt: the step count, the average's update
    count and the log of the first epoch carry on."""
    import csv

    config = str(CONFIGS / "squad_smoke_dense.yaml")
    run_dir = tmp_path / "run"
    assert train_main(["--config", config, "--run_dir", str(run_dir), *TINY, "--trainer.max_epochs=1"]) == 0
    steps_per_epoch = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    (run_dir / "result.json").unlink()  # as if it had been stopped before the end
    assert train_main(["--config", config, "--run_dir", str(run_dir), *TINY, "--trainer.max_epochs=2"]) == 0
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2 * steps_per_epoch
    assert int(checkpoint["state_dict"]["ema_updates"]) == 2 * steps_per_epoch
    assert json.loads((run_dir / "result.json").read_text())["epochs"] == 2
    with open(run_dir / "metrics.csv") as f:
        evaluated = [row["epoch"] for row in csv.DictReader(f) if row.get("f1")]
    # the first invocation's rows survive the resume: epoch 0 and its final evaluation, then epoch 1 and the final one
    assert evaluated == ["0", "1", "1", "2"]


def _tiny_squad_json(path, answer_start=0):
    path.write_text(json.dumps({"version": "1.1", "data": [
        {"title": t, "paragraphs": [{"context": "Tokyo is big.", "qas": [
            {"id": f"{t}{i}", "question": "What is big?", "answers": [{"text": "Tokyo", "answer_start": answer_start}]}
            for i in range(3)]}]} for t in ("A", "B")]}))
    return str(path)


NOT_SQUAD = '{"data": 3}'
LOCAL = "--data.source=local"  # the smoke config reads the embedded dev set; these cases bring their own file
BAD_INPUTS = {
    "missing file": (lambda t: [LOCAL, f"--data.validation_file={t}/missing.json"], "missing.json not found"),
    "not SQuAD-shaped JSON": (lambda t: [LOCAL, f"--data.validation_file={_write(t / 'x.json', NOT_SQUAD)}"],
                              "is not SQuAD v1.1 JSON: the top level has no 'data' list"),
    "GloVe of another size": (lambda t: [LOCAL, f"--data.validation_file={_tiny_squad_json(t / 's.json')}",
                                         f"--data.glove_path={_write(t / 'g.txt', 'tokyo 1 2 3')}",
                                         "--data.word_vectors=glove"],
                              "has 3-d vectors but model.word_dim is 50; set model.word_dim=3"),
    "every answer_start wrong": (lambda t: [LOCAL, f"--data.validation_file={_tiny_squad_json(t / 's.json', 4)}"],
                                 "0 training and 0 evaluation questions are left"),
    "a dev file beside the embedded one": (lambda t: [f"--data.validation_file={_tiny_squad_json(t / 's.json')}"],
                                           "drop it, or use data.source=local"),
    "unknown key": (lambda t: ["--model.lamda=1e-6"], "lamda"),
    "negative lambda": (lambda t: ["--model.reg_lambda=-1"], "reg_lambda must be >= 0"),
}


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_ends_in_one_clear_line(tmp_path, capsys, case):
    make_args, expected = BAD_INPUTS[case]
    code = train_main(["--config", str(CONFIGS / "squad_smoke_l0.yaml"), "--run_dir", str(tmp_path / "run"),
                       "--wandb=disabled", "--data.dev_split_articles=1", "--data.max_eval_questions=20",
                       *make_args(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, err
    assert not (tmp_path / "run" / "result.json").exists()


@pytest.mark.slow
def test_a_run_on_random_word_vectors_says_so_above_its_table(finished_runs, tmp_path):
    from reproduce.report.report import write_report
    from reproduce.run.train_squad import RANDOM_VECTORS_NOTE

    result = json.loads((finished_runs["dense"] / "result.json").read_text())
    assert result["evaluation"]["random_word_vectors"] and RANDOM_VECTORS_NOTE in result["evaluation"]["note"]
    # as a paper-scale run would have it: the SQuAD train split, only the vectors random
    result["evaluation"].update(train_on_dev=False, note=RANDOM_VECTORS_NOTE)
    (tmp_path / "runs" / "dense").mkdir(parents=True)
    (tmp_path / "runs" / "dense" / "result.json").write_text(json.dumps(result))
    md = write_report("squad", tmp_path / "runs", tmp_path / "tables", echo=io.StringIO())["markdown"].read_text()
    assert f"**NOTE: {RANDOM_VECTORS_NOTE}.**" in md
