"""The GPU path: the gated model, its export and a resumed training run on CUDA.

Skipped where torch sees no GPU (CI, laptops); `make test` on a GPU machine runs them."""

import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import REPO

from lightning_modules.fused_step import LMTrainStep
from lightning_modules.lm.export import export_language_model, load_exported_language_model
from lightning_modules.lm.language_model import LSTMLanguageModel
from lightning_modules.lm.lm_task import LanguageModelTask
from lightning_modules.pruning.hard_concrete import HardConcreteGate
from lightning_modules.pruning.optim import clipped_parameters

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no GPU")

VOCAB = [f"w{i}" for i in range(50)]


def _pruned_model(seed: int = 0) -> LSTMLanguageModel:
    torch.manual_seed(seed)
    model = LSTMLanguageModel(len(VOCAB), 24, [32, 20])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for g in [*model.rnn.input_gates, *model.rnn.hidden_gates]:
            g.log_alpha.copy_(torch.randn(g.n, generator=gen) * 2 + 1)  # open, partly open, shut
            g.force_shut(torch.randperm(g.n, generator=gen)[: g.n // 3])
    return model.eval()


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12))


def _fix_gate_noise(model: LSTMLanguageModel, seed: int) -> None:
    """The same uniform noise on both devices, so that training-mode gates are equal."""
    gen = torch.Generator().manual_seed(seed)
    for g in [*model.rnn.input_gates, *model.rnn.hidden_gates]:
        g.sample = partial(HardConcreteGate.sample, g, u=torch.rand(g.n, generator=gen))


def test_gated_model_on_cuda_matches_cpu_forward_and_gradients():
    # training mode (cuDNN has no backward in eval mode): sampled gates with the same noise on
    # both devices, no dropout; gradients reach every weight and every log_alpha
    cpu, gpu = _pruned_model().train(), _pruned_model().cuda().train()
    _fix_gate_noise(cpu, 5)
    _fix_gate_noise(gpu, 5)
    tokens = torch.randint(0, len(VOCAB), (5, 13))
    logits = {}
    for name, model, x in (("cpu", cpu, tokens), ("cuda", gpu, tokens.cuda())):
        out, _ = model(x)
        torch.nn.functional.cross_entropy(out.reshape(-1, len(VOCAB)), x.reshape(-1)).backward()
        logits[name] = out.detach().cpu()
    assert _max_rel_diff(logits["cuda"], logits["cpu"]) < 1e-4
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        assert p_gpu.grad is not None and torch.isfinite(p_gpu.grad).all(), name
        assert _max_rel_diff(p_gpu.grad.cpu(), p_cpu.grad) < 1e-3, name
    assert any(g.log_alpha.grad.abs().sum() > 0 for g in gpu.rnn.hidden_gates)


def test_hard_concrete_gates_sample_and_differentiate_on_cuda():
    model = _pruned_model().cuda().train()
    gates = model.rnn.hidden_gates[0]
    samples = torch.stack([gates.sample() for _ in range(2000)])
    assert samples.device.type == "cuda"
    assert ((samples >= 0) & (samples <= 1)).all()
    # exact zeros occur as often as the closed form says (Monte Carlo, 2000 draws)
    empirical = (samples > 0).float().mean(0)
    assert (empirical - gates.prob_nonzero().detach()).abs().max() < 0.05
    samples.sum().backward()
    assert gates.log_alpha.grad is not None and gates.log_alpha.grad.abs().sum() > 0


def test_export_reproduces_gated_model_on_cuda(tmp_path):
    model = _pruned_model(1).cuda()
    export_language_model(model, VOCAB, tmp_path / "export")
    plain, config = load_exported_language_model(tmp_path / "export")
    plain = plain.cuda().eval()
    assert config["hidden_sizes"] != [32, 20]
    tokens = torch.randint(0, len(VOCAB), (4, 11), device="cuda")
    with torch.no_grad():
        gated_logits, gated_state = model(tokens)
        plain_logits, plain_state = plain(tokens)
        gated_next, _ = model(tokens.flip(1), gated_state)
        plain_next, _ = plain(tokens.flip(1), plain_state)
    assert (gated_logits - plain_logits).abs().max() <= 1e-4
    assert (gated_next - plain_next).abs().max() <= 1e-4


