"""What `python -m reproduce speed` times, built once: the models, their ONNX files, and what their
sizes are set against.

A language model here is (vocabulary, embedding size, hidden sizes, cell): the export names all four
in its config.json (`cell` since the GRU option; older exports are LSTMs), --sizes gives them on the
command line. The dense original and the plain reference are built at those sizes with fresh weights:
the values of the weights do not change the time of dense compute.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from lightning_modules.errors import UserError
from lightning_modules.export_folder import EXPORT_CONFIG_FILE
from lightning_modules.run_dir import EXPORT_DIR
from lightning_modules.timing import cpu_caches, smallest_cache_holding

# the models of one measurement, by the names speed.json gives them
DENSE, PRUNED, PLAIN = "dense", "pruned", "plain_at_pruned_sizes"
DENSE_INT8, PRUNED_INT8 = "dense_int8", "pruned_int8"  # --quantize int8: their 8-bit copies
DEFAULT_CELL = "lstm"  # what an export without `cell` in its config.json holds (the GRU came later)
PARTS = ("model", "lstm")  # the whole model (token ids -> logits), and its RNN stack alone


@dataclass(frozen=True)
class Sizes:
    embedding_dim: int
    hidden_sizes: tuple[int, ...]

    def as_dict(self) -> dict:
        return {"embedding_dim": self.embedding_dim, "hidden_sizes": list(self.hidden_sizes)}


@dataclass(frozen=True)
class ExportSpec:
    """What an export's config.json says about the dense model it came from."""
    original: Sizes
    cell: str


@dataclass
class Models:
    """One measurement's models, built once and read by the timing and by speed.json.

    `torch` holds the modules in the order they take turns; `onnx_files` the file of each model and
    part that ONNX Runtime times (empty when it times nothing); `onnx` what speed.json records of them;
    `int8` (--quantize int8) the engine, the test perplexities and how far the int8 outputs are from
    the fp32 ones, measured when the int8 models were built.
    """
    torch: dict
    cell: str
    source: dict
    onnx_files: dict
    onnx: dict
    int8: dict | None = None

    @property
    def vocab_size(self) -> int:
        return self.torch[DENSE].vocab_size


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


def plain_model(vocab_size: int, sizes: Sizes, cell: str):
    """A dense model built directly at these sizes (its weight values do not change dense compute)."""
    from lightning_modules.lm.language_model import LSTMLanguageModel

    return LSTMLanguageModel(vocab_size, sizes.embedding_dim, list(sizes.hidden_sizes), gated=False,
                             cell=cell).eval()


def sizes_of(model) -> Sizes:
    return Sizes(model.embedding.embedding_dim, tuple(model.rnn.hidden_sizes))


# ---- an export's config.json ---------------------------------------------------------------------

def read_config(config_file: Path) -> dict:
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{config_file} is not readable JSON ({e}); re-export the model") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_file} is not a JSON object; re-export the model")
    return config


def is_language_model_export(export_dir: Path) -> bool:
    """An export folder of this command's model family (SQuAD's BiDAF times itself while training)."""
    from lightning_modules.lm.export import FORMAT

    config_file = Path(export_dir) / EXPORT_CONFIG_FILE
    return config_file.is_file() and read_config(config_file).get("format", FORMAT) == FORMAT


def export_spec(export_dir: str | Path) -> ExportSpec:
    """The dense original's sizes and the cell, from the export's config.json; a UserError for anything unusable."""
    export_dir = Path(export_dir)
    config_file = export_dir / EXPORT_CONFIG_FILE
    if not export_dir.is_dir():
        raise UserError(f"--export {export_dir}: no such folder; give an exported model folder (a run dir's "
                        f"{EXPORT_DIR}/)")
    if not config_file.is_file():
        raise UserError(f"--export {export_dir}: no {EXPORT_CONFIG_FILE} there; give an exported model folder "
                        f"(a run dir's {EXPORT_DIR}/)")
    from lightning_modules.lm.export import FORMAT
    from lightning_modules.pruning.gated_rnn import CELLS

    config = read_config(config_file)
    if config.get("format", FORMAT) != FORMAT:
        raise UserError(f"--export {export_dir}: a {config['format']!r} export; this command times word-level "
                        f"language models ({FORMAT!r})")
    cell = config.get("cell", DEFAULT_CELL)
    if cell not in CELLS:
        raise UserError(f"{config_file}: cell {cell!r} is not one of {', '.join(CELLS)}; re-export the model")
    original = config.get("original_sizes")
    try:
        sizes = Sizes(int(original["embedding_dim"]), tuple(int(h) for h in original["hidden_sizes"]))
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{config_file} has no usable original_sizes ({{embedding_dim, hidden_sizes}}), so the "
                        "dense original is unknown; re-export it with the current code, or time its sizes "
                        "with --sizes") from None
    return ExportSpec(sizes, cell)


