"""Every pruning method through the one interface the LightningModule uses."""

import json

import pytest
import torch

from lightning_modules.errors import UserError
from lightning_modules.lm.export import export_language_model, load_exported_language_model, neurons_kept
from lightning_modules.lm.language_model import LSTMLanguageModel
from lightning_modules.lm.lm_task import LanguageModelTask
from lightning_modules.pruning.pruning_methods import build_pruning_method, prunable_units
from lightning_modules.pruning.structured_sparsity import (
    group_lasso_penalty,
    lm_units,
    lstm_weight_matrices,
    scheduled_neuron_count,
    unit_group_norms,
)

VOCAB = [f"w{i}" for i in range(30)]
DEFAULTS = {"reg_lambda": 0.0, "zero_threshold": None, "structured": True, "target_sparsity": None,
            "target_neurons": None, "prune_begin_step": 0, "prune_end_step": 10, "prune_every": 2}


def _model(gated=False, seed=0):
    torch.manual_seed(seed)
    return LSTMLanguageModel(len(VOCAB), 10, [12, 9], gated=gated)


def _method(name, model, **kw):
    return build_pruning_method(name, model, **{**DEFAULTS, **kw})


def test_group_lasso_penalty_and_thresholding():
    model = _model()
    method = _method("group_lasso", model, reg_lambda=1e-3, zero_threshold=0.05)
    expected = 1e-3 * group_lasso_penalty(lm_units(list(model.rnn.layers), model.decoder.weight))
    assert torch.allclose(method.penalty(model), expected)
    method.after_optimizer_step(model, step=1, num_steps=20)
    for t in method.thresholded_tensors(model):
        assert ((t == 0) | (t.abs() >= 0.05)).all()
    # the default threshold is the iss-rnns rule max(1e-4, 2 * weight_decay), weight_decay being
    # its L1 scale: 1e-4 for pure group Lasso whatever lambda, 2 * lambda (per segment) for Lasso
    assert _method("group_lasso", model, reg_lambda=1e-4).threshold_for(num_steps=35) == 1e-4
    assert _method("group_lasso", model, reg_lambda=1e-7).threshold_for(num_steps=35) == 1e-4
    assert _method("lasso", model, reg_lambda=1e-4).threshold_for(num_steps=35) == pytest.approx(7e-3)
    assert _method("lasso", model, reg_lambda=1e-7).threshold_for(num_steps=35) == 1e-4
    # weights only, as iss-rnns: its groups hold no biases; the embedding is in no group
    assert all(t.dim() == 2 for t in method.thresholded_tensors(model))
    assert not any(t is model.embedding.weight for t in method.thresholded_tensors(model))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_group_lasso_penalty_is_bit_for_bit_what_the_method_computed_before(cell):
    """GroupLasso.penalty now calls structured_sparsity.group_lasso_penalty; before, it summed the
    units' group norms itself. The same operations in the same order: equal to the last bit, and
    so are the gradients the training step takes from it."""
    torch.manual_seed(3)
    model = LSTMLanguageModel(len(VOCAB), 10, [12, 9], gated=False, cell=cell)
    with torch.no_grad():
        model.rnn.layers[0].weight_hh_l0[:, 4] = 0  # an all-zero column: the norm's subgradient path too
    method = _method("group_lasso", model, reg_lambda=3e-4)
    new = method.penalty(model)
    new_grads = torch.autograd.grad(new, list(model.parameters()), allow_unused=True)
    old = 3e-4 * sum(norms.sum() for norms in unit_group_norms(prunable_units(model)))
    old_grads = torch.autograd.grad(old, list(model.parameters()), allow_unused=True)
    assert new.dtype == old.dtype and torch.equal(new, old)
    for n, o in zip(new_grads, old_grads, strict=True):
        assert (n is None and o is None) or torch.equal(n, o)


def test_lasso_thresholds_only_lstm_weights():
    model = _model()
    method = _method("lasso", model, reg_lambda=1e-3, zero_threshold=0.05)
    decoder_before = model.decoder.weight.detach().clone()
    method.after_optimizer_step(model, step=1, num_steps=20)
    for w in lstm_weight_matrices(list(model.rnn.layers)):
        assert ((w == 0) | (w.abs() >= 0.05)).all()
    assert torch.equal(model.decoder.weight, decoder_before)
    assert torch.allclose(method.penalty(model),
                          1e-3 * sum(w.abs().sum() for w in lstm_weight_matrices(list(model.rnn.layers))))


