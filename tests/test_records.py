"""Committed records of reported runs (`python -m reproduce record`), and the README's tables:
every table the README reports must be what its records folder regenerates, character for character."""

import difflib
import json
import shutil

import pytest
from conftest import REPO
from fixtures.run_dirs import gate_history_lines, result, speed_json, write_run

from lightning_modules.errors import UserError
from lightning_modules.run_dir import RECORD_FILES
from reproduce.__main__ import main
from reproduce.report.records import (
    block_text,
    default_destination,
    parse_block_args,
    readme_blocks,
    relative_path,
    relative_paths,
    render_block,
)
from reproduce.report.table_command import DOCUMENTS_WITH_TABLES

README = REPO / "README.md"


# ---- the README and docs/RESULTS.md -------------------------------------------------------------

@pytest.mark.parametrize("name", DOCUMENTS_WITH_TABLES)
def test_every_reported_table_is_regenerated_from_its_records(name):
    path = REPO / name
    blocks = readme_blocks(path.read_text())
    assert blocks, (f"{name} has no `<!-- table: DATASET --runs FOLDER -->` ... `<!-- /table -->` block: a "
                    "reported table must be regenerable from committed records. Record the runs (python -m "
                    "reproduce record ptb --profile small), add the markers around the table, then fill them "
                    "with python -m reproduce table --update-readme")
    problems = []
    for block in blocks:
        try:
            expected = render_block(block.args, path.parent).strip()
        except UserError as e:  # a missing records folder, a bad block: name the block
            problems.append(f"<!-- table: {block.args} -->: {e}")
            continue
        if block.body.strip() != expected:
            diff = difflib.unified_diff(block.body.strip().splitlines(), expected.splitlines(),
                                        name, f"python -m reproduce table {block.args}", lineterm="")
            problems.append("\n".join(diff))
    assert not problems, (f"{name}: tables differ from their records (python -m reproduce table --update-readme "
                          "rewrites them):\n" + "\n\n".join(problems))


README_MAX_LINES = 200  # a landing page: the full results live in docs/RESULTS.md


def test_the_readme_is_a_landing_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, more than the {README_MAX_LINES} a landing page holds: move "
        "results into docs/RESULTS.md and keep a link (and, for a comparison, its --part verdict lines)")
    # the comparison's verdict is generated, its table lives in RESULTS
    args = [b.args for b in readme_blocks("\n".join(lines) + "\n")]
    assert any(a.endswith("--part verdict") for a in args) and not any("--part equal-flops" in a for a in args)


# ---- fake run dirs ------------------------------------------------------------------------------

def full_run_dir(root, name, res, **kwargs):
    """A run dir with everything training leaves behind, weights included."""
    run_dir = write_run(root, name, res, **kwargs)
    (run_dir / "metrics.csv").write_text("epoch,step,val_ppl\n0,10,130.0\n")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (run_dir / "export").mkdir()
    (run_dir / "export" / "model.safetensors").write_bytes(b"weights")
    (run_dir / "hparams.yaml").write_text("lr: 1\n")
    (run_dir / "metrics.part-000.csv").write_text("epoch\n0\n")
    return run_dir


@pytest.fixture
def profile_dir(tmp_path):
    """results/ptb/small of a finished profile: dense, L0 (gated, with a gate history), the direct
    design at L0's sizes, and one run still training."""
    root = tmp_path / "results" / "ptb" / "small"
    full_run_dir(root, "dense", result("none", [200, 200], [200, 200], 117.0, 112.26, run="dense"),
                 speed=speed_json(1.0, 1.0, 0.093))
    full_run_dir(root, "l0", result("l0", [200, 200], [112, 105], 122.0, 117.8, lam=1e-7, run="l0"),
                 speed=speed_json(1.6, 1.8, 0.057), history=gate_history_lines())
    full_run_dir(root, "direct", result("none", [112, 105], [112, 105], 121.5, 116.1, run="direct",
                                        sizes_from="results/ptb/small/l0/result.json"))
    write_run(root, "l0_ft", None)
    return root


