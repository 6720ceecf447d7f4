"""Reading finished runs into plain records: the one reader behind tables, plots and records.

A run comes from a run dir (results/<dataset>/<profile>/<run>/, a sweep's folder, or a
committed records folder such as reproduce/measured/ptb_small/<run>/) or from the summary of
a W&B run. Everything the renderers need is read here, once: result.json, speed.json, the
gate history and, for results that lack fields, config.yaml. Nothing here draws or formats,
and nothing here branches on a method name: what a method is comes from
result["method_properties"] (lightning_modules.pruning.pruning_methods.method_properties).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lightning_modules.errors import UserError
from lightning_modules.run_dir import CONFIG_FILE, EXPORT_DIR, GATE_HISTORY_FILE, RESULT_FILE, SPEED_FILE

BIDAF_PAPER_HIDDEN = 100  # Seo et al.; the registry's SQuAD entries are all at this scale ("model: paper")
SCALES = {200: "small", 650: "medium", 1500: "large"}  # Zaremba's hidden sizes name the registry's models


@dataclass
class Run:
    """One finished run. `run_dir` is None for a run read from W&B (no speed.json, no gate history)."""
    name: str
    result: dict
    run_dir: Path | None = None
    properties: dict = field(default_factory=dict)  # result["method_properties"], or computed for old results
    speed: dict | None = None  # read_speed(): speedups and batch-1 latencies; None if not measured
    original_hidden: list | None = None  # hidden sizes of the model it started from (a direct design: its source's)

    def __post_init__(self) -> None:
        # a Run built by hand (make_run is the reader's way) still has a label and a size
        if not self.properties:
            self.properties = method_properties_of(self.result)
        if self.original_hidden is None:
            self.original_hidden = _original_hidden(self.result, {})

    @property
    def label(self) -> str:
        return self.properties["label"]

    @property
    def hparams(self) -> dict:
        return self.result.get("model_hparams") or {}

    def file(self, name: str) -> Path | None:
        """A file of the run dir (a run_dir.py name), or None where there is none."""
        path = self.run_dir / name if self.run_dir is not None else None
        return path if path is not None and path.is_file() else None


def make_run(name: str, result: dict, run_dir: Path | None = None, siblings: dict[str, dict] | None = None) -> Run:
    """A Run with its derived fields; `siblings` are the results of the same folder by run name
    (the source of a direct design is looked up there first, so a moved folder reads the same)."""
    result = with_model_hparams(result, run_dir) if run_dir is not None else result
    speed = read_speed(run_dir) or squad_latency(result)
    return Run(name, result, Path(run_dir) if run_dir is not None else None, method_properties_of(result), speed,
               _original_hidden(result, siblings or {}))


# ---- what a method is ------------------------------------------------------------------------

def method_properties_of(result: dict) -> dict:
    """result["method_properties"]; results written before it existed get it computed from their
    model_hparams. That needs lightning_modules.pruning.pruning_methods, which imports torch, so it is
    imported only here and only for such results: reading new runs stays torch-free."""
    props = result.get("method_properties")
    if isinstance(props, dict) and isinstance(props.get("label"), str):
        return props
    method = result.get("method")
    hparams = {**(result.get("model_hparams") or {}), "method": method}
    try:
        from lightning_modules.pruning.pruning_methods import method_properties

        return method_properties(hparams)
    except (UserError, KeyError, TypeError):
        # an unknown or missing method: the name is all there is to show; nothing is assumed of it
        return {"label": str(method or "?"), "gated": False, "zeroes_weights": False, "structured": True,
                "fine_tuned": False}


def is_reference(run: Run) -> bool:
    """The dense model every speedup is relative to: nothing gates, zeroes or resizes its neurons."""
    p = run.properties
    return not p.get("gated") and not p.get("zeroes_weights") and not run.hparams.get("sizes_from")


def method_rank(run: Run) -> tuple:
    """Reading order of the methods: the dense reference, gates (the paper's method), structured
    then unstructured sparsity, then the rest (the direct design); a fine-tuned variant after its
    method. A tuple, so that equal ranks fall back to the label."""
    p = run.properties
    if is_reference(run):
        kind = 0
    elif p.get("gated"):
        kind = 1
    elif p.get("zeroes_weights"):
        kind = 2 if p.get("structured") else 3
    else:
        kind = 4
    # the method before fine_tuned: ISS fine-tuned sits under ISS, not after magnitude pruning
    return kind, str(run.result.get("method")), bool(p.get("fine_tuned")), run.label


def source_run_name(path: str) -> str:
    """The run named by a sizes_from / init_from setting (a result.json, a run dir or its export/)."""
    p = Path(path)
    return p.parent.name if p.suffix == ".json" or p.name == EXPORT_DIR else p.name


# ---- experiments: runs that differ only in their seed ---------------------------------------------

SEED_SUFFIX = re.compile(r"_seed\d+$")
# model settings of how a step is computed or what is logged, not of what is trained: one experiment
# whichever a seed ran with (step_impl fused computes the eager step's numbers; the device a seed
# trained on is listed with the row instead)
NOT_THE_EXPERIMENT = ("step_impl", "gate_history_every")
# settings only a gated model reads (lightning_modules/task_base.py, lm/lm_task.py): a model without
# gates trained the same whatever they say. The default log_alpha_init_mean moved from 1 to 3 between
# the small dense run of seed 1 and its later seeds.
GATE_SETTINGS = ("gate_beta", "gate_gamma", "gate_zeta", "log_alpha_init_mean", "log_alpha_init_std",
                 "log_alpha_range", "gates_freeze_epoch", "gate_update", "gate_lr", "inner_input_gates")


def _source_experiment(path) -> str | None:
    """The run a sizes_from / init_from setting names, as an experiment: its run name without a
    `_seed<N>` suffix. A seed's fine-tuning starts from the dense run of its own seed
    (init_from .../dense_seed2), the direct design of every seed takes seed 1's sizes through
    whatever path that record had on its machine (results/... or reproduce/measured/...)."""
    return SEED_SUFFIX.sub("", source_run_name(path)) if isinstance(path, str) and path else None


def trained_in_tf32(result: dict) -> bool:
    """Whether a run's matmuls and cuDNN kernels ran in TF32: result.json's `precision` (issue 30), or the
    `tf32` of a packed run recorded before it. fp32 and records without the field are one precision."""
    return (result.get("precision") or {}).get("precision") == "tf32" or result.get("tf32") is True


def experiment_key(run: Run) -> tuple[str, dict]:
    """(what two seeds of one experiment must share exactly, model settings they must agree on
    where both record them).

    The settings are compared only where both runs have them because result.json records every
    model setting of the code that trained it: a seed trained after a setting was added (e.g.
    step_impl) records it, the seed trained before it does not, and both trained the same model.
    Settings that do not change what is trained are left out (NOT_THE_EXPERIMENT; GATE_SETTINGS
    of a run without gates). A config file is named by its file name: the same config given by
    another path (another checkout, an absolute path) is the same experiment."""
    r = run.result
    ignored = {"sizes_from", "init_from", "cell", *NOT_THE_EXPERIMENT,
               *(() if run.properties.get("gated") else GATE_SETTINGS)}
    hp = {k: v for k, v in run.hparams.items() if not k.startswith("_") and k not in ignored}
    config = r.get("config_path")
    configs = [Path(c).name for c in (config if isinstance(config, list) else [config]) if c]
    # the cell is fixed with its default: a result written before model.cell existed is an LSTM's
    fixed = json.dumps([r.get("dataset"), r.get("profile"), r.get("method"), run.label, r.get("lambda"),
                        run.hparams.get("cell") or "lstm",
                        r.get("neurons_total"), r.get("epochs"), r.get("train_tokens"), configs,
                        _source_experiment(run.hparams.get("sizes_from")),
                        _source_experiment(run.hparams.get("init_from")),
                        # a TF32 control is never averaged with the fp32 seeds it is compared to
                        trained_in_tf32(r)], sort_keys=True, default=str)
    return fixed, hp


def seed_order(seed) -> tuple:
    """Sort key of a seed: numbers in numeric order (2 before 10), anything else after them."""
    number = isinstance(seed, (int, float)) and not isinstance(seed, bool)
    return (0, seed, "") if number else (1, 0, str(seed))


def group_runs(runs: list[Run]) -> list[list[Run]]:
    """The runs grouped into experiments (one table row each), each group ordered by seed then
    name, the groups in the order their first run comes in that order."""
    groups: list[tuple[str, dict, list[Run]]] = []
    for run in sorted(runs, key=lambda r: (seed_order(r.result.get("seed")), r.name)):
        fixed, hp = experiment_key(run)
        for group_fixed, group_hp, members in groups:
            if group_fixed == fixed and all(group_hp[k] == v for k, v in hp.items() if k in group_hp):
                # a later seed is checked against every setting any seed of the group recorded
                group_hp.update(hp)
                members.append(run)
                break
        else:
            groups.append((fixed, dict(hp), [run]))
    return [members for _, _, members in groups]


# ---- the model a run started from ----------------------------------------------------------------

def neurons(result: dict, key: str, kind: str) -> list | None:
    value = (result.get(key) or {}).get(kind)
    return list(value) if isinstance(value, (list, tuple)) else None


def _original_hidden(result: dict, siblings: dict[str, dict]) -> list | None:
    """Hidden sizes of the model a run started from; a direct design's are its source run's."""
    own = neurons(result, "neurons_total", "hidden")
    sizes_from = (result.get("model_hparams") or {}).get("sizes_from")
    if not sizes_from:
        return own
    source = siblings.get(source_run_name(sizes_from))
    if source is None:
        try:  # the path recorded at training time; gone on another machine
            source = json.loads(Path(sizes_from).read_text())
        except (OSError, ValueError):
            return own
    return (neurons(source, "neurons_total", "hidden") if isinstance(source, dict) else None) or own


def size_scale(run: Run) -> str | None:
    """The Zaremba scale ("small", "medium", "large") a PTB run's hidden size is, whatever its cell
    (a GRU of 2x200 is small): what `table --scale` keeps. None for other sizes and for SQuAD."""
    hidden = run.original_hidden
    if run.result.get("dataset", "ptb") != "ptb" or not hidden or len(set(hidden)) != 1:
        return None
    return SCALES.get(hidden[0])


def scale_and_section(dataset: str, run: Run) -> tuple[str | None, str, int]:
    """(registry model name or None, section title, sort key) of a run."""
    hidden = run.original_hidden
    if dataset == "squad":
        if hidden and max(hidden) == BIDAF_PAPER_HIDDEN:
            return "paper", f"BiDAF (hidden {BIDAF_PAPER_HIDDEN}, paper scale)", 0
        return None, f"BiDAF (hidden {max(hidden) if hidden else '?'})", 1
    if not hidden:
        return None, "model size not recorded", 10**9
    # Another recurrent cell (a GRU LM) is its own section: its fronts, verdicts and speedups are
    # against its own dense run, and the paper's (LSTM) numbers are not its reference. A result
    # written before model.cell existed is an LSTM's.
    cell = str(run.hparams.get("cell") or "lstm")
    suffix = "" if cell == "lstm" else f", {cell.upper()}"
    if len(set(hidden)) == 1:
        name = size_scale(run)
        shape = f"{len(hidden)}x{hidden[0]}"
        return (name if not suffix else None), (f"{name} ({shape})" if name else shape) + suffix, max(hidden)
    return None, str(hidden) + suffix, max(hidden)


def flops_after(run: Run) -> float | None:
    """FLOPs per token (PTB) or per question (SQuAD) of the pruned model."""
    return (run.result.get("flops_per_token") or run.result.get("flops_per_question") or {}).get("after")


def flops_before(run: Run) -> float | None:
    """The same for the model the run started from (a direct design: its own, smaller, model)."""
    return (run.result.get("flops_per_token") or run.result.get("flops_per_question") or {}).get("before")


# ---- the files of a run dir ---------------------------------------------------------------------

def read_result(path: Path) -> dict:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not readable JSON ({e}); delete it and re-run that run's command") from None
    if not isinstance(result, dict):
        raise UserError(f"{path}: expected a JSON object; delete it and re-run that run's command")
    return result


def with_model_hparams(result: dict, run_dir: Path) -> dict:
    """Runs finished before result.json recorded model_hparams: the run dir's config.yaml (saved by
    LightningCLI at the start of the run) holds the same model settings (sizes_from, targets)."""
    config = Path(run_dir) / CONFIG_FILE
    if result.get("model_hparams") or not config.is_file():
        return result
    import yaml  # only for these old results

    try:
        model = (yaml.safe_load(config.read_text()) or {}).get("model")
    except (OSError, yaml.YAMLError, AttributeError):
        return result  # an unreadable config only costs the table the finer labels
    return {**result, "model_hparams": model} if isinstance(model, dict) else result


def squad_latency(result: dict) -> dict | None:
    """A BiDAF run times its export against the dense model at batch 1 itself (result.json)."""
    timing = result.get("latency_batch1")
    if not isinstance(timing, dict):
        return None
    return {"b1": timing.get("speedup_median"), "b20": None, "latency_b1_ms": timing.get("pruned_median_ms"),
            "dense_latency_b1_ms": timing.get("dense_median_ms")}


def read_speed(run_dir: Path | None) -> dict | None:
    """The measured speedups of `python -m reproduce speed` for one run; None if not measured.

    The only reader of speed.json's layout: speedup = dense time / pruned time of the whole model
    in PyTorch eager on the CPU; latency = median ms per time step at batch 1 of the pruned model
    and of the dense model it was timed against; cpu = the CPU model it was measured on. Where the
    pruned model was also timed in int8 (speed.json["int8"]): its test perplexity in PyTorch and its
    speedup = dense fp32 time / pruned int8 time, whole model, batch 1 and 20.
    """
    if run_dir is None or not (Path(run_dir) / SPEED_FILE).is_file():
        return None
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
             "dense_latency_b1_ms": lookup("latency", "torch", "model", "1", "dense"),
             "int8_test_ppl": lookup("int8", "test_ppl", "torch"),
             "int8_b1": lookup("int8", "speedup", "torch", "model", "1"),
             "int8_b20": lookup("int8", "speedup", "torch", "model", "20")}
    if not any(v is not None for v in speed.values()):
        return None
    cpu = (data.get("hardware") or {}).get("cpu") if isinstance(data.get("hardware"), dict) else None
    return {**speed, "cpu": cpu if isinstance(cpu, str) else None}


def read_gate_history(path: Path) -> list[dict]:
    """Lines of gate_history.jsonl, one per step (a resumed run repeats steps: the last line wins)."""
    by_step = {}
    for line in Path(path).read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short while training is still writing
        if isinstance(entry, dict) and isinstance(entry.get("step"), int):
            by_step[entry["step"]] = entry
    return [by_step[s] for s in sorted(by_step)]


def gate_history(run: Run) -> list[dict]:
    path = run.file(GATE_HISTORY_FILE)
    return read_gate_history(path) if path is not None else []


# ---- folders of runs --------------------------------------------------------------------------

def run_dirs(runs_dir: Path) -> list[Path]:
    """The immediate subfolders of a folder of runs, finished or not (hidden ones are temporary)."""
    return sorted(p for p in Path(runs_dir).iterdir() if p.is_dir() and not p.name.startswith("."))


def load_run_dirs(runs_dir: Path) -> tuple[list[Run], list[str]]:
    """Finished runs of every immediate subfolder, and the names of those without result.json."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: no such folder of run dirs; train first (python -m reproduce profile "
                        "...) or give --runs DIR")
    results, unfinished = {}, []
    for sub in run_dirs(runs_dir):
        if (sub / RESULT_FILE).is_file():
            results[sub.name] = read_result(sub / RESULT_FILE)
        else:
            unfinished.append(sub.name)
    return [make_run(name, result, runs_dir / name, results) for name, result in results.items()], unfinished


