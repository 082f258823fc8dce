"""What every rollout engine shares about a request and its samples, whatever generates the tokens: the ``Sample``
returned, the checks of a request, and how a stop string ends a response. ``rollout.vllm_engine.VLLMEngine`` and
``rl.engines.TransformersEngine`` both follow it; nothing here imports torch or vLLM.

- **text** is the decoded response without special tokens, cut before the earliest stop string (the stop string is
  not kept; ``text_before_stop``).
- **token_ids** run up to the shortest prefix whose decoded text covers ``text`` (``tokens_covering``): tokens lying
  wholly inside the stop string are dropped, a token holding both the end of the text and the start of the stop
  string is kept (cutting it would lose text the reward reads). An end-of-sequence token stays in ``token_ids`` (not
  in ``text``): the trainer learns to stop. **logprobs** are cut with them, one per token.
- **finish_reason** is ``stop`` (EOS or a stop string) or ``length`` (``max_tokens`` reached).
- With ``keep_stop`` (NeMo-Aligner's actor, which counts a response as properly ended when its text ends with an end
  string, as TensorRT-LLM keeps stop words), the stop string stays: ``text`` runs to the end of the earliest stop
  string and ``token_ids`` to the token completing it (``text_through_stop``, then ``stopped_sample``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

from megatron_octo.errors import OctoError

log = logging.getLogger(__name__)


class RolloutError(OctoError, RuntimeError):
    """A one-line error naming the problem and the fix."""


@dataclass
class Sample:
    """One generated response (see the module docstring for how stop strings are cut)."""

    token_ids: List[int]  # response tokens only: no prompt, no tokens wholly inside a stop string; EOS kept
    logprobs: List[float]  # one per token_ids entry: log-prob under the distribution it was sampled from (vLLM:
    #                        processed_logprobs; rl.engines.TransformersEngine: temperature-scaled, top-p not applied)
    text: str  # decoded response without special tokens, cut before the stop string
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens reached)


def check_request(
    prompt_token_ids: Sequence[Sequence[int]], n: int, temperature: float, top_p: float, max_tokens: int
) -> List[List[int]]:
    """The prompts as lists of ints; a RolloutError naming the fix for no prompts, an empty prompt or a sampling
    argument out of range."""
    prompts = [[int(t) for t in p] for p in prompt_token_ids]
    if not prompts:
        raise RolloutError("generate got no prompts; pass a list of token-id lists")
    empty = [i for i, p in enumerate(prompts) if not p]
    if empty:
        raise RolloutError(f"prompt {empty[0]} has no tokens; every prompt needs at least one token id")
    if n < 1:
        raise RolloutError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise RolloutError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise RolloutError(f"top_p must be in (0, 1], got {top_p}")
    if max_tokens < 1:
        raise RolloutError(f"max_tokens must be >= 1, got {max_tokens}")
    return prompts


def text_before_stop(text: str, stop: Sequence[str]) -> Tuple[str, bool]:
    """``text`` cut before the earliest occurrence of any stop string, and whether one occurred."""
    hits = [text.find(s) for s in stop if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def text_through_stop(text: str, stop: Sequence[str]) -> Tuple[str, bool]:
    """``text`` cut after the earliest-ending occurrence of any stop string (kept), and whether one occurred."""
    ends = [text.find(s) + len(s) for s in stop if s and s in text]
    return (text[: min(ends)], True) if ends else (text, False)


def tokens_covering(token_ids: Sequence[int], text: str, decode: Callable[[List[int]], str]) -> int:
    """The length of the shortest prefix of ``token_ids`` whose decoded text starts with ``text``. When even the
    whole list does not decode to something starting with ``text`` (a detokenizer disagreeing with the engine's
    incremental one), every token is kept and a warning logged: dropping generated tokens blindly would be worse."""
    ids = list(token_ids)
    keep = len(ids)
    if not decode(ids).startswith(text):
        log.warning("response tokens do not decode to a text starting with the engine's text; keeping all %d", keep)
        return keep
    while keep > 0 and decode(ids[: keep - 1]).startswith(text):
        keep -= 1
    return keep


def stopped_sample(
    token_ids: Sequence[int], logprobs: Sequence[float], text: str, decode: Callable[[List[int]], str]
) -> Sample:
    """The sample of a response that a stop string ended: ``text`` is already cut (before the stop string, or
    through it with ``keep_stop``), the tokens (and their log-probs) are cut to the ones covering ``text``."""
    keep = tokens_covering(token_ids, text, decode)
    return Sample(token_ids=list(token_ids[:keep]), logprobs=list(logprobs[:keep]), text=text, finish_reason="stop")
