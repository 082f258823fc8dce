"""Input reading: bounded chunks in input order with line numbers, gzip and Parquet told by their magic bytes."""

from __future__ import annotations

import gzip
import json

import pytest

from megatron_octo.data.errors import DataError
from megatron_octo.data.readers import input_kind, read_chunks


def test_kinds_by_magic_bytes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    with gzip.open(tmp_path / "b.data", "wt") as f:  # the name does not matter
        f.write('{"text": "x"}\n')
    pq.write_table(pa.Table.from_pylist([{"text": "x"}]), tmp_path / "c.bin")
    assert [input_kind(tmp_path / n) for n in ("a.jsonl", "b.data", "c.bin")] == ["jsonl", "gzip", "parquet"]
    with pytest.raises(DataError, match="does not exist"):
        input_kind(tmp_path / "missing.jsonl")


def test_chunks_are_bounded_ordered_and_numbered(tmp_path):
    lines = [json.dumps({"i": i}) for i in range(10)]
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:4]) + "\n\n   \n" + "\n".join(lines[4:]) + "\n")
    chunks = list(read_chunks([tmp_path / "a.jsonl"], max_docs=3))
    assert [len(c.records) for c in chunks] == [3, 3, 3, 1]
    records = [json.loads(r) for c in chunks for r in c.records]
    assert [r["i"] for r in records] == list(range(10))
    # blank lines 5 and 6 are dropped, the numbering keeps counting them
    assert [n for c in chunks for n in c.line_numbers] == [1, 2, 3, 4, 7, 8, 9, 10, 11, 12]
    assert chunks[-1].done_bytes == (tmp_path / "a.jsonl").stat().st_size


def test_chunks_are_bounded_by_bytes(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": "x" * 1000}) + "\n" for _ in range(10)))
    chunks = list(read_chunks([tmp_path / "a.jsonl"], max_docs=100, max_bytes=2500))
    assert [len(c.records) for c in chunks] == [3, 3, 3, 1]


def test_parquet_rows_as_dicts_with_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": f"q{i}", "answer": str(i), "extra": i} for i in range(7)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    chunks = list(read_chunks([tmp_path / "a.parquet"], columns=["question", "answer"], max_docs=3))
    assert [c.line_numbers for c in chunks] == [[1, 2, 3], [4, 5, 6], [7]]
    assert chunks[2].records == [{"question": "q6", "answer": "6"}]  # only the columns asked for
