"""Dominance and Pareto fronts with the seeds' noise (reproduce/report/fronts.py), and the sections of the
tables built on them, whose yes / no / within-noise lines a README verdict is checked against:
the Pareto fronts and the metric at equal FLOPs."""

import csv
import io
import json
import math
import statistics

import pytest
from fixtures.run_dirs import result, speed_json, write_run, write_table
from fixtures.seed_records import MEASURED, SEED_TEST_PPL, records_with_seeds, seed1_test_ppl
from scipy import stats
from test_tables import with_props

from reproduce.report.fronts import (
    DOMINATES,
    NOT_DOMINATED,
    POOLED,
    WELCH,
    WITHIN_NOISE,
    Noise,
    answer,
    compare,
    coverage,
    dominates,
    front_value,
    pareto_front,
    pool_by_shape,
    pooled_noise,
    relation,
    relations,
)


@pytest.mark.parametrize("a,b,lower,expected", [
    ((1, 5.0), (2, 6.0), True, True),     # cheaper and better
    ((1, 6.0), (2, 6.0), True, True),     # cheaper, equal quality
    ((2, 5.0), (2, 6.0), True, True),     # same cost, better
    ((2, 6.0), (2, 6.0), True, False),    # equal points dominate neither way
    ((1, 7.0), (2, 6.0), True, False),    # cheaper but worse: a trade-off
    ((3, 5.0), (2, 6.0), True, False),    # better but dearer
    ((1, 7.0), (2, 6.0), False, True),    # higher is better (F1)
    ((1, 5.0), (2, 6.0), False, False),
])
def test_dominates(a, b, lower, expected):
    assert dominates(a, b, lower) is expected


def one_seed(points: dict) -> dict:
    """{key: (cost, metric)} as samples of one seed each."""
    return {k: (c, [m]) for k, (c, m) in points.items()}


def test_pareto_front_keeps_only_undominated_points():
    pts = [(10, 5.0), (5, 7.0), (20, 6.0), (30, 4.0), (1, 9.0), (5, 8.0), (10, 5.0)]
    assert pareto_front(pts, lower_is_better=True) == [(1, 9.0), (5, 7.0), (10, 5.0), (30, 4.0)]
    assert pareto_front(pts, lower_is_better=False) == [(1, 9.0)]
    # the front is exactly the points nothing dominates
    found = relations(one_seed(dict(enumerate(pts))), None, True)
    assert sorted({pts[k] for k, f in found.items() if not f["dominated by"]}) == pareto_front(pts, True)


def test_without_a_noise_estimate_one_seed_rows_compare_as_plain_dominance():
    samples = one_seed({"a": (1, 9.0), "b": (5, 7.0), "c": (6, 8.0), "d": (5, 7.0)})
    found = relations(samples, None, True)
    assert {k: f["dominated by"] for k, f in found.items()} == {"a": [], "b": [], "c": ["b", "d"], "d": []}
    assert all(not f["within noise of"] for f in found.values())  # untested: nothing is "within noise"
    assert compare([7.0], [8.0], None).significant is None
    counts = coverage({"c": samples["c"], "a": samples["a"]}, {"b": samples["b"]}, None, True)
    assert counts == {DOMINATES: 1, WITHIN_NOISE: 0, "not": 1} and answer(counts) == "no"
    assert coverage({"b": samples["b"]}, {"d": samples["d"]}, None, True)[DOMINATES] == 0  # a tie is not a win


def test_pooled_noise_by_hand():
    # variances 2 (df 1) and 4 (df 2); a one-seed sample has no spread and is left out
    noise = pooled_noise([[1.0, 3.0], [2.0, 4.0, 6.0], [5.0]])
    assert noise == Noise(pytest.approx(math.sqrt((1 * 2 + 2 * 4) / 3)), 3, 2)
    assert pooled_noise([[1.0], [2.0]]) is None
    # two one-seed rows: t(0.975, 3) = 3.1824 times std * sqrt(1 + 1)
    assert Noise(1.0, 3, 2).min_gap() == pytest.approx(3.18245 * math.sqrt(2), rel=1e-5)