# ---- the models ----------------------------------------------------------------------------------

def export_models(export_dir: Path, spec: ExportSpec, settings, kept_onnx_dir: Path, tmp: Path,
                  data=None) -> Models:
    """The export against its dense original and against a plain model at its own sizes; the export's
    ONNX files go to `kept_onnx_dir` (beside speed.json), the other models' to `tmp`. With --quantize,
    the int8 copies of the dense original and of the export, and the export's test perplexity in fp32
    and in int8 on `data` (the run's PTB data module, lightning_modules/lm/evaluate.py)."""
    import torch

    from lightning_modules.lm.export import load_exported_language_model

    pruned, _ = load_exported_language_model(export_dir)
    check_pruned_fits(spec.original, sizes_of(pruned), where=str(export_dir / EXPORT_CONFIG_FILE))
    torch.manual_seed(0)
    models = {DENSE: plain_model(pruned.vocab_size, spec.original, spec.cell), PRUNED: pruned,
              PLAIN: plain_model(pruned.vocab_size, sizes_of(pruned), spec.cell)}
    run_dir = kept_onnx_dir.parent
    source = {"kind": "export", "export_dir": str(export_dir), "run_dir": str(run_dir)}
    onnx_dirs = {name: kept_onnx_dir if name == PRUNED else tmp / name for name in models}
    built = _with_onnx(models, spec.cell, source, settings, onnx_dirs, kept=(PRUNED,))
    return _with_int8(built, settings, data)


def sizes_models(dense: Sizes, pruned: Sizes, cell: str, vocab_size: int, settings, tmp: Path) -> Models:
    """Plain models at two sets of sizes; no export involved, so no plain reference (and, their weights
    being random, no perplexity)."""
    import torch

    torch.manual_seed(0)
    models = {DENSE: plain_model(vocab_size, dense, cell), PRUNED: plain_model(vocab_size, pruned, cell)}
    built = _with_onnx(models, cell, {"kind": "sizes"}, settings, {n: tmp / n for n in models}, kept=())
    return _with_int8(built, settings, data=None)


def _with_onnx(models: dict, cell: str, source: dict, settings, onnx_dirs: dict, kept: tuple[str, ...]) -> Models:
    """Each model exported to ONNX when ONNX Runtime times anything, checked against torch at every timed
    batch size; speed.json records the paths of the `kept` models only (the others are temporary)."""
    from lightning_modules.lm.onnx_export import export_onnx

    files, record = {}, {}
    if settings.onnxruntime_devices:
        for name, model in models.items():
            print(f"exporting {name} to ONNX and checking it against torch", file=sys.stderr)
            info = export_onnx(model, onnx_dirs[name], settings.seq_len, check_batches=(1, 2, *settings.batches))
            files[name] = {part: info[part] for part in PARTS}
            record[name] = {**info, **({} if name in kept else dict.fromkeys(PARTS))}
    return Models(models, cell, source, files, record)


