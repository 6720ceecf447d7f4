"""The GPU window's plan (reproduce/measure/gpu/probe.py): how many runs finish in time, batched or packed."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import REPO

from reproduce.orchestrate.gpu_window import window_runs

spec = importlib.util.spec_from_file_location("probe", REPO / "reproduce/measure/gpu/probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)

# the H200's measured fp32 / TF32 medium rounds of 2026-12-04 (reproduce/measured/h200_2026-12-04)
PACKS = {"fp32": [(1, 6.2), (4, 15.8), (8, 31.68)], "tf32": [(1, 4.03), (4, 10.76), (8, 21.57)]}


def _result(batched: dict | None = None) -> dict:
    """A probe's JSON: the measured packed rounds, and batched steps where a test gives them."""
    return {"precisions": {p: {"packs": [{"runs": r, "ms_per_round": ms} for r, ms in packs],
                               **({"batched": [{"members": r, "ms_per_step": ms} for r, ms in batched[p]]}
                                  if batched else {})}
                           for p, packs in PACKS.items()}}


def test_round_time_is_linear_between_the_measured_counts():
    packs = _result()["precisions"]["fp32"]["packs"]
    assert probe.round_ms(packs, 1) == 6.2
    assert probe.round_ms(packs, 2) == pytest.approx(6.2 + (15.8 - 6.2) / 3)
    assert probe.round_ms(packs, 6) == pytest.approx(15.8 + (31.68 - 15.8) / 2)
    assert probe.round_ms(packs, 16) == pytest.approx(31.68 * 2)  # beyond: per run-step


STEPS, EPOCHS = 39 * 1327, 39
FP32 = ["fp32"] * 7


def test_the_plan_takes_the_most_runs_that_end_in_time_packed():
    # what the window of 2026-12-04 had: 344 s; one fp32 run takes 51,753 x 6.2 ms = 321 s, with the
    # margin and validation more than that: the plan says none fits (the window then starts one anyway)
    assert probe.plan(_result(), 344, FP32, STEPS, 0.25, EPOCHS)[0] == 0
    runs, mode, predicted = probe.plan(_result(), 1000, FP32, STEPS, 0.25, EPOCHS)
    # 3 runs: 12.6 ms per round (linear from 1 to 4), 652 s of steps, 47 s of validation and ends,
    # x 1.15 = 804 s; 4 runs: 15.8 ms, 818 s of steps alone: too many
    assert (runs, mode) == (3, "packed") and predicted == pytest.approx(1.15 * (STEPS * 12.6e-3 + 3 * (39 * 0.25 + 6)))
    # the host's share: eight runs of 0.4 ms each per step are 3.2 ms per round, above a fast GPU's
    fast = {"precisions": {"fp32": {"packs": [{"runs": 1, "ms_per_round": 0.1}, {"runs": 8, "ms_per_round": 0.8}]}}}
    eight = ["fp32"] * 8
    assert probe.plan(fast, 8 * 1.15 * (1000 * 3.2e-3 + 39 * 0.25 + probe.END_S), eight, 1000, 0.25, 39)[0] == 8
    assert probe.plan(fast, 1.15 * 8 * 1000 * 3.2e-3, eight, 1000, 0.25, 39)[0] < 8


def test_the_plan_takes_batched_where_it_fits_more_and_adds_the_precision_groups():
    # illustrative batched step times (not measurements): 7 members at 9 ms where 8 packed take 31.68
    batched = {"fp32": [(1, 6.0), (4, 7.5), (7, 9.0)], "tf32": [(1, 4.0), (4, 5.0), (7, 6.0)]}
    runs, mode, predicted = probe.plan(_result(batched), 1000, FP32, STEPS, 0.25, EPOCHS)
    assert (runs, mode) == (7, "batched")
    assert predicted == pytest.approx(1.15 * (STEPS * 9.0e-3 + 7 * (39 * 0.25 + 6)))
    # fp32 runs and TF32 controls: one batched step of two groups, their times added; packed cannot
    mixed = ["fp32"] * 5 + ["tf32"] * 2
    assert probe.predict(_result(batched), "packed", mixed, STEPS, 0.25, EPOCHS) is None
    both = probe.predict(_result(batched), "batched", mixed, STEPS, 0.25, EPOCHS)
    fp32_5 = 7.5 + (9.0 - 7.5) / 3
    tf32_2 = 4.0 + (5.0 - 4.0) / 3
    assert both == pytest.approx(1.15 * (STEPS * (fp32_5 + tf32_2) / 1e3 + 7 * (39 * 0.25 + 6)))
    # without batched times (a probe from before the batched trainer) mixed precisions stop at the first change
    assert probe.plan(_result(), 1e9, mixed, STEPS, 0.25, EPOCHS)[:2] == (5, "packed")


def test_a_window_trains_the_next_runs_of_the_order_not_the_recorded_ones(tmp_path):
    """Each window finishes about one medium run (2026-12-04): without skipping what is committed,
    every window would train medium dense again and never reach the rest of the order."""
    order = ["medium_dense", "medium_l0", "medium_iss", "medium_l0_lambda1e-7", "medium_iss_lambda1.4e-4",
             "medium_magnitude", "medium_direct", "medium_dense_tf32", "medium_dense_tf32_seed2", "medium_l0_tf32",
             "medium_l0_tf32_seed2"]
    runs, recorded = window_runs("medium", tmp_path)
    assert [r.name for r in runs] == order and recorded == []
    for name in ("medium_dense", "medium_iss"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text("{}")
    (tmp_path / "medium_l0").mkdir()  # a folder without result.json is not a record
    runs, recorded = window_runs("medium", tmp_path)
    assert [r.name for r in runs] == [n for n in order if n not in ("medium_dense", "medium_iss")]
    assert recorded == ["medium_dense", "medium_iss"]
    assert [r.name for r in window_runs("medium", tmp_path, rerun=True)[0]] == order
    # the committed records: medium dense is in, so the next window starts with L0
    assert window_runs("medium", REPO / "reproduce/measured/ptb_medium")[0][0].name == "medium_l0"
    assert [r.name for r in window_runs("large", tmp_path)[0]] == ["large_dense", "large_l0", "large_group_lasso"]


def test_the_window_lists_each_runs_seed_overrides_and_precision(tmp_path, capsys):
    from reproduce.orchestrate.gpu_window import main

    assert main(["medium", "--records", str(tmp_path)]) == 0
    lines = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()}
    assert lines["medium_l0_lambda1e-7"][2:] == ["fp32", "--model.reg_lambda=1e-7"]
    assert lines["medium_l0_tf32_seed2"][2:] == ["tf32", "--seed_everything=2 --precision=tf32"]
    assert lines["medium_l0"][2:] == ["fp32", ""]  # no overrides: an empty last field
