"""A stack of LSTM layers whose input and hidden neurons are gated by hard concrete gates.

Semantics (the "gate on a neuron's output" reading of the paper):
  - input gate z_x[k][i] multiplies input neuron i of layer k;
  - hidden gate z_h[k][j] multiplies hidden neuron j of layer k wherever its output
    h_j is consumed: the recurrent input of layer k (column j of weight_hh) and the
    next layer's input (column j of its weight_ih) or the decoder.
When z_h[k][j] == 0 nothing reads h_j, so its four gate rows in weight_ih and
weight_hh and its biases are dead too: export removes the row and the columns,
which is exactly one ISS component (Wen et al. 2018). The rows themselves are not
scaled by the gate, so a gate value in (0, 1) means "h_j is scaled", nothing else.

Speed: the recurrent gate is applied as a column mask on weight_hh once per step,
then the fused `nn.LSTM` kernel runs over all time steps. The non-recurrent gates
(inputs, and the hidden gate on the next consumer) are applied to the activations,
which is the same product as a column mask on the consumer's weight but costs
T*B*n instead of 4H*n multiplications.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .hard_concrete import LOUIZOS_LOG_ALPHA_RANGE, HardConcreteGate

State = list[tuple[torch.Tensor, torch.Tensor]]

# cuDNN's note that it copies weights which are not one flat buffer: expected for the masked
# recurrent weight (see lstm_with_weights), which is a new tensor on every call
warnings.filterwarnings("ignore", message=r"RNN module weights are not part of single contiguous chunk")


def lstm_with_weights(lstm: nn.LSTM, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
                      weight_hh: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """A single-layer, unidirectional `lstm` run with its recurrent weight replaced by `weight_hh`.

    The kernel nn.LSTM.forward calls, called directly. Not torch.func.functional_call: given a new
    weight, nn.LSTM re-flattens all its weights into a new cuDNN buffer on every call and moves its
    Parameters' storage there (Tensor.set_). A captured CUDA graph (lightning_modules/fused_step.py)
    would then keep copying the weights from where they were at capture time, so weight_ih and the
    biases would silently stop training. Same kernel and inputs, so the same numbers."""
    weights = [lstm.weight_ih_l0, weight_hh, lstm.bias_ih_l0, lstm.bias_hh_l0]
    out, h, c = torch._VF.lstm(x, state, weights, True, 1, 0.0, lstm.training, False, False)
    return out, (h, c)


@dataclass(frozen=True)
class GateConfig:
    beta: float = 2.0 / 3.0
    gamma: float = -0.1
    zeta: float = 1.1
    log_alpha_init_mean: float = 1.0
    log_alpha_init_std: float = 0.1
    log_alpha_range: tuple[float, float] | None = LOUIZOS_LOG_ALPHA_RANGE
    # False: only layer 0's inputs have gates of their own; the input of layer k > 0 is gated once,
    # by the hidden gate of the layer below (which it is anyway), instead of twice (z_h[k-1] * z_x[k])
    inner_input_gates: bool = True


class GatedLSTM(nn.Module):
    """Time-major LSTM stack: input (T, B, input_size) -> output (T, B, hidden_sizes[-1]).

    The output is already multiplied by the last layer's hidden gates, so the
    consumer (decoder) sees exactly what an exported model's LSTM would give it.
    With `gated=False` it is a plain stack of `nn.LSTM` layers (the dense baseline,
    and the model an export loads into).
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: list[int],
        dropout: float = 0.0,
        gated: bool = True,
        gate_config: GateConfig = GateConfig(),
        input_sizes: list[int] | None = None,
    ) -> None:
        super().__init__()
        if not hidden_sizes or any(h <= 0 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive, got {hidden_sizes}")
        # A stack of single-layer LSTMs because pruned layers differ in size.
        self.input_sizes = list(input_sizes) if input_sizes else [input_size, *hidden_sizes[:-1]]
        self.hidden_sizes = list(hidden_sizes)
        self.layers = nn.ModuleList(
            nn.LSTM(i, h) for i, h in zip(self.input_sizes, self.hidden_sizes, strict=True)
        )
        self.dropout = nn.Dropout(dropout)
        self.gated = gated
        if gated:
            gc = gate_config
            kw = {"beta": gc.beta, "gamma": gc.gamma, "zeta": gc.zeta,
                  "log_alpha_init_mean": gc.log_alpha_init_mean,
                  "log_alpha_init_std": gc.log_alpha_init_std, "log_alpha_range": gc.log_alpha_range}
            gated_inputs = self.input_sizes if gc.inner_input_gates else self.input_sizes[:1]
            self.input_gates = nn.ModuleList(HardConcreteGate(i, **kw) for i in gated_inputs)
            self.hidden_gates = nn.ModuleList(HardConcreteGate(h, **kw) for h in self.hidden_sizes)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return [
            (torch.zeros(1, batch_size, h, device=device, dtype=dtype),
             torch.zeros(1, batch_size, h, device=device, dtype=dtype))
            for h in self.hidden_sizes
        ]

    def _per_layer_inputs(self, values: list[torch.Tensor]) -> list[torch.Tensor]:
        # layers without input gates of their own: a gate fixed at 1
        ones = [values[0].new_ones(i) for i in self.input_sizes[len(values):]]
        return [*values, *ones]

    def gate_values(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """One draw (training) or the test-time values (eval) of all gates, one vector per layer."""
        return self._per_layer_inputs([g() for g in self.input_gates]), [g() for g in self.hidden_gates]

    def deterministic_gates(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The test-time gate values, one vector per layer (what export folds in)."""
        return (self._per_layer_inputs([g.deterministic() for g in self.input_gates]),
                [g.deterministic() for g in self.hidden_gates])

    def gate_probs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """P(z != 0) of every gate, one vector per layer (1 where a layer's inputs have no gate)."""
        return (self._per_layer_inputs([g.prob_nonzero() for g in self.input_gates]),
                [g.prob_nonzero() for g in self.hidden_gates])

    def gates(self) -> list[HardConcreteGate]:
        return [*self.input_gates, *self.hidden_gates] if self.gated else []

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.init_state(x.shape[1], x.device, x.dtype)
        z_in, z_hid = self.gate_values() if self.gated else (None, None)
        new_state: State = []
        for k, lstm in enumerate(self.layers):
            x = self.dropout(x)
            if self.gated:
                # input gate of this layer, and the previous layer's hidden gate (its consumer side)
                col = z_in[k] if k == 0 else z_in[k] * z_hid[k - 1]
                x = x * col
                x, hc = lstm_with_weights(lstm, x, state[k], lstm.weight_hh_l0 * z_hid[k])
            else:
                x, hc = lstm(x, state[k])
            new_state.append(hc)
        if self.gated:
            x = x * z_hid[-1]
        return self.dropout(x), new_state

    # ---- the gates' expected size (what survives is export.neurons_kept) ---------------

    def expected_l0(self, penalty: str = "weights", input_alive: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable expected L0 under the gate distribution.

        penalty="weights": expected number of non-zero entries of all weight_ih and
        weight_hh matrices (biases, embedding and decoder excluded). For layer k with
        p = P(z_h != 0) and q_i = P(input i reaches the layer) = P(z_x,i != 0) *
        P(z_h,i of the layer below != 0):
            E[nnz weight_ih] = 4 * sum(p) * sum(q)
            E[nnz weight_hh] = 4 * E[n_h^2] = 4 * (sum(p)^2 - sum(p^2) + sum(p))
        (row j and column j of weight_hh share one gate, hence the exact second moment).
        penalty="neurons": expected number of open gates, sum of P(z != 0) over all gates.
        input_alive: P(input i of layer 0 is produced at all), when gated neurons of another
        module produce it (BiDAF: one LSTM reads another's output); default 1.
        Ungated: the actual count, as a constant.
        """
        if not self.gated:
            dense = sum(4 * h * (i + h) for i, h in zip(self.input_sizes, self.hidden_sizes))
            return torch.tensor(float(dense if penalty == "weights" else
                                      sum(self.input_sizes) + sum(self.hidden_sizes)))
        if penalty == "neurons":
            return sum(g.expected_open() for g in self.gates())
        if penalty != "weights":
            raise ValueError(f"unknown L0 penalty form {penalty!r}; use 'weights' or 'neurons'")
        total = 0.0
        probs_in, probs_hid = self.gate_probs()
        for k in range(self.num_layers):
            p, q = probs_hid[k], probs_in[k]
            if k > 0:
                q = q * probs_hid[k - 1]
            elif input_alive is not None:
                q = q * input_alive
            sp = p.sum()
            total = total + 4.0 * (sp * q.sum() + sp * sp - (p * p).sum() + sp)
        return total

    def gate_parameters(self) -> list[nn.Parameter]:
        if not self.gated:
            return []
        return [g.log_alpha for g in self.gates()]
