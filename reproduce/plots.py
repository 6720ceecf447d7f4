"""Plots next to the tables (matplotlib PNG, Agg), written by `python -m reproduce table`.

- pareto_neurons.png: test perplexity (SQuAD: F1) against the hidden neurons kept, one
  curve per method (its Pareto front), one panel per model scale; the dense model as a line.
- pareto_latency.png: the same against the measured latency (the pruned model's ms per time
  step, batch 1, PyTorch, from speed.json); skipped with a note when no run was measured.
- gate_open_<run>.png: P(z != 0) of every input and hidden gate over training, one heatmap per
  layer and gate kind, for each run with a gate_history.jsonl (the L0 runs).
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

from lightning_modules.atomic import atomic_write_bytes
from lightning_modules.run_dir import GATE_HISTORY_FILE

from .tables import (
    METHOD_NAMES,
    METHOD_ORDER,
    Run,
    collect_runs,
    method_key,
    original_hidden,
    run_speed,
    scale_and_section,
)

# metric, axis label, lower is better
PLOT_METRIC = {"ptb": ("test_ppl", "test perplexity (per word)", True), "squad": ("f1", "F1 on SQuAD dev (%)", False)}
STYLE = {"none": ("black", "s"), "l0": ("tab:red", "o"), "group_lasso": ("tab:blue", "^"),
         "lasso": ("tab:green", "v"), "magnitude": ("tab:purple", "D"), "direct": ("tab:orange", "P")}


def _figure(**kwargs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)  # Agg, no pyplot: no display needed and no global figure state
    return fig


def _save(fig, path: Path) -> Path:
    """Write then rename, like every other output: a reader never sees half a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def pareto_front(points: list[tuple[float, float]], lower_is_better: bool) -> list[tuple[float, float]]:
    """The points no other point beats with fewer-or-equal x, sorted by x."""
    front, best = [], None
    for x, y in sorted(points, key=lambda p: (p[0], p[1] if lower_is_better else -p[1])):
        if best is None or (y < best if lower_is_better else y > best):
            front.append((x, y))
            best = y
    return front


def _points(dataset: str, runs: list[Run], x_of) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{section: {method: [(x, metric), ...]}}, one point per run that has both values."""
    metric = PLOT_METRIC[dataset][0]
    panels: dict[str, dict[str, list]] = {}
    sizes = {}
    for run in runs:
        x, y = x_of(run), (run.result.get("metrics") or {}).get(metric)
        if x is None or not isinstance(y, (int, float)):
            continue
        _, section, size = scale_and_section(dataset, run.result)
        sizes[section] = size
        panels.setdefault(section, {}).setdefault(method_key(run.result), []).append((float(x), float(y)))
    return {s: panels[s] for s in sorted(panels, key=lambda s: (sizes[s], s))}


def _log_scale_if_wide(ax, which: str, values: list[float]) -> None:
    """Log scale where values span more than 4x (latencies, perplexities of heavy pruning), ticks at
    1, 2, 5 times a power of ten, labelled plainly (0.05, not 5x10^-2)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if not values or min(values) <= 0 or max(values) / min(values) <= 4:
        return
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _all_neurons(dataset: str, runs: list[Run]) -> dict[str, tuple[int, str]]:
    """{section: (hidden neurons of the unpruned model, label)}, the right end of the neurons axis."""
    out = {}
    for run in runs:
        hidden = original_hidden(run.result)
        if hidden:
            out[scale_and_section(dataset, run.result)[1]] = (sum(hidden), f"unpruned ({sum(hidden)} neurons)")
    return out


def _dense_latency(dataset: str, runs: list[Run]) -> dict[str, tuple[float, str]]:
    """{section: (median latency of the dense model, label)}: every speed.json times the dense model
    beside the pruned one, so the dense reference exists even without a speed.json of its own."""
    import statistics

    found: dict[str, list[float]] = {}
    for run in runs:
        dense = (run_speed(run)[0] or {}).get("dense_latency_b1_ms")
        if dense is not None:
            found.setdefault(scale_and_section(dataset, run.result)[1], []).append(dense)
    return {s: (statistics.median(v), f"dense model ({statistics.median(v):.3g} ms)") for s, v in found.items()}


