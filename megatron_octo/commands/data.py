"""``octo preprocess`` and ``octo data audit``."""

from __future__ import annotations

import argparse

from megatron_octo.commands.common import add_overrides, add_recipe, positive_int

HELP = {
    "preprocess": "tokenize corpora into Megatron indexed datasets (.bin/.idx)",
    "data": "inspect training data: the mixture audit",
}
"""One line per command for `octo --help` (the command's parser is built only when it runs)."""


def _cmd_preprocess(args) -> int:
    from megatron_octo.data.preprocess import preprocess

    fields = {
        "text_field": args.text_field,
        "question_field": args.question_field,
        "answer_field": args.answer_field,
        "reasoning_field": args.reasoning_field,
        "messages_field": args.messages_field,
    }
    stats = preprocess(
        args.input,
        args.output_prefix,
        args.tokenizer,
        args.format,
        fields=fields,
        workers=args.workers,
        skip_bad_lines=args.skip_bad_lines,
        overwrite=args.overwrite,
    )
    skipped = f"; skipped {stats.bad_lines} bad lines (first: {stats.first_bad})" if stats.bad_lines else ""
    print(
        f"wrote {stats.output_prefix}.bin/.idx: {stats.documents:,} documents, {stats.tokens:,} tokens "
        f"({stats.dtype}); {stats.empty} empty documents skipped{skipped}"
    )
    return 0


def _cmd_data_audit(args) -> int:
    from megatron_octo.config import load_recipe
    from megatron_octo.data.audit import run_audit

    result = run_audit(load_recipe(args.recipe, args.overrides), args.samples, args.plot, args.overwrite)
    return 0 if result.ok() else 1


def _add_preprocess_parser(sub) -> None:
    p = sub.add_parser(
        "preprocess",
        help=HELP["preprocess"],
        description=(
            "Format and tokenize JSONL (plain or gzip) and Parquet corpora into one Megatron-Core indexed dataset "
            "(PREFIX.bin / PREFIX.idx), documents in input order, each ending with the tokenizer's EOS. Formats: "
            "text (web documents), qa ('User: {question}\\nAssistant: {answer}'), long_cot (question, a line "
            "break, <think>reasoning</think>, the answer), chat (User/Assistant turns)."
        ),
        epilog="example:\n  octo preprocess --input math8k.jsonl --output-prefix data/math8k --tokenizer tok/ "
        "--format qa --question-field prompt --workers 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", nargs="+", required=True, metavar="FILE", help="JSONL, JSONL.gz or Parquet files")
    p.add_argument("--output-prefix", required=True, metavar="PREFIX", help="writes PREFIX.bin and PREFIX.idx")
    p.add_argument(
        "--tokenizer",
        required=True,
        metavar="DIR_OR_HUB_ID",
        help="Hugging Face tokenizer: a local directory or a Hub model ID (through the Hub cache)",
    )
    from megatron_octo.data.formatters import FORMATS  # light: no torch

    p.add_argument("--format", default="text", choices=FORMATS, help="default: text")
    for name, default in (
        ("text", "text"),
        ("question", "question"),
        ("answer", "answer"),
        ("reasoning", "reasoning"),
        ("messages", "messages"),
    ):
        p.add_argument(f"--{name}-field", default=None, metavar="F", help=f"record field (default: {default})")
    p.add_argument("--workers", type=positive_int, default=1, help="tokenizer processes (default: 1, in this process)")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip and count malformed lines instead of stopping")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PREFIX.bin/.idx")
    p.set_defaults(func=_cmd_preprocess)


def _add_data_parsers(sub) -> None:
    data = sub.add_parser("data", help=HELP["data"])
    data_sub = data.add_subparsers(dest="data_cmd", required=True, metavar="{audit}")
    p = data_sub.add_parser(
        "audit",
        help="target vs realized share of tokens per mixture source",
        description=(
            "Build a recipe's blend as training does, read its first N samples in training order, and print each "
            "source's target and realized share of the tokens, with a PNG bar chart. Exit status 1 when a share "
            "is more than 1 percentage point off."
        ),
    )
    add_recipe(p, "recipe name or YAML path with data.kind=blend")
    p.add_argument("--samples", type=positive_int, default=10_000, help="samples to read (default: 10000)")
    p.add_argument("--plot", default=None, help="PNG path (default: mixture-audit-<recipe>.png)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    add_overrides(p, "data.mixture=stable")
    p.set_defaults(func=_cmd_data_audit)


def add_parsers(sub) -> None:
    _add_preprocess_parser(sub)
    _add_data_parsers(sub)
