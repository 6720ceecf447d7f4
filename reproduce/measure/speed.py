"""Measured inference speed of a pruned export against its dense original (`python -m reproduce speed`).

  python -m reproduce speed --export results/ptb/small/l0/export     -> results/ptb/small/l0/speed.json
  python -m reproduce speed --sizes 1500,1500 373,315                -> results/speed/sizes_1500-1500_vs_373-315.json

--export times three models: the dense original (a plain model at the export's
`original_sizes`), the export itself, and a plain dense model built directly at the
export's sizes, the reference the export must match (export/plain >= 0.95: exporting
adds no overhead). --sizes times plain models of the given sizes (dense, then pruned hidden
sizes), so that reported sizes can be timed on your hardware without training.

Each model runs whole (token ids -> logits: embedding, LSTM stack, decoder; from a zero
state) and as its LSTM stack alone (a time-major float input), at each batch size, over
--seq-len time steps, in torch eager and in ONNX Runtime (exported by
lightning_modules/lm/onnx_export.py and checked against torch first), on the CPU, and on the
GPU when there is one. The models of one backend run in turn on every repeat (A B C, B C A,
...: lightning_modules/timing.py, the harness `bench` and the SQuAD export use too) so they see
the same machine state; reported are the median and quartiles in ms per
time step (every batch stream advances one token), and speedups are medians of the ratios
of the back-to-back runs. Weight bytes and the CPU's cache sizes are recorded beside the
FLOPs ratio: at batch 1 every weight is read once per token, so whether the weights fit in
cache, not the FLOPs, sets the time. Run it on an idle machine.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lightning_modules.errors import UserError
from lightning_modules.timing import cpu_caches, paired_ratio, smallest_cache_holding, stats, time_interleaved
from lightning_modules.timing import hardware as probe_hardware

VOCAB_SIZE = 10000  # PTB's, for --sizes
SPEED_FILE = "speed.json"
DENSE, PRUNED, PLAIN = "dense", "pruned", "plain_at_pruned_sizes"
PARTS = ("model", "lstm")
BACKENDS = ("torch", "onnxruntime")
QUICK = {"repeats": 3, "warmup": 1}


@dataclass(frozen=True)
class Sizes:
    embedding_dim: int
    hidden_sizes: tuple[int, ...]

    def as_dict(self) -> dict:
        return {"embedding_dim": self.embedding_dim, "hidden_sizes": list(self.hidden_sizes)}


@dataclass(frozen=True)
class Settings:
    batches: tuple[int, ...]
    seq_len: int
    repeats: int
    warmup: int
    threads: int
    threads_from: str
    backends: tuple[str, ...]
    devices: tuple[str, ...]
    quick: bool

    def as_dict(self) -> dict:
        return {"batches": list(self.batches), "seq_len": self.seq_len, "repeats": self.repeats,
                "warmup": self.warmup, "threads": self.threads, "threads_from": self.threads_from,
                "backends": list(self.backends), "devices": list(self.devices), "quick": self.quick,
                "order": "the models of one backend in turn each repeat, starting one later each time",
                "onnxruntime_intra_op_threads": self.threads, "onnxruntime_spinning": False}


# ---- command line ------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    what = parser.add_argument_group("what to time (one of)")
    what.add_argument("--export", nargs="+", metavar="EXPORT_DIR",
                      help="exported model folders (a run dir's export/); each writes <run dir>/speed.json")
    what.add_argument("--sizes", nargs="+", metavar="HIDDEN",
                      help="dense then pruned hidden sizes, comma-separated per model: 1500,1500 373,315")
    parser.add_argument("--embedding-dims", nargs="+", type=str, metavar="DIM",
                        help="with --sizes: dense and pruned embedding sizes (default: each model's first "
                             "hidden size)")
    parser.add_argument("--out", help="output JSON (default: <run dir>/speed.json for an export, "
                                      "results/speed/sizes_<dense>_vs_<pruned>.json for --sizes)")
    parser.add_argument("--batches", nargs="+", type=str, default=["1", "20"], help="batch sizes (default 1 20)")
    parser.add_argument("--seq-len", type=str, default="35", help="time steps per forward (default 35)")
    parser.add_argument("--repeats", type=str, default="30", help="timed runs of each model (default 30)")
    parser.add_argument("--warmup", type=str, default="5", help="untimed runs first (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['repeats']} repeats after {QUICK['warmup']} warm-up: a check that it runs")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--threads", type=str,
                        help="CPU threads for torch and ONNX Runtime alike (default: torch's default)")
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"),
                        help="default: cpu, plus cuda when torch sees a GPU")


def _int_arg(text: str, what: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise UserError(f"{what}: {text!r} is not an integer >= {minimum}")
    return value


def parse_sizes(text: str) -> tuple[int, ...]:
    """'1500,1500' -> (1500, 1500)."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(s <= 0 for s in sizes):
        raise UserError(f"--sizes: {text!r} is not a comma-separated list of positive integers, e.g. 1500,1500")
    return sizes


