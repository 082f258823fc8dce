"""The ``octo`` command. Each subcommand is a thin layer over a library function; the parsers live in
``megatron_octo.commands`` (one module per command group).

User mistakes (a bad recipe or override, an existing output, a layout the world cannot hold, a bad flag value) end
with one line, ``octo: error: ...``, and exit status 2 (1 for a conversion that fails its verification): every
package's user errors derive from ``megatron_octo.errors.OctoError``, caught here once. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType
from typing import List, NoReturn, Optional, Sequence

from megatron_octo.errors import OctoError
from megatron_octo.version import __version__

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


class OctoArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``octo: error: octo eval: argument --limit: ...``), exit status 2,
    pointing at ``--help`` instead of printing the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"octo: error: {self.prog}: {message}; see `{self.prog} --help`\n")


def _command_modules() -> Sequence[ModuleType]:
    from megatron_octo.commands import convert, data, eval, launch, recipe, serve, stage

    return (recipe, stage, data, eval, convert, launch, serve)


def _command_of(argv: Sequence[str]) -> Optional[str]:
    """The subcommand ``argv`` names (its first word that is not an option), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``octo`` parser, every command in full; with ``command``, only that command's parser is built in full
    and the others are listed by name and help line (building one imports its packages, e.g. torch for
    ``launch``), so ``octo --help`` and ``octo eval ...`` stay fast."""
    parser = OctoArgumentParser(
        prog="octo",
        description="megatron-octo: OctoThinker mid-training and RL on Megatron-Core.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"megatron-octo {__version__}")
    modules = _command_modules()
    names = [name for m in modules for name in m.HELP]
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(names) + "}")
    for module in modules:
        if command is None or command in module.HELP:
            module.add_parsers(sub)
        else:
            for name, text in module.HELP.items():
                sub.add_parser(name, help=text)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``octo`` and ``python -m megatron_octo``; returns the exit status."""
    from megatron_octo.utils.known_warnings import print_note, quiet_known_warnings

    quiet_known_warnings()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_of(argv) or "").parse_args(argv)
    try:
        status = args.func(args)
    except OctoError as exc:
        print(f"octo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside a stage's steps (where the first one saves and exits 75)
        if int(os.environ.get("RANK", "0")) == 0:
            print("octo: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    print_note()
    return status
