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

from lightning_modules.lm.export import export_language_model, load_exported_language_model
from lightning_modules.lm.language_model import LSTMLanguageModel
from lightning_modules.pruning.hard_concrete import HardConcreteGate

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
