"""Benchmark loaders: local JSONL files (the layout of ../shared/data/eval) or Hugging Face dataset names, to
``EvalItem`` lists.

The question text is built the way the OctoThinker / DeepSeek-Math evaluation builds its task input (options
appended as "(A) ..., (B) ..." after "What of the following is the right choice? Explain your answer.", SVAMP and
ASDiv body + question, TabMWP's table preamble), so that the few-shot prompts read as in the paper's runs. Row
converters accept the field names of both the local files and the Hub copies (e.g. ``problem`` / ``Problem``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

from megatron_octo.eval.extraction import last_boxed
from megatron_octo.eval.registry import Benchmark, EvalError, EvalItem, HFSource

_QUESTION_KEYS = ("question", "problem", "Problem", "Question", "input", "prompt")
_CHOICE_SUFFIX = "\nWhat of the following is the right choice? Explain your answer.\n"


_REQUIRED = object()


def _get(row: Mapping[str, Any], *keys: str, default: Any = _REQUIRED) -> Any:
    """The first of ``keys`` present (and not None) in ``row``; KeyError naming them when none is and no
    ``default`` is given."""
    for k in keys:
        if k in row and row[k] is not None:
            return row[k]
    if default is _REQUIRED:
        raise KeyError(" / ".join(keys))
    return default


def _num_text(value: Any) -> str:
    """A gold number as text: 27.0 -> "27", 0.5 -> "0.5", "1,000" stays as written."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _item_id(row: Mapping[str, Any], index: int) -> str:
    return str(_get(row, "id", "idx", "pid", "unique_id", "ID", default=index))


def _conv_gsm8k(row, i):
    answer = str(_get(row, "answer"))
    if "####" in answer:  # the Hub copy keeps the worked solution before "#### 72"
        answer = answer.split("####")[-1]
    return EvalItem(_item_id(row, i), str(_get(row, *_QUESTION_KEYS)).strip(), answer.replace(",", "").strip())


def _conv_math(row, i):
    gold = _get(row, "answer", default=None)
    if gold is None:  # the original MATH rows carry only the solution; its last box is the answer
        gold = last_boxed(str(_get(row, "solution", default="")))
    if gold is None:
        raise ValueError("row has neither an answer nor a boxed solution")
    meta = {k: row[k] for k in ("level", "subject", "type") if k in row}
    return EvalItem(_item_id(row, i), str(_get(row, *_QUESTION_KEYS)).strip(), _num_text(gold), meta=meta)


def _conv_olympiadbench(row, i):
    final = _get(row, "final_answer", "answer")
    gold = ", ".join(str(a) for a in final) if isinstance(final, (list, tuple)) else str(final)
    return EvalItem(
        _item_id(row, i),
        str(_get(row, *_QUESTION_KEYS)).strip(),
        gold,
        meta={"answer_type": row.get("answer_type"), "subfield": row.get("subfield")},
    )


def _conv_amc23(row, i):
    return EvalItem(_item_id(row, i), str(_get(row, *_QUESTION_KEYS)).strip(), _num_text(_get(row, "answer")))


def _conv_sat(row, i):
    # "A) x B) y" -> "(A) x (B) y": the reference processing only parenthesises the letters (no commas).
    options = "(" + str(_get(row, "options")).strip()
    options = re.sub(r" ([B-G])\) ", r" (\1) ", options)
    letters = tuple(re.findall(r"\(([A-G])\)", options))
    question = f"{str(_get(row, *_QUESTION_KEYS)).strip()}{_CHOICE_SUFFIX}{options.strip()}"
    return EvalItem(_item_id(row, i), question, str(_get(row, "Answer", "answer")).strip().upper(), letters)


def _conv_mmlu_stem(row, i):
    options = list(_get(row, "options", "choices"))
    letters = "ABCDEFGHIJ"[: len(options)]
    rendered = ", ".join(f"({lab}) {str(opt).strip()}" for lab, opt in zip(letters, options))
    answer = _get(row, "answer")
    gold = letters[answer] if isinstance(answer, int) else str(answer).strip().upper()
    question = f"{str(_get(row, *_QUESTION_KEYS)).strip()}{_CHOICE_SUFFIX}{rendered}"
    return EvalItem(_item_id(row, i), question, gold, tuple(letters), meta={"topic": row.get("topic")})


def _conv_mathqa(row, i):
    problem = str(_get(row, "problem", "Problem")).strip()
    problem = problem[:1].upper() + problem[1:]
    # "a ) 12 , b ) 16" -> "(A) 12, (B) 16"
    options = (
        re.sub(
            r"([a-z])\s*\)\s*([^,]+)\s*,?\s*",
            lambda m: f"({m.group(1).upper()}) {m.group(2).strip()}, ",
            str(_get(row, "options")),
        )
        .strip()
        .rstrip(",")
    )
    letters = tuple(re.findall(r"\(([A-E])\)", options))
    return EvalItem(_item_id(row, i), f"{problem}{_CHOICE_SUFFIX}{options}", str(_get(row, "correct")).upper(), letters)


def _conv_ocw(row, i):
    return EvalItem(_item_id(row, i), str(_get(row, *_QUESTION_KEYS)).strip(), str(_get(row, "answer")).strip())


def _conv_svamp(row, i):
    body = str(_get(row, "Body", "body")).strip()
    body = body if body.endswith(".") else body + "."
    question = f"{body} {str(_get(row, 'Question', 'question')).strip()}"
    return EvalItem(_item_id(row, i), question, _num_text(_get(row, "Answer", "answer")))


