"""Training speed (`python -m reproduce bench`, `make bench`). Two modes:

default: the gates' overhead. Forward + backward (batch 20, 35 steps) of GatedLSTM (gates
sampled, masks applied, expected-L0 penalty) against a plain 2-layer `nn.LSTM`, at 200 and 650
units. Target: ratio <= 1.15 at 650 units. The two run in turn on every repeat, so both see the
same machine state; reported are the median and quartiles, and the ratio is the median of the
back-to-back pairs.

--steps: whole training steps of the language model as a run takes them (Lightning's loop, the
optimiser, the pruning method's after-step work), ms per step and seconds per PTB epoch (1327
windows at batch 20 x 35 steps; validation not included), for the medium (2x650) and large
(2x1500) configs, dense and each method, with each model.step_impl: eager (Lightning's
automatic optimisation, the default), fused (the step as one function, lightning_modules/
fused_step.py) and graph (that function as one CUDA graph; CUDA only). Each is timed over
chunks of steps after a warm-up (capture included); reported are the median and quartiles of
the chunks' ms per step. Beside them a floor: the step's matmul FLOPs (3x the forward's) at the
rate measured for one large fp32 matmul, and its weight traffic (9 parameter-sized passes: read
in the forward, read in the backward and the gradient written, the clip reading the gradient
twice and writing it, the update reading weight and gradient and writing the weight) at the
bandwidth measured for one large copy; the larger of the two is a time no step can beat.
--quick: tiny sizes and few steps (a check that it runs, on the CPU too).
--precision fp32|tf32 (default fp32): matmuls and cuDNN kernels (lightning_modules/precision.py); the
JSON's `precision` holds the flags that were in force.

Run it on an idle machine. Inference speed of pruned models is `python -m reproduce speed`.
"""

from __future__ import annotations

import time

from lightning_modules.precision import PRECISIONS, apply_precision, precision_flags
from lightning_modules.timing import hardware_summary, paired_ratio, stats, time_interleaved

SEQ_LEN = 35
HIDDEN = (200, 650)


def train_steps(hidden: int, batch: int = 20) -> dict:
    """The two timed steps, forward + backward on one input: a GatedLSTM in training mode (gates
    sampled, masks applied, expected-L0 penalty in the loss) and a plain 2-layer nn.LSTM. The
    models and the input are returned too, so that a caller can check what a step did."""
    import torch

    from lightning_modules.pruning.gated_lstm import GatedLSTM

    torch.manual_seed(0)
    gated = GatedLSTM(hidden, [hidden, hidden]).train()
    plain = torch.nn.LSTM(hidden, hidden, num_layers=2)
    x = torch.randn(SEQ_LEN, batch, hidden)

    def gated_step():
        gated.zero_grad(set_to_none=True)
        out, _ = gated(x)
        (out.square().mean() + 1e-7 * gated.expected_l0()).backward()

    def plain_step():
        plain.zero_grad(set_to_none=True)
        out, _ = plain(x)
        out.square().mean().backward()

    return {"gated": gated_step, "plain": plain_step, "models": {"gated": gated, "plain": plain}, "input": x}


def bench_train_step(hidden: int, repeats: int, warmup: int, batch: int = 20) -> dict:
    steps = train_steps(hidden, batch)
    samples = time_interleaved({"gated": steps["gated"], "plain": steps["plain"]}, repeats, warmup)
    ratio = paired_ratio(samples["gated"], samples["plain"])
    return {"hidden": hidden, "batch": batch, "seq_len": SEQ_LEN, "gated": stats(samples["gated"]),
            "plain": stats(samples["plain"]), "ratio": ratio["median"], "ratio_q1_q3": ratio}


def run_bench(out: str, quick: bool = False, hidden: tuple[int, ...] = HIDDEN) -> dict:
    from lightning_modules.atomic import atomic_write_json

    repeats, warmup = (5, 1) if quick else (40, 10)
    train = [bench_train_step(h, repeats, warmup) for h in hidden]
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hardware": hardware_summary(device="cpu"),  # the steps run on the CPU, whatever GPU is there
        "quick": quick,
        "precision": precision_flags(),
        "train_step": train,
    }
    atomic_write_json(out, result)
    print(f"\nTraining step, forward+backward, batch 20, {SEQ_LEN} steps ({result['hardware']})")
    print("| hidden | GatedLSTM ms | nn.LSTM ms | ratio, median of pairs (q1-q3); target <= 1.15 at 650 |")
    print("|---|---|---|---|")
    for r in train:
        q = r["ratio_q1_q3"]
        print(f"| {r['hidden']} | {r['gated']['median_ms']:.1f} | {r['plain']['median_ms']:.1f} | "
              f"{r['ratio']:.3f} ({q['q1']:.3f}-{q['q3']:.3f}) |")
    print(f"\nwritten to {out}")
    return result


# ---- --steps: whole training steps, eager vs fused vs graph ----------------------------------------