def sizes_from_args(sizes: list[str], embedding_dims: list[str] | None) -> tuple[Sizes, Sizes]:
    if len(sizes) != 2:
        raise UserError(f"--sizes takes two models, dense then pruned (e.g. --sizes 1500,1500 373,315), "
                        f"got {len(sizes)}")
    dense, pruned = (parse_sizes(s) for s in sizes)
    if embedding_dims is None:
        embedding = (dense[0], pruned[0])
    elif len(embedding_dims) != 2:
        raise UserError(f"--embedding-dims takes two sizes, dense then pruned, got {len(embedding_dims)}")
    else:
        embedding = tuple(_int_arg(d, "--embedding-dims") for d in embedding_dims)
    result = Sizes(embedding[0], dense), Sizes(embedding[1], pruned)
    check_pruned_fits(*result, where="--sizes")
    return result


def check_pruned_fits(dense: Sizes, pruned: Sizes, where: str) -> None:
    if len(dense.hidden_sizes) != len(pruned.hidden_sizes):
        raise UserError(f"{where}: the dense model has {len(dense.hidden_sizes)} layers, the pruned one "
                        f"{len(pruned.hidden_sizes)}; give one size per layer to both")
    pairs = [("embedding", dense.embedding_dim, pruned.embedding_dim),
             *((f"layer {k}", d, p) for k, (d, p) in enumerate(zip(dense.hidden_sizes, pruned.hidden_sizes)))]
    for name, d, p in pairs:
        if p > d:
            raise UserError(f"{where}: the pruned {name} has {p} units, more than the dense {d}; "
                            "give the dense sizes first, then the pruned ones")


def settings_from_args(args) -> Settings:
    import torch

    repeats, warmup = ((QUICK["repeats"], QUICK["warmup"]) if args.quick else
                       (_int_arg(args.repeats, "--repeats"), _int_arg(args.warmup, "--warmup", minimum=0)))
    if args.threads is not None:
        torch.set_num_threads(_int_arg(args.threads, "--threads"))
    devices = tuple(args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]))
    if "cuda" in devices and not torch.cuda.is_available():
        raise UserError("--devices cuda: torch sees no GPU here (torch.cuda.is_available() is False); "
                        "drop cuda or install a CUDA build of torch")
    return Settings(
        batches=tuple(dict.fromkeys(_int_arg(b, "--batches") for b in args.batches)),
        seq_len=_int_arg(args.seq_len, "--seq-len"), repeats=repeats, warmup=warmup,
        threads=torch.get_num_threads(),
        threads_from="--threads" if args.threads is not None else "torch default (OMP_NUM_THREADS, else the cores)",
        backends=tuple(dict.fromkeys(args.backends)), devices=devices, quick=args.quick)


# ---- the things being timed ------------------------------------------------------------------------

def plain_model(vocab_size: int, sizes: Sizes):
    """A dense model built directly at these sizes (its weight values do not change dense compute)."""
    from lightning_modules.lm.language_model import LSTMLanguageModel

    return LSTMLanguageModel(vocab_size, sizes.embedding_dim, list(sizes.hidden_sizes), gated=False).eval()


