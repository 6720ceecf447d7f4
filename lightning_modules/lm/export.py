"""Export a (gated) LSTM or GRU language model as a physically smaller dense model, and load it back.

Contract (DESIGN.md): a folder with `config.json` (vocab_size, embedding_dim,
hidden_sizes, input_sizes, tie_weights, vocab, cell) and `model.safetensors` with keys
embedding.weight, lstm.{k}.weight_ih, lstm.{k}.weight_hh, lstm.{k}.bias_ih,
lstm.{k}.bias_hh, decoder.weight, decoder.bias. `cell` is "lstm" (gate blocks i, f, g, o) or
"gru" (r, z, n: PyTorch's nn.GRU layout, so its weights have 3 blocks of rows where an LSTM's
have 4); the keys say lstm for both. A config without `cell` (older exports) is an LSTM.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..export_folder import read_export_folder, write_export_folder
from ..pruning.gated_rnn import CELLS, gate_blocks, gate_rows
from ..pruning.structured_sparsity import zero_groups
from ..run_dir import finished_export
from .language_model import LSTMLanguageModel, model_size

FORMAT = "neuron-selection-lstm-lm/1"


@torch.no_grad()
def neuron_scales(model: LSTMLanguageModel) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The factor each input and hidden neuron's output is multiplied by in eval; 0 = removable.

    Gated: the test-time gate values. Ungated (dense, or trained with a Lasso-type
    penalty): 1, except 0 for a hidden neuron whose whole ISS group is zero and for a
    first-layer input whose weight_ih column is zero; nothing reads those.
    """
    rnn = model.rnn
    if rnn.gated:
        return rnn.deterministic_gates()
    z_in = [torch.ones(i, device=model.decoder.weight.device) for i in rnn.input_sizes]
    z_hid = [(~dead).to(z_in[0].dtype) for dead in zero_groups(list(rnn.layers), model.decoder.weight)]
    z_in[0][(rnn.layers[0].weight_ih_l0 == 0).all(0)] = 0.0
    return z_in, z_hid


def neurons_kept(model: LSTMLanguageModel) -> dict[str, list[int]]:
    """Surviving neurons per layer. An input of layer k > 0 survives if its own gate and the
    producing neuron below both do (the export still stores a zero column for the former)."""
    z_in, z_hid = neuron_scales(model)
    inputs = [z_in[0] > 0, *[(z_in[k] > 0) & (z_hid[k - 1] > 0) for k in range(1, len(z_in))]]
    return {"input": [int(m.sum()) for m in inputs], "hidden": [int((z > 0).sum()) for z in z_hid]}


@torch.no_grad()
def pruned_state_dict(model: LSTMLanguageModel) -> tuple[dict[str, torch.Tensor], dict]:
    """Remove switched-off neurons and fold the surviving scales (gate values) into the weights."""
    rnn = model.rnn
    n = rnn.num_layers
    z_in, z_hid = neuron_scales(model)
    keep_hid = [z > 0 for z in z_hid]
    for k, keep in enumerate(keep_hid):
        if not keep.any():
            raise UserError(
                f"every hidden neuron of {rnn.cell.upper()} layer {k} was pruned, so the model cannot be "
                "exported; lower the penalty strength (reg_lambda)"
            )
    keep_emb = z_in[0] > 0
    if not keep_emb.any():
        raise UserError("every embedding dimension was pruned; lower the penalty strength (reg_lambda)")

    # Layer 0's input gate is folded into the embedding columns it keeps.
    out = {"embedding.weight": (model.embedding.weight[:, keep_emb] * z_in[0][keep_emb]).clone()}
    blocks = gate_blocks(rnn.cell)
    for k, lstm in enumerate(rnn.layers):
        rows = gate_rows(keep_hid[k], blocks)
        if k == 0:
            w_ih = lstm.weight_ih_l0[rows][:, keep_emb]
        else:
            # The previous layer keeps all its surviving neurons, so this layer reads all
            # of them; a column whose own input gate is shut stays as zeros.
            cols = keep_hid[k - 1]
            w_ih = lstm.weight_ih_l0[rows][:, cols] * (z_in[k] * z_hid[k - 1])[cols]
        h_keep = keep_hid[k]
        out[f"lstm.{k}.weight_ih"] = w_ih.clone()
        out[f"lstm.{k}.weight_hh"] = (lstm.weight_hh_l0[rows][:, h_keep] * z_hid[k][h_keep]).clone()
        out[f"lstm.{k}.bias_ih"] = lstm.bias_ih_l0[rows].clone()
        out[f"lstm.{k}.bias_hh"] = lstm.bias_hh_l0[rows].clone()
    last = keep_hid[-1]
    out["decoder.weight"] = (model.decoder.weight[:, last] * z_hid[-1][last]).clone()
    out["decoder.bias"] = model.decoder.bias.clone()
    out = {k: v.detach().float().contiguous().cpu() for k, v in out.items()}

    hidden_sizes = [int(m.sum()) for m in keep_hid]
    config = {
        "format": FORMAT,
        "cell": rnn.cell,
        "vocab_size": model.vocab_size,
        "embedding_dim": int(keep_emb.sum()),
        "hidden_sizes": hidden_sizes,
        "input_sizes": [int(keep_emb.sum()), *hidden_sizes[:-1]],
        "num_layers": n,
        "tie_weights": False,
        "original_sizes": {
            "embedding_dim": model.embedding.embedding_dim,
            "hidden_sizes": list(rnn.hidden_sizes),
        },
    }
    return out, config


