"""Every choice set an ``octo`` option offers has one home, ``config.choices``: the parser offers exactly that set,
and the library function behind the option refuses a value outside it naming the same set. The module stays free
of torch, so building the parsers (``octo --help``, ``octo eval ...``) does not import it."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_octo.cli import build_parser
from megatron_octo.config import choices

REPO = Path(__file__).resolve().parents[2]


def _parser_of(path):
    """The parser of the subcommand ``path`` (e.g. ("launch", "slurm")), built as `octo PATH[0] ...` builds it."""
    parser = build_parser(path[0])
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def _offered(path, option):
    action = next(a for a in _parser_of(path)._actions if option in a.option_strings)
    return tuple(action.choices)


@pytest.mark.parametrize(
    "path, option, allowed",
    [
        (("convert",), "--from", choices.CONVERT_FORMATS),
        (("convert",), "--to", choices.CONVERT_FORMATS),
        (("convert",), "--dtype", choices.DTYPES),
        (("eval",), "--source", choices.EVAL_SOURCES),
        (("eval",), "--backend", choices.EVAL_BACKENDS),
        (("launch", "slurm"), "--command", choices.STAGE_COMMANDS),
        (("launch", "local"), "--command", choices.STAGE_COMMANDS),
        (("launch", "slurm"), "--launcher", choices.SLURM_LAUNCHERS),
    ],
)
def test_the_parser_offers_the_library_set(path, option, allowed):
    assert _offered(path, option) == allowed


def _refusal(call) -> str:
    with pytest.raises(Exception) as info:
        call()
    return str(info.value)


def test_the_library_refuses_values_outside_the_same_sets(tmp_path):
    from megatron_octo.convert import convert
    from megatron_octo.eval.backends import make_backend
    from megatron_octo.eval.runner import run_eval
    from megatron_octo.launch import JobSpec, SlurmConfig
    from megatron_octo.launch.layout import check_layout
    from megatron_octo.launch.slurm import check_slurm

    def listed(values):
        return ", ".join(values)

    assert listed(choices.CONVERT_FORMATS) in _refusal(lambda: convert("gguf", "hf", tmp_path, tmp_path / "o"))
    assert listed(choices.CONVERT_FORMATS) in _refusal(lambda: convert("hf", "gguf", tmp_path, tmp_path / "o"))
    assert listed(choices.EVAL_SOURCES) in _refusal(lambda: run_eval(None, "gsm8k", source="s3"))
    assert listed(choices.EVAL_BACKENDS) in _refusal(lambda: make_backend("sglang", tmp_path))
    bad_launcher = SlurmConfig(nodes=1, gpus_per_node=8, launcher="mpirun")
    assert listed(choices.SLURM_LAUNCHERS) in _refusal(lambda: check_slurm(bad_launcher))
    bad_command = JobSpec(recipe="tiny-cpu", run_dir=tmp_path, command="eval")
    assert listed(choices.STAGE_COMMANDS) in _refusal(lambda: check_layout(bad_command, 1, "--nproc 1"))


def test_building_the_parsers_imports_no_torch():
    """`octo --help` and every command's parser but launch's (which checks layouts with the training package)."""
    code = (
        "import sys\n"
        "from megatron_octo.cli import build_parser, main\n"
        "for command in ('', 'recipe', 'train', 'rl', 'plot', 'preprocess', 'data', 'eval', 'convert', 'serve', 'demo'):\n"
        "    build_parser(command)\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'megatron.core') if m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
