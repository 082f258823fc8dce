"""Math evaluation: the 13 OctoThinker benchmarks (+ AIME24), exact few-shot prompts, answer extraction, scoring
through math-verify under a hard time limit, transformers / vLLM generation, and reports.

Public API::

    from megatron_octo.eval import run_eval, resolve_benchmarks, BENCHMARKS, EvalError
    results = run_eval("path/to/hf_model", "gsm8k,math500", data_dir="shared/data/eval", output_dir="eval-out")
    results = run_eval("demo/hf", items=[{"question": "What is 2 + 3?", "answer": "5"}], zero_shot=True,
                       template="user_assistant")

Heavy dependencies (torch, transformers, vLLM, sympy) load only when used.
"""

from megatron_octo.eval.registry import (
    BENCHMARKS,
    PAPER_BENCHMARKS,
    RL_VALIDATION_BENCHMARKS,
    Benchmark,
    EvalError,
    EvalItem,
    resolve_benchmarks,
)
from megatron_octo.eval.runner import run_eval

__all__ = [
    "BENCHMARKS",
    "PAPER_BENCHMARKS",
    "RL_VALIDATION_BENCHMARKS",
    "Benchmark",
    "EvalError",
    "EvalItem",
    "resolve_benchmarks",
    "run_eval",
]
