"""Scoring: is an extracted answer equivalent to the gold answer?

Equivalence of mathematical answers is math-verify's (``math_verify.parse`` / ``verify``: fractions, decimals,
percentages, units in ``\\text{}``, degrees, intervals, tuples, sets of several answers, thousands separators).
What is added here is the usual evaluation normalisation around it: exact letters for multiple choice, plain
numbers compared without sympy, OCW's 1 % numeric tolerance (Minerva), and word answers compared as text.

Sympy can run for ever on some inputs (``9^{9^{9^{9}}}``), so every math-verify call runs in a ``DeadlinePool``
worker with a hard per-verification limit (2 s by default); what does not finish counts as wrong. The cheap
comparisons (letters, plain numbers, identical strings) are decided in the caller's process.
"""

from __future__ import annotations

import atexit
import math
import re
import threading
from fractions import Fraction
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

from megatron_octo.eval import extraction as ex
from megatron_octo.eval.pool import DeadlinePool
from megatron_octo.eval.registry import EvalItem

KINDS = ("math", "number", "letter", "text", "ocw")
DEFAULT_TIMEOUT = 2.0
OCW_REL_TOL = Fraction(1, 100)  # Minerva (Lewkowycz et al. 2022, appendix): numeric answers within 1 % relative error
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


# ----------------------------------------------------------------------------- extraction per benchmark format
def extract_prediction(fmt: str, completion: str, item: EvalItem, zero_shot: bool = False) -> Tuple[Optional[str], str]:
    """(extracted answer or None, scoring kind) for a completion of a benchmark with answer format ``fmt``.

    Zero-shot (RL-template) completions are read from their last ``\\boxed{}`` first, then as a few-shot
    completion would be.
    """
    choices = item.choices
    if zero_shot:
        boxed = ex.last_boxed(completion)
        if boxed is not None:
            return _from_boxed(fmt, boxed, item)
    if fmt in ("choice", "choice_last"):
        return ex.extract_choice(completion, choices or "ABCDE", last_mention=fmt == "choice_last"), "letter"
    if fmt == "math":
        return ex.extract_math(completion), "math"
    if fmt == "ocw":
        return ex.minerva_final(completion) or ex.last_boxed(completion), "ocw"
    if fmt == "tabmwp" and choices:
        return ex.extract_choice_text(completion, choices), "text"
    if fmt in ("gsm", "tabmwp"):
        if as_number(item.gold) is None:  # ASDiv / TabMWP word answers ("Mrs. Hilt", "5:6", "1 hour")
            return ex.answer_is_tail(completion) or ex.last_boxed(completion), "text"
        return ex.extract_gsm(completion), "number"
    raise ValueError(f"unknown answer format {fmt!r}")


def _from_boxed(fmt: str, boxed: str, item: EvalItem) -> Tuple[Optional[str], str]:
    if fmt in ("choice", "choice_last"):
        return ex.extract_choice(f"The answer is {boxed}", item.choices or "ABCDE"), "letter"
    if fmt == "tabmwp" and item.choices:
        return ex.extract_choice_text(boxed, item.choices), "text"
    if fmt in ("gsm", "tabmwp"):
        return boxed, "text" if as_number(item.gold) is None else "number"
    return boxed, "ocw" if fmt == "ocw" else "math"


# ----------------------------------------------------------------------------- cheap comparisons (caller side)
_MAX_NUMBER_CHARS = 4_000  # Python refuses int() of strings over 4,300 digits
_MAX_EXPONENT = 1_000
_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE]([-+]?\d+))?")
_FRACTION = re.compile(r"(-?\d+)\s*+/\s*+(\d+)")


