"""What the sweep files and sweeps/README.md say stays true: every config, option, run, record and
number they cite exists and is what they say it is.

A sweep file's comments cite runs by path (a committed record `reproduce/measured/<group>/<run>`,
optionally followed by `(lambda X: hidden [a, b], test Y)` with its numbers; a run of a profile
`results/<dataset>/<profile>/<run>`; a run of a sweep `results/sweeps/<file stem>/<run name>`) and
the config's values as "the config's X". Every other lambda or size a comment names must be one of
the file's grid values or the config's; "a run at X" needs a cited run at X. sweeps/README.md's
table lists, per file, the runs and the CPU time per run (the profiles' minutes, as the runner
prints them) and the committed records that ran one of the file's grid points: computed here from
the records.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shlex
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from lightning_modules.run_dir import RESULT_FILE
from reproduce.orchestrate import profiles
from reproduce.orchestrate import sweep as sw
from reproduce.orchestrate.run_queue import _fmt

SWEEP_FILES = sorted((REPO / "sweeps").glob("*.yaml"))
MEASURED = REPO / "reproduce" / "measured"
README = REPO / "sweeps" / "README.md"
NUM = r"\d+(?:\.\d+)?e[-+]?\d+"
SIZES = r"\[\d+, ?\d+\]"
PATH = r"(?:results|reproduce/measured|reproduce/configs|sweeps)/[\w.=+\-/]*"
# claims that a run was made at a lambda: they need that run cited
RUN_CLAIMS = (rf"\bruns?(?:'s)?\s+(?:(?:at|with|of)\s+)?(?:lambda\s+)?({NUM})", rf"({NUM})\s+runs?\b",
              rf"measured\s+(?:at|for)\s+({NUM})")
# claims that a run kept these sizes: they need a cited record that kept them
SIZE_CLAIMS = (rf"\bruns?(?:'s)?\s+sizes\s+\(?({SIZES})", rf"\bkept\s+(?:hidden\s+)?({SIZES})")
# model settings of how a step is computed or what is logged, not of what is trained
NOT_THE_EXPERIMENT = {"step_impl", "gate_history_every"}


# ---------------------------------------------------------------- what exists

@lru_cache(maxsize=None)
def records() -> dict[str, dict]:
    """Every committed record, by `<group>/<run>` (e.g. ptb_small/l0)."""
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())
            for p in sorted(MEASURED.glob(f"*/*/{RESULT_FILE}"))}


@lru_cache(maxsize=None)
def sweep_runs(stem: str) -> dict[str, dict]:
    """run name -> values, of sweeps/<stem>.yaml as the local runner expands it."""
    sweep = sw.load_sweep(REPO / "sweeps" / f"{stem}.yaml")
    points = sw.expand(sweep)
    return dict(zip(sw.run_names(sweep, points), points))


def model_config(sweep: sw.Sweep) -> dict:
    return yaml.safe_load((REPO / sweep.config_file).read_text())


def header_text(path: Path) -> str:
    """The leading comment, its lines joined (a citation may wrap)."""
    lines = path.read_text().splitlines()
    end = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return " ".join(line.lstrip("#").strip() for line in lines[:end])


def path_problem(token: str) -> str | None:
    """Why a cited path does not exist, or None (a placeholder such as results/sweeps/x/.../result.json
    or sweeps/<file>.yaml, which the pattern cuts at the '<', names nothing)."""
    parts = token.rstrip("/").split("/")
    if "..." in parts:
        return None
    if token.startswith("results/sweeps/"):
        if len(parts) < 3:
            return None  # the folder itself
        if not (REPO / "sweeps" / f"{parts[2]}.yaml").is_file():
            return f"{token}: there is no sweeps/{parts[2]}.yaml"
        if len(parts) > 3 and parts[3] not in sweep_runs(parts[2]):
            runs = ", ".join(sweep_runs(parts[2]))
            return f"{token}: sweeps/{parts[2]}.yaml has no run {parts[3]} (its runs: {runs})"
        return None
    if token.startswith("results/"):
        if len(parts) < 4:
            return None
        dataset, profile, run = parts[1:4]
        if dataset not in profiles.datasets():
            return f"{token}: no profiles of a dataset {dataset}"
        runs = {r.name for r in profiles.profiles_of(dataset).get(profile, profiles.Profile("", "", 1, ())).runs}
        return None if run in runs else f"{token}: no run {run} in profile {dataset}/{profile}"
    return None if (REPO / token).exists() else f"{token}: no such file or folder"


def cited_paths(text: str) -> list[str]:
    return [t.rstrip(".,;:") for t in re.findall(PATH, text)]


def lambda_of_profile_run(token: str) -> float | None:
    parts = token.split("/")
    if len(parts) < 4:
        return None
    spec = profiles.profiles_of(parts[1]).get(parts[2])
    run = next((r for r in spec.runs if r.name == parts[3]), None) if spec else None
    for arg in run.overrides if run else ():
        if arg.startswith("--model.reg_lambda="):
            return float(arg.split("=", 1)[1])
    return None


def same(a, b) -> bool:
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
        return math.isclose(a, b, rel_tol=1e-9)
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def config_values(config: dict) -> list:
    return list((config.get("model") or {}).values())


# ---------------------------------------------------------------- the comments of a sweep file

def comment_problems(path: Path) -> list[str]:
    """Everything a sweep file's header cites that does not exist or is not what it says."""
    sweep = sw.load_sweep(path)
    config = model_config(sweep)
    text = header_text(path)
    grid = [v for point in sw.expand(sweep) for v in point.values()]
    # the paths it cites, and the values that name other runs (direct design's sizes_from)
    problems = [p for t in cited_paths(text) + [v for v in grid if isinstance(v, str) and v.startswith("results/")]
                if (p := path_problem(t))]
    cited = [(m.group(1), m.group(2))
             for m in re.finditer(r"reproduce/measured/([\w.=+-]+/[\w.=+-]+)(?: \(([^)]*)\))?", text)]
    allowed_sizes = [v for v in grid + config_values(config) if isinstance(v, list)]
    allowed_numbers = [v for v in grid + config_values(config) if isinstance(v, (int, float))]
    run_lambdas, run_sizes = [], []
    for name, details in cited:
        record = records().get(name)
        if record is None:
            continue  # reported above as a missing path
        run_sizes += [record["neurons_kept"]["hidden"], record["neurons_kept"]["input"]]
        run_lambdas.append(record["lambda"])
        for sizes in re.findall(rf"hidden ({SIZES})", details or ""):
            if json.loads(sizes) != record["neurons_kept"]["hidden"]:
                problems.append(f"{name}: cited as hidden {sizes}, its record kept {record['neurons_kept']['hidden']}")
        for test in re.findall(r"test (\d+\.\d+)", details or ""):
            if float(test) != round(record["metrics"]["test_ppl"], 2):
                problems.append(f"{name}: cited as test {test}, its record has {record['metrics']['test_ppl']:.2f}")
        for lam in re.findall(rf"lambda ({NUM})", details or ""):
            if not same(float(lam), record["lambda"]):
                problems.append(f"{name}: cited as lambda {lam}, its record has {record['lambda']}")
    for token in cited_paths(text):
        if token.startswith("results/") and not token.startswith("results/sweeps/"):
            if (lam := lambda_of_profile_run(token)) is not None:
                run_lambdas.append(lam)
    allowed_numbers += run_lambdas
    allowed_sizes += run_sizes
    prose = re.sub(PATH, " ", text)  # numbers inside run names are the names'
    for value in re.findall(rf"the config's (?:untuned )?({NUM}|{SIZES})", prose):
        cited_value = float(value) if re.fullmatch(NUM, value) else json.loads(value)  # YAML reads 7e-5 as text
        if not any(same(cited_value, v) for v in config_values(config)):
            problems.append(f"'the config's {value}': {sweep.config_file} has no such model value")
    for sizes in re.findall(SIZES, prose):
        if not any(json.loads(sizes) == s for s in allowed_sizes):
            problems.append(f"sizes {sizes}: not a grid value, the config's, or a cited record's")
    for number in re.findall(NUM, prose):
        if not any(same(float(number), v) for v in allowed_numbers):
            problems.append(f"{number}: not a grid value, the config's, or a cited run's lambda")
    for claim in RUN_CLAIMS:
        for number in re.findall(claim, prose):
            if not any(same(float(number), v) for v in run_lambdas):
                problems.append(f"a run at {number} is claimed, but no cited run has that lambda")
    for claim in SIZE_CLAIMS:
        for sizes in re.findall(claim, prose):
            if json.loads(sizes) not in run_sizes:
                problems.append(f"a run that kept {sizes} is claimed, but no cited record kept those sizes")
    return problems


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_comments_cite_only_runs_records_and_values_that_exist(path):
    problems = comment_problems(path)
    assert not problems, "\n".join(problems)


