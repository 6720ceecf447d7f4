"""The training command end to end (tiny budget) and its handling of bad input."""

import csv
import json
import math

import pytest
import torch
from conftest import REPO, run_cli

from lightning_modules.export import load_exported_language_model

SMOKE = str(REPO / "reproduce" / "configs" / "ptb_smoke_l0.yaml")
TINY = ["--trainer.max_epochs=2", "--data.train_tokens=12000", "--model.embedding_dim=24",
        "--model.hidden_sizes=[24,20]"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "l0"
    proc = run_cli("reproduce.train", "--config", SMOKE, "--run_dir", str(run_dir), "--wandb",
                   "offline", "--model.reg_lambda=2e-6", *TINY)
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
                "size/flops_per_token", "test_ppl"):
        assert key in logged, key
    history = [json.loads(line) for line in (run_dir / "gate_history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
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
    from lightning_modules.ptb_data import EMBEDDED_DIR

    for name in ("train", "valid", "test"):
        data = (EMBEDDED_DIR / f"ptb.{name}.txt.gz").read_bytes()
        if name == "valid":
            data = data[: len(data) // 3] if damage == "truncated" else b"\x1f\x8b" + b"\0" * 64
        (tmp_path / f"ptb.{name}.txt.gz").write_bytes(data)
    return str(tmp_path)


BAD_INPUTS = {
    "wrong data path": (lambda t: ["--data.source=local", f"--data.data_dir={t}/missing"],
                        "is not a folder"),
    "truncated gzip": (lambda t: ["--data.source=local",
                                  f"--data.data_dir={_corrupt_dir(t, 'truncated')}"],
                       "ptb.valid.txt.gz is not a readable gzip file"),
    "corrupted gzip": (lambda t: ["--data.source=local",
                                  f"--data.data_dir={_corrupt_dir(t, 'garbage')}"],
                       "ptb.valid.txt.gz is not a readable gzip file"),
    "unknown key on the command line": (lambda t: ["--model.lambda=1e-6"], "model.lambda"),
    "unknown key in a config file": (
        lambda t: ["--config", str(_write(t / "bad.yaml", "model:\n  hiden_sizes: [10]\n"))],
        "hiden_sizes"),
    "malformed YAML": (lambda t: ["--config", str(_write(t / "bad.yaml", "model: [1\n"))],
                       "Problems parsing config"),
    "wrong type": (lambda t: ["--model.reg_lambda=abc"], "model.reg_lambda"),
    "negative lambda": (lambda t: ["--model.reg_lambda=-1e-6"], "reg_lambda must be >= 0"),
    "missing config file": (lambda t: ["--config", f"{t}/nope.yaml"], "does not exist"),
}


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_ends_in_one_clear_line(tmp_path, case):
    make_args, expected = BAD_INPUTS[case]
    proc = run_cli("reproduce.train", "--config", SMOKE, "--run_dir", str(tmp_path / "run"),
                   "--wandb", "disabled", *make_args(tmp_path), timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    assert not (tmp_path / "run" / "result.json").exists()
