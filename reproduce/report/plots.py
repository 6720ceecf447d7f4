"""Plots of a set of runs (matplotlib PNG, Agg), rendered from the rows of reproduce/report/rows.py.

- pareto_flops.png: test perplexity (SQuAD: F1) against the FLOPs per token (per question) of
  the pruned model, one front per method label, one panel per model scale.
- pareto_latency.png: the same against the measured latency (the pruned model's ms per time
  step, batch 1, PyTorch, from speed.json); skipped with a note when no run was measured.
- pareto_neurons.png: the same against the hidden neurons kept.
- gate_open_<run>.png: P(z != 0) of every input and hidden gate over training, one heatmap per
  layer and gate kind, for each run with a gate_history.jsonl (the gated runs).

A point is one experiment (a table row: runs that differ only in their seed): the mean over
its seeds, with error bars of one sample std on both axes and every seed's own point drawn
small and faint beside it, so the seeds' spread is visible. A front joins the experiments of
one label that no other experiment of that label beats with fewer-or-equal x (on the means, as
the tables' fronts); dominated experiments are drawn hollow, so every run stays visible. The
dense reference is a dashed horizontal line (its seeds' ± 1 std a band).
"""

from __future__ import annotations

import io
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from lightning_modules.atomic import atomic_write_bytes
from lightning_modules.run_dir import RESULT_FILE, SPEED_FILE

from .fronts import FRONT_METRIC, pareto_front
from .rows import Row
from .runs import Run, flops_after, flops_before, gate_history

# metric, axis label, lower is better
_YLABEL = {"ptb": "test perplexity (per word)", "squad": "F1 on SQuAD dev (%)"}
PLOT_METRIC = {d: (metric, _YLABEL[d], lower) for d, (metric, lower) in FRONT_METRIC.items()}
COLORS = ("black", "tab:red", "tab:blue", "tab:purple", "tab:green", "tab:orange", "tab:brown", "tab:pink",
          "tab:olive", "tab:cyan", "tab:gray")
MARKERS = ("s", "o", "^", "D", "v", "P", "X", "<", ">", "*", "h")


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


class Styles:
    """One colour and marker per method label, the same in every plot of one output folder; labels
    in reading order (the rows' method rank). A fine-tuned label's front is dashed."""

    def __init__(self, rows: list[Row]) -> None:
        first: dict[str, Row] = {}
        for row in sorted(rows, key=lambda r: r.rank):
            first.setdefault(row.label, row)
        self.order = list(first)
        self.reference = {label for label, row in first.items() if row.reference}
        self.fine_tuned = {label for label, row in first.items() if row.fine_tuned}

    def of(self, label: str) -> tuple[str, str, str]:
        i = self.order.index(label)
        return COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)], "--" if label in self.fine_tuned else "-"


Point = tuple[float, float]
Panels = dict[str, dict[str, list[list[Point]]]]


def _points(dataset: str, rows: list[Row], x_of: Callable[[Run, Row], float | None]) -> Panels:
    """{section: {label: [[(x, metric) of each seed], ...]}}: per label one list per experiment
    (a row), one point per run that has both values."""
    metric = PLOT_METRIC[dataset][0]
    panels: dict[str, dict[str, list]] = {}
    sizes = {}
    for row in rows:
        seeds = []
        for run in row.runs:
            x, y = x_of(run, row), (run.result.get("metrics") or {}).get(metric)
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                seeds.append((float(x), float(y)))
        if not seeds:
            continue
        sizes[row.section] = row.size
        panels.setdefault(row.section, {}).setdefault(row.label, []).append(seeds)
    return {s: panels[s] for s in sorted(panels, key=lambda s: (sizes[s], s))}


def _mean(points: list[Point]) -> Point:
    return statistics.fmean(x for x, _ in points), statistics.fmean(y for _, y in points)


