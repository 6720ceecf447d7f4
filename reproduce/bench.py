"""Speed benchmarks, measured side by side in one process (`make bench`).

1. Training step (forward + backward, batch 20, 35 steps) of GatedLSTM (gates sampled,
   masks applied, expected-L0 penalty) against a plain 2-layer `nn.LSTM`, at 200 and 650
   units. Target: ratio <= 1.15 at 650 units.
2. Inference latency of an exported (pruned) language model against the dense model it
   came from, at batch 1 and batch 20, in eval mode without autograd.
Timings alternate between the two models on every repeat, so both see the same machine
state; the median and the interquartile spread are reported, and ratios are medians of the
back-to-back pairs. Run it on an idle machine.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lightning_modules.atomic import atomic_write_json
from lightning_modules.export import export_language_model, load_exported_language_model
from lightning_modules.gated_lstm import GatedLSTM
from lightning_modules.language_model import LSTMLanguageModel, model_size

VOCAB_SIZE = 10000
SEQ_LEN = 35


def _time_pair(fn_a, fn_b, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
    for _ in range(warmup):
        fn_a()
        fn_b()
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((fn_a, a), (fn_b, b)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return a, b


def _stats(samples: list[float], scale: float = 1000.0) -> dict:
    q = statistics.quantiles(samples, n=4) if len(samples) >= 4 else [min(samples), 0, max(samples)]
    return {"median_ms": statistics.median(samples) * scale, "q1_ms": q[0] * scale,
            "q3_ms": q[2] * scale, "n": len(samples)}


def bench_train_step(hidden: int, repeats: int, warmup: int, batch: int = 20) -> dict:
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

    g, p = _time_pair(gated_step, plain_step, repeats, warmup)
    # the median of paired ratios: each pair ran back to back, so slow drifts of the
    # machine (clock, other load) cancel out of it
    ratios = [a / b for a, b in zip(g, p)]
    return {"hidden": hidden, "batch": batch, "seq_len": SEQ_LEN, "gated": _stats(g), "plain": _stats(p),
            "ratio": statistics.median(ratios), "ratio_q1_q3": _stats(ratios, scale=1.0)}


def _pruned_export(emb: int, hidden: list[int], keep: list[int], out_dir: Path):
    """A gated LM whose gates keep the first `keep[k]` hidden neurons of layer k, exported."""
    torch.manual_seed(0)
    model = LSTMLanguageModel(VOCAB_SIZE, emb, hidden)
    for gate, n in zip(model.rnn.hidden_gates, keep):
        gate.force_shut(list(range(n, gate.n)))
    export_language_model(model.eval(), [str(i) for i in range(VOCAB_SIZE)], out_dir)
    return load_exported_language_model(out_dir)[0]


def bench_synthetic_prune(dense_sizes: list[int], kept: list[int], repeats: int, warmup: int) -> list[dict]:
    """Dense model against the export of the same model with gates forced shut."""
    torch.manual_seed(0)
    dense = LSTMLanguageModel(VOCAB_SIZE, dense_sizes[0], dense_sizes, gated=False).eval()
    with tempfile.TemporaryDirectory() as tmp:
        pruned = _pruned_export(dense_sizes[0], dense_sizes, kept, Path(tmp) / "export").eval()
    return bench_inference(dense, pruned, repeats, warmup, "synthetic: gates forced shut")


def bench_exports(dense_dir: str, pruned_dir: str, repeats: int, warmup: int) -> list[dict]:
    """Two exported run dirs' models, e.g. a trained dense baseline and a trained L0 model."""
    dense, _ = load_exported_language_model(dense_dir)
    pruned, _ = load_exported_language_model(pruned_dir)
    return bench_inference(dense, pruned, repeats, warmup, f"{pruned_dir} vs {dense_dir}")


def _sizes(model: LSTMLanguageModel) -> tuple[int, list[int]]:
    return model.embedding.embedding_dim, list(model.rnn.hidden_sizes)


