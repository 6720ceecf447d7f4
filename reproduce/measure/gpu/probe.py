"""The GPU window's probe and plan (reproduce/measure/gpu/window.sh): how many medium runs finish in time,
and whether batched or packed.

  python reproduce/measure/gpu/probe.py probe --out probe.json     # ~60 s on one H100/H200
  python reproduce/measure/gpu/probe.py plan probe.json --seconds 380 --precisions fp32,fp32,tf32

`probe` measures, on real PTB windows, at medium (or --scale large), in fp32 and in TF32 (--precisions;
each arm set by lightning_modules/precision.py, its flags, read back, in the JSON):
  * the batched step time (--batched, default 1,4,7 members): one BatchedLMTrainStep
    (lightning_modules/lm/batched.py) over R members of the window's methods in turn (L0, ISS, dense,
    magnitude, ...), captured as one CUDA graph; ms per step of all R;
  * the packed step time (--counts, default 1,4,8): R runs, each its own model, optimiser, CUDA stream
    and captured graph, replayed in turn, as the packed trainer (reproduce/run/train_packed.py) does;
  * the floor: the step's matmul FLOPs at the measured matmul rate.
It times the step only: the loop around it adds host time per step, which `plan` allows for.
TF32 is not decided here: one epoch cannot tell (two fp32 runs of one seed differ by 0.94 % after it);
the TF32 controls, trained to the end beside the comparison, decide it (reproduce/measure/gpu/README.md).

`plan` prints `RUNS=<n> MODE=<batched|packed> PREDICTED_S=<s>`: the most runs of the window's list (in its
order, each of the precision --precisions gives it) whose whole training (epochs, validation, test) is
predicted to end within --seconds, batched (each precision one group of the step: their times add) or
packed (one precision only: the packed trainer's flags are the process's), whichever fits more (then:
whichever is faster). Without CUDA (the dry run) `probe` runs the same code on a tiny model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
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
# the batched trainer's loop per step (one graph replay for all members, a window copied in): not
# measured yet; the packed loop's 0.4 ms of one run is its stand-in
BATCHED_HOST_MS = 0.4
END_S = 6.0  # per run: the test stream at batch 1 (2,350 windows), export, result


def _model_args(config: Path, tiny: bool) -> dict:
    model = dict(yaml.safe_load(config.read_text())["model"])
    model.update(vocab_size=10000, gate_history_every=0, step_impl="graph")
    if tiny:
        model.update(TINY)
        if model.get("target_neurons"):  # magnitude's targets, within the tiny layers
            model["target_neurons"] = [h // 2 for h in TINY["hidden_sizes"]]
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


# the members a batched probe of R builds, in turn: the window's methods (their configs' recipes)
BATCHED_METHODS = ("l0", "group_lasso", "dense", "magnitude")


def _member(config: Path, seed: int, device: torch.device, tiny: bool, precision: str):
    from lightning_modules.lm.batched import CounterNoise, Member

    torch.manual_seed(seed)
    task = LanguageModelTask(**_model_args(config, tiny)).to(device).train()
    optimizer = task.configure_optimizers()["optimizer"]
    hp = task.hparams
    return task, Member(name=f"{config.stem}_seed{seed}", model=task.model, pruning=task.pruning,
                        optimizer=optimizer, clipped=clipped_parameters(task.model.weight_parameters(),
                                                                        task.model.gate_parameters(), hp.gate_update),
                        max_grad_norm=hp.max_grad_norm, loss_metric=task.train_ce, penalty_metric=task.train_penalty,
                        noise=CounterNoise(seed, device), precision=precision)


def time_batched(scale: str, members: int, windows: list, device: torch.device, tiny: bool, rounds: int,
                 precision: str) -> dict:
    """ms per batched step of `members` members (all of one precision), after warm-up and capture."""
    from lightning_modules.lm.batched import BatchedLMTrainStep

    configs = [CONFIGS / f"ptb_{scale}_{m}.yaml" for m in BATCHED_METHODS]
    made = [_member(configs[i % len(configs)], i + 1, device, tiny, precision) for i in range(members)]
    tasks = [t for t, _ in made]  # the magnitude member needs its task's targets: keep the tasks alive
    step = BatchedLMTrainStep([m for _, m in made], mode="graph", device=device, set_precision=apply_precision)
    warm = 6  # 3 eager warm-up steps, the capture, then replays
    for n in range(1, warm + 1):
        x, y = windows[n % len(windows)]
        step(x, y, n)
    _sync(device)
    start = time.perf_counter()
    for n in range(warm + 1, warm + 1 + rounds):
        x, y = windows[n % len(windows)]
        step(x, y, n)
    _sync(device)
    ms = 1e3 * (time.perf_counter() - start) / rounds
    captured = step.mode == "graph" and bool(step._graphs)
    del step, made, tasks
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"members": members, "ms_per_step": ms, "ms_per_member_step": ms / members, "graph": captured}


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


def probe(out: Path, counts: list[int], rounds: int, scale: str = "medium",
          precisions: tuple[str, ...] = PRECISIONS, batched: tuple[int, ...] = (1, 4, 7)) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = device.type != "cuda"
    config = CONFIGS / f"ptb_{scale}_l0.yaml"
    spec = yaml.safe_load(config.read_text())
    recipe, epochs = spec["model"], spec["trainer"]["max_epochs"]
    data = PTBDataModule(batch_size=20, num_steps=35, **({"train_tokens": 20000} if tiny else {}))
    data.setup()
    windows = [(x.to(device), y.to(device)) for x, y in list(data.train_dataloader())[:50]]
    sizes = model_size(10000, *((16, [16, 16]) if tiny else (recipe["embedding_dim"], recipe["hidden_sizes"])))
    flops_per_step = 3 * sizes["flops_per_token"] * 20 * 35
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (dry run, tiny model)"
    result = {"scale": scale, "device": name, "flops_per_step": flops_per_step, "precisions": {},
              "host_ms_per_step_assumed": HOST_MS_PER_STEP, "batched_host_ms_per_step_assumed": BATCHED_HOST_MS}
    started = time.perf_counter()
    for precision in precisions:
        flags = apply_precision(precision)
        rate = matmul_rate(device, tiny)
        arm = result["precisions"][precision] = {"flags": flags, "matmul_tflops": rate / 1e12,
                                                 "floor_ms_per_step": 1e3 * flops_per_step / rate,
                                                 "batched": [], "packs": []}
        for r in batched:  # the batched trainer first: the window's first choice
            b = time_batched(scale, r, windows, device, tiny, rounds, precision)
            arm["batched"].append(b)
            _write(out, result)
            print(f"{precision}: {r} batched: {b['ms_per_step']:.3f} ms per step, {b['ms_per_member_step']:.3f} ms "
                  f"per member-step (floor {1e3 * flops_per_step / rate:.3f}); graph {b['graph']}", flush=True)
        for r in counts:
            p = time_pack(config, r, windows, device, tiny, rounds)
            # training only: R runs of epochs x 1327 steps take that many rounds
            p["runs_per_10_min"] = p["runs"] * 600 / (epochs * 1327 * p["ms_per_round"] / 1e3)
            arm["packs"].append(p)
            _write(out, result)
            print(f"{precision}: {p['runs']} packed: {p['ms_per_round']:.3f} ms per round, "
                  f"{p['ms_per_run_step']:.3f} ms per run-step (floor {1e3 * flops_per_step / rate:.3f}); "
                  f"graph {p['graph']}", flush=True)
    apply_precision("fp32")
    result["probe_seconds"] = time.perf_counter() - started
    _write(out, result)
    return result


def _write(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


def interpolate(points: list[tuple[int, float]], n: int) -> float:
    """The time at n of (count, ms) points, linear between the measured counts, proportional beyond."""
    pts = sorted(points)
    if n <= 0:
        return 0.0
    if n <= pts[0][0]:
        return pts[0][1] * n / pts[0][0]
    for (r0, m0), (r1, m1) in zip(pts, pts[1:]):
        if n <= r1:
            return m0 + (m1 - m0) * (n - r0) / (r1 - r0)
    return pts[-1][1] * n / pts[-1][0]


def round_ms(packs: list[dict], runs: int) -> float:
    """ms per round at `runs` packed."""
    return interpolate([(p["runs"], p["ms_per_round"]) for p in packs], runs)


def _arm(result: dict, precision: str) -> dict:
    if precision not in result["precisions"]:
        raise UserError(f"the probe did not time {precision}; run `probe.py probe` with --precisions {precision} "
                        "(the default times both)")
    return result["precisions"][precision]


def predict(result: dict, mode: str, precisions: list[str], steps: int, per_epoch_s: float, epochs: int,
            margin: float = 1.15) -> float | None:
    """Predicted seconds for these runs (one precision each) to train, validate and test; None where the
    mode cannot train them together (packed: one precision per process)."""
    runs = len(precisions)
    counts = {p: precisions.count(p) for p in dict.fromkeys(precisions)}
    if mode == "packed":
        if len(counts) > 1:
            return None
        # the GPU's time per round, or the host's (every run's Lightning loop, one at a time)
        ms = max(round_ms(_arm(result, precisions[0])["packs"], runs), runs * HOST_MS_PER_STEP)
    else:  # each precision group runs its own batched forward and backward, one after the other
        ms = sum(interpolate([(b["members"], b["ms_per_step"]) for b in _arm(result, p)["batched"]], n)
                 for p, n in counts.items())
        ms = max(ms, BATCHED_HOST_MS)
    # validation per epoch, then test (the stream at batch 1) and export at the end, run by run
    return margin * (steps * ms / 1e3 + runs * (per_epoch_s * epochs + END_S))


def plan(result: dict, seconds: float, precisions: list[str], steps_per_run: int, per_epoch_s: float,
         epochs: int, margin: float = 1.15) -> tuple[int, str, float]:
    """(runs, mode, predicted seconds): the most of the runs, in order, that end within `seconds`."""
    best = (0, "batched", 0.0)
    for runs in range(1, len(precisions) + 1):
        for mode in ("batched", "packed"):
            if mode == "batched" and not _arm(result, precisions[0]).get("batched"):
                continue  # a probe from before the batched trainer
            total = predict(result, mode, precisions[:runs], steps_per_run, per_epoch_s, epochs, margin)
            if total is not None and total <= seconds and (runs > best[0] or total < best[2]):
                best = (runs, mode, total)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--counts", default="1,4,8", help="packed runs timed")
    p.add_argument("--batched", default="1,4,7", help="batched members timed")
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--scale", choices=("medium", "large"), default="medium")
    p.add_argument("--precisions", default=",".join(PRECISIONS),
                   help="the arms timed, comma-separated, of fp32 and tf32 (each applied by "
                        "lightning_modules/precision.py, its flags recorded)")
    q = sub.add_parser("plan")
    q.add_argument("probe_json", type=Path)
    q.add_argument("--seconds", type=float, required=True, help="time left for the whole training, test included")
    q.add_argument("--precisions", required=True,
                   help="the window's runs, in order: each one's precision, comma-separated (fp32,fp32,tf32)")
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
            probe(args.out, [int(c) for c in args.counts.split(",")], args.rounds, args.scale, precisions,
                  tuple(int(c) for c in args.batched.split(",")))
            return 0
        runs, mode, predicted = plan(json.loads(args.probe_json.read_text()), args.seconds,
                                     [p.strip() for p in args.precisions.split(",") if p.strip()],
                                     args.steps_per_run, args.per_epoch_s, args.epochs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"RUNS={runs} MODE={mode} PREDICTED_S={predicted:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
