"""speed.json, the record `python -m reproduce speed` writes, and the table it prints.

Its layout is read by reproduce/report/runs.py (`read_speed`, the only reader: the tables and plots
take the torch speedups and batch-1 latencies of the whole model from it), and committed records
hold such files, so a key renamed here is a key renamed there. Top-level keys, in order:
  created, source, settings, hardware     what was timed, how, and where
  sizes, weight_bytes, smallest_cache_holding, flops_per_token, flops_ratio, lstm_flops_ratio
  speedup, export_vs_plain, onnxruntime_vs_torch, targets     {backend: {part: {batch: median ratio}}}
  latency, onnx, skipped                   every cell's statistics, the ONNX files, what was not timed
"""

from __future__ import annotations

import time
from pathlib import Path

from lightning_modules.timing import hardware as probe_hardware

from .speed_models import DENSE, PLAIN, PRUNED

EXPORT_VS_PLAIN_TARGET = 0.95  # plain time / export time: exporting may add no more than 5%


def export_source(export_dir: Path, run_dir: Path) -> dict:
    return {"kind": "export", "export_dir": str(export_dir), "run_dir": str(run_dir)}


def sizes_source() -> dict:
    return {"kind": "sizes"}


def summary(latency: dict, ratio: str) -> dict | None:
    """{backend: {part: {batch: median ratio}}}, the block the tables read."""
    out = {key: {part: {b: cell["ratios"][ratio]["median"] for b, cell in by_batch.items() if ratio in cell["ratios"]}
                 for part, by_batch in parts.items()}
           for key, parts in latency.items()}
    return out if any(b for parts in out.values() for b in parts.values()) else None


def onnxruntime_vs_torch(latency: dict) -> dict:
    """Pruned model: torch eager ms / ONNX Runtime ms (> 1: ONNX Runtime faster). A ratio of medians:
    the two backends run in separate rounds, so these are not paired."""
    out = {}
    for key in latency:
        if not key.startswith("onnxruntime"):
            continue
        torch_key = key.replace("onnxruntime", "torch", 1)
        if torch_key not in latency:
            continue
        out[key] = {part: {b: latency[torch_key][part][b][PRUNED]["median_ms"] / cell[PRUNED]["median_ms"]
                           for b, cell in by_batch.items()}
                    for part, by_batch in latency[key].items()}
    return out


def targets(speedup_blocks: dict) -> dict:
    """The issue's two targets, read off the medians: None where not measured."""
    export_vs_plain = [r for parts in (speedup_blocks["export_vs_plain"] or {}).values()
                       for by_batch in parts.values() for r in by_batch.values()]
    ort_batch1 = [by_batch["1"] for parts in speedup_blocks["onnxruntime_vs_torch"].values()
                  for by_batch in parts.values() if "1" in by_batch]
    return {
        "export_vs_plain_min": min(export_vs_plain, default=None),
        "export_adds_no_overhead": min(export_vs_plain) >= EXPORT_VS_PLAIN_TARGET if export_vs_plain else None,
        "onnxruntime_vs_torch_batch1_min": min(ort_batch1, default=None),
        "onnxruntime_at_least_torch_at_batch1": min(ort_batch1) >= 1.0 if ort_batch1 else None,
    }


def hardware_record(backends: tuple[str, ...]) -> dict:
    """The shared probe, with the ONNX versions when ONNX Runtime is timed."""
    info = probe_hardware()
    if "onnxruntime" in backends:
        import onnx
        import onnxruntime

        info.update(onnxruntime=onnxruntime.__version__, onnx=onnx.__version__,
                    onnxruntime_providers=onnxruntime.get_available_providers())
    return info