def test_the_comment_check_fails_on_the_superseded_small_l0_file(tmp_path):
    """sweeps/ptb_small_l0.yaml as it was before the records of today's recipe: a grid of 1e-8..1e-6
    and a comment on a 1e-7 run that no record or profile holds."""
    old = tmp_path / "sweeps" / "ptb_small_l0.yaml"
    old.parent.mkdir()
    old.write_text("""# PTB, Zaremba small: L0 lambda grid from almost nothing pruned (1e-8) to clearly too much
# (1e-6); the one small run at 1e-7 kept hidden [112, 105] of [200, 200] at +5.55 test perplexity over dense.
# Time per run: CPU 80 min (1 thread of a 2-core machine, measured at 1e-7).
program: reproduce.train
method: grid
command:
  - ${env}
  - ${interpreter}
  - -m
  - ${program}
  - --config=reproduce/configs/ptb_small_l0.yaml
  - ${args}
parameters:
  model.reg_lambda:
    values: [1.0e-8, 3.0e-8, 1.0e-7, 3.0e-7, 1.0e-6]
""")
    problems = comment_problems(old)
    assert any("[112, 105]" in p for p in problems), problems
    assert sum("a run at 1e-7 is claimed" in p for p in problems) == 2, problems
    # the large L0 file's former derivation of its lambda from that run
    large = tmp_path / "ptb_large_l0.yaml"
    large.write_text((REPO / "sweeps" / "ptb_large_l0.yaml").read_text().replace(
        "untuned 1.3e-8;", "untuned 1.3e-8 (the small run's 1e-7 x 200/1500);"))
    assert comment_problems(large) == ["a run at 1e-7 is claimed, but no cited run has that lambda"]
    # a direct-design file still pointing at that grid's runs
    stale = tmp_path / "ptb_small_direct.yaml"
    stale.write_text((REPO / "sweeps" / "ptb_small_direct.yaml").read_text().replace(
        "results/sweeps/ptb_small_l0/model.reg_lambda=2.5e-07/result.json",
        "results/sweeps/ptb_small_l0/model.reg_lambda=1e-08/result.json"))
    assert any("has no run model.reg_lambda=1e-08" in p for p in comment_problems(stale))
    # a record cited with numbers it does not have
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text((REPO / "sweeps" / "ptb_small_l0.yaml").read_text().replace("test 110.36", "test 109.00"))
    assert any("cited as test 109.00" in p for p in comment_problems(wrong))


