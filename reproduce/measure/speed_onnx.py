"""The ONNX Runtime backend of `python -m reproduce speed`: each model exported to ONNX (and checked
against torch first, by lightning_modules/lm/onnx_export.py), a session per model and part, and the
calls the timing harness times."""

from __future__ import annotations

import sys
from pathlib import Path

PARTS = ("model", "lstm")  # the whole model (token ids -> logits), and its RNN stack alone


def available_devices(devices: tuple[str, ...], backends: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The devices ONNX Runtime can time here, and why it skips the others."""
    if "onnxruntime" not in backends:
        return [], []
    import onnxruntime as ort

    available, skipped = [], []
    for device in devices:
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            skipped.append("onnxruntime on cuda: no CUDAExecutionProvider (install onnxruntime-gpu)")
        else:
            available.append(device)
    return available, skipped


def export_all(models: dict, onnx_dirs: dict[str, Path], kept: tuple[str, ...], seq_len: int,
               batches: tuple[int, ...]) -> tuple[dict, dict]:
    """Export each model to ONNX, checked against torch at every timed batch size.

    Returns the files to time and what the JSON records (the paths of `kept` models only:
    the others live in a temporary folder).
    """
    from lightning_modules.lm.onnx_export import export_onnx

    files, record = {}, {}
    for name, model in models.items():
        print(f"exporting {name} to ONNX and checking it against torch", file=sys.stderr)
        info = export_onnx(model, onnx_dirs[name], seq_len, check_batches=(1, 2, *batches))
        files[name] = {part: info[part] for part in PARTS}
        record[name] = {**info, **({} if name in kept else dict.fromkeys(PARTS))}
    return files, record


def sessions(files: dict, threads: int, device: str) -> tuple[dict, str | None]:
    """{model: {part: session}} on `device`, or ({}, why) where its sessions cannot run there."""
    from lightning_modules.lm.onnx_export import ort_session

    by_model = {name: {part: ort_session(by_part[part], threads, device) for part in PARTS}
                for name, by_part in files.items()}
    if device == "cuda" and any(s.get_providers()[0] != "CUDAExecutionProvider"
                                for by_part in by_model.values() for s in by_part.values()):
        # ONNX Runtime falls back to the CPU when its CUDA libraries fail to load
        return {}, "onnxruntime on cuda: the CUDA provider did not load (see ONNX Runtime's log)"
    return by_model, None


def call(session, x, device: str):
    """Inputs bound once (on the device); each call allocates its output, as a torch forward does."""
    import onnxruntime as ort

    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(x.numpy(), device, 0))
    binding.bind_output(session.get_outputs()[0].name, device)

    def run():
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
    return run
