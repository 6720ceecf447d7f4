"""Neuron selection for any nn.LSTM / nn.GRU in a user's model, exported as smaller plain modules.

    model = add_neuron_gates(model)                  # every nn.LSTM / nn.GRU -> GatedRecurrent
    loss = task_loss + reg_lambda * l0_penalty(model)
    ...train; constrain_gates(model) after each optimizer step...
    small = remove_pruned_neurons(model)             # plain nn.LSTM / nn.GRU again, fewer neurons

`GatedRecurrent` is the suite's one gated RNN (gated_rnn.GatedRNN, which the language model and
BiDAF run too) behind nn.LSTM's / nn.GRU's interface: any num_layers, bidirectional or not,
batch_first or time-major, with or without biases, batched or not, with or without a given state.

Who reads an RNN's output (its "consumer") decides what removing a neuron means downstream:
  nn.Linear      its columns of the closed neurons go and the surviving gate values are folded
                 into the others: the Linear shrinks with the RNN;
  gated RNN      the same, folded into that RNN's first-layer weight_ih (two stacked RNNs);
  anything else  the RNN's output keeps its width: the kept neurons, times their gate values, are
                 scattered into zeros. A LayerNorm over the output, for one, counts the closed
                 neurons' zeros in its statistics, so it cannot simply be sliced; one log line
                 names every RNN this happens to.
The consumer is found by tracing the model's forward with torch.fx, RNNs as leaves: the RNN's
output tensor must reach exactly one module call, an nn.Linear (called nowhere else, weight not
shared) or a gated RNN (as its input), through nothing but ops that treat each feature on its
own and let a gate value through (indexing over time or batch, a batch/time transpose, a mean,
sum or max over time or batch, dropout, contiguous/clone). Tracing
sees every use of the tensor, so a second reader (a residual sum, an attention product) is never
missed, which forward hooks would miss; where tracing fails (data-dependent control flow) or the
output leaves the traced forward, the rule falls back to the scatter, which is always exact.
`consumers={"rnn": "fc"}` (or None: scatter) overrides it per RNN. The indexing rule assumes
batched (3-D) RNN outputs.

The returned state (h_n, and c_n for an LSTM) is the raw recurrent state, in nn.LSTM's layout:
what the next call continues from, exact across truncated-BPTT segments. In eval mode the
entries of closed neurons are 0, as in the exported model (which has no such neurons). The gate
scales the output sequence only: a model that reads h_n as features reads the raw values of kept
neurons, the same in both models.

The exported form of one RNN: a plain nn.LSTM / nn.GRU when every layer and direction keeps the
same number of neurons, no input is dropped, the output needs no scatter and h_n is not read
(its size shrinks with the module); otherwise a `PrunedRNN`, a container of single-layer plain
modules that takes and returns nn.LSTM's layout (h_n at the original width, zeros at removed
neurons).
"""

from __future__ import annotations

import copy
import itertools
import logging
import operator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.rnn import PackedSequence

from ..errors import UserError
from .gated_rnn import GateConfig, GatedRNN, cell_of, gate_rows
from .hard_concrete import HardConcreteGate

log = logging.getLogger(__name__)

# The gates' default initialisation: log_alpha ~ N(3, 0.1), as this suite's tasks. A test-time
# gate is 1 when log_alpha >= ln 11 (2.398) for the stretch (-0.1, 1.1): 6 standard deviations
# below the mean, so a freshly gated model computes what the original computed.
DEFAULT_GATE_CONFIG = GateConfig(log_alpha_init_mean=3.0)
_RNN_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_keys = itertools.count()


def _param_names(bias: bool) -> tuple[str, ...]:
    return _RNN_PARAMS if bias else _RNN_PARAMS[:2]


