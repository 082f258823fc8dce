"""``octo convert``: checkpoints between Hugging Face, Megatron-Core and NeMo."""

from __future__ import annotations

import argparse
import sys

from megatron_octo.commands.common import positive_int
from megatron_octo.config.choices import CONVERT_FORMATS, DTYPES

HELP = {
    "convert": "convert checkpoints: Hugging Face <-> Megatron-Core (any TP/PP) <-> NeMo, resharding",
}
"""One line per command for `octo --help` (the command's parser is built only when it runs)."""


def _cmd_convert(args) -> int:
    from megatron_octo.convert import convert
    from megatron_octo.convert.progress import human_bytes

    # A conversion that does not reproduce its source (VerifyError) exits 1 through its class's exit code.
    result = convert(
        args.src,
        args.dst,
        args.input,
        args.output,
        tp=args.tp,
        pp=args.pp,
        tokenizer_dir=args.tokenizer,
        max_shard_size=args.max_shard_size,
        make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
        dtype=None if args.dtype == "auto" else args.dtype,
        overwrite=args.overwrite,
        verify=args.verify,
        prompt=args.prompt,
        atol=args.atol,
        kl_tol=args.kl,
        quiet=args.quiet,
        critic=args.critic,
    )
    for note in result.notes:
        print(f"octo: note: {note}", file=sys.stderr)
    for warning in result.warnings:
        print(f"octo: warning: {warning}", file=sys.stderr)
    if result.verify is not None:
        print(result.verify.line())
    print(f"wrote {result.output}: {result.tensors} tensors, {human_bytes(result.bytes)} in {result.seconds:.1f} s")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "convert",
        help=HELP["convert"],
        description=(
            "Convert a Hugging Face model directory (safetensors) to a Megatron-Core torch_dist checkpoint that "
            "`octo train ... checkpoint.load=DIR` loads under any TP/PP layout, a Megatron-Core checkpoint (model "
            "or training; a run directory means its newest complete checkpoint) back to a Hugging Face directory "
            "(config.json, safetensors shards and index, generation_config.json, tokenizer files), or a "
            "Megatron-Core checkpoint to another layout. Tensors stream one block at a time, so memory stays "
            "far below the model size. --verify runs one prompt through both sides and fails (exit 1, nothing "
            "written) when the logits differ beyond the tolerances."
        ),
        epilog=(
            "examples:\n  octo convert --from hf --to mcore --input Llama-3.2-3B --output ckpt/llama3b --tp 2 --pp 2\n"
            "  octo convert --from mcore --to hf --input runs/decay-long --output hf/decay-long --tokenizer tok/ "
            "--verify\n  octo convert --from mcore --to mcore --input ckpt/llama3b --output ckpt/llama3b-tp1 --tp 1\n"
            "  octo convert --from hf --to nemo --input Llama-3.2-3B --output nemo/llama3b --tp 2  "
            "(NeMo-Aligner; --from nemo reads one back)\n"
            "  octo convert --from hf --to nemo --critic --input Llama-3.2-3B --output nemo/llama3b-critic --tp 2  "
            "(its PPO critic)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="src", required=True, choices=CONVERT_FORMATS, help="input format")
    p.add_argument("--to", dest="dst", required=True, choices=CONVERT_FORMATS, help="output format")
    p.add_argument(
        "--input",
        required=True,
        help="HF model directory, or Megatron-Core checkpoint / run directory "
        "(DIR:STEP picks a step), or NeMo checkpoint (.nemo file or "
        "its extracted directory)",
    )
    p.add_argument("--output", required=True, help="output directory (written under a temporary name, then renamed)")
    p.add_argument(
        "--tp", type=positive_int, default=1, help="tensor-parallel size the output is for (--to mcore; default 1)"
    )
    p.add_argument(
        "--pp", type=positive_int, default=1, help="pipeline-parallel size the output is for (--to mcore; default 1)"
    )
    p.add_argument(
        "--dtype", default="auto", choices=DTYPES, help="output dtype (default: auto, each tensor keeps its dtype)"
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="DIR",
        help="--to hf: tokenizer files to include (default: those kept in the checkpoint or named by its run's recipe)",
    )
    p.add_argument("--max-shard-size", default="5GB", help="--to hf: largest safetensors shard (default: 5GB)")
    p.add_argument(
        "--make-vocab-size-divisible-by",
        type=positive_int,
        default=None,
        metavar="N",
        help="--to mcore: pad the vocabulary to a multiple of N * tp (default: 128, or the input's)",
    )
    p.add_argument("--verify", action="store_true", help="compare both sides' logits on one prompt (fp32, CPU ok)")
    p.add_argument("--prompt", default=None, help="--verify prompt (default: a GSM8K question)")
    p.add_argument("--atol", type=float, default=1e-2, help="--verify: largest max |logit diff| (default: 1e-2)")
    p.add_argument("--kl", type=float, default=1e-5, help="--verify: largest mean KL divergence (default: 1e-5)")
    p.add_argument(
        "--critic",
        action="store_true",
        help="--to nemo: write NeMo-Aligner's PPO critic made from the policy (its trunk, an untied "
        "output layer, a zero-initialized value head), the checkpoint serve_ppo_critic.py restores",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_convert)
