"""LightningModule: word-level LSTM language model, dense or with L0 neuron selection.

Objective, per token: cross-entropy + reg_lambda * E[L0], where E[L0] is the expected
number of non-zero RNN weights (`GatedRNN.expected_l0`). So reg_lambda is "nats of per-token
loss per expected weight": it does not depend on batch size, num_steps or dataset size, and a value
means the same thing in every run. For the SGD step the objective is multiplied by
num_steps, because Zaremba's / the TF tutorial's loss is summed over the time steps
of a segment and averaged over the batch, and their learning rate of 1.0 is tuned
for that scale.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.text import Perplexity

from ..errors import UserError
from ..fused_step import STEP_IMPLS, LMTrainStep
from ..pruning.optim import SGDWithAdamGroups, clipped_parameters, lr_factor, scheduled
from ..pruning.structured_sparsity import lstm_weight_matrices
from ..run_dir import GATE_HISTORY_FILE, RESULT_FILE
from ..task_base import PrunedTask, carry_step_count, load_metric_state, metric_state
from .export import load_initial_weights, neurons_kept
from .language_model import LSTMLanguageModel, model_size


def sizes_from_result(path: str) -> tuple[int, list[int]]:
    """(embedding_dim, hidden_sizes) that a finished run kept, read from its result.json."""
    try:
        kept = json.loads(Path(path).read_text())["neurons_kept"]
        return int(kept["input"][0]), [int(h) for h in kept["hidden"]]
    except FileNotFoundError:
        raise UserError(f"model.sizes_from: {path} not found; give a finished run's {RESULT_FILE}") from None
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as e:
        raise UserError(f"model.sizes_from: {path} has no usable neurons_kept ({e!r})") from None


class LanguageModelTask(PrunedTask):
    def __init__(
        self,
        vocab_size: int = 10000,
        embedding_dim: int = 200,
        hidden_sizes: list[int] = [200, 200],  # noqa: B006 (never mutated; the CLI shows it)
        dropout: float = 0.0,
        init_scale: float = 0.1,
        sizes_from: str | None = None,
        inner_input_gates: bool = True,
        cell: Literal["lstm", "gru"] = "lstm",
        lr: float = 1.0,
        lr_schedule: Literal["exponential", "thirds"] = "exponential",
        lr_decay: float = 0.5,
        lr_decay_start_epoch: int = 4,
        max_grad_norm: float | None = 5.0,
        init_from: str | None = None,
        gate_history_every: int = 200,
        step_impl: Literal["eager", "fused", "graph"] = "eager",
        **kwargs,
    ) -> None:
        """
        Args:
            sizes_from: a run's result.json; method none: the dense model gets its surviving
                sizes (the "direct design" control: the pruned sizes trained from scratch);
                structured magnitude: they are its target_neurons (pruning to equal size).
            init_scale: weights and biases uniform in [-init_scale, init_scale].
            inner_input_gates: false: layers above the first have no input gates of their own, so
                the path between layers is gated once (by the hidden gate below), not twice. No config
                sets it: it stays for ablation D of docs/ABLATIONS.md, whose record
                (reproduce/measured/ptb_smoke_ablation/abl_D_joint_init3_once) ran with false.
            cell: lstm or gru, the recurrent layers (the same gates, penalty and export).
            lr, lr_schedule, lr_decay, lr_decay_start_epoch: SGD learning rate and its schedule:
                exponential: from epoch lr_decay_start_epoch on (0-based epoch e),
                lr * lr_decay ** (e + 1 - start) (TF tutorial); thirds: lr * lr_decay **
                (e // (max_epochs // 3)) (iss-rnns sparselarge: 0.1 every 18 of 55 epochs).
            max_grad_norm: global-norm clip (TF tutorial: 5 small and medium, 10 large).
            init_from: a finished run dir (or its export/): start from its exported weights
                (pruning a trained model; iss-rnns' --restore_path). Sizes and vocabulary must match.
            gate_history_every: gated runs append every gate's P(z != 0) to gate_history.jsonl
                every this many steps (and after each epoch); 0: after each epoch only.
            step_impl: eager: Lightning's automatic optimisation (each piece of the step from its
                own hook); fused: the whole step as one function of static tensors, run eagerly
                (manual optimisation; the same numbers on the CPU); graph: that function captured
                and replayed as one CUDA graph (falls back to fused, with one line, without CUDA or
                if capture fails). See lightning_modules/fused_step.py.
            **kwargs: the pruning method, the gates and their optimisation: see
                lightning_modules/task_base.py (PrunedTask).
        """
        super().__init__(lr=lr, max_grad_norm=max_grad_norm, **kwargs)
        hp = self.hparams
        if step_impl not in STEP_IMPLS:
            raise UserError(f"model.step_impl must be one of {', '.join(STEP_IMPLS)}, got {step_impl!r}")
        # fused/graph: the step does backward, clip and update itself (fused_step.py)
        self.automatic_optimization = step_impl == "eager"
        self._train_step: LMTrainStep | None = None
        self._saved_step_lr: list[float] | None = None
        targets = {}
        if sizes_from is not None:
            # the sizes another run kept: the dense model's (direct design) or magnitude's targets
            if hp.method == "none":
                embedding_dim, hidden_sizes = sizes_from_result(sizes_from)
            elif hp.method == "magnitude" and hp.structured:
                targets["target_neurons"] = sizes_from_result(sizes_from)[1]
            else:
                raise UserError("model.sizes_from takes the sizes a finished run kept: for method=none (the "
                                "direct design) or for structured magnitude pruning's target_neurons")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1), got {dropout}")
        if not hidden_sizes or min(hidden_sizes) < 1 or embedding_dim < 1:
            raise UserError(f"model sizes must be positive, got embedding_dim={embedding_dim}, "
                            f"hidden_sizes={hidden_sizes}")
        # the sizes actually built (sizes_from may have replaced the arguments)
        self.hparams.update(embedding_dim=embedding_dim, hidden_sizes=list(hidden_sizes))
        self.model = LSTMLanguageModel(vocab_size, embedding_dim, list(hidden_sizes), dropout,
                                       gated=self.gated, init_scale=init_scale,
                                       gate_config=self.gate_config(inner_input_gates=inner_input_gates),
                                       cell=cell)
        self.init_vocab = load_initial_weights(self.model, init_from) if init_from else None
        self.pruning = self.build_pruning(self.model, **targets)
        self.val_ppl = Perplexity()
        self.test_ppl = Perplexity()
        self.train_ce = MeanMetric()
        self._state = None
        self._segment_len = 1

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
        before = model_size(hp.vocab_size, hp.embedding_dim, list(hp.hidden_sizes), cell=hp.cell)
        # the exported embedding keeps layer 0's surviving inputs; a layer reads all the
        # surviving neurons of the one below (max(.., 1): sizes of a model export refuses)
        after = model_size(hp.vocab_size, max(kept["input"][0], 1), [max(h, 1) for h in kept["hidden"]],
                           cell=hp.cell)
        return {
            "neurons_kept": kept,
            "neurons_total": {"input": list(rnn.input_sizes), "hidden": list(rnn.hidden_sizes)},
            "expected_l0": float(rnn.expected_l0().detach()),
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
        self._state = [tuple(t.detach() for t in s) for s in state]  # (h, c) LSTM, (h,) GRU
        return logits, y

    def training_step(self, batch, batch_idx):
        if not self.automatic_optimization:
            return self._fused_training_step(batch, batch_idx)
        logits, y = self._step(batch)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        objective = self.objective(ce, y.shape[0])
        self._segment_len = y.shape[1]
        self.train_ce.update(ce.detach(), weight=y.numel())
        self.log("train/loss", ce, on_step=True, on_epoch=False, prog_bar=True)
        return objective * y.shape[1]

    def _fused_training_step(self, batch, batch_idx) -> None:
        """step_impl fused/graph: one LMTrainStep call per window; nothing here reads the device,
        except at the log interval."""
        x, y = batch
        step = self._get_train_step()
        if self._state is not None:  # a resumed run's hidden state (apply_resume_extras)
            step.load_state(self._state)
            self._state = None
        self._segment_len = y.shape[1]
        number = self.global_step + 1
        # through the LightningOptimizer, so that Lightning counts the step (global_step, step
        # checkpoints, max_steps); fused=True: the closure is the whole step (SGDWithAdamGroups.step)
        self.optimizers().step(closure=lambda: step(x, y, number), fused=True)
        trainer = self.trainer
        if batch_idx + 1 == trainer.num_training_batches:
            # the epoch's lr schedule step, where automatic optimisation takes it: after the
            # epoch's last optimizer step, before on_train_batch_end (which may checkpoint)
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                scheduler.step()
        every = trainer.log_every_n_steps
        if every and self.global_step % every == 0:  # the steps Lightning writes logs at
            self._raise_if_nonfinite()
            metrics = step.step_metrics()
            # not on the progress bar: Lightning turns progress-bar values into Python numbers
            # after every batch, which would read the device once per step
            self.log("train/loss", metrics["loss"], on_step=True, on_epoch=False)
            if "penalty" in metrics:
                self.log("train/penalty_step", metrics["penalty"], on_step=True, on_epoch=False,
                         batch_size=y.shape[0])

    def _get_train_step(self) -> LMTrainStep:
        optimizer = self.optimizers().optimizer
        if self._train_step is None or self._train_step.optimizer is not optimizer:
            clipped, max_norm = self.step_clip()
            self._train_step = LMTrainStep(self.model, self.pruning, optimizer, clipped=clipped,
                                           max_grad_norm=max_norm, mode=self.hparams.step_impl,
                                           loss_metric=self.train_ce, penalty_metric=self.train_penalty,
                                           device=self.device)
            if self._saved_step_lr is not None:  # the lr tensors of the checkpoint resumed from
                self._train_step.update.set_lr(self._saved_step_lr)
                self._saved_step_lr = None
        return self._train_step

    def step_clip(self) -> tuple[list, float | None]:
        """What a fused step clips and to which global norm (None: no clip): LMTrainStep's and the
        batched trainer's members' (lightning_modules/lm/batched.py)."""
        hp = self.hparams
        max_norm = hp.max_grad_norm if hp.max_grad_norm is not None and math.isfinite(hp.max_grad_norm) else None
        clipped = clipped_parameters(self.model.weight_parameters(), self.model.gate_parameters(), hp.gate_update)
        return clipped, max_norm

    def _raise_if_nonfinite(self) -> None:
        """fused/graph: the first non-finite objective, recorded on the device, stops the run here."""
        bad = self._train_step.nonfinite() if self._train_step is not None else None
        if bad is not None:
            raise UserError(f"the training loss became {bad[1]} at step {bad[0]}; "
                            "lower model.lr or model.reg_lambda")

    def validation_step(self, batch, batch_idx):
        logits, y = self._step(batch)
        self.val_ppl.update(logits, y)

    def test_step(self, batch, batch_idx):
        logits, y = self._step(batch)
        self.test_ppl.update(logits, y)

    def loss_steps(self) -> int:
        return self._segment_len  # the objective is scaled by num_steps for the SGD step

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        every = self.hparams.gate_history_every
        if every and self.global_step % every == 0:
            self._append_gate_history()

    # ---- epoch hooks ------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._state = None
        if self._train_step is not None:
            self._train_step.reset_state()

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
        self._raise_if_nonfinite()
        super().on_train_epoch_end()
        if self.train_ce.update_count:
            self.log("train_ppl", math.exp(min(float(self.train_ce.compute()), 50.0)))
        self.train_ce.reset()
        report = self.size_report()
        metrics = {
            "size/expected_l0": report["expected_l0"],
            "size/params": float(report["params"]["after"]),
            "size/flops_per_token": float(report["flops_per_token"]["after"]),
            "lr": self.optimizers().param_groups[0]["lr"],
            "time/train_s": self.train_wall_time_s,
        }
        for kind in ("input", "hidden"):
            for k, n in enumerate(report["neurons_kept"][kind]):
                metrics[f"kept/{kind}_{k}"] = float(n)
        self.log_dict(metrics)
        self._append_gate_history()

    def _append_gate_history(self, epoch: int | None = None, step: int | None = None) -> None:
        """P(z != 0) of every gate, one JSON line per call (for the gate-open plots). epoch, step:
        where training stands (default: the trainer's loop; the batched trainer passes its own).

        A resumed run may repeat a step's line; readers keep the last line per step.
        """
        rnn = self.model.rnn
        if not rnn.gated or self.trainer is None or not self.trainer.is_global_zero:
            return
        epoch = self.current_epoch if epoch is None else epoch
        step = self.global_step if step is None else step
        if getattr(self, "_history_step", None) == step:
            return  # the epoch ended on a step that was just recorded
        self._history_step = step
        with torch.no_grad():
            probs_in, probs_hid = rnn.gate_probs()
            entry = {
                "epoch": epoch,
                "step": step,
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
        groups = self.optimizer_groups()
        optimizer = SGDWithAdamGroups(groups, lr=hp.lr)
        max_epochs = self.trainer.max_epochs if self._trainer is not None else 1
        factor = lr_factor(hp.lr_schedule, hp.lr_decay, hp.lr_decay_start_epoch, max_epochs or 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, scheduled(factor, groups))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ---- checkpoint extras --------------------------------------------------------------

    # What a mid-epoch resume needs beyond the base class's (PrunedTask: the next window, the
    # RNG, the penalty's mean): the hidden state carried across windows and the running train
    # loss. Both are put back at the first training batch after the restore, because Lightning
    # starts the resumed epoch in between, which resets them.

    def resume_extras(self) -> dict:
        if self._train_step is not None:  # fused/graph: the state lives in the step's buffers
            state = self._train_step.hidden_state() if self._state is None else self._state
        else:  # a checkpoint written during a mid-epoch validation finds the state set aside
            state = self._state if self._state is not None else getattr(self, "_train_state", None)
        return {"hidden": [tuple(t.cpu() for t in s) for s in state] if state is not None else None,
                "train_ce": metric_state(self.train_ce)}

    def apply_resume_extras(self, saved: dict) -> None:
        if saved.get("hidden") is not None:
            self._state = [tuple(t.to(self.device) for t in s) for s in saved["hidden"]]
        if saved.get("train_ce") is not None:
            load_metric_state(self.train_ce, saved["train_ce"])

    # fused/graph: each parameter group's lr as the step's tensors held it (the same values as the
    # optimiser's param_groups, which Lightning checkpoints with the optimiser's state)
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self._raise_if_nonfinite()  # never checkpoint weights a non-finite step has updated
        super().on_save_checkpoint(checkpoint)
        if self._train_step is not None:
            checkpoint["train_step"] = {"lr": [t.detach().cpu().clone() for t in self._train_step.update.lr]}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        carry_step_count(checkpoint, self.automatic_optimization)  # saved under another step_impl
        saved = checkpoint.get("train_step")
        self._saved_step_lr = [float(lr) for lr in saved["lr"]] if saved else None
