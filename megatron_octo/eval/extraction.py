"""Answer extraction: from a model's completion to the short answer string that is scored.

Every function here is pure string work (no sympy), cheap enough to run in the caller's process. Each returns the
extracted answer as a string, or ``None`` when the completion holds no answer of the expected form; callers score
``None`` as wrong.

The patterns follow the few-shot exemplars of the evaluation prompts (../shared/data/prompts): the GSM8K chain of
thought ends with "The answer is N.", Minerva's MATH solutions with "Final Answer: The final answer is $X$. I hope it
is correct.", the multiple-choice prompts with "The final answer is (B).", and RL responses put the answer in the
last ``\\boxed{}``.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Sequence

# A number as models write it: sign, thousands separators, decimals, and an optional exponent ("4.5e33").
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"[Tt]he (?:final )?answer is[:\s]*", re.S)
# Minerva's "Final Answer: The final answer is X. I hope it is correct." (else the same without "Final Answer:", in
# any case): where X starts and where it ends.
_MINERVA_START = re.compile(r"[Ff]inal [Aa]nswer:?\s*+[Tt]he final answer is")
_FINAL_START = re.compile(r"final answer is", re.I)
_HOPE, _HOPE_I = re.compile(r"I hope it is correct"), re.compile(r"I hope it is correct", re.I)
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BOX = re.compile(r"\\(?:boxed|fbox)\b")
_BRACE = re.compile(r"[{}]")
_BARE_TOKEN = re.compile(r"[^\s$]+")


def truncate_at_stop(text: str, stop: Iterable[str]) -> str:
    """``text`` up to the first occurrence of any stop string (the stop string itself is dropped).

    Backends already stop there; applying it again makes scoring independent of the backend, and of text a model
    produced after the point where generation should have ended.
    """
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    return text[:cut]


def _brace_pairs(text: str) -> Dict[int, int]:
    """Position of each ``{`` -> position of its matching ``}`` (braces after a backslash do not count); unclosed
    ones are absent. One pass with a stack: linear in the text, whatever it holds (20,000 unclosed ``\\boxed{``
    included), where scanning from each box to its end would be quadratic."""
    pairs: Dict[int, int] = {}
    stack: List[int] = []
    for m in _BRACE.finditer(text):
        i = m.start()
        if i and text[i - 1] == "\\":
            continue
        if m.group() == "{":
            stack.append(i)
        elif stack:
            pairs[stack.pop()] = i
    return pairs


def boxed_answers(text: str) -> List[str]:
    """Contents of every complete ``\\boxed{...}`` / ``\\fbox{...}`` (and ``\\boxed 5`` without braces), in order.

    Nested braces are balanced; an unclosed box is skipped (it is malformed and holds no reliable answer). Linear
    in the length of ``text``.
    """
    found = []
    pairs: Optional[Dict[int, int]] = None
    for m in _BOX.finditer(text):
        j = m.end()
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            if pairs is None:
                pairs = _brace_pairs(text)
            if j in pairs:
                found.append(text[j + 1 : pairs[j]])
        elif j > m.end():  # "\boxed 5": the token up to the next space or dollar
            tok = _BARE_TOKEN.match(text, j)
            if tok:
                found.append(tok.group(0))
    return [inner.strip() for inner in found]


def last_boxed(text: str) -> Optional[str]:
    """Content of the last complete ``\\boxed{}`` in ``text`` (None when there is none). The RL reward's extractor."""
    answers = boxed_answers(text)
    return answers[-1] if answers else None


def count_boxed(text: str) -> int:
    """How many box commands ``text`` holds, complete or not (format-aware rewards penalise more than one)."""
    return sum(text.count(cmd) for cmd in _BOX_COMMANDS)


def last_number(text: str) -> Optional[str]:
    """The last number in ``text`` with thousands separators removed ("1,000.5" -> "1000.5"), or None."""
    nums = _NUMBER.findall(text)
    return nums[-1].replace(",", "") if nums else None


def first_number(text: str) -> Optional[str]:
    """The first number in ``text`` with thousands separators removed, or None."""
    m = _NUMBER.search(text)
    return m.group(0).replace(",", "") if m else None


def answer_is_tail(text: str) -> Optional[str]:
    """The text after the last "The answer is" on its line, without trailing period and dollar signs, or None."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    tail = text[matches[-1].end() :].split("\n", 1)[0].strip()
    tail = re.sub(r"\.\s*$", "", tail).strip()
    return tail or None


def _final_answers(text: str, start: "re.Pattern[str]", hope: "re.Pattern[str]") -> List[str]:
    """Each answer between a ``start`` match and the next ``hope`` match (non-overlapping, in order), without
    trailing spaces and one trailing period; linear in the text (a lazy ``(.*?)I hope`` regex rescans to the end
    from every start that has no ending)."""
    out: List[str] = []
    pos = 0
    while True:
        m = start.search(text, pos)
        if m is None:
            return out
        h = hope.search(text, m.end())
        if h is None:
            return out
        seg = text[m.end() : h.start()].strip()
        out.append(seg[:-1].rstrip() if seg.endswith(".") else seg)
        pos = h.end()


def minerva_final(text: str) -> Optional[str]:
    """X of "Final Answer: The final answer is X. I hope it is correct." (dollars stripped), or None."""
    matches = _final_answers(text, _MINERVA_START, _HOPE) or _final_answers(text, _FINAL_START, _HOPE_I)
    if not matches:
        return None
    ans = matches[-1].strip()
    if re.fullmatch(r"\$[^$]+\$", ans):  # one "$...$" block: its content ("$69$, $84$" stays for math-verify)
        ans = ans[1:-1].strip()
    return ans or None


def extract_gsm(text: str) -> Optional[str]:
    """GSM8K-style numeric answer: the number after the last "The answer is", else the last boxed number, else the
    last number of the completion (what the GSM8K few-shot evaluation of DeepSeek-Math / OctoThinker scores)."""
    tail = answer_is_tail(text)
    if tail is not None:
        frac = re.match(r"\s*(%s)\s*/\s*(\d+)(?![\d.])" % _NUMBER.pattern, tail.replace("$", " "))
        if frac:  # "The answer is 5/2." is a fraction, not 5
            return f"{frac.group(1).replace(',', '')}/{frac.group(2)}"
        num = first_number(tail.replace("$", " "))
        if num is not None:
            return num
    boxed = last_boxed(text)
    if boxed is not None and first_number(boxed) is not None and _NUMBER.fullmatch(boxed.replace("\\!", "")):
        return boxed.replace(",", "")
    return last_number(text)


def extract_math(text: str) -> Optional[str]:
    """Free-form math answer: Minerva's "final answer is $X$", else the last ``\\boxed{}``, else "The answer is X"."""
    for fn in (minerva_final, last_boxed, answer_is_tail):
        ans = fn(text)
        if ans:
            return ans
    return None


def extract_choice(text: str, letters: Sequence[str] = "ABCDE", last_mention: bool = False) -> Optional[str]:
    """A multiple-choice letter (upper case), or None.

    Order: "the final answer is (X)" / "the answer is X", then a boxed letter; with ``last_mention`` (the MMLU-STEM
    scoring of the reference harness) the last "(X)" anywhere in the text is accepted as a fallback.
    """
    letter_set = "".join(letters).upper()
    # "(b)" in any case, or a bare capital "B": a bare lower-case letter is usually the article "a".
    # One possessive loop over what may stand between "answer is" and the letter: a chain of optional parts
    # joined by \s* would backtrack polynomially on a long run of spaces.
    pat = re.compile(
        r"answer is:?(?:\s|\$|\\boxed\{|\\text\{)*+(?:\(([%s])\)|([%s])\b)"
        % (letter_set + letter_set.lower(), letter_set)
    )
    found = pat.findall(text)
    if found:
        paren, bare = found[-1]
        return (paren or bare).upper()
    boxed = last_boxed(text)
    if boxed is not None:
        m = re.fullmatch(r"(?:\\text\{)?\s*+\(?([%s])\)?\s*+\}?" % letter_set, boxed.strip(), re.I)
        if m:
            return m.group(1).upper()
    if last_mention:
        found = re.findall(r"\(([%s])\)" % letter_set, text, re.I)
        if found:
            return found[-1].upper()
    return None


def extract_choice_text(text: str, choices: Sequence[str]) -> Optional[str]:
    """Which of the option strings ``choices`` the completion picked (TabMWP's multiple-choice questions), or None.

    The option named after the last "The answer is" wins; otherwise the option mentioned last in the completion.
    An option that ends where a longer one ends loses to it ("buying a used phone" is not read as "phone").
    """
    ordered = sorted((c for c in choices if str(c).strip()), key=lambda c: -len(str(c)))
    tail = answer_is_tail(text)
    for scope in ([tail] if tail else []) + [text]:
        low = scope.lower()
        best, best_pos = None, -1
        for c in ordered:
            needle = str(c).strip().rstrip(".").lower()
            pos = _word_rfind(low, needle)
            end = pos + len(needle) if pos >= 0 else -1
            if end > best_pos:  # strict: on a tie (an option ending another) the longer option, tried first, stays
                best, best_pos = str(c), end
        if best is not None:
            return best
    return None


def _word_rfind(haystack: str, needle: str) -> int:
    """Position of the last whole-word occurrence of ``needle`` in ``haystack`` (-1 if none)."""
    if not needle:
        return -1
    matches = list(re.finditer(r"(?<![\w])%s(?![\w])" % re.escape(needle), haystack))
    return matches[-1].start() if matches else -1