def sizes_of(model) -> Sizes:
    return Sizes(model.embedding.embedding_dim, tuple(model.rnn.hidden_sizes))


def _inputs(models: dict, part: str, batch: int, seq_len: int, seed: int) -> dict:
    """One CPU input per model: the same tokens for whole models, features of each model's width for LSTMs."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    vocab = next(iter(models.values())).vocab_size
    if part == "model":
        tokens = torch.randint(0, vocab, (batch, seq_len), generator=gen)
        return dict.fromkeys(models, tokens)
    return {name: torch.randn(seq_len, batch, m.embedding.embedding_dim, generator=gen) for name, m in models.items()}


def _torch_call(model, part: str, x, device: str):
    import torch

    module = model if part == "model" else model.rnn
    x = x.to(device)
    if device == "cuda":
        def call():
            module(x)
            torch.cuda.synchronize()  # kernels run asynchronously: wait for them inside the timed span
        return call
    return lambda: module(x)


def _ort_call(session, x, device: str):
    """Inputs bound once (on the device); each call allocates its output, as a torch forward does."""
    import onnxruntime as ort

    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(x.numpy(), device, 0))
    binding.bind_output(session.get_outputs()[0].name, device)

    def call():
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
    return call


def export_all_onnx(models: dict, onnx_dirs: dict, kept: tuple[str, ...], settings: Settings) -> tuple[dict, dict]:
    """Export each model to ONNX, checked against torch at every timed batch size.

    Returns the files to time and what the JSON records (the paths of `kept` models only:
    the others live in a temporary folder).
    """
    from lightning_modules.lm.onnx_export import export_onnx

    files, record = {}, {}
    for name, model in models.items():
        print(f"exporting {name} to ONNX and checking it against torch", file=sys.stderr)
        info = export_onnx(model, onnx_dirs[name], settings.seq_len, check_batches=(1, 2, *settings.batches))
        files[name] = {part: info[part] for part in PARTS}
        record[name] = {**info, **({} if name in kept else dict.fromkeys(PARTS))}
    return files, record


def _ort_devices(settings: Settings) -> tuple[list[str], list[str]]:
    """The devices ONNX Runtime can time here, and why it skips the others."""
    if "onnxruntime" not in settings.backends:
        return [], []
    import onnxruntime as ort

    devices, skipped = [], []
    for device in settings.devices:
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            skipped.append("onnxruntime on cuda: no CUDAExecutionProvider (install onnxruntime-gpu)")
        else:
            devices.append(device)
    return devices, skipped


def label(backend: str, device: str) -> str:
    return backend if device == "cpu" else f"{backend}_{device}"


def measure(models: dict, settings: Settings, onnx_dirs: dict, kept_onnx: tuple[str, ...]) -> dict:
    """Latency of every model, part, batch, backend and device, with the paired ratios against PRUNED."""
    import copy

    import torch

    from lightning_modules.lm.onnx_export import ort_session

    ort_devices, skipped = _ort_devices(settings)
    files, onnx = export_all_onnx(models, onnx_dirs, kept_onnx, settings) if ort_devices else ({}, {})
    latency: dict = {}
    for device in settings.devices:
        on_device = {n: (m if device == "cpu" else copy.deepcopy(m).to(device)) for n, m in models.items()}
        sessions = {}
        if device in ort_devices:
            sessions = {n: {part: ort_session(files[n][part], settings.threads, device) for part in PARTS}
                        for n in models}
            if device == "cuda" and any(s.get_providers()[0] != "CUDAExecutionProvider"
                                        for by_part in sessions.values() for s in by_part.values()):
                # ONNX Runtime falls back to the CPU when its CUDA libraries fail to load
                skipped.append("onnxruntime on cuda: the CUDA provider did not load (see ONNX Runtime's log)")
                sessions = {}
        for part in PARTS:
            for batch in settings.batches:
                inputs = _inputs(models, part, batch, settings.seq_len, seed=batch)
                timed = {}
                if "torch" in settings.backends:
                    calls = {n: _torch_call(on_device[n], part, inputs[n], device) for n in models}
                    with torch.inference_mode():
                        timed[label("torch", device)] = time_interleaved(calls, settings.repeats, settings.warmup)
                if sessions:
                    calls = {n: _ort_call(sessions[n][part], inputs[n], device) for n in models}
                    timed[label("onnxruntime", device)] = time_interleaved(calls, settings.repeats, settings.warmup)
                for key, samples in timed.items():
                    latency.setdefault(key, {}).setdefault(part, {})[str(batch)] = _summarize(samples, settings)
    return {"latency": latency, "onnx": onnx, "skipped": skipped}


def _summarize(samples: dict[str, list[float]], settings: Settings) -> dict:
    per_step = {n: stats([t / settings.seq_len for t in s]) for n, s in samples.items()}
    ratios = {"speedup": paired_ratio(samples[DENSE], samples[PRUNED])}
    if PLAIN in samples:
        ratios["export_vs_plain"] = paired_ratio(samples[PLAIN], samples[PRUNED])
    return {**per_step, "ratios": ratios}


def summary(latency: dict, ratio: str) -> dict | None:
    """{backend: {part: {batch: median ratio}}}, the block the tables read."""
    out = {key: {part: {b: cell["ratios"][ratio]["median"] for b, cell in by_batch.items() if ratio in cell["ratios"]}
                 for part, by_batch in parts.items()}
           for key, parts in latency.items()}
    return out if any(b for parts in out.values() for b in parts.values()) else None


def onnxruntime_vs_torch(latency: dict) -> dict:
    """Pruned model: torch eager ms / ONNX Runtime ms (> 1: ONNX Runtime faster). A ratio of medians:
    the two backends run in separate rounds, so these are not paired."""
    out = {}
    for key in latency:
        if not key.startswith("onnxruntime"):
            continue
        torch_key = key.replace("onnxruntime", "torch", 1)
        if torch_key not in latency:
            continue
        out[key] = {part: {b: latency[torch_key][part][b][PRUNED]["median_ms"] / cell[PRUNED]["median_ms"]
                           for b, cell in by_batch.items()}
                    for part, by_batch in latency[key].items()}
    return out


EXPORT_VS_PLAIN_TARGET = 0.95  # plain time / export time: exporting may add no more than 5%


def targets(speedup_blocks: dict) -> dict:
    """The issue's two targets, read off the medians: None where not measured."""
    export_vs_plain = [r for parts in (speedup_blocks["export_vs_plain"] or {}).values()
                       for by_batch in parts.values() for r in by_batch.values()]
    ort_batch1 = [by_batch["1"] for parts in speedup_blocks["onnxruntime_vs_torch"].values()
                  for by_batch in parts.values() if "1" in by_batch]
    return {
        "export_vs_plain_min": min(export_vs_plain, default=None),
        "export_adds_no_overhead": min(export_vs_plain) >= EXPORT_VS_PLAIN_TARGET if export_vs_plain else None,
        "onnxruntime_vs_torch_batch1_min": min(ort_batch1, default=None),
        "onnxruntime_at_least_torch_at_batch1": min(ort_batch1) >= 1.0 if ort_batch1 else None,
    }


