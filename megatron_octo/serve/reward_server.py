"""The math reward as a server NeMo-Aligner's PPO actor uses in place of a reward model.

Transport: the same as NeMo-Aligner's reward-model server (``serve_reward_model.py``): a PyTriton model, by default
named ``reward_model``, served over HTTP, with optional inputs ``sentences`` (bytes, one text a row) or ``tokens``
(int64, one padded row a sequence) with ``sequence_lengths`` (int64), and the output ``rewards`` (float32, one a
row). NeMo-Aligner's actor (``RemoteGPTRMClient``, or the critic client with ``combine_rm_and_critic_server:
False``) sends ``tokens`` = prompt + response ids padded with 0 and ``sequence_lengths`` = prompt + response length.

Scoring: each sequence is decoded with the actor's tokenizer (special tokens dropped), split into prompt and
response, and the response gets ``megatron_octo.rl.reward`` (+1 / -1 by default) against the gold answer of its
prompt, every item verified in parallel under a per-item deadline (``timeout``; one that runs out scores as wrong).

Where the gold answer comes from: the requests carry only the sequence, so the server is started with the prompt
set's answers (``--answers``, JSONL). Each record has the gold answer (``answer``) and either the exact prompt text
the actor's dataset holds (``text``, as in NeMo-Aligner's prompt JSONL) or the bare problem (``prompt``,
``problem`` or ``question``), which is rendered through ``template`` (default: the RL "complex" template). The key of
a prompt is its text with all whitespace removed, so detokenizer spacing does not matter. A decoded sequence is
split after an occurrence of ``response_marker`` (default: what the template has after ``{question}``, e.g.
``Assistant:``): the first occurrence whose preceding text is a known prompt. A sequence whose prompt is unknown is
refused (a misconfigured answer file must not silently score everything -1).

Malformed requests (unknown or missing inputs, wrong shapes, token ids outside the vocabulary, undecodable bytes,
unknown prompts) end that request with a one-line ``RewardRequestError``; the server keeps serving. The client
sees it as ``PyTritonClientInferenceServerError`` whose text ends with that line (PyTriton puts the server-side
traceback before it); wrong input names or dtypes are refused by Triton itself, naming the input. Requests are not
merged by a dynamic batcher, so an error reaches only the client that sent the bad request.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from megatron_octo.errors import OctoError

log = logging.getLogger(__name__)

INPUT_NAMES = ("sentences", "tokens", "sequence_lengths")
QUESTION_FIELDS = ("prompt", "problem", "question")


class RewardServerError(OctoError, ValueError):
    """The server cannot start as configured (one line naming the problem and the fix)."""


class RewardRequestError(ValueError):
    """A request the server refuses (one line naming the problem and the fix); the server keeps serving."""


@dataclass
class RewardServerConfig:
    """How the reward server starts. Only ``answers`` and ``tokenizer`` have no default."""

    answers: str  # JSONL: gold answer + prompt text or problem per record (module docstring)
    tokenizer: str  # Hugging Face tokenizer directory of the actor: decodes token requests
    host: str = "127.0.0.1"  # HTTP bind address; loopback unless other hosts must reach it (e.g. "0.0.0.0")
    port: int = 5555  # HTTP port (NeMo-Aligner's reward_model default)
    model_name: str = "reward_model"  # PyTriton model name = the actor's remote_critic_rm.reward_model.name
    max_batch: int = 65536  # largest number of sequences in one request (Triton refuses larger ones)
    timeout: float = 2.0  # seconds of verification per item (RECIPE.md: 2 s); an item over it scores as wrong
    workers: Optional[int] = None  # verification processes; None: one per core
    variant: str = "default"  # reward variant of megatron_octo.rl.reward (default: +1 / -1)
    template: str = "complex"  # prompt template for records without "text": a name in eval.prompts.TEMPLATES or
    #                            a text with {question}
    response_marker: Optional[str] = None  # text ending the prompt; None: the template's text after {question}
    answer_field: str = "answer"  # record field holding the gold answer

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise RewardServerError(f"port must be in 1..65535, got {self.port}")
        if self.max_batch < 1:
            raise RewardServerError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.timeout <= 0:
            raise RewardServerError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.workers is not None and self.workers < 1:
            raise RewardServerError(f"workers must be >= 1, got {self.workers}")


# -- gold answers ------------------------------------------------------------------------------------------------


def prompt_key(text: str) -> str:
    """The lookup key of a prompt: its text without any whitespace (detokenizers differ in spacing)."""
    return re.sub(r"\s+", "", text)


def resolve_template(template: str, marker: Optional[str]) -> Tuple[str, str]:
    """(template text, response marker) for a template name or text; RewardServerError when no marker results."""
    from megatron_octo.eval.prompts import TEMPLATES

    text = TEMPLATES[template][0] if template in TEMPLATES else template
    if "{question}" not in text:
        raise RewardServerError(
            f"template {template!r} is neither a name ({', '.join(TEMPLATES)}) nor a text with {{question}}"
        )
    marker = marker if marker is not None else text.split("{question}", 1)[1].strip()
    if not marker.strip():
        raise RewardServerError(
            f"template {template!r} has no text after {{question}} to end the prompt: pass --response-marker"
        )
    return text, marker.strip()


class AnswerBook:
    """Gold answers keyed by prompt; ``split(sequence)`` finds a sequence's prompt, its gold and its response."""

    def __init__(self, golds: Dict[str, str], marker: str):
        self.golds = golds
        self.marker = marker

    @classmethod
    def from_jsonl(
        cls, path, template: str = "complex", marker: Optional[str] = None, answer_field: str = "answer"
    ) -> "AnswerBook":
        """Reads the answers file (module docstring); RewardServerError naming the file and line on bad records."""
        path = Path(path)
        if not path.is_file():
            raise RewardServerError(
                f"answers file {path} does not exist: pass --answers FILE (JSONL with "
                f"'{answer_field}' and 'text' or one of {', '.join(QUESTION_FIELDS)})"
            )
        text, marker = resolve_template(template, marker)
        golds: Dict[str, str] = {}
        conflicts = 0
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                prompt, gold = _record(line, text, answer_field, f"{path}:{lineno}")
                key = prompt_key(prompt)
                conflicts += key in golds and golds[key] != gold
                golds.setdefault(key, gold)
        if not golds:
            raise RewardServerError(f"answers file {path} has no records")
        if conflicts:
            log.warning("%s: %d prompts appear again with another answer; the first answer is used", path, conflicts)
        return cls(golds, marker)

    def split(self, sequence: str) -> Tuple[str, str]:
        """(gold answer, response text) of a decoded prompt + response; RewardRequestError when no prefix ending
        with the marker is a known prompt."""
        start = 0
        while True:
            at = sequence.find(self.marker, start)
            if at < 0:
                break
            end = at + len(self.marker)
            gold = self.golds.get(prompt_key(sequence[:end]))
            if gold is not None:
                return gold, sequence[end:]
            start = at + 1
        head = sequence[:60].replace("\n", " ")
        raise RewardRequestError(
            f"no known prompt ending with {self.marker!r} starts the sequence {head!r}...: start "
            "the server with the answers of the prompt set the actor trains on"
        )


