"""The statistics of a table, computed once from its rows (reproduce/report/rows.py) with the tests of
reproduce/report/fronts.py: per model scale, the seeds' pooled noise, which row dominates which on
the FLOPs and the batch-1-time fronts, whether the gated method (the paper's) dominates each other
pruning method, and each method's metric at equal FLOPs with the comparisons there. The Markdown,
the CSVs and the verdict lines all read these objects; none computes a statistic of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fronts import (
    FRONT_METRIC,
    Comparison,
    Noise,
    compare,
    coverage,
    front_value,
    pool_by_shape,
    pooled_noise,
    relations,
)
from .reported import load_reported
from .rows import NotRun, Row, build_rows, check_dataset, check_scales, is_number, stat
from .runs import Run, seed_order

EQUAL_FLOPS_FRACTIONS = (0.4, 0.5, 0.6, 0.8)  # of the dense FLOPs: where methods are compared at equal cost
FRONTS = ("flops", "latency")  # cost = FLOPs per token; batch-1 time relative to the dense model


@dataclass(frozen=True)
class MethodAnswer:
    """Does method `gated` dominate method `other` on one front: coverage() both ways (None: a side
    has no row with that cost)."""
    gated: str
    other: str
    front: str
    won: dict | None  # coverage of other's rows by gated's
    lost: dict | None  # coverage of gated's rows by other's
    n_other: int
    n_gated: int


@dataclass(frozen=True)
class Missing:
    """A seed of a method with no value at a point: its runs lie only between these FLOPs."""
    seed: object
    low: float
    high: float


@dataclass(frozen=True)
class PointComparison:
    x: float
    comparison: Comparison


@dataclass(frozen=True)
class EqualFlops:
    """Each pruning method's metric at equal FLOPs in one section, per seed (see equal_flops)."""
    dense: float
    lower: bool  # lower metric is better
    points: list[tuple[float, list[str]]]  # (FLOPs, labels of the one-size methods there)
    methods: list[str]
    values: dict[str, dict[float, dict]]  # label -> FLOPs -> seed -> value
    missing: dict[str, dict[float, list[Missing]]]  # label -> FLOPs -> the method's seeds without a value
    comparisons: dict[tuple[str, str], list[PointComparison]]  # (gated, other) -> where both have values

    def cell(self, label: str, x: float):
        """(Stat over the seeds with a value, their seeds)."""
        by_seed = self.values[label][x]
        return stat(list(by_seed.values())), list(by_seed)


@dataclass(frozen=True)
class Section:
    """The computed part of one model scale's table."""
    title: str
    rows: list[Row]
    noise: Noise | None
    costs: dict[str, dict[str, float | None]]  # row id -> front -> cost
    relations: dict[str, dict[str, dict[str, list[str]]]]  # front -> row id -> "dominated by"/... -> ids
    gated: list[str]
    others: list[str]
    answers: list[MethodAnswer]
    equal: EqualFlops | None


def _front_costs(rows: list[Row]) -> dict[str, dict[str, float | None]]:
    """What each row costs on each front: FLOPs per token, and batch-1 time relative to the dense
    model, the same for rows of one shape (fronts.pool_by_shape says why)."""
    latency = pool_by_shape({r.id: 1.0 / r.speedup_b1.mean if r.speedup_b1.mean else None for r in rows},
                            {r.id: r.shape for r in rows})
    return {r.id: {"flops": r.flops.mean, "latency": latency[r.id]} for r in rows}


def _gated_and_others(rows: list[Row]) -> tuple[list[str], list[str]]:
    """The gated labels (the paper's method) and the other pruning methods (not the reference)."""
    labels = list(dict.fromkeys(r.label for r in rows))
    gated = [lab for lab in labels if any(r.gated for r in rows if r.label == lab)]
    others = [lab for lab in labels if lab not in gated and not any(r.reference for r in rows if r.label == lab)]
    return gated, others


def equal_flops(dataset: str, rows: list[Row], noise: Noise | None, gated: list[str],
                others: list[str]) -> EqualFlops | None:
    """Each pruning method's front per seed (that seed's runs of the method, every lambda / target),
    read at each point by fronts.front_value; None where the section has no dense FLOPs.

    Points: EQUAL_FLOPS_FRACTIONS of the dense model's FLOPs, and the FLOPs of every method whose
    runs all have one size (a direct design, magnitude pruning to given sizes): such a method has
    a value there and nowhere else, and every other method can be read at the same cost."""
    metric, lower = FRONT_METRIC[dataset]
    dense = max((r.unpruned_flops for r in rows if is_number(r.unpruned_flops)), default=None)
    if not dense:
        return None
    seed_fronts: dict[str, dict] = {}  # label -> seed -> [(FLOPs, metric)]
    for row in rows:
        if row.reference:
            continue
        fronts = seed_fronts.setdefault(row.label, {})
        for r in row.per_run:
            if is_number(r.flops) and is_number(r.metrics.get(metric)):
                fronts.setdefault(r.seed, []).append((r.flops, r.metrics[metric]))
    seed_fronts = {label: fronts for label, fronts in seed_fronts.items() if fronts}
    points: dict[float, list[str]] = {dense * f: [] for f in EQUAL_FLOPS_FRACTIONS}
    for label, fronts in seed_fronts.items():
        sizes = {cost for pts in fronts.values() for cost, _ in pts}
        if len(sizes) == 1:
            points.setdefault(float(sizes.pop()), []).append(label)
    values = {label: {x: {} for x in points} for label in seed_fronts}
    missing = {label: {x: [] for x in points} for label in seed_fronts}
    for label, fronts in seed_fronts.items():
        for seed in sorted(fronts, key=seed_order):
            costs = [cost for cost, _ in fronts[seed]]
            for x in points:
                value = front_value(fronts[seed], x, lower)
                if value is not None:
                    values[label][x][seed] = value
                else:
                    missing[label][x].append(Missing(seed, min(costs), max(costs)))
    comparisons = {}
    for g in gated:
        for o in others:
            if g in values and o in values:
                comparisons[(g, o)] = [PointComparison(x, compare(list(values[g][x].values()),
                                                                  list(values[o][x].values()), noise))
                                       for x in sorted(points) if values[g][x] and values[o][x]]
    return EqualFlops(dense, lower, sorted(points.items()), list(seed_fronts), values, missing, comparisons)