# ---- what the numbers are set against --------------------------------------------------------------

def weight_bytes(model) -> dict:
    def size(module):
        return sum(p.numel() * p.element_size() for p in module.parameters())

    return {"lstm": size(model.rnn), "model": size(model)}


def hardware_record(settings: Settings) -> dict:
    """The shared probe, with the ONNX versions when ONNX Runtime is timed."""
    info = probe_hardware()
    if "onnxruntime" in settings.backends:
        import onnx
        import onnxruntime

        info.update(onnxruntime=onnxruntime.__version__, onnx=onnx.__version__,
                    onnxruntime_providers=onnxruntime.get_available_providers())
    return info


def sizes_block(models: dict) -> dict:
    from lightning_modules.lm.language_model import model_size

    dense, pruned = models[DENSE], models[PRUNED]
    before = model_size(dense.vocab_size, dense.embedding.embedding_dim, list(dense.rnn.hidden_sizes))
    after = model_size(pruned.vocab_size, pruned.embedding.embedding_dim, list(pruned.rnn.hidden_sizes),
                       list(pruned.rnn.input_sizes))
    caches = cpu_caches()
    weights = {DENSE: weight_bytes(dense), PRUNED: weight_bytes(pruned)}
    return {
        "sizes": {"vocab_size": dense.vocab_size,
                  DENSE: sizes_of(dense).as_dict(),
                  PRUNED: {**sizes_of(pruned).as_dict(), "input_sizes": list(pruned.rnn.input_sizes)}},
        "weight_bytes": weights,
        "smallest_cache_holding": {n: {part: smallest_cache_holding(b, caches) for part, b in w.items()}
                                   for n, w in weights.items()},
        "flops_per_token": {DENSE: {"model": before["flops_per_token"], "lstm": before["lstm_flops_per_token"]},
                            PRUNED: {"model": after["flops_per_token"], "lstm": after["lstm_flops_per_token"]}},
        "flops_ratio": before["flops_per_token"] / after["flops_per_token"],
        "lstm_flops_ratio": before["lstm_flops_per_token"] / after["lstm_flops_per_token"],
    }