# ---------------------------------------------------------------- the training command accepts every file

def parsed_config(program: str, args: list[str]) -> dict:
    """The training command's own parser (LightningCLI + jsonargparse) on these arguments: the config
    it would train, or a failed test naming the argument it rejects."""
    module = {"reproduce.train": "reproduce.run.train", "reproduce.train_squad": "reproduce.run.train_squad"}[program]
    build_cli = __import__(module, fromlist=["build_cli"]).build_cli
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            build_cli([*args, "--print_config"])
    except SystemExit as e:  # --print_config prints and exits 0
        assert e.code in (0, None), err.getvalue()[-2000:]
    except Exception as e:  # jsonargparse's ArgumentError: an unknown key or a bad value
        pytest.fail(f"{program} rejects {args}: {e}")
    return yaml.safe_load(out.getvalue())


def dotted(config: dict, name: str):
    value = config
    for part in name.split("."):
        assert isinstance(value, dict) and part in value, f"{name} is not an option of the training command"
        value = value[part]
    return value


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_every_swept_parameter_is_an_option_of_its_configs_training_command(path):
    sweep = sw.load_sweep(path)
    assert sweep.config_file and (REPO / sweep.config_file).is_file(), f"{path.name}: no config {sweep.config_file}"
    points = sw.expand(sweep)
    for point in (points[0], points[-1]):
        command = sw.build_command(sweep, point, interpreter="python")
        assert command[:4] == ["/usr/bin/env", "python", "-m", sweep.config["program"]]
        parsed = parsed_config(sweep.config["program"], command[4:])
        for name, value in point.items():  # each value reached its option, as the type the option has
            assert same(dotted(parsed, name), value), (name, dotted(parsed, name), value)