def test_welch_by_hand_and_as_scipy_computes_it():
    # means 2 and 5, variances 1 and 1: t = -3 / sqrt(1/3 + 1/3) = -3.674 on 4 degrees of freedom
    c = compare([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], None)
    assert (c.diff, c.test) == (-3.0, WELCH) and c.p == pytest.approx(0.021312, abs=1e-6) and c.significant
    # unequal sizes and variances: the Welch-Satterthwaite degrees of freedom
    c = compare([1.0, 2.0, 3.0, 4.0], [4.0, 7.0, 9.0], Noise(0.01, 10, 3))  # three seeds each: noise not used
    assert c.p == pytest.approx(stats.ttest_ind([1, 2, 3, 4], [4, 7, 9], equal_var=False).pvalue)
    assert c.test == WELCH and not c.significant
    # two seeds on a side: their one degree of freedom says little, the pooled std stands in
    c = compare([1.0, 2.0, 3.0, 4.0], [4.0, 7.0], Noise(0.01, 10, 3))
    assert c.test == POOLED and c.p == pytest.approx(2 * stats.t.sf(3.0 / (0.01 * math.sqrt(1 / 4 + 1 / 2)), 10))
    # two seeds that agree to 0.02 no longer make a gap of 1 significant by themselves
    c = compare([113.08, 113.10], [112.1, 112.6, 111.5], Noise(0.54, 18, 9))
    assert c.test == POOLED and not c.significant
    # and without any noise estimate, two seeds each are still tested by Welch's t
    assert compare([1.0, 2.0], [4.0, 7.0], None).test == WELCH
    # seeds that agree to the digit on one side only: the other side's spread alone
    c = compare([5.0, 5.0, 5.0], [1.0, 2.0, 3.0], None)
    assert c.p == pytest.approx(2 * stats.t.sf(3.0 / math.sqrt(1 / 3), 2))


def test_one_seed_rows_are_tested_with_the_pooled_noise():
    noise = Noise(1.0, 3, 2)
    gap = noise.min_gap()
    assert compare([100.0], [100.0 + gap * 1.01], noise).significant
    c = compare([100.0], [100.0 + gap * 0.99], noise)
    assert c.test == POOLED and not c.significant
    # a row with seeds against a one-seed row: the pooled std for both, 1/3 + 1/1
    c = compare([100.0, 101.0, 102.0], [104.0], noise)
    assert c.p == pytest.approx(2 * stats.t.sf(3.0 / math.sqrt(1 / 3 + 1), 3))
    # the same rows at equal cost: significant one way is domination, the other is none
    assert relation((1.0, [100.0]), (1.0, [100.0 + gap * 1.01]), noise, True) == DOMINATES
    assert relation((1.0, [100.0 + gap * 1.01]), (1.0, [100.0]), noise, True) == NOT_DOMINATED
    assert relation((1.0, [100.0]), (1.0, [100.0 + gap * 0.99]), noise, True) == WITHIN_NOISE


def test_overlapping_seeds_are_within_noise_and_separated_ones_dominate():
    l0 = (3.0e6, [113.1, 112.7, 113.5])
    magnitude = (3.0e6, [112.4, 113.4, 113.0])  # the same shape; seeds overlap
    iss = (2.7e6, [108.5, 108.1, 108.9])  # cheaper, and better by ~5 against a spread of 0.4
    # plainly magnitude would dominate L0 (mean 112.93 < 113.10); its seeds say it cannot tell
    assert relation(magnitude, l0, None, True) == relation(l0, magnitude, None, True) == WITHIN_NOISE
    assert answer(coverage({"m": magnitude}, {"l0": l0}, None, True)) == "within noise"
    assert relation(iss, l0, None, True) == DOMINATES
    assert relation(l0, iss, None, True) == NOT_DOMINATED  # dearer: never dominates, however good
    assert answer(coverage({"l0": l0, "m": magnitude}, {"iss": iss}, None, True)) == "yes"
    assert answer(coverage({"iss": iss}, {"l0": l0, "m": magnitude}, None, True)) == "no"
    # one of the other's rows within noise, one demonstrably not dominated: "no" wins
    assert answer({DOMINATES: 1, WITHIN_NOISE: 1, "not": 1}) == "no"
    assert answer({DOMINATES: 1, WITHIN_NOISE: 1, "not": 0}) == "within noise"


