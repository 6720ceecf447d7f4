"""`NeuronSelection`: L0 neuron selection for the nn.LSTM / nn.GRU modules of any LightningModule.

    trainer = L.Trainer(callbacks=[NeuronSelection(reg_lambda=1e-4, export_dir="pruned")],
                        gradient_clip_val=5.0)
    trainer.fit(module)            # module: yours, unchanged
    small = callback.pruned        # also in pruned/model.pt

What it does, as this suite trains its own gates (lightning_modules/task_base.py, pruning/optim.py):
  setup         add_neuron_gates on the module (or on `submodule`): before configure_optimizers,
                so an optimizer built from self.parameters() holds the gates.
  penalty       reg_lambda * l0_penalty (the expected number of non-zero RNN weights), in the
                units of the module's training loss: added to the gradient after each backward
                (d(loss + penalty) = d loss + d penalty; a callback cannot change the loss
                itself), divided by accumulate_grad_batches and scaled by an AMP grad scaler as
                Lightning scales the loss. Logged as neuron_selection/penalty.
  gate_update   with_weights (the suite's default): log_alpha trains in the module's own optimizer
                and sits inside the trainer's gradient clip (gradient_clip_val clips every
                parameter of the optimizer: the TF / iss-rnns joint clip). The gates must be in it
                (configure_optimizers from self.parameters()); if they are not and no lr scheduler
                would miss them, they join the first optimizer as a group at gate_lr (default:
                its first group's lr).
                adam: log_alpha is taken out of the module's optimizer and trained by Adam at
                gate_lr (default 1e-3), unclipped: Louizos et al.'s way.
  clamp         log_alpha clamped to its range after every optimizer step.
  freeze        from freeze_epoch (0-based) on, the gates stay at their test-time values, with no
                noise and no penalty, while the weights train on ("select, then fine-tune").
  logs          after each training epoch: neurons kept per RNN, layer and direction
                (kept/<rnn>/<layer>[_reverse]) and the expected L0 (neuron_selection/expected_l0).
  export        when fit ends: remove_pruned_neurons, kept as `callback.pruned` and, given an
                export_dir, written there: model.pt (torch.save of the whole pruned module),
                model.safetensors (its state dict) and config.json (sizes, neurons kept).

With manual optimisation the penalty joins every manual_backward call. The gates live in the
module, so a checkpoint holds them; a module loaded outside the Trainer needs
add_neuron_gates(module) before load_state_dict.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import save_model
from torch import nn

from ..atomic import atomic_replace_dir, atomic_write_json
from ..errors import UserError
from .gated_rnn import GateConfig
from .hard_concrete import HardConcreteGate
from .neuron_selection import (
    GatedRecurrent,
    add_neuron_gates,
    count_parameters,
    gate_parameters,
    l0_penalty,
    neurons_kept,
    remove_pruned_neurons,
)
from .optim import DEFAULT_ADAM_GATE_LR

log = logging.getLogger(__name__)

EXPORT_FORMAT = "neuron-selection-pruned-module/1"
CALLBACK_GATE_UPDATES = ("with_weights", "adam")


class NeuronSelection(Callback):
    def __init__(self, reg_lambda: float, export_dir: str | Path | None = None, *, submodule: str | None = None,
                 input_gates: bool = True, hidden_gates: bool = True, gate_config: GateConfig | None = None,
                 skip: tuple[str, ...] | list[str] = (), consumers: dict[str, str | None] | None = None,
                 gate_update: str = "with_weights", gate_lr: float | None = None,
                 freeze_epoch: int | None = None) -> None:
        """
        Args:
            reg_lambda: penalty strength per expected non-zero RNN weight, in units of the
                module's training loss.
            export_dir: where the pruned model is written when fit ends (None: not written).
            submodule: the attribute path of the module to gate and export (default: the whole
                LightningModule).
            input_gates, hidden_gates, gate_config, skip: as add_neuron_gates.
            consumers: as remove_pruned_neurons (which RNN output each Linear reads).
            gate_update: with_weights or adam (see the module docstring).
            gate_lr: the gates' learning rate where they get a group or an optimiser of their own.
            freeze_epoch: from this 0-based epoch on the gates are frozen (None: never).
        """
        if reg_lambda < 0:
            raise UserError(f"NeuronSelection: reg_lambda must be >= 0, got {reg_lambda}")
        if gate_update not in CALLBACK_GATE_UPDATES:
            raise UserError(f"NeuronSelection: gate_update must be one of {', '.join(CALLBACK_GATE_UPDATES)}, "
                            f"got {gate_update!r}")
        if gate_lr is not None and gate_lr <= 0:
            raise UserError(f"NeuronSelection: gate_lr must be > 0, got {gate_lr}")
        if freeze_epoch is not None and freeze_epoch < 0:
            raise UserError(f"NeuronSelection: freeze_epoch must be >= 0 or None, got {freeze_epoch}")
        self.reg_lambda, self.export_dir, self.submodule = reg_lambda, export_dir, submodule
        self.gate_kwargs = {"input_gates": input_gates, "hidden_gates": hidden_gates, "gate_config": gate_config,
                            "skip": tuple(skip), "consumers": consumers}
        self.consumers = consumers
        self.gate_update, self.gate_lr, self.freeze_epoch = gate_update, gate_lr, freeze_epoch
        self.frozen = False
        self.pruned: nn.Module | None = None
        self._gate_optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer_state: dict | None = None
        self._last_penalty: torch.Tensor | None = None

    # ---- the module --------------------------------------------------------------------

    def _target(self, pl_module: L.LightningModule) -> nn.Module:
        if not self.submodule:
            return pl_module
        try:
            return pl_module.get_submodule(self.submodule)
        except AttributeError:
            raise UserError(f"NeuronSelection: {type(pl_module).__name__} has no submodule "
                            f"{self.submodule!r}") from None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        target = self._target(pl_module)
        if any(isinstance(m, GatedRecurrent) for m in target.modules()):
            return  # gated by an earlier setup (fit, then test)
        gated = add_neuron_gates(target, **self.gate_kwargs)
        if gated is not target:  # submodule named an RNN itself
            parent, _, child = self.submodule.rpartition(".")
            setattr(pl_module.get_submodule(parent) if parent else pl_module, child, gated)

    # ---- the gates' optimiser ----------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after configure_optimizers, before a resumed run restores the optimisers' state: the
        # groups must be what they were when that state was saved
        gates = gate_parameters(self._target(pl_module))
        ids = {id(p) for p in gates}
        optimizers = trainer.optimizers
        if self.gate_update == "adam":
            for opt in optimizers:
                for group in opt.param_groups:
                    group["params"] = [p for p in group["params"] if id(p) not in ids]
            self._gate_optimizer = torch.optim.Adam(gates, lr=self.gate_lr or DEFAULT_ADAM_GATE_LR)
            if self._pending_optimizer_state is not None:
                self._gate_optimizer.load_state_dict(self._pending_optimizer_state)
                self._pending_optimizer_state = None
            return
        if not optimizers:
            raise UserError("NeuronSelection: the module has no optimizer to train the gates with; "
                            "use gate_update='adam' or return one from configure_optimizers")
        held = [(opt, group) for opt in optimizers for group in opt.param_groups
                if any(id(p) in ids for p in group["params"])]
        held_ids = {id(p) for _, group in held for p in group["params"] if id(p) in ids}
        if held_ids == ids:
            if self.gate_lr is not None and any(len(group["params"]) > len(ids & {id(p) for p in group["params"]})
                                                for _, group in held):
                raise UserError("NeuronSelection: gate_lr is set, but the gates share a parameter group with "
                                "weights (configure_optimizers used self.parameters()); give them a group of "
                                "their own there (lightning_modules.pruning.gate_parameters) or leave gate_lr unset")
            for _, group in held:
                if group.get("weight_decay", 0):
                    log.warning("NeuronSelection: the gates are in a parameter group with weight_decay=%s, which "
                                "pulls log_alpha towards 0 (gates half open); give them a group of their own with "
                                "weight_decay=0 (lightning_modules.pruning.gate_parameters)", group["weight_decay"])
            return
        if held_ids:
            raise UserError("NeuronSelection: only some of the gates are in the optimizer; put all of "
                            "lightning_modules.pruning.gate_parameters(module) in, or none")
        first = optimizers[0]
        if any(cfg.scheduler.optimizer is first for cfg in trainer.lr_scheduler_configs):
            raise UserError("NeuronSelection: the gates are not in the optimizer, and a group added now would "
                            "escape its lr scheduler; build the optimizer from self.parameters() (which holds the "
                            "gates once they are added, at setup) or use gate_update='adam'")
        lr = self.gate_lr or first.param_groups[0]["lr"]
        first.add_param_group({"params": gates, "lr": lr, "weight_decay": 0.0})
        log.info("NeuronSelection: the gates joined %s as a parameter group at lr %s", type(first).__name__, lr)

    def state_dict(self) -> dict:
        if self._gate_optimizer is None:
            return {}
        return {"gate_optimizer": self._gate_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending_optimizer_state = state_dict.get("gate_optimizer")

    # ---- training ----------------------------------------------------------------------

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # here, not in on_train_epoch_start, which Lightning skips when it resumes mid-epoch
        frozen = self.freeze_epoch is not None and trainer.current_epoch >= self.freeze_epoch
        if frozen != self.frozen or batch_idx == 0:
            self.frozen = frozen
            for m in self._target(pl_module).modules():
                if isinstance(m, HardConcreteGate):
                    m.frozen = frozen

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.reg_lambda == 0 or self.frozen or not pl_module.training:
            return
        penalty = self.reg_lambda * l0_penalty(self._target(pl_module))
        self._last_penalty = penalty.detach()
        scaled = penalty / trainer.accumulate_grad_batches
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            scaled = scaler.scale(scaled)
        scaled.backward()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if self._gate_optimizer is None or optimizer is not trainer.optimizers[0]:
            return
        params = [p for g in self._gate_optimizer.param_groups for p in g["params"] if p.grad is not None]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:  # Lightning unscales its optimizers' gradients, not these
            inv = 1.0 / scaler.get_scale()
            for p in params:
                p.grad.mul_(inv)
            if not all(torch.isfinite(p.grad).all() for p in params):
                self._gate_optimizer.zero_grad(set_to_none=True)
                return  # the scaler skips this step for the weights too
        self._gate_optimizer.step()
        self._gate_optimizer.zero_grad(set_to_none=True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        with torch.no_grad():
            for m in self._target(pl_module).modules():
                if isinstance(m, HardConcreteGate):
                    m.constrain_()
        if self._last_penalty is not None:
            pl_module.log("neuron_selection/penalty", self._last_penalty, on_step=True, on_epoch=False)
            self._last_penalty = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        target = self._target(pl_module)
        metrics = {}
        for name, kept in neurons_kept(target).items():
            directions = target.get_submodule(name).directions if name else target.directions
            for i, n in enumerate(kept["hidden"]):
                k, d = divmod(i, directions)
                metrics[f"kept/{name or 'rnn'}/{k}{'_reverse' if d else ''}"] = float(n)
        with torch.no_grad():
            metrics["neuron_selection/expected_l0"] = float(l0_penalty(target))
        pl_module.log_dict(metrics)

    # ---- export ------------------------------------------------------------------------

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        target = self._target(pl_module)
        self.pruned = remove_pruned_neurons(target, consumers=self.consumers).eval()
        kept = neurons_kept(target)
        # the model's own parameters, before and after (the gates are the method's, not the model's)
        params = {"before": count_parameters(target) - sum(p.numel() for p in gate_parameters(target)),
                  "after": count_parameters(self.pruned)}
        line = "; ".join(f"{n or 'rnn'}: hidden {k['hidden']}" for n, k in kept.items())
        log.info("NeuronSelection: kept %s; parameters %d -> %d", line, params["before"], params["after"])
        if self.export_dir is not None and trainer.is_global_zero:
            export_pruned(self.pruned, self.export_dir, {"neurons_kept": kept, "params": params,
                                                         "reg_lambda": self.reg_lambda})


def export_pruned(pruned: nn.Module, out_dir: str | Path, extra: dict) -> None:
    """model.pt (the whole module, torch.load(..., weights_only=False) to read), model.safetensors
    (its state dict) and config.json, written into a temp folder and renamed into place."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    torch.save(pruned, tmp / "model.pt")
    save_model(pruned, str(tmp / "model.safetensors"), metadata={"format": EXPORT_FORMAT})
    atomic_write_json(tmp / "config.json", {"format": EXPORT_FORMAT, "module": type(pruned).__qualname__, **extra})
    atomic_replace_dir(tmp, out_dir)
