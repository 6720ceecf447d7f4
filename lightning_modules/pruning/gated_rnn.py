"""A stack of LSTM or GRU layers whose input and hidden neurons are gated by hard concrete gates.

The one implementation of gating in this suite: the language model (GatedLSTM / GatedGRU), BiDAF
(one GatedLSTM per direction) and the public API for any nn.LSTM / nn.GRU (neuron_selection.py)
all run this forward and this expected L0.

Semantics (the "gate on a neuron's output" reading of the paper):
  - input gate z_x[k][i] multiplies input neuron i of layer k;
  - hidden gate z_h[k][j] multiplies hidden neuron j of layer k wherever its output
    h_j is consumed: the recurrent input of layer k (column j of weight_hh) and the
    next layer's input (column j of its weight_ih) or the decoder.
When z_h[k][j] == 0 nothing reads h_j, so its gate rows in weight_ih and weight_hh (one per
gate block: i, f, g, o for an LSTM; r, z, n for a GRU) and its biases are dead too: export
removes the rows and the columns, which is exactly one ISS component (Wen et al. 2018). The
rows themselves are not scaled by the gate, so a gate value in (0, 1) means "h_j is scaled",
nothing else. For a GRU this also covers b_hn, which PyTorch puts inside r * (W_hn h + b_hn):
the gate scales h before W_hn reads it and leaves b_hn alone, so export only selects its rows.

Bidirectional stacks have one hidden gate vector per layer and direction (layer k, direction d
is `layers[k * D + d]`, D = 2) and one input gate vector per layer, shared by both directions:
an input neuron is one neuron, whichever direction reads it.

Speed: the recurrent gate is applied as a column mask on weight_hh once per call,
then the fused kernel (the one nn.LSTM / nn.GRU call) runs over all time steps. The
non-recurrent gates (inputs, and the hidden gate on the next consumer) are applied to the
activations, which is the same product as a column mask on the consumer's weight but costs
T*B*n instead of blocks*H*n multiplications.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .hard_concrete import LOUIZOS_LOG_ALPHA_RANGE, HardConcreteGate

# Per layer: (h, c) for an LSTM, (h,) for a GRU; each (directions, batch, hidden).
State = list[tuple[torch.Tensor, ...]]

CELLS = ("lstm", "gru")
_MODULES = {"lstm": nn.LSTM, "gru": nn.GRU}
_BLOCKS = {"lstm": 4, "gru": 3}

# cuDNN's note that it copies weights which are not one flat buffer: expected for the masked
# recurrent weight (see run_layer), which is a new tensor on every call
warnings.filterwarnings("ignore", message=r"RNN module weights are not part of single contiguous chunk")


def cell_of(module: nn.Module) -> str:
    """"lstm" or "gru" for an nn.LSTM / nn.GRU (or a subclass)."""
    for cell, cls in _MODULES.items():
        if isinstance(module, cls):
            return cell
    raise TypeError(f"{type(module).__name__} is neither an nn.LSTM nor an nn.GRU")


def gate_blocks(cell_or_module: str | nn.Module) -> int:
    """Rows per hidden neuron in weight_ih / weight_hh: 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)."""
    cell = cell_or_module if isinstance(cell_or_module, str) else cell_of(cell_or_module)
    return _BLOCKS[cell]


def gate_rows(keep: torch.Tensor, blocks: int) -> torch.Tensor:
    """Row indices, in every gate block, of the hidden neurons `keep` (a boolean mask) marks."""
    hidden = keep.numel()
    idx = torch.nonzero(keep).flatten()
    return torch.cat([idx + g * hidden for g in range(blocks)])


def run_layer(cell: str, x: torch.Tensor, state: tuple[torch.Tensor, ...], weights: list[torch.Tensor],
              *, has_biases: bool, bidirectional: bool, train: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One time-major layer (both directions when bidirectional) run on `weights`: per direction
    [weight_ih, weight_hh, bias_ih, bias_hh] (no biases when has_biases is False).

    The kernel nn.LSTM.forward / nn.GRU.forward call, called directly. Not
    torch.func.functional_call: given a new weight, nn.LSTM re-flattens all its weights into a new
    cuDNN buffer on every call and moves its Parameters' storage there (Tensor.set_). A captured
    CUDA graph (lightning_modules/fused_step.py) would then keep copying the weights from where
    they were at capture time, so weight_ih and the biases would silently stop training. Same
    kernel and inputs, so the same numbers (bitwise, tests/test_gated_gru.py)."""
    if cell == "lstm":
        out, h, c = torch._VF.lstm(x, state, weights, has_biases, 1, 0.0, train, bidirectional, False)
        return out, (h, c)
    out, h = torch._VF.gru(x, state[0], weights, has_biases, 1, 0.0, train, bidirectional, False)
    return out, (h,)


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
    # False: no input gates at all (the stack's inputs are never removed)
    input_gates: bool = True
    # False: no hidden gates (hidden neurons are never removed)
    hidden_gates: bool = True


