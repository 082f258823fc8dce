"""The demo corpus: the demo task's problems (``data.demo_task``: chains of additions and subtractions) written as
the recipe's four kinds of data, a small BPE tokenizer trained on them, their indexed datasets, and the held-out
evaluation and RL prompt files. Nothing is downloaded.

Each kind renders problems its own way, as the OctoThinker sources differ:

- ``web`` (format ``text``): web-like pages of a few worked chains each, in prose or as ``Q: ... A: ... The answer
  is N.`` exercises (the few-shot layout), between generic sentences; no ``\\boxed{}``;
- ``qa`` (format ``qa``, the Short branch): the question and a short chain of thought, one line per operation's
  result, ending in ``The answer is \\boxed{N}.``;
- ``long_cot`` (format ``long_cot``, the Long branch): R1-style transcripts, the question in a ``User:`` turn and
  the ``Assistant:`` thinking at length in ``<think>`` (each step stated and restated, then checked by undoing
  every operation) before the boxed answer; about three times the tokens of a ``qa`` solution;
- ``chat`` (format ``chat``, instruction data): a user asking and the assistant answering as in ``qa``, sometimes
  with a follow-up turn.

Training records come from the task's ``train`` split only. ``eval.jsonl`` holds held-out problems (``prompt`` /
``answer``, the layout of MATH8K) from the ``eval`` split, ``rl.jsonl`` RL prompts from the ``rl`` split, and
``few_shot_prompts.json`` a 4-shot prompt set (``DEMO_PROMPT_SET``, training problems as exemplars) in the layout of
the OctoThinker evaluation's prompt file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from megatron_octo.data.demo_task import Problem, TaskSpec, distinct, problems

__all__ = ["Problem", "TaskSpec", "problems", "generate", "build_demo_data", "demo_mixture_sources"]

KINDS = {"web": "text", "qa": "qa", "long_cot": "long_cot", "chat": "chat"}
"""Demo kind -> the ``octo preprocess`` format that reads it."""
DEFAULT_SIZES = {"web": 1500, "qa": 3000, "long_cot": 1500, "chat": 1000, "eval": 300, "rl": 400}
"""Records per kind (web: pages of several problems each), held-out evaluation problems, and RL prompts."""
SPECIAL_TOKENS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "pad_token": "<|pad|>"}
"""The demo tokenizer's special tokens (Llama-3 names for BOS/EOS)."""
DEMO_VOCAB_SIZE = 512
"""Vocabulary of the demo BPE tokenizer (256 byte symbols, 3 special tokens, the rest merges)."""
DEMO_PROMPT_SET = "demo_chain_4shot"
"""The few-shot prompt set of the demo's ``few_shot_prompts.json``."""
FEW_SHOT_EXEMPLARS = 4

_OPS = {"+": ("add", "to"), "-": ("subtract", "from")}


def boxed(answer: int) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def short_solution(p: Problem) -> str:
    """The short chain of thought: one ``a op b = c.`` per operation."""
    return " ".join(p.steps)


def long_reasoning(p: Problem) -> str:
    """The long chain of thought: each step stated and restated, then a check that undoes every operation."""
    lines = ["Let me work through this one operation at a time.", f"I start with {p.start}."]
    value = p.start
    for (op, b), step in zip(p.ops, p.steps):
        verb, prep = _OPS[op]
        value = value + b if op == "+" else value - b
        lines.append(f"Next I {verb} {b}: {step} Now I have {value}.")
    undo = []
    for op, b in reversed(p.ops):
        back = value - b if op == "+" else value + b
        undo.append(f"{value} {'-' if op == '+' else '+'} {b} = {back}.")
        value = back
    lines.append("Let me double-check by undoing each step: " + " ".join(undo) + f" I am back at {p.start}, good.")
    lines.append(f"So the final result is {p.answer}.")
    return "\n".join(lines)


