"""The math reward server (megatron_octo.serve.reward_server): NeMo-Aligner's reward-model transport, MATH500's real
solutions scored over loopback exactly as ``math_rewards`` scores them, malformed requests refused while the server
keeps serving, and NeMo-Aligner's own actor-side client talking to it.

The request parsing and prompt lookup tests run anywhere; the server tests need PyTriton (``nvidia-pytriton``, the
``serve`` extra: it pins numpy<2, so it lives in its own venv, ``make test-serve``) and skip elsewhere; the
NeMo-Aligner client test needs nemo_aligner (``make test-aligner``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from megatron_octo.eval.prompts import TEMPLATES
from megatron_octo.serve.reward_server import (
    AnswerBook,
    RewardRequestError,
    RewardServerConfig,
    RewardServerError,
    prompt_key,
    request_texts,
    resolve_template,
)
from tests.eval.helpers import derangement, read_rows
from tests.serve.helpers import train_tokenizer

REPO = Path(__file__).resolve().parents[2]
COMPLEX = TEMPLATES["complex"][0]
N_RIGHT, N_WRONG = 80, 80  # real MATH500 solutions, then solutions paired with another problem


def render(question: str) -> str:
    return COMPLEX.replace("{question}", question)


# -- pure parts: prompt lookup and request parsing ---------------------------------------------------------------

def test_answer_book_finds_prompts_whatever_the_spacing(tmp_path):
    f = tmp_path / "answers.jsonl"
    f.write_text('{"prompt": "What is 1+1?", "answer": "2"}\n{"text": "Q: x?\\nAssistant:", "answer": "7"}\n')
    book = AnswerBook.from_jsonl(f)
    assert book.marker == "Assistant:"
    seq = render("What is 1+1?").replace(" ", "  ") + " So \\boxed{2}. User:"
    assert book.split(seq) == ("2", " So \\boxed{2}. User:")
    assert book.split("Q:   x?\nAssistant: 7") == ("7", " 7")
    # a marker inside the response: the first occurrence that closes a known prompt wins
    assert book.split("Q: x?\nAssistant: no Assistant: 5")[0] == "7"
    with pytest.raises(RewardRequestError, match="no known prompt"):
        book.split("Q: y?\nAssistant: 7")


def test_answer_book_refuses_bad_files(tmp_path):
    with pytest.raises(RewardServerError, match="does not exist"):
        AnswerBook.from_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(RewardServerError, match=r"bad.jsonl:1: no 'answer' field"):
        AnswerBook.from_jsonl(bad)
    with pytest.raises(RewardServerError, match="no text after"):
        resolve_template("raw", None)
    assert resolve_template("Q: {question}\nA:", None)[1] == "A:"
    with pytest.raises(RewardServerError, match="port"):
        RewardServerConfig(answers="a", tokenizer="t", port=0)


def _decode(ids):
    return " ".join(str(i) for i in ids)


@pytest.mark.parametrize("inputs, message", [
    ({"tokens": np.zeros((2, 3), np.int64)}, "both 'tokens' and 'sequence_lengths'"),
    ({"token": np.zeros((2, 3), np.int64), "sequence_lengths": np.ones((2, 1), np.int64)}, "unknown inputs"),
    ({"tokens": np.zeros((2, 3), np.float32), "sequence_lengths": np.ones((2, 1), np.int64)}, "must be integers"),
    ({"tokens": np.zeros((2, 3), np.int64), "sequence_lengths": np.ones((3, 1), np.int64)}, "2 token rows but 3"),
    ({"tokens": np.zeros((2, 3), np.int64), "sequence_lengths": np.array([[1], [4]])}, "sequence 1 has length 4"),
    ({"tokens": np.array([[1, 99, 0]]), "sequence_lengths": np.array([[2]])}, "token id 99 outside"),
    ({"sentences": np.array([[b"\xff\xfe"]], dtype=object)}, "not UTF-8"),
    ({"sentences": np.array([[b"a"]], dtype=object), "tokens": np.zeros((1, 1), np.int64)}, "not both"),
])
def test_malformed_inputs_are_refused_with_one_line(inputs, message):
    with pytest.raises(RewardRequestError, match=message) as info:
        request_texts(inputs, _decode, vocab=50)
    assert "\n" not in str(info.value)


def test_tokens_are_cut_at_their_lengths():
    tokens = np.array([[5, 6, 7, 0], [8, 0, 0, 0]])
    assert request_texts({"tokens": tokens, "sequence_lengths": np.array([[3], [1]])}, _decode, 50) == ["5 6 7", "8"]
    assert request_texts({"sentences": np.array([["é".encode()]], dtype=object)}, _decode, 50) == ["é"]


# -- the server over loopback --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def math500():
    return read_rows("math500_test.jsonl")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, math500):
    """A byte-level BPE tokenizer trained here on MATH500 text."""
    return train_tokenizer([COMPLEX] + [r["problem"] + r["solution"] for r in math500[:200]],
                           tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def cases(math500):
    """(prompt, response, gold): real solutions of their own problem, then of another problem, then no box."""
    rows = math500[: N_RIGHT + N_WRONG]
    perm = derangement(N_WRONG, seed=3)
    right = [(render(r["problem"]), " " + r["solution"], r["answer"]) for r in rows[:N_RIGHT]]
    wrong_rows = rows[N_RIGHT:]
    wrong = [(render(r["problem"]), " " + wrong_rows[j]["solution"], r["answer"]) for r, j in zip(wrong_rows, perm)]
    nobox = [(render(r["problem"]), " I do not know.", r["answer"]) for r in rows[:5]]
    return right + wrong + nobox


@pytest.fixture(scope="module")
def expected(cases):
    from megatron_octo.rl.reward import math_rewards

    return math_rewards([c[1] for c in cases], [c[2] for c in cases])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, math500, tokenizer_dir):
    """`python -m megatron_octo serve reward` on a free loopback port; yields its URL."""
    pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed here (the 'serve' extra pins numpy<2: "
                                           "run `make test-serve`, which builds its own venv)")
    answers = tmp_path_factory.mktemp("answers") / "math500.jsonl"
    answers.write_text("".join(f'{{"problem": {_json(r["problem"])}, "answer": {_json(r["answer"])}}}\n'
                               for r in math500), encoding="utf-8")
    port = _free_port()
    # OCTO_SERVE_PYTHON: the server in another environment than the client, as deployed (e.g. the aligner venv
    # as the client, the serve venv as the server); it then gets only the checkout on its path, not the client's.
    python = os.environ.get("OCTO_SERVE_PYTHON", sys.executable)
    path = str(REPO) if "OCTO_SERVE_PYTHON" in os.environ else f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([python, "-m", "megatron_octo", "serve", "reward", "--answers", str(answers),
                             "--tokenizer", str(tokenizer_dir), "--port", str(port), "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        _wait_ready(proc, 180)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _json(s: str) -> str:
    import json

    return json.dumps(s)


def _wait_ready(proc, seconds: float) -> None:
    deadline, lines = time.monotonic() + seconds, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if line.startswith("reward server ready"):
            return
    raise AssertionError("reward server did not start:\n" + "".join(lines[-30:]))


def _tokens(tokenizer_dir, cases, pad_to=None):
    """NeMo-Aligner's request: prompt + response ids (BOS first, EOS last) padded with 0, and their lengths [B, 1]."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    seqs = [[tok.bos_token_id] + tok(p, add_special_tokens=False).input_ids
            + tok(r, add_special_tokens=False).input_ids + [tok.eos_token_id] for p, r, _ in cases]
    width = pad_to or max(map(len, seqs))
    tokens = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
    return tokens, np.array([[len(s)] for s in seqs], dtype=np.int64)