def bench_inference(dense: LSTMLanguageModel, pruned: LSTMLanguageModel, repeats: int, warmup: int,
                    source: str) -> list[dict]:
    (dense_emb, dense_sizes), (pruned_emb, kept) = _sizes(dense), _sizes(pruned)
    before = model_size(dense.vocab_size, dense_emb, dense_sizes)
    after = model_size(pruned.vocab_size, pruned_emb, kept)
    rows = []
    for batch in (1, 20):
        tokens = torch.randint(0, dense.vocab_size, (batch, SEQ_LEN))

        def run(model, tokens=tokens):
            with torch.inference_mode():
                model(tokens)

        d, p = _time_pair(lambda: run(dense), lambda: run(pruned), repeats, warmup)
        ds, ps = _stats([t / SEQ_LEN for t in d]), _stats([t / SEQ_LEN for t in p])
        rows.append({"source": source, "batch": batch, "dense_sizes": dense_sizes, "pruned_sizes": kept,
                     "dense_ms_per_step": ds, "pruned_ms_per_step": ps,
                     "speedup": statistics.median(a / b for a, b in zip(d, p)),
                     "flops_ratio": before["flops_per_token"] / after["flops_per_token"],
                     "lstm_flops_ratio": before["lstm_flops_per_token"] / after["lstm_flops_per_token"]})
    return rows


def run_bench(out: str, quick: bool = False, compare: list[str] | None = None) -> dict:
    repeats, warmup = (5, 1) if quick else (40, 10)
    train = [bench_train_step(h, repeats, warmup) for h in (200, 650)]
    # pruned sizes: the ISS paper's learned (373, 315) out of 1500, scaled to these widths
    inference = [*bench_synthetic_prune([200, 200], [50, 42], repeats, warmup),
                 *bench_synthetic_prune([650, 650], [162, 137], repeats, warmup)]
    if compare:
        inference += bench_exports(compare[0], compare[1], repeats, warmup)
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hardware": f"{platform.processor() or platform.machine()}, "
                    f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "quick": quick,
        "train_step": train,
        "inference": inference,
    }
    atomic_write_json(out, result)
    print(f"\nTraining step, forward+backward, batch 20, {SEQ_LEN} steps ({result['hardware']})")
    print("| hidden | GatedLSTM ms | nn.LSTM ms | ratio, median of pairs (q1-q3); target <= 1.15 at 650 |")
    print("|---|---|---|---|")
    for r in train:
        q = r["ratio_q1_q3"]
        print(f"| {r['hidden']} | {r['gated']['median_ms']:.1f} | {r['plain']['median_ms']:.1f} | "
              f"{r['ratio']:.3f} ({q['q1_ms']:.3f}-{q['q3_ms']:.3f}) |")
    print("\nInference, whole LM (embedding + LSTM + 10k decoder), ms per time step")
    print("| models | batch | dense sizes | pruned sizes | dense ms | pruned ms | speedup | FLOPs ratio "
          "| LSTM FLOPs ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in inference:
        print(f"| {r['source']} | {r['batch']} | {r['dense_sizes']} | {r['pruned_sizes']} | "
              f"{r['dense_ms_per_step']['median_ms']:.3f} | {r['pruned_ms_per_step']['median_ms']:.3f} | "
              f"{r['speedup']:.2f}x | {r['flops_ratio']:.2f}x | {r['lstm_flops_ratio']:.2f}x |")
    print(f"\nwritten to {out}")
    return result


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="results/bench/bench.json")
    parser.add_argument("--quick", action="store_true", help="few repeats (a check that it runs)")
    parser.add_argument("--compare", nargs=2, metavar=("DENSE_EXPORT", "PRUNED_EXPORT"),
                        help="also time two exported models, e.g. results/ptb/small/{dense,l0}/export")


def run(args) -> None:
    run_bench(args.out, quick=args.quick, compare=args.compare)
