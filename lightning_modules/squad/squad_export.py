"""Export a (gated or Lasso-pruned) BiDAF as a physically smaller dense BiDAF, and load it back.

What survives: a hidden neuron whose test-time gate is non-zero (gated LSTMs) or whose ISS
group is not entirely zero (ungated LSTMs). A removed neuron takes its four gate rows and its
biases, its column of weight_hh, and its columns in every consumer (`BiDAF.all_units`) with it.
Input gates are folded into the weight_ih columns they multiply (a shut one leaves a zero
column when the producing neuron survives). A surviving hidden gate value z is kept as the
LSTM's output scale (`<bilstm>.<dir>_scale`): h is multiplied by z wherever it is read,
including the attention products, so a scale is exact where folding into one weight is not.

The folder: `config.json` (format, sizes per LSTM, dimensions, vocabularies, tokenisation
settings) and `model.safetensors` with the state dict of `BiDAF(gated=False, hidden_sizes=...)`:
plain nn.Embedding, nn.Conv1d, nn.Linear and one nn.LSTM per direction (gate order i, f, g, o).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..export_folder import read_export_folder, write_export_folder
from ..pruning.gated_rnn import gate_blocks, gate_rows
from ..pruning.structured_sparsity import unit_zero_groups
from ..timing import paired_ratio, stats, time_interleaved
from .bidaf import LSTM_NAMES, BiDAF, bidaf_size

FORMAT = "neuron-selection-bidaf/1"


def _scale_key(name: str) -> str:
    bilstm, direction = name.rsplit(".", 1)
    return f"{bilstm}.{direction}_scale"


@torch.no_grad()
def neuron_scales(model: BiDAF) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per LSTM: the factor each input and hidden neuron is multiplied by in eval; 0 = removable."""
    dead = dict(zip(LSTM_NAMES, unit_zero_groups(model.all_units())))
    state = model.state_dict()
    scales = {}
    for name in LSTM_NAMES:
        lstm = model.lstm(name)
        if lstm.gated:
            scales[name] = (lstm.input_gates[0].deterministic(), lstm.hidden_gates[0].deterministic())
        else:
            weight_ih = lstm.layers[0].weight_ih_l0
            z_hid = state[_scale_key(name)] * (~dead[name]).to(weight_ih.dtype)
            scales[name] = (torch.ones(weight_ih.shape[1], device=weight_ih.device), z_hid)
    return scales


def neurons_kept(model: BiDAF) -> dict:
    """Surviving neurons per LSTM (LSTM_NAMES order). An input survives if its own gate and the
    neuron producing it both do."""
    scales = neuron_scales(model)
    hidden = {n: int((z > 0).sum()) for n, (_, z) in scales.items()}
    inputs = {}
    for name, (z_in, _) in scales.items():
        alive = z_in > 0
        source = model.producer(name)
        if source is not None:
            produced = torch.cat([scales[f"{source[0]}.{d}"][1] > 0 for d in ("fwd", "bwd")]).repeat(source[1])
            alive = alive & produced
        inputs[name] = int(alive.sum())
    return {"lstm_names": list(LSTM_NAMES), "input": [inputs[n] for n in LSTM_NAMES],
            "hidden": [hidden[n] for n in LSTM_NAMES],
            "by_lstm": {n: {"input": inputs[n], "hidden": hidden[n]} for n in LSTM_NAMES}}


