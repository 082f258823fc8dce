"""The benchmark registry: the 13 OctoThinker base-model benchmarks plus AIME24, and how each is prompted, extracted
and scored.

Facts from RECIPE.md and ../shared/data/SOURCES.md: GSM8K uses the 8-shot chain-of-thought prompt (also SVAMP,
ASDiv, MAWPS, TabMWP); MATH, MATH500 and OlympiadBench the Minerva 4-shot prompt; SAT-math, MMLU-STEM, OCW and
MathQA their own 4-shot prompts; AMC23 a zero-shot Q:/A: prompt. AIME24 is not one of the 13; it uses the Minerva
prompt like the other competition sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from megatron_octo.errors import OctoError


class EvalError(OctoError, ValueError):
    """A user mistake in an evaluation request (unknown benchmark, missing data or model); the message names the fix."""


@dataclass(frozen=True)
class EvalItem:
    """One evaluation problem, normalised across benchmarks.

    ``question`` is the text placed in the prompt's task slot; ``gold`` the reference answer as a string;
    ``choices`` the option letters (multiple choice) or option strings (TabMWP) when the answer is one of them.
    """

    id: str
    question: str
    gold: str
    choices: Optional[Tuple[str, ...]] = None
    meta: Dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class HFSource:
    """Where a benchmark lives on the Hugging Face Hub: ``datasets.load_dataset(path, name, split=split)``."""

    path: str
    name: Optional[str] = None
    split: str = "test"


@dataclass(frozen=True)
class Benchmark:
    """A registry entry.

    ``answer_format`` picks the extraction and scoring (see ``scoring.extract_prediction``): ``gsm`` (a number after
    "The answer is"), ``math`` (Minerva final answer / last boxed, math-verify), ``choice`` / ``choice_last``
    (option letters), ``ocw`` (Minerva OCW: numbers within 1 %, else math-verify), ``tabmwp`` (numbers or option
    text). ``converter`` names the row converter in ``loaders``.
    """

    name: str
    title: str
    filename: str
    prompt: str
    answer_format: str
    converter: str
    hf: Optional[HFSource] = None
    in_paper: bool = True


def _b(name, title, filename, prompt, fmt, converter, hf=None, in_paper=True) -> Benchmark:
    return Benchmark(name, title, filename, prompt, fmt, converter, hf, in_paper)


# Paper order (RECIPE.md, "13-benchmark scores"): the order of results tables and of the published figures.
BENCHMARKS: Dict[str, Benchmark] = {
    b.name: b
    for b in [
        _b("gsm8k", "GSM8K", "gsm8k_test.jsonl", "gsm8k_cot_8shot", "gsm", "gsm8k", HFSource("openai/gsm8k", "main")),
        # The full MATH test set (5,000) is not in ../shared/data; its Hub copies are split by subject: give a file.
        _b("math", "MATH", "math_test.jsonl", "minerva_math_4shot", "math", "math"),
        _b(
            "math500",
            "MATH500",
            "math500_test.jsonl",
            "minerva_math_4shot",
            "math",
            "math",
            HFSource("HuggingFaceH4/MATH-500"),
        ),
        _b(
            "olympiadbench",
            "OlympiadBench",
            "olympiadbench_test.jsonl",
            "minerva_math_4shot",
            "math",
            "olympiadbench",
            HFSource("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),
        ),
        _b("amc23", "AMC23", "amc23_test.jsonl", "amc23_0shot", "gsm", "amc23", HFSource("math-ai/amc23")),
        _b("sat", "SAT-math", "sat_test.jsonl", "sat_math_4shot", "choice", "sat"),
        _b("mathqa", "MathQA", "mathqa_test.jsonl", "mathqa_4shot", "choice", "mathqa", HFSource("allenai/math_qa")),
        _b("mmlu_stem", "MMLU-STEM", "mmlu_stem_test.jsonl", "mmlu_stem_4shot", "choice_last", "mmlu_stem"),
        _b("ocw", "OCW", "ocw_test.jsonl", "ocw_courses_4shot", "ocw", "ocw"),
        _b("svamp", "SVAMP", "svamp_test.jsonl", "gsm8k_cot_8shot", "gsm", "svamp", HFSource("ChilleD/SVAMP")),
        _b(
            "asdiv",
            "ASDiv",
            "asdiv_test.jsonl",
            "gsm8k_cot_8shot",
            "gsm",
            "asdiv",
            HFSource("EleutherAI/asdiv", split="validation"),
        ),
        _b("mawps", "MAWPS", "mawps_test.jsonl", "gsm8k_cot_8shot", "gsm", "mawps"),
        _b("tabmwp", "TabMWP", "tabmwp_test1k.jsonl", "gsm8k_cot_8shot", "tabmwp", "tabmwp"),
        _b(
            "aime24",
            "AIME24",
            "aime24_test.jsonl",
            "minerva_math_4shot",
            "math",
            "math",
            HFSource("HuggingFaceH4/aime_2024", split="train"),
            in_paper=False,
        ),
    ]
}

PAPER_BENCHMARKS: Tuple[str, ...] = tuple(n for n, b in BENCHMARKS.items() if b.in_paper)
# The four RL validation sets of RECIPE.md (greedy, zero-shot with the RL template).
RL_VALIDATION_BENCHMARKS: Tuple[str, ...] = ("math500", "gsm8k", "olympiadbench", "amc23")
_GROUPS = {"paper": PAPER_BENCHMARKS, "all": tuple(BENCHMARKS), "rl": RL_VALIDATION_BENCHMARKS}
_ALIASES = {
    "mmlu-stem": "mmlu_stem",
    "sat-math": "sat",
    "sat_math": "sat",
    "olympiad_bench": "olympiadbench",
    "olympiad-bench": "olympiadbench",
    "math-500": "math500",
    "aime2024": "aime24",
    "gsm": "gsm8k",
}


def get_benchmark(name: str) -> Benchmark:
    """The registry entry for ``name`` (case-insensitive, common aliases accepted); EvalError naming the choices."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise EvalError(
            f"unknown benchmark '{name}'; choose from {', '.join(BENCHMARKS)} (or the groups {', '.join(_GROUPS)})"
        )
    return BENCHMARKS[key]


def resolve_benchmarks(spec: Union[str, Sequence[str]]) -> List[Benchmark]:
    """Benchmarks named by a comma-separated string or a list; the groups ``paper`` (the 13), ``rl`` (the four RL
    validation sets) and ``all`` expand in place; duplicates are dropped, order kept."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: List[Benchmark] = []
    for raw in names:
        if not raw.strip():
            continue
        group = _GROUPS.get(raw.strip().lower())
        for bench in [BENCHMARKS[n] for n in group] if group else [get_benchmark(raw)]:
            if bench not in out:
                out.append(bench)
    if not out:
        raise EvalError("no benchmarks given; pass e.g. --benchmarks gsm8k,math500 (or 'paper' for the 13)")
    return out