def _answers(rows: list[Row], costs: dict, noise: Noise | None, lower: bool, metric: str,
             gated: list[str], others: list[str]) -> list[MethodAnswer]:
    out = []
    for g in gated:
        for o in others:
            for front in FRONTS:
                points = {r.id: (costs[r.id][front], r.samples(metric)) for r in rows
                          if costs[r.id][front] is not None}
                label = {r.id: r.label for r in rows}
                mine = {i: p for i, p in points.items() if label[i] == g}
                theirs = {i: p for i, p in points.items() if label[i] == o}
                if not mine or not theirs:
                    out.append(MethodAnswer(g, o, front, None, None, len(theirs), len(mine)))
                    continue
                # one method's front dominates another's when every row of the other is dominated
                # (a row of g beaten by o is then off g's own front)
                out.append(MethodAnswer(g, o, front, coverage(theirs, mine, noise, lower),
                                        coverage(mine, theirs, noise, lower), len(theirs), len(mine)))
    return out


def analyse(dataset: str, rows: list[Row]) -> list[Section]:
    """Per model scale whose rows have a cost and a quality, where there are two methods or more
    to compare: the noise, the fronts, the method answers and the equal-FLOPs table."""
    metric, lower = FRONT_METRIC[dataset]
    by_section: dict[str, list[Row]] = {}
    for row in rows:
        if row.metrics[metric].mean is not None and row.flops.mean is not None:
            by_section.setdefault(row.section, []).append(row)
    out = []
    for title, section_rows in by_section.items():
        if len({r.label for r in section_rows}) < 2:
            continue
        noise = pooled_noise(r.samples(metric) for r in section_rows)
        costs = _front_costs(section_rows)
        rel = {}
        for front in FRONTS:
            points = {r.id: (costs[r.id][front], r.samples(metric)) for r in section_rows
                      if costs[r.id][front] is not None}
            rel[front] = relations(points, noise, lower)
        gated, others = _gated_and_others(section_rows)
        out.append(Section(title, section_rows, noise, costs, rel, gated, others,
                           _answers(section_rows, costs, noise, lower, metric, gated, others),
                           equal_flops(dataset, section_rows, noise, gated, others)))
    return out


@dataclass(frozen=True)
class Report:
    """A table's rows and statistics, built once; every output of `table` renders this."""
    dataset: str
    rows: list[Row]
    not_run: list[NotRun]
    runs: list[Run]  # the runs kept (--scale)
    sections: list[Section]
    sources: dict  # the registry's sources, by name
    unfinished: list[str]
    origin: str  # "N finished runs (...) in `where`": how the text names what it was built from
    full_command: str  # the `table` command that prints all of it
    heading_level: int = 1


def build_report(dataset: str, runs: list[Run], unfinished: list[str], where: str,
                 wandb_project: str | None = None, heading_level: int = 1,
                 scales=None) -> Report:
    """Rows and statistics of a set of runs; `where` names their folder as the text shows it.
    `scales` (PTB): keep only the runs and the reported rows of those model scales, so that a table
    of one folder's medium runs does not list the small model as "not yet run" when another folder
    holds it."""
    check_dataset(dataset)
    scales = check_scales(dataset, scales)
    registry = load_reported()
    rows, not_run, kept_runs = build_rows(dataset, runs, registry[dataset], where, scales)
    kept = f" (the {' and '.join(scales)} scale{'s' * (len(scales) > 1)})" if scales else ""
    source = f"the W&B project `{wandb_project}`" if wandb_project else f"`{where}`"
    origin = f"{len(kept_runs)} finished run{'s' * (len(kept_runs) != 1)}{kept} in {source}"
    full_command = (f"python -m reproduce table {dataset} "
                    + (f"--wandb {wandb_project}" if wandb_project else f"--runs {where}")
                    + "".join(f" --scale {s}" for s in scales or ()))
    return Report(dataset, rows, not_run, kept_runs, analyse(dataset, rows), registry["sources"], unfinished,
                  origin, full_command, heading_level)
