"""``octo train``, ``octo rl`` and ``octo plot``: the stages that run in a run directory, and their curves."""

from __future__ import annotations

import argparse

from megatron_octo.commands.common import add_stage_arguments, is_rank0

TRAIN_EXAMPLES = """examples:
  octo train --recipe tiny-cpu --run-dir runs/tiny train.iters=20
  torchrun --nproc-per-node 4 -m megatron_octo train --recipe tiny-cpu --run-dir runs/tp2pp2 \\
      parallel.tp=2 parallel.pp=2
  octo train --recipe octothinker-3b-decay-long --run-dir runs/long checkpoint.branch_from=runs/stable
"""

HELP = {
    "train": "run one training stage of a recipe on Megatron-Core",
    "rl": "GRPO / PPO on Megatron-Core with vLLM (or transformers) rollouts and the math reward",
    "plot": "loss and LR against tokens for one or more runs (PNG)",
}
"""One line per command for `octo --help` (the command's parser is built only when it runs)."""


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
    from megatron_octo.training.stage import exit_code

    summary = train_from_args(args.recipe, args.overrides, args.run_dir, args.overwrite, args.override_schedule)
    if is_rank0():
        print(_train_message(summary, args.run_dir))
    return exit_code(summary)


def _cmd_rl(args) -> int:
    from megatron_octo.rl import rl_from_args
    from megatron_octo.training.stage import exit_code

    summary = rl_from_args(args.recipe, args.overrides, args.run_dir, args.overwrite)
    if is_rank0():
        if summary["steps_run"]:
            print(
                f"RL steps {summary['start_step'] + 1}-{summary['start_step'] + summary['steps_run']} of "
                f"{summary['steps']}: mean reward {summary['reward_first']:+.3f} (first 5 steps) -> "
                f"{summary['reward_last']:+.3f} (last 5); metrics in {args.run_dir}/metrics.jsonl"
            )
        else:
            print(f"nothing to do: {args.run_dir} already holds all {summary['steps']} steps")
    return exit_code(summary)


def _cmd_plot(args) -> int:
    from megatron_octo.training.plot import plot_runs

    print(f"wrote {plot_runs(args.run_dirs, args.output, args.overwrite)}")
    return 0


def _add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help=HELP["train"],
        description=(
            "Train one stage of a recipe. Run directly for one process, or under torchrun for several "
            "(TP x PP x CP x DP = processes). Writes DIR/recipe.yaml, DIR/metrics.jsonl (one JSON line per "
            "step: step, loss, lr, grad_norm, tokens, tokens_per_s), TensorBoard events, DIR/train_summary.json "
            "and checkpoints in DIR/checkpoints. A --run-dir holding a complete checkpoint resumes from it."
        ),
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_stage_arguments(
        p,
        "start afresh over an earlier run in --run-dir: its outputs (checkpoints included) are removed once the new "
        "run has passed its setup (kept if the new recipe is refused)",
        "parallel.tp=2 train.iters=10 train.global_batch=16",
    )
    p.add_argument(
        "--override-schedule",
        action="store_true",
        help="on resume, use the recipe's LR schedule where it differs from the checkpoint's",
    )
    p.set_defaults(func=_cmd_train)


def _add_rl_parser(sub) -> None:
    p = sub.add_parser(
        "rl",
        help=HELP["rl"],
        description=(
            "Run an RL recipe (e.g. octothinker-3b-grpo): each step samples rl.prompts_per_step prompts x "
            "rl.rollout.n responses with the rollout engine, scores them with the math reward, computes GRPO "
            "advantages (or GAE with a critic: rl.algorithm=ppo), recomputes log-probs on Megatron-Core, makes the "
            "clipped-surrogate updates and syncs the new weights into the engine in memory. Run directly for one "
            "process or under torchrun for several. Writes DIR/recipe.yaml, DIR/metrics.jsonl (reward, accuracy, "
            "lengths, truncation, clip fraction, entropy, KL, log-prob mismatch, time per phase, validation "
            "accuracies), checkpoints in DIR/checkpoints (a --run-dir holding one resumes from it), "
            "DIR/rl_summary.json and the final policy as a Hugging Face model in DIR/hf."
        ),
        epilog="example:\n  octo rl --recipe octothinker-3b-grpo --run-dir runs/grpo rl.init=runs/decay-long",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_stage_arguments(
        p,
        "start afresh over an earlier run in --run-dir: its outputs are removed once the new run has passed its "
        "setup (kept if the new recipe is refused)",
        "rl.init=HF_DIR rl.rollout.n=8 train.iters=100",
    )
    p.set_defaults(func=_cmd_rl)


def _add_plot_parser(sub) -> None:
    p = sub.add_parser(
        "plot",
        help=HELP["plot"],
        description="Plot loss and learning rate against consumed tokens for training runs; branches are drawn "
        "from where their source checkpoint left off.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `octo train`")
    p.add_argument("--output", default="runs.png", help="PNG to write (default: runs.png)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.set_defaults(func=_cmd_plot)


def add_parsers(sub) -> None:
    _add_train_parser(sub)
    _add_rl_parser(sub)
    _add_plot_parser(sub)