def one_line_error(capsys, message: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


# ---- record -----------------------------------------------------------------------------------------

def test_record_copies_only_the_record_files(profile_dir, tmp_path, capsys):
    dest = tmp_path / "measured" / "ptb_small"
    assert main(["record", str(profile_dir / "l0"), str(profile_dir / "dense"), "--to", str(dest)]) == 0
    assert {p.name for p in dest.iterdir()} == {"l0", "dense"}
    assert {p.name for p in (dest / "l0").iterdir()} == set(RECORD_FILES)  # no checkpoints, export, parts
    assert {p.name for p in (dest / "dense").iterdir()} == set(RECORD_FILES) - {"gate_history.jsonl"}
    for name in RECORD_FILES:
        assert (dest / "l0" / name).read_bytes() == (profile_dir / "l0" / name).read_bytes()
    assert "recorded 2 runs into" in capsys.readouterr().err


def test_record_replaces_an_older_record_whole(profile_dir, tmp_path):
    dest = tmp_path / "records"
    assert main(["record", str(profile_dir / "l0"), "--to", str(dest)]) == 0
    (profile_dir / "l0" / "speed.json").unlink()  # e.g. re-measured later: the stale copy must go
    (profile_dir / "l0" / "result.json").write_text(json.dumps({"method": "l0", "metrics": {"test_ppl": 1.0}}))
    assert main(["record", str(profile_dir / "l0"), "--to", str(dest)]) == 0
    assert not (dest / "l0" / "speed.json").exists()
    assert json.loads((dest / "l0" / "result.json").read_text())["metrics"] == {"test_ppl": 1.0}
    assert [p.name for p in dest.iterdir()] == ["l0"]  # no temporary folder left behind


def test_record_refuses_an_unfinished_run_and_copies_nothing(profile_dir, tmp_path, capsys):
    dest = tmp_path / "records"
    assert main(["record", str(profile_dir / "l0"), str(profile_dir / "l0_ft"), "--to", str(dest)]) == 2
    one_line_error(capsys, f"{profile_dir / 'l0_ft'}: not a finished run (no result.json); finish it first")
    assert not dest.exists()  # all or nothing: the finished one was not copied either


@pytest.mark.parametrize("args,message", [
    (["record", "{p}/l0"], "give --to FOLDER"),
    (["record", "{p}/missing", "--to", "{t}/r"], "missing: no such run dir"),
    (["record", "{p}", "--to", "{t}/r"], "it is a folder of runs: record DATASET --profile PROFILE"),
    (["record", "ptb", "squad", "--profile", "small"], "with --profile give one dataset"),
    (["record", "cifar", "--profile", "small", "--results", "{t}/results"], "unknown dataset 'cifar'"),
    (["record", "ptb", "--profile", "paper", "--results", "{t}/results"], "no such folder of runs"),
])
def test_record_errors_are_one_line(profile_dir, tmp_path, capsys, args, message):
    args = [a.replace("{p}", str(profile_dir)).replace("{t}", str(tmp_path)) for a in args]
    assert main(args) == 2
    one_line_error(capsys, message)


def test_record_a_profile_takes_its_finished_runs(profile_dir, tmp_path, capsys):
    dest = tmp_path / "records"
    assert main(["record", "ptb", "--profile", "small", "--results", str(tmp_path / "results"),
                 "--to", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["dense", "direct", "l0"]
    err = capsys.readouterr().err
    assert "not recorded (unfinished, no result.json): l0_ft" in err
    assert default_destination("ptb", "small") == REPO / "reproduce" / "measured" / "ptb_small"


def test_record_writes_paths_relative_and_nothing_else_changes(profile_dir, tmp_path):
    """A run trained with absolute paths (its --run_dir, config, sizes source, speed.json's folders)
    is recorded with them relative: the record reads the same on any machine."""
    run = profile_dir / "direct"
    res = json.loads((run / "result.json").read_text())
    config = REPO / "reproduce" / "configs" / "ptb_small_direct.yaml"
    res.update(config_path=str(config), export_path="export",
               command=f"python -m reproduce.train --config {config} --run_dir {run} "
                       f"--model.sizes_from={profile_dir / 'l0' / 'result.json'}")
    res["model_hparams"]["sizes_from"] = str(profile_dir / "l0" / "result.json")
    (run / "result.json").write_text(json.dumps(res, indent=2))
    (run / "config.yaml").write_text(f"run_dir: {run}\nmodel:\n  sizes_from: {profile_dir}/l0/result.json\n"
                                     "  lr: 1.0e-3\n")
    (run / "speed.json").write_text(json.dumps({"source": {"kind": "export", "export_dir": str(run / "export"),
                                                           "run_dir": str(run)}, **speed_json(1.3, 1.2, 0.07)}))
    dest = tmp_path / "records"
    assert main(["record", str(run), "--to", str(dest)]) == 0
    recorded = dest / "direct"
    for name in ("result.json", "config.yaml", "speed.json"):
        text = (recorded / name).read_text()
        assert str(tmp_path) not in text and str(REPO) not in text, text
    got = json.loads((recorded / "result.json").read_text())
    assert got["config_path"] == "reproduce/configs/ptb_small_direct.yaml"
    assert got["command"] == ("python -m reproduce.train --config reproduce/configs/ptb_small_direct.yaml --run_dir "
                              "results/ptb/small/direct --model.sizes_from=results/ptb/small/l0/result.json")
    assert got["model_hparams"]["sizes_from"] == "results/ptb/small/l0/result.json"
    assert {k: v for k, v in got.items() if k not in ("config_path", "command", "model_hparams")} == {
        k: v for k, v in res.items() if k not in ("config_path", "command", "model_hparams")}  # every number kept
    assert (recorded / "config.yaml").read_text() == ("run_dir: results/ptb/small/direct\nmodel:\n"
                                                      "  sizes_from: results/ptb/small/l0/result.json\n"
                                                      "  lr: 1.0e-3\n")
    speed = json.loads((recorded / "speed.json").read_text())
    assert speed["source"] == {"kind": "export", "export_dir": "results/ptb/small/direct/export",
                               "run_dir": "results/ptb/small/direct"}
    assert (recorded / "speed.json").read_text().count("\n") == (run / "speed.json").read_text().count("\n")


@pytest.mark.parametrize("path,expected", [
    ("/work/main/results/ptb/small/l0", "results/ptb/small/l0"),  # a run dir: its own relative path
    ("/work/main/.gpu/results/window/medium_dense", "results/window/medium_dense"),  # a staged copy's
    ("/home/alice/code/rnn/results/ptb/x/result.json", "results/ptb/x/result.json"),
    ("/work/abl/ft_lr1", "abl/ft_lr1"),  # outside any results/: relative to the machine's work folder
    ("/root/out/bench_steps.json", "out/bench_steps.json"),
    ("/tmp/pytest-of-x/pytest-1/run", "pytest-of-x/pytest-1/run"),
    ("/usr/lib/libgomp.so", "/usr/lib/libgomp.so"),  # a system path reads the same everywhere
])
def test_relative_path(path, expected):
    assert relative_path(path) == expected


def test_relative_path_of_the_repo_itself():
    assert relative_path(str(REPO / "reproduce" / "configs" / "x.yaml"), REPO) == "reproduce/configs/x.yaml"
    assert relative_path(str(REPO), REPO) == "."


def test_relative_paths_touch_only_absolute_paths():
    text = ('{"cmd": "--run_dir /work/x/results/ptb/a --model.init_from=/work/abl/dense", "n": 1.5e-07, '
            '"url": "https://example.org/work/x", "rel": "results/ptb/b", "frac": "3/4", "lib": "/usr/lib/x"}\n')
    assert relative_paths(text) == ('{"cmd": "--run_dir results/ptb/a --model.init_from=abl/dense", "n": 1.5e-07, '
                                    '"url": "https://example.org/work/x", "rel": "results/ptb/b", "frac": "3/4", '
                                    '"lib": "/usr/lib/x"}\n')


def test_record_names_the_runs_a_record_depends_on(profile_dir, tmp_path, capsys):
    assert main(["record", str(profile_dir / "direct"), "--to", str(tmp_path / "r")]) == 0
    assert "has no record of l0, which recorded runs took sizes or weights from" in capsys.readouterr().err


# ---- the table of a records folder ------------------------------------------------------------------

@pytest.fixture
def records(profile_dir, tmp_path, monkeypatch):
    """reproduce/measured/ptb_small of a checkout at tmp_path (the working directory)."""
    monkeypatch.chdir(tmp_path)
    assert main(["record", "ptb", "--profile", "small", "--to", "reproduce/measured/ptb_small"]) == 0
    shutil.rmtree(tmp_path / "results")  # the records alone must be enough
    return tmp_path / "reproduce" / "measured" / "ptb_small"


def test_table_of_records_prints_what_the_readme_block_holds(records, tmp_path, capsys):
    capsys.readouterr()
    assert main(["table", "ptb", "--runs", "reproduce/measured/ptb_small"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == render_block("ptb --runs reproduce/measured/ptb_small", tmp_path).strip()
    assert printed == (records / "table.md").read_text() + "\n"
    assert {"table.md", "table.csv", "pareto_flops.png", "gate_open_l0.png"} <= {p.name for p in records.iterdir()}
    assert "3 finished runs in `reproduce/measured/ptb_small`" in printed and str(tmp_path) not in printed
    # the direct design finds its source among the records, not at the path it trained with
    assert "| direct design | sizes of l0 |" in printed and "## small (2x200)" in printed


def printed_part(args: str, root, capsys) -> str:
    """What `python -m reproduce table ARGS` prints, checked to be what a block of those ARGS holds."""
    capsys.readouterr()
    assert main(["table", *args.split()]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == render_block(args, root).strip()
    return printed


def test_the_equal_flops_part_prints_what_its_block_holds_and_the_files_keep_everything(records, tmp_path, capsys):
    printed = printed_part("ptb --runs reproduce/measured/ptb_small --heading-level 3 --scale small --part equal-flops",
                           tmp_path, capsys)
    assert printed.startswith("### Test ppl at equal FLOPs/token") and "**small (2x200)**" in printed
    assert "| r1 |" not in printed and "Sources" not in printed  # the part alone: no rows, no commands
    assert "3 finished runs (the small scale) in `reproduce/measured/ptb_small`" in printed
    written = (records / "table.md").read_text()  # the file: the whole table, its rows and fronts included
    assert "| r1 |" in written and "Pareto fronts" in written and printed.strip().splitlines()[0] in written


def test_the_verdict_part_is_the_comparisons_in_a_few_lines(records, tmp_path, capsys):
    printed = printed_part("ptb --runs reproduce/measured/ptb_small --scale small --part verdict", tmp_path, capsys)
    # L0 (117.8, one seed) against the direct design (116.1) at L0's own shape, 434,000 of 800,000 FLOPs
    assert ("- L0 against direct design: **worse** at 54.2 % of dense FLOPs (by 1.70); does L0 dominate direct design "
            "on the FLOPs front? **no**.") in printed and "| r1 |" not in printed
    assert "one seed per row, untested" in printed


def test_the_same_records_give_the_same_text_anywhere(records, tmp_path):
    text = render_block("ptb --runs reproduce/measured/ptb_small", tmp_path)
    moved = tmp_path / "clone"
    shutil.copytree(records, moved / "reproduce" / "measured" / "ptb_small")
    assert render_block("ptb --runs reproduce/measured/ptb_small/", moved) == text


def test_update_readme_rewrites_only_the_blocks(records, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nBefore.\n\n"
                      "<!-- table: ptb --runs reproduce/measured/ptb_small --heading-level 4 -->\n"
                      "stale table\n<!-- /table -->\n\nAfter.\n")
    assert main(["table", "--update-readme", str(readme)]) == 0
    assert "1 table block, 1 changed" in capsys.readouterr().err
    text = readme.read_text()
    (block,) = readme_blocks(text)
    rendered = render_block(block.args, tmp_path)
    assert text == ("# Title\n\nBefore.\n\n" + block_text(block.args, rendered) + "\n\nAfter.\n")
    assert rendered.startswith("#### PTB: reproduced vs reported") and "##### small (2x200)" in rendered
    assert main(["table", "--update-readme", str(readme)]) == 0
    assert "1 table block, 0 changed" in capsys.readouterr().err and readme.read_text() == text


def test_update_readme_without_blocks_is_an_error(tmp_path, capsys):
    (tmp_path / "README.md").write_text("# nothing to regenerate\n")
    assert main(["table", "--update-readme", str(tmp_path / "README.md")]) == 2
    one_line_error(capsys, "no `<!-- table: DATASET --runs FOLDER -->`")


def test_readme_blocks_and_their_arguments():
    text = ("x\n<!-- table: ptb --runs a/b -->\n\n| t |\n\n<!-- /table -->\ny\n"
            "<!-- table: squad --runs c --heading-level 3 -->\n<!-- /table -->\n")
    blocks = readme_blocks(text)
    assert [(b.args, b.body) for b in blocks] == [("ptb --runs a/b", "\n| t |\n\n"),
                                                  ("squad --runs c --heading-level 3", "")]
    assert parse_block_args("ptb --runs ./a/b/") == ("ptb", "a/b", 1, None, "all")
    assert parse_block_args(blocks[1].args) == ("squad", "c", 3, None, "all")
    assert parse_block_args("ptb --runs a --scale medium --scale large --part equal-flops") == (
        "ptb", "a", 1, ("medium", "large"), "equal-flops")
    for bad, message in [("ptb --profile small", "--runs"), ("ptb --runs a --wandb e/p", "not allowed"),
                         ("ptb --runs /abs/path", "relative"), ("cifar --runs a", "unknown dataset"),
                         ("ptb --runs a --scale huge", "not a scale"), ("squad --runs a --scale small", "PTB"),
                         ("ptb --runs a --part fronts", "invalid choice")]:
        with pytest.raises(UserError, match=message):
            parse_block_args(bad)
