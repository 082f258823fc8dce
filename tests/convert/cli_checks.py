"""Run by test_parallel.py in one fresh process (``python -m tests.convert.cli_checks STEPS.json``): the steps in
order, each an ``octo`` command (``{"octo": [...argv]}``, optionally ``"swap_kv": true`` to break the QKV row map
while it runs: a negative control for ``--verify``) or a logits job in a world of one (``{"logits": [CKPT,
TOKENS, OUT]}``). Each --verify makes and tears down its own world of one. Prints ``CODES [exit codes]`` last.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path


@contextlib.contextmanager
def swapped_key_value():
    """The fused QKV row map with the key and value heads exchanged (both have the same shape)."""
    from megatron_octo.convert import layout

    real = layout.ROW_MAPS["qkv"]
    layout.ROW_MAPS["qkv"] = lambda hf, cfg, padded: real((hf[0], hf[2], hf[1]), cfg, padded)
    try:
        yield
    finally:
        layout.ROW_MAPS["qkv"] = real


def main(argv) -> int:
    warnings.filterwarnings("ignore")
    from megatron_octo.cli import main as octo
    from megatron_octo.convert import logits

    codes = []
    for step in json.loads(Path(argv[0]).read_text()):
        if "octo" in step:
            with swapped_key_value() if step.get("swap_kv") else contextlib.nullcontext():
                codes.append(octo(step["octo"]))
        else:
            codes.append(logits.main(["--job", *step["logits"]]))
        sys.stdout.flush()
    print("CODES " + json.dumps(codes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
