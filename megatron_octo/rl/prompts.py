"""RL prompts: problems from a JSONL (``prompt`` + ``answer``, the MATH8K layout), rendered with an RL template,
tokenized once, filtered by length, and served in a seeded order that a resumed run reproduces.

Tokenization adds the tokenizer's BOS exactly once: templates carry no BOS of their own, and ``add_special_tokens``
is used only when the tokenizer does not already prepend one to the text (the double-BOS trap of DESIGN.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from megatron_octo.config.schema import PromptConfig
from megatron_octo.errors import OctoError


class PromptError(OctoError, ValueError):
    """The prompt file or its settings are unusable; the message names the problem and the fix."""


@dataclass(frozen=True)
class Problem:
    """One RL prompt: its rendered text, token ids (with BOS) and the gold answer."""

    text: str
    token_ids: List[int]
    answer: str


def read_problems(path: Optional[str], field: str = "rl.prompts.path") -> List[dict]:
    """Rows of a prompt JSONL; each needs ``prompt`` (or ``question``/``problem``) and ``answer``. ``field`` is the
    recipe field that names the file (for messages)."""
    if path is None:
        raise PromptError(f"{field} is not set: give a JSONL of prompt/answer problems")
    file = Path(os.path.expandvars(path)).expanduser()
    if not file.is_file():
        raise PromptError(
            f"{field} {file} does not exist: give a JSONL with prompt/answer fields "
            "(e.g. $OCTO_DATA/rl/math8k_train.jsonl)"
        )
    rows = []
    with open(file, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise PromptError(f"{file}:{number} is not UTF-8 text: re-encode the file as UTF-8") from None
            if not line.strip():
                continue
            rows.append(_problem_row(line, f"{file}:{number}"))
    if not rows:
        raise PromptError(f"{file} holds no problems")
    return rows


def _problem_row(line: str, where: str) -> dict:
    """One JSONL line as {question, answer}; PromptError naming ``where`` (file:line) when it is not one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PromptError(f"{where} is not valid JSON ({exc.msg}): fix or remove the line") from None
    if not isinstance(row, dict):
        raise PromptError(f"{where} is not a JSON object with prompt and answer fields")
    question = next((row[k] for k in ("prompt", "question", "problem") if row.get(k) is not None), None)
    if question is None or "answer" not in row:
        raise PromptError(f"{where} lacks a prompt/question and an answer field")
    answer = row["answer"]
    if answer is None or isinstance(answer, (dict, list, bool)) or not str(answer).strip():
        raise PromptError(f"{where}: answer {answer!r} is not a gold answer (text or a number): fix or remove the line")
    return {"question": str(question), "answer": str(answer)}


def encode(tokenizer, text: str) -> List[int]:
    """Token ids of ``text`` with exactly one leading BOS (when the tokenizer has one)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return ids if bos is None or (ids and ids[0] == bos) else [bos] + ids


def build_problems(cfg: PromptConfig, tokenizer, log=print) -> List[Problem]:
    """Render every problem with ``cfg.template``, tokenize, and drop those over ``cfg.max_prompt_tokens``."""
    from megatron_octo.eval.prompts import zero_shot_prompt
    from megatron_octo.eval.registry import EvalError

    try:
        template = zero_shot_prompt(cfg.template)
    except EvalError as exc:
        raise PromptError(f"rl.prompts.template: {exc}") from None
    kept, dropped = [], 0
    for row in read_problems(cfg.path):
        text = template.render(row["question"])
        ids = encode(tokenizer, text)
        if len(ids) > cfg.max_prompt_tokens:
            dropped += 1
            continue
        kept.append(Problem(text=text, token_ids=ids, answer=row["answer"]))
    log(f"[octo rl] {len(kept)} prompts kept, {dropped} longer than {cfg.max_prompt_tokens} tokens dropped")
    if not kept:
        raise PromptError(
            f"every prompt of {cfg.path} is longer than rl.prompts.max_prompt_tokens={cfg.max_prompt_tokens}: raise it"
        )
    return kept


def step_prompts(num_problems: int, step: int, per_step: int, seed: int) -> List[int]:
    """Indices of the problems of (0-based) ``step``: consecutive slices of a seeded permutation per epoch over
    the prompt set, so the order is a pure function of the step (resume gives the same prompts)."""
    out: List[int] = []
    position = step * per_step
    while len(out) < per_step:
        epoch, offset = divmod(position, num_problems)
        order = np.random.default_rng([seed, epoch]).permutation(num_problems)
        take = min(per_step - len(out), num_problems - offset)
        out.extend(int(i) for i in order[offset : offset + take])
        position += take
    return out


def shard(items: Sequence, rank: int, size: int) -> list:
    """The ``rank``-th of ``size`` contiguous equal parts of ``items`` (length divisible by ``size``)."""
    per = len(items) // size
    assert per * size == len(items), f"{len(items)} items do not split into {size} equal parts"
    return list(items[rank * per : (rank + 1) * per])
