#!/usr/bin/env python
"""Throughput of ``octo preprocess`` with N worker processes against a single-process baseline.

Both read the same JSONL corpus, format it the same way, tokenize it with the same tokenizer and write it with
Megatron-Core's ``IndexedDatasetBuilder``; the baseline is the plain loop (read, format, tokenize a batch with the
tokenizer's Rust backend on one thread, ``add_document``) in this process. The outputs must be byte-identical.
Each side runs ``--repeats`` times, interleaved; the best time of each counts (the machine is shared).

    python benchmarks/preprocess.py --workers 2            # default corpus: demo-style math articles
    python benchmarks/preprocess.py --tokenizer DIR --input corpus.jsonl --format text

Prints one line per run (wall and CPU seconds) and a summary with tokens/s of both and the speedup; exits 1 if
the outputs differ. On a shared machine, other jobs' load distorts wall-clock times: run it quiet, or as root under
``nice -n -19`` (as for the figure in docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the baseline is one core: no Rust thread pool

from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder  # noqa: E402  (imported before timing)

from megatron_octo.data.formatters import make_formatter  # noqa: E402
from megatron_octo.data.preprocess import output_paths, preprocess  # noqa: E402
from megatron_octo.data.tokenizer import load_tokenizer, make_encoder  # noqa: E402


def make_corpus(path: Path, docs: int, seed: int) -> Path:
    """Web-style math articles from the demo generator, one JSON object with ``text`` a line."""
    import random

    from megatron_octo.data.demo_corpus import problems

    rng = random.Random(seed)
    stream = problems(rng)
    with open(path, "w") as f:
        for _ in range(docs):
            parts = [" ".join(p.steps) + f" Question: {p.question} Answer: {p.answer}."
                     for p in (next(stream) for _ in range(rng.randint(3, 12)))]
            f.write(json.dumps({"text": "\n".join(parts)}) + "\n")
    return path


def make_tokenizer(corpus: Path, out: Path, vocab_size: int) -> Path:
    from megatron_octo.data.demo_corpus import train_tokenizer

    with open(corpus) as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(5000), f)]
    return train_tokenizer(iter(texts), out, vocab_size=vocab_size)


def baseline(corpus: Path, prefix: str, tokenizer_dir: Path, fmt: str, batch: int = 256) -> int:
    """Single process: the plain loop, writing with Megatron-Core's builder. Returns tokens written."""
    encoder = make_encoder(load_tokenizer(tokenizer_dir))
    formatter = make_formatter(fmt)
    bin_path, idx_path = output_paths(prefix)
    builder = IndexedDatasetBuilder(str(bin_path), dtype=encoder.dtype)
    tokens = 0

    def flush(texts):
        nonlocal tokens
        for ids in encoder.encode(texts):
            builder.add_document(ids, [len(ids)])
            tokens += len(ids)

    texts = []
    with open(corpus, "rb") as f:
        for line in f:
            text = formatter(json.loads(line))
            if text is not None:
                texts.append(text)
            if len(texts) == batch:
                flush(texts)
                texts = []
    flush(texts)
    builder.finalize(str(idx_path))
    return tokens


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the worker processes) so far."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(label: str, fn) -> tuple:
    cpu, start = _cpu_seconds(), time.perf_counter()
    tokens = fn()
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    print(f"  {label}: {tokens:,} tokens in {seconds:.2f} s = {tokens / seconds:,.0f} tokens/s "
          f"(CPU {cpu:.2f} s)", flush=True)
    return tokens, seconds


def _same_bytes(a: str, b: str) -> bool:
    return all(x.read_bytes() == y.read_bytes() for x, y in zip(output_paths(a), output_paths(b)))


def run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="octo-bench-") as tmp:
        return _run(args, Path(tmp))


def _run(args, work: Path) -> int:
    corpus = Path(args.input) if args.input else make_corpus(work / "corpus.jsonl", args.docs, args.seed)
    tok = Path(args.tokenizer) if args.tokenizer else make_tokenizer(corpus, work / "tokenizer", args.vocab_size)
    size_mb = corpus.stat().st_size / 1e6
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, load average "
          f"{os.getloadavg()[0]:.2f}; corpus "
          f"{corpus} ({size_mb:.1f} MB); tokenizer {tok}", flush=True)
    base_s, octo_s = [], []
    for r in range(args.repeats):  # interleaved, so a burst of load elsewhere hits both sides alike
        base_tokens, seconds = _timed(f"run {r + 1} baseline (1 process)",
                                      lambda: baseline(corpus, str(work / f"base{r}"), tok, args.format))
        base_s.append(seconds)
        octo_tokens, seconds = _timed(f"run {r + 1} octo preprocess --workers {args.workers}", lambda: preprocess(
            [corpus], str(work / f"octo{r}"), tok, args.format, workers=args.workers, log=None).tokens)
        octo_s.append(seconds)
    base_s, octo_s = min(base_s), min(octo_s)
    same = base_tokens == octo_tokens and _same_bytes(str(work / "base0"), str(work / "octo0"))
    print(f"baseline: {base_tokens / base_s:,.0f} tokens/s | octo preprocess --workers {args.workers}: "
          f"{octo_tokens / octo_s:,.0f} tokens/s | speedup {base_s / octo_s:.2f}x | outputs byte-identical: "
          f"{'yes' if same else 'NO'}")
    return 0 if same else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--docs", type=int, default=10_000, help="generated articles (without --input)")
    p.add_argument("--input", help="JSONL corpus to use instead of the generated one")
    p.add_argument("--tokenizer", help="HF tokenizer directory (default: a BPE trained on the corpus)")
    p.add_argument("--vocab-size", type=int, default=8000, help="of the trained tokenizer")
    p.add_argument("--format", default="text")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return run(p.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