def _spread(ax, seeds: list[Point], color: str, marker: str) -> None:
    """An experiment's seeds: error bars of one sample std around their mean, and each seed's point."""
    if len(seeds) < 2:
        return
    x, y = _mean(seeds)
    ax.errorbar([x], [y], xerr=[statistics.stdev(p[0] for p in seeds)], yerr=[statistics.stdev(p[1] for p in seeds)],
                fmt="none", ecolor=color, elinewidth=1, capsize=3, zorder=2)
    ax.scatter(*zip(*seeds), color=color, marker=marker, s=10, alpha=0.35, linewidths=0, zorder=1)


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


def _by_section(rows: list[Row], value: Callable[[Run], float | None]) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for row in rows:
        for run in row.runs:
            v = value(run)
            if isinstance(v, (int, float)):
                found.setdefault(row.section, []).append(float(v))
    return found


def _unpruned_neurons(rows: list[Row]) -> dict[str, tuple[float, str]]:
    """{section: (hidden neurons of the unpruned model, label)}, the right end of the neurons axis."""
    found = _by_section(rows, lambda r: sum(r.original_hidden) if r.original_hidden else None)
    return {s: (max(v), f"unpruned ({max(v):.0f} neurons)") for s, v in found.items()}


def _unpruned_flops(rows: list[Row]) -> dict[str, tuple[float, str]]:
    # the largest model of a section is the unpruned one (a direct design starts small)
    found = _by_section(rows, flops_before)
    return {s: (max(v), f"unpruned ({_si(max(v))})") for s, v in found.items()}