_INTROS = [
    "Mental arithmetic, part {n}: chains of additions and subtractions.",
    "Practice page {n}. Work left to right and write down every running total.",
    "Homework help, lesson {n}: adding and taking away one number at a time.",
    "Arithmetic drills for today. Keep a running total as you go.",
]
_FILLER = [
    "Going one operation at a time keeps mistakes out of the final answer.",
    "Teachers recommend writing each running total down.",
    "Adding makes the total bigger; subtracting makes it smaller.",
    "Check your work by undoing the steps in reverse.",
    "These exercises take about ten minutes a day.",
]


def _web_example(p: Problem, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"Q: {p.question}\nA: {short_solution(p)} The answer is {p.answer}."
    return f"Example: {p.question} Step by step: {short_solution(p)} So the result is {p.answer}."


def _web(group: List[Problem], rng: random.Random, n: int) -> Dict:
    parts = [rng.choice(_INTROS).format(n=n + 1)]
    for p in group:
        parts.append(_web_example(p, rng))
        if rng.random() < 0.3:
            parts.append(rng.choice(_FILLER))
    return {"text": "\n\n".join(parts), "final_answer": [str(p.answer) for p in group]}


def _qa(p: Problem) -> Dict:
    return {"question": p.question, "answer": f"{short_solution(p)} {boxed(p.answer)}", "final_answer": str(p.answer)}


def _long_cot(p: Problem) -> Dict:
    return {
        "question": f"User: {p.question}\nAssistant:",
        "reasoning": long_reasoning(p),
        "answer": boxed(p.answer),
        "final_answer": str(p.answer),
    }


def _chat(p: Problem, rng: random.Random) -> Dict:
    ask = rng.choice(["", "Can you help me with this? ", "Please solve: ", "Quick question. "])
    messages = [
        {"role": "user", "content": ask + p.question},
        {"role": "assistant", "content": f"{short_solution(p)} {boxed(p.answer)}"},
    ]
    if rng.random() < 0.3:
        messages += [
            {"role": "user", "content": "Are you sure?"},
            {"role": "assistant", "content": f"Yes. Checking again gives {p.answer}."},
        ]
    return {"messages": messages, "final_answer": str(p.answer)}


def few_shot_prompts(exemplars: List[Problem]) -> Dict:
    """The demo's few-shot prompt file (the layout of the OctoThinker evaluation's ``few_shot_prompts.json``):
    one GSM8K-style ``Q:`` / ``A:`` prompt set over training problems."""
    shots = "\n\n\n".join(f"Q: {p.question}\nA: {short_solution(p)} The answer is {p.answer}." for p in exemplars)
    return {
        DEMO_PROMPT_SET: {
            "description": "4-shot chain-of-thought prompt over the demo task's training problems (Q:/A: format)",
            "prompt_template": "{few_shot_prompt}\n\n\nQ: {task_input}\nA: {task_output}",
            "returned_as": "prompt.rstrip()",
            "stop_words": ["\nQ:", "\n\n"],
            "few_shot_prompt": shots,
        }
    }


def generate(seed: int = 0, sizes: Optional[Dict[str, int]] = None, spec: Optional[TaskSpec] = None) -> Dict:
    """Records per kind (``web``, ``qa``, ``long_cot``, ``chat``), ``eval`` and ``rl`` problems, and the few-shot
    prompt file under ``few_shot``; the same for the same seed. Training records are drawn from the task's
    ``train`` split, ``eval`` / ``rl`` are distinct problems of their own splits."""
    sizes, spec = {**DEFAULT_SIZES, **(sizes or {})}, spec or TaskSpec()
    rng = random.Random(f"demo-train-{seed}")
    train = problems(rng, spec, "train")
    out: Dict = {"web": [], "qa": [], "long_cot": [], "chat": []}
    for i in range(sizes["web"]):
        out["web"].append(_web([next(train) for _ in range(rng.randint(2, 4))], rng, i))
    out["qa"] = [_qa(next(train)) for _ in range(sizes["qa"])]
    out["long_cot"] = [_long_cot(next(train)) for _ in range(sizes["long_cot"])]
    out["chat"] = [_chat(next(train), rng) for _ in range(sizes["chat"])]
    for split in ("eval", "rl"):
        out[split] = [
            {"id": f"demo-{split}-{i}", "prompt": p.question, "answer": str(p.answer), "source": "demo"}
            for i, p in enumerate(distinct(split, sizes[split], f"demo-{split}-{seed}", spec))
        ]
    out["few_shot"] = few_shot_prompts([next(train) for _ in range(FEW_SHOT_EXEMPLARS)])
    return out


def corpus_texts(records: Dict[str, List[Dict]]) -> Iterator[str]:
    """The formatted training texts of all kinds (what the tokenizer is trained on)."""
    from megatron_octo.data.formatters import make_formatter

    for kind, fmt in KINDS.items():
        formatter = make_formatter(fmt)
        for record in records[kind]:
            text = formatter(record)
            if text:
                yield text


def train_tokenizer(texts: Iterator[str], out_dir: Path, vocab_size: int = DEMO_VOCAB_SIZE) -> Path:
    """Train a byte-level BPE (digits split one by one, so numbers stay learnable) and save it as a Hugging Face
    tokenizer directory that ``AutoTokenizer`` loads: BOS added in front of every text, EOS and PAD defined."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values())
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out_dir))
    return out_dir


def demo_mixture_sources(datasets: Dict[str, str], mixture: str) -> List[Dict]:
    """A shipped mixture on the demo data: its sources and weights, each path replaced by the demo dataset of
    the source's format (web articles for ``text``, ``qa``, ``long_cot``, ``chat``). Usable as ``data.sources``
    (``{name, weight, path}`` dicts); sources of one format share that format's dataset."""
    from megatron_octo.data.mixtures import load_mixture

    by_format = {fmt: datasets[kind] for kind, fmt in KINDS.items()}
    return [{"name": s.name, "weight": s.weight, "path": by_format[s.format]} for s in load_mixture(mixture).sources]


def _write_jsonl(path: Path, records: List[Dict]) -> None:
    from megatron_octo.utils.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def build_demo_data(
    workdir: Path,
    seed: int = 0,
    sizes: Optional[Dict[str, int]] = None,
    overwrite: bool = True,
    log=None,
    spec: Optional[TaskSpec] = None,
) -> Dict:
    """Write the demo corpus, its tokenizer and indexed datasets under ``workdir``; return their paths.

    Layout: ``corpus/{web,qa,long_cot,chat,eval,rl}.jsonl``, ``corpus/few_shot_prompts.json``, ``tokenizer/`` (HF
    directory), ``datasets/<kind>`` (indexed-dataset prefixes). Returns ``{"corpus": {kind: path}, "prompts": path,
    "tokenizer": path, "datasets": {kind: prefix}, "vocab_size": int, "documents": {kind: n}, "tokens": {kind: n}}``;
    paths are ``str``.
    """
    from megatron_octo.data.preprocess import preprocess
    from megatron_octo.utils.io import atomic_write_text

    workdir = Path(workdir)
    records = generate(seed, sizes, spec)
    prompts = workdir / "corpus" / "few_shot_prompts.json"
    prompts.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(prompts, json.dumps(records.pop("few_shot"), indent=2) + "\n")
    corpus = {}
    for kind, rows in records.items():
        corpus[kind] = workdir / "corpus" / f"{kind}.jsonl"
        _write_jsonl(corpus[kind], rows)
    tokenizer_dir = train_tokenizer(corpus_texts(records), workdir / "tokenizer")
    datasets, documents, tokens = {}, {}, {}
    for kind, fmt in KINDS.items():
        prefix = str(workdir / "datasets" / kind)
        stats = preprocess([corpus[kind]], prefix, tokenizer_dir, fmt, overwrite=overwrite, log=log)
        datasets[kind], documents[kind], tokens[kind] = prefix, stats.documents, stats.tokens
    from megatron_octo.data.tokenizer import load_tokenizer, vocab_size

    return {
        "corpus": {k: str(v) for k, v in corpus.items()},
        "prompts": str(prompts),
        "tokenizer": str(tokenizer_dir),
        "datasets": datasets,
        "vocab_size": vocab_size(load_tokenizer(tokenizer_dir)),
        "documents": documents,
        "tokens": tokens,
    }
