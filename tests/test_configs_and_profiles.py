"""Every experiment config stays runnable (shrunk to a few batches); the profiles (reproduce/profiles/*.yaml)
hold exactly the runs the records and the GPU window name, refuse a malformed file in one line, and
skip finished runs."""

import json
import re
from pathlib import Path

import pytest
from conftest import REPO

from lightning_modules.errors import UserError
from lightning_modules.run_dir import RESULT_FILE
from reproduce.orchestrate import profiles
from reproduce.run.train import main as train_main

CONFIGS = sorted((REPO / "reproduce" / "configs").glob("ptb_*.yaml"))  # SQuAD configs: tests/test_squad_train.py
SHRINK = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
          "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
          "--trainer.accelerator=cpu", "--model.embedding_dim=8", "--model.hidden_sizes=[8,8]",
          "--wandb=disabled"]
# a config's own pruning targets, shrunk with the model
SHRINK_TARGETS = {"magnitude": ["--model.target_neurons=[4,4]", "--model.prune_begin_step=0",
                                "--model.prune_end_step=2", "--model.prune_every=1"]}


def test_every_profile_config_and_source_exists():
    names = {c.name for c in (REPO / "reproduce" / "configs").glob("*.yaml")}
    assert sorted(profiles.PROFILES) == ["ptb", "squad"]
    for dataset in profiles.PROFILES.values():
        for spec in dataset.values():
            for i, run in enumerate(spec.runs):
                assert run.config in names and run.minutes > 0
                earlier = {r.name for r in spec.runs[:i]}
                for source in (run.sizes_from, run.init_from):
                    assert source is None or source in earlier or (REPO / source).exists()


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
    result = json.loads((tmp_path / "run" / RESULT_FILE).read_text())
    assert result["config_path"] == str(config)


