"""Export an `LSTMLanguageModel` (whole model, and its LSTM stack alone) to ONNX, checked against torch.

Exporter: `torch.onnx.export(dynamo=True)`, the supported path since PyTorch 2.9 (the
TorchScript one, `dynamo=False`, is deprecated). Measured with torch 2.13 + onnxscript 0.7:
the batch axis exports as dynamic, but `torch.export` specialises an `nn.LSTM`'s time axis,
and a graph declared with a dynamic time axis fails in ONNX Runtime at any other length.
So each file is exported for one sequence length (`seq_len`, in the file's input shape and
in what `export_onnx` returns) and any batch size.

Files, for tokens (batch, seq_len) and time-major LSTM input (seq_len, batch, embedding_dim):
  model.onnx  tokens (int64) -> logits (batch, seq_len, vocab), from a zero state
  lstm.onnx   x (float32)     -> output (seq_len, batch, hidden_sizes[-1])
Each is run in ONNX Runtime right after export and compared with the torch model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .language_model import LSTMLanguageModel

# The largest max |onnx - torch| difference accepted right after export (float32 kernels differ
# in summation order, nothing more).
TOLERANCE = 1e-4
EXAMPLE_BATCH = 2  # an example batch of 1 would let the exporter specialise the batch axis to 1


class LogitsFromTokens(nn.Module):
    """tokens (B, T) -> logits (B, T, V) from a zero state, the same maths as `LSTMLanguageModel.forward`.

    The LSTM output (T, B, H) is transposed before the decoder, not the logits after it:
    in torch a transpose is a free view, in ONNX Runtime a copy, and a copy of (T, B, H) is
    vocab/H times smaller than one of the logits.
    """

    def __init__(self, model: LSTMLanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.model.rnn(self.model.embedding(tokens.t()))
        return self.model.decoder(out.transpose(0, 1))


class LSTMStack(nn.Module):
    """The model's LSTM layers alone: x (T, B, E) -> output (T, B, H), from a zero state."""

    def __init__(self, model: LSTMLanguageModel) -> None:
        super().__init__()
        self.rnn = model.rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


@contextlib.contextmanager
def _exporter_noise_silenced():
    """Silence what the exporter says about its own internals, which no user can act on.

    Only these: torch.export's `_check_is_size` FutureWarning and `LeafSpec` FutureWarning
    (raised inside torch), the note that `nn.LSTM._flat_weights` is reassigned while tracing
    (nn.LSTM's own attribute), and the registry's log lines about torchvision ops it skips
    (torchvision is not used here). Everything else still reaches the user.
    """
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"_check_is_size will be removed", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning,
                                message=r"The tensor attributes .*_flat_weights.* were assigned during export")
        registry_log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            registry_log.setLevel(level)


def _export_one(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str,
                batch_axis: int) -> None:
    with _exporter_noise_silenced():
        torch.onnx.export(module, (example,), str(path), dynamo=True, verbose=False,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_shapes=({batch_axis: torch.export.Dim("batch")},),
                          # one self-contained file: a vocab-10k LSTM LM is far below protobuf's 2 GB limit
                          external_data=False)


def ort_session(path: str | Path, threads: int, device: str = "cpu"):
    """An ONNX Runtime session with `threads` intra-op threads (the same count torch uses, for a fair race)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Several sessions are timed in turn, each with its own thread pool: a pool spinning after
    # its run would take the cores the next session needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)


def max_abs_difference(session, module: nn.Module, example: torch.Tensor) -> float:
    """max |onnxruntime - torch| on one input (CPU)."""
    with torch.inference_mode():
        expected = module(example).numpy()
    got = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    if got.shape != expected.shape:
        return float("inf")
    return float(abs(got - expected).max())


def export_onnx(model: LSTMLanguageModel, out_dir: str | Path, seq_len: int,
                check_batches: tuple[int, ...] = (1, EXAMPLE_BATCH), seed: int = 0) -> dict:
    """Write `model.onnx` and `lstm.onnx` into out_dir and check them against torch at each batch size.

    Returns the paths, the fixed sequence length and the largest difference per file; raises
    RuntimeError when ONNX Runtime disagrees with torch by more than TOLERANCE.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    gen = torch.Generator().manual_seed(seed)
    emb = model.embedding.embedding_dim

    def tokens(batch):
        return torch.randint(0, model.vocab_size, (batch, seq_len), generator=gen)

    def features(batch):
        return torch.randn(seq_len, batch, emb, generator=gen)

    parts = {
        "model": (LogitsFromTokens(model), tokens, "tokens", "logits", 0),
        "lstm": (LSTMStack(model), features, "x", "output", 1),
    }
    result = {"seq_len": seq_len, "dynamic_axes": ["batch"], "exporter": "torch.onnx.export(dynamo=True)",
              "max_abs_diff": {}}
    for name, (module, make_input, input_name, output_name, batch_axis) in parts.items():
        path = out_dir / f"{name}.onnx"
        # written and checked under a temporary name, then renamed: no reader sees half a file or a wrong one
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            _export_one(module.eval(), make_input(EXAMPLE_BATCH), tmp, input_name, output_name, batch_axis)
            session = ort_session(tmp, threads=1)
            worst = max(max_abs_difference(session, module, make_input(b)) for b in check_batches)
            if not worst <= TOLERANCE:
                raise RuntimeError(f"{path}: ONNX Runtime differs from torch by {worst:.3g} (> {TOLERANCE}) at "
                                   f"batch sizes {list(check_batches)}; the ONNX export of this model is wrong")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        result[name] = str(path)
        result["max_abs_diff"][name] = worst
    return result
