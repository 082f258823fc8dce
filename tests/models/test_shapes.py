"""Shapes derived from a ModelConfig: vocabulary padding."""

from __future__ import annotations

import pytest

from megatron_octo.models import shapes


@pytest.mark.parametrize(
    "vocab, by, tp, want",
    [
        (128256, 128, 1, 128256),  # 1002 * 128
        (128256, 128, 8, 129024),  # multiple 1024: ceil(125.25) = 126 -> 129024
        (151936, 128, 1, 151936),  # 1187 * 128
        (151936, 128, 4, 152064),  # multiple 512: ceil(296.75) = 297 -> 152064
        (256, 128, 2, 256),
        (250, 128, 1, 256),
        (257, 128, 1, 384),
    ],
)
def test_padded_vocab_size(vocab, by, tp, want):
    assert shapes.padded_vocab_size(vocab, by, tp) == want


def test_padded_vocab_size_rejects_nonpositive():
    with pytest.raises(ValueError):
        shapes.padded_vocab_size(0, 128, 1)
