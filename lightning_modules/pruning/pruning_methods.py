"""Pruning methods behind one interface, so the LightningModule never branches on a method name.

A method may add a penalty to the per-token objective and may act after each optimizer
step (thresholding, masking); GATED_METHODS get an LSTM with gates. Which neurons
survive is read off the model itself by `export.neuron_scales` (gate values, or
all-zero ISS groups), so every method exports and reports sizes the same way.

Models list their LSTMs themselves, so that this package knows no model: `iss_units()`
(structured_sparsity.ISSUnit: an LSTM and the weight columns that read each hidden neuron) and
`expected_l0()` (LSTMLanguageModel, BiDAF).

Methods:
  none         dense training (also the "direct design" control: a dense model of given sizes)
  l0           hard concrete gates, penalty reg_lambda * E[L0], the expected number of non-zero
               RNN weights (GatedRNN.expected_l0)
  group_lasso  ISS (Wen et al. 2018): reg_lambda * sum of ISS group L2 norms, small weights zeroed
  lasso        reg_lambda * sum |w| over the LSTM weight matrices, small weights zeroed
  magnitude    gradual magnitude pruning (Zhu & Gupta 2017), unstructured or by ISS group
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .gated_rnn import gate_blocks
from .hard_concrete import HardConcreteGate
from .structured_sparsity import (
    ISSUnit,
    group_lasso_penalty,
    l1_penalty,
    lstm_weight_matrices,
    scheduled_neuron_count,
    unit_group_norms,
    zhu_gupta_sparsity,
)

METHODS = ("none", "l0", "group_lasso", "lasso", "magnitude")


def prunable_units(model: nn.Module) -> list[ISSUnit]:
    """The LSTMs a method acts on, each with the weight columns that read its hidden neurons."""
    return model.iss_units()


class PruningMethod(nn.Module):
    """Base: dense training. Subclasses override what they need. An nn.Module so that any
    state (magnitude masks) is saved in checkpoints with the model."""

    gated = False  # the model gets hard concrete gates
    zeroes_weights = False  # holds weights at exactly zero after each step (an average must keep them 0)
    structured: bool | None = True  # removes whole neurons; None: the config says (magnitude)

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """Per-token penalty added to the cross-entropy (None: no penalty)."""
        return None

    def after_optimizer_step(self, model: nn.Module, step: int, num_steps: int) -> None:
        """Called after every optimizer step; `step` counts optimizer steps done (from 1).

        The work is split in two so that a training step can be captured as one CUDA graph
        (lightning_modules/fused_step.py): `host_update` is what needs the host (topk, counts) and
        happens only on the steps `host_update_due` names; `step_ops` runs after every step and is
        tensor ops only, with no value read back to the host."""
        if self.host_update_due(step):
            self.host_update(model, step)
        self.step_ops(model, num_steps)

    def host_update_due(self, step: int) -> bool:
        """Whether optimizer step `step` (from 1) is followed by a `host_update`."""
        return False

    def host_update(self, model: nn.Module, step: int) -> None:
        """Work after step `step` that may read values back to the host (magnitude's masks)."""

    def step_ops(self, model: nn.Module, num_steps: int) -> None:
        """Work after every step, in place and without a host sync (capturable in a CUDA graph)."""

    def on_train_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Called when a training epoch starts (also the epoch a resumed run continues)."""


def hard_concrete_gates(model: nn.Module) -> list[HardConcreteGate]:
    return [m for m in model.modules() if isinstance(m, HardConcreteGate)]


class L0Gates(PruningMethod):
    """Hard concrete gates with a penalty on the expected L0.

    freeze_epoch: from this (0-based) epoch on the gates stay at their test-time values, with no
    noise and no penalty, and the weights train on ("select, then fine-tune"): the noise-free
    phase that magnitude pruning gets after its last pruning step."""

    gated = True

    def __init__(self, reg_lambda: float, freeze_epoch: int | None = None) -> None:
        super().__init__()
        if freeze_epoch is not None and freeze_epoch < 0:
            raise UserError(f"model.gates_freeze_epoch must be >= 0 or null, got {freeze_epoch}")
        self.reg_lambda, self.freeze_epoch = reg_lambda, freeze_epoch
        self.frozen = False

    def penalty(self, model):
        if self.reg_lambda == 0 or self.frozen:
            return None  # frozen gates: the penalty is a constant
        return self.reg_lambda * model.expected_l0()

    def step_ops(self, model, num_steps):
        for gate in hard_concrete_gates(model):
            gate.constrain_()

    def on_train_epoch_start(self, model, epoch):
        self.frozen = self.freeze_epoch is not None and epoch >= self.freeze_epoch
        for gate in hard_concrete_gates(model):
            gate.frozen = self.frozen


class _Thresholded(PruningMethod):
    """Lasso-type methods zero every weight below a threshold after each step, as ISS did.

    iss-rnns (ptb/ptb_word_lm.py) zeroes weights below max(1e-4, 2 * weight_decay), where
    weight_decay is its L1 scale on the per-segment loss (0.0 in its group-Lasso config). So the
    default (threshold None) is 1e-4 for group Lasso and max(1e-4, 2 * reg_lambda * num_steps) for
    Lasso (reg_lambda is per token here; the per-segment scale is reg_lambda * num_steps).
    """

    zeroes_weights = True

    def __init__(self, reg_lambda: float, threshold: float | None) -> None:
        super().__init__()
        self.reg_lambda, self.threshold = reg_lambda, threshold

    def l1_scale(self) -> float:
        """The per-token L1 strength of the iss-rnns threshold rule (0 for group Lasso)."""
        return 0.0

    def threshold_for(self, num_steps: int) -> float:
        if self.threshold is not None:
            return self.threshold
        return max(1e-4, 2.0 * self.l1_scale() * num_steps)

    def thresholded_tensors(self, model: nn.Module) -> list[torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def step_ops(self, model, num_steps):
        if self.reg_lambda > 0 or self.threshold is not None:
            threshold = self.threshold_for(num_steps)
            for w in self.thresholded_tensors(model):  # threshold_ without its count (a host sync)
                w.masked_fill_(w.abs() < threshold, 0.0)


class GroupLasso(_Thresholded):
    def penalty(self, model):
        if self.reg_lambda == 0:
            return None
        return self.reg_lambda * group_lasso_penalty(prunable_units(model))

    def thresholded_tensors(self, model):
        # every weight matrix an ISS group lives in, so that whole groups can reach exact zero
        # (iss-rnns zeroes weights, not biases: the groups hold none)
        units = prunable_units(model)
        tensors = lstm_weight_matrices([u.lstm for u in units]) + [w for u in units for w, _ in u.consumers]
        return list({id(t): t for t in tensors}.values())  # a consumer may be another unit's weight_ih


class Lasso(_Thresholded):
    structured = False

    def l1_scale(self) -> float:
        return self.reg_lambda

    def penalty(self, model):
        if self.reg_lambda == 0:
            return None
        return self.reg_lambda * l1_penalty(lstm_weight_matrices([u.lstm for u in prunable_units(model)]))

    def thresholded_tensors(self, model):
        return lstm_weight_matrices([u.lstm for u in prunable_units(model)])


class Magnitude(PruningMethod):
    """Gradual magnitude pruning with fixed masks: what is pruned stays pruned.

    Unstructured: each LSTM weight matrix is pruned to `target_sparsity` on the cubic
    schedule. Structured: each layer keeps its `target_neurons[k]` neurons with the
    largest ISS group norm; the other groups are zeroed, and export removes them.
    Masks are updated every `prune_every` steps between begin and end, and re-applied
    after every step.
    """

    zeroes_weights = True
    structured = None

    def __init__(self, model: nn.Module, structured: bool, target_sparsity: float | None,
                 target_neurons: list[int] | None, begin_step: int, end_step: int, every: int) -> None:
        super().__init__()
        self.structured, self.begin, self.end, self.every = structured, begin_step, end_step, every
        sizes = [u.lstm.hidden_size for u in prunable_units(model)]
        if structured:
            if not target_neurons or len(target_neurons) != len(sizes) or any(
                    not 0 < t <= h for t, h in zip(target_neurons, sizes)):
                raise UserError(f"magnitude pruning with structured=true needs model.target_neurons: one "
                                f"count per layer in 1..hidden size, got {target_neurons} for {sizes}")
            self.target_neurons = list(target_neurons)
            for k, h in enumerate(sizes):
                self.register_buffer(f"alive_{k}", torch.ones(h, dtype=torch.bool))
        else:
            if target_sparsity is None or not 0.0 <= target_sparsity < 1.0:
                raise UserError("magnitude pruning with structured=false needs model.target_sparsity "
                                f"in [0, 1), got {target_sparsity}")
            self.target_sparsity = target_sparsity
            for k, w in enumerate(lstm_weight_matrices([u.lstm for u in prunable_units(model)])):
                self.register_buffer(f"mask_{k}", torch.ones_like(w, dtype=torch.bool))
        if not 0 <= begin_step < end_step or every < 1:
            raise UserError(f"magnitude pruning needs 0 <= prune_begin_step < prune_end_step and "
                            f"prune_every >= 1, got {begin_step}, {end_step}, {every}")

    def alive(self) -> list[torch.Tensor]:
        return [getattr(self, f"alive_{k}") for k in range(len(self.target_neurons))]

    def masks(self) -> list[torch.Tensor]:
        return [b for name, b in self.named_buffers() if name.startswith("mask_")]

    @torch.no_grad()
    def update_masks(self, model: nn.Module, step: int) -> None:
        units = prunable_units(model)
        if self.structured:
            norms = unit_group_norms(units)
            for k, (alive, unit) in enumerate(zip(self.alive(), units)):
                h = unit.lstm.hidden_size
                keep = scheduled_neuron_count(step, self.begin, self.end, h, self.target_neurons[k])
                if keep < int(alive.sum()):
                    score = torch.where(alive, norms[k], torch.full_like(norms[k], -1.0))
                    alive.zero_()
                    alive[torch.topk(score, keep).indices] = True
        else:
            sparsity = zhu_gupta_sparsity(step, self.begin, self.end, self.target_sparsity)
            for w, mask in zip(lstm_weight_matrices([u.lstm for u in units]), self.masks()):
                n_prune = int(round(sparsity * w.numel()))
                if n_prune > int((~mask).sum()):
                    score = torch.where(mask, w.abs(), torch.full_like(w, -1.0)).flatten()
                    mask.view(-1)[torch.topk(score, n_prune, largest=False).indices] = False

    @torch.no_grad()
    def apply_masks(self, model: nn.Module) -> None:
        # masked_fill_ with boolean masks, not p[rows] = 0: indexing by a boolean mask finds its
        # True entries on the host (a sync per tensor), a masked fill does not
        units = prunable_units(model)
        if self.structured:
            for unit, alive in zip(units, self.alive()):
                dead = ~alive
                rows = dead.repeat(gate_blocks(unit.lstm))  # the neuron's row in each gate block
                for p in unit.lstm.parameters():
                    p.masked_fill_(rows.view(-1, *([1] * (p.dim() - 1))), 0.0)
                unit.lstm.weight_hh_l0.masked_fill_(dead, 0.0)  # its recurrent column
                for weight, cols in unit.consumers:
                    weight.masked_fill_(dead_columns(dead, cols.to(weight.device), weight.shape[1]), 0.0)
        else:
            for w, mask in zip(lstm_weight_matrices([u.lstm for u in units]), self.masks()):
                w.mul_(mask)

    def host_update_due(self, step):
        return step >= self.begin and (step - self.begin) % self.every == 0 and step <= self.end + self.every

    def host_update(self, model, step):
        self.update_masks(model, min(step, self.end))

    def step_ops(self, model, num_steps):
        self.apply_masks(model)


def dead_columns(dead: torch.Tensor, cols: torch.Tensor, width: int) -> torch.Tensor:
    """Boolean mask of a consumer's `width` columns read by a dead neuron (cols: (H, k) indices),
    built by an index_add (no host sync), so a column read by several neurons is dead if any is."""
    hits = torch.zeros(width, device=dead.device)
    hits.index_add_(0, cols.flatten(), dead[:, None].expand(cols.shape).flatten().to(hits.dtype))
    return hits > 0


_CLASSES = {"none": PruningMethod, "l0": L0Gates, "group_lasso": GroupLasso, "lasso": Lasso,
            "magnitude": Magnitude}
GATED_METHODS = tuple(name for name, cls in _CLASSES.items() if cls.gated)  # built with gates
_LABELS = {"none": "dense", "l0": "L0", "group_lasso": "ISS group Lasso", "lasso": "Lasso",
           "magnitude": "magnitude"}


def method_properties(hparams: dict) -> dict:
    """What a run's method is, for result.json and everything that reads it (tables, plots), so
    that no reader branches on a method name:
      label           a display name: the method, "direct design" for a dense model trained at
                      another run's sizes, "(fine-tuned)" when it started from a trained run
      gated           the model has hard concrete gates
      zeroes_weights  the method holds weights at exactly zero (thresholding, masks)
      structured      what it removes is whole neurons (else single weights)
      fine_tuned      it started from a finished run's weights (init_from)
    """
    method = hparams["method"]
    if method not in METHODS:
        raise UserError(f"unknown pruning method {method!r}; use one of {', '.join(METHODS)}")
    cls = _CLASSES[method]
    structured = bool(hparams.get("structured", True)) if cls.structured is None else cls.structured
    label = _LABELS[method]
    if method == "none" and hparams.get("sizes_from"):
        label = "direct design"
    elif cls.structured is None:
        label = f"{'structured' if structured else 'unstructured'} {label}"
    fine_tuned = bool(hparams.get("init_from"))
    return {"label": label + (" (fine-tuned)" if fine_tuned else ""), "gated": cls.gated,
            "zeroes_weights": cls.zeroes_weights, "structured": structured, "fine_tuned": fine_tuned}


def build_pruning_method(method: str, model: nn.Module, *, reg_lambda: float,
                         zero_threshold: float | None, structured: bool,
                         target_sparsity: float | None, target_neurons: list[int] | None,
                         prune_begin_step: int, prune_end_step: int, prune_every: int,
                         gates_freeze_epoch: int | None = None) -> PruningMethod:
    if method not in METHODS:
        raise UserError(f"unknown pruning method {method!r}; use one of {', '.join(METHODS)}")
    if method in ("none", "magnitude") and reg_lambda > 0:
        raise UserError(f"model.reg_lambda > 0 has no effect with method={method}; set it to 0 "
                        "or use l0, group_lasso or lasso")
    if method == "none":
        return PruningMethod()
    if method == "l0":
        return L0Gates(reg_lambda, gates_freeze_epoch)
    if method == "group_lasso":
        return GroupLasso(reg_lambda, zero_threshold)
    if method == "lasso":
        return Lasso(reg_lambda, zero_threshold)
    return Magnitude(model, structured, target_sparsity, target_neurons, prune_begin_step,
                     prune_end_step, prune_every)
