"""``octo recipe list|show`` and ``octo demo``."""

from __future__ import annotations

import sys

from megatron_octo.commands.common import add_overrides

HELP = {
    "recipe": "list and show the shipped recipes",
    "demo": "OctoThinker in miniature on CPU (stable, decay branches, eval, RL), with a report",
}
"""One line per command for `octo --help` (the command's parser is built only when it runs)."""


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


def _cmd_demo(args) -> int:
    from megatron_octo.demo import run_demo

    report = run_demo(args.workdir, overwrite=args.overwrite, quick=args.quick)
    print(f"demo finished: report in {report}")
    return 0


def add_parsers(sub) -> None:
    recipe = sub.add_parser("recipe", help=HELP["recipe"])
    recipe_sub = recipe.add_subparsers(dest="recipe_cmd", required=True, metavar="{list,show}")
    p_list = recipe_sub.add_parser("list", help="names and descriptions of the shipped recipes")
    p_list.set_defaults(func=_cmd_recipe_list)
    p_show = recipe_sub.add_parser(
        "show",
        help="the fully resolved recipe as YAML",
        description="Print a recipe with its base recipes, model preset and overrides resolved and validated.",
    )
    p_show.add_argument("name", help="shipped recipe name or path to a YAML recipe")
    add_overrides(p_show, "parallel.tp=2")
    p_show.set_defaults(func=_cmd_recipe_show)

    p = sub.add_parser(
        "demo",
        help=HELP["demo"],
        description=(
            "OctoThinker's experiment in miniature, on CPU: generate a synthetic math task (training, held-out and "
            "RL problems that never overlap) and train its tokenizer, train a tiny Llama on one process and on "
            "TP=2 x PP=2 (the same loss curve), run a stable stage and the Long / Short / Hybrid decay branches, "
            "convert to Hugging Face, evaluate each branch on the held-out problems (few-shot and zero-shot), run "
            "GRPO from each branch with validation before and during RL, and write DIR/report.md (comparison "
            "table and figures) and DIR/summary.json."
        ),
    )
    p.add_argument("--workdir", default="octo-demo", help="directory for the demo's outputs (default: octo-demo)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's outputs in --workdir")
    p.add_argument("--quick", action="store_true", help="a few steps per stage on a smaller corpus (a smoke test)")
    p.set_defaults(func=_cmd_demo)
