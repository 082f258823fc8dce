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
  octo demo --workdir octo-demo
"""


def _user_errors() -> tuple:
    from megatron_octo.config.loader import ConfigError
    from megatron_octo.parallel import ParallelSetupError
    from megatron_octo.training.build import SetupError
    from megatron_octo.utils.io import OutputExistsError

    return ConfigError, SetupError, ParallelSetupError, OutputExistsError


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


def _cmd_train(args) -> int:
    from megatron_octo.training import train_from_args

    summary = train_from_args(args.recipe, args.overrides, args.run_dir, args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"trained {summary['steps']} steps, {summary['tokens']:,} tokens: loss {summary['first_loss']:.4f} -> "
            f"{summary['final_loss']:.4f}, {summary['tokens_per_s']:.0f} tokens/s; metrics in "
            f"{args.run_dir}/metrics.jsonl"
        )
    return 0


def _cmd_demo(args) -> int:
    from megatron_octo.demo import run_demo

    report = run_demo(args.workdir, overwrite=args.overwrite)
    print(f"demo finished: report in {report}")
    return 0


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
            "step: step, loss, lr, grad_norm, tokens, tokens_per_s), TensorBoard events and DIR/train_summary.json."
        ),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--recipe", required=True, help="shipped recipe name (see `octo recipe list`) or YAML path")
    p.add_argument("--run-dir", required=True, help="directory for this run's outputs")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --run-dir")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. parallel.tp=2 train.iters=10 train.global_batch=16")
    p.set_defaults(func=_cmd_train)


def _add_demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="the whole pipeline at toy scale on CPU, with a report",
        description=(
            "Run what megatron-octo can do at toy scale on CPU: train a tiny Llama on one process and on a "
            "TP=2 x PP=2 layout, check that both follow the same loss curve, and write DIR/report.md with plots "
            "and DIR/summary.json."
        ),
    )
    p.add_argument("--workdir", default="octo-demo", help="directory for the demo's outputs (default: octo-demo)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's outputs in --workdir")
    p.set_defaults(func=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="octo",
        description="megatron-octo: OctoThinker mid-training and RL on Megatron-Core.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{recipe,train,demo}")
    _add_recipe_parsers(sub)
    _add_train_parser(sub)
    _add_demo_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``octo`` and ``python -m megatron_octo``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as exc:
        print(f"octo: error: {exc}", file=sys.stderr)
        return 2