def _plain_module(cell: str, input_size: int, hidden_size: int, tensors: dict[str, torch.Tensor], *,
                  num_layers: int = 1, bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                  bidirectional: bool = False, requires_grad: bool = True,
                  share: bool = False) -> nn.LSTM | nn.GRU:
    """An nn.LSTM / nn.GRU holding `tensors` (by nn.LSTM's parameter names), built on the meta
    device so that its own random initialisation draws nothing from the user's RNG. share: the
    tensors are Parameters to keep (gating keeps the user's Parameters, so optimisers built
    before still hold them)."""
    cls = nn.LSTM if cell == "lstm" else nn.GRU
    module = cls(input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=batch_first,
                 dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional, device="meta")
    for name, t in tensors.items():
        # nn.RNNBase.__setattr__ also refreshes the kernel's weight list (_flat_weights)
        setattr(module, name, t if share else nn.Parameter(t.detach().contiguous().clone(), requires_grad))
    if not share:
        # not for shared Parameters: on CUDA flattening moves their storage into a new buffer, and
        # the gated kernel is given the weights one by one anyway
        module.flatten_parameters()
    return module


class GatedRecurrent(GatedRNN):
    """An nn.LSTM or nn.GRU with hard concrete gates on its neurons, and the same interface:
    forward(input, hx=None) -> (output, (h_n, c_n)) or (output, h_n).

    Layer k, direction d of the original is `layers[k * D + d]`, a single-layer module holding the
    original's Parameters (weight_ih_l{k}[_reverse] ...). Dropout goes where nn.LSTM puts it
    (between layers, in training).
    """

    def __init__(self, rnn: nn.LSTM | nn.GRU, gate_config: GateConfig = DEFAULT_GATE_CONFIG, name: str = "") -> None:
        cell = cell_of(rnn)
        d = 2 if rnn.bidirectional else 1
        layers = []
        for k in range(rnn.num_layers):
            for direction in range(d):
                suffix = f"_l{k}" + ("_reverse" if direction else "")
                tensors = {f"{n}_l0": getattr(rnn, n + suffix) for n in _param_names(rnn.bias)}
                layer = _plain_module(cell, rnn.input_size if k == 0 else d * rnn.hidden_size, rnn.hidden_size,
                                      tensors, bias=rnn.bias, share=True)
                layers.append(layer)
        super().__init__(rnn.input_size, [rnn.hidden_size] * rnn.num_layers, dropout=rnn.dropout, gated=True,
                         gate_config=gate_config, cell=cell, bidirectional=rnn.bidirectional, bias=rnn.bias,
                         dropout_between_layers=True, layers=layers)
        like = rnn.weight_ih_l0
        for gate in self.gates():
            gate.to(device=like.device, dtype=like.dtype)
        self.mode = cell.upper()
        self.input_size, self.hidden_size = rnn.input_size, rnn.hidden_size
        self.bidirectional, self.batch_first = rnn.bidirectional, rnn.batch_first
        self.source_name = name or type(rnn).__name__
        # links a consumer RNN to the RNN whose output it reads (for the penalty): plain strings,
        # so that they survive deepcopy and pickling, and any wrapping of the model
        self.link_key = f"{self.source_name}#{next(_keys)}"
        self.input_from: str | None = None
        self.train(rnn.training)

    def extra_repr(self) -> str:
        return (f"{self.mode}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first}, bias={self.bias})")

    def flatten_parameters(self) -> None:
        """nn.LSTM's method, which models call in their forward; the gated kernel needs nothing."""

    def forward(self, input: torch.Tensor, hx=None):
        if isinstance(input, PackedSequence):
            raise UserError(f"{self.source_name}: a gated {self.mode} takes a padded tensor, not a PackedSequence; "
                            "pass the padded batch (pad_packed_sequence) instead")
        if input.dim() not in (2, 3):
            raise ValueError(f"{self.mode}: expected a 2-D (unbatched) or 3-D input, got {input.dim()}-D")
        batched = input.dim() == 3
        x = input.transpose(0, 1) if batched and self.batch_first else input
        if not batched:
            x = x.unsqueeze(1)
        state = None
        if hx is not None:
            parts = hx if self.cell == "lstm" else (hx,)
            if not batched:
                parts = tuple(t.unsqueeze(1) for t in parts)
            d = self.directions
            state = [tuple(t[k * d:(k + 1) * d] for t in parts) for k in range(self.num_layers)]
        out, new_state = super().forward(x, state)
        parts = [torch.cat([s[i] for s in new_state]) for i in range(len(new_state[0]))]
        if not self.training and len(self.hidden_gates):
            # removed neurons have no state in the exported model: the same zeros here
            alive = torch.stack([g.deterministic() > 0 for g in self.hidden_gates])[:, None, :]
            parts = [t * alive for t in parts]
        if not batched:
            out, parts = out.squeeze(1), [t.squeeze(1) for t in parts]
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, (tuple(parts) if self.cell == "lstm" else parts[0])