def as_number(text: Optional[str]) -> Optional[Fraction]:
    """A plain number written as text ("1,000", "-3.5", "4.5e33", "3/10", "$18", "18.") as an exact Fraction, else
    None. Exact, so a 400-digit answer neither overflows a float nor rounds to infinity (400 ones are not 400
    twos); numbers longer than 4,000 characters or with exponents beyond +-1,000 are left to math-verify (in the
    time-limited pool), as is anything with LaTeX, units or percent signs."""
    if text is None:
        return None
    s = str(text).strip().replace("\\$", "").replace("$", "").strip().rstrip(".").strip()
    if len(s) > _MAX_NUMBER_CHARS:
        return None
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    m = _PLAIN_NUMBER.fullmatch(s)
    if m:
        if m.group(1) is not None and abs(int(m.group(1))) > _MAX_EXPONENT:
            return None
        return Fraction(s)
    m = _FRACTION.fullmatch(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    return None


_REL_TOL, _ABS_TOL = Fraction(1, 10**6), Fraction(1, 10**9)


def numbers_equal(a: Fraction, b: Fraction) -> bool:
    """Equal up to float noise: relative 1e-6 (math-verify rounds floats to 6 decimals likewise), absolute 1e-9;
    in exact arithmetic."""
    return abs(a - b) <= max(_REL_TOL * max(abs(a), abs(b)), _ABS_TOL)


def within_relative(value: Fraction, gold: Fraction, tol: Fraction) -> bool:
    """|value - gold| <= tol * |gold|, exactly."""
    return abs(value - gold) <= tol * abs(gold)


def normalize_answer(text: str) -> str:
    """The usual answer clean-up before comparison, for what math-verify does not cover: an answer wholly wrapped
    in ``\\text{}`` / ``\\mathrm{}`` is unwrapped, thin-space thousands separators go ("1\\,000" -> "1000"), and
    a plain number followed by unit words keeps only the number ("5 cm", "18 dollars" -> "5", "18")."""
    s = str(text).strip()
    m = re.fullmatch(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", s)
    if m:
        s = m.group(1).strip()
    s = re.sub(r"(?<=\d)\\[,!;: ](?=\d{3}(?!\d))", "", s)
    m = re.fullmatch(r"(\S+)\s+[A-Za-z][A-Za-z .]*", s)  # ("5 \\text{ cm}" is math-verify's to read)
    if m and as_number(m.group(1)) is not None:
        s = m.group(1)
    return s


def _norm_text(s: str) -> str:
    s = s.replace("\\text{", "").replace("$", "").replace("}", "").replace("{", "")
    return re.sub(r"\s+", " ", s).strip().rstrip(".").strip().lower()


def quick_judge(kind: str, pred: Optional[str], gold: str) -> Optional[bool]:
    """Decide without sympy when possible: True/False, or None when math-verify must judge (``judge``)."""
    if pred is None or not str(pred).strip() or not str(gold).strip():
        return False
    if kind == "letter":
        return pred.strip().upper() == gold.strip().upper()
    pred, gold = normalize_answer(pred), normalize_answer(gold)
    p, g = as_number(pred), as_number(gold)
    if kind == "text":
        if p is not None and g is not None:
            return numbers_equal(p, g)
        return _norm_text(pred) == _norm_text(gold)
    if kind == "ocw" and g is not None and p is not None:
        return within_relative(p, g, OCW_REL_TOL)
    if p is not None and g is not None and kind != "ocw":
        return numbers_equal(p, g)
    if re.sub(r"\s+", "", pred) == re.sub(r"\s+", "", gold):
        return True
    return None


# ----------------------------------------------------------------------------- math-verify (worker side)
def _quiet_math_verify() -> None:
    """We disable math-verify's own SIGALRM timeouts (the pool's alarm and hard deadline replace them); mark its
    one-time "timeout is disabled" warning as shown."""
    import math_verify.grader
    import math_verify.parser

    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True


def _latex(text: str) -> str:
    """Text for math-verify: as written when it has its own ``$...$`` or box, else wrapped in ``\\boxed{}`` (so
    that "1,3,5" reads as three answers and "1,000" as one thousand, as in LaTeX)."""
    if _UNESCAPED_DOLLAR.search(text) or "\\boxed" in text:
        return text
    return "\\boxed{" + text + "}"


@lru_cache(maxsize=4096)
def _parse_cached(text: str):
    """Gold answers repeat (every rollout of a prompt shares one); parsing them once per worker saves time."""
    from math_verify import parse

    return parse(_latex(text), parsing_timeout=None)


def math_equal(pred: str, gold: str) -> bool:
    """math-verify equivalence of two answer strings, in this process and without a time limit: call it only
    inside a ``DeadlinePool`` worker (or on inputs known to be small)."""
    from math_verify import parse, verify

    _quiet_math_verify()
    gold_parsed = _parse_cached(gold)
    if not gold_parsed:
        return False
    pred_parsed = parse(_latex(pred), parsing_timeout=None)
    return bool(pred_parsed) and bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _sympy_float(text: str) -> Optional[float]:
    """The numeric value of an answer written in LaTeX ("4.5 \\times 10^{33}", "1.6 \\mathrm{~cm}"), or None."""
    from math_verify import parse

    _quiet_math_verify()
    for value in parse(_latex(text), parsing_timeout=None):
        try:
            if getattr(value, "is_number", False):
                return float(value.evalf())
        except (TypeError, ValueError, AttributeError):
            continue
    return None


def judge(kind: str, pred: str, gold: str) -> bool:
    """Full judgement of one answer (worker side; may be slow): quick rules first, then math-verify."""
    quick = quick_judge(kind, pred, gold)
    if quick is not None:
        return quick
    pred, gold = normalize_answer(pred), normalize_answer(gold)
    gold_number = as_number(gold)
    if kind == "ocw" and gold_number is not None:
        value = _sympy_float(pred)
        return value is not None and math.isfinite(value) and within_relative(Fraction(value), gold_number, OCW_REL_TOL)
    if kind == "letter":
        return False
    return math_equal(pred, gold)


# ----------------------------------------------------------------------------- batched scoring
_SHARED: Optional[DeadlinePool] = None
_SHARED_LOCK = threading.Lock()


def shared_pool(workers: Optional[int] = None, timeout: float = DEFAULT_TIMEOUT) -> DeadlinePool:
    """A process-wide verification pool, started on first use and closed at exit; re-created when asked for a
    different size or limit."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is not None and ((workers and workers != _SHARED.n_workers) or timeout != _SHARED.timeout):
            _SHARED.close()
            _SHARED = None
        if _SHARED is None:
            _SHARED = DeadlinePool(workers=workers, timeout=timeout)
            atexit.register(_SHARED.close)
        return _SHARED


def score_predictions(
    triples: Sequence[Tuple[str, Optional[str], str]],
    pool: Optional[DeadlinePool] = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> List[bool]:
    """Correctness of each (kind, prediction, gold). Quick cases are decided here; the rest go to ``pool`` (the
    shared pool when None), each distinct triple once, where each verification has ``pool.timeout`` seconds and
    counts as wrong after."""
    results: List[Optional[bool]] = [quick_judge(k, p, g) for k, p, g in triples]
    # each distinct (kind, prediction, gold) goes to the workers once
    todo = list(dict.fromkeys(tuple(triples[i]) for i, r in enumerate(results) if r is None))
    if todo:
        pool = pool or shared_pool(timeout=timeout)
        verdict = dict(zip(todo, pool.map(judge, todo, default=False)))
        results = [verdict[tuple(t)] if r is None else r for t, r in zip(triples, results)]
    return [bool(r) for r in results]


def is_equivalent(pred: Optional[str], gold: str, kind: str = "math", timeout: float = DEFAULT_TIMEOUT) -> bool:
    """One answer against one gold answer, with the time limit (convenience over ``score_predictions``)."""
    return score_predictions([(kind, pred, gold)], timeout=timeout)[0]
