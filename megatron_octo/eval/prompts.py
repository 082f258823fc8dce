"""Prompt assembly: the exact few-shot prompts of the OctoThinker evaluation, and zero-shot templates.

Few-shot prompts are read from ``few_shot_prompts.json`` (../shared/data/prompts; see SOURCES.md there), which holds
for each prompt set the exemplar text, the template joining it with a test question, how the source code trims the
result, and the stop words. A prompt is built as the reference harness builds it:
``template.format(few_shot_prompt=..., task_input=question, task_output="")``, trimmed as the source says
(``rstrip()``, or ``lstrip('\\n')`` for the zero-shot AMC23 set), then ``lstrip()``-ed. Generation stops at the set's
stop words and at the tokenizer's end-of-sequence token.

Zero-shot templates are for RL-trained models (RECIPE.md: validation is zero-shot with the RL template).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

from megatron_octo.config.schema import RL_STOP
from megatron_octo.eval.registry import EvalError

PROMPT_FILE = "few_shot_prompts.json"

# The two trimming rules the prompt sources use (field ``returned_as``); anything else is refused, not guessed.
_TRIMS: Dict[str, Callable[[str], str]] = {
    "prompt.rstrip()": str.rstrip,
    "prompt.lstrip('\\n')": lambda s: s.lstrip("\n"),
}

# Zero-shot templates: ``{question}`` is replaced verbatim (str.replace, so LaTeX braces need no escaping).
TEMPLATES: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    # RECIPE.md's "complex" (Open-Reasoner-Zero style) RL template; its exact OctoThinker wording is unconfirmed.
    "complex": (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
        "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
        "User: You must put your answer inside \\boxed{} and Your final answer will be extracted automatically by "
        "the \\boxed{} tag.\n{question}\nAssistant:",
        RL_STOP,
    ),
    # The "simple" RL template: the Question/Answer layout the run's stop strings are made for (exact wording of
    # OctoThinker's simple template unconfirmed).
    "simple": ("Question: {question}\nAnswer: Let's think step by step.", RL_STOP),
    # The mid-training QA / instruction format of the decay stage ("User: {question}\nAssistant: {answer}").
    "user_assistant": ("User: {question}\nAssistant:", RL_STOP),
    # The same with an explicit request for a boxed answer.
    "user_assistant_boxed": (
        "User: {question}\nPlease reason step by step, and put your final answer within \\boxed{}.\nAssistant:",
        RL_STOP,
    ),
    "raw": ("{question}", ()),
}


@dataclass(frozen=True)
class PromptSet:
    """One few-shot prompt set (or a zero-shot template): ``render(question)`` gives the model's input text."""

    key: str
    few_shot_prompt: str
    template: str
    trim: str
    stop: Tuple[str, ...]
    zero_shot: bool = False

    def render(self, question: str) -> str:
        """The prompt for ``question``, exactly as the reference harness builds it."""
        if self.zero_shot:
            return self.template.replace("{question}", question)
        text = self.template.format(few_shot_prompt=self.few_shot_prompt, task_input=question, task_output="")
        return _TRIMS[self.trim](text).lstrip()


def find_prompt_file(data_dir: Optional[Union[str, Path]] = None, prompts: Optional[Union[str, Path]] = None) -> Path:
    """``prompts`` when given, else ``few_shot_prompts.json`` in data_dir/../prompts, data_dir/prompts or
    data_dir; EvalError naming the fix when none exists."""
    if prompts is not None:
        path = Path(prompts)
        if not path.is_file():
            raise EvalError(f"prompt file {path} does not exist; pass --prompts PATH/{PROMPT_FILE}")
        return path
    tried = []
    if data_dir is not None:
        root = Path(data_dir)
        for cand in (root.parent / "prompts" / PROMPT_FILE, root / "prompts" / PROMPT_FILE, root / PROMPT_FILE):
            if cand.is_file():
                return cand
            tried.append(str(cand))
    raise EvalError(
        f"few-shot prompts not found{' (looked for ' + ', '.join(tried) + ')' if tried else ''}; "
        f"pass --prompts PATH/{PROMPT_FILE} (shared/data/prompts) or use --zero-shot"
    )


def load_prompt_sets(path: Union[str, Path]) -> Dict[str, PromptSet]:
    """All prompt sets of a ``few_shot_prompts.json``; EvalError when the file is malformed."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalError(f"cannot read prompt file {path} ({exc}); pass a valid --prompts file") from exc
    sets = {}
    for key, spec in raw.items():
        if key.startswith("_") or not isinstance(spec, dict):
            continue
        trim = spec.get("returned_as", "prompt.rstrip()")
        if trim not in _TRIMS or "prompt_template" not in spec:
            raise EvalError(f"prompt set {key} in {path} has an unsupported layout (returned_as={trim!r})")
        sets[key] = PromptSet(
            key, spec.get("few_shot_prompt", ""), spec["prompt_template"], trim, tuple(spec.get("stop_words", ()))
        )
    return sets


def zero_shot_prompt(template: str = "complex", stop: Optional[Sequence[str]] = None) -> PromptSet:
    """A zero-shot PromptSet from a template name (``TEMPLATES``) or a literal template containing ``{question}``.
    ``stop`` overrides the template's stop strings."""
    if template in TEMPLATES:
        text, default_stop = TEMPLATES[template]
    elif "{question}" in template:
        text, default_stop = template, RL_STOP
    else:
        raise EvalError(
            f"unknown template '{template}'; choose from {', '.join(TEMPLATES)} "
            "or give a template text containing {question}"
        )
    return PromptSet(
        f"zero-shot:{template if template in TEMPLATES else 'custom'}",
        "",
        text,
        "prompt.rstrip()",
        tuple(default_stop if stop is None else stop),
        zero_shot=True,
    )
