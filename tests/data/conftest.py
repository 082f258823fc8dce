"""Shared fixtures of the data-pipeline tests: a tiny BPE tokenizer trained once per session, JSONL helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
"""The shared/ directory beside the repository checkout (real data; never copied into the repo)."""


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A small byte-level BPE (BOS added in front, EOS and PAD defined) trained on a small demo corpus."""
    from megatron_octo.data.demo_corpus import corpus_texts, generate, train_tokenizer

    records = generate(seed=7, sizes={"web": 20, "qa": 60, "long_cot": 20, "chat": 20, "eval": 5})
    return train_tokenizer(corpus_texts(records), tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=400)


@pytest.fixture(scope="session")
def hf_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def write_jsonl(path: Path, records) -> Path:
    """Records as JSON lines; a record that is a ``str`` is written as that raw line."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


SPAN = 1000
"""``write_source(prefix, k)`` holds tokens k*SPAN .. k*SPAN + 999, so every token tells its source."""


def write_source(prefix: Path, source: int, docs: int = 30, seed: int = 0) -> str:
    """Documents of 5..120 tokens from ``source``'s token range, written with Megatron-Core's builder."""
    import numpy
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = numpy.random.default_rng(seed + source)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=numpy.uint16)
    for _ in range(docs):
        doc = source * SPAN + rng.integers(0, SPAN, size=int(rng.integers(5, 120)))
        builder.add_document(doc, [len(doc)])
    builder.finalize(f"{prefix}.idx")
    return str(prefix)
