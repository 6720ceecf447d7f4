"""SQuAD's training batches: length buckets (contexts of similar length, batch order shuffled per seed and
epoch, resumable mid-epoch), the share of each process under DDP, and evaluation counting every question once."""

from __future__ import annotations

import random

import pytest
import torch

from lightning_modules.squad.squad_data import EvalShardSampler, SquadTrainSampler, padding_fraction

_RNG = random.Random(0)
LENGTHS = [_RNG.randint(20, 400) for _ in range(1003)]  # 1003: a short last batch


def _sampler(pool=10, seed=1, rank=0, world=1, batch=20, lengths=LENGTHS) -> SquadTrainSampler:
    sampler = SquadTrainSampler()
    sampler.configure(lengths, batch, pool, seed, rank, world)
    return sampler


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i: i + size] for i in range(0, len(order), size)]


def test_buckets_hold_similar_lengths_in_an_order_fixed_by_seed_and_epoch():
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    bucketed, plain = _sampler(), _sampler(pool=None)
    order = list(bucketed)
    assert sorted(order) == list(range(len(LENGTHS)))  # every question once
    assert list(bucketed) == order and list(_sampler()) == order  # a fresh sampler draws the same epoch
    bucketed.set_epoch(1)
    assert list(bucketed) != order
    assert list(_sampler(seed=2)) != order
    # far less padding than plain shuffled batches of the same questions
    assert padding_fraction(LENGTHS, _batches(order, 20)) < padding_fraction(LENGTHS, _batches(list(plain), 20)) / 3
    # the one short batch is last, so every other batch is whole
    assert [len(b) for b in _batches(order, 20)] == [20] * 50 + [3]
    # the batches are shuffled, not sorted by length: batch order is not monotone in length
    means = [sum(LENGTHS[i] for i in b) / len(b) for b in _batches(order, 20)[:-1]]
    assert means != sorted(means) and means != sorted(means, reverse=True)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG (gates' noise, dropout) untouched


def test_a_resumed_epoch_continues_at_the_same_batch():
    sampler = _sampler()
    sampler.set_epoch(3)
    epoch = list(sampler)
    sampler.resume_at(7 * 20)
    assert list(sampler) == epoch[140:]
    assert list(sampler) == epoch  # the pass after it is whole again


@pytest.mark.parametrize("world", [2, 4])
def test_the_processes_batches_together_are_the_one_process_batches(world):
    one = list(_sampler())
    shares = [_sampler(rank=r, world=world) for r in range(world)]
    assert len({len(s) for s in shares}) == 1  # the same number of steps in every process
    per_process = [_batches(list(s), 20 // world) for s in shares]
    for k, batch in enumerate(_batches(one, 20)[:-1]):  # the last, short one is padded (see below)
        assert sorted(i for p in per_process for i in p[k]) == sorted(batch)
    # padded from the epoch's start to a multiple of the processes: the last batch may repeat a question
    last = sorted(i for p in per_process for i in p[-1])
    assert set(_batches(one, 20)[-1]) <= set(last) and len(last) == -(-3 // world) * world
    # resuming after k global batches resumes every process after its k-th batch
    for r, s in enumerate(shares):
        s.resume_at(5 * 20)
        assert _batches(list(s), 20 // world) == per_process[r][5:]


def test_evaluation_shards_cover_every_question_exactly_once():
    shards = [list(EvalShardSampler(103, r, 4)) for r in range(4)]
    assert sorted(i for s in shards for i in s) == list(range(103))
    assert [len(EvalShardSampler(103, r, 4)) for r in range(4)] == [len(s) for s in shards]
