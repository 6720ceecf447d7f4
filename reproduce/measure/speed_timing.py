"""The timing of `python -m reproduce speed`: every model, part, batch size, backend and device.

The models of one backend run in turn on every repeat (A B C, B C A, ...: lightning_modules/timing.py,
the harness `bench` and the SQuAD export use too) so they see the same machine state; a cell holds the
median and quartiles in ms per time step (every batch stream advances one token) of each model, and
the medians of the ratios of back-to-back runs against the pruned model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from lightning_modules.timing import paired_ratio, stats, time_interleaved

from . import speed_onnx
from .speed_models import DENSE, PLAIN, PRUNED
from .speed_onnx import PARTS

BACKENDS = ("torch", "onnxruntime")


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

    def as_dict(self) -> dict:
        return {"batches": list(self.batches), "seq_len": self.seq_len, "repeats": self.repeats,
                "warmup": self.warmup, "threads": self.threads, "threads_from": self.threads_from,
                "backends": list(self.backends), "devices": list(self.devices), "quick": self.quick,
                "order": "the models of one backend in turn each repeat, starting one later each time",
                "onnxruntime_intra_op_threads": self.threads, "onnxruntime_spinning": False}


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


def _summarize(samples: dict[str, list[float]], seq_len: int) -> dict:
    per_step = {n: stats([t / seq_len for t in s]) for n, s in samples.items()}
    ratios = {"speedup": paired_ratio(samples[DENSE], samples[PRUNED])}
    if PLAIN in samples:
        ratios["export_vs_plain"] = paired_ratio(samples[PLAIN], samples[PRUNED])
    return {**per_step, "ratios": ratios}


def measure(models: dict, settings: Settings, onnx_dirs: dict, kept_onnx: tuple[str, ...]) -> dict:
    """Latency of every model, part, batch, backend and device, with the paired ratios against PRUNED;
    the ONNX files written and the backends skipped, with why."""
    import torch

    ort_devices, skipped = speed_onnx.available_devices(settings.devices, settings.backends)
    files, onnx = (speed_onnx.export_all(models, onnx_dirs, kept_onnx, settings.seq_len, settings.batches)
                   if ort_devices else ({}, {}))
    latency: dict = {}
    for device in settings.devices:
        on_device = {n: (m if device == "cpu" else copy.deepcopy(m).to(device)) for n, m in models.items()}
        sessions = {}
        if device in ort_devices:
            sessions, why_not = speed_onnx.sessions(files, settings.threads, device)
            skipped += [why_not] if why_not else []
        for part in PARTS:
            for batch in settings.batches:
                inputs = _inputs(models, part, batch, settings.seq_len, seed=batch)
                timed = {}
                if "torch" in settings.backends:
                    calls = {n: _torch_call(on_device[n], part, inputs[n], device) for n in models}
                    with torch.inference_mode():
                        timed[label("torch", device)] = time_interleaved(calls, settings.repeats, settings.warmup)
                if sessions:
                    calls = {n: speed_onnx.call(sessions[n][part], inputs[n], device) for n in models}
                    timed[label("onnxruntime", device)] = time_interleaved(calls, settings.repeats, settings.warmup)
                for key, samples in timed.items():
                    latency.setdefault(key, {}).setdefault(part, {})[str(batch)] = _summarize(samples,
                                                                                             settings.seq_len)
    return {"latency": latency, "onnx": onnx, "skipped": skipped}
