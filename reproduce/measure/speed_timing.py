"""The timing of `python -m reproduce speed`, and the record it writes (speed.json) and prints.

Timing: every model, part, batch size, backend and device. The models of one backend run in turn on
every repeat (A B C, B C A, ...: lightning_modules/timing.py, the harness `bench` and the SQuAD export
use too) so they see the same machine state; a cell holds the median and quartiles in ms per time step
(every batch stream advances one token) of each model, and the medians of the ratios of back-to-back
runs against the pruned model. ONNX Runtime runs the files speed_models.py exported, one session per
model and part, with its inputs bound once.

speed.json's layout is read by reproduce/report/runs.py (`read_speed`, the only reader: the tables and
plots take the torch speedups and batch-1 latencies of the whole model from it), and committed records
hold such files, so a key renamed here is a key renamed there. Top-level keys, in order:
  created, source, settings, hardware     what was timed, how, and where
  sizes, weight_bytes, smallest_cache_holding, flops_per_token, flops_ratio, lstm_flops_ratio
  speedup, export_vs_plain, onnxruntime_vs_torch, targets     {backend: {part: {batch: median ratio}}}
  latency, onnx, skipped                   every cell's statistics, the ONNX files, what was not timed
  int8, int8_checks                        --quantize int8 only: its perplexity and speedups (below)

--quantize int8 adds the models dense_int8 and pruned_int8 to every latency cell (timed in the same
turns as the fp32 ones), the paired ratios int8_speedup (dense fp32 / pruned int8) and
dense_int8_speedup (dense fp32 / dense int8) to its ratios, and the block that the tables read:
  int8: {engine, test_ppl: {torch, onnxruntime}, test_ppl_fp32,
         speedup: {backend: {model: {batch: median}}}, dense_int8_speedup: {backend: {model: {batch: median}}}}
test_ppl.onnxruntime is measured on model_with_state_int8.onnx (state in and out, so that the test
loop carries it from window to window as it does in torch); null where ONNX Runtime is not timed or
there is no perplexity (--sizes: random weights). int8_checks holds how far each int8 model's logits
are from its fp32 model's, and the data settings the perplexities were measured with.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

from lightning_modules.timing import hardware as probe_hardware
from lightning_modules.timing import paired_ratio, stats, time_interleaved

from .speed_models import DENSE, DENSE_INT8, PARTS, PLAIN, PRUNED, PRUNED_INT8, Models, sizes_block

BACKENDS = ("torch", "onnxruntime")
EXPORT_VS_PLAIN_TARGET = 0.95  # plain time / export time: exporting may add no more than 5%


@dataclass(frozen=True)
class Settings:
    batches: tuple[int, ...]
    seq_len: int
    repeats: int
    warmup: int
    threads: int
    threads_from: str
    backends: tuple[str, ...]
    devices: tuple[str, ...]
    quick: bool
    # the devices ONNX Runtime times here, and why it skips the others (onnxruntime_devices_for)
    onnxruntime_devices: tuple[str, ...] = ()
    skipped: tuple[str, ...] = field(default=())
    quantize: str | None = None  # "int8": the int8 copies of the dense and the pruned model are timed too

    def as_dict(self) -> dict:
        return {"batches": list(self.batches), "seq_len": self.seq_len, "repeats": self.repeats,
                "warmup": self.warmup, "threads": self.threads, "threads_from": self.threads_from,
                "backends": list(self.backends), "devices": list(self.devices), "quick": self.quick,
                "order": "the models of one backend in turn each repeat, starting one later each time",
                "onnxruntime_intra_op_threads": self.threads, "onnxruntime_spinning": False,
                **({"quantize": self.quantize} if self.quantize else {})}


def onnxruntime_devices_for(devices: tuple[str, ...], backends: tuple[str, ...]) -> tuple[tuple, tuple]:
    """The devices ONNX Runtime can time here, and why it skips the others."""
    if "onnxruntime" not in backends:
        return (), ()
    import onnxruntime as ort

    available, skipped = [], []
    for device in devices:
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            skipped.append("onnxruntime on cuda: no CUDAExecutionProvider (install onnxruntime-gpu)")
        else:
            available.append(device)
    return tuple(available), tuple(skipped)


# ---- the timing ----------------------------------------------------------------------------------

def label(backend: str, device: str) -> str:
    """speed.json's key of a backend on a device: the CPU's has no suffix."""
    return backend if device == "cpu" else f"{backend}_{device}"


def _inputs(models: dict, part: str, batch: int, seq_len: int, seed: int) -> dict:
    """One CPU input per model: the same tokens for whole models, features of each model's width for RNNs."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    vocab = next(iter(models.values())).vocab_size
    if part == "model":
        tokens = torch.randint(0, vocab, (batch, seq_len), generator=gen)
        return dict.fromkeys(models, tokens)
    return {name: torch.randn(seq_len, batch, m.embedding.embedding_dim, generator=gen) for name, m in models.items()}