class PrunedRNN(nn.Module):
    """An exported RNN whose layers or directions kept different numbers of neurons: single-layer
    plain nn.LSTM / nn.GRU modules (`layers[k * D + d]`) behind the original module's interface.

    Inputs: the original's (input of the original width, or of the producing RNN's kept neurons
    where that RNN shrank too; hx in the original layout). Output: the kept neurons of the last
    layer (raw: the consumer holds their gate values), or, where the consumer could not shrink,
    their gate-scaled values scattered into zeros at the original width. h_n (and c_n): the
    original layout, zeros at removed neurons.
    """

    def __init__(self, cell: str, layers: list[nn.Module], *, num_layers: int, bidirectional: bool,
                 batch_first: bool, hidden_size: int, kept: list[torch.Tensor],
                 input_index: list[torch.Tensor | None], out_index: torch.Tensor | None = None,
                 out_scale: torch.Tensor | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.cell, self.mode = cell, cell.upper()
        self.layers = nn.ModuleList(layers)
        self.num_layers, self.bidirectional, self.batch_first = num_layers, bidirectional, batch_first
        self.directions = 2 if bidirectional else 1
        self.hidden_size, self.dropout = hidden_size, dropout
        for i, idx in enumerate(kept):
            self.register_buffer(f"kept_{i}", idx)
        for k, idx in enumerate(input_index):
            self.register_buffer(f"input_index_{k}", idx)
        self.register_buffer("out_index", out_index)
        self.register_buffer("out_scale", out_scale)

    def extra_repr(self) -> str:
        sizes = [layer.hidden_size for layer in self.layers]
        return (f"{self.mode}, hidden sizes per layer and direction {sizes} (of {self.hidden_size}), "
                f"batch_first={self.batch_first}, scatter={self.out_index is not None}")

    def flatten_parameters(self) -> None:
        for layer in self.layers:
            layer.flatten_parameters()

    def forward(self, input: torch.Tensor, hx=None):
        if isinstance(input, PackedSequence):
            raise UserError(f"a pruned {self.mode} takes a padded tensor, not a PackedSequence")
        batched = input.dim() == 3
        x = input.transpose(0, 1) if batched and self.batch_first else input
        if not batched:
            x = x.unsqueeze(1)
        parts_in = None
        if hx is not None:
            parts_in = hx if self.cell == "lstm" else (hx,)
            if not batched:
                parts_in = tuple(t.unsqueeze(1) for t in parts_in)
        states = []
        d = self.directions
        for k in range(self.num_layers):
            if k > 0 and self.dropout and self.training:
                x = F.dropout(x, self.dropout, True)
            index = getattr(self, f"input_index_{k}")
            if index is not None:
                x = x.index_select(-1, index)
            outs = []
            for direction in range(d):
                i = k * d + direction
                kept = getattr(self, f"kept_{i}")
                s0 = None
                if parts_in is not None:
                    s0 = tuple(t[i:i + 1].index_select(-1, kept) for t in parts_in)
                    s0 = s0 if self.cell == "lstm" else s0[0]
                xin = x if direction == 0 else x.flip(0)
                out, s = self.layers[i](xin, s0)
                outs.append(out if direction == 0 else out.flip(0))
                states.append(s if self.cell == "lstm" else (s,))
            x = outs[0] if d == 1 else torch.cat(outs, -1)
        if self.out_index is not None:
            full = x.new_zeros(*x.shape[:-1], d * self.hidden_size)
            x = full.index_copy(-1, self.out_index, x * self.out_scale)
        parts = []
        for j in range(len(states[0])):
            full = x.new_zeros(len(states), x.shape[1], self.hidden_size)
            for i, s in enumerate(states):
                full[i].index_copy_(-1, getattr(self, f"kept_{i}"), s[j][0])
            parts.append(full)
        if not batched:
            x, parts = x.squeeze(1), [t.squeeze(1) for t in parts]
        elif self.batch_first:
            x = x.transpose(0, 1)
        return x, (tuple(parts) if self.cell == "lstm" else parts[0])


# ---- finding each RNN's consumer ------------------------------------------------------------

_RNN_TYPES = (nn.LSTM, nn.GRU, GatedRecurrent, PrunedRNN)


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _RNN_TYPES) or super().is_leaf_module(m, qualname)


