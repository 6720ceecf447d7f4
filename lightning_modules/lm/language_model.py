"""Word-level LSTM (or GRU) language model (Zaremba et al. 2014) on top of `GatedRNN`."""

from __future__ import annotations

import torch
from torch import nn

from ..pruning.gated_rnn import CELLS, GateConfig, GatedRNN, State, gate_blocks
from ..pruning.structured_sparsity import ISSUnit, lm_units


class LSTMLanguageModel(nn.Module):
    """Embedding -> GatedRNN (LSTM or GRU layers, `cell`) -> Linear decoder. Tokens are
    batch-major (B, T).

    Gated: the embedding dimensions are the first layer's input neurons (their gates
    live in the RNN), and the decoder consumes the last layer's gated output.
    Ungated with explicit sizes: the plain model an export loads into.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden_sizes: list[int],
        dropout: float = 0.0,
        gated: bool = True,
        init_scale: float | None = 0.1,
        gate_config: GateConfig = GateConfig(),
        cell: str = "lstm",
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        self.vocab_size = vocab_size
        self.cell = cell
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = GatedRNN(embedding_dim, hidden_sizes, dropout, gated, gate_config, cell=cell)
        self.decoder = nn.Linear(hidden_sizes[-1], vocab_size)
        if init_scale is not None:
            # Zaremba / TF tutorial: every weight and bias uniform in [-scale, scale].
            for name, p in self.named_parameters():
                if not name.endswith("log_alpha"):
                    nn.init.uniform_(p, -init_scale, init_scale)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        emb = self.embedding(tokens.t())  # time-major for the LSTM kernel
        out, state = self.rnn(emb, state)
        return self.decoder(out).transpose(0, 1), state

    def gate_parameters(self) -> list[nn.Parameter]:
        return self.rnn.gate_parameters()

    def weight_parameters(self) -> list[nn.Parameter]:
        gates = {id(p) for p in self.rnn.gate_parameters()}
        return [p for p in self.parameters() if id(p) not in gates]

    # What the pruning methods act on (pruning_methods.prunable_units), given by the model so that
    # the pruning package needs to know no model.
    def iss_units(self) -> list[ISSUnit]:
        """Layer k is read by the next layer's weight_ih, the last one by the decoder."""
        return lm_units(list(self.rnn.layers), self.decoder.weight)

    def expected_l0(self, form: str = "weights") -> torch.Tensor:
        return self.rnn.expected_l0(form)


def model_size(vocab_size: int, embedding_dim: int, hidden_sizes: list[int],
               input_sizes: list[int] | None = None, cell: str = "lstm") -> dict[str, int]:
    """Parameter count and forward FLOPs per token of a dense LSTM (or GRU) LM of these sizes.

    FLOPs count 2 per multiply-add of the matrix products only (the RNN's gate blocks and the
    decoder); elementwise ops and the embedding lookup are left out, as is usual. The keys say
    "lstm" for either cell (they are result.json's contract).
    """
    input_sizes = input_sizes or [embedding_dim, *hidden_sizes[:-1]]
    b = gate_blocks(cell)
    lstm_params = sum(b * h * (i + h) + 2 * b * h for i, h in zip(input_sizes, hidden_sizes))
    lstm_flops = sum(2 * b * h * (i + h) for i, h in zip(input_sizes, hidden_sizes))
    decoder_params = vocab_size * hidden_sizes[-1] + vocab_size
    return {
        "params": vocab_size * embedding_dim + lstm_params + decoder_params,
        "lstm_params": lstm_params,
        "flops_per_token": lstm_flops + 2 * vocab_size * hidden_sizes[-1],
        "lstm_flops_per_token": lstm_flops,
    }