def test_front_value_interpolates_in_log_cost_by_hand():
    pts = [(1e6, 120.0), (2e6, 110.0), (3e6, 115.0), (4e6, 105.0)]  # (3e6, 115) is off the front
    share = math.log(1.5) / math.log(2)  # 1.5e6 lies 0.585 of the way from 1e6 to 2e6 in log
    assert front_value(pts, 1.5e6, True) == pytest.approx(120.0 - 10.0 * share)  # 114.15
    assert front_value(pts, 3e6, True) == pytest.approx(110.0 - 5.0 * share)  # 107.08, not the dominated 115
    assert front_value(pts, 2e6, True) == 110.0 and front_value(pts, 4e6, True) == 105.0
    # a run on one side only: no value
    assert front_value(pts, 0.9e6, True) is None and front_value(pts, 4.1e6, True) is None
    # past the front's dearest point, up to a dearer dominated run: the front's last value
    flat = [(1e6, 120.0), (2e6, 110.0), (3e6, 112.0)]
    assert front_value(flat, 2.5e6, True) == front_value(flat, 3e6, True) == 110.0
    assert front_value([(2e6, 110.0)], 2e6, True) == 110.0 and front_value([], 2e6, True) is None
    # higher is better (F1): the front keeps the highest; halfway in log is the geometric mean
    assert front_value([(1e6, 60.0), (2e6, 70.0), (1.5e6, 50.0)], math.sqrt(2) * 1e6, False) == pytest.approx(65.0)


def test_pool_by_shape_gives_one_shape_one_cost():
    costs = {"a": 0.62, "b": 0.61, "c": 0.80, "d": None, "e": 0.70}
    shapes = {"a": ((68, 135), (200, 68)), "b": ((68, 135), (200, 68)), "c": ((124, 181), (200, 124)),
              "d": ((68, 135), (200, 68)), "e": None}
    assert pool_by_shape(costs, shapes) == {"a": pytest.approx(0.615), "b": pytest.approx(0.615), "c": 0.80,
                                            "d": None, "e": 0.70}


# ---- the Pareto fronts section of a table ----------------------------------------------------------

def _write(root, name, hidden, test_ppl, b1, label, lam=None, gated=False, zeroes_weights=False, **extra):
    method = "l0" if gated else ("group_lasso" if zeroes_weights else "none")
    res = result(method, [200, 200], hidden, test_ppl + 4, test_ppl, lam=lam, **extra)
    write_run(root, name, with_props(res, label=label, gated=gated, zeroes_weights=zeroes_weights),
              speed=speed_json(b1, b1, 0.09 / b1))


def fronts_section(md: str) -> str:
    return md.split("Pareto fronts")[1].split("at equal FLOPs")[0]


def equal_section(md: str) -> str:
    return md.split("at equal FLOPs")[1].split("### Commands")[0]


def section_line(section: str, start: str) -> str:
    return next(line for line in section.splitlines() if line.startswith(start))


def test_fronts_section_answers_does_l0_dominate(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "dense", [200, 200], 112.0, 1.0, "dense")
    _write(runs, "l0", [70, 130], 113.0, 1.6, "L0", lam=1e-6, gated=True)
    _write(runs, "iss", [116, 173], 101.6, 1.2, "ISS group Lasso", lam=1e-4, zeroes_weights=True)
    section = fronts_section(write_table("ptb", runs, tmp_path / "a")["markdown"].read_text())
    assert "| r1 | dense |" in section and "dominated by r3 | dominated by r3 |" in section
    assert "| r2 | L0 | 1e-06 | 1 |" in section and "| on the front | on the front |" in section
    # one seed everywhere: no noise estimate, said once per section and in every answer
    assert "One seed per row: there is no noise estimate" in section
    # a trade-off: neither dominates, in both directions, on both fronts
    assert ("- Does L0 dominate ISS group Lasso? against FLOPs/token: **no** (one seed, untested): L0 dominates 0 "
            "of 1 ISS group Lasso row, ISS group Lasso dominates 0 of 1 L0 row; against batch-1 time: **no**"
            ) in section
    # an L0 run smaller, faster and better than ISS turns the answer to yes, and puts ISS off the front
    _write(runs, "l0_b", [110, 170], 100.0, 1.3, "L0", lam=5e-7, gated=True)
    section = fronts_section(write_table("ptb", runs, tmp_path / "b")["markdown"].read_text())
    assert ("against FLOPs/token: **yes** (one seed, untested): L0 dominates 1 of 1 ISS group Lasso row, ISS group "
            "Lasso dominates 0 of 2 L0 rows") in section
    iss_line = next(line for line in section.splitlines() if "| ISS group Lasso |" in line)
    assert iss_line.endswith("| dominated by r2 | dominated by r2 |")  # r2: L0 at 5e-7 (rows by lambda)