def _record(line: str, template: str, answer_field: str, where: str) -> Tuple[str, str]:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RewardServerError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(rec, dict) or answer_field not in rec:
        raise RewardServerError(f"{where}: no '{answer_field}' field (set the answer field with --answer-field)")
    if isinstance(rec.get("text"), str):
        return rec["text"], str(rec[answer_field])
    for name in QUESTION_FIELDS:
        if isinstance(rec.get(name), str):
            return template.replace("{question}", rec[name]), str(rec[answer_field])
    raise RewardServerError(
        f"{where}: no prompt: give 'text' (the exact prompt) or one of {', '.join(QUESTION_FIELDS)}"
    )


# -- requests ----------------------------------------------------------------------------------------------------


def request_texts(inputs: Mapping[str, np.ndarray], decode: Callable[[List[int]], str], vocab: int) -> List[str]:
    """The decoded sequences of one request (``sentences``, or ``tokens`` + ``sequence_lengths``);
    RewardRequestError on anything malformed."""
    unknown = sorted(set(inputs) - set(INPUT_NAMES))
    if unknown:
        raise RewardRequestError(f"unknown inputs {unknown}: send 'sentences', or 'tokens' with 'sequence_lengths'")
    if "sentences" in inputs:
        if "tokens" in inputs or "sequence_lengths" in inputs:
            raise RewardRequestError("send either 'sentences' or 'tokens' with 'sequence_lengths', not both")
        return _sentences(inputs["sentences"])
    if "tokens" not in inputs or "sequence_lengths" not in inputs:
        raise RewardRequestError("send 'sentences', or both 'tokens' and 'sequence_lengths'")
    tokens, lengths = _token_arrays(inputs["tokens"], inputs["sequence_lengths"])
    out = []
    for i, (row, n) in enumerate(zip(tokens, lengths)):
        ids = row[:n]
        bad = ids[(ids < 0) | (ids >= vocab)]
        if bad.size:
            raise RewardRequestError(
                f"sequence {i} has token id {int(bad[0])} outside the vocabulary [0, {vocab}): "
                "send ids of the tokenizer the server was started with"
            )
        out.append(decode(ids.tolist()))
    return out