def _torch_call(model, part: str, x, device: str):
    import torch

    module = model if part == "model" else model.rnn
    x = x.to(device)
    if device == "cuda":
        def call():
            module(x)
            torch.cuda.synchronize()  # kernels run asynchronously: wait for them inside the timed span
        return call
    return lambda: module(x)


def _sessions(files: dict, threads: int, device: str) -> tuple[dict, str | None]:
    """{model: {part: session}} on `device`, or ({}, why) where its sessions cannot run there."""
    from lightning_modules.lm.onnx_export import ort_session

    by_model = {name: {part: ort_session(by_part[part], threads, device) for part in PARTS}
                for name, by_part in files.items()}
    if device == "cuda" and any(s.get_providers()[0] != "CUDAExecutionProvider"
                                for by_part in by_model.values() for s in by_part.values()):
        # ONNX Runtime falls back to the CPU when its CUDA libraries fail to load
        return {}, "onnxruntime on cuda: the CUDA provider did not load (see ONNX Runtime's log)"
    return by_model, None


def _ort_call(session, x, device: str):
    """Inputs bound once (on the device); each call allocates its output, as a torch forward does."""
    import onnxruntime as ort

    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(x.numpy(), device, 0))
    binding.bind_output(session.get_outputs()[0].name, device)

    def run():
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
    return run


def _summarize(samples: dict[str, list[float]], seq_len: int) -> dict:
    per_step = {n: stats([t / seq_len for t in s]) for n, s in samples.items()}
    ratios = {"speedup": paired_ratio(samples[DENSE], samples[PRUNED])}
    if PLAIN in samples:
        ratios["export_vs_plain"] = paired_ratio(samples[PLAIN], samples[PRUNED])
    if PRUNED_INT8 in samples:
        ratios["int8_speedup"] = paired_ratio(samples[DENSE], samples[PRUNED_INT8])
    if DENSE_INT8 in samples:
        ratios["dense_int8_speedup"] = paired_ratio(samples[DENSE], samples[DENSE_INT8])
    return {**per_step, "ratios": ratios}


def measure(models: Models, settings: Settings) -> dict:
    """Latency of every model, part, batch, backend and device, with the paired ratios against PRUNED;
    the backends skipped, with why."""
    import torch

    skipped = list(settings.skipped)
    latency: dict = {}
    for device in settings.devices:
        on_device = {n: (m if device == "cpu" else copy.deepcopy(m).to(device)) for n, m in models.torch.items()}
        sessions = {}
        if device in settings.onnxruntime_devices:
            sessions, why_not = _sessions(models.onnx_files, settings.threads, device)
            skipped += [why_not] if why_not else []
        for part in PARTS:
            for batch in settings.batches:
                inputs = _inputs(models.torch, part, batch, settings.seq_len, seed=batch)
                timed = {}
                if "torch" in settings.backends:
                    calls = {n: _torch_call(m, part, inputs[n], device) for n, m in on_device.items()}
                    with torch.inference_mode():
                        timed[label("torch", device)] = time_interleaved(calls, settings.repeats, settings.warmup)
                if sessions:
                    calls = {n: _ort_call(sessions[n][part], inputs[n], device) for n in sessions}
                    timed[label("onnxruntime", device)] = time_interleaved(calls, settings.repeats, settings.warmup)
                for key, samples in timed.items():
                    latency.setdefault(key, {}).setdefault(part, {})[str(batch)] = _summarize(samples,
                                                                                             settings.seq_len)
    return {"latency": latency, "skipped": skipped}


