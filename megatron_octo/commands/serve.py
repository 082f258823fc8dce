"""``octo serve reward``: the math reward behind NeMo-Aligner's reward-model transport. Defaults come from
``serve.reward_server.RewardServerConfig``, which documents each field."""

from __future__ import annotations

import argparse
from dataclasses import fields

from megatron_octo.commands.common import default_of, positive_float, positive_int

HELP = {
    "serve": "servers for RL beside a trainer: the math reward for NeMo-Aligner",
}
"""One line per command for `octo --help` (the command's parser is built only when it runs)."""


def _cmd_serve_reward(args) -> int:
    from megatron_octo.serve.reward_server import RewardServerConfig, serve_reward

    serve_reward(RewardServerConfig(**{f.name: getattr(args, f.name) for f in fields(RewardServerConfig)}))
    return 0


def add_parsers(sub) -> None:
    from megatron_octo.serve.reward_server import RewardServerConfig

    def d(name):
        return default_of(RewardServerConfig, name)

    serve = sub.add_parser("serve", help=HELP["serve"])
    serve_sub = serve.add_subparsers(dest="serve_cmd", required=True, metavar="{reward}")
    p = serve_sub.add_parser(
        "reward",
        help="the rule-based math reward behind NeMo-Aligner's reward-model transport (PyTriton)",
        description=(
            "Serve the math reward (+1 when the last \\boxed{} of a response equals the gold answer, -1 otherwise) "
            "as a PyTriton model with the inputs and output of NeMo-Aligner's reward-model server (tokens + "
            "sequence_lengths, or sentences -> rewards). Each sequence is decoded with --tokenizer, its prompt looked "
            "up in --answers (JSONL: 'answer' and 'text' = exact prompt, or 'prompt'/'problem'/'question' rendered "
            "through --template), and its response scored with a per-item time limit. Malformed requests get a "
            "one-line error; the server keeps serving. Stops on SIGINT or SIGTERM."
        ),
        epilog="example:\n  octo serve reward --answers math8k_train.jsonl --tokenizer Llama-3.2-3B --port 5555",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--answers", required=True, metavar="FILE", help="JSONL of the prompt set with gold answers")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="the actor's Hugging Face tokenizer directory")
    p.add_argument("--host", default=d("host"), help="bind address (default: %(default)s; 0.0.0.0 for other hosts)")
    p.add_argument("--port", type=int, default=d("port"), help="HTTP port (default: %(default)s)")
    p.add_argument("--model-name", default=d("model_name"), help="PyTriton model name (default: %(default)s)")
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=d("max_batch"),
        help="largest request in sequences (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=d("timeout"),
        help="verification seconds per item (default: %(default)s)",
    )
    p.add_argument(
        "--workers", type=positive_int, default=d("workers"), help="verification processes (default: one per core)"
    )
    p.add_argument(
        "--variant", default=d("variant"), help="reward variant of megatron_octo.rl.reward (default: %(default)s)"
    )
    p.add_argument(
        "--template",
        default=d("template"),
        help="template for records without 'text': a name or text with {question} (default: %(default)s)",
    )
    p.add_argument(
        "--response-marker",
        default=d("response_marker"),
        help="text that ends a prompt (default: the template's text after {question}, e.g. 'Assistant:')",
    )
    p.add_argument(
        "--answer-field", default=d("answer_field"), help="record field of the gold answer (default: %(default)s)"
    )
    p.set_defaults(func=_cmd_serve_reward)
