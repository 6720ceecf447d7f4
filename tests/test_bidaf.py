"""BiDAF: attention flow and masking, padding invariance, span decoding, expected L0, sizes, pruning, export."""

import itertools

import pytest
import torch

from lightning_modules.errors import UserError
from lightning_modules.pruning.pruning_methods import build_pruning_method, prunable_units
from lightning_modules.pruning.structured_sparsity import unit_group_norms
from lightning_modules.squad.bidaf import LSTM_NAMES, BiDAF, bidaf_size, decode_spans, masked_softmax
from lightning_modules.squad.squad_export import compare_latency, export_bidaf, load_exported_bidaf, neurons_kept

WORDS, CHARS = 40, 25
SMALL = {"word_dim": 6, "char_dim": 4, "char_channels": 5, "char_kernel": 3, "hidden_size": 7}
PRUNING_DEFAULTS = {"reg_lambda": 0.0, "zero_threshold": None,
                    "structured": True, "target_sparsity": None, "target_neurons": None,
                    "prune_begin_step": 0, "prune_end_step": 10, "prune_every": 2}


def _batch(context_lengths, question_lengths, word_len=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, t, j = len(context_lengths), max(context_lengths), max(question_lengths)
    c_mask = torch.arange(t)[None] < torch.tensor(context_lengths)[:, None]
    q_mask = torch.arange(j)[None] < torch.tensor(question_lengths)[:, None]

    def chars(n):
        ids = torch.randint(1, CHARS, (b, n, word_len), generator=g)
        # words of different lengths: characters after a word's end are padding (0)
        lengths = torch.randint(1, word_len + 1, (b, n, 1), generator=g)
        return ids * (torch.arange(word_len) < lengths)

    return {"context_words": torch.randint(2, WORDS, (b, t), generator=g) * c_mask,
            "context_chars": chars(t) * c_mask[..., None], "context_mask": c_mask,
            "question_words": torch.randint(2, WORDS, (b, j), generator=g) * q_mask,
            "question_chars": chars(j) * q_mask[..., None], "question_mask": q_mask}


def _model(gated=True, seed=0, **kw):
    torch.manual_seed(seed)
    return BiDAF(WORDS, CHARS, **{**SMALL, **kw}, gated=gated).eval()


def _randomise_gates(model, shut_fraction, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in LSTM_NAMES:
            lstm = model.lstm(name)
            if not lstm.gated:
                continue
            for gate in (lstm.input_gates[0], lstm.hidden_gates[0]):
                # a mix of open (z = 1), partly open (0 < z < 1) and shut gates
                gate.log_alpha.copy_(torch.randn(gate.n, generator=g) * 2 + 1)
                gate.force_shut(torch.randperm(gate.n, generator=g)[: int(shut_fraction * gate.n)])
    return model


# ---- attention flow and padding ----------------------------------------------------------

def test_attention_flow_shapes_and_padding_never_attended():
    model = _model()
    batch = _batch([9, 5, 2], [4, 1, 3])
    c_mask, q_mask = batch["context_mask"], batch["question_mask"]
    h = torch.randn(3, 9, model.width("contextual"))
    u = torch.randn(3, 4, model.width("contextual"))
    g, a, b = model.attention_flow(h, u, c_mask, q_mask)
    assert g.shape == (3, 9, 4 * model.width("contextual"))
    assert a.shape == (3, 9, 4) and b.shape == (3, 9)
    assert (a * ~q_mask[:, None, :] == 0).all() and (a[~q_mask[:, None, :].expand_as(a)] == 0).all()
    assert (b[~c_mask] == 0).all()
    assert torch.allclose(a.sum(2), torch.ones(3, 9)) and torch.allclose(b.sum(1), torch.ones(3))
    # changing what sits at padded positions changes nothing at real positions
    h2, u2 = h.clone(), u.clone()
    h2[~c_mask] = 1e3
    u2[~q_mask] = -1e3
    g2, a2, b2 = model.attention_flow(h2, u2, c_mask, q_mask)
    assert torch.allclose(g2[c_mask], g[c_mask], atol=1e-5)
    assert torch.allclose(a2[c_mask], a[c_mask]) and torch.allclose(b2, b)


def test_masked_softmax_of_a_fully_masked_row_is_zero_not_nan():
    out = masked_softmax(torch.randn(2, 3), torch.tensor([[True, False, True], [False, False, False]]), dim=1)
    assert torch.isfinite(out).all() and (out[1] == 0).all() and out[0, 1] == 0


@pytest.mark.parametrize("gated", [True, False])
def test_padding_never_reaches_real_positions(gated):
    """An example alone gives the same logits as inside a batch padded for a longer one, in both
    LSTM directions and the char CNN; garbage in the padding changes nothing either."""
    model = _randomise_gates(_model(gated), 0.3, seed=1) if gated else _model(gated)
    batch = _batch([11, 6], [5, 3], word_len=6)
    batch["context_chars"][1, :, 4:] = 0  # example 1's words are at most 4 characters long
    batch["question_chars"][1, :, 4:] = 0
    start, end = model(batch)
    alone = {k: v[1:2, : (6 if "context" in k else 3)] for k, v in batch.items()}
    alone["context_chars"] = alone["context_chars"][..., :4]  # a narrower char padding too
    alone["question_chars"] = alone["question_chars"][..., :4]
    s1, e1 = model(alone)
    assert torch.allclose(s1[0], start[1, :6], atol=1e-5) and torch.allclose(e1[0], end[1, :6], atol=1e-5)
    garbage = {k: v.clone() for k, v in batch.items()}
    garbage["context_words"][~batch["context_mask"]] = 7
    garbage["question_words"][~batch["question_mask"]] = 9
    s2, e2 = model(garbage)
    c = batch["context_mask"]
    assert torch.allclose(s2[c], start[c], atol=1e-5) and torch.allclose(e2[c], end[c], atol=1e-5)
    assert (start[~c] < -1e30).all()  # padding can never be picked


# ---- span decoding ------------------------------------------------------------------------

def test_decoded_spans_are_the_best_allowed_ones():
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        b, t = 4, 12
        start, end = torch.randn(b, t, generator=g) * 3, torch.randn(b, t, generator=g) * 3
        lengths = torch.randint(1, t + 1, (b,), generator=g)
        mask = torch.arange(t)[None] < lengths[:, None]
        max_len = int(torch.randint(1, 6, (1,), generator=g))
        first, last = decode_spans(start, end, mask, max_len)
        for k in range(b):
            i, j = int(first[k]), int(last[k])
            assert i <= j < i + max_len and j < lengths[k]
            lp1, lp2 = start[k, : lengths[k]].log_softmax(0), end[k, : lengths[k]].log_softmax(0)
            best = max(lp1[a] + lp2[e] for a, e in itertools.product(range(int(lengths[k])), repeat=2)
                       if a <= e < a + max_len)
            assert torch.isclose(lp1[i] + lp2[j], best)


def test_decoding_never_returns_end_before_start_even_when_the_end_peaks_first():
    start = torch.tensor([[-5.0, -5.0, 9.0, -5.0]])
    end = torch.tensor([[9.0, -5.0, -5.0, -5.0]])
    first, last = decode_spans(start, end, torch.ones(1, 4, dtype=torch.bool), max_answer_tokens=15)
    assert int(first) <= int(last)
    with pytest.raises(ValueError):
        decode_spans(start, end, torch.ones(1, 4, dtype=torch.bool), 0)


# ---- expected L0 and sizes ----------------------------------------------------------------

def test_expected_l0_matches_monte_carlo_count_of_surviving_weights():
    """E[number of non-zero weight_ih/weight_hh entries of all eight LSTMs], an input counted only
    when its own gate and the neuron producing it are both open."""
    model = _randomise_gates(_model(), 0.0, seed=3)
    model.train()
    with torch.no_grad():
        for name in LSTM_NAMES:  # spread the probabilities out
            for gate in (model.lstm(name).input_gates[0], model.lstm(name).hidden_gates[0]):
                gate.log_alpha.mul_(0.6)
    draws, total = 1000, 0.0
    with torch.no_grad():
        for _ in range(draws):
            z = {n: (model.lstm(n).input_gates[0]() > 0, model.lstm(n).hidden_gates[0]() > 0) for n in LSTM_NAMES}
            for name in LSTM_NAMES:
                z_in, z_h = z[name]
                source = model.producer(name)
                if source is not None:
                    z_in = z_in & torch.cat([z[f"{source[0]}.{d}"][1] for d in ("fwd", "bwd")]).repeat(source[1])
                rows = int(z_h.sum())
                total += 4 * rows * (int(z_in.sum()) + rows)
        expected = float(model.expected_l0("weights"))
    assert total / draws == pytest.approx(expected, rel=0.02)


def test_size_formula_counts_the_parameters_of_uneven_sizes():
    hidden = dict(zip(LSTM_NAMES, [3, 5, 2, 7, 4, 4, 6, 1]))
    model = BiDAF(WORDS, CHARS, **SMALL, gated=False, hidden_sizes=hidden)
    size = bidaf_size(WORDS, CHARS, model.dims, hidden)
    assert size["params"] == sum(p.numel() for p in model.parameters())
    assert size["lstm_params"] == sum(p.numel() for n in LSTM_NAMES for p in model.lstm(n).parameters())
    smaller = bidaf_size(WORDS, CHARS, model.dims, {**hidden, "output.fwd": 3})
    assert smaller["flops_per_question"] < size["flops_per_question"]


# ---- pruning methods on BiDAF, and export --------------------------------------------------

def _check_export(model, tmp_path, expect_hidden=None):
    config = export_bidaf(model, [f"w{i}" for i in range(WORDS)], [f"c{i}" for i in range(CHARS)], tmp_path / "e")
    plain, loaded = load_exported_bidaf(tmp_path / "e")
    assert loaded == config
    kept = neurons_kept(model)
    assert [config["hidden_sizes"][n] for n in LSTM_NAMES] == kept["hidden"]
    if expect_hidden is not None:
        assert kept["hidden"] == expect_hidden
    assert config["params"] == sum(p.numel() for p in plain.parameters())
    batch = _batch([10, 7, 3], [5, 2, 4], seed=5)
    with torch.no_grad():
        s1, e1 = model.eval()(batch)
        s2, e2 = plain(batch)
    c = batch["context_mask"]
    assert (s1[c] - s2[c]).abs().max() <= 1e-4 and (e1[c] - e2[c]).abs().max() <= 1e-4
    return config


@pytest.mark.parametrize("shut,seed", [(0.3, 0), (0.6, 1), (0.0, 2)])
def test_export_of_a_gated_bidaf_is_smaller_and_equivalent(tmp_path, shut, seed):
    model = _randomise_gates(_model(seed=seed), shut, seed)
    config = _check_export(model, tmp_path)
    if shut:
        assert all(config["hidden_sizes"][n] < 7 for n in LSTM_NAMES)
        assert config["params"] < bidaf_size(WORDS, CHARS, model.dims, model.hidden)["params"]


def test_zeroed_iss_groups_are_removed_and_the_output_is_unchanged(tmp_path):
    """Zero one neuron's ISS group in every LSTM of a dense BiDAF: the export drops exactly those, and
    only because the consumer columns are right does the smaller model compute the same thing."""
    model = _model(gated=False)
    with torch.no_grad():
        for unit, j in zip(model.all_units(), [0, 6, 3, 2, 5, 1, 4, 6]):
            h = unit.lstm.hidden_size
            rows = [g * h + j for g in range(4)]
            for p in unit.lstm.parameters():
                p[rows] = 0.0
            unit.lstm.weight_hh_l0[:, j] = 0.0
            for weight, cols in unit.consumers:
                weight[:, cols[j]] = 0.0
    assert all(int((n == 0).sum()) == 1 for n in unit_group_norms(model.all_units()))
    _check_export(model, tmp_path, expect_hidden=[6] * 8)


def test_fully_pruned_lstm_is_a_clear_export_error(tmp_path):
    model = _randomise_gates(_model(), 0.0, seed=0)
    model.lstm("output.bwd").hidden_gates[0].force_shut(list(range(7)))
    with pytest.raises(UserError, match="every hidden neuron of the output.bwd LSTM was pruned"):
        export_bidaf(model, [f"w{i}" for i in range(WORDS)], [f"c{i}" for i in range(CHARS)], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _pruning(name, model, **kw):
    return build_pruning_method(name, model, **{**PRUNING_DEFAULTS, **kw})


def test_iss_units_follow_prune_contextual():
    assert [u.name for u in prunable_units(_model(gated=False))] == list(LSTM_NAMES)
    iss_rnns = BiDAF(WORDS, CHARS, **SMALL, gated=False, prune_contextual=False)
    assert [u.name for u in prunable_units(iss_rnns)] == list(LSTM_NAMES[2:])
    gated = BiDAF(WORDS, CHARS, **SMALL, gated=True, prune_contextual=False)
    assert not gated.contextual.fwd.gated and gated.modelling[0].fwd.gated


def test_group_lasso_thresholding_and_structured_magnitude_on_bidaf(tmp_path):
    model = _model(gated=False)
    lasso = _pruning("group_lasso", model, reg_lambda=1e-3, zero_threshold=0.05)
    expected = 1e-3 * sum(n.sum() for n in unit_group_norms(model.all_units()))
    assert torch.allclose(lasso.penalty(model), expected)
    lasso.after_optimizer_step(model, step=1, num_steps=1)
    for t in lasso.thresholded_tensors(model):
        assert ((t == 0) | (t.abs() >= 0.05)).all()

    model = _model(gated=False, seed=1, prune_contextual=False)
    targets = [5, 4, 6, 3, 2, 5]
    magnitude = _pruning("magnitude", model, target_neurons=targets)
    for step in range(1, 13):
        with torch.no_grad():  # a stand-in for an optimizer step that revives pruned weights
            for p in model.parameters():
                p.add_(0.01)
        magnitude.after_optimizer_step(model, step, 1)
    _check_export(model, tmp_path, expect_hidden=[7, 7, *targets])


def test_latency_check_times_both_models_on_every_question():
    """The SQuAD run's batch-1 latency (result.json latency_batch1), on the shared harness."""
    calls = {"pruned": [], "dense": []}

    def recording(model, key):
        model.register_forward_pre_hook(lambda _, args: calls[key].append(args[0]["context_words"].shape[1]))
        return model

    pruned = recording(_model(gated=False, hidden_sizes=dict.fromkeys(LSTM_NAMES, 3)), "pruned")
    dense = recording(_model(gated=False), "dense")
    batches = [_batch([n], [3], seed=n) for n in (4, 6, 9)]
    result = compare_latency(pruned, dense, batches, repeats=2)
    assert calls["pruned"] == calls["dense"] == [9, 4, 6, 9, 4, 6, 9]  # a warm-up, then each question in pairs
    assert (result["questions"], result["repeats"]) == (3, 2)
    assert result["pruned_median_ms"] > 0 and result["dense_median_ms"] > 0 and result["speedup_median"] > 0
    assert result["threads"] == torch.get_num_threads() and isinstance(result["flush_denormal"], bool)
