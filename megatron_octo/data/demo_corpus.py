"""The demo corpus: a deterministic synthetic math corpus in the recipe's four kinds of data, a small BPE tokenizer
trained on it, and its indexed datasets. Nothing is downloaded.

Problems have checkable integer answers: arithmetic (``a + b``, ``a - b``, ``a * b``), linear equations
(``a x + b = c`` with an integer root), two-step word problems (``n`` plus ``k`` groups of ``m``) and identities
(``a + 0``, ``a - 0``, ``a * 1``). Each kind of
data renders problems its own way:

- ``web`` (format ``text``): explanatory articles working through a few problems;
- ``qa`` (format ``qa``): question and a short chain of thought ending in ``\\boxed{answer}``;
- ``long_cot`` (format ``long_cot``): question, step-by-step reasoning with a check, then the boxed answer;
- ``chat`` (format ``chat``): a user asking and the assistant solving, sometimes with a follow-up turn.

Every record keeps its problem's ``final_answer`` (decimal text) so answers can be checked. A held-out set of
problems that no training record contains is written as ``eval.jsonl`` with ``prompt`` / ``answer`` fields (the
layout of MATH8K), for evaluation. ``rl.jsonl`` holds RL prompts for models far too small to solve the problems:
identity problems of the training data with their worked steps (``{question}\nAssistant: {steps}``, for the
template ``User: {question}``), so the response only has to copy the result into ``\boxed{}``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

KINDS = {"web": "text", "qa": "qa", "long_cot": "long_cot", "chat": "chat"}
"""Demo kind -> the ``octo preprocess`` format that reads it."""
DEFAULT_SIZES = {"web": 300, "qa": 1500, "long_cot": 500, "chat": 500, "eval": 200, "rl": 200}
"""Records per kind (web: articles of several problems each), held-out evaluation problems, and RL prompts."""
SPECIAL_TOKENS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "pad_token": "<|pad|>"}
"""The demo tokenizer's special tokens (Llama-3 names for BOS/EOS)."""
DEMO_VOCAB_SIZE = 512
"""Vocabulary of the demo BPE tokenizer (256 byte symbols, 3 special tokens, the rest merges)."""


@dataclass(frozen=True)
class Problem:
    """A math problem with its worked steps and integer answer."""

    question: str
    steps: List[str]
    answer: int
    topic: str


def _arithmetic(rng: random.Random) -> Problem:
    op = rng.choice("+-*")
    a, b = (rng.randint(2, 99), rng.randint(2, 99)) if op == "*" else (rng.randint(10, 999), rng.randint(10, 999))
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    name = {"+": "sum", "-": "difference", "*": "product"}[op]
    steps = [f"We need the {name} of {a} and {b}.", f"{a} {op} {b} = {value}."]
    return Problem(f"What is {a} {op} {b}?", steps, value, "arithmetic")


def _linear(rng: random.Random) -> Problem:
    a, x, b = rng.randint(2, 12), rng.randint(-20, 20), rng.randint(-50, 50)
    c = a * x + b
    sign, mag = ("+", b) if b >= 0 else ("-", -b)
    undo = f"subtract {mag} from" if b >= 0 else f"add {mag} to"
    steps = [
        f"Start from {a}x {sign} {mag} = {c}.",
        f"{undo.capitalize()} both sides: {a}x = {c - b}.",
        f"Divide both sides by {a}: x = {x}.",
    ]
    return Problem(f"Solve for x: {a}x {sign} {mag} = {c}.", steps, x, "linear equation")


def _word(rng: random.Random) -> Problem:
    who, item = (
        rng.choice(["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima"]),
        rng.choice(["apples", "books", "coins", "marbles", "pencils"]),
    )
    n, k, m = rng.randint(2, 50), rng.randint(2, 9), rng.randint(2, 12)
    total = n + k * m
    steps = [
        f"{who} starts with {n} {item}.",
        f"{k} boxes of {m} hold {k} * {m} = {k * m} {item}.",
        f"In total: {n} + {k * m} = {total}.",
    ]
    question = f"{who} has {n} {item} and buys {k} boxes with {m} {item} each. How many {item} does {who} have now?"
    return Problem(question, steps, total, "word problem")


def _identity(rng: random.Random) -> Problem:
    """``a + 0``, ``a - 0``, ``a * 1`` for a one-digit ``a``: solvable by copying one digit, which a model of the
    demo's size can learn within minutes of RL (the demo's RL stage trains on them)."""
    a = rng.randint(2, 9)
    op, unit, name, rule = rng.choice(
        [
            ("+", 0, "sum", "Adding 0 changes nothing."),
            ("-", 0, "difference", "Subtracting 0 changes nothing."),
            ("*", 1, "product", "Multiplying by 1 changes nothing."),
        ]
    )
    steps = [f"We need the {name} of {a} and {unit}.", rule, f"{a} {op} {unit} = {a}."]
    return Problem(f"What is {a} {op} {unit}?", steps, a, "identity")


