"""Measured inference speed of a pruned export against its dense original (`python -m reproduce speed`).

  python -m reproduce speed --export results/ptb/small/l0/export     -> results/ptb/small/l0/speed.json
  python -m reproduce speed --sizes 1500,1500 373,315                -> results/speed/sizes_1500-1500_vs_373-315.json

--export times three models: the dense original (a plain model at the export's
`original_sizes`), the export itself, and a plain dense model built directly at the
export's sizes, the reference the export must match (export/plain >= 0.95: exporting
adds no overhead); all three of the export's cell (LSTM or GRU, its config.json says).
--sizes times plain models of the given sizes (dense, then pruned hidden sizes; --cell),
so that reported sizes can be timed on your hardware without training.

Each model runs whole (token ids -> logits: embedding, RNN stack, decoder; from a zero
state) and as its RNN stack alone (a time-major float input), at each batch size, over
--seq-len time steps, in torch eager and in ONNX Runtime (exported by
lightning_modules/lm/onnx_export.py and checked against torch first), on the CPU, and on the
GPU when there is one. The models of one backend run in turn on every repeat (A B C, B C A,
...: lightning_modules/timing.py, the harness `bench` and the SQuAD export use too) so they see
the same machine state; reported are the median and quartiles in ms per
time step (every batch stream advances one token), and speedups are medians of the ratios
of the back-to-back runs. Weight bytes and the CPU's cache sizes are recorded beside the
FLOPs ratio: at batch 1 every weight is read once per token, so whether the weights fit in
cache, not the FLOPs, sets the time. Run it on an idle machine.

--quantize int8 adds the 8-bit copies of the dense and the pruned model to the same turns
(lightning_modules/lm/quantize.py; torch and ONNX Runtime alike), and for an export its PTB test
perplexity in fp32 and in int8 (both backends), through training's test loop with the run's data
settings: speed.json's int8 block (speed_timing.py says its layout).
"""

# One flow: the command's arguments (here) -> the models, built once (speed_models.py: the export,
# its dense original and plain reference, their ONNX files) -> the timing of those models, and the
# speed.json written from the models, the settings and the times (speed_timing.py).

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lightning_modules.errors import UserError
from lightning_modules.export_folder import EXPORT_CONFIG_FILE
from lightning_modules.lm.quantize import QUANTIZATIONS
from lightning_modules.run_dir import CONFIG_FILE, EXPORT_DIR, ONNX_DIR, RESULT_FILE, SPEED_FILE

from . import speed_timing
from .speed_models import (
    DEFAULT_CELL,
    ExportSpec,
    Models,
    Sizes,
    check_pruned_fits,
    export_models,
    export_spec,
    is_language_model_export,
    read_config,
    sizes_models,
)
from .speed_timing import BACKENDS, Settings, onnxruntime_devices_for

VOCAB_SIZE = 10000  # PTB's, for --sizes
QUICK = {"repeats": 3, "warmup": 1}


# ---- argument types ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rejected:
    """A value an option's type refused, kept for `check_values` to raise as a UserError. argparse
    would print its usage and exit on a bad value; this command's errors are one line, and
    reproduce/__main__.py prints one line for the UserErrors of a command's run()."""
    message: str


def _typed(option: str, convert: Callable[[str], object]) -> Callable[[str], object]:
    """`convert` as the argparse type of `option`: its ValueError becomes a Rejected value."""
    def parse(text: str):
        try:
            return convert(text)
        except ValueError as e:
            return Rejected(f"{option}: {text!r} {e}")
    parse.__name__ = convert.__name__  # argparse names a type by it in its own messages
    return parse


def integer_from(minimum: int) -> Callable[[str], int]:
    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise ValueError(f"is not an integer >= {minimum}")
        return value
    return integer