def test_the_option_check_fails_on_a_misspelt_parameter():
    sweep = sw.load_sweep(REPO / "sweeps" / "ptb_smoke_l0.yaml")
    args = sw.build_command(sweep, {"model.regg_lambda": 1e-6}, interpreter="python")[4:]
    with pytest.raises(pytest.fail.Exception, match="model.regg_lambda"):
        parsed_config("reproduce.train", args)


# ---------------------------------------------------------------- what has been run: the records

def record_of(source: str | None) -> str | None:
    """The committed record a sizes_from value stands for (a record, a profile's run, a sweep's run)."""
    if not source:
        return None
    parts = Path(source).parts
    if source.startswith("reproduce/measured/") and len(parts) >= 4:
        return f"{parts[2]}/{parts[3]}"
    if source.startswith("results/sweeps/") and len(parts) >= 4:
        stem, run = parts[2], parts[3]
        point = sweep_runs(stem).get(run)
        sweep = sw.load_sweep(REPO / "sweeps" / f"{stem}.yaml")
        found = [name for name in records() if point is not None and ran_point(records()[name], sweep, point)]
        return found[0] if len(found) == 1 else None
    if source.startswith("results/") and len(parts) >= 4:
        name = f"{parts[1]}_{parts[2]}/{parts[3]}"
        return name if name in records() else None
    return None


def command_overrides(record: dict) -> dict[str, str]:
    """--model.x / --data.x options on the record's own command line (either `--k=v` or `--k v`)."""
    args = shlex.split(record.get("command") or "")
    found = {}
    for i, arg in enumerate(args):
        if arg.startswith(("--model.", "--data.")):
            key, _, value = arg[2:].partition("=")
            found[key] = value if _ else (args[i + 1] if i + 1 < len(args) else "")
    return found


def ran_point(record: dict, sweep: sw.Sweep, point: dict) -> bool:
    """Whether the record trained this grid point: the same config file, seed and epochs, every model
    setting of the config and the point, and no option set on its command line that neither sets."""
    config = model_config(sweep)
    if Path(record.get("config_path") or "").name != Path(sweep.config_file).name:
        return False
    if record.get("seed") != point.get("seed_everything", config.get("seed_everything", 1)):
        return False
    if record.get("epochs") != point.get("trainer.max_epochs", (config.get("trainer") or {}).get("max_epochs")):
        return False
    data = {**(config.get("data") or {}), **{k[5:]: v for k, v in point.items() if k.startswith("data.")}}
    if "train_tokens" in data and record.get("train_tokens") != data["train_tokens"]:
        return False
    expected = {**(config.get("model") or {}), **{k[6:]: v for k, v in point.items() if k.startswith("model.")}}
    hparams = record.get("model_hparams") or {}
    handled = set(expected) | NOT_THE_EXPERIMENT
    wanted_source, own_source = expected.pop("sizes_from", None), hparams.get("sizes_from")
    if wanted_source:
        if record_of(wanted_source) is None or record_of(wanted_source) != record_of(own_source):
            return False
        expected.pop("hidden_sizes", None)  # the source's sizes replace them, by design (direct design)
    elif own_source:
        # a magnitude run given an L0 run's sizes by sizes_from pruned to exactly those: the target
        if "target_neurons" not in expected or record["neurons_kept"]["hidden"] != expected.pop("target_neurons"):
            return False
        handled.add("sizes_from")
    for key, value in expected.items():
        if key not in NOT_THE_EXPERIMENT and (key not in hparams or not same(hparams[key], value)):
            return False
    overrides = command_overrides(record)
    return all(key.split(".", 1)[1] in (handled if key.startswith("model.") else set(data)) for key in overrides)


