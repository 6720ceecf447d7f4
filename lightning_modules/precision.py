"""The float32 precision of matmuls and cuDNN kernels: one owner for setting it and for reading it back.

Every entry point (training, the packed and batched trainers, the bench, the GPU probe) takes one
option, `fp32` (the default) or `tf32`, and calls `apply_precision`; what it records in its JSON is
`precision_flags()`, read back from torch, so a record says what was in force, not what was asked for.

Why explicit: PyTorch's own defaults disagree with each other. Matmuls default to full fp32
(`float32_matmul_precision` "highest"), while cuDNN, which runs the LSTM, allows TF32
(`torch.backends.cudnn.allow_tf32` is True). A run that sets nothing is therefore neither fp32 nor
TF32; `precision_flags` calls that state "mixed". The flags are process-wide: runs sharing a process
(packed, batched) share one precision.
"""

from __future__ import annotations

from .errors import UserError

PRECISIONS = ("fp32", "tf32")
# what each name sets: float32_matmul_precision ("high" is TF32 on CUDA), cuBLAS TF32, cuDNN TF32
_SETTINGS = {"fp32": ("highest", False, False), "tf32": ("high", True, True)}


def apply_precision(name: str) -> dict:
    """Set matmul and cuDNN precision for the whole process; returns `precision_flags()`."""
    if name not in _SETTINGS:
        raise UserError(f"precision {name!r} is not one of {', '.join(PRECISIONS)}; "
                        "use --precision fp32 (full float32, the default) or --precision tf32")
    import torch  # here, not at the top: the CLI's modules import this module, and `--help` must not load torch

    matmul, cublas_tf32, cudnn_tf32 = _SETTINGS[name]
    # set_float32_matmul_precision sets cuBLAS's TF32 switch too; both are set so that each is explicit
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cuda.matmul.allow_tf32 = cublas_tf32
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    return precision_flags()


def precision_flags() -> dict:
    """The flags in force, read from torch, and the name they amount to: fp32, tf32, or mixed (any
    other combination, e.g. PyTorch's defaults: fp32 matmuls, TF32 cuDNN)."""
    import torch

    flags = (torch.get_float32_matmul_precision(), bool(torch.backends.cuda.matmul.allow_tf32),
             bool(torch.backends.cudnn.allow_tf32))
    name = next((n for n, setting in _SETTINGS.items() if setting == flags), "mixed")
    return {"precision": name, "float32_matmul_precision": flags[0], "cuda_matmul_allow_tf32": flags[1],
            "cudnn_allow_tf32": flags[2]}
