"""``octo preprocess``: tokens read back from the indexed dataset equal the tokenizer's output for every document
(texts written out by hand from the RECIPE.md templates), identical output for any number of workers, input
formats, bad input, atomic outputs, and the real MATH8K file."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy
import pytest

from megatron_octo.cli import main
from megatron_octo.data.errors import DataError
from megatron_octo.data.preprocess import output_paths, preprocess
from megatron_octo.utils.io import OutputExistsError
from tests.data.conftest import SHARED, write_jsonl

BOS = "<|begin_of_text|>"

# (format, fields, records, the texts a person writes from RECIPE.md's templates; None = empty, skipped)
CASES = {
    "text": ({}, [{"text": "Linear equations: 3x + 5 = 20 gives x = 5."}, {"text": ""},
                  {"text": "Ünïcode ∑ and\nnew lines\n\n"}, {"text": BOS + "starts with the BOS string"}],
             ["Linear equations: 3x + 5 = 20 gives x = 5.", None, "Ünïcode ∑ and\nnew lines\n\n",
              BOS + "starts with the BOS string"]),
    "qa": ({"question_field": "problem"}, [{"problem": "What is 12 * 3?", "answer": "36"},
                                           {"problem": "Solve 2x = 8.", "answer": 4},
                                           {"problem": "Q", "answer": "  "}],
           ["User: What is 12 * 3?\nAssistant: 36", "User: Solve 2x = 8.\nAssistant: 4", None]),
    "long_cot": ({}, [{"question": "What is 7 - 9?", "reasoning": "7 - 9 = -2.", "answer": "\\boxed{-2}"},
                      {"question": "Q2", "reasoning": "<think>already tagged</think>", "answer": "A2"}],
                 ["What is 7 - 9?\n<think>\n7 - 9 = -2.\n</think>\n\\boxed{-2}",
                  "Q2\n<think>\nalready tagged\n</think>\nA2"]),
    "chat": ({}, [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                {"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]},
                  {"messages": [{"role": "user", "content": "no answer"}]}],
             ["User: Hi\nAssistant: Hello!\nUser: 1+1?\nAssistant: 2", None]),
}


def read_back(prefix):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(prefix))
    return ds, [ds[i].tolist() for i in range(len(ds))]


def expected_ids(hf_tokenizer, text):
    ids = hf_tokenizer(text)["input_ids"]
    if ids[:2] == [hf_tokenizer.bos_token_id] * 2:
        ids = ids[1:]
    return ids + [hf_tokenizer.eos_token_id]


@pytest.mark.parametrize("fmt", list(CASES))
def test_tokens_read_back_equal_the_tokenizer_output(tmp_path, tokenizer_dir, hf_tokenizer, fmt):
    fields, records, texts = CASES[fmt]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    stats = preprocess([src], str(tmp_path / "out"), tokenizer_dir, fmt, fields=fields, log=None)
    ds, docs = read_back(tmp_path / "out")
    wanted = [expected_ids(hf_tokenizer, t) for t in texts if t is not None]
    assert docs == wanted
    assert stats.documents == len(wanted) and stats.empty == texts.count(None)
    assert stats.tokens == sum(map(len, wanted))
    assert ds.document_indices.tolist() == list(range(len(wanted) + 1))  # one sequence per document
    assert ds.index.dtype == numpy.uint16  # 400 ids < 65,500


def test_one_bos_even_when_the_text_starts_with_it(tmp_path, tokenizer_dir, hf_tokenizer):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": BOS + "x = 1"}, {"text": "x = 1"}])
    preprocess([src], str(tmp_path / "out"), tokenizer_dir, "text", log=None)
    _, docs = read_back(tmp_path / "out")
    bos, eos = hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id
    assert docs[0] == docs[1]
    assert docs[0][0] == bos and docs[0][1] != bos and docs[0][-1] == eos and docs[0].count(eos) == 1


def _corpus(path: Path, n: int) -> Path:
    from megatron_octo.data.demo_corpus import generate

    records = generate(seed=3, sizes={"web": 0, "qa": n, "long_cot": 0, "chat": 0, "eval": 0})["qa"]
    return write_jsonl(path, records)


def test_two_workers_write_the_same_bytes_in_input_order(tmp_path, tokenizer_dir, hf_tokenizer):
    src = _corpus(tmp_path / "qa.jsonl", 300)
    one = preprocess([src], str(tmp_path / "w1"), tokenizer_dir, "qa", workers=1, max_docs=7, log=None)
    two = preprocess([src], str(tmp_path / "w2"), tokenizer_dir, "qa", workers=2, max_docs=7, log=None)
    assert (one.documents, one.tokens) == (two.documents, two.tokens) == (300, one.tokens)
    for a, b in zip(output_paths(str(tmp_path / "w1")), output_paths(str(tmp_path / "w2"))):
        assert a.read_bytes() == b.read_bytes()
    _, docs = read_back(tmp_path / "w2")
    first, last = (json.loads(line) for line in src.read_text().splitlines()[::299])
    for record, doc in ((first, docs[0]), (last, docs[-1])):
        assert doc == expected_ids(hf_tokenizer, f"User: {record['question']}\nAssistant: {record['answer']}")


def test_gzip_parquet_and_several_inputs_in_order(tmp_path, tokenizer_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"text": f"document {i}: {i} + {i} = {2 * i}"} for i in range(40)]
    plain = write_jsonl(tmp_path / "all.jsonl", records)
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records[:25]))
    pq.write_table(pa.Table.from_pylist(records[25:]), tmp_path / "b.parquet", row_group_size=4)
    preprocess([plain], str(tmp_path / "plain"), tokenizer_dir, "text", log=None)
    preprocess([tmp_path / "a.jsonl.gz", tmp_path / "b.parquet"], str(tmp_path / "mixed"), tokenizer_dir, "text",
               workers=2, max_docs=3, log=None)
    for a, b in zip(output_paths(str(tmp_path / "plain")), output_paths(str(tmp_path / "mixed"))):
        assert a.read_bytes() == b.read_bytes()


def test_malformed_line_stops_with_file_and_line(tmp_path, tokenizer_dir):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "ok"}, {"text": "ok"}, '{"text": "broken', {"text": "ok"}])
    with pytest.raises(DataError) as excinfo:
        preprocess([src], str(tmp_path / "out"), tokenizer_dir, "text", log=None)
    message = str(excinfo.value)
    assert f"{src}:3:" in message and "malformed JSON" in message and "--skip-bad-lines" in message
    assert "\n" not in message
    assert not any(tmp_path.glob("out*")) and not any(tmp_path.glob(".out*"))  # nothing left behind


def test_skip_bad_lines_skips_and_counts(tmp_path, tokenizer_dir):
    src = write_jsonl(tmp_path / "in.jsonl", ['{"text": "broken', {"text": "a"}, "[1, 2", {"text": ""},
                                              {"body": "wrong field"}, {"text": "b"}])
    stats = preprocess([src], str(tmp_path / "out"), tokenizer_dir, "text", skip_bad_lines=True, workers=2,
                       max_docs=2, log=None)
    assert (stats.documents, stats.bad_lines, stats.empty) == (2, 3, 1)
    assert stats.first_bad.startswith(f"{src}:1: malformed JSON")


def test_missing_field_names_the_field_and_the_available_ones(tmp_path, tokenizer_dir):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "Q", "answer": "A"}])
    with pytest.raises(DataError, match=r"in.jsonl:1: missing field 'question' \(fields: answer, prompt\)"):
        preprocess([src], str(tmp_path / "out"), tokenizer_dir, "qa", log=None)


def test_parquet_missing_column_names_the_columns(tmp_path, tokenizer_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"prompt": "Q", "answer": "A"}]), tmp_path / "in.parquet")
    with pytest.raises(DataError, match=r"missing field 'question' \(fields: prompt, answer\)"):
        preprocess([tmp_path / "in.parquet"], str(tmp_path / "out"), tokenizer_dir, "qa", log=None)


def test_missing_tokenizer_and_input_are_one_line_errors(tmp_path, tokenizer_dir):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    with pytest.raises(DataError, match="tokenizer directory .*nope does not exist"):
        preprocess([src], str(tmp_path / "out"), tmp_path / "nope", "text", log=None)
    with pytest.raises(DataError, match="input .*missing.jsonl does not exist"):
        preprocess([tmp_path / "missing.jsonl"], str(tmp_path / "out"), tokenizer_dir, "text", log=None)


def test_existing_output_needs_overwrite_and_a_failed_overwrite_keeps_it(tmp_path, tokenizer_dir):
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "a"}, {"text": "b"}])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "c"}, "not json"])
    prefix = str(tmp_path / "out")
    preprocess([good], prefix, tokenizer_dir, "text", log=None)
    before = [p.read_bytes() for p in output_paths(prefix)]
    with pytest.raises(OutputExistsError, match="--overwrite"):
        preprocess([good], prefix, tokenizer_dir, "text", log=None)
    with pytest.raises(DataError):
        preprocess([bad], prefix, tokenizer_dir, "text", overwrite=True, log=None)
    assert [p.read_bytes() for p in output_paths(prefix)] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "good.jsonl", "out.bin", "out.idx",
                                                          "out.tokens.json"]
    assert preprocess([bad], prefix, tokenizer_dir, "text", overwrite=True, skip_bad_lines=True,
                      log=None).documents == 1


def test_a_killed_runs_hidden_outputs_are_removed_by_the_next_run(tmp_path, tokenizer_dir):
    from tests.utils.test_io import dead_pid

    pid = dead_pid()
    stale = [tmp_path / f".out.bin.tmp-{pid}", tmp_path / f".out.idx.tmp-{pid}"]  # a run killed while writing
    for path in stale:
        path.write_bytes(b"partial")
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "one two three"}])
    preprocess([src], str(tmp_path / "out"), tokenizer_dir, "text", log=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.bin", "out.idx", "out.tokens.json"]


def test_progress_reports_docs_and_tokens_per_second(tmp_path, tokenizer_dir):
    src = _corpus(tmp_path / "qa.jsonl", 50)
    log = io.StringIO()
    preprocess([src], str(tmp_path / "out"), tokenizer_dir, "qa", max_docs=10, log=log, log_interval=0)
    lines = log.getvalue().splitlines()
    assert len(lines) >= 5 and all("docs/s" in line and "tokens/s" in line for line in lines)
    assert "ETA" in lines[0] and "done in" in lines[-1]


def test_cli_writes_and_reports_user_errors_in_one_line(tmp_path, tokenizer_dir, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "Q", "answer": "A"}, '{"prompt": '])
    args = ["preprocess", "--input", str(src), "--output-prefix", str(tmp_path / "out"), "--tokenizer",
            str(tokenizer_dir), "--format", "qa", "--question-field", "prompt"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("octo: error: ") and f"{src}:2:" in err and len(err.splitlines()) == 1
    assert main(args + ["--skip-bad-lines"]) == 0
    assert "1 documents" in capsys.readouterr().out
    assert main(args + ["--skip-bad-lines"]) == 2  # exists now
    assert "--overwrite" in capsys.readouterr().err
    bad_tok = ["--tokenizer", str(tmp_path / "none"), "--overwrite"]
    assert main(args + bad_tok) == 2
    assert "does not exist" in capsys.readouterr().err


MATH8K = SHARED / "data" / "rl" / "math8k_train.jsonl"


@pytest.mark.skipif(not MATH8K.is_file(), reason=f"real data not present at {MATH8K}")
def test_math8k_with_the_qa_formatter(tmp_path, tokenizer_dir, hf_tokenizer):
    # SOURCES.md: 8,523 problems; rows 5054 and 5158 have an empty answer (empty documents, skipped).
    stats = preprocess([MATH8K], str(tmp_path / "math8k"), tokenizer_dir, "qa", fields={"question_field": "prompt"},
                       workers=2, log=None)
    assert (stats.documents, stats.empty, stats.bad_lines) == (8521, 2, 0)
    ds, _ = read_back(tmp_path / "math8k")
    rows = [json.loads(line) for line in MATH8K.read_text().splitlines()]
    kept = [r for r in rows if r["answer"].strip()]
    for i in (0, 5053, 5054, len(kept) - 1):  # around the first skipped row, and the ends
        text = f"User: {kept[i]['prompt']}\nAssistant: {kept[i]['answer']}"
        assert ds[i].tolist() == expected_ids(hf_tokenizer, text)


def test_tools_wrapper_is_octo_preprocess():
    import subprocess
    import sys

    from tests.data.conftest import REPO

    result = subprocess.run([sys.executable, str(REPO / "tools" / "preprocess_data.py"), "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: octo preprocess")


def test_disk_full_is_one_line_and_keeps_the_earlier_output(tmp_path, tokenizer_dir, capsys, monkeypatch):
    """ENOSPC from the dataset writer's file write (tests/disk_full.py) after 1 KiB of the new .bin: one line naming
    the file and the free space, exit 2, the earlier output unchanged and no temporary file left."""
    from megatron.core.datasets import indexed_dataset

    from tests.disk_full import filling_open

    src = _corpus(tmp_path / "qa.jsonl", 50)
    prefix = tmp_path / "out"
    args = ["preprocess", "--input", str(src), "--output-prefix", str(prefix), "--tokenizer", str(tokenizer_dir),
            "--format", "qa"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(indexed_dataset, "open", filling_open(".out.bin.tmp-", room=1024), raising=False)
    capsys.readouterr()
    assert main(args + ["--overwrite"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert lines[0].startswith(f"octo: error: disk full (No space left on device) writing {tmp_path}/.out.bin.tmp-")
    assert f": {tmp_path} has " in lines[0] and " free; free space or pick another --output-prefix" in lines[0]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
