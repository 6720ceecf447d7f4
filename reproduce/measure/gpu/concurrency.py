"""How many training runs one GPU finishes per 10 minutes with 1, 2, 4 and 8 of them at once.

    python reproduce/measure/gpu/concurrency.py [--counts 1,2,4,8] [--size medium] [--method l0] \
        [--impl graph] [--seconds 20] [--out results/bench/concurrency.json]

For each count N it starts N separate processes, each training the LM (synthetic PTB-shaped
windows, Lightning's loop, model.step_impl as given) through the same wall-clock window: every
process warms up (graph capture included) and keeps stepping until a common start time, then
counts the steps it takes in the next --seconds, synchronising the GPU at both ends. Reported per
N: each run's ms per step, the GPU's steps per second over all runs, and runs finished per 10
minutes = 600 s x (steps per second) / (steps of one run: epochs x 1327 windows for medium and
large; training only, validation and test not included).

Under MPS (the runs' kernels then share the GPU at once instead of in time slices) when
nvidia-cuda-mps-control exists and a CUDA client works under it; --mps off measures without it.
Runs from the repository root (it puts the root on PYTHONPATH for the workers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
EPOCHS = {"tiny": 2, "small": 13, "medium": 39, "large": 55}  # the configs' max_epochs (tiny: the dry runs')


def worker(args) -> None:
    """One run: step until start_at, count steps for `seconds`, print one JSON line."""
    import lightning as L
    import torch

    from reproduce.measure.bench import STEP_METHODS, STEP_SIZES, _synthetic_windows

    emb, hidden, dropout, num_steps, batch, vocab = STEP_SIZES[args.size]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    method = dict(STEP_METHODS[args.method])
    if method["method"] == "magnitude":
        method["target_neurons"] = [max(h // 2, 1) for h in hidden]
    marks = {}

    class Window(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch_, batch_idx):
            now = time.time()
            if "t0" not in marks and now >= args.start_at:
                sync()
                marks["t0"], marks["s0"] = time.time(), trainer.global_step
            elif "t0" in marks and now >= args.start_at + args.seconds:
                sync()
                marks["t1"], marks["s1"] = time.time(), trainer.global_step
                trainer.should_stop = True

    from lightning_modules.lm.lm_task import LanguageModelTask

    task = LanguageModelTask(vocab_size=vocab, embedding_dim=emb, hidden_sizes=hidden, dropout=dropout,
                             gate_history_every=0, step_impl=args.impl, **method)
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(max_steps=10 ** 7, accelerator=device, devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=100,
                            callbacks=[Window()], default_root_dir=root)
        trainer.fit(task, _synthetic_windows(args.size, 20_000))
    ok = "t1" in marks
    steps = marks["s1"] - marks["s0"] if ok else 0
    print(json.dumps({"ok": ok, "steps": steps, "seconds": marks["t1"] - marks["t0"] if ok else None,
                      "late": "t0" not in marks,
                      "ran_as": task._train_step.mode if task._train_step is not None else "eager"}))


def start_mps() -> bool:
    if not shutil.which("nvidia-cuda-mps-control"):
        return False
    os.environ["CUDA_MPS_PIPE_DIRECTORY"] = "/tmp/mps_pipe"
    os.environ["CUDA_MPS_LOG_DIRECTORY"] = "/tmp/mps_log"
    for d in ("/tmp/mps_pipe", "/tmp/mps_log"):
        os.makedirs(d, exist_ok=True)
    subprocess.run(["nvidia-cuda-mps-control", "-d"], capture_output=True)
    probe = subprocess.run([sys.executable, "-c", "import torch; torch.ones(1, device='cuda').sum().item()"],
                           capture_output=True, timeout=60)
    if probe.returncode == 0:
        return True
    stop_mps()
    return False


def stop_mps() -> None:
    subprocess.run(["nvidia-cuda-mps-control"], input=b"quit\n", capture_output=True)
    os.environ.pop("CUDA_MPS_PIPE_DIRECTORY", None)
    os.environ.pop("CUDA_MPS_LOG_DIRECTORY", None)


def measure(n: int, args) -> dict:
    from reproduce.measure.bench import STEP_SIZES, _windows_per_epoch

    start_at = time.time() + args.startup
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, __file__, "--worker", "--size", args.size, "--method", args.method, "--impl", args.impl,
           "--seconds", str(args.seconds), "--start-at", str(start_at)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    runs = []
    for p in procs:
        out, err = p.communicate(timeout=args.startup + args.seconds + 300)
        line = out.strip().splitlines()[-1] if out.strip() else ""
        runs.append(json.loads(line) if line.startswith("{") else {"ok": False, "error": err[-500:]})
    good = [r for r in runs if r.get("ok") and r["steps"] > 0]
    _, _, _, num_steps, batch, _ = STEP_SIZES[args.size]
    run_steps = EPOCHS[args.size] * _windows_per_epoch(batch, num_steps)
    steps_per_s = sum(r["steps"] / r["seconds"] for r in good)
    return {"runs_at_once": n, "ok": len(good), "late": sum(bool(r.get("late")) for r in runs),
            "ran_as": sorted({r.get("ran_as", "?") for r in good}),
            "ms_per_step": [round(1e3 * r["seconds"] / r["steps"], 3) for r in good],
            "median_ms_per_step": statistics.median(1e3 * r["seconds"] / r["steps"] for r in good) if good else None,
            "steps_per_s": steps_per_s, "steps_per_run": run_steps,
            "runs_per_10_min": 600 * steps_per_s / run_steps,
            "errors": [r["error"] for r in runs if "error" in r][:2]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="1,2,4,8")
    parser.add_argument("--size", default="medium")
    parser.add_argument("--method", default="l0")
    parser.add_argument("--impl", default="graph")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed window of every run")
    parser.add_argument("--startup", type=float, default=45.0,
                        help="seconds for the runs to start and warm up before the timed window")
    parser.add_argument("--mps", choices=("auto", "off"), default="auto")
    parser.add_argument("--out", default="results/bench/concurrency.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    mps = args.mps == "auto" and start_mps()
    try:
        rows = []
        for n in (int(c) for c in args.counts.split(",")):
            rows.append(measure(n, args))
            r = rows[-1]
            print(f"{n} at once: {r['ok']}/{n} ok, median {r['median_ms_per_step']} ms/step, "
                  f"{r['steps_per_s']:.1f} steps/s, {r['runs_per_10_min']:.2f} runs per 10 min", flush=True)
            result = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mps": mps, "size": args.size,
                      "method": args.method, "impl": args.impl, "seconds": args.seconds, "rows": rows}
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1))
    finally:
        if mps:
            stop_mps()
    print(f"\n{args.size} {args.method}, step_impl={args.impl}, MPS {'on' if mps else 'off'}: runs finished per "
          "10 minutes (training only)")
    print("| runs at once | ms/step (median run) | steps/s, all runs | runs per 10 min |")
    print("|---|---|---|---|")
    for r in rows:
        ms = f"{r['median_ms_per_step']:.2f}" if r["median_ms_per_step"] is not None else "-"
        print(f"| {r['runs_at_once']} | {ms} | {r['steps_per_s']:.1f} | {r['runs_per_10_min']:.2f} |")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
