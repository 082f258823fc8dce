"""Synthetic token sequences for smoke tests and the CPU demo: no files, no tokenizer, learnable.

Sample ``i`` is an arithmetic progression modulo the vocabulary, ``(a + d * j) % V`` with ``a`` and ``d`` drawn from
a generator seeded by ``(seed, i)``: the same sample whatever process or layout asks for it, and a model can learn it
(after two tokens the rest is determined), so the loss visibly falls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_STRIDE = 7
"""Strides are drawn from 1..MAX_STRIDE."""
HELD_OUT = 1 << 31
"""Added to the generator seeds of the held-out (validation) stream. torch's CPU generator keeps the low 32 bits
of a seed, so the streams are disjoint as long as training reads fewer than 2**31 samples."""


@dataclass(frozen=True)
class SyntheticTokens:
    """An endless, indexable dataset of ``seq_len + 1`` token sequences (inputs plus the shifted labels)."""

    vocab_size: int
    seq_len: int
    seed: int
    held_out: bool = False
    """The validation stream: other generator seeds than any training sample's (``HELD_OUT``), the same
    distribution. With a small vocabulary the same progressions recur, so this is a held-out stream of
    samples, not a set of unseen sequences."""

    def __getitem__(self, index: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index + (HELD_OUT if self.held_out else 0))
        start = int(torch.randint(0, self.vocab_size, (1,), generator=generator))
        stride = int(torch.randint(1, MAX_STRIDE + 1, (1,), generator=generator))
        positions = torch.arange(self.seq_len + 1, dtype=torch.int64)
        return (start + stride * positions) % self.vocab_size  # [seq_len + 1]
