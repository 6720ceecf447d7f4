"""Every experiment config stays runnable (shrunk to a few batches), and profiles skip finished runs."""

import json
from pathlib import Path

import pytest
from conftest import REPO

from reproduce import profiles
from reproduce.train import main as train_main

CONFIGS = sorted((REPO / "reproduce" / "configs").glob("*.yaml"))
SHRINK = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
          "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
          "--trainer.accelerator=cpu", "--model.embedding_dim=8", "--model.hidden_sizes=[8,8]",
          "--wandb=disabled"]
# a config's own pruning targets, shrunk with the model
SHRINK_TARGETS = {"magnitude": ["--model.target_neurons=[4,4]", "--model.prune_begin_step=0",
                                "--model.prune_end_step=2", "--model.prune_every=1"]}


def test_every_profile_config_exists():
    names = {c.name for c in CONFIGS}
    for dataset in profiles.PROFILES.values():
        for runs in dataset.values():
            for run in runs:
                assert run.config in names


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_runs_shrunk(tmp_path, config):
    header = config.read_text().splitlines()[:6]
    assert any(line.startswith("# Command: python -m reproduce.train") for line in header)
    extra = []
    if "sizes_from:" in config.read_text():  # direct design reads another run's sizes
        source = tmp_path / "source_result.json"
        source.write_text(json.dumps({"neurons_kept": {"input": [8, 6], "hidden": [6, 5]}}))
        extra = [f"--model.sizes_from={source}"]
    extra += next((v for k, v in SHRINK_TARGETS.items() if k in config.stem), [])
    assert train_main(["--config", str(config), "--run_dir", str(tmp_path / "run"), *SHRINK, *extra]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["config_path"] == str(config)


def _fake_result(run_dir: Path, method: str) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps({
        "method": method, "lambda": 0.0, "metrics": {"val_ppl": 120.0, "test_ppl": 115.0},
        "neurons_kept": {"input": [200, 200], "hidden": [200, 180]},
        "params": {"before": 10, "after": 9}, "flops_per_token": {"before": 10, "after": 9},
        "speedup_flops": 1.1}))


def test_profile_skips_finished_runs_and_summarises(tmp_path, monkeypatch, capsys):
    for run in profiles.PROFILES["ptb"]["smoke"]:
        _fake_result(tmp_path / "ptb" / "smoke" / run.name, "none" if "dense" in run.name else "l0")
    monkeypatch.setattr(profiles.subprocess, "run",
                        lambda *a, **k: pytest.fail("a finished run was started again"))
    results = profiles.run_profile("ptb", "smoke", str(tmp_path))
    assert len(results) == 2
    err = capsys.readouterr().err
    assert "0 to run" in err and err.count("finished, skipped") == 2
    assert "| l0 | l0 |" in (tmp_path / "ptb" / "smoke" / "summary.md").read_text()


def test_profile_runs_only_unfinished(tmp_path, monkeypatch):
    _fake_result(tmp_path / "ptb" / "smoke" / "dense", "none")
    started = []

    def fake_run(cmd, env):
        run_dir = Path(cmd[cmd.index("--run_dir") + 1])
        started.append(run_dir.name)
        _fake_result(run_dir, "l0")
        return type("Proc", (), {"returncode": 0})()

    monkeypatch.setattr(profiles.subprocess, "run", fake_run)
    profiles.run_profile("ptb", "smoke", str(tmp_path))
    assert started == ["l0"]


def test_auto_profile_without_gpu_says_so_and_runs_small(monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert profiles.resolve_profile("auto") == "small"
    assert "make reproduce-ptb PROFILE=paper" in capsys.readouterr().err
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert profiles.resolve_profile("auto") == "paper"


def test_unknown_profile_is_a_user_error():
    with pytest.raises(profiles.UserError, match="unknown profile"):
        profiles.run_profile("ptb", "huge")
