"""Tokenizer loading and the document-encoding contract (HF output, one BOS, one EOD), dtype by vocabulary."""

from __future__ import annotations

import pickle

import numpy
import pytest

from megatron_octo.data.errors import DataError
from megatron_octo.data.tokenizer import load_tokenizer, make_encoder, token_dtype, vocab_size


def test_missing_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_tokenizer(tmp_path / "absent")
    assert "does not exist" in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_directory_without_a_tokenizer_is_a_data_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot load a tokenizer"):
        load_tokenizer(tmp_path / "empty")


@pytest.mark.parametrize("size, dtype", [(400, numpy.uint16), (32_000, numpy.uint16), (65_499, numpy.uint16),
                                         (65_500, numpy.int32), (128_256, numpy.int32)])
def test_dtype_from_vocabulary_size(size, dtype):
    # Megatron-Core's rule: uint16 below 65,500 ids (Llama-2's 32,000), int32 above (Llama-3's 128,256).
    assert token_dtype(size) == dtype


def test_encode_is_the_hf_output_then_eod(tokenizer_dir, hf_tokenizer):
    encoder = make_encoder(load_tokenizer(tokenizer_dir))
    texts = ["What is 2 + 2?", "x = 12", "<|begin_of_text|>doubled"]
    docs = encoder.encode(texts)
    bos, eos = hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id
    assert docs[0].tolist() == hf_tokenizer(texts[0])["input_ids"] + [eos]
    assert docs[1].tolist() == hf_tokenizer(texts[1])["input_ids"] + [eos]
    assert hf_tokenizer(texts[2])["input_ids"][:2] == [bos, bos]  # what the fix is for
    assert docs[2].tolist() == hf_tokenizer(texts[2])["input_ids"][1:] + [eos]
    assert all(d.dtype == numpy.uint16 for d in docs) and vocab_size(hf_tokenizer) == 400


def test_encoder_travels_to_workers_without_the_python_tokenizer(tokenizer_dir):
    encoder = make_encoder(load_tokenizer(tokenizer_dir))
    copy = pickle.loads(pickle.dumps(encoder))
    assert copy.hf_tokenizer is None
    assert [d.tolist() for d in copy.encode(["a b c"])] == [d.tolist() for d in encoder.encode(["a b c"])]


def test_tokenizer_without_eos_is_refused(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    tok.eos_token = None
    with pytest.raises(DataError, match="no eos_token"):
        make_encoder(tok)
