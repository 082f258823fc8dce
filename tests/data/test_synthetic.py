"""Synthetic tokens: deterministic, learnable arithmetic progressions modulo the vocabulary."""

from __future__ import annotations

import torch

from megatron_octo.data.synthetic import SyntheticTokens


def _stride(sample: torch.Tensor, vocab: int) -> set:
    return set(((sample[1:] - sample[:-1]) % vocab).tolist())


def test_length_dtype_and_range():
    data = SyntheticTokens(vocab_size=256, seq_len=64, seed=1)
    for i in range(10):
        x = data[i]
        assert x.shape == (65,)  # seq_len inputs + 1 shifted label
        assert x.dtype == torch.int64
        assert 0 <= int(x.min()) and int(x.max()) < 256


def test_a_sample_is_an_arithmetic_progression_mod_vocab():
    vocab = 256
    data = SyntheticTokens(vocab_size=vocab, seq_len=300, seed=5)  # longer than the vocab: it must wrap around
    for i in range(20):
        x = data[i]
        strides = _stride(x, vocab)
        assert len(strides) == 1, (i, strides)
        (d,) = strides
        assert 1 <= d <= 7
        # Rebuild the sequence by hand from its first token and its stride.
        a = int(x[0])
        assert x.tolist() == [(a + d * j) % vocab for j in range(301)]


def test_deterministic_across_instances_and_global_rng_state():
    a = SyntheticTokens(vocab_size=1000, seq_len=16, seed=3)
    torch.manual_seed(0)
    first = [a[i] for i in (0, 1, 7, 12345)]
    torch.manual_seed(99)
    torch.rand(10)
    b = SyntheticTokens(vocab_size=1000, seq_len=16, seed=3)
    for i, x in zip((0, 1, 7, 12345), first):
        assert torch.equal(b[i], x)
        assert torch.equal(a[i], x)  # reading again gives the same sample


def test_different_indices_differ():
    # A large vocabulary makes (start, stride) collisions between 30 samples vanishingly unlikely.
    data = SyntheticTokens(vocab_size=50_000, seq_len=8, seed=0)
    samples = {tuple(data[i].tolist()) for i in range(30)}
    assert len(samples) == 30


def test_different_seeds_differ():
    a = SyntheticTokens(vocab_size=50_000, seq_len=8, seed=0)
    b = SyntheticTokens(vocab_size=50_000, seq_len=8, seed=1)
    assert any(not torch.equal(a[i], b[i]) for i in range(5))
    assert sum(torch.equal(a[i], b[i]) for i in range(20)) <= 1


def test_strides_cover_more_than_one_value():
    # Learnable but not trivial: the stride varies between samples.
    data = SyntheticTokens(vocab_size=256, seq_len=4, seed=2)
    assert len({next(iter(_stride(data[i], 256))) for i in range(50)}) >= 3
