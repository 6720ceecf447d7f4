"""The restructured training step (lightning_modules/fused_step.py, model.step_impl=fused|graph)
against today's path (Lightning's automatic optimisation, step_impl=eager), on a tiny LM that
trains on real PTB windows.

Tolerance: none. Over 200 steps, for every method, the losses, the weights and the optimiser
state must be bitwise equal. Run eagerly on the CPU, the fused step calls the same kernels in the
same order on the same inputs (the clip with torch.nn.utils.clip_grad_norm_'s ops, SGD as
addcmul_(grad, -lr) which rounds once as add_(grad, alpha=-lr) does, Adam's bias corrections in
float64 as SGDWithAdamGroups, the gate noise and dropout drawn in the same order from the same
generator), and the CPU kernels are deterministic, so any difference is a change in arithmetic,
which is what this test exists to catch. A torch release that reduces clip_grad_norm_'s norms in
another order (or a CPU whose addcmul rounds twice) would break the equality by float32
reassociation: measured here, a factor of (1 + 2^-23) on the clip at every step moves the losses by
at most 5e-6 (relative 6e-7) and the weights by at most 2e-6 over 200 steps, so rtol 1e-5 is the
tolerance to move to then, and nothing looser.
"""

from __future__ import annotations

import collections
import os
import signal
import time

import lightning as L
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_modules.checkpointing import Preempted, ResumableCheckpoints
from lightning_modules.errors import UserError
from lightning_modules.fused_step import LMTrainStep
from lightning_modules.lm.lm_task import LanguageModelTask
from lightning_modules.lm.ptb_data import PTBDataModule
from lightning_modules.pruning.optim import clipped_parameters

# 100 windows of 4 x 10 tokens per epoch: 200 steps are 2 epochs, so the lr schedule steps too
# (x0.5 from epoch 0: lr 0.5, then 0.25: the tensor-lr update is tested away from lr 1)
BATCH, NUM_STEPS, TOKENS = 4, 10, 4004
TASK = {"embedding_dim": 16, "hidden_sizes": [16, 16], "dropout": 0.3, "gate_history_every": 0,
        "lr_decay": 0.5, "lr_decay_start_epoch": 0}
METHODS = {
    "dense": {"method": "none"},
    # gates frozen in epoch 1: the step changes (no noise, no penalty, no log_alpha gradient)
    "l0": {"method": "l0", "reg_lambda": 1e-4, "gates_freeze_epoch": 1},
    "l0_adam_gates": {"method": "l0", "reg_lambda": 1e-4, "gate_update": "adam"},
    "group_lasso": {"method": "group_lasso", "reg_lambda": 1e-3},
    "lasso": {"method": "lasso", "reg_lambda": 1e-5},
    # masks updated every 20 steps up to step 150 (host work), applied after every step
    "magnitude_structured": {"method": "magnitude", "target_neurons": [8, 6], "prune_end_step": 150,
                             "prune_every": 20},
    "magnitude_unstructured": {"method": "magnitude", "structured": False, "target_sparsity": 0.7,
                               "prune_end_step": 150, "prune_every": 20},
}


@pytest.fixture(scope="module")
def ptb_ids():
    data = PTBDataModule(batch_size=BATCH, num_steps=NUM_STEPS, train_tokens=TOKENS)
    data.setup()
    return data._ids, data._vocab


def _data(ptb_ids) -> PTBDataModule:
    """A fresh data module (its own sampler) on the already tokenised PTB."""
    data = PTBDataModule(batch_size=BATCH, num_steps=NUM_STEPS, train_tokens=TOKENS)
    data._ids, data._vocab = ptb_ids
    return data


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


def _fit(ptb_ids, root, impl: str, method: dict, steps: int = 200, callbacks=(), ckpt_path=None,
         log_every: int = 1) -> tuple[LanguageModelTask, L.Trainer]:
    L.seed_everything(1, verbose=False)
    task = LanguageModelTask(**TASK, **method, step_impl=impl)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, log_every_n_steps=log_every, default_root_dir=str(root),
                        callbacks=list(callbacks))
    trainer.fit(task, _data(ptb_ids), ckpt_path=ckpt_path)
    return task, trainer


def _assert_same_training(a: LanguageModelTask, b: LanguageModelTask) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), f"{name}: max diff {(sa[name] - sb[name]).abs().max()}"
    oa, ob = a.optimizers().optimizer, b.optimizers().optimizer
    assert [g["lr"] for g in oa.param_groups] == [g["lr"] for g in ob.param_groups]
    for pa, pb in zip(a.parameters(), b.parameters()):
        sa, sb = oa.state.get(pa, {}), ob.state.get(pb, {})
        if sa or sb:  # Adam's moments and step count (the fused step keeps the count on the device)
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(sa[key].cpu(), sb[key].cpu()), key