def export_language_model(model: LSTMLanguageModel, vocab: list[str], out_dir: str | Path,
                          extra: dict | None = None) -> dict:
    """Write the contract folder atomically; returns its config."""
    if len(vocab) != model.vocab_size:
        raise UserError(f"vocabulary has {len(vocab)} tokens but the model has {model.vocab_size}")
    tensors, config = pruned_state_dict(model)
    config.update(model_size(config["vocab_size"], config["embedding_dim"], config["hidden_sizes"],
                             cell=config["cell"]))
    config.update(extra or {})
    config["vocab"] = list(vocab)
    write_export_folder(out_dir, tensors, config, FORMAT)
    return config


def contract_names(num_layers: int) -> dict[str, str]:
    """{the plain model's state_dict key: the contract's tensor name}."""
    names = {"embedding.weight": "embedding.weight", "decoder.weight": "decoder.weight",
             "decoder.bias": "decoder.bias"}
    for k in range(num_layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            names[f"rnn.layers.{k}.{name}_l0"] = f"lstm.{k}.{name}"
    return names


def export_tensors(model: LSTMLanguageModel) -> dict[str, torch.Tensor]:
    """The contract's tensors of a plain (ungated, already exported) model, as its export folder holds them."""
    state = model.state_dict()
    return {theirs: state[ours].detach().float().contiguous().cpu()
            for ours, theirs in contract_names(model.rnn.num_layers).items()}


def load_exported_language_model(path: str | Path) -> tuple[LSTMLanguageModel, dict]:
    """Build a plain (ungated) PyTorch model from an export folder."""
    tensors, config, cfg_file, weights = read_export_folder(path, "model")
    if len(config.get("vocab", [])) != config["vocab_size"]:
        raise UserError(f"{cfg_file}: vocab has {len(config.get('vocab', []))} tokens, "
                        f"vocab_size says {config['vocab_size']}")
    cell = config.get("cell", "lstm")
    if cell not in CELLS:
        raise UserError(f"{cfg_file}: cell {cell!r} is not one of {', '.join(CELLS)}")
    model = LSTMLanguageModel(config["vocab_size"], config["embedding_dim"], config["hidden_sizes"],
                              gated=False, init_scale=None, cell=cell)
    if model.rnn.input_sizes != config["input_sizes"]:
        raise UserError(f"{cfg_file}: input_sizes {config['input_sizes']} do not chain with "
                        f"embedding_dim and hidden_sizes")
    names = contract_names(len(config["hidden_sizes"]))
    missing = [key for key in names.values() if key not in tensors]
    if missing:
        raise UserError(f"{weights} lacks the tensors {missing} that {cfg_file} implies; re-export the model")
    state = {ours: tensors[theirs] for ours, theirs in names.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{weights} does not match {cfg_file}: {str(e).splitlines()[0]}") from None
    model.eval()
    return model, config


@torch.no_grad()
def load_initial_weights(model: LSTMLanguageModel, run: str | Path) -> list[str]:
    """Copy the exported weights of a finished run into `model` (gates, if any, stay as
    initialised); returns the run's vocabulary, which the caller checks against its data.

    The export is the contract folder, so a run of any method of this suite can be the start,
    as long as its exported sizes are this model's sizes."""
    export = finished_export(run, "model.init_from")
    source, config = load_exported_language_model(export)
    if source.cell != model.cell:
        raise UserError(f"model.init_from: {export} holds a {source.cell.upper()} model, this config builds a "
                        f"{model.cell.upper()}; set model.cell to {source.cell}")
    theirs = (config["vocab_size"], config["embedding_dim"], list(config["hidden_sizes"]))
    ours = (model.vocab_size, model.embedding.embedding_dim, list(model.rnn.hidden_sizes))
    if theirs != ours:
        raise UserError(f"model.init_from: {export} holds a model of (vocab_size, embedding_dim, "
                        f"hidden_sizes) {theirs}, this config builds {ours}; set the sizes to match")
    model.embedding.weight.copy_(source.embedding.weight)
    model.decoder.load_state_dict(source.decoder.state_dict())
    for ours_lstm, their_lstm in zip(model.rnn.layers, source.rnn.layers, strict=True):
        ours_lstm.load_state_dict(their_lstm.state_dict())
    return list(config["vocab"])
