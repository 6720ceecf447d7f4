"""Reported-vs-reproduced tables: the Markdown and the CSVs of a report, formatted only.

The rows (reproduce/report/rows.py: one per experiment, its seeds' mean ± sample std, its reported
counterparts from reproduce/report/reported.yaml with Δ = reproduced - reported; reported rows
without a run listed as "not yet run") and the statistics (reproduce/report/comparisons.py: the
Pareto fronts with the seeds' noise, the metric at equal FLOPs) are computed once; this module
writes them as table.md, table.csv and equal_flops.csv. The Markdown holds no timestamp or
absolute path of its own, so a table regenerated from the same records on another machine is the
same text (the README's tables are checked that way: tests/test_records.py).
"""

from __future__ import annotations

import csv
import io
import json

from lightning_modules.run_dir import RESULT_FILE, SPEED_FILE
from lightning_modules.timing import trained_on_gpu

from .comparisons import EQUAL_FLOPS_FRACTIONS, EqualFlops, Report, Section
from .fronts import ALPHA, DOMINATES, FRONT_METRIC, WELCH_MIN_SEEDS, WITHIN_NOISE, Noise, answer, is_better
from .rows import METRICS, Row, Stat

METRIC_NAMES = {"val_ppl": "val ppl", "test_ppl": "test ppl", "em": "EM", "f1": "F1"}
NOT_MEASURED = "not measured"
TABLE_MD, TABLE_CSV, EQUAL_FLOPS_CSV = "table.md", "table.csv", "equal_flops.csv"
# what the Markdown holds: everything, the equal-FLOPs table alone, or the verdict lines alone
PARTS = ("all", "equal-flops", "verdict")
INT8_HEADER = " | int8 test ppl | int8 speedup b1 / b20"


# ---- cells ------------------------------------------------------------------------------------

def fmt_stat(s: Stat, spec: str = ".2f", suffix: str = "") -> str:
    if s.mean is None:
        return ""
    text = f"{s.mean:{spec}}{suffix}"
    return text + (f" ± {s.std:{spec}}" if s.std is not None else "")


def fmt_layers(layers: list[Stat] | None) -> str:
    if layers is None:
        return ""
    return "[" + ", ".join(f"{s.mean:.0f}" if not s.std else f"{s.mean:.1f}±{s.std:.1f}" for s in layers) + "]"


def fmt_number(value, spec: str) -> str:
    return "" if value is None else f"{value:{spec}}"


def fmt_pair(b1: Stat, b20: Stat, empty: str = NOT_MEASURED) -> str:
    if b1.mean is None and b20.mean is None:
        return empty
    return f"{fmt_stat(b1, '.2f', 'x') or '–'} / {fmt_stat(b20, '.2f', 'x') or '–'}"