# ---- the two entry points --------------------------------------------------------------------------

def measure_models(models: dict, settings: Settings, onnx_dirs: dict, kept_onnx: tuple[str, ...], source: dict,
                   out: Path) -> dict:
    """Time the models, write the JSON atomically, print the table; returns the JSON's content."""
    from lightning_modules.atomic import atomic_write_json

    print(f"timing {', '.join(models)} ({source['kind']}); {settings.repeats} repeats after {settings.warmup} "
          f"warm-up, {settings.threads} threads", file=sys.stderr)
    measured = measure(models, settings, onnx_dirs, kept_onnx)
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source,
        "settings": settings.as_dict(),
        "hardware": hardware_record(settings),
        **sizes_block(models),
        "speedup": summary(measured["latency"], "speedup"),
        "export_vs_plain": summary(measured["latency"], "export_vs_plain"),
        "onnxruntime_vs_torch": onnxruntime_vs_torch(measured["latency"]),
    }
    result["targets"] = targets(result)
    result |= {
        "latency": measured["latency"],
        "onnx": measured["onnx"],
        "skipped": measured["skipped"],
    }
    atomic_write_json(out, result)
    print(markdown_table(result))
    print(f"\nwritten to {out}")
    return result


def _read_config(config_file: Path) -> dict:
    import json

    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{config_file} is not readable JSON ({e}); re-export the model") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_file} is not a JSON object; re-export the model")
    return config


def check_export_dir(export_dir: str | Path) -> Sizes:
    """The dense original's sizes, from the export's config.json; a UserError for anything unusable."""
    export_dir = Path(export_dir)
    config_file = export_dir / "config.json"
    if not export_dir.is_dir():
        raise UserError(f"--export {export_dir}: no such folder; give an exported model folder (a run dir's export/)")
    if not config_file.is_file():
        raise UserError(f"--export {export_dir}: no config.json there; give an exported model folder "
                        "(a run dir's export/)")
    from lightning_modules.lm.export import FORMAT

    config = _read_config(config_file)
    if config.get("format", FORMAT) != FORMAT:
        raise UserError(f"--export {export_dir}: a {config['format']!r} export; this command times LSTM language "
                        f"models ({FORMAT!r})")
    original = config.get("original_sizes")
    try:
        return Sizes(int(original["embedding_dim"]), tuple(int(h) for h in original["hidden_sizes"]))
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{config_file} has no usable original_sizes ({{embedding_dim, hidden_sizes}}), so the "
                        "dense original is unknown; re-export it with the current code, or time its sizes "
                        "with --sizes") from None


