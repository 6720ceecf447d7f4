"""LightningModule: BiDAF on SQuAD, dense or pruned by any method of pruning_methods.py.

Objective per question: cross-entropy of the start token + cross-entropy of the end token
(averaged over the batch), + reg_lambda * penalty. With L0 the penalty is the expected number
of non-zero LSTM weights of all eight LSTMs (`BiDAF.expected_l0`), so reg_lambda is "nats of
per-question loss per expected non-zero weight". The Lasso-type methods threshold after every
step by the iss-rnns rule (pruning_methods.py) unless zero_threshold is given.

Evaluation uses an exponential moving average of the weights (BiDAF: decay 0.999), kept in
`ema_model`, a copy of the model that is checkpointed with it. The decay ramps up as in
TensorFlow's ExponentialMovingAverage with num_updates: min(decay, (1 + t) / (10 + t)), so a
short run is not evaluated on its initial weights. Export, neurons kept and sizes are read off
the same averaged model. A weight a pruning method holds at exactly zero is zero in the average
too, so that removed ISS groups stay removable.

EM and F1 are torchmetrics' SQuAD metric (the official v1.1 normalisation), in percent, over
every evaluated question; `predictions` maps question id -> answer text, the official format.
With several processes (DDP) each evaluates its own share of the questions (squad_data.py's
EvalShardSampler), the metric sums over the processes, and every process ends with all the
predictions. The logged training loss is the mean over the processes, i.e. the global batch's.
One known difference from the official script: when prediction and gold both normalise to
nothing (e.g. "the" vs "."), torchmetrics' F1 is 100, the official 0 (3 of dev-v1.1's 34,726
gold answers are "."); the official evaluator on predictions.json is the reference.
"""

from __future__ import annotations

import copy
import sys
from typing import Literal

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.text import SQuAD

from ..errors import UserError
from ..pruning.structured_sparsity import lstm_weight_matrices
from ..task_base import PrunedTask, load_metric_state, metric_state
from .bidaf import LSTM_NAMES, BiDAF, bidaf_size, decode_spans
from .squad_data import span_text
from .squad_export import neurons_kept