L0 = str(REPO / "reproduce" / "configs" / "ptb_smoke_l0.yaml")
GPU_TINY = ["--config", L0, "--trainer.max_epochs=2", "--trainer.accelerator=gpu", "--data.train_tokens=12000",
            "--model.embedding_dim=16", "--model.hidden_sizes=[16,12]", "--data.test_batch_size=20",
            "--model.reg_lambda=3e-6", "--wandb=disabled", "--trainer.enable_progress_bar=false",
            "--model.gate_history_every=1", "--checkpoint_every_n_steps=0"]


def _train(run_dir: Path, background: bool = False):
    cmd = [sys.executable, "-m", "reproduce.train", *GPU_TINY, "--run_dir", str(run_dir)]
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    if background:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "result.json").read_text())


@pytest.mark.slow
def test_gpu_run_stopped_mid_epoch_resumes_to_the_same_metrics(tmp_path):
    import time

    first = _train(tmp_path / "a")
    again = _train(tmp_path / "b")
    assert "CUDA" in first["hardware"]
    proc = _train(tmp_path / "c", background=True)
    history = tmp_path / "c" / "gate_history.jsonl"
    deadline = time.time() + 240
    while not (history.exists() and len(history.read_text().splitlines()) >= 12):  # inside epoch 0
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    resumed = _train(tmp_path / "c")
    keys = sorted(k for k, v in first["metrics"].items() if isinstance(v, float))
    run_to_run = max(abs(again["metrics"][k] - first["metrics"][k]) / abs(first["metrics"][k]) for k in keys)
    resume_gap = max(abs(resumed["metrics"][k] - first["metrics"][k]) / abs(first["metrics"][k]) for k in keys)
    print(f"\nGPU resume: max relative metric difference, two straight runs {run_to_run:.3g}, "
          f"straight vs stopped-and-resumed {resume_gap:.3g}")
    if run_to_run == 0.0:
        assert resumed["metrics"] == first["metrics"]  # bit-exact, as on the CPU
    else:  # the kernels are not deterministic here: the resume may add no more than they do
        assert resume_gap <= 10 * run_to_run + 1e-6
    assert resumed["neurons_kept"] == first["neurons_kept"]


# ---- the fused / graph training step (lightning_modules/fused_step.py) --------------------------

STEP_METHODS = {
    "dense": {"method": "none"},
    "l0": {"method": "l0", "reg_lambda": 1e-4},
    "l0_adam_gates": {"method": "l0", "reg_lambda": 1e-4, "gate_update": "adam"},
    "group_lasso": {"method": "group_lasso", "reg_lambda": 1e-3},
    "lasso": {"method": "lasso", "reg_lambda": 1e-5},
    "magnitude": {"method": "magnitude", "target_neurons": [24, 20], "prune_end_step": 12, "prune_every": 5},
}


def _step_on_cuda(name: str, mode: str, seed: int = 0):
    torch.manual_seed(seed)
    task = LanguageModelTask(vocab_size=300, embedding_dim=32, hidden_sizes=[48, 40], dropout=0.2,
                             gate_history_every=0, lr=0.5, **STEP_METHODS[name]).cuda().train()
    optimizer = task.configure_optimizers()["optimizer"]
    hp = task.hparams
    step = LMTrainStep(task.model, task.pruning, optimizer, max_grad_norm=hp.max_grad_norm, mode=mode,
                       clipped=clipped_parameters(task.model.weight_parameters(), task.model.gate_parameters(),
                                                  hp.gate_update),
                       loss_metric=task.train_ce, penalty_metric=task.train_penalty, device=torch.device("cuda"))
    gen = torch.Generator().manual_seed(1)
    windows = [tuple(torch.randint(0, 300, (6, 9), generator=gen).cuda() for _ in range(2)) for _ in range(16)]
    return task, step, windows