def document(source: dict, settings, sizes: dict, measured: dict) -> dict:
    """speed.json's content: `settings` a speed_timing.Settings, `sizes` speed_models.sizes_block's,
    `measured` speed_timing.measure's."""
    latency = measured["latency"]
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source,
        "settings": settings.as_dict(),
        "hardware": hardware_record(settings.backends),
        **sizes,
        "speedup": summary(latency, "speedup"),
        "export_vs_plain": summary(latency, "export_vs_plain"),
        "onnxruntime_vs_torch": onnxruntime_vs_torch(latency),
    }
    result["targets"] = targets(result)
    return {**result, "latency": latency, "onnx": measured["onnx"], "skipped": measured["skipped"]}


def write(result: dict, out: Path) -> None:
    """Atomically (a reader never sees half a file), then the table on stdout."""
    from lightning_modules.atomic import atomic_write_json

    atomic_write_json(out, result)
    print(markdown_table(result))
    print(f"\nwritten to {out}")


def markdown_table(result: dict) -> str:
    """backend, part, batch: dense / pruned / plain ms per time step, speedup, FLOPs ratio, export/plain."""
    flops = {"model": result["flops_ratio"], "lstm": result["lstm_flops_ratio"]}
    s = result["sizes"]
    lines = [f"\ndense {s[DENSE]['hidden_sizes']} (embedding {s[DENSE]['embedding_dim']}) vs pruned "
             f"{s[PRUNED]['hidden_sizes']} (embedding {s[PRUNED]['embedding_dim']}), {s['cell'].upper()}, "
             f"vocab {s['vocab_size']}; ms per time step, median of {result['settings']['repeats']}; "
             f"{result['settings']['threads']} threads on {result['hardware']['cpu']}",
             "| backend | part | batch | dense ms | pruned ms | plain ms | speedup | FLOPs ratio | export/plain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, parts in result["latency"].items():
        for part, by_batch in parts.items():
            for batch, cell in by_batch.items():
                plain = f"{cell[PLAIN]['median_ms']:.4f}" if PLAIN in cell else "-"
                ratio = cell["ratios"].get("export_vs_plain")
                ratio = f"{ratio['median']:.3f}" if ratio else "-"
                speedup = cell["ratios"]["speedup"]["median"]
                lines.append(f"| {key} | {part} | {batch} | {cell[DENSE]['median_ms']:.4f} | "
                             f"{cell[PRUNED]['median_ms']:.4f} | {plain} | {speedup:.2f}x | {flops[part]:.2f}x "
                             f"| {ratio} |")
    mib = 1024 ** 2
    wb, caches = result["weight_bytes"], result["hardware"]["caches_bytes"]
    lines.append("\nweights (float32): " + ", ".join(
        f"{n} RNN {wb[n]['lstm'] / mib:.2f} MiB, whole {wb[n]['model'] / mib:.2f} MiB" for n in (DENSE, PRUNED))
        + "; caches: " + (", ".join(f"{k} {v / mib:.2f} MiB" for k, v in caches.items()) or "unknown"))
    for key, parts in result["onnxruntime_vs_torch"].items():
        lines.append(f"pruned model, torch eager / {key} time: " + ", ".join(
            f"{part} b{b} {r:.2f}" for part, by_batch in parts.items() for b, r in by_batch.items()))
    met = {True: "met", False: "NOT met"}
    t = result["targets"]
    verdicts = []
    if t["export_adds_no_overhead"] is not None:
        verdicts.append(f"export/plain >= {EXPORT_VS_PLAIN_TARGET}: {met[t['export_adds_no_overhead']]} "
                        f"(lowest {t['export_vs_plain_min']:.3f})")
    if t["onnxruntime_at_least_torch_at_batch1"] is not None:
        verdicts.append(f"ONNX Runtime at least as fast as torch eager at batch 1: "
                        f"{met[t['onnxruntime_at_least_torch_at_batch1']]} "
                        f"(lowest {t['onnxruntime_vs_torch_batch1_min']:.2f})")
    if verdicts:
        quick = " (--quick: too few repeats to judge)" if result["settings"]["quick"] else ""
        lines.append("targets: " + "; ".join(verdicts) + quick)
    lines.extend(f"skipped: {s}" for s in result["skipped"])
    return "\n".join(lines)