@dataclass(frozen=True)
class Consumer:
    """Who reads an RNN's output sequence. kind: linear | rnn | other | unused. name: the consumer
    module's qualified name (linear, rnn), relative to the model. state_read: whether h_n is read
    (None: not known)."""

    kind: str
    name: str | None = None
    what: str = ""
    state_read: bool | None = None


def _keeps_features(index) -> bool:
    """Indexing that leaves the last axis of a 3-D (time, batch, features) tensor whole."""
    entries = index if isinstance(index, tuple) else (index,)
    if any(e is Ellipsis or e is None or not isinstance(e, (int, slice)) for e in entries):
        return False
    return len(entries) <= 2 or (len(entries) == 3 and entries[2] == slice(None))


_POOLS = ("mean", "sum", "amax")


def _pools_over_time_or_batch(node: fx.Node) -> bool:
    """A mean, sum or max over axes other than the features of a 3-D tensor: each feature is
    pooled on its own, and a non-negative gate value commutes with all three."""
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if len(node.args) > 2 or set(node.kwargs) - {"dim", "keepdim"}:
        return False
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return all(isinstance(d, int) and d in (0, 1, -2, -3) for d in dims)


def _passes_features(node: fx.Node, src: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether `node` maps `src` feature by feature, each gate value passing through unchanged
    (so that the RNN's consumer still reads feature j where the RNN wrote it, times z_j)."""
    if not node.args or node.args[0] is not src or any(a is src for a in node.args[1:]):
        return False
    if node.op == "call_module":
        return isinstance(modules.get(node.target), (nn.Dropout, nn.Identity))
    if node.op == "call_function":
        if node.target is operator.getitem:
            return _keeps_features(node.args[1])
        if node.target in (torch.mean, torch.sum, torch.amax):
            return _pools_over_time_or_batch(node)
        return node.target is F.dropout
    if node.op == "call_method":
        if node.target in ("contiguous", "clone", "detach"):
            return True
        if node.target in _POOLS:
            return _pools_over_time_or_batch(node)
        if node.target == "transpose":
            return set(node.args[1:]) == {0, 1} and not node.kwargs
    return False


def _analyse(node: fx.Node, modules: dict[str, nn.Module], calls: dict[str, int], shared_weights: set[int],
             rnn_types: tuple[type, ...]) -> Consumer:
    out_nodes, state_read = [], False
    for user in node.users:
        if user.op == "call_function" and user.target is operator.getitem and user.args[1] in (0, 1):
            if user.args[1] == 0:
                out_nodes.append(user)
            else:
                state_read = state_read or bool(user.users)
        else:
            return Consumer("other", what=f"{user.name}, which takes the (output, state) tuple whole")
    readers = [n for n in out_nodes if n.users]
    if not readers:
        return Consumer("unused", what="nothing", state_read=state_read)
    if len(readers) > 1:
        return Consumer("other", what="several operations", state_read=state_read)
    cur = readers[0]
    while True:
        users = list(cur.users)
        if len(users) != 1:
            return Consumer("other", what=f"{len(users)} operations", state_read=state_read)
        user = users[0]
        if _passes_features(user, cur, modules):
            cur = user
            continue
        if user.op == "output":
            return Consumer("other", what="the caller of the traced forward", state_read=state_read)
        if user.op == "call_module" and user.args and user.args[0] is cur:
            module = modules[user.target]
            once = calls[user.target] == 1 and not any(a is cur for a in user.args[1:])
            if isinstance(module, nn.Linear) and once and len(user.args) == 1 and not user.kwargs:
                if id(module.weight) in shared_weights or torch.nn.utils.parametrize.is_parametrized(module):
                    return Consumer("other", what=f"nn.Linear {user.target!r}, whose weight is shared or "
                                    "parametrized", state_read=state_read)
                return Consumer("linear", user.target, f"nn.Linear {user.target!r}", state_read)
            if isinstance(module, rnn_types) and once:
                return Consumer("rnn", user.target, f"RNN {user.target!r}", state_read)
            return Consumer("other", what=f"{type(module).__name__} {user.target!r}", state_read=state_read)
        return Consumer("other", what=f"{user.op} {getattr(user.target, '__name__', user.target)}",
                        state_read=state_read)


def find_consumers(model: nn.Module, rnn_names: list[str], rnn_types: tuple[type, ...]) -> dict[str, Consumer]:
    """The consumer of each named RNN (see the module docstring): from the outermost module whose
    forward torch.fx can trace and which calls the RNN. An RNN reading it counts as a consumer
    that shrinks if it is one of `rnn_types`."""
    traces: dict[str, tuple | None] = {}
    all_params = [p for _, p in model.named_parameters(remove_duplicate=False)]
    seen: dict[int, int] = {}
    for p in all_params:
        seen[id(p)] = seen.get(id(p), 0) + 1
    shared = {i for i, n in seen.items() if n > 1}

    def trace(prefix: str):
        if prefix not in traces:
            root = model.get_submodule(prefix) if prefix else model
            try:
                graph = _LeafTracer().trace(root)
            except Exception:  # noqa: BLE001 - any failure to trace means: not known, scatter
                traces[prefix] = None
            else:
                modules = dict(root.named_modules())
                calls: dict[str, int] = {}
                for n in graph.nodes:
                    if n.op == "call_module":
                        calls[n.target] = calls.get(n.target, 0) + 1
                traces[prefix] = (graph, modules, calls)
        return traces[prefix]

    found = {}
    for name in rnn_names:
        if not name:  # the model is the RNN
            found[name] = Consumer("other", what="the model's caller")
            continue
        parts = name.split(".")
        result = Consumer("other", what="a forward that torch.fx cannot trace")
        for depth in range(len(parts)):
            prefix = ".".join(parts[:depth])
            traced = trace(prefix)
            if traced is None:
                continue
            graph, modules, calls = traced
            target = ".".join(parts[depth:])
            nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == target]
            if not nodes:
                continue
            if len(nodes) > 1:
                result = Consumer("other", what=f"each of its {len(nodes)} calls")
            else:
                result = _analyse(nodes[0], modules, calls, shared, rnn_types)
                if result.name is not None and prefix:
                    result = replace(result, name=f"{prefix}.{result.name}")
            break
        found[name] = result
    return found


def _resolve_consumers(model: nn.Module, names: list[str], overrides: dict[str, str | None] | None,
                       rnn_types: tuple[type, ...]) -> dict[str, Consumer]:
    found = find_consumers(model, names, rnn_types)
    for name, target in (overrides or {}).items():
        if name not in names:
            raise UserError(f"consumers: {name!r} is not one of the model's RNNs ({', '.join(names) or 'none'})")
        if target is None:
            found[name] = Consumer("other", what="what consumers= leaves whole")
            continue
        try:
            module = model.get_submodule(target)
        except AttributeError:
            raise UserError(f"consumers: the model has no module {target!r} (given for {name!r})") from None
        if isinstance(module, nn.Linear):
            found[name] = Consumer("linear", target, f"nn.Linear {target!r}")
        elif isinstance(module, rnn_types):
            found[name] = Consumer("rnn", target, f"RNN {target!r}")
        else:
            raise UserError(f"consumers: {target!r} is a {type(module).__name__}; a consumer that shrinks is an "
                            "nn.Linear or a gated RNN (give None to keep the output's width)")
    return found


# ---- the public API -------------------------------------------------------------------------

def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def add_neuron_gates(model: nn.Module, *, input_gates: bool = True, hidden_gates: bool = True,
                     gate_config: GateConfig | None = None, skip: tuple[str, ...] | list[str] = (),
                     consumers: dict[str, str | None] | None = None) -> nn.Module:
    """Replace every nn.LSTM and nn.GRU in `model` (in place) by a GatedRecurrent; returns the
    model (the gated module itself when `model` is an RNN).

    input_gates: gates on each RNN's input features (and, with gate_config.inner_input_gates, on
    the inputs of its upper layers); hidden_gates: on every hidden neuron of every layer and
    direction. gate_config: the hard concrete distribution and log_alpha's initialisation
    (default N(3, 0.1): every test-time gate starts at 1, so the gated model computes exactly
    what the original computed). skip: names of RNNs to leave as they are. consumers: as for
    remove_pruned_neurons; here it only links an RNN to the gated RNN that reads its output, so
    that the penalty counts that RNN's input columns as the producing neurons survive.
    """
    config = replace(gate_config or DEFAULT_GATE_CONFIG, input_gates=input_gates, hidden_gates=hidden_gates)
    if not (input_gates or hidden_gates):
        raise UserError("add_neuron_gates: input_gates and hidden_gates are both off, so there is nothing to gate")
    skip = set(skip)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.LSTM, nn.GRU))]
    unknown = skip - set(names)
    if unknown:
        raise UserError(f"add_neuron_gates: skip names {sorted(unknown)}, which are not nn.LSTM / nn.GRU modules "
                        f"of the model ({', '.join(names) or 'none'})")
    targets = [n for n in names if n not in skip]
    already = any(isinstance(m, GatedRecurrent) for m in model.modules())
    if not targets:
        if already:
            return model  # gated before: nothing left to do
        raise UserError(f"add_neuron_gates: {type(model).__name__} has no nn.LSTM or nn.GRU to gate")
    for name in targets:
        rnn = model.get_submodule(name) if name else model
        label = name or type(rnn).__name__
        if type(rnn).forward not in (nn.LSTM.forward, nn.GRU.forward):
            raise UserError(f"add_neuron_gates: {label} ({type(rnn).__name__}) has a forward of its own, which the "
                            f"gated module would not run; leave it out with skip=[{name!r}]")
        if getattr(rnn, "proj_size", 0):
            raise UserError(f"add_neuron_gates: {label} is an LSTM with proj_size={rnn.proj_size}, whose hidden "
                            f"neurons are projected before they are read, so they cannot be gated; leave it out "
                            f"with skip=[{name!r}]")
        if torch.nn.utils.parametrize.is_parametrized(rnn):
            raise UserError(f"add_neuron_gates: {label} has parametrized weights (weight_norm, ...), which the "
                            f"gated module would bypass; remove the parametrization or leave it out with "
                            f"skip=[{name!r}]")
    # links between RNNs need two of them; a lone RNN's consumer matters only at export
    linked = len(targets) > 1 or consumers
    found = _resolve_consumers(model, names, consumers, (nn.LSTM, nn.GRU, GatedRecurrent)) if linked else {}
    gated = {}
    for name in targets:
        rnn = model.get_submodule(name) if name else model
        gated[name] = GatedRecurrent(rnn, config, name)
    for name, c in found.items():
        if name in gated and c.kind == "rnn" and c.name in gated:
            gated[c.name].input_from = gated[name].link_key
    if "" in gated:
        return gated[""]
    for name, module in gated.items():
        _set_submodule(model, name, module)
    return model


