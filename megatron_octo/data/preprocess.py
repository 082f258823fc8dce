"""``octo preprocess``: corpora -> Megatron-Core indexed datasets (``PREFIX.bin`` / ``PREFIX.idx``).

Pipeline: the main process reads the inputs in bounded chunks (``readers``), worker processes parse, format
(``formatters``) and tokenize (``tokenizer``) them, and the main process writes the results in input order with
Megatron-Core's ``IndexedDatasetBuilder``: one document = one sequence, ending with the end-of-document token. At
most ``4 x workers`` chunks are in flight, so memory does not grow with the input (only the index does: Megatron-Core's
builder keeps each document's length until it writes the ``.idx``); with ``workers=1`` everything runs in this
process. The output is byte-identical whatever the number of workers.

Outputs are written under hidden temporary names and renamed into place only when complete (the ``.idx`` last,
an old ``.idx`` removed first when overwriting), so an interrupted run leaves nothing that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Generator, Iterable, Iterator, List, Optional, Sequence, TextIO, Tuple

import numpy

from megatron_octo.data.errors import DataError
from megatron_octo.data.formatters import Formatter, RecordError, make_formatter
from megatron_octo.data.readers import Chunk, input_kind, read_chunks, total_bytes
from megatron_octo.data.token_range import write_max_token_id
from megatron_octo.data.tokenizer import DocumentEncoder, load_tokenizer, make_encoder, single_threaded_tokenizers
from megatron_octo.utils.io import (
    DiskFullError,
    OutputExistsError,
    check_writable_dir,
    disk_full_reason,
    free_space,
    remove_stale_temps,
)

INFLIGHT_PER_WORKER = 4
"""Chunks queued per worker: enough to keep workers busy, few enough to bound memory."""


@dataclass
class ChunkResult:
    """One chunk encoded: documents' tokens back to back, plus what was skipped."""

    tokens: numpy.ndarray
    """All documents' tokens, concatenated."""
    lengths: List[int]
    """Tokens of each document."""
    empty: int = 0
    """Records whose text was empty (skipped)."""
    bad: List[Tuple[int, str]] = field(default_factory=list)
    """``(line, reason)`` of each record that could not be read or formatted."""
    done_bytes: int = 0


@dataclass
class PreprocessStats:
    """What a run wrote and skipped."""

    output_prefix: str
    documents: int = 0
    tokens: int = 0
    empty: int = 0
    bad_lines: int = 0
    first_bad: Optional[str] = None
    """``file:line: reason`` of the first skipped bad line."""
    seconds: float = 0.0
    dtype: str = ""
    max_token_id: int = -1
    """Largest token id written (recorded in PREFIX.tokens.json for the check before training)."""


_STATE: Dict[str, Any] = {}


def _init_worker(formatter: Formatter, encoder: DocumentEncoder) -> None:
    single_threaded_tokenizers()
    _STATE["formatter"], _STATE["encoder"] = formatter, encoder


def _parse(raw: bytes) -> dict:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RecordError(f"malformed JSON: {exc.msg} at column {exc.colno}") from None
    except UnicodeDecodeError:
        raise RecordError("line is not valid UTF-8 text") from None


def encode_chunk(
    chunk: Chunk, formatter: Optional[Formatter] = None, encoder: Optional[DocumentEncoder] = None
) -> ChunkResult:
    """Parse, format and tokenize one chunk (in a worker, with the state ``_init_worker`` set)."""
    formatter = formatter or _STATE["formatter"]
    encoder = encoder or _STATE["encoder"]
    texts, empty, bad = [], 0, []
    for number, raw in zip(chunk.line_numbers, chunk.records):
        try:
            text = formatter(_parse(raw) if isinstance(raw, bytes) else raw)  # jsonl lines are bytes
        except RecordError as exc:
            bad.append((number, str(exc)))
            continue
        if text is None:
            empty += 1
        else:
            texts.append(text)
    docs = encoder.encode(texts) if texts else []
    flat = numpy.concatenate(docs) if docs else numpy.zeros(0, dtype=encoder.dtype)
    return ChunkResult(flat, [len(d) for d in docs], empty, bad, chunk.done_bytes)


def _serial(
    chunks: Iterable[Chunk], formatter: Formatter, encoder: DocumentEncoder
) -> Generator[ChunkResult, None, None]:
    for chunk in chunks:
        yield encode_chunk(chunk, formatter, encoder)


