"""Token ids against the model's vocabulary, checked before the first training step.

A token id at or above ``model.vocab_size`` indexes past the embedding table: an ``IndexError`` (CPU) or a device
assert (GPU) deep in the first forward. ``check_token_range`` refuses it in one line before training starts: the
tokenizer named by ``data.tokenizer`` must not produce ids beyond the vocabulary, and no source's largest token id
may reach it.

The largest id of a source: ``octo preprocess`` writes it to ``PREFIX.tokens.json`` beside the dataset; for other
datasets the ``.bin`` is scanned once (memory-mapped, in blocks) unless its dtype cannot hold an id that large, and
the result is stored in the same file (keyed by the ``.bin``'s size and modification time) where that is writable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import numpy

from megatron_octo.data.errors import DataError

SUFFIX = ".tokens.json"
_BLOCK = 1 << 26  # tokens per block of the scan (256 MB of int32)


def _stamp(bin_path: Path) -> dict:
    st = bin_path.stat()
    return {"bin_bytes": st.st_size, "bin_mtime_ns": st.st_mtime_ns}


def write_max_token_id(prefix: str, max_id: int) -> None:
    """Record a dataset's largest token id beside it (best effort: a read-only directory is skipped)."""
    from megatron_octo.utils.io import atomic_write_text

    bin_path = Path(f"{prefix}.bin")
    try:
        atomic_write_text(Path(f"{prefix}{SUFFIX}"), json.dumps({"max_token_id": int(max_id), **_stamp(bin_path)}))
    except OSError:
        pass


def _cached(prefix: str) -> Optional[int]:
    path = Path(f"{prefix}{SUFFIX}")
    try:
        record = json.loads(path.read_text())
        if {k: record[k] for k in ("bin_bytes", "bin_mtime_ns")} == _stamp(Path(f"{prefix}.bin")):
            return int(record["max_token_id"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def index_dtype(prefix: str) -> numpy.dtype:
    """The token dtype of an indexed dataset, from its ``.idx`` header (Megatron-Core's layout: the 9-byte magic,
    an 8-byte version, then the dtype code)."""
    from megatron.core.datasets.indexed_dataset import _INDEX_HEADER, DType

    with open(f"{prefix}.idx", "rb") as f:
        header = f.read(len(_INDEX_HEADER) + 9)
    if header[: len(_INDEX_HEADER)] != _INDEX_HEADER or len(header) < len(_INDEX_HEADER) + 9:
        raise DataError(f"{prefix}.idx is not a Megatron indexed dataset index: remake it with `octo preprocess`")
    return numpy.dtype(DType.dtype_from_code(header[-1]))


def max_token_id(prefix: str, vocab_size: Optional[int] = None) -> Optional[int]:
    """The largest token id of the indexed dataset ``prefix``; None when its dtype cannot hold ``vocab_size``
    or more (nothing to check) or it holds no tokens."""
    dtype = index_dtype(prefix)
    if vocab_size is not None and numpy.iinfo(dtype).max < vocab_size:
        return None
    cached = _cached(prefix)
    if cached is not None:
        return cached
    tokens = numpy.memmap(f"{prefix}.bin", dtype=dtype, mode="r")
    if tokens.size == 0:
        return None
    largest = max(int(tokens[i : i + _BLOCK].max()) for i in range(0, tokens.size, _BLOCK))
    write_max_token_id(prefix, largest)
    return largest


def check_token_range(vocab_size: int, sources: Iterable, tokenizer: Optional[str] = None) -> None:
    """DataError (one line) when the tokenizer or a source (objects with ``name`` and ``path`` prefixes) has ids
    at or above ``vocab_size``."""
    if tokenizer:
        from megatron_octo.data.tokenizer import load_tokenizer
        from megatron_octo.data.tokenizer import vocab_size as tokenizer_size

        size = tokenizer_size(load_tokenizer(tokenizer))
        if size > vocab_size:
            raise DataError(
                f"data.tokenizer {tokenizer} has {size:,} tokens but model.vocab_size is {vocab_size:,}: "
                "use the model's own tokenizer, or a model whose vocabulary holds it"
            )
    for src in sources:
        largest = max_token_id(src.path, vocab_size)
        if largest is not None and largest >= vocab_size:
            raise DataError(
                f"data source '{src.name}' ({src.path}) holds token id {largest:,}, beyond "
                f"model.vocab_size={vocab_size:,}: it was tokenized with another tokenizer; "
                "preprocess it with the model's tokenizer"
            )