def _plain(value):
    """W&B summaries hand back their own dict/list types; the readers want JSON-like values."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_wandb_runs(project: str, profile: str | None = None) -> tuple[list[Run], list[str]]:
    """Runs of a W&B project whose summary holds `result` (what train.py writes there)."""
    if project.count("/") != 1 or not all(project.split("/")):
        raise UserError(f"--wandb {project!r}: give ENTITY/PROJECT, e.g. my-team/neuron-selection")
    import wandb  # only this source needs it

    try:
        api_runs = list(wandb.Api().runs(project))
    except Exception as e:  # auth, network or an unknown project: each ends the command the same way
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"--wandb {project}: cannot list its runs ({reason}); "
                        "check the name and log in (wandb login or WANDB_API_KEY)") from None
    results, unfinished = {}, []
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
            results[name] = result
    return [make_run(name, result, None, results) for name, result in results.items()], unfinished


def collect_runs(dataset: str, runs_dir: Path, wandb_project: str | None = None,
                 profile: str | None = None) -> tuple[list[Run], list[str]]:
    """Finished runs of one dataset (from run dirs, or from W&B), and the unfinished ones' names."""
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
        raise UserError(f"{where}: no finished {dataset} run (a {RESULT_FILE}){pending}; wait for the runs to "
                        "finish or point --runs at a folder of finished run dirs")
    return runs, unfinished


