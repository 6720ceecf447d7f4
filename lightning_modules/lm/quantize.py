"""8-bit exports of a (pruned) language model, in PyTorch and in ONNX Runtime.

Both are dynamic quantization: the weights are stored as int8 (per tensor), the activations are
quantized per call from their observed range, and the matrix products run in int8 with int32
accumulation. At batch 1 every weight is read once per token, so a quarter of the bytes is most of
what makes it faster; pruning first removes rows and columns, and the two multiply.

- PyTorch: `torch.ao.quantization.quantize_dynamic` turns the model's `nn.LSTM` / `nn.GRU` layers and
  its decoder `nn.Linear` into their dynamic int8 modules; the embedding (a lookup, one row per token)
  stays float32. torch 2.13 marks torch.ao.quantization as deprecated and points to torchao, whose
  `quantize_` converts `nn.Linear` only: for the recurrent layers torch.ao is still the only eager
  path, so its deprecation notes are silenced here and nowhere else. The kernels are those of
  `torch.backends.quantized.engine` (x86 / fbgemm on x86 CPUs, qnnpack on ARM), recorded with every
  measurement.
- ONNX Runtime: `onnxruntime.quantization.quantize_dynamic` on the fp32 file of onnx_export.py, after
  `quant_pre_process` has folded the weight slices the exporter leaves in the graph into constants
  (without it the LSTM weights are not initializers and the quantizer skips them). It turns MatMul into
  MatMulInteger and LSTM into DynamicQuantizeLSTM; ONNX Runtime has no int8 GRU, so a GRU's recurrent
  layers stay float32 there and only its decoder is int8.

The int8 model is a function of the fp32 export (quantization is deterministic), so the export folder
stays the one contract on disk: `load_int8_language_model` rebuilds the same int8 model from it, and
the int8 ONNX files are written beside the fp32 ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported where it is used: `python -m reproduce speed --help` lists QUANTIZATIONS without it
INT8 = "int8"
QUANTIZATIONS = (INT8,)
# max |int8 - fp32| of the logits, relative to the largest |fp32 logit|, that an int8 model may reach:
# 8-bit weights of trained and random models alike stay well below it (a few percent at most), while a
# broken quantization (wrong scales, weights not loaded) lands near 1
INT8_RELATIVE_TOLERANCE = 0.1


def quantized_engine() -> str:
    import torch

    return torch.backends.quantized.engine


@contextlib.contextmanager
def _deprecation_notes_silenced():
    """torch.ao's "deprecated, migrate to torchao" notes (see the module's docstring: no torchao path
    quantizes nn.LSTM), its note on quantized tensor types, and ONNX Runtime's quantizer logging that the
    int64 token input cannot be quantized (it is not meant to be). Everything else still reaches the user."""
    root = logging.getLogger()
    level = root.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                category=UserWarning)
        root.setLevel(logging.ERROR)  # ONNX Runtime's quantizer logs through the root logger
        try:
            yield
        finally:
            root.setLevel(level)


def quantize_int8(model: nn.Module) -> nn.Module:
    """An int8 copy of `model` (any module holding plain nn.LSTM / nn.GRU / nn.Linear; `model` is unchanged)."""
    import torch
    from torch import nn

    with _deprecation_notes_silenced():
        quantized = torch.ao.quantization.quantize_dynamic(model.eval(), {nn.LSTM, nn.GRU, nn.Linear},
                                                           dtype=torch.qint8, inplace=False)
    return quantized.eval()


def load_int8_language_model(export_dir: str | Path) -> tuple[nn.Module, dict]:
    """The int8 model of an export folder, and its config."""
    from .export import load_exported_language_model

    model, config = load_exported_language_model(export_dir)
    return quantize_int8(model), config


def relative_difference(fp32: torch.Tensor, int8: torch.Tensor) -> float:
    """max |int8 - fp32| / max |fp32|: how far the int8 outputs are from the fp32 ones."""
    return float((int8 - fp32).abs().max() / fp32.abs().max().clamp_min(1e-12))


def check_int8(fp32_out, int8_out, what: str) -> float:
    """The relative difference, or a RuntimeError naming `what` when it is above INT8_RELATIVE_TOLERANCE."""
    import torch

    difference = relative_difference(torch.as_tensor(fp32_out), torch.as_tensor(int8_out))
    if not difference <= INT8_RELATIVE_TOLERANCE:
        raise RuntimeError(f"{what}: the int8 outputs differ from the fp32 ones by {difference:.3g} of their "
                           f"largest magnitude (> {INT8_RELATIVE_TOLERANCE}); the quantization is broken")
    return difference


def int8_onnx_path(fp32_path: str | Path) -> Path:
    path = Path(fp32_path)
    return path.with_name(f"{path.stem}_{INT8}{path.suffix}")


def quantize_onnx_int8(fp32_path: str | Path) -> Path:
    """The int8 file of an fp32 ONNX file of onnx_export.py, written beside it (atomically); returns its path."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path = Path(fp32_path)
    out = int8_onnx_path(fp32_path)
    folded = out.with_name(f".{out.name}.folded")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with _deprecation_notes_silenced():
            # symbolic shape inference is for transformer graphs; the exporter's shapes are already known
            quant_pre_process(str(fp32_path), str(folded), skip_symbolic_shape=True)
            quantize_dynamic(str(folded), str(tmp), weight_type=QuantType.QInt8)
        os.replace(tmp, out)
    finally:
        folded.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out
