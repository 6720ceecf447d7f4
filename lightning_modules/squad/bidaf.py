"""BiDAF (Seo, Kembhavi, Farhadi, Hajishirzi 2017, arXiv 1611.01603) whose every LSTM is a `GatedLSTM`.

Layers, as in the paper (hidden size d = 100 there):
  1. characters: embedding (8) -> Conv1d (100 filters, width 5) -> ReLU -> max over the word
  2. words: embedding (GloVe 100d, fixed); [word; char] -> two-layer highway network
  3. contextual BiLSTM over context and question (one set of weights) -> H (T x 2d), U (J x 2d)
  4. attention flow: S_tj = w_S . [h_t; u_j; h_t * u_j];
     context-to-query a_t = softmax_j S_tj, U~_t = sum_j a_tj u_j;
     query-to-context b = softmax_t max_j S_tj, h~ = sum_t b_t h_t, tiled over t;
     G_t = [h_t; U~_t; h_t * U~_t; h_t * h~]
  5. modelling: two BiLSTM layers over G -> M
  6. output: start logits w_p1 . [G; M]; M2 = BiLSTM(M); end logits w_p2 . [G; M2]
Dropout (0.2 in the paper) on the char CNN's input, the input of every LSTM and of both pointers.
Padding never matters: attention and pointers are masked; the backward LSTM reads each sequence
reversed within its own length (padding stays at the end, where neither direction reads it);
char-CNN windows start inside their word, so a word's vector does not depend on how long the
longest word of its batch is.

Each BiLSTM is two single-layer GatedLSTMs (the suite's one gating implementation,
pruning/gated_rnn.py), one per direction, each with its own input and hidden gates: not one
bidirectional GatedRNN, because the backward direction reads each sequence reversed within its
own length, and because the two directions' input gates are separate here. The eight, in the
order reports list them, are LSTM_NAMES. `all_units()` gives each with the weight columns that
read its hidden neurons (its ISS consumers), which the pruning methods and the export use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..pruning.gated_rnn import GateConfig, GatedLSTM
from ..pruning.structured_sparsity import ISSUnit

BILSTMS = ("contextual", "modelling.0", "modelling.1", "output")
LSTM_NAMES = tuple(f"{b}.{d}" for b in BILSTMS for d in ("fwd", "bwd"))
# means over the SQuAD v1.1 dev questions with this suite's tokenizer (147.6 context tokens,
# 11.7 question tokens, 4.4 characters per word): the lengths FLOPs per question are quoted at
REFERENCE_LENGTHS = {"context_tokens": 148, "question_tokens": 12, "word_chars": 4}


def _neg(x: torch.Tensor) -> float:
    # a finite "minus infinity": a fully masked row gives a uniform softmax, not NaN
    return torch.finfo(x.dtype).min


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over `dim` where positions with mask False get exactly zero weight."""
    return logits.masked_fill(~mask, _neg(logits)).softmax(dim) * mask