# name: (embedding_dim, hidden_sizes, dropout, num_steps, batch, vocab): Zaremba's configs (reproduce/configs)
STEP_SIZES = {
    "tiny": (16, [16, 16], 0.0, 10, 4, 500),
    "small": (200, [200, 200], 0.0, 20, 20, 10_000),
    "medium": (650, [650, 650], 0.5, 35, 20, 10_000),
    "large": (1500, [1500, 1500], 0.65, 35, 20, 10_000),
}
# one lambda per method as in the configs (their values do not change the work a step does)
STEP_METHODS = {
    "dense": {"method": "none"},
    "l0": {"method": "l0", "reg_lambda": 3e-8},
    "group_lasso": {"method": "group_lasso", "reg_lambda": 7e-5},
    "lasso": {"method": "lasso", "reg_lambda": 1e-7},
    # masks updated (host work, an eager step in graph mode) every 100 steps, as the small config
    "magnitude": {"method": "magnitude", "structured": True, "prune_end_step": 10_000, "prune_every": 100},
}
STEP_IMPLS = ("eager", "fused", "graph")
PTB_TRAIN_TOKENS = 929_589  # Mikolov's ptb.train.txt with one <eos> per line
# parameter-sized memory passes per step: forward read; backward read + gradient write; clip
# reads the gradient twice (norm, scale) and writes it; update reads weight and gradient, writes weight
WEIGHT_PASSES = 9


