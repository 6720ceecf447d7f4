"""The GPU window's probe and plan (reproduce/measure/gpu/window.sh): how many medium runs finish in time.

  python reproduce/measure/gpu/probe.py probe --out probe.json     # ~40 s on one H200
  python reproduce/measure/gpu/probe.py plan probe.json --seconds 380 --max-runs 7

`probe` measures, on real PTB windows, at medium (or --scale large):
  * the packed step time: R runs (R = 1, 4, 8), each its own model, optimiser, CUDA
    stream and captured graph (model.step_impl=graph), replayed in turn, as the packed trainer
    (reproduce/run/train_packed.py) replays them; ms per round of R steps, in fp32 and with TF32
    (--precisions; each arm set by lightning_modules/precision.py, its flags, read back, in the JSON);
  * the floor: the step's matmul FLOPs at the measured matmul rate, in each precision;
  * whether TF32 may be used: one epoch of dense medium (the recipe's first epoch: lr 1, dropout
    0.5, clip 5) in fp32 and in TF32, from the same initialisation; TF32 is accepted only if its
    validation perplexity is within 0.5 % of fp32's.
It times the step only: the Lightning loop around it (logging, callbacks, the turn hand-over) adds
host time per step, which `plan` allows for with HOST_MS_PER_STEP.

`plan` prints `RUNS=<n> TF32=<0|1>`: the most runs (in the window's order) whose whole training
(39 epochs, validation, test) is predicted to end within --seconds, at the interpolated packed step
time, with a safety margin. Without CUDA (the dry run) `probe` runs the same code on a tiny model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from lightning_modules.errors import UserError  # noqa: E402
from lightning_modules.fused_step import LMTrainStep  # noqa: E402
from lightning_modules.lm.language_model import model_size  # noqa: E402
from lightning_modules.lm.lm_task import LanguageModelTask  # noqa: E402
from lightning_modules.lm.ptb_data import PTBDataModule  # noqa: E402
from lightning_modules.precision import PRECISIONS, apply_precision  # noqa: E402
from lightning_modules.pruning.optim import clipped_parameters  # noqa: E402

CONFIGS = REPO / "reproduce/configs"
TINY = {"embedding_dim": 16, "hidden_sizes": [16, 16]}
# host time per training step and run that the Lightning loop adds on top of the step itself;
# measured on this project's 2-core CPU machine: 0.3 ms (tiny model, fused step, 2 busy cores)
HOST_MS_PER_STEP = 0.4
TF32_TOLERANCE = 0.005  # relative validation perplexity, after one epoch
END_S = 6.0  # per run: the test stream at batch 1 (2,350 windows), export, result


def _model_args(config: Path, tiny: bool) -> dict:
    model = dict(yaml.safe_load(config.read_text())["model"])
    model.update(vocab_size=10000, gate_history_every=0, step_impl="graph")
    if tiny:
        model.update(TINY)
    return model


def _make_step(config: Path, seed: int, device: torch.device, tiny: bool):
    torch.manual_seed(seed)
    task = LanguageModelTask(**_model_args(config, tiny)).to(device).train()
    optimizer = task.configure_optimizers()["optimizer"]
    hp = task.hparams
    step = LMTrainStep(task.model, task.pruning, optimizer, max_grad_norm=hp.max_grad_norm, mode="graph",
                       clipped=clipped_parameters(task.model.weight_parameters(), task.model.gate_parameters(),
                                                  hp.gate_update),
                       loss_metric=task.train_ce, penalty_metric=task.train_penalty, device=device)
    return task, step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pack(config: Path, runs: int, windows: list, device: torch.device, tiny: bool, rounds: int) -> dict:
    """ms per round of `runs` packed steps (each run on its own stream), after warm-up and capture."""
    steps = [_make_step(config, seed, device, tiny)[1] for seed in range(runs)]
    streams = [torch.cuda.Stream() if device.type == "cuda" else None for _ in steps]

    def one_round(n: int) -> None:
        x, y = windows[n % len(windows)]
        for step, stream in zip(steps, streams):
            if stream is None:
                step(x, y, n)
                continue
            with torch.cuda.stream(stream):
                step(x, y, n)

    warm = 6  # 3 eager warm-up steps, the capture, then replays
    for n in range(1, warm + 1):
        one_round(n)
    _sync(device)
    start = time.perf_counter()
    for n in range(warm + 1, warm + 1 + rounds):
        one_round(n)
    _sync(device)
    ms = 1e3 * (time.perf_counter() - start) / rounds
    captured = all(s.mode == "graph" and s._graphs for s in steps) if device.type == "cuda" else False
    steps.clear()  # free the graphs' memory before the next pack
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"runs": runs, "ms_per_round": ms, "ms_per_run_step": ms / runs, "graph": captured}


def matmul_rate(device: torch.device, tiny: bool) -> float:
    n = 256 if tiny else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    _sync(device)
    return 2 * n ** 3 * 5 / (time.perf_counter() - start)


def one_epoch_val_ppl(config: Path, data: PTBDataModule, device: torch.device, tiny: bool,
                      max_windows: int | None) -> float:
    """The dense model, seed 1, one epoch of its recipe (the first epoch's lr 1.0), then validation."""
    task, step = _make_step(config, 1, device, tiny)
    for n, (x, y) in enumerate(data.train_dataloader(), 1):
        if max_windows and n > max_windows:
            break
        step(x.to(device), y.to(device), n)
    task.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for x, y in data.val_dataloader():
            logits, state = task.model(x.to(device), state)
            y = y.to(device)
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
            count += y.numel()
    return math.exp(total / count)


def probe(out: Path, counts: list[int], rounds: int, scale: str = "medium",
          precisions: tuple[str, ...] = PRECISIONS) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = device.type != "cuda"
    config, dense = CONFIGS / f"ptb_{scale}_l0.yaml", CONFIGS / f"ptb_{scale}_dense.yaml"
    spec = yaml.safe_load(config.read_text())
    recipe, epochs = spec["model"], spec["trainer"]["max_epochs"]
    data = PTBDataModule(batch_size=20, num_steps=35, **({"train_tokens": 20000} if tiny else {}))
    data.setup()
    windows = [(x.to(device), y.to(device)) for x, y in list(data.train_dataloader())[:50]]
    sizes = model_size(10000, *((16, [16, 16]) if tiny else (recipe["embedding_dim"], recipe["hidden_sizes"])))
    flops_per_step = 3 * sizes["flops_per_token"] * 20 * 35
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (dry run, tiny model)"
    result = {"scale": scale, "device": name,
              "flops_per_step": flops_per_step, "precisions": {}, "host_ms_per_step_assumed": HOST_MS_PER_STEP}
    started = time.perf_counter()
    for precision in precisions:
        flags = apply_precision(precision)
        rate = matmul_rate(device, tiny)
        packs = [time_pack(config, r, windows, device, tiny, rounds) for r in counts]
        result["precisions"][precision] = {"flags": flags, "matmul_tflops": rate / 1e12,
                                           "floor_ms_per_step": 1e3 * flops_per_step / rate,
                                           "packs": packs}
        _write(out, result)
        for p in packs:  # training only: R runs of epochs x 1327 steps take that many rounds
            p["runs_per_10_min"] = p["runs"] * 600 / (epochs * 1327 * p["ms_per_round"] / 1e3)
            print(f"{precision}: {p['runs']} packed: {p['ms_per_round']:.3f} ms per round, "
                  f"{p['ms_per_run_step']:.3f} ms per run-step (floor {1e3 * flops_per_step / rate:.3f}); "
                  f"graph {p['graph']}", flush=True)
    if set(precisions) != set(PRECISIONS):  # the one-epoch check compares the two
        apply_precision("fp32")
        result["probe_seconds"] = time.perf_counter() - started
        _write(out, result)
        return result
    ppl = {}
    for precision in PRECISIONS:
        apply_precision(precision)
        ppl[precision] = one_epoch_val_ppl(dense, data, device, tiny, 60 if tiny else None)
    apply_precision("fp32")
    gap = abs(ppl["tf32"] - ppl["fp32"]) / ppl["fp32"]
    result["tf32_check"] = {"val_ppl_after_one_epoch": ppl, "relative_gap": gap, "tolerance": TF32_TOLERANCE,
                            "use_tf32": gap <= TF32_TOLERANCE}
    result["probe_seconds"] = time.perf_counter() - started
    _write(out, result)
    print(f"one epoch of dense {scale}: val ppl fp32 {ppl['fp32']:.3f}, tf32 {ppl['tf32']:.3f} (gap {100 * gap:.3f} %, "
          f"tolerance {100 * TF32_TOLERANCE} %): {'TF32' if gap <= TF32_TOLERANCE else 'fp32'}", flush=True)
    return result


def _write(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


def round_ms(packs: list[dict], runs: int) -> float:
    """ms per round at `runs` packed, linear between the measured counts (beyond them: per run-step)."""
    pts = sorted((p["runs"], p["ms_per_round"]) for p in packs)
    if runs <= pts[0][0]:
        return pts[0][1] * runs / pts[0][0]
    for (r0, m0), (r1, m1) in zip(pts, pts[1:]):
        if runs <= r1:
            return m0 + (m1 - m0) * (runs - r0) / (r1 - r0)
    return pts[-1][1] * runs / pts[-1][0]


def plan(result: dict, seconds: float, max_runs: int, steps_per_run: int, per_epoch_s: float, epochs: int,
         margin: float = 1.15) -> tuple[int, bool, float]:
    """(runs, tf32, predicted seconds): the most runs that end within `seconds`."""
    tf32 = bool(result.get("tf32_check", {}).get("use_tf32"))
    arm = "tf32" if tf32 else "fp32"
    if arm not in result["precisions"]:
        raise UserError(f"the probe did not time {arm}; run `probe.py probe` with --precisions {arm} (the default "
                        "times both)")
    packs = result["precisions"][arm]["packs"]
    best, predicted = 0, 0.0
    for runs in range(1, max_runs + 1):
        # the GPU's time per round, or the host's (every run's Lightning loop, one at a time)
        ms = max(round_ms(packs, runs), runs * HOST_MS_PER_STEP)
        # validation per epoch, then test (the stream at batch 1) and export at the end, run by run
        total = margin * (steps_per_run * ms / 1e3 + runs * (per_epoch_s * epochs + END_S))
        if total <= seconds:
            best, predicted = runs, total
    return best, tf32, predicted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--counts", default="1,4,8")
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--scale", choices=("medium", "large"), default="medium")
    p.add_argument("--precisions", default=",".join(PRECISIONS),
                   help="the arms timed, comma-separated, of fp32 and tf32 (each applied by "
                        "lightning_modules/precision.py, its flags recorded); the TF32 check needs both")
    q = sub.add_parser("plan")
    q.add_argument("probe_json", type=Path)
    q.add_argument("--seconds", type=float, required=True, help="time left for the whole training, test included")
    q.add_argument("--max-runs", type=int, default=7)
    q.add_argument("--steps-per-run", type=int, default=39 * 1327)
    q.add_argument("--epochs", type=int, default=39)
    q.add_argument("--per-epoch-s", type=float, default=0.25,
                   help="host seconds per run and epoch outside the steps (validation, logging)")
    args = parser.parse_args()
    try:
        if args.cmd == "probe":
            precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
            if not precisions or set(precisions) - set(PRECISIONS):
                raise UserError(f"--precisions {args.precisions!r}: use fp32, tf32 or fp32,tf32")
            probe(args.out, [int(c) for c in args.counts.split(",")], args.rounds, args.scale, precisions)
            return 0
        runs, tf32, predicted = plan(json.loads(args.probe_json.read_text()), args.seconds, args.max_runs,
                                     args.steps_per_run, args.per_epoch_s, args.epochs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"RUNS={runs} TF32={int(tf32)} PREDICTED_S={predicted:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
