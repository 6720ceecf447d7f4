"""Share a pruned export the way the ecosystem does: `save_pretrained`, `from_pretrained` and
`push_to_hub` of huggingface_hub's `PyTorchModelHubMixin`, with a model card.

    model = PrunedLanguageModel.from_export("results/ptb/small/l0/export", quantize="int8")
    model.save_pretrained("l0-small-int8")                  # a local folder
    model.push_to_hub("you/l0-small-int8")                  # the same folder, on the Hub
    model = PrunedLanguageModel.from_pretrained("you/l0-small-int8")   # or the local folder
    logits, state = model(tokens)

The folder is the export contract (docs/CONTRACTS.md: config.json + model.safetensors, loadable with
plain torch.nn modules) plus README.md, the model card. An int8 model is saved as its fp32 export with
`quantization: int8` in config.json and quantized again when loaded: dynamic quantization is a
deterministic function of the fp32 weights (lightning_modules/lm/quantize.py), so the loaded int8
model is the saved one, and the folder stays loadable without this code.

The card says what a user needs to trust the model: the method and its lambda, the sizes kept (and
those it was pruned from), the test perplexity (fp32, and int8 where measured), the command that
trained it, and the paper. Those facts come from the run dir the export sits in (result.json, and
speed.json for the int8 perplexity) and travel in config.json under `card`.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import PyTorchModelHubMixin, snapshot_download
from torch import nn

from ..errors import UserError
from ..export_folder import EXPORT_CONFIG_FILE, EXPORT_WEIGHTS_FILE
from ..run_dir import RESULT_FILE, SPEED_FILE
from .export import FORMAT, export_tensors, load_exported_language_model
from .quantize import QUANTIZATIONS, quantize_int8

PAPER = "Wen et al., Structured Pruning of Recurrent Neural Networks through Neuron Selection (arXiv 1906.06847)"
PAPER_URL = "https://arxiv.org/abs/1906.06847"
CARD_FILE = "README.md"  # the file name the Hub shows as a repository's model card


class PrunedLanguageModel(nn.Module, PyTorchModelHubMixin, paper_url=PAPER_URL, library_name="pytorch",
                          tags=["pruning", "neuron-selection", "language-modeling", "lstm", "ptb"]):
    """A pruned (and possibly int8) word-level language model: tokens (batch, time), state -> logits, state."""

    def __init__(self, model: nn.Module, config: dict, fp32_state: dict) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self._fp32_state = fp32_state  # the export's tensors, saved as they are (an int8 model's too)

    def forward(self, tokens, state=None):
        return self.model(tokens, state)

    # ---- building --------------------------------------------------------------------------------

    @classmethod
    def from_export(cls, export_dir: str | Path, quantize: str | None = None) -> PrunedLanguageModel:
        """An export folder (a run dir's export/), as fp32 or quantized (`quantize="int8"`); the card's facts
        are read from the run dir around it, where there is one."""
        export_dir = Path(export_dir)
        model, config = load_exported_language_model(export_dir)
        card = _card_facts(export_dir.parent, config, quantize)
        return cls._build(model, {**config, "card": card, "quantization": quantize})

    @classmethod
    def _build(cls, fp32_model: nn.Module, config: dict) -> PrunedLanguageModel:
        quantize = config.get("quantization")
        if quantize is not None and quantize not in QUANTIZATIONS:
            raise UserError(f"{EXPORT_CONFIG_FILE}: quantization {quantize!r} is not one of "
                            f"{', '.join(QUANTIZATIONS)}; save the model again with this code")
        state = export_tensors(fp32_model)
        model = quantize_int8(fp32_model) if quantize else fp32_model.eval()
        return cls(model, config, state)

    # ---- the mixin's hooks -----------------------------------------------------------------------

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_file

        from ..atomic import atomic_write_json

        save_file(self._fp32_state, str(save_directory / EXPORT_WEIGHTS_FILE), metadata={"format": FORMAT})
        atomic_write_json(save_directory / EXPORT_CONFIG_FILE, self.config)
        (save_directory / CARD_FILE).write_text(model_card(self.config))

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         **model_kwargs) -> PrunedLanguageModel:
        folder = Path(model_id)
        if not folder.is_dir():
            folder = Path(snapshot_download(repo_id=model_id, revision=revision, cache_dir=cache_dir,
                                            force_download=force_download, local_files_only=local_files_only,
                                            token=token))
        model, config = load_exported_language_model(folder)
        return cls._build(model, config)


def _card_facts(run_dir: Path, config: dict, quantize: str | None) -> dict:
    """What the card says beyond the export's config: from the run's result.json and speed.json."""
    def read(name: str) -> dict:
        path = run_dir / name
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            raise UserError(f"{path} is not readable JSON; re-run the command that writes it") from None

    result, speed = read(RESULT_FILE), read(SPEED_FILE)
    int8 = speed.get("int8") or {}
    return {
        "method": result.get("method", config.get("method")),
        "lambda": result.get("lambda", config.get("reg_lambda")),
        "test_ppl": (result.get("metrics") or {}).get("test_ppl"),
        "int8_test_ppl": (int8.get("test_ppl") or {}).get("torch") if quantize else None,
        "command": result.get("command"),
        "git_commit": result.get("git_commit"),
    }


def _number(value, digits: int = 2) -> str:
    return "not measured" if value is None else f"{value:.{digits}f}"


def model_card(config: dict) -> str:
    """README.md of a saved model: the Hub's metadata header, then the facts a user checks it by."""
    card = config.get("card") or {}
    cell = config.get("cell", "lstm").upper()
    quantize = config.get("quantization")
    original = config.get("original_sizes") or {}
    precision = f"{quantize} weights (dynamic quantization), fp32 embedding" if quantize else "fp32"
    lines = [
        "---", "library_name: pytorch", "tags:", *(f"- {t}" for t in ("pruning", "neuron-selection",
                                                                       "language-modeling", cell.lower())),
        "datasets:", "- ptb_text_only", "---", "",
        f"# Pruned {cell} language model (Penn Treebank)", "",
        f"A word-level {cell} language model whose neurons were removed by structured pruning, from {PAPER} "
        f"({PAPER_URL}).", "",
        "| | |", "|---|---|",
        f"| method | {card.get('method') or 'not recorded'} |",
        f"| lambda | {card.get('lambda') if card.get('lambda') is not None else 'not recorded'} |",
        f"| hidden sizes kept | {config['hidden_sizes']} of {original.get('hidden_sizes', 'unknown')} |",
        f"| embedding kept | {config['embedding_dim']} of {original.get('embedding_dim', 'unknown')} |",
        f"| vocabulary | {config['vocab_size']} words |",
        f"| weights | {precision} |",
        f"| test perplexity (fp32) | {_number(card.get('test_ppl'))} |",
    ]
    if quantize:
        lines.append(f"| test perplexity ({quantize}) | {_number(card.get('int8_test_ppl'))} |")
    lines += [
        f"| trained by | `{card['command']}` |" if card.get("command") else "| trained by | not recorded |",
        f"| code commit | {card.get('git_commit') or 'not recorded'} |",
        "", "## Use", "", "```python",
        "from lightning_modules.lm.hub import PrunedLanguageModel", "",
        "model = PrunedLanguageModel.from_pretrained(\"<this repository or folder>\")",
        "logits, state = model(tokens)  # tokens: (batch, time) word ids in config.json's vocab order", "```", "",
        f"Without this code: {EXPORT_CONFIG_FILE} and {EXPORT_WEIGHTS_FILE} follow the export contract (one plain "
        f"`torch.nn.{cell if cell == 'GRU' else 'LSTM'}` per layer, an `nn.Embedding` and an `nn.Linear`)"
        + ("; `torch.ao.quantization.quantize_dynamic` on those modules gives the int8 model." if quantize else "."),
    ]
    return "\n".join(lines) + "\n"