@pytest.mark.parametrize("name", list(STEP_METHODS))
def test_graph_step_captures_and_matches_the_eager_step_on_cuda(name):
    """3 eager warm-up steps, then the step is captured and replayed. It trains as the same step
    run eagerly: the same noise (the CUDA generator advances by as much per replay as per eager
    step), every parameter keeps moving (not frozen at capture time), magnitude's mask updates run
    eagerly in between."""
    results = {}
    for mode in ("fused", "graph"):
        torch.cuda.manual_seed(7)
        task, step, windows = _step_on_cuda(name, mode)
        losses, snapshot = [], None
        for n, (x, y) in enumerate(windows, 1):
            step(x, y, n)
            losses.append(step.last_loss.clone())
            if n == 8:
                snapshot = [p.detach().clone() for p in task.parameters()]
        if mode == "graph":
            assert step.mode == "graph" and step._graphs, "capture failed (see stderr)"
            moved = [not torch.equal(a, p) for a, p in zip(snapshot, task.parameters()) if p.requires_grad]
            assert all(moved), [n for (n, _), m in zip(task.named_parameters(), moved) if not m]
        results[mode] = (torch.stack(losses).cpu(), [p.detach().cpu() for p in task.parameters()])
    (loss_f, w_f), (loss_g, w_g) = results["fused"], results["graph"]
    assert _max_rel_diff(loss_g, loss_f) < 1e-4
    for a, b in zip(w_g, w_f):
        assert _max_rel_diff(a, b) < 1e-4


