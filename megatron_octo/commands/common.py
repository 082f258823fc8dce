"""What several subcommands share: the stage arguments (recipe, run directory, overrides), defaults read from the
dataclasses that own them, and the rank check for printing."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

RECIPE_HELP = "shipped recipe name (see `octo recipe list`) or YAML path"


def default_of(cls, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls``: CLI defaults are read from the dataclass that owns the
    field, never restated."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name}")


def add_recipe(p: argparse.ArgumentParser, help: str = RECIPE_HELP) -> None:
    p.add_argument("--recipe", required=True, help=help)


def add_overrides(p: argparse.ArgumentParser, example: str = "parallel.tp=2 train.iters=10") -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help=f"recipe overrides, e.g. {example}")


def add_stage_arguments(p: argparse.ArgumentParser, overwrite_help: str, example: str) -> None:
    """The arguments of a stage that runs in a run directory (``octo train``, ``octo rl``)."""
    add_recipe(p)
    p.add_argument("--run-dir", required=True, help="directory for this run's outputs")
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)
    add_overrides(p, example)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse reports a bad value as a one-line usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