def _client(url):
    from pytriton.client import ModelClient

    return ModelClient(url, "reward_model", init_timeout_s=120, inference_timeout_s=120)


def test_math500_rewards_over_loopback_equal_math_reward(server, tokenizer_dir, cases, expected):
    tokens, lengths = _tokens(tokenizer_dir, cases)
    with _client(server) as client:
        out = client.infer_batch(tokens=tokens, sequence_lengths=lengths)
    rewards = out["rewards"]
    assert rewards.shape == (len(cases), 1) and rewards.dtype == np.float32
    assert rewards[:, 0].tolist() == expected
    # the data are what they claim: real solutions score +1, others' solutions (nearly all) and no box -1
    assert expected[:N_RIGHT] == [1.0] * N_RIGHT
    assert expected[N_RIGHT:].count(1.0) <= 2 and expected[-5:] == [-1.0] * 5


def test_sentences_input_gives_the_same_rewards(server, cases, expected):
    sentences = np.array([[(p + r).encode("utf-8")] for p, r, _ in cases[:40]], dtype=object)
    with _client(server) as client:
        out = client.infer_batch(sentences=sentences)
    assert out["rewards"][:, 0].tolist() == expected[:40]


@pytest.mark.parametrize("bad, message", [
    (lambda t, n: {"tokens": t, "sequence_lengths": n + 1000}, "outside 1.."),
    (lambda t, n: {"tokens": t + 10_000, "sequence_lengths": n}, "outside the vocabulary"),
    (lambda t, n: {"tokens": t}, "both 'tokens' and 'sequence_lengths'"),
    (lambda t, n: {"sentences": np.array([[b"\xff"]], dtype=object)}, "not UTF-8"),
    (lambda t, n: {"sentences": np.array([[b"Who knows?\nAssistant: 4"]], dtype=object)}, "no known prompt"),
    (lambda t, n: {"tokens": t.astype(np.float32), "sequence_lengths": n}, "tokens"),
    (lambda t, n: {"tokenz": t, "sequence_lengths": n}, "tokenz"),
])
def test_malformed_request_is_refused_then_the_next_one_is_served(server, tokenizer_dir, cases, expected, bad,
                                                                  message):
    from pytriton.client.exceptions import PyTritonClientError

    tokens, lengths = _tokens(tokenizer_dir, cases[:3])
    with _client(server) as client:
        with pytest.raises(PyTritonClientError, match=message):
            client.infer_batch(**bad(tokens, lengths))
    with _client(server) as client:
        good = client.infer_batch(tokens=tokens, sequence_lengths=lengths)
    assert good["rewards"][:, 0].tolist() == expected[:3]


