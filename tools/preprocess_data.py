#!/usr/bin/env python
"""Megatron-style entry point for ``octo preprocess``: the same options, the same code.

    python tools/preprocess_data.py --input corpus.jsonl --output-prefix data/web --tokenizer tok/ --workers 2
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout, too

from megatron_octo.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["preprocess", *sys.argv[1:]]))