def export_output(export_dir: Path, out: str | None) -> Path:
    """<run dir>/speed.json when the export sits in a run dir, else --out is needed."""
    if out:
        return Path(out)
    run_dir = export_dir.resolve().parent
    if (run_dir / "result.json").is_file() or (run_dir / "config.yaml").is_file():
        return run_dir / SPEED_FILE
    raise UserError(f"--export {export_dir}: the folder above it is not a run dir (no result.json or config.yaml "
                    "there), so there is no default place for speed.json; give --out FILE.json")


def measure_export(export_dir: str | Path, settings: Settings, out: str | None = None) -> dict:
    """The export against its dense original and against a plain model at its own sizes."""
    import torch

    from lightning_modules.lm.export import load_exported_language_model

    export_dir = Path(export_dir)
    dense_sizes = check_export_dir(export_dir)
    out_path = export_output(export_dir, out)
    pruned, _ = load_exported_language_model(export_dir)
    check_pruned_fits(dense_sizes, sizes_of(pruned), where=str(export_dir / "config.json"))
    torch.manual_seed(0)
    models = {DENSE: plain_model(pruned.vocab_size, dense_sizes), PRUNED: pruned,
              PLAIN: plain_model(pruned.vocab_size, sizes_of(pruned))}
    source = {"kind": "export", "export_dir": str(export_dir), "run_dir": str(out_path.parent)}
    with tempfile.TemporaryDirectory(prefix="speed-onnx-") as tmp:
        # the export's ONNX files are kept beside speed.json; the other two are only timed
        onnx_dirs = {DENSE: Path(tmp) / DENSE, PRUNED: out_path.parent / "onnx", PLAIN: Path(tmp) / PLAIN}
        return measure_models(models, settings, onnx_dirs, (PRUNED,), source, out_path)


def sizes_output(dense: Sizes, pruned: Sizes, explicit_embedding: bool) -> Path:
    name = f"sizes_{'-'.join(map(str, dense.hidden_sizes))}_vs_{'-'.join(map(str, pruned.hidden_sizes))}"
    if explicit_embedding:
        name += f"_emb{dense.embedding_dim}-{pruned.embedding_dim}"
    return Path("results") / "speed" / f"{name}.json"


def measure_sizes(dense: Sizes, pruned: Sizes, settings: Settings, out: Path,
                  vocab_size: int = VOCAB_SIZE) -> dict:
    """Plain models at two sets of sizes; no export involved, so no export/plain ratio."""
    import torch

    torch.manual_seed(0)
    models = {DENSE: plain_model(vocab_size, dense), PRUNED: plain_model(vocab_size, pruned)}
    source = {"kind": "sizes"}
    with tempfile.TemporaryDirectory(prefix="speed-onnx-") as tmp:
        onnx_dirs = {name: Path(tmp) / name for name in models}
        return measure_models(models, settings, onnx_dirs, (), source, out)


def default_settings(*args: str) -> Settings:
    """The command's settings for these options (e.g. "--quick"), for callers without a command
    line (the profile runner)."""
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args(list(args)))


def measure_run_dirs(run_dirs: list[Path], settings: Settings | None = None) -> list[Path]:
    """Time the language-model export of every run dir that has no speed.json yet; returns those written."""
    from lightning_modules.lm.export import FORMAT

    written = []
    for run_dir in map(Path, run_dirs):
        config_file = run_dir / "export" / "config.json"
        if (run_dir / SPEED_FILE).is_file() or not config_file.is_file():
            continue  # measured already, or nothing exported
        if _read_config(config_file).get("format", FORMAT) != FORMAT:
            continue  # another model family's export (SQuAD's BiDAF times itself while training)
        settings = settings or default_settings()
        measure_export(run_dir / "export", settings, out=str(run_dir / SPEED_FILE))
        written.append(run_dir / SPEED_FILE)
    return written


