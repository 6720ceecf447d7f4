"""Several PTB language models of one architecture trained as one batched model.

Why
---
The runs of one comparison (dense, L0, ISS, magnitude, the direct design, other seeds) share the
architecture, the data order and the recipe. Trained one by one, or packed in one process, each
run's step is a chain of small dependent kernels (35 time steps x 2 layers, forward and backward)
that leaves a GPU mostly waiting. Here the members' weights are stacked at every step, so each
time step is one batched matmul (`baddbmm`) for all R members: R runs at close to the latency of
one. The embedding lookups, the decoder and the loss are batched too, and the whole step can be
captured as one CUDA graph (`CapturedStep`, lightning_modules/fused_step.py).

What stays each member's own
----------------------------
Its parameters (its own nn.Modules, as a run alone has them: the stack is rebuilt from them at
every step, so autograd hands each member only its own gradient), its pruning method (penalty,
thresholding, masks, gate freeze), its gradient-norm clip, learning rate and schedule, its
optimiser state, its hidden state, its random numbers and its metrics. A member with smaller
layers (the direct design) is padded with zeros: its padded rows and columns are not parameters,
so they stay exactly zero, and a zero-padded LSTM unit outputs exactly 0 (c stays 0, h = o * tanh 0).

Random numbers
--------------
Each member draws from a counter-based stream (`CounterNoise`): a hash of (member seed, optimizer
step, draw site, element index) computed with integer tensor ops. So a member's gate noise and
dropout masks depend on nothing but its own seed and step: not on the other members, not on the
device, and not on a generator's state (a resume needs no RNG state, and a captured CUDA graph
reads the step from device memory). The draw sites follow a run alone's order: the gates (input
gates, then hidden gates, as GatedRNN.gate_values draws them), then dropout on each layer's input
and on the output. A member therefore does not equal its run alone bit for bit: it draws other
numbers (from the same distributions), and batched kernels sum in another order. With the same
draws injected into both, they agree to float tolerance (tests/test_train_batched.py).

Precision groups
----------------
Matmul precision is a process-wide switch. Members of another precision (the TF32 controls of an
fp32 comparison) form their own group: each group runs its forward and backward under its own
flags, one after the other, inside the same step (and the same graph).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from ..fused_step import CapturedStep, DeviceMean, TensorLRUpdate, clip_grad_norm_tensor_
from ..pruning.pruning_methods import PruningMethod
from .language_model import LSTMLanguageModel

_M32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # < 2**27: a product with a 32-bit value never leaves int64's range


def _mix32(x):
    """A 32-bit integer hash (xor-shift-multiply rounds); for Python ints and int64 tensors alike."""
    x = x ^ (x >> 16)
    x = (x * _MIX) & _M32
    x = x ^ (x >> 16)
    x = (x * _MIX) & _M32
    return x ^ (x >> 16)


class CounterNoise:
    """One member's random numbers: uniform(site, shape) is a function of (seed, step, site, index).

    `step` is a device tensor that the training step advances, so a replayed CUDA graph draws new
    numbers at every step. Values lie in (0, 1) on a grid of 2**-24 (float32's resolution in [0.5, 1))."""

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.seed = int(seed) & _M32
        self.step = torch.zeros((), dtype=torch.int64, device=device)
        self._index: dict[int, torch.Tensor] = {}

    def uniform(self, site: int, shape: tuple[int, ...]) -> torch.Tensor:
        n = math.prod(shape)
        index = self._index.get(n)
        if index is None:  # cached: in a captured step, an arange per draw would be one more kernel
            index = self._index[n] = torch.arange(n, dtype=torch.int64, device=self.step.device)
        site_key = _mix32(_mix32(self.seed) ^ (site * 0x9E3779B & _M32))
        key = _mix32((self.step & _M32) ^ site_key)
        bits = _mix32(_mix32(index ^ key) ^ site_key)
        return ((bits >> 8).to(torch.float32) + 0.5).mul_(2.0 ** -24).view(shape)


class SiteDraws:
    """The draws of one forward pass of one member, site after site, in a run alone's order."""

    def __init__(self, noise: CounterNoise) -> None:
        self.noise, self.site = noise, 0

    def __call__(self, shape: tuple[int, ...] | int) -> torch.Tensor:
        u = self.noise.uniform(self.site, (shape,) if isinstance(shape, int) else tuple(shape))
        self.site += 1
        return u

    def dropout(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """F.dropout's arithmetic (x * (keep / (1 - p))) with this stream's mask."""
        if p == 0.0:
            return x
        keep = (self(x.shape) >= p).to(x.dtype)
        return x * keep.div_(1.0 - p)


def _pad_blocks(w: torch.Tensor, blocks: int, hidden: int, cols: int | None = None) -> torch.Tensor:
    """A gate-block matrix (blocks * h, c) or vector (blocks * h) zero-padded to (blocks * hidden, cols)."""
    h = w.shape[0] // blocks
    if w.dim() == 1:
        return F.pad(w.view(blocks, h), (0, hidden - h)).reshape(blocks * hidden)
    return F.pad(w.view(blocks, h, w.shape[1]), (0, cols - w.shape[1], 0, hidden - h)).reshape(blocks * hidden, cols)


class BatchedLM(nn.Module):
    """The forward pass of R LSTM language models (LSTMLanguageModel, gated or not) on one batch of
    tokens: stacked (zero-padded) weights, one baddbmm per time step and layer for all members.

    The members stay their own modules (registered here only as a list to move with `.to`)."""

    def __init__(self, models: list[LSTMLanguageModel]) -> None:
        super().__init__()
        if not models:
            raise ValueError("a batched model needs at least one member")
        self.members = nn.ModuleList(models)
        first = models[0]
        for m in models:
            if m.cell != "lstm" or m.rnn.directions != 1 or not m.rnn.bias:
                raise ValueError("the batched trainer trains unidirectional LSTM language models with biases")
            if m.vocab_size != first.vocab_size or m.rnn.num_layers != first.rnn.num_layers:
                raise ValueError("batched members need the same vocabulary and number of layers")
        self.num_layers = first.rnn.num_layers
        self.embedding_dim = max(m.embedding.embedding_dim for m in models)
        self.hidden_sizes = [max(m.rnn.hidden_sizes[k] for m in models) for k in range(self.num_layers)]
        self.input_sizes = [self.embedding_dim, *self.hidden_sizes[:-1]]

    def init_state(self, batch_size: int, device, dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        r = len(self.members)
        return [(torch.zeros(r, batch_size, h, device=device, dtype=dtype),
                 torch.zeros(r, batch_size, h, device=device, dtype=dtype)) for h in self.hidden_sizes]

    def member_state(self, state, r: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Member r's (h, c) per layer, in a run alone's shape (1, B, its hidden size)."""
        sizes = self.members[r].rnn.hidden_sizes
        return [(h[r:r + 1, :, :n].clone(), c[r:r + 1, :, :n].clone()) for (h, c), n in zip(state, sizes)]

    def load_member_state(self, state, r: int, saved) -> None:
        for (h, c), (h_new, c_new) in zip(state, saved):
            n = h_new.shape[-1]
            h[r].zero_()
            c[r].zero_()
            h[r, :, :n].copy_(h_new[0])
            c[r, :, :n].copy_(c_new[0])

    def forward(self, tokens: torch.Tensor, state, draws: list[SiteDraws] | None = None):
        """tokens (B, T) -> logits (R, B, T, V) and the new state ((R, B, H) per layer).

        draws: each member's noise stream, for members in training mode whose gates or dropout draw;
        None: every member is in eval mode (deterministic gates, no dropout)."""
        r_all = range(len(self.members))
        rnns = [m.rnn for m in self.members]
        gates = []
        for r in r_all:
            rnn = rnns[r]
            draw = draws[r] if draws is not None else None
            gates.append(rnn.gate_values(draw) if rnn.gated else (None, None))
        steps = tokens.t()  # time-major, as LSTMLanguageModel
        x = torch.stack([F.pad(m.embedding(steps), (0, self.embedding_dim - m.embedding.embedding_dim))
                         for m in self.members])
        new_state = []
        for k in range(self.num_layers):
            inputs = []
            for r in r_all:
                m, (z_in, z_hid) = self.members[r], gates[r]
                xr = x[r, ..., :m.rnn.input_sizes[k]]
                xr = self._dropout(xr, m, draws, r)
                if m.rnn.gated:
                    col = z_in[k] if k == 0 else z_in[k] * z_hid[k - 1]
                    xr = xr * col
                inputs.append(F.pad(xr, (0, self.input_sizes[k] - xr.shape[-1])))
            x, s = self._layer(k, torch.stack(inputs), state[k], gates)
            new_state.append(s)
        outputs = []
        for r in r_all:
            m, (_, z_hid) = self.members[r], gates[r]
            xr = x[r, ..., :m.rnn.hidden_sizes[-1]]
            if m.rnn.gated:
                xr = xr * z_hid[-1]
            xr = self._dropout(xr, m, draws, r)
            outputs.append(F.pad(xr, (0, self.hidden_sizes[-1] - xr.shape[-1])))
        out = torch.stack(outputs)  # (R, T, B, H)
        w_dec = torch.stack([F.pad(m.decoder.weight, (0, self.hidden_sizes[-1] - m.decoder.weight.shape[1]))
                             for m in self.members])
        b_dec = torch.stack([m.decoder.bias for m in self.members])
        t, b = out.shape[1], out.shape[2]
        logits = torch.baddbmm(b_dec.unsqueeze(1), out.reshape(len(self.members), t * b, -1), w_dec.transpose(1, 2))
        return logits.view(len(self.members), t, b, -1).transpose(1, 2), new_state

    @staticmethod
    def _dropout(x: torch.Tensor, model: LSTMLanguageModel, draws, r: int) -> torch.Tensor:
        p = model.rnn.dropout.p
        if draws is None or not model.rnn.dropout.training or p == 0.0:
            return x
        return draws[r].dropout(x, p)

    def _layer(self, k: int, x: torch.Tensor, state, gates):
        """Layer k of every member: x (R, T, B, I) -> (R, T, B, H), with the i, f, g, o gate order
        and the arithmetic of nn.LSTM (c' = f * c + i * g, h' = o * tanh(c'))."""
        hidden, inputs = self.hidden_sizes[k], self.input_sizes[k]
        w_ih, w_hh, bias = [], [], []
        for m, (_, z_hid) in zip(self.members, gates):
            layer = m.rnn.layers[k]
            recurrent = layer.weight_hh_l0 if z_hid is None else layer.weight_hh_l0 * z_hid[k]
            w_ih.append(_pad_blocks(layer.weight_ih_l0, 4, hidden, inputs))
            w_hh.append(_pad_blocks(recurrent, 4, hidden, hidden))
            bias.append(_pad_blocks(layer.bias_ih_l0 + layer.bias_hh_l0, 4, hidden))
        w_ih, w_hh, bias = torch.stack(w_ih), torch.stack(w_hh).transpose(1, 2), torch.stack(bias)
        r, t, b, _ = x.shape
        projected = torch.baddbmm(bias.unsqueeze(1), x.reshape(r, t * b, inputs), w_ih.transpose(1, 2))
        projected = projected.view(r, t, b, 4 * hidden)
        h, c = state
        outs = []
        for step in range(t):
            g = torch.baddbmm(projected[:, step], h, w_hh)
            i, f, cand, o = g.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=1), (h, c)


@dataclass
class Member:
    """What the batched step needs of one run: its model and method, its optimiser and clip, its
    metrics (the task's own MeanMetrics) and its noise stream."""
    name: str
    model: LSTMLanguageModel
    pruning: PruningMethod
    optimizer: torch.optim.Optimizer
    clipped: list[nn.Parameter]
    max_grad_norm: float | None
    loss_metric: MeanMetric
    penalty_metric: MeanMetric
    noise: CounterNoise
    precision: str = "fp32"
    # filled in by the step
    update: TensorLRUpdate | None = None
    loss_mean: DeviceMean | None = None
    penalty_mean: DeviceMean | None = None
    alive: bool = True
    extra: dict = field(default_factory=dict)


class BatchedLMTrainStep(CapturedStep):
    """One training step of R members (LMTrainStep's arithmetic, per member): the batched forward of
    each precision group, each member's cross-entropy and penalty, backward of
    sum(num_steps * (loss + penalty)) (a member's gradient is its own: members share no parameter),
    then per member the clip, the update with its own learning-rate tensors, the carried state,
    the pruning method's after-step work and its noise step.

    A member whose objective is not finite is recorded on the device (`nonfinite`); the trainer
    names it and stops writing it, the others train on (its slice of every batched op is its own)."""

    def __init__(self, members: list[Member], *, mode: str, device: torch.device,
                 set_precision: Callable[[str], object] | None = None) -> None:
        super().__init__(mode, device)
        self.members = members
        groups: dict[str, list[int]] = {}
        for i, m in enumerate(members):
            groups.setdefault(m.precision, []).append(i)
        self.groups = [(name, idx, BatchedLM([members[i].model for i in idx])) for name, idx in groups.items()]
        # sets the process-wide matmul/cuDNN flags of a precision name (lightning_modules/precision.py)
        self.set_precision = set_precision
        for m in members:
            m.update = TensorLRUpdate(m.optimizer, device)
        self.params = [p for m in members for g in m.optimizer.param_groups for p in g["params"]]
        self.gates = [[g for g in m.model.rnn.gates()] for m in members]
        r = len(members)
        self.last_loss = torch.zeros(r, device=device)
        self.last_penalty = torch.zeros(r, device=device)
        self.step_count = torch.zeros((), dtype=torch.long, device=device)
        self.bad_step = torch.full((r,), -1, dtype=torch.long, device=device)
        self.bad_value = torch.zeros(r, device=device)
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.state: list | None = None  # per group: its BatchedLM's state
        self._pending: dict[int, list] = {}
        self._next_step: int | None = None
        self._has_penalty: dict[tuple, list[bool]] = {}

    # ---- host side -----------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int) -> None:
        """Optimizer step number `step` (from 1) of every member on the window (x, y)."""
        if self.x is None or self.x.shape != x.shape:
            self._allocate(x, y)
        self.x.copy_(x)
        self.y.copy_(y)
        for m in self.members:
            m.update.refresh_lr()
            m.loss_mean.bind()
            m.penalty_mean.bind()
        if step != self._next_step:
            self.step_count.fill_(step - 1)
            for m in self.members:
                m.noise.step.fill_(step - 1)
        self._next_step = step + 1
        self._key = tuple(g.frozen for gates in self.gates for g in gates)
        due = any(m.pruning.host_update_due(step) for m in self.members)
        self._run(step if due else None)
        penalised = self._has_penalty.get(self._key, [False] * len(self.members))
        for m, has in zip(self.members, penalised):
            m.loss_mean.counted()
            if has:
                m.penalty_mean.counted()

    def _allocate(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = torch.empty_like(x), torch.empty_like(y)
        dtype = self.members[0].model.embedding.weight.dtype
        self.state = [lm.init_state(x.shape[0], x.device, dtype) for _, _, lm in self.groups]
        for m in self.members:
            m.loss_mean = DeviceMean(m.loss_metric, y.numel(), self.device)
            m.penalty_mean = DeviceMean(m.penalty_metric, y.shape[0], self.device)
        for i, saved in list(self._pending.items()):
            self.load_member_state(i, saved)
        self._pending.clear()
        self._drop_graphs()

    def _where(self, i: int) -> tuple[int, int]:
        for g, (_, idx, _) in enumerate(self.groups):
            if i in idx:
                return g, idx.index(i)
        raise IndexError(i)

    def reset_state(self) -> None:
        """Every member's next window starts from a zero hidden state (an epoch starts)."""
        self._pending.clear()
        for group in self.state or []:
            for tensors in group:
                for t in tensors:
                    t.zero_()

    def member_state(self, i: int):
        if self.state is None:
            return self._pending.get(i)
        g, r = self._where(i)
        return self.groups[g][2].member_state(self.state[g], r)

    def load_member_state(self, i: int, saved) -> None:
        if self.state is None:
            self._pending[i] = saved
            return
        g, r = self._where(i)
        self.groups[g][2].load_member_state(self.state[g], r, [tuple(t.to(self.device) for t in s) for s in saved])

    def nonfinite(self) -> list[tuple[int, float] | None]:
        """Per member: (step, objective) of its first non-finite objective, or None (reads the device)."""
        steps, values = self.bad_step.tolist(), self.bad_value.tolist()
        return [(s, v) if s >= 0 else None for s, v in zip(steps, values)]

    # ---- the step -------------------------------------------------------------------------

    def _step(self, host_step: int | None = None) -> None:
        for p in self.params:
            p.grad = None
        num_steps = self.y.shape[1]
        y = self.y.reshape(-1)
        losses: list[torch.Tensor | None] = [None] * len(self.members)
        penalties: list[torch.Tensor | None] = [None] * len(self.members)
        new_states = []
        for name, idx, lm in self.groups:
            if self.set_precision is not None:
                # the flags are read when a kernel is launched (or captured): forward and backward
                # of this group run under its own
                self.set_precision(name)
            draws = [SiteDraws(self.members[i].noise) for i in idx]
            logits, state = lm(self.x, self.state[len(new_states)], draws)
            new_states.append(state)
            vocab = logits.shape[-1]
            ce = F.cross_entropy(logits.reshape(-1, vocab), y.repeat(len(idx)), reduction="none")
            ce = ce.view(len(idx), -1).mean(dim=1)
            objective = 0.0
            for j, i in enumerate(idx):
                m = self.members[i]
                losses[i] = ce[j]
                penalties[i] = m.pruning.penalty(m.model)
                objective = objective + (ce[j] if penalties[i] is None else ce[j] + penalties[i])
            (objective * num_steps).backward()  # each member's gradient is its own
        if self.set_precision is not None and len(self.groups) > 1:
            self.set_precision(self.groups[0][0])
        self._has_penalty[self._key] = [p is not None for p in penalties]
        with torch.no_grad():
            objectives = torch.stack([loss if pen is None else loss + pen for loss, pen in zip(losses, penalties)])
            first_bad = ~torch.isfinite(objectives) & (self.bad_step < 0)
            self.bad_step.copy_(torch.where(first_bad, self.step_count, self.bad_step))
            self.bad_value.copy_(torch.where(first_bad, objectives.detach(), self.bad_value))
            self.step_count.add_(1)
            self.last_loss.copy_(torch.stack(losses))
            for i, m in enumerate(self.members):
                m.loss_mean.add_(losses[i])
                if penalties[i] is not None:
                    self.last_penalty[i].copy_(penalties[i])
                    m.penalty_mean.add_(penalties[i])
                if m.max_grad_norm is not None and m.max_grad_norm != float("inf"):
                    grads = [p.grad for p in m.clipped if p.grad is not None]
                    if grads:
                        clip_grad_norm_tensor_(grads, m.max_grad_norm)
                m.update.step()
                if host_step is not None and m.pruning.host_update_due(host_step):
                    m.pruning.host_update(m.model, host_step)
                m.pruning.step_ops(m.model, num_steps)
                m.noise.step.add_(1)
            for old, new in zip(self.state, new_states):
                for tensors, fresh in zip(old, new):
                    for t, t_new in zip(tensors, fresh):
                        t.copy_(t_new)


@torch.no_grad()
def batched_eval_nll(lm: BatchedLM, windows, device: torch.device) -> torch.Tensor:
    """Every member's summed negative log-likelihood and token count over `windows` (an iterable of
    (x, y) carrying the state across, as a run's validation does), in eval mode: (R, 2)."""
    totals = torch.zeros(len(lm.members), 2, dtype=torch.float64, device=device)
    state = None
    for x, y in windows:
        x, y = x.to(device), y.to(device)
        if state is None:
            state = lm.init_state(x.shape[0], device, lm.members[0].embedding.weight.dtype)
        logits, state = lm(x, state, None)
        vocab = logits.shape[-1]
        nll = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1).repeat(len(lm.members)), reduction="none")
        totals[:, 0] += nll.view(len(lm.members), -1).sum(dim=1).double()
        totals[:, 1] += y.numel()
    return totals
