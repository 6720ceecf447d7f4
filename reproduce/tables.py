"""Reported-vs-reproduced tables: `python -m reproduce table ptb|squad` (also `make tables`).

Reads the finished runs (subfolders holding result.json) of results/<dataset>/<profile>/, or
of another folder (--runs, e.g. a sweep's results/sweeps/<name>/), or the same result dicts
from a W&B project (--wandb ENTITY/PROJECT). Runs that differ only in their seed form one row
(mean ± sample std over the seeds). Under each row come its reported counterparts from
reproduce/reported.yaml (same model scale and method) with the difference reproduced -
reported; reported rows without a run are listed as "not yet run". Writes table.md and
table.csv (one line per row and counterpart), then the plots of reproduce/plots.py.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from lightning_modules.errors import UserError

METRICS = {"ptb": ("val_ppl", "test_ppl"), "squad": ("em", "f1")}
BIDAF_PAPER_HIDDEN = 100  # Seo et al.; the registry's SQuAD entries are all at this scale ("model: paper")
METRIC_NAMES = {"val_ppl": "val ppl", "test_ppl": "test ppl", "em": "EM", "f1": "F1"}
SCALES = {200: "small", 650: "medium", 1500: "large"}  # Zaremba's hidden sizes name the registry's models
METHOD_ORDER = ("none", "l0", "group_lasso", "lasso", "magnitude", "direct")
METHOD_NAMES = {"none": "dense", "l0": "L0", "group_lasso": "ISS group Lasso", "lasso": "Lasso (L1)",
                "magnitude": "magnitude", "direct": "direct design"}
NOT_MEASURED = "not measured"
SPEED_FILE = "speed.json"


@dataclass
class Run:
    name: str
    result: dict
    run_dir: Path | None = None  # None for a run read from W&B (no speed.json, no gate history)


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


# ---- reading runs --------------------------------------------------------------------------

def load_run_dirs(runs_dir: Path) -> tuple[list[Run], list[str]]:
    """Finished runs of every immediate subfolder, and the names of those without result.json."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: no such folder of run dirs; train first (python -m reproduce profile "
                        "...) or give --runs DIR")
    runs, unfinished = [], []
    for sub in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = sub / "result.json"
        if not path.is_file():
            unfinished.append(sub.name)
            continue
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not readable JSON ({e}); delete it and re-run that run's command") from None
        if not isinstance(result, dict):
            raise UserError(f"{path}: expected a JSON object; delete it and re-run that run's command")
        runs.append(Run(sub.name, with_model_hparams(result, sub), sub))
    return runs, unfinished


def with_model_hparams(result: dict, run_dir: Path) -> dict:
    """Runs finished before result.json recorded model_hparams: the run dir's config.yaml (saved by
    LightningCLI at the start of the run) holds the same model settings (sizes_from, targets)."""
    if result.get("model_hparams") or not (run_dir / "config.yaml").is_file():
        return result
    import yaml

    try:
        model = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("model")
    except (OSError, yaml.YAMLError, AttributeError):
        return result  # an unreadable config only costs the table the finer labels
    return {**result, "model_hparams": model} if isinstance(model, dict) else result