class SquadTask(PrunedTask):
    def __init__(
        self,
        word_vocab_size: int = 2,
        char_vocab_size: int = 2,
        word_dim: int = 100,
        char_dim: int = 8,
        char_channels: int = 100,
        char_kernel: int = 5,
        hidden_size: int = 100,
        highway_layers: int = 2,
        dropout: float = 0.2,
        max_answer_tokens: int = 30,
        prune_contextual: bool = True,
        optimizer: Literal["adam", "adadelta"] = "adam",
        lr: float = 0.001,
        ema_decay: float | None = 0.999,
        max_grad_norm: float | None = None,
        **kwargs,
    ) -> None:
        """
        Args:
            word_vocab_size, char_vocab_size: set from the data (linked by the training CLI).
            word_dim: word vector size; must equal GloVe's (data.glove_member) unless data.word_vectors=random.
            char_dim, char_channels, char_kernel: char CNN (BiDAF: 8, 100, 5).
            hidden_size: of every LSTM direction (BiDAF: 100).
            max_answer_tokens: longest span decoding may return.
            prune_contextual: prune the contextual BiLSTM too (iss-rnns did not). target_neurons
                gives one count per pruned LSTM in LSTM_NAMES order (6 without it, else 8).
            optimizer, lr: adam 0.001 (the BiDAF code's default) or adadelta 0.5 (the paper's);
                gate_update=adam needs optimizer=adam.
            ema_decay: moving average of the weights used for evaluation and export (None: off).
            max_grad_norm: global-norm clip of the gradients (None: no clipping, as BiDAF).
            **kwargs: the pruning method, the gates and their optimisation: see
                lightning_modules/task_base.py (PrunedTask).
        """
        super().__init__(lr=lr, max_grad_norm=max_grad_norm, **kwargs)
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1), got {dropout}")
        if self.hparams.gate_update == "adam" and optimizer != "adam":
            raise UserError("model.gate_update=adam needs model.optimizer=adam (one optimiser holds both)")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise UserError(f"model.ema_decay must be in (0, 1) or null, got {ema_decay}")
        if min(word_dim, char_dim, char_channels, char_kernel, hidden_size, max_answer_tokens) < 1:
            raise UserError("model sizes (word_dim, char_dim, char_channels, char_kernel, hidden_size) and "
                            "max_answer_tokens must be positive")
        self.model = BiDAF(word_vocab_size, char_vocab_size, word_dim, char_dim, char_channels, char_kernel,
                           hidden_size, highway_layers, dropout, gated=self.gated,
                           prune_contextual=prune_contextual, gate_config=self.gate_config())
        self.pruning = self.build_pruning(self.model)
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False) if ema_decay else None
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.squad = SQuAD()
        self.train_loss = MeanMetric()
        self.predictions: dict[str, str] = {}
        self.word_vectors_note = ""
        self._frozen_rows_hooked = False

    @property
    def eval_model(self) -> BiDAF:
        """The model evaluation, sizes and export use: the weight average, if kept."""
        return self.ema_model if self.ema_model is not None else self.model

    # ---- word vectors -------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        data = self._trainer.datamodule if self._trainer is not None else None
        if data is not None and hasattr(data, "pretrained_word_vectors"):
            self.use_word_vectors(data.pretrained_word_vectors(), data.word_vectors_note())

    def use_word_vectors(self, pretrained: tuple[torch.Tensor, torch.Tensor] | None, note: str) -> None:
        """Copy GloVe rows in and keep them fixed (a checkpoint, restored after setup, wins)."""
        if not self.word_vectors_note:
            print(f"word vectors: {note}", file=sys.stderr)
        self.word_vectors_note = note
        if pretrained is None:
            return
        vectors, known = pretrained
        emb = self.model.word_embedding.weight
        if vectors.shape[1] != emb.shape[1]:
            raise UserError(f"data.glove_path has {vectors.shape[1]}-d vectors but model.word_dim is "
                            f"{emb.shape[1]}; set model.word_dim={vectors.shape[1]}")
        with torch.no_grad():
            for model in {id(m): m for m in (self.model, self.eval_model)}.values():
                model.word_embedding.weight[known] = vectors[known].to(emb.device)
        if not self._frozen_rows_hooked:
            trainable = (~known).to(emb.dtype)[:, None]
            emb.register_hook(lambda grad: grad * trainable.to(grad.device))
            self._frozen_rows_hooked = True

    # ---- sizes --------------------------------------------------------------------------

    def size_report(self) -> dict:
        model, hp = self.eval_model, self.hparams
        kept = neurons_kept(model)
        # max(.., 1): the sizes of a model export refuses (a fully pruned LSTM) still compute
        kept_hidden = {n: max(k["hidden"], 1) for n, k in kept["by_lstm"].items()}
        before = bidaf_size(hp.word_vocab_size, hp.char_vocab_size, model.dims, model.hidden)
        after = bidaf_size(hp.word_vocab_size, hp.char_vocab_size, model.dims, kept_hidden)
        weights = lstm_weight_matrices([u.lstm for u in model.all_units()])
        return {
            "neurons_kept": kept,
            "neurons_total": {"lstm_names": list(LSTM_NAMES),
                              "input": [model.lstm(n).input_sizes[0] for n in LSTM_NAMES],
                              "hidden": [model.hidden[n] for n in LSTM_NAMES]},
            "expected_l0": float(model.expected_l0().detach()),
            "lstm_weight_sparsity": float(sum(int((w == 0).sum()) for w in weights)
                                          / sum(w.numel() for w in weights)),
            "params": {"before": before["params"], "after": after["params"]},
            "lstm_params": {"before": before["lstm_params"], "after": after["lstm_params"]},
            "flops_per_question": {"before": before["flops_per_question"], "after": after["flops_per_question"]},
            "lstm_flops_per_question": {"before": before["lstm_flops_per_question"],
                                        "after": after["lstm_flops_per_question"]},
        }

    # ---- steps --------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        start, end = self.model(batch)
        loss = F.cross_entropy(start, batch["start"]) + F.cross_entropy(end, batch["end"])
        objective = self.objective(loss, len(batch["id"]))
        self.train_loss.update(loss.detach(), weight=len(batch["id"]))
        # sync_dist: the global batch's loss under DDP (every process holds an equal share of it)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch["id"]),
                 sync_dist=True)
        return objective

    def after_step(self, batch_idx: int) -> None:
        self._update_average()

    @torch.no_grad()
    def _update_average(self) -> None:
        if self.ema_model is None:
            return
        t = int(self.ema_updates)
        decay = min(self.hparams.ema_decay, (1 + t) / (10 + t))
        keep_zeros = self.pruning.zeroes_weights
        for avg, p in zip(self.ema_model.parameters(), self.model.parameters()):
            avg.lerp_(p, 1.0 - decay)
            if keep_zeros:
                avg.masked_fill_(p == 0, 0.0)
        for avg, b in zip(self.ema_model.buffers(), self.model.buffers()):
            avg.copy_(b)
        self.ema_updates += 1

    def validation_step(self, batch, batch_idx):
        start, end = self.eval_model(batch)
        first, last = decode_spans(start, end, batch["context_mask"], self.hparams.max_answer_tokens)
        preds, targets = [], []
        for b, qid in enumerate(batch["id"]):
            text = span_text(batch["context"][b], batch["offsets"][b], int(first[b]), int(last[b]))
            self.predictions[qid] = text
            preds.append({"prediction_text": text, "id": qid})
            targets.append({"answers": batch["answers"][b], "id": qid})
        self.squad.update(preds, targets)

    # ---- epoch hooks --------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.predictions = {}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.world_size > 1:
            shares = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(shares, self.predictions)
            self.predictions = {qid: text for share in shares for qid, text in share.items()}
        scores = self.squad.compute()
        self.log_dict({"em": scores["exact_match"], "f1": scores["f1"]}, prog_bar=True)
        self.squad.reset()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.train_loss.update_count:
            self.log("train_loss_epoch", self.train_loss.compute())
        self.train_loss.reset()
        report = self.size_report()
        metrics = {"size/expected_l0": report["expected_l0"], "size/params": float(report["params"]["after"]),
                   "size/flops_per_question": float(report["flops_per_question"]["after"])}
        for name, kept in report["neurons_kept"]["by_lstm"].items():
            metrics[f"kept/{name}"] = float(kept["hidden"])
        self.log_dict(metrics)

    # ---- exact resume -------------------------------------------------------------------

    # beyond the base class's (the next batch, the RNG, the penalty's mean): the running train loss
    def resume_extras(self) -> dict:
        return {"train_loss": metric_state(self.train_loss)}

    def apply_resume_extras(self, saved: dict) -> None:
        if saved.get("train_loss") is not None:
            load_metric_state(self.train_loss, saved["train_loss"])

    # ---- optimisation -------------------------------------------------------------------

    def configure_optimizers(self):
        hp = self.hparams
        groups = self.optimizer_groups()
        for group in groups:  # torch's own optimisers: Adam or Adadelta for every group
            del group["algorithm"], group["scheduled"]
        if hp.optimizer == "adadelta":
            return torch.optim.Adadelta(groups, lr=hp.lr)
        return torch.optim.Adam(groups, lr=hp.lr)
