"""Dominance and Pareto fronts (reproduce/fronts.py), and the fronts section of the tables, whose
yes/no lines a README verdict is checked against."""

import pytest
from fixtures.run_dirs import result, speed_json, write_run
from test_tables import with_props

from reproduce.fronts import covered, dominated_by, dominates, pareto_front, pool_by_shape
from reproduce.tables import write_tables


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


def test_pareto_front_keeps_only_undominated_points():
    pts = [(10, 5.0), (5, 7.0), (20, 6.0), (30, 4.0), (1, 9.0), (5, 8.0), (10, 5.0)]
    assert pareto_front(pts, lower_is_better=True) == [(1, 9.0), (5, 7.0), (10, 5.0), (30, 4.0)]
    assert pareto_front(pts, lower_is_better=False) == [(1, 9.0)]
    # the front is exactly the points nothing dominates
    dom = dominated_by(dict(enumerate(pts)), True)
    assert sorted({pts[k] for k, by in dom.items() if not by}) == pareto_front(pts, True)


def test_dominated_by_and_covered():
    pts = {"a": (1, 9.0), "b": (5, 7.0), "c": (6, 8.0), "d": (5, 7.0)}
    assert dominated_by(pts, True) == {"a": [], "b": [], "c": ["b", "d"], "d": []}
    assert covered({"c": pts["c"], "a": pts["a"]}, {"b": pts["b"]}, True) == 1
    assert covered({"b": pts["b"]}, {"d": pts["d"]}, True) == 0  # a tie is not a win


def _write(root, name, hidden, test_ppl, b1, label, lam=None, gated=False, zeroes_weights=False, **extra):
    method = "l0" if gated else ("group_lasso" if zeroes_weights else "none")
    res = result(method, [200, 200], hidden, test_ppl + 4, test_ppl, lam=lam, **extra)
    write_run(root, name, with_props(res, label=label, gated=gated, zeroes_weights=zeroes_weights),
              speed=speed_json(b1, b1, 0.09 / b1))


def fronts_section(md: str) -> str:
    return md.split("Pareto fronts")[1].split("Commands")[0]


def test_fronts_section_answers_does_l0_dominate(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "dense", [200, 200], 112.0, 1.0, "dense")
    _write(runs, "l0", [70, 130], 113.0, 1.6, "L0", lam=1e-6, gated=True)
    _write(runs, "iss", [116, 173], 101.6, 1.2, "ISS group Lasso", lam=1e-4, zeroes_weights=True)
    section = fronts_section(write_tables("ptb", runs, tmp_path / "a")["markdown"].read_text())
    assert "| r1 | dense |" in section and "dominated by r3 | dominated by r3 |" in section
    assert "| r2 | L0 | 1e-06 |" in section and "| on the front | on the front |" in section
    # a trade-off: neither dominates, in both directions, on both fronts
    assert ("- Does L0 dominate ISS group Lasso? against FLOPs/token: **no**: L0 dominates 0 of 1 ISS group "
            "Lasso row, ISS group Lasso dominates 0 of 1 L0 row; against batch-1 time: **no**") in section
    # an L0 run smaller, faster and better than ISS turns the answer to yes, and puts ISS off the front
    _write(runs, "l0_b", [110, 170], 100.0, 1.3, "L0", lam=5e-7, gated=True)
    section = fronts_section(write_tables("ptb", runs, tmp_path / "b")["markdown"].read_text())
    assert ("against FLOPs/token: **yes**: L0 dominates 1 of 1 ISS group Lasso row, ISS group Lasso "
            "dominates 0 of 2 L0 rows") in section
    iss_line = next(line for line in section.splitlines() if "| ISS group Lasso |" in line)
    assert iss_line.endswith("| dominated by r2 | dominated by r2 |")  # r2: L0 at 5e-7 (rows by lambda)


def test_unmeasured_speed_is_said_not_guessed(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "dense", [200, 200], 112.0, 1.0, "dense")
    _write(runs, "l0", [70, 130], 113.0, 1.6, "L0", lam=1e-6, gated=True)
    res = result("group_lasso", [200, 200], [116, 173], 105.0, 101.6, lam=1e-4)
    write_run(runs, "iss", with_props(res, label="ISS group Lasso", zeroes_weights=True))  # no speed.json
    section = fronts_section(write_tables("ptb", runs, tmp_path / "a")["markdown"].read_text())
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
    section = fronts_section(write_tables("ptb", runs, tmp_path / "a")["markdown"].read_text())
    assert ("against FLOPs/token: **yes**: L0 dominates 1 of 1 ISS group Lasso row, ISS group Lasso "
            "dominates 1 of 2 L0 rows") in section


def test_pool_by_shape_gives_one_shape_one_cost():
    costs = {"a": 0.62, "b": 0.61, "c": 0.80, "d": None, "e": 0.70}
    shapes = {"a": ((68, 135), (200, 68)), "b": ((68, 135), (200, 68)), "c": ((124, 181), (200, 124)),
              "d": ((68, 135), (200, 68)), "e": None}
    assert pool_by_shape(costs, shapes) == {"a": pytest.approx(0.615), "b": pytest.approx(0.615), "c": 0.80,
                                            "d": None, "e": 0.70}


def test_same_shape_rows_are_compared_on_quality_alone_on_the_time_front(tmp_path):
    """The small profile's case: L0, magnitude and direct at L0's sizes measured 1.59x, 1.62x and
    1.63x. Unpooled, the direct design (worse perplexity, faster by noise) was 'not dominated'
    against batch-1 time while L0 dominated it against FLOPs."""
    runs = tmp_path / "runs"
    _write(runs, "dense", [200, 200], 112.0, 1.0, "dense")
    _write(runs, "l0", [68, 135], 113.1, 1.59, "L0", lam=1e-6, gated=True)
    _write(runs, "direct", [68, 135], 115.3, 1.63, "direct design", sizes_from="runs/l0/result.json")
    section = fronts_section(write_tables("ptb", runs, tmp_path / "a")["markdown"].read_text())
    direct_line = next(line for line in section.splitlines() if "| direct design |" in line)
    assert direct_line.endswith("| dominated by r2 | dominated by r2 |"), direct_line
    assert "Does L0 dominate direct design? against FLOPs/token: **yes**" in section
    assert "against batch-1 time: **yes**: L0 dominates 1 of 1 direct design row" in section