def _sentences(arr: np.ndarray) -> List[str]:
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise RewardRequestError(
            f"'sentences' must hold one text a row (shape [batch] or [batch, 1]), got shape {list(arr.shape)}"
        )
    out = []
    for i, item in enumerate(arr.tolist()):
        if isinstance(item, str):
            out.append(item)
            continue
        try:
            out.append(bytes(item).decode("utf-8"))
        except (UnicodeDecodeError, TypeError):
            raise RewardRequestError(f"sentence {i} is not UTF-8 text: send UTF-8 encoded bytes") from None
    return out


def _token_arrays(tokens: np.ndarray, lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise RewardRequestError(
            f"'tokens' must be integers of shape [batch, length], got {tokens.dtype} of shape {list(tokens.shape)}"
        )
    if lengths.ndim == 2 and lengths.shape[1] == 1:
        lengths = lengths[:, 0]
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise RewardRequestError(
            f"'sequence_lengths' must be integers of shape [batch] or [batch, 1], got "
            f"{lengths.dtype} of shape {list(lengths.shape)}"
        )
    if len(lengths) != len(tokens):
        raise RewardRequestError(
            f"{len(tokens)} token rows but {len(lengths)} sequence lengths: send one length per row"
        )
    bad = np.flatnonzero((lengths < 1) | (lengths > tokens.shape[1]))
    if bad.size:
        i = int(bad[0])
        raise RewardRequestError(
            f"sequence {i} has length {int(lengths[i])}, outside 1..{tokens.shape[1]} (the row width)"
        )
    return tokens, lengths


# -- scoring and serving -----------------------------------------------------------------------------------------


class RewardScorer:
    """Decodes requests and scores them: ``score(inputs) -> float32 [batch, 1]``. Owns the verification pool."""

    def __init__(self, cfg: RewardServerConfig):
        from megatron_octo.rl.reward import MathReward

        self.cfg = cfg
        self.book = AnswerBook.from_jsonl(cfg.answers, cfg.template, cfg.response_marker, cfg.answer_field)
        self.tokenizer = _load_tokenizer(cfg.tokenizer)
        self.vocab = len(self.tokenizer)
        try:
            self.reward = MathReward(cfg.variant, workers=cfg.workers, timeout=cfg.timeout)
        except ValueError as exc:  # an unknown variant
            raise RewardServerError(str(exc)) from None
        self.requests = self.items = 0

    def decode(self, ids: List[int]) -> str:
        # No clean-up of spaces: the response text the reward reads is the text the model produced.
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def score(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        texts = request_texts(inputs, self.decode, self.vocab)
        pairs = [self.book.split(t) for t in texts]
        rewards = self.reward([r for _, r in pairs], [g for g, _ in pairs])
        self.requests += 1
        self.items += len(texts)
        return np.asarray(rewards, dtype=np.float32).reshape(-1, 1)

    def close(self) -> None:
        self.reward.close()


def _load_tokenizer(path):
    from megatron_octo.data.errors import DataError
    from megatron_octo.data.tokenizer import load_tokenizer

    try:
        return load_tokenizer(path)
    except DataError as exc:
        raise RewardServerError(str(exc)) from None


class RewardInferFunc:
    """The PyTriton inference callable: a list of requests in, one ``{"rewards": ...}`` per request out. Requests
    arrive one at a time (no dynamic batcher), so a refused request fails alone."""

    def __init__(self, scorer: RewardScorer):
        self.scorer = scorer
        self.lock = threading.Lock()  # one scoring at a time: the pool's workers are the parallelism

    def __call__(self, requests: Sequence[Mapping[str, np.ndarray]]) -> List[Dict[str, np.ndarray]]:
        out = []
        with self.lock:
            for request in requests:
                t0 = time.monotonic()
                try:
                    rewards = self.scorer.score(dict(request.items()))
                except RewardRequestError as exc:
                    log.warning("refused a request: %s", exc)
                    raise
                log.info(
                    "scored %d sequences in %.2f s (mean reward %.3f; %d requests so far)",
                    len(rewards),
                    time.monotonic() - t0,
                    float(rewards.mean()) if len(rewards) else 0.0,
                    self.scorer.requests,
                )
                out.append({"rewards": rewards})
        return out


def triton_io():
    """PyTriton (inputs, outputs) tensor specs: the shapes of NeMo-Aligner's reward-model server."""
    from pytriton.model_config import Tensor

    inputs = (
        Tensor(name="sentences", shape=(-1,), dtype=bytes, optional=True),
        Tensor(name="tokens", shape=(-1,), dtype=np.int64, optional=True),
        Tensor(name="sequence_lengths", shape=(-1,), dtype=np.int64, optional=True),
    )
    return inputs, (Tensor(name="rewards", shape=(1,), dtype=np.float32),)


def start_triton(cfg: RewardServerConfig, infer_func: RewardInferFunc):
    """A running ``pytriton.triton.Triton`` serving ``infer_func`` on cfg.host:cfg.port (HTTP only); the caller
    stops it (``.stop()``) or blocks in ``.serve()``."""
    try:
        from pytriton.model_config import ModelConfig
        from pytriton.triton import Triton, TritonConfig
    except ImportError as exc:
        raise RewardServerError(
            f"the reward server needs PyTriton ({exc}): pip install nvidia-pytriton (the 'serve' "
            "extra; it pins numpy<2, so use its own venv: make test-serve builds one)"
        ) from None
    _match_stub_libpython()
    inputs, outputs = triton_io()
    triton = Triton(
        config=TritonConfig(http_address=cfg.host, http_port=cfg.port, allow_grpc=False, allow_metrics=False)
    )
    # batcher=None: no dynamic batching, so a refused request never takes another client's request down with it.
    triton.bind(
        model_name=cfg.model_name,
        infer_func=infer_func,
        inputs=inputs,
        outputs=outputs,
        config=ModelConfig(batching=True, max_batch_size=cfg.max_batch, batcher=None),
        strict=True,
    )
    triton.run()
    return triton


def _match_stub_libpython() -> None:
    """Puts this interpreter's libpython first on LD_LIBRARY_PATH (inherited by tritonserver). Triton's Python
    backend stub links ``libpython3.X.so`` by soname; where another build of the same minor version is on the
    loader's default path (a distribution Python beside a pyenv one) the stub would run this interpreter's standard
    library on a foreign libpython and fail (e.g. ``'_thread.RLock' object has no attribute '_recursion_count'``)."""
    import os
    import sysconfig

    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not (libdir and soname and os.path.exists(os.path.join(libdir, soname))):
        return  # a static interpreter: the stub finds the system's libpython, nothing to prefer
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if not paths or paths[0] != libdir:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir] + [p for p in paths if p != libdir])


def serve_reward(cfg: RewardServerConfig) -> None:
    """Loads the answers, tokenizer and verification pool, then serves until interrupted (SIGINT / SIGTERM)."""
    scorer = RewardScorer(cfg)
    log.info(
        "reward server: %d prompts with answers from %s, marker %r, variant %s, %.1f s per item",
        len(scorer.book.golds),
        cfg.answers,
        scorer.book.marker,
        scorer.reward.variant,
        cfg.timeout,
    )
    triton = start_triton(cfg, RewardInferFunc(scorer))
    # One line on stdout that scripts (and tests) wait for.
    print(f"reward server ready: model '{cfg.model_name}' on http://{cfg.host}:{cfg.port}", flush=True)
    stop = threading.Event()
    # SIGTERM (Slurm, kill) must stop tritonserver too, not leave it running without its Python side.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set() and triton.is_alive():
            stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        log.info("reward server: stopping after %d requests (%d sequences)", scorer.requests, scorer.items)
        triton.stop()
        scorer.close()