@pytest.mark.parametrize("name", list(METHODS))
def test_fused_step_gives_the_automatic_optimisation_numbers(ptb_ids, tmp_path, name):
    eager_losses, fused_losses = _Losses(), _Losses()
    eager, _ = _fit(ptb_ids, tmp_path / "eager", "eager", METHODS[name], callbacks=[eager_losses])
    fused, _ = _fit(ptb_ids, tmp_path / "fused", "fused", METHODS[name], callbacks=[fused_losses])
    assert not fused.automatic_optimization and fused.global_step == eager.global_step == 200
    assert len(fused_losses.losses) == 200
    assert fused_losses.losses == eager_losses.losses  # exact (module docstring)
    _assert_same_training(eager, fused)
    assert eager.optimizers().param_groups[0]["lr"] == 0.125  # two epochs of the schedule, in both


def test_graph_without_cuda_says_so_once_and_runs_the_fused_step(ptb_ids, tmp_path, capsys):
    fused, _ = _fit(ptb_ids, tmp_path / "f", "fused", METHODS["l0"], steps=30)
    capsys.readouterr()
    graph, _ = _fit(ptb_ids, tmp_path / "g", "graph", METHODS["l0"], steps=30)
    err = capsys.readouterr().err
    assert err.count("model.step_impl=graph: CUDA graphs need a CUDA device") == 1
    _assert_same_training(fused, graph)


def test_a_non_finite_loss_stops_the_run_at_the_next_log_interval_naming_its_step(ptb_ids, tmp_path):
    """The automatic path stops at the step itself (it reads the loss every step); the fused one
    records it on the device and stops at the next log interval (or checkpoint, or epoch end),
    naming the same step and value."""
    diverging = {"method": "none", "lr": float("inf"), "max_grad_norm": None}  # weights nan after step 0
    messages = {}
    for impl in ("eager", "fused"):
        with pytest.raises(UserError) as error:
            _fit(ptb_ids, tmp_path / impl, impl, diverging, steps=20, log_every=5)
        messages[impl] = str(error.value)
    assert messages["fused"] == messages["eager"]
    assert "the training loss became nan at step 1;" in messages["fused"]


# ---- no host sync inside the step --------------------------------------------------------------

# On CUDA the host waits for the device when Python needs a value the device computes: a scalar
# read (item(), bool(), int(), float(): all aten._local_scalar_dense), an output whose size
# depends on values (nonzero, boolean indexing, masked_select, unique, repeat_interleave without
# output_size), or a copy to the host (tolist(), numpy()). The guard below fails on each of them
# at the operator level, where the CPU sees the same ops as CUDA would, so it checks on the CPU
# what torch.cuda.set_sync_debug_mode("error") checks on a GPU (tests/test_cuda.py). What it cannot
# see on the CPU is an explicit .cpu()/.to("cpu") (a no-op there); the step has none.
_SYNCING_OPS = {
    torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default, torch.ops.aten.equal.default, torch.ops.aten.is_nonzero.default,
    torch.ops.aten._unique2.default, torch.ops.aten.unique_consecutive.default, torch.ops.aten.unique_dim.default,
}


class HostSyncGuard(TorchDispatchMode):
    def __init__(self, raise_on_sync: bool = True) -> None:
        super().__init__()
        self.raise_on_sync = raise_on_sync
        self.seen: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        syncs = func in _SYNCING_OPS
        if func in (torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default):
            syncs = any(i is not None and i.dtype == torch.bool for i in args[1])
        if func == torch.ops.aten.repeat_interleave.Tensor:
            syncs = kwargs.get("output_size") is None
        if syncs:
            self.seen[str(func)] += 1
            if self.raise_on_sync:
                raise AssertionError(f"host sync inside the step: {func}")
        return func(*args, **kwargs)

    def __enter__(self):
        self._saved = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}
        for name in self._saved:
            setattr(torch.Tensor, name, _refuse(name))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, method in self._saved.items():
            setattr(torch.Tensor, name, method)
        return super().__exit__(*exc)


def _refuse(name):
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"host sync inside the step: Tensor.{name}()")
    return refuse


def test_the_guard_catches_what_would_sync():
    x = torch.randn(5)
    for read in (lambda: x.sum().item(), lambda: bool(x.sum() > 0), lambda: x[x > 0], lambda: x.tolist(),
                 lambda: float(x.max()), lambda: torch.nonzero(x)):
        with pytest.raises(AssertionError, match="host sync"), HostSyncGuard():
            read()
    with HostSyncGuard():  # what the step does instead
        x.masked_fill_(x.abs() < 0.1, 0.0)
        torch.where(torch.isfinite(x.sum()), x, x)


