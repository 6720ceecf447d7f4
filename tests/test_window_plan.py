"""The GPU window's plan (reproduce/measure/gpu/probe.py): how many packed runs finish in time."""

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


def _result(tf32_ok: bool) -> dict:
    return {"precisions": {p: {"packs": [{"runs": r, "ms_per_round": ms} for r, ms in packs]}
                           for p, packs in PACKS.items()},
            "tf32_check": {"use_tf32": tf32_ok}}


def test_round_time_is_linear_between_the_measured_counts():
    packs = _result(False)["precisions"]["fp32"]["packs"]
    assert probe.round_ms(packs, 1) == 6.2
    assert probe.round_ms(packs, 2) == pytest.approx(6.2 + (15.8 - 6.2) / 3)
    assert probe.round_ms(packs, 6) == pytest.approx(15.8 + (31.68 - 15.8) / 2)
    assert probe.round_ms(packs, 16) == pytest.approx(31.68 * 2)  # beyond: per run-step


def test_the_plan_takes_the_most_runs_that_end_in_time():
    steps, epochs = 39 * 1327, 39
    # what the window of 2026-12-04 had: 344 s; one fp32 run takes 51,753 x 6.2 ms = 321 s, with the
    # margin and validation more than that: the plan says none fits (the window then starts one anyway)
    assert probe.plan(_result(False), 344, 7, steps, 0.25, epochs)[:2] == (0, False)
    runs, tf32, predicted = probe.plan(_result(False), 1000, 7, steps, 0.25, epochs)
    # 3 runs: 12.6 ms per round (linear from 1 to 4), 652 s of steps, 47 s of validation and ends,
    # x 1.15 = 804 s; 4 runs: 15.8 ms, 818 s of steps alone: too many
    assert (runs, tf32) == (3, False) and predicted == pytest.approx(1.15 * (steps * 12.6e-3 + 3 * (39 * 0.25 + 6)))
    assert probe.plan(_result(False), 1000, 7, steps, 0.25, epochs)[0] < probe.plan(
        _result(True), 1000, 7, steps, 0.25, epochs)[0]  # TF32, where it passed its check, fits more
    # the host's share: eight runs of 0.4 ms each per step are 3.2 ms per round, above a fast GPU's
    fast = {"precisions": {"fp32": {"packs": [{"runs": 1, "ms_per_round": 0.1}, {"runs": 8, "ms_per_round": 0.8}]}}}
    assert probe.plan(fast, 8 * 1.15 * (1000 * 3.2e-3 + 39 * 0.25 + probe.END_S), 8, 1000, 0.25, 39)[0] == 8
    assert probe.plan(fast, 1.15 * 8 * 1000 * 3.2e-3, 8, 1000, 0.25, 39)[0] < 8


def test_a_window_trains_the_next_runs_of_the_order_not_the_recorded_ones(tmp_path):
    """Each window finishes about one medium run (2026-12-04): without skipping what is committed,
    every window would train medium dense again and never reach the rest of the order."""
    order = ["medium_dense", "medium_l0", "medium_iss", "medium_l0_lambda1e-7", "medium_iss_lambda1.4e-4",
             "medium_magnitude", "medium_direct"]
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