def _csv_list(value) -> str:
    return "" if value is None else json.dumps(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _flops_name(dataset: str) -> str:
    return "FLOPs/question" if dataset == "squad" else "FLOPs/token"


def difference(row: Row | None, entry: dict, metric: str) -> float | None:
    """Reproduced - reported; None (an empty cell) when either side has no number."""
    mine = row.metrics[metric].mean if row else None
    theirs = entry.get(metric)
    return None if mine is None or theirs is None else mine - theirs


def has_int8(rows: list[Row]) -> bool:
    """Whether any row was timed in int8: the Markdown shows those columns only then (table.csv always)."""
    return any(r.int8_test_ppl.n or r.int8_b1.n or r.int8_b20.n for r in rows)


# ---- Markdown -----------------------------------------------------------------------------------

def render_markdown(report: Report, part: str = "all") -> str:
    """The table as Markdown, its title at report.heading_level (sections one below), so that it can
    sit inside a longer document. part="equal-flops": only the metric at equal FLOPs; part="verdict":
    only the lines that answer, per model scale, how the gated method compares with each other;
    both point at the full command for the rest."""
    h1, h2, h3 = ("#" * min(report.heading_level + i, 6) for i in range(3))
    if part != "all":
        lines = (render_equal_flops(report, h1) if part == "equal-flops" else render_verdict(report))
        if not lines:
            return f"No method has a front to compare at equal FLOPs in {report.origin}.\n"
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join([*lines, "", f"From {report.origin}; every row, the fronts and the commands: "
                                      f"`{report.full_command}`.", ""]) + "\n"
    dataset, rows = report.dataset, report.rows
    m1, m2 = METRICS[dataset]
    n1, n2 = METRIC_NAMES[m1], METRIC_NAMES[m2]
    int8 = has_int8(rows)
    header = (f"| row | method | λ / target | seeds | hidden kept | input kept | params | {_flops_name(dataset)} "
              f"| {n1} | {n2} | Δ {n1} | Δ {n2} | speedup b1 / b20{INT8_HEADER if int8 else ''} |")
    columns = header.count("|") - 1
    sections: dict[str, tuple[int, list]] = {}  # title -> (sort key, [rows and unmatched entries])
    for row in rows:
        sections.setdefault(row.section, (row.size, []))[1].append(row)
    for item in report.not_run:
        sections.setdefault(item.section, (item.size, []))[1].append(item)
    refs: dict[str, dict] = {}  # registry id -> entry, numbered in reading order
    notes: list[str] = []

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    def reported_line(entry: dict, label: str, row: Row | None) -> str:
        refs.setdefault(entry["id"], entry)
        speed = entry.get("speedup")
        plain = [r.label for r in rows if r.method == entry.get("method") and r.from_scratch]
        method = row.label if row else (min(plain, key=len) if plain else str(entry.get("method") or ""))
        return line([f"{label} `{entry['id']}` [{list(refs).index(entry['id']) + 1}]", method,
                     fmt_number(entry.get("lambda"), "g"), "",
                     str(entry["hidden_sizes"]) if entry.get("hidden_sizes") else "", "",
                     fmt_number(entry.get("params"), ",.0f"), fmt_number(entry.get("flops_per_token"), ",.0f"),
                     fmt_number(entry.get(m1), ".2f"), fmt_number(entry.get(m2), ".2f"),
                     *(fmt_number(difference(row, entry, m), "+.2f") for m in (m1, m2)),
                     "" if speed is None else f"{speed:.2f}x", *([""] * 2 * int8)])

    def noted(cell: str, note: str | None) -> str:
        if not note:
            return cell
        if note not in notes:
            notes.append(note)
        return f"{cell} (n{notes.index(note) + 1})"

    def run_line(row: Row) -> str:
        speed = noted(fmt_pair(row.speedup_b1, row.speedup_b20), row.speed_note)
        gpu = " (GPU)" if any(trained_on_gpu(h) for h in row.trained_on) else ""
        timed = max(row.int8_test_ppl.n, row.int8_b1.n)  # a mean over fewer seeds than the row's says so
        int8_note = f"int8 measured for {timed} of {len(row.seeds)} seeds" if 0 < timed < len(row.seeds) else None
        extra = [noted(fmt_stat(row.int8_test_ppl), int8_note), fmt_pair(row.int8_b1, row.int8_b20, "")] if int8 else []
        return line([row.id, row.label + gpu, row.target, ", ".join(str(s) for s in row.seeds),
                     fmt_layers(row.hidden_kept), fmt_layers(row.input_kept), fmt_stat(row.params, ",.0f"),
                     fmt_stat(row.flops, ",.0f"), fmt_stat(row.metrics[m1]), fmt_stat(row.metrics[m2]), "", "",
                     speed, *extra])

    int8_text = ("int8: the pruned model quantized, its test ppl in PyTorch and dense fp32 time / its int8 time"
                 if int8 else f"No run was timed in int8 (`{SPEED_FILE}`'s int8 block): table.csv has those "
                 "columns, empty")
    out = [f"{h1} {dataset.upper()}: reproduced vs reported", "",
           f"Built by `python -m reproduce table` from {report.origin}. Each row `rN` is one experiment: its runs "
           "have the same command but for the seed (the seeds are listed; several: mean ± sample std), and may "
           "have run at different commits and on different CPU models (table.csv lists each run's commit and CPU; "
           "training at one thread repeats to the last digit on one CPU model, not across models, so a row's "
           "spread mixes seeds and CPU models); the `↳ reported` lines under it are its counterparts in "
           "`reproduce/report/reported.yaml` (same model scale and method, the model trained at that scale's "
           "sizes), with Δ = reproduced − reported. An empty cell is a number no source gave (never 0). "
           "Speedup: dense time / pruned time per step, whole model, PyTorch, batch 1 / batch 20, measured by "
           f"`python -m reproduce speed`. {int8_text}. table.csv holds every field (one line per row and "
           "counterpart).", ""]
    for eval_note in dict.fromkeys(row.eval_note for row in rows if row.eval_note):
        out += [f"**NOTE: {eval_note}.**", ""]
    for title, (_, items) in sorted(sections.items(), key=lambda kv: (kv[1][0], kv[0])):
        out += [f"{h2} {title}", "", header, "|---" * columns + "|"]
        for item in items:
            if isinstance(item, Row):  # a reproduced row, then its counterparts
                out.append(run_line(item))
                out += [reported_line(e, "↳ reported", item) for e in item.reported]
            else:
                out.append(reported_line(item.entry, "not yet run: reported", None))
        out.append("")
    out += render_fronts(report, h3)
    out += render_equal_flops(report, h3)
    if rows:
        out += [f"{h3} Commands", ""]
        for row in rows:
            on = f"; trained on {' / '.join(row.trained_on)}" if row.trained_on else ""
            out.append(f"- **{row.id}** ({', '.join(row.names)}; seed {', '.join(str(s) for s in row.seeds)}{on}):\n"
                       + "\n".join(f"  `{c}`" if c else f"  (command not recorded in {RESULT_FILE})"
                                   for c in row.commands))
        out.append("")
    if notes:
        out += [f"{h3} Notes", "", *(f"- n{i}: {n}" for i, n in enumerate(notes, 1)), ""]
    if refs:
        out += [f"{h3} Sources", ""]
        for number, (rid, entry) in enumerate(refs.items(), 1):
            src = report.sources.get(entry.get("source"), {})
            text = f"- [{number}] `{rid}`: {src.get('cite', entry.get('source'))}"
            text += f" <{src['url']}>" if src.get("url") else ""
            hardware = entry.get("speedup_hardware")
            extra = [entry.get("note"), hardware and f"speed measured on {hardware}", entry.get("where")]
            out.append(text + "".join(f"; {x}" for x in extra if x))
        out.append("")
    if report.unfinished:
        out += [f"Unfinished (no {RESULT_FILE} yet, not in the table): {', '.join(report.unfinished)}.", ""]
    return "\n".join(out)


def _noise_line(noise: Noise | None, name: str) -> str:
    """What the tests of one section stand on, in numbers."""
    if noise is None:
        return (f"One seed per row: there is no noise estimate, so rows are compared on their one seed's {name} "
                "(plain dominance) and every answer says *one seed, untested*.")
    return (f"Seeds' noise: pooled sample std of {name} {noise.std:.2f} over {_plural(noise.rows, 'row')} with two "
            f"or more seeds ({noise.df} degrees of freedom). Two rows of {WELCH_MIN_SEEDS} seeds or more: Welch t; "
            f"a row of fewer: pooled t with this std, so two one-seed rows differ when their gap exceeds "
            f"{noise.min_gap():.2f}.")


def _front_cell(section: Section, front: str, row_id: str) -> str:
    if section.costs[row_id][front] is None:
        return NOT_MEASURED
    found = section.relations[front][row_id]
    return "; ".join(f"{what} {', '.join(ids)}" for what, ids in found.items() if ids) or "on the front"


def _coverage_text(counts: dict, total: int, who: str, whom: str, noise: Noise | None) -> str:
    within = f" (within noise: {counts[WITHIN_NOISE]})" if noise is not None else ""
    return f"{who} dominates {counts[DOMINATES]}{within} of {total} {whom} row{'s' * (total != 1)}"


def render_fronts(report: Report, h3: str) -> list[str]:
    """Per model scale: which rows dominate which on the FLOPs and the batch-1-time fronts, beyond
    the seeds' noise, and whether the gated method (the paper's) dominates every other pruning
    method, with counts (reproduce/report/comparisons.py computes them)."""
    if not report.sections:
        return []
    metric, lower = FRONT_METRIC[report.dataset]
    name, flops = METRIC_NAMES[metric], _flops_name(report.dataset)
    out = [f"{h3} Pareto fronts", "",
           f"Row A dominates row B when A has no more {flops} (or no more batch-1 time: 1 / speedup b1) and a "
           f"{'lower' if lower else 'higher'} {name} by more than the seeds' noise: a two-sided t-test on the "
           f"seeds' {name} at p < {ALPHA:g} (Welch's t where both rows have {WELCH_MIN_SEEDS} seeds or more; where "
           "a row has fewer, whose own spread says little or nothing, Student's t with the pooled sample std of the "
           f"section's rows that have seeds: *pooled t*). Where A costs no more and the {name} do not differ "
           "significantly, A is *within noise* of dominating B. A row no other row dominates or is within noise of "
           "is on the front. Costs are means over seeds (`reproduce/report/fronts.py`); rows of the same shape "
           "(kept neurons per layer) share one batch-1 time, the mean of their measured ones, since they differ by "
           "measurement noise only. *Does G dominate O?* is **yes** when a row of G dominates every row of O, "
           "**no** when some row of O is neither dominated nor within noise, else **within noise**.", ""]
    for section in report.sections:
        out += [f"**{section.title}**", "", _noise_line(section.noise, name), "",
                f"| row | method | λ / target | seeds | {flops} | speedup b1 | {name} | against FLOPs "
                "| against batch-1 time |", "|---" * 9 + "|"]
        for r in section.rows:
            out.append(f"| {r.id} | {r.label} | {r.target} | {', '.join(str(s) for s in r.seeds)} | "
                       f"{fmt_stat(r.flops, ',.0f')} | {fmt_stat(r.speedup_b1, '.2f', 'x') or NOT_MEASURED} | "
                       f"{fmt_stat(r.metrics[metric])} | {_front_cell(section, 'flops', r.id)} | "
                       f"{_front_cell(section, 'latency', r.id)} |")
        out.append("")
        untested = " (one seed, untested)" if section.noise is None else ""
        by_pair: dict[tuple[str, str], list[str]] = {}
        for a in section.answers:
            what = flops if a.front == "flops" else "batch-1 time"
            by_pair.setdefault((a.gated, a.other), []).append(
                f"against {what}: not measured" if a.won is None else
                f"against {what}: **{answer(a.won)}**{untested}: "
                f"{_coverage_text(a.won, a.n_other, a.gated, a.other, section.noise)}, "
                f"{_coverage_text(a.lost, a.n_gated, a.other, a.gated, section.noise)}")
        out += [f"- Does {g} dominate {o}? " + "; ".join(parts) + "." for (g, o), parts in by_pair.items()]
        if by_pair:
            out.append("")
    return out


def _point_name(x: float, dense: float) -> str:
    """50 %, 60 %: the fixed fractions; 58.0 %: a method's own size, which is no round fraction."""
    percent = 100 * x / dense
    return f"{percent:.0f} %" if abs(percent - round(percent)) < 1e-9 else f"{percent:.1f} %"


def _equal_cell(table: EqualFlops, label: str, x: float) -> str:
    """Mean ± std (seeds), and the method's seeds without a value there, with where their runs lie."""
    s, seeds = table.cell(label, x)
    if not seeds:
        return ""
    missing = table.missing[label][x]
    why = "".join(f"; seed {m.seed}: runs only at {_point_name(m.low, table.dense)}"
                  + (f"–{_point_name(m.high, table.dense)}" if m.high != m.low else "") for m in missing)
    return f"{fmt_stat(s)} (seed{'s' * (len(seeds) > 1)} {', '.join(str(seed) for seed in seeds)}{why})"


def _comparison_text(g: str, o: str, table: EqualFlops) -> str:
    """g against o at each point where both have a value: better, worse or within noise; then the counts."""
    parts, counts, untested = [], {"better": 0, "worse": 0, "within noise": 0}, 0
    for pc in table.comparisons[(g, o)]:
        c, where = pc.comparison, _point_name(pc.x, table.dense)
        way = "better" if is_better(c, table.lower) else "worse" if c.diff else "equal"
        gap = f"{way} by {abs(c.diff):.2f}" if c.diff else "equal"
        if c.significant is None:  # one seed each side and no noise estimate: the numbers as they are
            untested += 1
            counts[way if c.diff else "within noise"] += 1
            parts.append(f"{where}: {gap} (one seed, untested)")
            continue
        p = "p < 0.001" if c.p < 0.001 else f"p = {c.p:.3f}"
        counts[way if c.significant else "within noise"] += 1
        parts.append(f"{where}: {gap if c.significant else f'within noise ({gap})'}, {c.test} {p}")
    if not parts:
        return f"- {g} against {o}: no point where both have a value."
    summary = ", ".join(f"{kind} at {n}" for kind, n in counts.items())
    note = f" ({untested} untested: one seed)" if untested else ""
    return f"- {g} against {o}: " + "; ".join(parts) + f". {g} {summary} of {_plural(len(parts), 'point')}{note}."


def render_equal_flops(report: Report, h3: str) -> list[str]:
    """Per model scale: each pruning method's metric at equal FLOPs (points down, methods across),
    then the gated method against every other at those points."""
    metric = FRONT_METRIC[report.dataset][0]
    name, flops = METRIC_NAMES[metric], _flops_name(report.dataset)
    tables = [(s.title, s.equal) for s in report.sections if s.equal is not None and s.equal.methods]
    if not tables:
        return []
    fractions = ", ".join(f"{100 * f:g}" for f in EQUAL_FLOPS_FRACTIONS)
    out = [f"{h3} {name[0].upper() + name[1:]} at equal {flops}", "",
           f"Each method's front for each seed: that seed's runs of the method (every λ / target), their Pareto "
           f"front in ({flops}, {name}), read at a point by linear interpolation in log FLOPs between the two "
           "front points around it (past the front's last point, up to the seed's dearest run: that point's "
           "value, the cheaper model being no worse). A seed has a value only where it has runs on both sides "
           "of the point. A cell is the mean ± sample std over the seeds that have a value (listed), then each "
           "seed of the method that has none, with where its runs lie; empty where no seed has one. Points: "
           f"{fractions} % of the dense model's {flops}, and the {flops} of a method whose runs "
           "all have one size (it has a value only there). The lines below the table compare at each point with "
           f"the fronts' test (Welch t where both sides have {WELCH_MIN_SEEDS} seeds or more, else pooled t; "
           f"two-sided p < {ALPHA:g}). The numbers are in equal_flops.csv, beside table.md.", ""]
    for title, table in tables:
        out += [f"**{title}**: dense model {table.dense:,.0f} {flops}", "",
                f"| {flops} | " + " | ".join(table.methods) + " |", "|---" * (len(table.methods) + 1) + "|"]
        for x, fixed in table.points:
            if not any(table.values[m][x] for m in table.methods):
                continue  # a point no method reaches (equal_flops.csv still lists it)
            where = f" ({', '.join(fixed)})" if fixed else ""
            out.append(f"| {_point_name(x, table.dense)}: {x:,.0f}{where} | "
                       + " | ".join(_equal_cell(table, m, x) for m in table.methods) + " |")
        out.append("")
        lines = [_comparison_text(g, o, table) for g, o in table.comparisons]
        out += [*lines, ""] if lines else []
    return out


def render_verdict(report: Report) -> list[str]:
    """A few lines per model scale, each read from the computed comparisons: where the gated method's
    front is better, worse or within noise of each other method's at equal FLOPs, and whether it
    dominates that method's rows on the FLOPs front."""
    out = []
    for section in report.sections:
        table = section.equal
        lines = []
        for (g, o), points in (table.comparisons.items() if table else ()):
            if not points:
                continue
            kinds: dict[str, list] = {}
            for pc in points:
                c = pc.comparison
                kind = ("within noise" if not c.significant and c.significant is not None
                        else "better" if is_better(c, table.lower) else "worse")
                kinds.setdefault(kind, []).append(pc)
            said = []
            for kind, pcs in kinds.items():
                where = ", ".join(_point_name(pc.x, table.dense) for pc in pcs)
                gaps = sorted(abs(pc.comparison.diff) for pc in pcs)
                by = f"{gaps[0]:.2f}" if len(gaps) == 1 else f"{gaps[0]:.2f} to {gaps[-1]:.2f}"
                said.append(f"**{kind}** at {where} of dense FLOPs ({'gap' if kind == 'within noise' else 'by'} {by})")
            front = next((a for a in section.answers if (a.gated, a.other, a.front) == (g, o, "flops")), None)
            dominates = (f"; does {g} dominate {o} on the FLOPs front? **{answer(front.won)}**"
                         if front and front.won else "")
            lines.append(f"- {g} against {o}: " + ", ".join(said) + dominates + ".")
        if lines:
            noise = (f"pooled seed std {section.noise.std:.2f}" if section.noise else "one seed per row, untested")
            out += [f"**{section.title}** ({noise}; two-sided p < {ALPHA:g}):", "", *lines, ""]
    return out


# ---- CSV --------------------------------------------------------------------------------------

def csv_fields(dataset: str) -> list[str]:
    m = METRICS[dataset]
    return ["dataset", "section", "status", "method", "label", "lambda", "target", "seeds", "n_seeds", "runs",
            "hidden_total",
            "hidden_kept_mean", "hidden_kept_std", "input_kept_mean", "input_kept_std",
            "params_mean", "params_std", "flops_per_token_mean", "flops_per_token_std", "speedup_flops_mean",
            *(f"{x}_{s}" for x in m for s in ("mean", "std")),
            "speedup_b1_mean", "speedup_b1_std", "speedup_b20_mean", "speedup_b20_std", "latency_b1_ms_mean",
            "int8_test_ppl_mean", "int8_test_ppl_std", "int8_speedup_b1_mean", "int8_speedup_b20_mean",
            "speed_note", "reported_id", "reported_source", "reported_hidden_sizes", "reported_lambda",
            "reported_params", "reported_flops_per_token", *(f"reported_{x}" for x in m), "reported_speedup",
            *(f"diff_{x}" for x in m), "reported_note", "profile", "trained_on", "commits", "cpus", "commands",
            "run_dirs"]


def _reported_fields(dataset: str, entry: dict, row: Row | None) -> dict:
    out = {"reported_id": entry["id"], "reported_source": entry.get("source"),
           "reported_hidden_sizes": _csv_list(entry.get("hidden_sizes")), "reported_lambda": entry.get("lambda"),
           "reported_params": entry.get("params"), "reported_flops_per_token": entry.get("flops_per_token"),
           "reported_speedup": entry.get("speedup"), "reported_note": entry.get("note")}
    for metric in METRICS[dataset]:
        out[f"reported_{metric}"] = entry.get(metric)
        out[f"diff_{metric}"] = difference(row, entry, metric)
    return out


def _row_fields(dataset: str, row: Row) -> dict:
    out = {"dataset": dataset, "section": row.section, "status": "reproduced", "method": row.method,
           "label": row.label, "lambda": row.lam, "target": row.target, "seeds": _csv_list(row.seeds),
           "n_seeds": len(row.seeds), "runs": _csv_list(row.names), "hidden_total": _csv_list(row.hidden_total),
           "speed_note": row.speed_note or ("" if row.speedup_b1.n or row.speedup_b20.n else NOT_MEASURED),
           "profile": row.runs[0].result.get("profile"), "trained_on": _csv_list(row.trained_on),
           "commits": _csv_list(row.commits), "cpus": _csv_list(row.cpus),
           "commands": _csv_list(row.commands), "run_dirs": _csv_list(row.run_dirs),
           "speedup_flops_mean": row.speedup_flops.mean, "latency_b1_ms_mean": row.latency_b1_ms.mean,
           "int8_speedup_b1_mean": row.int8_b1.mean, "int8_speedup_b20_mean": row.int8_b20.mean}
    for kind, layers in (("hidden_kept", row.hidden_kept), ("input_kept", row.input_kept)):
        out[f"{kind}_mean"] = _csv_list([s.mean for s in layers]) if layers else ""
        out[f"{kind}_std"] = _csv_list([s.std for s in layers]) if layers and len(row.seeds) > 1 else ""
    for key, s in (("params", row.params), ("flops_per_token", row.flops), *row.metrics.items(),
                   ("speedup_b1", row.speedup_b1), ("speedup_b20", row.speedup_b20),
                   ("int8_test_ppl", row.int8_test_ppl)):
        out[f"{key}_mean"], out[f"{key}_std"] = s.mean, s.std
    return out


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_fields(report.dataset), lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        base = _row_fields(report.dataset, row)
        for entry in row.reported or [None]:
            writer.writerow({**base, **(_reported_fields(report.dataset, entry, row) if entry else {})})
    for item in report.not_run:
        writer.writerow({"dataset": report.dataset, "status": "not yet run", "method": item.entry.get("method"),
                         "section": item.section, **_reported_fields(report.dataset, item.entry, None)})
    return buf.getvalue()  # None cells are written empty by csv, never as 0 or nan


def render_equal_flops_csv(report: Report) -> str:
    """One line per (section, point, method): the mean, sample std and each seed's value."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    metric = FRONT_METRIC[report.dataset][0]
    writer.writerow(["dataset", "section", "flops", "fraction_of_dense", "fixed_size_methods", "label",
                     f"{metric}_mean", f"{metric}_std", "n_seeds", "seeds", "values", "seeds_without_value"])
    for section in report.sections:
        table = section.equal
        for x, fixed in (table.points if table else ()):
            for label in table.methods:
                s, seeds = table.cell(label, x)
                writer.writerow([report.dataset, section.title, x, x / table.dense, _csv_list(fixed), label, s.mean,
                                 s.std, len(seeds), _csv_list(seeds), _csv_list(list(table.values[label][x].values())),
                                 _csv_list([m.seed for m in table.missing[label][x]])])
    return buf.getvalue()  # None is written as an empty cell
