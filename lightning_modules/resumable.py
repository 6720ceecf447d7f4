"""The training-set sampler both data modules use, so that a run resumed in the middle of an
epoch gets exactly the batches an uninterrupted run would have got next.

PTB's windows come in order (the hidden state carries from one to the next); SQuAD's questions
come shuffled, in a new order every epoch. The shuffled order is a function of (seed, epoch)
alone, drawn from a generator of its own: it never draws from the global RNG (that one draws
the gates' noise and dropout and is checkpointed on its own), and it does not depend on what
ran before, so a resumed run draws the same order without replaying anything.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Indices 0..n-1, in order or in a permutation fixed by (seed, epoch).

    `resume_at(k)` makes the next pass alone begin at its k-th index (a run resumed after k
    items of an epoch); the pass after it is whole again. Lightning calls `set_epoch` before
    every epoch. `len` is always the whole epoch: Lightning counts the epoch's batches from it
    and continues its own count at the resumed batch.
    """

    def __init__(self, n: int = 0, shuffle: bool = False, seed: int = 0) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, items: int) -> None:
        self.start = items

    def order(self, epoch: int) -> list[int]:
        """The indices of one whole epoch."""
        if not self.shuffle:
            return list(range(self.n))
        # SeedSequence mixes (seed, epoch) so that different seeds never share an epoch's
        # order (seed + epoch would: seed 1's first epoch would be seed 0's second)
        seed = np.random.SeedSequence([self.seed, epoch]).generate_state(1, dtype=np.uint64)[0]
        generator = torch.Generator().manual_seed(int(seed))
        return torch.randperm(self.n, generator=generator).tolist()

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        # A generator: the order is drawn at the first batch. On a resumed run Lightning creates
        # the iterator before it calls set_epoch, so drawing it here eagerly could use epoch 0's.
        start, self.start = self.start, 0
        yield from self.order(self.epoch)[start:]
