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

`export_onnx_with_state` writes a third form, the one a stream of text runs on (and the test loop
measures perplexity with): model_with_state.onnx, tokens and the state in (per layer h_k, and c_k for
an LSTM, each (1, batch, hidden)), logits and the next state out. `OnnxRuntimeLanguageModel` runs it
behind the language model's own interface (tokens, state -> logits, state).
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
    (nn.LSTM's own attribute), the note that axes sharing one Dim keep one name, and the
    registry's log lines about torchvision ops it skips (torchvision is not used here). Everything
    else still reaches the user.
    """
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"_check_is_size will be removed", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning,
                                message=r"The tensor attributes .*_flat_weights.* were assigned during export")
        # the state's batch axes are the tokens' batch axis, one Dim on purpose
        warnings.filterwarnings("ignore", category=UserWarning,
                                message=r"# The axis name: batch will not be used, since it shares")
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


class LogitsWithState(nn.Module):
    """tokens (B, T) and the state, flattened (h_0[, c_0], h_1[, c_1], ...) -> logits and the next state,
    flattened the same way: `LSTMLanguageModel.forward` with its state as separate tensors for ONNX."""

    def __init__(self, model: LSTMLanguageModel) -> None:
        super().__init__()
        self.model = model
        self.parts = state_parts(model.rnn.cell)

    def forward(self, tokens: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = [tuple(flat[k:k + self.parts]) for k in range(0, len(flat), self.parts)]
        logits, new_state = self.model(tokens, state)
        return (logits, *(t for layer in new_state for t in layer))


def state_parts(cell: str) -> int:
    return 2 if cell == "lstm" else 1  # (h, c) per layer, or h alone


def state_names(cell: str, num_layers: int, prefix: str) -> list[str]:
    letters = "hc"[:state_parts(cell)]
    return [f"{prefix}{letter}_{k}" for k in range(num_layers) for letter in letters]


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
        with _checked_file(path, check_batches) as (tmp, agreement):
            _export_one(module.eval(), make_input(EXAMPLE_BATCH), tmp, input_name, output_name, batch_axis)
            session = ort_session(tmp, threads=1)
            worst = agreement(max(max_abs_difference(session, module, make_input(b)) for b in check_batches))
        result[name] = str(path)
        result["max_abs_diff"][name] = worst
    return result


def export_onnx_with_state(model: LSTMLanguageModel, out_dir: str | Path, seq_len: int,
                           check_batches: tuple[int, ...] = (1, EXAMPLE_BATCH), seed: int = 0) -> Path:
    """Write model_with_state.onnx into out_dir, checked against torch (from a random state) at each
    batch size; returns its path. RuntimeError when ONNX Runtime disagrees by more than TOLERANCE."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    rnn = model.rnn
    gen = torch.Generator().manual_seed(seed)
    inputs = ["tokens", *state_names(rnn.cell, rnn.num_layers, "in_")]
    outputs = ["logits", *state_names(rnn.cell, rnn.num_layers, "out_")]

    def example(batch):
        tokens = torch.randint(0, model.vocab_size, (batch, seq_len), generator=gen)
        state = [torch.randn(t.shape, generator=gen) for layer in rnn.init_state(batch) for t in layer]
        return tokens, *state

    module = LogitsWithState(model).eval()
    path = out_dir / "model_with_state.onnx"
    batch = torch.export.Dim("batch")
    with _checked_file(path, check_batches) as (tmp, agreement):
        with _exporter_noise_silenced():
            torch.onnx.export(module, example(EXAMPLE_BATCH), str(tmp), dynamo=True, verbose=False,
                              input_names=inputs, output_names=outputs,
                              # the state arrives as forward's *flat: one nested entry for all of it
                              dynamic_shapes=({0: batch}, tuple({1: batch} for _ in inputs[1:])),
                              external_data=False)
        session = ort_session(tmp, threads=1)
        worst = 0.0
        for b in check_batches:
            args = example(b)
            with torch.inference_mode():
                expected = module(*args)
            got = session.run(None, {name: a.numpy() for name, a in zip(inputs, args)})
            worst = max(worst, *(float(abs(g - e.numpy()).max()) for g, e in zip(got, expected)))
        agreement(worst)
    return path


@contextlib.contextmanager
def _checked_file(path: Path, check_batches: tuple[int, ...]):
    """An ONNX file written and checked under a temporary name, then renamed: no reader sees half a file or
    a wrong one. Yields (the temporary path, `agreement(worst)`: RuntimeError above TOLERANCE, else worst)."""
    tmp = path.with_name(f".{path.name}.tmp")

    def agreement(worst: float) -> float:
        if not worst <= TOLERANCE:
            raise RuntimeError(f"{path}: ONNX Runtime differs from torch by {worst:.3g} (> {TOLERANCE}) at "
                               f"batch sizes {list(check_batches)}; the ONNX export of this model is wrong")
        return worst

    try:
        yield tmp, agreement
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class OnnxRuntimeLanguageModel(nn.Module):
    """A model_with_state.onnx file (fp32 or int8) behind the language model's interface: tokens (B, T)
    and the state (None: zeros) -> logits and the next state, as torch tensors on the CPU. T is the
    file's fixed sequence length."""

    def __init__(self, path: str | Path, cell: str, threads: int = 1) -> None:
        super().__init__()
        self.session = ort_session(path, threads)
        self.cell = cell
        self.inputs = [i.name for i in self.session.get_inputs()]
        # each state input is (1, batch, hidden): its hidden size is fixed in the file
        self.hidden = [i.shape[2] for i in self.session.get_inputs()[1:]]

    def forward(self, tokens: torch.Tensor, state=None):
        if state is None:
            flat = [torch.zeros(1, tokens.shape[0], h) for h in self.hidden]
        else:
            flat = [t for layer in state for t in layer]
        feed = {name: t.detach().cpu().numpy() for name, t in zip(self.inputs, [tokens, *flat])}
        logits, *out = (torch.from_numpy(a) for a in self.session.run(None, feed))
        parts = state_parts(self.cell)
        return logits, [tuple(out[k:k + parts]) for k in range(0, len(out), parts)]
