"""The training command end to end (tiny budget) and its handling of bad input."""

import csv
import json
import math
import re

import pytest
import torch
from conftest import REPO, run_cli

from lightning_modules.lm.export import load_exported_language_model

SMOKE = str(REPO / "reproduce" / "configs" / "ptb_smoke_l0.yaml")
TINY = ["--trainer.max_epochs=2", "--data.train_tokens=12000", "--model.embedding_dim=24",
        "--model.hidden_sizes=[24,20]"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "l0"
    proc = run_cli("reproduce.train", "--config", SMOKE, "--run_dir", str(run_dir), "--wandb",
                   "offline", "--model.reg_lambda=2e-6", "--model.gate_history_every=10", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


@pytest.mark.slow
def test_fit_writes_result_export_and_logs(finished_run):
    run_dir, _ = finished_run
    result = json.loads((run_dir / "result.json").read_text())
    for key in ("method", "lambda", "seed", "dataset", "profile", "git_commit", "config_path",
                "metrics", "neurons_kept", "params", "flops_per_token", "wall_time_s",
                "export_path", "expected_l0"):
        assert key in result, key
    assert result["method"] == "l0" and result["lambda"] == 2e-6 and result["seed"] == 1
    assert result["config_path"].endswith("ptb_smoke_l0.yaml")
    assert result["train_tokens"] == 12000
    for name in ("val_ppl", "test_ppl"):
        assert math.isfinite(result["metrics"][name]) and 1 < result["metrics"][name] < 10000
    assert result["params"]["after"] <= result["params"]["before"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "wandb").glob("offline-run-*")), "W&B offline run missing"
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {k for row in rows for k, v in row.items() if v}
    for key in ("val_ppl", "kept/hidden_0", "kept/input_1", "size/expected_l0", "size/params",
                "size/flops_per_token", "time/train_s", "test_ppl"):
        assert key in logged, key
    history = [json.loads(line) for line in (run_dir / "gate_history.jsonl").read_text().splitlines()]
    # every 10 steps and at each epoch's end (an epoch is 29 windows of 20 x 20 tokens)
    assert [(h["epoch"], h["step"]) for h in history] == [(0, 10), (0, 20), (0, 29), (1, 30), (1, 40), (1, 50),
                                                          (1, 58)]
    assert [len(p) for p in history[-1]["hidden"]] == [24, 20]
    assert all(0 <= p <= 1 for layer in history[-1]["input"] for p in layer)


@pytest.mark.slow
def test_export_reproduces_the_reported_test_perplexity(finished_run, ptb):
    """Plain PyTorch on the export, over the whole test stream, gives result.json's test_ppl."""
    run_dir, _ = finished_run
    result = json.loads((run_dir / "result.json").read_text())
    model, config = load_exported_language_model(run_dir / result["export_path"])
    assert config["hidden_sizes"] == result["neurons_kept"]["hidden"]
    assert sum(p.numel() for p in model.parameters()) == result["params"]["after"]
    assert config["vocab"] == ptb.vocab
    ids = ptb.token_ids("test")
    steps = 20  # the smoke config's num_steps; Zaremba windows leave the last (n-1) % steps unscored
    nll, count, state = 0.0, 0, None
    with torch.no_grad():
        for start in range(0, (ids.numel() - 1) // steps * steps, steps):
            x, y = ids[start: start + steps], ids[start + 1: start + 1 + steps]
            logits, state = model(x[None], state)
            nll += torch.nn.functional.cross_entropy(logits[0], y, reduction="sum").item()
            count += y.numel()
    assert count == 82_420
    assert math.exp(nll / count) == pytest.approx(result["metrics"]["test_ppl"], rel=1e-5)


@pytest.mark.slow
def test_rerun_of_a_finished_run_is_refused(finished_run):
    run_dir, _ = finished_run
    proc = run_cli("reproduce.train", "--config", SMOKE, "--run_dir", str(run_dir), "--wandb",
                   "disabled", *TINY)
    assert proc.returncode == 2
    assert "already holds a finished run" in proc.stderr


def _corrupt_dir(tmp_path, damage):
    from lightning_modules.lm.ptb_data import EMBEDDED_DIR

    for name in ("train", "valid", "test"):
        data = (EMBEDDED_DIR / f"ptb.{name}.txt.gz").read_bytes()
        if name == "valid":
            data = data[: len(data) // 3] if damage == "truncated" else b"\x1f\x8b" + b"\0" * 64
        (tmp_path / f"ptb.{name}.txt.gz").write_bytes(data)
    return str(tmp_path)


def _empty_dir(tmp_path):
    for name in ("train", "valid", "test"):
        (tmp_path / f"ptb.{name}.txt").write_text("" if name == "test" else "a b c\n")
    return str(tmp_path)


def _modified_embedded_copy(tmp_path, monkeypatch):
    """The shipped PTB files with one word changed in valid: its sha256 no longer matches."""
    import gzip
    import shutil

    from lightning_modules.lm import ptb_data

    for f in ptb_data.EMBEDDED_DIR.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "ptb.valid.txt.gz"
    with gzip.open(path, "rb") as f:
        text = f.read()
    with gzip.open(path, "wb") as f:
        f.write(text.replace(b" the ", b" teh ", 1))
    monkeypatch.setattr(ptb_data, "EMBEDDED_DIR", tmp_path)
    return []


def _write(path, text):
    path.write_text(text)
    return path


QUICK = ["--trainer.max_epochs=2", "--data.train_tokens=12000", "--model.embedding_dim=16",
         "--model.hidden_sizes=[16,12]", "--data.test_batch_size=20", "--trainer.enable_progress_bar=false"]

# name: (extra arguments (from tmp_path, monkeypatch), text the one error line must contain)
# README "Troubleshooting" lists these with their messages; keep the two in step.
BAD_INPUTS = {
    "wrong data path": (lambda t, m: ["--data.source=local", f"--data.data_dir={t}/missing"], "is not a folder"),
    "truncated gzip": (lambda t, m: ["--data.source=local", f"--data.data_dir={_corrupt_dir(t, 'truncated')}"],
                       "ptb.valid.txt.gz is not a readable gzip file"),
    "corrupted gzip": (lambda t, m: ["--data.source=local", f"--data.data_dir={_corrupt_dir(t, 'garbage')}"],
                       "ptb.valid.txt.gz is not a readable gzip file"),
    "checksum mismatch": (_modified_embedded_copy, "ptb.valid.txt.gz fails its sha256 check"),
    "empty split": (lambda t, m: ["--data.source=local", f"--data.data_dir={_empty_dir(t)}"], "ptb.test.txt is empty"),
    "too few training tokens": (lambda t, m: ["--data.train_tokens=30"], "are too few for batch_size=20"),
    "unknown key on the command line": (lambda t, m: ["--model.lambda=1e-6"], "model.lambda"),
    "unknown key in a config file": (
        lambda t, m: ["--config", str(_write(t / "bad.yaml", "model:\n  hiden_sizes: [10]\n"))], "hiden_sizes"),
    "malformed YAML": (lambda t, m: ["--config", str(_write(t / "bad.yaml", "model: [1\n"))],
                       "Problems parsing config"),
    "wrong type": (lambda t, m: ["--model.reg_lambda=abc"], "model.reg_lambda"),
    "negative lambda": (lambda t, m: ["--model.reg_lambda=-1e-6"], "reg_lambda must be >= 0"),
    "unknown method": (lambda t, m: ["--model.method=lol"], "model.method"),
    "magnitude target larger than the layer": (
        lambda t, m: ["--model.method=magnitude", "--model.reg_lambda=0", "--model.target_neurons=[100,12]"],
        "target_neurons"),
    "missing config file": (lambda t, m: ["--config", f"{t}/nope.yaml"], "does not exist"),
    "direct design from a missing result": (
        lambda t, m: ["--model.method=none", f"--model.sizes_from={t}/none.json"], "none.json not found"),
    "negative checkpoint interval": (lambda t, m: ["--checkpoint_every_n_steps=-1"], "checkpoint_every_n_steps"),
    # NaN injected from epoch 1 on (lr 1e38, near the float32 limit: activations overflow, the loss is NaN)
    "NaN loss": (lambda t, m: [*QUICK, "--model.method=none", "--model.reg_lambda=0", "--model.lr_decay=1e38",
                               "--model.lr_decay_start_epoch=1"],
                 "the training loss became"),
    "a penalty that prunes a whole layer": (lambda t, m: [*QUICK, "--model.reg_lambda=1.0"], "was pruned"),
    # finite but astronomically large weights from epoch 1 on: the loss stays finite, perplexity does not
    "diverged training": (lambda t, m: [*QUICK, "--model.method=none", "--model.reg_lambda=0",
                                        "--model.lr_decay=1e30", "--model.lr_decay_start_epoch=1"],
                          "training diverged"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_ends_in_one_clear_line(tmp_path, monkeypatch, capsys, case):
    from reproduce.train import main as train_main

    make_args, expected = BAD_INPUTS[case]
    extra = make_args(tmp_path, monkeypatch)
    capsys.readouterr()
    code = train_main(["--config", SMOKE, "--run_dir", str(tmp_path / "run"), "--wandb", "disabled", *extra])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err[-3000:]
    assert "Traceback" not in err
    assert lines[-1].startswith("error: ") and expected in lines[-1], lines[-1]
    assert not (tmp_path / "run" / "result.json").exists()
    if case == "NaN loss":  # named with its step (epoch 1 starts at step 29); the last good checkpoint stays
        step = int(re.search(r"became (?:nan|inf|-inf) at step (\d+)", lines[-1]).group(1))
        assert step >= 29
        assert (tmp_path / "run" / "checkpoints" / "epoch000.ckpt").exists()


def test_bad_input_in_a_real_process_prints_one_line_only(tmp_path):
    proc = run_cli("reproduce.train", "--config", SMOKE, "--run_dir", str(tmp_path / "run"),
                   "--wandb", "disabled", "--model.reg_lambda=-1e-6", timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