@torch.no_grad()
def pruned_state_dict(model: BiDAF) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The state dict of the smaller dense BiDAF, and its hidden size per LSTM."""
    scales = neuron_scales(model)
    keep = {n: z > 0 for n, (_, z) in scales.items()}
    for name, k in keep.items():
        if not k.any():
            raise UserError(f"every hidden neuron of the {name} LSTM was pruned, so the model cannot be "
                            "exported; lower the penalty strength (reg_lambda)")
    names = {id(p): n for n, p in model.named_parameters()}
    # columns of each consumer weight that belong to a removed neuron
    dead_cols: dict[str, torch.Tensor] = {}
    for unit in model.all_units():
        for weight, cols in unit.consumers:
            key = names[id(weight)]
            mask = dead_cols.setdefault(key, torch.zeros(weight.shape[1], dtype=torch.bool, device=weight.device))
            mask[cols.to(weight.device)[~keep[unit.name]].flatten()] = True

    out = {}
    for key, value in model.state_dict().items():
        if "_gates." in key or ".layers.0." in key or key.endswith("_scale"):
            continue  # gates go; LSTMs and scales are rebuilt below
        out[key] = value[:, ~dead_cols[key]] if key in dead_cols else value
    for name in LSTM_NAMES:
        lstm = model.lstm(name).layers[0]
        z_in, z_hid = scales[name]
        rows, k = gate_rows(keep[name], gate_blocks(lstm)), keep[name]
        prefix = f"{name}.layers.0"
        w_ih = (lstm.weight_ih_l0 * z_in)[rows]
        cols_key = f"{prefix}.weight_ih_l0"
        out[cols_key] = w_ih[:, ~dead_cols[cols_key]] if cols_key in dead_cols else w_ih
        out[f"{prefix}.weight_hh_l0"] = lstm.weight_hh_l0[rows][:, k] * z_hid[k]
        out[f"{prefix}.bias_ih_l0"] = lstm.bias_ih_l0[rows]
        out[f"{prefix}.bias_hh_l0"] = lstm.bias_hh_l0[rows]
        out[_scale_key(name)] = z_hid[k]
    out = {key: v.detach().float().contiguous().cpu() for key, v in out.items()}
    return out, {n: int(k.sum()) for n, k in keep.items()}


def export_bidaf(model: BiDAF, word_vocab: list[str], char_vocab: list[str], out_dir: str | Path,
                 extra: dict | None = None) -> dict:
    """Write the export folder atomically; returns its config."""
    if len(word_vocab) != model.word_embedding.num_embeddings or len(char_vocab) != model.char_embedding.num_embeddings:
        raise UserError(f"vocabularies ({len(word_vocab)} words, {len(char_vocab)} chars) do not match the model "
                        f"({model.word_embedding.num_embeddings}, {model.char_embedding.num_embeddings})")
    tensors, hidden = pruned_state_dict(model)
    config = {
        "format": FORMAT,
        **model.dims,
        "hidden_sizes": hidden,
        "original_hidden_sizes": dict(model.hidden),
        "lstm_names": list(LSTM_NAMES),
        **bidaf_size(len(word_vocab), len(char_vocab), model.dims, hidden),
        **(extra or {}),
        "word_vocab": list(word_vocab),
        "char_vocab": list(char_vocab),
    }
    write_export_folder(out_dir, tensors, config, FORMAT)
    return config


def load_exported_bidaf(path: str | Path) -> tuple[BiDAF, dict]:
    """A plain (ungated) BiDAF in eval mode from an export folder, and its config."""
    tensors, config, cfg_file, weights = read_export_folder(path, "BiDAF")
    if config.get("format") != FORMAT:
        raise UserError(f"{cfg_file}: format {config.get('format')!r} is not {FORMAT!r}")
    model = BiDAF(len(config["word_vocab"]), len(config["char_vocab"]), word_dim=config["word_dim"],
                  char_dim=config["char_dim"], char_channels=config["char_channels"],
                  char_kernel=config["char_kernel"], highway_layers=config["highway_layers"], dropout=0.0,
                  gated=False, hidden_sizes=config["hidden_sizes"])
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise UserError(f"{weights} does not match {cfg_file}: {str(e).splitlines()[0]}") from None
    return model.eval(), config


@torch.no_grad()
def compare_latency(pruned: BiDAF, dense: BiDAF, batches: list[dict], repeats: int = 1) -> dict:
    """Forward time of one question at batch 1 (ms), eval mode, pruned and dense run in turn on
    the same questions (lightning_modules/timing.py: which goes first alternates, as the second of
    a pair runs on warmer caches). Speedup: median of the per-question ratios dense / pruned.
    Denormal floats are flushed to zero while timing: saturated gates and sharp attention produce
    them, and on a CPU they can cost more time than the model's size."""
    pruned.eval()
    dense.eval()
    flushed = torch.set_flush_denormal(True)  # False where the CPU cannot; then it times as is
    try:
        samples = time_interleaved({"pruned": pruned, "dense": dense}, repeats * len(batches), warmup=1,
                                   inputs=batches)
    finally:
        torch.set_flush_denormal(False)
    return {"flush_denormal": flushed, "pruned_median_ms": round(stats(samples["pruned"])["median_ms"], 3),
            "dense_median_ms": round(stats(samples["dense"])["median_ms"], 3),
            "speedup_median": round(paired_ratio(samples["dense"], samples["pruned"])["median"], 3),
            "questions": len(batches), "repeats": repeats, "threads": torch.get_num_threads()}
