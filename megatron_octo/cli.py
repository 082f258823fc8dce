"""The ``octo`` command. Each subcommand is a thin layer over a library function.

User mistakes (a bad recipe or override, an existing output, a layout the world cannot hold) end with a one-line
``octo: error: ...`` and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

EXAMPLES = """examples:
  octo recipe list
  octo recipe show tiny-cpu parallel.tp=2
  octo train --recipe tiny-cpu --run-dir runs/tiny train.iters=20
  torchrun --nproc-per-node 4 -m megatron_octo train --recipe tiny-cpu --run-dir runs/tp2pp2 \\
      parallel.tp=2 parallel.pp=2
  octo preprocess --input web.jsonl --output-prefix data/web --tokenizer tok/ --format text --workers 2
  octo data audit --recipe tiny-cpu data.kind=blend data.mixture=stable
  octo eval --model hf-model/ --benchmarks gsm8k,math500 --data-dir shared/data/eval --output eval-out
  octo demo --workdir octo-demo
"""


def _user_errors() -> tuple:
    from megatron_octo.config.loader import ConfigError
    from megatron_octo.convert.errors import ConvertError
    from megatron_octo.data.errors import DataError
    from megatron_octo.eval.registry import EvalError
    from megatron_octo.launch.config import LaunchError
    from megatron_octo.parallel import ParallelSetupError
    from megatron_octo.rl.prompts import PromptError
    from megatron_octo.rl.setup import RLSetupError
    from megatron_octo.training.build import SetupError
    from megatron_octo.training.checkpoint import CheckpointError
    from megatron_octo.training.loop import TrainingDiverged
    from megatron_octo.training.plot import PlotError
    from megatron_octo.utils.io import OutputExistsError

    return (ConfigError, ConvertError, DataError, EvalError, ParallelSetupError, SetupError, CheckpointError,
            PlotError, OutputExistsError, TrainingDiverged, LaunchError, PromptError, RLSetupError)


def _cmd_recipe_list(args) -> int:
    from megatron_octo.config import describe, recipe_names

    names = recipe_names()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {describe(name)}")
    return 0


def _cmd_recipe_show(args) -> int:
    from megatron_octo.config import load_recipe, to_yaml

    sys.stdout.write(to_yaml(load_recipe(args.name, args.overrides)))
    return 0


def _train_message(summary: dict, run_dir: str) -> str:
    if not summary["steps_run"]:
        return f"nothing to do: {run_dir} already holds all {summary['steps']} steps"
    done = summary["start_step"] + summary["steps_run"]
    return (
        f"trained steps {summary['start_step'] + 1}-{done} of {summary['steps']}: loss {summary['first_loss']:.4f} "
        f"-> {summary['final_loss']:.4f}, {summary['tokens_per_s']:.0f} tokens/s; metrics in {run_dir}/metrics.jsonl"
    )


def _cmd_train(args) -> int:
    from megatron_octo.training import train_from_args
    from megatron_octo.training.signals import REQUEUE_EXIT_CODE

    summary = train_from_args(args.recipe, args.overrides, args.run_dir, args.overwrite, args.override_schedule)
    if int(os.environ.get("RANK", "0")) == 0:
        print(_train_message(summary, args.run_dir))
    return REQUEUE_EXIT_CODE if summary.get("preempted") else 0


def _cmd_rl(args) -> int:
    from megatron_octo.rl import rl_from_args
    from megatron_octo.training.signals import REQUEUE_EXIT_CODE

    summary = rl_from_args(args.recipe, args.overrides, args.run_dir, args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        if summary["steps_run"]:
            print(f"RL steps {summary['start_step'] + 1}-{summary['start_step'] + summary['steps_run']} of "
                  f"{summary['steps']}: mean reward {summary['reward_first']:+.3f} (first 5 steps) -> "
                  f"{summary['reward_last']:+.3f} (last 5); metrics in {args.run_dir}/metrics.jsonl")
        else:
            print(f"nothing to do: {args.run_dir} already holds all {summary['steps']} steps")
    return REQUEUE_EXIT_CODE if summary.get("preempted") else 0


def _cmd_plot(args) -> int:
    from megatron_octo.training.plot import plot_runs

    print(f"wrote {plot_runs(args.run_dirs, args.output, args.overwrite)}")
    return 0


def _cmd_demo(args) -> int:
    from megatron_octo.demo import run_demo

    report = run_demo(args.workdir, overwrite=args.overwrite, quick=args.quick)
    print(f"demo finished: report in {report}")
    return 0


def _cmd_preprocess(args) -> int:
    from megatron_octo.data.preprocess import preprocess

    fields = {"text_field": args.text_field, "question_field": args.question_field,
              "answer_field": args.answer_field, "reasoning_field": args.reasoning_field,
              "messages_field": args.messages_field}
    stats = preprocess(args.input, args.output_prefix, args.tokenizer, args.format, fields=fields,
                       workers=args.workers, skip_bad_lines=args.skip_bad_lines, overwrite=args.overwrite)
    skipped = f"; skipped {stats.bad_lines} bad lines (first: {stats.first_bad})" if stats.bad_lines else ""
    print(f"wrote {stats.output_prefix}.bin/.idx: {stats.documents:,} documents, {stats.tokens:,} tokens "
          f"({stats.dtype}); {stats.empty} empty documents skipped{skipped}")
    return 0


def _cmd_data_audit(args) -> int:
    from megatron_octo.config import load_recipe
    from megatron_octo.data.audit import run_audit

    result = run_audit(load_recipe(args.recipe, args.overrides), args.samples, args.plot, args.overwrite)
    return 0 if result.ok() else 1


def _cmd_eval(args) -> int:
    from megatron_octo.eval.report import markdown_table
    from megatron_octo.eval.runner import parse_hf_overrides, run_eval

    output = args.output or f"eval-{os.path.basename(os.path.normpath(args.model))}"
    results = run_eval(
        args.model, args.benchmarks, data_dir=args.data_dir, source=args.source,
        hf_datasets=parse_hf_overrides(args.hf_dataset), prompts_path=args.prompts, zero_shot=args.zero_shot,
        template=args.template, backend=args.backend,
        backend_kwargs={"dtype": args.dtype, "batch_size": args.batch_size, **(
            {"tensor_parallel_size": args.tensor_parallel_size} if args.backend == "vllm" else {})},
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed, limit=args.limit,
        output_dir=output, overwrite=args.overwrite, published=args.published, workers=args.verify_workers,
        timeout=args.verify_timeout,
    )
    sys.stdout.write(markdown_table(results))
    print(f"results in {output}/results.json and results.md; predictions in {output}/predictions/")
    return 0

def _cmd_convert(args) -> int:
    from megatron_octo.convert import VerifyError, convert
    from megatron_octo.convert.progress import human_bytes

    try:
        result = convert(
            args.src, args.dst, args.input, args.output, tp=args.tp, pp=args.pp, tokenizer_dir=args.tokenizer,
            max_shard_size=args.max_shard_size, make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
            dtype=None if args.dtype == "auto" else args.dtype, overwrite=args.overwrite, verify=args.verify,
            prompt=args.prompt, atol=args.atol, kl_tol=args.kl, quiet=args.quiet,
        )
    except VerifyError as exc:  # a conversion that does not reproduce its source: exit 1, not a usage error
        print(f"octo: error: {exc}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(f"octo: note: {note}", file=sys.stderr)
    if result.verify is not None:
        print(result.verify.line())
    print(f"wrote {result.output}: {result.tensors} tensors, {human_bytes(result.bytes)} in {result.seconds:.1f} s")
    return 0


def _add_convert_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert checkpoints: Hugging Face <-> Megatron-Core (any TP/PP), resharding",
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
            "(NeMo-Aligner; --from nemo reads one back)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="src", required=True, choices=("hf", "mcore", "nemo"), help="input format")
    p.add_argument("--to", dest="dst", required=True, choices=("hf", "mcore", "nemo"), help="output format")
    p.add_argument("--input", required=True, help="HF model directory, or Megatron-Core checkpoint / run directory "
                                                  "(DIR:STEP picks a step), or NeMo checkpoint (.nemo file or "
                                                  "its extracted directory)")
    p.add_argument("--output", required=True, help="output directory (written under a temporary name, then renamed)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size the output is for (--to mcore; default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel size the output is for (--to mcore; default 1)")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="output dtype (default: auto, each tensor keeps its dtype)")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="--to hf: tokenizer files to include (default: those kept in the checkpoint or named by "
                        "its run's recipe)")
    p.add_argument("--max-shard-size", default="5GB", help="--to hf: largest safetensors shard (default: 5GB)")
    p.add_argument("--make-vocab-size-divisible-by", type=int, default=None, metavar="N",
                   help="--to mcore: pad the vocabulary to a multiple of N * tp (default: 128, or the input's)")
    p.add_argument("--verify", action="store_true", help="compare both sides' logits on one prompt (fp32, CPU ok)")
    p.add_argument("--prompt", default=None, help="--verify prompt (default: a GSM8K question)")
    p.add_argument("--atol", type=float, default=1e-2, help="--verify: largest max |logit diff| (default: 1e-2)")
    p.add_argument("--kl", type=float, default=1e-5, help="--verify: largest mean KL divergence (default: 1e-5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_convert)


def _add_recipe_parsers(sub) -> None:
    recipe = sub.add_parser("recipe", help="list and show the shipped recipes")
    recipe_sub = recipe.add_subparsers(dest="recipe_cmd", required=True, metavar="{list,show}")
    p_list = recipe_sub.add_parser("list", help="names and descriptions of the shipped recipes")
    p_list.set_defaults(func=_cmd_recipe_list)
    p_show = recipe_sub.add_parser(
        "show", help="the fully resolved recipe as YAML",
        description="Print a recipe with its base recipes, model preset and overrides resolved and validated.",
    )
    p_show.add_argument("name", help="shipped recipe name or path to a YAML recipe")
    p_show.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, e.g. parallel.tp=2")
    p_show.set_defaults(func=_cmd_recipe_show)


def _add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="run one training stage of a recipe on Megatron-Core",
        description=(
            "Train one stage of a recipe. Run directly for one process, or under torchrun for several "
            "(TP x PP x CP x DP = processes). Writes DIR/recipe.yaml, DIR/metrics.jsonl (one JSON line per "
            "step: step, loss, lr, grad_norm, tokens, tokens_per_s), TensorBoard events, DIR/train_summary.json "
            "and checkpoints in DIR/checkpoints. A --run-dir holding a complete checkpoint resumes from it."
        ),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--recipe", required=True, help="shipped recipe name (see `octo recipe list`) or YAML path")
    p.add_argument("--run-dir", required=True, help="directory for this run's outputs")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run's outputs (checkpoints included) in --run-dir and start afresh")
    p.add_argument("--override-schedule", action="store_true",
                   help="on resume, use the recipe's LR schedule where it differs from the checkpoint's")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. parallel.tp=2 train.iters=10 train.global_batch=16")
    p.set_defaults(func=_cmd_train)


def _add_rl_parser(sub) -> None:
    p = sub.add_parser(
        "rl", help="GRPO on Megatron-Core with vLLM (or transformers) rollouts and the math reward",
        description=(
            "Run an RL recipe (e.g. octothinker-3b-grpo): each step samples rl.prompts_per_step prompts x "
            "rl.rollout.n responses with the rollout engine, scores them with the math reward, computes GRPO "
            "advantages, recomputes log-probs on Megatron-Core, makes the clipped-surrogate updates and syncs the "
            "new weights into the engine in memory. Run directly for one process or under torchrun for several. "
            "Writes DIR/recipe.yaml, DIR/metrics.jsonl (reward, accuracy, lengths, truncation, clip fraction, "
            "entropy, KL, log-prob mismatch, time per phase, validation accuracies), checkpoints in "
            "DIR/checkpoints (a --run-dir holding one resumes from it), DIR/rl_summary.json and the final policy "
            "as a Hugging Face model in DIR/hf."
        ),
        epilog="example:\n  octo rl --recipe octothinker-3b-grpo --run-dir runs/grpo rl.init=runs/decay-long",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--recipe", required=True, help="shipped recipe name (see `octo recipe list`) or YAML path")
    p.add_argument("--run-dir", required=True, help="directory for this run's outputs")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an earlier run's outputs in --run-dir and start afresh")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. rl.init=HF_DIR rl.rollout.n=8 train.iters=100")
    p.set_defaults(func=_cmd_rl)


def _add_plot_parser(sub) -> None:
    p = sub.add_parser(
        "plot", help="loss and LR against tokens for one or more runs (PNG)",
        description="Plot loss and learning rate against consumed tokens for training runs; branches are drawn "
                    "from where their source checkpoint left off.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `octo train`")
    p.add_argument("--output", default="runs.png", help="PNG to write (default: runs.png)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.set_defaults(func=_cmd_plot)


def _add_demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="the whole pipeline at toy scale on CPU, with a report",
        description=(
            "Run what megatron-octo can do at toy scale on CPU: generate a math corpus and train its tokenizer, "
            "train a tiny Llama on one process and on TP=2 x PP=2 (the same loss curve), run a stable stage and "
            "the three decay branches on the corpus, and write DIR/report.md with plots and DIR/summary.json."
        ),
    )
    p.add_argument("--workdir", default="octo-demo", help="directory for the demo's outputs (default: octo-demo)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's outputs in --workdir")
    p.add_argument("--quick", action="store_true", help="a few steps per stage on a smaller corpus (a smoke test)")
    p.set_defaults(func=_cmd_demo)


def _add_preprocess_parser(sub) -> None:
    p = sub.add_parser(
        "preprocess", help="tokenize corpora into Megatron indexed datasets (.bin/.idx)",
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
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="local Hugging Face tokenizer directory")
    p.add_argument("--format", default="text", choices=("text", "qa", "long_cot", "chat"), help="default: text")
    for name, default in (("text", "text"), ("question", "question"), ("answer", "answer"),
                          ("reasoning", "reasoning"), ("messages", "messages")):
        p.add_argument(f"--{name}-field", default=None, metavar="F", help=f"record field (default: {default})")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes (default: 1, in this process)")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip and count malformed lines instead of stopping")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PREFIX.bin/.idx")
    p.set_defaults(func=_cmd_preprocess)


def _add_data_parsers(sub) -> None:
    data = sub.add_parser("data", help="inspect training data: the mixture audit")
    data_sub = data.add_subparsers(dest="data_cmd", required=True, metavar="{audit}")
    p = data_sub.add_parser(
        "audit", help="target vs realized share of tokens per mixture source",
        description=(
            "Build a recipe's blend as training does, read its first N samples in training order, and print each "
            "source's target and realized share of the tokens, with a PNG bar chart. Exit status 1 when a share "
            "is more than 1 percentage point off."
        ),
    )
    p.add_argument("--recipe", required=True, help="recipe name or YAML path with data.kind=blend")
    p.add_argument("--samples", type=int, default=10_000, help="samples to read (default: 10000)")
    p.add_argument("--plot", default=None, help="PNG path (default: mixture-audit-<recipe>.png)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. data.mixture=stable")
    p.set_defaults(func=_cmd_data_audit)


def _add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="math benchmarks (the 13 of OctoThinker, AIME24) on a Hugging Face model directory",
        description=(
            "Generate greedy answers to math benchmarks and score them (answer extraction per benchmark, "
            "equivalence through math-verify with a 2 s limit per answer). Few-shot with the exact OctoThinker "
            "prompts by default (base models); --zero-shot with a template for RL models (answers from the last "
            "\\boxed{}). Writes OUT/results.json, OUT/results.md and every prediction in OUT/predictions/, and "
            "compares with the published OctoThinker figures when the model is one of theirs."
        ),
        epilog=(
            "examples:\n  octo eval --model OctoThinker-3B-Hybrid-Base --benchmarks paper --data-dir shared/data/eval\n"
            "  octo eval --model rl-run/hf --benchmarks rl --zero-shot --template complex --data-dir shared/data/eval"
            " --backend vllm\n\nbenchmarks: gsm8k math math500 olympiadbench amc23 sat mathqa mmlu_stem ocw svamp "
            "asdiv mawps tabmwp aime24; groups: paper (the 13), rl (math500,gsm8k,olympiadbench,amc23), all"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="Hugging Face model directory (config.json, weights, tokenizer)")
    p.add_argument("--benchmarks", default="paper", help="comma-separated names or groups (default: paper)")
    p.add_argument("--data-dir", help="directory of benchmark JSONL files (layout of shared/data/eval)")
    p.add_argument("--source", choices=("local", "hf"), default="local",
                   help="local: files in --data-dir; hf: Hugging Face datasets (downloads) (default: local)")
    p.add_argument("--hf-dataset", action="append", default=[], metavar="NAME=REPO[:CONFIG][@SPLIT]",
                   help="with --source hf: the Hub dataset of a benchmark (repeatable)")
    p.add_argument("--prompts", help="few_shot_prompts.json (default: DATA_DIR/../prompts/few_shot_prompts.json)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--few-shot", dest="zero_shot", action="store_false", help="the benchmarks' few-shot prompts "
                      "(default)")
    mode.add_argument("--zero-shot", dest="zero_shot", action="store_true", help="a zero-shot --template")
    p.add_argument("--template", default="complex",
                   help="zero-shot template: complex, user_assistant, user_assistant_boxed, raw, or text with "
                        "{question} (default: complex)")
    p.add_argument("--backend", choices=("transformers", "vllm"), default="transformers",
                   help="generation backend (default: transformers)")
    p.add_argument("--dtype", default="auto", help="model dtype (default: auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--batch-size", type=int, default=16, help="transformers batch size (default: 16)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM tensor parallelism (default: 1)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="default: 1024")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed when --temperature > 0 (default: 0)")
    p.add_argument("--limit", type=int, default=None, help="only the first N items of each benchmark")
    p.add_argument("--output", help="output directory (default: eval-<model directory name>)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --output")
    p.add_argument("--published", help="compare with these published figures (default: by model name)")
    p.add_argument("--verify-timeout", type=float, default=2.0, help="seconds per answer verification (default: 2)")
    p.add_argument("--verify-workers", type=int, default=None, help="verification processes (default: one per core)")
    p.set_defaults(func=_cmd_eval)


def _cmd_serve_reward(args) -> int:
    from megatron_octo.serve.reward_server import RewardServerConfig, RewardServerError, serve_reward

    # Caught here, not in main(): the serving venv may lack the training stack main()'s error list imports.
    try:
        serve_reward(RewardServerConfig(
            answers=args.answers, tokenizer=args.tokenizer, host=args.host, port=args.port,
            model_name=args.model_name, max_batch=args.max_batch, timeout=args.timeout, workers=args.workers,
            variant=args.variant, template=args.template, response_marker=args.response_marker,
            answer_field=args.answer_field))
    except RewardServerError as exc:
        print(f"octo: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_serve_parsers(sub) -> None:
    serve = sub.add_parser("serve", help="servers for RL beside a trainer: the math reward for NeMo-Aligner")
    serve_sub = serve.add_subparsers(dest="serve_cmd", required=True, metavar="{reward}")
    p = serve_sub.add_parser(
        "reward", help="the rule-based math reward behind NeMo-Aligner's reward-model transport (PyTriton)",
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
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1; 0.0.0.0 for other hosts)")
    p.add_argument("--port", type=int, default=5555, help="HTTP port (default: 5555)")
    p.add_argument("--model-name", default="reward_model", help="PyTriton model name (default: reward_model)")
    p.add_argument("--max-batch", type=int, default=65536, help="largest request in sequences (default: 65536)")
    p.add_argument("--timeout", type=float, default=2.0, help="verification seconds per item (default: 2)")
    p.add_argument("--workers", type=int, default=None, help="verification processes (default: one per core)")
    p.add_argument("--variant", default="default", help="reward variant of megatron_octo.rl.reward (default: default)")
    p.add_argument("--template", default="complex",
                   help="template for records without 'text': a name or text with {question} (default: complex)")
    p.add_argument("--response-marker", default=None,
                   help="text that ends a prompt (default: the template's text after {question}, e.g. 'Assistant:')")
    p.add_argument("--answer-field", default="answer", help="record field of the gold answer (default: answer)")
    p.set_defaults(func=_cmd_serve_reward)


def _launch_job(args, python: str):
    from megatron_octo.launch import JobSpec
    from megatron_octo.launch.layout import absolute_run_dir

    run_dir = args.run_dir or os.path.join("runs", os.path.splitext(os.path.basename(args.recipe))[0])
    return JobSpec(recipe=args.recipe, run_dir=absolute_run_dir(run_dir), command=args.stage,
                   overrides=list(args.overrides), python=python)


def _key_values(items: List[str]) -> dict:
    from megatron_octo.launch import LaunchError

    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LaunchError(f"--env {item!r} must look like NAME=VALUE, e.g. NCCL_DEBUG=INFO")
        pairs[key] = value
    return pairs


def _cmd_launch_slurm(args) -> int:
    from megatron_octo.launch import SlurmConfig, launch_slurm

    cfg = SlurmConfig(
        nodes=args.nodes, gpus_per_node=args.gpus_per_node, time=args.time, account=args.account,
        partition=args.partition, qos=args.qos, job_name=args.job_name, launcher=args.launcher,
        container=args.container, mounts=args.mount, signal_lead_s=args.signal_lead, max_requeues=args.max_requeues,
        cpus_per_node=args.cpus_per_node, exclusive=not args.shared, socket_ifname=args.socket_ifname,
        env=_key_values(args.env), sbatch_args=args.sbatch_arg, log_dir=args.log_dir,
        ranks_per_node=args.ranks_per_node, dependency=args.dependency,
    )
    python = args.python or ("python" if args.container else sys.executable)
    result = launch_slurm(_launch_job(args, python), cfg, dry_run=args.dry_run, overwrite=args.overwrite)
    if args.dry_run:
        sys.stdout.write(result.script)
    elif args.parsable:
        print(result.job_id)
    else:
        print(f"submitted job {result.job_id}: {result.layout.line()}; script {result.path}, output in "
              f"{result.path.parent}/{result.path.stem}-{result.job_id}.out")
    return 0


def _cmd_launch_local(args) -> int:
    from megatron_octo.launch import LocalConfig, launch_local

    return launch_local(_launch_job(args, sys.executable), LocalConfig(nproc=args.nproc), dry_run=args.dry_run)


def _add_launch_common(p) -> None:
    p.add_argument("--recipe", required=True, help="shipped recipe name (see `octo recipe list`) or YAML path")
    p.add_argument("--run-dir", default=None,
                   help="run directory, the same for every attempt so a requeued job resumes (default: runs/RECIPE)")
    p.add_argument("--command", dest="stage", default="train", choices=("train", "rl"),
                   help="octo subcommand the ranks run (default: train)")
    p.add_argument("--dry-run", action="store_true", help="print what would run; write and start nothing")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, after the flags")


def _add_launch_slurm_parser(launch_sub) -> None:
    p = launch_sub.add_parser(
        "slurm", help="render an sbatch script for a stage and submit it (pyxis/enroot container)",
        description=(
            "Check the recipe's TP x PP x CP and global batch against --nodes x --gpus-per-node, render an sbatch "
            "script (directives, rendezvous on the first node, container flags and mounts, NCCL defaults, logs "
            "in RUN_DIR/slurm), then print it (--dry-run) or write it to RUN_DIR/slurm/JOB.sbatch and submit it. "
            "Before the time limit Slurm signals the job; the ranks save a checkpoint and the job requeues "
            "itself, and the next attempt resumes from that checkpoint."
        ),
        epilog=(
            "examples:\n  octo launch slurm --recipe octothinker-3b-stable --nodes 4 --gpus-per-node 8 \\\n"
            "      --container /shared/images/megatron-octo.sqsh --account ACCT --partition batch --dry-run\n"
            "  octo launch slurm --recipe octothinker-3b-decay-long --nodes 2 --gpus-per-node 8 \\\n"
            "      --run-dir runs/3b-long --dependency afterok:STABLE_JOB_ID checkpoint.branch_from=$PWD/runs/3b-stable\n"
            "  octo launch slurm --recipe tiny-cpu --nodes 1 --gpus-per-node 0 --ranks-per-node 2 --shared  # CPU, gloo"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nodes", type=int, required=True, help="nodes of the job")
    p.add_argument("--gpus-per-node", type=int, required=True,
                   help="GPUs used per node (one rank each); 0 for a CPU job over gloo (with --ranks-per-node)")
    p.add_argument("--ranks-per-node", type=int, default=None, metavar="N",
                   help="training processes per node (default: one per GPU; required with --gpus-per-node 0)")
    p.add_argument("--container", default=None, metavar="IMAGE",
                   help="pyxis image: registry URI (nvcr.io#org/image:tag) or .sqsh file (default: none)")
    p.add_argument("--mount", action="append", default=[], metavar="SRC[:DST[:FLAGS]]",
                   help="extra container mount (repeatable); the run dir, submit dir, $OCTO_DATA and the recipe's "
                        "checkpoint/tokenizer paths are mounted already")
    p.add_argument("--time", default="04:00:00", help="time limit (default: 04:00:00)")
    p.add_argument("--account", default=None, help="Slurm account")
    p.add_argument("--partition", default=None, help="Slurm partition")
    p.add_argument("--qos", default=None, help="Slurm QOS")
    p.add_argument("--job-name", default=None, help="job name (default: octo-RECIPE)")
    p.add_argument("--launcher", default="srun", choices=("srun", "torchrun"),
                   help="srun: one task per GPU (default); torchrun: one task per node running torchrun")
    p.add_argument("--signal-lead", type=int, default=300, metavar="SECONDS",
                   help="signal the job this long before its time limit to save and requeue (default: 300)")
    p.add_argument("--max-requeues", type=int, default=20, help="requeue at most this often (default: 20)")
    p.add_argument("--cpus-per-node", type=int, default=None, help="CPU cores per node (default: cluster's)")
    p.add_argument("--shared", action="store_true", help="do not ask for whole nodes (no --exclusive, --mem=0)")
    p.add_argument("--socket-ifname", default=None, metavar="IFACE",
                   help="NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME for the bootstrap sockets")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="export to the ranks (repeatable)")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="extra #SBATCH directive, e.g. --constraint=h100 (repeatable; write --sbatch-arg=--x=y)")
    p.add_argument("--log-dir", default=None, help="script and job output directory (default: RUN_DIR/slurm)")
    p.add_argument("--dependency", default=None, metavar="SPEC",
                   help="Slurm dependency, e.g. afterok:JOBID to start a decay branch once its stable job succeeded")
    p.add_argument("--python", default=None,
                   help="interpreter on the nodes (default: python in a container, else this interpreter)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier rendered script in the log dir (the run itself is kept and resumes)")
    p.add_argument("--parsable", action="store_true",
                   help="print only the job id once submitted (as sbatch --parsable), e.g. for --dependency")
    _add_launch_common(p)
    p.set_defaults(func=_cmd_launch_slurm)


def _add_launch_parser(sub) -> None:
    launch = sub.add_parser("launch", help="run a stage as a Slurm job or with torchrun on this node")
    launch_sub = launch.add_subparsers(dest="launch_cmd", required=True, metavar="{slurm,local}")
    _add_launch_slurm_parser(launch_sub)
    p = launch_sub.add_parser(
        "local", help="run a stage on this node: torchrun with --nproc processes",
        description=(
            "Check the recipe against --nproc processes and run the stage with torchrun --standalone (the command "
            "itself for --nproc 1). SIGTERM or SIGUSR1 sent to this command makes the ranks save and stop; it then "
            "exits with the requeue status (75), and running it again resumes."
        ),
    )
    p.add_argument("--nproc", type=int, required=True, help="processes (GPUs) on this node")
    _add_launch_common(p)
    p.set_defaults(func=_cmd_launch_local)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="octo",
        description="megatron-octo: OctoThinker mid-training and RL on Megatron-Core.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{recipe,train,rl,plot,preprocess,data,eval,convert,demo,serve,launch}")
    _add_recipe_parsers(sub)
    _add_train_parser(sub)
    _add_rl_parser(sub)
    _add_preprocess_parser(sub)
    _add_data_parsers(sub)
    _add_eval_parser(sub)
    _add_convert_parser(sub)
    _add_plot_parser(sub)
    _add_demo_parser(sub)
    _add_launch_parser(sub)
    _add_serve_parsers(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``octo`` and ``python -m megatron_octo``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as exc:
        print(f"octo: error: {exc}", file=sys.stderr)
        return 2
