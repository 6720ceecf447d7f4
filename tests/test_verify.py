"""`python -m reproduce verify`: a record re-run from its own command, compared epoch by epoch."""

import json
import shutil

import pytest
from conftest import REPO, run_cli

from lightning_modules.run_dir import METRICS_FILE, RESULT_FILE
from reproduce.orchestrate.verify import Setting, compare_epochs, differences, rerun_command, setting_of

SMOKE = "reproduce/configs/ptb_smoke_l0.yaml"
TINY = ["--trainer.max_epochs=2", "--data.train_tokens=6000", "--model.embedding_dim=16",
        "--model.hidden_sizes=[16,12]", "--data.test_batch_size=20"]


@pytest.fixture(scope="module")
def shrunk_record(tmp_path_factory):
    """A smoke-size run of two epochs, kept as a record is (no weights)."""
    root = tmp_path_factory.mktemp("verify")
    run_dir = root / "runs" / "l0"
    proc = run_cli("reproduce.train", "--config", SMOKE, "--run_dir", str(run_dir), "--wandb", "disabled", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = root / "records" / "l0"
    record.mkdir(parents=True)
    for name in (RESULT_FILE, METRICS_FILE):
        shutil.copy(run_dir / name, record / name)
    return record


@pytest.mark.slow
def test_verify_reproduces_a_shrunk_record_identically(shrunk_record):
    proc = run_cli("reproduce", "verify", str(shrunk_record), "--epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "first 1 of 2 epochs" in out
    assert "identical: val_ppl of all 1 epochs compared" in out, out
    assert "CPU model: same" in out and "threads: same (1)" in out, out
    assert "--trainer.max_steps=" in out  # cut by steps: max_epochs, and any schedule reading it, unchanged


@pytest.mark.slow
def test_verify_names_the_largest_difference(shrunk_record, tmp_path):
    """A record whose numbers were not what this code computes: the re-run says how far apart."""
    altered = tmp_path / "l0"
    shutil.copytree(shrunk_record, altered)
    lines = (altered / METRICS_FILE).read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("val_ppl")
    for i, line in enumerate(lines[1:], 1):
        cells = line.split(",")
        if cells[col] and cells[header.index("epoch")] == "0":
            cells[col] = str(float(cells[col]) + 0.5)
            lines[i] = ",".join(cells)
            break
    (altered / METRICS_FILE).write_text("\n".join(lines) + "\n")
    proc = run_cli("reproduce", "verify", str(altered), "--epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "largest difference: -0.5000 val_ppl at epoch 1" in proc.stdout, proc.stdout


def test_verify_refuses_more_epochs_than_recorded_in_one_line(shrunk_record_files):
    proc = run_cli("reproduce", "verify", str(shrunk_record_files), "--epochs", "5")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --epochs 5: the record has 2 epochs; give 1 to 2"], proc.stderr


@pytest.fixture
def shrunk_record_files(tmp_path):
    """A record's two files, without training: for the checks that stop before the re-run."""
    record = tmp_path / "l0"
    record.mkdir()
    (record / RESULT_FILE).write_text(json.dumps({"command": f"python -m reproduce.train --config {SMOKE}",
                                                  "hardware": "AMD EPYC, 2 CPU cores, torch 2.13.0+cpu, 1 threads"}))
    (record / METRICS_FILE).write_text("epoch,step,val_ppl\n0,9,300.5\n1,19,250.25\n")
    return record


def test_the_rerun_replaces_run_dir_and_wandb_and_keeps_the_rest(tmp_path):
    argv = rerun_command("python -m reproduce.train --config c.yaml --run_dir results/x --profile small "
                         "--wandb=disabled --seed_everything=2", tmp_path / "r", 4646)
    assert argv[1:3] == ["-m", "reproduce.train"]
    assert argv[3:] == ["--config", "c.yaml", "--profile", "small", "--seed_everything=2", "--run_dir",
                        str(tmp_path / "r"), "--wandb", "disabled", "--trainer.enable_progress_bar=false",
                        "--trainer.max_steps=4646"]


def test_settings_are_read_from_both_hardware_lines():
    new = setting_of({"git_commit": "abc", "hardware": "Intel(R) Xeon(R) Processor, 2 CPU cores, torch 2.13.0+cpu, "
                                                       "1 threads"})
    assert new == Setting("abc", "Intel(R) Xeon(R) Processor", "2.13.0+cpu", 1)
    old = setting_of({"git_commit": "def", "hardware": "x86_64, 2 CPU cores, torch threads 1"}, "AMD EPYC")
    assert old.threads == 1 and old.torch is None and old.cpu.startswith("AMD EPYC (from its speed.json")
    lines = differences(old, Setting("ghi", "AMD EPYC", "2.13.0+cpu", 1))
    assert lines == ["commit: def then, ghi now",
                     "CPU model: same (AMD EPYC; the record's from its speed.json; result.json names none)",
                     "torch version: not recorded, now 2.13.0+cpu", "threads: same (1)"]


def test_epochs_compare_to_the_last_digit():
    lines, verdict = compare_epochs({0: 200.0, 1: 160.0}, {0: 200.0, 1: 160.0}, [0, 1])
    assert verdict.startswith("identical") and lines == ["epoch 1: record 200.0000, re-run 200.0000",
                                                         "epoch 2: record 160.0000, re-run 160.0000"]
    _, verdict = compare_epochs({0: 200.0, 1: 160.0}, {0: 200.0, 1: 161.6}, [0, 1])
    assert verdict == "largest difference: +1.6000 val_ppl at epoch 2 (+1.000%)"


def test_verify_is_a_command():
    assert (REPO / "reproduce" / "orchestrate" / "verify.py").is_file()
    from reproduce.__main__ import COMMANDS

    assert COMMANDS["verify"][0] == "orchestrate.verify"