def test_structured_magnitude_reaches_targets_and_exports_the_masked_model(tmp_path):
    model = _model().eval()
    method = _method("magnitude", model, target_neurons=[5, 4])
    kept_over_time = []
    for step in range(1, 13):
        with torch.no_grad():  # a stand-in for an optimizer step that revives pruned weights
            for p in model.parameters():
                p.add_(0.01)
        method.after_optimizer_step(model, step, num_steps=20)
        kept_over_time.append(neurons_kept(model)["hidden"])
    assert kept_over_time[-1] == [5, 4]
    assert [k[0] for k in kept_over_time] == sorted([k[0] for k in kept_over_time], reverse=True)
    config = export_language_model(model, VOCAB, tmp_path / "e")
    assert config["hidden_sizes"] == [5, 4]
    plain, _ = load_exported_language_model(tmp_path / "e")
    tokens = torch.randint(0, len(VOCAB), (2, 8))
    with torch.no_grad():
        assert (plain(tokens)[0] - model(tokens)[0]).abs().max() <= 1e-5


def test_unstructured_magnitude_hits_sparsity_and_keeps_masks_fixed():
    model = _model()
    method = _method("magnitude", model, structured=False, target_sparsity=0.75)
    method.after_optimizer_step(model, step=10, num_steps=20)
    weights = lstm_weight_matrices(list(model.rnn.layers))
    for w in weights:
        assert abs(float((w == 0).float().mean()) - 0.75) < 0.01
    zero_before = [w == 0 for w in weights]
    with torch.no_grad():
        for w in weights:
            w.add_(1.0)
    method.after_optimizer_step(model, step=11, num_steps=20)
    for w, z in zip(weights, zero_before):
        assert torch.equal(w == 0, z)
    assert neurons_kept(model)["hidden"] == [12, 9]  # unstructured: no neuron removed, no speedup


def test_method_arguments_are_checked():
    model = _model()
    with pytest.raises(UserError, match="target_neurons"):
        _method("magnitude", model, target_neurons=[20, 4])
    with pytest.raises(UserError, match="target_sparsity"):
        _method("magnitude", model, structured=False)
    with pytest.raises(UserError, match="no effect with method=none"):
        _method("none", model, reg_lambda=1e-6)
    with pytest.raises(UserError, match="unknown pruning method"):
        _method("prune_everything", model)


def test_direct_design_reads_sizes_from_a_result(tmp_path):
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"neurons_kept": {"input": [150, 120], "hidden": [120, 95]}}))
    task = LanguageModelTask(vocab_size=50, method="none", sizes_from=str(result))
    assert task.model.embedding.embedding_dim == 150
    assert task.model.rnn.hidden_sizes == [120, 95]
    assert task.hparams.hidden_sizes == [120, 95]
    with pytest.raises(UserError, match="not found"):
        LanguageModelTask(vocab_size=50, method="none", sizes_from=str(tmp_path / "none.json"))
    with pytest.raises(UserError, match="for method=none"):
        LanguageModelTask(vocab_size=50, method="l0", sizes_from=str(result))
    # structured magnitude pruning takes them as its targets, on the full-size model
    magnitude = LanguageModelTask(vocab_size=50, method="magnitude", sizes_from=str(result))
    assert magnitude.model.rnn.hidden_sizes == [200, 200] and magnitude.pruning.target_neurons == [120, 95]


# ---- a few real steps through the LightningModule: each method does its job ----------------------

STEPS = 5


def _small_task(method: str, **extra) -> LanguageModelTask:
    torch.manual_seed(0)
    return LanguageModelTask(vocab_size=len(VOCAB), embedding_dim=8, hidden_sizes=[10, 10], method=method, **extra)


def _train(method: str, after_step=None, **extra) -> LanguageModelTask:
    """STEPS optimizer steps on one batch, as Lightning runs them: training_step (objective with
    the method's penalty), backward, SGD step, the method's after-step work. The same seed, so
    two calls differ only by what their arguments change."""
    task = _small_task(method, **extra)
    opt = torch.optim.SGD(task.parameters(), lr=0.5)
    x = torch.randint(0, len(VOCAB), (3, 6))
    for step in range(1, STEPS + 1):
        loss = task.training_step((x, x.roll(-1, 1)), step)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()  # revives weights a method zeroed: its after-step work must zero them again
        task.pruning.after_optimizer_step(task.model, step, 6)
        if after_step:
            after_step(task, step)
    return task


def _penalties(task: LanguageModelTask) -> tuple[int, float]:
    """How often a penalty went into the objective, and its mean (objective() records exactly what it adds)."""
    count = int(task.train_penalty.update_count)
    return count, float(task.train_penalty.compute()) if count else 0.0


LOG = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