class GatedRNN(nn.Module):
    """Time-major LSTM or GRU stack: input (T, B, input_size) -> output (T, B, D * hidden_sizes[-1]).

    The output is already multiplied by the last layer's hidden gates, so the
    consumer (decoder) sees exactly what an exported model's RNN would give it.
    With `gated=False` it is a plain stack of single-layer `nn.LSTM` / `nn.GRU` modules (the
    dense baseline, and the model an export loads into).

    dropout: on the input of every layer and on the output (the language model's placement);
    with `dropout_between_layers=True` only between layers, where nn.LSTM(dropout=p) puts it.
    layers: ready single-layer modules (in `layers[k * D + d]` order) instead of new ones, so that
    gating an existing nn.LSTM / nn.GRU keeps its Parameters and draws no random numbers for them.
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: list[int],
        dropout: float = 0.0,
        gated: bool = True,
        gate_config: GateConfig = GateConfig(),
        input_sizes: list[int] | None = None,
        *,
        cell: str = "lstm",
        bidirectional: bool = False,
        bias: bool = True,
        dropout_between_layers: bool = False,
        layers: list[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if not hidden_sizes or any(h <= 0 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive, got {hidden_sizes}")
        self.cell = cell
        self.directions = 2 if bidirectional else 1
        self.bias = bias
        self.dropout_between_layers = dropout_between_layers
        # Single-layer modules because pruned layers (and directions) differ in size.
        d = self.directions
        self.input_sizes = list(input_sizes) if input_sizes else [input_size, *[d * h for h in hidden_sizes[:-1]]]
        self.hidden_sizes = list(hidden_sizes)
        if layers is None:
            cls = _MODULES[cell]
            kw = {} if bias else {"bias": False}
            layers = [cls(i, h, **kw) for i, h in zip(self.input_sizes, self.hidden_sizes, strict=True)
                      for _ in range(d)]
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.gated = gated
        if gated:
            gc = gate_config
            if not (gc.input_gates or gc.hidden_gates):
                raise ValueError("a gated RNN needs input gates, hidden gates or both")
            kw = {"beta": gc.beta, "gamma": gc.gamma, "zeta": gc.zeta,
                  "log_alpha_init_mean": gc.log_alpha_init_mean,
                  "log_alpha_init_std": gc.log_alpha_init_std, "log_alpha_range": gc.log_alpha_range}
            gated_inputs = self.input_sizes if gc.inner_input_gates else self.input_sizes[:1]
            if not gc.input_gates:
                gated_inputs = []
            self.input_gates = nn.ModuleList(HardConcreteGate(i, **kw) for i in gated_inputs)
            hidden = [h for h in self.hidden_sizes for _ in range(d)] if gc.hidden_gates else []
            self.hidden_gates = nn.ModuleList(HardConcreteGate(h, **kw) for h in hidden)

    @property
    def num_layers(self) -> int:
        return len(self.layers) // self.directions

    @property
    def blocks(self) -> int:
        return _BLOCKS[self.cell]

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        parts = 2 if self.cell == "lstm" else 1
        return [tuple(torch.zeros(self.directions, batch_size, h, device=device, dtype=dtype) for _ in range(parts))
                for h in self.hidden_sizes]

    # ---- gate values, one vector per layer (inputs) and per layer and direction (hidden) ----

    def _per_layer_inputs(self, values: list[torch.Tensor], like: torch.Tensor) -> list[torch.Tensor]:
        # layers without input gates of their own: a gate fixed at 1
        ones = [like.new_ones(i) for i in self.input_sizes[len(values):]]
        return [*values, *ones]

    def _per_layer_hidden(self, values: list[torch.Tensor], like: torch.Tensor) -> list[torch.Tensor]:
        if values:
            return values
        return [like.new_ones(h) for h in self.hidden_sizes for _ in range(self.directions)]

    def _gate_vectors(self, fn) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        z_in = [fn(g) for g in self.input_gates]
        z_hid = [fn(g) for g in self.hidden_gates]
        like = (z_in or z_hid)[0]
        return self._per_layer_inputs(z_in, like), self._per_layer_hidden(z_hid, like)

    def gate_values(self, draw=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """One draw (training) or the test-time values (eval) of all gates. `draw(n)`: the uniform
        noise of the next gate vector, in this order (default: each gate draws its own)."""
        if draw is None:
            return self._gate_vectors(lambda g: g())
        return self._gate_vectors(lambda g: g(draw(g.n) if g.training and not g.frozen else None))

    def deterministic_gates(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The test-time gate values (what export folds in)."""
        return self._gate_vectors(lambda g: g.deterministic())

    def gate_probs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """P(z != 0) of every gate (1 where a neuron has no gate)."""
        return self._gate_vectors(lambda g: g.prob_nonzero())

    def gates(self) -> list[HardConcreteGate]:
        return [*self.input_gates, *self.hidden_gates] if self.gated else []

    def layer_output(self, per_direction: list[torch.Tensor], k: int) -> torch.Tensor:
        """Layer k's vector over its output neurons (both directions' in order) from one per direction."""
        if self.directions == 1:
            return per_direction[k]
        return torch.cat(per_direction[k * self.directions:(k + 1) * self.directions])

    # ---- forward ----------------------------------------------------------------------

    def _weights(self, k: int, z_hid: list[torch.Tensor] | None) -> list[torch.Tensor]:
        weights = []
        for d in range(self.directions):
            layer = self.layers[k * self.directions + d]
            w_hh = layer.weight_hh_l0 if z_hid is None else layer.weight_hh_l0 * z_hid[k * self.directions + d]
            weights += [layer.weight_ih_l0, w_hh]
            if self.bias:
                weights += [layer.bias_ih_l0, layer.bias_hh_l0]
        return weights

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.init_state(x.shape[1], x.device, x.dtype)
        z_in, z_hid = self.gate_values() if self.gated else (None, None)
        new_state: State = []
        last = self.num_layers - 1
        for k in range(self.num_layers):
            if k > 0 or not self.dropout_between_layers:
                x = self.dropout(x)
            layer = self.layers[k * self.directions]
            if self.gated:
                # input gate of this layer, and the previous layer's hidden gate (its consumer side)
                col = z_in[k] if k == 0 else z_in[k] * self.layer_output(z_hid, k - 1)
                x = x * col
                x, s = run_layer(self.cell, x, state[k], self._weights(k, z_hid), has_biases=self.bias,
                                 bidirectional=self.directions == 2, train=layer.training)
            elif self.directions == 1:
                # the module's own forward: its flat cuDNN weight buffer, no copy per call
                x, s = layer(x, state[k] if self.cell == "lstm" else state[k][0])
                s = s if self.cell == "lstm" else (s,)
            else:
                x, s = run_layer(self.cell, x, state[k], self._weights(k, None), has_biases=self.bias,
                                 bidirectional=True, train=layer.training)
            new_state.append(s)
        if self.gated:
            x = x * self.layer_output(z_hid, last)
        if not self.dropout_between_layers:
            x = self.dropout(x)
        return x, new_state

    # ---- the gates' expected size (what survives is read off the test-time gates) ------

    def output_probs(self) -> torch.Tensor | None:
        """P(z != 0) of the output neurons (the last layer's hidden gates), None if they have none."""
        if not self.gated or not len(self.hidden_gates):
            return None
        return self.layer_output([g.prob_nonzero() for g in self.hidden_gates], self.num_layers - 1)

    def expected_l0(self, penalty: str = "weights", input_alive: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable expected L0 under the gate distribution.

        penalty="weights": expected number of non-zero entries of all weight_ih and
        weight_hh matrices (biases, embedding and decoder excluded). For layer k and direction d,
        with p = P(z_h != 0), q_i = P(input i reaches the layer) = P(z_x,i != 0) *
        P(z_h,i of the layer below != 0) and b gate blocks (4 LSTM, 3 GRU):
            E[nnz weight_ih] = b * sum(p) * sum(q)
            E[nnz weight_hh] = b * E[n_h^2] = b * (sum(p)^2 - sum(p^2) + sum(p))
        (row j and column j of weight_hh share one gate, hence the exact second moment).
        penalty="neurons": expected number of open gates, sum of P(z != 0) over all gates.
        input_alive: P(input i of layer 0 is produced at all), when gated neurons of another
        module produce it (BiDAF: one LSTM reads another's output); default 1.
        Ungated: the actual count, as a constant.
        """
        b = self.blocks
        if not self.gated:
            dense = sum(self.directions * b * h * (i + h) for i, h in zip(self.input_sizes, self.hidden_sizes))
            return torch.tensor(float(dense if penalty == "weights" else
                                      sum(self.input_sizes) + self.directions * sum(self.hidden_sizes)))
        if penalty == "neurons":
            return sum(g.expected_open() for g in self.gates())
        if penalty != "weights":
            raise ValueError(f"unknown L0 penalty form {penalty!r}; use 'weights' or 'neurons'")
        total = 0.0
        probs_in, probs_hid = self.gate_probs()
        for k in range(self.num_layers):
            q = probs_in[k]
            if k > 0:
                q = q * self.layer_output(probs_hid, k - 1)
            elif input_alive is not None:
                q = q * input_alive
            sq = q.sum()
            for d in range(self.directions):
                p = probs_hid[k * self.directions + d]
                sp = p.sum()
                total = total + float(b) * (sp * sq + sp * sp - (p * p).sum() + sp)
        return total

    def gate_parameters(self) -> list[nn.Parameter]:
        if not self.gated:
            return []
        return [g.log_alpha for g in self.gates()]


class GatedLSTM(GatedRNN):
    """A GatedRNN of LSTM layers (the language model's and BiDAF's)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, cell="lstm", **kwargs)


class GatedGRU(GatedRNN):
    """A GatedRNN of GRU layers."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, cell="gru", **kwargs)
