#!/usr/bin/env python
"""Megatron-style entry point for ``octo convert``: the same options, the same code.

    python tools/convert_checkpoint.py --from hf --to mcore --input Llama-3.2-3B --output ckpt/llama3b --tp 2 --pp 2
    python tools/convert_checkpoint.py --from mcore --to hf --input runs/decay-long --output hf/decay-long --verify
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout, too

from megatron_octo.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["convert", *sys.argv[1:]]))