def _plain(value):
    """W&B summaries hand back their own dict/list types; the tables want JSON-like values."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_wandb_runs(project: str, profile: str | None = None) -> tuple[list[Run], list[str]]:
    """Runs of a W&B project whose summary holds `result` (what train.py writes there)."""
    if project.count("/") != 1 or not all(project.split("/")):
        raise UserError(f"--wandb {project!r}: give ENTITY/PROJECT, e.g. my-team/neuron-selection")
    import wandb

    try:
        api_runs = list(wandb.Api().runs(project))
    except Exception as e:  # auth, network or an unknown project: each ends the command the same way
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"--wandb {project}: cannot list its runs ({reason}); "
                        "check the name and log in (wandb login or WANDB_API_KEY)") from None
    runs, unfinished = [], []
    for api_run in api_runs:
        name = getattr(api_run, "name", None) or getattr(api_run, "id", "?")
        try:
            result = api_run.summary["result"]
        except (KeyError, TypeError):
            result = None
        if getattr(api_run, "state", "finished") != "finished" or not result:
            unfinished.append(f"{name} ({getattr(api_run, 'state', '?')})")
            continue
        result = _plain(result)
        if profile is None or result.get("profile") == profile:
            runs.append(Run(name, result))
    return runs, unfinished


def _squad_latency(run_dir: Path) -> dict | None:
    """A BiDAF run times its export against the dense model at batch 1 itself (result.json)."""
    try:
        timing = json.loads((run_dir / "result.json").read_text()).get("latency_batch1")
    except (OSError, ValueError):
        return None
    if not isinstance(timing, dict):
        return None
    return {"b1": timing.get("speedup_median"), "b20": None, "latency_b1_ms": timing.get("pruned_median_ms"),
            "dense_latency_b1_ms": timing.get("dense_median_ms")}


def read_speed(run_dir: Path | None) -> dict | None:
    """The measured speedups of `python -m reproduce speed` for one run; None if not measured.

    The only place that knows the layout of speed.json: speedup = dense time / pruned time of
    the whole model in PyTorch eager on the CPU; latency = median ms per time step at batch 1 of
    the pruned model and of the dense model it was timed against.
    """
    if run_dir is None:
        return None
    if not (Path(run_dir) / SPEED_FILE).is_file():
        return _squad_latency(Path(run_dir))
    path = Path(run_dir) / SPEED_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not readable JSON ({e}); re-run python -m reproduce speed for that run") from None

    def lookup(*keys):
        node = data
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        if isinstance(node, dict):  # a statistics block rather than a bare number
            node = node.get("median_ms")
        return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None

    speed = {"b1": lookup("speedup", "torch", "model", "1"),
             "b20": lookup("speedup", "torch", "model", "20"),
             "latency_b1_ms": lookup("latency", "torch", "model", "1", "pruned"),
             "dense_latency_b1_ms": lookup("latency", "torch", "model", "1", "dense")}
    return speed if any(v is not None for v in speed.values()) else None


# ---- what a run is --------------------------------------------------------------------------

def method_key(result: dict) -> str:
    """The registry's method name; a dense run at another run's sizes is the direct design."""
    hp = result.get("model_hparams") or {}
    if hp.get("sizes_from"):
        return "direct"
    return str(result.get("method") or "?")


def _neurons(result: dict, key: str, kind: str) -> list | None:
    value = (result.get(key) or {}).get(kind)
    return list(value) if isinstance(value, (list, tuple)) else None


def original_hidden(result: dict) -> list | None:
    """Hidden sizes of the model a run started from; a direct design's are its source run's."""
    sizes_from = (result.get("model_hparams") or {}).get("sizes_from")
    if sizes_from:
        try:
            source = json.loads(Path(sizes_from).read_text())
            return _neurons(source, "neurons_total", "hidden") or _neurons(result, "neurons_total", "hidden")
        except (OSError, ValueError):
            pass  # moved or from another machine: fall back to the run's own sizes
    return _neurons(result, "neurons_total", "hidden")


def scale_and_section(dataset: str, result: dict) -> tuple[str | None, str, int]:
    """(registry model name or None, section title, sort key) of a run."""
    if dataset == "squad":
        hidden = original_hidden(result) or []
        if hidden and max(hidden) == BIDAF_PAPER_HIDDEN:
            return "paper", f"BiDAF (hidden {BIDAF_PAPER_HIDDEN}, paper scale)", 0
        return None, f"BiDAF (hidden {max(hidden) if hidden else '?'})", 1
    hidden = original_hidden(result)
    if not hidden:
        return None, "model size not recorded", 10**9
    if len(set(hidden)) == 1:
        name = SCALES.get(hidden[0])
        shape = f"{len(hidden)}x{hidden[0]}"
        return name, f"{name} ({shape})" if name else shape, max(hidden)
    return None, str(hidden), max(hidden)


def is_unstructured(result: dict) -> bool:
    hp = result.get("model_hparams") or {}
    return result.get("method") == "lasso" or (result.get("method") == "magnitude" and hp.get("structured") is False)


def run_speed(run: Run) -> tuple[dict | None, str | None]:
    """Measured speedups of a run and a note; unstructured sparsity removes no neuron, so no speedup."""
    r = run.result
    kept, total = r.get("neurons_kept"), r.get("neurons_total")
    speed = read_speed(run.run_dir)
    if method_key(r) == "none":
        return {**(speed or {}), "b1": 1.0, "b20": 1.0}, "the dense model is the reference of every speedup"
    if is_unstructured(r) and kept and kept == total:
        sparsity = r.get("lstm_weight_sparsity")
        zero = f"{sparsity:.0%} of the LSTM weights zero but " if isinstance(sparsity, (int, float)) else ""
        note = (f"unstructured sparsity ({zero}no neuron removed): a dense kernel multiplies matrices of "
                "the same shape, so the speedup is 1.00x")
        return {**(speed or {}), "b1": 1.0, "b20": 1.0}, note
    return speed, None


def target_of(result: dict) -> str:
    """What sets a method's strength: lambda for the penalties, the target size for magnitude."""
    hp = result.get("model_hparams") or {}
    method = method_key(result)
    if method == "direct":
        return f"sizes of {Path(hp['sizes_from']).parent}"
    if method == "none":
        return ""
    if method == "magnitude":
        if hp.get("target_neurons"):
            return f"to {hp['target_neurons']}"
        if hp.get("target_sparsity") is not None:
            return f"sparsity {hp['target_sparsity']:g}"
    lam = result.get("lambda")
    return f"{lam:g}" if isinstance(lam, (int, float)) and (lam or method != "magnitude") else ""