def dataset_of(runs_dir: Path) -> str:
    """The dataset of a folder of runs (its first finished run's; PTB before results recorded it)."""
    first = next((d / RESULT_FILE for d in run_dirs(runs_dir) if (d / RESULT_FILE).is_file()), None)
    if first is None:
        raise UserError(f"{runs_dir}: no finished run (a {RESULT_FILE}) to read")
    return str(read_result(first).get("dataset", "ptb"))


def display_path(path: str | Path) -> str:
    """A folder as the outputs name it: relative to the working directory where it lies below it,
    so that the same command from the repo root writes the same text on every machine."""
    path = Path(path)
    try:
        path = path.resolve().relative_to(Path.cwd().resolve()) if path.is_absolute() else path
    except ValueError:
        pass  # outside the working directory: named as given
    return path.as_posix()


# The profile `auto` stands for: paper on a GPU, else this one (reproduce/orchestrate/profiles.py runs it).
CPU_PROFILE = {"ptb": "small", "squad": "smoke"}


def profile_folder(profile: str, dataset: str) -> str:
    """The folder name of a profile's runs: `auto` is paper where torch sees a GPU, else the CPU profile."""
    if profile != "auto":
        return profile
    import torch

    return "paper" if torch.cuda.is_available() else CPU_PROFILE[dataset]