@LOG
def test_l0_steps_move_the_gates_under_a_penalty():
    initial = [p.detach().clone() for p in _small_task("l0", reg_lambda=1e-3).model.gate_parameters()]
    task = _train("l0", reg_lambda=1e-3)
    count, mean = _penalties(task)
    assert count == STEPS and mean > 0
    gates = task.model.gate_parameters()
    assert len(gates) == len(initial) > 0
    assert all(not torch.equal(p, q) for p, q in zip(gates, initial))  # every gate vector learnt
    # the same noise and steps without the penalty: the penalty alone pushes every gate towards shut
    unpenalised = _train("l0", reg_lambda=0.0)
    assert _penalties(unpenalised)[0] == 0
    assert all((p < q).all() for p, q in zip(gates, unpenalised.model.gate_parameters()))
    assert task.model.expected_l0() < unpenalised.model.expected_l0()


@LOG
def test_group_lasso_steps_shrink_groups_and_zero_what_falls_below_the_threshold():
    threshold = 0.01
    task = _train("group_lasso", reg_lambda=1e-3, zero_threshold=threshold)
    # the same steps, the same thresholding, no penalty: what the penalty alone did
    unpenalised = _train("group_lasso", reg_lambda=0.0, zero_threshold=threshold)
    count, mean = _penalties(task)
    assert count == STEPS and mean > 0 and _penalties(unpenalised)[0] == 0
    tensors = task.pruning.thresholded_tensors(task.model)
    assert all(((w == 0) | (w.abs() >= threshold)).all() for w in tensors)
    zeros = sum(int((w == 0).sum()) for w in tensors)
    assert zeros > sum(int((w == 0).sum()) for w in unpenalised.pruning.thresholded_tensors(unpenalised.model))
    norms = torch.cat(unit_group_norms(prunable_units(task.model)))
    reference = torch.cat(unit_group_norms(prunable_units(unpenalised.model)))
    assert (norms < reference).all()  # every ISS group pulled towards zero


@LOG
def test_lasso_steps_shrink_weights_and_zero_what_falls_below_the_threshold():
    threshold = 0.01
    task = _train("lasso", reg_lambda=1e-4, zero_threshold=threshold)
    unpenalised = _train("lasso", reg_lambda=0.0, zero_threshold=threshold)
    count, mean = _penalties(task)
    assert count == STEPS and mean > 0 and _penalties(unpenalised)[0] == 0
    weights = torch.cat([w.detach().flatten() for w in lstm_weight_matrices(list(task.model.rnn.layers))])
    reference = torch.cat([w.detach().flatten() for w in lstm_weight_matrices(list(unpenalised.model.rnn.layers))])
    assert ((weights == 0) | (weights.abs() >= threshold)).all()
    assert int((weights == 0).sum()) > int((reference == 0).sum())
    alive = (weights != 0) & (reference != 0)
    assert (weights.abs()[alive] < reference.abs()[alive]).all()  # each weight pulled towards zero


@LOG
def test_magnitude_steps_follow_the_schedule_and_hold_pruned_groups_at_zero():
    targets, end = [6, 5], 4

    def check(task, step):
        scheduled = [scheduled_neuron_count(min(step, end), 0, end, 10, t) for t in targets]
        assert neurons_kept(task.model)["hidden"] == scheduled, step
        for norms, alive, keep in zip(unit_group_norms(prunable_units(task.model)), task.pruning.alive(), scheduled):
            assert int(alive.sum()) == keep
            assert (norms[~alive] == 0).all() and (norms[alive] > 0).all()

    task = _train("magnitude", after_step=check, target_neurons=targets, prune_end_step=end, prune_every=1)
    assert neurons_kept(task.model)["hidden"] == targets
    assert _penalties(task)[0] == 0  # pruning by magnitude adds nothing to the objective
    report = task.size_report()
    assert report["flops_per_token"]["after"] < report["flops_per_token"]["before"]


@LOG
def test_dense_steps_add_no_penalty_and_remove_nothing():
    task = _train("none")
    assert task.pruning.penalty(task.model) is None and _penalties(task)[0] == 0
    assert neurons_kept(task.model)["hidden"] == [10, 10]
    assert all((w != 0).all() for w in lstm_weight_matrices(list(task.model.rnn.layers)))


def _finished_run(tmp_path, model, vocab=VOCAB, finished=True):
    run = tmp_path / "dense_run"
    export_language_model(model, vocab, run / "export")
    if finished:
        (run / "result.json").write_text("{}")
    return run


def _task(**kw):
    return LanguageModelTask(vocab_size=len(VOCAB), embedding_dim=10, hidden_sizes=[12, 9], **kw)


