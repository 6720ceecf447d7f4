"""Pareto fronts and dominance between runs, with the seeds' noise: the one definition the tables'
verdict lines, the equal-FLOPs table and the plots' front lines share.

A point is (cost, metric): cost is what pruning buys down (FLOPs per token, or batch-1 time
relative to the dense model, 1 / speedup), metric is the task's quality (perplexity: lower is
better; EM/F1: higher is better). Point A dominates point B when A costs no more, is no worse,
and is strictly better in at least one of the two. Equal points do not dominate each other.

Rows of several seeds are compared with a test rather than on their means alone
(`relation`): row A dominates row B when A costs no more and its metric is better by more than
the seeds' noise (Welch's t-test, two-sided p < ALPHA, where both have three seeds or more). Where
a row has fewer seeds its own variance says little or nothing, so the noise is taken from the rows
beside it that have seeds (`Noise`: their pooled sample std) and the test is Student's t with that
std. Where no row has two seeds there is nothing to test with: such rows are compared on their numbers and the answer
says so.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

# Student's t distribution function and its inverse (the degrees of freedom need not be whole, as
# Welch's are not); scipy.special loads in half the time of scipy.stats, and every table command pays it
from scipy.special import stdtr, stdtrit

Point = tuple[float, float]
Sample = tuple[float, Sequence[float]]  # (cost, the metric of each seed)

# the quality a front is drawn with, per dataset, and whether lower is better
FRONT_METRIC = {"ptb": ("test_ppl", True), "squad": ("f1", False)}
ALPHA = 0.05  # two-sided significance level of every test below
WELCH, POOLED = "Welch t", "pooled t"
DOMINATES, WITHIN_NOISE, NOT_DOMINATED = "dominates", "within noise", "no"
WELCH_MIN_SEEDS = 3  # seeds each side needs for its own variance in a test (compare says why)


def better_or_equal(a: float, b: float, lower_is_better: bool) -> bool:
    return a <= b if lower_is_better else a >= b


def dominates(a: Point, b: Point, lower_is_better: bool) -> bool:
    (cost_a, metric_a), (cost_b, metric_b) = a, b
    return (cost_a <= cost_b and better_or_equal(metric_a, metric_b, lower_is_better)
            and (cost_a < cost_b or metric_a != metric_b))


def pareto_front(points: list[Point], lower_is_better: bool) -> list[Point]:
    """The points no other point dominates (duplicates once), sorted by cost."""
    front: list[Point] = []
    for p in sorted(set(points), key=lambda p: (p[0], p[1] if lower_is_better else -p[1])):
        # sorted by cost then quality: p is dominated iff the best quality so far is at least as good
        if not front or not better_or_equal(front[-1][1], p[1], lower_is_better):
            front.append(p)
    return front


def front_value(points: Sequence[Point], cost: float, lower_is_better: bool) -> float | None:
    """The metric the front of `points` (one seed's runs of one method) reaches at `cost`; None
    where the runs do not lie on both sides of it.

    Between two points of the front: linear in log cost (pruning strength moves FLOPs by
    factors, not by amounts). Past the front's dearest point, up to the dearest run: flat, the
    front's last value, since a dominated dearer run is no better than the cheaper model one can
    take instead. Costs must be positive (a log is taken)."""
    points = [(float(c), float(m)) for c, m in points if c > 0]
    if not points or not min(c for c, _ in points) <= cost <= max(c for c, _ in points):
        return None
    front = pareto_front(points, lower_is_better)
    # the cheapest point is always on the front, so some front point costs no more than `cost`
    left = max((p for p in front if p[0] <= cost), key=lambda p: p[0])
    right = min((p for p in front if p[0] >= cost), key=lambda p: p[0], default=None)
    if right is None or right[0] == left[0]:
        return left[1]
    share = (math.log(cost) - math.log(left[0])) / (math.log(right[0]) - math.log(left[0]))
    return left[1] + share * (right[1] - left[1])


def pool_by_shape(costs: Mapping[Hashable, float | None],
                  shapes: Mapping[Hashable, Hashable | None]) -> dict[Hashable, float | None]:
    """Measured costs, with every key of one shape given the mean of that shape's costs.

    Models of the same shape (kept neurons per layer) run the same kernels, so their measured times
    differ by noise only: the small profile's L0, magnitude and direct-design runs at [68, 135]
    measured 1.59x, 1.62x and 1.63x at batch 1. Compared one by one, that noise alone would decide
    which of them dominates on the time front. A key with no shape (None: seeds of different
    sizes) or no cost keeps its own.
    """
    pooled = {key: shapes.get(key) for key, cost in costs.items() if cost is not None}
    groups: dict[Hashable, list[float]] = {}
    for key, shape in pooled.items():
        if shape is not None:
            groups.setdefault(shape, []).append(costs[key])
    means = {shape: sum(group) / len(group) for shape, group in groups.items()}
    return {key: means.get(pooled.get(key), cost) for key, cost in costs.items()}


# ---- the seeds' noise ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Noise:
    """The seed-to-seed spread of a metric, pooled over the rows that have two or more seeds:
    sqrt(sum((n_i - 1) s_i^2) / df), df = sum(n_i - 1); `rows` of them gave it."""
    std: float
    df: int
    rows: int

    def min_gap(self, n_a: int = 1, n_b: int = 1) -> float:
        """The smallest difference of means the pooled test calls significant for rows of n_a and
        n_b seeds: what a reader can hold a gap between two one-seed rows against."""
        return float(stdtrit(self.df, 1 - ALPHA / 2)) * self.std * math.sqrt(1 / n_a + 1 / n_b)


def pooled_noise(samples: Iterable[Sequence[float]]) -> Noise | None:
    """The pooled noise of the samples (one per row: its seeds' values) that have two or more
    values; None where none has (one seed everywhere: no noise estimate)."""
    multi = [list(s) for s in samples if len(s) >= 2]
    if not multi:
        return None
    df = sum(len(s) - 1 for s in multi)
    return Noise(math.sqrt(sum((len(s) - 1) * statistics.variance(s) for s in multi) / df), df, len(multi))


@dataclass(frozen=True)
class Comparison:
    """Sample a against sample b: diff = mean(a) - mean(b), the two-sided p of the test named
    `test`; p and test None where no test could be run (one seed and no noise estimate)."""
    diff: float
    p: float | None
    test: str | None

    @property
    def significant(self) -> bool | None:
        return None if self.p is None else self.p < ALPHA


def _p_value(diff: float, se: float, df: float) -> float:
    if se == 0:  # no spread at all (seeds that agree to the last digit): any difference is real
        return 0.0 if diff else 1.0
    return float(2 * stdtr(df, -abs(diff) / se))


def compare(a: Sequence[float], b: Sequence[float], noise: Noise | None) -> Comparison:
    """Welch's t-test where both samples have WELCH_MIN_SEEDS values or more (each its own variance,
    the Welch-Satterthwaite degrees of freedom); otherwise Student's t with the pooled `noise` as
    both samples' std; untested where a sample has one value and there is no noise estimate.

    Two seeds give a variance of one degree of freedom: two seeds that happen to agree (0.02 apart)
    would make any gap significant. With fewer than three on a side the pooled std, from every row
    with seeds, stands in for it (Welch's t where there is no pooled std at all)."""
    if not a or not b:
        raise ValueError("compare needs at least one value on each side")
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) >= 2 and len(b) >= 2 and (noise is None or min(len(a), len(b)) >= WELCH_MIN_SEEDS):
        va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
        if va + vb == 0:
            return Comparison(diff, _p_value(diff, 0.0, 1), WELCH)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        return Comparison(diff, _p_value(diff, math.sqrt(va + vb), df), WELCH)
    if noise is None:
        return Comparison(diff, None, None)
    return Comparison(diff, _p_value(diff, noise.std * math.sqrt(1 / len(a) + 1 / len(b)), noise.df), POOLED)


def is_better(comparison: Comparison, lower_is_better: bool) -> bool:
    """Whether a's mean is the better one (ties are not)."""
    return comparison.diff < 0 if lower_is_better else comparison.diff > 0


def relation(a: Sample, b: Sample, noise: Noise | None, lower_is_better: bool) -> str:
    """Does row a dominate row b? DOMINATES where a costs no more and its metric is significantly
    better; WITHIN_NOISE where a costs no more and the metrics do not differ significantly (which
    way it goes is for more seeds to say); NOT_DOMINATED otherwise (a costs more, or is
    significantly worse). Costs are compared as given (means over seeds). Untested (one seed,
    no noise estimate): plain dominance of the means, so DOMINATES or NOT_DOMINATED."""
    (cost_a, values_a), (cost_b, values_b) = a, b
    if cost_a > cost_b:
        return NOT_DOMINATED
    c = compare(values_a, values_b, noise)
    if c.significant is None:
        plain = dominates((cost_a, statistics.fmean(values_a)), (cost_b, statistics.fmean(values_b)),
                          lower_is_better)
        return DOMINATES if plain else NOT_DOMINATED
    if not c.significant:
        return WITHIN_NOISE
    return DOMINATES if is_better(c, lower_is_better) else NOT_DOMINATED


def relations(samples: Mapping[Hashable, Sample], noise: Noise | None,
              lower_is_better: bool) -> dict[Hashable, dict[str, list[Hashable]]]:
    """For every key, the keys that dominate it ("dominated by") and those within noise of
    dominating it ("within noise of"), in the mapping's order."""
    out = {}
    for k, b in samples.items():
        found = {DOMINATES: [], WITHIN_NOISE: []}
        for j, a in samples.items():
            if j != k:
                found.get(relation(a, b, noise, lower_is_better), []).append(j)
        out[k] = {"dominated by": found[DOMINATES], "within noise of": found[WITHIN_NOISE]}
    return out


def coverage(of: Mapping[Hashable, Sample], by: Mapping[Hashable, Sample], noise: Noise | None,
             lower_is_better: bool) -> dict[str, int]:
    """How many samples of `of` some sample of `by` dominates; of the rest, how many some sample
    of `by` is within noise of dominating; and how many are neither ("not")."""
    counts = {DOMINATES: 0, WITHIN_NOISE: 0, "not": 0}
    for b in of.values():
        found = {relation(a, b, noise, lower_is_better) for a in by.values()}
        counts[DOMINATES if DOMINATES in found else WITHIN_NOISE if WITHIN_NOISE in found else "not"] += 1
    return counts


def answer(counts: Mapping[str, int]) -> str:
    """Does one method dominate another, given coverage() of the other's rows by the first's:
    "yes" when every row is dominated, "no" when some row is demonstrably not (neither
    dominated nor within noise), else "within noise"."""
    if counts["not"]:
        return "no"
    return "within noise" if counts[WITHIN_NOISE] else "yes"
