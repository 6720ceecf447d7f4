"""The language model's training step as one function of static tensors: run eagerly
(`model.step_impl=fused`) or captured once and replayed as one CUDA graph (`model.step_impl=graph`).
`model.step_impl=eager`, the default, is Lightning's automatic optimisation, as before.

Why
---
On one H200 the medium config (2x650, batch 20, 35 steps) took about 12.7 ms per training step
for well under 1 ms of arithmetic: a step was hundreds of small kernels, each launched from
Python (gate sampling and masking, a clip and an SGD update per parameter), and the host waited
for the device several times per step (the finite check's `if tensor`, boolean-mask indexing in
the masks, Lightning's per-step logging). A CUDA graph launches all the kernels of a step at
once, but only if the step
  * reads and writes the same memory on every replay: the batch, the hidden state carried from
    window to window, the gradients, the optimiser state and the metric sums are static buffers;
  * never waits for the device: no value is read into Python, nothing branches on a tensor's
    value, no op has an output size that depends on values (boolean indexing, nonzero). The
    global-norm clip is tensor ops; a non-finite loss is recorded on the device and reported at
    the next log interval, checkpoint or epoch end, with its step; metrics accumulate on the
    device and are read once per log interval;
  * finds everything that changes from step to step in device memory: each parameter group's
    learning rate is a device tensor (the epoch schedule writes it outside the graph), so is
    Adam's step count; gate noise and dropout come from the default CUDA generator, which is
    graph-safe (every replay draws fresh numbers, those an eager step would draw at that
    generator state).
Host work (magnitude pruning's mask updates on the Zhu-Gupta schedule: topk and counts) happens on
the steps it is due at, and those steps run eagerly; the per-step part of every method
(PruningMethod.step_ops: the gates' clamp, ISS/Lasso thresholding, the masks) is inside the step.
Validation and test stay eager. If capture fails, training goes on with the same step run
eagerly, after one line on stderr.

Equivalence
-----------
Run eagerly, the step does the automatic-optimisation path's arithmetic op for op and in the same
order, so on the CPU it gives the same numbers (tests/test_fused_step.py): the forward (gate
noise, then dropout, drawn in the same order from the same generator), cross-entropy, penalty,
backward of num_steps * (loss + penalty); the clip with torch.nn.utils.clip_grad_norm_'s ops; SGD
as p.addcmul_(grad, -lr) (one rounding, as p.add_(grad, alpha=-lr), with lr a tensor); Adam with
float64 bias corrections as SGDWithAdamGroups; then the pruning method's after-step work. On CUDA
a few kernels differ from the eager optimiser's in the last bit (division by a device tensor
where the eager path multiplies by a host reciprocal).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from .errors import UserError
from .pruning.hard_concrete import HardConcreteGate
from .pruning.pruning_methods import PruningMethod

STEP_IMPLS = ("eager", "fused", "graph")
# eager steps before a capture: lazy initialisation (cuBLAS/cuDNN handles and plans, the
# autograd engine's stream) must not happen inside the graph
WARMUP_STEPS = 3


def clip_grad_norm_tensor_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale `grads` in place to a global L2 norm of at most max_norm; returns the norm.

    torch.nn.utils.clip_grad_norm_'s ops (per-tensor norms by _foreach_norm, the norm of those,
    the factor min(max_norm / (norm + 1e-6), 1)), hence its numbers, written out so that it is plain
    that nothing leaves the device: the factor is a tensor, clamped, never compared in Python."""
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)
    return total


def capture_failure(error: BaseException) -> str:
    """Why a capture failed, in one line: the first error in the chain, not only the last.

    An op that cannot be captured raises inside `with torch.cuda.graph(...)`; leaving the block then
    calls capture_end, which fails too ("operation failed due to a previous error during capture")
    and that second error is the one that propagates, with the cause only in its __context__."""
    chain = [error]
    while (chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)

    def one(e: BaseException) -> str:
        return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"

    return one(chain[-1]) if len(chain) == 1 else f"{one(chain[-1])}; then {one(chain[0])}"