@pytest.mark.parametrize("mode", ["fused", "graph"])
@pytest.mark.parametrize("name", list(STEP_METHODS))
def test_training_step_never_syncs_with_the_host_on_cuda(name, mode):
    """torch.cuda.set_sync_debug_mode("error") raises on any host sync; steps with magnitude's mask
    updates (host work, outside the graph) are let through."""
    task, step, windows = _step_on_cuda(name, mode)
    step(*windows[0], 1)  # buffers allocated
    try:
        for n, (x, y) in enumerate(windows[1:], 2):
            if task.pruning.host_update_due(n):
                torch.cuda.set_sync_debug_mode(0)
                step(x, y, n)
                continue
            torch.cuda.set_sync_debug_mode("error")
            step(x, y, n)
            torch.cuda.set_sync_debug_mode(0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert step.nonfinite() is None


@pytest.mark.slow
def test_graph_training_run_matches_the_fused_one(tmp_path):
    """The whole pipeline (Lightning, checkpoints, validation, test, export) with step_impl=graph,
    against step_impl=fused: the same metrics up to the GPU's run-to-run noise."""
    runs = {}
    for impl in ("fused", "graph"):
        cmd = [sys.executable, "-m", "reproduce.train", *GPU_TINY, "--run_dir", str(tmp_path / impl),
               f"--model.step_impl={impl}", "--model.gate_history_every=0"]
        runs[impl] = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"})
    results = {}
    for impl, proc in runs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert "capture failed" not in err, err[-3000:]
        results[impl] = json.loads((tmp_path / impl / "result.json").read_text())
    for key in ("val_ppl", "test_ppl"):
        assert results["graph"]["metrics"][key] == pytest.approx(results["fused"]["metrics"][key], rel=1e-3)


def test_a_stale_graph_stops_with_an_error_instead_of_training_a_copy():
    """After capture, anything that moves a parameter (here: nn.LSTM's re-flattening, which .to()
    and .cuda() trigger) would leave the replayed graph updating the old storage; the step refuses."""
    from lightning_modules.errors import UserError

    task, step, windows = _step_on_cuda("l0", "graph")
    for n, (x, y) in enumerate(windows[:5], 1):
        step(x, y, n)
    assert step._graphs, "capture failed (see stderr)"
    p = task.model.rnn.layers[0].weight_ih_l0
    p.data = p.data.clone()  # the storage moves, as flatten_parameters() moves it
    with pytest.raises(UserError, match="moved in memory after the training step was captured"):
        step(*windows[5], 6)


@pytest.mark.slow
def test_packed_graph_runs_equal_each_run_alone_on_cuda(tmp_path):
    """The packed trainer on CUDA (own streams, graphs replayed in turn): each run ends as alone."""
    from reproduce.run.train_packed import run_packed
    from reproduce.train import train

    shrink = ["--data.train_tokens=6000", "--model.embedding_dim=16", "--model.hidden_sizes=[16,16]",
              "--trainer.max_epochs=1", "--data.test_batch_size=20", "--wandb=disabled",
              "--trainer.enable_progress_bar=false", "--model.step_impl=graph", "--trainer.accelerator=gpu",
              "--model.dropout=0.2"]
    runs = {n: ["--config", f"reproduce/configs/ptb_smoke_{n}.yaml", *shrink] for n in ("l0", "group_lasso")}
    for n, args in runs.items():
        train([*args, "--run_dir", str(tmp_path / "alone" / n)])
    assert run_packed([[*args, "--run_dir", str(tmp_path / "packed" / n)] for n, args in runs.items()]) == [0, 0]
    for n in runs:
        a, b = (json.loads((tmp_path / k / n / "result.json").read_text()) for k in ("alone", "packed"))
        assert a["neurons_kept"] == b["neurons_kept"]
        for m in ("val_ppl", "test_ppl"):  # cuDNN's LSTM kernels are not bit-deterministic run to run
            assert abs(a["metrics"][m] - b["metrics"][m]) <= 1e-4 * a["metrics"][m], (n, m, a, b)


def _batched_on_cuda(mode: str, precisions: tuple[str, ...]):
    from lightning_modules.lm.batched import BatchedLMTrainStep, CounterNoise, Member
    from lightning_modules.precision import apply_precision

    members, tasks = [], []
    for i, (name, precision) in enumerate(zip(("l0", "group_lasso", "magnitude", "l0_adam_gates"), precisions)):
        torch.manual_seed(i)
        task = LanguageModelTask(vocab_size=300, embedding_dim=32, hidden_sizes=[48, 40], dropout=0.2,
                                 gate_history_every=0, lr=0.5, **STEP_METHODS[name]).cuda().train()
        hp = task.hparams
        members.append(Member(name=name, model=task.model, pruning=task.pruning,
                              optimizer=task.configure_optimizers()["optimizer"],
                              clipped=clipped_parameters(task.model.weight_parameters(), task.model.gate_parameters(),
                                                         hp.gate_update),
                              max_grad_norm=hp.max_grad_norm, loss_metric=task.train_ce,
                              penalty_metric=task.train_penalty, noise=CounterNoise(i + 1, "cuda"),
                              precision=precision))
        tasks.append(task)
    step = BatchedLMTrainStep(members, mode=mode, device=torch.device("cuda"), set_precision=apply_precision)
    gen = torch.Generator().manual_seed(1)
    windows = [tuple(torch.randint(0, 300, (6, 9), generator=gen).cuda() for _ in range(2)) for _ in range(16)]
    return tasks, step, windows


@pytest.mark.parametrize("precisions", [("fp32",) * 4, ("fp32", "fp32", "tf32", "tf32")])
def test_batched_graph_step_captures_and_matches_the_eager_step_on_cuda(precisions):
    """The batched trainer's step (lightning_modules/lm/batched.py): captured and replayed, it trains as
    the same step run eagerly, each member's counter-based noise read from device memory at every
    replay, magnitude's host updates eager in between; with two precision groups each group's kernels
    run (and are captured) under its own flags."""
    from lightning_modules.precision import apply_precision

    results = {}
    for mode in ("fused", "graph"):
        tasks, step, windows = _batched_on_cuda(mode, precisions)
        losses = []
        for n, (x, y) in enumerate(windows, 1):
            step(x, y, n)
            losses.append(step.last_loss.clone())
        if mode == "graph":
            assert step.mode == "graph" and step._graphs, "capture failed (see stderr)"
        results[mode] = (torch.stack(losses).cpu(), [p.detach().cpu() for t in tasks for p in t.parameters()])
    apply_precision("fp32")
    (loss_f, w_f), (loss_g, w_g) = results["fused"], results["graph"]
    assert _max_rel_diff(loss_g, loss_f) < 1e-4
    for a, b in zip(w_g, w_f):
        assert _max_rel_diff(a, b) < 1e-4
