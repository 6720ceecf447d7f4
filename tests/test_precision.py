"""The float32 precision (lightning_modules/precision.py): one option per entry point sets the matmul and
cuDNN flags, and every JSON an entry point writes records the flags that were in force."""

from __future__ import annotations

import importlib.util
import io
import json
from argparse import Namespace

import lightning as L
import pytest
import torch
from conftest import REPO

from lightning_modules.errors import UserError
from lightning_modules.precision import PRECISIONS, apply_precision, precision_flags

FP32 = {"precision": "fp32", "float32_matmul_precision": "highest", "cuda_matmul_allow_tf32": False,
        "cudnn_allow_tf32": False}
TF32 = {"precision": "tf32", "float32_matmul_precision": "high", "cuda_matmul_allow_tf32": True,
        "cudnn_allow_tf32": True}
SHRINK = ["--config", "reproduce/configs/ptb_smoke_l0.yaml", "--data.train_tokens=2400", "--model.embedding_dim=12",
          "--model.hidden_sizes=[12,10]", "--trainer.max_epochs=1", "--data.test_batch_size=20",
          "--data.val_batch_size=20", "--wandb=disabled", "--trainer.enable_progress_bar=false",
          "--model.gate_history_every=0", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
          "--trainer.limit_test_batches=2"]


@pytest.fixture(autouse=True)
def pytorch_defaults():
    """Every test starts from PyTorch's own flags and leaves them so: they are process-wide."""
    def put(matmul: str, cublas: bool, cudnn: bool) -> None:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cuda.matmul.allow_tf32 = cublas
        torch.backends.cudnn.allow_tf32 = cudnn

    saved = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    put("highest", False, True)
    yield
    put(*saved)


def test_each_name_sets_every_flag_and_reads_back_as_itself():
    assert precision_flags()["precision"] == "mixed"  # PyTorch's defaults: fp32 matmuls, TF32 cuDNN
    assert apply_precision("tf32") == TF32 == precision_flags()
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    assert apply_precision("fp32") == FP32 == precision_flags()
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True  # one flag changed behind its back is no longer fp32
    assert precision_flags()["precision"] == "mixed"
    assert PRECISIONS == ("fp32", "tf32")


def test_an_unknown_name_is_one_line_naming_the_option():
    with pytest.raises(UserError) as caught:
        apply_precision("bf16")
    assert "\n" not in str(caught.value) and "--precision fp32" in str(caught.value)
    assert precision_flags()["precision"] == "mixed"  # nothing was changed


class _FlagsDuringTraining(L.Callback):
    def __init__(self) -> None:
        self.seen: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(precision_flags())


@pytest.mark.slow
@pytest.mark.parametrize("option, expected", [([], FP32), (["--precision=tf32"], TF32)])
def test_the_training_option_reaches_the_flags_and_result_json(tmp_path, option, expected):
    from reproduce.run.train import train

    watch = _FlagsDuringTraining()
    result = train([*SHRINK, "--run_dir", str(tmp_path / "run"), *option], callbacks=(watch,))
    assert watch.seen and all(flags == expected for flags in watch.seen)  # in force on every step
    assert result["precision"] == expected
    assert json.loads((tmp_path / "run" / "result.json").read_text())["precision"] == expected


def test_the_training_cli_refuses_an_unknown_precision_in_one_line(tmp_path, capsys):
    from reproduce.run.train import main

    assert main([*SHRINK, "--run_dir", str(tmp_path / "run"), "--precision", "bf16"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and "precision" in err[0]
    assert not (tmp_path / "run" / "result.json").exists()


def test_the_squad_entry_point_has_the_option(capsys):
    from reproduce.run.train_squad import build_cli

    with pytest.raises(SystemExit):
        build_cli(["--help"])
    assert "--precision {fp32,tf32}" in capsys.readouterr().out


def test_packed_runs_all_get_the_packed_trainers_precision():
    from reproduce.run.train_packed import with_precision

    runs = [["--config", "a.yaml"], ["--config", "b.yaml", "--precision", "tf32"], ["--precision=tf32"]]
    assert with_precision(runs, "tf32") == [["--config", "a.yaml", "--precision=tf32"], runs[1], runs[2]]
    with pytest.raises(UserError, match=r"run 2 asks for --precision tf32, but packed runs share one precision"):
        with_precision(runs, "fp32")


def test_the_bench_records_the_flags_of_its_option(tmp_path):
    from reproduce.measure.bench import run

    out = tmp_path / "steps.json"
    run(Namespace(steps=True, out=str(out), quick=True, sizes=None, methods="dense", impls="fused", precision="tf32"))
    assert json.loads(out.read_text())["precision"] == TF32


def test_the_probe_records_each_arms_flags(tmp_path):
    spec = importlib.util.spec_from_file_location("probe", REPO / "reproduce/measure/gpu/probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    result = probe.probe(tmp_path / "probe.json", counts=[1], rounds=2, precisions=("tf32",), batched=(1,))
    assert result["precisions"]["tf32"]["flags"] == TF32 and "fp32" not in result["precisions"]
    assert [b["members"] for b in result["precisions"]["tf32"]["batched"]] == [1]
    assert json.loads((tmp_path / "probe.json").read_text())["precisions"]["tf32"]["flags"] == TF32
    assert precision_flags() == FP32  # left as every entry point's default
    with pytest.raises(UserError, match="did not time fp32"):
        probe.plan(result, 1000, ["fp32"] * 7, 100, 0.25, 2)


def test_tf32_controls_are_their_own_row_never_averaged_with_fp32_seeds(tmp_path):
    """The window's TF32 controls sit beside the fp32 runs they are compared to; `table` must not take a
    control for one more seed of the fp32 experiment."""
    from fixtures.run_dirs import result, write_run

    from reproduce.report.report import write_report
    from reproduce.report.runs import collect_runs, group_runs

    for name, seed, flags in (("dense", 1, FP32), ("dense_seed2", 2, None), ("dense_tf32", 1, TF32),
                              ("dense_tf32_seed2", 2, TF32)):
        res = result("none", [200, 200], [200, 200], 120.0 + seed, 115.0 + seed, seed=seed, run=name)
        if flags is not None:  # a record from before issue 30 has no precision: fp32
            res["precision"] = flags
        write_run(tmp_path / "runs", name, res)
    runs, _ = collect_runs("ptb", tmp_path / "runs")
    assert sorted(sorted(r.name for r in g) for g in group_runs(runs)) == [
        ["dense", "dense_seed2"], ["dense_tf32", "dense_tf32_seed2"]]
    md = write_report("ptb", tmp_path / "runs", tmp_path / "out", echo=io.StringIO())["markdown"].read_text()
    assert "| dense TF32 |" in md and "| dense |" in md
