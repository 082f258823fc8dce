"""Record -> training text, one formatter per kind of data in the OctoThinker mixtures (RECIPE.md).

- ``text``: web documents, the text field as it is.
- ``qa``: ``User: {question}\\nAssistant: {answer}`` (short-CoT QA).
- ``long_cot``: ``{question}\\n<think>\\n{reasoning}\\n</think>\\n{answer}``: the question and the ``<think>``
  reasoning joined by a line break, then the answer. A reasoning field that already carries its own
  ``<think>...</think>`` tags is not wrapped again.
- ``chat``: multi-turn instruction data as ``User: ...`` / ``Assistant: ...`` turns, one per line block.

A formatter takes one record (a dict) and returns its text, or ``None`` for an empty document (a required field
that is empty or only whitespace): the caller counts and skips those. A missing field raises ``RecordError`` whose
message names the field and the fields the record has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

DEFAULT_FIELDS = {
    "text_field": "text",
    "question_field": "question",
    "answer_field": "answer",
    "reasoning_field": "reasoning",
    "messages_field": "messages",
}
"""Field names used when the caller does not name others."""

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_ROLES = {
    "user": "User",
    "human": "User",
    "assistant": "Assistant",
    "gpt": "Assistant",
    "model": "Assistant",
    "system": "System",
}


class RecordError(ValueError):
    """One record cannot be formatted; the message says why (no file or line: the caller adds them)."""


def _field(record: Dict, name: str):
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    if name not in record:
        shown = ", ".join(sorted(map(str, record))) or "none"
        raise RecordError(f"missing field '{name}' (fields: {shown})")
    return record[name]


def _text(record: Dict, name: str, numbers: bool = False) -> Optional[str]:
    """The field as text; ``None`` when empty. With ``numbers`` (answer fields), a number becomes its decimal text;
    elsewhere a number is refused (``{"text": 123}`` is a broken record, not a document)."""
    value = _field(record, name)
    if value is None:
        return None
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise RecordError(f"field '{name}' must be a string, got {type(value).__name__}")
    return value if value.strip() else None


@dataclass(frozen=True)
class Formatter:
    """A picklable record -> text function (it travels to worker processes)."""

    kind: str
    fields: Dict[str, str]

    def __call__(self, record: Dict) -> Optional[str]:
        return _KINDS[self.kind](record, self.fields)

    @property
    def required(self) -> List[str]:
        """The record fields this formatter reads."""
        return [self.fields[name] for name in _REQUIRED[self.kind]]


def _format_text(record: Dict, f: Dict[str, str]) -> Optional[str]:
    return _text(record, f["text_field"])


def _format_qa(record: Dict, f: Dict[str, str]) -> Optional[str]:
    question, answer = _text(record, f["question_field"]), _text(record, f["answer_field"], numbers=True)
    if question is None or answer is None:
        return None
    return f"User: {question}\nAssistant: {answer}"


def _strip_think(reasoning: str) -> str:
    """Reasoning without an enclosing ``<think>...</think>`` pair, so the template never doubles the tags."""
    body = reasoning.strip()
    if body.startswith(THINK_OPEN) and body.endswith(THINK_CLOSE):
        body = body[len(THINK_OPEN) : -len(THINK_CLOSE)].strip()
    return body


def _format_long_cot(record: Dict, f: Dict[str, str]) -> Optional[str]:
    question, reasoning = _text(record, f["question_field"]), _text(record, f["reasoning_field"])
    answer = _text(record, f["answer_field"], numbers=True)
    if question is None or reasoning is None or answer is None:
        return None
    return f"{question}\n{THINK_OPEN}\n{_strip_think(reasoning)}\n{THINK_CLOSE}\n{answer}"


def _turn(message, index: int) -> Optional[str]:
    """One chat turn as ``Role: content``; accepts ``{role, content}`` and ShareGPT ``{from, value}``."""
    if not isinstance(message, dict):
        raise RecordError(f"chat turn {index} must be an object with role and content, got {type(message).__name__}")
    role = message.get("role", message.get("from"))
    content = message.get("content", message.get("value"))
    if role is None or content is None:
        shown = ", ".join(sorted(map(str, message))) or "none"
        raise RecordError(f"chat turn {index} needs 'role' and 'content' (fields: {shown})")
    label = _ROLES.get(str(role).lower())
    if label is None:
        raise RecordError(f"chat turn {index} has role '{role}'; known roles: {', '.join(sorted(_ROLES))}")
    if not isinstance(content, str):
        raise RecordError(f"chat turn {index} content must be a string, got {type(content).__name__}")
    return f"{label}: {content}" if content.strip() else None


def _format_chat(record: Dict, f: Dict[str, str]) -> Optional[str]:
    messages = _field(record, f["messages_field"])
    if not isinstance(messages, list):
        raise RecordError(f"field '{f['messages_field']}' must be a list of turns, got {type(messages).__name__}")
    turns: List[str] = [t for t in (_turn(m, i) for i, m in enumerate(messages)) if t is not None]
    if not any(t.startswith("Assistant: ") for t in turns):
        return None  # nothing to learn from a conversation without an answer
    return "\n".join(turns)


_KINDS: Dict[str, Callable[[Dict, Dict[str, str]], Optional[str]]] = {
    "text": _format_text,
    "qa": _format_qa,
    "long_cot": _format_long_cot,
    "chat": _format_chat,
}
FORMATS = tuple(_KINDS)
"""The formatter names ``octo preprocess --format`` (and a mixture source's ``format``) accepts."""


_REQUIRED = {
    "text": ("text_field",),
    "qa": ("question_field", "answer_field"),
    "long_cot": ("question_field", "reasoning_field", "answer_field"),
    "chat": ("messages_field",),
}


def make_formatter(kind: str, **fields: Optional[str]) -> Formatter:
    """The formatter ``kind`` (one of ``FORMATS``) with field names overriding ``DEFAULT_FIELDS``."""
    if kind not in _KINDS:
        raise ValueError(f"unknown format '{kind}': use one of {', '.join(FORMATS)}")
    unknown = set(fields) - set(DEFAULT_FIELDS)
    if unknown:
        raise ValueError(f"unknown field option(s) {sorted(unknown)}: use {sorted(DEFAULT_FIELDS)}")
    chosen = dict(DEFAULT_FIELDS)
    chosen.update({k: v for k, v in fields.items() if v})
    return Formatter(kind, chosen)