def _parallel(
    chunks: Iterable[Chunk], formatter: Formatter, encoder: DocumentEncoder, workers: int
) -> Generator[ChunkResult, None, None]:
    """Results in input order with at most ``INFLIGHT_PER_WORKER * workers`` chunks submitted and not yet taken.

    ``ProcessPoolExecutor`` rather than ``Pool.imap``: imap's feeder thread reads the whole input ahead (memory
    grows with the input), and a killed worker raises ``BrokenProcessPool`` instead of hanging.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(formatter, encoder))
    pending: deque = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(encode_chunk, chunk))
            if len(pending) >= INFLIGHT_PER_WORKER * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Progress:
    """Preprocessing progress over the shared implementation (``utils.progress``): bytes of input read, with
    documents, tokens and their rates as the line's fields; a bar on a terminal, plain lines every ``interval``
    seconds elsewhere."""

    def __init__(self, total: int, stream: Optional[TextIO], interval: float = 5.0) -> None:
        from megatron_octo.utils.progress import Progress as _Progress

        self.total = total
        self._p = _Progress(total, "preprocess", unit="B", stream=stream, interval=interval, quiet=stream is None)
        self.start = time.perf_counter()

    def update(self, stats: PreprocessStats, done_bytes: int, final: bool = False) -> None:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        fields = (
            f"{stats.documents:,} docs {stats.tokens:,} tokens | {stats.documents / elapsed:,.0f} docs/s "
            f"{stats.tokens / elapsed:,.0f} tokens/s"
        )
        if final:
            self._p.finish(fields)
        else:
            self._p.update(min(done_bytes, self.total) - self._p.done, fields)


def output_paths(prefix: str) -> Tuple[Path, Path]:
    """``PREFIX.bin`` and ``PREFIX.idx``, as Megatron-Core names them."""
    from megatron.core.datasets.indexed_dataset import get_bin_path, get_idx_path

    return Path(get_bin_path(str(prefix))), Path(get_idx_path(str(prefix)))


def _temp_paths(prefix: str) -> Tuple[Path, Path]:
    bin_path, idx_path = output_paths(prefix)
    tag = f"tmp-{os.getpid()}"
    return (bin_path.with_name(f".{bin_path.name}.{tag}"), idx_path.with_name(f".{idx_path.name}.{tag}"))


def check_output(prefix: str, overwrite: bool) -> None:
    """Refuse a prefix that names a directory (``adir/`` would write hidden ``adir/.bin``), a parent that is a
    file or not writable, and an existing output without ``overwrite``."""
    text = str(prefix)
    if not text or text.endswith(("/", os.sep)) or Path(text).is_dir() or Path(text).name in ("", ".", ".."):
        raise DataError(
            f"--output-prefix {text!r} names a directory; give a file prefix inside it, e.g. "
            f"{os.path.join(text or '.', 'corpus')} (writes corpus.bin and corpus.idx there)"
        )
    check_writable_dir(Path(text).absolute().parent, "--output-prefix", given=text)
    existing = [str(p) for p in output_paths(prefix) if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{' and '.join(existing)} already exist: pass --overwrite or another --output-prefix")


def _bad(stats: PreprocessStats, chunk_path: str, bad: List[Tuple[int, str]], skip: bool) -> None:
    if not bad:
        return
    line, reason = bad[0]
    where = f"{chunk_path}:{line}: {reason}"
    if not skip:
        raise DataError(f"{where} (fix the line, or pass --skip-bad-lines to skip and count such lines)")
    stats.bad_lines += len(bad)
    stats.first_bad = stats.first_bad or where


def _write(
    results: Iterator[Tuple[str, ChunkResult]], builder, stats: PreprocessStats, skip_bad: bool, progress: Progress
) -> None:
    """Append each result's documents to ``builder`` in order, counting what was skipped."""
    for path, result in results:
        _bad(stats, path, result.bad, skip_bad)
        stats.empty += result.empty
        start = 0
        for length in result.lengths:
            builder.add_document(result.tokens[start : start + length], [length])
            start += length
        stats.documents += len(result.lengths)
        stats.tokens += start
        if start:
            stats.max_token_id = max(stats.max_token_id, int(result.tokens[:start].max()))
        progress.update(stats, result.done_bytes)


def _with_paths(chunks: Iterator[Chunk], sink: deque) -> Iterator[Chunk]:
    """Pass chunks through, remembering each one's path in order (results come back without it)."""
    for chunk in chunks:
        sink.append(chunk.path)
        yield chunk


def _rename_into_place(tmp_bin: Path, tmp_idx: Path, prefix: str) -> None:
    bin_path, idx_path = output_paths(prefix)
    if idx_path.exists():
        idx_path.unlink()  # an old .idx beside a new .bin would look finished
    os.replace(tmp_bin, bin_path)
    os.replace(tmp_idx, idx_path)


