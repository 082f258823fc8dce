"""Helpers of the serving tests."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


def train_tokenizer(texts: Iterable[str], out: Path, vocab_size: int = 600) -> Path:
    """A byte-level BPE tokenizer trained on ``texts`` (every byte encodable, exact round trip), saved as a Hugging
    Face tokenizer directory with BOS ``<s>`` and EOS ``</s>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(out)
    return out