def gated_modules(model: nn.Module) -> dict[str, GatedRNN]:
    """Every gated RNN in `model` by qualified name (the public API's and the suite's own)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, GatedRNN) and m.gated}


def l0_penalty(model: nn.Module) -> torch.Tensor:
    """The paper's penalty, in its units: the expected number of non-zero RNN weights (weight_ih
    and weight_hh; biases excluded) over all gated modules, differentiable in the gates. An input
    column of an RNN that reads another gated RNN's output counts as that neuron survives."""
    modules = list(gated_modules(model).values())
    if not modules:
        raise UserError(f"l0_penalty: {type(model).__name__} has no gated RNN; call add_neuron_gates(model) first")
    by_key = {m.link_key: m for m in modules if isinstance(m, GatedRecurrent)}
    total = 0.0
    for m in modules:
        alive = None
        source = by_key.get(getattr(m, "input_from", None))
        if source is not None:
            probs = source.output_probs()
            alive = probs if probs is not None and probs.numel() == m.input_sizes[0] else None
        total = total + m.expected_l0("weights", alive)
    return total


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every gate's log_alpha (for their own optimiser or parameter group)."""
    return [m.log_alpha for m in model.modules() if isinstance(m, HardConcreteGate)]


@torch.no_grad()
def constrain_gates(model: nn.Module) -> None:
    """Clamp every log_alpha to its range; call after each optimizer step, as this suite does."""
    for m in model.modules():
        if isinstance(m, HardConcreteGate):
            m.constrain_()


