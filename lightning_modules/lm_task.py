"""LightningModule: word-level LSTM language model, dense or with L0 neuron selection.

Objective, per token: cross-entropy + reg_lambda * E[L0], where E[L0] is the expected
number of non-zero LSTM weights (`GatedLSTM.expected_l0`, penalty form "weights") or
of open gates ("neurons"). So reg_lambda is "nats of per-token loss per expected
weight": it does not depend on batch size, num_steps or dataset size, and a value
means the same thing in every run. For the SGD step the objective is multiplied by
num_steps, because Zaremba's / the TF tutorial's loss is summed over the time steps
of a segment and averaged over the batch, and their learning rate of 1.0 is tuned
for that scale.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.text import Perplexity

from .errors import UserError
from .export import load_initial_weights, neurons_kept
from .gated_lstm import GateConfig
from .hard_concrete import LOUIZOS_LOG_ALPHA_RANGE
from .language_model import LSTMLanguageModel, model_size
from .optim import (
    GATE_UPDATES,
    SGDWithAdamGroups,
    clip_,
    clipped_parameters,
    lr_factor,
    optimizer_groups,
    scheduled,
)
from .pruning_methods import GATED_METHODS, build_pruning_method
from .run_dir import GATE_HISTORY_FILE
from .structured_sparsity import lstm_weight_matrices


def sizes_from_result(path: str) -> tuple[int, list[int]]:
    """(embedding_dim, hidden_sizes) that a finished run kept, read from its result.json."""
    try:
        kept = json.loads(Path(path).read_text())["neurons_kept"]
        return int(kept["input"][0]), [int(h) for h in kept["hidden"]]
    except FileNotFoundError:
        raise UserError(f"model.sizes_from: {path} not found; give a finished run's result.json") from None
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as e:
        raise UserError(f"model.sizes_from: {path} has no usable neurons_kept ({e!r})") from None


class LanguageModelTask(L.LightningModule):
    def __init__(
        self,
        vocab_size: int = 10000,
        embedding_dim: int = 200,
        hidden_sizes: list[int] = [200, 200],  # noqa: B006 (never mutated; the CLI shows it)
        dropout: float = 0.0,
        init_scale: float = 0.1,
        method: Literal["none", "l0", "group_lasso", "lasso", "magnitude"] = "l0",
        reg_lambda: float = 0.0,
        l0_penalty: Literal["weights", "neurons"] = "weights",
        zero_threshold: float | None = None,
        input_groups: bool = False,
        structured: bool = True,
        target_sparsity: float | None = None,
        target_neurons: list[int] | None = None,
        prune_begin_step: int = 0,
        prune_end_step: int = 1000,
        prune_every: int = 100,
        sizes_from: str | None = None,
        gate_beta: float = 2.0 / 3.0,
        gate_gamma: float = -0.1,
        gate_zeta: float = 1.1,
        log_alpha_init_mean: float = 1.0,
        log_alpha_init_std: float = 0.1,
        log_alpha_range: tuple[float, float] | None = LOUIZOS_LOG_ALPHA_RANGE,
        inner_input_gates: bool = True,
        gates_freeze_epoch: int | None = None,
        gate_update: Literal["with_weights", "adam", "unclipped"] = "with_weights",
        lr: float = 1.0,
        gate_lr: float | None = None,
        lr_schedule: Literal["exponential", "thirds"] = "exponential",
        lr_decay: float = 0.5,
        lr_decay_start_epoch: int = 4,
        max_grad_norm: float = 5.0,
        init_from: str | None = None,
        gate_history_every: int = 200,
    ) -> None:
        """
        Args:
            method: see lightning_modules/pruning_methods.py. "none": dense; "l0": hard
                concrete gates on every input and hidden neuron, penalty on the expected L0;
                "group_lasso": ISS; "lasso": L1; "magnitude": gradual magnitude pruning.
            reg_lambda: penalty strength per token: per expected non-zero weight (l0), per
                unit of group norm (group_lasso) or of |w| (lasso).
            zero_threshold: group_lasso/lasso zero every weight below it after each step
                (default: the iss-rnns rule, 1e-4 for group_lasso and
                max(1e-4, 2 * reg_lambda * num_steps) for lasso; see pruning_methods.py).
            input_groups: group_lasso also groups the first layer's input neurons.
            structured, target_sparsity, target_neurons, prune_begin_step, prune_end_step,
                prune_every: magnitude pruning: by ISS group to target_neurons per layer, or
                unstructured to target_sparsity, on the Zhu & Gupta cubic schedule.
            sizes_from: a run's result.json; the dense model gets its surviving sizes
                (the "direct design" control: the pruned sizes trained from scratch).
            init_scale: weights and biases uniform in [-init_scale, init_scale].
            log_alpha_init_mean, log_alpha_init_std: log_alpha starts at N(mean, std). N(1, 0.1) is
                attributed to the paper by one re-implementation only (docs/REFERENCES.md).
            log_alpha_range: log_alpha is clamped to [low, high] after every step (default
                [ln 0.01, ln 100], Louizos et al.'s code); null: no clamp.
            inner_input_gates: false: layers above the first have no input gates of their own, so
                the path between layers is gated once (by the hidden gate below), not twice.
            gates_freeze_epoch: L0 only: from this 0-based epoch on, gates stay at their test-time
                values (no noise, no penalty) while the weights train on ("select, then fine-tune").
            gate_update: how log_alpha is optimised: with_weights (in the weights' SGD and their
                global clip: the TF / iss-rnns way), adam (Adam at gate_lr, unclipped: Louizos et
                al.'s way), unclipped (before 2026-11-30; shuts neurons at lr 1 with no penalty).
                See lightning_modules/optim.py.
            lr, lr_schedule, lr_decay, lr_decay_start_epoch: SGD learning rate and its schedule:
                exponential: from epoch lr_decay_start_epoch on (0-based epoch e),
                lr * lr_decay ** (e + 1 - start) (TF tutorial); thirds: lr * lr_decay **
                (e // (max_epochs // 3)) (iss-rnns sparselarge: 0.1 every 18 of 55 epochs).
            gate_lr: learning rate of the gates' log_alpha (default: lr; with gate_update=adam 1e-3).
            max_grad_norm: global-norm clip of the gradients (which ones: gate_update).
            init_from: a finished run dir (or its export/): start from its exported weights
                (pruning a trained model; iss-rnns' --restore_path). Sizes and vocabulary must match.
            gate_history_every: gated runs append every gate's P(z != 0) to gate_history.jsonl
                every this many steps (and after each epoch); 0: after each epoch only.
        """
        super().__init__()
        if reg_lambda < 0:
            raise UserError(f"model.reg_lambda must be >= 0, got {reg_lambda}")
        if sizes_from is not None:
            if method != "none":
                raise UserError("model.sizes_from (direct design) trains a dense model; set model.method=none")
            embedding_dim, hidden_sizes = sizes_from_result(sizes_from)
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1), got {dropout}")
        if lr <= 0 or (gate_lr is not None and gate_lr <= 0):
            raise UserError("model.lr and model.gate_lr must be > 0")
        if gate_update not in GATE_UPDATES:
            raise UserError(f"model.gate_update must be one of {', '.join(GATE_UPDATES)}, got {gate_update!r}")
        if not hidden_sizes or min(hidden_sizes) < 1 or embedding_dim < 1:
            raise UserError(f"model sizes must be positive, got embedding_dim={embedding_dim}, "
                            f"hidden_sizes={hidden_sizes}")
        self.save_hyperparameters()
        # the sizes actually built (sizes_from may have replaced the arguments)
        self.hparams.update(embedding_dim=embedding_dim, hidden_sizes=list(hidden_sizes))
        gate_config = GateConfig(gate_beta, gate_gamma, gate_zeta, log_alpha_init_mean,
                                 log_alpha_init_std, log_alpha_range, inner_input_gates)
        self.model = LSTMLanguageModel(vocab_size, embedding_dim, list(hidden_sizes), dropout,
                                       gated=method in GATED_METHODS, init_scale=init_scale,
                                       gate_config=gate_config)
        self.init_vocab = load_initial_weights(self.model, init_from) if init_from else None
        self.pruning = build_pruning_method(
            method, self.model, reg_lambda=reg_lambda, l0_penalty=l0_penalty,
            zero_threshold=zero_threshold, input_groups=input_groups, structured=structured,
            target_sparsity=target_sparsity, target_neurons=target_neurons,
            prune_begin_step=prune_begin_step, prune_end_step=prune_end_step, prune_every=prune_every,
            gates_freeze_epoch=gates_freeze_epoch)
        self.val_ppl = Perplexity()
        self.test_ppl = Perplexity()
        self.train_ce = MeanMetric()
        self._state = None
        self.train_wall_time_s = 0.0
        self._epoch_start = None
        self._windows_done = 0  # training windows of the current epoch already stepped on
        self._pending_resume: dict | None = None

    def setup(self, stage: str) -> None:
        data = self._trainer.datamodule if self._trainer is not None else None
        vocab = getattr(data, "vocab", None) if data is not None else None
        if self.init_vocab is not None and vocab is not None and list(vocab) != self.init_vocab:
            raise UserError(f"model.init_from: {self.hparams.init_from} was trained on another vocabulary "
                            f"({len(self.init_vocab)} tokens) than this run's data ({len(vocab)} tokens)")

    # ---- sizes ----------------------------------------------------------------------

    def size_report(self) -> dict:
        """Neurons kept per layer and the size of the model that export would write."""
        rnn = self.model.rnn
        kept = neurons_kept(self.model)
        weights = lstm_weight_matrices(list(rnn.layers))
        hp = self.hparams
        before = model_size(hp.vocab_size, hp.embedding_dim, list(hp.hidden_sizes))
        # the exported embedding keeps layer 0's surviving inputs; a layer reads all the
        # surviving neurons of the one below (max(.., 1): sizes of a model export refuses)
        after = model_size(hp.vocab_size, max(kept["input"][0], 1), [max(h, 1) for h in kept["hidden"]])
        return {
            "neurons_kept": kept,
            "neurons_total": {"input": list(rnn.input_sizes), "hidden": list(rnn.hidden_sizes)},
            "expected_l0": float(rnn.expected_l0(hp.l0_penalty).detach()),
            "lstm_weight_sparsity": float(sum(int((w == 0).sum()) for w in weights)
                                          / sum(w.numel() for w in weights)),
            "params": {"before": before["params"], "after": after["params"]},
            "lstm_params": {"before": before["lstm_params"], "after": after["lstm_params"]},
            "flops_per_token": {"before": before["flops_per_token"],
                                "after": after["flops_per_token"]},
            "lstm_flops_per_token": {"before": before["lstm_flops_per_token"],
                                     "after": after["lstm_flops_per_token"]},
        }

    # ---- steps ----------------------------------------------------------------------

    def _step(self, batch):
        x, y = batch
        logits, state = self.model(x, self._state)
        # truncated BPTT: carry the state into the next segment, but not its graph
        self._state = [(h.detach(), c.detach()) for h, c in state]
        return logits, y

    def training_step(self, batch, batch_idx):
        logits, y = self._step(batch)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        objective = ce
        penalty = self.pruning.penalty(self.model)
        if penalty is not None:
            objective = ce + penalty
            self.log("train/penalty", penalty, on_step=True, on_epoch=True)
        if not torch.isfinite(objective):
            raise UserError(f"the training loss became {objective.item()} at step "
                            f"{self.global_step}; lower model.lr or model.reg_lambda")
        self._segment_len = y.shape[1]
        self.train_ce.update(ce.detach(), weight=y.numel())
        self.log("train/loss", ce, on_step=True, on_epoch=False, prog_bar=True)
        return objective * y.shape[1]

    def validation_step(self, batch, batch_idx):
        logits, y = self._step(batch)
        self.val_ppl.update(logits, y)

    def test_step(self, batch, batch_idx):
        logits, y = self._step(batch)
        self.test_ppl.update(logits, y)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self._pending_resume is not None:
            self._apply_resume_state(self._pending_resume)
            self._pending_resume = None

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Thresholding / masking of the Lasso and magnitude methods belong to the step itself:
        # a checkpoint written after it (callbacks' on_train_batch_end) must hold their effect.
        # Lightning counts this step (global_step + 1) once this hook returns.
        self.pruning.after_optimizer_step(self.model, self.global_step + 1, self._segment_len)
        self._windows_done = batch_idx + 1

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        every = self.hparams.gate_history_every
        if every and self.global_step % every == 0:
            self._append_gate_history()

    def on_before_optimizer_step(self, optimizer) -> None:
        clip_(clipped_parameters(self.model.weight_parameters(), self.model.rnn.gate_parameters(),
                                 self.hparams.gate_update), self.hparams.max_grad_norm)

    # ---- epoch hooks ------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self.pruning.on_train_epoch_start(self.model, self.current_epoch)
        self._state = None
        self._windows_done = 0
        self._epoch_start = time.perf_counter()

    def on_validation_epoch_start(self) -> None:
        self._train_state, self._state = self._state, None

    def on_validation_epoch_end(self) -> None:
        self.log("val_ppl", self.val_ppl.compute(), prog_bar=True)
        self.val_ppl.reset()
        self._state = getattr(self, "_train_state", None)

    def on_test_epoch_start(self) -> None:
        self._state = None

    def on_test_epoch_end(self) -> None:
        self.log("test_ppl", self.test_ppl.compute())
        self.test_ppl.reset()

    def on_train_epoch_end(self) -> None:
        if self._epoch_start is not None:
            self.train_wall_time_s += time.perf_counter() - self._epoch_start
        if self.train_ce.update_count:
            self.log("train_ppl", math.exp(min(float(self.train_ce.compute()), 50.0)))
        self.train_ce.reset()
        report = self.size_report()
        metrics = {
            "size/expected_l0": report["expected_l0"],
            "size/params": float(report["params"]["after"]),
            "size/flops_per_token": float(report["flops_per_token"]["after"]),
            "lr": self.optimizers().param_groups[0]["lr"],
            # time spent in training epochs so far, their validation included (Lightning validates
            # before the epoch ends) and earlier invocations of a resumed run too
            "time/train_s": self.train_wall_time_s,
        }
        for kind in ("input", "hidden"):
            for k, n in enumerate(report["neurons_kept"][kind]):
                metrics[f"kept/{kind}_{k}"] = float(n)
        self.log_dict(metrics)
        self._append_gate_history()

    def _append_gate_history(self) -> None:
        """P(z != 0) of every gate, one JSON line per call (for the gate-open plots).

        A resumed run may repeat a step's line; readers keep the last line per step.
        """
        rnn = self.model.rnn
        if not rnn.gated or self.trainer is None or not self.trainer.is_global_zero:
            return
        if getattr(self, "_history_step", None) == self.global_step:
            return  # the epoch ended on a step that was just recorded
        self._history_step = self.global_step
        with torch.no_grad():
            probs_in, probs_hid = rnn.gate_probs()
            entry = {
                "epoch": self.current_epoch,
                "step": self.global_step,
                "input": [[round(p, 4) for p in q.tolist()] for q in probs_in],
                "hidden": [[round(p, 4) for p in q.tolist()] for q in probs_hid],
            }
        path = Path(self.trainer.default_root_dir) / GATE_HISTORY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    # ---- optimisation -----------------------------------------------------------------

    def configure_optimizers(self):
        hp = self.hparams
        groups = optimizer_groups(self.model.weight_parameters(), self.model.rnn.gate_parameters(),
                                  lr=hp.lr, gate_update=hp.gate_update, gate_lr=hp.gate_lr)
        optimizer = SGDWithAdamGroups(groups, lr=hp.lr)
        max_epochs = self.trainer.max_epochs if self._trainer is not None else 1
        factor = lr_factor(hp.lr_schedule, hp.lr_decay, hp.lr_decay_start_epoch, max_epochs or 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, scheduled(factor, groups))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ---- checkpoint extras --------------------------------------------------------------

    # A resumed run must continue exactly where the saved one stood, also in the middle of an
    # epoch: the next training window, the hidden state carried across windows, the RNG that
    # draws the gates' noise and dropout, and the running train loss. The RNG and the state are
    # applied at the first training batch after the restore, because Lightning starts the
    # (resumed) epoch in between, which resets the state.

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["train_wall_time_s"] = self.train_wall_time_s
        mid_epoch = self.trainer is not None and self._windows_done < self.trainer.num_training_batches
        state = (self._state if self._state is not None else getattr(self, "_train_state", None)) if mid_epoch else None
        checkpoint["exact_resume"] = {
            "windows_done": self._windows_done if mid_epoch else 0,
            "hidden": [(h.cpu(), c.cpu()) for h, c in state] if state is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "train_ce": ({"mean_value": self.train_ce.mean_value.cpu(), "weight": self.train_ce.weight.cpu()}
                         if mid_epoch else None),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.train_wall_time_s = float(checkpoint.get("train_wall_time_s", 0.0))
        resume = checkpoint.get("exact_resume")
        if resume is None:
            return
        self._pending_resume = resume
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if resume["windows_done"] and hasattr(datamodule, "resume_train_at"):
            datamodule.resume_train_at(resume["windows_done"])

    def _apply_resume_state(self, resume: dict) -> None:
        torch.set_rng_state(resume["rng_cpu"])
        if resume["rng_cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(resume["rng_cuda"])
        if resume["hidden"] is not None:
            self._state = [(h.to(self.device), c.to(self.device)) for h, c in resume["hidden"]]
        if resume["train_ce"] is not None:
            self.train_ce.mean_value = resume["train_ce"]["mean_value"].to(self.device)
            self.train_ce.weight = resume["train_ce"]["weight"].to(self.device)
            self.train_ce._update_count = 1