def _si(value: float) -> str:
    """300k, 5.3M: as the FLOPs axis writes its ticks."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _dense_latency(rows: list[Row]) -> dict[str, tuple[float, str]]:
    """{section: (median latency of the dense model, label)}: every speed.json times the dense model
    beside the pruned one, so the dense reference exists even without a speed.json of its own."""
    found = _by_section(rows, lambda r: (r.speed or {}).get("dense_latency_b1_ms"))
    return {s: (statistics.median(v), f"dense model ({statistics.median(v):.3g} ms)") for s, v in found.items()}


def pareto_figure(dataset: str, panels: Panels, styles: Styles, xlabel: str, title: str,
                  reference_x: dict[str, tuple[float, str]], engineering_x: bool = False):
    """One panel per section: per label its front through the experiments' means as a line, its
    dominated experiments as hollow markers, every experiment's seed spread around its mean."""
    _, ylabel, lower = PLOT_METRIC[dataset]
    fig = _figure(figsize=(5.2 * len(panels) + 1.0, 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (section, labels) in zip(axes, panels.items()):
        ys = [y for groups in labels.values() for seeds in groups for _, y in seeds]
        xs = [x for groups in labels.values() for seeds in groups for x, _ in seeds]
        for label in sorted(labels, key=styles.order.index):
            color, marker, linestyle = styles.of(label)
            groups = labels[label]
            n = sum(len(seeds) for seeds in groups)
            n_runs = f"{n} run{'s' * (n > 1)}"
            if label in styles.reference:  # the line every pruned model is judged against
                pts = [p for seeds in groups for p in seeds]
                mean_y = statistics.fmean(y for _, y in pts)
                ax.axhline(mean_y, color=color, linestyle="--", linewidth=1, label=f"{label} ({mean_y:.1f})")
                if len(pts) > 1:
                    std = statistics.stdev(y for _, y in pts)
                    ax.axhspan(mean_y - std, mean_y + std, color=color, alpha=0.08, linewidth=0)
                ax.scatter(*zip(*pts), color=color, marker=marker, zorder=3)
                continue
            means = [_mean(seeds) for seeds in groups]
            front = pareto_front(means, lower)
            ax.plot(*zip(*front), color=color, marker=marker, linestyle=linestyle, label=f"{label} ({n_runs})")
            rest = [p for p in means if p not in front]
            if rest:
                ax.scatter(*zip(*rest), facecolors="none", edgecolors=color, marker=marker)
            for seeds in groups:
                _spread(ax, seeds, color, marker)
        if section in reference_x:
            x, text = reference_x[section]
            ax.axvline(x, color="gray", linestyle=":", linewidth=1, label=text)
            xs.append(x)
        _log_scale_if_wide(ax, "x", xs)
        _log_scale_if_wide(ax, "y", ys)
        if engineering_x:  # FLOPs: 300k, 5.3M rather than 300000 or 3e+05
            from matplotlib.ticker import EngFormatter

            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.margins(x=0.06, y=0.1)  # no marker on the frame
        ax.set_title(f"{dataset.upper()} {section}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel + ("  (lower is better)" if lower else "  (higher is better)"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def _hidden_kept_total(run: Run, row: Row | None = None) -> int | None:
    hidden = (run.result.get("neurons_kept") or {}).get("hidden")
    return sum(hidden) if isinstance(hidden, list) and hidden else None


# ---- gate history --------------------------------------------------------------------------

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
    fig.suptitle(f"run {run.name}: gate-open probability per neuron over training ({run.label}{lam_text}; "
                 "'kept' = neurons left after export)")
    return _save(fig, path)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# ---- entry point ---------------------------------------------------------------------------------

def latency_of(rows: list[Row], dense_ms: dict[str, tuple[float, str]] | None = None
               ) -> Callable[[Run, Row], float | None]:
    """A run's batch-1 time for the latency plot: one dense reference per scale (the median of
    the dense times every speed.json holds; `dense_ms` if the caller has it) divided by the run's
    paired speedup, rather than each run's own absolute time. Separate speed runs drift by ~10 %
    in absolute terms, the back-to-back ratios do not, and the tables' fronts use the same ratios."""
    dense_ms = _dense_latency(rows) if dense_ms is None else dense_ms

    def latency(run: Run, row: Row) -> float | None:
        dense = dense_ms.get(row.section, (None,))[0]
        b1 = 1.0 if row.reference else (run.speed or {}).get("b1")
        if dense and isinstance(b1, (int, float)) and b1 > 0:
            return dense / b1
        return (run.speed or {}).get("latency_b1_ms")

    return latency


def write_plots(dataset: str, rows: list[Row], out_dir: Path) -> list[Path]:
    """Write the Pareto plots and the gate plots of the rows' runs into out_dir; returns the files written."""
    out_dir = Path(out_dir)
    styles = Styles(rows)
    flops = "FLOPs per question" if dataset == "squad" else "FLOPs per token"
    dense_ms = _dense_latency(rows)
    latency = latency_of(rows, dense_ms)

    plots = [  # file, x of a run, x label, title, reference line, what is missing when no run has x, FLOPs
        ("pareto_flops.png", lambda run, row: flops_after(run), f"{flops} after pruning",
         f"Accuracy against {flops}: each method's Pareto front", _unpruned_flops(rows),
         f"no run has flops_per_token in {RESULT_FILE}", True),
        ("pareto_latency.png", latency, "latency, ms per time step (batch 1, PyTorch; dense / measured speedup)",
         "Accuracy against measured latency: each method's Pareto front", dense_ms,
         f"no run has a measured latency ({SPEED_FILE}; run python -m reproduce speed first)", False),
        ("pareto_neurons.png", _hidden_kept_total, "hidden neurons kept (sum over layers)",
         "Accuracy against model size: each method's Pareto front", _unpruned_neurons(rows),
         f"no run has neurons_kept in {RESULT_FILE}", False),
    ]
    written = []
    for name, x_of, xlabel, title, reference, missing, engineering_x in plots:
        panels = _points(dataset, rows, x_of)
        if panels:
            fig = pareto_figure(dataset, panels, styles, xlabel, title, reference, engineering_x)
            written.append(_save(fig, out_dir / name))
        else:
            print(f"{name} skipped: {missing}", file=sys.stderr)
    for run in (run for row in rows for run in row.runs):
        history = gate_history(run)
        if history:
            written.append(gate_plot(run, history, out_dir / f"gate_open_{_safe_name(run.name)}.png"))
    return written
