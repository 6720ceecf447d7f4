"""Reported-vs-reproduced tables, rendered from the records of reproduce/runs.py.

Runs that differ only in their seed form one row (mean ± sample std over the seeds); rows are
grouped by what a method is (result["method_properties"]: its label), so "L0" and "L0
(fine-tuned)" are separate rows. Under each row come its reported counterparts from
reproduce/reported.yaml (same model scale and method) with the difference reproduced -
reported; reported rows without a run are listed as "not yet run". table.md and table.csv
(one line per row and counterpart). The Markdown holds no timestamp or absolute path of
its own, so a table regenerated from the same records on another machine is the same text
(the README's tables are checked that way: tests/test_records.py).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lightning_modules.atomic import atomic_write_text
from lightning_modules.errors import UserError
from lightning_modules.timing import trained_on_gpu

from .fronts import FRONT_METRIC, covered, dominated_by, pool_by_shape
from .reported import load_reported
from .runs import (
    BIDAF_PAPER_HIDDEN,
    SCALES,
    Run,
    collect_runs,
    display_path,
    flops_after,
    is_reference,
    method_rank,
    neurons,
    scale_and_section,
    source_run_name,
)

METRICS = {"ptb": ("val_ppl", "test_ppl"), "squad": ("em", "f1")}
METRIC_NAMES = {"val_ppl": "val ppl", "test_ppl": "test ppl", "em": "EM", "f1": "F1"}
NOT_MEASURED = "not measured"
TABLE_MD, TABLE_CSV = "table.md", "table.csv"


@dataclass(frozen=True)
class Stat:
    """Mean and sample std over the seeds that have the value; n = how many have it."""
    mean: float | None
    std: float | None
    n: int


def stat(values) -> Stat:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
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

def group_key(run: Run) -> str:
    """Everything that defines an experiment except the seed."""
    r = run.result
    hp = {k: v for k, v in run.hparams.items() if not k.startswith("_")}
    return json.dumps([r.get("dataset"), r.get("profile"), r.get("method"), run.label, r.get("lambda"),
                       r.get("l0_penalty"), hp, r.get("neurons_total"), r.get("epochs"), r.get("train_tokens"),
                       r.get("config_path")], sort_keys=True, default=str)


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
        # e.g. a SQuAD smoke run that trained on dev articles: said loudly above the table
        "eval_note": next(((run.result.get("evaluation") or {}).get("note") for run in runs
                           if (run.result.get("evaluation") or {}).get("train_on_dev")), None),
        "reported": [],
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
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    rows = [summarize(dataset, sorted(g, key=lambda r: (str(r.result.get("seed")), r.name)), where)
            for g in groups.values()]
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


def render_markdown(dataset: str, rows: list[dict], not_run: list[dict], sources: dict, unfinished: list[str],
                    origin: str, heading_level: int = 1) -> str:
    """The table as Markdown; heading_level: the level of its title (sections one below), so that
    it can sit inside a longer document such as the README."""
    h1, h2, h3 = ("#" * min(heading_level + i, 6) for i in range(3))
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
            f"  `{c}`" if c else "  (command not recorded in result.json)" for c in row["commands"]))
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
           f"Built by `python -m reproduce table` from {origin}. Each row `rN` is one experiment "
           "(several seeds: mean ± sample std); the `↳ reported` lines under it are its counterparts in "
           "`reproduce/reported.yaml` (same model scale and method, the model trained at that scale's sizes), with "
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
        out += [f"Unfinished (no result.json yet, not in the table): {', '.join(unfinished)}.", ""]
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


def _front_cell(verdict: tuple[dict, dict], row_id: str) -> str:
    points, dominated = verdict
    if row_id not in points:
        return NOT_MEASURED
    return "dominated by " + ", ".join(dominated[row_id]) if dominated[row_id] else "on the front"


def render_fronts(dataset: str, rows: list[dict], row_ids: dict[int, str], h3: str) -> list[str]:
    """Per model scale: which rows dominate which on the quality-against-FLOPs and the
    quality-against-batch-1-time fronts, and, for the gated method (the paper's) against every other
    pruning method, how many of one's rows the other dominates. Computed, so that a verdict in prose
    can be checked against the records."""
    metric, lower = FRONT_METRIC[dataset]
    name = METRIC_NAMES[metric]
    flops = "FLOPs/question" if dataset == "squad" else "FLOPs/token"
    sections: dict[str, list[dict]] = {}
    for row in rows:
        if row[metric].mean is not None and row["flops_per_token"].mean is not None:
            sections.setdefault(row["section"], []).append(row)
    sections = {t: rs for t, rs in sections.items() if len({r["label"] for r in rs}) > 1}
    if not sections:
        return []
    out = [f"{h3} Pareto fronts", "",
           f"Row A dominates row B when A has no more {flops} (or no more batch-1 time: 1 / speedup b1) and "
           f"no {'higher' if lower else 'lower'} {name}, and is strictly better in one of the two; a row no "
           "other row dominates is on the front. Means over seeds, from the rows above "
           "(`reproduce/fronts.py`); rows of the same shape (kept neurons per layer) share one batch-1 "
           "time, the mean of their measured ones, since they differ by measurement noise only.", ""]
    for title, section_rows in sections.items():
        ids = [row_ids[id(r)] for r in section_rows]
        by_id = dict(zip(ids, section_rows))
        costs = _front_costs(by_id)
        verdicts = {}
        for front in ("flops", "latency"):
            points = {i: (c[front], by_id[i][metric].mean) for i, c in costs.items() if c[front] is not None}
            verdicts[front] = (points, dominated_by(points, lower))

        out += [f"**{title}**", "", f"| row | method | λ / target | {flops} | speedup b1 | {name} "
                "| against FLOPs | against batch-1 time |", "|---" * 8 + "|"]
        for i, r in by_id.items():
            out.append(f"| {i} | {r['label']} | {r['target']} | {fmt_stat(r['flops_per_token'], ',.0f')} | "
                       f"{fmt_stat(r['speedup_b1'], '.2f', 'x') or NOT_MEASURED} | {fmt_stat(r[metric])} | "
                       f"{_front_cell(verdicts['flops'], i)} | {_front_cell(verdicts['latency'], i)} |")
        out.append("")
        labels = list(dict.fromkeys(r["label"] for r in section_rows))
        gated = [lab for lab in labels if any(r["gated"] for r in section_rows if r["label"] == lab)]
        others = [lab for lab in labels if lab not in gated
                  and not any(r["reference"] for r in section_rows if r["label"] == lab)]
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
                    won, lost = covered(theirs, mine, lower), covered(mine, theirs, lower)
                    # one method's front dominates another's when every row of the other is
                    # dominated (a row of g beaten by o is then off g's own front)
                    answer = "yes" if won == len(theirs) else "no"
                    parts.append(f"against {what}: **{answer}**: {g} dominates {won} of {len(theirs)} "
                                 f"{o} row{'s' * (len(theirs) != 1)}, {o} dominates {lost} of {len(mine)} "
                                 f"{g} row{'s' * (len(mine) != 1)}")
                out.append(f"- Does {g} dominate {o}? " + "; ".join(parts) + ".")
        if gated and others:
            out.append("")
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




# ---- building and writing ---------------------------------------------------------------------

def build_table(dataset: str, runs: list[Run], unfinished: list[str], where: str,
                wandb_project: str | None = None, heading_level: int = 1) -> dict:
    """Rows, Markdown and CSV of a set of runs; `where` names their folder as the text shows it."""
    check_dataset(dataset)
    registry = load_reported()
    rows, not_run = build_rows(dataset, runs, registry[dataset], where)
    source = f"the W&B project `{wandb_project}`" if wandb_project else f"`{where}`"
    origin = f"{len(runs)} finished run{'s' * (len(runs) != 1)} in {source}"
    return {"rows": rows, "not_run": not_run, "unfinished": unfinished, "runs": runs,
            "text": render_markdown(dataset, rows, not_run, registry["sources"], unfinished, origin, heading_level),
            "csv_text": render_csv(dataset, rows, not_run)}


def save_table(table: dict, out_dir: Path) -> dict:
    """Write table.md and table.csv into out_dir; the table gains their paths."""
    md_path, csv_path = Path(out_dir) / TABLE_MD, Path(out_dir) / TABLE_CSV
    atomic_write_text(md_path, table["text"])
    atomic_write_text(csv_path, table["csv_text"])
    return {**table, "markdown": md_path, "csv": csv_path}


def write_tables(dataset: str, runs_dir: Path, out_dir: Path | None = None, wandb_project: str | None = None,
                 profile: str | None = None, *, where: str | None = None, heading_level: int = 1) -> dict:
    """Write table.md and table.csv for the runs of runs_dir (or of a W&B project) into out_dir."""
    check_dataset(dataset)
    runs, unfinished = collect_runs(dataset, Path(runs_dir), wandb_project, profile)
    table = build_table(dataset, runs, unfinished, where or display_path(runs_dir), wandb_project, heading_level)
    return save_table(table, Path(out_dir) if out_dir is not None else Path(runs_dir))