_GENERATORS: List[Callable[[random.Random], Problem]] = [_arithmetic, _linear, _word, _identity]


def problems(rng: random.Random) -> Iterator[Problem]:
    """An endless stream of problems drawn from ``rng``."""
    while True:
        yield rng.choice(_GENERATORS)(rng)


def boxed(answer: int) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def _web(group: List[Problem], rng: random.Random) -> Dict:
    topic = group[0].topic
    intro = rng.choice([f"A short guide to {topic}s.", f"Worked examples: {topic}s.", f"Notes on {topic}s."])
    parts = [intro]
    for p in group:
        parts.append(f"Example: {p.question} " + " ".join(p.steps) + f" So the result is {p.answer}.")
    parts.append("Checking each step keeps mistakes out of the final answer.")
    return {"text": "\n\n".join(parts), "final_answer": [str(p.answer) for p in group]}


def _qa(p: Problem) -> Dict:
    return {"question": p.question, "answer": " ".join(p.steps) + " " + boxed(p.answer), "final_answer": str(p.answer)}


def _long_cot(p: Problem) -> Dict:
    reasoning = "\n".join(
        [f"Let me think about this {p.topic}."]
        + p.steps
        + [
            f"Let me double-check: the steps give {p.answer}, and redoing them gives {p.answer} again.",
            "So I am confident.",
        ]
    )
    return {"question": p.question, "reasoning": reasoning, "answer": boxed(p.answer), "final_answer": str(p.answer)}


def _chat(p: Problem, rng: random.Random) -> Dict:
    ask = rng.choice(["Can you help me with this? ", "Please solve: ", "I am stuck on a problem. "])
    messages = [
        {"role": "user", "content": ask + p.question},
        {"role": "assistant", "content": " ".join(p.steps) + " " + boxed(p.answer)},
    ]
    if rng.random() < 0.3:
        messages += [
            {"role": "user", "content": "Are you sure?"},
            {"role": "assistant", "content": f"Yes. Checking again gives {p.answer}."},
        ]
    return {"messages": messages, "final_answer": str(p.answer)}


def generate(seed: int = 0, sizes: Optional[Dict[str, int]] = None) -> Dict[str, List[Dict]]:
    """Records per kind (``web``, ``qa``, ``long_cot``, ``chat``) and ``eval``; the same for the same seed.

    Evaluation problems are drawn first from their own stream and no training record repeats their question.
    """
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    held_out: Dict[str, Problem] = {}
    stream = problems(random.Random(f"demo-eval-{seed}"))
    while len(held_out) < sizes["eval"]:
        p = next(stream)
        if p.topic != "identity":  # only 24 exist: held out, they would all be missing from training
            held_out.setdefault(p.question, p)
    rng = random.Random(f"demo-train-{seed}")
    train = (p for p in problems(rng) if p.question not in held_out)
    out: Dict[str, List[Dict]] = {"web": [], "qa": [], "long_cot": [], "chat": []}
    for _ in range(sizes["web"]):
        first = next(train)
        group = [first] + [p for p in (next(train) for _ in range(6)) if p.topic == first.topic][:2]
        out["web"].append(_web(group, rng))
    out["qa"] = [_qa(next(train)) for _ in range(sizes["qa"])]
    out["long_cot"] = [_long_cot(next(train)) for _ in range(sizes["long_cot"])]
    out["chat"] = [_chat(next(train), rng) for _ in range(sizes["chat"])]
    out["eval"] = [
        {"id": f"demo-{i}", "prompt": p.question, "answer": str(p.answer), "source": "demo"}
        for i, p in enumerate(held_out.values())
    ]
    rl = (p for p in problems(random.Random(f"demo-rl-{seed}")) if p.topic == "identity")
    out["rl"] = [
        {
            "id": f"demo-rl-{i}",
            "prompt": f"{p.question}\nAssistant: {' '.join(p.steps)}",
            "answer": str(p.answer),
            "source": "demo",
        }
        for i, p in zip(range(sizes["rl"]), rl)
    ]
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
    workdir: Path, seed: int = 0, sizes: Optional[Dict[str, int]] = None, overwrite: bool = True, log=None
) -> Dict:
    """Write the demo corpus, its tokenizer and indexed datasets under ``workdir``; return their paths.

    Layout: ``corpus/{web,qa,long_cot,chat,eval}.jsonl``, ``tokenizer/`` (HF directory), ``datasets/<kind>``
    (indexed-dataset prefixes). Returns ``{"corpus": {kind: path}, "tokenizer": path, "datasets": {kind: prefix},
    "vocab_size": int, "documents": {kind: n}, "tokens": {kind: n}}``; paths are ``str``.
    """
    from megatron_octo.data.preprocess import preprocess

    workdir = Path(workdir)
    records = generate(seed, sizes)
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
        "tokenizer": str(tokenizer_dir),
        "datasets": datasets,
        "vocab_size": vocab_size(load_tokenizer(tokenizer_dir)),
        "documents": documents,
        "tokens": tokens,
    }