# ---- rows -------------------------------------------------------------------------------------

def group_key(run: Run) -> str:
    """Everything that defines an experiment except the seed."""
    r = run.result
    hp = {k: v for k, v in (r.get("model_hparams") or {}).items() if not k.startswith("_")}
    return json.dumps([r.get("dataset"), r.get("profile"), method_key(r), r.get("lambda"), r.get("l0_penalty"),
                       hp, r.get("neurons_total"), r.get("epochs"), r.get("train_tokens"), r.get("config_path")],
                      sort_keys=True, default=str)


def _per_layer(lists: list) -> list[Stat] | None:
    lists = [x for x in lists if x is not None]
    if not lists or len({len(x) for x in lists}) != 1:
        return None
    return [stat(layer) for layer in zip(*lists)]


def summarize(dataset: str, runs: list[Run]) -> dict:
    """One table row from the runs of one experiment (one per seed)."""
    first = runs[0].result
    scale, section, size = scale_and_section(dataset, first)
    speeds = [run_speed(run) for run in runs]
    row = {
        "section": section, "size": size, "scale": scale, "method": method_key(first),
        "lambda": first.get("lambda"), "target": target_of(first), "profile": first.get("profile"),
        "seeds": [run.result.get("seed") for run in runs], "runs": [run.name for run in runs],
        "commands": [run.result.get("command") or "" for run in runs],
        "run_dirs": [str(run.run_dir) if run.run_dir else f"wandb:{run.name}" for run in runs],
        "hidden_total": _neurons(first, "neurons_total", "hidden"),
        "hidden_kept": _per_layer([_neurons(run.result, "neurons_kept", "hidden") for run in runs]),
        "input_kept": _per_layer([_neurons(run.result, "neurons_kept", "input") for run in runs]),
        "params": stat([(run.result.get("params") or {}).get("after") for run in runs]),
        # SQuAD runs count FLOPs per question (the table's header says which)
        "flops_per_token": stat([(run.result.get("flops_per_token") or run.result.get("flops_per_question")
                                  or {}).get("after") for run in runs]),
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


def matches(entry: dict, method: str, scale: str | None) -> bool:
    """Same method, and the same model scale where the registry names one (SQuAD's do not)."""
    return entry.get("method") == method and (entry.get("model") is None or entry.get("model") == scale)


def build_rows(dataset: str, runs: list[Run], reported: list[dict]) -> tuple[list[dict], list[dict]]:
    """(rows with their reported counterparts, reported entries that no row matches)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    rows = [summarize(dataset, sorted(g, key=lambda r: (str(r.result.get("seed")), r.name))) for g in groups.values()]
    for row in rows:
        row["reported"] = [e for e in reported if matches(e, row["method"], row["scale"])]
    rows.sort(key=lambda r: (r["size"], r["section"], _method_rank(r["method"]),
                             r["lambda"] if isinstance(r["lambda"], (int, float)) else 0, r["runs"]))
    matched = {e["id"] for row in rows for e in row["reported"]}
    not_run = [e for e in reported if e["id"] not in matched]
    return rows, not_run


def _method_rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


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
                    origin: str) -> str:
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
                     METHOD_NAMES.get(entry.get("method"), entry.get("method") or ""),
                     fmt_number(entry.get("lambda"), "g"), "",
                     str(entry["hidden_sizes"]) if entry.get("hidden_sizes") else "", "",
                     fmt_number(entry.get("params"), ",.0f"), fmt_number(entry.get("flops_per_token"), ",.0f"),
                     fmt_number(entry.get(m1), ".2f"), fmt_number(entry.get(m2), ".2f"),
                     fmt_number(d1, "+.2f"), fmt_number(d2, "+.2f"), "" if speed is None else f"{speed:.2f}x"])

    def run_line(row: dict) -> str:
        label = f"r{len(commands) + 1}"
        seeds = ", ".join(str(s) for s in row["seeds"])
        commands.append(f"- **{label}** ({', '.join(row['runs'])}; seed {seeds}):\n" + "\n".join(
            f"  `{c}`" if c else "  (command not recorded in result.json)" for c in row["commands"]))
        speed = fmt_speed(row)
        if row["speed_note"]:
            if row["speed_note"] not in notes:
                notes.append(row["speed_note"])
            speed += f" (n{notes.index(row['speed_note']) + 1})"
        return line([label, METHOD_NAMES.get(row["method"], row["method"]), row["target"], seeds,
                     fmt_layers(row["hidden_kept"]), fmt_layers(row["input_kept"]), fmt_stat(row["params"], ",.0f"),
                     fmt_stat(row["flops_per_token"], ",.0f"), fmt_stat(row[m1]), fmt_stat(row[m2]), "", "", speed])

    out = [f"# {dataset.upper()}: reproduced vs reported", "",
           f"Built by `python -m reproduce table` from {origin}. Each row `rN` is one experiment "
           "(several seeds: mean ± sample std); the `↳ reported` lines under it are its counterparts in "
           "`reproduce/reported.yaml` (same model scale and method), with Δ = reproduced − reported. An empty "
           "cell is a number no source gave (never 0). Speedup: dense time / pruned time per step, whole model, "
           "PyTorch, batch 1 / batch 20, measured by `python -m reproduce speed`. table.csv holds every field "
           "(one line per row and counterpart).", ""]
    for eval_note in dict.fromkeys(row["eval_note"] for row in rows if row.get("eval_note")):
        out += [f"**NOTE: {eval_note}.**", ""]
    for title, (_, items) in sorted(sections.items(), key=lambda kv: (kv[1][0], kv[0])):
        out += [f"## {title}", "", header, "|---" * 13 + "|"]
        for item in items:
            if "reported" in item:  # a reproduced row, then its counterparts
                out.append(run_line(item))
                out += [reported_line(e, "↳ reported", item) for e in item["reported"]]
            else:
                out.append(reported_line(item, "not yet run: reported", None))
        out.append("")
    if commands:
        out += ["### Commands", "", *commands, ""]
    if notes:
        out += ["### Notes", "", *(f"- n{i}: {n}" for i, n in enumerate(notes, 1)), ""]
    if refs:
        out += ["### Sources", ""]
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


# ---- CSV --------------------------------------------------------------------------------------

def csv_fields(dataset: str) -> list[str]:
    m = METRICS[dataset]
    return ["dataset", "section", "status", "method", "lambda", "target", "seeds", "n_seeds", "runs", "hidden_total",
            "hidden_kept_mean", "hidden_kept_std", "input_kept_mean", "input_kept_std",
            "params_mean", "params_std", "flops_per_token_mean", "flops_per_token_std", "speedup_flops_mean",
            *(f"{x}_{s}" for x in m for s in ("mean", "std")),
            "speedup_b1_mean", "speedup_b1_std", "speedup_b20_mean", "speedup_b20_std", "latency_b1_ms_mean",
            "speed_note", "reported_id", "reported_source", "reported_hidden_sizes", "reported_lambda",
            "reported_params", "reported_flops_per_token", *(f"reported_{x}" for x in m), "reported_speedup",
            *(f"diff_{x}" for x in m), "reported_note", "profile", "commands", "run_dirs"]


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
           "lambda": row["lambda"], "target": row["target"], "seeds": _csv_list(row["seeds"]),
           "n_seeds": len(row["seeds"]), "runs": _csv_list(row["runs"]), "hidden_total": _csv_list(row["hidden_total"]),
           "speed_note": row["speed_note"] or ("" if row["speedup_b1"].n or row["speedup_b20"].n else NOT_MEASURED),
           "profile": row["profile"], "commands": _csv_list(row["commands"]), "run_dirs": _csv_list(row["run_dirs"]),
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


# ---- the command ---------------------------------------------------------------------------------

def check_dataset(dataset: str) -> None:
    if dataset not in METRICS:
        raise UserError(f"unknown dataset {dataset!r}; available: {', '.join(METRICS)}")


def collect_runs(dataset: str, runs_dir: Path, wandb_project: str | None = None,
                 profile: str | None = None) -> tuple[list[Run], list[str]]:
    """Finished runs of one dataset (from run dirs, or from W&B), and the unfinished ones' names."""
    check_dataset(dataset)
    if wandb_project:
        runs, unfinished = load_wandb_runs(wandb_project, profile)
        where = f"W&B project {wandb_project}"
    else:
        runs, unfinished = load_run_dirs(runs_dir)
        where = str(runs_dir)
    # results written before `dataset` was recorded are PTB runs (the only dataset then)
    runs = [r for r in runs if r.result.get("dataset", "ptb") == dataset]
    if not runs:
        pending = f" (unfinished: {', '.join(unfinished)})" if unfinished else ""
        raise UserError(f"{where}: no finished {dataset} run (a result.json){pending}; wait for the runs to "
                        "finish or point --runs at a folder of finished run dirs")
    return runs, unfinished


def write_tables(dataset: str, runs_dir: Path, out_dir: Path | None = None, wandb_project: str | None = None,
                 profile: str | None = None) -> dict:
    """Write table.md and table.csv for the runs of runs_dir (or of a W&B project) into out_dir."""
    from lightning_modules.atomic import atomic_write_text

    from .reported import load_reported

    runs_dir = Path(runs_dir)
    out_dir = Path(out_dir) if out_dir is not None else runs_dir
    runs, unfinished = collect_runs(dataset, runs_dir, wandb_project, profile)
    registry = load_reported()
    rows, not_run = build_rows(dataset, runs, registry[dataset])
    origin = (f"the W&B project `{wandb_project}`" if wandb_project else f"`{runs_dir}`")
    origin = f"{len(runs)} finished run{'s' * (len(runs) != 1)} in {origin}"
    md_path, csv_path = out_dir / "table.md", out_dir / "table.csv"
    atomic_write_text(md_path, render_markdown(dataset, rows, not_run, registry["sources"], unfinished, origin))
    atomic_write_text(csv_path, render_csv(dataset, rows, not_run))
    return {"rows": rows, "not_run": not_run, "unfinished": unfinished, "runs": runs,
            "markdown": md_path, "csv": csv_path}


def add_arguments(parser) -> None:
    parser.add_argument("dataset", help="ptb or squad")
    parser.add_argument("--profile", default="auto",
                        help="smoke, smoke-baselines, small, paper, or auto (paper on a GPU, else small); "
                             "names the folder RESULTS/DATASET/PROFILE; with --wandb, keeps that profile's runs")
    parser.add_argument("--results", default="results", help="root folder of the run dirs (default: results)")
    parser.add_argument("--runs", default=None, metavar="DIR",
                        help="read the run dirs under DIR instead, e.g. results/sweeps/<name>")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where table.md, table.csv and the PNGs go (default: the runs folder)")
    parser.add_argument("--wandb", default=None, metavar="ENTITY/PROJECT",
                        help="read the runs' results from this W&B project instead of run dirs "
                             "(default output: RESULTS/DATASET/wandb-PROJECT)")


def run(args) -> None:
    check_dataset(args.dataset)
    profile = None
    if args.wandb:
        profile = None if args.profile == "auto" else args.profile
        # nothing is read from disk; this folder only names where the tables go (unless --out)
        runs_dir = Path(args.results) / args.dataset / f"wandb-{args.wandb.split('/')[-1]}"
    elif args.runs:
        runs_dir = Path(args.runs)
    else:
        from .profiles import resolve_profile

        runs_dir = Path(args.results) / args.dataset / resolve_profile(args.profile, args.dataset)
    out_dir = Path(args.out) if args.out else runs_dir
    tables = write_tables(args.dataset, runs_dir, out_dir, args.wandb, profile)
    from .plots import write_plots

    plots = write_plots(args.dataset, runs_dir, out_dir, runs=tables["runs"])
    print(tables["markdown"].read_text())
    if tables["unfinished"]:
        print(f"unfinished (no result.json, skipped): {', '.join(tables['unfinished'])}", file=sys.stderr)
    for path in (tables["markdown"], tables["csv"], *plots):
        print(f"wrote {path}", file=sys.stderr)