def _with_int8(models: Models, settings, data) -> Models:
    """--quantize int8: the int8 copies of the dense and the pruned model in torch and, when ONNX Runtime
    times anything, in ONNX (beside their fp32 files), each checked against its fp32 model; the pruned
    model's test perplexity in fp32 and int8 when `data` (PTB, with the run's settings) is given."""
    if not settings.quantize:
        return models
    import torch

    from lightning_modules.lm.onnx_export import ort_session
    from lightning_modules.lm.quantize import (
        check_int8,
        quantize_int8,
        quantize_onnx_int8,
        quantized_engine,
    )

    pairs = {DENSE_INT8: DENSE, PRUNED_INT8: PRUNED}
    tokens = torch.randint(0, models.vocab_size, (2, settings.seq_len), generator=torch.Generator().manual_seed(0))
    difference = {}
    with torch.inference_mode():
        for name, fp32 in pairs.items():
            print(f"quantizing {fp32} to int8 and checking it against fp32", file=sys.stderr)
            models.torch[name] = quantize_int8(models.torch[fp32])
            difference[f"torch_{name}"] = check_int8(models.torch[fp32](tokens)[0], models.torch[name](tokens)[0],
                                                     f"torch {name}")
            if fp32 in models.onnx_files:
                files = {part: str(quantize_onnx_int8(path)) for part, path in models.onnx_files[fp32].items()}
                session = ort_session(files["model"], threads=1)
                got = session.run(None, {session.get_inputs()[0].name: tokens.numpy()})[0]
                difference[f"onnxruntime_{name}"] = check_int8(models.torch[fp32](tokens)[0], got,
                                                               f"{files['model']} ({name})")
                models.onnx_files[name] = files
                kept = models.onnx[fp32]["model"] is not None
                models.onnx[name] = {**(files if kept else dict.fromkeys(PARTS)),
                                     "quantizer": "onnxruntime.quantization.quantize_dynamic (QInt8)"}
    ppl = {"torch": None, "onnxruntime": None}
    ppl_fp32 = None
    if data is not None:
        from lightning_modules.lm.evaluate import ptb_test_perplexity

        print("test perplexity of the export in fp32 and in int8 (PTB test)", file=sys.stderr)
        ppl_fp32 = ptb_test_perplexity(models.torch[PRUNED], data)
        ppl["torch"] = ptb_test_perplexity(models.torch[PRUNED_INT8], data)
        if "cpu" in settings.onnxruntime_devices and PRUNED in models.onnx_files:
            ppl["onnxruntime"], models.onnx[PRUNED_INT8]["model_with_state"] = _onnxruntime_perplexity(
                models, data, Path(models.onnx_files[PRUNED]["model"]).parent)
    models.int8 = {
        "engine": quantized_engine(), "test_ppl": ppl, "test_ppl_fp32": ppl_fp32,
        "relative_difference_vs_fp32": difference,
        "test_data": None if data is None else {k: data.hparams[k] for k in ("source", "num_steps", "test_batch_size")},
    }
    return models


def _onnxruntime_perplexity(models: Models, data, onnx_dir: Path) -> tuple[float, str]:
    """The int8 ONNX file with state in and out (the form a text stream runs on), written beside the
    export's other ONNX files, and its test perplexity through the same test loop as torch's."""
    from lightning_modules.lm.evaluate import ptb_test_perplexity
    from lightning_modules.lm.onnx_export import OnnxRuntimeLanguageModel, export_onnx_with_state
    from lightning_modules.lm.quantize import quantize_onnx_int8

    # the test windows are num_steps long, and an exported LSTM's time axis is fixed (onnx_export.py)
    fp32 = export_onnx_with_state(models.torch[PRUNED], onnx_dir, data.hparams.num_steps,
                                  check_batches=(1, data.hparams.test_batch_size))
    int8 = quantize_onnx_int8(fp32)
    return ptb_test_perplexity(OnnxRuntimeLanguageModel(int8, models.cell), data), str(int8)


# ---- what the times are set against --------------------------------------------------------------

def weight_bytes(model) -> dict:
    def size(module):
        return sum(p.numel() * p.element_size() for p in module.parameters())

    return {"lstm": size(model.rnn), "model": size(model)}


def sizes_block(models: Models) -> dict:
    """speed.json's sizes, weight bytes, the caches that hold them, and the FLOPs of the dense and pruned
    models (the keys say "lstm" for either cell, as result.json's do)."""
    from lightning_modules.lm.language_model import model_size

    cell = models.cell
    dense, pruned = models.torch[DENSE], models.torch[PRUNED]
    before = model_size(dense.vocab_size, dense.embedding.embedding_dim, list(dense.rnn.hidden_sizes), cell=cell)
    after = model_size(pruned.vocab_size, pruned.embedding.embedding_dim, list(pruned.rnn.hidden_sizes),
                       list(pruned.rnn.input_sizes), cell=cell)
    caches = cpu_caches()
    weights = {DENSE: weight_bytes(dense), PRUNED: weight_bytes(pruned)}
    return {
        "sizes": {"vocab_size": dense.vocab_size, "cell": cell,
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