def _write_error(exc: OSError, prefix: str, tmp_bin: Path) -> Exception:
    """One line for an OSError while the output was written: which path, and for a full disk how much is free."""
    where = exc.filename or tmp_bin
    reason = disk_full_reason(exc)
    if reason is not None:
        return DiskFullError(
            f"disk full ({reason}) writing {where}: {Path(where).parent} has {free_space(where)} free; free space "
            f"or pick another --output-prefix (the partial output was removed; nothing was written under "
            f"{prefix}.bin/.idx)"
        )
    return DataError(
        f"cannot write {where}: {exc.strerror or exc}; pick another --output-prefix (the partial output was "
        f"removed; nothing was written under {prefix}.bin/.idx)"
    )


STDERR: Any = object()
"""``preprocess``'s default log: the current ``sys.stderr`` (resolved per call, not at import); None: quiet."""


def preprocess(
    inputs: Sequence[os.PathLike],
    output_prefix: str,
    tokenizer: os.PathLike,
    fmt: str = "text",
    *,
    fields: Optional[Dict[str, Optional[str]]] = None,
    workers: int = 1,
    skip_bad_lines: bool = False,
    overwrite: bool = False,
    max_docs: int = 256,
    log: Optional[TextIO] = STDERR,
    log_interval: float = 5.0,
) -> PreprocessStats:
    """Tokenize ``inputs`` with ``fmt`` into the indexed dataset ``output_prefix``; see the module docstring.

    ``fields`` maps ``text_field``/``question_field``/``answer_field``/``reasoning_field``/``messages_field`` to
    record field names. Raises ``DataError`` (bad input, first bad line as ``file:line: reason`` unless
    ``skip_bad_lines``) or ``OutputExistsError``; nothing is left under the output's name on failure.
    """
    log = sys.stderr if log is STDERR else log
    if workers < 1:
        raise DataError(f"--workers {workers} must be >= 1")
    paths = [Path(p) for p in inputs]
    if not paths:
        raise DataError("no --input files given")
    for path in paths:
        input_kind(path)  # exists and is readable, before anything is written
    check_output(output_prefix, overwrite)
    for path in output_paths(output_prefix):
        remove_stale_temps(path)  # left by a killed earlier run on this output
    formatter = make_formatter(fmt, **(fields or {}))
    encoder = make_encoder(load_tokenizer(tokenizer))
    stats = PreprocessStats(output_prefix=str(output_prefix), dtype=numpy.dtype(encoder.dtype).name)
    chunks = read_chunks(paths, columns=formatter.required, max_docs=max_docs)
    _run(chunks, formatter, encoder, workers, stats, skip_bad_lines, Progress(total_bytes(paths), log, log_interval))
    return stats


def _run(
    chunks: Iterator[Chunk],
    formatter: Formatter,
    encoder: DocumentEncoder,
    workers: int,
    stats: PreprocessStats,
    skip_bad: bool,
    progress: Progress,
) -> None:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    tmp_bin, tmp_idx = _temp_paths(stats.output_prefix)
    tmp_bin.parent.mkdir(parents=True, exist_ok=True)
    names: deque = deque()
    chunks = _with_paths(chunks, names)
    builder = None
    try:
        builder = IndexedDatasetBuilder(str(tmp_bin), dtype=encoder.dtype)
        results = (
            _serial(chunks, formatter, encoder) if workers == 1 else _parallel(chunks, formatter, encoder, workers)
        )
        with contextlib.closing(results):  # on an error, stop the workers now, not when the traceback dies
            _write(((names.popleft(), r) for r in results), builder, stats, skip_bad, progress)
        builder.finalize(str(tmp_idx))
        if stats.documents == 0:
            raise DataError(
                f"no documents to write ({stats.empty} empty, {stats.bad_lines} bad): check --format "
                f"and the --*-field options against the input"
            )
        _rename_into_place(tmp_bin, tmp_idx, stats.output_prefix)
        write_max_token_id(stats.output_prefix, stats.max_token_id)
    except OSError as exc:  # disk full, quota, read-only file system: one line; the finally removes the temp files
        if isinstance(exc, OutputExistsError):
            raise
        raise _write_error(exc, stats.output_prefix, tmp_bin) from None
    finally:
        if builder is not None:
            builder.data_file.close()  # finalize closes it too; closing twice is harmless
        for tmp in (tmp_bin, tmp_idx):
            if tmp.exists():
                tmp.unlink()
    stats.seconds = time.perf_counter() - progress.start
    progress.update(stats, progress.total, final=True)
