"""`python -m reproduce table`: rows from fixture run dirs, matched to the registry's reported rows."""

import csv
import json
import math
import shutil
import statistics
import subprocess
import sys
import types

import pytest
from conftest import REPO
from fixtures.run_dirs import L0_TEST_PPL, make_runs, result, speed_json, write_run, write_table
from fixtures.seed_records import SEED_TEST_PPL, records_with_seeds, seed1_test_ppl

from lightning_modules.errors import UserError
from reproduce.__main__ import main
from reproduce.report.runs import group_runs, make_run, read_speed


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    runs = make_runs(tmp_path_factory.mktemp("runs"))
    out = write_table("ptb", runs)
    return out, out["markdown"].read_text(), list(csv.DictReader(out["csv"].open()))


def md_lines(text: str) -> dict[str, list[str]]:
    """{first cell: cells} of every table line of a Markdown file."""
    lines = {}
    for line in text.split("Pareto fronts")[0].splitlines():  # the main tables (the fronts reuse rN)
        if line.startswith("| ") and not line.startswith("| row "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            lines[cells[0]] = cells
    return lines


HEADER = ["row", "method", "lambda", "seeds", "hidden", "input", "params", "flops", "val", "test", "d_val",
          "d_test", "speedup"]


def cells(lines: dict, prefix: str) -> dict[str, str]:
    (key,) = [k for k in lines if k.startswith(prefix)]
    return dict(zip(HEADER, lines[key]))


def test_reported_numbers_sit_under_the_matching_run(built):
    out, md, _ = built
    lines = md_lines(md)
    dense, tf_small = cells(lines, "r1"), cells(lines, "↳ reported `tf_small`")
    assert (dense["method"], dense["val"], dense["test"]) == ("dense", "117.00", "112.26")
    assert (tf_small["val"], tf_small["test"], tf_small["d_val"], tf_small["d_test"]) == (
        "121.39", "115.91", "-4.39", "-3.65")
    # the reported line comes right after its run, and no medium/large dense row is matched to a small run
    text_lines = md.splitlines()
    at = next(i for i, line in enumerate(text_lines) if line.startswith("| r1 |"))  # the fronts reuse r1
    assert text_lines[at + 1].startswith("| ↳ reported `tf_small`") and text_lines[at + 2].startswith("| r2 |")
    by_row = {row.names[0]: [e["id"] for e in row.reported] for row in out["rows"]}
    assert by_row == {"dense": ["tf_small"], "l0_s1": [], "lasso": [],
                      "iss_large": ["iss_large", "iss_large_failed_reproduction", "zhang_ou_iss"]}
    failed = cells(lines, "↳ reported `iss_large_failed_reproduction`")
    assert failed["d_test"] == f"{80.0 - 95.16:+.2f}"


def test_empty_reported_cell_stays_empty_in_markdown_and_csv(built):
    _, md, rows = built
    iss = cells(md_lines(md), "↳ reported `iss_large`")
    assert iss["val"] == iss["test"] == iss["d_val"] == iss["d_test"] == ""
    assert (iss["hidden"], iss["speedup"], iss["lambda"]) == ("[373, 315]", "10.59x", "0.00245")
    (line,) = [r for r in rows if r["reported_id"] == "iss_large"]
    assert line["reported_val_ppl"] == line["reported_test_ppl"] == line["diff_test_ppl"] == ""
    assert line["test_ppl_mean"] == "80.0"  # our own number is there; only the missing one is empty
    assert "nan" not in md.lower() and "None" not in md
    assert not any(v in ("nan", "None", "NaN") for r in rows for v in r.values())


def test_seeds_are_one_row_with_mean_and_sample_std(built):
    _, md, rows = built
    l0 = cells(md_lines(md), "r2")
    std = math.sqrt(sum((x - 118.0) ** 2 for x in L0_TEST_PPL) / (len(L0_TEST_PPL) - 1))
    assert l0["seeds"] == "1, 2" and l0["test"] == f"118.00 ± {std:.2f}"
    assert l0["hidden"] == "[111.0±1.4, 103.0±2.8]" and l0["lambda"] == "1e-07"
    assert l0["speedup"] == "1.65x ± 0.07 / 1.80x ± 0.00"
    (line,) = [r for r in rows if r["method"] == "l0" and r["status"] == "reproduced"]
    assert json.loads(line["seeds"]) == [1, 2] and json.loads(line["runs"]) == ["l0_s1", "l0_s2"]
    assert float(line["test_ppl_mean"]) == pytest.approx(118.0) and float(line["test_ppl_std"]) == pytest.approx(std)
    assert json.loads(line["hidden_kept_mean"]) == [111.0, 103.0]
    assert len(json.loads(line["commands"])) == 2 and "--seed_everything=2" in json.loads(line["commands"])[1]
    assert "--run_dir results/ptb/small/l0_s2 --seed_everything=2`" in md  # each seed's command is named


def test_unfinished_runs_are_skipped_and_footnoted(built):
    out, md, rows = built
    assert out["unfinished"] == ["unfinished_direct"]
    assert all("unfinished_direct" not in r["runs"] for r in rows)
    assert "Unfinished (no result.json yet, not in the table): unfinished_direct." in md


def test_every_reported_row_appears_and_unrun_ones_say_so(built):
    out, md, rows = built
    not_run = {r["reported_id"] for r in rows if r["status"] == "not yet run"}
    assert not_run == {"zaremba_medium", "tf_medium", "zaremba_large", "tf_large", "zhang_ou_zaremba_large",
                       "paper_l0_large"}
    assert "| not yet run: reported `paper_l0_large`" in md
    assert "## large (2x1500)" in md and "## medium (2x650)" in md
    # each cited entry names its source with the citation
    assert "`iss_large`: Wen et al. Learning Intrinsic Sparse Structures" in md


def test_scale_keeps_one_scales_runs_and_reported_rows(tmp_path):
    """`--scale`: a records folder of one scale is not shown beside the other scales' reported rows
    as "not yet run" (the README's medium table said so of the small model, which another folder holds)."""
    runs = make_runs(tmp_path / "runs")
    large = write_table("ptb", runs, tmp_path / "large", scales=["large"])
    md = large["markdown"].read_text()
    assert [row.names for row in large["rows"]] == [["iss_large"]]
    assert "(2x200)" not in md and "(2x650)" not in md and "## large (2x1500)" in md
    assert "finished run (the large scale) in" in md
    statuses = {(r["reported_id"], r["status"]) for r in csv.DictReader(large["csv"].open())}
    assert ("tf_large", "not yet run") in statuses and not any(i.startswith("tf_small") for i, _ in statuses)
    # a scale with no run in the folder: its reported rows only, each "not yet run", and nothing else
    medium = write_table("ptb", runs, tmp_path / "medium", scales=["medium"])
    assert medium["rows"] == [] and medium["runs"] == []
    assert {e.entry["id"] for e in medium["not_run"]} == {"zaremba_medium", "tf_medium"}
    # the command line: the same filter, and a bad scale is one line
    assert main(["table", "ptb", "--runs", str(runs), "--out", str(tmp_path / "cli"), "--scale", "large"]) == 0
    assert (tmp_path / "cli" / "table.md").read_text() == md
    assert main(["table", "ptb", "--runs", str(runs), "--out", str(tmp_path / "bad"), "--scale", "huge"]) == 2


def test_speedups_measured_missing_and_unstructured(built):
    _, md, rows = built
    lines = md_lines(md)
    assert cells(lines, "r3")["speedup"] == "1.00x / 1.00x (n2)"  # lasso: speed.json said 0.97x
    assert "n2: unstructured sparsity (40% of the LSTM weights zero but no neuron removed)" in md
    assert cells(lines, "r4")["speedup"] == "not measured"
    assert cells(lines, "r1")["speedup"] == "1.00x / 1.00x (n1)"  # dense: the reference, measured or not
    assert "n1: the dense model is the reference of every speedup" in md
    (lasso,) = [r for r in rows if r["method"] == "lasso"]
    assert float(lasso["speedup_b1_mean"]) == 1.0 and "unstructured" in lasso["speed_note"]
    (iss,) = [r for r in rows if r["method"] == "group_lasso" and r["reported_id"] == "iss_large"]
    assert iss["speedup_b1_mean"] == "" and iss["speed_note"] == "not measured"


def test_csv_numeric_columns_parse_as_numbers(built):
    _, _, rows = built
    numeric = [k for k in rows[0] if k.endswith(("_mean", "_std")) or k.startswith(("reported_v", "reported_t",
                                                                                       "diff_", "reported_params"))]
    numeric = [k for k in numeric if not k.startswith(("hidden_kept", "input_kept"))]
    for row in rows:
        for key in numeric:
            if row[key]:
                float(row[key])  # no "±", "x" or "," inside a numeric cell
    assert {r["status"] for r in rows} == {"reproduced", "not yet run"}


def test_read_speed_layouts(tmp_path):
    assert read_speed(tmp_path) is None and read_speed(None) is None
    (tmp_path / "speed.json").write_text(json.dumps({"speedup": {"torch": {"model": {"1": 2.0, "20": 3.0}}},
                                                     "latency": {"torch": {"model": {"1": {"pruned": 0.5}}}}}))
    no_int8 = {"int8_test_ppl": None, "int8_b1": None, "int8_b20": None, "cpu": None}
    assert read_speed(tmp_path) == {"b1": 2.0, "b20": 3.0, "latency_b1_ms": 0.5, "dense_latency_b1_ms": None,
                                    **no_int8}
    (tmp_path / "speed.json").write_text(json.dumps(speed_json(2.0, 3.0, 0.5)))  # statistics blocks, as speed.py
    assert read_speed(tmp_path) == {"b1": 2.0, "b20": 3.0, "latency_b1_ms": 0.5, "dense_latency_b1_ms": 1.0,
                                    **no_int8}
    (tmp_path / "speed.json").write_text(json.dumps({**speed_json(2.0, 3.0, 0.5), **int8_block(113.5, 2.6, 3.1),
                                                     "hardware": {"cpu": "AMD EPYC"}}))
    assert read_speed(tmp_path) == {"b1": 2.0, "b20": 3.0, "latency_b1_ms": 0.5, "dense_latency_b1_ms": 1.0,
                                    "int8_test_ppl": 113.5, "int8_b1": 2.6, "int8_b20": 3.1, "cpu": "AMD EPYC"}
    (tmp_path / "speed.json").write_text(json.dumps({"something": "else"}))
    assert read_speed(tmp_path) is None
    (tmp_path / "speed.json").write_text("{not json")
    with pytest.raises(UserError, match="speed.json: not readable JSON"):
        read_speed(tmp_path)


def int8_block(test_ppl: float, b1: float, b20: float) -> dict:
    """speed.json's int8 block as `python -m reproduce speed` writes it (issue 32's contract)."""
    return {"int8": {"engine": "fbgemm", "test_ppl": {"torch": test_ppl, "onnxruntime": None}, "test_ppl_fp32": 113.1,
                     "speedup": {"torch": {"model": {"1": b1, "20": b20}}},
                     "dense_int8_speedup": {"torch": {"model": {"1": 1.4, "20": 1.5}}}}}


def test_int8_columns_read_speed_jsons_int8_block_and_stay_empty_without_it(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "dense", result("none", [200, 200], [200, 200], 117.0, 112.26), speed=speed_json(1.0, 1.0, 0.1))
    for seed, (ppl, b1, b20) in enumerate([(113.5, 2.6, 3.1), (114.5, 2.8, 3.3)], 1):
        write_run(root, f"l0_s{seed}", result("l0", [200, 200], [68, 135], 118.0, 113.0, lam=1e-6, seed=seed),
                  speed={**speed_json(1.6, 1.7, 0.06), **int8_block(ppl, b1, b20)})
    write_run(root, "iss", result("group_lasso", [200, 200], [60, 115], 112.0, 108.0, lam=2e-4),
              speed=speed_json(1.9, 1.7, 0.05))  # timed in fp32 only
    out = write_table("ptb", root, tmp_path / "out")
    md = out["markdown"].read_text()
    assert "| speedup b1 / b20 | int8 test ppl | int8 speedup b1 / b20 |" in md
    l0 = next(line for line in md.splitlines() if line.startswith("| r2 |"))
    assert l0.endswith(f"| 114.00 ± {statistics.stdev([113.5, 114.5]):.2f} | 2.70x ± 0.14 / 3.20x ± 0.14 |"), l0
    iss = next(line for line in md.splitlines() if line.startswith("| r3 |"))
    assert iss.endswith("|  |  |"), iss  # not timed in int8: empty, never 0
    lines = {r["runs"]: r for r in csv.DictReader(out["csv"].open())}
    line = lines['["l0_s1", "l0_s2"]']
    assert (float(line["int8_test_ppl_mean"]), float(line["int8_speedup_b1_mean"]),
            float(line["int8_speedup_b20_mean"])) == (114.0, 2.7, 3.2)
    assert lines['["iss"]']["int8_test_ppl_mean"] == lines['["iss"]']["int8_speedup_b1_mean"] == ""
    # a table where no run was timed in int8 keeps its width: the columns are in table.csv only
    (root / "l0_s1" / "speed.json").write_text(json.dumps(speed_json(1.6, 1.7, 0.06)))
    (root / "l0_s2" / "speed.json").write_text(json.dumps(speed_json(1.6, 1.7, 0.06)))
    md = write_table("ptb", root, tmp_path / "out2")["markdown"].read_text()
    assert "int8 test ppl |" not in md and "No run was timed in int8" in md


def test_table_csv_lists_each_runs_commit_and_cpu(tmp_path):
    root = tmp_path / "runs"
    for seed, hardware in ((1, "x86_64, 2 CPU cores, torch threads 1"),
                           (2, "Intel(R) Xeon(R) Processor, 2 CPU cores, torch 2.13.0+cpu, 1 threads")):
        res = {**result("l0", [200, 200], [68, 135], 118.0, 113.0, lam=1e-6, seed=seed), "hardware": hardware,
               "git_commit": f"c{seed}"}
        write_run(root, f"l0_s{seed}", res, speed={**speed_json(1.6, 1.7, 0.06), "hardware": {"cpu": "AMD EPYC"}})
    out = write_table("ptb", root, tmp_path / "out")
    (line,) = [r for r in csv.DictReader(out["csv"].open()) if r["status"] == "reproduced"]
    assert json.loads(line["commits"]) == ["c1", "c2"]
    # seed 1's result names no CPU model: the one its speed.json ran on, said to be that
    assert json.loads(line["cpus"]) == ["AMD EPYC (speed.json's)", "Intel(R) Xeon(R) Processor"]
    assert "may have run at different commits and on different CPU models" in out["markdown"].read_text()


def test_cli_writes_tables_and_plots_into_the_profile_folder(tmp_path, capsys):
    make_runs(tmp_path / "ptb" / "small")
    assert main(["table", "ptb", "--results", str(tmp_path), "--profile", "small"]) == 0
    out = capsys.readouterr()
    folder = tmp_path / "ptb" / "small"
    assert {p.name for p in folder.glob("*.md")} == {"table.md"} and (folder / "table.csv").is_file()
    assert {p.name for p in folder.glob("*.png")} == {"pareto_flops.png", "pareto_latency.png",
                                                      "pareto_neurons.png", "gate_open_l0_s1.png"}
    # stdout is exactly table.md; what was written goes to stderr
    assert out.out == (folder / "table.md").read_text() + "\n"
    assert "| r1 | dense |" in out.out and "unfinished (no result.json, skipped): unfinished_direct" in out.err
    assert f"wrote {folder / 'table.md'}" in out.err


@pytest.mark.parametrize("args,message", [
    (["table", "cifar", "--runs", "{tmp}"], "unknown dataset 'cifar'; available: ptb, squad"),
    (["table", "ptb", "--runs", "{tmp}/missing"], "missing: no such folder of run dirs"),
    (["table", "ptb", "--runs", "{tmp}"], "no finished ptb run (a result.json) (unfinished: only_config)"),
    (["table", "ptb", "--wandb", "no-slash"], "give ENTITY/PROJECT"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    write_run(tmp_path, "only_config", None)
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


class _SummaryDict:
    """W&B's summary types are mappings, not dicts."""

    def __init__(self, data):
        self._data = data

    def items(self):
        return [(k, _SummaryDict(v) if isinstance(v, dict) else v) for k, v in self._data.items()]

    def __getitem__(self, key):
        value = self._data[key]
        return _SummaryDict(value) if isinstance(value, dict) else value


def fake_wandb(runs: list, fail: bool = False):
    class Api:
        asked = []

        def runs(self, path):
            Api.asked.append(path)
            if fail:
                raise RuntimeError("Could not find project\nmore detail")
            return runs

    return types.SimpleNamespace(Api=Api)


def wandb_run(name, state, res):
    return types.SimpleNamespace(name=name, id=name, state=state, summary=_SummaryDict({"result": res} if res else {}))


def test_wandb_project_gives_the_same_rows(tmp_path, monkeypatch, capsys):
    squad = result("l0", [100], [60], 0, 0, dataset="squad")
    squad["metrics"] = {"em": 60.0, "f1": 70.0}
    api_runs = [
        wandb_run("dense", "finished", result("none", [200, 200], [200, 200], 117.0, 112.26)),
        wandb_run("l0-a", "finished", result("l0", [200, 200], [112, 105], 122.3, 117.8, seed=1, lam=1e-7)),
        wandb_run("l0-b", "finished", result("l0", [200, 200], [110, 101], 122.7, 118.2, seed=2, lam=1e-7)),
        wandb_run("big", "finished", result("group_lasso", [1500, 1500], [373, 315], 84, 80, profile="paper")),
        wandb_run("squad", "finished", squad),
        wandb_run("still-training", "running", None),
    ]
    wandb = fake_wandb(api_runs)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    assert main(["table", "ptb", "--wandb", "team/proj", "--profile", "small", "--results", str(tmp_path)]) == 0
    assert wandb.Api.asked == ["team/proj"]
    folder = tmp_path / "ptb" / "wandb-proj"
    md = (folder / "table.md").read_text()
    lines = md_lines(md)
    assert cells(lines, "↳ reported `tf_small`")["d_test"] == "-3.65"
    assert cells(lines, "r2")["test"].startswith("118.00 ± ") and cells(lines, "r2")["seeds"] == "1, 2"
    assert "| not yet run: reported `iss_large`" in md  # the paper-profile run was filtered out
    assert "still-training (running)" in md and "the W&B project `team/proj`" in md
    assert (folder / "pareto_flops.png").is_file() and not list(folder.glob("gate_open_*"))


def test_wandb_failure_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb([], fail=True))
    with pytest.raises(UserError, match=r"--wandb team/proj: cannot list its runs \(Could not find project\)"):
        write_table("ptb", tmp_path, wandb_project="team/proj")


def test_squad_rows_show_em_and_f1_against_bidaf(tmp_path):
    res = result("none", [100], [100], 0, 0, dataset="squad")
    res["metrics"] = {"em": 66.5, "f1": 76.8}
    write_run(tmp_path, "bidaf_dense", res)
    write_run(tmp_path, "ptb_run", result("none", [200, 200], [200, 200], 117.0, 112.26))  # another dataset
    out = write_table("squad", tmp_path)
    md = out["markdown"].read_text()
    assert "| row | method | λ / target | seeds | hidden kept | input kept | params | FLOPs/question | EM | F1 |" in md
    seo = cells(md_lines(md), "↳ reported `bidaf_seo2017`")
    assert (seo["val"], seo["test"], seo["d_val"], seo["d_test"]) == ("67.70", "77.30", "-1.20", "-0.50")
    assert [row.names for row in out["rows"]] == [["bidaf_dense"]]
    # a smaller BiDAF (the smoke profile's hidden 32) is no counterpart of the paper-scale numbers
    small = result("none", [32], [32], 0, 0, dataset="squad")
    small["metrics"] = {"em": 3.0, "f1": 8.7}
    write_run(tmp_path / "smoke", "bidaf_smoke", small)
    smoke_md = write_table("squad", tmp_path / "smoke")["markdown"].read_text()
    assert "| not yet run: reported `bidaf_seo2017`" in smoke_md and "| ↳ reported" not in smoke_md
    (line,) = [r for r in csv.DictReader(out["csv"].open()) if r["reported_id"] == "bidaf_seo2017"]
    assert float(line["diff_f1"]) == pytest.approx(-0.5) and line["em_mean"] == "66.5"


# ---- what a method is comes from result["method_properties"], never from its name ------------------

def props(label, gated=False, zeroes_weights=False, structured=True, fine_tuned=False) -> dict:
    return {"label": label, "gated": gated, "zeroes_weights": zeroes_weights, "structured": structured,
            "fine_tuned": fine_tuned}


def with_props(res: dict, **kwargs) -> dict:
    return {**res, "method_properties": props(**kwargs)}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Runs as result.json records them now, method_properties included."""
    root = tmp_path_factory.mktemp("labelled")
    write_run(root, "dense", with_props(result("none", [200, 200], [200, 200], 117.0, 112.26), label="dense"),
              speed=speed_json(1.0, 1.0, 0.093))
    write_run(root, "l0", with_props(result("l0", [200, 200], [112, 105], 122.0, 118.0, lam=1e-7), label="L0",
                                     gated=True), speed=speed_json(1.6, 1.8, 0.057))
    ft = result("l0", [200, 200], [120, 110], 120.0, 116.0, lam=1e-7, init_from="results/ptb/small/dense")
    write_run(root, "l0_ft", with_props(ft, label="L0 (fine-tuned)", gated=True, fine_tuned=True),
              speed=speed_json(1.5, 1.7, 0.06))
    # the sizes_from path of the machine it trained on: here only the sibling run dir named l0 exists
    direct = result("none", [112, 105], [112, 105], 121.5, 116.1,
                    sizes_from="/elsewhere/results/ptb/small/l0/result.json")
    write_run(root, "direct", with_props(direct, label="direct design"), speed=speed_json(1.6, 1.8, 0.058))
    # unstructured: known from its properties (structured false), whatever the method's name
    odd = result("magnitude", [200, 200], [200, 200], 119.0, 114.0, sparsity=0.5, target_sparsity=0.5)
    write_run(root, "unstructured", with_props(odd, label="unstructured magnitude", zeroes_weights=True,
                                               structured=False), speed=speed_json(0.98, 0.99, 0.094))
    return root


def test_rows_are_grouped_and_named_by_label(labelled, tmp_path):
    out = write_table("ptb", labelled, tmp_path)
    lines = md_lines(out["markdown"].read_text())
    by_label = {cells(lines, f"r{i}")["method"]: cells(lines, f"r{i}") for i in range(1, 6)}
    # reading order: the reference, gates, the fine-tuned variant after its method, unstructured, the rest
    assert list(by_label) == ["dense", "L0", "L0 (fine-tuned)", "unstructured magnitude", "direct design"]
    assert by_label["L0"]["test"] == "118.00" and by_label["L0 (fine-tuned)"]["test"] == "116.00"
    rows = list(csv.DictReader(out["csv"].open()))
    assert {(r["method"], r["label"]) for r in rows if r["status"] == "reproduced"} == {
        ("none", "dense"), ("l0", "L0"), ("l0", "L0 (fine-tuned)"), ("magnitude", "unstructured magnitude"),
        ("none", "direct design")}


def test_a_fine_tuned_variant_sits_under_its_own_method(tmp_path):
    """ISS and structured magnitude share a kind (structured, zeroing); ISS fine-tuned used to come
    after magnitude pruning, because the fine-tuned flag was compared before the method."""
    root = tmp_path / "runs"
    iss = dict(label="ISS group Lasso", zeroes_weights=True)
    write_run(root, "dense", with_props(result("none", [200, 200], [200, 200], 117.0, 112.0), label="dense"))
    write_run(root, "iss", with_props(result("group_lasso", [200, 200], [116, 173], 106.0, 101.0, lam=1e-4), **iss))
    ft = result("group_lasso", [200, 200], [200, 200], 115.0, 110.0, lam=1e-4, init_from="runs/dense")
    write_run(root, "iss_ft", with_props(ft, **{**iss, "label": "ISS group Lasso (fine-tuned)"}, fine_tuned=True))
    mag = result("magnitude", [200, 200], [68, 135], 116.0, 112.0, target_neurons=[68, 135])
    write_run(root, "mag", with_props(mag, label="structured magnitude", zeroes_weights=True))
    lines = md_lines(write_table("ptb", root, tmp_path / "out")["markdown"].read_text())
    assert [cells(lines, f"r{i}")["method"] for i in range(1, 5)] == [
        "dense", "ISS group Lasso", "ISS group Lasso (fine-tuned)", "structured magnitude"]


def test_direct_design_reads_its_source_from_the_same_folder(labelled, tmp_path):
    out = write_table("ptb", labelled, tmp_path)
    md = out["markdown"].read_text()
    direct = cells(md_lines(md), "r5")
    assert (direct["method"], direct["lambda"]) == ("direct design", "sizes of l0")
    # in the 2x200 section (its source's size), measured, not the reference, and not the registry's
    # dense model of that scale: tf_small sits under the dense row only
    assert direct["speedup"] == "1.60x / 1.80x"
    (row,) = [r for r in out["rows"] if r.label == "direct design"]
    assert row.section == "small (2x200)" and row.reported == []
    assert [e["id"] for r in out["rows"] if r.label == "dense" for e in r.reported] == ["tf_small"]


def test_a_gru_lm_is_its_own_section_with_its_own_dense_reference(tmp_path):
    """A GRU LM of the LSTM's sizes must not join the LSTM's section: there its L0 run would sit on
    the LSTM L0 front, its speedup would be read against the LSTM's dense run, and the paper's (LSTM)
    numbers would be matched to its dense row. A result without model.cell is an LSTM's."""
    root = tmp_path / "runs"
    write_run(root, "dense", with_props(result("none", [200, 200], [200, 200], 117.0, 112.26), label="dense"),
              speed=speed_json(1.0, 1.0, 0.093))
    write_run(root, "l0", with_props(result("l0", [200, 200], [112, 105], 122.0, 118.0, lam=1e-6), label="L0",
                                     gated=True), speed=speed_json(1.6, 1.8, 0.057))
    write_run(root, "gru_dense", with_props(result("none", [200, 200], [200, 200], 125.0, 120.0, cell="gru"),
                                            label="dense"), speed=speed_json(1.0, 1.0, 0.07))
    write_run(root, "gru_l0", with_props(result("l0", [200, 200], [150, 140], 126.0, 121.0, lam=1e-6, cell="gru"),
                                         label="L0", gated=True), speed=speed_json(1.3, 1.4, 0.05))
    out = write_table("ptb", root, tmp_path / "out")
    sections = {row.names[0]: row.section for row in out["rows"]}
    assert sections == {"dense": "small (2x200)", "l0": "small (2x200)",
                        "gru_dense": "small (2x200), GRU", "gru_l0": "small (2x200), GRU"}
    reported = {row.names[0]: [e["id"] for e in row.reported] for row in out["rows"]}
    assert reported["dense"] == ["tf_small"] and reported["gru_dense"] == [] == reported["gru_l0"]
    md = out["markdown"].read_text()
    assert md.index("## small (2x200)\n") < md.index("## small (2x200), GRU\n")


def test_unstructured_and_reference_come_from_properties(labelled, tmp_path):
    md = write_table("ptb", labelled, tmp_path)["markdown"].read_text()
    lines = md_lines(md)
    assert cells(lines, "r4")["speedup"] == "1.00x / 1.00x (n2)"  # speed.json said 0.98x: no neuron removed
    assert "n2: unstructured sparsity (50% of the LSTM weights zero but no neuron removed)" in md
    assert cells(lines, "r4")["lambda"] == "sparsity 0.5"
    assert cells(lines, "r1")["speedup"] == "1.00x / 1.00x (n1)"


def test_new_results_are_read_without_torch(labelled, tmp_path):
    """method_properties is recorded: reading and rendering must not pull torch in to compute it."""
    code = ("import io, sys; from reproduce.report.report import write_report; "
            f"write_report('ptb', {str(labelled)!r}, {str(tmp_path)!r}, echo=io.StringIO()); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_markdown_names_the_folder_as_given_and_nothing_machine_specific(labelled, tmp_path):
    copy = shutil.copytree(labelled, tmp_path / "elsewhere" / "records")
    first = write_table("ptb", labelled, tmp_path / "a", where="reproduce/measured/x")["markdown"].read_text()
    second = write_table("ptb", copy, tmp_path / "b", where="reproduce/measured/x")["markdown"].read_text()
    assert first == second
    assert str(tmp_path) not in first and str(labelled) not in first
    assert "5 finished runs in `reproduce/measured/x`" in first


def test_heading_level_moves_every_heading(labelled, tmp_path):
    md = write_table("ptb", labelled, tmp_path, heading_level=3)["markdown"].read_text()
    headings = [line.split(" ")[0] for line in md.splitlines() if line.startswith("#")]
    assert headings[0] == "###" and set(headings) == {"###", "####", "#####"}
    assert "#### small (2x200)" in md and "##### Commands" in md


def test_gpu_runs_are_labelled_and_every_row_says_what_it_trained_on(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "dense", {**with_props(result("none", [200, 200], [200, 200], 117.0, 112.26), label="dense"),
                              "hardware": "AMD EPYC, 2 CPU cores, torch 2.13.0+cpu, 1 threads"})
    write_run(runs, "l0", {**with_props(result("l0", [200, 200], [112, 105], 122.0, 118.0, lam=1e-7), label="L0",
                                        gated=True), "hardware": "NVIDIA H200 (CUDA)"})
    out = write_table("ptb", runs, tmp_path / "out")
    md = out["markdown"].read_text()
    lines = md_lines(md)
    assert cells(lines, "r1")["method"] == "dense" and cells(lines, "r2")["method"] == "L0 (GPU)"
    assert "- **r2** (l0; seed 1; trained on NVIDIA H200 (CUDA)):" in md
    assert "- **r1** (dense; seed 1; trained on AMD EPYC, 2 CPU cores, torch 2.13.0+cpu, 1 threads):" in md
    by_label = {r["label"]: r for r in csv.DictReader(out["csv"].open())}
    assert json.loads(by_label["L0"]["trained_on"]) == ["NVIDIA H200 (CUDA)"]


# ---- seeds: what makes runs one row -------------------------------------------------------------------

def seeded_run(name, seed, **hp):
    res = result("l0", [200, 200], [68, 135], 118.0, 113.0 + seed / 10, seed=seed, lam=1e-6, **hp)
    return make_run(name, with_props(res, label="L0", gated=True))


def test_seeds_group_across_code_versions_and_source_paths():
    old = seeded_run("l0", 1)
    old.result["model_hparams"].pop("structured")  # a setting the code of seed 1 did not record yet
    runs = [seeded_run("l0_seed10", 10, structured=True), seeded_run("l0_seed2", 2, structured=True), old,
            seeded_run("l0_other", 3, structured=False)]  # that setting at another value: another experiment
    assert [[r.name for r in g] for g in group_runs(runs)] == [["l0", "l0_seed2", "l0_seed10"], ["l0_other"]]
    # a fine-tuning of seed N starts from dense_seedN; the baselines take seed 1's sizes through the
    # committed record's path: the same experiment. From another run: another experiment
    ft = [seeded_run("ft", 1, init_from="results/ptb/small/dense"),
          seeded_run("ft_seed2", 2, init_from="/elsewhere/results/ptb/small/dense_seed2"),
          seeded_run("ft_from_l0", 3, init_from="results/ptb/small/l0")]
    assert [[r.name for r in g] for g in group_runs(ft)] == [["ft", "ft_seed2"], ["ft_from_l0"]]
    sizes = [seeded_run("direct", 1, sizes_from="results/ptb/small/l0/result.json"),
             seeded_run("direct_seed2", 2, sizes_from="reproduce/measured/ptb_small/l0/result.json"),
             seeded_run("direct_2e6", 2, sizes_from="reproduce/measured/ptb_small/l0_lambda2e-6/result.json")]
    assert [[r.name for r in g] for g in group_runs(sizes)] == [["direct", "direct_seed2"], ["direct_2e6"]]
    # how a step was computed is no part of the experiment; gate settings are, for a gated model only
    assert len(group_runs([seeded_run("l0", 1, step_impl="eager"), seeded_run("l0_gpu", 2, step_impl="fused")])) == 1
    assert len(group_runs([seeded_run("l0", 1, log_alpha_init_mean=1.0),
                           seeded_run("l0_seed2", 2, log_alpha_init_mean=3.0)])) == 2
    dense = [make_run(f"dense_seed{seed}", with_props(result("none", [200, 200], [200, 200], 117.0, 112.0, seed=seed,
                                                             log_alpha_init_mean=mean), label="dense"))
             for seed, mean in ((1, 1.0), (2, 3.0))]
    assert len(group_runs(dense)) == 1
    # the same config named by another path is the same experiment; another lambda is not
    moved = seeded_run("l0_seed3", 3)
    moved.result["config_path"] = "/work/seeds/" + moved.result["config_path"]
    other = seeded_run("l0_2e6", 2)
    other.result["lambda"] = 2e-6
    assert [[r.name for r in g] for g in group_runs([seeded_run("l0", 1), moved, other])] == [
        ["l0", "l0_seed3"], ["l0_2e6"]]


@pytest.fixture(scope="module")
def seeded_table(tmp_path_factory):
    runs = records_with_seeds(tmp_path_factory.mktemp("records"))
    out = write_table("ptb", runs, tmp_path_factory.mktemp("out"), where="reproduce/measured/ptb_small")
    return out["markdown"].read_text(), list(csv.DictReader(out["csv"].open()))


def test_rows_of_several_seeds_show_mean_std_and_the_seeds(seeded_table):
    """The committed records with seeds 2 and 3 of the decisive rows (tests/fixtures/seed_records.py):
    each decisive row holds its three seeds, whatever path or code version each was trained with."""
    md, rows = seeded_table
    by_runs = {tuple(json.loads(r["runs"])): r for r in rows if r["status"] == "reproduced"}
    for run, (second, third) in SEED_TEST_PPL.items():
        line = by_runs[(run, f"{run}_seed2", f"{run}_seed3")]
        values = [seed1_test_ppl(run), second, third]
        assert json.loads(line["seeds"]) == [1, 2, 3] and line["n_seeds"] == "3"
        assert float(line["test_ppl_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(line["test_ppl_std"]) == pytest.approx(statistics.stdev(values))
    assert json.loads(by_runs[("group_lasso_lambda4e-4",)]["seeds"]) == [1]  # a row of one seed stays one
    assert len(by_runs) == 18  # the 17 rows of seed 1 and ISS at 4e-4: no seed left on a row of its own
    dense = [seed1_test_ppl("dense"), *SEED_TEST_PPL["dense"]]
    line = next(line for line in md.splitlines() if line.startswith("| r1 | dense |"))
    assert line.startswith("| r1 | dense |  | 1, 2, 3 | [200, 200] | [200, 200] | 4,653,200 ± 0 | 5,280,000 ± 0 |")
    assert f"| {statistics.fmean(dense):.2f} ± {statistics.stdev(dense):.2f} |" in line
    assert "- **r1** (dense, dense_seed2, dense_seed3; seed 1, 2, 3;" in md  # every seed's command is listed
    assert "--run_dir results/ptb/small/magnitude_seed3 --profile small --seed_everything=3" in md


def test_settings_left_out_of_an_experiment_are_the_models_own():
    """NOT_THE_EXPERIMENT and GATE_SETTINGS name model settings: a renamed setting must not slip
    silently back into what separates seeds (or out of it)."""
    import inspect

    from lightning_modules.lm.lm_task import LanguageModelTask
    from lightning_modules.task_base import PrunedTask
    from reproduce.report.runs import GATE_SETTINGS, NOT_THE_EXPERIMENT

    settings = {name for task in (PrunedTask, LanguageModelTask)
                for name in inspect.signature(task.__init__).parameters}
    assert set(GATE_SETTINGS) | set(NOT_THE_EXPERIMENT) <= settings
    assert all(name.startswith(("gate", "log_alpha", "inner_input_gates")) for name in GATE_SETTINGS)


def test_the_renderers_only_format():
    """The runs are resolved once (rows.py) and the statistics computed once (comparisons.py): the
    renderers call none of runs.py's scale, section or grouping functions, nor fronts.py's tests."""
    import ast

    resolved_elsewhere = {"scale_and_section", "size_scale", "group_runs", "is_reference", "method_rank",
                          "experiment_key", "compare", "relations", "coverage", "pooled_noise", "front_value"}
    for name in ("tables.py", "plots.py"):
        tree = ast.parse((REPO / "reproduce" / "report" / name).read_text())
        imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for a in node.names}
        assert not imported & resolved_elsewhere, (name, imported & resolved_elsewhere)
    # a formatter that grows past this is computing again (issue 31: 768 lines before)
    assert len((REPO / "reproduce" / "report" / "tables.py").read_text().splitlines()) <= 450
