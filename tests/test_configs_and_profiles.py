"""Every experiment config stays runnable (shrunk to a few batches), and profiles skip finished runs."""

import json
from pathlib import Path

import pytest
from conftest import REPO

from reproduce import profiles
from reproduce.train import main as train_main

CONFIGS = sorted((REPO / "reproduce" / "configs").glob("ptb_*.yaml"))  # SQuAD configs: tests/test_squad_train.py
SHRINK = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
          "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
          "--trainer.accelerator=cpu", "--model.embedding_dim=8", "--model.hidden_sizes=[8,8]",
          "--wandb=disabled"]
# a config's own pruning targets, shrunk with the model
SHRINK_TARGETS = {"magnitude": ["--model.target_neurons=[4,4]", "--model.prune_begin_step=0",
                                "--model.prune_end_step=2", "--model.prune_every=1"]}


def test_every_profile_config_exists():
    names = {c.name for c in (REPO / "reproduce" / "configs").glob("*.yaml")}
    for dataset in profiles.PROFILES.values():
        for spec in dataset.values():
            for run in spec.runs:
                assert run.config in names
                assert run.sizes_from is None or run.sizes_from in {r.name for r in spec.runs}
                assert run.init_from is None or run.init_from in {r.name for r in spec.runs}


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_runs_shrunk(tmp_path, config):
    lines = config.read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]  # the leading comments
    assert any(line.startswith("# Command: python -m reproduce.train") for line in header)
    extra = []
    if "sizes_from:" in config.read_text():  # direct design reads another run's sizes
        source = tmp_path / "source_result.json"
        source.write_text(json.dumps({"neurons_kept": {"input": [8, 6], "hidden": [6, 5]}}))
        extra = [f"--model.sizes_from={source}"]
    if "init_from:" in config.read_text():  # fine-tuning starts from a finished (shrunk) dense run
        dense = REPO / "reproduce" / "configs" / "ptb_smoke_dense.yaml"
        assert train_main(["--config", str(dense), "--run_dir", str(tmp_path / "dense"), *SHRINK]) == 0
        extra.append(f"--model.init_from={tmp_path / 'dense'}")
    extra += next((v for k, v in SHRINK_TARGETS.items() if k in config.stem), [])
    assert train_main(["--config", str(config), "--run_dir", str(tmp_path / "run"), *SHRINK, *extra]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["config_path"] == str(config)


def _fake_result(run_dir: Path, method: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps({
        "method": method, "lambda": 0.0, "metrics": {"val_ppl": 120.0, "test_ppl": 115.0},
        "neurons_kept": {"input": [200, 200], "hidden": [200, 180]},
        "params": {"before": 10, "after": 9}, "flops_per_token": {"before": 10, "after": 9},
        "speedup_flops": 1.1}))


def test_profile_skips_finished_runs(tmp_path, monkeypatch, capsys):
    for run in profiles.PROFILES["ptb"]["smoke"].runs:
        _fake_result(tmp_path / "ptb" / "smoke" / run.name, "l0")
    monkeypatch.setattr("reproduce.orchestrate.run_queue.subprocess.Popen",
                        lambda *a, **k: pytest.fail("a finished run was started again"))
    profiles.run_profile("ptb", "smoke", str(tmp_path), analyse=False)
    assert "6 finished, 0 to run" in capsys.readouterr().err


def test_profile_runs_only_unfinished_and_direct_design_after_its_source(tmp_path, monkeypatch):
    root = tmp_path / "ptb" / "smoke"
    _fake_result(root / "dense", "none")
    started = []

    class FakeProc:
        def __init__(self, cmd, **kwargs):
            self.cmd, self.returncode = cmd, None
            started.append(Path(cmd[cmd.index("--run_dir") + 1]).name)

        def poll(self):  # finishes at the first poll
            _fake_result(Path(self.cmd[self.cmd.index("--run_dir") + 1]), "x")
            self.returncode = 0
            return 0

    monkeypatch.setattr("reproduce.orchestrate.run_queue.subprocess.Popen", FakeProc)
    jobs = profiles.profile_jobs("ptb", "smoke", root)
    direct = next(j for j in jobs if j.name == "direct")
    assert f"--model.sizes_from={root / 'l0' / 'result.json'}" in direct.cmd
    profiles.run_profile("ptb", "smoke", str(tmp_path), workers=2, analyse=False)
    assert sorted(started) == ["direct", "group_lasso", "l0", "lasso", "magnitude"]
    assert started.index("direct") > started.index("l0")


def test_profile_command_passes_train_args_last_and_can_skip_the_analysis(tmp_path, monkeypatch):
    from reproduce.__main__ import main

    commands = []

    class FakeProc:
        def __init__(self, cmd, **kwargs):
            self.cmd, self.returncode = cmd, None
            commands.append(cmd)

        def poll(self):
            _fake_result(Path(self.cmd[self.cmd.index("--run_dir") + 1]), "x")
            self.returncode = 0
            return 0

    monkeypatch.setattr("reproduce.orchestrate.run_queue.subprocess.Popen", FakeProc)
    monkeypatch.setattr(profiles, "analyse_runs", lambda *a, **k: pytest.fail("analysed despite --no-analyse"))
    assert main(["profile", "ptb", "--profile", "smoke", "--results", str(tmp_path), "--no-analyse",
                 "--train-arg=--model.step_impl=graph", "--train-arg=--wandb=disabled"]) in (0, None)
    assert len(commands) == len(profiles.PROFILES["ptb"]["smoke"].runs)
    for cmd in commands:  # after the profile's own arguments, so they win
        assert cmd[-2:] == ["--model.step_impl=graph", "--wandb=disabled"]


def test_small_profile_holds_the_whole_comparison():
    """dense; L0 at 3 lambdas and ISS at 2, from scratch and fine-tuned from the dense run; both at 2
    more on the short fine-tuning schedule; magnitude and the direct design at the L0 run's sizes."""
    root = Path("results/ptb/small")
    jobs = {j.name: j for j in profiles.profile_jobs("ptb", "small", root)}
    lambdas = {name: next((a.split("=")[1] for a in j.cmd if a.startswith("--model.reg_lambda=")), "config")
               for name, j in jobs.items()}
    assert sum(n.startswith("l0") and "_ft" not in n for n in jobs) == 3
    assert sum(n.startswith("l0_ft") and "short" not in n for n in jobs) == 3
    assert sum(n.startswith("l0_ft_short") for n in jobs) == 2
    assert sum(n.startswith("group_lasso") and "_ft" not in n for n in jobs) == 2
    assert sum(n.startswith("group_lasso_ft") and "short" not in n for n in jobs) == 2
    assert sum(n.startswith("group_lasso_ft_short") for n in jobs) == 2
    assert lambdas["l0_lambda5e-7"] == "5e-7" and lambdas["l0"] == "config"
    assert jobs["l0_lambda5e-7"].cmd[-1] == "--model.reg_lambda=5e-7"  # the override comes last: it wins
    assert lambdas["l0_ft_short"] == "config" and lambdas["l0_ft_short_lambda1e-5"] == "1e-5"
    assert lambdas["group_lasso_ft_short"] == "config" and lambdas["group_lasso_ft_short_lambda2e-3"] == "2e-3"
    for name in ("l0_ft", "l0_ft_lambda2e-6", "group_lasso_ft", "group_lasso_ft_lambda2e-4", "l0_ft_short",
                 "l0_ft_short_lambda1e-5", "group_lasso_ft_short", "group_lasso_ft_short_lambda2e-3"):
        assert f"--model.init_from={root / 'dense'}" in jobs[name].cmd
        assert jobs[name].waits_for == [root / "dense" / "result.json"]
    for name in ("magnitude", "direct"):
        assert jobs[name].waits_for == [root / "l0" / "result.json"]
    assert list(jobs)[0] == "dense"


def test_auto_profile_without_gpu_says_so_and_runs_small(monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert profiles.resolve_profile("auto") == "small"
    assert "make reproduce-ptb PROFILE=paper" in capsys.readouterr().err
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert profiles.resolve_profile("auto") == "paper"


def test_unknown_profile_is_a_user_error():
    with pytest.raises(profiles.UserError, match="unknown profile"):
        profiles.run_profile("ptb", "huge")