def test_unmeasured_speed_is_said_not_guessed(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "dense", [200, 200], 112.0, 1.0, "dense")
    _write(runs, "l0", [70, 130], 113.0, 1.6, "L0", lam=1e-6, gated=True)
    res = result("group_lasso", [200, 200], [116, 173], 105.0, 101.6, lam=1e-4)
    write_run(runs, "iss", with_props(res, label="ISS group Lasso", zeroes_weights=True))  # no speed.json
    section = fronts_section(write_table("ptb", runs, tmp_path / "a")["markdown"].read_text())
    iss_line = next(line for line in section.splitlines() if "| ISS group Lasso |" in line)
    assert iss_line.endswith("| not measured | 101.60 | on the front | not measured |")
    assert "against batch-1 time: not measured." in section


def test_a_method_dominates_when_each_row_of_the_other_is_dominated(tmp_path):
    """An L0 row beaten by an ISS row that another L0 row beats is off L0's own front: L0's front
    still dominates ISS's."""
    runs = tmp_path / "runs"
    _write(runs, "dense", [200, 200], 112.0, 1.0, "dense")
    _write(runs, "l0_big", [150, 190], 110.0, 1.1, "L0", lam=5e-7, gated=True)
    _write(runs, "iss", [140, 180], 105.0, 1.15, "ISS group Lasso", lam=1e-4, zeroes_weights=True)
    _write(runs, "l0_small", [120, 170], 104.0, 1.3, "L0", lam=1e-6, gated=True)
    section = fronts_section(write_table("ptb", runs, tmp_path / "a")["markdown"].read_text())
    assert ("against FLOPs/token: **yes** (one seed, untested): L0 dominates 1 of 1 ISS group Lasso row, ISS group "
            "Lasso dominates 1 of 2 L0 rows") in section


def test_same_shape_rows_are_compared_on_quality_alone_on_the_time_front(tmp_path):
    """The small profile's case: L0, magnitude and direct at L0's sizes measured 1.59x, 1.62x and
    1.63x. Unpooled, the direct design (worse perplexity, faster by noise) was 'not dominated'
    against batch-1 time while L0 dominated it against FLOPs."""
    runs = tmp_path / "runs"
    _write(runs, "dense", [200, 200], 112.0, 1.0, "dense")
    _write(runs, "l0", [68, 135], 113.1, 1.59, "L0", lam=1e-6, gated=True)
    _write(runs, "direct", [68, 135], 115.3, 1.63, "direct design", sizes_from="runs/l0/result.json")
    section = fronts_section(write_table("ptb", runs, tmp_path / "a")["markdown"].read_text())
    direct_line = next(line for line in section.splitlines() if "| direct design |" in line)
    assert direct_line.endswith("| dominated by r2 | dominated by r2 |"), direct_line
    assert "Does L0 dominate direct design? against FLOPs/token: **yes**" in section
    assert "against batch-1 time: **yes** (one seed, untested): L0 dominates 1 of 1 direct design row" in section