def neurons_kept(model: nn.Module) -> dict[str, dict[str, list[int]]]:
    """Per gated RNN: inputs kept per layer and hidden neurons kept per layer and direction
    (layer k, direction d at k * D + d), read off the test-time gates."""
    out = {}
    with torch.no_grad():
        for name, m in gated_modules(model).items():
            z_in, z_hid = m.deterministic_gates()
            out[name] = {"input": [int((z > 0).sum()) for z in z_in], "hidden": [int((z > 0).sum()) for z in z_hid]}
    return out


@dataclass
class _Plan:
    z_in: list[torch.Tensor]
    z_hid: list[torch.Tensor]
    keep: list[torch.Tensor]
    out_keep: torch.Tensor
    out_scale: torch.Tensor
    consumer: Consumer


def _layer_name(m: GatedRecurrent, i: int) -> str:
    k, d = divmod(i, m.directions)
    return f"layer {k}" + (" (reverse)" if d else "")


def _rebuild(m: GatedRecurrent, plan: _Plan, producer: _Plan | None) -> tuple[nn.Module, bool]:
    """The plain replacement of `m`; returns it and whether it scatters its output."""
    D, blocks = m.directions, m.blocks
    names = _param_names(m.bias)
    tensors: list[dict[str, torch.Tensor]] = []
    input_index: list[torch.Tensor | None] = []
    for k in range(m.num_layers):
        if k == 0:
            arriving = torch.nonzero(producer.out_keep).flatten() if producer is not None else None
            scale = plan.z_in[0] if arriving is None else plan.z_in[0][arriving] * producer.out_scale[arriving]
        else:
            below = torch.cat(plan.keep[(k - 1) * D:k * D])
            arriving = torch.nonzero(below).flatten()
            scale = plan.z_in[k][arriving] * m.layer_output(plan.z_hid, k - 1)[arriving]
        alive = scale > 0
        cols = torch.nonzero(alive).flatten() if arriving is None else arriving[alive]
        input_index.append(None if bool(alive.all()) else torch.nonzero(alive).flatten())
        for d in range(D):
            i = k * D + d
            layer, keep = m.layers[i], plan.keep[i]
            rows = gate_rows(keep, blocks)
            t = {"weight_ih": layer.weight_ih_l0[rows][:, cols] * scale[alive],
                 "weight_hh": layer.weight_hh_l0[rows][:, keep] * plan.z_hid[i][keep]}
            if m.bias:
                t["bias_ih"], t["bias_hh"] = layer.bias_ih_l0[rows], layer.bias_hh_l0[rows]
            tensors.append(t)
    c = plan.consumer
    scatter = c.kind not in ("linear", "rnn", "unused") and not (bool(plan.out_keep.all())
                                                                 and bool((plan.out_scale == 1).all()))
    sizes = {int(k.sum()) for k in plan.keep}
    requires_grad = m.layers[0].weight_ih_l0.requires_grad
    width0 = tensors[0]["weight_ih"].shape[1]
    if len(sizes) == 1 and all(i is None for i in input_index) and not scatter and (
            c.state_read is False or sizes == {m.hidden_size}):
        h = sizes.pop()
        flat = {}
        for i, t in enumerate(tensors):
            k, d = divmod(i, D)
            for n in names:
                flat[f"{n}_l{k}" + ("_reverse" if d else "")] = t[n]
        module = _plain_module(m.cell, width0, h, flat, num_layers=m.num_layers, bias=m.bias,
                               batch_first=m.batch_first, dropout=m.dropout.p, bidirectional=m.bidirectional,
                               requires_grad=requires_grad)
        return module.train(m.training), False
    layers = [_plain_module(m.cell, t["weight_ih"].shape[1], t["weight_hh"].shape[0] // blocks,
                            {f"{n}_l0": t[n] for n in names}, bias=m.bias, requires_grad=requires_grad)
              for t in tensors]
    out_index = torch.nonzero(plan.out_keep).flatten() if scatter else None
    out_scale = plan.out_scale[plan.out_keep].detach().clone() if scatter else None
    module = PrunedRNN(m.cell, layers, num_layers=m.num_layers, bidirectional=m.bidirectional,
                       batch_first=m.batch_first, hidden_size=m.hidden_size,
                       kept=[torch.nonzero(k).flatten() for k in plan.keep], input_index=input_index,
                       out_index=out_index, out_scale=out_scale, dropout=m.dropout.p)
    return module.train(m.training), scatter


