"""Runs resolved once into typed table rows: what every renderer (tables, plots) reads of a run.

Runs that differ only in their seed form one row (runs.group_runs says what "only" allows). A row
knows its model scale and section, whether it is the dense reference, its method's properties and
its seed group (`runs`), so that no renderer works these out again from a run. Its numbers are
`Stat`s over the seeds; its reported counterparts come from reproduce/report/reported.yaml (same
model scale and method).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from lightning_modules.errors import UserError
from lightning_modules.run_dir import SPEED_FILE

from .runs import (
    BIDAF_PAPER_HIDDEN,
    SCALES,
    Run,
    flops_after,
    flops_before,
    group_runs,
    is_reference,
    method_rank,
    neurons,
    scale_and_section,
    size_scale,
    source_run_name,
    trained_in_tf32,
)

METRICS = {"ptb": ("val_ppl", "test_ppl"), "squad": ("em", "f1")}
REFERENCE_NOTE = "the dense model is the reference of every speedup"


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


@dataclass(frozen=True)
class SeedRun:
    """One seed of a row: its own numbers, for the noise tests and the per-seed fronts."""
    seed: object
    flops: float | None
    metrics: dict


@dataclass
class Row:
    """One experiment (a table row): its runs, one per seed, and what they are."""
    id: str  # rN, in reading order
    runs: list[Run]
    section: str
    size: int  # the section's sort key
    scale: str | None  # the registry's model name, or None
    method: str | None
    label: str
    rank: tuple
    gated: bool
    reference: bool
    fine_tuned: bool
    from_scratch: bool
    lam: float | None
    target: str
    seeds: list
    names: list[str]
    run_dirs: list[str]
    commands: list[str]
    trained_on: list[str]  # each distinct hardware line of result["hardware"]
    commits: list[str | None]  # per run
    cpus: list[str | None]  # per run: the CPU model it trained on, where recorded
    hidden_total: list | None
    hidden_kept: list[Stat] | None
    input_kept: list[Stat] | None
    params: Stat
    flops: Stat  # per token (PTB) or per question (SQuAD) of the pruned model
    speedup_flops: Stat
    speedup_b1: Stat
    speedup_b20: Stat
    latency_b1_ms: Stat
    int8_test_ppl: Stat
    int8_b1: Stat
    int8_b20: Stat
    speed_note: str | None
    eval_note: str | None
    metrics: dict[str, Stat]
    per_run: list[SeedRun]
    unpruned_flops: float | None  # of the model it was pruned from (a direct design: its own, small, one)
    reported: list[dict] = field(default_factory=list)

    def samples(self, metric: str) -> list[float]:
        """The seeds' values of a metric, those recorded."""
        return numbers(r.metrics.get(metric) for r in self.per_run)

    @property
    def shape(self) -> tuple | None:
        """The model shape (kept neurons per layer), or None when the seeds differ in size."""
        layers = [*(self.hidden_kept or []), *(self.input_kept or [])]
        if not self.hidden_kept or any(s.std for s in layers):
            return None
        return tuple(s.mean for s in self.hidden_kept), tuple(s.mean for s in self.input_kept or [])


@dataclass(frozen=True)
class NotRun:
    """A reported entry no row matches, with the section it would sit in."""
    entry: dict
    section: str
    size: int


def run_speed(run: Run) -> tuple[dict | None, str | None]:
    """Measured speedups of a run and a note; unstructured sparsity removes no neuron, so no speedup."""
    r = run.result
    kept, total = r.get("neurons_kept"), r.get("neurons_total")
    if is_reference(run):
        return {**(run.speed or {}), "b1": 1.0, "b20": 1.0}, REFERENCE_NOTE
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


def cpu_of(run: Run) -> str | None:
    """The CPU model a run trained on: its hardware line's (timing.hardware_summary), else, for a
    result written before that line named it, the CPU its speed.json was measured on, said so."""
    hardware = str(run.result.get("hardware") or "")
    if " CPU cores, torch " in hardware and "torch threads" not in hardware:
        return hardware.split(",")[0]
    speed_cpu = (run.speed or {}).get("cpu")
    return f"{speed_cpu} ({SPEED_FILE}'s)" if speed_cpu else None


def _per_layer(lists: list) -> list[Stat] | None:
    lists = [x for x in lists if x is not None]
    if not lists or len({len(x) for x in lists}) != 1:
        return None
    return [stat(layer) for layer in zip(*lists)]