def test_nemo_aligner_transport_futures_client_padded_to_length(server, tokenizer_dir, cases, expected):
    """What NeMo-Aligner's HTTPCommunicator does: FuturesModelClient.infer_batch with tokens padded to the model's
    sequence length (remote_critic_rm.pad_to_length) and lengths of shape [B, 1]."""
    from pytriton.client import FuturesModelClient

    tokens, lengths = _tokens(tokenizer_dir, cases[::10], pad_to=2048)
    with FuturesModelClient(server, "reward_model", init_timeout_s=120, inference_timeout_s=120) as client:
        future = client.infer_batch(tokens=tokens, sequence_lengths=lengths)
        rewards = future.result()["rewards"]
    assert rewards[:, 0].tolist() == expected[::10]


@pytest.mark.aligner
def test_nemo_aligner_remote_rm_client_talks_to_the_server(server, tokenizer_dir, cases, expected, monkeypatch):
    """NeMo-Aligner's own actor-side client (RemoteGPTRMClient.infer_rm) against the server. Only its model-parallel
    source check is bypassed (no process group here); the request it builds and its transport are its own."""
    pytest.importorskip("nemo_aligner", reason="nemo_aligner is not installed here (run `make test-aligner`)")
    import torch
    from omegaconf import OmegaConf

    import nemo_aligner.models.nlp.gpt.reward_critic_clients as clients

    monkeypatch.setattr(clients, "run_if_model_parallel_src", lambda fn, *a, **k: fn(*a, **k))
    host, port = server.rsplit("//", 1)[1].split(":")
    cfg = OmegaConf.create({"pad_to_length": 1024, "reward_model": {"name": "reward_model", "ip": host,
                                                                     "port": int(port)}})
    client = clients.RemoteGPTRMClient(cfg)
    tokens, lengths = _tokens(tokenizer_dir, cases[::8])
    result = client.infer_rm({"response_tokens": torch.as_tensor(tokens),
                              "response_lengths": torch.as_tensor(lengths[:, 0])})
    rewards = result.rm_future.result()["rewards"]  # get_future_result would broadcast over CUDA ranks
    client.communicator.close()
    assert rewards[:, 0].tolist() == expected[::8]