# ---- speed.json ----------------------------------------------------------------------------------

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


INT8_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def int8_cpu_flags() -> list[str]:
    """The CPU's int8 dot-product extensions (VNNI, AMX, ARM dot product), which set how fast int8 runs."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith(("flags", "Features"))), [])
    return [f for f in INT8_CPU_FLAGS if f in flags]


def hardware_record(backends: tuple[str, ...], quantize: str | None = None) -> dict:
    """The shared probe, with the ONNX versions when ONNX Runtime is timed, and the quantization engine
    and the CPU's int8 extensions when int8 is."""
    info = probe_hardware()
    if quantize:
        import torch

        info.update(quantized_engine=torch.backends.quantized.engine,
                    quantized_engines_supported=list(torch.backends.quantized.supported_engines),
                    int8_cpu_flags=int8_cpu_flags())
    if "onnxruntime" in backends:
        import onnx
        import onnxruntime

        info.update(onnxruntime=onnxruntime.__version__, onnx=onnx.__version__,
                    onnxruntime_providers=onnxruntime.get_available_providers())
    return info


def int8_block(models: Models, latency: dict) -> dict:
    """speed.json's int8 block (the keys the tables read) and its int8_checks."""
    def whole_model(ratio: str) -> dict:
        return {key: {"model": parts["model"]} for key, parts in (summary(latency, ratio) or {}).items()
                if parts.get("model")}

    block = {"engine": models.int8["engine"], "test_ppl": models.int8["test_ppl"],
             "test_ppl_fp32": models.int8["test_ppl_fp32"],
             "speedup": whole_model("int8_speedup"), "dense_int8_speedup": whole_model("dense_int8_speedup")}
    checks = {"relative_difference_vs_fp32": models.int8["relative_difference_vs_fp32"],
              "test_data": models.int8["test_data"]}
    return {"int8": block, "int8_checks": checks}


def document(models: Models, settings: Settings, measured: dict) -> dict:
    """speed.json's content, from the models, the settings and what `measure` returned."""
    latency = measured["latency"]
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": models.source,
        "settings": settings.as_dict(),
        "hardware": hardware_record(settings.backends, settings.quantize),
        **sizes_block(models),
        "speedup": summary(latency, "speedup"),
        "export_vs_plain": summary(latency, "export_vs_plain"),
        "onnxruntime_vs_torch": onnxruntime_vs_torch(latency),
    }
    result["targets"] = targets(result)
    return {**result, "latency": latency, "onnx": models.onnx, "skipped": measured["skipped"],
            **(int8_block(models, latency) if models.int8 else {})}


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
    if "int8" in result:
        lines.extend(int8_lines(result))
    return "\n".join(lines)


def int8_lines(result: dict) -> list[str]:
    """The int8 models beside the fp32 ones: ms per time step and speedups over dense fp32."""
    int8 = result["int8"]
    lines = [f"\nint8 ({int8['engine']} engine); speedups over dense fp32",
             "| backend | part | batch | dense int8 ms | pruned int8 ms | pruned fp32 | dense int8 | pruned int8 |",
             "|---|---|---|---|---|---|---|---|"]
    for key, parts in result["latency"].items():
        for part, by_batch in parts.items():
            for batch, cell in by_batch.items():
                if PRUNED_INT8 not in cell:
                    continue
                r = cell["ratios"]
                lines.append(f"| {key} | {part} | {batch} | {cell[DENSE_INT8]['median_ms']:.4f} | "
                             f"{cell[PRUNED_INT8]['median_ms']:.4f} | {r['speedup']['median']:.2f}x | "
                             f"{r['dense_int8_speedup']['median']:.2f}x | {r['int8_speedup']['median']:.2f}x |")
    ppl = int8["test_ppl"]
    if int8["test_ppl_fp32"] is not None:
        ort = f", int8 {ppl['onnxruntime']:.2f} (ONNX Runtime)" if ppl["onnxruntime"] is not None else ""
        lines.append(f"test perplexity of the export: fp32 {int8['test_ppl_fp32']:.2f}, int8 {ppl['torch']:.2f} "
                     f"(torch){ort}")
    return lines
