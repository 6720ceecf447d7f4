"""Reported-vs-reproduced tables, rendered from the records of reproduce/report/runs.py.

Runs that differ only in their seed form one row (mean ± sample std over the seeds, the seeds
listed; runs.group_runs says what "only" allows); rows are grouped by what a method is
(result["method_properties"]: its label), so "L0" and "L0 (fine-tuned)" are separate rows.
Under each row come its reported counterparts from reproduce/report/reported.yaml (same model scale
and method) with the difference reproduced - reported; reported rows without a run are listed
as "not yet run". table.md and table.csv (one line per row and counterpart). The Markdown holds
no timestamp or absolute path of its own, so a table regenerated from the same records on
another machine is the same text (the README's tables are checked that way:
tests/test_records.py).

Below the tables, two computed sections a verdict in prose is checked against: the Pareto fronts
(which row dominates which, beyond the seeds' noise: reproduce/report/fronts.py) and the metric at equal
FLOPs (each method's front per seed, read at fixed fractions of the dense model's FLOPs);
equal_flops.csv holds the latter's numbers.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lightning_modules.atomic import atomic_write_text
from lightning_modules.errors import UserError
from lightning_modules.run_dir import RESULT_FILE
from lightning_modules.timing import trained_on_gpu

from .fronts import (
    ALPHA,
    DOMINATES,
    FRONT_METRIC,
    WITHIN_NOISE,
    Noise,
    answer,
    compare,
    coverage,
    front_value,
    is_better,
    pool_by_shape,
    pooled_noise,
    relations,
)
from .reported import load_reported
from .runs import (
    BIDAF_PAPER_HIDDEN,
    SCALES,
    Run,
    collect_runs,
    display_path,
    flops_after,
    flops_before,
    group_runs,
    is_reference,
    method_rank,
    neurons,
    scale_and_section,
    seed_order,
    size_scale,
    source_run_name,
)

METRICS = {"ptb": ("val_ppl", "test_ppl"), "squad": ("em", "f1")}
METRIC_NAMES = {"val_ppl": "val ppl", "test_ppl": "test ppl", "em": "EM", "f1": "F1"}
NOT_MEASURED = "not measured"
TABLE_MD, TABLE_CSV, EQUAL_FLOPS_CSV = "table.md", "table.csv", "equal_flops.csv"
EQUAL_FLOPS_FRACTIONS = (0.4, 0.5, 0.6, 0.8)  # of the dense FLOPs: where methods are compared at equal cost


@dataclass(frozen=True)
class Stat:
    """Mean and sample std over the seeds that have the value; n = how many have it."""
    mean: float | None
    std: float | None
    n: int


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numbers(values: Iterable) -> list:
    return [v for v in values if is_number(v)]


def stat(values) -> Stat:
    nums = numbers(values)
    if not nums:
        return Stat(None, None, 0)
    if len(nums) == 1:  # one seed: the value as recorded (a count stays an int in the CSV)
        return Stat(nums[0], None, 1)
    return Stat(statistics.fmean(nums), statistics.stdev(nums), len(nums))


def check_dataset(dataset: str) -> None:
    if dataset not in METRICS:
        raise UserError(f"unknown dataset {dataset!r}; available: {', '.join(METRICS)}")


# ---- what a run is ------------------------------------------------------------------------------

def run_speed(run: Run) -> tuple[dict | None, str | None]:
    """Measured speedups of a run and a note; unstructured sparsity removes no neuron, so no speedup."""
    r = run.result
    kept, total = r.get("neurons_kept"), r.get("neurons_total")
    if is_reference(run):
        return {**(run.speed or {}), "b1": 1.0, "b20": 1.0}, "the dense model is the reference of every speedup"
    if not run.properties.get("structured", True) and kept and kept == total:
        sparsity = r.get("lstm_weight_sparsity")
        zero = f"{sparsity:.0%} of the LSTM weights zero but " if isinstance(sparsity, (int, float)) else ""
        note = (f"unstructured sparsity ({zero}no neuron removed): a dense kernel multiplies matrices of "
                "the same shape, so the speedup is 1.00x")
        return {**(run.speed or {}), "b1": 1.0, "b20": 1.0}, note
    return run.speed, None


def target_of(run: Run) -> str:
    """What sets a run's size: another run's sizes, lambda for the penalties, or a pruning target.
    (A method takes at most one of them: magnitude pruning refuses a lambda.)"""
    hp, lam = run.hparams, run.result.get("lambda")
    if hp.get("sizes_from"):
        return f"sizes of {source_run_name(hp['sizes_from'])}"
    if isinstance(lam, (int, float)) and lam:
        return f"{lam:g}"
    if hp.get("target_neurons"):
        return f"to {hp['target_neurons']}"
    if hp.get("target_sparsity") is not None:
        return f"sparsity {hp['target_sparsity']:g}"
    return ""


# ---- rows -------------------------------------------------------------------------------------

def _per_layer(lists: list) -> list[Stat] | None:
    lists = [x for x in lists if x is not None]
    if not lists or len({len(x) for x in lists}) != 1:
        return None
    return [stat(layer) for layer in zip(*lists)]


def summarize(dataset: str, runs: list[Run], where: str) -> dict:
    """One table row from the runs of one experiment (one per seed); `where` names their folder."""
    first = runs[0]
    scale, section, size = scale_and_section(dataset, first)
    speeds = [run_speed(run) for run in runs]
    row = {
        "section": section, "size": size, "scale": scale, "method": first.result.get("method"),
        "label": first.label, "rank": method_rank(first), "gated": bool(first.properties.get("gated")),
        "reference": is_reference(first), "from_scratch": not first.hparams.get("sizes_from"),
        "lambda": first.result.get("lambda"), "target": target_of(first), "profile": first.result.get("profile"),
        "seeds": [run.result.get("seed") for run in runs], "runs": [run.name for run in runs],
        "commands": [run.result.get("command") or "" for run in runs],
        # what each seed trained on (result["hardware"], timing.hardware_summary: a GPU or the CPU)
        "trained_on": list(dict.fromkeys(str(run.result["hardware"]) for run in runs if run.result.get("hardware"))),
        "run_dirs": [f"{where}/{run.name}" if run.run_dir else f"wandb:{run.name}" for run in runs],
        "hidden_total": neurons(first.result, "neurons_total", "hidden"),
        "hidden_kept": _per_layer([neurons(run.result, "neurons_kept", "hidden") for run in runs]),
        "input_kept": _per_layer([neurons(run.result, "neurons_kept", "input") for run in runs]),
        "params": stat([(run.result.get("params") or {}).get("after") for run in runs]),
        # SQuAD runs count FLOPs per question (the table's header says which)
        "flops_per_token": stat([flops_after(run) for run in runs]),
        "speedup_flops": stat([run.result.get("speedup_flops") for run in runs]),
        "speedup_b1": stat([(s or {}).get("b1") for s, _ in speeds]),
        "speedup_b20": stat([(s or {}).get("b20") for s, _ in speeds]),
        "latency_b1_ms": stat([(s or {}).get("latency_b1_ms") for s, _ in speeds]),
        "speed_note": next((note for _, note in speeds if note), None),
        # e.g. a SQuAD smoke run that trained on dev articles, or on random word vectors: said loudly above the table
        "eval_note": next((ev.get("note") for ev in ((run.result.get("evaluation") or {}) for run in runs)
                           if ev.get("train_on_dev") or ev.get("random_word_vectors")), None),
        "reported": [],
        # each seed's own numbers, for the noise tests and the per-seed fronts
        "per_run": [{"seed": run.result.get("seed"), "flops_per_token": flops_after(run),
                     **{m: (run.result.get("metrics") or {}).get(m) for m in METRICS[dataset]}} for run in runs],
        # the model it was pruned from (a direct design's is its own, small, model)
        "unpruned_flops": max(numbers(flops_before(run) for run in runs), default=None),
    }
    for metric in METRICS[dataset]:
        row[metric] = stat([(run.result.get("metrics") or {}).get(metric) for run in runs])
    if 0 < row["speedup_b1"].n < len(runs):
        row["speed_note"] = f"speed measured for {row['speedup_b1'].n} of {len(runs)} seeds"
    return row


def matches(entry: dict, row: dict) -> bool:
    """Same method and the same model scale where the registry names one (SQuAD's do not). A model
    trained at another run's sizes is not the registry's model of that scale."""
    return (entry.get("method") == row["method"] and row["from_scratch"]
            and (entry.get("model") is None or entry.get("model") == row["scale"]))


def build_rows(dataset: str, runs: list[Run], reported: list[dict],
               where: str = ".") -> tuple[list[dict], list[dict]]:
    """(rows with their reported counterparts, reported entries that no row matches)."""
    rows = [summarize(dataset, group, where) for group in group_runs(runs)]
    for row in rows:
        row["reported"] = [e for e in reported if matches(e, row)]
    rows.sort(key=lambda r: (r["size"], r["section"], r["rank"],
                             r["lambda"] if isinstance(r["lambda"], (int, float)) else 0, r["runs"]))
    matched = {e["id"] for row in rows for e in row["reported"]}
    not_run = [e for e in reported if e["id"] not in matched]
    return rows, not_run


def reported_label(entry: dict, rows: list[dict]) -> str:
    """A registry entry names its method as the code does ("none", "l0"); shown with the label of a
    row that trained that method from scratch, or as the bare name where the table has none."""
    plain = [r["label"] for r in rows if r["method"] == entry.get("method") and r["from_scratch"]]
    return min(plain, key=len) if plain else str(entry.get("method") or "")


def difference(row: dict, entry: dict, metric: str) -> float | None:
    """Reproduced - reported; None (an empty cell) when either side has no number."""
    mine, theirs = row[metric].mean, entry.get(metric)
    return None if mine is None or theirs is None else mine - theirs


# ---- formatting ----------------------------------------------------------------------------------

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


def fmt_speed(row: dict) -> str:
    b1, b20 = row["speedup_b1"], row["speedup_b20"]
    if b1.mean is None and b20.mean is None:
        return NOT_MEASURED
    return f"{fmt_stat(b1, '.2f', 'x') or '–'} / {fmt_stat(b20, '.2f', 'x') or '–'}"


def _csv_list(value) -> str:
    return "" if value is None else json.dumps(value)


# ---- Markdown -----------------------------------------------------------------------------------

def reported_section(dataset: str, entry: dict) -> tuple[str, int]:
    """Section title and sort key of a reported entry that no run matched (same titles as the runs')."""
    if dataset == "squad":
        return f"BiDAF (hidden {BIDAF_PAPER_HIDDEN}, paper scale)", 0
    model = entry.get("model")
    hidden = next((h for h, name in SCALES.items() if name == model), None)
    return (f"{model} (2x{hidden})", hidden) if hidden else (str(model), 10**9)


PARTS = ("all", "equal-flops")  # what render_markdown writes: everything, or the equal-FLOPs table alone


def render_markdown(dataset: str, rows: list[dict], not_run: list[dict], sources: dict, unfinished: list[str],
                    origin: str, heading_level: int = 1, part: str = "all", full_command: str = "") -> str:
    """The table as Markdown; heading_level: the level of its title (sections one below), so that
    it can sit inside a longer document such as the README. part="equal-flops": only the metric at
    equal FLOPs, its title at heading_level (the README's landing-page view of the comparison),
    pointing at `full_command` for the rest."""
    h1, h2, h3 = ("#" * min(heading_level + i, 6) for i in range(3))
    if part == "equal-flops":
        lines = render_equal_flops(dataset, rows, h1)
        if not lines:
            return f"No method has a front to compare at equal FLOPs in {origin}.\n"
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join([*lines, "", f"From {origin}; every row, the fronts and the commands: `{full_command}`.",
                           ""]) + "\n"
    m1, m2 = METRICS[dataset]
    n1, n2 = METRIC_NAMES[m1], METRIC_NAMES[m2]
    flops = "FLOPs/question" if dataset == "squad" else "FLOPs/token"
    header = (f"| row | method | λ / target | seeds | hidden kept | input kept | params | {flops} | {n1} | {n2} "
              f"| Δ {n1} | Δ {n2} | speedup b1 / b20 |")
    sections: dict[str, tuple[int, list]] = {}  # title -> (sort key, [row dicts and unmatched entries])
    for row in rows:
        sections.setdefault(row["section"], (row["size"], []))[1].append(row)
    for entry in not_run:
        title, size = reported_section(dataset, entry)
        sections.setdefault(title, (size, []))[1].append(entry)

    refs: dict[str, dict] = {}  # registry id -> entry, numbered in reading order
    notes: list[str] = []
    commands: list[str] = []

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    def reported_line(entry: dict, label: str, row: dict | None) -> str:
        refs.setdefault(entry["id"], entry)
        d1, d2 = (difference(row, entry, m) if row else None for m in (m1, m2))
        speed = entry.get("speedup")
        return line([f"{label} `{entry['id']}` [{list(refs).index(entry['id']) + 1}]",
                     row["label"] if row else reported_label(entry, rows),
                     fmt_number(entry.get("lambda"), "g"), "",
                     str(entry["hidden_sizes"]) if entry.get("hidden_sizes") else "", "",
                     fmt_number(entry.get("params"), ",.0f"), fmt_number(entry.get("flops_per_token"), ",.0f"),
                     fmt_number(entry.get(m1), ".2f"), fmt_number(entry.get(m2), ".2f"),
                     fmt_number(d1, "+.2f"), fmt_number(d2, "+.2f"), "" if speed is None else f"{speed:.2f}x"])

    row_ids: dict[int, str] = {}  # id(row) -> its rN

    def run_line(row: dict) -> str:
        label = f"r{len(commands) + 1}"
        row_ids[id(row)] = label
        seeds = ", ".join(str(s) for s in row["seeds"])
        on = f"; trained on {' / '.join(row['trained_on'])}" if row["trained_on"] else ""
        commands.append(f"- **{label}** ({', '.join(row['runs'])}; seed {seeds}{on}):\n" + "\n".join(
            f"  `{c}`" if c else f"  (command not recorded in {RESULT_FILE})" for c in row["commands"]))
        speed = fmt_speed(row)
        if row["speed_note"]:
            if row["speed_note"] not in notes:
                notes.append(row["speed_note"])
            speed += f" (n{notes.index(row['speed_note']) + 1})"
        gpu = " (GPU)" if any(trained_on_gpu(h) for h in row["trained_on"]) else ""
        return line([label, row["label"] + gpu, row["target"], seeds,
                     fmt_layers(row["hidden_kept"]), fmt_layers(row["input_kept"]), fmt_stat(row["params"], ",.0f"),
                     fmt_stat(row["flops_per_token"], ",.0f"), fmt_stat(row[m1]), fmt_stat(row[m2]), "", "", speed])

    out = [f"{h1} {dataset.upper()}: reproduced vs reported", "",
           f"Built by `python -m reproduce table` from {origin}. Each row `rN` is one experiment: its runs "
           "differ only in the seed (the seeds are listed; several: mean ± sample std); the `↳ reported` lines "
           "under it are its counterparts in "
           "`reproduce/report/reported.yaml` (same model scale and method, the model trained at that scale's "
           "sizes), with "
           "Δ = reproduced − reported. An empty "
           "cell is a number no source gave (never 0). Speedup: dense time / pruned time per step, whole model, "
           "PyTorch, batch 1 / batch 20, measured by `python -m reproduce speed`. table.csv holds every field "
           "(one line per row and counterpart).", ""]
    for eval_note in dict.fromkeys(row["eval_note"] for row in rows if row.get("eval_note")):
        out += [f"**NOTE: {eval_note}.**", ""]
    for title, (_, items) in sorted(sections.items(), key=lambda kv: (kv[1][0], kv[0])):
        out += [f"{h2} {title}", "", header, "|---" * 13 + "|"]
        for item in items:
            if "reported" in item:  # a reproduced row, then its counterparts
                out.append(run_line(item))
                out += [reported_line(e, "↳ reported", item) for e in item["reported"]]
            else:
                out.append(reported_line(item, "not yet run: reported", None))
        out.append("")
    out += render_fronts(dataset, rows, row_ids, h3)
    out += render_equal_flops(dataset, rows, h3)
    if commands:
        out += [f"{h3} Commands", "", *commands, ""]
    if notes:
        out += [f"{h3} Notes", "", *(f"- n{i}: {n}" for i, n in enumerate(notes, 1)), ""]
    if refs:
        out += [f"{h3} Sources", ""]
        for number, (rid, entry) in enumerate(refs.items(), 1):
            src = sources.get(entry.get("source"), {})
            text = f"- [{number}] `{rid}`: {src.get('cite', entry.get('source'))}"
            text += f" <{src['url']}>" if src.get("url") else ""
            hardware = entry.get("speedup_hardware")
            extra = [entry.get("note"), hardware and f"speed measured on {hardware}", entry.get("where")]
            out.append(text + "".join(f"; {x}" for x in extra if x))
        out.append("")
    if unfinished:
        out += [f"Unfinished (no {RESULT_FILE} yet, not in the table): {', '.join(unfinished)}.", ""]
    return "\n".join(out)


def _shape(row: dict) -> tuple | None:
    """The row's model shape (kept neurons per layer), or None when its seeds differ in size."""
    layers = [*(row["hidden_kept"] or []), *(row["input_kept"] or [])]
    if not row["hidden_kept"] or any(s.std for s in layers):
        return None
    return tuple(s.mean for s in row["hidden_kept"]), tuple(s.mean for s in row["input_kept"] or [])


def _front_costs(rows: Mapping[str, dict]) -> dict[str, dict[str, float | None]]:
    """What each row costs on each front: FLOPs per token, and batch-1 time relative to the dense
    model, the same for rows of one shape (fronts.pool_by_shape says why)."""
    b1 = {i: r["speedup_b1"].mean for i, r in rows.items()}
    latency = pool_by_shape({i: 1.0 / s if s else None for i, s in b1.items()},
                            {i: _shape(r) for i, r in rows.items()})
    return {i: {"flops": r["flops_per_token"].mean, "latency": latency[i]} for i, r in rows.items()}


def samples(row: dict, key: str) -> list[float]:
    """The seeds' values of one field of a row (flops_per_token or a metric), those recorded."""
    return numbers(r[key] for r in row["per_run"])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _noise_line(noise: Noise | None, name: str) -> str:
    """What the tests of one section stand on, in numbers."""
    if noise is None:
        return (f"One seed per row: there is no noise estimate, so rows are compared on their one seed's {name} "
                "(plain dominance) and every answer says *one seed, untested*.")
    return (f"Seeds' noise: pooled sample std of {name} {noise.std:.2f} over {_plural(noise.rows, 'row')} with two "
            f"or more seeds ({noise.df} degrees of freedom). Two rows with seeds: Welch t; a row of one seed: "
            f"pooled t with this std, so two one-seed rows differ when their gap exceeds {noise.min_gap():.2f}.")


def _front_cell(verdict: tuple[dict, dict], row_id: str) -> str:
    points, found = verdict
    if row_id not in points:
        return NOT_MEASURED
    parts = [f"{what} {', '.join(ids)}" for what, ids in found[row_id].items() if ids]
    return "; ".join(parts) or "on the front"


def _coverage_text(counts: dict, total: int, who: str, whom: str, noise: Noise | None) -> str:
    within = f" (within noise: {counts[WITHIN_NOISE]})" if noise is not None else ""
    return f"{who} dominates {counts[DOMINATES]}{within} of {total} {whom} row{'s' * (total != 1)}"


def render_fronts(dataset: str, rows: list[dict], row_ids: dict[int, str], h3: str) -> list[str]:
    """Per model scale: which rows dominate which on the quality-against-FLOPs and the
    quality-against-batch-1-time fronts, beyond the seeds' noise, and, for the gated method (the
    paper's) against every other pruning method, whether it dominates, with counts. Computed, so
    that a verdict in prose can be checked against the records."""
    metric, lower = FRONT_METRIC[dataset]
    name = METRIC_NAMES[metric]
    flops = "FLOPs/question" if dataset == "squad" else "FLOPs/token"
    sections = _front_sections(dataset, rows)
    if not sections:
        return []
    out = [f"{h3} Pareto fronts", "",
           f"Row A dominates row B when A has no more {flops} (or no more batch-1 time: 1 / speedup b1) and a "
           f"{'lower' if lower else 'higher'} {name} by more than the seeds' noise: a two-sided t-test on the "
           f"seeds' {name} at p < {ALPHA:g} (Welch's t where both rows have two or more seeds; where a row has one "
           "seed, which gives no spread of its own, Student's t with the pooled sample std of the section's rows "
           f"that have seeds: *pooled t*). Where A costs no more and the {name} do not differ significantly, A is "
           "*within noise* of dominating B. A row no other row dominates or is within noise of is on the front. "
           "Costs are means over seeds (`reproduce/report/fronts.py`); rows of the same shape (kept neurons per layer) "
           "share one batch-1 time, the mean of their measured ones, since they differ by measurement noise only. "
           "*Does G dominate O?* is **yes** when a row of G dominates every row of O, **no** when some row of O "
           "is neither dominated nor within noise, else **within noise**.", ""]
    for title, section_rows in sections.items():
        ids = [row_ids[id(r)] for r in section_rows]
        by_id = dict(zip(ids, section_rows))
        noise = pooled_noise(samples(r, metric) for r in section_rows)
        costs = _front_costs(by_id)
        verdicts = {}
        for front in ("flops", "latency"):
            points = {i: (c[front], samples(by_id[i], metric)) for i, c in costs.items() if c[front] is not None}
            verdicts[front] = (points, relations(points, noise, lower))

        out += [f"**{title}**", "", _noise_line(noise, name), "",
                f"| row | method | λ / target | seeds | {flops} | speedup b1 | {name} | against FLOPs "
                "| against batch-1 time |", "|---" * 9 + "|"]
        for i, r in by_id.items():
            out.append(f"| {i} | {r['label']} | {r['target']} | {', '.join(str(s) for s in r['seeds'])} | "
                       f"{fmt_stat(r['flops_per_token'], ',.0f')} | "
                       f"{fmt_stat(r['speedup_b1'], '.2f', 'x') or NOT_MEASURED} | {fmt_stat(r[metric])} | "
                       f"{_front_cell(verdicts['flops'], i)} | {_front_cell(verdicts['latency'], i)} |")
        out.append("")
        gated, others = _gated_and_others(section_rows)
        untested = " (one seed, untested)" if noise is None else ""
        for g in gated:
            for o in others:
                parts = []
                for front, what in (("flops", flops), ("latency", "batch-1 time")):
                    points = verdicts[front][0]
                    mine = {i: p for i, p in points.items() if by_id[i]["label"] == g}
                    theirs = {i: p for i, p in points.items() if by_id[i]["label"] == o}
                    if not mine or not theirs:
                        parts.append(f"against {what}: not measured")
                        continue
                    # one method's front dominates another's when every row of the other is
                    # dominated (a row of g beaten by o is then off g's own front)
                    won, lost = coverage(theirs, mine, noise, lower), coverage(mine, theirs, noise, lower)
                    parts.append(f"against {what}: **{answer(won)}**{untested}: "
                                 f"{_coverage_text(won, len(theirs), g, o, noise)}, "
                                 f"{_coverage_text(lost, len(mine), o, g, noise)}")
                out.append(f"- Does {g} dominate {o}? " + "; ".join(parts) + ".")
        if gated and others:
            out.append("")
    return out


def _front_sections(dataset: str, rows: list[dict]) -> dict[str, list[dict]]:
    """The rows of each model scale that have a cost and a quality, where there are two methods
    or more to compare."""
    metric = FRONT_METRIC[dataset][0]
    sections: dict[str, list[dict]] = {}
    for row in rows:
        if row[metric].mean is not None and row["flops_per_token"].mean is not None:
            sections.setdefault(row["section"], []).append(row)
    return {t: rs for t, rs in sections.items() if len({r["label"] for r in rs}) > 1}


def _gated_and_others(section_rows: list[dict]) -> tuple[list[str], list[str]]:
    """The gated labels (the paper's method) and the other pruning methods (not the reference)."""
    labels = list(dict.fromkeys(r["label"] for r in section_rows))
    gated = [lab for lab in labels if any(r["gated"] for r in section_rows if r["label"] == lab)]
    others = [lab for lab in labels if lab not in gated
              and not any(r["reference"] for r in section_rows if r["label"] == lab)]
    return gated, others


# ---- equal FLOPs ------------------------------------------------------------------------------------

def equal_flops(dataset: str, section_rows: list[dict]) -> dict | None:
    """Each pruning method's metric at equal FLOPs in one section, per seed: that seed's runs of
    the method (every lambda / target), their Pareto front, read at each point by
    fronts.front_value. None where the section has no dense FLOPs to take fractions of.

    Points: EQUAL_FLOPS_FRACTIONS of the dense model's FLOPs, and the FLOPs of every method whose
    runs all have one size (a direct design, magnitude pruning to given sizes): such a method has
    a value there and nowhere else, and every other method can be read at the same cost.
    Returns {"dense": FLOPs, "points": [(FLOPs, [labels fixed there])], "methods": [labels],
    "values": {label: {FLOPs: {seed: value}}}}."""
    metric, lower = FRONT_METRIC[dataset]
    dense = max(numbers(r["unpruned_flops"] for r in section_rows), default=None)
    if not dense:
        return None
    seed_fronts: dict[str, dict] = {}  # label -> seed -> [(FLOPs, metric)]
    for row in section_rows:
        if row["reference"]:
            continue
        fronts = seed_fronts.setdefault(row["label"], {})
        for r in row["per_run"]:
            if is_number(r["flops_per_token"]) and is_number(r[metric]):
                fronts.setdefault(r["seed"], []).append((r["flops_per_token"], r[metric]))
    seed_fronts = {label: fronts for label, fronts in seed_fronts.items() if fronts}
    points: dict[float, list[str]] = {dense * f: [] for f in EQUAL_FLOPS_FRACTIONS}
    for label, fronts in seed_fronts.items():
        sizes = {cost for pts in fronts.values() for cost, _ in pts}
        if len(sizes) == 1:
            points.setdefault(float(sizes.pop()), []).append(label)
    values = {label: {x: {} for x in points} for label in seed_fronts}
    for label, fronts in seed_fronts.items():
        for seed in sorted(fronts, key=seed_order):
            for x in points:
                value = front_value(fronts[seed], x, lower)
                if value is not None:
                    values[label][x][seed] = value
    return {"dense": dense, "points": sorted(points.items()), "methods": list(seed_fronts), "values": values}


def _fmt_seeds(by_seed: dict) -> str:
    if not by_seed:
        return ""
    s = stat(list(by_seed.values()))
    seeds = ", ".join(str(seed) for seed in by_seed)
    return f"{fmt_stat(s)} (seed{'s' * (len(by_seed) > 1)} {seeds})"


def _point_name(x: float, dense: float) -> str:
    """50 %, 60 %: the fixed fractions; 58.0 %: a method's own size, which is no round fraction."""
    percent = 100 * x / dense
    return f"{percent:.0f} %" if abs(percent - round(percent)) < 1e-9 else f"{percent:.1f} %"


def _equal_comparison(g: str, o: str, table: dict, noise: Noise | None, lower: bool) -> str:
    """g against o at each point where both have a value: better, worse or within noise, by the
    same test as the fronts; then the counts."""
    parts, counts, untested = [], {"better": 0, "worse": 0, "within noise": 0}, 0
    for x, _ in table["points"]:
        mine, theirs = table["values"][g][x], table["values"][o][x]
        if not mine or not theirs:
            continue
        c = compare(list(mine.values()), list(theirs.values()), noise)
        way = "better" if is_better(c, lower) else "worse" if c.diff else "equal"
        gap = f"{way} by {abs(c.diff):.2f}" if c.diff else "equal"
        if c.significant is None:  # one seed each side and no noise estimate: the numbers as they are
            untested += 1
            counts[way if c.diff else "within noise"] += 1
            parts.append(f"{_point_name(x, table['dense'])}: {gap} (one seed, untested)")
            continue
        p = "p < 0.001" if c.p < 0.001 else f"p = {c.p:.3f}"
        counts[way if c.significant else "within noise"] += 1
        parts.append(f"{_point_name(x, table['dense'])}: {gap if c.significant else f'within noise ({gap})'}, "
                     f"{c.test} {p}")
    if not parts:
        return f"- {g} against {o}: no point where both have a value."
    summary = ", ".join(f"{kind} at {n}" for kind, n in counts.items())
    note = f" ({untested} untested: one seed)" if untested else ""
    return (f"- {g} against {o}: " + "; ".join(parts)
            + f". {g} {summary} of {_plural(sum(counts.values()), 'point')}{note}.")


def render_equal_flops(dataset: str, rows: list[dict], h3: str) -> list[str]:
    """Per model scale: a table of each pruning method's metric at equal FLOPs (points down,
    methods across), then the gated method against every other at those points."""
    metric, lower = FRONT_METRIC[dataset]
    name = METRIC_NAMES[metric]
    flops = "FLOPs/question" if dataset == "squad" else "FLOPs/token"
    tables = {title: (equal_flops(dataset, rs), rs) for title, rs in _front_sections(dataset, rows).items()}
    tables = {title: (t, rs) for title, (t, rs) in tables.items() if t is not None and t["methods"]}
    if not tables:
        return []
    fractions = ", ".join(f"{100 * f:g}" for f in EQUAL_FLOPS_FRACTIONS)
    out = [f"{h3} {name[0].upper() + name[1:]} at equal {flops}", "",
           f"Each method's front for each seed: that seed's runs of the method (every λ / target), their Pareto "
           f"front in ({flops}, {name}), read at a point by linear interpolation in log FLOPs between the two "
           "front points around it (past the front's last point, up to the seed's dearest run: that point's "
           "value, the cheaper model being no worse). A seed has a value only where it has runs on both sides "
           "of the point. A cell is the mean ± sample std over the seeds that have a value (listed); empty where "
           f"none has. Points: {fractions} % of the dense model's {flops}, and the {flops} of a method whose runs "
           "all have one size (it has a value only there). The lines below the table compare at each point with "
           "the fronts' test (Welch t, or pooled t where a side has one seed; two-sided p < "
           f"{ALPHA:g}). The numbers are in equal_flops.csv, beside table.md.", ""]
    for title, (table, section_rows) in tables.items():
        noise = pooled_noise(samples(r, metric) for r in section_rows)
        methods = table["methods"]
        out += [f"**{title}**: dense model {table['dense']:,.0f} {flops}", "",
                f"| {flops} | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        for x, fixed in table["points"]:
            if not any(table["values"][m][x] for m in methods):
                continue  # a point no method reaches (equal_flops.csv still lists it)
            where = f" ({', '.join(fixed)})" if fixed else ""
            out.append(f"| {_point_name(x, table['dense'])}: {x:,.0f}{where} | "
                       + " | ".join(_fmt_seeds(table["values"][m][x]) for m in methods) + " |")
        out.append("")
        gated, others = _gated_and_others(section_rows)
        lines = [_equal_comparison(g, o, table, noise, lower) for g in gated for o in others
                 if g in table["values"] and o in table["values"]]
        out += [*lines, ""] if lines else []
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
            "speed_note", "reported_id", "reported_source", "reported_hidden_sizes", "reported_lambda",
            "reported_params", "reported_flops_per_token", *(f"reported_{x}" for x in m), "reported_speedup",
            *(f"diff_{x}" for x in m), "reported_note", "profile", "trained_on", "commands", "run_dirs"]


def _reported_fields(dataset: str, entry: dict, row: dict | None) -> dict:
    out = {"reported_id": entry["id"], "reported_source": entry.get("source"),
           "reported_hidden_sizes": _csv_list(entry.get("hidden_sizes")), "reported_lambda": entry.get("lambda"),
           "reported_params": entry.get("params"), "reported_flops_per_token": entry.get("flops_per_token"),
           "reported_speedup": entry.get("speedup"), "reported_note": entry.get("note")}
    for metric in METRICS[dataset]:
        out[f"reported_{metric}"] = entry.get(metric)
        out[f"diff_{metric}"] = difference(row, entry, metric) if row else None
    return out


def _row_fields(dataset: str, row: dict) -> dict:
    out = {"dataset": dataset, "section": row["section"], "status": "reproduced", "method": row["method"],
           "label": row["label"], "lambda": row["lambda"], "target": row["target"], "seeds": _csv_list(row["seeds"]),
           "n_seeds": len(row["seeds"]), "runs": _csv_list(row["runs"]), "hidden_total": _csv_list(row["hidden_total"]),
           "speed_note": row["speed_note"] or ("" if row["speedup_b1"].n or row["speedup_b20"].n else NOT_MEASURED),
           "profile": row["profile"], "trained_on": _csv_list(row["trained_on"]),
           "commands": _csv_list(row["commands"]), "run_dirs": _csv_list(row["run_dirs"]),
           "speedup_flops_mean": row["speedup_flops"].mean, "latency_b1_ms_mean": row["latency_b1_ms"].mean}
    for kind in ("hidden_kept", "input_kept"):
        layers = row[kind]
        out[f"{kind}_mean"] = _csv_list([s.mean for s in layers]) if layers else ""
        out[f"{kind}_std"] = _csv_list([s.std for s in layers]) if layers and len(row["seeds"]) > 1 else ""
    for key in ("params", "flops_per_token", *METRICS[dataset], "speedup_b1", "speedup_b20"):
        out[f"{key}_mean"], out[f"{key}_std"] = row[key].mean, row[key].std
    return out


def render_csv(dataset: str, rows: list[dict], not_run: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_fields(dataset), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        base = _row_fields(dataset, row)
        for entry in row["reported"] or [None]:
            writer.writerow({**base, **(_reported_fields(dataset, entry, row) if entry else {})})
    for entry in not_run:
        writer.writerow({"dataset": dataset, "status": "not yet run", "method": entry.get("method"),
                         "section": reported_section(dataset, entry)[0], **_reported_fields(dataset, entry, None)})
    return buf.getvalue()  # None cells are written empty by csv, never as 0 or nan




def render_equal_flops_csv(dataset: str, rows: list[dict]) -> str:
    """One line per (section, point, method): the mean, sample std and each seed's value."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "section", "flops", "fraction_of_dense", "fixed_size_methods", "label",
                     f"{FRONT_METRIC[dataset][0]}_mean", f"{FRONT_METRIC[dataset][0]}_std", "n_seeds", "seeds",
                     "values"])
    for title, section_rows in _front_sections(dataset, rows).items():
        table = equal_flops(dataset, section_rows)
        if table is None:
            continue
        for x, fixed in table["points"]:
            for label in table["methods"]:
                by_seed = table["values"][label][x]
                s = stat(list(by_seed.values()))
                writer.writerow([dataset, title, x, x / table["dense"], _csv_list(fixed), label, s.mean, s.std,
                                 len(by_seed), _csv_list(list(by_seed)), _csv_list(list(by_seed.values()))])
    return buf.getvalue()  # None is written as an empty cell


# ---- building and writing ---------------------------------------------------------------------

def check_scales(dataset: str, scales: Iterable[str] | None) -> tuple[str, ...] | None:
    """The --scale names, checked: PTB's Zaremba scales only (SQuAD has one model)."""
    if not scales:
        return None
    if dataset != "ptb":
        raise UserError(f"--scale is for PTB's model scales ({', '.join(SCALES.values())}); {dataset} has none")
    unknown = [s for s in scales if s not in SCALES.values()]
    if unknown:
        raise UserError(f"--scale {unknown[0]}: not a scale; give {', '.join(SCALES.values())}")
    return tuple(dict.fromkeys(scales))


def build_table(dataset: str, runs: list[Run], unfinished: list[str], where: str,
                wandb_project: str | None = None, heading_level: int = 1,
                scales: Iterable[str] | None = None, part: str = "all") -> dict:
    """Rows, Markdown and CSV of a set of runs; `where` names their folder as the text shows it.
    `scales` (PTB): keep only the runs and the reported rows of those model scales, so that a table
    of one folder's medium runs does not list the small model as "not yet run" when another folder
    holds it. The table's `runs` are the runs kept."""
    check_dataset(dataset)
    scales = check_scales(dataset, scales)
    registry = load_reported()
    reported = registry[dataset]
    kept = ""
    if scales:
        runs = [r for r in runs if size_scale(r) in scales]
        reported = [e for e in reported if e.get("model") in scales]
        kept = f" (the {' and '.join(scales)} scale{'s' * (len(scales) > 1)})"
    rows, not_run = build_rows(dataset, runs, reported, where)
    source = f"the W&B project `{wandb_project}`" if wandb_project else f"`{where}`"
    origin = f"{len(runs)} finished run{'s' * (len(runs) != 1)}{kept} in {source}"
    full_command = (f"python -m reproduce table {dataset} " + (f"--wandb {wandb_project}" if wandb_project else
                                                               f"--runs {where}")
                    + "".join(f" --scale {s}" for s in scales or ()))
    return {"rows": rows, "not_run": not_run, "unfinished": unfinished, "runs": runs,
            "text": render_markdown(dataset, rows, not_run, registry["sources"], unfinished, origin, heading_level,
                                    part, full_command),
            "csv_text": render_csv(dataset, rows, not_run),
            "equal_flops_csv_text": render_equal_flops_csv(dataset, rows)}


def save_table(table: dict, out_dir: Path) -> dict:
    """Write table.md, table.csv and equal_flops.csv into out_dir; the table gains their paths."""
    md_path, csv_path, equal_path = (Path(out_dir) / name for name in (TABLE_MD, TABLE_CSV, EQUAL_FLOPS_CSV))
    atomic_write_text(md_path, table["text"])
    atomic_write_text(csv_path, table["csv_text"])
    atomic_write_text(equal_path, table["equal_flops_csv_text"])
    return {**table, "markdown": md_path, "csv": csv_path, "equal_flops_csv": equal_path}


def write_tables(dataset: str, runs_dir: Path, out_dir: Path | None = None, wandb_project: str | None = None,
                 profile: str | None = None, *, where: str | None = None, heading_level: int = 1,
                 scales: Iterable[str] | None = None) -> dict:
    """Write table.md and table.csv for the runs of runs_dir (or of a W&B project) into out_dir."""
    check_dataset(dataset)
    runs, unfinished = collect_runs(dataset, Path(runs_dir), wandb_project, profile)
    table = build_table(dataset, runs, unfinished, where or display_path(runs_dir), wandb_project, heading_level,
                        scales)
    return save_table(table, Path(out_dir) if out_dir is not None else Path(runs_dir))
