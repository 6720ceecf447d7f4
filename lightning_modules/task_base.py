"""The LightningModule both tasks extend: the pruning method, the objective, the gates' and
weights' optimisation, what runs inside the optimiser step, and the training-time clock.

A fix to how any method trains lands here once, for the language model and for BiDAF alike.
Each task adds its model, its loss, its evaluation and its optimiser (SGD with the TF schedule
for the LM, Adam/Adadelta for BiDAF), and says how many time steps its loss sums over
(`loss_steps`, the scale the iss-rnns threshold rule is stated in).

Any checkpoint, also one written in the middle of an epoch, resumes exactly (see "exact
resume" below); a task adds what only it carries across batches through `resume_extras`.
"""

from __future__ import annotations

import time
from typing import Literal

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, Metric

from .errors import UserError
from .pruning.gated_lstm import GateConfig
from .pruning.hard_concrete import LOUIZOS_LOG_ALPHA_RANGE
from .pruning.optim import GATE_UPDATES, clip_, clipped_parameters, optimizer_groups
from .pruning.pruning_methods import GATED_METHODS, PruningMethod, build_pruning_method


class PrunedTask(L.LightningModule):
    def __init__(
        self,
        method: Literal["none", "l0", "group_lasso", "lasso", "magnitude"] = "l0",
        reg_lambda: float = 0.0,
        zero_threshold: float | None = None,
        structured: bool = True,
        target_sparsity: float | None = None,
        target_neurons: list[int] | None = None,
        prune_begin_step: int = 0,
        prune_end_step: int = 1000,
        prune_every: int = 100,
        gate_beta: float = 2.0 / 3.0,
        gate_gamma: float = -0.1,
        gate_zeta: float = 1.1,
        log_alpha_init_mean: float = 3.0,
        log_alpha_init_std: float = 0.1,
        log_alpha_range: tuple[float, float] | None = LOUIZOS_LOG_ALPHA_RANGE,
        gates_freeze_epoch: int | None = None,
        gate_update: Literal["with_weights", "adam", "unclipped"] = "with_weights",
        lr: float = 1.0,
        gate_lr: float | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        """
        Args:
            method: see lightning_modules/pruning/pruning_methods.py. "none": dense; "l0": hard
                concrete gates on every input and hidden neuron, penalty on the expected L0;
                "group_lasso": ISS; "lasso": L1; "magnitude": gradual magnitude pruning.
            reg_lambda: penalty strength per unit of loss (per token for the LM, per question
                for SQuAD): per expected non-zero weight (l0), per unit of group norm
                (group_lasso) or of |w| (lasso).
            zero_threshold: group_lasso/lasso zero every weight below it after each step
                (default: the iss-rnns rule, 1e-4 for group_lasso and
                max(1e-4, 2 * reg_lambda * loss steps) for lasso; see pruning_methods.py).
            structured, target_sparsity, target_neurons, prune_begin_step, prune_end_step,
                prune_every: magnitude pruning: by ISS group to target_neurons per layer, or
                unstructured to target_sparsity, on the Zhu & Gupta cubic schedule.
            gate_beta, gate_gamma, gate_zeta: the hard concrete distribution (Louizos et al.'s defaults).
            log_alpha_init_mean, log_alpha_init_std: log_alpha starts at N(mean, std). Default 3,
                chosen by validation perplexity on the smoke config (docs/ABLATIONS.md): at N(1, 0.1),
                which one re-implementation attributes to the paper (docs/REFERENCES.md), a gate is
                0 on 7 % of steps and below 1 on about half, noise the cross-entropy does not remove.
            log_alpha_range: log_alpha is clamped to [low, high] after every step (default
                [ln 0.01, ln 100], Louizos et al.'s code); null: no clamp.
            gates_freeze_epoch: L0 only: from this 0-based epoch on, gates stay at their test-time
                values (no noise, no penalty) while the weights train on ("select, then fine-tune").
            gate_update: how log_alpha is optimised: with_weights (in the weights' optimiser and
                their global clip: the TF / iss-rnns way), adam (Adam at gate_lr, unclipped:
                Louizos et al.'s way), unclipped (before 2026-11-30; at SGD lr 1 it shuts
                neurons with no penalty). See lightning_modules/pruning/optim.py.
            lr: the weights' learning rate.
            gate_lr: learning rate of the gates' log_alpha (default: lr; with gate_update=adam 1e-3).
            max_grad_norm: global-norm clip of the gradients (which ones: gate_update); None: none.
        """
        super().__init__()
        if reg_lambda < 0:
            raise UserError(f"model.reg_lambda must be >= 0, got {reg_lambda}")
        if lr <= 0 or (gate_lr is not None and gate_lr <= 0):
            raise UserError("model.lr and model.gate_lr must be > 0")
        if gate_update not in GATE_UPDATES:
            raise UserError(f"model.gate_update must be one of {', '.join(GATE_UPDATES)}, got {gate_update!r}")
        # collects the arguments of the subclass's __init__ too (Lightning walks the init frames)
        self.save_hyperparameters()
        self.train_wall_time_s = 0.0
        self._epoch_start: float | None = None
        # a MeanMetric, not self.log(on_epoch=True): Lightning does not checkpoint its running
        # epoch means, so after a mid-epoch resume they would cover only the resumed part
        self.train_penalty = MeanMetric()
        self._batches_done = 0  # training batches of the current epoch already fetched
        self._pending_resume: dict | None = None
        self.model: nn.Module
        self.pruning: PruningMethod

    # ---- building -----------------------------------------------------------------------

    @property
    def gated(self) -> bool:
        return self.hparams.method in GATED_METHODS

    def gate_config(self, **extra) -> GateConfig:
        hp = self.hparams
        return GateConfig(hp.gate_beta, hp.gate_gamma, hp.gate_zeta, hp.log_alpha_init_mean,
                          hp.log_alpha_init_std, hp.log_alpha_range, **extra)

    def build_pruning(self, model: nn.Module, **overrides) -> PruningMethod:
        hp = self.hparams
        args = {"reg_lambda": hp.reg_lambda, "zero_threshold": hp.zero_threshold,
                "structured": hp.structured, "target_sparsity": hp.target_sparsity,
                "target_neurons": hp.target_neurons, "prune_begin_step": hp.prune_begin_step,
                "prune_end_step": hp.prune_end_step, "prune_every": hp.prune_every,
                "gates_freeze_epoch": hp.gates_freeze_epoch, **overrides}
        return build_pruning_method(hp.method, model, **args)

    # ---- what a subclass says ----------------------------------------------------------

    def loss_steps(self) -> int:
        """How many time steps the training loss sums over (the LM: num_steps; SQuAD: 1)."""
        return 1

    def after_step(self, batch_idx: int) -> None:
        """Work that belongs to the optimiser step itself, after the pruning method's."""

    # ---- training -----------------------------------------------------------------------

    def objective(self, loss: torch.Tensor, batch_size: int) -> torch.Tensor:
        """loss + the method's penalty, checked to be finite."""
        objective = loss
        penalty = self.pruning.penalty(self.model)
        if penalty is not None:
            objective = loss + penalty
            self.train_penalty.update(penalty.detach(), weight=batch_size)
            self.log("train/penalty_step", penalty, on_step=True, on_epoch=False, batch_size=batch_size)
        if not torch.isfinite(objective):
            raise UserError(f"the training loss became {objective.item()} at step {self.global_step}; "
                            "lower model.lr or model.reg_lambda")
        return objective

    def on_before_optimizer_step(self, optimizer) -> None:
        if not self.automatic_optimization:
            return  # manual optimisation (the LM's step_impl fused/graph): the step clips itself
        clip_(clipped_parameters(self.model.weight_parameters(), self.model.gate_parameters(),
                                 self.hparams.gate_update), self.hparams.max_grad_norm)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Thresholding, masks, the gates' clamp and a weight average belong to the step itself:
        # Lightning runs the callbacks' on_train_batch_end (which write step checkpoints) before
        # the module's, so a checkpoint must already hold them. Lightning counts this step
        # (global_step + 1) once this hook returns.
        self.pruning.after_optimizer_step(self.model, self.global_step + 1, self.loss_steps())
        self.after_step(batch_idx)

    def optimizer_groups(self) -> list[dict]:
        hp = self.hparams
        return optimizer_groups(self.model.weight_parameters(), self.model.gate_parameters(),
                                lr=hp.lr, gate_update=hp.gate_update, gate_lr=hp.gate_lr)

    # ---- the clock ----------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self.pruning.on_train_epoch_start(self.model, self.current_epoch)
        self._epoch_start = time.perf_counter()
        self._batches_done = 0

    def on_train_epoch_end(self) -> None:
        # time spent in training epochs so far, their validation included (Lightning validates
        # before the epoch ends) and earlier invocations of a resumed run too
        if self._epoch_start is not None:
            self.train_wall_time_s += time.perf_counter() - self._epoch_start
            self._epoch_start = None
        if self.train_penalty.update_count:
            self.log("train/penalty_epoch", self.train_penalty.compute())
        self.train_penalty.reset()

    # ---- exact resume -------------------------------------------------------------------

    # A resumed run continues exactly where the saved one stood, also in the middle of an
    # epoch: the data module starts the epoch at the next batch (`resume_train_at`), and the
    # RNG that draws the gates' noise and dropout, the running epoch means and the task's
    # extras are put back at the first training batch after the restore, because Lightning
    # starts the resumed epoch in between (at an epoch boundary on_train_epoch_start resets
    # them, and anything that runs before that batch may draw from the RNG where the saved run
    # did not). Resumed mid-epoch, Lightning skips on_train_epoch_start: its pruning part
    # (the gate freeze) then runs at that first batch too.

    def resume_extras(self) -> dict:
        """What the task carries across the batches of an epoch (saved mid-epoch only)."""
        return {}

    def apply_resume_extras(self, saved: dict) -> None:
        """Put back what `resume_extras` saved; `saved` is the whole exact-resume record."""

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self._epoch_start is None:
            # Lightning (2.6) does not call on_train_epoch_start when it resumes in the middle of
            # an epoch: L0's gate freeze (from gates_freeze_epoch on) and the clock start here
            self.pruning.on_train_epoch_start(self.model, self.current_epoch)
            self._epoch_start = time.perf_counter()
        # counted when fetched, not when stepped on: a checkpoint written during this batch
        # comes after the data loader has handed it out
        self._batches_done = batch_idx + 1
        if self._pending_resume is not None:
            saved, self._pending_resume = self._pending_resume, None
            torch.set_rng_state(saved["rng_cpu"])
            if saved["rng_cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(saved["rng_cuda"])
            if saved.get("train_penalty") is not None:
                load_metric_state(self.train_penalty, saved["train_penalty"])
            self.apply_resume_extras(saved)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["train_wall_time_s"] = self.train_wall_time_s
        trainer = self._trainer
        mid_epoch = trainer is not None and 0 < self._batches_done < trainer.num_training_batches
        checkpoint["exact_resume"] = {
            "batches_done": self._batches_done if mid_epoch else 0,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "train_penalty": metric_state(self.train_penalty) if mid_epoch else None,
            **(self.resume_extras() if mid_epoch else {}),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.train_wall_time_s = float(checkpoint.get("train_wall_time_s", 0.0))
        saved = checkpoint.get("exact_resume")
        if saved is None:  # a SQuAD checkpoint from before exact resume: epoch boundaries only
            return
        self._pending_resume = saved
        # "windows_done": the LM's checkpoints before the base class held this
        self._batches_done = int(saved.get("batches_done", saved.get("windows_done", 0)))
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if self._batches_done and datamodule is not None:
            if not hasattr(datamodule, "resume_train_at"):
                raise UserError(f"{type(datamodule).__name__} cannot resume in the middle of an epoch "
                                "(no resume_train_at); resume from an epoch-end checkpoint")
            datamodule.resume_train_at(self._batches_done)


def carry_step_count(checkpoint: dict, automatic: bool) -> None:
    """Let a checkpoint written under one optimisation mode resume under the other (the LM's
    model.step_impl eager <-> fused/graph): Lightning counts global_step in the progress tracker
    of the mode that ran, so the other one's, which this run reads, would start again at 0."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    auto = loop.get("epoch_loop.automatic_optimization.optim_progress")
    manual = loop.get("epoch_loop.manual_optimization.optim_step_progress")
    if auto is None or manual is None:
        return
    steps = auto["optimizer"]["step"]
    if automatic and steps["total"]["completed"] == 0 and manual["total"]["completed"] > 0:
        for scope in ("total", "current"):
            done = {"ready": manual[scope]["ready"], "completed": manual[scope]["completed"]}
            steps[scope].update(done)
            auto["optimizer"]["zero_grad"][scope].update(done, started=done["completed"])
    elif not automatic and manual["total"]["completed"] == 0 and steps["total"]["completed"] > 0:
        for scope in ("total", "current"):
            manual[scope].update(ready=steps[scope]["ready"], completed=steps[scope]["completed"])


def metric_state(metric: Metric) -> dict[str, torch.Tensor]:
    """A torchmetrics metric's running state, on the CPU (Lightning does not checkpoint it)."""
    return {name: value.detach().cpu().clone() for name, value in metric.metric_state.items()}


def load_metric_state(metric: Metric, state: dict[str, torch.Tensor]) -> None:
    device = next(iter(metric.metric_state.values())).device
    for name, value in state.items():
        setattr(metric, name, value.to(device))
    metric._update_count = 1  # compute() warns and update_count reads 0 without it
