"""Token ids beyond the model's vocabulary are refused in one line before the first step (they were an IndexError
deep in training), for data we preprocessed (largest id recorded beside it) and for other datasets (scanned)."""

from __future__ import annotations

import json

import pytest

from megatron_octo.cli import main
from megatron_octo.data.errors import DataError
from megatron_octo.data.token_range import SUFFIX, check_token_range, max_token_id
from tests.data.conftest import write_jsonl, write_source


class Src:
    def __init__(self, name, path):
        self.name, self.path = name, path


def test_largest_id_of_a_foreign_dataset_is_scanned_and_recorded(tmp_path):
    prefix = write_source(tmp_path / "web", 2)  # ids 2000..2999
    assert max_token_id(prefix) <= 2999 and max_token_id(prefix) >= 2900
    recorded = json.loads((tmp_path / f"web{SUFFIX}").read_text())
    assert recorded["max_token_id"] == max_token_id(prefix)
    assert max_token_id(prefix, vocab_size=70_000) is None  # uint16 cannot hold 70,000: nothing to scan


def test_an_id_at_the_vocabulary_size_is_refused(tmp_path):
    prefix = write_source(tmp_path / "qa", 1)  # ids 1000..1999
    largest = max_token_id(prefix)
    check_token_range(largest + 1, [Src("qa", prefix)])  # every id below the vocabulary: fine
    with pytest.raises(DataError, match=f"'qa' .* holds token id {largest:,}, beyond model.vocab_size={largest:,}"):
        check_token_range(largest, [Src("qa", prefix)])


def test_preprocess_records_the_largest_id(tmp_path, tokenizer_dir, hf_tokenizer):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "The answer is 42."}, {"text": "x + y = 7"}])
    assert main(["preprocess", "--input", str(src), "--output-prefix", str(tmp_path / "out"), "--tokenizer",
                 str(tokenizer_dir)]) == 0
    recorded = json.loads((tmp_path / f"out{SUFFIX}").read_text())["max_token_id"]
    expected = max(max(hf_tokenizer("The answer is 42.")["input_ids"]), max(hf_tokenizer("x + y = 7")["input_ids"]),
                   hf_tokenizer.eos_token_id)
    assert recorded == expected


def test_octo_train_refuses_before_the_first_step(tmp_path, capsys):
    prefix = write_source(tmp_path / "data" / "web", 2)  # ids up to 2999 against a vocabulary of 2048
    run = tmp_path / "run"
    code = main(["train", "--recipe", "tiny-cpu", "--run-dir", str(run), "data.kind=blend",
                 f"data.sources=[{{name: web, weight: 1.0, path: '{prefix}'}}]", "model.vocab_size=2048",
                 "train.seq_len=32", "logging.tensorboard=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "beyond model.vocab_size=2,048" in err[0], err
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()