def _pareto_plot(dataset: str, panels: dict, xlabel: str, title: str, log_x: bool, path: Path,
                 reference_x: dict[str, tuple[float, str]] | None = None) -> Path:
    _, ylabel, lower = PLOT_METRIC[dataset]
    fig = _figure(figsize=(5.2 * len(panels) + 1.0, 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (section, methods) in zip(axes, panels.items()):
        ys = [y for pts in methods.values() for _, y in pts]
        for method in sorted(methods, key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99):
            color, marker = STYLE.get(method, ("tab:gray", "x"))
            pts = methods[method]
            name = METHOD_NAMES.get(method, method)
            if method == "none":  # the reference every pruned model is judged against
                mean_y = sum(y for _, y in pts) / len(pts)
                ax.axhline(mean_y, color=color, linestyle="--", linewidth=1, label=f"{name} ({mean_y:.1f})")
                ax.scatter(*zip(*pts), color=color, marker=marker, zorder=3)
                continue
            front = pareto_front(pts, lower)
            ax.plot(*zip(*front), color=color, marker=marker, label=f"{name} ({len(pts)} run{'s' * (len(pts) > 1)})")
            rest = [p for p in pts if p not in front]
            if rest:  # dominated runs: hollow markers, so every run stays visible
                ax.scatter(*zip(*rest), facecolors="none", edgecolors=color, marker=marker)
        xs = [x for pts in methods.values() for x, _ in pts]
        if section in (reference_x or {}):
            x, text = reference_x[section]
            ax.axvline(x, color="gray", linestyle=":", linewidth=1, label=text)
            xs.append(x)
        if log_x:
            _log_scale_if_wide(ax, "x", xs)
        _log_scale_if_wide(ax, "y", ys)
        ax.margins(x=0.06, y=0.1)  # no marker on the frame
        ax.set_title(f"{dataset.upper()} {section}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel + ("  (lower is better)" if lower else "  (higher is better)"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def _hidden_kept_total(run: Run) -> int | None:
    hidden = (run.result.get("neurons_kept") or {}).get("hidden")
    return sum(hidden) if isinstance(hidden, list) and hidden else None


def _latency(run: Run) -> float | None:
    speed, _ = run_speed(run)
    return (speed or {}).get("latency_b1_ms")


# ---- gate history --------------------------------------------------------------------------

def read_gate_history(path: Path) -> list[dict]:
    """Lines of gate_history.jsonl, one per step (a resumed run repeats steps: the last line wins)."""
    by_step = {}
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short while training is still writing
        if isinstance(entry, dict) and isinstance(entry.get("step"), int):
            by_step[entry["step"]] = entry
    return [by_step[s] for s in sorted(by_step)]


def gate_plot(run: Run, history: list[dict], path: Path) -> Path:
    import numpy as np

    steps = [h["step"] for h in history]
    # column i shows the probabilities recorded at steps[i], i.e. after the updates since steps[i-1]
    edges = np.array([steps[0] - 1 if steps[0] <= 0 else 0, *steps], dtype=float)
    layers = max(len(history[-1].get("input") or []), len(history[-1].get("hidden") or []))
    fig = _figure(figsize=(11, 3.4 * layers + 0.6), layout="constrained")
    axes = fig.subplots(layers, 2, squeeze=False)
    kept = run.result.get("neurons_kept") or {}
    image = None
    for k in range(layers):
        for col, kind in enumerate(("input", "hidden")):
            ax = axes[k][col]
            per_step = [h.get(kind) or [] for h in history]
            if any(len(p) <= k for p in per_step) or len({len(p[k]) for p in per_step}) != 1:
                ax.set_axis_off()
                ax.set_title(f"layer {k}, {kind} gates: not recorded")
                continue
            probs = np.array([p[k] for p in per_step], dtype=float).T  # neurons x steps
            probs = probs[np.argsort(-probs[:, -1], kind="stable")]  # kept neurons on top
            n = probs.shape[0]
            image = ax.pcolormesh(edges, np.arange(n + 1), probs, vmin=0.0, vmax=1.0, cmap="viridis")
            ax.invert_yaxis()
            counts = kept.get(kind) or []
            count = counts[k] if len(counts) > k else None
            if count is not None and kind == "hidden":
                # hidden neurons are kept exactly by their own gate, so they are the top `count` rows
                ax.axhline(count, color="white", linestyle="--", linewidth=1)
            if count is not None:
                where = f"kept {count} of {n}"
            else:  # a result.json without neurons_kept: say what the probabilities alone show
                where = f"{int((probs[:, -1] > 0.5).sum())} of {n} at P>0.5"
            ax.set_title(f"layer {k}, {kind} gates: {where}")
            ax.set_xlabel("training step (optimizer updates)")
            ax.set_ylabel("neuron (sorted by final P)")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="P(z ≠ 0), gate open probability", shrink=0.9)
    lam = run.result.get("lambda")
    lam_text = f", λ = {lam:g}" if isinstance(lam, (int, float)) else ""
    method = METHOD_NAMES.get(method_key(run.result), "?")
    fig.suptitle(f"run {run.name}: gate-open probability per neuron over training ({method}{lam_text}; "
                 "'kept' = neurons left after export)")
    return _save(fig, path)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# ---- entry point ---------------------------------------------------------------------------------

def write_plots(dataset: str, runs_dir: Path, out_dir: Path | None = None, runs: list[Run] | None = None) -> list[Path]:
    """Write the Pareto plots and the gate plots of the finished runs of runs_dir into out_dir.

    `runs` (e.g. read from W&B by write_tables) replaces reading runs_dir.
    """
    runs_dir = Path(runs_dir)
    out_dir = Path(out_dir) if out_dir is not None else runs_dir
    if runs is None:
        runs, _ = collect_runs(dataset, runs_dir)
    written = []
    panels = _points(dataset, runs, _hidden_kept_total)
    if panels:
        written.append(_pareto_plot(dataset, panels, "hidden neurons kept (sum over layers)",
                                    "Accuracy against model size: each method's Pareto front",
                                    False, out_dir / "pareto_neurons.png", _all_neurons(dataset, runs)))
    dense_ms = _dense_latency(dataset, runs)

    def latency(run: Run) -> float | None:
        own = _latency(run)
        if own is None and method_key(run.result) == "none":  # timed beside every pruned model
            own = dense_ms.get(scale_and_section(dataset, run.result)[1], (None,))[0]
        return own

    panels = _points(dataset, runs, latency)
    if panels:
        written.append(_pareto_plot(dataset, panels, "latency, ms per time step (batch 1, PyTorch)",
                                    "Accuracy against measured latency: each method's Pareto front",
                                    True, out_dir / "pareto_latency.png", dense_ms))
    else:
        print("pareto_latency.png skipped: no run has a measured latency (speed.json; "
              "run python -m reproduce speed first)", file=sys.stderr)
    for run in runs:
        path = run.run_dir / GATE_HISTORY_FILE if run.run_dir else None
        if path is None or not path.is_file():
            continue
        history = read_gate_history(path)
        if history:
            written.append(gate_plot(run, history, out_dir / f"gate_open_{_safe_name(run.name)}.png"))
    return written
