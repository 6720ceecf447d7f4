"""Pareto fronts and dominance between runs: the one definition the tables' verdict lines and the
plots' front lines share.

A point is (cost, metric): cost is what pruning buys down (FLOPs per token, or batch-1 time
relative to the dense model, 1 / speedup), metric is the task's quality (perplexity: lower is
better; EM/F1: higher is better). Point A dominates point B when A costs no more, is no worse,
and is strictly better in at least one of the two. Equal points do not dominate each other.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

Point = tuple[float, float]

# the quality a front is drawn with, per dataset, and whether lower is better
FRONT_METRIC = {"ptb": ("test_ppl", True), "squad": ("f1", False)}


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


def dominated_by(points: Mapping[Hashable, Point], lower_is_better: bool) -> dict[Hashable, list[Hashable]]:
    """For every key, the keys whose point dominates its point (in the mapping's order)."""
    return {k: [j for j, q in points.items() if j != k and dominates(q, p, lower_is_better)]
            for k, p in points.items()}


def covered(of: Mapping[Hashable, Point], by: Mapping[Hashable, Point], lower_is_better: bool) -> int:
    """How many points of `of` some point of `by` dominates."""
    return sum(any(dominates(q, p, lower_is_better) for q in by.values()) for p in of.values())


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