@pytest.mark.parametrize("method", ["l0", "group_lasso", "none"])
def test_init_from_starts_from_a_finished_runs_weights(tmp_path, method):
    """Pruning a trained model: every weight comes from the run's export; gates start fresh."""
    trained = _model(seed=5).eval()
    run = _finished_run(tmp_path, trained)
    task = _task(method=method, init_from=str(run))
    ours = {n: p for n, p in task.model.named_parameters() if not n.endswith("log_alpha")}
    for name, p in trained.named_parameters():
        assert torch.equal(ours[name], p), name
    # the run dir or its export folder, either will do
    assert torch.equal(_task(method=method, init_from=str(run / "export")).model.decoder.weight,
                       trained.decoder.weight)


def test_init_from_refuses_what_does_not_fit(tmp_path):
    from types import SimpleNamespace

    with pytest.raises(UserError, match="init_from: .* not found"):
        _task(init_from=str(tmp_path / "nowhere"))
    unfinished = _finished_run(tmp_path, _model(), finished=False)
    with pytest.raises(UserError, match="not a finished run"):
        _task(init_from=str(unfinished))
    (unfinished / "result.json").write_text("{}")
    with pytest.raises(UserError, match=r"\(30, 10, \[12, 9\]\), this config builds \(30, 10, \[12, 8\]\)"):
        LanguageModelTask(vocab_size=len(VOCAB), embedding_dim=10, hidden_sizes=[12, 8], init_from=str(unfinished))
    task = _task(init_from=str(unfinished))
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(vocab=list(reversed(VOCAB))))
    with pytest.raises(UserError, match="another vocabulary"):
        task.setup("fit")
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(vocab=list(VOCAB)))
    task.setup("fit")


def test_frozen_l0_gates_have_no_noise_and_no_penalty():
    model = _model(gated=True)
    method = _method("l0", model, reg_lambda=1e-3, gates_freeze_epoch=2)
    method.on_train_epoch_start(model, 1)
    assert method.penalty(model) is not None
    method.on_train_epoch_start(model, 2)
    assert method.penalty(model) is None
    model.train()
    tokens = torch.randint(0, len(VOCAB), (2, 5))
    with torch.no_grad():
        first, second = model(tokens)[0], model(tokens)[0]
    assert torch.equal(first, second)  # no noise left
    assert torch.allclose(first, model.eval()(tokens)[0])  # and the test-time gates


def test_inner_input_gates_off_gates_the_path_between_layers_once(tmp_path):
    from lightning_modules.pruning.gated_lstm import GateConfig

    torch.manual_seed(0)
    model = LSTMLanguageModel(len(VOCAB), 10, [12, 9], gated=True,
                              gate_config=GateConfig(inner_input_gates=False))
    assert len(model.rnn.input_gates) == 1 and len(model.rnn.gate_parameters()) == 3
    model.rnn.hidden_gates[0].force_shut([0, 3])
    model.rnn.input_gates[0].force_shut([1])
    model.eval()
    assert neurons_kept(model) == {"input": [9, 10], "hidden": [10, 9]}
    export_language_model(model, VOCAB, tmp_path / "e")
    plain, _ = load_exported_language_model(tmp_path / "e")
    tokens = torch.randint(0, len(VOCAB), (3, 7))
    with torch.no_grad():
        assert (plain(tokens)[0] - model(tokens)[0]).abs().max() <= 1e-5


@pytest.mark.parametrize("hparams,label,gated,zeroes,structured", [
    ({"method": "none"}, "dense", False, False, True),
    ({"method": "none", "sizes_from": "r/result.json"}, "direct design", False, False, True),
    ({"method": "l0", "init_from": "runs/dense"}, "L0 (fine-tuned)", True, False, True),
    ({"method": "group_lasso"}, "ISS group Lasso", False, True, True),
    ({"method": "lasso"}, "Lasso", False, True, False),
    ({"method": "magnitude", "structured": False}, "unstructured magnitude", False, True, False),
    ({"method": "magnitude", "structured": True}, "structured magnitude", False, True, True),
])
def test_methods_carry_their_properties(hparams, label, gated, zeroes, structured):
    from lightning_modules.pruning.pruning_methods import method_properties

    props = method_properties(hparams)
    assert (props["label"], props["gated"], props["zeroes_weights"], props["structured"]) == (
        label, gated, zeroes, structured)
    # and the built method agrees with what result.json will say
    model = _model(gated=gated)
    kw = {"reg_lambda": 1e-4} if hparams["method"] in ("group_lasso", "lasso") else {}
    if hparams["method"] == "magnitude":
        kw = {"structured": structured, "target_neurons": [6, 5], "target_sparsity": 0.5}
    built = _method(hparams["method"], model, **kw)
    assert built.zeroes_weights == zeroes and built.gated == gated