def reverse_within_length(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(T, B) time index that reverses each sequence's first lengths[b] steps and leaves padding."""
    t = torch.arange(total, device=lengths.device)[:, None]
    return torch.where(t < lengths[None], lengths[None] - 1 - t, t)


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(0, index[..., None].expand(-1, -1, x.shape[-1]))


class GatedBiLSTM(nn.Module):
    """Batch-major BiLSTM from two single-layer GatedLSTMs: (B, T, I) -> (B, T, h_fwd + h_bwd).

    Ungated (dense training, or an export) it multiplies each direction's output by a fixed
    scale: 1 for dense training, the surviving test-time gate values in an export.
    """

    def __init__(self, input_size: int, hidden_fwd: int, hidden_bwd: int, gated: bool,
                 gate_config: GateConfig) -> None:
        super().__init__()
        self.fwd = GatedLSTM(input_size, [hidden_fwd], gated=gated, gate_config=gate_config)
        self.bwd = GatedLSTM(input_size, [hidden_bwd], gated=gated, gate_config=gate_config)
        if not gated:
            self.register_buffer("fwd_scale", torch.ones(hidden_fwd))
            self.register_buffer("bwd_scale", torch.ones(hidden_bwd))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(0, 1)  # the fused kernel is time-major
        reverse = reverse_within_length(lengths, xt.shape[0])
        out_f, _ = self.fwd(xt)
        out_b, _ = self.bwd(_gather_time(xt, reverse))
        out_b = _gather_time(out_b, reverse)
        if not self.fwd.gated:
            out_f, out_b = out_f * self.fwd_scale, out_b * self.bwd_scale
        return torch.cat([out_f, out_b], -1).transpose(0, 1)


class Highway(nn.Module):
    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.transform = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.gate = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for transform, gate in zip(self.transform, self.gate):
            g = torch.sigmoid(gate(x))
            x = g * F.relu(transform(x)) + (1 - g) * x
        return x


def _block_columns(offset: int, n: int, width: int, blocks: int) -> torch.Tensor:
    """(n, blocks): neuron j sits at column b * width + offset + j of each of `blocks` blocks."""
    j = torch.arange(n)
    return torch.stack([b * width + offset + j for b in range(blocks)], 1)


class BiDAF(nn.Module):
    def __init__(
        self,
        word_vocab_size: int,
        char_vocab_size: int,
        word_dim: int = 100,
        char_dim: int = 8,
        char_channels: int = 100,
        char_kernel: int = 5,
        hidden_size: int = 100,
        highway_layers: int = 2,
        dropout: float = 0.2,
        gated: bool = True,
        prune_contextual: bool = True,
        gate_config: GateConfig = GateConfig(),
        hidden_sizes: dict[str, int] | None = None,
    ) -> None:
        """
        Args:
            gated: hard concrete gates on the LSTMs (L0), or dense.
            prune_contextual: whether the contextual BiLSTM is pruned too: gated (L0) and among
                the `iss_units` of the Lasso-type methods. iss-rnns pruned only the modelling
                and output LSTMs of BiDAF.
            hidden_sizes: per LSTM name (LSTM_NAMES) when they differ (an exported, pruned
                model); default hidden_size for all.
        """
        super().__init__()
        self.hidden = {name: int((hidden_sizes or {}).get(name, hidden_size)) for name in LSTM_NAMES}
        h = self.hidden
        self.dims = {"word_dim": word_dim, "char_dim": char_dim, "char_channels": char_channels,
                     "char_kernel": char_kernel, "highway_layers": highway_layers}
        self.word_embedding = nn.Embedding(word_vocab_size, word_dim, padding_idx=0)
        self.char_embedding = nn.Embedding(char_vocab_size, char_dim, padding_idx=0)
        self.char_conv = nn.Conv1d(char_dim, char_channels, char_kernel)
        d = word_dim + char_channels
        self.highway = Highway(d, highway_layers)
        self.dropout = nn.Dropout(dropout)

        def bilstm(name: str, input_size: int, gate: bool = gated) -> GatedBiLSTM:
            return GatedBiLSTM(input_size, h[f"{name}.fwd"], h[f"{name}.bwd"], gate, gate_config)

        self.prune_contextual = prune_contextual
        self.contextual = bilstm("contextual", d, gated and prune_contextual)
        c = self.width("contextual")
        self.similarity = nn.Linear(3 * c, 1)
        self.modelling = nn.ModuleList([bilstm("modelling.0", 4 * c),
                                        bilstm("modelling.1", self.width("modelling.0"))])
        m = self.width("modelling.1")
        self.output = bilstm("output", m)
        self.start_pointer = nn.Linear(4 * c + m, 1)
        self.end_pointer = nn.Linear(4 * c + self.width("output"), 1)

    def width(self, bilstm: str) -> int:
        return self.hidden[f"{bilstm}.fwd"] + self.hidden[f"{bilstm}.bwd"]

    def lstm(self, name: str) -> GatedLSTM:
        return self.get_submodule(name)

    # ---- forward ------------------------------------------------------------------------

    def embed(self, words: torch.Tensor, chars: torch.Tensor) -> torch.Tensor:
        """(B, T) word ids and (B, T, W) char ids -> (B, T, word_dim + char_channels) after the highway."""
        b, t, w = chars.shape
        x = self.dropout(self.char_embedding(chars.view(b * t, w))).transpose(1, 2)  # (BT, char_dim, W)
        k = self.char_conv.kernel_size[0]
        # windows start at every character of the word (zeros after it), and only there
        conv = F.relu(self.char_conv(F.pad(x, (0, k - 1))))  # (BT, channels, W)
        starts_in_word = (chars.view(b * t, w) != 0)[:, None, :]
        char_vec = (conv * starts_in_word).amax(2).view(b, t, -1)
        return self.highway(torch.cat([self.word_embedding(words), char_vec], -1))

    def attention_flow(self, h: torch.Tensor, u: torch.Tensor, c_mask: torch.Tensor,
                       q_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """G (B, T, 4c), the context-to-query weights a (B, T, J) and query-to-context weights b (B, T)."""
        w_h, w_u, w_hu = self.similarity.weight[0].split(h.shape[-1])
        s = ((h @ w_h)[:, :, None] + (u @ w_u)[:, None, :] + (h * w_hu) @ u.transpose(1, 2)
             + self.similarity.bias)
        a = masked_softmax(s, q_mask[:, None, :], dim=2)
        u_tilde = a @ u
        b = masked_softmax(s.masked_fill(~q_mask[:, None, :], _neg(s)).amax(2), c_mask, dim=1)
        h_tilde = (b[:, :, None] * h).sum(1, keepdim=True)
        return torch.cat([h, u_tilde, h * u_tilde, h * h_tilde], -1), a, b

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits (B, T); padding positions hold a large negative number."""
        c_mask, q_mask = batch["context_mask"], batch["question_mask"]
        c_len, q_len = c_mask.sum(1), q_mask.sum(1)
        h = self.contextual(self.dropout(self.embed(batch["context_words"], batch["context_chars"])), c_len)
        u = self.contextual(self.dropout(self.embed(batch["question_words"], batch["question_chars"])), q_len)
        g, _, _ = self.attention_flow(h, u, c_mask, q_mask)
        m = self.modelling[1](self.dropout(self.modelling[0](self.dropout(g), c_len)), c_len)
        m2 = self.output(self.dropout(m), c_len)
        start = self.start_pointer(self.dropout(torch.cat([g, m], -1))).squeeze(-1)
        end = self.end_pointer(self.dropout(torch.cat([g, m2], -1))).squeeze(-1)
        return start.masked_fill(~c_mask, _neg(start)), end.masked_fill(~c_mask, _neg(end))

    # ---- pruning: who reads each neuron, and the expected L0 -------------------------------

    def all_units(self) -> list[ISSUnit]:
        """Every LSTM (in LSTM_NAMES order) with the weight columns that read its hidden neurons."""
        c, m0, m = self.width("contextual"), self.width("modelling.0"), self.width("modelling.1")
        units = []
        for name in LSTM_NAMES:
            bilstm, direction = name.rsplit(".", 1)
            n = self.hidden[name]
            offset = 0 if direction == "fwd" else self.hidden[f"{bilstm}.fwd"]
            if bilstm == "contextual":
                # h and u (both from this LSTM) in S's three blocks; h, U~ and the products in G,
                # which modelling.0 and both pointers read
                g_cols = _block_columns(offset, n, c, 4)
                consumers = [(self.similarity.weight, _block_columns(offset, n, c, 3)),
                             (self.modelling[0].fwd.layers[0].weight_ih_l0, g_cols),
                             (self.modelling[0].bwd.layers[0].weight_ih_l0, g_cols),
                             (self.start_pointer.weight, g_cols), (self.end_pointer.weight, g_cols)]
            elif bilstm == "modelling.0":
                cols = _block_columns(offset, n, m0, 1)
                consumers = [(self.modelling[1].fwd.layers[0].weight_ih_l0, cols),
                             (self.modelling[1].bwd.layers[0].weight_ih_l0, cols)]
            elif bilstm == "modelling.1":
                cols = _block_columns(offset, n, m, 1)
                consumers = [(self.start_pointer.weight, _block_columns(4 * c + offset, n, width=0, blocks=1)),
                             (self.output.fwd.layers[0].weight_ih_l0, cols),
                             (self.output.bwd.layers[0].weight_ih_l0, cols)]
            else:
                consumers = [(self.end_pointer.weight, _block_columns(4 * c + offset, n, width=0, blocks=1))]
            units.append(ISSUnit(self.lstm(name).layers[0], consumers, name=name))
        return units

    def iss_units(self) -> list[ISSUnit]:
        """The LSTMs the Lasso-type methods act on (pruning_methods.prunable_units)."""
        return [u for u in self.all_units() if self.prune_contextual or not u.name.startswith("contextual")]

    def producer(self, name: str) -> tuple[str, int] | None:
        """The BiLSTM whose output this LSTM reads, and how many times it is repeated (G: 4)."""
        bilstm = name.rsplit(".", 1)[0]
        return {"contextual": None, "modelling.0": ("contextual", 4), "modelling.1": ("modelling.0", 1),
                "output": ("modelling.1", 1)}[bilstm]

    def expected_l0(self, form: str = "weights") -> torch.Tensor:
        """Sum of every LSTM's expected L0; an input counts only if the neuron producing it survives."""
        total = 0.0
        for name in LSTM_NAMES:
            lstm = self.lstm(name)
            alive = None
            source = self.producer(name)
            if source is not None:
                parts = [self.lstm(f"{source[0]}.{d}") for d in ("fwd", "bwd")]
                if all(p.gated for p in parts):
                    alive = torch.cat([p.hidden_gates[0].prob_nonzero() for p in parts]).repeat(source[1])
            total = total + lstm.expected_l0(form, alive)
        return total

    def gate_parameters(self) -> list[nn.Parameter]:
        return [p for name in LSTM_NAMES for p in self.lstm(name).gate_parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        gates = {id(p) for p in self.gate_parameters()}
        return [p for p in self.parameters() if id(p) not in gates]


# ---- span decoding ------------------------------------------------------------------------

def decode_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, mask: torch.Tensor,
                 max_answer_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (start, end) maximising p1(start) * p2(end) with start <= end < start + max_answer_tokens,
    both on real (unmasked) tokens."""
    if max_answer_tokens < 1:
        raise ValueError(f"max_answer_tokens must be >= 1, got {max_answer_tokens}")
    log_p1 = start_logits.log_softmax(-1)
    log_p2 = end_logits.log_softmax(-1)
    t = start_logits.shape[-1]
    i = torch.arange(t, device=start_logits.device)
    offset = i[None, :] - i[:, None]  # end - start
    allowed = (offset >= 0) & (offset < max_answer_tokens)
    allowed = allowed[None] & mask[:, :, None] & mask[:, None, :]
    scores = (log_p1[:, :, None] + log_p2[:, None, :]).masked_fill(~allowed, float("-inf"))
    best = scores.flatten(1).argmax(1)
    return best // t, best % t


# ---- size ---------------------------------------------------------------------------------

def _lstm_params(i: int, h: int) -> int:
    return 4 * h * (i + h) + 8 * h


def bidaf_size(word_vocab_size: int, char_vocab_size: int, dims: dict, hidden: dict[str, int],
               lengths: dict = REFERENCE_LENGTHS) -> dict[str, int]:
    """Parameters and forward FLOPs per question (2 per multiply-add of the matrix products and
    convolutions; elementwise ops and lookups left out) of a dense BiDAF of these sizes, at
    `lengths` (context and question tokens, characters per word)."""
    wd, cd, ch, k, layers = (dims[x] for x in ("word_dim", "char_dim", "char_channels", "char_kernel",
                                               "highway_layers"))
    d = wd + ch
    c = hidden["contextual.fwd"] + hidden["contextual.bwd"]
    inputs = {"contextual": d, "modelling.0": 4 * c,
              "modelling.1": hidden["modelling.0.fwd"] + hidden["modelling.0.bwd"],
              "output": hidden["modelling.1.fwd"] + hidden["modelling.1.bwd"]}
    o = hidden["output.fwd"] + hidden["output.bwd"]
    m = inputs["output"]
    tc, tq, w = lengths["context_tokens"], lengths["question_tokens"], lengths["word_chars"]
    lstm_params = sum(_lstm_params(inputs[n.rsplit(".", 1)[0]], hidden[n]) for n in LSTM_NAMES)
    lstm_flops = sum(2 * 4 * hidden[n] * (inputs[n.rsplit(".", 1)[0]] + hidden[n])
                     * (tc + tq if n.startswith("contextual") else tc) for n in LSTM_NAMES)
    params = (word_vocab_size * wd + char_vocab_size * cd + ch * cd * k + ch + layers * 2 * (d * d + d)
              + lstm_params + (3 * c + 1) + (4 * c + m + 1) + (4 * c + o + 1))
    flops = ((tc + tq) * w * 2 * ch * cd * k  # char CNN, one window per character
             + (tc + tq) * layers * 2 * 2 * d * d  # highway: transform and gate
             + lstm_flops
             + 2 * c * (tc + tq) + 2 * tc * tq * c  # similarity
             + 2 * tc * tq * c + 2 * tc * c  # context-to-query, query-to-context
             + 2 * tc * (4 * c + m) + 2 * tc * (4 * c + o))  # pointers
    return {"params": params, "lstm_params": lstm_params, "flops_per_question": flops,
            "lstm_flops_per_question": lstm_flops}