def hidden_sizes(text: str) -> tuple[int, ...]:
    """'1500,1500' -> (1500, 1500)."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError("is not a comma-separated list of positive integers, e.g. 1500,1500")
    return sizes


def check_values(args) -> None:
    """The first value an argument type refused, as one UserError line."""
    for value in vars(args).values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Rejected):
                raise UserError(item.message)


# ---- command line ------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    positive = integer_from(1)
    what = parser.add_argument_group("what to time (one of)")
    what.add_argument("--export", nargs="+", metavar="EXPORT_DIR",
                      help=f"exported model folders (a run dir's {EXPORT_DIR}/); each writes <run dir>/{SPEED_FILE}")
    what.add_argument("--sizes", nargs="+", metavar="HIDDEN", type=_typed("--sizes", hidden_sizes),
                      help="dense then pruned hidden sizes, comma-separated per model: 1500,1500 373,315")
    parser.add_argument("--embedding-dims", nargs="+", type=_typed("--embedding-dims", positive), metavar="DIM",
                        help="with --sizes: dense and pruned embedding sizes (default: each model's first "
                             "hidden size)")
    parser.add_argument("--cell", default=None,
                        help=f"with --sizes: lstm or gru, the cell of both models (default {DEFAULT_CELL}); an "
                             f"export's cell is in its {EXPORT_CONFIG_FILE}")
    parser.add_argument("--out", help=f"output JSON (default: <run dir>/{SPEED_FILE} for an export, "
                                      "results/speed/sizes_<dense>_vs_<pruned>.json for --sizes)")
    parser.add_argument("--batches", nargs="+", type=_typed("--batches", positive), default=[1, 20],
                        help="batch sizes (default 1 20)")
    parser.add_argument("--seq-len", type=_typed("--seq-len", positive), default=35,
                        help="time steps per forward (default 35)")
    parser.add_argument("--repeats", type=_typed("--repeats", positive), default=30,
                        help="timed runs of each model (default 30)")
    parser.add_argument("--warmup", type=_typed("--warmup", integer_from(0)), default=5,
                        help="untimed runs first (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['repeats']} repeats after {QUICK['warmup']} warm-up: a check that it runs")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--threads", type=_typed("--threads", positive),
                        help="CPU threads for torch and ONNX Runtime alike (default: torch's default)")
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"),
                        help="default: cpu, plus cuda when torch sees a GPU")
    parser.add_argument("--quantize", choices=QUANTIZATIONS,
                        help="also time the 8-bit copies of the dense and the pruned model (dynamic quantization, "
                             "torch and ONNX Runtime), and measure the export's int8 test perplexity")


def sizes_from_args(sizes: list[tuple[int, ...]], embedding_dims: list[int] | None) -> tuple[Sizes, Sizes]:
    if len(sizes) != 2:
        raise UserError(f"--sizes takes two models, dense then pruned (e.g. --sizes 1500,1500 373,315), "
                        f"got {len(sizes)}")
    dense, pruned = sizes
    if embedding_dims is None:
        embedding = (dense[0], pruned[0])
    elif len(embedding_dims) != 2:
        raise UserError(f"--embedding-dims takes two sizes, dense then pruned, got {len(embedding_dims)}")
    else:
        embedding = tuple(embedding_dims)
    result = Sizes(embedding[0], dense), Sizes(embedding[1], pruned)
    check_pruned_fits(*result, where="--sizes")
    return result


def cell_from_args(cell: str | None) -> str:
    from lightning_modules.pruning.gated_rnn import CELLS

    if cell is not None and cell not in CELLS:
        raise UserError(f"--cell: {cell!r} is not one of {', '.join(CELLS)}")
    return cell or DEFAULT_CELL


def settings_from_args(args) -> Settings:
    import torch

    repeats, warmup = (QUICK["repeats"], QUICK["warmup"]) if args.quick else (args.repeats, args.warmup)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = tuple(args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]))
    if "cuda" in devices and not torch.cuda.is_available():
        raise UserError("--devices cuda: torch sees no GPU here (torch.cuda.is_available() is False); "
                        "drop cuda or install a CUDA build of torch")
    backends = tuple(dict.fromkeys(args.backends))
    onnxruntime_devices, skipped = onnxruntime_devices_for(devices, backends)
    return Settings(
        batches=tuple(dict.fromkeys(args.batches)), seq_len=args.seq_len, repeats=repeats, warmup=warmup,
        threads=torch.get_num_threads(),
        threads_from="--threads" if args.threads is not None else "torch default (OMP_NUM_THREADS, else the cores)",
        backends=backends, devices=devices, quick=args.quick, onnxruntime_devices=onnxruntime_devices,
        skipped=skipped, quantize=args.quantize)


def default_settings(*args: str) -> Settings:
    """The command's settings for these options (e.g. "--quick"), for callers without a command
    line (the profile runner)."""
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parsed = parser.parse_args(list(args))
    check_values(parsed)
    return settings_from_args(parsed)


# ---- the entry points ------------------------------------------------------------------------------

def time_and_write(models: Models, settings: Settings, out: Path) -> dict:
    """Time the models, write speed.json atomically, print the table; returns the JSON's content."""
    print(f"timing {', '.join(models.torch)} ({models.source['kind']}); {settings.repeats} repeats after "
          f"{settings.warmup} warm-up, {settings.threads} threads", file=sys.stderr)
    measured = speed_timing.measure(models, settings)
    result = speed_timing.document(models, settings, measured)
    speed_timing.write(result, out)
    return result