def remove_pruned_neurons(model: nn.Module, *, consumers: dict[str, str | None] | None = None) -> nn.Module:
    """A copy of `model` in which every GatedRecurrent has become plain nn.LSTM / nn.GRU modules.

    Closed neurons (test-time gate 0) are removed per layer and per direction, and the surviving
    gate values are folded into the weights: the copy computes, in eval mode, what the gated
    model computes (float rounding aside). The consumer of each RNN's output (module docstring)
    shrinks with it where it is an nn.Linear or a gated RNN. consumers: {rnn name: consumer
    name or None (keep the output's width)} overrides what tracing finds.
    """
    pruned = copy.deepcopy(model)
    gated = {n: m for n, m in pruned.named_modules() if isinstance(m, GatedRecurrent)}
    if not gated:
        raise UserError(f"remove_pruned_neurons: {type(model).__name__} has no gated RNN; "
                        "call add_neuron_gates(model) and train it first")
    found = _resolve_consumers(pruned, list(gated), consumers, (GatedRecurrent,))
    plans: dict[str, _Plan] = {}
    with torch.no_grad():
        for name, m in gated.items():
            z_in, z_hid = m.deterministic_gates()
            keep = [z > 0 for z in z_hid]
            for i, k in enumerate(keep):
                if not k.any():
                    raise UserError(f"remove_pruned_neurons: every hidden neuron of {name or m.source_name}'s "
                                    f"{_layer_name(m, i)} is closed, so it cannot be exported; lower reg_lambda")
            last = m.num_layers - 1
            plans[name] = _Plan(z_in, z_hid, keep, m.layer_output(keep, last), m.layer_output(z_hid, last),
                                found[name])
        producer_of = {p.consumer.name: n for n, p in plans.items() if p.consumer.kind == "rnn"}
        replacements, scattered = {}, []
        for name, m in gated.items():
            source = producer_of.get(name)
            module, scatter = _rebuild(m, plans[name], plans[source] if source is not None else None)
            replacements[name] = module
            if scatter:
                scattered.append(f"{name or m.source_name}'s output is read by {plans[name].consumer.what}")
        for plan in plans.values():
            if plan.consumer.kind == "linear":
                linear = pruned.get_submodule(plan.consumer.name)
                keep, scale = plan.out_keep, plan.out_scale
                linear.weight = nn.Parameter(linear.weight[:, keep] * scale[keep],
                                             requires_grad=linear.weight.requires_grad)
                linear.in_features = int(keep.sum())
    if scattered:
        log.warning("remove_pruned_neurons: %s, so it keeps its width, the kept neurons scattered into zeros: only "
                    "an nn.Linear or a gated RNN reader shrinks with it (a LayerNorm, for one, counts the closed "
                    "neurons' zeros in its statistics, so it cannot simply be sliced)", "; ".join(scattered))
    if "" in replacements:
        return replacements[""]
    for name, module in replacements.items():
        _set_submodule(pruned, name, module)
    return pruned


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