def _windows_per_epoch(batch: int, num_steps: int) -> int:
    return (PTB_TRAIN_TOKENS // batch - 1) // num_steps


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def measure_floor(device: str, quick: bool) -> dict:
    """fp32 matmul rate (one n x n product) and copy bandwidth (one large tensor) of this device."""
    import torch

    n, mib = (256, 8) if quick else ((8192, 1024) if device == "cuda" else (1024, 256))
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    src = torch.empty(mib * 2 ** 18, device=device)  # mib MiB of float32
    dst = torch.empty_like(src)
    times = {}
    reps = 3 if quick else 10
    for name, fn in (("matmul", lambda: a @ b), ("copy", lambda: dst.copy_(src))):
        fn()
        _sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        _sync(device)
        times[name] = (time.perf_counter() - start) / reps
    return {"matmul_n": n, "flops_per_s": 2 * n ** 3 / times["matmul"],
            "copy_mib": mib, "bytes_per_s": 2 * src.numel() * 4 / times["copy"]}


def step_floor(size: str, floor: dict) -> dict:
    from lightning_modules.lm.language_model import model_size

    emb, hidden, _, num_steps, batch, vocab = STEP_SIZES[size]
    sizes = model_size(vocab, emb, hidden)
    flops = 3 * sizes["flops_per_token"] * batch * num_steps
    weight_bytes = WEIGHT_PASSES * 4 * sizes["params"]
    compute_ms, memory_ms = 1e3 * flops / floor["flops_per_s"], 1e3 * weight_bytes / floor["bytes_per_s"]
    return {"flops_per_step": flops, "weight_bytes_per_step": weight_bytes, "params": sizes["params"],
            "compute_ms": compute_ms, "memory_ms": memory_ms, "floor_ms": max(compute_ms, memory_ms)}


def _synthetic_windows(size: str, n_windows: int):
    """Random token windows of a size's shape (timing needs no real text), pinned on a GPU machine."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from lightning_modules.lm.ptb_data import LMWindows

    _, _, _, num_steps, batch, vocab = STEP_SIZES[size]

    class Windows(L.LightningDataModule):
        def train_dataloader(self):
            gen = torch.Generator().manual_seed(0)
            ids = torch.randint(0, vocab, (batch * (num_steps * n_windows + 1),), generator=gen)
            return DataLoader(LMWindows(ids, batch, num_steps), batch_size=None, pin_memory=torch.cuda.is_available())

    return Windows()


def bench_steps_one(size: str, method: str, impl: str, device: str, warmup: int, chunks: int, chunk: int) -> dict:
    """ms per training step of one config, timed by Lightning's own loop (a callback marks the chunks)."""
    import gc
    import tempfile

    import lightning as L
    import torch

    from lightning_modules.lm.lm_task import LanguageModelTask

    emb, hidden, dropout, num_steps, batch, vocab = STEP_SIZES[size]
    args = dict(STEP_METHODS[method])
    if args["method"] == "magnitude":
        args["target_neurons"] = [max(h // 2, 1) for h in hidden]
    bounds = [warmup + i * chunk for i in range(chunks + 1)]
    marks: list[float] = []

    class Marks(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx in bounds:
                _sync(device)
                marks.append(time.perf_counter())

    torch.manual_seed(0)
    task = LanguageModelTask(vocab_size=vocab, embedding_dim=emb, hidden_sizes=hidden, dropout=dropout,
                             gate_history_every=0, step_impl=impl, **args)
    with tempfile.TemporaryDirectory() as root:  # what a run writes (the gates' history) goes nowhere
        trainer = L.Trainer(max_steps=bounds[-1] + 1, accelerator=device, devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=100,
                            callbacks=[Marks()], default_root_dir=root)
        trainer.fit(task, _synthetic_windows(size, bounds[-1] + 2))
    per_step = [(b - a) / chunk for a, b in zip(marks, marks[1:])]
    ran = task._train_step.mode if task._train_step is not None else "eager"
    del task, trainer
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    out = {"size": size, "method": method, "impl": impl, "ran_as": ran, **stats(per_step)}
    out["s_per_epoch"] = out["median_ms"] * _windows_per_epoch(batch, num_steps) / 1e3
    return out


def run_step_bench(out: str, quick: bool = False, sizes: list[str] | None = None, methods: list[str] | None = None,
                   impls: list[str] | None = None) -> dict:
    import logging
    import warnings

    import torch

    from lightning_modules.atomic import atomic_write_json

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = sizes or (["tiny"] if quick else ["medium", "large"])
    methods = methods or list(STEP_METHODS)
    impls = [i for i in (impls or STEP_IMPLS) if i != "graph" or device == "cuda"]  # graph needs CUDA
    warmup, chunks, chunk = (4, 3, 3) if quick else (8, 6, 10)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # one Trainer per config: no banners
    warnings.filterwarnings("ignore", message=r".*(does not have many workers|smaller than the logging interval"
                                              r"|have no `val_dataloader`|isinstance\(treespec, LeafSpec\))")
    floor = measure_floor(device, quick)
    rows: list[dict] = []
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hardware": hardware_summary(device=device),
        "device": device, "quick": quick, "warmup_steps": warmup, "chunks": chunks, "steps_per_chunk": chunk,
        "precision": precision_flags(),  # the floor's matmul rate too is measured in it
        "floor": {**floor, "per_size": {size: step_floor(size, floor) for size in sizes}},
        "steps": rows,
        "complete": False,
    }
    for size in sizes:
        for method in methods:
            for impl in impls:
                rows.append(bench_steps_one(size, method, impl, device, warmup, chunks, chunk))
                r = rows[-1]
                print(f"{size} {method} {impl}: {r['median_ms']:.2f} ms/step ({r['q1_ms']:.2f}-{r['q3_ms']:.2f})"
                      + ("" if r["ran_as"] == impl or impl == "eager" else f", ran as {r['ran_as']}"), flush=True)
                atomic_write_json(out, result)  # so far: a bench stopped at a deadline keeps what it measured
    result["complete"] = True
    atomic_write_json(out, result)
    print(f"\nTraining step, ms (median of {chunks} chunks of {chunk} steps) and s per PTB epoch "
          f"(training only) on {result['hardware']}")
    print(f"floor: {result['precision']['precision']} matmul {floor['flops_per_s'] / 1e12:.2f} TFLOP/s, "
          f"copy {floor['bytes_per_s'] / 1e9:.0f} GB/s")
    print("| size | method | " + " | ".join(f"{i} ms" for i in impls)
          + " | eager / fastest | s/epoch (fastest) | floor ms |")
    print("|---|---|" + "---|" * (len(impls) + 3))
    for size in sizes:
        for method in methods:
            got = {r["impl"]: r for r in rows if r["size"] == size and r["method"] == method}
            fastest = min(got.values(), key=lambda r: r["median_ms"])
            cells = " | ".join(f"{got[i]['median_ms']:.2f}" for i in impls)
            # --impls without eager: no ratio to it
            ratio = f"{got['eager']['median_ms'] / fastest['median_ms']:.2f}" if "eager" in got else ""
            print(f"| {size} | {method} | {cells} | {ratio} | "
                  f"{fastest['s_per_epoch']:.1f} | {result['floor']['per_size'][size]['floor_ms']:.3f} |")
    print(f"\nwritten to {out}")
    return result


def add_arguments(parser) -> None:
    parser.add_argument("--out", default=None,
                        help="JSON output (default results/bench/bench.json, with --steps results/bench/steps.json)")
    parser.add_argument("--quick", action="store_true",
                        help="few repeats, tiny sizes with --steps (a check that it runs)")
    parser.add_argument("--steps", action="store_true",
                        help="whole training steps, model.step_impl eager vs fused vs graph, with a floor")
    parser.add_argument("--sizes", default=None, help=f"--steps: comma-separated, of {', '.join(STEP_SIZES)} "
                                                       "(default medium,large; tiny with --quick)")
    parser.add_argument("--methods", default=None, help=f"--steps: comma-separated, of {', '.join(STEP_METHODS)}")
    parser.add_argument("--impls", default=None, help=f"--steps: comma-separated, of {', '.join(STEP_IMPLS)}")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="float32 matmuls and cuDNN kernels: fp32 (full float32) or tf32; the JSON records the "
                             "flags in force")


def _names(value: str | None, known, what: str) -> list[str] | None:
    from lightning_modules.errors import UserError

    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UserError(f"bench --{what}: unknown {unknown or value!r}; use {', '.join(known)}")
    return names


def run(args) -> None:
    apply_precision(args.precision)
    if args.steps:
        run_step_bench(args.out or "results/bench/steps.json", quick=args.quick,
                       sizes=_names(args.sizes, STEP_SIZES, "sizes"),
                       methods=_names(args.methods, STEP_METHODS, "methods"),
                       impls=_names(args.impls, STEP_IMPLS, "impls"))
    else:
        run_bench(args.out or "results/bench/bench.json", quick=args.quick)