def export_output(export_dir: Path, out: str | None) -> Path:
    """<run dir>/speed.json when the export sits in a run dir, else --out is needed."""
    if out:
        return Path(out)
    run_dir = export_dir.resolve().parent
    if (run_dir / RESULT_FILE).is_file() or (run_dir / CONFIG_FILE).is_file():
        return run_dir / SPEED_FILE
    raise UserError(f"--export {export_dir}: the folder above it is not a run dir (no {RESULT_FILE} or "
                    f"{CONFIG_FILE} there), so there is no default place for {SPEED_FILE}; give --out FILE.json")


@dataclass(frozen=True)
class ExportJob:
    """One --export, checked before any measurement starts: its folder, what its config.json says,
    where speed.json goes, and (--quantize) the PTB data its perplexity is measured on."""
    export_dir: Path
    spec: ExportSpec
    out: Path
    data: object | None


def export_job(export_dir: str | Path, out: str | None, quantize: str | None) -> ExportJob:
    export_dir = Path(export_dir)
    spec = export_spec(export_dir)
    out_path = export_output(export_dir, out)
    data = None
    if quantize:  # its perplexity is measured on PTB: a vocabulary of other data is refused here
        from lightning_modules.lm.evaluate import ptb_data_of_run

        vocab = read_config(export_dir / EXPORT_CONFIG_FILE).get("vocab", [])
        data = ptb_data_of_run(out_path.parent, vocab, f"--quantize with --export {export_dir}")
    return ExportJob(export_dir, spec, out_path, data)


def measure_export(export_dir: str | Path, settings: Settings, out: str | None = None,
                   job: ExportJob | None = None) -> dict:
    """The export against its dense original and against a plain model at its own sizes (`job`: the
    export already checked by `export_job`)."""
    job = job or export_job(export_dir, out, settings.quantize)
    with tempfile.TemporaryDirectory(prefix="speed-onnx-") as tmp:
        models = export_models(job.export_dir, job.spec, settings, job.out.parent / ONNX_DIR, Path(tmp), job.data)
        return time_and_write(models, settings, job.out)


def sizes_output(dense: Sizes, pruned: Sizes, explicit_embedding: bool) -> Path:
    name = f"sizes_{'-'.join(map(str, dense.hidden_sizes))}_vs_{'-'.join(map(str, pruned.hidden_sizes))}"
    if explicit_embedding:
        name += f"_emb{dense.embedding_dim}-{pruned.embedding_dim}"
    return Path("results") / "speed" / f"{name}.json"


def measure_sizes(dense: Sizes, pruned: Sizes, settings: Settings, out: Path, cell: str = DEFAULT_CELL,
                  vocab_size: int = VOCAB_SIZE) -> dict:
    """Plain models at two sets of sizes; no export involved, so no export/plain ratio."""
    with tempfile.TemporaryDirectory(prefix="speed-onnx-") as tmp:
        models = sizes_models(dense, pruned, cell, vocab_size, settings, Path(tmp))
        return time_and_write(models, settings, out)


def measure_run_dirs(run_dirs: list[Path], settings: Settings | None = None) -> list[Path]:
    """Time the language-model export of every run dir that has no speed.json yet; returns those written."""
    written = []
    for run_dir in map(Path, run_dirs):
        if (run_dir / SPEED_FILE).is_file() or not is_language_model_export(run_dir / EXPORT_DIR):
            continue  # measured already, nothing exported, or another model family's export
        settings = settings or default_settings()
        measure_export(run_dir / EXPORT_DIR, settings, out=str(run_dir / SPEED_FILE))
        written.append(run_dir / SPEED_FILE)
    return written


def run(args) -> None:
    check_values(args)
    if bool(args.export) == bool(args.sizes):
        raise UserError("give either --export EXPORT_DIR... or --sizes DENSE PRUNED (e.g. --sizes 1500,1500 373,315)")
    if args.embedding_dims and not args.sizes:
        raise UserError(f"--embedding-dims goes with --sizes; an export's sizes come from its {EXPORT_CONFIG_FILE}")
    if args.cell and not args.sizes:
        raise UserError(f"--cell goes with --sizes; an export's cell comes from its {EXPORT_CONFIG_FILE}")
    if args.export and args.out and len(args.export) > 1:
        raise UserError(f"--out names one file but {len(args.export)} exports were given; time them one at a time "
                        f"or drop --out (each then writes <run dir>/{SPEED_FILE})")
    if args.sizes:
        dense, pruned = sizes_from_args(args.sizes, args.embedding_dims)
        cell = cell_from_args(args.cell)
    else:
        # every export checked before the first (long) measurement
        jobs = [export_job(export_dir, args.out, args.quantize) for export_dir in args.export]
    settings = settings_from_args(args)
    if args.sizes:
        out = Path(args.out) if args.out else sizes_output(dense, pruned, args.embedding_dims is not None)
        measure_sizes(dense, pruned, settings, out, cell)
    else:
        for job in jobs:
            measure_export(job.export_dir, settings, job=job)