def _conv_asdiv(row, i):
    gold = re.sub(r"\(.*?\)", "", str(_get(row, "answer"))).strip()  # "9 (apples)" -> "9"
    question = f"{str(_get(row, 'body', 'Body')).strip()} {str(_get(row, 'question', 'Question')).strip()}"
    return EvalItem(_item_id(row, i), question, gold)


def _conv_mawps(row, i):
    return EvalItem(
        _item_id(row, i), str(_get(row, "input", *_QUESTION_KEYS)).strip(), _num_text(_get(row, "target", "answer"))
    )


def _conv_tabmwp(row, i):
    title = row.get("table_title")
    question = (
        f"Read the following table {f'regarding {chr(34)}{title}{chr(34)} ' if title else ''}"
        f"and answer a question:\n{row['table']}\n{row['question']}"
    )
    choices = row.get("choices")
    if choices:
        question += f" Please select from the following options: {choices}"
    return EvalItem(
        _item_id(row, i),
        question,
        str(row["answer"]).strip(),
        tuple(choices) if choices else None,
        meta={"ans_type": row.get("ans_type")},
    )


def _conv_custom(row, i):
    """A user's own items: ``question`` and ``answer`` (and optionally ``id`` and ``choices``)."""
    choices = row.get("choices")
    return EvalItem(
        _item_id(row, i),
        str(_get(row, *_QUESTION_KEYS)).strip(),
        _num_text(_get(row, "answer", "gold")),
        tuple(choices) if choices else None,
    )


CONVERTERS: Dict[str, Callable[[Mapping[str, Any], int], EvalItem]] = {
    "gsm8k": _conv_gsm8k,
    "math": _conv_math,
    "olympiadbench": _conv_olympiadbench,
    "amc23": _conv_amc23,
    "sat": _conv_sat,
    "mmlu_stem": _conv_mmlu_stem,
    "mathqa": _conv_mathqa,
    "ocw": _conv_ocw,
    "svamp": _conv_svamp,
    "asdiv": _conv_asdiv,
    "mawps": _conv_mawps,
    "tabmwp": _conv_tabmwp,
    "custom": _conv_custom,
}


def read_jsonl(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """Rows of a JSONL file (blank lines skipped); EvalError naming the file and line on bad JSON."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise EvalError(f"{path}:{n} is not valid JSON ({exc.msg}); fix or replace the file") from exc
    return rows


def items_from_rows(converter: str, rows: Iterable[Mapping[str, Any]], source: str = "") -> List[EvalItem]:
    """Convert raw rows with the named converter; EvalError naming the row that lacks a field."""
    conv = CONVERTERS[converter]
    items = []
    for i, row in enumerate(rows):
        try:
            items.append(conv(row, i))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EvalError(
                f"{source or converter} row {i} cannot be read as {converter} ({exc!r}); "
                "check that the file is the benchmark's test set"
            ) from exc
    return items


def custom_items(items: Iterable[Mapping[str, Any]]) -> List[EvalItem]:
    """EvalItems from plain dicts with ``question`` and ``answer`` (e.g. the demo corpus's test split)."""
    return items_from_rows("custom", items, "custom items")


def benchmark_file(bench: Benchmark, data_dir: Union[str, Path]) -> Path:
    """The local file of ``bench`` under ``data_dir`` (or ``data_dir/eval``); EvalError with the fix if absent."""
    root = Path(data_dir)
    if not root.is_dir():
        raise EvalError(
            f"data directory {root} does not exist; point --data-dir at a directory of benchmark JSONL "
            "files (like shared/data/eval) or use --source hf"
        )
    for cand in (root / bench.filename, root / "eval" / bench.filename):
        if cand.is_file():
            return cand
    raise EvalError(
        f"no {bench.filename} for {bench.name} in {root}; add the file, drop the benchmark, "
        "or load it from the Hub with --source hf"
    )


def parse_hf_spec(spec: str) -> HFSource:
    """ "repo[:config][@split]" -> HFSource (split defaults to test)."""
    spec, _, split = spec.partition("@")
    path, _, name = spec.partition(":")
    if not path:
        raise EvalError(f"bad Hugging Face dataset '{spec}'; write REPO[:CONFIG][@SPLIT]")
    return HFSource(path, name or None, split or "test")


def load_hf_rows(source: HFSource) -> List[Dict[str, Any]]:
    """Rows of a Hub dataset through ``datasets.load_dataset`` (downloads: a user feature, never used in tests)."""
    try:
        import datasets
    except ImportError as exc:
        raise EvalError(
            "loading benchmarks from the Hugging Face Hub needs the datasets package "
            "(pip install 'megatron-octo[eval]'), or give local files with --data-dir"
        ) from exc
    ds = datasets.load_dataset(source.path, source.name, split=source.split)
    return [dict(r) for r in ds]


def load_benchmark(
    bench: Benchmark,
    data_dir: Optional[Union[str, Path]] = None,
    hf: Optional[Union[str, HFSource]] = None,
    limit: Optional[int] = None,
) -> List[EvalItem]:
    """Items of ``bench``: from ``data_dir`` when given, else from the Hub (``hf`` overrides the registered
    source). ``limit`` keeps the first N items (a deterministic subset)."""
    if data_dir is not None and hf is None:
        path = benchmark_file(bench, data_dir)
        items = items_from_rows(bench.converter, read_jsonl(path), str(path))
    else:
        source = parse_hf_spec(hf) if isinstance(hf, str) else (hf or bench.hf)
        if source is None:
            raise EvalError(
                f"{bench.name} has no registered Hugging Face dataset; give its file with --data-dir "
                f"or name one with --hf-dataset {bench.name}=REPO[:CONFIG][@SPLIT]"
            )
        items = items_from_rows(bench.converter, load_hf_rows(source), source.path)
    return items[:limit] if limit else items