def make_row(dataset: str, runs: list[Run], where: str, row_id: str = "") -> Row:
    """One table row from the runs of one experiment (one per seed); `where` names their folder."""
    first = runs[0]
    scale, section, size = scale_and_section(dataset, first)
    speeds = [run_speed(run) for run in runs]

    def speed_stat(key: str) -> Stat:
        return stat([(s or {}).get(key) for s, _ in speeds])

    def metric(run: Run, name: str):
        return (run.result.get("metrics") or {}).get(name)

    b1 = speed_stat("b1")
    note = next((n for _, n in speeds if n), None)
    if 0 < b1.n < len(runs):
        note = f"speed measured for {b1.n} of {len(runs)} seeds"
    return Row(
        id=row_id, runs=runs, section=section, size=size, scale=scale, method=first.result.get("method"),
        # a TF32 control (issue 30) is its own row, named so
        label=first.label + (" TF32" if trained_in_tf32(first.result) else ""), rank=method_rank(first),
        gated=bool(first.properties.get("gated")),
        reference=is_reference(first), fine_tuned=bool(first.properties.get("fine_tuned")),
        from_scratch=not first.hparams.get("sizes_from"), lam=first.result.get("lambda"), target=target_of(first),
        seeds=[run.result.get("seed") for run in runs], names=[run.name for run in runs],
        run_dirs=[f"{where}/{run.name}" if run.run_dir else f"wandb:{run.name}" for run in runs],
        commands=[run.result.get("command") or "" for run in runs],
        trained_on=list(dict.fromkeys(str(run.result["hardware"]) for run in runs if run.result.get("hardware"))),
        commits=[run.result.get("git_commit") for run in runs], cpus=[cpu_of(run) for run in runs],
        hidden_total=neurons(first.result, "neurons_total", "hidden"),
        hidden_kept=_per_layer([neurons(run.result, "neurons_kept", "hidden") for run in runs]),
        input_kept=_per_layer([neurons(run.result, "neurons_kept", "input") for run in runs]),
        params=stat([(run.result.get("params") or {}).get("after") for run in runs]),
        flops=stat([flops_after(run) for run in runs]),
        speedup_flops=stat([run.result.get("speedup_flops") for run in runs]),
        speedup_b1=b1, speedup_b20=speed_stat("b20"), latency_b1_ms=speed_stat("latency_b1_ms"),
        int8_test_ppl=speed_stat("int8_test_ppl"), int8_b1=speed_stat("int8_b1"), int8_b20=speed_stat("int8_b20"),
        speed_note=note,
        # e.g. a SQuAD smoke run that trained on dev articles, or on random word vectors: said loudly above the table
        eval_note=next((ev.get("note") for ev in ((run.result.get("evaluation") or {}) for run in runs)
                        if ev.get("train_on_dev") or ev.get("random_word_vectors")), None),
        metrics={m: stat([metric(run, m) for run in runs]) for m in METRICS[dataset]},
        per_run=[SeedRun(run.result.get("seed"), flops_after(run), {m: metric(run, m) for m in METRICS[dataset]})
                 for run in runs],
        unpruned_flops=max(numbers(flops_before(run) for run in runs), default=None))


def matches(entry: dict, row: Row) -> bool:
    """Same method and the same model scale where the registry names one (SQuAD's do not). A model
    trained at another run's sizes is not the registry's model of that scale."""
    return (entry.get("method") == row.method and row.from_scratch
            and (entry.get("model") is None or entry.get("model") == row.scale))


def reported_section(dataset: str, entry: dict) -> tuple[str, int]:
    """Section title and sort key of a reported entry that no run matched (same titles as the runs')."""
    if dataset == "squad":
        return f"BiDAF (hidden {BIDAF_PAPER_HIDDEN}, paper scale)", 0
    model = entry.get("model")
    hidden = next((h for h, name in SCALES.items() if name == model), None)
    return (f"{model} (2x{hidden})", hidden) if hidden else (str(model), 10**9)


def build_rows(dataset: str, runs: list[Run], reported: list[dict], where: str = ".",
               scales: tuple[str, ...] | None = None) -> tuple[list[Row], list[NotRun], list[Run]]:
    """(rows with their reported counterparts and ids, reported entries that no row matches, the
    runs kept). `scales` (PTB): only the runs and reported entries of those model scales."""
    if scales:
        runs = [r for r in runs if size_scale(r) in scales]
        reported = [e for e in reported if e.get("model") in scales]
    rows = [make_row(dataset, group, where) for group in group_runs(runs)]
    rows.sort(key=lambda r: (r.size, r.section, r.rank, r.lam if is_number(r.lam) else 0, r.names))
    for i, row in enumerate(rows, 1):
        row.id = f"r{i}"
        row.reported = [e for e in reported if matches(e, row)]
    matched = {e["id"] for row in rows for e in row.reported}
    not_run = [NotRun(e, *reported_section(dataset, e)) for e in reported if e["id"] not in matched]
    return rows, not_run, runs