def _fake_result(run_dir: Path, method: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT_FILE).write_text(json.dumps({
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
    assert f"--model.sizes_from={root / 'l0' / RESULT_FILE}" in direct.cmd
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
    """Seed 1: dense; L0 at 3 lambdas and ISS at 3, from scratch; L0 at 3 and ISS at 2 fine-tuned from
    the dense run; both at 2 more on the short fine-tuning schedule; magnitude and the direct design at
    the L0 run's sizes. The run names are the committed records' (reproduce/measured/ptb_small/)."""
    root = Path("results/ptb/small")
    jobs = {j.name: j for j in profiles.profile_jobs("ptb", "small", root)}
    seed1 = [n for n in jobs if not re.search(r"_seed\d+$", n)]
    lambdas = {name: next((a.split("=")[1] for a in j.cmd if a.startswith("--model.reg_lambda=")), "config")
               for name, j in jobs.items()}
    assert sum(n.startswith("l0") and "_ft" not in n for n in seed1) == 3
    assert sum(n.startswith("l0_ft") and "short" not in n for n in seed1) == 3
    assert sum(n.startswith("l0_ft_short") for n in seed1) == 2
    assert sum(n.startswith("group_lasso") and "_ft" not in n for n in seed1) == 3
    assert sum(n.startswith("group_lasso_ft") and "short" not in n for n in seed1) == 2
    assert sum(n.startswith("group_lasso_ft_short") for n in seed1) == 2
    assert lambdas["l0_lambda5e-7"] == "5e-7" and lambdas["l0"] == "config"
    assert jobs["l0_lambda5e-7"].cmd[-1] == "--model.reg_lambda=5e-7"  # the override comes last: it wins
    assert lambdas["l0_ft_short"] == "config" and lambdas["l0_ft_short_lambda1e-5"] == "1e-5"
    assert lambdas["group_lasso_ft_short"] == "config" and lambdas["group_lasso_ft_short_lambda2e-3"] == "2e-3"
    for name in ("l0_ft", "l0_ft_lambda2e-6", "group_lasso_ft", "group_lasso_ft_lambda2e-4", "l0_ft_short",
                 "l0_ft_short_lambda1e-5", "group_lasso_ft_short", "group_lasso_ft_short_lambda2e-3"):
        assert f"--model.init_from={root / 'dense'}" in jobs[name].cmd
        assert jobs[name].waits_for == [root / "dense" / RESULT_FILE]
    for name in ("magnitude", "direct"):
        assert jobs[name].waits_for == [root / "l0" / RESULT_FILE]
    assert list(jobs)[0] == "dense"
    # every committed record of the small profile is a run of it, under its name
    records = {p.parent.name for p in (REPO / "reproduce" / "measured" / "ptb_small").glob(f"*/{RESULT_FILE}")}
    assert records <= set(jobs), records - set(jobs)
    assert not any(a.startswith("--seed_everything") for n in seed1 if n != "group_lasso_lambda4e-4"
                   for a in jobs[n].cmd)  # the config's seed


def _args(job) -> list[str]:
    """A job's command after `python -m`: what must equal the command that trained the run."""
    return job.cmd[1:]


@pytest.mark.parametrize("seed", [2, 3])
def test_small_profile_has_issue_21s_seed_runs_with_the_commands_they_train_with(seed):
    """Training now from another worktree under these names and commands: the profile must find them
    finished (same run dir) and, run again, train the same (same config, overrides, seed, sources)."""
    root = Path("results/ptb/small")
    jobs = {j.name: j for j in profiles.profile_jobs("ptb", "small", root)}
    l0_shape = "reproduce/measured/ptb_small/l0/result.json"  # seed 1's L0 sizes [68, 135], for every seed

    def cmd(name, config, *args):
        return ["-m", "reproduce.train", "--config", f"reproduce/configs/{config}", "--run_dir", str(root / name),
                "--profile", "small", f"--seed_everything={seed}", *args]

    expected = {
        f"dense_seed{seed}": cmd(f"dense_seed{seed}", "ptb_small_dense.yaml"),
        f"l0_seed{seed}": cmd(f"l0_seed{seed}", "ptb_small_l0.yaml"),
        f"group_lasso_lambda2e-4_seed{seed}": cmd(f"group_lasso_lambda2e-4_seed{seed}", "ptb_small_group_lasso.yaml",
                                                  "--model.reg_lambda=2e-4"),
        f"magnitude_seed{seed}": cmd(f"magnitude_seed{seed}", "ptb_small_magnitude.yaml",
                                     f"--model.sizes_from={l0_shape}"),
        f"direct_seed{seed}": cmd(f"direct_seed{seed}", "ptb_small_direct.yaml", f"--model.sizes_from={l0_shape}"),
        f"group_lasso_seed{seed}": cmd(f"group_lasso_seed{seed}", "ptb_small_group_lasso.yaml"),
        f"l0_lambda2e-6_seed{seed}": cmd(f"l0_lambda2e-6_seed{seed}", "ptb_small_l0.yaml", "--model.reg_lambda=2e-6"),
        f"l0_ft_short_lambda1e-5_seed{seed}": cmd(f"l0_ft_short_lambda1e-5_seed{seed}",
                                                  "ptb_small_l0_finetune_short.yaml",
                                                  f"--model.init_from={root / f'dense_seed{seed}'}",
                                                  "--model.reg_lambda=1e-5"),
        f"group_lasso_lambda4e-4_seed{seed}": cmd(f"group_lasso_lambda4e-4_seed{seed}", "ptb_small_group_lasso.yaml",
                                                  "--model.reg_lambda=4e-4"),
    }
    for name, args in expected.items():
        assert _args(jobs[name]) == args, name
        # the ETA's minutes are the profile's data: those of the seed-1 run of the same config
        assert jobs[name].expected_minutes == jobs[name.removesuffix(f"_seed{seed}")].expected_minutes, name
    assert jobs[f"l0_ft_short_lambda1e-5_seed{seed}"].waits_for == [root / f"dense_seed{seed}" / RESULT_FILE]
    assert jobs[f"magnitude_seed{seed}"].waits_for == []  # a committed record: nothing to wait for
    assert sorted(n for n in jobs if n.endswith(f"_seed{seed}")) == sorted(expected)
    assert _args(jobs["group_lasso_lambda4e-4"]) == [
        "-m", "reproduce.train", "--config", "reproduce/configs/ptb_small_group_lasso.yaml", "--run_dir",
        str(root / "group_lasso_lambda4e-4"), "--profile", "small", "--seed_everything=1", "--model.reg_lambda=4e-4"]


def test_paper_profile_has_the_gpu_windows_medium_runs_in_its_order():
    """reproduce/measure/gpu/window.sh trains these runs, in this order, reading them from the profile."""
    jobs = profiles.profile_jobs("ptb", "paper", Path("results/ptb/paper"))
    medium = [(j.name, Path(j.cmd[j.cmd.index("--config") + 1]).name, j.cmd[j.cmd.index("--profile") + 2:])
              for j in jobs if j.name.startswith("medium")]
    assert medium == [("medium_dense", "ptb_medium_dense.yaml", []), ("medium_l0", "ptb_medium_l0.yaml", []),
                      ("medium_iss", "ptb_medium_group_lasso.yaml", []),
                      ("medium_l0_lambda1e-7", "ptb_medium_l0.yaml", ["--model.reg_lambda=1e-7"]),
                      ("medium_iss_lambda1.4e-4", "ptb_medium_group_lasso.yaml", ["--model.reg_lambda=1.4e-4"]),
                      ("medium_magnitude", "ptb_medium_magnitude.yaml", []),
                      ("medium_direct", "ptb_medium_direct.yaml", []),
                      # the TF32 controls (issue 30), last: trained beside the comparison, judged by the criterion
                      ("medium_dense_tf32", "ptb_medium_dense.yaml", ["--precision=tf32"]),
                      ("medium_dense_tf32_seed2", "ptb_medium_dense.yaml", ["--seed_everything=2", "--precision=tf32"]),
                      ("medium_l0_tf32", "ptb_medium_l0.yaml", ["--precision=tf32"]),
                      ("medium_l0_tf32_seed2", "ptb_medium_l0.yaml", ["--seed_everything=2", "--precision=tf32"])]
    assert all(not j.waits_for for j in jobs if j.name.startswith("medium"))  # fixed sizes: no run waits
    assert [j.name for j in jobs][len(medium):] == ["large_dense", "large_l0", "large_group_lasso",
                                                    "large_group_lasso_ft", "large_direct"]
    # the window reads its runs from this profile (no list of its own to drift)
    window = (REPO / "reproduce" / "measure" / "gpu" / "window.sh").read_text()
    assert "-m reproduce.orchestrate.gpu_window" in window and "medium_dense" not in window
    assert 'profiles_of("ptb")["paper"].runs' in (REPO / "reproduce" / "orchestrate" / "gpu_window.py").read_text()


def test_only_runs_the_matching_runs_and_the_runs_they_need(tmp_path, monkeypatch, capsys):
    spec = profiles.profiles_of("ptb")["small"]
    chosen = [r.name for r in profiles.select_runs(spec, ["l0_ft_short_lambda1e-5_seed3"])]
    assert chosen == ["dense_seed3", "l0_ft_short_lambda1e-5_seed3"]  # its dense run, first
    seeds = profiles.select_runs(spec, ["*_seed[23]", "group_lasso_lambda4e-4"])
    assert len(seeds) == 19 and all(r.name.endswith(("_seed2", "_seed3")) or r.seed == 1 for r in seeds)
    assert [r.name for r in profiles.select_runs(spec, ["magnitude"])] == ["l0", "magnitude"]
    with pytest.raises(UserError, match="--only l0_seed9: no run of profile small has such a name"):
        profiles.select_runs(spec, ["l0_seed9"])
    started = []

    class FakeProc:
        def __init__(self, cmd, **kwargs):
            self.cmd, self.returncode = cmd, None
            started.append(Path(cmd[cmd.index("--run_dir") + 1]).name)

        def poll(self):
            _fake_result(Path(self.cmd[self.cmd.index("--run_dir") + 1]), "x")
            self.returncode = 0
            return 0

    monkeypatch.setattr("reproduce.orchestrate.run_queue.subprocess.Popen", FakeProc)
    from reproduce.__main__ import main

    assert main(["profile", "ptb", "--profile", "smoke", "--results", str(tmp_path), "--no-analyse",
                 "--only", "dir*"]) in (0, None)
    assert started == ["l0", "direct"]  # the direct design waits for the L0 run it takes its sizes from
    assert "--only dir*: 2 of 6 runs (l0, direct)" in capsys.readouterr().err


def test_the_window_and_the_tables_read_the_profiles_as_before():
    """window.sh counts the small profile's runs with this import; `PROFILES` is read when first used."""
    from reproduce.orchestrate.profiles import PROFILES

    assert len(PROFILES["ptb"]["small"].runs) == 38


# ---------------------------------------------------------------- a malformed profile file: one line

GOOD_RUN = "{name: l0, config: ptb_smoke_l0.yaml, minutes: 1.5}"
BAD_PROFILES = {
    "malformed YAML": ("smoke: {about: x, workers: 2, runs: [\n", r"ptb.yaml: malformed YAML at line \d+"),
    "not a mapping": ("- smoke\n", "a profile file maps each profile name"),
    "unknown profile key": (f"smoke: {{about: x, workers: 2, worker: 1, runs: [{GOOD_RUN}]}}\n",
                            r"profile smoke: unknown key 'worker'"),
    "workers 0": (f"smoke: {{about: x, workers: 0, runs: [{GOOD_RUN}]}}\n", r"profile smoke: workers must be"),
    "no runs": ("smoke: {about: x, workers: 1, runs: []}\n", "profile smoke: runs must be a non-empty list"),
    "unknown module": (f"smoke: {{about: x, workers: 1, module: reproduce.nope, runs: [{GOOD_RUN}]}}\n",
                       "module 'reproduce.nope' is not a training entry point"),
    "unknown run key": ("smoke: {about: x, workers: 1, runs: [{name: l0, config: ptb_smoke_l0.yaml, minutes: 1, "
                        "seeed: 2}]}\n", r"profile smoke, run l0: unknown key 'seeed'"),
    "no minutes": ("smoke: {about: x, workers: 1, runs: [{name: l0, config: ptb_smoke_l0.yaml}]}\n",
                   r"run l0: minutes missing"),
    "missing config": ("smoke: {about: x, workers: 1, runs: [{name: l0, config: nope.yaml, minutes: 1}]}\n",
                       r"run l0: config 'nope.yaml' is not a file of"),
    "a second run of one name": (f"smoke: {{about: x, workers: 1, runs: [{GOOD_RUN}, {GOOD_RUN}]}}\n",
                                 r"run l0: a second run named l0"),
    "sizes_from a later run": ("smoke: {about: x, workers: 1, runs: [{name: direct, config: ptb_smoke_direct.yaml, "
                               f"minutes: 1, sizes_from: l0}}, {GOOD_RUN}]}}\n",
                               r"run direct: sizes_from 'l0' is not a run listed before it"),
    "sizes_from a record that is not there": (
        "smoke: {about: x, workers: 1, runs: [{name: direct, config: ptb_smoke_direct.yaml, minutes: 1, "
        "sizes_from: reproduce/measured/nope/result.json}]}\n",
        r"run direct: sizes_from reproduce/measured/nope/result.json is not a committed result.json"),
    "seed in an override": ("smoke: {about: x, workers: 1, runs: [{name: l0, config: ptb_smoke_l0.yaml, minutes: 1, "
                            "overrides: [--seed_everything=2]}]}\n",
                            r"run l0: override '--seed_everything=2': set it with the run's seed field"),
    "override without a value": ("smoke: {about: x, workers: 1, runs: [{name: l0, config: ptb_smoke_l0.yaml, "
                                 "minutes: 1, overrides: [--model.reg_lambda]}]}\n",
                                 r"override '--model.reg_lambda' is not of the form --name=value"),
    "a seed the name does not say": ("smoke: {about: x, workers: 1, runs: [{name: l0, config: ptb_smoke_l0.yaml, "
                                     "minutes: 1, seed: 2}]}\n", r"run l0: seed 2 is not the config's \(1\): end "
                                     r"the name with _seed2"),
    "a name that says another seed": ("smoke: {about: x, workers: 1, runs: [{name: l0_seed3, "
                                      "config: ptb_smoke_l0.yaml, minutes: 1, seed: 2}]}\n",
                                      r"run l0_seed3: the name says seed 3 but seed is 2"),
}


@pytest.mark.parametrize("case", BAD_PROFILES, ids=list(BAD_PROFILES))
def test_a_malformed_profile_file_is_one_line_naming_the_file_and_the_entry(tmp_path, case):
    text, message = BAD_PROFILES[case]
    path = tmp_path / "ptb.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        profiles.load_profile_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_the_profile_command_reports_a_malformed_file_in_one_line(tmp_path, monkeypatch, capsys):
    from reproduce.__main__ import main

    (tmp_path / "ptb.yaml").write_text(BAD_PROFILES["no minutes"][0])
    monkeypatch.setattr(profiles, "PROFILE_DIR", tmp_path)
    assert main(["profile", "ptb", "--profile", "smoke", "--results", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "ptb.yaml: profile smoke, run l0: minutes missing" in err
    assert "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_auto_profile_without_gpu_says_so_and_runs_small(monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert profiles.resolve_profile("auto") == "small"
    assert "make reproduce-ptb PROFILE=paper" in capsys.readouterr().err
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert profiles.resolve_profile("auto") == "paper"


def test_unknown_profile_is_a_user_error():
    with pytest.raises(profiles.UserError, match="unknown profile"):
        profiles.run_profile("ptb", "huge")