def test_seeds_turn_a_plain_win_into_within_noise(tmp_path):
    """Magnitude's mean is 0.17 below L0's at the same shape: on means it dominates L0; with
    seeds that spread by ~0.4 the pair is within noise, while the direct design 2.2 above is
    dominated and ISS, cheaper and ~5 lower, dominates both."""
    runs = tmp_path / "runs"
    for seed, (l0, mag, direct, dense) in enumerate([(113.1, 112.4, 115.3, 112.3), (112.7, 113.4, 115.8, 111.8),
                                                     (113.5, 113.0, 114.9, 112.9)], 1):
        _write(runs, f"dense_seed{seed}", [200, 200], dense, 1.0, "dense", seed=seed)
        _write(runs, f"l0_seed{seed}", [68, 135], l0, 1.59, "L0", lam=1e-6, gated=True, seed=seed)
        _write(runs, f"mag_seed{seed}", [68, 135], mag, 1.62, "structured magnitude", zeroes_weights=True,
               seed=seed, sizes_from="runs/l0/result.json")
        _write(runs, f"direct_seed{seed}", [68, 135], direct, 1.63, "direct design", seed=seed,
               sizes_from="runs/l0/result.json")
    _write(runs, "iss", [63, 118], 108.5, 1.85, "ISS group Lasso", lam=2e-4, zeroes_weights=True)  # one seed
    md = write_table("ptb", runs, tmp_path / "a")["markdown"].read_text()
    section = fronts_section(md)
    # rows: r1 dense, r2 L0, r3 ISS, r4 magnitude, r5 direct (zeroing methods in label order)
    l0_line = section_line(section, "| r2 | L0 | 1e-06 | 1, 2, 3 |")
    assert l0_line.endswith("| 113.10 ± 0.40 | dominated by r3; within noise of r4 | dominated by r3; within noise "
                            "of r4 |")
    assert section_line(section, "| r4 | structured magnitude |").endswith(
        "| 112.93 ± 0.50 | dominated by r3; within noise of r2 | dominated by r3; within noise of r2 |")
    assert section_line(section, "| r5 | direct design |").endswith(
        "| dominated by r2, r3, r4 | dominated by r2, r3, r4 |")
    assert ("- Does L0 dominate structured magnitude? against FLOPs/token: **within noise**: L0 dominates 0 "
            "(within noise: 1) of 1 structured magnitude row, structured magnitude dominates 0 (within noise: 1) "
            "of 1 L0 row") in section
    assert "- Does L0 dominate direct design? against FLOPs/token: **yes**: L0 dominates 1 (within noise: 0)" in section
    assert ("- Does L0 dominate ISS group Lasso? against FLOPs/token: **no**: L0 dominates 0 (within noise: 0) of 1 "
            "ISS group Lasso row, ISS group Lasso dominates 1 (within noise: 0) of 1 L0 row") in section
    # the noise the one-seed ISS row is held against: the four rows with seeds, pooled, by hand
    rows = [[112.3, 111.8, 112.9], [113.1, 112.7, 113.5], [112.4, 113.4, 113.0], [115.3, 115.8, 114.9]]
    s_p = math.sqrt(statistics.fmean(statistics.variance(r) for r in rows))  # equal df: the plain mean
    gap = stats.t.ppf(0.975, 8) * s_p * math.sqrt(2)
    assert (f"pooled sample std of test ppl {s_p:.2f} over 4 rows with two or more seeds (8 degrees of freedom)"
            in section and f"two one-seed rows differ when their gap exceeds {gap:.2f}." in section)


# ---- the committed records with seeds 2 and 3 ------------------------------------------------------

SEEDS = SEED_TEST_PPL


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    runs = records_with_seeds(tmp_path_factory.mktemp("records"), SEEDS)
    out = write_table("ptb", runs, tmp_path_factory.mktemp("out"), where="reproduce/measured/ptb_small")
    return out["markdown"].read_text(), out["equal_flops_csv"].read_text()


def seed_values(run: str) -> list[float]:
    return [seed1_test_ppl(run), *SEEDS[run]]


def flops(run: str) -> float:
    return json.loads((MEASURED / run / "result.json").read_text())["flops_per_token"]["after"]


def test_seeded_records_answer_each_question_with_the_noise(seeded):
    section = fronts_section(seeded[0])
    variances = [statistics.variance(seed_values(run)) for run in SEEDS]
    s_p = math.sqrt(statistics.fmean(variances))
    assert f"pooled sample std of test ppl {s_p:.2f} over 8 rows with two or more seeds (16 degrees" in section
    assert "- Does L0 dominate direct design? against FLOPs/token: **yes**: L0 dominates 1 (within noise: 0)" in section
    assert "- Does L0 dominate structured magnitude? against FLOPs/token: **within noise**" in section
    # ISS 2e-4 costs less than every L0 row but 2e-6, which is ~13 worse: not dominated by L0
    assert ("- Does L0 dominate ISS group Lasso? against FLOPs/token: **no**: L0 dominates 0 (within noise: 0)"
            in section)
    assert "One seed per row" not in section and "untested" not in section