def records_of_sweep(path: Path) -> list[str]:
    sweep = sw.load_sweep(path)
    return sorted(name for name, record in records().items()
                  if any(ran_point(record, sweep, point) for point in sw.expand(sweep)))


def readme_rows() -> dict[str, list[str]]:
    rows = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and (m := re.fullmatch(r"`(\w+\.yaml)`", cells[0])):
            rows[m.group(1)] = cells
    return rows


def test_readme_table_has_every_file_its_runs_time_and_the_records_that_ran_its_points():
    rows = readme_rows()
    assert sorted(rows) == [p.name for p in SWEEP_FILES], "one row per sweep file"
    for path in SWEEP_FILES:
        _, _, runs, time, ran = rows[path.name][:5]
        sweep = sw.load_sweep(path)
        assert int(runs) == len(sw.expand(sweep)), f"{path.name}: the README's run count is stale"
        assert time.startswith(f"{_fmt(sw.expected_minutes(sweep))} / "), \
            f"{path.name}: the README says {time}; the profiles say {_fmt(sw.expected_minutes(sweep))} per run"
        claimed = sorted(re.findall(r"`([\w.=+-]+/[\w.=+-]+)`", ran))
        assert claimed == records_of_sweep(path), f"{path.name}: the README lists {claimed or 'none'} as run"


def test_sweep_headers_state_the_profiles_time_per_run():
    for path in SWEEP_FILES:
        sweep = sw.load_sweep(path)
        expected = f"# Time per run: CPU {_fmt(sw.expected_minutes(sweep))} (the profiles' minutes for " \
                   f"{Path(sweep.config_file).name}"
        assert expected in path.read_text(), f"{path.name}: the header's time is not the profiles' ({expected})"


def test_records_match_grid_points_by_their_settings_not_their_names():
    """ptb_small/l0 ran the small L0 grid's 1e-6 (the config's lambda), the magnitude record its
    [68, 135] target (through sizes_from), the direct record the point whose source is that L0 run;
    the fine-tuned L0 runs (another config) and seed 2 of L0 run none of it."""
    small_l0 = sw.load_sweep(REPO / "sweeps" / "ptb_small_l0.yaml")
    by_lambda = {p["model.reg_lambda"]: p for p in sw.expand(small_l0)}
    l0 = records()["ptb_small/l0"]
    assert ran_point(l0, small_l0, by_lambda[1e-6]) and not ran_point(l0, small_l0, by_lambda[2e-6])
    assert not ran_point({**l0, "seed": 2}, small_l0, by_lambda[1e-6])
    # a setting the config leaves at its default, changed on the record's command line
    assert not ran_point({**l0, "command": l0["command"] + " --model.inner_input_gates=false"}, small_l0,
                         by_lambda[1e-6])
    assert not ran_point({**l0, "model_hparams": {**l0["model_hparams"], "lr": 0.5}}, small_l0, by_lambda[1e-6])
    assert not any(ran_point(records()["ptb_small/l0_ft"], small_l0, p) for p in by_lambda.values())
    assert "ptb_small/magnitude" in records_of_sweep(REPO / "sweeps" / "ptb_small_magnitude.yaml")
    assert records_of_sweep(REPO / "sweeps" / "ptb_small_direct.yaml") == ["ptb_small/direct"]


def test_readme_example_of_an_agent_command_is_the_real_first_command():
    sweep = sw.load_sweep(REPO / "sweeps" / "ptb_small_l0.yaml")
    first = sw.expand(sweep)[0]
    command = " ".join(sw.build_command(sweep, first, interpreter="python"))
    assert f"`{command}`" in README.read_text()
    name = sw.run_names(sweep, [first])[0]
    assert f"`{name}`" in README.read_text()


def test_readme_cites_only_paths_that_exist():
    problems = [p for t in cited_paths(README.read_text()) if (p := path_problem(t))]
    assert not problems, problems