@pytest.mark.parametrize("name", list(METHODS))
def test_no_host_sync_inside_the_step(ptb_ids, name):
    """Every step of every method, run under the guard; only magnitude's mask updates (host work
    on the Zhu-Gupta schedule, run outside any graph) may read the device."""
    torch.manual_seed(0)
    args = {**TASK, **METHODS[name]}
    if "prune_every" in args:
        args["prune_every"] = 3
    task = LanguageModelTask(**args)
    task.train()
    optimizer = task.configure_optimizers()["optimizer"]
    hp = task.hparams
    step = LMTrainStep(task.model, task.pruning, optimizer, max_grad_norm=hp.max_grad_norm, mode="fused",
                       clipped=clipped_parameters(task.model.weight_parameters(), task.model.gate_parameters(),
                                                  hp.gate_update),
                       loss_metric=task.train_ce, penalty_metric=task.train_penalty, device=torch.device("cpu"))
    loader = _data(ptb_ids).train_dataloader()
    host_steps = 0
    for number, (x, y) in zip(range(1, 8), loader):
        if task.pruning.host_update_due(number):
            host_steps += 1
            step(x, y, number)
            continue
        with HostSyncGuard():
            step(x, y, number)
    assert task.train_ce.update_count == 7
    if name.startswith("magnitude"):
        assert host_steps == 2 and task.pruning.host_update_due(3)  # steps 3 and 6


class _WatchSteps(L.Callback):
    """Counts (does not refuse) host reads from the start of batch `first` to the end of `last`."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.guard = HostSyncGuard(raise_on_sync=False)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.first:
            self.guard.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.last:
            self.guard.__exit__(None, None, None)


def test_lightning_reads_the_device_only_at_log_intervals(ptb_ids, tmp_path):
    """Around the step, the fused path's Lightning loop reads device values only when it writes
    logs (the loss, the finite check): the automatic path reads several per step (the metric
    updates' NaN checks, the finite check, the progress bar's loss)."""
    counts = {}
    for impl in ("eager", "fused"):
        watch = _WatchSteps(10, 59)
        _fit(ptb_ids, tmp_path / impl, impl, METHODS["l0"], steps=70, callbacks=[watch], log_every=25)
        counts[impl] = sum(watch.guard.seen.values())
    # 50 steps with 2 log intervals in them (steps 25 and 50): at most 3 reads each
    assert counts["fused"] <= 6 < 5 * 50 <= counts["eager"]


# ---- resume --------------------------------------------------------------------------------------

class _SigtermAt(L.Callback):
    """SIGTERM to this process during training step `step` (ResumableCheckpoints then writes
    step.ckpt at the end of that step and stops the run, as a scheduler's preemption would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # let the handler run


@pytest.mark.parametrize("first,then", [
    ("fused", "fused"),
    # a checkpoint of one path resumed in the other (the step count, the Adam state's device)
    pytest.param("eager", "fused", marks=pytest.mark.slow),
    pytest.param("fused", "eager", marks=pytest.mark.slow),
])
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_resume_mid_epoch_continues_identically(ptb_ids, tmp_path, first, then):
    """Stopped in the middle of epoch 1 and resumed from its checkpoint, a fused run ends exactly
    where an uninterrupted one does (hidden state, RNG, lr tensors, Adam state, the running train
    loss); a checkpoint of either path resumes in the other. The gates are frozen
    in epoch 1: before 2026-11-30 a run resumed there trained on with unfrozen gates until the
    epoch ended (Lightning skips on_train_epoch_start when it resumes mid-epoch), in both paths."""
    method = {**METHODS["l0_adam_gates"], "gates_freeze_epoch": 1}
    straight, straight_trainer = _fit(ptb_ids, tmp_path / "straight", then, method)
    ckpts = tmp_path / "ckpt"
    with pytest.raises(Preempted) as stop:
        _fit(ptb_ids, tmp_path / "first", first, method,
             callbacks=[ResumableCheckpoints(ckpts, every_n_steps=0), _SigtermAt(137)])
    assert stop.value.step == 137
    resumed, resumed_trainer = _fit(ptb_ids, tmp_path / "resumed", then, method,
                                    ckpt_path=str(ckpts / "step.ckpt"))
    assert resumed.global_step == 200
    _assert_same_training(straight, resumed)
    # the epoch's running loss went through the checkpoint: train_ppl of epoch 1 is the same
    assert float(resumed_trainer.callback_metrics["train_ppl"]) == float(straight_trainer.callback_metrics["train_ppl"])
    if first != "eager":
        saved = torch.load(ckpts / "step.ckpt", map_location="cpu", weights_only=False)
        assert [float(t) for t in saved["train_step"]["lr"]] == [0.25, 1e-3]  # epoch 1; Adam's gate lr