def test_equal_flops_table_by_hand(seeded):
    md, equal_csv = seeded
    section = equal_section(md)
    dense = 5_280_000
    assert f"**small (2x200)**: dense model {dense:,} FLOPs/token" in section
    assert ("| FLOPs/token | L0 | L0 (fine-tuned) | ISS group Lasso | ISS group Lasso (fine-tuned) | structured "
            "magnitude | direct design |") in section

    def at(x, lo, hi, y_lo, y_hi):  # linear in log FLOPs between two front points
        return y_lo + (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo)) * (y_hi - y_lo)

    half = dense / 2
    l0 = [at(half, flops("l0_lambda2e-6"), flops("l0"), a, b)
          for a, b in zip(seed_values("l0_lambda2e-6"), seed_values("l0"))]
    # ISS at 50 %: only seed 1 has a run below it (4e-4, 2,000,000 FLOPs at 116.0); seeds 2 and 3 start at 2e-4
    iss = at(half, 2_000_000, flops("group_lasso_lambda2e-4"), 116.0, seed1_test_ppl("group_lasso_lambda2e-4"))
    cells = [c.strip() for c in section_line(section, "| 50 %: 2,640,000 |").strip("|").split("|")]
    # the cell says which of the method's seeds have no value, and where their runs lie instead
    span = f"{100 * flops('group_lasso_lambda2e-4') / dense:.1f} %–{100 * flops('group_lasso') / dense:.1f} %"
    assert cells == ["50 %: 2,640,000", f"{statistics.fmean(l0):.2f} ± {statistics.stdev(l0):.2f} (seeds 1, 2, 3)",
                     "", f"{iss:.2f} (seed 1; seed 2: runs only at {span}; seed 3: runs only at {span})", "", "",
                     ""]  # magnitude and direct: runs on one side only
    shape = flops("magnitude")
    cells = [c.strip() for c in section_line(section, f"| 58.0 %: {shape:,} (structured magnitude, direct design) |")
             .strip("|").split("|")]
    magnitude, direct = seed_values("magnitude"), seed_values("direct")
    assert cells[5] == f"{statistics.fmean(magnitude):.2f} ± {statistics.stdev(magnitude):.2f} (seeds 1, 2, 3)"
    assert cells[6] == f"{statistics.fmean(direct):.2f} ± {statistics.stdev(direct):.2f} (seeds 1, 2, 3)"
    assert cells[1].startswith(f"{statistics.fmean(seed_values('l0')):.2f} ± ")  # L0 1e-6 has that very shape
    # the comparison lines: the test named, its p as scipy gives it
    p_direct = stats.ttest_ind(seed_values("l0"), direct, equal_var=False).pvalue
    p_mag = stats.ttest_ind(seed_values("l0"), magnitude, equal_var=False).pvalue
    gap_mag = statistics.fmean(seed_values("l0")) - statistics.fmean(magnitude)
    gap_direct = statistics.fmean(direct) - statistics.fmean(seed_values("l0"))
    assert (f"- L0 against direct design: 58.0 %: better by {gap_direct:.2f}, Welch t p = {p_direct:.3f}. "
            "L0 better at 1, worse at 0, within noise at 0 of 1 point.") in section
    assert (f"- L0 against structured magnitude: 58.0 %: within noise (worse by {gap_mag:.2f}), Welch t "
            f"p = {p_mag:.3f}. L0 better at 0, worse at 0, within noise at 1 of 1 point.") in section
    # the CSV holds each seed's value
    line = next(r for r in equal_csv.splitlines() if r.startswith("ptb,small (2x200),2640000.0,0.5,[],L0,"))
    assert line.endswith(f",3,\"[1, 2, 3]\",\"{json.dumps(l0)}\",[]")  # no seed without a value
    # every point some method reached is a line of the Markdown; the CSV lists every point
    by_point: dict[str, list[dict]] = {}
    for r in csv.DictReader(io.StringIO(equal_csv)):
        if r["section"] == "small (2x200)":
            by_point.setdefault(r["flops"], []).append(r)
    assert len(by_point) == 5  # 40, 50, 60, 80 % and the one-size methods' shape
    for x, lines in by_point.items():
        assert (f": {float(x):,.0f}" in section) == any(r["n_seeds"] != "0" for r in lines), x


def test_a_point_no_method_reaches_is_left_out_of_the_markdown_but_not_the_csv(tmp_path):
    """The committed GRU runs (one L0 run, at 29 % of its dense FLOPs) reach none of 40/50/60/80 %."""
    out = write_table("ptb", MEASURED, tmp_path, scales=["small"])
    gru = equal_section(out["markdown"].read_text()).split("**small (2x200), GRU**")[1]
    assert "| 29.4 %: 1,457,512 (L0) |" in gru
    assert not any(f"| {f} %:" in gru for f in (40, 50, 60, 80))
    rows = [r for r in csv.DictReader(out["equal_flops_csv"].open()) if r["section"] == "small (2x200), GRU"]
    assert {r["fraction_of_dense"] for r in rows} >= {"0.4", "0.5", "0.6", "0.8"}
    assert all(r["n_seeds"] == "0" for r in rows if r["fraction_of_dense"] in ("0.4", "0.5", "0.6", "0.8"))
