"""The batched trainer (lightning_modules/lm/batched.py, reproduce/run/train_batched.py): each member
trains as its run alone would, given the same random draws; whole jobs write each member's run dir,
resume after a SIGKILL where they stopped, and name a member that diverges."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from lightning_modules.fused_step import LMTrainStep
from lightning_modules.lm.batched import BatchedLM, BatchedLMTrainStep, CounterNoise, Member, SiteDraws
from lightning_modules.lm.lm_task import LanguageModelTask
from lightning_modules.pruning.hard_concrete import HardConcreteGate
from lightning_modules.pruning.optim import SGDWithAdamGroups, clipped_parameters

VOCAB = 40
COMMON = dict(vocab_size=VOCAB, embedding_dim=8, hidden_sizes=[12, 10], dropout=0.3, init_scale=0.1, lr=1.0,
              max_grad_norm=0.5, step_impl="fused")
# every kind of member: gated, thresholded, masked on a schedule (host updates at steps 2 and 4), padded
MEMBERS = {
    "l0": dict(method="l0", reg_lambda=1e-4),
    "l0_adam_gates": dict(method="l0", reg_lambda=1e-4, gate_update="adam"),
    "group_lasso": dict(method="group_lasso", reg_lambda=1e-3),
    "magnitude": dict(method="magnitude", structured=True, target_neurons=[6, 5], prune_begin_step=0,
                      prune_end_step=4, prune_every=2),
    "direct": dict(method="none", embedding_dim=6, hidden_sizes=[7, 5]),
}


def make_task(name: str, seed: int) -> LanguageModelTask:
    torch.manual_seed(seed)
    return LanguageModelTask(**{**COMMON, **MEMBERS[name]})


def optimiser(task: LanguageModelTask) -> SGDWithAdamGroups:
    return SGDWithAdamGroups(task.optimizer_groups(), lr=task.hparams.lr)


def member(name: str, task: LanguageModelTask, seed: int) -> Member:
    hp = task.hparams
    return Member(name=name, model=task.model, pruning=task.pruning, optimizer=optimiser(task),
                  clipped=clipped_parameters(task.model.weight_parameters(), task.model.gate_parameters(),
                                             hp.gate_update),
                  max_grad_norm=hp.max_grad_norm, loss_metric=task.train_ce, penalty_metric=task.train_penalty,
                  noise=CounterNoise(seed))


class InjectedDropout(torch.nn.Module):
    """A run alone's dropout module, drawing its masks from the member's stream instead."""

    def __init__(self, p: float, draws) -> None:
        super().__init__()
        self.p, self.draws = p, draws

    def forward(self, x):
        return self.draws[0].dropout(x, self.p) if self.training else x


def inject(model, draws) -> None:
    """Make a run alone draw its gate noise and dropout masks from draws[0] (a SiteDraws), in its order."""
    for gate in model.rnn.gates():
        gate.sample = functools.partial(lambda g, u=None: HardConcreteGate.sample(g, draws[0](g.n)), gate)
    model.rnn.dropout = InjectedDropout(model.rnn.dropout.p, draws)


def windows(k: int, batch: int = 3, steps: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (k, batch, steps + 1), generator=g)
    return [(t[:, :-1].contiguous(), t[:, 1:].contiguous()) for t in tokens]


def test_counter_noise_is_uniform_independent_and_keyed_by_seed_step_and_site():
    noise = CounterNoise(7)
    u = noise.uniform(0, (200_000,))
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    assert abs(float(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1])) < 0.01  # neighbours
    same = CounterNoise(7).uniform(0, (200_000,))
    assert torch.equal(u, same)  # a function of its key only: no generator state
    others = [CounterNoise(8).uniform(0, (1000,)), noise.uniform(1, (1000,))]
    noise.step.fill_(1)
    others.append(noise.uniform(0, (1000,)))
    for other in others:
        assert abs(float(torch.corrcoef(torch.stack([u[:1000], other]))[0, 1])) < 0.1
        assert not torch.equal(u[:1000], other)


@pytest.mark.parametrize("steps", [6])
def test_each_member_after_k_steps_equals_its_run_alone_given_the_same_draws(steps):
    names = list(MEMBERS)
    tasks = [make_task(n, seed) for seed, n in enumerate(names, start=1)]
    solo = [copy.deepcopy(t) for t in tasks]
    members = [member(n, t, seed) for seed, (n, t) in enumerate(zip(names, tasks), start=1)]
    for t in tasks + solo:
        t.model.train()
        t.pruning.on_train_epoch_start(t.model, 0)
    batched = BatchedLMTrainStep(members, mode="fused", device=torch.device("cpu"))
    solo_steps, solo_draws = [], []
    for seed, t in enumerate(solo, start=1):
        holder = [None]
        inject(t.model, holder)
        hp = t.hparams
        solo_draws.append((holder, CounterNoise(seed)))
        solo_steps.append(LMTrainStep(t.model, t.pruning, optimiser(t), clipped=clipped_parameters(
            t.model.weight_parameters(), t.model.gate_parameters(), hp.gate_update), max_grad_norm=hp.max_grad_norm,
            mode="fused", loss_metric=t.train_ce, penalty_metric=t.train_penalty, device=torch.device("cpu")))
    for number, (x, y) in enumerate(windows(steps), start=1):
        batched(x, y, number)
        for r, (step, (holder, noise)) in enumerate(zip(solo_steps, solo_draws)):
            noise.step.fill_(number - 1)
            holder[0] = SiteDraws(noise)
            step(x, y, number)
            torch.testing.assert_close(batched.last_loss[r], step.last_loss, rtol=1e-5, atol=1e-6,
                                       msg=f"{names[r]}: loss at step {number}")
    for name, t, s in zip(names, tasks, solo):
        for (key, p), q in zip(t.model.named_parameters(), s.model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"{name}: {key} after {steps} steps")
    # the magnitude member's masks were updated on the host (steps 2 and 4) and hold
    assert [int(a.sum()) for a in tasks[names.index("magnitude")].pruning.alive()] == [6, 5]
    # the metrics each member's task logs: its own running mean loss
    for name, t, s in zip(names, tasks, solo):
        torch.testing.assert_close(t.train_ce.compute(), s.train_ce.compute(), rtol=1e-5, atol=1e-6, msg=name)


def test_a_padded_member_keeps_its_padding_exactly_zero_and_the_others_unaffected():
    direct, other = make_task("direct", 1), make_task("l0", 2)
    lm = BatchedLM([direct.model, other.model]).eval()
    x, _ = windows(1)[0]
    state = lm.init_state(x.shape[0], torch.device("cpu"), torch.float32)
    with torch.no_grad():
        logits, new_state = lm(x, state)
    assert [h.shape[-1] for h, _ in new_state] == [12, 10]
    for k, n in ((0, 7), (1, 5)):  # the direct member's units per layer: 7 of 12, 5 of 10
        for t in new_state[k]:
            assert float(t[0, :, n:].abs().max()) == 0.0
            assert float(t[0, :, :n].abs().max()) > 0.0
    direct.model.eval()
    other.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits[0], direct.model(x)[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logits[1], other.model(x)[0], rtol=1e-5, atol=1e-6)


def test_a_member_that_diverges_is_recorded_and_the_others_train_on():
    tasks = [make_task("l0", 1), make_task("group_lasso", 2)]
    members = [member(n, t, s) for n, t, s in (("l0", tasks[0], 1), ("group_lasso", tasks[1], 2))]
    for t in tasks:
        t.model.train()
    step = BatchedLMTrainStep(members, mode="fused", device=torch.device("cpu"))
    before = [p.detach().clone() for p in tasks[1].model.parameters()]
    with torch.no_grad():
        tasks[0].model.decoder.bias[0] = float("nan")
    for number, (x, y) in enumerate(windows(2), start=1):
        step(x, y, number)
    bad = step.nonfinite()
    assert bad[0] is not None and bad[0][0] == 0 and bad[1] is None
    after = list(tasks[1].model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


# ---- whole jobs (reproduce/run/train_batched.py) ---------------------------------------------------

# tiny, every method, no dropout: only L0's gates draw, so the other members must match their runs
# alone to float tolerance and L0 only in distribution
SHRINK = ["--data.train_tokens=2400", "--data.eval_tokens=2000", "--model.embedding_dim=12",
          "--model.hidden_sizes=[12,10]", "--trainer.max_epochs=2", "--data.test_batch_size=20",
          "--data.val_batch_size=20", "--wandb=disabled", "--trainer.enable_progress_bar=false",
          "--trainer.log_every_n_steps=2", "--model.dropout=0.0", "--model.gate_history_every=3"]
JOB = {
    "l0": ["--config", "reproduce/configs/ptb_smoke_l0.yaml", "--model.gates_freeze_epoch=1"],
    "iss": ["--config", "reproduce/configs/ptb_smoke_group_lasso.yaml", "--seed_everything=2"],
    "magnitude": ["--config", "reproduce/configs/ptb_smoke_magnitude.yaml", "--model.prune_begin_step=2",
                  "--model.prune_end_step=8", "--model.prune_every=2", "--model.target_neurons=[8,6]"],
}


def _job_args(root, names=tuple(JOB)) -> list[list[str]]:
    return [[*JOB[n], "--run_dir", str(root / n), *SHRINK] for n in names]


def _result(run_dir):
    import json

    return json.loads((run_dir / "result.json").read_text())


@pytest.fixture(scope="module")
def batched_job(tmp_path_factory):
    from reproduce.run.train_batched import run_batched

    root = tmp_path_factory.mktemp("batched")
    code = run_batched(_job_args(root), step_impl="fused", checkpoint_every=3)
    return root, code


@pytest.mark.slow
def test_a_batched_job_writes_each_members_run_dir_close_to_its_run_alone(batched_job, tmp_path):
    from lightning_modules.run_dir import CONFIG_FILE, EXPORT_DIR, METRICS_FILE
    from reproduce.run.train import train

    root, code = batched_job
    assert code == 0
    members = [str(root / n) for n in JOB]
    for name in JOB:
        run_dir = root / name
        for f in (CONFIG_FILE, METRICS_FILE, EXPORT_DIR):
            assert (run_dir / f).exists(), f"{name}: {f}"
        result = _result(run_dir)
        assert result["trained_batched"]["members"] == members
        assert result["precision"]["precision"] == "fp32"
        assert result["epochs"] == 2
        alone = train([*JOB[name], "--run_dir", str(tmp_path / name), *SHRINK])
        # noise-free members: the same arithmetic up to the order of batched sums
        rtol = 0.05 if name == "l0" else 1e-3
        for key in ("val_ppl", "test_ppl"):
            assert result["metrics"][key] == pytest.approx(alone["metrics"][key], rel=rtol), (name, key)
        if name != "l0":
            assert result["neurons_kept"] == alone["neurons_kept"], name


@pytest.mark.slow
def test_a_batched_job_killed_with_sigkill_resumes_every_member_where_it_stopped(batched_job, tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    from reproduce.run.train_batched import run_batched

    root, _ = batched_job
    member_args = _job_args(tmp_path)
    cmd = [sys.executable, "-m", "reproduce.run.train_batched", "--step_impl", "fused",
           "--checkpoint_every_n_steps", "3", "--job_dir", str(tmp_path / "job")]
    for a in member_args:
        cmd += ["--member", " ".join(a)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job_file = tmp_path / "job" / "batched_job.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if job_file.exists() and json.loads(job_file.read_text())["step"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped_at = json.loads(job_file.read_text())["step"]
    assert 3 <= stopped_at < 10 and not any((tmp_path / n / "result.json").exists() for n in JOB)
    assert run_batched(member_args, step_impl="fused", checkpoint_every=3, job_dir=str(tmp_path / "job")) == 0
    for name in JOB:  # the same end as the job that was never stopped, to the last bit
        resumed, whole = _result(tmp_path / name), _result(root / name)
        assert resumed["metrics"] == whole["metrics"], name
        assert resumed["neurons_kept"] == whole["neurons_kept"], name
        wa, wb = (load_file(str(d / name / "export" / "model.safetensors")) for d in (tmp_path, root))
        for key in wa:
            assert wa[key].equal(wb[key]), (name, key)


@pytest.mark.slow
def test_a_member_that_diverges_is_named_in_one_line_and_the_others_finish(tmp_path, capsys):
    from reproduce.run.train_batched import run_batched

    member_args = _job_args(tmp_path, ("iss",))
    # a learning rate of NaN: the first update makes every weight NaN, the second step's loss is NaN
    member_args.append([*JOB["l0"], "--run_dir", str(tmp_path / "bad"), *SHRINK, "--model.lr=.nan"])
    assert run_batched(member_args, step_impl="fused", checkpoint_every=0) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: member")]
    assert len(lines) == 1 and str(tmp_path / "bad") in lines[0] and "diverged" in lines[0]
    assert "at step 1" in lines[0]  # named during training, at its first non-finite step
    assert (tmp_path / "iss" / "result.json").exists()
    assert not (tmp_path / "bad" / "result.json").exists()
