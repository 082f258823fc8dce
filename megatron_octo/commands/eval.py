"""``octo eval``: math benchmarks on a Hugging Face model."""

from __future__ import annotations

import argparse
import os
import sys

from megatron_octo.commands.common import positive_float, positive_int
from megatron_octo.config.choices import EVAL_BACKENDS, EVAL_SOURCES

HELP = {
    "eval": "math benchmarks (the 13 of OctoThinker, AIME24) on a Hugging Face model",
}
"""One line per command for `octo --help` (the command's parser is built only when it runs)."""


def _cmd_eval(args) -> int:
    from megatron_octo.eval.report import markdown_table
    from megatron_octo.eval.runner import parse_hf_overrides, run_eval

    output = args.output or f"eval-{os.path.basename(os.path.normpath(args.model))}"
    results = run_eval(
        args.model,
        args.benchmarks,
        data_dir=args.data_dir,
        source=args.source,
        hf_datasets=parse_hf_overrides(args.hf_dataset),
        prompts_path=args.prompts,
        zero_shot=args.zero_shot,
        template=args.template,
        backend=args.backend,
        backend_kwargs={
            "dtype": args.dtype,
            "batch_size": args.batch_size,
            **({"tensor_parallel_size": args.tensor_parallel_size} if args.backend == "vllm" else {}),
        },
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        limit=args.limit,
        output_dir=output,
        overwrite=args.overwrite,
        resume=args.resume,
        published=args.published,
        workers=args.verify_workers,
        timeout=args.verify_timeout,
    )
    sys.stdout.write(markdown_table(results))
    print(f"results in {output}/results.json and results.md; predictions in {output}/predictions/")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "eval",
        help=HELP["eval"],
        description=(
            "Generate greedy answers to math benchmarks and score them (answer extraction per benchmark, "
            "equivalence through math-verify with a 2 s limit per answer). Few-shot with the exact OctoThinker "
            "prompts by default (base models); --zero-shot with a template for RL models (answers from the last "
            "\\boxed{}). Writes OUT/results.json, OUT/results.md and every prediction in OUT/predictions/, and "
            "compares with the published OctoThinker figures when the model is one of theirs. An interrupted run "
            "continues from the predictions it wrote with --resume."
        ),
        epilog=(
            "examples:\n  octo eval --model OctoThinker-3B-Hybrid-Base --benchmarks paper --data-dir shared/data/eval\n"
            "  octo eval --model rl-run/hf --benchmarks rl --zero-shot --template complex --data-dir shared/data/eval"
            " --backend vllm\n\nbenchmarks: gsm8k math math500 olympiadbench amc23 sat mathqa mmlu_stem ocw svamp "
            "asdiv mawps tabmwp aime24; groups: paper (the 13), rl (math500,gsm8k,olympiadbench,amc23), all"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR_OR_HUB_ID",
        help="Hugging Face model: a local directory (config.json, weights, tokenizer) or a Hub model ID "
        "such as OctoThinker/OctoThinker-3B-Hybrid-Base (through the Hub cache)",
    )
    p.add_argument("--benchmarks", default="paper", help="comma-separated names or groups (default: paper)")
    p.add_argument("--data-dir", help="directory of benchmark JSONL files (layout of shared/data/eval)")
    p.add_argument(
        "--source",
        choices=EVAL_SOURCES,
        default="local",
        help="local: files in --data-dir; hf: Hugging Face datasets (downloads; needs the eval extra) (default: local)",
    )
    p.add_argument(
        "--hf-dataset",
        action="append",
        default=[],
        metavar="NAME=REPO[:CONFIG][@SPLIT]",
        help="with --source hf: the Hub dataset of a benchmark (repeatable)",
    )
    p.add_argument("--prompts", help="few_shot_prompts.json (default: DATA_DIR/../prompts/few_shot_prompts.json)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--few-shot", dest="zero_shot", action="store_false", help="the benchmarks' few-shot prompts (default)"
    )
    mode.add_argument("--zero-shot", dest="zero_shot", action="store_true", help="a zero-shot --template")
    # Both flags share one dest; argparse would take the first action's default (store_false's True): pin it.
    p.set_defaults(zero_shot=False)
    p.add_argument(
        "--template",
        default="complex",
        help="zero-shot template: complex, simple, user_assistant, user_assistant_boxed, raw, or text "
        "with {question} (default: complex)",
    )
    p.add_argument(
        "--backend",
        choices=EVAL_BACKENDS,
        default="transformers",
        help="generation backend (default: transformers)",
    )
    from megatron_octo.eval.backends import DTYPES

    p.add_argument(
        "--dtype", default="auto", choices=tuple(DTYPES), help="model dtype (default: auto: bf16 on GPU, fp32 on CPU)"
    )
    p.add_argument("--batch-size", type=positive_int, default=16, help="transformers batch size (default: 16)")
    p.add_argument("--tensor-parallel-size", type=positive_int, default=1, help="vLLM tensor parallelism (default: 1)")
    p.add_argument("--max-new-tokens", type=positive_int, default=1024, help="default: 1024")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed when --temperature > 0 (default: 0)")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N items of each benchmark")
    p.add_argument("--output", help="output directory (default: eval-<model directory name>)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --output")
    out.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --output: benchmarks whose predictions are complete are "
        "read back, not generated again (the settings must match)",
    )
    p.add_argument("--published", help="compare with these published figures (default: by model name)")
    p.add_argument(
        "--verify-timeout", type=positive_float, default=2.0, help="seconds per answer verification (default: 2)"
    )
    p.add_argument(
        "--verify-workers", type=positive_int, default=None, help="verification processes (default: one per core)"
    )
    p.set_defaults(func=_cmd_eval)