def run(args) -> None:
    if bool(args.export) == bool(args.sizes):
        raise UserError("give either --export EXPORT_DIR... or --sizes DENSE PRUNED (e.g. --sizes 1500,1500 373,315)")
    if args.embedding_dims and not args.sizes:
        raise UserError("--embedding-dims goes with --sizes; an export's sizes come from its config.json")
    if args.export and args.out and len(args.export) > 1:
        raise UserError(f"--out names one file but {len(args.export)} exports were given; time them one at a time "
                        "or drop --out (each then writes <run dir>/speed.json)")
    if args.sizes:
        dense, pruned = sizes_from_args(args.sizes, args.embedding_dims)
    else:
        for export_dir in args.export:  # every path checked before the first (long) measurement
            check_export_dir(export_dir)
            export_output(Path(export_dir), args.out)
    settings = settings_from_args(args)
    if args.sizes:
        out = Path(args.out) if args.out else sizes_output(dense, pruned, args.embedding_dims is not None)
        measure_sizes(dense, pruned, settings, out)
    else:
        for export_dir in args.export:
            measure_export(export_dir, settings, args.out)


# ---- the printed table ---------------------------------------------------------------------------------

def markdown_table(result: dict) -> str:
    """backend, part, batch: dense / pruned / plain ms per time step, speedup, FLOPs ratio, export/plain."""
    flops = {"model": result["flops_ratio"], "lstm": result["lstm_flops_ratio"]}
    s = result["sizes"]
    lines = [f"\ndense {s[DENSE]['hidden_sizes']} (embedding {s[DENSE]['embedding_dim']}) vs pruned "
             f"{s[PRUNED]['hidden_sizes']} (embedding {s[PRUNED]['embedding_dim']}), vocab {s['vocab_size']}; "
             f"ms per time step, median of {result['settings']['repeats']}; "
             f"{result['settings']['threads']} threads on {result['hardware']['cpu']}",
             "| backend | part | batch | dense ms | pruned ms | plain ms | speedup | FLOPs ratio | export/plain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, parts in result["latency"].items():
        for part, by_batch in parts.items():
            for batch, cell in by_batch.items():
                plain = f"{cell[PLAIN]['median_ms']:.4f}" if PLAIN in cell else "-"
                ratio = cell["ratios"].get("export_vs_plain")
                ratio = f"{ratio['median']:.3f}" if ratio else "-"
                speedup = cell["ratios"]["speedup"]["median"]
                lines.append(f"| {key} | {part} | {batch} | {cell[DENSE]['median_ms']:.4f} | "
                             f"{cell[PRUNED]['median_ms']:.4f} | {plain} | {speedup:.2f}x | {flops[part]:.2f}x "
                             f"| {ratio} |")
    mib = 1024 ** 2
    wb, caches = result["weight_bytes"], result["hardware"]["caches_bytes"]
    lines.append("\nweights (float32): " + ", ".join(
        f"{n} LSTM {wb[n]['lstm'] / mib:.2f} MiB, whole {wb[n]['model'] / mib:.2f} MiB" for n in (DENSE, PRUNED))
        + "; caches: " + (", ".join(f"{k} {v / mib:.2f} MiB" for k, v in caches.items()) or "unknown"))
    for key, parts in result["onnxruntime_vs_torch"].items():
        lines.append(f"pruned model, torch eager / {key} time: " + ", ".join(
            f"{part} b{b} {r:.2f}" for part, by_batch in parts.items() for b, r in by_batch.items()))
    met = {True: "met", False: "NOT met"}
    t = result["targets"]
    verdicts = []
    if t["export_adds_no_overhead"] is not None:
        verdicts.append(f"export/plain >= {EXPORT_VS_PLAIN_TARGET}: {met[t['export_adds_no_overhead']]} "
                        f"(lowest {t['export_vs_plain_min']:.3f})")
    if t["onnxruntime_at_least_torch_at_batch1"] is not None:
        verdicts.append(f"ONNX Runtime at least as fast as torch eager at batch 1: "
                        f"{met[t['onnxruntime_at_least_torch_at_batch1']]} "
                        f"(lowest {t['onnxruntime_vs_torch_batch1_min']:.2f})")
    if verdicts:
        quick = " (--quick: too few repeats to judge)" if result["settings"]["quick"] else ""
        lines.append("targets: " + "; ".join(verdicts) + quick)
    lines.extend(f"skipped: {s}" for s in result["skipped"])
    return "\n".join(lines)
