"""Training-step overhead of the gates (`python -m reproduce bench`, `make bench`).

Forward + backward (batch 20, 35 steps) of GatedLSTM (gates sampled, masks applied,
expected-L0 penalty) against a plain 2-layer `nn.LSTM`, at 200 and 650 units. Target: ratio
<= 1.15 at 650 units. The two run in turn on every repeat, so both see the same machine
state; reported are the median and quartiles, and the ratio is the median of the
back-to-back pairs. Run it on an idle machine. Inference speed of pruned models is
`python -m reproduce speed`.
"""

from __future__ import annotations

import time

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


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="results/bench/bench.json")
    parser.add_argument("--quick", action="store_true", help="few repeats (a check that it runs)")


def run(args) -> None:
    run_bench(args.out, quick=args.quick)