class TensorLRUpdate:
    """SGDWithAdamGroups' update (its "sgd" and "adam" groups) with each group's learning rate a
    device tensor, so that a captured step reads the current one.

    The optimiser stays the object Lightning checkpoints and schedules: its param_groups keep the
    lr the schedule sets (copied into the tensors by `refresh_lr`, outside the graph) and its
    `state` keeps Adam's moments and step count, here on the parameters' device (float64 step,
    as SGDWithAdamGroups keeps it), so either path resumes the other's checkpoints."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.optimizer = optimizer
        groups = optimizer.param_groups
        self._host_lr = [float(g["lr"]) for g in groups]
        self.lr = [torch.tensor(lr, dtype=torch.float64, device=device) for lr in self._host_lr]
        for group in groups:
            if group.get("algorithm", "sgd") not in ("sgd", "adam"):
                raise ValueError(f"unknown parameter group algorithm {group['algorithm']!r}")
            if group.get("algorithm") != "adam":
                continue
            for p in group["params"]:
                state = optimizer.state[p]
                if not state:  # SGDWithAdamGroups creates it at the first step, with these values
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                # a device tensor: the step count is read inside the graph (a checkpoint loads it
                # where it was saved, on the CPU from the eager path)
                state["step"] = state["step"].to(device=p.device, dtype=torch.float64)

    def set_lr(self, values: list[float]) -> None:
        for t, lr in zip(self.lr, values):
            t.fill_(lr)
        self._host_lr = [float(v) for v in values]

    def refresh_lr(self) -> None:
        """Copy the groups' lr (which the schedule changes between epochs) into the tensors."""
        for i, group in enumerate(self.optimizer.param_groups):
            lr = float(group["lr"])
            if lr != self._host_lr[i]:
                self.lr[i].fill_(lr)  # a kernel with a host scalar: no sync
                self._host_lr[i] = lr

    @torch.no_grad()
    def step(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.lr):
            params = [p for p in group["params"] if p.grad is not None]  # which: fixed per graph
            if group.get("algorithm", "sgd") == "sgd":
                neg_lr = -lr
                for p in params:
                    p.addcmul_(p.grad, neg_lr)
                continue
            beta1, beta2 = group["betas"]
            for p in params:
                state = self.optimizer.state[p]
                step = state["step"]
                step.add_(1)
                state["exp_avg"].lerp_(p.grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (state["exp_avg_sq"] / (1 - beta2 ** step)).sqrt_().add_(group["eps"])
                p.addcdiv_(state["exp_avg"] * (-lr / (1 - beta1 ** step)), denom)


class DeviceMean:
    """A torchmetrics MeanMetric fed from inside the step: its two running sums are replaced by
    static device tensors that the step adds to, as MeanMetric.update would (mean_value +=
    value * weight; weight += weight), without update()'s NaN check (a host sync).

    The metric stays what the task computes, logs, resets and checkpoints; `bind` (on the host,
    before every step) re-attaches the static tensors after reset() or a resume replaced them."""

    def __init__(self, metric: MeanMetric, weight: float, device: torch.device) -> None:
        self.metric = metric
        self.value = torch.zeros((), device=device)
        self.weight = torch.zeros((), device=device)
        self.w = torch.tensor(float(weight), device=device)

    def bind(self) -> None:
        m = self.metric
        if m.mean_value is not self.value or m.weight is not self.weight:
            self.value.copy_(m.mean_value)
            self.weight.copy_(m.weight)
            m.mean_value, m.weight = self.value, self.weight

    def add_(self, value: torch.Tensor) -> None:
        self.value.add_(value * self.w)
        self.weight.add_(self.w)

    def counted(self) -> None:
        """What update() does on the host: one more update, and no cached result."""
        self.metric._update_count += 1
        self.metric._computed = None


class CapturedStep:
    """What every captured training step shares (LMTrainStep; the batched trainer's step in
    lightning_modules/lm/batched.py): WARMUP_STEPS eager steps on a side stream, then one CUDA graph
    per key (the set of frozen/unfrozen gates changes the step), replayed while the parameters
    stay where they were captured; if capture fails, the same step runs eagerly from then on.

    A subclass sets `params`, `mode`, `_key` (before each step) and defines `_step()`."""

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in ("fused", "graph"):
            raise ValueError(f"a captured step runs mode fused or graph, not {mode!r}")
        if mode == "graph" and device.type != "cuda":
            print("model.step_impl=graph: CUDA graphs need a CUDA device; the same step runs eagerly "
                  "(step_impl=fused)", file=sys.stderr)
            mode = "fused"
        self.mode, self.device = mode, device
        self.params: list[torch.Tensor] = []
        self._key: tuple = ()
        self._graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        # where each parameter's storage was when its graph was captured: the graph reads and writes
        # those addresses for ever, so a parameter moved since (any .to()/.cuda() re-flattens
        # nn.LSTM's weights into a new buffer) would leave the graph training a stale copy
        self._captured_at: dict[tuple, list[int]] = {}
        self._warm: dict[tuple, int] = {}
        self._side: torch.cuda.Stream | None = None

    def _step(self, host_step: int | None = None) -> None:
        raise NotImplementedError

    def _run(self, host_step: int | None) -> None:
        """The step: replayed as a graph, or eagerly when it has host work (or mode is fused)."""
        if self.mode == "graph" and host_step is None:
            self._graph_step()
        else:
            self._step(host_step)

    def _drop_graphs(self) -> None:
        self._graphs.clear()
        self._captured_at.clear()
        self._warm.clear()

    def _graph_step(self) -> None:
        key = self._key
        graph = self._graphs.get(key)
        if graph is None:
            if self._warm.get(key, 0) < WARMUP_STEPS:
                self._warm[key] = self._warm.get(key, 0) + 1
                # on a side stream, as torch.cuda.graph's own capture stream (PyTorch's recipe)
                self._side = side = self._side or torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self._step()
                torch.cuda.current_stream().wait_stream(side)
                return
            graph = self._capture()
            if graph is None:
                self._step()
                return
            self._graphs[key] = graph
            self._captured_at[key] = [p.data_ptr() for p in self.params]
        elif [p.data_ptr() for p in self.params] != self._captured_at[key]:
            moved = [i for i, (p, at) in enumerate(zip(self.params, self._captured_at[key])) if p.data_ptr() != at]
            raise UserError(f"model.step_impl=graph: {len(moved)} parameter(s) moved in memory after the training "
                            "step was captured as a CUDA graph (e.g. .to()/.cuda() re-flattened nn.LSTM's weights), "
                            "so replaying it would train stale copies; move the model only before training, or "
                            "use model.step_impl=fused")
        graph.replay()

    def _capture(self) -> torch.cuda.CUDAGraph | None:
        """The step as a CUDA graph (capture runs nothing: the caller replays it), or None."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._step()
        except Exception as e:  # noqa: BLE001 (whatever breaks the capture, training goes on eagerly)
            for p in self.params:
                p.grad = None
            self.mode = "fused"
            print(f"model.step_impl=graph: CUDA graph capture failed ({capture_failure(e)}); "
                  "training goes on with the same step run eagerly (step_impl=fused)", file=sys.stderr)
            return None
        return graph


class LMTrainStep(CapturedStep):
    """One training step of the LSTM language model (lightning_modules/lm/lm_task.py) on static
    buffers: forward with the carried hidden state, loss and penalty, backward, clip, update, the
    pruning method's after-step work, the new hidden state and the metric sums.

    mode "fused" runs it eagerly; "graph" runs WARMUP_STEPS eager steps, captures it as a CUDA
    graph and replays that (one graph per set of frozen/unfrozen gates: L0's freeze changes the
    step), except on steps with host work (magnitude's mask updates), which run eagerly."""

    def __init__(self, model: nn.Module, pruning: PruningMethod, optimizer: torch.optim.Optimizer, *,
                 clipped: list[nn.Parameter], max_grad_norm: float | None, mode: str,
                 loss_metric: MeanMetric, penalty_metric: MeanMetric, device: torch.device) -> None:
        super().__init__(mode, device)
        self.model, self.pruning, self.optimizer = model, pruning, optimizer
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.clipped = list(clipped)
        self.max_norm = max_grad_norm
        self.update = TensorLRUpdate(optimizer, device)
        self.gates = [m for m in model.modules() if isinstance(m, HardConcreteGate)]
        self.loss_metric, self.penalty_metric = loss_metric, penalty_metric
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.state: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._pending_state: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.loss_mean: DeviceMean | None = None
        self.penalty_mean: DeviceMean | None = None
        # what the step reports, on the device: the last loss and penalty, and the first
        # non-finite objective with its step (-1: none yet)
        self.last_loss = torch.zeros((), device=device)
        self.last_penalty = torch.zeros((), device=device)
        self.step_count = torch.zeros((), dtype=torch.long, device=device)  # optimizer steps done
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_value = torch.zeros((), device=device)
        self._next_step: int | None = None
        self._has_penalty: dict[tuple, bool] = {}

    # ---- host side -----------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int) -> None:
        """Optimizer step number `step` (from 1) on the window (x, y), already on the device."""
        self._prepare(x, y, step)
        self._run(step if self.pruning.host_update_due(step) else None)
        self.loss_mean.counted()
        if self._has_penalty.get(self._key):
            self.penalty_mean.counted()

    def _prepare(self, x: torch.Tensor, y: torch.Tensor, step: int) -> None:
        if self.x is None or self.x.shape != x.shape or self.y.shape != y.shape:
            self._allocate(x, y)
        self.x.copy_(x)
        self.y.copy_(y)
        self.update.refresh_lr()
        self.loss_mean.bind()
        self.penalty_mean.bind()
        if step != self._next_step:
            self.step_count.fill_(step - 1)
        self._next_step = step + 1
        self._key = tuple(g.frozen for g in self.gates)

    def _allocate(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Static buffers for windows of this shape (graphs captured on others are dropped)."""
        self.x, self.y = torch.empty_like(x), torch.empty_like(y)
        dtype = self.model.embedding.weight.dtype
        self.state = self.model.rnn.init_state(x.shape[0], x.device, dtype)
        if self._pending_state is not None:
            self.load_state(self._pending_state)
        self.loss_mean = DeviceMean(self.loss_metric, y.numel(), self.device)
        self.penalty_mean = DeviceMean(self.penalty_metric, y.shape[0], self.device)
        self._drop_graphs()

    def reset_state(self) -> None:
        """The hidden state the next window starts from is zero (an epoch starts)."""
        self._pending_state = None
        for tensors in self.state or []:  # (h, c) per layer for an LSTM, (h,) for a GRU
            for t in tensors:
                t.zero_()

    def load_state(self, state: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """The hidden state the next window starts from (a resumed run's)."""
        if self.state is None:
            self._pending_state = state
            return
        self._pending_state = None
        for tensors, new in zip(self.state, state):
            for t, t_new in zip(tensors, new, strict=True):
                t.copy_(t_new)

    def hidden_state(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        if self.state is None:
            return self._pending_state
        return [tuple(t.clone() for t in tensors) for tensors in self.state]

    def step_metrics(self) -> dict[str, torch.Tensor]:
        """The last step's loss (and penalty), as device tensors (for the log interval)."""
        out = {"loss": self.last_loss.clone()}
        if self._has_penalty.get(self._key):
            out["penalty"] = self.last_penalty.clone()
        return out

    def nonfinite(self) -> tuple[int, float] | None:
        """(step, objective) of the first non-finite objective, if any (reads the device)."""
        step = int(self.bad_step)
        return (step, float(self.bad_value)) if step >= 0 else None

    # ---- the step -------------------------------------------------------------------------

    def _step(self, host_step: int | None = None) -> None:
        """The step itself. Tensor ops only, except `host_step`: the pruning method's host
        update after that optimizer step (never inside a graph)."""
        model = self.model
        for p in self.params:
            p.grad = None  # as zero_grad(set_to_none=True); in a capture: grads in the graph's pool
        logits, new_state = model(self.x, self.state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.y.reshape(-1))
        penalty = self.pruning.penalty(model)
        self._has_penalty[self._key] = penalty is not None
        objective = loss if penalty is None else loss + penalty
        num_steps = self.y.shape[1]
        (objective * num_steps).backward()  # Zaremba's per-segment scale (see lm_task.py)
        with torch.no_grad():
            # the first non-finite objective and its step (counted as global_step: steps before it)
            first_bad = ~torch.isfinite(objective) & (self.bad_step < 0)
            self.bad_step.copy_(torch.where(first_bad, self.step_count, self.bad_step))
            self.bad_value.copy_(torch.where(first_bad, objective, self.bad_value))
            self.step_count.add_(1)
            self.last_loss.copy_(loss)
            self.loss_mean.add_(loss)
            if penalty is not None:
                self.last_penalty.copy_(penalty)
                self.penalty_mean.add_(penalty)
            if self.max_norm is not None and self.max_norm != float("inf"):
                grads = [p.grad for p in self.clipped if p.grad is not None]
                if grads:
                    clip_grad_norm_tensor_(grads, self.max_norm)
            self.update.step()
            for tensors, new in zip(self.state, new_state):
                for t, t_new in zip(tensors, new, strict=True):
                    t.copy_(t_new)
            if host_step is not None:
                self.pruning.host_update(model, host_step)
            self.pruning.step_ops(model, num_steps)
