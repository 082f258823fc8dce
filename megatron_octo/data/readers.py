"""Input corpora as a stream of bounded chunks: JSONL (plain or gzip, told apart by the gzip magic bytes) and
Parquet (by its ``PAR1`` magic), read in order, file after file.

A chunk holds at most ``max_docs`` records and about ``max_bytes`` of input, so memory stays bounded whatever the
input size. JSONL chunks carry the raw lines (bytes; parsing happens in the worker processes) with their 1-based
line numbers; Parquet chunks carry row dicts numbered by 1-based row. Blank lines are not records and are dropped.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

from megatron_octo.data.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"


@dataclass
class Chunk:
    """Consecutive records of one input file."""

    path: str
    """The input file, as given (for ``file:line`` messages)."""
    kind: str
    """``jsonl`` (``records`` are raw lines, bytes) or ``parquet`` (``records`` are dicts)."""
    line_numbers: List[int] = field(default_factory=list)
    """1-based line (JSONL) or row (Parquet) number of each record."""
    records: List[Union[bytes, dict]] = field(default_factory=list)
    """The records, in input order."""
    done_bytes: int = 0
    """Input bytes (on disk, so compressed for gzip) consumed once this chunk is done, over all files."""


def input_kind(path: Path) -> str:
    """``parquet``, ``gzip`` (JSONL) or ``jsonl``, from the file's first bytes; ``DataError`` if unreadable."""
    if not path.is_file():
        raise DataError(f"input {path} does not exist: pass JSONL (plain or .gz) or Parquet files to --input")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == PARQUET_MAGIC:
        return "parquet"
    return "gzip" if head[:2] == GZIP_MAGIC else "jsonl"


def total_bytes(paths: Sequence[Path]) -> int:
    """Size on disk of all inputs: the denominator of progress and ETA."""
    return sum(os.path.getsize(p) for p in paths)


def _jsonl_chunks(path: Path, gz: bool, base: int, max_docs: int, max_bytes: int) -> Iterator[Chunk]:
    try:
        yield from _jsonl_lines(path, gz, base, max_docs, max_bytes)
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        what = "a truncated or corrupt gzip file" if gz else "unreadable"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: {what} ({reason}); fix or re-download it, or leave it out of --input") from None


def _jsonl_lines(path: Path, gz: bool, base: int, max_docs: int, max_bytes: int) -> Iterator[Chunk]:
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if gz else raw
        reader = io.BufferedReader(stream, buffer_size=1 << 20) if gz else stream
        chunk, size = Chunk(str(path), "jsonl"), 0
        for number, line in enumerate(reader, start=1):
            if not line.strip():
                continue
            chunk.line_numbers.append(number)
            chunk.records.append(line)
            size += len(line)
            if len(chunk.records) >= max_docs or size >= max_bytes:
                chunk.done_bytes = base + raw.tell()
                yield chunk
                chunk, size = Chunk(str(path), "jsonl"), 0
        if chunk.records:
            chunk.done_bytes = base + os.path.getsize(path)
            yield chunk


def _parquet_chunks(path: Path, columns: Optional[List[str]], base: int, max_docs: int) -> Iterator[Chunk]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is an install requirement
        raise DataError(f"reading Parquet ({path}) needs pyarrow: pip install pyarrow") from None
    import pyarrow

    try:
        yield from _parquet_batches(pq.ParquetFile(path), path, columns, base, max_docs)
    except (pyarrow.ArrowException, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{path}: a truncated or corrupt Parquet file ({reason}); fix or re-download it, or leave it out of --input"
        ) from None


def _parquet_batches(parquet, path: Path, columns: Optional[List[str]], base: int, max_docs: int) -> Iterator[Chunk]:
    names = parquet.schema_arrow.names
    missing = [c for c in columns or [] if c not in names]
    if missing:
        raise DataError(
            f"{path}: missing field '{missing[0]}' (fields: {', '.join(names)}): "
            f"name the right column with the --*-field options"
        )
    rows, size = parquet.metadata.num_rows, os.path.getsize(path)
    first = 1
    for batch in parquet.iter_batches(batch_size=max_docs, columns=columns):
        records = batch.to_pylist()
        numbers = list(range(first, first + len(records)))
        first += len(records)
        yield Chunk(str(path), "parquet", numbers, records, base + size * (first - 1) // max(rows, 1))


def read_chunks(
    paths: Sequence[Path], columns: Optional[List[str]] = None, max_docs: int = 256, max_bytes: int = 1 << 20
) -> Iterator[Chunk]:
    """Chunks of all inputs in order. ``columns``: the fields to read from Parquet (all when None)."""
    base = 0
    for path in map(Path, paths):
        kind = input_kind(path)
        if kind == "parquet":
            yield from _parquet_chunks(path, columns, base, max_docs)
        else:
            yield from _jsonl_chunks(path, kind == "gzip", base, max_docs, max_bytes)
        base += os.path.getsize(path)
